"""The seccomp policy language: syscall names and numbers, the symbolic constants of ``when``
conditions, the conditions themselves, and the checked policy (:class:`SeccompPolicy`).

Everything here is pure data and checks, with one exception: syscall names are resolved with
libseccomp's table (seccomp_syscall_resolve_name_arch(3)), loaded on first use by :func:`_lib`.
Reading files is in :mod:`.loaders`, compiling in :mod:`.bpf`.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import hashlib
import json
import re
import threading
from dataclasses import dataclass

from .. import _syscalls as sc
from ..errors import PolicyError

COMPILER_VERSION = 1
"""Bumped whenever the generated BPF changes for the same policy: part of the cache key."""

MAX64 = (1 << 64) - 1
_ERRNO_MASK = 0x0FFF
"""The largest errno a rule may give (4095, MAX_ERRNO), and the errno field of the
notification data bits compile_bpf() writes (:mod:`.bpf`)."""

# x86_64 syscalls newer than libseccomp 2.5's table (arch/x86/entry/syscalls/syscall_64.tbl);
# uretprobe and uprobe are the kernel's uprobe trampolines (only callable from them), named for describe()
_EXTRA_SYSCALLS = {
    335: "uretprobe", 336: "uprobe", 457: "statmount", 458: "listmount", 459: "lsm_get_self_attr",
    460: "lsm_set_self_attr", 461: "lsm_list_modules", 462: "mseal", 463: "setxattrat", 464: "getxattrat",
    465: "listxattrat", 466: "removexattrat", 467: "open_tree_attr", 468: "file_getattr", 469: "file_setattr",
}
_EXTRA_NR = {v: k for k, v in _EXTRA_SYSCALLS.items()}


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
    TCGETS=0x5401, TCSETS=0x5402, TCSETSW=0x5403, TCSETSF=0x5404, TCGETA=0x5405, TCSETA=0x5406, TCSETAW=0x5407,
    TCSETAF=0x5408, TCSBRK=0x5409, TCXONC=0x540A, TCFLSH=0x540B, TIOCEXCL=0x540C, TIOCNXCL=0x540D, TIOCSCTTY=0x540E,
    TIOCMGET=0x5415, TIOCMBIS=0x5416, TIOCMBIC=0x5417, TIOCMSET=0x5418, TIOCGSERIAL=0x541E, TIOCSSERIAL=0x541F,
    TIOCSSOFTCAR=0x541A, TIOCCONS=0x541D, TCSBRKP=0x5425, TIOCSBRK=0x5427, TIOCCBRK=0x5428, TCSETX=0x5433,
    TCSETXF=0x5434, TCSETXW=0x5435, TIOCVHANGUP=0x5437, TIOCSLCKTRMIOS=0x5457,
    TCGETS2=0x802C542A, TCSETS2=0x402C542B, TCSETSW2=0x402C542C, TCSETSF2=0x402C542D,
    TIOCGPGRP=0x540F, TIOCSPGRP=0x5410, TIOCOUTQ=0x5411, TIOCSTI=0x5412, TIOCGWINSZ=0x5413, TIOCSWINSZ=0x5414,
    FIONREAD=0x541B, TIOCLINUX=0x541C, FIONBIO=0x5421, TIOCNOTTY=0x5422, TIOCSETD=0x5423, TIOCGSID=0x5429, FIONCLEX=0x5450,
    FIOCLEX=0x5451, FIOASYNC=0x5452, TIOCGPTN=0x80045430, TIOCSPTLCK=0x40045431, FS_IOC_GETFLAGS=0x80086601,
)
IP_PROTOCOLS = dict(
    IPPROTO_IP=0, IPPROTO_ICMP=1, IPPROTO_TCP=6, IPPROTO_UDP=17, IPPROTO_DCCP=33, IPPROTO_ICMPV6=58,
    IPPROTO_L2TP=115, IPPROTO_SCTP=132, IPPROTO_UDPLITE=136, IPPROTO_RAW=255, IPPROTO_SMC=256, IPPROTO_MPTCP=262,
)
"""The protocol argument of socket(2) for AF_INET/AF_INET6 (netinet/in.h; ip(7), ipv6(7))."""
FILE_MODES = dict(S_ISUID=0o4000, S_ISGID=0o2000, S_ISVTX=0o1000)
"""Mode bits of chmod(2), mknod(2) and open(2) (inode(7))."""
OPEN_FLAGS = dict(O_CREAT=0o100, O_EXCL=0o200, O_TRUNC=0o1000, O_APPEND=0o2000, O_DIRECTORY=0o200000,
                  O_NOFOLLOW=0o400000, O_CLOEXEC=0o2000000, O_PATH=0o10000000, __O_TMPFILE=0o20000000,
                  O_TMPFILE=0o20200000)
"""open(2) flags on x86_64 (asm-generic/fcntl.h); O_TMPFILE includes O_DIRECTORY, __O_TMPFILE does not."""
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
    **PERSONALITIES, **PRCTL_OPTIONS, **CLOCKS, **IP_PROTOCOLS, **FILE_MODES, **OPEN_FLAGS,
    "CLONE_NS_FLAGS": NS_FLAGS_CLONE, "UNSHARE_NS_FLAGS": NS_FLAGS_UNSHARE,
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
        except (ImportError, RuntimeError, OSError) as e:  # RuntimeError: libseccomp.so not found
            from ..errors import HostError, out_of_fds

            # ctypes.util.find_library runs ldconfig through a temporary file: with no fd left
            # that fails as "No usable temporary directory"
            why = out_of_fds() or "install libseccomp2 and pyseccomp"
            raise HostError(f"seccomp: libseccomp could not be loaded ({e}): {why}") from None
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
        elif re.fullmatch(r"0[oO][0-7]+", part):
            v = int(part, 8)
        elif part.isdigit() and len(part) > 1 and part.startswith("0"):
            raise SeccompError(f"{where}: {part!r} is ambiguous: write 0o{part.lstrip('0')} for octal (as in C) "
                               f"or {part.lstrip('0') or '0'} for decimal")
        elif part.isdigit():
            v = int(part, 10)
        elif part in SYMBOLS:
            v = SYMBOLS[part]
        else:
            raise SeccompError(f"{where}: unknown value {part!r} (a number: 42, 0x2a, 0o52; or a name like "
                               f"CLONE_NEWUSER, AF_UNIX, IPPROTO_TCP, S_ISUID, O_CREAT, TCSETS)")
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

