"""Host side: leases on host ids, so no two running sandboxes share a host uid.

A :class:`Lease` holds one slot of the id range :func:`jailpy.userns.choose` finds (see
:mod:`jailpy.userns` for the ranges and the slot size): a lock file per slot, named by the slot's
first host uid, in a directory only the caller can write (:func:`lease_dir`) --

* root: ``/run/jailpy/ids`` (a tmpfs: a reboot forgets the leases, and with them the records
  below; nothing of a sandbox runs across a reboot);
* rootless: ``~/.cache/jailpy/ids`` of the caller's home in the password database (not $HOME or
  $XDG_CACHE_HOME: every jailpy process of one user must see the same directory whatever its
  environment, or two of them could lease the same slot), when that home is a directory of the
  caller's it can write; else, for a user without one, ``$XDG_RUNTIME_DIR/jailpy/ids`` when that
  variable is set (every jailpy of that user must then see the same one); else jailpy refuses to
  run, with the fix;
* in a user namespace other than the initial one (a container, ``unshare -U``, bubblewrap,
  jailpy) the same for root, the home may also be that of the uid the namespace maps the caller
  to (``unshare -r`` makes a user uid 0, whose home in the password database is not its own),
  and the last part is ``ids-MAP``, MAP a hash of /proc/self/uid_map: uid N there is a different
  user in every such namespace, and its records must not be read as another's.  As a last
  resort there: ``/tmp/jailpy-UID-MAP/ids`` *when /tmp belongs to a uid of this namespace* (the
  /tmp a jailpy sandbox, bubblewrap's ``--tmpfs /tmp`` or a container made), never the host's
  /tmp seen through ``unshare -U``, which every local user can write.

Never a fixed name in a directory another user can write and the caller could not then fix
(``/tmp/jailpy-UID`` once: another user could create it first and block every run for good);
each directory is checked part by part (:func:`jailpy.hostfiles.private_dir`: real directories
of the caller's, the last one 0700), and one that fails the check is refused with the fix
(XDG_RUNTIME_DIR comes before a namespace's /tmp, so it always is one).

The slot is the lease holder's while it holds an exclusive flock(2) on that file: an open file
description that only the supervisor has (close-on-exec; jailpy's set-up processes close every fd
they do not need first thing), so the kernel drops the lock when that process dies, SIGKILL
included.  Lock files are never removed (a removed file could be locked again by two holders).

Each lock file holds a record, written when the slot is taken and emptied when it is released
cleanly: the host ids, the writable bind sources, when the lease began, the holder's pid.  A
record found in a slot one can lock means its holder died without releasing it; the next taker
then (1) skips the slot while a process of those uids still runs (a SIGKILLed jailpy's sandbox
may still be exiting: /proc/PID/status), and (2) clears the setuid/setgid bits that sandbox may
have left in those binds (:mod:`jailpy.setid`) before it uses the slot.

A check that could not finish (a tree beyond :data:`jailpy.setid.MAX_ENTRIES` names, a directory
jailpy cannot read, a signal that stopped it) leaves the slot *waiting*: the record stays, with
``unchecked`` (why) and ``checked_at``, and the slot is not given out until a later check of
those binds finishes.  Takers use free slots first; only when none is left do they check the
waiting ones again, the longest-waiting first, until one passes or about MAX_ENTRIES names were
looked at in that take (so a take costs at most about two checks).  Why not retire the slot for
good, as jailpy once did: a program that can make the check fail (66 nested directories did,
when depth was bounded; a million hard links still do) would take one slot out of use per run,
for nothing, until the whole range is gone.  A waiting slot costs nothing while free ones are
left, and comes back by itself once the tree is removed or shrunk (a judge that deletes each
run's directory gets every slot back); a hostile tree that is kept keeps only its own slot out
of use, and the message that refuses a run when all are waiting names the bind to clean.
Meanwhile a setuid file deep in that tree still hands out that slot's uid, which no sandbox
then uses (so it reaches no running sandbox; it can still change the files that run left).
Records written by older versions with ``retired`` are treated as waiting.

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
import itertools
import json
import os
import pwd
import stat
import sys
import threading
import time

from . import setid, userns
from .errors import HostError
from .text import one_line

OWN_LEASES = 4096
"""Lock files for sandboxes with the caller's own ids (concurrent ones of one caller)."""
SINCE_MARGIN = 0.05
"""Seconds before a lease or run begins that the ctime filter of the caller's own ids reaches back:
the kernel stamps ctime with a coarse clock (ktime_get_coarse_real_ts64), up to a jiffy (10 ms at
HZ=100) behind time.time()."""


def _home(uid: int) -> str | None:
    """The home directory of ``uid`` in the password database (passwd(5)) when it is a
    directory of that uid's (stat(2), following a symlink to it), else None."""
    try:
        home = pwd.getpwuid(uid).pw_dir
        st = os.stat(home)
    except (KeyError, OSError):
        return None
    return home if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and home.startswith("/") else None


def _outer_home(uid: int) -> str | None:
    """In a user namespace: the home (password database) of the uid the parent namespace knows
    the caller as (/proc/self/uid_map), when it is a directory the caller owns here."""
    for inside, outside, count in userns.id_map("uid"):
        if inside <= uid < inside + count:
            try:
                home = pwd.getpwuid(outside + uid - inside).pw_dir
                st = os.stat(home)
            except (KeyError, OSError):
                return None
            return home if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and home.startswith("/") else None
    return None


def _namespace_tmp(uid: int, tag: str) -> str | None:
    """In a user namespace whose /tmp belongs to one of its uids (not the overflow uid: the
    host's /tmp seen through ``unshare -U``): ``/tmp/jailpy-UID-MAP``, made 0700 and checked to
    be the caller's.  None when /tmp is not such a directory.  Raises UnsafeDirectory when the
    name is taken by someone else, OSError when it cannot be made."""
    from .hostfiles import UnsafeDirectory

    try:
        st = os.lstat("/tmp")
        with open("/proc/sys/kernel/overflowuid") as f:
            overflow = int(f.read())
    except (OSError, ValueError):
        return None
    mapped = any(inside <= st.st_uid < inside + count for inside, _, count in userns.id_map("uid"))
    if not stat.S_ISDIR(st.st_mode) or st.st_uid == overflow or not mapped:
        return None
    d = f"/tmp/jailpy-{uid}-{tag}"
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)  # sticky /tmp: no one else can rename or remove a directory of ours
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise UnsafeDirectory(errno.EPERM, f"{d} is not a private directory of uid {uid} (owner {st.st_uid}, "
                                           f"mode {stat.S_IMODE(st.st_mode):04o})")
    return d


def lease_dir() -> str:
    """The caller's lease directory (see the module docstring), created 0700 and checked part by
    part (:func:`jailpy.hostfiles.private_dir`).  Raises HostError, in one line that names the
    fix, when there is none: a directory on the way is not the caller's or others can write it,
    it cannot be made, or a rootless caller has neither a home directory nor XDG_RUNTIME_DIR."""
    from .hostfiles import UnsafeDirectory, private_dir

    uid = os.getuid()
    nested = userns.in_nested_userns()
    tag = ""
    if nested:
        import hashlib

        tag = hashlib.sha256(repr(userns.id_map("uid")).encode()).hexdigest()[:12]
    leaf = f"ids-{tag}" if nested else "ids"
    if uid == 0 and not nested:
        tries = [("root", "/run", ("jailpy", leaf))]
    else:
        homes = [h for h in (_home(uid), _outer_home(uid) if nested else None) if h is not None]
        tries = [("home", os.path.join(h, ".cache"), ("jailpy", leaf)) for h in dict.fromkeys(homes)]
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        if runtime.startswith("/"):
            tries.append(("runtime", runtime, ("jailpy", leaf)))
        if nested:
            tries.append(("tmp", "", ("ids",)))
    tried = [] if any(kind == "home" for kind, _, _ in tries) else ["no home directory of its own"]
    if not any(kind == "runtime" for kind, _, _ in tries):
        tried.append("XDG_RUNTIME_DIR is not set")
    for kind, base, parts in tries:
        path = os.path.join(base or f"/tmp/jailpy-{uid}-{tag}", *parts)
        try:
            if kind == "tmp":
                base = _namespace_tmp(uid, tag)
                if base is None:
                    tried.append("/tmp is not this user namespace's")
                    break
            elif kind == "home" and not os.path.lexists(base):
                os.mkdir(base, 0o700)  # ~/.cache of a new account (XDG: made 0700), in a home of the caller's
            d = private_dir(base, parts)
            if not os.access(d, os.W_OK | os.X_OK):  # a home bound read-only (bubblewrap --ro-bind / /)
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return d
        except UnsafeDirectory as e:
            raise HostError(f"the id lease directory {path} is unsafe: {e}; fix or remove it"
                            + (", or set XDG_RUNTIME_DIR to a directory only you can write" if kind == "tmp"
                               else "")) from None
        except OSError as e:
            if kind == "root" or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise HostError(f"cannot create the id lease directory {path}: {e.strerror}") from None
            tried.append(f"{path}: {e.strerror}")  # a read-only home: the next place
    raise HostError(f"no directory for jailpy's id leases (uid {uid}: {'; '.join(tried)}): give the user a home "
                    f"directory of its own, or set XDG_RUNTIME_DIR to a directory only it can write (every jailpy "
                    f"of this user must see the same one)")


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


def _waiting(rec: dict) -> str | None:
    """Why the slot of record ``rec`` waits for a check of its binds that finishes, or None."""
    if rec.get("unchecked"):
        return str(rec["unchecked"])
    if rec.get("retired"):  # written by jailpy before waiting slots: means the same now
        return str(rec.get("why") or "a check that did not finish")
    return None


def _waiting_record(rec: dict, why: str) -> dict:
    rec = {k: v for k, v in rec.items() if k not in ("retired", "why")}
    return dict(rec, unchecked=why, checked_at=time.time())


class Lease:
    """One slot (or own-ids record) held by this process; see the module docstring.  ``ids`` is
    the IdPlan of the slot.  Thread-safe: a run's end and close() may come from two threads;
    :meth:`interrupt` also from a signal handler."""

    def __init__(self, fd: int, name: str, ids: userns.IdPlan, binds: list[str], own: bool) -> None:
        self.fd: int | None = fd
        self.name, self.ids, self.binds, self.own = name, ids, binds, own
        self.since = time.time()
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._dirty = False  # a run may have changed the binds since they were last checked
        self._release_pending = False
        self._run_since = self.since
        self._strip_ns: int | None = None  # rootless: a user namespace to chmod in (setid.strip)
        self.stop = setid.Stop()  # ends a check that is going (interrupt())
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

    def interrupt(self) -> None:
        """Stop a check of the binds that is going (setid.Stop): it reports itself incomplete
        and the slot waits for the next check (see the module docstring).  Safe from a signal
        handler and from another thread; no-op when no check is going."""
        self.stop.set()

    def _strip(self, since: float) -> dict:
        return setid.strip(self.binds, self.ids.host_uids, self.ids.host_gids,
                           since - SINCE_MARGIN if self.own else None, self._namespace, stop=self.stop)

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
                self._dirty = sys.exc_info()[0] is not None
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
        forked from the holder only closes its copy of the fd.  When the last check did not
        finish the record stays, marked ``unchecked``: the slot waits for a check that does;
        when no check could be made at all, the record stays as it is (the next taker checks)."""
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
                    self._dirty = False
                except Exception:  # noqa: BLE001 - leave the record for the next taker
                    pass
            if self._dirty:
                return  # not checked since its last run: the record says what the next taker checks
            if self.binds and self.last is not None and not self.last["complete"]:
                _write_record(fd, _waiting_record(self.record(), self.last["detail"] or "incomplete"))
            else:
                _write_record(fd, None)
        finally:
            os.close(fd)
            if self._strip_ns is not None:
                os.close(self._strip_ns)
                self._strip_ns = None


def _slot_index(name: str | None, rng, count: int) -> int | None:
    """The index of the lease named ``name`` (a Sandbox taking its ids again), or None."""
    if name is None:
        return None
    if rng is None:
        i = int(name[4:]) if name.startswith("own-") and name[4:].isdigit() else -1
    else:
        off = int(name) - rng.uid if name.isdigit() else -1
        i = off // userns.SLOT_IDS if off >= 0 and off % userns.SLOT_IDS == 0 else -1
    return i if 0 <= i < count else None


def take(uid: int | None, gid: int | None, mode: str, binds: list[str], prefer: str | None = None) -> Lease:
    """Lease host ids for a sandbox whose program runs as ``uid``/``gid`` inside (None: 0),
    with ``mode`` the policy's ``id_map`` and ``binds`` its writable bind sources (host paths).
    ``prefer``: a lock file name to try first (a Sandbox taking ids again after close()).
    Free slots first; slots waiting for a check are checked again only when none is free (see
    the module docstring).  Raises HostError when every slot is in use or waiting, or no lease
    directory can be made; PolicyError for an id that cannot be mapped."""
    in_uid, in_gid = userns.inside_ids(uid, gid)
    rng = userns.choose(mode)
    # slot names are made as they are tried: root's default range has 32768 of them (a list of
    # them all cost 7 ms at every start)
    if rng is None:
        count = OWN_LEASES
        name_of = lambda i: f"own-{i}"  # noqa: E731
        plan_of = lambda i: userns.own_plan(in_uid, in_gid)  # noqa: E731
    else:
        count = rng.slots
        name_of = lambda i: str(rng.uid + i * userns.SLOT_IDS)  # noqa: E731
        userns.slot_plan(rng, 0, in_uid, in_gid, mode == "single")  # bad ids fail before any lock is taken
        plan_of = lambda i: userns.slot_plan(rng, i, in_uid, in_gid, mode == "single")  # noqa: E731
    own = rng is None
    first = _slot_index(prefer, rng, count)
    order = itertools.chain([first] if first is not None else [], (i for i in range(count) if i != first))
    d = lease_dir()
    dfd = _open_dir(d)
    exiting = 0
    waiting: list[tuple[float, int, str, str]] = []  # (checked_at, slot, a bind, why)
    try:
        for i in order:
            fd = _lock(dfd, name_of(i))
            if fd is None:
                continue  # in use
            try:
                rec = _read_record(fd)
                if (rec is None or _waiting(rec) is None) and _usable(fd, rec, own):
                    return Lease(fd, name_of(i), plan_of(i), list(binds), own)
                rec = _read_record(fd)  # a check that did not finish just now made it waiting
                if rec is not None and _waiting(rec) is not None:
                    waiting.append(_waiting_entry(rec, i))
                else:
                    exiting += 1
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        # no free slot: check the binds of waiting slots again, the longest-waiting first, until
        # one passes or about a check's worth of names was looked at
        looked = 0
        for _, i, _, _ in sorted(waiting):
            if looked >= setid.MAX_ENTRIES:
                break
            fd = _lock(dfd, name_of(i))
            if fd is None:
                continue
            try:
                found: dict = {}
                if _usable(fd, _read_record(fd), own, found):
                    return Lease(fd, name_of(i), plan_of(i), list(binds), own)
                looked += max(1, found.get("checked", 0))
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
    finally:
        os.close(dfd)
    what = "own-id leases" if own else f"id slots of {rng.source}"
    extra = ""
    if waiting:
        _, _, bind, why = waiting[0]
        extra += (f"; {len(waiting)} of them wait for a check of the writable binds they had, which could not "
                  f"finish ({one_line(bind or 'a bind')}: {one_line(why)}): remove or shrink those trees, and "
                  f"jailpy checks them again before it uses the slot")
    if exiting:
        extra += (f"; {exiting} of them were held by a dead jailpy whose sandbox is still exiting, or whose binds "
                  f"cannot be checked now (see the lock files in {d})")
    raise HostError(f"all {count} {what} are in use{extra}; wait for a sandbox to end, or give jailpy a "
                    f"larger range")


def _lock(dfd: int, name: str) -> int | None:
    """The lock file ``name`` in the lease directory ``dfd``, opened and locked (flock(2)
    LOCK_EX|LOCK_NB); None while another process holds it."""
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
    except OSError as e:
        raise HostError(f"cannot open the id lease {name}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _waiting_entry(rec: dict, i: int) -> tuple[float, int, str, str]:
    """(when its binds were last checked, slot, its first bind, why) of a waiting slot's record."""
    try:
        at = float(rec.get("checked_at", 0))
    except (TypeError, ValueError):
        at = 0.0
    binds = [b for b in rec.get("binds", []) if isinstance(b, str)] if isinstance(rec.get("binds"), list) else []
    return (at, i, setid._printable(binds[0]) if binds else "", _waiting(rec) or "")


def _usable(fd: int, rec: dict | None, own: bool, found: dict | None = None) -> bool:
    """Whether a slot just locked, with record ``rec``, may be taken: no record (released
    cleanly), or one whose processes are gone and whose binds were checked in full now (then the
    record is emptied).  A check that does not finish marks the slot waiting.  ``found``: filled
    with the check's report."""
    if rec is None:
        return True
    try:
        uids = [int(u) for u in rec["uids"]]
        gids = [int(g) for g in rec.get("gids", [])]
        since = float(rec.get("since", 0))
    except (KeyError, TypeError, ValueError):
        return False  # not a record jailpy wrote (a torn write): leave the slot alone
    if not own and _ids_running(set(uids)) is not None:
        return False  # a dead jailpy's sandbox still exiting: take another slot
    if not isinstance(rec.get("binds", []), list):
        return False
    binds = [b for b in rec.get("binds", []) if isinstance(b, str)]
    if binds:
        ns: list[int] = []

        def namespace() -> int:
            ns.append(userns.create_strip_namespace(tuple(uids), tuple(gids)))
            return ns[-1]

        try:
            out = setid.strip(binds, tuple(uids), tuple(gids),
                              since - SINCE_MARGIN if rec.get("own") else None, namespace)
        except Exception:  # noqa: BLE001 - cannot check now (no fork, no newuidmap): leave it for later
            return False
        finally:
            for f in ns:
                os.close(f)
        if found is not None:
            found.update(out)
        if not out["complete"]:
            _write_record(fd, _waiting_record(rec, out["detail"] or "incomplete"))
            return False
    _write_record(fd, None)
    return True
