"""The mount plan: what the sandbox's root filesystem is made of (host side).

:func:`prepare` checks every path of a Policy (bind sources, the rootfs, hidden directories,
tmpfs destinations) and turns it into a :class:`MountPlan`, plain data that crosses the fork
(and is pickled to the fork server).  :mod:`jailpy.rootfs` builds the root from it on the
sandbox side; the constants here (masked /proc and /sys paths, /dev's nodes) are what it mounts.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _syscalls as sc
from . import nesting, ucounts
from .errors import PolicyError

if TYPE_CHECKING:
    from .image import Image
    from .policy import Policy

# /proc entries that leak host kernel state or accept dangerous writes (the set of
# docker/runc's maskedPaths and readonlyPaths, plus kmsg, kallsyms and key-users)
PROC_MASKED = (
    "kcore", "kmsg", "kallsyms", "keys", "key-users", "timer_list", "timer_stats", "sched_debug",
    "latency_stats", "sysrq-trigger", "config.gz", "vmallocinfo", "acpi", "asound", "scsi", "driver",
)
PROC_READONLY = ("sys", "irq", "bus", "fs")
SYS_MASKED = ("firmware", "devices/virtual/powercap", "kernel/security", "kernel/debug")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
SPECIAL_TOP = ("proc", "sys", "dev", "tmp")

_NOSUIDDEV = sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV

_TEST_WEAKEN: tuple[str, ...] = ()
"""TEST ONLY, never set by jailpy itself (no flag, key or variable reaches it): destinations of
read-only binds that :func:`prepare` marks ``weakened``, so the sandbox side mounts them writable,
as a bug in the mount code would.  Tests set it (monkeypatch) to show Landlock alone stopping a
write; the Result's protections.rootfs then says so."""


@dataclass
class BindSpec:
    """One bind mount: host path ``src`` (resolved) at ``dst`` inside; ``rw`` or read-only."""

    src: str
    dst: str
    rw: bool
    is_dir: bool
    late: bool = False
    """The destination lies under a mount every run makes afresh (/tmp, /dev, /sys or a ``--tmpfs``):
    a rootfs template (see :func:`build_rootfs`) leaves it to :func:`refresh_rootfs`."""
    weakened: bool = False
    """TEST ONLY: mounted writable although ``rw`` is False (a deliberate mount bug, see
    ``_TEST_WEAKEN``); everything else (Landlock's rules) still follows ``rw``."""


@dataclass
class MountPlan:
    """Everything the child needs to build the rootfs; all host paths already checked.

    ``top`` lists ``(name, kind, arg)`` for the root's entries, kind one of ``overlay``,
    ``rbind``, ``symlink`` (arg: target), ``file``, ``hidden``."""

    lower: str
    top: list[tuple[str, str, str]]
    hidden_nested: list[str]
    binds: list[BindSpec]
    tmpfs: list[tuple[str, int]]
    tmp_size: int
    workdir: str
    description: str
    cwd_note: str
    masked: list[str] = field(default_factory=list)
    cgroup_fs: list[tuple[str, str, str]] = field(default_factory=list)
    """``(name, fstype, options)`` cgroup filesystems mounted read-only at /sys/fs/cgroup/NAME
    (CgroupPlan.fs_mounts); empty without a cgroup of the sandbox's own."""
    pty_max: int = 64
    """``max=`` of the sandbox's devpts instance: pseudo-terminals open at once (policy pty_max)."""
    sysctls: tuple[tuple[str, int], ...] = ()
    """``(name, value)`` written to /proc/sys/user/NAME in the sandbox's fresh proc, before
    /proc/sys goes read-only (:func:`jailpy.ucounts.apply`; from :func:`jailpy.ucounts.plan`)."""
    nesting: bool = False
    """``allow_nesting``: a second proc (and sysfs), fully visible and covered by the sandbox's own,
    so the kernel mounts new ones for a nested sandbox (:func:`jailpy.nesting.mount_covered`)."""
    proc_hint: str = ""
    """Why a new proc may be refused here and the setting to change (jailpy.nesting.hint), for the
    error when it is: set when this mount namespace's /proc is masked."""

    def hidden_under(self, path: str) -> str | None:
        """The hidden directory (``hide``) that ``path`` (absolute, inside the sandbox) lies in,
        unless a bind makes it visible again; None when it is not hidden."""
        hidden = [f"/{name}" for name, kind, _ in self.top if kind == "hidden"] + self.hidden_nested
        if any(_under(path, b.dst) for b in self.binds):
            return None
        return next((h for h in hidden if _under(path, h)), None)


def _mountpoints() -> list[str]:
    points = []
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                p = line.split(b" ", 5)[4]
                points.append(os.fsdecode(p).replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\"))
    except OSError:
        pass
    return points


def _resolve_hide(paths: list[str]) -> list[str]:
    """The host paths to hide: each entry as given and, when a symlink leads elsewhere (Fedora's
    /home -> var/home), its target too.  A path that does not exist is skipped; one that is not
    a directory is refused (PolicyError): only directories can be hidden."""
    out: list[str] = []
    for h in paths:
        h = "/" + "/".join(p for p in os.path.normpath(h).split("/") if p)
        real = os.path.realpath(h)
        if not os.path.lexists(h):
            continue
        if os.path.exists(real) and not os.path.isdir(real):
            raise PolicyError(f"hide: {h} is not a directory; only directories can be hidden")
        for p in (h, real):
            # a top-level entry is replaced by name; a deeper one is mounted over by path, so
            # only a real directory with no symlink on the way
            if p != "/" and p not in out and (p.count("/") == 1 or (os.path.realpath(p) == p and os.path.isdir(p))):
                out.append(p)
    return out


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def prepare(policy: Policy, image: Image | None = None) -> MountPlan:
    """Host side: check paths and build the plan; ``image`` (:func:`jailpy.image.prepare`) is the
    root instead of ``policy.rootfs`` and gives the default work dir.  Raises PolicyError for a missing bind
    source or rootfs, a destination that is not absolute, one mounted twice (two binds, or a
    bind and a ``--tmpfs``), or a directory bound onto a file (or a file onto a directory)
    where the destination exists in the sandbox's root (see :func:`_check_kinds`)."""
    from .policy import parse_bind, parse_size  # the sandbox's side of the fork needs none of the policy code

    if policy.rootfs is not None or image is not None:
        lower = os.path.realpath(image.rootfs if image is not None else policy.rootfs)
        if not os.path.isdir(lower):
            raise PolicyError(f"rootfs: not a directory: {policy.rootfs}")
        hide: list[str] = []
    else:
        lower = "/"
        hide = _resolve_hide(policy.hide)
    points = _mountpoints()
    top: list[tuple[str, str, str]] = []
    hidden_top = {h.strip("/") for h in hide if h.count("/") == 1}
    hidden_nested = [h for h in hide if h.count("/") > 1]
    try:
        entries = sorted(os.scandir(lower), key=lambda e: e.name)
    except OSError as e:
        raise PolicyError(f"rootfs: cannot list {lower}: {e.strerror}") from None
    for e in entries:
        name = e.name
        if name in SPECIAL_TOP:
            continue
        if name in hidden_top:
            top.append((name, "hidden", ""))  # an empty directory, also where the host has a symlink
        elif e.is_symlink():
            top.append((name, "symlink", os.readlink(e.path)))
        elif e.is_dir():
            path = os.path.join(lower, name)
            sub = any(p.startswith(path + "/") for p in points)
            top.append((name, "rbind" if sub or path in points else "overlay", ""))
        elif e.is_file():
            top.append((name, "file", ""))
    binds: list[BindSpec] = []
    tmpfs = [(_normal(spec.partition(":")[0]), spec.partition(":")[2]) for spec in policy.tmpfs]
    taken = {dst: f"--tmpfs {dst}" for dst, _ in tmpfs}
    for key, flag in (("bind", "--bind"), ("ro_bind", "--ro-bind")):
        for spec in getattr(policy, key):
            src, dst, rw = parse_bind(spec, key)
            real = os.path.realpath(src)
            if not os.path.exists(real):
                raise PolicyError(f"{flag[2:]}: source does not exist: {src}")
            dst = _normal(dst or os.path.abspath(src))
            if dst == "/" or dst.split("/")[1] in ("proc", "dev"):
                raise PolicyError(f"{flag[2:]}: cannot bind over {dst}")
            if real == "/" or real.split("/")[1] in ("proc", "sys"):
                raise PolicyError(f"{flag[2:]}: binding the host's {real} would expose host "
                                  f"processes or kernel state; not allowed")
            if dst in taken:  # the later mount would hide the earlier one entirely
                raise PolicyError(f"{flag[2:]}: {dst} is already the destination of {taken[dst]}; mount "
                                  f"one thing at each destination")
            taken[dst] = f"{flag} {spec}"
            binds.append(BindSpec(real, dst, rw, os.path.isdir(real)))
    _check_kinds(lower, binds, [dst for dst, _ in tmpfs], hide)
    workdir = "/"
    cwd_note = "not bound (--no-cwd)"
    if policy.cwd:
        try:
            cwd = os.getcwd()
        except OSError:
            raise PolicyError("the current directory no longer exists; cd somewhere or pass --no-cwd") from None
        workdir = cwd
        cwd = os.path.realpath(cwd)
        # binding / or /tmp, a hidden directory or one that holds one, would undo that isolation
        covered = [f"/{d}" for d in SPECIAL_TOP] + hide
        if cwd == "/" or any(c == cwd or c.startswith(cwd.rstrip("/") + "/") for c in covered):
            cwd_note = f"not bound: {cwd} is or holds a path the sandbox replaces (/, /tmp, /dev, /proc, /sys, hidden)"
        elif any(b.dst == cwd for b in binds):
            cwd_note = f"{cwd} (by an explicit bind)"
        else:
            binds.insert(0, BindSpec(cwd, cwd, False, True))
            cwd_note = f"{cwd} bound read-only"
    if policy.workdir is not None:
        workdir = os.path.normpath(policy.workdir)
    elif image is not None:  # the image's WorkingDir, not the caller's directory
        workdir = image.workdir or "/"
    tmpfs = [(dst, parse_size(size) if size else 64 << 20) for dst, size in tmpfs]
    per_run = ["/tmp", "/dev", "/sys"] + [dst for dst, _ in tmpfs]
    for b in binds:
        b.late = any(_under(b.dst, p) for p in per_run)
    desc = ("read-only overlay of the host /" if policy.rootfs is None and image is None else f"read-only overlay of {lower}") + (
        f" (image {image.ref}, {image.chain_id})" if image is not None else "") + (
        f", hidden: {' '.join(hide)}" if hide else "")
    for b in binds:
        b.weakened = not b.rw and b.dst in _TEST_WEAKEN
    if any(b.weakened for b in binds):
        desc += f" (TEST ONLY: read-only binds mounted writable: {' '.join(b.dst for b in binds if b.weakened)})"
    proc_hint = ""
    if any(p.startswith("/proc/") and "binfmt_misc" not in p for p in points):
        import errno

        proc_hint = nesting.hint(errno.EPERM, "proc")
    return MountPlan(lower, top, hidden_nested, binds, tmpfs, parse_size(policy.tmp_size), workdir, desc, cwd_note,
                     [f"/proc/{m}" for m in PROC_MASKED], pty_max=policy.pty_max, sysctls=ucounts.plan(policy),
                     nesting=policy.allow_nesting, proc_hint=proc_hint)


def _normal(path: str) -> str:
    """``path`` made absolute-looking and normalized: no ``.``, ``..`` (lexically), or repeated ``/``."""
    return "/" + "/".join(p for p in os.path.normpath(path).split("/") if p)


def _kind_in(base: str, rel: str) -> str | None:
    """"dir", "file" (anything else) or None (missing, or cannot tell) for ``rel`` resolved below
    host directory ``base`` as the child will resolve it: symlinks stay inside (openat2(2)
    RESOLVE_IN_ROOT)."""
    try:
        root = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = sc.openat2(root, rel.lstrip("/") or ".", os.O_PATH | os.O_CLOEXEC,
                        sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
    except OSError:
        return None
    finally:
        os.close(root)
    try:
        return "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
    finally:
        os.close(fd)


def _check_kinds(lower: str, binds: list[BindSpec], tmpfs: list[str], hide: list[str]) -> None:
    """Refuse (PolicyError) a bind of a directory onto what is a file in the sandbox's root, or of
    a file onto a directory: the kernel refuses both (mount(2) ENOTDIR) only once the sandbox is
    being built.  The destination is looked up where it will be: in an earlier bind's source, in
    the rootfs (``lower``), or nowhere under /tmp, /sys, a ``--tmpfs`` or a hidden directory
    (empty, or not the host's: those mount points are made as needed)."""
    empty = ["/tmp", "/sys"] + tmpfs + hide
    for i, b in enumerate(binds):
        under = [(p, None) for p in empty if _under(b.dst, p)]
        under += [(e.dst, e.src) for e in binds[:i] if e.is_dir and _under(b.dst, e.dst) and e.dst != b.dst]
        if under:
            top, src = max(under, key=lambda u: len(u[0]))
            if src is None:
                kind = "dir" if b.dst == top else None
            else:
                kind = _kind_in(src, b.dst[len(top):])
        elif b.dst.split("/")[1] in SPECIAL_TOP:  # the sandbox's own /proc, /sys, /dev and /tmp
            kind = None
        else:
            kind = _kind_in(lower, b.dst)
        if kind is not None and (kind == "dir") != b.is_dir:
            what, there = ("directory", "a file") if b.is_dir else ("file", "a directory")
            raise PolicyError(f"bind: cannot bind the {what} {b.src} onto {b.dst}, "
                              f"which is {there} in the sandbox: give a destination of the same kind, or one "
                              f"that does not exist")


def _host_id(mapping: tuple[tuple[int, int, int], ...], inside: int) -> int | None:
    for first, outside, count in mapping:
        if first <= inside < first + count:
            return outside + inside - first
    return None


def unwritable_binds(plan: MountPlan, ids) -> list[str]:
    """One warning for each writable bind (``--bind``) the program will not be able to write:
    the source's permission bits (stat(2), inode(7)) do not let the program's host uid and gid
    (from ``ids``, a :class:`jailpy.userns.IdPlan`) write it, or its filesystem is mounted
    read-only (statvfs(3) ST_RDONLY).  The program has no capabilities, so only the bits count;
    a source with an ACL (``system.posix_acl_access``, acl(5)) is not judged.  Each warning
    names the fix."""
    uid, gid = _host_id(ids.uid_map, ids.uid), _host_id(ids.gid_map, ids.gid)
    out = []
    for b in plan.binds:
        if not b.rw or uid is None:
            continue
        try:
            st = os.stat(b.src)
            if os.statvfs(b.src).f_flag & os.ST_RDONLY:
                out.append(f"--bind {b.src}: its filesystem is mounted read-only on the host, so the program "
                           f"cannot write there; bind it with --ro-bind, or remount it read-write")
                continue
            try:
                os.getxattr(b.src, "system.posix_acl_access", follow_symlinks=False)
                continue  # an ACL decides: not judged here
            except OSError:
                pass
        except OSError:
            continue
        need = 0o3 if stat.S_ISDIR(st.st_mode) else 0o2  # write, and search for a directory
        bits = (st.st_mode >> 6 if st.st_uid == uid else st.st_mode >> 3 if st.st_gid == gid else st.st_mode) & 0o7
        if bits & need == need:
            continue
        what = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        fix = (f"chmod o+w{'x' if need == 0o3 else ''} {b.src}" if os.getuid() == 0 else
               f"--id-map single (the program then writes as you), or chmod o+w {b.src}")
        out.append(f"--bind {b.src}: the program runs as host uid {uid} (gid {gid}), which may not write this "
                   f"{what} (owner uid {st.st_uid}, gid {st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o}): its writes "
                   f"there will fail with EACCES; {fix}")
    return out
