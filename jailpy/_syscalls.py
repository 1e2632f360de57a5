"""The only module that talks to the kernel through ctypes.

Every wrapper raises :class:`OSError` with the kernel's errno on failure (the way
the :mod:`os` module does), so callers can name what failed.  Constants carry the
names used in the man pages and in ``<linux/*.h>``; syscall numbers are x86_64
(``arch/x86/entry/syscalls/syscall_64.tbl``).  Other architectures are refused at
import time rather than calling the wrong syscall.
"""

from __future__ import annotations

import ctypes
import os
import platform

if platform.machine() != "x86_64":  # pragma: no cover - refused, not guessed
    raise ImportError(f"jailpy supports x86_64 only (this machine is {platform.machine()})")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# syscall numbers, x86_64
NR_clone = 56
NR_capget = 125
NR_capset = 126
NR_pivot_root = 155
NR_open_tree = 428
NR_move_mount = 429
NR_close_range = 436
NR_openat2 = 437
NR_mount_setattr = 442

# unshare(2) / clone(2) flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2

# open_tree(2), move_mount(2), mount_setattr(2)
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

# openat2(2) resolve flags
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# close_range(2)
CLOSE_RANGE_CLOEXEC = 1 << 2

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# capability(7)
CAP_KILL = 5
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(ret: int) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _cstr(path: str | bytes | None) -> bytes | None:
    if path is None:
        return None
    return os.fsencode(path)


def unshare(flags: int) -> None:
    """unshare(2): move the caller into new namespaces given by ``CLONE_NEW*`` flags."""
    _check(_libc.unshare(ctypes.c_int(flags)))


def clone(flags: int) -> int:
    """clone(2) as fork(2) does it (no new stack: the child continues on a copy of this one), with
    ``CLONE_NEW*`` ``flags`` and SIGCHLD at exit: the child starts in the new namespaces (with
    CLONE_NEWPID it is PID 1 of the new one).  Returns the child's pid (in the caller's pid
    namespace) to the parent and 0 to the child.  Raises OSError.

    Unlike os.fork() this runs none of Python's or glibc's fork handlers, and glibc's cached
    thread id in the child stays the parent's (raise(3) and pthread_kill(3) aim at it): only
    for a single-threaded process whose child never returns into code that relies on either
    (jailpy.forkserver)."""
    return _check(_syscall(NR_clone, ctypes.c_ulong(flags | 17), ctypes.c_void_p(0), ctypes.c_void_p(0),
                           ctypes.c_void_p(0), ctypes.c_ulong(0)))  # 17: SIGCHLD


def setns(fd: int, nstype: int) -> None:
    """setns(2): join the namespace ``fd`` refers to (``nstype`` a ``CLONE_NEW*`` flag or 0)."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)))


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2).  ``data`` is the filesystem's option string (e.g. ``"size=64m"``)."""
    _check(_libc.mount(_cstr(source), _cstr(target), _cstr(fstype), ctypes.c_ulong(flags), _cstr(data)))


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2); ``MNT_DETACH`` for a lazy unmount."""
    _check(_libc.umount2(_cstr(target), ctypes.c_int(flags)))


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): make ``new_root`` the root mount, the old root moves to ``put_old``."""
    _check(_syscall(NR_pivot_root, _cstr(new_root), _cstr(put_old)))


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """open_tree(2) (Linux 5.2): with ``OPEN_TREE_CLONE`` returns an fd for a detached copy of a mount tree."""
    return _check(_syscall(NR_open_tree, ctypes.c_int(dirfd), _cstr(path), ctypes.c_uint(flags)))


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    """move_mount(2) (Linux 5.2): attach a detached tree (``from_fd``) at ``to_fd``/``to_path``."""
    _check(
        _syscall(
            NR_move_mount, ctypes.c_int(from_fd), _cstr(from_path), ctypes.c_int(to_fd), _cstr(to_path), ctypes.c_uint(flags)
        )
    )


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0) -> None:
    """mount_setattr(2) (Linux 5.12): set ``MOUNT_ATTR_*`` on a mount, on its whole tree with ``AT_RECURSIVE``."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    _check(
        _syscall(
            NR_mount_setattr, ctypes.c_int(dirfd), _cstr(path), ctypes.c_uint(flags), ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        )
    )


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2) (Linux 5.6).  ``RESOLVE_IN_ROOT`` resolves ``path`` as if ``dirfd`` were ``/``:
    ``..`` and absolute symlinks cannot leave it."""
    how = _OpenHow(flags, mode, resolve)
    return _check(
        _syscall(NR_openat2, ctypes.c_int(dirfd), _cstr(path), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    )


def close_range(first: int, last: int, flags: int = 0) -> None:
    """close_range(2) (Linux 5.9); with ``CLOSE_RANGE_CLOEXEC`` marks the fds close-on-exec instead."""
    _check(_syscall(NR_close_range, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2)."""
    return _check(
        _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    )


def sethostname(name: str) -> None:
    """sethostname(2); needs CAP_SYS_ADMIN in the UTS namespace's owning user namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) for the calling thread, with 64-bit masks (``_LINUX_CAPABILITY_VERSION_3``)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_syscall(NR_capset, ctypes.byref(hdr), ctypes.byref(data)))


def cap_last_cap() -> int:
    """The highest capability number this kernel knows (``/proc/sys/kernel/cap_last_cap``)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except OSError:
        return 63


# posix_spawn(3), called directly rather than through os.posix_spawnp: Python refuses to name
# glibc's internal signals 32 and 33 in setsigdef, and glibc's child then leaves them ignored
# (SIG_IGN survives execve), so the program would start with two signals ignored.
POSIX_SPAWN_SETSIGMASK = 0x08
POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSID = 0x80
_SIGSET_BYTES = 128  # sizeof(sigset_t) in glibc
# every signal 1-64 but SIGKILL (9) and SIGSTOP (19), as a raw sigset_t (bit sig-1)
_SIGDEFAULT = ctypes.create_string_buffer(
    sum(1 << (sig - 1) for sig in range(1, 65) if sig not in (9, 19)).to_bytes(8, "little") + bytes(_SIGSET_BYTES - 8),
    _SIGSET_BYTES)


def posix_spawnp(file: str | bytes, argv: list, env: "dict | list[bytes]") -> int:
    """posix_spawnp(3) in a new session (POSIX_SPAWN_SETSID), no signal blocked, and every
    signal but SIGKILL and SIGSTOP (which cannot be caught) reset to SIG_DFL, glibc's internal
    ones included.  ``file`` is searched in the caller's PATH; ``argv`` items are str or bytes;
    ``env`` is a dict or a list of ``NAME=VALUE`` bytes.  Returns the pid; raises OSError (e.g.
    ENOENT when not found, EACCES when not executable, E2BIG when argv and env exceed what
    execve(2) accepts)."""
    argv = [os.fsencode(a) for a in argv]
    if isinstance(env, dict):
        env = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    attr = ctypes.create_string_buffer(512)  # posix_spawnattr_t is 336 bytes on x86_64 glibc
    _check_rc(_libc.posix_spawnattr_init(attr))
    try:
        _check_rc(_libc.posix_spawnattr_setflags(
            attr, ctypes.c_short(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID)))
        _check_rc(_libc.posix_spawnattr_setsigdefault(attr, _SIGDEFAULT))
        empty = ctypes.create_string_buffer(_SIGSET_BYTES)
        _check_rc(_libc.posix_spawnattr_setsigmask(attr, empty))
        c_argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
        c_env = (ctypes.c_char_p * (len(env) + 1))(*env, None)
        pid = ctypes.c_int(0)
        _check_rc(_libc.posix_spawnp(ctypes.byref(pid), os.fsencode(file), None, attr, c_argv, c_env))
        return pid.value
    finally:
        _libc.posix_spawnattr_destroy(attr)


NR_keyctl = 250
KEYCTL_JOIN_SESSION_KEYRING = 1


def keyctl_join_session_keyring() -> None:
    """keyctl(2) KEYCTL_JOIN_SESSION_KEYRING with no name: the calling process gets a new,
    empty, anonymous session keyring instead of the one it inherited (keyrings(7),
    session-keyring(7)).  Raises OSError (ENOSYS: keyrings not built into this kernel)."""
    _check(_syscall(NR_keyctl, KEYCTL_JOIN_SESSION_KEYRING, None, 0, 0, 0))


def _check_rc(rc: int) -> None:
    if rc != 0:
        raise OSError(rc, os.strerror(rc))


# --- seccomp(2) ---
# seccomp(2) and seccomp_unotify(2); <linux/seccomp.h>, <linux/filter.h>, <linux/audit.h>.

NR_seccomp = 317
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3  # Linux 5.0: return a notification listener fd
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5  # Linux 5.19: once received, only SIGKILL interrupts the wait
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1  # Linux 5.5: let the notified syscall run
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

# SECCOMP_RET_* filter return values (the high 16 bits are the action, the low 16 bits its data)
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ACTION_FULL = 0xFFFF0000
SECCOMP_RET_DATA = 0x0000FFFF


class SockFprog(ctypes.Structure):
    """struct sock_fprog: ``len`` instructions (struct sock_filter, 8 bytes each) at ``filter``."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompData(ctypes.Structure):
    """struct seccomp_data: what a filter sees of a syscall (64 bytes)."""

    _fields_ = [
        ("nr", ctypes.c_int),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    ]


class SeccompNotif(ctypes.Structure):
    """struct seccomp_notif (80 bytes): must be zeroed before SECCOMP_IOCTL_NOTIF_RECV."""

    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("data", SeccompData)]


class SeccompNotifResp(ctypes.Structure):
    """struct seccomp_notif_resp (24 bytes): ``error`` is a negated errno (or 0 with ``val``)."""

    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32), ("flags", ctypes.c_uint32)]


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


# _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp), _IOW('!', 2, __u64)
SECCOMP_IOCTL_NOTIF_RECV = _ioc(3, 0, ctypes.sizeof(SeccompNotif))
SECCOMP_IOCTL_NOTIF_SEND = _ioc(3, 1, ctypes.sizeof(SeccompNotifResp))
SECCOMP_IOCTL_NOTIF_ID_VALID = _ioc(1, 2, 8)

_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int


def seccomp_set_mode_filter(bpf: bytes, flags: int = 0) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog) for the calling thread.  ``bpf`` is an array
    of struct sock_filter (8 bytes each).  Returns the listener fd with
    SECCOMP_FILTER_FLAG_NEW_LISTENER (close-on-exec), else 0.  Needs no_new_privs or
    CAP_SYS_ADMIN; raises OSError (EINVAL: bad program or flag, EACCES: no no_new_privs)."""
    buf = ctypes.create_string_buffer(bytes(bpf), len(bpf))
    prog = SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    return _check(_syscall(NR_seccomp, ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags), ctypes.byref(prog)))


def seccomp_notif_recv(fd: int) -> SeccompNotif:
    """ioctl(SECCOMP_IOCTL_NOTIF_RECV): blocks until a notification arrives.  OSError ENOENT when
    the notifying task died (or the wait was interrupted) before it was read."""
    notif = SeccompNotif()
    _check(_ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, ctypes.byref(notif)))
    return notif


def seccomp_notif_send(fd: int, notif_id: int, val: int = 0, error: int = 0, flags: int = 0) -> None:
    """ioctl(SECCOMP_IOCTL_NOTIF_SEND): answer notification ``notif_id``; ``error`` is the negated
    errno the syscall returns.  OSError ENOENT when the task is gone."""
    resp = SeccompNotifResp(notif_id, val, error, flags)
    _check(_ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, ctypes.byref(resp)))


def seccomp_notif_id_valid(fd: int, notif_id: int) -> bool:
    """ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID): whether ``notif_id`` is still pending (its task alive)."""
    value = ctypes.c_uint64(notif_id)
    return _ioctl(fd, SECCOMP_IOCTL_NOTIF_ID_VALID, ctypes.byref(value)) == 0
