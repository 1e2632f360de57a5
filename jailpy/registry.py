"""Named sandboxes: what ``jailpy exec --name NAME`` records so that ``jailpy ps``, ``pause``,
``resume`` and ``kill`` can find the sandbox's cgroup from another process.

One JSON file per running named sandbox, in a directory of the calling user's that nobody else
can create first or write (:func:`directory`): ``/run/jailpy`` for root, else
``$XDG_RUNTIME_DIR/jailpy`` when that variable is set, else
``$XDG_CACHE_HOME/jailpy/run/HOST`` (default ``~/.cache/jailpy/run/HOST``; HOST is the machine's
node name, as a home directory may be shared by several machines).  Every directory jailpy makes
there is 0700 and checked (:func:`jailpy.hostfiles.private_dir`): a real directory, not a
symlink, owned by the user; the registry directory itself readable by nobody else.

An entry whose supervisor is gone is stale: its pid is dead, or reused by another process (the
start time in /proc/PID/stat differs), or the machine was rebooted since (``boot_id`` differs).
Every call that reads or writes the registry removes stale entries: :func:`register` and
:func:`lookup` look at no more than SWEEP_MAX entries (from a random place in the directory, so a
crowd of live ones cannot hide the stale ones), :func:`entries` (``jailpy ps``) at all of them.
Entries are removed, and names claimed, only under an flock(2) of the directory's ``.lock``
file, so a sweep never removes an entry another process has just claimed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import time
from dataclasses import dataclass

from .errors import HostError, PolicyError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SWEEP_MAX = 128
"""Entries :func:`register` and :func:`lookup` examine for staleness per call (each costs a read
of the entry and of /proc/PID/stat: about 30 microseconds)."""
LOCK_WAIT = 2.0
"""Seconds to wait for the registry's lock before going on without sweeping."""
ARGV_MAX = (64, 256)
"""An entry keeps the first 64 arguments of the command, 256 characters of each (for ``jailpy ps``)."""
ENTRY_MAX = 1 << 20
"""Bytes of an entry file read at most; a larger one is not jailpy's."""
_CGROUP_LEAF = re.compile(r"^jailpy-\d+-\d+$")


@dataclass(frozen=True)
class Entry:
    """A running named sandbox: ``cgroup`` holds the cgroup directories (one per v1 hierarchy)."""

    name: str
    supervisor_pid: int
    supervisor_start: int
    """Start time of the supervisor process in clock ticks since boot (proc(5) /proc/PID/stat field 22)."""
    started: float
    """time.time() when the run started (seconds since the epoch)."""
    argv: list[str]
    cgroup: list[str]
    cgroup_version: int
    jailpy_pids: int = 2
    """jailpy's own processes in the cgroup (PID 1, and the set-up process unless the fork server
    started the sandbox): ``jailpy ps`` leaves them out of the count."""
    boot_id: str = ""
    """/proc/sys/kernel/random/boot_id when it was registered (random(4)); "" in entries of older
    jailpy versions."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid sandbox name (1-64 of letters, digits, ``_.-``, not starting
    with a punctuation mark); raise PolicyError otherwise."""
    if not NAME_RE.match(name or ""):
        raise PolicyError(f"{name!r} is not a valid sandbox name: use 1-64 letters, digits, '_', '.' or '-'")
    return name


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.uname().nodename).lstrip(".") or "localhost"


def _location() -> tuple[str, tuple[str, ...]]:
    """(base directory, the parts below it jailpy makes) of the calling user's registry."""
    if os.geteuid() == 0:
        return "/run", ("jailpy",)
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        return runtime, ("jailpy",)
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not cache.startswith("/"):
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    return cache, ("jailpy", "run", _host())


def directory(create: bool = False) -> str | None:
    """The registry directory of the calling user (see the module docstring), checked; None when it
    does not exist and ``create`` is False.  HostError when it cannot be made or is not private."""
    from .hostfiles import UnsafeDirectory, private_dir  # only when a name is used: not on every run's start-up

    base, parts = _location()
    path = os.path.join(base, *parts)
    try:
        if create and not os.path.isdir(base) and parts[0] == "jailpy" and len(parts) > 1:
            os.makedirs(base, 0o700, exist_ok=True)  # ~/.cache of a new account (XDG: made 0700)
        return private_dir(base, parts, create=create)
    except UnsafeDirectory as e:
        raise HostError(f"the sandbox registry {path} is unsafe: {e}; fix or remove it, or set XDG_RUNTIME_DIR to a "
                        f"private directory of yours") from None
    except FileNotFoundError:
        if create:
            raise HostError(f"cannot create the sandbox registry {path}: {base} does not exist; set "
                            f"XDG_RUNTIME_DIR to a private directory") from None
        return None
    except OSError as e:
        raise HostError(f"cannot {'create' if create else 'open'} the sandbox registry {path}: {e.strerror}"
                        + ("; set XDG_RUNTIME_DIR to a private directory" if e.errno == errno.EACCES else "")) from None


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data.rpartition(b")")[2].split()[19])


_boot_id: str | None = None


def _current_boot() -> str:
    global _boot_id
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot_id = f.read().strip()
        except OSError:
            _boot_id = ""
    return _boot_id


def _alive(e: Entry) -> bool:
    if e.boot_id and _current_boot() and e.boot_id != _current_boot():
        return False
    return _start_time(e.supervisor_pid) == e.supervisor_start


class _Lock:
    """flock(2) LOCK_EX of ``DIR/.lock``, tried for up to LOCK_WAIT seconds; ``held`` says if it was got."""

    def __init__(self, d: str) -> None:
        self.fd = -1
        self.held = False
        try:
            self.fd = os.open(os.path.join(d, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        end = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
                return
            except OSError:
                if time.monotonic() >= end:
                    return
                time.sleep(0.005)

    def __enter__(self) -> "_Lock":
        return self

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock


def register(name: str, argv: list[str], cgroup: list[str], cgroup_version: int, jailpy_pids: int = 2) -> str:
    """Record a running sandbox under ``name`` (O_CREAT|O_EXCL|O_NOFOLLOW, in the checked registry
    directory); returns the entry's path.  Sweeps up to SWEEP_MAX stale entries first.
    PolicyError if a live sandbox already has that name; HostError if the registry cannot be
    written (unsafe directory, EMFILE, ENOSPC...)."""
    check_name(name)
    d = directory(create=True)
    path = os.path.join(d, name + ".json")
    me = os.getpid()
    n, size = ARGV_MAX
    entry = Entry(name, me, _start_time(me) or 0, time.time(), [str(a)[:size] for a in list(argv)[:n]], list(cgroup),
                  cgroup_version, jailpy_pids, _current_boot())
    data = json.dumps(entry.__dict__).encode()
    try:
        with _Lock(d) as lock:
            if lock.held:
                _sweep(d, SWEEP_MAX, keep=name + ".json")
            for _ in range(2):
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                except FileExistsError:
                    old = _read(path)
                    if old is not None and _alive(old):
                        raise PolicyError(f"--name: a sandbox named {name!r} is already running "
                                          f"(pid {old.supervisor_pid})") from None
                    if not lock.held:
                        break
                    _unlink(path)
                    continue
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return path
    except OSError as e:
        _unlink_if_mine(path, me)
        raise HostError(f"--name: cannot write the sandbox registry {d}: {e.strerror}") from None
    raise PolicyError(f"--name: could not claim the name {name!r} (the registry is busy): try again")


def unregister(path: str) -> None:
    """Remove an entry made by :func:`register` (ignored if already gone)."""
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _unlink_if_mine(path: str, pid: int) -> None:
    e = _read(path)
    if e is not None and e.supervisor_pid == pid:
        _unlink(path)


def _read(path: str) -> Entry | None:
    """The entry at ``path``, or None for anything that is not one: a symlink, FIFO or device
    (never followed or opened for reading: O_NOFOLLOW|O_NONBLOCK), a file too large, bad JSON, or
    cgroup paths that are not a jailpy sandbox's (``.../jailpy-PID-N``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > ENTRY_MAX:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            e = Entry(**json.loads(f.read(ENTRY_MAX)))
    except (OSError, ValueError, TypeError):
        return None
    finally:
        os.close(fd)
    if not isinstance(e.cgroup, list) or not all(
            isinstance(p, str) and p.startswith("/") and ".." not in p.split("/") and _CGROUP_LEAF.match(os.path.basename(p))
            for p in e.cgroup):
        return None
    return e


def _junk(path: str) -> bool:
    """Not an entry, and old enough (a minute) not to be one being written right now."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return time.time() - st.st_mtime > 60


def _sweep(d: str, limit: int | None, keep: str = "") -> list[Entry]:
    """With the registry's lock held: remove stale entries and old junk among ``limit`` entries
    of ``d`` (all for None), from a random place in the listing; return the live entries seen."""
    try:
        names = [n for n in os.listdir(d) if n.endswith(".json") and n != keep]
    except OSError:
        return []
    if limit is not None and len(names) > limit:
        import random

        start = random.randrange(len(names))
        names = (names[start:] + names[:start])[:limit]
    live = []
    for n in names:
        p = os.path.join(d, n)
        e = _read(p)
        if e is None:
            if _junk(p):
                _unlink(p)
        elif _alive(e):
            live.append(e)
        else:
            _unlink(p)
    return live


def entries() -> list[Entry]:
    """The live named sandboxes of the calling user, oldest first; every stale entry is removed."""
    d = directory()
    if d is None:
        return []
    with _Lock(d) as lock:
        if lock.held:
            live = _sweep(d, None)
        else:  # someone holds the lock (or it cannot be opened): list without removing anything
            live = []
            try:
                names = [n for n in os.listdir(d) if n.endswith(".json")]
            except OSError:
                names = []
            for n in names:
                e = _read(os.path.join(d, n))
                if e is not None and _alive(e):
                    live.append(e)
    return sorted(live, key=lambda e: e.started)


def lookup(name: str) -> Entry:
    """The live sandbox named ``name``; PolicyError if there is none.  Sweeps up to SWEEP_MAX
    stale entries too."""
    check_name(name)
    d = directory()
    e = None
    if d is not None:
        path = os.path.join(d, name + ".json")
        with _Lock(d) as lock:
            if lock.held:
                _sweep(d, SWEEP_MAX, keep=name + ".json")
            e = _read(path)
            if e is not None and not _alive(e):
                if lock.held:
                    _unlink(path)
                e = None
    if e is None or e.name != name:
        raise PolicyError(f"no running sandbox named {name!r} (see: jailpy ps)")
    return e
