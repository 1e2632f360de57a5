"""Unpacking one image layer, a hostile tar (host side; tar(5), OCI image-spec layer.md).

:func:`unpack` reads a layer's (already decompressed) tar stream member by member and writes it
below a directory fd, never anywhere else.  Every member is checked here; tarfile's own
``extractall`` filters are not relied on:

* its name is normalised (``./`` and empty components dropped); an absolute name, a ``..``
  component, a name longer than :data:`MAX_PATH` bytes or deeper than :data:`MAX_DEPTH`
  directories is refused;
* every file is created relative to its parent's fd (``openat(2)`` with ``O_NOFOLLOW``,
  ``O_EXCL``): a parent component that is a symlink in the layer (``ELOOP``) or not a directory
  is refused, so a duplicate entry (last wins) never writes through a symlink;
* a relative symlink whose target climbs above the layer's root is refused; an absolute one is
  kept as it is (it is resolved inside the sandbox's root, where the program sees it; jailpy
  never follows a link in the store);
* a hard link must name a regular file this layer already holds, reached without symlinks;
* device nodes and fifos are dropped, setuid, setgid and sticky bits of files cleared, owners
  not kept (every file is the caller's), extended attributes (file capabilities) not written;
* sparse members and unknown member types are refused; the file bytes of a layer are capped at
  :data:`MAX_BYTES`, its members at :data:`MAX_MEMBERS`.

Whiteouts (``.wh.NAME``) and opaque markers (``.wh..wh..opq``) are kept as empty files of those
names: :mod:`jailpy.image.flatten` applies them when it stacks the layers.

Refusals raise :class:`LayerError` (one line); the caller unpacks into a temporary directory and
removes it then, so a refused or half-unpacked layer is never used.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zlib
from dataclasses import dataclass, field

MAX_MEMBERS = 1_000_000
"""Members (files, directories, links) one layer may have."""
MAX_BYTES = 16 << 30
"""Bytes of file content one layer may hold (16 GiB), and bytes its decompressed tar may have
beyond that for headers (the same again): a gzip bomb stops there."""
MAX_PATH = 4095
"""Bytes of a member's name, and of a symlink's target (PATH_MAX - 1)."""
MAX_DEPTH = 128
"""Directories one member's name may have above it."""
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_CHUNK = 1 << 20
_BAD_DATA = (tarfile.TarError, EOFError, ValueError, zlib.error)


class LayerError(Exception):
    """The layer is refused: ``str()`` is one line saying which member and why."""


@dataclass
class Stats:
    """What :func:`unpack` wrote and what it dropped."""

    members: int = 0
    files: int = 0
    bytes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Neutralised members by kind: ``device``, ``fifo``, ``setuid`` (bits cleared), ``xattr``."""

    def drop(self, kind: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1


def normalise(name: str) -> list[str]:
    """A member name as path components: ``./`` and empty components dropped.  Raises
    LayerError for an absolute name, a ``..`` component, a NUL byte, or one too long or deep."""
    if "\0" in name:
        raise LayerError("a NUL byte in the name: refused")
    if len(os.fsencode(name)) > MAX_PATH:
        raise LayerError(f"name longer than {MAX_PATH} bytes: refused")
    if name.startswith("/"):
        raise LayerError("absolute path: refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError("a '..' component: refused")
    if len(parts) > MAX_DEPTH + 1:
        raise LayerError(f"more than {MAX_DEPTH} directories deep: refused")
    if any(len(os.fsencode(p)) > 255 for p in parts):
        raise LayerError("a component longer than 255 bytes: refused")
    return parts


def link_escapes(parts: list[str], target: str) -> bool:
    """True when the symlink ``target`` of the member at ``parts`` is relative and, resolved
    lexically from the link's directory, climbs above the layer's root."""
    if target.startswith("/"):
        return False
    depth = len(parts) - 1
    for p in target.split("/"):
        if p == "..":
            depth -= 1
            if depth < 0:
                return True
        elif p not in ("", "."):
            depth += 1
    return False


class _Tree:
    """Directories below ``root`` (an fd), opened component by component without following any
    symlink; missing directories are made (mode 0755: a tar may leave its parents out)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.cache: dict[tuple[str, ...], int] = {(): root}
        self.modes: dict[tuple[str, ...], int] = {}

    def dir(self, parts: tuple[str, ...], create: bool = True) -> int:
        fd = self.cache.get(parts)
        if fd is not None:
            return fd
        parent = self.dir(parts[:-1], create)
        name = parts[-1]
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise LayerError(f"{'/'.join(parts)}: no such directory") from None
            os.mkdir(name, 0o700, dir_fd=parent)
            self.modes.setdefault(parts, 0o755)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as e:  # ELOOP: a symlink; ENOTDIR: a file
            raise LayerError(f"{'/'.join(parts)}: not a directory in this layer (a symlink or a file): a path "
                             f"through it is refused ({e.strerror})") from None
        self.cache[parts] = fd
        return fd

    def clear(self, parts: tuple[str, ...]) -> None:
        """Forget the cached fds at and below ``parts`` (it is being replaced)."""
        for k in [k for k in self.cache if k[: len(parts)] == parts and k]:
            os.close(self.cache.pop(k))

    def remove(self, parent: int, parts: tuple[str, ...]) -> None:
        """Remove what the layer has at ``parts`` (an earlier duplicate), if anything."""
        name = parts[-1]
        try:
            st = os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            import shutil

            self.clear(parts)
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    def close(self) -> None:
        """Give directories their final modes (deepest first), then close every fd but the root."""
        for parts in sorted(self.modes, key=len, reverse=True):
            try:
                fd = self.dir(parts, create=False)
                os.fchmod(fd, self.modes[parts])
            except (LayerError, OSError):
                pass  # replaced by a file later on
        for k, fd in self.cache.items():
            if k:
                os.close(fd)
        self.cache = {(): self.root}


def _write(tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int, name: str, stats: Stats) -> None:
    src = tar.extractfile(m)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
    try:
        left = m.size
        while left > 0:
            chunk = src.read(min(_CHUNK, left)) if src is not None else b""
            if not chunk:
                raise LayerError("the tar ends inside the file: refused")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            left -= len(chunk)
        mode = stat.S_IMODE(m.mode)
        if mode & 0o7000:
            stats.drop("setuid")
        os.fchmod(fd, mode & 0o777)
    finally:
        os.close(fd)


def unpack(fileobj, root: int, stats: Stats | None = None) -> Stats:
    """Unpack the tar read from ``fileobj`` (a binary stream, already decompressed) below the
    directory fd ``root``, which should be empty.  Returns the :class:`Stats`.  Raises LayerError
    (one line, naming the member) for anything refused (see the module docstring) and for a tar
    that cannot be read; what was written below ``root`` is then left for the caller to remove."""
    stats = stats or Stats()
    tree = _Tree(root)
    budget = MAX_BYTES
    try:
        try:
            tar = tarfile.open(fileobj=fileobj, mode="r|", errorlevel=2)
        except _BAD_DATA + (OSError,) as e:
            raise LayerError(f"not a tar archive ({_why(e)})") from None
        while True:
            try:
                m = tar.next()
            except _BAD_DATA + (OSError,) as e:
                raise LayerError(f"bad tar after {stats.members} members ({_why(e)})") from None
            if m is None:
                break
            stats.members += 1
            if stats.members > MAX_MEMBERS:
                raise LayerError(f"more than {MAX_MEMBERS} members: refused")
            try:
                budget = _member(tar, m, tree, stats, budget)
            except LayerError as e:
                raise LayerError(f"member {m.name!r}: {e}") from None
            except _BAD_DATA as e:
                raise LayerError(f"member {m.name!r}: bad tar ({_why(e)})") from None
            except OSError as e:
                if e.errno in (28, 122):  # ENOSPC, EDQUOT: the store's filesystem, not the layer
                    raise
                raise LayerError(f"member {m.name!r}: {e.strerror or _why(e)}") from None
    finally:
        tree.close()
    return stats


def _why(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _member(tar: tarfile.TarFile, m: tarfile.TarInfo, tree: _Tree, stats: Stats, budget: int) -> int:
    """Write one member; returns the bytes left in the layer's budget."""
    parts = tuple(normalise(m.name))
    if not parts:
        if m.isdir():
            return budget  # the layer's root itself
        raise LayerError("an empty name: refused")
    if m.pax_headers and any(k.startswith("SCHILY.xattr.") for k in m.pax_headers):
        stats.drop("xattr")
    name = parts[-1]
    if m.ischr() or m.isblk():
        stats.drop("device")
        return budget
    if m.isfifo():
        stats.drop("fifo")
        return budget
    if m.issparse():
        raise LayerError("a sparse file: refused")
    if name.startswith(WHITEOUT):
        if name != OPAQUE and name[len(WHITEOUT):] in ("", ".", ".."):
            raise LayerError("a whiteout of nothing: refused")
        if name.startswith(WHITEOUT + WHITEOUT) and name != OPAQUE:
            return budget  # aufs's own bookkeeping (.wh..wh.plnk): not part of the image
        parent = tree.dir(parts[:-1])
        tree.remove(parent, parts)
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent))
        return budget
    if m.isdir():
        parent = tree.dir(parts[:-1])
        try:
            st = os.lstat(name, dir_fd=parent)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        tree.dir(parts)
        mode = stat.S_IMODE(m.mode)
        if mode & 0o6000:
            stats.drop("setuid")
        tree.modes[parts] = (mode & 0o1777) | 0o700  # the caller must be able to unpack into and remove it
        return budget
    if m.isfile():
        if m.size < 0 or m.size > budget:
            raise LayerError(f"{m.size} bytes: the layer's files would hold more than {MAX_BYTES} bytes: refused")
        parent = tree.dir(parts[:-1])
        tree.remove(parent, parts)
        _write(tar, m, parent, name, stats)
        stats.files += 1
        stats.bytes += m.size
        return budget - m.size
    if m.issym():
        target = m.linkname
        if not target or "\0" in target or len(os.fsencode(target)) > MAX_PATH:
            raise LayerError("a symlink with an empty or too long target: refused")
        if link_escapes(list(parts), target):
            raise LayerError(f"a symlink to {target!r}, outside the layer: refused")
        parent = tree.dir(parts[:-1])
        tree.remove(parent, parts)
        os.symlink(target, name, dir_fd=parent)
        return budget
    if m.islnk():
        try:
            tparts = tuple(normalise(m.linkname))
        except LayerError as e:
            raise LayerError(f"a hard link to {m.linkname!r}: {e}") from None
        if not tparts or tparts == parts:
            raise LayerError(f"a hard link to {m.linkname!r}: refused")
        tparent = tree.dir(tparts[:-1], create=False)
        try:
            st = os.lstat(tparts[-1], dir_fd=tparent)
        except FileNotFoundError:
            raise LayerError(f"a hard link to {m.linkname!r}, which this layer does not hold: refused") from None
        if not stat.S_ISREG(st.st_mode):
            raise LayerError(f"a hard link to {m.linkname!r}, not a regular file: refused")
        parent = tree.dir(parts[:-1])
        tree.remove(parent, parts)
        os.link(tparts[-1], name, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        return budget
    raise LayerError(f"member type {m.type!r} is not supported: refused")
