"""Named sandboxes: what ``jailpy exec --name NAME`` records so that ``jailpy ps``, ``pause``,
``resume`` and ``kill`` can find the sandbox's cgroup from another process.

One JSON file per running named sandbox, in a directory only its user can write:
``/run/jailpy`` for root, else ``$XDG_RUNTIME_DIR/jailpy``, else ``/tmp/jailpy-UID`` (created
0700; refused if it is a symlink or belongs to someone else).  An entry whose supervisor is gone
(its pid dead, or reused by another process: the start time in /proc/PID/stat differs) is stale
and is removed by whoever finds it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass

from .errors import HostError, PolicyError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid sandbox name (1-64 of letters, digits, ``_.-``, not starting
    with a punctuation mark); raise PolicyError otherwise."""
    if not NAME_RE.match(name or ""):
        raise PolicyError(f"{name!r} is not a valid sandbox name: use 1-64 letters, digits, '_', '.' or '-'")
    return name


def directory(create: bool = False) -> str:
    """The registry directory of the calling user (see module docstring); HostError if it is unsafe."""
    uid = os.getuid()
    if uid == 0:
        d = "/run/jailpy"
    elif os.environ.get("XDG_RUNTIME_DIR", "").startswith("/"):
        d = os.path.join(os.environ["XDG_RUNTIME_DIR"], "jailpy")
    else:
        d = f"/tmp/jailpy-{uid}"
    if create:
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise HostError(f"cannot create the sandbox registry {d}: {e.strerror}") from None
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return d
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        raise HostError(f"{d} is not a private directory of uid {uid}: remove it and try again")
    return d


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data.rpartition(b")")[2].split()[19])


def _alive(e: Entry) -> bool:
    return _start_time(e.supervisor_pid) == e.supervisor_start


def register(name: str, argv: list[str], cgroup: list[str], cgroup_version: int, jailpy_pids: int = 2) -> str:
    """Record a running sandbox under ``name`` (atomically, O_EXCL); returns the entry's path.
    PolicyError if a live sandbox already has that name."""
    check_name(name)
    path = os.path.join(directory(create=True), name + ".json")
    me = os.getpid()
    entry = Entry(name, me, _start_time(me) or 0, time.time(), list(argv), list(cgroup), cgroup_version, jailpy_pids)
    data = json.dumps(entry.__dict__).encode()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            old = _read(path)
            if old is not None and _alive(old):
                raise PolicyError(f"--name: a sandbox named {name!r} is already running (pid {old.supervisor_pid})") from None
            _unlink(path)
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path
    raise PolicyError(f"--name: could not claim the name {name!r}: try again")


def unregister(path: str) -> None:
    """Remove an entry made by :func:`register` (ignored if already gone)."""
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read(path: str) -> Entry | None:
    try:
        with open(path, "rb") as f:
            return Entry(**json.loads(f.read()))
    except (OSError, ValueError, TypeError):
        return None


def entries() -> list[Entry]:
    """The live named sandboxes of the calling user, oldest first; stale entries are removed."""
    d = directory()
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        if not n.endswith(".json"):
            continue
        p = os.path.join(d, n)
        e = _read(p)
        if e is None:
            continue
        if _alive(e):
            out.append(e)
        else:
            _unlink(p)
    return sorted(out, key=lambda e: e.started)


def lookup(name: str) -> Entry:
    """The live sandbox named ``name``; PolicyError if there is none."""
    check_name(name)
    for e in entries():
        if e.name == name:
            return e
    raise PolicyError(f"no running sandbox named {name!r} (see: jailpy ps)")
