"""The content-addressed image store (host side; flock(2), rename(2), syncfs(2)).

Layout, below :func:`location` (``$JAILPY_IMAGE_STORE``; as root ``/var/cache/jailpy``; else
``$XDG_CACHE_HOME/jailpy`` or ``~/.cache/jailpy``)::

    layers/sha256/HEX/          one unpacked layer, HEX its diff_id (the uncompressed tar's digest)
    images/sha256/HEX/rootfs/   an image's root: its layers stacked (jailpy.image.flatten),
                                HEX its chain id (OCI config.md: the digests of all its layers)
    images/sha256/HEX/image.json  the layers and the references that led to it
    refs/HEX.json               what an unchanged docker archive holds (skips reading it again)
    locks/KIND-HEX.lock         flock(2) (KIND: layers or images): shared while a layer or an image is used (by a Sandbox,
                                or while an image is stacked from its layers), exclusive to remove it
    locks/KIND-HEX.make.lock    flock(2): exclusive while one is made
    tmp/                        work directories; a directory appears under layers/ or images/
                                only complete: made in tmp/, synced (syncfs), then renamed

A layer or an image is made once and shared by every image that has it.  Two jailpy processes
making the same one at once: the second waits on the lock, then finds it made.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time

from ..errors import HostError

ROOT_STORE = "/var/cache/jailpy"
"""The store when jailpy runs as root."""


def location() -> str:
    """The store's directory (see the module docstring)."""
    env = os.environ.get("JAILPY_IMAGE_STORE")
    if env:
        return os.path.abspath(env)
    if os.geteuid() == 0:
        return ROOT_STORE
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jailpy")


def _libc_syncfs(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syncfs(fd) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Lock:
    """A held flock(2) on a lock file of the store (fd ``fd``); :meth:`release` (or exit) lets go."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Store:
    """The store at ``base``; its directories are made (0755: the sandbox's own ids must reach an
    image's root) when missing.  Raises HostError when it cannot be made, or is not the caller's
    own, or others may write it."""

    def __init__(self, base: str | None = None) -> None:
        self.base = base or location()
        try:
            os.makedirs(self.base, 0o755, exist_ok=True)
            st = os.lstat(self.base)
        except OSError as e:
            raise HostError(f"image store {self.base}: cannot make it: {e.strerror} (set JAILPY_IMAGE_STORE to "
                            f"a directory of yours)") from None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise HostError(f"image store {self.base}: must be a directory of yours that no one else may write "
                            f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); chmod go-w it or set "
                            f"JAILPY_IMAGE_STORE")
        for d, mode in (("layers/sha256", 0o755), ("images/sha256", 0o755), ("refs", 0o700), ("locks", 0o700),
                        ("tmp", 0o700)):
            p = os.path.join(self.base, d)
            if not os.path.isdir(p):
                try:
                    os.makedirs(p, mode, exist_ok=True)
                except OSError as e:
                    raise HostError(f"image store {p}: cannot make it: {e.strerror}") from None

    def path(self, kind: str, hexd: str) -> str:
        """The directory of layer (``kind`` "layers") or image ("images") ``hexd``."""
        return os.path.join(self.base, kind, "sha256", hexd)

    def lock(self, name: str, exclusive: bool, wait: bool = True) -> Lock | None:
        """Take the lock ``locks/NAME.lock``; None when ``wait`` is False and another process
        holds it in a conflicting way."""
        fd = os.open(os.path.join(self.base, "locks", name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        return Lock(fd)

    def make(self, kind: str, hexd: str, build) -> Lock:
        """Make ``kind``/sha256/``hexd`` once: when it is missing, ``build(tmpdir)`` fills a new
        directory in tmp/, which is synced and renamed into place.  Returns a shared lock on it
        (``KIND-HEX.lock``, held while it is used: remove() takes it exclusive, without waiting).  The
        making itself is under another lock (``KIND-HEX.make``): a concurrent maker of the same one
        waits for it, then finds it made; a user holding the shared lock never blocks a maker."""
        final = self.path(kind, hexd)
        use = self.lock(f"{kind}-{hexd}", exclusive=False)
        try:
            if os.path.isdir(final):
                return use
            making = self.lock(f"{kind}-{hexd}.make", exclusive=True)
            try:
                if not os.path.isdir(final):
                    self._build(final, kind, hexd, build)
            finally:
                making.release()
            return use
        except BaseException:
            use.release()
            raise

    def _build(self, final: str, kind: str, hexd: str, build) -> None:
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix=f"{kind}-{hexd[:12]}-", dir=os.path.join(self.base, "tmp"))
        try:
            build(tmp)
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.chmod(tmp, 0o755)
                _libc_syncfs(fd)  # every file of it on disk before its name is
            finally:
                os.close(fd)
            os.rename(tmp, final)
            dfd = os.open(os.path.dirname(final), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def memo(self, key: str) -> dict | None:
        """What ``refs/KEY.json`` remembers, or None."""
        try:
            with open(os.path.join(self.base, "refs", key + ".json"), "rb") as f:
                return json.loads(f.read(1 << 22))
        except (OSError, ValueError):
            return None

    def remember(self, key: str, data: dict) -> None:
        """Write ``refs/KEY.json`` (atomically); failures are ignored (it is only a shortcut)."""
        path = os.path.join(self.base, "refs", key + ".json")
        try:
            with open(path + ".tmp", "w") as f:
                json.dump(data, f)
            os.rename(path + ".tmp", path)
        except OSError:
            pass

    def images(self) -> list[dict]:
        """Every image: ``id`` (chain id), ``layers``, ``refs``, ``created`` (Unix seconds), ``in_use``."""
        out = []
        d = os.path.join(self.base, "images", "sha256")
        for hexd in sorted(os.listdir(d)):
            meta = _read_meta(os.path.join(d, hexd, "image.json"))
            lock = self.lock(f"images-{hexd}", exclusive=True, wait=False)
            if lock is not None:
                lock.release()
            out.append({"id": "sha256:" + hexd, "layers": meta.get("layers", []), "refs": meta.get("refs", []),
                        "created": meta.get("created"), "in_use": lock is None})
        return out

    def layers(self) -> list[str]:
        """The diff_ids of every unpacked layer."""
        return ["sha256:" + h for h in sorted(os.listdir(os.path.join(self.base, "layers", "sha256")))]

    def remove(self, kind: str, hexd: str) -> bool:
        """Remove an image or a layer unless a process uses it (False then)."""
        lock = self.lock(f"{kind}-{hexd}", exclusive=True, wait=False)
        if lock is None:
            return False
        try:
            final = self.path(kind, hexd)
            if os.path.isdir(final):
                import shutil

                doomed = os.path.join(self.base, "tmp", f"rm-{hexd[:12]}-{os.getpid()}-{time.monotonic_ns()}")
                os.rename(final, doomed)  # gone from view at once; then deleted
                shutil.rmtree(doomed, ignore_errors=True)
            return True
        finally:
            lock.release()

    def prune(self, everything: bool = False) -> tuple[list[str], list[str]]:
        """Remove layers no image has (and with ``everything``, every image no process uses, first),
        and what interrupted runs left in tmp/.  Returns ``(images, layers)`` removed, as digests."""
        gone_images = []
        if everything:
            for img in self.images():
                if not img["in_use"] and self.remove("images", img["id"][7:]):
                    gone_images.append(img["id"])
        used = {layer for img in self.images() for layer in img["layers"]}
        gone_layers = []
        for layer in self.layers():
            if layer not in used and self.remove("layers", layer[7:]):
                gone_layers.append(layer)
        import shutil

        tmp = os.path.join(self.base, "tmp")
        for name in os.listdir(tmp):
            p = os.path.join(tmp, name)
            try:
                if time.time() - os.lstat(p).st_mtime > 3600:  # a maker still at work is younger
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
            except OSError:
                pass
        return gone_images, gone_layers

    def size(self, kind: str, hexd: str) -> int:
        """Bytes of the files below an image or layer (a file linked from many counts once)."""
        seen, total = set(), 0
        for top, dirs, files in os.walk(self.path(kind, hexd)):
            for name in files:
                try:
                    st = os.lstat(os.path.join(top, name))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
        return total


def _read_meta(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 22))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def no_space(e: OSError, base: str) -> HostError | None:
    """The error for a store that is full (ENOSPC, EDQUOT), else None."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return HostError(f"image store {base}: no space left ({e.strerror}); jailpy image prune, or set "
                         f"JAILPY_IMAGE_STORE to a larger filesystem")
    return None

