# Process probes (run inside the sandbox after _lib.py).  Signals go only to processes this
# program started or to the auditor's own helper (a handler that records them); kill(-1) and
# the caller's process group only ever get signal 0 (a permission check that delivers nothing).
import ctypes
import os
import resource
import signal
import subprocess
import time

PTRACE_SEIZE = 0x4206
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000


def _sleeper(seconds=5.0):
    pid = os.fork()
    if pid == 0:
        time.sleep(seconds)
        os._exit(0)
    return pid


def _end(pid):
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass


def proc_ptrace_pid1(p):
    # PTRACE_SEIZE does not stop the tracee; the tracer's exit detaches it
    a = sysc("ptrace(PTRACE_SEIZE, 1) (jailpy's PID 1, which talks to the supervisor)", "ptrace", PTRACE_SEIZE, 1, 0, 0)
    return {"attempts": [a]}


def proc_ptrace_child(p):
    child = _sleeper()
    try:
        a = sysc("ptrace(PTRACE_SEIZE, its own child) (ptrace is kernel attack surface: CVE-2019-13272)", "ptrace",
                 PTRACE_SEIZE, child, 0, 0)
    finally:
        _end(child)
    return {"attempts": [a]}


def proc_process_vm_readv(p):
    buf = ctypes.create_string_buffer(8)
    local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
    remote = (ctypes.c_void_p * 2)(0, 8)  # address 0: EFAULT if the call is allowed; nothing is read
    a = sysc("process_vm_readv(PID 1, address 0)", "process_vm_readv", 1, ctypes.byref(local), 1, ctypes.byref(remote),
             1, 0)
    return {"attempts": [a]}


def proc_pidfd_getfd(p):
    pidfd, err = raw("pidfd_open", 1, 0)
    if pidfd < 0:
        return {"attempts": [attempt("pidfd_open(1)", "pidfd_open", pidfd, err, args=[1, 0])]}
    try:
        a = sysc("pidfd_getfd(PID 1, fd 99999) (take a file descriptor of jailpy's PID 1)", "pidfd_getfd", pidfd,
                 99999, 0)
    finally:
        os.close(pidfd)
    return {"attempts": [a]}


def proc_host_proc(p):
    att = []
    hp = p["host_pid"]
    for leaf in ("environ", "root", "cmdline"):
        path = f"/proc/{hp}/{leaf}"
        try:
            data = os.readlink(path).encode() if leaf == "root" else open(path, "rb").read()
            own = str(os.getpid()) == str(hp)
            hit = p["env_secret"].encode() in data or p["host_marker"].encode() in data
            att.append(attempt(f"read {path} of the host helper", "openat", 0, None, through=hit, layer="namespace",
                               detail="a sandbox process with the same number" if not hit and not own else None))
        except OSError as e:
            att.append(attempt(f"read {path} of the host helper", "openat", -1, ename(e.errno),
                               layer="namespace" if e.errno == errno.ENOENT else "capability"))
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():  # its own argv holds what it looks for
            for leaf in ("environ", "cmdline"):
                data = read_text(f"/proc/{d}/{leaf}") or ""
                if p["env_secret"] in data or p["host_marker"] in data:
                    found.append(f"/proc/{d}/{leaf}")
    att.append(attempt("find the host helper's secret in any /proc/PID/environ or cmdline", "openat",
                       0 if found else -1, None, through=bool(found), layer="namespace",
                       detail=", ".join(found) or None))
    return {"attempts": att}


def proc_pid1_files(p):
    att = []
    for path, how in (("/proc/1/environ", "read"), ("/proc/1/mem", "open"), ("/proc/1/root", "list"),
                      ("/proc/1/fd", "list"), ("/proc/1/map_files", "list")):
        try:
            if how == "list":
                os.listdir(path)
            elif how == "read":
                open(path, "rb").read(64)
            else:
                ok, err, _ = open_only(path, os.O_RDONLY)
                if not ok:
                    raise OSError(getattr(errno, err), err)
            att.append(attempt(f"{how} {path} (jailpy's PID 1)", "openat", 0, None, through=True))
        except OSError as e:
            att.append(attempt(f"{how} {path} (jailpy's PID 1)", "openat", -1, ename(e.errno),
                               layer="capability" if e.errno in (errno.EACCES, errno.EPERM) else "kernel"))
    return {"attempts": att}


def proc_kill_host(p):
    att = []
    for what, pid, sig in ((f"kill(host helper pid {p['host_pid']}, SIGUSR1)", p["host_pid"], signal.SIGUSR1),
                           (f"kill(-{p['host_pgid']} (the helper's process group), SIGUSR1)", -p["host_pgid"],
                            signal.SIGUSR1),
                           (f"kill(the caller's pid {p['caller_pid']}, 0)", p["caller_pid"], 0),
                           (f"kill(-{p['caller_pgid']} (the caller's process group), 0)", -p["caller_pgid"], 0),
                           ("kill(-1, 0) (every process it may signal)", -1, 0)):
        if abs(pid) in (1, os.getpid(), os.getppid()) and pid != -1:
            continue  # a number that is one of the sandbox's own processes here: proves nothing
        try:
            os.kill(pid, sig)
            att.append(attempt(what, "kill", 0, None, through=pid != -1, layer="namespace",
                               detail="only the sandbox's own processes" if pid == -1 else None))
        except OSError as e:
            att.append(attempt(what, "kill", -1, ename(e.errno), layer="namespace"))
    return {"attempts": att}


def _daemon(marker):
    """Double fork + setsid: a 'sleep MARKER' that its parents do not wait for."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", marker])
        os._exit(0)
    os.waitpid(pid, 0)


def proc_outlive_exit(p):
    _daemon(p["marker"])
    return {"attempts": [attempt("a setsid + double-forked 'sleep' left behind when the program exits", "fork", 0, None,
                                 through=False, layer="namespace", detail="the host looks for it after the run")]}


def proc_outlive_wall(p):
    _daemon(p["marker"])
    time.sleep(30)  # the wall-time limit (1 s in this probe's policy) ends it
    return {"attempts": []}


def proc_nested_userns(p):
    def child():
        r, e = raw("unshare", CLONE_NEWUSER)
        if r != 0:
            return {"EPERM": 10, "ENOSPC": 11, "EINVAL": 12, "ENOSYS": 13}.get(e, 14)
        caps = status().get("CapEff", "0")
        return 0 if int(caps, 16) else 1
    kind, code = fork_run(child)
    names = {10: "EPERM", 11: "ENOSPC", 12: "EINVAL", 13: "ENOSYS", 14: "EIO"}
    if kind == "exit" and code in (0, 1):
        a = attempt("unshare(CLONE_NEWUSER): a nested user namespace with every capability in it", "unshare", 0, None,
                    through=code == 0, args=[CLONE_NEWUSER], layer="capability",
                    detail="full capabilities in the new namespace" if code == 0 else "no capabilities")
    else:
        err = names.get(code, "EIO") if kind == "exit" else None
        a = attempt("unshare(CLONE_NEWUSER): a nested user namespace with every capability in it", "unshare", -1, err,
                    args=[CLONE_NEWUSER], layer="kernel" if err != "EPERM" else "capability",
                    killed_by=code if kind == "signal" else None)
    return {"attempts": [a]}


def proc_setns(p):
    att = []
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    att.append(sysc("setns(its own network namespace) (needs CAP_SYS_ADMIN)", "setns", fd, CLONE_NEWNET))
    os.close(fd)
    ok, err, _ = open_only("/proc/1/ns/mnt", os.O_RDONLY)
    att.append(attempt("open /proc/1/ns/mnt (a namespace of jailpy's PID 1)", "openat", 0 if ok else -1, err,
                       through=ok, layer="capability"))
    return {"attempts": att}


def proc_caps_left(p):
    att = []
    st = status()
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        v = st.get(key, "0")
        att.append(attempt(f"{key} of the program", "capget", 0 if int(v, 16) else -1, None,
                           through=bool(int(v, 16)), layer="capability", detail=v))
    nnp = st.get("NoNewPrivs", "0")
    att.append(attempt("no_new_privs off (execve could grant privileges)", "prctl", 0 if nnp != "1" else -1,
                       None, through=nnp != "1", layer="no_new_privs", detail=nnp))
    out = subprocess.run(["python3", "-I", "-S", "-c",
                          "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])"],
                         capture_output=True, text=True, timeout=20).stdout.strip() or "0"
    att.append(attempt(f"CapEff after execve as uid {os.geteuid()}", "execve", 0 if int(out, 16) else -1,
                       None, through=bool(int(out, 16)), layer="capability", detail=out))
    return {"attempts": att}


def proc_reboot(p):
    # magic numbers wrong on purpose: EINVAL if the capability check passed
    return {"attempts": [sysc("reboot(bad magic)", "reboot", 0, 0, 0x01234567, 0)]}


def proc_kexec(p):
    return {"attempts": [sysc("kexec_load(invalid flags)", "kexec_load", 0, 0, 0, 0xFFFFFFFF),
                         sysc("kexec_file_load(fd -1)", "kexec_file_load", -1, -1, 0, 0, 0xFFFFFFFF)]}


def proc_module_load(p):
    return {"attempts": [sysc("init_module(NULL image)", "init_module", 0, 0, b""),
                         sysc("finit_module(fd -1)", "finit_module", -1, b"", 0),
                         sysc("delete_module(bad name pointer)", "delete_module", 1, 0)]}


def proc_clock(p):
    # adjtimex(ADJ_TICK with tick 0): the capability check comes first, then EINVAL for the tick
    tx = ctypes.create_string_buffer(256)
    ctypes.c_uint32.from_buffer(tx, 0).value = 0x4000  # ADJ_TICK; tx.tick (offset 88) stays 0: invalid
    a = sysc("adjtimex(ADJ_TICK, invalid tick) (set the host's clock)", "adjtimex", ctypes.byref(tx))
    ts = (ctypes.c_long * 2)(-1, 0)  # an invalid time: EINVAL if the call is allowed
    b = sysc("clock_settime(CLOCK_REALTIME, invalid time)", "clock_settime", 0, ctypes.byref(ts))
    if b["errno"] == "EINVAL" and not int(status().get("CapEff", "0"), 16):
        b.update(through=False, layer="capability", detail="a valid time needs CAP_SYS_TIME, which it lacks (CapEff 0)")
    return {"attempts": [a, b]}


def proc_core_dump(p):
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    att = []
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20))
        att.append(attempt("raise RLIMIT_CORE to dump a core through the host's core_pattern helper", "prlimit64", 0,
                           None, through=True))
    except (OSError, ValueError):
        att.append(attempt("raise RLIMIT_CORE to dump a core through the host's core_pattern helper", "prlimit64", -1,
                           "EPERM", layer="rlimit", detail=f"RLIMIT_CORE {soft}/{hard}"))
    pattern = (read_text("/proc/sys/kernel/core_pattern") or "").strip()
    return {"attempts": att, "core_pattern": pattern}


PROBES = {
    "proc-ptrace-pid1": proc_ptrace_pid1, "proc-ptrace-child": proc_ptrace_child,
    "proc-process-vm-readv": proc_process_vm_readv, "proc-pidfd-getfd": proc_pidfd_getfd,
    "proc-host-proc": proc_host_proc, "proc-pid1-files": proc_pid1_files, "proc-kill-host": proc_kill_host,
    "proc-outlive-exit": proc_outlive_exit, "proc-outlive-wall": proc_outlive_wall,
    "proc-nested-userns": proc_nested_userns, "proc-setns": proc_setns, "proc-caps-left": proc_caps_left,
    "proc-reboot": proc_reboot, "proc-kexec": proc_kexec, "proc-module-load": proc_module_load,
    "proc-clock": proc_clock, "proc-core-dump": proc_core_dump,
}
