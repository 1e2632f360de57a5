"""How a notified syscall is reported: :func:`describe` (one call as text, constants decoded)
and :func:`blocked_record` (the Result's ``blocked_syscall`` / ``seccomp_log`` entry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .language import (
    ADDRESS_FAMILIES, CLOCKS, CLONE_FLAGS, IOCTL_REQUESTS, MAX64, PERSONALITIES, PRCTL_OPTIONS,
    PTRACE_REQUESTS,
    SOCK_FLAGS, SOCK_TYPES, UNSHARE_FLAGS, syscall_name,
)

if TYPE_CHECKING:
    from .bpf import Decision
    from .notify import Notification


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
    "mode": lambda v: f"0o{v & 0xFFFFFFFF:o}",
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
    "open": "x x mode", "openat": "i x x mode", "creat": "x mode", "chmod": "x mode", "fchmod": "i mode",
    "fchmodat": "i x mode", "fchmodat2": "i x mode x", "mknod": "x mode x", "mknodat": "i x mode x",
    "io_setup": "u x", "io_destroy": "x", "io_submit": "x i x", "io_cancel": "x x x", "io_getevents": "x i i x x", "read": "i x u", "write": "i x u", "close": "i",
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
