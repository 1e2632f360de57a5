"""Files jailpy writes on its caller's behalf, and the directories that hold them (host side).

A sandbox that can write a host directory through a bind, or another local user, must never be
able to make jailpy write somewhere else than the caller asked: so no file jailpy writes is opened
for writing by its final name (a symlink, a FIFO or a hard link planted there would redirect it);
it is written in full as a new file and put in place with rename(2), which replaces a directory
entry and never follows one.  Directories jailpy makes for itself (the registry of named
sandboxes, caches) are checked component by component: real directories (never followed
symlinks), owned by the caller, writable by nobody else.

Kernel interfaces: open(2) O_TMPFILE, O_EXCL, O_NOFOLLOW, O_PATH; linkat(2) through
/proc/self/fd (an O_TMPFILE file gets its name only when complete); rename(2) (atomic, replaces
the entry); path_resolution(7).
"""

from __future__ import annotations

import errno
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class UnsafeDirectory(OSError):
    """A directory jailpy would write into is a symlink, belongs to another user, or can be
    written by others; ``str()`` names it and why."""

    def __str__(self) -> str:
        return str(self.strerror)


def private_dir(base: str, parts: tuple[str, ...] | list[str], create: bool = True, mode: int = 0o700) -> str | None:
    """Return the path ``base/parts...`` after checking (and with ``create``, making) each of
    ``parts``: each must be a real directory (a symlink is refused, not followed: O_NOFOLLOW),
    owned by the caller's effective uid, writable by nobody else; the last one must also be
    unreadable by others (mode 0700).  ``base`` (say ``~/.cache``, ``/run``) may be a symlink, as
    users set their home up, but must be owned by the caller or root and not writable by others.

    Returns None when a part is missing and ``create`` is False.  Raises UnsafeDirectory (an
    OSError) when a check fails, OSError when a directory cannot be made (EACCES, EMFILE...).
    Made directories get ``mode`` (0700; the umask can only take bits away)."""
    uid = os.geteuid()
    fd = os.open(base, _DIR_FLAGS)
    try:
        st = os.fstat(fd)
        if st.st_uid not in (uid, 0) or _others_write(st):
            raise UnsafeDirectory(errno.EPERM, f"{base} belongs to uid {st.st_uid} or others can write it "
                                               f"(mode {stat.S_IMODE(st.st_mode):04o})")
        path = base
        for i, name in enumerate(parts):
            path = os.path.join(path, name)
            if create:
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nfd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                return None
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeDirectory(errno.EPERM, f"{path} is not a private directory of uid {uid}: a symlink or "
                                                       f"not a directory") from None
                raise
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            last = i == len(parts) - 1
            if st.st_uid != uid or (st.st_mode & 0o077 if last else _others_write(st)):
                raise UnsafeDirectory(errno.EPERM, f"{path} is not a private directory of uid {uid} "
                                                   f"(owner {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
        return path
    finally:
        os.close(fd)


def _others_write(st: os.stat_result) -> bool:
    """Someone but the owner may create or rename entries: write for others, or for a group
    other than the caller's own (a user private group, umask 002, is the caller's alone)."""
    return bool(st.st_mode & 0o002 or st.st_mode & 0o020 and st.st_gid != os.getegid())


class AtomicFile:
    """A file that appears at ``path`` complete or not at all, and is never opened by that name.

    Made in two steps so that a caller can check, before a run, that the file can be written, and
    write it after: ``AtomicFile(path)`` opens the directory (once: later changes to symlinks on
    the way do not move it) and creates an unnamed file in it (O_TMPFILE; where the filesystem
    has none, a new file with a random name, O_CREAT|O_EXCL|O_NOFOLLOW); :meth:`commit` writes
    the data, links the file under a random name and renames it over ``path``; :meth:`discard`
    drops it.  Whatever ``path`` was before (a symlink, a FIFO, a hard link to another file, a
    forged file) is replaced, never followed or written through.  The file is created with mode
    ``mode`` less the umask, like open(2).

    ``directory`` is the real path of the directory the file goes to (from /proc/self/fd).
    Raises OSError (IsADirectoryError for a path naming a directory, FileNotFoundError for a
    missing directory, EMFILE...)."""

    def __init__(self, path: str, mode: int = 0o666) -> None:
        head, name = os.path.split(path)
        if not name or name in (".", ".."):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        self.path = path
        self.name = name
        self.fd = -1
        self.tmpname: str | None = None
        self.dirfd = os.open(head or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.directory = os.readlink(f"/proc/self/fd/{self.dirfd}")
            try:
                self.fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode, dir_fd=self.dirfd)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self.tmpname = _tmp_name()
                self.fd = os.open(self.tmpname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  mode, dir_fd=self.dirfd)
        except BaseException:
            os.close(self.dirfd)
            raise

    def commit(self, data: bytes) -> None:
        """Write ``data`` and put the file in place at ``path`` (rename(2)); closes everything.
        Raises OSError (ENOSPC, EISDIR when ``path`` is a directory, EPERM in a sticky
        directory where another user owns ``path``...); then nothing changed at ``path``."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            if self.tmpname is None:
                for _ in range(8):
                    name = _tmp_name()
                    try:
                        os.link(f"/proc/self/fd/{self.fd}", name, dst_dir_fd=self.dirfd, follow_symlinks=True)
                    except FileExistsError:
                        continue
                    self.tmpname = name
                    break
                else:
                    raise FileExistsError(errno.EEXIST, "no free temporary name", self.path)
            os.rename(self.tmpname, self.name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)
            self.tmpname = None
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the file (it never appears at ``path``) and close; safe to call twice."""
        if self.tmpname is not None:
            try:
                os.unlink(self.tmpname, dir_fd=self.dirfd)
            except OSError:
                pass
            self.tmpname = None
        for fd in (self.fd, self.dirfd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dirfd = -1


def _tmp_name() -> str:
    import secrets

    return f".jailpy-{secrets.token_hex(8)}.tmp"


def foreign_symlink(path: str, max_links: int = 40) -> str | None:
    """The first symlink on the way to directory ``path`` (resolved as path_resolution(7) does)
    that belongs neither to the caller's effective uid nor to root, described for a message; None
    when there is none, or when the path cannot be resolved (the open that follows will say why).
    A sandbox makes its symlinks as its own host uid: one on the way means a sandbox, or another
    user, chose where the file goes (the kernel's fs.protected_symlinks rule, for every directory)."""
    uid = os.geteuid()
    todo = [p for p in path.split("/") if p]
    try:
        cur = "/" if path.startswith("/") else os.getcwd()
    except OSError:
        return None
    links = 0
    while todo:
        name = todo.pop(0)
        if name == ".":
            continue
        if name == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, name)
        try:
            st = os.lstat(nxt)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (uid, 0):
                return f"{nxt} (a symlink of uid {st.st_uid})"
            links += 1
            if links > max_links:
                return None
            try:
                target = os.readlink(nxt)
            except OSError:
                return None
            todo = [p for p in target.split("/") if p] + todo
            if target.startswith("/"):
                cur = "/"
            continue
        cur = nxt
    return None


def ancestors(dirfd: int, limit: int = 4096) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of the directory ``dirfd`` and of every directory above it, up to its root
    (``..`` from each; a host bind mount of a directory shares its identity with the original)."""
    seen: set[tuple[int, int]] = set()
    fd = os.dup(dirfd)
    try:
        for _ in range(limit):
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                break
            seen.add(key)
            up = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = up
    finally:
        os.close(fd)
    return seen
