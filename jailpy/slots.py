"""Host side: a warm pool of sandboxes, per policy, each verified clean before it is used again.

A *slot* is a :class:`jailpy.Sandbox` with ``reuse_userns`` and a fork server (its user
namespace, rootfs template and fork server stay warm between runs, :mod:`jailpy.pool`) plus,
when asked, a *box*: a host directory of the slot's own bound at ``/box`` (read-only or
writable) that the caller fills before a run.  :class:`SlotPool` keeps up to ``size`` slots,
keyed by policy, and hands one to one caller at a time.

What a run does not get afresh is what a later run could find: so each run gets new pid, ipc,
uts, net and mount namespaces (a copy of the read-only template), a new /tmp, /dev/shm and
mqueue, and a new cgroup with every limit written (jailpy.sandbox), by construction; and after
each run, before the slot is handed out again, :meth:`SlotPool.verify` checks what is shared
(the design notes' "verified reset"):

1. no process is left in the slot's user namespace but its fork server (a scan of /proc;
   zombies waiting for their parent are waited for, briefly);
2. the run's cgroup is gone (its removal proves it empty: rmdir(2) of a populated cgroup fails
   with EBUSY);
3. the fork server's open files are those it had after the slot's first run;
4. a writable box is emptied and must then be empty (and still the same directory); a
   read-only box must hold the same files as before the run;
5. every ``canary_every`` runs (and on the slot's first), a probe run reports what a program
   sees (the mount table without its ids, /tmp, /dev/shm, the box, System V IPC objects, the
   processes, the host name); it must equal the report of the slot's first probe.

A slot that fails any check, or whose run raised, is destroyed (its fork server, user namespace
and template go with it) and counted; a new one is built when needed.  :meth:`SlotPool.stats`
gives the counts for the server's metrics.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
import time
from collections import OrderedDict

from .errors import JailpyError
from .policy import Policy
from .pool import reap_exiting

BOX_AT = "/box"
PROBE = (
    "cut -d' ' -f5,6,9,10 /proc/self/mountinfo | sort; echo --tmp; ls -A /tmp /dev/shm; echo --box; "
    "ls -A {box} 2>&1; echo --ipc; cat /proc/sysvipc/shm /proc/sysvipc/sem /proc/sysvipc/msg; "
    "echo --mq; ls -A /dev/mqueue 2>&1; echo --proc; set -- /proc/[0-9]*; echo $#; echo --host; hostname"
)
"""What the canary probe prints (a POSIX shell and coreutils in the sandbox's root).  The processes
are counted by the shell's own glob once its pipelines are reaped: PID 1 and the shell."""
REAP_WAIT = 5.0
"""Seconds a verification waits for the run's helpers to exit and its processes to be reaped."""


class Busy(JailpyError):
    """Every slot is in use (the server answers 429)."""


class VerificationFailed(Exception):
    """A slot did not pass a check; the message says which."""


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _state(pid: str) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc/PID/stat, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    return rest[0].decode(), int(rest[1])


def processes_in_userns(inode: int, uids: tuple[int, ...] | None = None) -> list[tuple[int, str, int]]:
    """Every process whose user namespace has inode number ``inode`` (nsfs inode, as
    /proc/PID/ns/user gives it: namespaces(7)), as (pid, state, parent pid).  ``uids``: look only
    at processes whose host uid (the owner of /proc/PID) is one of these, plus our own uid's (a
    stat(2) each, four times cheaper than resolving the namespace link).  Processes we may not look
    at (ptrace access mode, proc(5)) cannot be in a user namespace we own."""
    out = []
    me = os.getuid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        if uids is not None:
            try:
                owner = os.stat(f"/proc/{name}").st_uid
            except OSError:
                continue
            if owner not in uids and owner != me:
                continue
        if _ns_inode(f"/proc/{name}/ns/user") == inode:
            st = _state(name)
            if st is not None:
                out.append((int(name), st[0], st[1]))
    return out


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(name: str, parent: int) -> int:
    """``name`` in ``parent`` as a directory fd, made readable and writable first if it was not
    (a program may leave a mode 0 directory).  Raises OSError."""
    try:
        fd = os.open(name, _DIR, dir_fd=parent)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=parent, follow_symlinks=False)
        fd = os.open(name, _DIR, dir_fd=parent)
    with contextlib.suppress(OSError):
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
            os.fchmod(fd, 0o700)
    return fd


ROOT_PREFIX = "jailpy-slots-"
"""Name prefix of a pool's own directory for boxes, in the temporary directory (tempfile)."""


def _lock_root(root: str) -> int:
    """Hold ``root/.lock`` (flock(2), LOCK_EX) for this pool's life: the kernel drops it when the
    process dies, however it dies, which tells :func:`_sweep_dead_roots` the directory is left."""
    import fcntl

    fd = os.open(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _sweep_dead_roots() -> None:
    """Remove the box directories of this user's pools whose process died without closing them
    (a SIGKILLed ``jailpy worker`` or ``serve``): those whose ``.lock`` nobody holds.  Best
    effort: what cannot be removed (rootless, files of a dead pool's sandbox ids) stays."""
    import fcntl

    tmp = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(tmp) if n.startswith(ROOT_PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(tmp, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # not ours, or made by a jailpy before the lock existed
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live pool's
        try:
            with contextlib.suppress(OSError):
                _clear(path)
                os.rmdir(path)
        finally:
            os.close(fd)


def _clear(path: str) -> None:
    """Remove everything in directory ``path`` (a box), making directories writable first.

    Without recursion and with two directory fds at most: each directory below the top has its
    subdirectories renamed up into ``path`` and its other entries removed, then is removed
    itself, until ``path`` is empty.  (shutil.rmtree recurses once per level: a program's 3000
    nested directories raised RecursionError in the janitor thread, which died and left every
    slot "cleaning" for good.)  Never follows a symlink.  What cannot be removed stays (the
    caller checks that the box is empty)."""
    top = os.open(path, _DIR)
    tag, n = os.urandom(4).hex(), 0
    try:
        while True:
            with os.scandir(top) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            progress = False
            for name, is_dir in entries:
                if not is_dir:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=top)
                        progress = True
                    continue
                try:
                    d = _open_dir(name, top)
                except OSError:
                    continue
                try:
                    with os.scandir(d) as it:
                        subs = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
                    for sub, sub_is_dir in subs:
                        with contextlib.suppress(OSError):
                            if sub_is_dir:
                                n += 1
                                os.rename(sub, f".jailpy-clear-{tag}-{n}", src_dir_fd=d, dst_dir_fd=top)
                            else:
                                os.unlink(sub, dir_fd=d)
                            progress = True
                finally:
                    os.close(d)
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=top)
                    progress = True
            if not entries or not progress:
                return
    finally:
        os.close(top)


def _clear_as_owner(path: str, userns_fd: int | None) -> None:
    """:func:`_clear` from a child that joined the slot's user namespace (setns(2); we own it, so
    we hold every capability there): rootless, a run's files belong to the sandbox's subordinate
    ids, which the caller cannot remove from outside (a directory the program made, mode 0755,
    keeps its entries), and a box left so leaked them on the host's disk for good.  In the
    namespace CAP_DAC_OVERRIDE and CAP_FOWNER cover every inode whose owner it maps
    (capabilities(7)).  Does nothing as root or without a namespace."""
    if os.getuid() == 0 or userns_fd is None:
        return
    from . import _syscalls as sc

    pid = os.fork()
    if pid == 0:  # the child: one thread, os calls only, then _exit
        code = 1
        try:
            sc.setns(userns_fd, sc.CLONE_NEWUSER)
            _clear(path)
            code = 0
        finally:
            os._exit(code)
    os.waitpid(pid, 0)


def _walk(path: str):
    """Every entry below ``path`` as ``(relative name, lstat)``, a directory before what it
    holds; without recursion (os.walk and shutil.copytree recurse once per level, and a tree a
    sandbox made can be thousands deep) and never following a symlink."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(path, rel) if rel else path) as it:
            entries = sorted(e.name for e in it)
        for name in entries:
            r = os.path.join(rel, name) if rel else name
            st = os.lstat(os.path.join(path, r))
            yield r, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(r)


def _snapshot(path: str) -> tuple:
    """What a read-only box holds: (name, inode, size, mode) of every entry, recursively."""
    return tuple(sorted((r, st.st_ino, st.st_size, st.st_mode) for r, st in _walk(path)))


def _copy_tree(tree: str, box: str) -> None:
    """Hard links (copies across file systems) in ``box`` of everything in ``tree``, directories
    made with their modes, symlinks copied as symlinks (never followed: a compiler's output
    could hold one naming a host file, which the copy as root would then read)."""
    for rel, st in _walk(tree):
        src, dst = os.path.join(tree, rel), os.path.join(box, rel)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(dst)
            os.chmod(dst, stat.S_IMODE(st.st_mode) | 0o700)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError:
                shutil.copy2(src, dst, follow_symlinks=False)
        # (other kinds: a FIFO, a socket or a device node is not copied)


class Slot:
    """One warm sandbox, handed to one caller at a time by :meth:`SlotPool.slot`.  ``box``: the
    host path of its box (None without one), empty when a writable box is handed out; ``tag``:
    what the caller said a read-only box holds (see :meth:`fill`)."""

    def __init__(self, pool: "SlotPool", key: tuple, policy: Policy, box_mode: str | None, fresh: bool,
                 box_at: str = BOX_AT) -> None:
        from .sandbox import Sandbox

        self.pool, self.key, self.box_mode, self.fresh = pool, key, box_mode, fresh
        self.box: str | None = None
        self.tag: object = None
        self._box_ino: tuple | None = None
        if box_mode is not None:
            self.box = tempfile.mkdtemp(prefix="slot-", dir=pool.root)
            os.chmod(self.box, 0o777)  # the sandbox's host id (not the caller's, as root) writes here
            st = os.stat(self.box)
            self._box_ino = (st.st_dev, st.st_ino)
            b = f"{self.box}:{box_at}"
            self.box_at = box_at
            policy = policy.replace(bind=list(policy.bind) + [b]) if box_mode == "rw" else \
                policy.replace(ro_bind=list(policy.ro_bind) + [b])
        try:
            self.sandbox = Sandbox(policy, reuse_userns=not fresh, forkserver=None if fresh else True)
        except BaseException:
            if self.box:
                shutil.rmtree(self.box, ignore_errors=True)
            raise
        self.runs = 0
        self.counted = 0
        self.used = time.monotonic()
        self.golden_probe: str | None = None
        self.golden_fds: list[str] | None = None
        self._snapshot: tuple | None = None

    def fill(self, tag: object, files: dict[str, bytes] | None = None, tree: str | None = None) -> None:
        """Put the run's files into the box: ``files`` (relative name -> bytes) and/or hard links
        (copies across file systems) of everything in the host directory ``tree``.  ``tag``: what
        this content is (a read-only box already holding ``tag`` is not filled again)."""
        if self.box is None:
            raise ValueError("this slot has no box")
        if self.box_mode == "ro" and tag is not None and tag == self.tag:
            return
        _clear(self.box)
        if tree is not None:
            _copy_tree(tree, self.box)
        for name, data in (files or {}).items():
            path = os.path.join(self.box, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        self.tag = tag
        self._snapshot = _snapshot(self.box) if self.box_mode == "ro" else None

    def run(self, argv: list[str], **kw):
        """:meth:`jailpy.Sandbox.run` in this slot."""
        self.runs += 1
        return self.sandbox.run(argv, **kw)

    def prepare_next(self) -> None:
        """Build the next run's sandbox now (the janitor calls this after verifying), so a run
        only sends its program: :meth:`jailpy.pool.Pool.take` takes it."""
        pool = self.sandbox._pool
        if not pool._ready and not pool.spec.pass_fds:
            pool._ready.append(pool.prepare())

    def close(self) -> None:
        userns_fd = None
        with contextlib.suppress(Exception):
            if self.box and os.getuid() != 0:  # keep the namespace until the box is empty
                userns_fd = os.dup(self.sandbox._pool.userns_fd)
        try:
            with contextlib.suppress(Exception):
                self.sandbox.close(wait=False)
            if self.box:
                with contextlib.suppress(Exception):
                    _clear(self.box)
                    if os.listdir(self.box):
                        _clear_as_owner(self.box, userns_fd)
                    os.rmdir(self.box)
        finally:
            if userns_fd is not None:
                os.close(userns_fd)


class SlotPool:
    """Up to ``size`` warm slots (busy and idle together), keyed by policy and box mode.
    ``root``: where the slots' boxes are made (default: a private temporary directory).
    ``canary_every``: run the canary probe after this many runs of a slot (0: only on its
    first run).  Thread-safe."""

    def __init__(self, size: int = 4, *, root: str | None = None, canary_every: int = 100) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.canary_every = canary_every
        self._own_root = root is None
        self._root_lock: int | None = None
        if root is None:
            _sweep_dead_roots()
            root = tempfile.mkdtemp(prefix=ROOT_PREFIX)
            self._root_lock = _lock_root(root)
        self.root = root
        self._idle: OrderedDict[int, Slot] = OrderedDict()  # id(slot) -> slot, least recently used first
        self._busy = 0
        self._cleaning: list[Slot] = []  # given back, being verified by the janitor thread
        self._todo: list[Slot] = []
        self._janitor: threading.Thread | None = None
        self._cond = threading.Condition(threading.RLock())
        self.counts = {"runs": 0, "verifications": 0, "verification_failures": 0, "destroyed": 0, "created": 0,
                       "canary_probes": 0, "reused": 0}
        self.failures: dict[str, int] = {}
        self.last_failure: dict | None = None
        self._closed = False

    # ---- taking and giving back
    @contextlib.contextmanager
    def slot(self, policy: Policy, *, box: str | None = None, fresh: bool = False, timeout: float | None = None,
             box_at: str = BOX_AT):
        """A slot for ``policy`` for the duration of the ``with`` block.  ``box``: None, ``"ro"``
        or ``"rw"`` (a box of the slot's own at /box).  ``fresh``: a throwaway sandbox with a new
        user namespace (for one-off runs like a compile whose policy is never seen again); it
        still counts against ``size``.  ``timeout``: seconds to wait for a free slot (None: wait as
        long as it takes; 0: raise :class:`Busy` at once).  After the block the slot is verified
        (:meth:`verify`) and destroyed on any doubt."""
        s = self.acquire(policy, box=box, fresh=fresh, timeout=timeout, box_at=box_at)
        ok = False
        try:
            yield s
            ok = True
        finally:
            self.release(s, ok)

    def acquire(self, policy: Policy, *, box: str | None = None, fresh: bool = False,
                timeout: float | None = None, box_at: str = BOX_AT) -> Slot:
        key = (policy.digest(), box, box_at)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise Busy("the slot pool is closed")
                if not fresh:
                    for sid, s in reversed(self._idle.items()):
                        if s.key == key:
                            del self._idle[sid]
                            self._busy += 1
                            self.counts["reused"] += 1
                            return s
                cleaning_same = not fresh and any(s.key == key for s in self._cleaning)
                total = self._busy + len(self._idle) + len(self._cleaning)
                # a new slot while there is room; at the limit, wait for one of this policy being
                # verified rather than destroy an idle one of another policy
                if total < self.size or (self._idle and not cleaning_same):
                    victim = None
                    if total >= self.size:
                        _, victim = self._idle.popitem(last=False)  # the least recently used idle slot
                    self._busy += 1
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Busy(f"all {self.size} sandbox slots are busy")
                self._cond.wait(left)  # a slot of this policy is being verified, or none is free
        try:
            if victim is not None:
                victim.close()
            s = Slot(self, key, policy, box, fresh, box_at)
        except BaseException:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self.counts["created"] += 1
        return s

    def release(self, s: Slot, ok: bool) -> None:
        """Give ``s`` back after a use.  It is verified (:meth:`verify`) and its next sandbox built
        ahead, in the background (a thread per pool), and only then handed out again; destroyed
        instead on any doubt, or when ``ok`` is False (the caller's block raised, so the slot's
        state is unknown)."""
        with self._cond:
            self.counts["runs"] += s.runs - s.counted
            s.counted = s.runs
            self._busy -= 1
            if s.fresh or not ok or self._closed:
                if not s.fresh and not ok:
                    self._failed(s, "the run raised an exception")
                self._cond.notify_all()
                drop = True
            else:
                self._cleaning.append(s)
                self._todo.append(s)
                drop = False
                if self._janitor is None or not self._janitor.is_alive():
                    self._janitor = threading.Thread(target=self._clean_loop, name="jailpy-slots", daemon=True)
                    self._janitor.start()
                self._cond.notify_all()
        if drop:
            s.close()

    def _clean_loop(self) -> None:
        """The janitor: verify each slot given back, build its next sandbox ahead, make it idle."""
        while True:
            with self._cond:
                while not self._todo:
                    if self._closed:
                        return
                    if not self._cond.wait(5.0):
                        if not self._todo:
                            self._janitor = None
                            return
                s = self._todo.pop(0)
            reason = self.verify(s)
            if reason is None:
                try:
                    s.prepare_next()
                except (OSError, JailpyError) as e:
                    reason = f"prepare: {e}"
            with self._cond:
                self._cleaning.remove(s)
                if reason is None and not self._closed:
                    s.used = time.monotonic()
                    self._idle[id(s)] = s
                    drop = False
                else:
                    if reason is not None:
                        self._failed(s, reason)
                    drop = True
                self._cond.notify_all()
            if drop:
                s.close()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every slot given back has been verified (for tests and benchmarks)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._cleaning and time.monotonic() < end:
                self._cond.wait(0.05)

    def _failed(self, s: Slot, reason: str) -> None:
        with self._cond:  # (a reentrant lock: release() calls this holding it)
            self.counts["verification_failures"] += 1
            self.counts["destroyed"] += 1
            kind = reason.split(":")[0]
            self.failures[kind] = self.failures.get(kind, 0) + 1
            self.last_failure = {"reason": reason, "time": time.time(), "runs": s.runs}

    # ---- the checks
    def verify(self, s: Slot) -> str | None:
        """Check that ``s`` is clean after a run (the module docstring's checks 1-5).  Returns None
        when it is, else the reason ("processes: ...", "cgroup: ...", "fds: ...", "box: ...",
        "canary: ...")."""
        with self._cond:
            self.counts["verifications"] += 1
        try:
            self._check_processes(s)
            self._check_cgroup(s)
            self._check_box(s)
            self._check_fds(s)
            if s.golden_probe is None or (self.canary_every and s.runs % self.canary_every == 0):
                self._canary(s)
        except VerificationFailed as e:
            return str(e)
        except (OSError, JailpyError) as e:
            return f"error: {e}"
        except Exception as e:  # noqa: BLE001 - a doubt: the slot goes, the janitor thread must not
            return f"error: {type(e).__name__}: {e}"
        return None

    def _server_pid(self, s: Slot) -> int | None:
        fs = s.sandbox._pool._server
        return fs.proc.pid if fs is not None and not fs.dead and fs.proc.poll() is None else None

    def _check_processes(self, s: Slot) -> None:
        pool = s.sandbox._pool
        if s.sandbox._control.active():
            raise VerificationFailed("processes: a run is still going")
        if pool.userns_fd is None:
            raise VerificationFailed("processes: the slot has no user namespace")
        inode = os.fstat(pool.userns_fd).st_ino
        allowed = {self._server_pid(s)} | {p.pid for p in pool._ready}  # a sandbox built ahead and not used
        uids = tuple(s.sandbox.ids.host_uids) or None
        end = time.monotonic() + REAP_WAIT
        while True:
            reap_exiting(timeout=max(0.0, min(0.2, end - time.monotonic())))
            left = [(pid, st) for pid, st, _ in processes_in_userns(inode, uids) if pid not in allowed]
            if not left:
                return
            if time.monotonic() >= end:
                raise VerificationFailed(f"processes: {len(left)} left in the slot's user namespace "
                                         f"(pid, state): {left[:5]}")
            time.sleep(0.002)

    def _check_cgroup(self, s: Slot) -> None:
        paths = s.sandbox._pool.last_cgroup
        end = time.monotonic() + REAP_WAIT
        while any(os.path.exists(p) for p in paths):
            if time.monotonic() >= end:
                raise VerificationFailed(f"cgroup: {paths[0]} was not removed (processes left in it?)")
            reap_exiting(timeout=0.05)

    def _check_box(self, s: Slot) -> None:
        if s.box is None:
            return
        st = os.lstat(s.box)
        if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != s._box_ino:
            raise VerificationFailed("box: the box directory was replaced")
        if s.box_mode == "rw":
            _clear(s.box)
            if os.listdir(s.box):
                _clear_as_owner(s.box, s.sandbox._pool.userns_fd)
            left = os.listdir(s.box)
            if left:
                raise VerificationFailed(f"box: {len(left)} entries could not be removed: {sorted(left)[:5]}")
            s.tag = None
        elif s._snapshot is not None and _snapshot(s.box) != s._snapshot:
            raise VerificationFailed("box: a read-only box changed during the run")

    def _check_fds(self, s: Slot) -> None:
        pid = self._server_pid(s)
        if pid is None:
            if s.runs > 1 or s.golden_fds is not None:
                raise VerificationFailed("fds: the slot's fork server is gone")
            return
        try:
            fds = sorted(os.listdir(f"/proc/{pid}/fd"))
        except FileNotFoundError:
            raise VerificationFailed("fds: the slot's fork server is gone") from None
        if s.golden_fds is None:
            s.golden_fds = fds
        elif fds != s.golden_fds:
            raise VerificationFailed(f"fds: the fork server has {len(fds)} open files, {len(s.golden_fds)} before")

    def _canary(self, s: Slot) -> None:
        from .stdio import DEVNULL, PIPE

        with self._cond:
            self.counts["canary_probes"] += 1
        tag, snap = s.tag, s._snapshot
        r = s.sandbox.run(["/bin/sh", "-c", PROBE.format(box=s.box_at if s.box else "/nonexistent")],
                          stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
        if r.verdict.value != "OK":
            raise VerificationFailed(f"canary: the probe ended {r.verdict.value} ({r.error or r.limit_fired})")
        report = (r.stdout or b"").decode("utf-8", "replace")
        if s.golden_probe is None:
            s.golden_probe = report
        elif report != s.golden_probe:
            old, new = s.golden_probe.splitlines(), report.splitlines()
            diff = next((f"{a!r} became {b!r}" for a, b in zip(old, new) if a != b), f"{len(old)} lines, now {len(new)}")
            raise VerificationFailed(f"canary: what a program sees changed: {diff}")
        self._check_processes(s)
        self._check_cgroup(s)
        s.tag, s._snapshot = tag, snap

    # ---- state
    def stats(self) -> dict:
        """Counts for metrics and health: ``total`` (slots), ``busy``, ``idle``, ``free`` (slots a
        caller can get now without waiting), and the counters (runs, verifications,
        verification_failures, destroyed, created, canary_probes, reused), ``failures`` by kind,
        ``last_failure`` ({"reason", "time", "runs"} or None)."""
        with self._cond:
            return dict(self.counts, total=self.size, busy=self._busy, idle=len(self._idle),
                        cleaning=len(self._cleaning), free=self.size - self._busy - len(self._cleaning), failures=dict(self.failures), last_failure=self.last_failure)

    def close(self) -> None:
        """Destroy the idle slots (busy ones are destroyed when given back) and the boxes' directory."""
        self.drain(timeout=5.0)
        with self._cond:
            self._closed = True
            idle = list(self._idle.values())
            self._idle.clear()
            self._cond.notify_all()
        for s in idle:
            s.close()
        reap_exiting(timeout=1.0)
        if self._own_root:
            with contextlib.suppress(OSError):
                _clear(self.root)  # (not shutil.rmtree: it recurses once per level of a box's tree)
                os.rmdir(self.root)
            if self._root_lock is not None:
                os.close(self._root_lock)
                self._root_lock = None

    def __enter__(self) -> "SlotPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
