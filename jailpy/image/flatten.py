"""Stacking an image's unpacked layers into one directory tree (host side; OCI image-spec
layer.md, "Applying changesets").

An overlay mount can stack the layers themselves, but a whiteout there must be a character device
0/0 (overlayfs(5)), which a caller without privilege cannot make (mknod(2) EPERM in a user
namespace).  jailpy flattens instead, the same way as root and rootless, on any kernel: the layers
are applied in order onto one directory, the image's root, whose files are hard links to the
layers' own (no data is copied; a copy only where the filesystem refuses another link):

* ``.wh..wh..opq`` in a directory empties that directory of what the layers below put there;
* ``.wh.NAME`` removes NAME (and all below it) that the layers below put there;
* an entry replaces whatever the layers below have of that name, a directory merging into a
  directory.

Nothing here follows a symlink: every step is relative to an fd opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from .unpack import OPAQUE, WHITEOUT

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove(dst: int, name: str) -> None:
    try:
        st = os.lstat(name, dir_fd=dst)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dst)
    else:
        os.unlink(name, dir_fd=dst)


def _copy(src: int, dst: int, name: str, mode: int) -> None:
    """A copy of the regular file ``name`` (for a filesystem that refuses one more hard link)."""
    fin = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
    try:
        fout = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst)
        try:
            while os.sendfile(fout, fin, None, 1 << 24):
                pass
            os.fchmod(fout, mode)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def apply(src: int, dst: int) -> int:
    """Apply the unpacked layer below directory fd ``src`` onto the tree below ``dst`` (see the
    module docstring).  Returns the number of entries written.  Raises OSError."""
    names = sorted(os.listdir(src))
    count = 0
    if OPAQUE in names:
        for name in os.listdir(dst):
            _remove(dst, name)
    for name in names:
        if name.startswith(WHITEOUT):
            if name != OPAQUE and not name.startswith(WHITEOUT + WHITEOUT):
                _remove(dst, name[len(WHITEOUT):])
            continue
    for name in names:
        if name.startswith(WHITEOUT):
            continue
        st = os.lstat(name, dir_fd=src)
        count += 1
        if stat.S_ISDIR(st.st_mode):
            try:
                if not stat.S_ISDIR(os.lstat(name, dir_fd=dst).st_mode):
                    os.unlink(name, dir_fd=dst)
                    os.mkdir(name, 0o700, dir_fd=dst)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=dst)
            s = os.open(name, _DIR, dir_fd=src)
            try:
                d = os.open(name, _DIR, dir_fd=dst)
                try:
                    count += apply(s, d)
                    os.fchmod(d, stat.S_IMODE(st.st_mode))
                finally:
                    os.close(d)
            finally:
                os.close(s)
            continue
        _remove(dst, name)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        elif stat.S_ISREG(st.st_mode):
            try:
                os.link(name, name, src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.EMLINK, errno.EXDEV, errno.EPERM):
                    raise
                _copy(src, dst, name, stat.S_IMODE(st.st_mode))
        # nothing else is in an unpacked layer (jailpy.image.unpack drops devices and fifos)
    return count


def flatten(layers: list[str], target: str) -> int:
    """Make ``target`` (a new directory) the image's root: the unpacked layer directories
    ``layers``, lowest first, applied in order.  Returns the entries written.  Raises OSError."""
    os.mkdir(target, 0o755)
    dst = os.open(target, _DIR)
    count = 0
    try:
        for layer in layers:
            src = os.open(layer, _DIR)
            try:
                count += apply(src, dst)
            finally:
                os.close(src)
    finally:
        os.close(dst)
    return count
