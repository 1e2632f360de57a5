"""Rootfs assembly on the sandbox side (mount_namespaces(7), mount(2), pivot_root(2),
open_tree(2), move_mount(2), mount_setattr(2), openat2(2)), from a :class:`jailpy.mounts.MountPlan`.

Inside new user, mount and pid namespaces: :func:`open_sources` (with the caller's credentials),
:func:`build_rootfs`, then :func:`enter_rootfs` and :func:`enter_workdir`; in a copy of a rootfs
template's mount namespace, :func:`refresh_rootfs` instead.

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

from . import _syscalls as sc
from . import nesting, ucounts
from .mounts import (DEV_NODES, PROC_MASKED, PROC_READONLY, SYS_MASKED, BindSpec, MountPlan, _NOSUIDDEV,
                     _under)

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
            attrs = _NOSUIDDEV | (0 if b.rw or b.weakened else sc.MOUNT_ATTR_RDONLY)
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
    attrs = _NOSUIDDEV | (0 if b.rw or b.weakened else sc.MOUNT_ATTR_RDONLY)
    try:
        _step(f"bind {b.src} at {b.dst}", lambda: _attach(fd if tree else _clone(fd, "", attrs), root, b.dst, b.is_dir))
    finally:
        if not tree:
            os.close(fd)


def _mount_proc(plan: MountPlan, target: str) -> None:
    """A new proc at ``target`` (of this pid namespace).  Raises OSError; when the kernel refuses
    it (EPERM: this mount namespace's /proc is masked, mount_too_revealing), naming the setting of
    the enclosing container or sandbox to change (``plan.proc_hint``)."""
    try:
        sc.mount("proc", target, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"mount /proc: {e.strerror}{plan.proc_hint if e.errno == 1 else ''}") from None


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
