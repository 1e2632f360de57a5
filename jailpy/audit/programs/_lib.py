# Shared helpers of the audit probe programs.  jailpy.audit prepends this file to a category's
# program (filesystem.py, process.py, ...) and runs the result INSIDE the sandbox with
# `python3 -I -S -c SOURCE PARAMS_JSON`: stdlib and ctypes only, nothing of jailpy.
#
# A probe function takes the parameters (a dict: "probe", "phase", and what the host set up:
# canary paths, ports, pids...) and returns a dict of facts; main() prints it as one JSON line
# {"facts": {...}} on stdout.  The central fact is "attempts": one entry per thing tried:
#
#   {"what": "open /etc/x for writing", "call": "openat", "nr": 257, "args": [...],
#    "ret": -1, "errno": "EROFS", "through": false, "layer": "mount"}
#
# "through" is true when the attempt did what an attacker wanted, or reached the kernel code the
# defence should have kept it from (an unblocked call with harmless arguments fails there with
# EFAULT, EBADF or EINVAL: SECURITY.md, safety rules).  "layer" is the program's reading of the
# errno (EROFS: mount, ESRCH for a host pid: namespace, EPERM for a capability check:
# capability); the host side replaces it by "seccomp" when the sandbox's filter denies that very
# call with that errno (jailpy.audit judges with the compiled BPF and the Result).
#
# Safety (SECURITY.md): every call an attacker would make with real effect is made with an
# invalid pointer, fd or value, or against a canary the host created; nothing is written to a
# host control file (files under /proc/sys and /sys are opened at most, never written); network
# only to loopback; every loop is bounded; only processes this program started are signalled.
import ctypes
import errno
import json
import os
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl); checked against
# libseccomp's table by tests/escape/test_escape.py
NR = {
    "read": 0, "ioctl": 16, "shmget": 29, "getpid": 39, "socket": 41, "clone": 56, "semget": 64,
    "msgget": 68, "mknod": 133, "personality": 135, "sched_setscheduler": 144, "pivot_root": 155,
    "modify_ldt": 154, "chroot": 161, "settimeofday": 164, "mount": 165, "umount2": 166, "reboot": 169,
    "init_module": 175, "delete_module": 176, "setxattr": 188, "clock_settime": 227, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "mknodat": 259, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "finit_module": 313, "sched_setattr": 314, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434,
    "pidfd_getfd": 438, "mount_setattr": 442, "ptrace": 101, "syslog": 103, "iopl": 172, "ioperm": 173,
    "adjtimex": 159, "mq_open": 240, "access": 21, "open": 2, "creat": 85, "chmod": 90, "fchmod": 91,
    "fchmodat": 268, "fchmodat2": 452, "openat": 257, "openat2": 437, "socketpair": 53, "io_setup": 206,
    "io_destroy": 207, "io_getevents": 208, "io_submit": 209,
}
REACHED = ("EFAULT", "EBADF", "EINVAL")
"""errnos of a call that reached the kernel code behind it (harmless arguments, no filter)."""


def ename(e):
    """errno number -> name ("EPERM"), None for 0."""
    return errno.errorcode.get(e, str(e)) if e else None


def arg(x):
    """A syscall argument for ctypes' variadic call: ints as C longs, everything else as is."""
    return ctypes.c_long(x) if isinstance(x, int) else x


def raw(name, *args):
    """syscall(2) ``name`` with ``args``; returns (ret, errno name or None)."""
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *[arg(a) for a in args])
    return r, (ename(ctypes.get_errno()) if r == -1 else None)


def attempt(what, call, ret, err, *, through=None, layer=None, args=None, nr=None, **extra):
    """One attempt record (see the file header).  ``through`` defaults to "succeeded or reached
    the kernel" (ret >= 0 or err in REACHED); ``layer`` to a reading of ``err``."""
    if through is None:
        through = err is None or err in REACHED
    if layer is None and not through:
        layer = ERRNO_LAYER.get(err, "kernel")
    rec = {"what": what, "call": call, "nr": NR.get(call, nr), "ret": ret, "errno": err, "through": bool(through),
           "layer": None if through else layer}
    if args is not None:
        rec["args"] = [a if isinstance(a, int) else 0 for a in args]
    rec.update(extra)
    return rec


ERRNO_LAYER = {"EPERM": "capability", "EACCES": "permissions", "EROFS": "mount", "ENOENT": "mount",
               "ESRCH": "namespace", "ENOSYS": "kernel", "EAFNOSUPPORT": "kernel"}


def sysc(what, name, *args, through=None, layer=None, **extra):
    """Make raw syscall ``name`` and return its attempt record (ints of ``args`` recorded for the
    host's seccomp judgement; pointers as 0)."""
    r, e = raw(name, *args)
    if r >= 0 and name in ("socket", "open_tree", "fsopen", "pidfd_open", "userfaultfd", "io_uring_setup",
                           "perf_event_open", "fspick", "fsmount", "open_by_handle_at", "memfd_secret", "open",
                           "openat", "openat2", "creat"):
        os.close(r)  # an fd that should not have been given: drop it at once
    return attempt(what, name, r, e, through=through, layer=layer, args=list(args), **extra)


def open_only(path, flags):
    """open(2) ``path`` with ``flags`` and close it at once (never read or written); returns
    (ok, errno name, (st_dev, st_ino, st_rdev, mode) of what was opened or None)."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        return False, ename(e.errno), None
    try:
        st = os.fstat(fd)
        return True, None, (st.st_dev, st.st_ino, st.st_rdev, st.st_mode)
    finally:
        os.close(fd)


def read_text(path, limit=65536):
    """The start of a file as text, or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return None


def status():
    """/proc/self/status as a dict (CapEff, NoNewPrivs, Uid, ...)."""
    out = {}
    for line in (read_text("/proc/self/status") or "").splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def mount_of(path):
    """(mount point, per-mount options, fs type) of the mount holding ``path`` (mountinfo(5))."""
    best = ("", "", "")
    real = os.path.realpath(path)
    for line in (read_text("/proc/self/mountinfo", 1 << 20) or "").splitlines():
        parts = line.split(" ")
        sep = parts.index("-")
        mp = parts[4].replace("\\040", " ")
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best[0]):
            best = (mp, parts[5], parts[sep + 1])
    return best


def fork_run(fn, timeout=5.0):
    """Run ``fn()`` in a forked child that exits 0 (or with fn's int); returns ("exit", code) or
    ("signal", signum).  The child is killed after ``timeout`` seconds (it is ours)."""
    pid = os.fork()
    if pid == 0:
        try:
            rc = fn()
            os._exit(rc if isinstance(rc, int) else 0)
        except BaseException:
            os._exit(99)
    end = time.monotonic() + timeout
    while True:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p:
            break
        if time.monotonic() > end:
            os.kill(pid, 9)
            p, st = os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    return ("signal", os.WTERMSIG(st)) if os.WIFSIGNALED(st) else ("exit", os.WEXITSTATUS(st))


def main():
    params = json.loads(sys.argv[1])
    fn = PROBES[params["probe"]]  # noqa: F821 - defined by the category program appended after this file
    try:
        facts = fn(params)
    except Exception as e:  # noqa: BLE001 - reported, the host decides
        facts = {"exception": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps({"facts": facts}) + "\n")
    sys.stdout.flush()
