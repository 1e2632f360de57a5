"""Host side: leases on host ids, so no two running sandboxes share a host uid.

A :class:`Lease` holds one slot of the id range :func:`jailpy.userns.choose` finds (see
:mod:`jailpy.userns` for the ranges and the slot size): a lock file per slot, named by the slot's
first host uid, in a directory only the caller can write --

* root: ``/run/jailpy/ids`` (a tmpfs: a reboot forgets the leases, and with them the stale
  records below; nothing of a sandbox runs across a reboot);
* rootless: ``~/.cache/jailpy/ids`` of the caller's home in the password database (not $HOME or
  $XDG_*: every jailpy process of one user must see the same directory, whatever its
  environment), else ``/tmp/jailpy-UID/ids``;
* in a user namespace other than the initial one (a container, ``unshare -U``, bubblewrap,
  jailpy) the same for root, and the /tmp directory is ``/tmp/jailpy-UID-MAP/ids``, MAP a hash
  of /proc/self/uid_map: uid 0 there is a different user in every such namespace.

The slot is the lease holder's while it holds an exclusive flock(2) on that file: an open file
description that only the supervisor has (close-on-exec; jailpy's set-up processes close every fd
they do not need first thing), so the kernel drops the lock when that process dies, SIGKILL
included.  Lock files are never removed (a removed file could be locked again by two holders).

Each lock file holds a record, written when the slot is taken and emptied when it is released
cleanly: the host ids, the writable bind sources, when the lease began, the holder's pid.  A
record found in a slot one can lock means its holder died without releasing it; the next taker
then (1) skips the slot while a process of those uids still runs (a SIGKILLed jailpy's sandbox
may still be exiting: /proc/PID/status), and (2) clears the setuid/setgid bits that sandbox may
have left in those binds (:mod:`jailpy.setid`) before it uses the slot.  A slot whose binds could
not be checked in full (a tree beyond jailpy's bounds, an unreadable directory) is marked
``retired`` and never taken again: its uid might still be reachable through a setuid file.  Remove
the tree, then the lock file, to return it.

The caller's own ids (rootless without a subuid range) are not a slot: then the lease, from a
pool of ``OWN_LEASES`` lock files ``own-N``, only carries the record, so a SIGKILLed jailpy's
binds are still checked (for files of the caller's ids changed since the lease began).

A Sandbox holds one lease for its lifetime (its runs share one user namespace); jailpy.run() and
the CLI one per run.  It is released at Sandbox.close() and when the Sandbox is collected; a run
after close(), or in a process forked from the Sandbox's owner, takes one again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pwd
import stat
import sys
import threading
import time

from . import setid, userns
from .errors import HostError

OWN_LEASES = 4096
"""Lock files for sandboxes with the caller's own ids (concurrent ones of one caller)."""
SINCE_MARGIN = 0.05
"""Seconds before a lease or run begins that the ctime filter of the caller's own ids reaches back:
the kernel stamps ctime with a coarse clock (ktime_get_coarse_real_ts64), up to a jiffy (10 ms at
HZ=100) behind time.time()."""


def lease_dir() -> str:
    """The caller's lease directory (see the module docstring), created 0700.  Raises HostError
    when it is not a directory of the caller's that others cannot write."""
    uid = os.getuid()
    if uid == 0 and not userns.in_nested_userns():
        candidates = ["/run/jailpy/ids"]
    else:
        candidates = []
        try:
            home = pwd.getpwuid(uid).pw_dir
            st = os.lstat(home)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
                candidates.append(os.path.join(home, ".cache", "jailpy", "ids"))
        except (KeyError, OSError):
            pass
        if userns.in_nested_userns():
            # uid N of a user namespace is another user in each namespace (unshare -r makes everyone
            # uid 0): name the directory by this namespace's map too
            import hashlib

            rows = repr(userns.id_map("uid")).encode()
            candidates.append(f"/tmp/jailpy-{uid}-{hashlib.sha256(rows).hexdigest()[:12]}/ids")
        else:
            candidates.append(f"/tmp/jailpy-{uid}/ids")
    err = ""
    for d in candidates:
        try:
            parent = os.path.dirname(d)
            os.makedirs(parent, mode=0o700, exist_ok=True)
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
            for p in (parent, d):
                st = os.lstat(p)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
                    raise HostError(f"{p} must be a directory of uid {uid} that no one else can write "
                                    f"(it is not: remove it and run again)")
            if not os.access(d, os.W_OK | os.X_OK):  # a home bound read-only (bubblewrap --ro-bind / /)
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return d
        except OSError as e:
            err = f"{d}: {e.strerror}"
    raise HostError(f"no directory for jailpy's id leases: {err}")


def _open_dir(d: str) -> int:
    return os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _read_record(fd: int) -> dict | None:
    data = os.pread(fd, 1 << 16, 0)
    if not data.strip():
        return None
    try:
        rec = json.loads(data)
        return rec if isinstance(rec, dict) else {"retired": True, "why": "unreadable record"}
    except ValueError:
        return {"retired": True, "why": "unreadable record"}  # a torn write: keep the slot out of use


def _write_record(fd: int, rec: dict | None) -> None:
    data = b"" if rec is None else json.dumps(rec).encode() + b"\n"
    os.pwrite(fd, data, 0)  # write first, then cut: the file never looks empty while a record is due
    os.ftruncate(fd, len(data))


def _ids_running(uids: set[int]) -> int | None:
    """A pid whose real, effective, saved or filesystem uid is one of ``uids`` (from
    /proc/PID/status, proc(5)), or None.  Zombies do not count: they run nothing, and those of a
    SIGKILLed jailpy wait for init to reap them."""
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"State:") and line.split()[1:2] in ([b"Z"], [b"X"]):
                        break
                    if line.startswith(b"Uid:"):
                        if uids.intersection(int(x) for x in line.split()[1:]):
                            return int(pid)
                        break
        except (OSError, ValueError):
            continue
    return None


class Lease:
    """One slot (or own-ids record) held by this process; see the module docstring.  ``ids`` is
    the IdPlan of the slot.  Thread-safe: a run's end and close() may come from two threads."""

    def __init__(self, fd: int, name: str, ids: userns.IdPlan, binds: list[str], own: bool) -> None:
        self.fd: int | None = fd
        self.name, self.ids, self.binds, self.own = name, ids, binds, own
        self.since = time.time()
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._dirty = False  # a run may have changed the binds since they were last checked in full
        self._release_pending = False
        self._run_since = self.since
        self._strip_ns: int | None = None  # rootless: a user namespace to chmod in (setid.strip)
        self.last: dict | None = None  # what the last check found (Result.setid_strip)
        _write_record(fd, self.record())

    @property
    def held(self) -> bool:
        """Whether this process holds the lease (a process forked from the holder does not: its
        sandboxes would share the holder's ids)."""
        return self.fd is not None and self._owner == os.getpid()

    def record(self) -> dict:
        return {"v": 1, "pid": os.getpid(), "since": self.since, "uids": list(self.ids.host_uids),
                "gids": list(self.ids.host_gids), "own": self.own, "binds": self.binds}

    def begin(self) -> None:
        """A run starts: its changes must be checked (by :meth:`after_run` or at release)."""
        with self._lock:
            self._dirty = bool(self.binds)
            self._run_since = time.time()

    def _strip(self, since: float) -> dict:
        return setid.strip(self.binds, self.ids.host_uids, self.ids.host_gids,
                           since - SINCE_MARGIN if self.own else None, self._namespace)

    def _namespace(self) -> int:
        if self._strip_ns is None:
            self._strip_ns = userns.create_strip_namespace(self.ids.host_uids, self.ids.host_gids)
        return self._strip_ns

    def after_run(self) -> None:
        """A run ended (its processes are gone unless it ended by an exception): clear the
        setuid/setgid bits it left in the writable binds (findings in ``last``), then do a
        release that :meth:`release` had to leave to this moment."""
        with self._lock:
            if not self.binds:
                self.last = None
            else:
                try:
                    self.last = self._strip(self._run_since)
                except Exception as e:  # noqa: BLE001 - a failed check must not lose the run's Result
                    self.last = {"cleared": [], "cleared_count": 0, "checked": 0, "complete": False,
                                 "detail": f"check failed: {e}"}
                # a run that raised may still have processes: check again at release
                self._dirty = not self.last["complete"] or sys.exc_info()[0] is not None
            if self._release_pending:
                self._release_locked(strip=True)

    def note(self, result):
        """``result`` with what the check after its run found (Result.setid_strip)."""
        result.setid_strip = self.last
        return result

    def release(self, busy=None, strip: bool = True) -> None:
        """Give the slot back: check the binds once more if a run may have changed them since
        (``strip``), empty the record, drop the lock.  ``busy``: a callable, True while a run
        is going; the release then happens when that run ends (:meth:`after_run`).  A process
        forked from the holder only closes its copy of the fd.  A check that could not finish
        leaves the record (the next taker checks again) or retires the slot."""
        with self._lock:
            if self.fd is None:
                return
            if busy is not None and busy():
                self._release_pending = True
                return
            self._release_locked(strip)

    def _release_locked(self, strip: bool) -> None:
        fd, self.fd = self.fd, None
        self._release_pending = False
        try:
            if self._owner != os.getpid():
                return  # a fork's copy: the lock and the record stay the holder's
            if self._dirty and self.binds and strip and not sys.is_finalizing():  # no fork at exit
                try:
                    self.last = self._strip(self._run_since)
                    self._dirty = not self.last["complete"]
                    if self._dirty:
                        _write_record(fd, dict(self.record(), retired=True, why=self.last["detail"]))
                except Exception:  # noqa: BLE001 - leave the record for the next taker
                    pass
            if not self._dirty:
                _write_record(fd, None)
        finally:
            os.close(fd)
            if self._strip_ns is not None:
                os.close(self._strip_ns)
                self._strip_ns = None


def take(uid: int | None, gid: int | None, mode: str, binds: list[str], prefer: str | None = None) -> Lease:
    """Lease host ids for a sandbox whose program runs as ``uid``/``gid`` inside (None: 0),
    with ``mode`` the policy's ``id_map`` and ``binds`` its writable bind sources (host paths).
    ``prefer``: a lock file name to try first (a Sandbox taking ids again after close()).
    Raises HostError when every slot is in use or retired, or no lease directory can be made;
    PolicyError for an id that cannot be mapped."""
    in_uid, in_gid = userns.inside_ids(uid, gid)
    rng = userns.choose(mode)
    if rng is None:
        names = [f"own-{i}" for i in range(OWN_LEASES)]
        plan_of = lambda i: userns.own_plan(in_uid, in_gid)  # noqa: E731
    else:
        names = [str(rng.uid + i * userns.SLOT_IDS) for i in range(rng.slots)]
        userns.slot_plan(rng, 0, in_uid, in_gid, mode == "single")  # bad ids fail before any lock is taken
        plan_of = lambda i: userns.slot_plan(rng, i, in_uid, in_gid, mode == "single")  # noqa: E731
    order = list(range(len(names)))
    if prefer in names:
        i = names.index(prefer)
        order = [i] + order[:i] + order[i + 1:]
    d = lease_dir()
    dfd = _open_dir(d)
    unusable = 0
    try:
        for i in order:
            try:
                fd = os.open(names[i], os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            except OSError as e:
                raise HostError(f"cannot open the id lease {d}/{names[i]}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                if not _usable(fd, rng is None):
                    unusable += 1
                    os.close(fd)
                    continue
                return Lease(fd, names[i], plan_of(i), list(binds), rng is None)
            except BaseException:
                os.close(fd)
                raise
    finally:
        os.close(dfd)
    what = "own-id leases" if rng is None else f"id slots of {rng.source}"
    extra = (f" ({unusable} of them retired, or held by a dead jailpy's sandbox that is still exiting: see the "
             f"lock files in {d})" if unusable else "")
    raise HostError(f"all {len(names)} {what} are in use{extra}; wait for a sandbox to end, or give jailpy a "
                    f"larger range")


def _usable(fd: int, own: bool) -> bool:
    """Whether a slot just locked may be taken: no record (released cleanly), or a stale one whose
    processes are gone and whose binds were checked in full now (then the record is emptied)."""
    rec = _read_record(fd)
    if rec is None:
        return True
    if rec.get("retired"):
        return False
    try:
        uids = [int(u) for u in rec.get("uids", [])]
        gids = [int(g) for g in rec.get("gids", [])]
        since = float(rec.get("since", 0))
    except (TypeError, ValueError):
        return False  # not a record jailpy wrote: leave the slot alone
    if not own and _ids_running(set(uids)) is not None:
        return False  # a dead jailpy's sandbox still exiting: take another slot
    binds = [b for b in rec.get("binds", []) if isinstance(b, str)]
    if binds:
        ns: list[int] = []

        def namespace() -> int:
            ns.append(userns.create_strip_namespace(tuple(uids), tuple(gids)))
            return ns[-1]

        try:
            found = setid.strip(binds, tuple(uids), tuple(gids),
                                since - SINCE_MARGIN if rec.get("own") else None, namespace)
        except Exception:  # noqa: BLE001 - cannot check now (no fork, no newuidmap): leave it for later
            return False
        finally:
            for f in ns:
                os.close(f)
        if not found["complete"]:
            _write_record(fd, dict(rec, retired=True, why=found["detail"]))
            return False
    _write_record(fd, None)
    return True
