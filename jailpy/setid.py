"""Host side: clear the setuid/setgid bits a sandbox left in its writable binds.

A file of the sandbox's host uid with S_ISUID, left in a directory other users can reach, hands
that uid to anyone who runs it (and with it the power to signal that slot's next sandbox and to
rewrite what it writes).  Seccomp may deny setting those bits (the default and strict policies);
this check is the layer behind it, and the only one with ``--seccomp none`` or a policy of your
own that allows chmod.  After each run, and before a slot whose holder died is used again
(:mod:`jailpy.idlease`), :func:`strip` walks each writable bind source and clears S_ISUID and
S_ISGID on regular files and directories

* owned by the sandbox's host uids or gids (a slot's ids are no one else's), or
* with the caller's own ids (rootless, no subuid range): only regular files whose ctime is not
  older than the run (chmod, creat, link and rename set it, and no one can set it back:
  inode(7)), so the caller's own setuid files and setgid directories are left alone.

The walk never follows a symbolic link (openat2(2) RESOLVE_NO_SYMLINKS for the bind source,
O_NOFOLLOW and fstatat(AT_SYMLINK_NOFOLLOW) below it), does not enter another filesystem (st_dev
of the bind source), and checks that what it opens is what it stat'ed.  It is bounded against a
hostile tree: at most ``MAX_ENTRIES`` inodes per check, all binds together, and ``MAX_DEPTH``
directory levels below a bind source (two open fds per level).  Beyond either bound, and for a
directory it cannot read that the sandbox could have written into (its own, or one anyone may
write and search), the check reports itself incomplete (``complete: False`` and why); idlease
then retires the slot.  Cost: one fstatat(2) per inode, about 7 us with Python's overhead (0.15 s
for 20,000 files), after every run: bind writable only what the program must write.

As root the walk runs in this process.  A rootless caller cannot chmod files of its subordinate
ids: the walk then runs in a child that joined a user namespace mapping the slot's ids and the
caller's own (:func:`jailpy.userns.strip_plan`), where the caller has CAP_FOWNER and
CAP_DAC_READ_SEARCH over inodes of those ids (capabilities(7), user_namespaces(7)).
"""

from __future__ import annotations

import errno
import json
import os
import stat

from . import _syscalls as sc
from .errors import HostError

MAX_ENTRIES = 1_000_000
"""Inodes one check looks at (all writable binds together): about 7 s of walking here, the most
one run can add to the time a judge waits, and more than a program makes in a usual time limit."""
MAX_DEPTH = 64
"""Directory levels below a bind source the check enters."""
MAX_LISTED = 50
"""Cleared paths listed in the report (all are cleared)."""
_BITS = stat.S_ISUID | stat.S_ISGID
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _printable(path: str) -> str:
    """A path for JSON: bytes that are not UTF-8 (surrogate escapes) become U+FFFD."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Walk:
    def __init__(self, uids: tuple[int, ...], gids: tuple[int, ...], since: float | None) -> None:
        self.uids, self.gids, self.since = set(uids), set(gids), since
        self.cleared: list[str] = []
        self.ncleared = 0
        self.checked = 0
        self.detail: str | None = None

    def incomplete(self, why: str) -> None:
        if self.detail is None:
            self.detail = why

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

    def _clear(self, dfd: int, name: str, st: os.stat_result, path: str) -> None:
        """Clear the bits of ``name`` in ``dfd`` if it is still the inode ``st`` describes."""
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return  # gone meanwhile
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not self._wanted(now):
                return
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
                self.cleared.append(_printable(path))
        except OSError as e:
            self.incomplete(f"cannot clear the setuid/setgid bits of {_printable(path)}: {e.strerror}")
        finally:
            os.close(fd)

    def root(self, src: str) -> None:
        """Check the bind source ``src`` and, for a directory, everything below it."""
        try:
            pfd = sc.openat2(-100, src, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW, sc.RESOLVE_NO_SYMLINKS)
        except OSError as e:
            if e.errno != errno.ENOENT:  # a bind source removed since: nothing of it is left to reach
                self.incomplete(f"cannot open {_printable(src)}: {e.strerror}")
            return
        try:
            st = os.fstat(pfd)
            self.checked += 1
            if self._wanted(st):
                self._clear(pfd, ".", st, src) if stat.S_ISDIR(st.st_mode) else self._clear_path_fd(pfd, st, src)
            if stat.S_ISDIR(st.st_mode):
                try:
                    dfd = os.open(".", _DIR_FLAGS, dir_fd=pfd)
                except OSError as e:
                    self.incomplete(f"cannot read {_printable(src)}: {e.strerror}")
                    return
                self._tree(dfd, src, st.st_dev)
        finally:
            os.close(pfd)

    def _clear_path_fd(self, pfd: int, st: os.stat_result, path: str) -> None:
        """A bind source that is a file: ``pfd`` is its O_PATH fd."""
        try:
            os.chmod(f"/proc/self/fd/{pfd}", stat.S_IMODE(st.st_mode) & ~_BITS)
            self.ncleared += 1
            self.cleared.append(_printable(path))
        except OSError as e:
            self.incomplete(f"cannot clear the setuid/setgid bits of {_printable(path)}: {e.strerror}")

    def _tree(self, top: int, top_path: str, dev: int) -> None:
        """Depth first below the directory ``top`` (an fd this takes over), one fd per level."""
        stack = [(top, top_path, os.scandir(top))]
        try:
            while stack:
                if self.checked >= MAX_ENTRIES:
                    self.incomplete(f"more than {MAX_ENTRIES} entries in the writable binds; the rest was not checked")
                    return
                dfd, dpath, it = stack[-1]
                try:
                    entry = next(it)
                except StopIteration:
                    it.close()
                    os.close(dfd)
                    stack.pop()
                    continue
                except OSError as e:
                    self.incomplete(f"cannot read {_printable(dpath)}: {e.strerror}")
                    it.close()
                    os.close(dfd)
                    stack.pop()
                    continue
                name, path = entry.name, os.path.join(dpath, entry.name)
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                self.checked += 1
                if stat.S_ISLNK(st.st_mode) or st.st_dev != dev:
                    continue  # never followed; another filesystem mounted here is not the bind's
                if self._wanted(st):
                    self._clear(dfd, name, st, path)
                if not stat.S_ISDIR(st.st_mode):
                    continue
                if len(stack) > MAX_DEPTH:
                    self.incomplete(f"directories nested deeper than {MAX_DEPTH} levels under a writable bind "
                                    f"(at {_printable(dpath)}); those were not checked")
                    continue
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP) and self._reachable(st):
                        self.incomplete(f"cannot read {_printable(path)}: {e.strerror}")
                    continue
                sst = os.fstat(sub)
                if (sst.st_dev, sst.st_ino) != (st.st_dev, st.st_ino):
                    os.close(sub)  # replaced between the stat and the open
                    continue
                try:
                    stack.append((sub, path, os.scandir(sub)))
                except OSError as e:
                    os.close(sub)
                    self.incomplete(f"cannot read {_printable(path)}: {e.strerror}")
        finally:
            for dfd, _, it in stack:
                it.close()
                os.close(dfd)

    def report(self) -> dict:
        return {"cleared": self.cleared, "cleared_count": self.ncleared, "checked": self.checked,
                "complete": self.detail is None, "detail": self.detail}


def walk(binds: list[str], uids: tuple[int, ...], gids: tuple[int, ...], since: float | None) -> dict:
    """Check ``binds`` in this process (see the module docstring) and return the report:
    ``cleared`` (up to MAX_LISTED host paths), ``cleared_count``, ``checked`` (inodes),
    ``complete`` and ``detail`` (why not).  ``since``: None for a slot's ids, else the time (epoch
    seconds) from which the caller's own files count.  Never raises for the tree's sake."""
    w = _Walk(uids, gids, since)
    for src in binds:
        if w.checked >= MAX_ENTRIES:
            w.incomplete(f"more than {MAX_ENTRIES} entries in the writable binds; the rest was not checked")
            break
        w.root(src)
    return w.report()


def strip(binds: list[str], uids: tuple[int, ...], gids: tuple[int, ...], since: float | None, namespace) -> dict:
    """Clear the setuid/setgid bits in ``binds`` (see :func:`walk` for the arguments and the
    report).  As root, or for the caller's own ids (``since`` given), in this process; else in a
    forked child that joined the user namespace ``namespace()`` returns (an fd made from
    :func:`jailpy.userns.strip_plan`, which maps ``uids[i]`` and ``gids[i]`` to ``i``).  Raises
    HostError or OSError when that namespace or the child cannot be made, or the child failed
    (not for what it found in the tree: that is in the report)."""
    if not binds:
        return walk([], uids, gids, since)
    if os.getuid() == 0 or since is not None:
        return walk(binds, uids, gids, since)
    nsfd = namespace()
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                sc.setns(nsfd, sc.CLONE_NEWUSER)  # every capability there; our ids stay (user_namespaces(7))
                # stat(2) there shows the ids as that namespace numbers them: host_uids[i] is i
                out = walk(binds, tuple(range(len(uids))), tuple(range(len(gids))), since)
            except BaseException as e:  # noqa: BLE001 - report it, never return into the caller's code
                out = {"error": str(e) or type(e).__name__}
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    try:
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    try:
        out = json.loads(b"".join(chunks))
    except ValueError:
        out = {"error": "its process ended without a report"}
    if "error" in out:
        raise HostError(f"cannot check the writable binds for setuid files: {out['error']}")
    return out
