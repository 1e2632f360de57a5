# Kernel attack surface probes (run inside the sandbox after _lib.py).  Every call has an invalid
# argument, so a call no layer stops fails with EFAULT/EBADF/EINVAL in the kernel; calls that
# would change this process (a new namespace, a personality) run in a forked child.
import ctypes
import mmap
import os
import signal

CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
TIOCSTI, TIOCSETD = 0x5412, 0x5423
X32 = 0x40000000


def _sysctl(name):
    v = (read_text("/proc/sys/" + name.replace(".", "/")) or "").strip()
    return int(v) if v.lstrip("-").isdigit() else None


def _kernel_says(a, sysctl, meaning):
    """An EPERM/EACCES the filter did not give: a sysctl of this kernel, when it is set."""
    v = _sysctl(sysctl)
    if a["errno"] in ("EPERM", "EACCES") and v:
        a.update(layer="kernel", detail=f"{sysctl}={v}: {meaning}")
    return a


def kernel_io_uring(p):
    a = sysc("io_uring_setup(1, NULL params)", "io_uring_setup", 1, 0)
    return {"attempts": [_kernel_says(a, "kernel.io_uring_disabled", "io_uring off for unprivileged processes")]}


def kernel_bpf(p):
    a = sysc("bpf(BPF_MAP_CREATE, NULL attr)", "bpf", 0, 0, 0)
    b = sysc("bpf(BPF_PROG_LOAD, NULL attr)", "bpf", 5, 0, 0)
    return {"attempts": [_kernel_says(x, "kernel.unprivileged_bpf_disabled", "no BPF without CAP_BPF") for x in (a, b)]}


def kernel_perf_event(p):
    a = sysc("perf_event_open(NULL attr)", "perf_event_open", 0, 0, -1, -1, 0)
    return {"attempts": [_kernel_says(a, "kernel.perf_event_paranoid", "perf events restricted")]}


def kernel_userfaultfd(p):
    # UFFD_USER_MODE_ONLY (allowed unprivileged since 5.11) plus an invalid flag: EINVAL if it runs
    a = sysc("userfaultfd(UFFD_USER_MODE_ONLY | invalid flag)", "userfaultfd", 1 | 0x100)
    return {"attempts": [_kernel_says(a, "vm.unprivileged_userfaultfd", "")]}


def kernel_fsconfig_userns(p):
    # CVE-2022-0185: fsconfig() of a filesystem context, reachable with CAP_SYS_ADMIN in a user
    # namespace.  Directly, then from a nested user + mount namespace (a forked child).
    att = [sysc('fsopen("tmpfs") in the sandbox', "fsopen", b"tmpfs", 0)]

    def child():
        r, e = raw("unshare", CLONE_NEWUSER | CLONE_NEWNS)
        if r != 0:
            return 10 if e == "EPERM" else 11
        fd, e = raw("fsopen", b"tmpfs", 0)
        if fd < 0:
            return 12
        r, e = raw("fsconfig", fd, 1, b"source", b"jailpy-audit", 0)  # FSCONFIG_SET_STRING: harmless
        return 0 if r == 0 else 1
    kind, code = fork_run(child)
    if kind == "exit" and code in (0, 1, 12):
        att.append(attempt("unshare(CLONE_NEWUSER|CLONE_NEWNS), then fsopen + fsconfig there", "unshare", 0, None,
                           through=code in (0, 1), args=[CLONE_NEWUSER | CLONE_NEWNS], layer="capability"))
    else:
        att.append(attempt("unshare(CLONE_NEWUSER|CLONE_NEWNS), then fsopen + fsconfig there", "unshare", -1,
                           "EPERM" if code == 10 else "EINVAL", args=[CLONE_NEWUSER | CLONE_NEWNS],
                           layer="kernel" if code != 10 else "capability"))
    return {"attempts": att}


def _foreign(what, call, fn):
    kind, code = fork_run(fn)
    if kind == "signal":
        return attempt(what, call, -1, None, through=False, layer="seccomp" if code == signal.SIGSYS else "kernel",
                       killed_by=code)
    if code == 0:
        return attempt(what, call, 0, None, through=True, detail="returned the pid: the other ABI is open")
    return attempt(what, call, -1, {1: "ENOSYS", 2: "EPERM"}.get(code, "EIO"), layer="kernel",
                   detail="this kernel has no such ABI" if code == 1 else None)


def kernel_x32(p):
    def child():
        r, e = raw_nr(X32 | 39)
        return 0 if r == os.getpid() else 1 if e == "ENOSYS" else 2 if e == "EPERM" else 3
    return {"attempts": [_foreign("getpid through the x32 ABI (nr | 0x40000000)", "x32", child)]}


def raw_nr(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    return r, (ename(ctypes.get_errno()) if r == -1 else None)


def kernel_int80(p):
    def child():
        # mov eax, 20 (i386 getpid); int 0x80; ret  -- r8-r11 are caller-saved, nothing else is touched
        code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])
        m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        m.write(code)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        ret = ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
        return 0 if ret == os.getpid() else 1 if ret == -38 else 2 if ret == -1 else 3
    return {"attempts": [_foreign("getpid through int 0x80 (the i386 ABI)", "int80", child)]}


def kernel_ioctl_64bit(p):
    # TIOCSTI with bit 32 set: the tty layer truncates the request to 32 bits, a filter comparing
    # all 64 would miss it.  NULL character pointer: nothing can be injected.
    a = sysc("ioctl(stdin: a terminal, 0x100005412 = TIOCSTI | 1 << 32, NULL)", "ioctl", 0, 0x100005412, 0)
    if a["errno"] == "EPERM":
        a.update(layer="session", detail="not its controlling terminal (new session)")
    elif a["errno"] == "EIO":
        a.update(layer="kernel", detail="dev.tty.legacy_tiocsti=0")
    return {"attempts": [a]}


def kernel_ldisc_autoload(p):
    fd = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    try:
        ldisc = ctypes.c_int(29)  # N_DEVELOPMENT: no module provides it
        if not p["may_call_tiocsetd"]:
            return {"attempts": [attempt("ioctl(pty, TIOCSETD, 29) (line discipline module autoload)", "ioctl", 0, None,
                                         through=True, args=[fd, TIOCSETD], detail="not called: the filter allows it "
                                         "and this kernel loads modules on demand")]}
        a = sysc("ioctl(its own pty, TIOCSETD, 29) (line discipline module autoload)", "ioctl", fd, TIOCSETD,
                 ctypes.byref(ldisc))
        if a["errno"] in ("EINVAL", "ENXIO") and not p["modules"]:
            a.update(through=False, layer="kernel", detail="reached the autoload path; this kernel loads no modules")
        elif a["errno"] == "EPERM" and _sysctl("dev.tty.ldisc_autoload") == 0:
            a.update(layer="kernel", detail="dev.tty.ldisc_autoload=0")
        return {"attempts": [a]}
    finally:
        os.close(fd)


def kernel_personality(p):
    def child():
        r, e = raw("personality", 0x0400000 | 0x0040000)  # READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE
        return 0 if r >= 0 else 10 if e == "EPERM" else 11
    kind, code = fork_run(child)
    return {"attempts": [attempt("personality(READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE) (ASLR off)", "personality",
                                 0 if code == 0 else -1, None if code == 0 else "EPERM" if code == 10 else "EINVAL",
                                 args=[0x0440000], through=code == 0)]}


def kernel_modify_ldt(p):
    r, e = raw("modify_ldt", 1, 0, 0)  # write, wrong size: EINVAL if it runs
    if r > 0 and (r & 0xFFFFFFFF) >= 0xFFFFF001:  # modify_ldt returns an int in eax
        e, r = ename(0x100000000 - (r & 0xFFFFFFFF)), -1
    return {"attempts": [attempt("modify_ldt(write, wrong size) (16-bit segments)", "modify_ldt", r, e,
                                 args=[1, 0, 0])]}


def kernel_ioport(p):
    # port 0x80 (POST codes): never read or written, even if access were granted
    return {"attempts": [sysc("ioperm(0x80, 1, on) (direct I/O port access)", "ioperm", 0x80, 1, 1)]}


PROBES = {
    "kernel-io-uring": kernel_io_uring, "kernel-bpf": kernel_bpf, "kernel-perf-event": kernel_perf_event,
    "kernel-userfaultfd": kernel_userfaultfd, "kernel-fsconfig-userns": kernel_fsconfig_userns,
    "kernel-x32": kernel_x32, "kernel-int80": kernel_int80, "kernel-ioctl-64bit": kernel_ioctl_64bit,
    "kernel-ldisc-autoload": kernel_ldisc_autoload, "kernel-personality": kernel_personality,
    "kernel-modify-ldt": kernel_modify_ldt, "kernel-ioport": kernel_ioport,
}
