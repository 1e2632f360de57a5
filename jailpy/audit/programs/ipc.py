# IPC probes (run inside the sandbox after _lib.py): the auditor made canary IPC objects on the
# host under random names; a probe that finds one has reached the host's IPC.
import ctypes
import os
import socket

KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, KEY_SPEC_SESSION_KEYRING = 10, -4, -3
IPC_CREAT, IPC_RMID = 0o1000, 0


def _connect(what, family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(addr)
        return attempt(what, "connect", 0, None, through=True)
    except OSError as e:
        return attempt(what, "connect", -1, ename(e.errno),
                       layer="mount" if e.errno == errno.ENOENT else "namespace" if e.errno == errno.ECONNREFUSED
                       else "permissions" if e.errno == errno.EACCES else "kernel")
    finally:
        s.close()


def ipc_abstract_socket(p):
    att = [_connect(f"connect to the host's abstract unix socket @{p['abstract']} (CVE-2020-15257)", socket.AF_UNIX,
                    "\0" + p["abstract"])]
    seen = []
    for line in (read_text("/proc/net/unix", 1 << 20) or "").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[7].startswith("@"):
            seen.append(parts[7])
    host = set(p["host"]["abstract"])
    leaked = sorted(set(seen) & host)
    att.append(attempt("list the host's abstract sockets in /proc/net/unix", "openat", 0 if leaked else -1,
                       None, through=bool(leaked), layer="namespace",
                       detail=f"{len(seen)} visible, {len(leaked)} of the host's"))
    return {"attempts": att}


def ipc_path_socket(p):
    att = [_connect(f"connect to the host's canary socket {p['sock']}", socket.AF_UNIX, p["sock"])]
    for path in p["well_known"]:
        att.append(_connect(f"connect to the host's {path}", socket.AF_UNIX, path))
    return {"attempts": att}


def ipc_sysv(p):
    key = p["sysv_key"]
    att = [sysc(f"shmget(key {key}) (the host's shared memory segment)", "shmget", key, 0, 0),
           sysc(f"msgget(key {key}) (the host's message queue)", "msgget", key, 0),
           sysc(f"semget(key {key}) (the host's semaphore set)", "semget", key, 0, 0)]
    for a in att:
        if a["errno"] == "ENOENT":
            a.update(through=False, layer="namespace")
        elif a["ret"] >= 0:
            a.update(through=True, layer=None)
    return {"attempts": att}


def ipc_mqueue(p):
    name = p.get("mqueue")
    if not name:
        return {"attempts": [attempt("POSIX message queues", "mq_open", -1, "ENOSYS", layer="kernel",
                                     detail="the host has none to share")]}
    libc.mq_open.restype = ctypes.c_int
    ctypes.set_errno(0)
    fd = libc.mq_open(name.encode(), os.O_RDONLY)
    err = ename(ctypes.get_errno()) if fd < 0 else None
    if fd >= 0:
        libc.mq_close(fd)
    att = [attempt(f"mq_open({name}) (the host's POSIX message queue)", "mq_open", fd, err, through=fd >= 0,
                   layer="namespace" if err == "ENOENT" else None)]
    try:
        names = os.listdir("/dev/mqueue")
        vis = name.lstrip("/") in names
        att.append(attempt("list /dev/mqueue", "getdents64", 0, None, through=vis, layer="namespace"))
    except OSError:
        pass
    return {"attempts": att}


def ipc_dev_shm(p):
    name = p["devshm"]
    ok, err, _ = open_only("/dev/shm/" + name, os.O_RDONLY)
    att = [attempt(f"open the host's /dev/shm/{name}", "openat", 0 if ok else -1, err, through=ok,
                   layer="mount" if err == "ENOENT" else None)]
    vis = name in os.listdir("/dev/shm")
    att.append(attempt("list /dev/shm", "getdents64", 0, None, through=vis, layer="mount"))
    return {"attempts": att}


def ipc_keyrings(p):
    desc = p.get("key_desc") or "jailpy-audit-none"
    att = [sysc(f"keyctl(KEYCTL_SEARCH, user keyring, {desc}) (the host user's canary key)", "keyctl", KEYCTL_SEARCH,
                KEY_SPEC_USER_KEYRING, b"user", desc.encode(), 0),
           sysc(f"request_key(user, {desc})", "request_key", b"user", desc.encode(), 0, 0)]
    for a in att:
        if a["errno"] in ("ENOKEY", "EKEYREVOKED", "ENOENT"):
            a.update(through=False, layer="namespace",
                     detail="not found: the sandbox's keyrings are not the host user's" if p.get("key_desc") else
                     "the host made no canary key (its own keyrings are unavailable)")
        elif a["ret"] >= 0:
            a.update(through=bool(p.get("key_desc")), layer=None if p.get("key_desc") else "namespace")
    return {"attempts": att}


def ipc_residue(p):
    tok, phase = p["residue"], p["phase"]
    key = int(tok[:7], 16) + 1
    mq = f"/jailpy-residue-{tok}".encode()
    if phase == 1:
        open(f"/tmp/jailpy-residue-{tok}", "w").close()
        open(f"/dev/shm/jailpy-residue-{tok}", "w").close()
        raw("shmget", key, 4096, IPC_CREAT | 0o666)
        libc.mq_open.restype = ctypes.c_int
        fd = libc.mq_open(mq, os.O_CREAT | os.O_RDWR, ctypes.c_int(0o666), None)
        if fd >= 0:
            libc.mq_close(fd)
        raw("add_key", b"user", f"jailpy-residue-{tok}".encode(), b"x", 1, KEY_SPEC_USER_KEYRING)
        return {"attempts": [], "phase": 1}
    att = []
    for path in (f"/tmp/jailpy-residue-{tok}", f"/dev/shm/jailpy-residue-{tok}"):
        there = os.path.exists(path)
        att.append(attempt(f"find {path} left by the previous run", "openat", 0 if there else -1,
                           None, through=there, layer="mount"))
    r, e = raw("shmget", key, 0, 0)
    att.append(attempt("find the previous run's System V shared memory", "shmget", r, e, through=r >= 0,
                       layer="namespace", args=[key, 0, 0]))
    libc.mq_open.restype = ctypes.c_int
    fd = libc.mq_open(mq, os.O_RDONLY)
    if fd >= 0:
        libc.mq_close(fd)
    att.append(attempt("find the previous run's POSIX message queue", "mq_open", fd, None,
                       through=fd >= 0, layer="namespace"))
    r, e = raw("keyctl", KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, b"user", f"jailpy-residue-{tok}".encode(), 0)
    a = attempt("find the previous run's key in the user keyring", "keyctl", r, e, through=r >= 0,
                layer="namespace" if e in ("ENOKEY", "ENOENT") else None, args=[KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING])
    att.append(a)
    return {"attempts": att, "phase": 2}


NR.update(mq_open=240)
PROBES = {
    "ipc-abstract-socket": ipc_abstract_socket, "ipc-path-socket": ipc_path_socket, "ipc-sysv": ipc_sysv,
    "ipc-mqueue": ipc_mqueue, "ipc-dev-shm": ipc_dev_shm, "ipc-keyrings": ipc_keyrings, "ipc-residue": ipc_residue,
}
