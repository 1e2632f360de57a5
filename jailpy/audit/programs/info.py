# Information-leak probes (run inside the sandbox after _lib.py).  They only read; the host
# compares what they saw with its own values (sent as sha256 digests or names, never secrets).
import hashlib
import os
import socket


def _sha(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read().strip()).hexdigest()
    except OSError:
        return None


def info_env_secrets(p):
    env = dict(os.environ)
    hit = sorted(k for k, v in env.items() if p["env_secret"] in v)
    suspicious = sorted(k for k in env if any(w in k.upper() for w in ("SECRET", "TOKEN", "PASSWORD", "KEY")))
    return {"attempts": [attempt("find the caller's secret variable in its environment", "execve", 0 if hit else -1,
                                 None, through=bool(hit), layer="jailpy",
                                 detail=f"{len(env)} variables: {', '.join(sorted(env))[:120]}"
                                 + (f"; names like secrets: {suspicious}" if suspicious else ""))]}


def info_mountinfo(p):
    text = read_text("/proc/self/mountinfo", 1 << 20) or ""
    fields = set()
    for line in text.splitlines():
        for part in line.replace(",", " ").replace(":", " ").replace("=", " ").split():
            fields.add(part.replace("\\040", " "))
    leaked = sorted({s for s in p["secret_paths"] for f in fields if f == s or f.startswith(s.rstrip("/") + "/")})
    return {"attempts": [attempt("host paths the sandbox should not know, in /proc/self/mountinfo", "openat",
                                 0 if leaked else -1, None, through=bool(leaked), layer="mount",
                                 detail=", ".join(leaked) or f"{len(text.splitlines())} mounts, none naming them")]}


def info_hostname(p):
    names = {socket.gethostname(), (read_text("/proc/sys/kernel/hostname") or "").strip(), os.uname().nodename}
    same = p["host"]["hostname"] in names
    return {"attempts": [attempt("learn the host's name", "uname", 0 if same else -1, None,
                                 through=same, layer="namespace", detail=f"sees {sorted(names)}")]}


def info_machine_id(p):
    att = []
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        h = _sha(path)
        same = h is not None and h == p["host"]["machine_id"]
        att.append(attempt(f"read the host's machine id from {path}", "openat", 0 if same else -1,
                           None, through=same, layer="mount",
                           detail="the host's (same sha256)" if same else "unreadable" if h is None else "another id"))
    boot = _sha("/proc/sys/kernel/random/boot_id")
    return {"attempts": att, "boot_id_is_hosts": boot is not None and boot == p["host"]["boot_id"]}


def info_kallsyms(p):
    ok, err, st = open_only("/proc/kallsyms", os.O_RDONLY)
    text = read_text("/proc/kallsyms", 1 << 16) or ""
    addrs = [line.split()[0] for line in text.splitlines()[:200] if line.split()]
    real = [a for a in addrs if a.strip("0")]
    masked = st is not None and st[2] == os.makedev(1, 3)
    return {"attempts": [attempt("kernel symbol addresses in /proc/kallsyms (KASLR)", "openat", 0 if real else -1,
                                 err, through=bool(real),
                                 layer="mount" if masked or err == "ENOENT" else "kernel",
                                 detail="masked (/dev/null)" if masked else
                                 f"{len(addrs)} lines, {len(real)} addresses")]}


def info_dmesg(p):
    a = sysc("syslog(SYSLOG_ACTION_READ_ALL, NULL) (the host's kernel log)", "syslog", 3, 0, 100)
    v = (read_text("/proc/sys/kernel/dmesg_restrict") or "").strip()
    if a["errno"] == "EPERM" and v == "1":
        a.update(layer="kernel", detail="kernel.dmesg_restrict=1")
    ok, err, _ = open_only("/dev/kmsg", os.O_RDONLY)
    b = attempt("open /dev/kmsg", "openat", 0 if ok else -1, err, through=ok,
                layer="mount" if err == "ENOENT" else None)
    return {"attempts": [a, b]}


def info_proc_keys(p):
    att = []
    for path in ("/proc/keys", "/proc/key-users"):
        ok, err, st = open_only(path, os.O_RDONLY)
        text = read_text(path) or ""
        masked = st is not None and st[2] == os.makedev(1, 3)
        att.append(attempt(f"read {path} (the host's keys and per-user key counts)", "openat",
                           0 if text else -1, err, through=bool(text.strip()),
                           layer="mount" if masked or err == "ENOENT" else "namespace",
                           detail="masked (/dev/null)" if masked else f"{len(text.splitlines())} lines"))
    return {"attempts": att}


def info_host_processes(p):
    pids = sorted(int(d) for d in os.listdir("/proc") if d.isdigit())
    hits = []
    for pid in pids:
        argv = (read_text(f"/proc/{pid}/cmdline") or "").split("\0")
        if pid != os.getpid() and p["host_marker"] in argv:
            hits.append(pid)
    return {"attempts": [attempt("see the host helper process in /proc", "getdents64", 0 if hits else -1,
                                 None, through=bool(hits), layer="namespace",
                                 detail=f"{len(pids)} processes visible: {pids[:10]}")]}


def info_cgroup_path(p):
    text = read_text("/proc/self/cgroup") or ""
    paths = {line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2}
    host = [h for h in p["host"]["cgroups"] if h in paths]
    outside = sorted(x for x in paths if x not in ("/", ""))
    return {"attempts": [attempt("the host's cgroup paths in /proc/self/cgroup", "openat", 0 if host or outside else -1,
                                 None, through=bool(host or outside), layer="namespace",
                                 detail=f"sees {sorted(paths)}")]}


PROBES = {
    "info-env-secrets": info_env_secrets, "info-mountinfo": info_mountinfo, "info-hostname": info_hostname,
    "info-machine-id": info_machine_id, "info-kallsyms": info_kallsyms, "info-dmesg": info_dmesg,
    "info-proc-keys": info_proc_keys, "info-host-processes": info_host_processes, "info-cgroup-path": info_cgroup_path,
}
