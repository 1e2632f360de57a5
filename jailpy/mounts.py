"""Rootfs assembly (mount_namespaces(7), mount(2), pivot_root(2), open_tree(2), move_mount(2),
mount_setattr(2), openat2(2)).

Host side: :func:`prepare` checks every path and turns a Policy into a :class:`MountPlan`.
Child side, inside new user, mount and pid namespaces: :func:`build_rootfs` then
:func:`enter_rootfs`.

How the root is built (the order bubblewrap uses):

1. every mount is made private, so nothing propagates back to the host;
2. a tmpfs is mounted over ``/tmp`` (in our namespace only) and pivoted to, so the host
   root sits at ``/oldroot`` and the new root is assembled at ``/newroot``;
3. each top-level directory of the host root (or ``--rootfs``) becomes a read-only overlay
   (``lowerdir=/oldroot/DIR:/empty``: overlayfs wants two lower layers when it has no
   upper one, and refuses in a user namespace a lower that carries locked submounts, such as
   ``/``); a directory with submounts is a recursive read-only bind instead; symlinks are
   copied; hidden directories are left empty;
4. /dev (null, zero, full, random, urandom, tty, a private devpts capped at ``pty_max``
   terminals, shm, mqueue), a fresh /proc with masked and read-only paths (the sandbox's
   ``user.max_*`` quotas written first: :mod:`jailpy.ucounts`), a read-only sysfs, /tmp, user
   tmpfs and binds;
   every destination is resolved with ``openat2(RESOLVE_IN_ROOT)`` below ``/newroot``, so
   a symlink can never lead a mount out to the host (CVE-2021-30465 class);
5. the scaffolding tmpfs mounts go read-only, ``pivot_root(".", ".")`` puts the new root in
   place and the old one is detached with ``umount2(MNT_DETACH)``.
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


def prepare(policy: Policy) -> MountPlan:
    """Host side: check paths and build the plan.  Raises PolicyError for a missing bind
    source or rootfs, a destination that is not absolute, one mounted twice (two binds, or a
    bind and a ``--tmpfs``), or a directory bound onto a file (or a file onto a directory)
    where the destination exists in the sandbox's root (see :func:`_check_kinds`)."""
    from .policy import parse_bind, parse_size  # the sandbox's side of the fork needs none of the policy code

    if policy.rootfs is not None:
        lower = os.path.realpath(policy.rootfs)
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
    tmpfs = [(dst, parse_size(size) if size else 64 << 20) for dst, size in tmpfs]
    per_run = ["/tmp", "/dev", "/sys"] + [dst for dst, _ in tmpfs]
    for b in binds:
        b.late = any(_under(b.dst, p) for p in per_run)
    desc = ("read-only overlay of the host /" if policy.rootfs is None else f"read-only overlay of {lower}") + (
        f", hidden: {' '.join(hide)}" if hide else "")
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


# ---------------------------------------------------------------- child side ----

def _esc(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _mkdirs_in_root(rootfd: int, path: str, leaf_is_dir: bool = True) -> int:
    """Create ``path`` below ``rootfd`` and return an O_PATH fd of it.  Every prefix is resolved
    from ``rootfd`` with RESOLVE_IN_ROOT, so ``..`` and absolute symlinks stay inside the new
    root (they resolve as they will for the program) and never reach the host.  Raises OSError."""
    parts = [p for p in path.split("/") if p]
    how = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
    fd = os.dup(rootfd)
    for i, name in enumerate(parts):
        os.close(fd)
        partial = "/".join(parts[: i + 1])
        try:
            fd = sc.openat2(rootfd, partial, os.O_PATH | os.O_CLOEXEC, how)
            continue
        except FileNotFoundError:
            pass
        parent = sc.openat2(rootfd, "/".join(parts[:i]) or ".", os.O_PATH | os.O_CLOEXEC, how)
        try:
            if i == len(parts) - 1 and not leaf_is_dir:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent))
            else:
                os.mkdir(name, 0o755, dir_fd=parent)
        finally:
            os.close(parent)
        fd = sc.openat2(rootfd, partial, os.O_PATH | os.O_CLOEXEC, how)
    return fd


def _attach(tree_fd: int, rootfd: int, dst: str, is_dir: bool) -> None:
    """Attach a detached mount ``tree_fd`` at ``dst`` resolved inside ``rootfd``."""
    try:
        target = _mkdirs_in_root(rootfd, dst, is_dir)
    except OSError as e:
        hint = " (its parent comes read-only from the host; pick a destination under /tmp or one that exists)" \
            if e.errno == 30 else ""
        raise OSError(e.errno, f"cannot create mount point {dst}: {e.strerror}{hint}") from None
    try:
        sc.move_mount(tree_fd, "", target, "", sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(target)
        os.close(tree_fd)


def _clone(dirfd: int, path: str, attrs: int, recursive: bool = True) -> int:
    flags = sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | (sc.AT_RECURSIVE if recursive else 0)
    if not path:
        flags |= sc.AT_EMPTY_PATH
    fd = sc.open_tree(dirfd, path, flags)
    if attrs:
        sc.mount_setattr(fd, "", sc.AT_EMPTY_PATH | (sc.AT_RECURSIVE if recursive else 0), attrs)
    return fd


def _bind(src_root: int, src: str, rootfd: int, dst: str, attrs: int, is_dir: bool) -> None:
    srcfd = sc.openat2(src_root, src, os.O_PATH | os.O_CLOEXEC, sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
    try:
        tree = _clone(srcfd, "", attrs)
    finally:
        os.close(srcfd)
    _attach(tree, rootfd, dst, is_dir)


def _tmpfs(target: str, size: int, mode: str, flags: int = sc.MS_NOSUID | sc.MS_NODEV) -> None:
    """A tmpfs capped at ``size`` bytes and at one inode per 16 KiB of it (at least 1024): an
    inode costs kernel memory the size cap does not count (tmpfs(5) nr_inodes)."""
    sc.mount("tmpfs", target, "tmpfs", flags, f"size={size},nr_inodes={max(1024, size // 16384)},mode={mode}")


def _cgroup_fs(base: str, mounts: list[tuple[str, str, str]]) -> None:
    """Read-only cgroup mounts at ``base``/sys/fs/cgroup (cgroup v1: a small tmpfs holding one
    directory per hierarchy).  Run inside the sandbox's cgroup namespace, so each shows only the
    sandbox's own cgroup (cgroup_namespaces(7))."""
    base += "/sys/fs/cgroup"
    ro = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    if not os.path.isdir(base):
        return  # no such directory in this sysfs: nothing to mount on
    if len(mounts) == 1 and mounts[0][0] == "":
        sc.mount("cgroup2", base, "cgroup2", ro)
        return
    _tmpfs(base, 65536, "0755", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    for name, fstype, opts in mounts:
        os.mkdir(f"{base}/{name}", 0o755)
        sc.mount("cgroup", f"{base}/{name}", fstype, ro, opts)
    sc.mount(None, base, None, sc.MS_REMOUNT | sc.MS_BIND | ro)


def open_sources(plan: MountPlan, which: str = "all") -> list[int]:
    """Child side, before the ids change: open the bind sources (O_PATH) with the caller's
    own credentials, so a source only the caller may traverse (a 0700 home, root's pytest
    dir) can still be bound after the switch to unprivileged ids.  ``which``: ``"all"``, or
    ``"early"``/``"late"`` (see ``BindSpec.late``).  Returns fds in ``plan.binds`` order.
    Raises OSError naming the source."""
    fds = []
    for b in plan.binds:
        if which != "all" and b.late != (which == "late"):
            continue
        try:
            # b.src was resolved (realpath) when the plan was made: a symlink in it now means the
            # path was changed since, so refuse rather than follow it (ELOOP)
            fds.append(sc.openat2(-100, b.src, os.O_PATH | os.O_CLOEXEC, sc.RESOLVE_NO_SYMLINKS))
        except OSError as e:
            hint = ""
            if e.errno == 13 and os.getuid() == 0:
                hint = (" (as root the sandbox's identity is a host uid of its own, which cannot traverse a directory "
                        "private to another user; run from elsewhere or pass --no-cwd)")
            raise OSError(e.errno, f"open bind source {b.src}: {e.strerror}{hint}") from None
    return fds


def _step(what: str, fn, *args) -> None:
    try:
        fn(*args)
    except OSError as e:
        raise OSError(e.errno, f"{what}: {e.strerror}") from None


def build_rootfs(plan: MountPlan, source_fds: list[int], template: bool = False) -> None:
    """Child side: assemble the new root at /newroot (see the module docstring).  The host
    root stays reachable at /oldroot until :func:`enter_rootfs`.  ``source_fds`` come from
    :func:`open_sources` (``"all"``, or ``"early"`` for a template).

    ``template``: build only what every run of a Sandbox can share, read-only: the overlays,
    the hidden directories, /dev's nodes and the binds that are not ``late``.  /proc and /sys
    get a proc and a sysfs of the builder's own pid and network namespaces, which each run
    covers with its own (:func:`refresh_rootfs`): in a user namespace the kernel mounts a new
    proc or sysfs only where one is already fully visible in the mount namespace (mount(2)
    EPERM; fs/namespace.c mount_too_revealing).  Raises OSError naming the mount that failed."""
    _step("make mounts private", sc.mount, None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    _step("tmpfs for the new root", _tmpfs, "/tmp", 1 << 20, "0755")
    for d in ("/tmp/newroot", "/tmp/oldroot", "/tmp/empty"):
        os.mkdir(d, 0o755)
    _step("pivot_root to the scaffolding", sc.pivot_root, "/tmp", "/tmp/oldroot")
    os.chdir("/")
    _step("tmpfs at /newroot", _tmpfs, "/newroot", 1 << 20, "0755")
    old = os.open("/oldroot", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    lower_rel = plan.lower
    lower = os.open(lower_rel.lstrip("/"), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=old) \
        if lower_rel != "/" else os.dup(old)
    root = os.open("/newroot", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    lower_path = "/oldroot" + (plan.lower if plan.lower != "/" else "")
    ro = sc.MOUNT_ATTR_RDONLY | _NOSUIDDEV
    for name, kind, arg in plan.top:
        dst = f"/newroot/{name}"
        if kind == "symlink":
            os.symlink(arg, dst)
        elif kind == "hidden":
            os.mkdir(dst, 0o755)
        elif kind == "overlay":
            os.mkdir(dst, 0o755)
            _step(f"overlay at /{name}", sc.mount, "overlay", dst, "overlay", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV,
                  f"lowerdir={_esc(lower_path + '/' + name)}:/empty")
        elif kind in ("rbind", "file"):
            _step(f"read-only bind of /{name}", _bind, lower, name, root, name, ro, kind == "rbind")
    for h in plan.hidden_nested:
        try:
            fd = _mkdirs_in_root(root, h)
        except OSError:
            continue  # not present in this root: nothing to hide
        os.close(fd)
        _step(f"hide {h}", _tmpfs, "/newroot" + h, 4096, "0755", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    _step("a machine id of its own", _machine_id, root)
    _build_dev()
    for d, mode in (("proc", 0o555), ("sys", 0o555), ("tmp", 0o1777)):
        os.mkdir(f"/newroot/{d}", mode)
    if template:
        if plan.nesting:
            nesting.mount_covered("/newroot")
        _mount_proc(plan, "/newroot/proc")
        _sysfs("/newroot", old)
        for dst, _ in plan.tmpfs:  # mount points that no per-run mount will hold
            if not any(_under(dst, p) for p in ("/tmp", "/dev", "/sys")):
                _step(f"mount point {dst}", lambda dst=dst: os.close(_mkdirs_in_root(root, dst)))
        binds = [b for b in plan.binds if not b.late]
    else:
        binds = []
        _per_run("/newroot", root, plan, list(zip(plan.binds, source_fds)), old)
    for b, fd in zip(binds, source_fds):
        _bind_fd(root, b, fd)
    # the scaffolding goes read-only; only what was mounted writable stays so
    for path in ["/newroot/dev", "/newroot"] + ["/newroot" + h for h in plan.hidden_nested if os.path.isdir("/newroot" + h)]:
        _step(f"make {path[8:] or '/'} read-only", sc.mount_setattr, -100, path, 0, sc.MOUNT_ATTR_RDONLY)
    for fd in (old, lower, root):
        os.close(fd)


def clone_late_sources(plan: MountPlan, fds: list[int]) -> list[int]:
    """Child side, in a mount namespace of the sandbox's user namespace that still shows the
    host's files: turn the ``late`` binds' source fds (:func:`open_sources` ``"late"``, closed
    here) into detached bind mounts (open_tree(2) OPEN_TREE_CLONE) with their final
    attributes, for :func:`refresh_rootfs` to attach in the run's own mount namespace: the
    kernel clones only mounts of the caller's mount namespace.  Raises OSError."""
    trees = []
    for b, fd in zip([b for b in plan.binds if b.late], fds):
        try:
            attrs = _NOSUIDDEV | (0 if b.rw else sc.MOUNT_ATTR_RDONLY)
            _step(f"bind {b.src} at {b.dst}", lambda: trees.append(_clone(fd, "", attrs)))
        finally:
            os.close(fd)
    return trees


def refresh_rootfs(plan: MountPlan, late_trees: list[int]) -> None:
    """Child side, in a copy of a template's mount namespace (root: the template's rootfs; see
    :func:`build_rootfs`), as PID 1 of the run's pid namespace: mount what each run gets afresh
    (devpts, /dev/shm, mqueue, proc with its masks, sysfs, cgroup filesystems, /tmp, the
    ``--tmpfs`` mounts and the ``late`` binds, from :func:`clone_late_sources`).  Raises
    OSError naming the mount that failed."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _per_run("", root, plan, list(zip([b for b in plan.binds if b.late], late_trees)), None, trees=True)
    finally:
        os.close(root)


def _bind_fd(root: int, b: BindSpec, fd: int, tree: bool = False) -> None:
    """Bind ``fd`` (a source opened by :func:`open_sources`, or with ``tree`` a detached mount from
    :func:`clone_late_sources`) at ``b.dst`` below ``root``; closes ``fd``."""
    attrs = _NOSUIDDEV | (0 if b.rw else sc.MOUNT_ATTR_RDONLY)
    try:
        _step(f"bind {b.src} at {b.dst}", lambda: _attach(fd if tree else _clone(fd, "", attrs), root, b.dst, b.is_dir))
    finally:
        if not tree:
            os.close(fd)


def _per_run(base: str, root: int, plan: MountPlan, binds: list[tuple[BindSpec, int]], old: int | None,
             trees: bool = False) -> None:
    """The mounts each run makes afresh, below ``base`` ("/newroot" while building a whole root,
    "" inside a template's copy), whose O_PATH fd is ``root``."""
    noexec = sc.MS_NOSUID | sc.MS_NOEXEC
    # max=: every devpts instance but the host's shares kernel.pty.max (Documentation/filesystems/
    # devpts.rst; fs/devpts/inode.c devpts_new_index): the sandbox may take only its own share
    _step("devpts at /dev/pts", sc.mount, "devpts", f"{base}/dev/pts", "devpts", noexec,
          f"newinstance,ptmxmode=0666,mode=0620,max={plan.pty_max}")
    _step("tmpfs at /dev/shm", _tmpfs, f"{base}/dev/shm", plan.tmp_size, "1777")
    try:
        sc.mount("mqueue", f"{base}/dev/mqueue", "mqueue", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    except OSError:
        pass  # no POSIX mqueue support compiled in: nothing to share either
    proc = f"{base}/proc"
    if plan.nesting and base:  # a template's copy has them from the template
        nesting.mount_covered(base)
    _mount_proc(plan, proc)
    ucounts.apply(proc, plan.sysctls)  # while /proc/sys is writable and PID 1 holds its capabilities
    for m in PROC_MASKED:
        _mask(base, f"{proc}/{m}")
    ro = sc.MOUNT_ATTR_RDONLY | _NOSUIDDEV
    for m in PROC_READONLY:  # the kernel's own fresh proc: mounted by path
        path = f"{proc}/{m}"
        if os.path.exists(path):
            _step(f"read-only /proc/{m}", sc.mount, path, path, None, sc.MS_BIND | sc.MS_REC)
            _step(f"read-only /proc/{m}", sc.mount_setattr, -100, path, sc.AT_RECURSIVE, ro)
    _sysfs(base, old)
    if plan.cgroup_fs:
        _step("cgroup filesystems at /sys/fs/cgroup", _cgroup_fs, base, plan.cgroup_fs)
    for m in SYS_MASKED:
        if os.path.isdir(f"{base}/sys/{m}"):
            _tmpfs(f"{base}/sys/{m}", 4096, "0555", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    _step("tmpfs at /tmp", _tmpfs, f"{base}/tmp", plan.tmp_size, "1777")
    for dst, size in plan.tmpfs:
        def mk(dst=dst, size=size) -> None:
            fd = _mkdirs_in_root(root, dst)
            try:
                _tmpfs(f"{proc}/self/fd/{fd}", size, "1777")
            finally:
                os.close(fd)
        _step(f"tmpfs at {dst}", mk)
    for b, fd in binds:
        _bind_fd(root, b, fd, trees)


def _mount_proc(plan: MountPlan, target: str) -> None:
    """A new proc at ``target`` (of this pid namespace).  Raises OSError; when the kernel refuses
    it (EPERM: this mount namespace's /proc is masked, mount_too_revealing), naming the setting of
    the enclosing container or sandbox to change (``plan.proc_hint``)."""
    try:
        sc.mount("proc", target, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"mount /proc: {e.strerror}{plan.proc_hint if e.errno == 1 else ''}") from None


def _sysfs(base: str, old: int | None) -> None:
    """A read-only sysfs of the sandbox's network namespace at ``base``/sys.  Where the kernel
    refuses one, a read-only bind of the host's /sys (``old``: the host root) or, in a template's
    copy, the template's."""
    try:
        sc.mount("sysfs", f"{base}/sys", "sysfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    except OSError:
        if old is not None:
            ro = sc.MOUNT_ATTR_RDONLY | _NOSUIDDEV | sc.MOUNT_ATTR_NOEXEC
            root = os.open(f"{base}/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _step("read-only bind of /sys", _bind, old, "sys", root, "sys", ro, True)
            finally:
                os.close(root)


MACHINE_ID_FILES = ("etc/machine-id", "var/lib/dbus/machine-id")


def _machine_id(root: int) -> None:
    """Bind a random machine id, read-only, over each of MACHINE_ID_FILES the new root has: the
    host's identifies the machine for good (machine-id(5)).  The file lives on the scaffolding
    tmpfs; policy binds come later and win."""
    fd = os.open("/machine-id", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        os.write(fd, os.urandom(16).hex().encode() + b"\n")
    finally:
        os.close(fd)
    scaffold = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for rel in MACHINE_ID_FILES:
            try:
                fd = sc.openat2(root, rel, os.O_PATH | os.O_CLOEXEC, sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
            finally:
                os.close(fd)
            _bind(scaffold, "machine-id", root, rel, sc.MOUNT_ATTR_RDONLY | _NOSUIDDEV, False)
    finally:
        os.close(scaffold)


def _build_dev() -> None:
    """/dev's tmpfs with the nodes, symlinks and the mount points of what each run adds."""
    os.mkdir("/newroot/dev", 0o755)
    _step("tmpfs at /dev", _tmpfs, "/newroot/dev", 1 << 20, "0755", sc.MS_NOSUID | sc.MS_NOEXEC)
    for node in DEV_NODES:
        try:
            st = os.stat(f"/oldroot/dev/{node}")
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):  # on our own new tmpfs: mounted by path, nothing to resolve
            os.close(os.open(f"/newroot/dev/{node}", os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC, 0o666))
            _step(f"/dev/{node}", sc.mount, f"/oldroot/dev/{node}", f"/newroot/dev/{node}", None, sc.MS_BIND)
    os.mkdir("/newroot/dev/pts", 0o755)
    os.symlink("pts/ptmx", "/newroot/dev/ptmx")
    os.mkdir("/newroot/dev/shm", 0o1777)
    os.mkdir("/newroot/dev/mqueue", 0o1777)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):
        os.symlink(target, f"/newroot/dev/{name}")


def _mask(base: str, path: str) -> None:
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        _tmpfs(path, 4096, "0555", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    else:
        sc.mount(f"{base}/dev/null", path, None, sc.MS_BIND)  # reads give EOF, writes vanish


def enter_rootfs(plan: MountPlan) -> None:
    """Child side: pivot_root into /newroot and detach the old root."""
    os.chdir("/newroot")
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")


def enter_workdir(plan: MountPlan) -> None:
    """Child side, inside the rootfs: chdir to the work dir (``/`` when it does not exist inside)."""
    try:
        os.chdir(plan.workdir)
    except OSError:
        os.chdir("/")
