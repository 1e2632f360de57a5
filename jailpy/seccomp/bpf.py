"""Compiling a policy to classic BPF (:func:`compile_bpf`, with libseccomp), running BPF the way
the kernel does (:func:`run_bpf`), and reading back what a compiled :class:`Filter` decides.

What the BPF does, in order (seccomp(2), Documentation/userspace-api/seccomp_filter.rst):

1. A stub jailpy prepends to libseccomp's program: for x86_64 syscalls numbered above
   ``known_max_nr`` (newer than the policy) return ERRNO(ENOSYS), unreported, so libc falls back
   as on an older kernel.  libseccomp cannot name syscalls newer than its table, hence the stub.
2. libseccomp's program: any other architecture (i386 through ``int 0x80``) and x32 numbers
   (bit 0x40000000) kill the process (SECCOMP_RET_KILL_PROCESS, SIGSYS; see ``_BAD_ARCH``);
   then the rules; then the default action.

Which rule a notification came from is carried in the low 16 bits of the filter's return value
(the kernel ignores them for SECCOMP_RET_USER_NOTIF): :func:`_notify_data` writes them and
:meth:`Filter.decide` reads them back by running the very same BPF (a small classic-BPF
interpreter), so it cannot disagree with the kernel.  Encoding and decoding live here together.
"""

from __future__ import annotations

import errno as _errno
import os
import struct
from dataclasses import dataclass, field

from .. import _syscalls as sc
from .language import _ERRNO_MASK, MAX64, SeccompError, SeccompPolicy, _cmp_text, _lib, syscall_name

_BAD_ARCH = sc.SECCOMP_RET_KILL_PROCESS
# Non-native syscalls are killed, not answered EPERM: no x86_64 program (glibc, musl, Go, the
# JVM, node, CPython) issues int 0x80 or x32 numbers, so this never fires for a well-behaved
# program, while it is the classic way around a filter and reaches the compat entry code, a
# separate attack surface; a kill ends the attempt at once and shows as SIGSYS (exit 159).

# data bits of SECCOMP_RET_USER_NOTIF (and of the SECCOMP_RET_TRACE placeholder given to libseccomp)
_KIND_DENY, _KIND_KILL, _KIND_LOG = 0x1000, 0x2000, 0x3000
_KIND_MASK = 0x3000
_PERMISSIVE = 0x4000


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


# ------------------------------------------------------------------ reading back ----

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


def _has_notify(bpf: bytes) -> bool:
    return any(code == 0x06 and k & sc.SECCOMP_RET_ACTION_FULL == sc.SECCOMP_RET_USER_NOTIF
               for code, _, _, k in struct.iter_unpack("<HBBI", bpf))

