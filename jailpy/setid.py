"""Host side: clear the setuid/setgid bits a sandbox left in its writable binds.

A file of the sandbox's host uid with S_ISUID, left in a directory other users can reach, hands
that uid to anyone who runs it (and with it the power to signal that slot's next sandbox and to
rewrite what it writes).  Seccomp may deny setting those bits (the default and strict policies);
this check is the layer behind it, and the only one with ``--seccomp none``, ``docker-like`` or a
policy of your own that allows chmod.  After each run, and before a slot whose holder died is
used again (:mod:`jailpy.idlease`), :func:`strip` walks each writable bind source and clears
S_ISUID and S_ISGID on regular files and directories

* owned by the sandbox's host uids or gids (a slot's ids are no one else's), or
* with the caller's own ids (rootless, no subuid range): only regular files whose ctime is not
  older than the run (chmod, creat, link and rename set it, and no one can set it back:
  inode(7)), so the caller's own setuid files and setgid directories are left alone.

What it covers: everything below the bind source as the host sees it, *filesystems mounted
below it included* (and btrfs subvolumes, whose st_dev differs without a mount): the sandbox's
bind is recursive (open_tree(2) AT_RECURSIVE in :mod:`jailpy.rootfs`), so the program could
write there too.  A directory reached again through a bind mount of itself or of a directory
above it is not walked twice.  It never follows a symbolic link (openat2(2) RESOLVE_NO_SYMLINKS
for the bind source, O_NOFOLLOW and fstatat(AT_SYMLINK_NOFOLLOW) below it) and checks that what
it opens is what it stat'ed.  Residual: a mount the host adds or removes below a bind source
while the sandbox runs makes the host's view differ from the one the sandbox wrote through.

How it bounds its cost (the tree may be a hostile program's):

* Depth costs nothing extra.  The walk holds one directory fd, not one per level: it reads a
  directory's entries at once (keeping only the names of its subdirectories), goes down by name
  and comes back up with ``..``, checked to be the directory it came from (st_dev, st_ino); when
  that fails (a directory renamed meanwhile) it opens the parent again from the bind source with
  openat2(2) RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, a path of at most ``_SEGMENT`` bytes at a time.
  So a deep tree costs what a wide one does: a name per level.
* At most ``MAX_ENTRIES`` names per check, all binds together.  Names, not inodes: each name
  costs one fstatat(2) whatever it points to, and hard links cost a program no inode, so a
  budget of inodes would let a million links of one file make the walk as long as it likes.  An
  inode seen under several names is cleared (and counted in ``cleared_count``) once.  The budget
  is paid for: every name the walk looks at took a run a syscall to make (link(2), about 3 us
  here, against about 7 us of walking), so a run can make the check cost at most a small
  multiple of its own time, and never more than ``MAX_ENTRIES`` names (about 7 s here).
* A :class:`Stop` (the CLI's SIGTERM or Ctrl-C after the run, ``Sandbox.send_signal`` or
  ``kill()`` between runs) ends the walk at its next name; a rootless walk's process is
  SIGKILLed.

Beyond the budget, when stopped, for a directory it cannot read that the sandbox could have
written into (its own, or one anyone may write and search), or when the tree changed under it,
the check reports itself incomplete (``complete: False`` and why, never ``True`` for a part it
did not see).  :mod:`jailpy.idlease` then keeps the slot out of use until a later check of those
binds finishes (see there why that, and not retiring the slot for good).

As root the walk runs in this process.  A rootless caller cannot chmod files of its subordinate
ids: the walk then runs in a child that joined a user namespace mapping the slot's ids and the
caller's own (:func:`jailpy.userns.strip_plan`), where the caller has CAP_FOWNER and
CAP_DAC_READ_SEARCH over inodes of those ids (capabilities(7), user_namespaces(7)).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import threading

from . import _syscalls as sc
from .errors import HostError

MAX_ENTRIES = 1_000_000
"""Names (directory entries) one check looks at, all writable binds together: about 7 s of
walking here, the most one check can add to the time a judge waits, and more than a program
makes in a usual time limit."""
MAX_LISTED = 50
"""Cleared paths listed in the report (all are cleared)."""
PATH_SHOWN = 1024
"""Characters of a path a report shows (a longer one keeps its start and its end)."""
_SEGMENT = 3072
"""Bytes of a relative path given to one openat2(2) when a directory is opened again from the
bind source (PATH_MAX is 4096)."""
_BITS = stat.S_ISUID | stat.S_ISGID
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_UP_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_BENEATH = sc.RESOLVE_BENEATH | sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_NO_MAGICLINKS


def _printable(path: str) -> str:
    """A path for JSON: bytes that are not UTF-8 (surrogate escapes) become U+FFFD; one longer
    than PATH_SHOWN characters keeps its start and its end."""
    path = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(path) > PATH_SHOWN:
        path = f"{path[:PATH_SHOWN // 4]}/.../{path[-(PATH_SHOWN * 3 // 4):]}"
    return path


class Stop:
    """Asks a check to stop early: :meth:`set` may be called from a signal handler or another
    thread.  The walk stops at its next name; a walk running in a child process (rootless) is
    SIGKILLed (pidfd_send_signal(2)).  The check then reports itself incomplete."""

    def __init__(self) -> None:
        self._set = False
        self._lock = threading.RLock()  # reentrant: a signal handler may come while this thread holds it
        self._pidfd: int | None = None

    def set(self) -> None:
        self._set = True
        with self._lock:
            if self._pidfd is not None:
                try:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                except OSError:
                    pass

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def _watch(self, pidfd: int | None) -> None:
        """The walking child's pidfd while it runs (None once it is done, before it is reaped)."""
        with self._lock:
            self._pidfd = pidfd
        if pidfd is not None and self._set:
            self.set()


class _Frame:
    """A directory on the way down: its name in its parent, identity, subdirectories to visit."""

    __slots__ = ("name", "ident", "subdirs")

    def __init__(self, name: str, ident: tuple[int, int]) -> None:
        self.name, self.ident = name, ident
        self.subdirs: list[str] = []


class _Walk:
    def __init__(self, uids: tuple[int, ...], gids: tuple[int, ...], since: float | None,
                 budget: int | None = None, stop: Stop | None = None) -> None:
        self.uids, self.gids, self.since = set(uids), set(gids), since
        self.budget, self.stop = MAX_ENTRIES if budget is None else budget, stop
        self.cleared: list[str] = []
        self.ncleared = 0
        self.checked = 0
        self.halted = False  # out of budget, or asked to stop: nothing more is looked at
        self.detail: str | None = None
        self.src = ""

    def incomplete(self, why) -> None:
        """Note why the check is incomplete (the first reason is kept); ``why``: a string, or a
        callable making one (paths of deep trees are built only when needed)."""
        if self.detail is None:
            self.detail = why() if callable(why) else why

    def spend(self, n: int = 1) -> bool:
        """Count ``n`` names looked at; False (and the walk halted) once the budget is spent or
        a stop was asked."""
        if self.halted:
            return False
        if self.stop is not None and self.stop.is_set():
            self.incomplete("stopped before the end (jailpy was asked to stop: a signal, or Sandbox.kill())")
            self.halted = True
            return False
        if self.checked + n > self.budget:
            self.incomplete(f"more than {self.budget} names in the writable binds; the rest was not checked")
            self.halted = True
            return False
        self.checked += n
        return True

    def _wanted(self, st: os.stat_result) -> bool:
        if not st.st_mode & _BITS:
            return False
        if self.since is not None:  # the caller's own ids: files this run touched
            return stat.S_ISREG(st.st_mode) and st.st_ctime >= self.since and (
                st.st_uid in self.uids or st.st_gid in self.gids)
        return (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)) and (
            st.st_uid in self.uids or st.st_gid in self.gids)

    def _reachable(self, st: os.stat_result) -> bool:
        """Whether the sandbox may have put something into a directory this walk cannot read: it
        is the sandbox's, or anyone may write and search it (another user's 0700 directory in a
        bind was closed to the sandbox as well)."""
        return st.st_uid in self.uids or st.st_gid in self.gids or st.st_mode & 0o003 == 0o003

    def _path(self, frames: list[_Frame], name: str | None = None) -> str:
        parts = [self.src] + [f.name for f in frames[1:]] + ([name] if name is not None else [])
        return _printable("/".join(parts))

    def _clear(self, dfd: int, name: str, st: os.stat_result, where) -> None:
        """Clear the bits of ``name`` in ``dfd`` if it is still the inode ``st`` describes;
        ``where``: its host path, or a callable making it."""
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return  # gone meanwhile
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not self._wanted(now):
                return  # replaced, or cleared already through another of its names
            mode = stat.S_IMODE(now.st_mode) & ~_BITS
            try:
                os.chmod(f"/proc/self/fd/{fd}", mode)  # an O_PATH fd: chmod through its magic link
            except FileNotFoundError:  # no /proc here: open the inode itself
                with os.fdopen(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                                       | os.O_NOCTTY, dir_fd=dfd), "rb", buffering=0) as f:
                    if (os.fstat(f.fileno()).st_ino) == st.st_ino:
                        os.fchmod(f.fileno(), mode)
            self.ncleared += 1
            if len(self.cleared) < MAX_LISTED:
                self.cleared.append(where() if callable(where) else where)
        except OSError as e:
            self.incomplete(lambda: f"cannot clear the setuid/setgid bits of "
                                    f"{where() if callable(where) else where}: {e.strerror}")
        finally:
            os.close(fd)

    def root(self, src: str) -> None:
        """Check the bind source ``src`` and, for a directory, everything below it."""
        self.src = src
        try:
            pfd = sc.openat2(-100, src, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW, sc.RESOLVE_NO_SYMLINKS)
        except OSError as e:
            if e.errno != errno.ENOENT:  # a bind source removed since: nothing of it is left to reach
                self.incomplete(f"cannot open {_printable(src)}: {e.strerror}")
            return
        try:
            st = os.fstat(pfd)
            if not self.spend():
                return
            if self._wanted(st):
                self._clear(pfd, ".", st, _printable(src)) if stat.S_ISDIR(st.st_mode) \
                    else self._clear_path_fd(pfd, st, _printable(src))
            if stat.S_ISDIR(st.st_mode):
                try:
                    dfd = os.open(".", _DIR_FLAGS, dir_fd=pfd)
                except OSError as e:
                    self.incomplete(f"cannot read {_printable(src)}: {e.strerror}")
                    return
                self._tree(pfd, dfd, (st.st_dev, st.st_ino))
        finally:
            os.close(pfd)

    def _clear_path_fd(self, pfd: int, st: os.stat_result, path: str) -> None:
        """A bind source that is a file: ``pfd`` is its O_PATH fd."""
        try:
            os.chmod(f"/proc/self/fd/{pfd}", stat.S_IMODE(st.st_mode) & ~_BITS)
            self.ncleared += 1
            self.cleared.append(path)
        except OSError as e:
            self.incomplete(f"cannot clear the setuid/setgid bits of {path}: {e.strerror}")

    def _list(self, dfd: int, frames: list[_Frame]) -> None:
        """Look at every entry of the directory ``dfd`` (the last of ``frames``): clear what is
        wanted, keep the names of its subdirectories.  Mount points are seen as what is mounted
        there (fstatat(2) crosses mounts; AT_SYMLINK_NOFOLLOW only keeps symlinks)."""
        top = frames[-1]
        try:
            it = os.scandir(dfd)  # on a dup of dfd: closed with the iterator
        except OSError as e:
            self.incomplete(lambda: f"cannot read {self._path(frames)}: {e.strerror}")
            return
        with it:
            while True:
                try:
                    entry = next(it)
                except StopIteration:
                    break
                except OSError as e:
                    self.incomplete(lambda: f"cannot read {self._path(frames)}: {e.strerror}")
                    break
                if not self.spend():
                    break
                name = entry.name
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                mode = st.st_mode
                if stat.S_ISLNK(mode):
                    continue  # never followed
                if mode & _BITS and self._wanted(st):
                    self._clear(dfd, name, st, lambda: self._path(frames, name))
                if stat.S_ISDIR(mode):
                    top.subdirs.append(name)

    def _tree(self, pfd: int, dfd: int, ident: tuple[int, int]) -> None:
        """Depth first below the bind source ``pfd`` (O_PATH), whose directory fd ``dfd`` this
        takes over; one directory fd open at a time (see the module docstring)."""
        frames = [_Frame("", ident)]
        above = {ident}  # the directories on the way down: a bind mount of one of them is not entered
        cur = dfd
        try:
            self._list(cur, frames)
            while frames and not self.halted:
                top = frames[-1]
                if top.subdirs:
                    name = top.subdirs.pop()
                    try:
                        sub = os.open(name, _DIR_FLAGS, dir_fd=cur)
                    except OSError as e:
                        self._unreadable(cur, name, frames, e)
                        continue
                    sst = os.fstat(sub)
                    sident = (sst.st_dev, sst.st_ino)
                    if sident in above:
                        os.close(sub)
                        continue
                    os.close(cur)
                    cur = sub
                    frames.append(_Frame(name, sident))
                    above.add(sident)
                    self._list(cur, frames)
                    continue
                frames.pop()
                above.discard(top.ident)
                if not frames:
                    break
                up = self._up(cur, pfd, frames)
                os.close(cur)
                cur = up
                if cur < 0:
                    break
        finally:
            if cur >= 0:
                os.close(cur)

    def _unreadable(self, dfd: int, name: str, frames: list[_Frame], e: OSError) -> None:
        """The subdirectory ``name`` of ``dfd`` could not be opened: the check is incomplete if
        the sandbox could have written into it."""
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return  # gone, or replaced by a file or a symlink since: looked at (or not there) any more
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return
        if self._reachable(st):
            self.incomplete(lambda: f"cannot read {self._path(frames, name)}: {e.strerror}")

    def _up(self, cur: int, pfd: int, frames: list[_Frame]) -> int:
        """An fd (O_PATH) of the directory ``frames[-1]``, the parent of ``cur``: its ``..`` when
        that is still it, else opened again from the bind source; -1 (the check incomplete) when
        the tree changed so that it cannot be found."""
        want = frames[-1].ident
        try:
            up = os.open("..", _UP_FLAGS, dir_fd=cur)
        except OSError:
            up = -1
        if up >= 0:
            st = os.fstat(up)
            if (st.st_dev, st.st_ino) == want:
                return up
            os.close(up)
        return self._reopen(pfd, frames)

    def _reopen(self, pfd: int, frames: list[_Frame]) -> int:
        """Open the last of ``frames`` again from the bind source ``pfd``, RESOLVE_BENEATH, a
        path of at most _SEGMENT bytes at a time (each name counts against the budget)."""
        names = [f.name for f in frames[1:]]
        if not self.spend(len(names)):
            return -1
        fd = os.dup(pfd)
        i = 0
        while i < len(names) and fd >= 0:
            seg: list[str] = []
            size = 0
            while i < len(names):
                n = len(os.fsencode(names[i])) + 1  # a name is at most 255 bytes: one always fits
                if seg and size + n > _SEGMENT:
                    break
                seg.append(names[i])
                size += n
                i += 1
            try:
                nxt = self._beneath(fd, "/".join(seg))
            finally:
                os.close(fd)
            fd = nxt
        if fd >= 0:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == frames[-1].ident:
                return fd
            os.close(fd)
        self.incomplete(lambda: f"the tree changed while it was checked: {self._path(frames)} moved")
        return -1

    @staticmethod
    def _beneath(fd: int, rel: str) -> int:
        for _ in range(8):  # EAGAIN: a rename elsewhere in the filesystem meanwhile (openat2(2))
            try:
                return sc.openat2(fd, rel, _UP_FLAGS, _BENEATH)
            except BlockingIOError:
                continue
            except OSError:
                return -1
        return -1

    def report(self) -> dict:
        return {"cleared": self.cleared, "cleared_count": self.ncleared, "checked": self.checked,
                "complete": self.detail is None, "detail": self.detail}


def walk(binds: list[str], uids: tuple[int, ...], gids: tuple[int, ...], since: float | None,
         stop: Stop | None = None, budget: int | None = None) -> dict:
    """Check ``binds`` in this process (see the module docstring) and return the report:
    ``cleared`` (up to MAX_LISTED host paths), ``cleared_count`` (inodes), ``checked`` (names
    looked at), ``complete`` and ``detail`` (why not).  ``since``: None for a slot's ids, else the
    time (epoch seconds) from which the caller's own files count.  ``stop``: see :class:`Stop`;
    ``budget``: names at most (None: MAX_ENTRIES).  Never raises for the tree's sake."""
    w = _Walk(uids, gids, since, budget, stop)
    for src in binds:
        if w.halted:
            break
        w.root(src)
    return w.report()


def strip(binds: list[str], uids: tuple[int, ...], gids: tuple[int, ...], since: float | None, namespace,
          stop: Stop | None = None, budget: int | None = None) -> dict:
    """Clear the setuid/setgid bits in ``binds`` (see :func:`walk` for the arguments and the
    report).  As root, or for the caller's own ids (``since`` given), in this process; else in a
    forked child that joined the user namespace ``namespace()`` returns (an fd made from
    :func:`jailpy.userns.strip_plan`, which maps ``uids[i]`` and ``gids[i]`` to ``i``); ``stop``
    SIGKILLs that child (the report then says the check was stopped).  Raises HostError or
    OSError when that namespace or the child cannot be made, or the child failed (not for what
    it found in the tree: that is in the report)."""
    if not binds:
        return walk([], uids, gids, since)
    if os.getuid() == 0 or since is not None:
        return walk(binds, uids, gids, since, stop, budget)
    nsfd = namespace()
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                if stop is not None:  # this process's copy: another thread may have held its lock
                    stop._lock, stop._pidfd = threading.RLock(), None
                sc.setns(nsfd, sc.CLONE_NEWUSER)  # every capability there; our ids stay (user_namespaces(7))
                # stat(2) there shows the ids as that namespace numbers them: host_uids[i] is i
                out = walk(binds, tuple(range(len(uids))), tuple(range(len(gids))), since, stop, budget)
            except BaseException as e:  # noqa: BLE001 - report it, never return into the caller's code
                out = {"error": str(e) or type(e).__name__}
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    chunks = []
    done = False
    try:
        if stop is not None:
            stop._watch(pidfd)
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
        done = True
    finally:
        if stop is not None:
            stop._watch(None)
        if not done:  # an exception here (KeyboardInterrupt): do not wait for the whole walk
            try:
                os.kill(pid, signal.SIGKILL)  # not reaped yet: still our child
            except OSError:
                pass
        os.close(r)
        os.waitpid(pid, 0)
        if pidfd is not None:
            os.close(pidfd)
    try:
        out = json.loads(b"".join(chunks))
    except ValueError:
        if stop is not None and stop.is_set():
            return {"cleared": [], "cleared_count": 0, "checked": 0, "complete": False,
                    "detail": "stopped before the end (jailpy was asked to stop: a signal, or Sandbox.kill())"}
        out = {"error": "its process ended without a report"}
    if "error" in out:
        raise HostError(f"cannot check the writable binds for setuid files: {out['error']}")
    return out
