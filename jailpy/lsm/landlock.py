"""Landlock (landlock(7); Documentation/userspace-api/landlock.rst): a second wall behind the mount
plan, which needs no privilege.

Once PID 1 has restricted itself, it and everything it starts may touch only what the rules
allow, whatever the mounts say: if a mount were ever wrong (writable where the plan says
read-only, a host directory left visible), the kernel still refuses with EACCES.

Host side: :func:`prepare` derives a :class:`Plan` from the mount plan (jailpy.mounts.MountPlan),
never from a list written by hand:

* read and execute (``execute``, ``read_file``, ``read_dir``) under the sandbox's root: the
  read-only rootfs, /proc, /sys and the read-only binds;
* /dev: also ``write_file``, ``truncate`` and ``ioctl_dev`` (null, zero, full, random, tty and the
  sandbox's own devpts terminals: ``> /dev/null`` opens with O_TRUNC);
* /dev/mqueue: ``read_file`` and ``write_file`` (mq_open(3) opens through the ipc namespace's
  own mount of that filesystem, whose root is the same inode);
* every right under /tmp, /dev/shm, each ``--tmpfs`` and each writable bind (for a bind of a
  file, the rights a file can have);
* nothing else.

Where the network policy is an allowlist (``--allow-host``, ``--allow-net``: :func:`tcp_rules`),
TCP connect is allowed only to the ports it allows and TCP bind only to the ``--publish`` ports
(ABI 4).  Everywhere else TCP is not handled: with ``network = none`` the sandbox has only its own
loopback, which programs use (test servers, interactive judges), and ``user`` and ``bridge``
without rules open every port.  Signals and abstract unix sockets are scoped to the sandbox (ABI 6).

Best effort by ABI: every right the running kernel knows is used and the effective ABI is
recorded (Result.protections.landlock).  ``mode``: ``auto`` applies it where the kernel has
Landlock, ``on`` fails closed (HostError) where it cannot, ``off`` never applies it.

Sandbox side: :func:`apply` in PID 1 after pivot_root and the per-run mounts (a tmpfs's root is a
new inode each run, so its rule can only be made once it is mounted), after no_new_privs and
before seccomp (jailpy.child.init).  Rule paths are resolved inside the sandbox's root as the
mounts were (openat2(2) RESOLVE_IN_ROOT), and a rule for a mount must land on a mount root
(statx(2) STATX_ATTR_MOUNT_ROOT).

Syscalls (x86_64): landlock_create_ruleset(2) 444, landlock_add_rule(2) 445,
landlock_restrict_self(2) 446.  A ruleset attribute is 8, 16 or 24 bytes by ABI; a failure is
``ret == -1`` (never a stale errno).

=== ======= =============================================================
ABI kernel  adds
=== ======= =============================================================
1   5.13    file system rights (execute, read/write file, read dir, make/remove)
2   5.19    ``refer`` (rename and link across directories)
3   6.2     ``truncate``
4   6.7     TCP ``bind_tcp`` / ``connect_tcp`` by port
5   6.10    ``ioctl_dev``
6   6.12    scoping: abstract unix sockets, signals
7   6.15    audit-log flags of landlock_restrict_self (jailpy keeps the default: the
            program's denials are not logged)
=== ======= =============================================================
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
from typing import NamedTuple

from .. import _syscalls as sc

NR_landlock_create_ruleset = 444
NR_landlock_add_rule = 445
NR_landlock_restrict_self = 446
NR_statx = 332
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_CREATE_RULESET_ERRATA = 1 << 1
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2

KNOWN_ABI = 7
"""The newest ABI this module knows; a newer kernel is used at this level."""

FS = {  # LANDLOCK_ACCESS_FS_*: name -> (bit, ABI that added it)
    "execute": (1 << 0, 1), "write_file": (1 << 1, 1), "read_file": (1 << 2, 1), "read_dir": (1 << 3, 1),
    "remove_dir": (1 << 4, 1), "remove_file": (1 << 5, 1), "make_char": (1 << 6, 1), "make_dir": (1 << 7, 1),
    "make_reg": (1 << 8, 1), "make_sock": (1 << 9, 1), "make_fifo": (1 << 10, 1), "make_block": (1 << 11, 1),
    "make_sym": (1 << 12, 1), "refer": (1 << 13, 2), "truncate": (1 << 14, 3), "ioctl_dev": (1 << 15, 5),
}
NET = {"bind_tcp": (1 << 0, 4), "connect_tcp": (1 << 1, 4)}  # LANDLOCK_ACCESS_NET_*
SCOPE = {"abstract_unix_socket": (1 << 0, 6), "signal": (1 << 1, 6)}  # LANDLOCK_SCOPE_*


def _bits(table: dict, *names: str) -> int:
    out = 0
    for n in names or table:
        out |= table[n][0]
    return out


FS_ALL = _bits(FS)
FILE_RIGHTS = _bits(FS, "execute", "write_file", "read_file", "truncate", "ioctl_dev")
"""The rights a rule on a regular file may carry (the others concern directories: EINVAL)."""
READ_EXECUTE = _bits(FS, "execute", "read_file", "read_dir")
DEVICES = READ_EXECUTE | _bits(FS, "write_file", "truncate", "ioctl_dev")
MQUEUE = _bits(FS, "read_file", "write_file")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class Unavailable(Exception):
    """Landlock cannot be used here; ``str()`` says why and how to fix it."""


def _raw(nr: ctypes.c_long, *args) -> int:
    """syscall(2) ``nr`` with ``args``; raises OSError when it returns -1 (only then is errno
    meaningful: the PyPI package's stale-errno bug)."""
    ret = _syscall(nr, *args)
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


# the syscall numbers and fixed arguments as ctypes objects, made once: PID 1 is a fresh fork, where
# each new object costs page faults (bench/lsm.py measures what a run pays)
_NR_CREATE, _NR_ADD, _NR_RESTRICT, _NR_STATX = (ctypes.c_long(n) for n in (
    NR_landlock_create_ruleset, NR_landlock_add_rule, NR_landlock_restrict_self, NR_statx))


_ABI: list = []  # the kernel's answer, asked once per process: it cannot change while it runs


def kernel_abi() -> int:
    """The Landlock ABI of the running kernel (landlock_create_ruleset(2) with
    LANDLOCK_CREATE_RULESET_VERSION), asked once per process.  Raises :class:`Unavailable` naming
    the cause: ENOSYS (not built in: Linux 5.13+ with CONFIG_SECURITY_LANDLOCK) or EOPNOTSUPP
    (built in, not enabled at boot: the ``lsm=`` kernel parameter)."""
    if not _ABI:
        try:
            _ABI.append(_kernel_abi())
        except Unavailable as e:
            _ABI.append(e)
    if isinstance(_ABI[0], Unavailable):
        raise Unavailable(str(_ABI[0]))
    return _ABI[0]


def abi_or_reason() -> tuple[int, str]:
    """``(ABI, "")``, or ``(0, why)`` where this kernel has no usable Landlock."""
    try:
        return kernel_abi(), ""
    except Unavailable as e:
        return 0, str(e)


def _kernel_abi() -> int:
    try:
        return _raw(_NR_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    except OSError as e:
        if e.errno == errno.ENOSYS:
            raise Unavailable("this kernel has no Landlock (it needs Linux 5.13 or newer built with "
                              "CONFIG_SECURITY_LANDLOCK=y)") from None
        if e.errno == errno.EOPNOTSUPP:
            raise Unavailable("Landlock is built into this kernel but not enabled: add landlock to the lsm= kernel "
                              "parameter (see /sys/kernel/security/lsm) and reboot") from None
        raise Unavailable(f"landlock_create_ruleset: {e.strerror}") from None


def kernel_errata() -> int:
    """The bitmask of Landlock errata fixed in this kernel (LANDLOCK_CREATE_RULESET_ERRATA, ABI
    7 kernels and some backports), 0 where the flag is unknown; asked once per process."""
    if not _ERRATA:
        try:
            _ERRATA.append(_raw(_NR_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_ERRATA)))
        except OSError:
            _ERRATA.append(0)
    return _ERRATA[0]


_ERRATA: list[int] = []


def rights_for(abi: int) -> tuple[int, int, int]:
    """(file system rights, network rights, scopes) that ABI ``abi`` knows."""
    return tuple(sum(bit for bit, since in table.values() if since <= abi) for table in (FS, NET, SCOPE))


def ruleset_attr(abi: int, fs: int, net: int, scoped: int) -> bytes:
    """struct landlock_ruleset_attr for ABI ``abi``: handled_access_fs (ABI 1, 8 bytes),
    handled_access_net (ABI 4, 16 bytes), scoped (ABI 6, 24 bytes)."""
    if abi >= 6:
        return struct.pack("<QQQ", fs, net, scoped)
    if abi >= 4:
        return struct.pack("<QQ", fs, net)
    return struct.pack("<Q", fs)


def names(table: dict, bits: int) -> list[str]:
    """The names of ``bits`` in ``table`` (FS, NET or SCOPE)."""
    return [n for n, (bit, _) in table.items() if bits & bit]


class TcpRules(NamedTuple):
    """What a network policy allows over TCP (the hook for jailpy.net, when a network other than
    none is given): ports (1-65535) the program may connect to and ports it may bind (none: TCP
    bind denied)."""

    connect: tuple[int, ...] = ()
    bind: tuple[int, ...] = ()


def tcp_rules(net) -> TcpRules | None:
    """The TCP rules of a network plan (jailpy.net.NetPlan), for :func:`prepare`: only where the
    network policy is an allowlist (``--allow-host``, ``--allow-net``: egress through jailpy's
    proxy), connect to the ports it allows (the stub's transparent listeners take them), its HTTP
    proxy port and the ``--publish`` ports (the stub connects to them inside), and bind only the
    ``--publish`` ports.  None (TCP not handled) everywhere else: ``none`` (the sandbox's own
    loopback, where programs run test servers), ``user`` and ``bridge`` without rules (egress
    open to every port), and an ``--allow-net`` rule without a port (any port)."""
    if net is None or not getattr(net, "proxied", False):
        return None
    ports: set[int] = set()
    for rule in net.hosts:
        ports.update(rule.ports)
    for rule in net.nets:
        if rule.port is None:
            return None
        ports.add(rule.port)
    from ..net import HTTP_PROXY_PORT

    published = tuple(sorted({p.port for p in net.publish}))
    return TcpRules(tuple(sorted(ports | {HTTP_PROXY_PORT} | set(published))), published)


class Rule(NamedTuple):
    """One path-beneath rule: ``path`` inside the sandbox, ``access`` (FS bits), ``kind`` (what the
    description calls it: read_dir, read_execute, devices, all_rights), ``mount``: ``path`` is a
    mount the plan makes (a tmpfs or a bind), whose root the rule must land on; ``optional``:
    skipped when ``path`` does not exist in the sandbox; ``is_dir``: a directory (else a file)."""

    path: str
    access: int
    kind: str
    mount: bool = False
    optional: bool = False
    is_dir: bool = True
    """What the plan put there (a directory, or a file: then only FILE_RIGHTS)."""


class Plan(NamedTuple):
    """What PID 1 applies (plain data: pickled to the fork server)."""

    abi: int
    attr: bytes
    rules: tuple[Rule, ...]
    ports: tuple[tuple[int, int], ...] = ()
    """(port, NET bits) rules."""


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def rules_from(mounts, fs: int = FS_ALL) -> tuple[Rule, ...]:
    """The path rules that follow from a mount plan (jailpy.mounts.MountPlan; see the module
    docstring), with only the rights in ``fs`` (the running ABI's): the only place jailpy's
    Landlock rules come from.  The root itself gets only ``read_dir`` (listing; it is inherited,
    so hidden directories list empty); each visible top-level entry of the rootfs, /proc, /sys and
    each read-only bind read and execute."""
    rx, dev, allr, fileonly = READ_EXECUTE & fs, DEVICES & fs, FS_ALL & fs, FILE_RIGHTS & fs
    rules = [Rule("/", FS["read_dir"][0], "read_dir")]
    rules += [Rule(f"/{name}", rx & fileonly if kind == "file" else rx, "read_execute", False, False, kind != "file")
              for name, kind, _ in mounts.top if kind in ("overlay", "rbind", "file")]
    rules += [Rule("/proc", rx, "read_execute"), Rule("/sys", rx, "read_execute"), Rule("/dev", dev, "devices"),
              Rule("/dev/mqueue", MQUEUE & fs, "devices", False, True), Rule("/dev/shm", allr, "all_rights", True),
              Rule("/tmp", allr, "all_rights", True)]
    rules += [Rule(dst, allr, "all_rights", True) for dst, _ in mounts.tmpfs]
    rules += [Rule(b.dst, (allr if b.rw else rx) & (allr if b.is_dir else fileonly),
                   "all_rights" if b.rw else "read_execute", True, False, b.is_dir) for b in mounts.binds]
    return tuple(rules)


def not_covered(mounts) -> list[str]:
    """What the mounts protect and Landlock cannot (its rules only add rights down a tree): a
    hidden directory inside a visible one, a read-only bind inside a writable mount."""
    writable = ["/tmp", "/dev/shm"] + [d for d, _ in mounts.tmpfs] + [b.dst for b in mounts.binds if b.rw]
    out = [f"{h} (hidden, inside a visible directory: read-only and empty by its mount only)"
           for h in mounts.hidden_nested]
    out += [f"{b.dst} (a read-only bind inside the writable {w}: read-only by its mount only)"
            for b in mounts.binds if not b.rw for w in writable if w != b.dst and _under(b.dst, w)]
    return out


def prepare(mode: str, mounts, tcp: TcpRules | None = None) -> tuple[Plan | None, dict]:
    """Host side: the Plan for ``mode`` (auto, on, off) and the mount plan ``mounts``, and what
    Result.protections.landlock says.  ``tcp``: None for ``network = none`` (TCP not handled),
    else the network policy's TCP rules.  Returns ``(None, description)`` when Landlock is off or
    (``auto``) unavailable.  Raises :class:`Unavailable` for ``on`` where the kernel cannot give
    it: no Landlock, or TCP rules asked for below ABI 4."""
    if mode == "off":
        return None, {"applied": False, "mode": "off", "reason": "--landlock off"}
    try:
        kabi = kernel_abi()
    except Unavailable as e:
        if mode == "on":
            raise Unavailable(f"--landlock on: {e}; or use --landlock auto") from None
        return None, {"applied": False, "mode": mode, "reason": str(e)}
    abi = min(kabi, KNOWN_ABI)
    fs, net, scoped = rights_for(abi)
    if tcp is not None and not net and mode == "on":
        raise Unavailable(f"--landlock on: the network policy needs TCP rules (Landlock ABI 4, Linux 6.7), "
                          f"this kernel has ABI {kabi}; or use --landlock auto")
    handled_net = net if tcp is not None else 0
    rules = rules_from(mounts, fs)
    ports: dict[int, int] = {}
    if handled_net:
        for p in tcp.connect:
            ports[p] = ports.get(p, 0) | NET["connect_tcp"][0]
        for p in tcp.bind:
            ports[p] = ports.get(p, 0) | NET["bind_tcp"][0]
    plan = Plan(abi, ruleset_attr(abi, fs, handled_net, scoped), rules, tuple(sorted(ports.items())))
    desc = describe(plan, mode, kabi, tcp)
    desc["not_covered"] = not_covered(mounts)
    return plan, desc


def describe(plan: Plan, mode: str, kabi: int, tcp: TcpRules | None) -> dict:
    """Result.protections.landlock for an applied ``plan``."""
    fs, net, scoped = rights_for(plan.abi)
    missing = [f"{n} (ABI {since})" for table in (FS, NET, SCOPE) for n, (_, since) in table.items()
               if since > plan.abi]
    connect, bind = NET["connect_tcp"][0], NET["bind_tcp"][0]
    if tcp is not None and net:
        tcp_desc = {"handled": names(NET, net), "tcp_connect": [p for p, a in plan.ports if a & connect],
                    "tcp_bind": [p for p, a in plan.ports if a & bind]}
    elif tcp is None:
        tcp_desc = {"handled": [], "note": "TCP not restricted: no allowlist in the network policy (none: the "
                                           "sandbox's own loopback only; user, bridge: open egress)"}
    else:
        tcp_desc = {"handled": [], "note": f"TCP not restricted: this kernel's ABI {kabi} has no network rules "
                                           f"(ABI 4, Linux 6.7)"}
    desc = {
        "applied": True, "mode": mode, "abi": plan.abi, "kernel_abi": kabi,
        "fs": {"handled": names(FS, fs), **{kind: [r.path for r in plan.rules if r.kind == kind]
                                            for kind in ("read_dir", "read_execute", "devices", "all_rights")}},
        "net": tcp_desc,
        "scoped": names(SCOPE, scoped),
        "not_in_this_kernel": missing,
    }
    if kabi >= 7:
        desc["errata"] = kernel_errata()
    return desc


# ---------------------------------------------------------------- sandbox side ----

_STATX_ATTR_MOUNT_ROOT = 0x2000
_AT_EMPTY_PATH = ctypes.c_int(0x1000)
_STATX_TYPE = ctypes.c_uint(1)  # STATX_TYPE
_STATX = ctypes.create_string_buffer(256)  # struct statx, made here so PID 1 only writes into it
_EMPTY = b""
_PATH_BENEATH = ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH)
_NET_PORT = ctypes.c_int(LANDLOCK_RULE_NET_PORT)
_NO_FLAGS = ctypes.c_uint32(0)
_RESOLVE = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS  # as the mounts were made (jailpy.rootfs)
_O_DIR = os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_DIRECTORY
_O_FILE = os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW


def _mount_root(fd: int) -> bool | None:
    """Whether ``fd`` is the root of a mount (statx(2) STATX_ATTR_MOUNT_ROOT, Linux 5.8); None
    when the kernel does not say."""
    _raw(_NR_STATX, ctypes.c_int(fd), _EMPTY, _AT_EMPTY_PATH, _STATX_TYPE, _STATX)
    attrs, mask = struct.unpack_from("<Q", _STATX, 8)[0], struct.unpack_from("<Q", _STATX, 56)[0]
    return bool(attrs & _STATX_ATTR_MOUNT_ROOT) if mask & _STATX_ATTR_MOUNT_ROOT else None


def _open(root: int, rule: Rule) -> int | None:
    """An O_PATH fd of ``rule.path`` in the sandbox (None: an optional one that is missing).  A
    top-level name is opened below ``root`` without following a symlink (the plan put a directory
    or a file there); a deeper path is resolved inside ``root`` as the mounts were."""
    rel = rule.path.lstrip("/")
    try:
        if "/" not in rel:
            return os.open(rel, _O_DIR if rule.is_dir else _O_FILE, dir_fd=root)
        return sc.openat2(root, rel, os.O_PATH | os.O_CLOEXEC | (os.O_DIRECTORY if rule.is_dir else 0), _RESOLVE)
    except FileNotFoundError:
        if rule.optional:
            return None
        raise OSError(errno.ENOENT, f"Landlock rule for {rule.path}: not found in the sandbox") from None
    except OSError as e:
        raise OSError(e.errno, f"Landlock rule for {rule.path}: {e.strerror}") from None


def apply(plan: Plan) -> None:
    """Sandbox side (PID 1, after pivot_root and the per-run mounts, before seccomp): build the
    ruleset of ``plan`` and restrict this process and all it will start (landlock_restrict_self(2);
    irreversible, inherited).  Sets no_new_privs first (the kernel wants it, or CAP_SYS_ADMIN).
    Raises OSError naming the rule that failed."""
    ruleset = ctypes.c_int(_raw(_NR_CREATE, plan.attr, ctypes.c_size_t(len(plan.attr)), _NO_FLAGS))
    pack, call, add, beneath, none = struct.pack, _syscall, _NR_ADD, _PATH_BENEATH, _NO_FLAGS
    try:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for rule in plan.rules:  # the loop is PID 1's cost per run: kept to a syscall or three a rule
                fd = root if rule.path == "/" else _open(root, rule)
                if fd is None:
                    continue
                try:
                    if rule.mount and _mount_root(fd) is False:
                        raise OSError(errno.EXDEV, f"Landlock rule for {rule.path}: not the mount the plan made "
                                                   f"there (changed since it was mounted?)")
                    # struct landlock_path_beneath_attr, packed: 12 bytes
                    if call(add, ruleset, beneath, pack("<Qi", rule.access, fd), none) == -1:
                        err = ctypes.get_errno()
                        raise OSError(err, f"Landlock rule for {rule.path}: {os.strerror(err)}")
                finally:
                    if fd != root:
                        os.close(fd)
        finally:
            os.close(root)
        for port, access in plan.ports:
            _raw(_NR_ADD, ruleset, _NET_PORT, struct.pack("<QQ", access, port), _NO_FLAGS)
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        try:
            _raw(_NR_RESTRICT, ruleset, _NO_FLAGS)
        except OSError as e:
            if e.errno == errno.E2BIG:
                raise OSError(e.errno, "landlock_restrict_self: jailpy runs under 16 Landlock layers already "
                                       "(the kernel's limit): run it with --landlock off") from None
            raise OSError(e.errno, f"landlock_restrict_self: {e.strerror}") from None
    finally:
        os.close(ruleset.value)
