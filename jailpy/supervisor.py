"""The host side: prepare, spawn, watch, finish.  Stays outside the sandbox.

``Sandbox(policy)`` checks the policy and the host once (fail closed); ``Sandbox.run(argv)``
forks the set-up process (:mod:`jailpy.child`), writes its id maps when it has unshared,
then watches: output capture, stdin feeding, the wall-time limit, forwarded signals; and
finally turns the kernel's facts into a :class:`~jailpy.result.Result`.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import selectors
import signal
import socket
import stat
import subprocess
import threading
import time

from . import __version__, child, mounts, userns
from .errors import JailpyError, PolicyError, SandboxSetupError
from .policy import DEFAULT_PATH, Policy
from .result import Result, Verdict

DEVNULL = subprocess.DEVNULL
KILL_GRACE = 2.0  # seconds PID 1 gets to report after Sandbox.kill() before it is SIGKILLed
PIPE = subprocess.PIPE

StdSpec = int | bytes | None


class _Prepared:
    """A forked set-up process and the supervisor's ends of its pipes and control socket."""

    def __init__(self, pid: int, status_r: int, sync_r: int, go_w: int, ctl: socket.socket,
                 sources: tuple) -> None:
        self.pid, self.status_r, self.sync_r, self.go_w, self.ctl = pid, status_r, sync_r, go_w, ctl
        self.sources = sources  # (st_dev, st_ino) of each bind source when this sandbox was built
        self.pidfd = os.pidfd_open(pid)  # our own child: not reaped before we wait, so it is this process

    def close_go(self) -> None:
        if self.go_w >= 0:
            os.close(self.go_w)
            self.go_w = -1

    def close(self) -> None:
        """Close the supervisor's ends; safe to call twice (a closed number is never closed again,
        so an fd another thread opened meanwhile is left alone)."""
        self.close_go()
        for name in ("status_r", "sync_r", "pidfd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        self.ctl.close()


def _send_request(ctl: socket.socket, argv: list[str], env: dict[str, str], stdio: list[int]) -> None:
    """The launch request child._receive reads: length, JSON, and the three stdio fds."""
    data = json.dumps({"argv": argv, "env": env}).encode()
    head = len(data).to_bytes(8, "little") + data[:65536 - 8]
    sent = socket.send_fds(ctl, [head], stdio)
    ctl.sendall(head[sent:] + data[65536 - 8:])


_EXITING: set[int] = set()  # set-up processes that reported and are exiting, to reap later
_EXITING_LOCK = threading.Lock()  # runs may come from many threads


def _reap_exiting(block: bool) -> None:
    """Reap set-up processes of earlier runs (see Sandbox._watch).  Under the lock, so no two
    threads wait for one pid (whose number could meanwhile belong to a new run)."""
    with _EXITING_LOCK:
        for pid in list(_EXITING):
            try:
                done = os.waitpid(pid, 0 if block else os.WNOHANG)[0]
            except ChildProcessError:
                done = pid  # reaped already by the caller's own wait()
            if done:
                _EXITING.discard(pid)


def _high_fd(fd: int) -> int:
    """Move ``fd`` to a number >= 3 (close-on-exec), so the child's dup2 onto 0-2 cannot clobber it."""
    if fd >= 3:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return new


def _devnull() -> int:
    return _high_fd(os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC))


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    return _high_fd(r), _high_fd(w)


class Sandbox:
    """A prepared sandbox configuration; :meth:`run` may be called many times.

    Every run gets new mount, pid, uts, ipc, net and cgroup namespaces.  With ``reuse_userns``
    (the default) the runs of one Sandbox share one user namespace, made on the first run: that
    saves creating it and, rootless with a subuid range, two newuidmap/newgidmap processes per run
    (about 3 ms here).  What runs share through it is per-user kernel state of the sandbox's uid:
    its keyrings (keyrings(7)) and per-uid counts such as RLIMIT_NPROC.  Pass
    ``reuse_userns=False`` for a fresh user namespace per run (``jailpy.run`` and the CLI do).

    With ``prefork=True`` (or N, up to 8, sandboxes kept ready; one run at a time per Sandbox)
    each run also forks the set-up of the next sandbox, which builds its
    rootfs while this one runs and then waits (two helper processes) for the next :meth:`run`,
    which then only sends the program over a unix socket (argv, environment, SCM_RIGHTS for the
    stdio fds).  Bind sources are opened when that sandbox is built; a run finding one replaced
    since (another inode) builds a new sandbox instead.  Ignored when the policy has
    ``pass_fd``; :meth:`close` ends the waiting sandbox.

    Raises PolicyError (bad policy, missing path) or HostError (a protection this host cannot
    give, with the fix) from the constructor: nothing has been started then."""

    def __init__(self, policy: Policy | None = None, *, reuse_userns: bool = True, prefork: bool | int = False) -> None:
        self.reuse_userns = reuse_userns
        self.prefork = int(prefork)
        if not 0 <= self.prefork <= 8:
            raise PolicyError(f"prefork: between 0 and 8 sandboxes kept ready, got {prefork}")
        self._userns_fd: int | None = None
        self._ready: list[_Prepared] = []  # prefork: built and waiting for a program, oldest first
        self.policy = (policy or Policy()).validate()
        self.ids = userns.prepare(self.policy.uid, self.policy.gid, self.policy.id_map)
        self.mounts = mounts.prepare(self.policy)
        for fd in self.policy.pass_fd:
            try:
                os.fstat(fd)
            except OSError:
                raise PolicyError(f"pass-fd: fd {fd} is not open") from None
        self.env = self._environment()
        self._protections = self._describe_protections()  # fixed per Sandbox: computed once, not per run
        self._digest = self.policy.digest()
        self._pidfd: int | None = None
        self._setup_pidfd: int | None = None
        self._pending: list[int] = []
        self._killed = False
        self._hard_kill_at: float | None = None

    def _environment(self) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "HOME": "/tmp", "LANG": os.environ.get("LANG", "C.UTF-8")}
        if "TERM" in os.environ:
            env["TERM"] = os.environ["TERM"]
        for k in self.policy.env_pass:
            if k in os.environ:
                env[k] = os.environ[k]
        for kv in self.policy.env:
            k, _, v = kv.partition("=")
            env[k] = v
        return env

    def protections(self) -> dict:
        """Which layers are active, for the Result: namespaces, ids, rootfs, capabilities, ..."""
        return dict(self._protections)

    def _describe_protections(self) -> dict:
        return {
            "namespaces": sorted(child.NAMESPACES),
            "user": self.ids.description,
            "rootfs": self.mounts.description,
            "cwd": self.mounts.cwd_note,
            "network": "none (loopback only)",
            "capabilities": "none (effective, permitted, inheritable, bounding and ambient empty)",
            "no_new_privs": True,
            "session": "new (setsid)",
            "fds": "0-2" + "".join(f",{fd}" for fd in self.policy.pass_fd),
            "seccomp": None,
            "cgroup": None,
            "landlock": None,
            "lsm": None,
        }

    def _userns(self) -> int | None:
        if self.reuse_userns and self._userns_fd is None:
            self._userns_fd = userns.create(self.ids)
        return self._userns_fd

    def close(self) -> None:
        """End the prepared sandbox (prefork), release the user namespace and reap finished
        helpers (the first two are also done when the Sandbox is garbage-collected)."""
        self._release()
        _reap_exiting(block=True)

    def _release(self) -> None:
        while self._ready:
            self._discard(self._ready.pop())
        if self._userns_fd is not None:
            os.close(self._userns_fd)
            self._userns_fd = None

    def __del__(self) -> None:
        try:
            self._release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def send_signal(self, sig: int) -> None:
        """Forward ``sig`` to the running program (through the sandbox's PID 1).  No-op when
        nothing runs."""
        if self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except OSError:
                pass
        elif self._setup_pidfd is not None:
            if sig == signal.SIGKILL:  # PID 1 not known yet: its parent's death takes it (PDEATHSIG)
                try:
                    signal.pidfd_send_signal(self._setup_pidfd, signal.SIGKILL)
                except OSError:
                    pass
            else:
                self._pending.append(sig)

    def kill(self) -> None:
        """End the running program and everything it started: PID 1 SIGKILLs them all, reaps them
        and reports, so :meth:`run` returns a Result with signal 9 (exit code 137) and the CPU
        times spent.  If PID 1 has not reported within KILL_GRACE seconds it is SIGKILLed itself
        (the kernel then kills the whole pid namespace: pid_namespaces(7))."""
        self._killed = True
        self._hard_kill_at = time.monotonic() + KILL_GRACE
        if self._pidfd is None:
            self.send_signal(signal.SIGKILL)
        else:
            self.send_signal(child.KILL_ALL)

    def run(
        self,
        argv: list[str],
        stdin: StdSpec = None,
        stdout: int | None = None,
        stderr: int | None = None,
        capture_output: bool = False,
    ) -> Result:
        """Run ``argv`` (``argv[0]`` looked up in the sandbox's PATH) and wait for it.

        ``stdin``: None (inherit fd 0), an fd, ``DEVNULL``, or bytes fed through a pipe.
        ``stdout``/``stderr``: None (inherit), an fd, ``DEVNULL`` or ``PIPE``; ``capture_output``
        sets both to PIPE and the bytes land in ``Result.stdout``/``stderr``.
        Returns a Result (also for 126/127: see ``Result.error``).  Raises PolicyError for a
        bad argument (a directory as stdin, an empty argv) and SandboxSetupError when the
        sandbox could not be built; nothing is left running in either case.

        The sandbox dies with the thread that called run() (PR_SET_PDEATHSIG): call it from a
        thread that outlives the run."""
        if not argv:
            raise PolicyError("no command given")
        if capture_output:
            stdout = stderr = PIPE
        opened: list[int] = []  # our fds to close when done
        feeds: dict[int, bytes] = {}
        names: dict[int, str] = {}
        captures: dict[int, bytearray] = {}  # our read end -> bytes; stdout's first

        def std(spec: StdSpec, i: int) -> int | None:
            if spec is None:
                fd = i
                try:
                    st = os.fstat(fd)
                except OSError:
                    return None
            elif spec == DEVNULL:
                fd = _devnull()
                opened.append(fd)
                return fd
            elif spec == PIPE or isinstance(spec, bytes):
                r, w = _pipe()
                mine, theirs = (w, r) if i == 0 else (r, w)
                opened.append(theirs)
                if i == 0:
                    feeds[mine] = bytes(spec) if isinstance(spec, bytes) else b""
                else:
                    captures[mine] = bytearray()
                    names[mine] = ("stdout", "stderr")[i - 1]
                return theirs
            elif isinstance(spec, int) and spec >= 0:
                fd = spec
                try:
                    st = os.fstat(fd)
                except OSError:
                    raise PolicyError(f"{('stdin', 'stdout', 'stderr')[i]}: fd {fd} is not open") from None
            else:
                raise PolicyError(f"{('stdin', 'stdout', 'stderr')[i]}: unsupported value {spec!r}")
            if stat.S_ISDIR(st.st_mode):
                raise PolicyError(f"{('stdin', 'stdout', 'stderr')[i]} is a directory; give a file, a pipe or /dev/null")
            return fd

        try:
            stdio = [std(stdin, 0), std(stdout, 1), std(stderr, 2)]
            for i, fd in enumerate(stdio):
                if fd is None:  # the caller has it closed: the program gets /dev/null there
                    stdio[i] = _devnull()
                    opened.append(stdio[i])
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        self._pending.clear()
        self._killed = False
        self._hard_kill_at: float | None = None
        _reap_exiting(block=False)
        prep = self._take_prepared()
        t_start = time.monotonic()
        try:
            try:
                _send_request(prep.ctl, list(argv), self.env, stdio)
            except (BrokenPipeError, ConnectionResetError):  # the prepared sandbox died meanwhile
                self._discard(prep)
                prep = self._prepare()
                _send_request(prep.ctl, list(argv), self.env, stdio)
        except BaseException:
            self._discard(prep)
            for fd in (*opened, *feeds, *captures):
                os.close(fd)
            raise
        for fd in opened:
            os.close(fd)
        self._setup_pidfd = prep.pidfd
        while not self.policy.pass_fd and len(self._ready) < self.prefork:
            self._ready.append(self._prepare())  # built while this run runs, on the cores it leaves free
        try:
            return self._watch(prep, t_start, feeds, captures, names)
        finally:
            for fd in (*feeds, *captures):
                try:
                    os.close(fd)
                except OSError:
                    pass
            pidfd, self._pidfd, self._setup_pidfd = self._pidfd, None, None  # before the fds close
            if pidfd is not None:
                os.close(pidfd)
            prep.close()

    def _prepare(self) -> "_Prepared":
        """Fork the set-up process; it builds the sandbox and then waits for the program."""
        status_r, status_w = _pipe()
        sync_r, sync_w = _pipe()
        go_r, go_w = _pipe()
        sources = self._source_ids()
        ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_fd = _high_fd(ctl_child.detach())
        ctx = child.SpawnContext(
            pass_fds=tuple(self.policy.pass_fd), ids=self.ids, mounts=self.mounts, hostname=self.policy.hostname,
            status_w=status_w, sync_w=sync_w, go_r=go_r, ctl_fd=child_fd, supervisor_pid=os.getpid(),
            userns_fd=self._userns(),
        )
        gc_was = gc.isenabled()
        gc.disable()  # a collection in the child would touch (copy) every page of this process
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    child.setup(ctx)
                finally:
                    os._exit(125)
        finally:
            if gc_was:
                gc.enable()
            for fd in (status_w, sync_w, go_r, child_fd):
                os.close(fd)
        return _Prepared(pid, status_r, sync_r, go_w, ctl, sources)

    def _take_prepared(self) -> "_Prepared":
        while self._ready:
            prep = self._ready.pop(0)
            try:
                alive = os.waitpid(prep.pid, os.WNOHANG)[0] == 0
            except ChildProcessError:
                alive = False
            if alive and prep.sources == self._source_ids():
                return prep
            self._discard(prep)  # dead, or a bind source was replaced since it was built
        return self._prepare()

    def _source_ids(self) -> tuple:
        ids = []
        for b in self.mounts.binds:
            try:
                st = os.stat(b.src, follow_symlinks=False)
                ids.append((st.st_dev, st.st_ino))
            except OSError:
                ids.append(None)
        return tuple(ids)

    def _discard(self, prep: "_Prepared") -> None:
        try:
            os.kill(prep.pid, signal.SIGKILL)  # its PID 1 follows (PDEATHSIG), and the namespaces with it
            os.waitpid(prep.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        prep.close()

    def _watch(self, prep: "_Prepared", t_start: float,
               feeds: dict[int, bytes], captures: dict[int, bytearray], names: dict[int, str]) -> Result:
        msgs: dict = {}
        pid, status_r = prep.pid, prep.status_r
        try:
            if self._userns_fd is None and os.read(prep.sync_r, 1) == b"u":
                userns.write_maps(self.ids, pid)
                os.write(prep.go_w, b"g")
        except BaseException:
            self._discard(prep)
            raise
        deadline = t_start + self.policy.wall_time if self.policy.wall_time else None
        limit_fired = None
        sel = selectors.DefaultSelector()
        buf = bytearray()
        sel.register(status_r, selectors.EVENT_READ)
        for fd in captures:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        for fd in list(feeds):  # feeds is shared with run(): what is closed here leaves it
            os.set_blocking(fd, False)
            if feeds[fd]:
                sel.register(fd, selectors.EVENT_WRITE)
            else:
                os.close(fd)
                del feeds[fd]
        try:
            while sel.get_map():
                if self._hard_kill_at is not None and time.monotonic() >= self._hard_kill_at and "status" not in msgs:
                    self._hard_kill_at = None
                    self.send_signal(signal.SIGKILL)
                if "status" in msgs and len(sel.get_map()) == 1 and status_r in sel.get_map():
                    break  # the program and all it started are dead and reaped: only jailpy's helpers remain
                ends = [t for t in (deadline, self._hard_kill_at) if t is not None]
                timeout = max(0.0, min(ends) - time.monotonic()) if ends else None
                events = sel.select(timeout)
                if deadline is not None and time.monotonic() >= deadline and limit_fired is None:
                    limit_fired = "wall_time"
                    self.kill()
                    deadline = None
                for key, _ in events:
                    fd = key.fd
                    if fd in feeds:
                        try:
                            n = os.write(fd, feeds[fd])
                            feeds[fd] = feeds[fd][n:]
                        except BrokenPipeError:
                            feeds[fd] = b""
                        if not feeds[fd]:
                            sel.unregister(fd)
                            os.close(fd)
                            del feeds[fd]
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(fd)
                        continue
                    if fd == status_r:
                        buf += data
                        while b"\n" in buf:
                            line, _, rest = buf.partition(b"\n")
                            buf = bytearray(rest)
                            msg = json.loads(line)
                            if "pid1" in msg:
                                try:
                                    self._pidfd = os.pidfd_open(msg["pid1"])
                                except OSError:
                                    self._pidfd = None
                                for sig in self._pending:
                                    self.send_signal(sig)
                                self._pending.clear()
                            msgs.update(msg)
                    else:
                        captures[fd] += data
        finally:
            sel.close()
            # done with PID 1 (no more signals for it): the set-up process may now reap it and exit
            self._pidfd, pidfd = None, self._pidfd
            if pidfd is not None:
                os.close(pidfd)
            prep.close_go()
            ru = None
            if "status" in msgs:
                # PID 1 reported after killing and reaping every process of the sandbox; it and the
                # set-up process are now exiting (the kernel tears the namespaces down): reap them
                # on the next run instead of waiting here
                with _EXITING_LOCK:
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        _EXITING.add(pid)
            else:
                _, _, ru = os.wait4(pid, 0)
        wall = time.monotonic() - t_start
        out = {names[fd]: bytes(data) for fd, data in captures.items()}
        return self._finish(msgs, ru, wall, limit_fired, out)

    def _finish(self, msgs: dict, ru, wall: float, limit_fired: str | None, out: dict[str, bytes]) -> Result:
        common: dict = dict(protections=self.protections(), jailpy_version=__version__, policy_hash=self._digest)
        for name, data in out.items():
            common[name] = data
            common[name + "_bytes"] = len(data)
        if "error" in msgs and "exec_error" not in msgs:
            raise SandboxSetupError(f"cannot set up the sandbox: {msgs['error']}")
        status = msgs.get("status")
        if limit_fired == "wall_time" or (status is None and self._killed):
            return Result(verdict=Verdict.WLE if limit_fired else Verdict.SIG, exit_code=128 + signal.SIGKILL, signal=int(signal.SIGKILL),
                          wall_s=round(wall, 6), cpu_user_s=msgs.get("utime", ru.ru_utime if ru else 0.0),
                          cpu_sys_s=msgs.get("stime", ru.ru_stime if ru else 0.0),
                          limit_fired=limit_fired, **common)
        if status is None:
            raise SandboxSetupError("the sandbox ended without reporting the program's status (killed from outside?)")
        cpu = dict(cpu_user_s=round(msgs["utime"], 6), cpu_sys_s=round(msgs["stime"], 6), max_rss_bytes=msgs["maxrss"],
                   wall_s=round(msgs["wall"], 6))
        if "exec_error" in msgs:
            return Result(verdict=Verdict.RE, exit_code=msgs["exec_error"], error=msgs["error"], **cpu, **common)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return Result(verdict=Verdict.SIG, exit_code=128 + sig, signal=sig, **cpu, **common)
        code = os.waitstatus_to_exitcode(status)
        return Result(verdict=Verdict.OK if code == 0 else Verdict.RE, exit_code=code, **cpu, **common)


def run(argv: list[str], policy: Policy | None = None, stdin: StdSpec = None, stdout: int | None = None,
        stderr: int | None = None, capture_output: bool = False) -> Result:
    """Run ``argv`` once in a new sandbox: ``Sandbox(policy).run(argv, ...)``.  See :meth:`Sandbox.run`."""
    return Sandbox(policy, reuse_userns=False).run(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                                   capture_output=capture_output)


__all__ = ["Sandbox", "run", "DEVNULL", "PIPE", "JailpyError"]
