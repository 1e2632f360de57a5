"""Running a sandbox on an OCI image's layers (host side).  See docs/images.md.

:func:`prepare` turns a reference (``oci:DIR[:TAG]``, ``docker-archive:FILE[:TAG]``:
:mod:`.ref`) into an :class:`Image`: a directory, the image's root, that the mount plan uses as
``--rootfs`` would be used (a read-only overlay, a fresh tmpfs for /tmp each run), and the
defaults its config gives (Env, WorkingDir, Entrypoint + Cmd, User).  Each layer is checked
(:mod:`.ref`: digests and sizes), unpacked once (:mod:`.unpack`: a hostile tar), and the layers
are stacked once per image (:mod:`.flatten`) in the content-addressed store (:mod:`.store`).
"""

from __future__ import annotations

import hashlib
import os
import re

from ..errors import PolicyError
from . import store as store_mod


class Image:
    """An image made ready to run: ``rootfs``, its root (a directory of the store); ``chain_id``
    and ``layers`` (diff_ids); its config's defaults ``env`` (``K=V``), ``workdir``, ``argv``
    (Entrypoint + Cmd) and ``user``; and ``lock``, a shared lock on it in the store (held until
    :meth:`release`, so ``jailpy image rm`` leaves it while it is used)."""

    def __init__(self, ref: str, rootfs: str, chain_id: str, layers: list[str], env: list[str],
                 workdir: str | None, argv: list[str], user: str | None, lock: store_mod.Lock | None) -> None:
        self.ref, self.rootfs, self.chain_id, self.layers = ref, rootfs, chain_id, layers
        self.env, self.workdir, self.argv, self.user, self.lock = env, workdir, argv, user, lock

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def unreachable(self, host_uid: int | None) -> str | None:
        """Why the sandbox, whose root is host uid ``host_uid``, could not reach the image's root
        (a directory on the way that others may not search, such as a 0700 home holding the
        store), with the fix; None when it can (path_resolution(7))."""
        if host_uid == os.geteuid():
            return None
        path = self.rootfs
        while True:
            try:
                st = os.stat(path)
            except OSError:
                return None
            if not st.st_mode & 0o001:
                return (f"image store: the sandbox's ids cannot reach {self.rootfs}: {path} is mode "
                        f"{st.st_mode & 0o7777:04o} (others may not search it); chmod o+x {path}, set "
                        f"JAILPY_IMAGE_STORE to a directory others can search, or use --id-map single")
            if path == "/":
                return None
            path = os.path.dirname(path)

    def ids(self) -> tuple[int | None, int | None]:
        """``(uid, gid)`` of the config's User (``NAME|UID[:GROUP|GID]``): names are looked up in
        the image's own /etc/passwd and /etc/group (passwd(5), group(5)); ``(None, None)`` when
        the config has no User.  Raises PolicyError for a name the image does not have."""
        if not self.user:
            return None, None
        u, _, g = self.user.partition(":")
        uid = _lookup(self.rootfs, "etc/passwd", u, 2, self.ref)
        gid = _lookup(self.rootfs, "etc/group", g, 2, self.ref) if g else None
        if gid is None and not u.isdigit():
            gid = _lookup(self.rootfs, "etc/passwd", u, 3, self.ref)
        for v in (uid, gid):
            if v is not None and not 0 <= v < 65534:
                raise PolicyError(f"{self.ref}: config User {self.user!r}: id {v} is not between 0 and 65533; "
                                  f"give --uid/--gid")
        return uid, gid


def split_ref(ref: str) -> tuple[str, str, str | None]:
    """``(kind, path, tag)`` of a reference (see the module docstring).  The path is the longest
    prefix that exists (a path may hold ``:``); PolicyError for an unknown transport, a path that
    does not exist or a bad tag."""
    kind, sep, rest = ref.partition(":")
    if not sep or kind not in ("oci", "docker-archive") or not rest:
        raise PolicyError(f"image: {ref!r}: expected oci:DIR[:TAG] or docker-archive:FILE[:TAG] (no registry is "
                          f"contacted: save the image first, e.g. docker save -o img.tar NAME, or skopeo copy "
                          f"docker://NAME oci:DIR:TAG)")
    want = os.path.isdir if kind == "oci" else os.path.isfile
    cuts = [len(rest)] + [i for i in range(len(rest) - 1, 0, -1) if rest[i] == ":"]
    for i in cuts:
        path, tag = rest[:i], rest[i + 1:] or None
        if want(path):
            if tag is not None and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._:/@-]{0,255}$", tag):
                raise PolicyError(f"image: {ref!r}: bad tag {tag!r}")
            return kind, os.path.abspath(path), tag
    raise PolicyError(f"image: {ref!r}: no such {'directory' if kind == 'oci' else 'file'}: {rest}")


def chain_id(diff_ids: list[str]) -> str:
    """The OCI ChainID of layers ``diff_ids`` (config.md): the first's diff_id, then
    sha256(previous chain id + " " + diff_id).  PolicyError for no layers."""
    if not diff_ids:
        raise PolicyError("the image has no layers")
    chain = diff_ids[0]
    for d in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
    return chain


def _lookup(rootfs: str, rel: str, name: str, column: int, ref: str) -> int:
    if name.isdigit():
        return int(name)
    from .. import _syscalls as sc

    data = b""
    try:
        root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = sc.openat2(root, rel, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK,
                            sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
        finally:
            os.close(root)
        try:
            data = os.read(fd, 1 << 20)
        finally:
            os.close(fd)
    except OSError:
        pass
    for line in data.decode("utf-8", "replace").splitlines():
        f = line.split(":")
        if len(f) > column and f[0] == name and f[column].isdigit():
            return int(f[column])
    raise PolicyError(f"{ref}: config User {name!r}: the image's /{rel} has no such name; give --uid/--gid")


def _strings(v: object, what: str, ref: str) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(s, str) and "\0" not in s for s in v):
        raise PolicyError(f"{ref}: config {what}: expected a list of strings")
    return v


def prepare(ref: str) -> Image:
    """Host side, once per Sandbox: find, check, unpack and stack the image ``ref`` (the first
    time; later, while the reference's index.json or archive is unchanged, only a note of what
    its checked documents said is read: :func:`_documents`).  Raises PolicyError (one line) for a
    bad reference or image, HostError for a store that cannot be used."""
    st = store_mod.Store()
    config, diff_ids, src, key = _documents(st, ref)
    chain = chain_id(diff_ids)

    def build(tmp: str) -> None:  # the image is not in the store (yet, or any more)
        source = src
        if source is None:
            from .ref import open_ref

            source = open_ref(ref)
            if [layer.diff_id for layer in source.layers] != diff_ids:
                raise PolicyError(f"{ref}: changed while it was read; run again")
        _flatten(st, source, tmp, chain)

    try:  # made already (the usual case): one lock and one stat
        lock = st.make("images", chain[7:], build)
    except OSError as e:
        err = store_mod.no_space(e, st.base)
        if err is not None:
            raise err from None
        raise PolicyError(f"{ref}: cannot unpack into the store {st.base}: {e.strerror or e}") from None
    if key is not None:  # every document and layer checked: noted, for the runs to come
        st.remember(key, {"config": config, "diff_ids": diff_ids})
    cfg = config.get("config") or {}
    if not isinstance(cfg, dict):
        raise PolicyError(f"{ref}: config: 'config' is not an object")
    env = [e for e in _strings(cfg.get("Env"), "Env", ref) if "=" in e]
    workdir = cfg.get("WorkingDir") or None
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/") or "\0" in workdir):
        raise PolicyError(f"{ref}: config WorkingDir: expected an absolute path, got {workdir!r}")
    user = cfg.get("User") or None
    if user is not None and (not isinstance(user, str) or "\0" in user):
        raise PolicyError(f"{ref}: config User: expected NAME|UID[:GROUP|GID], got {user!r}")
    argv = _strings(cfg.get("Entrypoint"), "Entrypoint", ref) + _strings(cfg.get("Cmd"), "Cmd", ref)
    return Image(ref, os.path.join(st.path("images", chain[7:]), "rootfs"), chain, diff_ids, env, workdir, argv,
                 user, lock)


def _documents(st: store_mod.Store, ref: str) -> tuple[dict, list[str], object, str | None]:
    """``(config, diff_ids, source, key)`` of ``ref``.  A reference whose index.json (OCI) or
    archive (docker) is the same file with the same size, mtime and ctime as when jailpy last
    read and checked it is not read again: its note in the store's ``refs/`` gives the config and
    diff_ids (``source`` is then None; the index names its manifest by digest, so what the note
    says is what that digest holds).  Otherwise the documents are read and checked now
    (:func:`.ref.open_ref`) and ``key`` is where to note them once the image is made."""
    kind, path, tag = split_ref(ref)
    key = None
    try:
        s = os.stat(os.path.join(path, "index.json") if kind == "oci" else path)
        key = hashlib.sha256(repr((kind, os.path.realpath(path), tag, s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns,
                                   s.st_ctime_ns)).encode()).hexdigest()
        memo = st.memo(key)
        if memo is not None:
            config, diff_ids = memo["config"], memo["diff_ids"]
            if isinstance(config, dict) and isinstance(diff_ids, list) and diff_ids and \
                    all(isinstance(d, str) and len(d) == 71 for d in diff_ids):
                return config, diff_ids, None, None
    except (OSError, KeyError, TypeError):
        pass
    from .ref import open_ref

    src = open_ref(ref)
    return src.config, [layer.diff_id for layer in src.layers], src, key


def _unpack(st: store_mod.Store, src, layer, tmp: str) -> None:
    """Fill ``tmp`` with ``layer``: its blob copied into the store while hashed (so what is
    unpacked is what was checked), decompressed while hashed again (the diff_id), unpacked."""
    import tempfile
    import zlib

    from . import unpack

    with tempfile.TemporaryFile(dir=os.path.join(st.base, "tmp")) as blob:
        src.copy_blob(layer, blob)
        blob.seek(0)
        reader = _Reader(_decompress(blob, layer, src.ref), unpack.MAX_BYTES * 2)
        root = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            unpack.unpack(reader, root)
            reader.drain()
        except unpack.LayerError as e:
            raise PolicyError(f"{src.ref}: layer {layer.digest}: {e}") from None
        except _TooBig:
            raise PolicyError(f"{src.ref}: layer {layer.digest}: decompresses to more than "
                              f"{unpack.MAX_BYTES * 2} bytes: refused") from None
        except (OSError, EOFError, ValueError, zlib.error) as e:
            if isinstance(e, OSError) and store_mod.no_space(e, st.base):
                raise
            raise PolicyError(f"{src.ref}: layer {layer.digest}: bad {layer.compression} data "
                              f"({e.strerror if isinstance(e, OSError) and e.strerror else e}): refused") from None
        finally:
            os.close(root)
    if reader.digest() != layer.diff_id:
        raise PolicyError(f"{src.ref}: layer {layer.digest}: the uncompressed tar's digest {reader.digest()} is not "
                          f"the config's diff_id {layer.diff_id}: refused")


def _decompress(blob, layer, ref: str):
    if layer.compression == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=blob, mode="rb")
    if layer.compression == "zstd":
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise PolicyError(f"{ref}: layer {layer.digest}: media type tar+zstd needs the Python module "
                              f"zstandard (pip install zstandard), which is not installed") from None
        return zstandard.ZstdDecompressor().stream_reader(blob)
    return blob


class _TooBig(Exception):
    pass


class _Reader:
    """A binary stream that hashes what it reads and stops past ``limit`` bytes."""

    def __init__(self, f, limit: int) -> None:
        self.f, self.limit, self.n = f, limit, 0
        self.h = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size if size is not None and size >= 0 else 1 << 20)
        self.n += len(data)
        if self.n > self.limit:
            raise _TooBig()
        self.h.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def _flatten(st: store_mod.Store, src, tmp: str, chain: str) -> None:
    """Fill ``tmp`` with the image: each layer made in the store (when missing) and held (a shared
    lock: prune leaves it) while they are stacked into ``tmp``/rootfs."""
    import json
    import time

    from . import flatten

    locks = []
    try:
        for layer in src.layers:
            locks.append(st.make("layers", layer.diff_id[7:], lambda t, layer=layer: _unpack(st, src, layer, t)))
        flatten.flatten([st.path("layers", layer.diff_id[7:]) for layer in src.layers], os.path.join(tmp, "rootfs"))
    finally:
        for held in locks:
            held.release()
    with open(os.path.join(tmp, "image.json"), "w") as f:
        json.dump({"id": chain, "layers": [layer.diff_id for layer in src.layers], "refs": [src.ref],
                   "config_digest": src.config_digest, "created": int(time.time())}, f)
