"""seccomp: syscall policies as data, compiled to classic BPF, and the host side of user notification.

A policy is a TOML file under ``policies/seccomp/`` (or an OCI/Docker-format JSON profile under
``profiles/seccomp/``): a default action, per-syscall rules with optional argument conditions,
and ``known_max_nr``, the highest syscall number the policy was written against.  :func:`load`
reads and checks one (:class:`SeccompError` names the file and the key); :func:`prepare` compiles
it with libseccomp (pyseccomp, seccomp_rule_add(3), seccomp_export_bpf(3)) and caches the BPF in
memory and on disk, so a run does no libseccomp work; :func:`install` loads the bytes with
seccomp(2) in the sandbox's PID 1; :func:`receive` / :func:`respond` answer the kernel's
notifications on the host (seccomp_unotify(2)).

What the BPF does, in order (seccomp(2), Documentation/userspace-api/seccomp_filter.rst):

1. A stub jailpy prepends to libseccomp's program: for x86_64 syscalls numbered above
   ``known_max_nr`` (newer than the policy) return ERRNO(ENOSYS), unreported, so libc falls back
   as on an older kernel.  libseccomp cannot name syscalls newer than its table, hence the stub.
2. libseccomp's program: any other architecture (i386 through ``int 0x80``) and x32 numbers
   (bit 0x40000000) kill the process (SECCOMP_RET_KILL_PROCESS, SIGSYS; see ``_BAD_ARCH``);
   then the rules; then the default action.

Actions of a rule (and of the default):

``allow``  the syscall runs.
``deny``   a deliberate denial: SECCOMP_RET_USER_NOTIF; the supervisor reads the notification,
           names the syscall in the Result and answers ``errno`` (EPERM unless the rule says).
``kill``   SECCOMP_RET_USER_NOTIF; the supervisor kills the sandbox (verdict SV).
``log``    SECCOMP_RET_USER_NOTIF; the supervisor records it and lets it run (CONTINUE).
``errno``  SECCOMP_RET_ERRNO with ``errno``, in BPF, unreported (ENOSYS for clone3 and friends).

A policy with ``report = false`` compiles deny/kill/log to plain ERRNO / KILL_PROCESS / LOG and
needs no listener.  ``prepare(..., log=True)`` turns every deny and kill into a notification the
supervisor answers with CONTINUE (a permissive run that lists what would have been denied).

Which rule a notification came from is carried in the low 16 bits of the filter's return value
(the kernel ignores them for SECCOMP_RET_USER_NOTIF), so :meth:`Filter.decide` runs the very same
BPF (a small classic-BPF interpreter) and cannot disagree with the kernel.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import hashlib
import json
import os
import re
import stat
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import _syscalls as sc
from .errors import PolicyError

_PKG = Path(__file__).resolve().parent
POLICY_DIRS = (_PKG / "policies" / "seccomp", _PKG.parent / "policies" / "seccomp")
"""Where policy names are looked up (``NAME.toml``): the installed package's copy first."""
PROFILE_DIRS = (_PKG / "profiles" / "seccomp", _PKG.parent / "profiles" / "seccomp")
"""Where OCI/Docker-format profile names are looked up (``NAME.json``)."""

COMPILER_VERSION = 1
"""Bumped whenever the generated BPF changes for the same policy: part of the cache key."""

MAX64 = (1 << 64) - 1
_ACTIONS = ("allow", "deny", "errno", "kill", "log")
_BAD_ARCH = sc.SECCOMP_RET_KILL_PROCESS
# Non-native syscalls are killed, not answered EPERM: no x86_64 program (glibc, musl, Go, the
# JVM, node, CPython) issues int 0x80 or x32 numbers, so this never fires for a well-behaved
# program, while it is the classic way around a filter and reaches the compat entry code, a
# separate attack surface; a kill ends the attempt at once and shows as SIGSYS (exit 159).

# data bits of SECCOMP_RET_USER_NOTIF (and of the SECCOMP_RET_TRACE placeholder given to libseccomp)
_KIND_DENY, _KIND_KILL, _KIND_LOG = 0x1000, 0x2000, 0x3000
_KIND_MASK = 0x3000
_PERMISSIVE = 0x4000
_ERRNO_MASK = 0x0FFF

# x86_64 syscalls newer than libseccomp 2.5's table (arch/x86/entry/syscalls/syscall_64.tbl);
# uretprobe and uprobe are the kernel's uprobe trampolines (only callable from them), named for describe()
_EXTRA_SYSCALLS = {
    335: "uretprobe", 336: "uprobe", 457: "statmount", 458: "listmount", 459: "lsm_get_self_attr",
    460: "lsm_set_self_attr", 461: "lsm_list_modules", 462: "mseal", 463: "setxattrat", 464: "getxattrat",
    465: "listxattrat", 466: "removexattrat", 467: "open_tree_attr", 468: "file_getattr", 469: "file_setattr",
}
_EXTRA_NR = {v: k for k, v in _EXTRA_SYSCALLS.items()}


def _shown(key: object) -> str:
    """A key or label as written when it is plain, else its repr (so a message stays one line)."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w .,:/+-]+", key) else repr(key)

class SeccompError(PolicyError):
    """A seccomp policy or profile is invalid: unknown syscall, key, action or condition, a
    malformed OCI profile, an include loop.  One line naming the file and the key (exit 125)."""


# ------------------------------------------------------------------ constants ----

CLONE_FLAGS = dict(
    CLONE_VM=0x100, CLONE_FS=0x200, CLONE_FILES=0x400, CLONE_SIGHAND=0x800, CLONE_PIDFD=0x1000,
    CLONE_PTRACE=0x2000, CLONE_VFORK=0x4000, CLONE_PARENT=0x8000, CLONE_THREAD=0x10000, CLONE_NEWNS=0x20000,
    CLONE_SYSVSEM=0x40000, CLONE_SETTLS=0x80000, CLONE_PARENT_SETTID=0x100000, CLONE_CHILD_CLEARTID=0x200000,
    CLONE_DETACHED=0x400000, CLONE_UNTRACED=0x800000, CLONE_CHILD_SETTID=0x1000000, CLONE_NEWCGROUP=0x2000000,
    CLONE_NEWUTS=0x4000000, CLONE_NEWIPC=0x8000000, CLONE_NEWUSER=0x10000000, CLONE_NEWPID=0x20000000,
    CLONE_NEWNET=0x40000000, CLONE_IO=0x80000000,
)
UNSHARE_FLAGS = dict(CLONE_FLAGS, CLONE_NEWTIME=0x80)  # clone(2) uses the low byte for the exit signal
ADDRESS_FAMILIES = dict(
    AF_UNSPEC=0, AF_UNIX=1, AF_INET=2, AF_AX25=3, AF_IPX=4, AF_APPLETALK=5, AF_NETROM=6, AF_BRIDGE=7,
    AF_ATMPVC=8, AF_X25=9, AF_INET6=10, AF_ROSE=11, AF_DECnet=12, AF_NETBEUI=13, AF_SECURITY=14, AF_KEY=15,
    AF_NETLINK=16, AF_PACKET=17, AF_ASH=18, AF_ECONET=19, AF_ATMSVC=20, AF_RDS=21, AF_SNA=22, AF_IRDA=23,
    AF_PPPOX=24, AF_WANPIPE=25, AF_LLC=26, AF_IB=27, AF_MPLS=28, AF_CAN=29, AF_TIPC=30, AF_BLUETOOTH=31,
    AF_IUCV=32, AF_RXRPC=33, AF_ISDN=34, AF_PHONET=35, AF_IEEE802154=36, AF_CAIF=37, AF_ALG=38, AF_NFC=39,
    AF_VSOCK=40, AF_KCM=41, AF_QIPCRTR=42, AF_SMC=43, AF_XDP=44, AF_MCTP=45,
)
SOCK_TYPES = dict(SOCK_STREAM=1, SOCK_DGRAM=2, SOCK_RAW=3, SOCK_RDM=4, SOCK_SEQPACKET=5, SOCK_DCCP=6,
                         SOCK_PACKET=10)
SOCK_FLAGS = dict(SOCK_NONBLOCK=0x800, SOCK_CLOEXEC=0x80000)
PTRACE_REQUESTS = dict(
    PTRACE_TRACEME=0, PTRACE_PEEKTEXT=1, PTRACE_PEEKDATA=2, PTRACE_PEEKUSER=3, PTRACE_POKETEXT=4,
    PTRACE_POKEDATA=5, PTRACE_POKEUSER=6, PTRACE_CONT=7, PTRACE_KILL=8, PTRACE_SINGLESTEP=9, PTRACE_GETREGS=12,
    PTRACE_SETREGS=13, PTRACE_GETFPREGS=14, PTRACE_SETFPREGS=15, PTRACE_ATTACH=16, PTRACE_DETACH=17,
    PTRACE_SYSCALL=24, PTRACE_SETOPTIONS=0x4200, PTRACE_GETEVENTMSG=0x4201, PTRACE_GETSIGINFO=0x4202,
    PTRACE_SETSIGINFO=0x4203, PTRACE_GETREGSET=0x4204, PTRACE_SETREGSET=0x4205, PTRACE_SEIZE=0x4206,
    PTRACE_INTERRUPT=0x4207, PTRACE_LISTEN=0x4208, PTRACE_PEEKSIGINFO=0x4209, PTRACE_GET_SYSCALL_INFO=0x420E,
)
IOCTL_REQUESTS = dict(
    TCGETS=0x5401, TCSETS=0x5402, TCSETSW=0x5403, TCSETSF=0x5404, TCFLSH=0x540B, TIOCSCTTY=0x540E,
    TIOCGPGRP=0x540F, TIOCSPGRP=0x5410, TIOCOUTQ=0x5411, TIOCSTI=0x5412, TIOCGWINSZ=0x5413, TIOCSWINSZ=0x5414,
    FIONREAD=0x541B, TIOCLINUX=0x541C, FIONBIO=0x5421, TIOCNOTTY=0x5422, TIOCSETD=0x5423, TIOCGSID=0x5429, FIONCLEX=0x5450,
    FIOCLEX=0x5451, FIOASYNC=0x5452, TIOCGPTN=0x80045430, TIOCSPTLCK=0x40045431, FS_IOC_GETFLAGS=0x80086601,
)
PERSONALITIES = dict(
    PER_LINUX=0, PER_LINUX32=0x0008, UNAME26=0x0020000, ADDR_NO_RANDOMIZE=0x0040000, FDPIC_FUNCPTRS=0x0080000,
    MMAP_PAGE_ZERO=0x0100000, ADDR_COMPAT_LAYOUT=0x0200000, READ_IMPLIES_EXEC=0x0400000,
    ADDR_LIMIT_32BIT=0x0800000, SHORT_INODE=0x1000000, WHOLE_SECONDS=0x2000000, STICKY_TIMEOUTS=0x4000000,
    ADDR_LIMIT_3GB=0x8000000, PER_QUERY=0xFFFFFFFF,
)
PRCTL_OPTIONS = dict(
    PR_SET_PDEATHSIG=1, PR_GET_PDEATHSIG=2, PR_GET_DUMPABLE=3, PR_SET_DUMPABLE=4, PR_GET_KEEPCAPS=7,
    PR_SET_KEEPCAPS=8, PR_SET_NAME=15, PR_GET_NAME=16, PR_GET_SECCOMP=21, PR_SET_SECCOMP=22,
    PR_CAPBSET_READ=23, PR_CAPBSET_DROP=24, PR_GET_SECUREBITS=27, PR_SET_TIMERSLACK=29, PR_GET_TIMERSLACK=30,
    PR_SET_MM=35, PR_SET_CHILD_SUBREAPER=36, PR_GET_CHILD_SUBREAPER=37, PR_SET_NO_NEW_PRIVS=38,
    PR_GET_NO_NEW_PRIVS=39, PR_SET_THP_DISABLE=41, PR_GET_THP_DISABLE=42, PR_CAP_AMBIENT=47,
    PR_GET_SPECULATION_CTRL=52, PR_SET_VMA=0x53564D41, PR_GET_AUXV=0x41555856, PR_SET_PTRACER=0x59616D61,
)
CLOCKS = dict(
    CLOCK_REALTIME=0, CLOCK_MONOTONIC=1, CLOCK_PROCESS_CPUTIME_ID=2, CLOCK_THREAD_CPUTIME_ID=3,
    CLOCK_MONOTONIC_RAW=4, CLOCK_REALTIME_COARSE=5, CLOCK_MONOTONIC_COARSE=6, CLOCK_BOOTTIME=7,
    CLOCK_REALTIME_ALARM=8, CLOCK_BOOTTIME_ALARM=9, CLOCK_TAI=11,
)
NS_FLAGS_CLONE = sum(v for k, v in CLONE_FLAGS.items() if k.startswith("CLONE_NEW"))
NS_FLAGS_UNSHARE = NS_FLAGS_CLONE | UNSHARE_FLAGS["CLONE_NEWTIME"]
SYMBOLS: dict[str, int] = {
    **UNSHARE_FLAGS, **ADDRESS_FAMILIES, **SOCK_TYPES, **SOCK_FLAGS, **PTRACE_REQUESTS, **IOCTL_REQUESTS,
    **PERSONALITIES, **PRCTL_OPTIONS, **CLOCKS, "CLONE_NS_FLAGS": NS_FLAGS_CLONE, "UNSHARE_NS_FLAGS": NS_FLAGS_UNSHARE,
}
"""Names usable as values in ``when`` conditions (``"arg0 & CLONE_NEWUSER != 0"``)."""


# ------------------------------------------------------------------ syscall names ----

_pyseccomp = None
_resolve_lock = threading.Lock()


def _lib():
    """pyseccomp, imported on first use (it dlopens libseccomp)."""
    global _pyseccomp
    if _pyseccomp is None:
        try:
            import pyseccomp
        except (ImportError, RuntimeError) as e:  # RuntimeError: libseccomp.so not found
            from .errors import HostError

            raise HostError(f"seccomp: libseccomp is not available ({e}): install libseccomp2 and pyseccomp") from None
        fn = pyseccomp._libseccomp.seccomp_syscall_resolve_name_arch
        fn.argtypes, fn.restype = (ctypes.c_uint32, ctypes.c_char_p), ctypes.c_int
        _pyseccomp = pyseccomp
    return _pyseccomp


def syscall_nr(name: str) -> int:
    """x86_64 number of syscall ``name`` (libseccomp's table, then jailpy's list of newer ones).
    Raises SeccompError for an unknown name or one that exists only on other architectures."""
    nr = _lib()._libseccomp.seccomp_syscall_resolve_name_arch(sc.AUDIT_ARCH_X86_64, name.encode())
    if nr >= 0:
        return nr
    if name in _EXTRA_NR:
        return _EXTRA_NR[name]
    if nr < -1:  # a libseccomp pseudo-number: the syscall exists, but not on x86_64
        raise SeccompError(f"{name!r} is not an x86_64 syscall (other architectures only)")
    raise SeccompError(f"unknown syscall {name!r}")


def syscall_name(nr: int) -> str:
    """Name of x86_64 syscall ``nr``, or ``"syscall_NR"`` when neither table knows it."""
    if nr in _EXTRA_SYSCALLS:
        return _EXTRA_SYSCALLS[nr]
    if 0 <= nr < sc.X32_SYSCALL_BIT:
        with _resolve_lock:
            try:
                return _lib().resolve_syscall(sc.AUDIT_ARCH_X86_64, nr).decode()
            except ValueError:
                pass
    return f"syscall_{nr}"


def _errno_value(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise SeccompError(f"{where}: expected an errno name like EPERM or a number, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and hasattr(_errno, value) and value.startswith("E"):
        n = getattr(_errno, value)
    else:
        raise SeccompError(f"{where}: expected an errno name like EPERM or a number, got {value!r}")
    if not 1 <= n <= _ERRNO_MASK:
        raise SeccompError(f"{where}: errno must be between 1 and {_ERRNO_MASK}, got {value!r}")
    return n


def _errno_name(n: int) -> str:
    return _errno.errorcode.get(n, str(n))


# ------------------------------------------------------------------ conditions ----
# A comparison is (arg, op, a, b): op one of == != < <= > >= &== (masked: (arg & a) == b), the
# operators of seccomp_rule_add(3) on the full 64-bit argument.  libseccomp compares each argument
# at most once per rule, so a condition is expanded into alternatives (ORed), each a conjunction of
# comparisons on distinct arguments.

Cmp = tuple[int, str, int, int]
Alt = tuple[Cmp, ...]

_CLAUSE_RE = re.compile(
    r"^(?:low32\(\s*arg(?P<a32>[0-5])\s*\)|arg(?P<a64>[0-5]))\s*"
    r"(?:&\s*(?P<mask>[^=!<>]+?)\s*)?(?P<op>==|!=|<=|>=|<|>|not\s+in|in)\s*(?P<val>.+?)$"
)
_MAX_ALTERNATIVES = 256


def _value(text: str, where: str) -> int:
    total = 0
    for part in text.split("|"):
        part = part.strip()
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", part):
            v = int(part, 16)
        elif part.isdigit():
            v = int(part, 10)
        elif part in SYMBOLS:
            v = SYMBOLS[part]
        else:
            raise SeccompError(f"{where}: unknown value {part!r} (a number, or a name like CLONE_NEWUSER or AF_UNIX)")
        total |= v
    if not 0 <= total <= MAX64:
        raise SeccompError(f"{where}: value out of the 64-bit range: {text!r}")
    return total


def _value_set(text: str, where: str) -> list[int]:
    m = re.fullmatch(r"[\[{]\s*(.*?)\s*[\]}]", text)
    if not m or not m.group(1):
        raise SeccompError(f"{where}: expected a set like {{AF_UNIX, AF_INET}}, got {text!r}")
    return sorted({_value(v, where) for v in m.group(1).split(",")})


def _cubes(lo: int, hi: int, width: int) -> list[tuple[int, int]]:
    """[lo, hi] (within ``width`` low bits) as aligned blocks (mask, value): x & mask == value."""
    full = (1 << width) - 1
    out = []
    while lo <= hi:
        k = 0
        while k < width and lo % (1 << (k + 1)) == 0 and lo + (1 << (k + 1)) - 1 <= hi:
            k += 1
        out.append((full & ~((1 << k) - 1), lo))
        lo += 1 << k
    return out


def _interval_atoms(arg: int, intervals: list[tuple[int, int]], width: int) -> list[Cmp]:
    top = (1 << width) - 1
    atoms: list[Cmp] = []
    for lo, hi in intervals:
        if width == 64 and lo == hi:
            atoms.append((arg, "==", lo, 0))
        elif width == 64 and lo == 0:
            atoms.append((arg, "<=", hi, 0))
        elif width == 64 and hi == top:
            atoms.append((arg, ">=", lo, 0))
        else:
            atoms.extend((arg, "==", v, 0) if m == MAX64 else (arg, "&==", m, v) for m, v in _cubes(lo, hi, width))
    return atoms


def _complement(values: list[int], width: int) -> list[tuple[int, int]]:
    top = (1 << width) - 1
    out, lo = [], 0
    for v in sorted(set(values)):
        if v > lo:
            out.append((lo, v - 1))
        lo = v + 1
    if lo <= top:
        out.append((lo, top))
    return out


def _clause(text: str, where: str) -> tuple[int, list[Cmp]]:
    """One clause -> (arg index, alternatives: single comparisons on that arg, ORed)."""
    m = _CLAUSE_RE.match(text.strip())
    if not m:
        raise SeccompError(f"{where}: cannot read condition {text!r} (expected e.g. 'arg0 == 1', "
                           f"'arg0 & CLONE_NEWUSER != 0', 'low32(arg1) == TIOCSTI', 'arg0 not in {{AF_UNIX}}')")
    width = 32 if m.group("a32") is not None else 64
    arg = int(m.group("a32") if width == 32 else m.group("a64"))
    op = re.sub(r"\s+", " ", m.group("op"))
    top = (1 << width) - 1
    if m.group("mask") is not None:
        mask = _value(m.group("mask"), where) & top
        if op not in ("==", "!="):
            raise SeccompError(f"{where}: a masked comparison must be '& MASK == VALUE' or '& MASK != 0': {text!r}")
        val = _value(m.group("val"), where)
        if op == "!=":
            if val != 0:
                raise SeccompError(f"{where}: '& MASK != VALUE' is only supported with 0 (any bit set): {text!r}")
            if mask == 0:
                raise SeccompError(f"{where}: condition can never match: {text!r}")
            return arg, [(arg, "&==", 1 << b, 1 << b) for b in range(64) if mask >> b & 1]
        if val & ~mask:
            raise SeccompError(f"{where}: condition can never match (value has bits outside the mask): {text!r}")
        return arg, [(arg, "&==", mask, val)]
    if op in ("in", "not in"):
        values = _value_set(m.group("val"), where)
        if any(v > top for v in values):
            raise SeccompError(f"{where}: value wider than {width} bits: {text!r}")
        if op == "in":
            return arg, ([(arg, "==", v, 0) for v in values] if width == 64
                         else [(arg, "&==", top, v) for v in values])
        return arg, _interval_atoms(arg, _complement(values, width), width)
    val = _value(m.group("val"), where)
    if val > top:
        raise SeccompError(f"{where}: value wider than {width} bits: {text!r}")
    if width == 64:
        if (op == "<" and val == 0) or (op == ">" and val == MAX64):
            raise SeccompError(f"{where}: condition can never match: {text!r}")
        return arg, [(arg, op, val, 0)]
    intervals = {
        "==": [(val, val)], "!=": _complement([val], 32), "<": [(0, val - 1)] if val else [],
        "<=": [(0, val)], ">": [(val + 1, top)] if val < top else [], ">=": [(val, top)],
    }[op]
    if not intervals:
        raise SeccompError(f"{where}: condition can never match: {text!r}")
    return arg, _interval_atoms(arg, intervals, 32)


def parse_condition(text: str, where: str = "when") -> list[Alt]:
    """Parse a ``when`` condition: clauses joined by ``and``, each on a different argument:

    ``argN OP VALUE`` (OP: == != < <= > >=, on the 64-bit register), ``argN & MASK == VALUE``,
    ``argN & MASK != 0`` (any bit of MASK set), ``argN in {A, B}``, ``argN not in {A, B}``, and
    the same with ``low32(argN)`` for the low 32 bits only (an ``int`` or ``unsigned int`` argument
    the kernel truncates: ``low32(arg1) == TIOCSTI`` also catches 0x100005412).  Values are
    numbers or names from :data:`SYMBOLS`, combined with ``|``.  Returns the alternatives (ORed)
    libseccomp receives, each a tuple of comparisons; raises SeccompError naming ``where``."""
    if not isinstance(text, str) or not text.strip():
        raise SeccompError(f"{where}: expected a condition string, got {text!r}")
    alts: list[Alt] = [()]
    seen: set[int] = set()
    for clause in re.split(r"\s+and\s+", text.strip()):
        arg, atoms = _clause(clause, where)
        if arg in seen:
            raise SeccompError(f"{where}: arg{arg} appears twice in {text!r}; libseccomp compares an argument "
                               "once per rule: use 'in', 'not in' or two conditions")
        seen.add(arg)
        alts = [a + (c,) for a in alts for c in atoms]
        if len(alts) > _MAX_ALTERNATIVES:
            raise SeccompError(f"{where}: {text!r} expands to more than {_MAX_ALTERNATIVES} BPF rules")
    return [tuple(sorted(a)) for a in alts]


def _cmp_text(c: Cmp) -> str:
    arg, op, a, b = c
    if op == "&==":
        return f"arg{arg} & {a:#x} == {b:#x}"
    return f"arg{arg} {op} {a:#x}"


def _cmp_match(c: Cmp, args: tuple[int, ...]) -> bool:
    arg, op, a, b = c
    x = args[arg] & MAX64
    return {"==": x == a, "!=": x != a, "<": x < a, "<=": x <= a, ">": x > a, ">=": x >= a,
            "&==": (x & a) == b}[op]


def _cmp_sets(c: Cmp) -> list[tuple[str, int, int]]:
    """A comparison as a union of intervals ("I", lo, hi) and cubes ("C", mask, value)."""
    _, op, a, b = c
    if op == "&==":
        return [("C", a, b)]
    iv = {"==": [(a, a)], "!=": [(0, a - 1), (a + 1, MAX64)], "<": [(0, a - 1)], "<=": [(0, a)],
          ">": [(a + 1, MAX64)], ">=": [(a, MAX64)]}[op]
    return [("I", lo, hi) for lo, hi in iv if 0 <= lo <= hi <= MAX64]


def _min_at_least(lo: int, mask: int, value: int) -> int | None:
    """Smallest 64-bit x >= lo with x & mask == value, or None."""
    for i in range(63, -1, -1):
        bit = 1 << i
        if mask & bit and (value & bit) != (lo & bit):
            if value & bit:
                return (lo & ~((bit << 1) - 1) & MAX64) | bit | (value & (bit - 1))
            for j in range(i + 1, 64):
                b = 1 << j
                if not mask & b and not lo & b:
                    return (lo & ~((b << 1) - 1) & MAX64) | b | (value & (b - 1))
            return None
    return lo


def _atoms_meet(x: tuple[str, int, int], y: tuple[str, int, int]) -> bool:
    if x[0] == "I" and y[0] == "I":
        return max(x[1], y[1]) <= min(x[2], y[2])
    if x[0] == "C" and y[0] == "C":
        return ((x[2] ^ y[2]) & x[1] & y[1]) == 0
    (_, m, v), (_, lo, hi) = (x, y) if x[0] == "C" else (y, x)
    least = _min_at_least(lo, m, v)
    return least is not None and least <= hi


def _alts_overlap(p: Alt, q: Alt) -> bool:
    qa = {c[0]: c for c in q}
    for c in p:
        d = qa.get(c[0])
        if d is not None and not any(_atoms_meet(x, y) for x in _cmp_sets(c) for y in _cmp_sets(d)):
            return False
    return True


# ------------------------------------------------------------------ the policy ----

@dataclass(frozen=True)
class Rule:
    """One syscall's rule: ``action`` (allow deny errno kill log), ``errno`` for deny/errno,
    ``alternatives`` (None: unconditional; else ORed conjunctions of comparisons), where it came
    from (``block``: index into SeccompPolicy.blocks)."""

    name: str
    nr: int
    action: str
    errno: int
    alternatives: tuple[Alt, ...] | None
    block: int

    def matches(self, args: tuple[int, ...]) -> bool:
        """Whether the 6 syscall arguments ``args`` satisfy the rule's condition."""
        return self.alternatives is None or any(all(_cmp_match(c, args) for c in alt) for alt in self.alternatives)


@dataclass(frozen=True)
class Block:
    """A group of rules as written in the file (for ``show``): label, reason, action, errno,
    syscall names, condition texts and the file it came from."""

    group: str
    why: str
    action: str
    errno: int
    syscalls: tuple[str, ...]
    when: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class SeccompPolicy:
    """A loaded, checked seccomp policy.

    ``default_action``/``default_errno``: what syscalls without a matching rule get.
    ``known_max_nr``: syscalls numbered above it get ENOSYS in BPF (None: no such stub; OCI
    profiles whose default is allow).  ``report``: deny/kill/log are notifications (True) or plain
    BPF actions (False).  ``rules``: per syscall, in order; rules of one syscall never overlap
    with different actions (checked when loading)."""

    name: str
    source: str
    default_action: str
    default_errno: int
    known_max_nr: int | None
    report: bool
    rules: tuple[Rule, ...]
    blocks: tuple[Block, ...] = ()
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def canonical(self) -> dict:
        """The policy as plain data, independent of comments, grouping and file layout."""
        return {
            "format": COMPILER_VERSION,
            "default": [self.default_action, self.default_errno],
            "known_max_nr": self.known_max_nr,
            "report": self.report,
            "rules": [[r.nr, r.name, r.action, r.errno,
                       None if r.alternatives is None else [[list(c) for c in alt] for alt in r.alternatives]]
                      for r in sorted(self.rules, key=lambda r: r.nr)],
        }

    def digest(self) -> str:
        """``"sha256:HEX"`` of :meth:`canonical` (sorted-key JSON): the policy's hash in a Result."""
        raw = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    def evaluate(self, nr: int, args: tuple[int, ...] = (0,) * 6) -> tuple[str, int]:
        """What the policy says for x86_64 syscall ``nr`` with ``args``: (action, errno), from the
        rules themselves (not the BPF; :meth:`Filter.decide` reads the BPF)."""
        args = tuple(args) + (0,) * (6 - len(args))
        if self.known_max_nr is not None and self.known_max_nr < nr < sc.X32_SYSCALL_BIT:
            return "errno", _errno.ENOSYS
        for r in self.rules:
            if r.nr == nr and r.matches(args):
                return r.action, r.errno
        return self.default_action, self.default_errno

    def to_dict(self) -> dict:
        """What ``jailpy seccomp show --json`` prints."""
        live = self._live_blocks()
        return {
            "name": self.name, "source": self.source, "sources": list(self.sources), "hash": self.digest(),
            "default_action": self.default_action,
            "default_errno": self.default_errno if self.default_action in ("deny", "errno") else None,
            "known_max_nr": self.known_max_nr, "report": self.report, "architectures": ["x86_64"],
            "notes": list(self.notes),
            "rules": [{"group": b.group, "why": b.why, "action": b.action,
                       "errno": b.errno if b.action in ("deny", "errno") else None,
                       "syscalls": names, "when": list(b.when), "source": b.source}
                      for b, names in live],
        }

    def _live_blocks(self) -> list[tuple[Block, list[str]]]:
        names: dict[int, list[str]] = {}
        for r in self.rules:
            lst = names.setdefault(r.block, [])
            if r.name not in lst:
                lst.append(r.name)
        return [(b, [n for n in dict.fromkeys(b.syscalls) if n in names[i]])
                for i, b in enumerate(self.blocks) if i in names]

    def describe(self) -> str:
        """Human-readable rules for ``jailpy seccomp show``."""
        def act(action: str, err: int) -> str:
            return {"allow": "allow", "kill": "kill the sandbox (verdict SV)" if self.report else "kill (SIGSYS)",
                    "log": "allow and report" if self.report else "allow and log (kernel audit log)",
                    "deny": f"deny with {_errno_name(err)}" + (", reported" if self.report else ""),
                    "errno": f"{_errno_name(err)}, not reported"}[action]

        lines = [f"seccomp policy {self.name}  ({self.source})", f"hash      {self.digest()}",
                 f"default   {act(self.default_action, self.default_errno)}"]
        if self.known_max_nr is not None:
            lines.append(f"newer     syscalls above {self.known_max_nr} (newer than this policy): ENOSYS, not reported")
        lines.append("arch      x86_64 only: i386 (int 0x80) and x32 syscalls kill the process (SIGSYS)")
        lines += [f"note      {n}" for n in self.notes]
        for b, names in self._live_blocks():
            head = f"\n[{b.group}] {act(b.action, b.errno)}" if b.group else f"\n{act(b.action, b.errno)}"
            lines.append(head + (f"  ({b.source})" if b.source != self.source else ""))
            if b.why:
                lines.extend(_wrap(b.why.split(), "  # "))
            lines.extend(_wrap(names, "  "))
            for w in b.when:
                lines.append(f"  when {w}")
        return "\n".join(lines) + "\n"


def _wrap(words: list[str], indent: str, width: int = 100) -> list[str]:
    out, line = [], indent
    for w in words:
        if len(line) + len(w) + 1 > width and line.strip():
            out.append(line.rstrip())
            line = indent
        line += w + " "
    if line.strip():
        out.append(line.rstrip())
    return out


# ------------------------------------------------------------------ loading ----

def _is_file(p: Path) -> bool:
    """Path.is_file(), False too for a name the kernel refuses (ENAMETOOLONG, ELOOP, a NUL byte)."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False

def find(name_or_path: str) -> Path:
    """Resolve a policy name (``policies/seccomp/NAME.toml``, then ``profiles/seccomp/NAME.json``)
    or a path ending in .toml or .json.  Raises SeccompError when there is none."""
    if name_or_path == "none":
        raise SeccompError("'none' is not a policy: --seccomp none means no filter at all (the caller skips seccomp)")
    if "/" in name_or_path or name_or_path.endswith((".toml", ".json")):
        p = Path(name_or_path)
        if not _is_file(p):
            raise SeccompError(f"seccomp policy file not found: {name_or_path}")
        return p
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name_or_path):
        raise SeccompError(f"bad seccomp policy name {name_or_path!r}: use a name from policies/seccomp/ or a path")
    for dirs, ext in ((POLICY_DIRS, ".toml"), (PROFILE_DIRS, ".json")):
        for d in dirs:
            p = d / f"{name_or_path}{ext}"
            if _is_file(p):
                return p
    raise SeccompError(f"no seccomp policy named {name_or_path!r} (known: {', '.join(known_names()) or 'none'})")


def known_names() -> list[str]:
    """Names :func:`find` accepts: shipped TOML policies and JSON profiles."""
    names = {p.stem for d in POLICY_DIRS if d.is_dir() for p in d.glob("*.toml")}
    names |= {p.stem for d in PROFILE_DIRS if d.is_dir() for p in d.glob("*.json")}
    return sorted(names)


def load(name_or_path: str = "default") -> SeccompPolicy:
    """Load and check a seccomp policy by name or path (TOML, or OCI/Docker JSON by extension).

    Raises SeccompError (one line, naming the file and the key) for unknown syscall names, unknown
    keys, bad actions or errnos, unreadable conditions, overlapping rules with different actions,
    include loops and malformed OCI profiles.  OCI: config-linux.md#seccomp of the runtime-spec."""
    path = find(name_or_path)
    name = path.stem
    if path.suffix == ".json":
        return _load_oci(path, name)
    return _load_toml(path, name)


_TOP_KEYS = {"include", "description", "known_max_nr", "default_action", "default_errno", "report", "rules"}
_RULE_KEYS = {"group", "why", "action", "errno", "syscalls", "when"}


def _read_toml(path: Path, seen: tuple[Path, ...], state: dict) -> None:
    from .policy import read_toml

    real = path.resolve()
    if real in seen:
        raise SeccompError(f"{path}: include loop through {real}")
    data = read_toml(path, SeccompError)
    state["sources"].append(str(path))
    for key in data:
        if key not in _TOP_KEYS:
            raise SeccompError(f"{path}: {_shown(key)}: unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SeccompError(f"{path}: include: expected a list of policy names or relative paths")
    for inc in includes:
        if "/" in inc or inc.endswith(".toml"):
            target = path.parent / inc
            if not _is_file(target):
                raise SeccompError(f"{path}: include: file not found: {target}")
        else:
            try:
                target = find(inc)
            except SeccompError as e:
                raise SeccompError(f"{path}: include: {e}") from None
            if target.suffix != ".toml":
                raise SeccompError(f"{path}: include: {inc!r} is an OCI profile; only TOML policies can be included")
        _read_toml(target, seen + (real,), state)
    for key in ("known_max_nr", "default_action", "default_errno", "report"):
        if key in data:
            state[key] = (data[key], str(path))
    rules = data.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise SeccompError(f"{path}: rules: expected [[rules]] tables")
    file_rules: dict[int, list[Rule]] = {}
    for i, raw in enumerate(rules):
        where = f"{path}: rules[{i}]" + (f" ({_shown(raw['group'])})" if isinstance(raw.get("group"), str) else "")
        for key in raw:
            if key not in _RULE_KEYS:
                raise SeccompError(f"{where}: {_shown(key)}: unknown key (known: {', '.join(sorted(_RULE_KEYS))})")
        action = raw.get("action")
        if action not in _ACTIONS:
            raise SeccompError(f"{where}: action: expected one of {', '.join(_ACTIONS)}, got {action!r}")
        err = _rule_errno(action, raw.get("errno"), f"{where}: errno")
        names = raw.get("syscalls")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise SeccompError(f"{where}: syscalls: expected a non-empty list of syscall names")
        when = raw.get("when")
        if isinstance(when, str):
            when = [when]
        if when is not None and (not isinstance(when, list) or not when or not all(isinstance(w, str) for w in when)):
            raise SeccompError(f"{where}: when: expected a condition string or a list of them")
        alts = None
        if when is not None:
            alts = []
            for w in when:
                alts.extend(parse_condition(w, f"{where}: when"))
        for k in ("group", "why"):
            if k in raw and not isinstance(raw[k], str):
                raise SeccompError(f"{where}: {k}: expected a string")
        block = len(state["blocks"])
        state["blocks"].append(Block(raw.get("group", ""), raw.get("why", ""), action, err, tuple(names),
                                     tuple(when or ()), str(path)))
        for n in names:
            try:
                nr = syscall_nr(n)
            except SeccompError as e:
                raise SeccompError(f"{where}: syscalls: {e}") from None
            file_rules.setdefault(nr, []).append(
                Rule(n, nr, action, err, None if alts is None else tuple(dict.fromkeys(alts)), block))
    # a file's rules for a syscall replace what its includes said about that syscall
    for nr, lst in file_rules.items():
        state["rules"][nr] = lst


def _rule_errno(action: str, value: object, where: str) -> int:
    if action == "errno":
        if value is None:
            raise SeccompError(f"{where}: action errno needs an errno (e.g. errno = \"ENOSYS\")")
        return _errno_value(value, where)
    if action == "deny":
        return _errno.EPERM if value is None else _errno_value(value, where)
    if value is not None:
        raise SeccompError(f"{where}: only deny and errno rules take an errno (this one is {action})")
    return 0


def _load_toml(path: Path, name: str) -> SeccompPolicy:
    state: dict = {"sources": [], "blocks": [], "rules": {}}
    _read_toml(path, (), state)
    src = str(path)
    if "default_action" not in state:
        raise SeccompError(f"{src}: default_action: missing (allow, deny, errno, kill or log)")
    default, dsrc = state["default_action"]
    if default not in _ACTIONS:
        raise SeccompError(f"{dsrc}: default_action: expected one of {', '.join(_ACTIONS)}, got {default!r}")
    derr_raw, esrc = state.get("default_errno", (None, src))
    derr = _rule_errno(default, derr_raw, f"{esrc}: default_errno")
    if "known_max_nr" not in state:
        raise SeccompError(f"{src}: known_max_nr: missing (the highest syscall number the policy was written for)")
    kmax, ksrc = state["known_max_nr"]
    if isinstance(kmax, bool) or not isinstance(kmax, int) or not 0 < kmax < sc.X32_SYSCALL_BIT:
        raise SeccompError(f"{ksrc}: known_max_nr: expected a syscall number, got {kmax!r}")
    report, rsrc = state.get("report", (True, src))
    if not isinstance(report, bool):
        raise SeccompError(f"{rsrc}: report: expected true or false, got {report!r}")
    rules: list[Rule] = []
    for nr in sorted(state["rules"]):
        if nr > kmax:
            r = state["rules"][nr][0]
            raise SeccompError(f"{state['blocks'][r.block].source}: syscalls: {r.name} ({nr}) is above "
                               f"known_max_nr {kmax}: raise known_max_nr after reviewing the syscalls in between")
        rules.extend(_normalize(state["rules"][nr], state["blocks"]))
    return SeccompPolicy(name, src, default, derr, kmax, report, tuple(rules), tuple(state["blocks"]),
                         tuple(dict.fromkeys(state["sources"])))


def _normalize(rules: list[Rule], blocks: list[Block]) -> list[Rule]:
    """Check one syscall's rules: no overlap between different actions; drop what an
    unconditional rule with the same action already covers."""
    for i, p in enumerate(rules):
        for q in rules[i + 1:]:
            if (p.action, p.errno) == (q.action, q.errno):
                continue
            pa = p.alternatives if p.alternatives is not None else ((),)
            qa = q.alternatives if q.alternatives is not None else ((),)
            if any(_alts_overlap(x, y) for x in pa for y in qa):
                raise SeccompError(
                    f"{blocks[q.block].source}: rules for {p.name} overlap with different actions "
                    f"({_act_text(p)} in {_block_name(blocks, p)}, {_act_text(q)} in {_block_name(blocks, q)}): "
                    "make their conditions exclusive")
    uncond = {(r.action, r.errno) for r in rules if r.alternatives is None}
    out: list[Rule] = []
    for r in rules:
        if r.alternatives is not None and (r.action, r.errno) in uncond:
            continue
        if r.alternatives is None and any(o.alternatives is None and (o.action, o.errno) == (r.action, r.errno)
                                          for o in out):
            continue
        out.append(r)
    return out


def _act_text(r: Rule) -> str:
    return f"{r.action} {_errno_name(r.errno)}" if r.action in ("deny", "errno") else r.action


def _block_name(blocks: list[Block], r: Rule) -> str:
    b = blocks[r.block]
    return f"group {b.group!r}" if b.group else f"rules[{r.block}]"


# --- OCI / Docker JSON (runtime-spec config-linux.md#seccomp; Docker's profile format) ---

_OCI_TOP = {"defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls", "flags",
            "listenerPath", "listenerMetadata"}
_OCI_SYSCALL = {"names", "name", "action", "errnoRet", "args", "comment", "includes", "excludes"}
_OCI_ARG = {"index", "value", "valueTwo", "op"}
_OCI_OPS = {"SCMP_CMP_NE": "!=", "SCMP_CMP_LT": "<", "SCMP_CMP_LE": "<=", "SCMP_CMP_EQ": "==",
            "SCMP_CMP_GE": ">=", "SCMP_CMP_GT": ">", "SCMP_CMP_MASKED_EQ": "&=="}
_OCI_ARCHES = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X32": "x32"}
_OCI_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
              "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}


def _oci_action(action: object, errno_ret: object, where: str) -> tuple[str, int]:
    """SCMP_ACT_* -> (jailpy action, errno).  ERRNO is a reported denial, except ENOSYS, which
    means "pretend the syscall does not exist" and stays in BPF unreported; KILL*, TRAP -> kill
    (jailpy does not deliver SIGSYS to a handler); TRACE (no tracer here) -> ENOSYS as the kernel
    does without a tracer; NOTIFY -> a reported EPERM (jailpy is the listener)."""
    if errno_ret is not None and (isinstance(errno_ret, bool) or not isinstance(errno_ret, int)):
        raise SeccompError(f"{where}: errnoRet: expected a number, got {errno_ret!r}")
    if action == "SCMP_ACT_ALLOW":
        return "allow", 0
    if action == "SCMP_ACT_ERRNO":
        err = _errno.EPERM if errno_ret is None else _errno_value(errno_ret, f"{where}: errnoRet")
        return ("errno" if err == _errno.ENOSYS else "deny"), err
    if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"):
        return "kill", 0
    if action == "SCMP_ACT_LOG":
        return "log", 0
    if action == "SCMP_ACT_TRACE":
        return "errno", _errno.ENOSYS
    if action == "SCMP_ACT_NOTIFY":
        return "deny", _errno.EPERM
    raise SeccompError(f"{where}: unknown action {action!r} "
                       "(SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL_PROCESS, ...)")


def _kernel_at_least(spec: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:2])

    return parts(os.uname().release) >= parts(spec)


def _load_oci(path: Path, name: str) -> SeccompPolicy:
    src = str(path)
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        raise SeccompError(f"{src}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise SeccompError(f"{src}: not valid JSON: {e}") from None
    except RecursionError:
        raise SeccompError(f"{src}: not valid JSON: arrays or objects nested too deeply") from None
    if not isinstance(data, dict):
        raise SeccompError(f"{src}: expected a JSON object with defaultAction and syscalls")
    for key in data:
        if key not in _OCI_TOP:
            raise SeccompError(f"{src}: {_shown(key)}: unknown key (known: {', '.join(sorted(_OCI_TOP))})")
    if "defaultAction" not in data:
        raise SeccompError(f"{src}: defaultAction: missing")
    default, derr = _oci_action(data["defaultAction"], data.get("defaultErrnoRet"), f"{src}: defaultAction")
    notes = []
    arches = data.get("architectures") or []
    if not isinstance(arches, list):
        raise SeccompError(f"{src}: architectures: expected a list of SCMP_ARCH_* names")
    if "archMap" in data:
        amap = data["archMap"]
        if not isinstance(amap, list) or not all(isinstance(a, dict) for a in amap):
            raise SeccompError(f"{src}: archMap: expected a list of objects")
        for a in amap:
            subs = a.get("subArchitectures") or []
            if not isinstance(subs, list):
                raise SeccompError(f"{src}: archMap: subArchitectures: expected a list of SCMP_ARCH_* names")
            arches = arches + [a.get("architecture")] + subs
    if not isinstance(arches, list) or not all(isinstance(a, str) for a in arches):
        raise SeccompError(f"{src}: architectures: expected a list of SCMP_ARCH_* names")
    if arches:
        if "SCMP_ARCH_X86_64" not in arches:
            raise SeccompError(f"{src}: architectures: the profile does not cover SCMP_ARCH_X86_64, "
                               "the only architecture jailpy runs")
        others = sorted(set(arches) - {"SCMP_ARCH_X86_64"})
        if others:
            notes.append(f"architectures {', '.join(others)} listed by the profile are refused (x86_64 only)")
    flags = data.get("flags") or []
    if not isinstance(flags, list) or any(not isinstance(f, str) or f not in _OCI_FLAGS for f in flags):
        raise SeccompError(f"{src}: flags: expected SECCOMP_FILTER_FLAG_* names, got {flags!r}")
    if flags:
        notes.append(f"flags {', '.join(flags)} ignored (jailpy chooses its own)")
    if data.get("listenerPath"):
        notes.append("listenerPath ignored: jailpy itself answers SCMP_ACT_NOTIFY (EPERM, reported)")
    syscalls = data.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SeccompError(f"{src}: syscalls: expected a list")
    blocks: list[Block] = []
    per_nr: dict[int, list[Rule]] = {}
    for i, entry in enumerate(syscalls):
        where = f"{src}: syscalls[{i}]"
        if not isinstance(entry, dict):
            raise SeccompError(f"{where}: expected an object")
        for key in entry:
            if key not in _OCI_SYSCALL:
                raise SeccompError(f"{where}: {_shown(key)}: unknown key (known: {', '.join(sorted(_OCI_SYSCALL))})")
        names = entry.get("names", [entry["name"]] if "name" in entry else None)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise SeccompError(f"{where}: names: expected a non-empty list of syscall names")
        if "action" not in entry:
            raise SeccompError(f"{where}: action: missing")
        action, err = _oci_action(entry["action"], entry.get("errnoRet"), f"{where}: action")
        if not _oci_applies(entry, where):
            continue
        alts, texts = _oci_args(entry.get("args") or [], f"{where}: args")
        block = len(blocks)
        comment = entry.get("comment", "")
        blocks.append(Block(f"syscalls[{i}]", comment if isinstance(comment, str) else "", action, err,
                            tuple(names), tuple(texts), src))
        for n in names:
            try:
                nr = syscall_nr(n)
            except SeccompError as e:
                raise SeccompError(f"{where}: names: {e}") from None
            per_nr.setdefault(nr, []).append(Rule(n, nr, action, err, alts, block))
    rules: list[Rule] = []
    for nr in sorted(per_nr):
        # like runc: later entries for the same syscall add to earlier ones; conflicts are errors
        rules.extend(_normalize(per_nr[nr], blocks))
    # runc's rule for the ENOSYS stub: with a default other than allow, syscalls newer than the
    # newest one the profile names get ENOSYS (libc falls back), not the default denial
    kmax = None if default == "allow" or not per_nr else max(per_nr)
    return SeccompPolicy(name, src, default, derr, kmax, True, tuple(rules), tuple(blocks), (src,), tuple(notes))


def _oci_applies(entry: dict, where: str) -> bool:
    """Docker's includes/excludes: caps (the sandbox has none), arches, minKernel."""
    for key, want in (("includes", True), ("excludes", False)):
        cond = entry.get(key)
        if cond is None:
            continue
        if not isinstance(cond, dict) or set(cond) - {"caps", "arches", "minKernel"}:
            raise SeccompError(f"{where}: {key}: expected an object with caps, arches or minKernel")
        for k in ("caps", "arches"):
            if cond.get(k) is not None and not (isinstance(cond[k], list) and all(isinstance(x, str) for x in cond[k])):
                raise SeccompError(f"{where}: {key}: {k}: expected a list of names")
        hits = []
        if cond.get("caps"):
            hits.append(False)  # the sandbox holds no capabilities
        if cond.get("arches"):
            hits.append(any(a in ("amd64", "x86_64", "SCMP_ARCH_X86_64") for a in cond["arches"]))
        if cond.get("minKernel"):
            if not isinstance(cond["minKernel"], str) or not re.match(r"^\d+\.\d+", cond["minKernel"]):
                raise SeccompError(f"{where}: {key}: minKernel: expected a version like \"5.8\"")
            hits.append(_kernel_at_least(cond["minKernel"]))
        if want and not all(hits):
            return False
        if not want and hits and any(hits):
            return False
    return True


def _oci_args(args: object, where: str) -> tuple[tuple[Alt, ...] | None, list[str]]:
    """OCI args: ANDed, except that (as runc does) when an argument index repeats, each
    comparison becomes a rule of its own (ORed): libseccomp compares an argument once per rule."""
    if not isinstance(args, list):
        raise SeccompError(f"{where}: expected a list")
    if not args:
        return None, []
    cmps: list[Cmp] = []
    for j, a in enumerate(args):
        w = f"{where}[{j}]"
        if not isinstance(a, dict):
            raise SeccompError(f"{w}: expected an object with index, value, op")
        for key in a:
            if key not in _OCI_ARG:
                raise SeccompError(f"{w}: {_shown(key)}: unknown key (known: index, op, value, valueTwo)")
        idx, op = a.get("index"), a.get("op")
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx <= 5:
            raise SeccompError(f"{w}: index: expected 0 to 5, got {idx!r}")
        if not isinstance(op, str) or op not in _OCI_OPS:
            raise SeccompError(f"{w}: op: expected one of {', '.join(_OCI_OPS)}, got {op!r}")
        vals = []
        for key in ("value", "valueTwo"):
            v = a.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX64:
                raise SeccompError(f"{w}: {key}: expected an unsigned 64-bit number, got {v!r}")
            vals.append(v)
        if op == "SCMP_CMP_MASKED_EQ" and vals[1] & ~vals[0]:
            raise SeccompError(f"{w}: valueTwo {vals[1]:#x} has bits outside the mask {vals[0]:#x}: never matches")
        cmps.append((idx, _OCI_OPS[op], vals[0], vals[1] if op == "SCMP_CMP_MASKED_EQ" else 0))
    indices = [c[0] for c in cmps]
    if len(set(indices)) < len(indices):
        alts = tuple(((c,) for c in cmps))
        return tuple(alts), [_cmp_text(c) for c in cmps]
    alt = tuple(sorted(cmps))
    return (alt,), [" and ".join(_cmp_text(c) for c in alt)]


# ------------------------------------------------------------------ compiling ----

def _notify_data(action: str, err: int, permissive: bool) -> int:
    kind = {"deny": _KIND_DENY, "kill": _KIND_KILL, "log": _KIND_LOG}[action]
    return kind | (err & _ERRNO_MASK if action == "deny" else 0) | (_PERMISSIVE if permissive else 0)


def _bpf_action(action: str, err: int, report: bool, log: bool) -> int:
    """The SECCOMP_RET_* value for an action, with SECCOMP_RET_TRACE|data standing for
    SECCOMP_RET_USER_NOTIF|data (libseccomp takes no data with NOTIFY; rewritten after export)."""
    if action == "allow":
        return sc.SECCOMP_RET_ALLOW
    if action == "errno":
        return sc.SECCOMP_RET_ERRNO | err
    if log or report:
        return sc.SECCOMP_RET_TRACE | _notify_data(action, err, log and action != "log")
    return {"deny": sc.SECCOMP_RET_ERRNO | err, "kill": sc.SECCOMP_RET_KILL_PROCESS,
            "log": sc.SECCOMP_RET_LOG}[action]


def _stub(known_max_nr: int) -> bytes:
    """Classic BPF run before libseccomp's program (jumps are relative, so prepending is safe):
    x86_64 and not x32 and nr > known_max_nr -> ERRNO(ENOSYS); anything else falls through."""
    ins = [
        (0x20, 0, 0, 4),                                   # ld [4]            arch
        (0x15, 0, 4, sc.AUDIT_ARCH_X86_64),                # jeq X86_64, else -> libseccomp
        (0x20, 0, 0, 0),                                   # ld [0]            nr
        (0x35, 2, 0, sc.X32_SYSCALL_BIT),                  # jge 0x40000000 -> libseccomp (x32, -1)
        (0x25, 0, 1, known_max_nr),                        # jgt known_max_nr
        (0x06, 0, 0, sc.SECCOMP_RET_ERRNO | _errno.ENOSYS),  # ret ERRNO(ENOSYS)
    ]
    return b"".join(struct.pack("<HBBI", *i) for i in ins)


def compile_bpf(policy: SeccompPolicy, log: bool = False) -> bytes:
    """Compile ``policy`` with libseccomp to an array of struct sock_filter (8 bytes each), the
    ENOSYS stub prepended and notification placeholders rewritten.  ``log``: permissive (every
    deny and kill becomes a notification answered with CONTINUE).  Raises SeccompError when
    libseccomp refuses a rule, HostError without libseccomp."""
    lib = _lib()
    default = _bpf_action(policy.default_action, policy.default_errno, policy.report, log)
    f = lib.SyscallFilter(default)
    f.set_attr(lib.Attr.ACT_BADARCH, _BAD_ARCH)
    try:
        f.set_attr(lib.Attr.CTL_OPTIMIZE, 2)  # binary tree of syscall numbers (libseccomp >= 2.5)
    except OSError:
        pass
    for r in policy.rules:
        act = _bpf_action(r.action, r.errno, policy.report, log)
        if act == default:
            continue
        alts = r.alternatives if r.alternatives is not None else ((),)
        for alt in alts:
            cargs = [lib.Arg(arg, _LIB_OPS[op], a, b) for arg, op, a, b in alt]
            try:
                f.add_rule_exactly(act, r.nr, *cargs)
            except OSError as e:
                where = " and ".join(_cmp_text(c) for c in alt) or "always"
                raise SeccompError(f"{policy.source}: {r.name} when {where}: libseccomp refused the rule: "
                                   f"{e.strerror}") from None
    fd = os.memfd_create("jailpy-seccomp", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as w:
            f.export_bpf(w)
        size = os.lseek(fd, 0, os.SEEK_END)
        prog = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    out = bytearray()
    for code, jt, jf, k in struct.iter_unpack("<HBBI", prog):
        if code == 0x06 and k & sc.SECCOMP_RET_ACTION_FULL == sc.SECCOMP_RET_TRACE:
            k = sc.SECCOMP_RET_USER_NOTIF | (k & sc.SECCOMP_RET_DATA)
        out += struct.pack("<HBBI", code, jt, jf, k)
    if policy.known_max_nr is not None:
        out = bytearray(_stub(policy.known_max_nr)) + out
    if len(out) // 8 > 4096:  # BPF_MAXINSNS
        raise SeccompError(f"{policy.source}: the filter has {len(out) // 8} BPF instructions, more than the "
                           "kernel's 4096: simplify the conditions")
    return bytes(out)


_LIB_OPS = {"!=": 1, "<": 2, "<=": 3, "==": 4, ">=": 5, ">": 6, "&==": 7}  # enum scmp_compare


def run_bpf(bpf: bytes, nr: int, args: tuple[int, ...] = (0,) * 6, arch: int = sc.AUDIT_ARCH_X86_64) -> int:
    """Run a seccomp classic-BPF program on one struct seccomp_data, the way the kernel does
    (Documentation/networking/filter.rst); returns the SECCOMP_RET_* value (32 bits)."""
    args = tuple(a & MAX64 for a in args) + (0,) * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr if nr < 1 << 31 else nr - (1 << 32), arch, 0, *args)
    insns = list(struct.iter_unpack("<HBBI", bpf))
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(len(insns) + 1):  # classic BPF only jumps forward
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            mode = code & 0xE0
            a = (int.from_bytes(data[k:k + 4], "little") if mode == 0x20 else k if mode == 0x00
                 else mem[k] if mode == 0x60 else len(data))
        elif cls == 0x01:  # BPF_LDX
            mode = code & 0xE0
            x = k if mode == 0x00 else mem[k] if mode == 0x60 else len(data)
        elif cls == 0x02:
            mem[k] = a
        elif cls == 0x03:
            mem[k] = x
        elif cls == 0x04:  # BPF_ALU
            op, src = code & 0xF0, (x if code & 0x08 else k)
            a = {0x00: lambda: a + src, 0x10: lambda: a - src, 0x20: lambda: a * src,
                 0x30: lambda: a // src if src else 0, 0x40: lambda: a | src, 0x50: lambda: a & src,
                 0x60: lambda: a << (src & 31), 0x70: lambda: a >> (src & 31), 0x80: lambda: -a,
                 0x90: lambda: a % src if src else 0, 0xA0: lambda: a ^ src}[op]() & 0xFFFFFFFF
        elif cls == 0x05:  # BPF_JMP
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
                continue
            cond = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
            pc += jt if cond else jf
        elif cls == 0x06:  # BPF_RET
            return a if code & 0x18 == 0x10 else k
        else:  # BPF_MISC
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise ValueError("BPF program does not return")


@dataclass(frozen=True)
class Decision:
    """What to do with a notified syscall (as the BPF says; see :meth:`Filter.decide`).

    ``action``: ``"errno"`` answer ``-errno``; ``"kill"`` kill the sandbox (verdict SV); ``"log"``
    answer CONTINUE and record it (a ``log`` rule, or a permissive ``--seccomp-log`` filter, where
    ``would`` says what the policy would have done: ``"errno"`` or ``"kill"``); ``"allow"`` only for
    syscalls the filter lets through without a notification.  ``errno``: for errno (and for a
    permissive would-be errno); 0 otherwise.  ``name``: the syscall's name."""

    action: str
    errno: int
    name: str
    would: str | None = None
    notified: bool = True


@dataclass(frozen=True)
class Filter:
    """A compiled filter: ``bpf`` (struct sock_filter array, 8 bytes per instruction), the
    policy's ``digest`` and ``name``, and ``notify`` (the filter returns SECCOMP_RET_USER_NOTIF:
    install it with a listener and answer the notifications)."""

    bpf: bytes
    digest: str
    name: str
    notify: bool
    permissive: bool = False
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def decide(self, nr: int, args: tuple[int, ...]) -> Decision:
        """Which rule x86_64 syscall ``nr`` with ``args`` (6 ints) hits, by running this filter's BPF:
        exactly what the kernel decided.  See :class:`Decision`."""
        key = (nr, tuple(args))
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._decide(nr, key[1])
            if len(self._memo) > 4096:
                self._memo.clear()
        return hit

    def _decide(self, nr: int, args: tuple[int, ...]) -> Decision:
        ret = run_bpf(self.bpf, nr, args)
        act, data = ret & sc.SECCOMP_RET_ACTION_FULL, ret & sc.SECCOMP_RET_DATA
        name = syscall_name(nr)
        if act == sc.SECCOMP_RET_USER_NOTIF:
            kind, err = data & _KIND_MASK, data & _ERRNO_MASK
            would = "kill" if kind == _KIND_KILL else "errno" if kind == _KIND_DENY else None
            if data & _PERMISSIVE or kind == _KIND_LOG:
                return Decision("log", err, name, would=would if data & _PERMISSIVE else None)
            if kind == _KIND_KILL:
                return Decision("kill", 0, name)
            return Decision("errno", err or _errno.EPERM, name)
        if act == sc.SECCOMP_RET_ERRNO:
            return Decision("errno", data, name, notified=False)
        if act in (sc.SECCOMP_RET_KILL_PROCESS, sc.SECCOMP_RET_KILL_THREAD, sc.SECCOMP_RET_TRAP):
            return Decision("kill", 0, name, notified=False)
        if act == sc.SECCOMP_RET_LOG:
            return Decision("log", 0, name, notified=False)
        return Decision("allow", 0, name, notified=False)


# ------------------------------------------------------------------ cache ----
# Two files per compiled policy in cache_dir(), both 0600 in a 0700 directory and ignored unless
# owned by the caller and not writable by group or others:
#   <digest-hex>[.log].bpf   the BPF, then sha256(key + BPF) (32 bytes): a damaged file is recompiled
#   src-<hash>.json          which policy files (path, sha256 of their content) gave which digest:
#                            a cache hit reads no TOML and loads no libseccomp at all
# libseccomp's version is not part of the key: x86_64 syscall numbers are kernel ABI, so any
# release compiles the same policy to an equivalent program; COMPILER_VERSION covers jailpy's side.

_MEMO: dict[tuple[str, bool], tuple[tuple, Filter]] = {}
_MEMO_LOCK = threading.Lock()


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jailpy/seccomp`` or ``~/.cache/jailpy/seccomp``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jailpy" / "seccomp"


def _variant(log: bool) -> str:
    return "log" if log else "report"


def _bpf_path(digest: str, log: bool) -> Path:
    return cache_dir() / f"{digest.removeprefix('sha256:')}{'.log' if log else ''}.bpf"


def _bpf_key(digest: str, log: bool) -> bytes:
    return f"jailpy-seccomp\0{COMPILER_VERSION}\0{digest}\0{_variant(log)}\0".encode()


def _index_path(real: str, log: bool) -> Path:
    h = hashlib.sha256(f"jailpy-seccomp\0{COMPILER_VERSION}\0{real}\0{_variant(log)}".encode()).hexdigest()
    return cache_dir() / f"src-{h[:32]}.json"


def _stamp(paths: tuple[str, ...]) -> tuple | None:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            return None
        out.append((p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _read_private(path: Path, limit: int = 1 << 20) -> bytes | None:
    """The file's bytes if it and its directory belong to this user and nobody else may write
    them, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st) or not _private(os.stat(path.parent)) or st.st_size > limit:
            return None
        return os.read(fd, st.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically (temporary file, rename), 0600 in a 0700 directory; failures are ignored
    (the next run compiles again)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        import tempfile  # only when the cache is written: not on the start-up path

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with open(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _cache_read(digest: str, log: bool) -> bytes | None:
    """The cached BPF for ``digest`` if it is intact and private, else None (then recompiled)."""
    raw = _read_private(_bpf_path(digest, log))
    if raw is None or len(raw) < 40:
        return None
    bpf, check = raw[:-32], raw[-32:]
    if len(bpf) % 8 or hashlib.sha256(_bpf_key(digest, log) + bpf).digest() != check:
        return None
    return bpf


def _cache_write(digest: str, log: bool, bpf: bytes) -> None:
    _write_private(_bpf_path(digest, log), bpf + hashlib.sha256(_bpf_key(digest, log) + bpf).digest())


def _file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _index_read(real: str, log: bool) -> tuple[str, str, tuple[str, ...]] | None:
    """(digest, name, source paths) if every source file still has the content it was compiled from."""
    raw = _read_private(_index_path(real, log), 1 << 16)
    try:
        idx = json.loads(raw) if raw is not None else None
        if not isinstance(idx, dict) or idx.get("top") != real:
            return None
        sources = [(str(p), str(h)) for p, h in idx["sources"]]
        if not sources or any(_file_sha256(p) != h for p, h in sources):
            return None
        return str(idx["digest"]), str(idx["name"]), tuple(p for p, _ in sources)
    except (ValueError, TypeError, KeyError):
        return None


def _index_write(real: str, log: bool, policy: SeccompPolicy, digest: str) -> None:
    sources = [[p, _file_sha256(p)] for p in policy.sources]
    if any(h is None for _, h in sources):
        return
    idx = {"top": real, "digest": digest, "name": policy.name, "sources": sources}
    _write_private(_index_path(real, log), json.dumps(idx).encode())


def prepare(name_or_path: str = "default", log: bool = False) -> Filter:
    """Load a policy and compile it to a :class:`Filter`, through two caches: in memory (keyed by
    the policy files' identity and mtimes) and on disk (``cache_dir()``: ``<digest>.bpf`` ending
    in a sha256 checksum, and an index from the policy files' content to the digest, so a cache
    hit parses no TOML and does no libseccomp work).  A corrupt, foreign-owned or
    group/world-writable cache entry is ignored and rewritten.  ``log=True``: permissive (see the
    module docstring).  Raises SeccompError (bad policy), HostError (no libseccomp on a miss).

    The cache directory is trusted as much as the user's home: a sandbox given write access to it
    (``--bind ~`` with a single id map) could as well plant code in ``~/.bashrc``."""
    path = find(name_or_path)
    real = str(path.resolve())
    memo_key = (real, bool(log))
    with _MEMO_LOCK:
        hit = _MEMO.get(memo_key)
    if hit is not None and _stamp(tuple(s[0] for s in hit[0])) == hit[0]:
        return hit[1]
    filt, sources = None, ()
    found = _index_read(real, log)
    if found is not None:
        digest, name, sources = found
        bpf = _cache_read(digest, log)
        if bpf is not None:
            filt = Filter(bpf, digest, name, _has_notify(bpf), permissive=bool(log))
    if filt is None:
        policy = load(real)
        digest = policy.digest()
        bpf = _cache_read(digest, log)
        if bpf is None:
            bpf = compile_bpf(policy, log)
            _cache_write(digest, log, bpf)
        _index_write(real, log, policy, digest)
        filt = Filter(bpf, digest, policy.name, _has_notify(bpf), permissive=bool(log))
        sources = policy.sources
    stamp = _stamp(tuple(sources))
    if stamp is not None:
        with _MEMO_LOCK:
            _MEMO[memo_key] = (stamp, filt)
    return filt


def _has_notify(bpf: bytes) -> bool:
    return any(code == 0x06 and k & sc.SECCOMP_RET_ACTION_FULL == sc.SECCOMP_RET_USER_NOTIF
               for code, _, _, k in struct.iter_unpack("<HBBI", bpf))


# ------------------------------------------------------------------ kernel side ----

def install(bpf: bytes, listener: bool) -> int | None:
    """Install ``bpf`` on the calling thread (seccomp(2) SECCOMP_SET_MODE_FILTER); the caller must
    have set no_new_privs (prctl(2) PR_SET_NO_NEW_PRIVS).  With ``listener``, asks for a
    notification listener (SECCOMP_FILTER_FLAG_NEW_LISTENER, with WAIT_KILLABLE_RECV where the
    kernel has it, Linux 5.19) and returns its fd (close-on-exec); else returns None.  Filters are
    inherited by children and kept across execve.  Raises OSError (EACCES: no no_new_privs;
    EINVAL: bad program; EBUSY: a listener already exists in this thread's filters)."""
    if not listener:
        sc.seccomp_set_mode_filter(bpf, 0)
        return None
    try:
        return sc.seccomp_set_mode_filter(
            bpf, sc.SECCOMP_FILTER_FLAG_NEW_LISTENER | sc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
    except OSError as e:
        if e.errno != _errno.EINVAL:
            raise
    return sc.seccomp_set_mode_filter(bpf, sc.SECCOMP_FILTER_FLAG_NEW_LISTENER)


@dataclass(frozen=True)
class Notification:
    """A seccomp notification (struct seccomp_notif): ``id`` (for :func:`respond`), ``pid`` (in the
    listener's pid namespace; 0 when not visible there), syscall ``nr``, ``arch`` (AUDIT_ARCH_*),
    ``ip`` (instruction pointer) and the 6 raw 64-bit ``args``."""

    id: int
    pid: int
    nr: int
    arch: int
    ip: int
    args: tuple[int, ...]


def receive(listener_fd: int) -> Notification | None:
    """Read one notification (ioctl SECCOMP_IOCTL_NOTIF_RECV, seccomp_unotify(2)).  Blocks: poll
    the fd for POLLIN first (POLLHUP: no task uses the filter any more).  Returns None when the
    notifying task died or was interrupted first (ENOENT) or on EINTR; raises OSError otherwise."""
    try:
        n = sc.seccomp_notif_recv(listener_fd)
    except OSError as e:
        if e.errno in (_errno.ENOENT, _errno.EINTR):
            return None
        raise
    d = n.data
    return Notification(n.id, n.pid, d.nr, d.arch, d.instruction_pointer, tuple(int(a) for a in d.args))


def respond(listener_fd: int, notif_id: int, *, error: int = 0, cont: bool = False) -> None:
    """Answer a notification (ioctl SECCOMP_IOCTL_NOTIF_SEND): the syscall fails with ``error``
    (a positive errno, e.g. errno.EPERM) or, with ``cont``, runs as if unfiltered
    (SECCOMP_USER_NOTIF_FLAG_CONTINUE; safe here because jailpy decides on register values only,
    never on memory the task could change).  ENOENT (the task died or was interrupted) is not an
    error.  Raises ValueError for neither or both of error and cont; OSError otherwise."""
    if bool(error) == bool(cont):
        raise ValueError("respond: give exactly one of error=ERRNO or cont=True")
    try:
        if cont:
            sc.seccomp_notif_send(listener_fd, notif_id, flags=sc.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        else:
            sc.seccomp_notif_send(listener_fd, notif_id, error=-abs(error))
    except OSError as e:
        if e.errno != _errno.ENOENT:
            raise


def answer(listener_fd: int, notif: Notification, decision: Decision) -> bool:
    """Answer ``notif`` as ``decision`` says: errno -> the errno, log -> CONTINUE.  Returns True
    when the caller must kill the sandbox instead (a kill rule; no answer is sent, so the
    syscall never runs)."""
    if decision.action == "kill":
        return True
    if decision.action in ("log", "allow"):
        respond(listener_fd, notif.id, cont=True)
    else:
        respond(listener_fd, notif.id, error=decision.errno or _errno.EPERM)
    return False


# ------------------------------------------------------------------ reporting ----

def _flags(value: int, table: dict[str, int], rest: str = "hex") -> str:
    parts, left = [], value
    for k, v in sorted(table.items(), key=lambda kv: -kv[1]):
        if v and left & v == v and v & (v - 1) == 0:
            parts.append((v, k))
            left &= ~v
    out = [k for _, k in sorted(parts)]
    if left or not out:
        out.append(f"{left:#x}" if rest == "hex" else str(left))
    return "|".join(out)


def _enum(value: int, table: dict[str, int], width: int = 64, other: str = "hex") -> str:
    """The constant's name (of the low ``width`` bits; the full value shown when higher bits
    are set), else the value as hex or, with ``other="int"``, as a signed int."""
    low = value & ((1 << width) - 1)
    for k, v in table.items():
        if v == low:
            return k if low == value else f"{value:#x} ({k})"
    return str(_signed(value, width)) if other == "int" and low == value else f"{value:#x}"


def _signed(v: int, width: int = 32) -> int:
    v &= (1 << width) - 1
    return v - (1 << width) if v >> (width - 1) else v


def _fmt_clone(v: int) -> str:
    sig, flags = v & 0xFF, v & ~0xFF
    out = _flags(flags, CLONE_FLAGS) if flags else ""
    if sig:
        import signal

        try:
            signame = signal.Signals(sig).name
        except ValueError:
            signame = str(sig)
        out = f"{out}|{signame}" if out else signame
    return out or "0"


_FMT = {
    "i": lambda v: str(_signed(v)),
    "u": lambda v: str(v),
    "x": lambda v: f"{v:#x}",
    "ptrace": lambda v: _enum(v, PTRACE_REQUESTS),
    "clone": _fmt_clone,
    "ns": lambda v: _flags(v, {k: x for k, x in UNSHARE_FLAGS.items() if k.startswith("CLONE_NEW")}),
    "unshare": lambda v: _flags(v, UNSHARE_FLAGS) if v else "0",
    "af": lambda v: _enum(v, ADDRESS_FAMILIES, 32, "int"),
    "socktype": lambda v: (f"{v:#x}" if v & ~0xF & ~(0x800 | 0x80000) else _enum(v & 0xF, SOCK_TYPES, 32, "int")
                           + (f"|{_flags(v & ~0xF, SOCK_FLAGS)}" if v & ~0xF else "")),
    "ioctl": lambda v: _enum(v, IOCTL_REQUESTS, 32),
    "persona": lambda v: ("PER_QUERY" if v == 0xFFFFFFFF else "PER_LINUX" if v == 0
                          else _flags(v, {k: x for k, x in PERSONALITIES.items() if k != "PER_QUERY"})),
    "clock": lambda v: _enum(v, CLOCKS, 32, "int"),
    "prctl": lambda v: _enum(v, PRCTL_OPTIONS, 32, "int"),
}
_SIGNATURES = {
    "ptrace": "ptrace i x x", "process_vm_readv": "i x u x u u", "process_vm_writev": "i x u x u u",
    "pidfd_getfd": "i i x", "kcmp": "i i i u u", "bpf": "i x u", "perf_event_open": "x i i i x",
    "userfaultfd": "x", "io_uring_setup": "u x", "io_uring_enter": "i u u x x u", "io_uring_register": "i u x u",
    "keyctl": "i x x x x", "add_key": "x x x u i", "request_key": "x x x i", "fsopen": "x x",
    "fsconfig": "i u x x i", "fsmount": "i x x", "fspick": "i x x", "open_tree": "i x x",
    "open_tree_attr": "i x x x u", "move_mount": "i x i x x", "mount_setattr": "i x x x u",
    "mount": "x x x x x", "umount2": "x x", "pivot_root": "x x", "unshare": "unshare",
    "clone": "clone x x x x", "clone3": "x u", "setns": "i ns", "kexec_load": "x u x x",
    "kexec_file_load": "i i u x x", "reboot": "x x x x", "init_module": "x u x", "finit_module": "i x x",
    "delete_module": "x x", "swapon": "x x", "swapoff": "x", "acct": "x", "clock_settime": "clock x",
    "clock_adjtime": "clock x", "settimeofday": "x x", "adjtimex": "x", "open_by_handle_at": "i x x",
    "name_to_handle_at": "i x x x x", "personality": "persona", "modify_ldt": "i x u", "uselib": "x",
    "syslog": "i x i", "quotactl": "x x i x", "quotactl_fd": "i x i x", "lookup_dcookie": "x x u",
    "ioctl": "i ioctl x", "socket": "af socktype i", "socketpair": "af socktype i x", "prctl": "prctl x x x x",
    "kill": "i i", "tkill": "i i", "tgkill": "i i i", "statmount": "x x u x", "listmount": "x x u x",
    "iopl": "u", "ioperm": "u u i", "process_madvise": "i x u i u", "move_pages": "i u x x x i",
    "migrate_pages": "i u x x", "memfd_secret": "x", "fanotify_init": "x x", "getpid": "", "execve": "x x x",
    "open": "x x x", "openat": "i x x x", "read": "i x u", "write": "i x u", "close": "i",
}


def describe(nr: int, args: tuple[int, ...] | list[int]) -> str:
    """One call as text, e.g. ``"ptrace(PTRACE_ATTACH, 1, 0x0, 0x0)"``: the name from
    libseccomp's resolver, well-known constants decoded (ptrace requests, clone/unshare/setns
    flags, socket families and types, ioctl requests such as TIOCSTI/TIOCLINUX, personality,
    clock ids, prctl options), other arguments as ints or hex; all six for unknown syscalls."""
    name = syscall_name(nr)
    args = [int(a) & MAX64 for a in args] + [0] * (6 - len(args))
    sig = _SIGNATURES.get(name)
    kinds = sig.split() if sig is not None else ["x"] * 6
    return f"{name}({', '.join(_FMT[k](args[i]) for i, k in enumerate(kinds))})"


def blocked_record(notif: Notification, decision: Decision, count: int) -> dict:
    """The Result's ``blocked_syscall`` (and ``seccomp_log`` entry) for a notification:
    ``{"name", "nr", "args": [6 ints], "action": "errno"|"kill"|"log", "errno": int|None,
    "text": describe(), "count": count}``; for a permissive (--seccomp-log) decision ``action``
    is what the policy would have done."""
    action = decision.would or decision.action
    return {
        "name": decision.name or syscall_name(notif.nr),
        "nr": notif.nr,
        "args": [int(a) for a in notif.args],
        "action": action,
        "errno": decision.errno if action == "errno" else None,
        "text": describe(notif.nr, notif.args),
        "count": int(count),
    }
