"""Compiled filters, cached: :func:`prepare` (a policy name or path -> :class:`~.bpf.Filter`),
through an in-memory memo and the on-disk cache in :func:`cache_dir`.

The on-disk cache holds two files per compiled policy, both 0600 in a 0700 directory and ignored
unless owned by the caller and not writable by group or others:

    <digest-hex>[.log].bpf   the BPF, then sha256(key + BPF) (32 bytes): a damaged file is recompiled
    src-<hash>.json          which policy files (path, sha256 of their content) gave which digest:
                             a cache hit reads no TOML and loads no libseccomp at all

libseccomp's version is not part of the key: x86_64 syscall numbers are kernel ABI, so any
release compiles the same policy to an equivalent program; COMPILER_VERSION covers jailpy's side.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path

from .bpf import Filter, _has_notify, compile_bpf
from .language import COMPILER_VERSION, SeccompPolicy
from .loaders import find, load

_MEMO: dict[tuple[str, str], tuple[tuple, Filter]] = {}
_MEMO_LOCK = threading.Lock()


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jailpy/seccomp`` or ``~/.cache/jailpy/seccomp``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jailpy" / "seccomp"


def _variant(log: bool | str) -> str:
    return log if isinstance(log, str) else ("log" if log else "report")


def _nesting_key() -> str:
    """What allow_nesting changes (jailpy/seccomp/nesting.py), as part of the index key: an index
    entry says which digest a policy file compiles to, and that depends on this code too."""
    from . import nesting

    what = repr((nesting.NAMESPACE_CALLS, nesting.MOUNT_CALLS, nesting.PATH_CALLS, nesting.KEYCTL_JOIN_NEW))
    return hashlib.sha256(what.encode()).hexdigest()[:12]


def _bpf_path(digest: str, log: bool) -> Path:
    return cache_dir() / f"{digest.removeprefix('sha256:')}{'.log' if log else ''}.bpf"


def _bpf_key(digest: str, log: bool) -> bytes:
    return f"jailpy-seccomp\0{COMPILER_VERSION}\0{digest}\0{_variant(log)}\0".encode()


def _index_path(real: str, log: bool) -> Path:
    h = hashlib.sha256(f"jailpy-seccomp\0{COMPILER_VERSION}\0{real}\0{_variant(log)}".encode()).hexdigest()
    return cache_dir() / f"src-{h[:32]}.json"


def _stamp(paths: tuple[str, ...]) -> tuple | None:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            return None
        out.append((p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _read_private(path: Path, limit: int = 1 << 20) -> bytes | None:
    """The file's bytes if it and its directory belong to this user and nobody else may write
    them, else None."""
    if not _private_cache_dir(create=False):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st) or not _private(os.stat(path.parent)) or st.st_size > limit:
            return None
        return os.read(fd, st.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _private_cache_dir(create: bool) -> bool:
    """Whether cache_dir() is a real directory of the caller's that no one else may write, made
    (0700) with ``create``: every part below ``~/.cache`` is checked without following a
    symlink (jailpy.hostfiles.private_dir), so a link planted there cannot redirect the cache."""
    from ..hostfiles import private_dir

    d = cache_dir()
    try:
        if create:
            os.makedirs(d.parent.parent, mode=0o700, exist_ok=True)  # ~/.cache itself, when a new user has none
        return private_dir(str(d.parent.parent), (d.parent.name, d.name), create=create) is not None
    except OSError:
        return False


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically (temporary file, rename), 0600 in a 0700 directory; failures are ignored
    (the next run compiles again)."""
    try:
        if not _private_cache_dir(create=True):
            return
        import tempfile  # only when the cache is written: not on the start-up path

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with open(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _cache_read(digest: str, log: bool) -> bytes | None:
    """The cached BPF for ``digest`` if it is intact and private, else None (then recompiled)."""
    raw = _read_private(_bpf_path(digest, log))
    if raw is None or len(raw) < 40:
        return None
    bpf, check = raw[:-32], raw[-32:]
    if len(bpf) % 8 or hashlib.sha256(_bpf_key(digest, log) + bpf).digest() != check:
        return None
    return bpf


def _cache_write(digest: str, log: bool, bpf: bytes) -> None:
    _write_private(_bpf_path(digest, log), bpf + hashlib.sha256(_bpf_key(digest, log) + bpf).digest())


def _file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _index_read(real: str, log: bool) -> tuple[str, str, tuple[str, ...]] | None:
    """(digest, name, source paths) if every source file still has the content it was compiled from."""
    raw = _read_private(_index_path(real, log), 1 << 16)
    try:
        idx = json.loads(raw) if raw is not None else None
        if not isinstance(idx, dict) or idx.get("top") != real:
            return None
        sources = [(str(p), str(h)) for p, h in idx["sources"]]
        if not sources or any(_file_sha256(p) != h for p, h in sources):
            return None
        return str(idx["digest"]), str(idx["name"]), tuple(p for p, _ in sources)
    except (ValueError, TypeError, KeyError):
        return None


def _index_write(real: str, log: bool, policy: SeccompPolicy, digest: str) -> None:
    sources = [[p, _file_sha256(p)] for p in policy.sources]
    if any(h is None for _, h in sources):
        return
    idx = {"top": real, "digest": digest, "name": policy.name, "sources": sources}
    _write_private(_index_path(real, log), json.dumps(idx).encode())


def prepare(name_or_path: str = "default", log: bool = False, nesting: bool = False, notify: bool = True) -> Filter:
    """Load a policy and compile it to a :class:`Filter`, through two caches: in memory (keyed by
    the policy files' identity and mtimes) and on disk (``cache_dir()``: ``<digest>.bpf`` ending
    in a sha256 checksum, and an index from the policy files' content to the digest, so a cache
    hit parses no TOML and does no libseccomp work).  A corrupt, foreign-owned or
    group/world-writable cache entry is ignored and rewritten.  ``log=True``: permissive (see the
    docstring of jailpy.seccomp).  ``nesting``: with the calls a nested sandbox needs allowed
    (:func:`jailpy.seccomp.nesting.allow_nesting`).  ``notify=False``: compiled as with
    ``report = false`` (plain BPF actions), for a sandbox that cannot have a listener (an enclosing
    sandbox's filter has one: seccomp(2) EBUSY).  Raises SeccompError (bad policy), HostError (no
    libseccomp on a miss).

    The cache directory is trusted as much as the user's home: a sandbox given write access to it
    (``--bind ~`` with a single id map) could as well plant code in ``~/.bashrc``."""
    path = find(name_or_path)
    real = str(path.resolve())
    variant = _variant(log) + (f"+nesting{_nesting_key()}" if nesting else "") + ("" if notify else "+nonotify")
    memo_key = (real, variant)
    with _MEMO_LOCK:
        hit = _MEMO.get(memo_key)
    if hit is not None and _stamp(tuple(s[0] for s in hit[0])) == hit[0]:
        return hit[1]
    filt, sources = None, ()
    found = _index_read(real, variant)
    if found is not None:
        digest, name, sources = found
        bpf = _cache_read(digest, log)
        if bpf is not None:
            filt = Filter(bpf, digest, name, _has_notify(bpf), permissive=bool(log))
    if filt is None:
        policy = load(real)
        if nesting:
            from .nesting import allow_nesting

            policy = allow_nesting(policy)
        if not notify and policy.report:
            from dataclasses import replace

            policy = replace(policy, report=False)
        digest = policy.digest()
        bpf = _cache_read(digest, log)
        if bpf is None:
            bpf = compile_bpf(policy, log)
            _cache_write(digest, log, bpf)
        _index_write(real, variant, policy, digest)
        filt = Filter(bpf, digest, policy.name, _has_notify(bpf), permissive=bool(log))
        sources = policy.sources
    stamp = _stamp(tuple(sources))
    if stamp is not None:
        with _MEMO_LOCK:
            _MEMO[memo_key] = (stamp, filt)
    return filt

