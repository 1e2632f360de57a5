"""The host side: prepare, spawn, watch, finish.  Stays outside the sandbox.

``Sandbox(policy)`` checks the policy and the host once (fail closed); ``Sandbox.run(argv)``
forks the set-up process (:mod:`jailpy.child`), writes its id maps when it has unshared,
then watches: output capture, stdin feeding, the wall-time limit, forwarded signals; and
finally turns the kernel's facts into a :class:`~jailpy.result.Result`.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import json
import math
import os
import select
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from . import __version__, cgroups, child, mounts, registry, rlimits, seccomp, userns
from . import _syscalls as sc
from .errors import JailpyError, PolicyError, SandboxSetupError
from .policy import DEFAULT_PATH, DEFAULT_WALL_TIME, Policy, parse_size
from .result import Result, Verdict

if TYPE_CHECKING:
    from . import forkserver

DEVNULL = subprocess.DEVNULL
KILL_GRACE = 2.0  # seconds PID 1 gets to report after Sandbox.kill() before it is SIGKILLed
JAILPY_PIDS = 2  # jailpy's processes in the sandbox's cgroup: the set-up process and PID 1 (only PID 1 when
# the fork server started the sandbox: pids.max is then lowered by one, see Sandbox._prepare)
TEMPLATE_MAX_AGE = 1.0  # seconds a Sandbox's rootfs template serves runs before it is built again
POLL_INTERVAL = 0.1  # seconds between samples of the cgroup's pids and memory (for peaks the kernel keeps none of)
PIPE = subprocess.PIPE

StdSpec = int | bytes | None


# the interpreter that can run the fork server: this one, unless Python is embedded in another
# program (uwsgi, a C application), whose sys.executable would not take python's -I -S -c
_PYTHON = sys.executable if sys.executable and "python" in os.path.basename(sys.executable) else None


def _pidfd_exited(pidfd: int, timeout: float | None) -> bool:
    """Whether the process of ``pidfd`` has exited (pidfd_open(2): readable then), waiting up to
    ``timeout`` seconds (None: until it has)."""
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(None if timeout is None else int(timeout * 1000)))


def _exited(pid: int, pidfd: int | None, block: bool) -> bool:
    """Whether a set-up process (or a fork server's PID 1) has exited, waiting for it with
    ``block``.  ``pidfd`` None: our own child, reaped here (waitpid(2)); else a child of the fork
    server, which reaps it, watched through its pidfd."""
    if pidfd is not None:
        return _pidfd_exited(pidfd, None if block else 0)
    try:
        return os.waitpid(pid, 0 if block else os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True  # reaped already (by the caller's own wait())


class _Prepared:
    """A set-up process and the supervisor's ends of its pipes and control socket.  ``pidfd``
    None: our own child (forked here); else a pidfd for the sandbox's PID 1, a child of the
    fork server."""

    def __init__(self, pid: int, status_r: int, sync_r: int, go_w: int, ctl: socket.socket,
                 sources: tuple, cgroup: "cgroups.Cgroup | None", pidfd: int | None = None) -> None:
        self.pid, self.status_r, self.sync_r, self.go_w, self.ctl = pid, status_r, sync_r, go_w, ctl
        self.sources = sources  # (st_dev, st_ino) of each bind source when this sandbox was built
        self.cgroup = cgroup  # the sandbox's own cgroup, removed once its processes are gone
        self.own = pidfd is None
        self.is_pid1 = not self.own  # the fork server starts the sandbox's PID 1 itself (no set-up process)
        self.jailpy_pids = 1 if self.is_pid1 else JAILPY_PIDS  # jailpy's processes in the sandbox's cgroup
        # our own child is not reaped before we wait, so the pid is this process's
        self.pidfd = os.pidfd_open(pid) if pidfd is None else pidfd

    def exited(self) -> bool:
        """Whether the set-up process has exited (our own child is then reaped); never blocks."""
        return _exited(self.pid, None if self.own else self.pidfd, False)

    def wait(self):
        """Wait until the set-up process has exited; its resource usage (our own child) or None."""
        if not self.own:
            _pidfd_exited(self.pidfd, None)
            return None
        try:
            return os.wait4(self.pid, 0)[2]
        except ChildProcessError:
            return None

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


def _send_request(ctl: socket.socket, argv: list[str], env: dict[str, str], stdio: list[int], expect: dict) -> None:
    """The launch request child._receive reads: length, JSON, and the three stdio fds.  ``expect``:
    the protections PID 1 must hold before it starts the program (child.expected), from the
    Sandbox itself, so a sandbox prepared with less is refused, never run weaker."""
    data = json.dumps({"argv": argv, "env": env, "expect": expect}).encode()
    head = len(data).to_bytes(8, "little") + data[:65536 - 8]
    sent = socket.send_fds(ctl, [head], stdio)
    rest = head[sent:] + data[65536 - 8:]
    if rest:  # never an empty send: PID 1 may have read it all and closed its end (EPIPE)
        ctl.sendall(rest)


# set-up processes that reported and are exiting, to reap: pid -> (a pidfd for a child of a fork
# server, None for our own child; the sandbox's cgroup)
_EXITING: dict[int, tuple[int | None, "cgroups.Cgroup | None"]] = {}
_LEFTOVER: list["cgroups.Cgroup"] = []  # cgroups whose processes were still exiting when we tried to remove them
_EXITING_LOCK = threading.Lock()  # runs may come from many threads


def _reap_exiting(block: bool) -> None:
    """Reap set-up processes of earlier runs (see Sandbox._watch) and remove their cgroups.  Under
    the lock, so no two threads wait for one pid (whose number could meanwhile belong to a new run)."""
    with _EXITING_LOCK:
        for pid, (pidfd, cg) in list(_EXITING.items()):
            if _exited(pid, pidfd, block):
                if pidfd is not None:
                    os.close(pidfd)
                del _EXITING[pid]
                if cg is not None:
                    _LEFTOVER.append(cg)
        for attempt in range(20 if block else 1):
            for cg in list(_LEFTOVER):
                if cg.remove():
                    _LEFTOVER.remove(cg)
            if not _LEFTOVER:
                break
            time.sleep(0.005)  # a PID 1 killed through its parent's death may still be exiting


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


class _Output:
    """One of the program's output streams as the supervisor sees it: captured (``target`` None)
    or copied to the caller's fd ``target`` (when an output limit must be enforced), counting bytes."""

    def __init__(self, name: str, target: int | None) -> None:
        self.name, self.target = name, target
        self.data = bytearray()
        self.count = 0
        self.truncated = False


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the caller's ``fd`` (which may be non-blocking); give up quietly if
    the reader went away (EPIPE): the program's output then goes nowhere, as it would without jailpy."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
        except OSError:
            return


class Sandbox:
    """A prepared sandbox configuration; :meth:`run` may be called many times.

    Every run gets new mount, pid, uts, ipc, net and cgroup namespaces, and (when the policy
    asks for a limit that needs one, a name or a cgroup parent) a cgroup of its own.  With
    ``reuse_userns`` (the default) the runs of one Sandbox share one user namespace, made on the
    first run: that saves creating it and, rootless with a subuid range, two newuidmap/newgidmap
    processes per run (about 3 ms here).  What runs share through it is per-user kernel state of
    the sandbox's uid: its keyrings (keyrings(7)) and per-uid counts such as RLIMIT_NPROC.  Pass
    ``reuse_userns=False`` for a fresh user namespace per run (``jailpy.run`` and the CLI do).

    With ``reuse_userns``, two more things are shared to make a run cheap:

    * a rootfs template: the read-only part of the rootfs (the overlays, the hidden directories,
      /dev's nodes, the binds) is built once, in a mount namespace of its own, and each run's
      mount namespace starts as a copy of it, adding only /proc, /sys, /tmp, devpts, /dev/shm,
      mqueue, the ``tmpfs`` mounts and the binds below them.  It is built again when it is
      older than ``TEMPLATE_MAX_AGE`` (1 s) or a bind source was replaced: an overlay keeps
      serving a host file that was replaced by rename (as package managers do) until it is
      mounted again, so a run sees such a change up to a second late.
    * a fork server (``forkserver``, :mod:`jailpy.forkserver`): a small Python process that
      starts each run's PID 1 itself, one process per run instead of two and not a copy of the
      caller's process (whose memory is then never copied into a sandbox).  ``None`` (the
      default): started at the second run, used once it is ready, never waited for; ``True``:
      started and waited for at the first run (about 50 ms); ``False``: never.  Not used with
      ``pass_fd``.  It exits when the Sandbox is closed or the caller's process ends, and if it
      dies runs fork from the caller again.

    With ``prefork=True`` (or N, up to 8, sandboxes kept ready; one run at a time per Sandbox)
    each run also forks the set-up of the next sandbox, which builds its
    rootfs while this one runs and then waits (two helper processes) for the next :meth:`run`,
    which then only sends the program over a unix socket (argv, environment, SCM_RIGHTS for the
    stdio fds).  Bind sources are opened when that sandbox is built; a run finding one replaced
    since (another inode) builds a new sandbox instead.  Ignored when the policy has
    ``pass_fd``; :meth:`close` ends the waiting sandbox.

    ``name``: while a run is going, ``jailpy ps`` lists it under this name and ``jailpy pause``,
    ``resume`` and ``kill`` act on it (see :mod:`jailpy.registry`).

    Raises PolicyError (bad policy, missing path) or HostError (a protection this host cannot
    give, with the fix) from the constructor: nothing has been started then."""

    def __init__(self, policy: Policy | None = None, *, reuse_userns: bool = True, prefork: bool | int = False,
                 name: str | None = None, forkserver: bool | None = None) -> None:
        self.reuse_userns = reuse_userns
        self.forkserver = forkserver
        self.prefork = int(prefork)
        if not 0 <= self.prefork <= 8:
            raise PolicyError(f"prefork: between 0 and 8 sandboxes kept ready, got {prefork}")
        self._userns_fd: int | None = None
        self._template_fd: int | None = None  # the rootfs template's mount namespace (reuse_userns only)
        self._forkserver: "forkserver.ForkServer | None" = None
        self._forkserver_config: dict | None = None
        self._forkserver_failed = False
        self._spawned = 0
        self._template_key: tuple = ()  # (when it was built, bind sources' ids then)
        self._ready: list[_Prepared] = []  # prefork: built and waiting for a program, oldest first
        self._owner = os.getpid()  # see _after_fork
        self.policy = pol = (policy or Policy()).validate()
        self.name = registry.check_name(name) if name is not None else None
        if self.name is not None and pol.no_cgroup:
            raise PolicyError("--name needs a cgroup (jailpy ps, pause and kill act through it), but --no-cgroup is set")
        self.ids = userns.prepare(pol.uid, pol.gid, pol.id_map)
        self.mounts = mounts.prepare(pol)
        for fd in pol.pass_fd:
            try:
                os.fstat(fd)
            except OSError:
                raise PolicyError(f"pass-fd: fd {fd} is not open") from None
        self.env = self._environment()
        self.wall_time = pol.wall_time if pol.wall_time is not None else DEFAULT_WALL_TIME
        self.output_limit = parse_size(pol.output_limit) if pol.output_limit is not None else None
        self.rlimits = tuple(rlimits.plan(cpu_time=pol.cpu_time,
                                          fsize=parse_size(pol.fsize) if pol.fsize is not None else None,
                                          nofile=pol.nofile,
                                          stack=parse_size(pol.stack) if pol.stack is not None else None))
        self.cgroup_plan = self._cgroup_plan()
        if self.cgroup_plan is not None:
            self.mounts.cgroup_fs = self.cgroup_plan.fs_mounts()
        self.filter = None if pol.seccomp == "none" else seccomp.prepare(pol.seccomp, log=pol.seccomp_log)
        self._protections = self._describe_protections()  # fixed per Sandbox: computed once, not per run
        self._expect = child.expected(self.filter.bpf if self.filter else None, self.rlimits)
        self._digest = pol.digest()
        self._pidfd: int | None = None
        self._setup_pidfd: int | None = None
        self._pending: list[int] = []
        self._killed = False
        self._sv = False  # a seccomp "kill" rule fired in the current run
        self._hard_kill_at: float | None = None
        self._jailpy_pids = JAILPY_PIDS

    def _cgroup_plan(self) -> "cgroups.CgroupPlan | None":
        pol = self.policy
        if pol.no_cgroup:
            return None
        limits = cgroups.Limits(memory=parse_size(pol.memory) if pol.memory is not None else None,
                                pids=pol.pids + JAILPY_PIDS if pol.pids is not None else None,
                                cpus=pol.cpus, cpuset=pol.cpuset)
        if not (limits.any() or pol.cpu_time is not None or self.name is not None or pol.cgroup_parent is not None):
            return None  # nothing asks for one: no cgroup work per run
        parent = pol.cgroup_parent
        if parent is None and os.environ.get("JAILPY_CGROUP_PARENT"):
            parent = os.environ["JAILPY_CGROUP_PARENT"]
            if not parent.startswith("/") or ".." in parent.split("/"):
                raise PolicyError(f"JAILPY_CGROUP_PARENT: expected a cgroup path like /judge, got {parent!r}")
        plan = cgroups.prepare(limits, parent=parent, required=True, cpu_accounting=pol.cpu_time is not None)
        desc = plan.description
        if pol.pids is not None:
            desc["limits"] = dict(desc["limits"], pids=pol.pids)
        desc["jailpy_share"] = ("the sandbox's PID 1 (and, unless the fork server started it, jailpy's set-up "
                                "process) are in this cgroup too; pids.max has one more for each, the memory "
                                "limit what they use when the program starts, and the Result's peaks do not "
                                "count them")
        return plan

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
        """Which layers are active, for the Result: namespaces, ids, rootfs, capabilities, cgroup,
        seccomp, rlimits, time and output limits."""
        return dict(self._protections)

    def _describe_protections(self) -> dict:
        f = self.filter
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
            "seccomp": None if f is None else {
                "policy": f.name, "hash": f.digest,
                "mode": "log (permissive: nothing denied)" if self.policy.seccomp_log else "enforce",
                "report": "seccomp_unotify" if f.notify else None,
            },
            "cgroup": self.cgroup_plan.description if self.cgroup_plan else None,
            "rlimits": rlimits.describe(list(self.rlimits)),
            "wall_time": {"seconds": self.wall_time, "source": "default" if self.policy.wall_time is None else "policy"},
            "output_limit": self.output_limit,
            "landlock": None,
            "lsm": None,
        }

    def _userns(self) -> int | None:
        if self.reuse_userns and self._userns_fd is None:
            self._userns_fd = userns.create(self.ids)
        return self._userns_fd

    def _template(self, key: tuple) -> int | None:
        """The mount namespace of this Sandbox's rootfs template, built now when there is none,
        when it is older than TEMPLATE_MAX_AGE seconds, or when a bind source was replaced since
        (``key``: the sources' ids now, :meth:`_source_ids`).

        Each run's mount namespace starts as a copy of it (setns(2) then unshare(2) CLONE_NEWNS,
        mount_namespaces(7)), so a run mounts only what it must get afresh: about 25 mounts
        instead of 55.  The age bound is for the host's files: an overlay keeps serving a file
        the host replaced (by rename, as package managers do) until it is mounted again
        (overlayfs.rst, "Changes to underlying filesystems")."""
        if not self.reuse_userns:
            return None
        if self._template_fd is not None:
            if time.monotonic() - self._template_key[0] <= TEMPLATE_MAX_AGE and self._template_key[1] == key:
                return self._template_fd
            os.close(self._template_fd)
            self._template_fd = None
        built = time.monotonic()
        self._template_fd = self._build_template()
        self._template_key = (built, key)
        return self._template_fd

    def _build_template(self) -> int:
        """Start a builder (:meth:`_prepare` with ``build_template``) and return the fd of the
        template's mount namespace it sends.  Raises SandboxSetupError."""
        prep = self._prepare(build_template=True)
        try:
            _, fds, _, _ = socket.recv_fds(prep.ctl, 1, 1)
            if fds:
                return fds[0]
            prep.close_go()  # lets the set-up process (if any) exit: the status pipe then ends
            msgs = [json.loads(line) for line in os.read(prep.status_r, 65536).splitlines() if line.strip()]
            why = next((m["error"] for m in msgs if "error" in m), "the builder ended without a word")
            raise SandboxSetupError(f"cannot set up the sandbox: {why}")
        finally:
            prep.close_go()  # the set-up process (if any) waits for this, then exits
            prep.wait()
            prep.close()

    def close(self, wait: bool | None = None) -> None:
        """End a run that is going (as :meth:`kill` does: its :meth:`run` returns signal 9), the
        prepared sandbox (prefork) and the fork server, release the user namespace and the rootfs
        template, reap finished helpers and remove their cgroups (all but the last two are also
        done when the Sandbox is garbage-collected).  A later :meth:`run` starts afresh.

        ``wait``: wait for jailpy's helper processes of finished runs to exit (a few ms), so their
        cgroups can be removed now; None (the default) waits only when this Sandbox uses cgroups.
        Without waiting they are reaped by a later run (or by init when this process exits)."""
        if self._pidfd is not None or self._setup_pidfd is not None:
            self.kill()  # a run is going (called from another thread): it ends the same way in every mode
        self._release()
        _reap_exiting(block=self.cgroup_plan is not None if wait is None else wait)

    def _after_fork(self) -> None:
        """In a process forked from this Sandbox's owner (os.fork, multiprocessing): forget, without
        ending them, the prepared sandboxes and the fork server, which are the owner's; keep the
        user namespace and template fds (this process's own copies)."""
        if self._owner == os.getpid():
            return
        self._owner = os.getpid()
        for prep in self._ready:
            prep.close()
        self._ready = []
        if self._forkserver is not None:
            self._forkserver.close()  # only our copy of its socket (ForkServer.close)
            self._forkserver = None
        self._forkserver_config = None

    def _release(self) -> None:
        self._after_fork()
        while self._ready:
            self._discard(self._ready.pop())
        if self._userns_fd is not None:
            os.close(self._userns_fd)
            self._userns_fd = None
        if self._template_fd is not None:
            os.close(self._template_fd)
            self._template_fd = None
        if self._forkserver is not None:
            self._forkserver.close()
            self._forkserver = None

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
        if self._hard_kill_at is None:
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
        sets both to PIPE and the bytes land in ``Result.stdout``/``stderr``.  With an output
        limit, inherited and fd outputs go through a pipe that jailpy copies and counts.
        Returns a Result (also for 126/127: see ``Result.error``).  Raises PolicyError for a
        bad argument (a directory as stdin, an empty argv, a name already running) and
        SandboxSetupError when the sandbox could not be built; nothing is left running then.

        The sandbox dies with the thread that called run() (PR_SET_PDEATHSIG): call it from a
        thread that outlives the run."""
        if isinstance(argv, (str, bytes)):
            raise PolicyError(f"argv must be a list of strings, like [{argv!r}], not a string")
        if not argv:
            raise PolicyError("no command given")
        if capture_output:
            stdout = stderr = PIPE
        opened: list[int] = []  # our fds to close when done
        feeds: dict[int, bytes] = {}
        outputs: dict[int, _Output] = {}  # our read end -> stream; stdout's first

        def std(spec: StdSpec, i: int) -> int | None:
            what = ("stdin", "stdout", "stderr")[i]
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
                    outputs[mine] = _Output(what, None)
                return theirs
            elif isinstance(spec, int) and spec >= 0:
                fd = spec
                try:
                    st = os.fstat(fd)
                except OSError:
                    raise PolicyError(f"{what}: fd {fd} is not open") from None
            else:
                raise PolicyError(f"{what}: unsupported value {spec!r}")
            if stat.S_ISDIR(st.st_mode):
                raise PolicyError(f"{what} is a directory; give a file, a pipe or /dev/null")
            if i > 0 and self.output_limit is not None:
                r, w = _pipe()  # counted on the way: the limit holds for files and terminals too
                opened.append(w)
                outputs[r] = _Output(what, fd)
                return w
            return fd

        try:
            stdio = [std(stdin, 0), std(stdout, 1), std(stderr, 2)]
            for i, fd in enumerate(stdio):
                if fd is None:  # the caller has it closed: the program gets /dev/null there
                    stdio[i] = _devnull()
                    opened.append(stdio[i])
        except BaseException:
            for fd in (*opened, *feeds, *outputs):
                os.close(fd)
            raise
        self._after_fork()
        self._pending.clear()
        self._killed = False
        self._hard_kill_at = None
        _reap_exiting(block=False)
        entry = None
        prep = None
        t_start = time.monotonic()
        try:
            prep = self._take_prepared()
            if self.name is not None:
                entry = registry.register(self.name, list(argv), list(prep.cgroup.paths), self.cgroup_plan.version,
                                          prep.jailpy_pids)
            t_start = time.monotonic()
            try:
                _send_request(prep.ctl, list(argv), self.env, stdio, self._expect)
            except (BrokenPipeError, ConnectionResetError):  # the prepared sandbox died meanwhile
                self._discard(prep)
                prep = self._prepare()
                _send_request(prep.ctl, list(argv), self.env, stdio, self._expect)
        except BaseException:
            if prep is not None:
                self._discard(prep)
            if entry is not None:
                registry.unregister(entry)
            for fd in (*opened, *feeds, *outputs):
                os.close(fd)
            raise
        for fd in opened:
            os.close(fd)
        self._setup_pidfd = prep.pidfd
        while not self.policy.pass_fd and len(self._ready) < self.prefork:
            self._ready.append(self._prepare())  # built while this run runs, on the cores it leaves free
        try:
            return self._watch(prep, t_start, feeds, outputs)
        finally:
            if entry is not None:
                registry.unregister(entry)
            for fd in (*feeds, *outputs):
                try:
                    os.close(fd)
                except OSError:
                    pass
            pidfd, self._pidfd, self._setup_pidfd = self._pidfd, None, None  # before the fds close
            if pidfd is not None:
                os.close(pidfd)
            prep.close()

    def _prepare(self, build_template: bool = False) -> "_Prepared":
        """Start the set-up process; it builds the sandbox and then waits for the program (with
        ``build_template``: it builds a rootfs template and sends it, see :meth:`_build_template`)."""
        cg = self.cgroup_plan.create() if self.cgroup_plan is not None and not build_template else None
        try:
            status_r, status_w = _pipe()
            sync_r, sync_w = _pipe()
            go_r, go_w = _pipe()
            sources = self._source_ids()
            ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            child_fd = _high_fd(ctl_child.detach())
            f = self.filter
            ctx = child.SpawnContext(
                pass_fds=() if build_template else tuple(self.policy.pass_fd), ids=self.ids, mounts=self.mounts,
                hostname=self.policy.hostname, status_w=status_w, sync_w=sync_w, go_r=go_r, ctl_fd=child_fd,
                supervisor_pid=os.getpid(), userns_fd=self._userns(),
                template_fd=None if build_template else self._template(sources),
                cgroup_procs=tuple(cg.procs) if cg else (), rlimits=self.rlimits,
                seccomp_bpf=f.bpf if f else None, seccomp_listener=bool(f and f.notify), handshake=cg is not None,
                build_template=build_template,
            )
        except BaseException:
            if cg is not None:
                cg.remove()
            raise
        try:
            pid, pidfd = self._spawn(ctx)
        except BaseException:
            if cg is not None:
                cg.remove()
            for fd in (status_r, sync_r, go_w):
                os.close(fd)
            ctl.close()
            raise
        finally:
            for fd in (status_w, sync_w, go_r, child_fd):
                os.close(fd)
        prep = _Prepared(pid, status_r, sync_r, go_w, ctl, sources, cg, pidfd)
        if cg is not None and prep.jailpy_pids != JAILPY_PIDS and self.policy.pids is not None:
            try:  # before the program exists: PID 1 waits for the launch request
                cg.set_pids_max(self.policy.pids + prep.jailpy_pids)
            except BaseException:
                self._discard(prep)
                raise
        return prep

    _FD_FIELDS = ("status_w", "go_r", "ctl_fd", "template_fd")
    _RUN_FIELDS = ("cgroup_procs", "handshake", "build_template")

    def _spawn(self, ctx: "child.SpawnContext") -> tuple[int, int | None]:
        """Start a sandbox for ``ctx``: its PID 1 cloned by this Sandbox's fork server when that is
        ready (see :mod:`jailpy.forkserver`), else a set-up process forked here
        (``child.setup(ctx)``).  Returns the pid and, for PID 1 from the fork server, a pidfd
        (None: our own child).  Raises SandboxSetupError when the fork server could not start
        it, OSError when this process cannot fork."""
        fs = self._ready_forkserver(ctx.build_template) if ctx.userns_fd is not None else None
        if fs is not None:
            if self._forkserver_config is None:
                # from the Sandbox, never from ctx: the first ctx may be a template builder's, which
                # has no filter and no rlimits
                f = self.filter
                self._forkserver_config = {
                    "pass_fds": tuple(self.policy.pass_fd), "ids": self.ids, "mounts": self.mounts,
                    "hostname": self.policy.hostname, "rlimits": self.rlimits,
                    "seccomp_bpf": f.bpf if f else None, "seccomp_listener": bool(f and f.notify)}
            names = [k for k in self._FD_FIELDS if getattr(ctx, k) is not None]
            run = {k: getattr(ctx, k) for k in self._RUN_FIELDS}
            cg_fds: list[int] = []  # PID 1 joins its cgroup through these: it cannot see the host's /sys
            try:
                for path in ctx.cgroup_procs:
                    try:
                        cg_fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
                    except OSError as e:
                        raise SandboxSetupError(f"cannot set up the sandbox: open {path}: {e.strerror}") from None
                run["fds"] = names + ["cgroup_fds"] * len(cg_fds)
                return fs.spawn(self._forkserver_config, ctx.userns_fd, run, [getattr(ctx, k) for k in names] + cg_fds)
            except ChildProcessError as e:
                raise SandboxSetupError(f"cannot set up the sandbox: the fork server could not fork: {e}") from None
            except OSError:
                pass  # it died (killed from outside?): fork here, start a new one next time
            finally:
                for fd in cg_fds:
                    os.close(fd)
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
        return pid, None

    def _ready_forkserver(self, for_template: bool) -> "forkserver.ForkServer | None":
        """This Sandbox's fork server when it is ready, else None (see ``forkserver`` in the class
        docstring).  Started at the second run's set-up (template builds do not count), so a
        Sandbox used once never pays for it."""
        if (not self.reuse_userns or self.policy.pass_fd or self.forkserver is False or self._forkserver_failed
                or not _PYTHON):
            return None
        self._spawned += not for_template
        fs = self._forkserver
        if fs is not None and fs.dead:
            fs.close()
            fs = self._forkserver = None
        if fs is None and (self._spawned >= 2 or self.forkserver):
            from . import forkserver  # only here: jailpy.run() and the CLI never start one

            try:
                fs = self._forkserver = forkserver.ForkServer(_PYTHON)
            except OSError:
                self._forkserver_failed = True  # no interpreter to start: fork here from now on
                return None
        if fs is None:
            return None
        return fs if fs.ready(wait=bool(self.forkserver)) else None

    def _take_prepared(self) -> "_Prepared":
        while self._ready:
            prep = self._ready.pop(0)
            alive = not prep.exited()
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
            signal.pidfd_send_signal(prep.pidfd, signal.SIGKILL)  # its PID 1 follows (PDEATHSIG), and the namespaces
        except ProcessLookupError:
            pass
        prep.wait()
        prep.close()
        if prep.cgroup is not None:
            with _EXITING_LOCK:
                if not prep.cgroup.remove():
                    _LEFTOVER.append(prep.cgroup)

    def _watch(self, prep: "_Prepared", t_start: float, feeds: dict[int, bytes],
               outputs: dict[int, _Output]) -> Result:
        msgs: dict = {}
        pid, status_r = prep.pid, prep.status_r
        cg = prep.cgroup
        self._jailpy_pids = prep.jailpy_pids
        if prep.is_pid1:  # no set-up process to report it: PID 1 is known from the start
            self._pidfd = os.dup(prep.pidfd)
            for sig in self._pending:
                self.send_signal(sig)
            self._pending.clear()
            if self._killed:
                self.kill()
        try:
            if self._userns_fd is None and os.read(prep.sync_r, 1) == b"u":
                userns.write_maps(self.ids, pid)
                os.write(prep.go_w, b"g")
        except BaseException:
            self._discard(prep)
            raise
        deadline = t_start + self.wall_time  # until the program has started: bounds a set-up that hangs
        cpu_limit = self.policy.cpu_time
        next_cpu = None  # when to read the cgroup's CPU time next (once the program runs)
        cpuset = len(cgroups.parse_cpulist(self.policy.cpuset or ""))
        cpus = min(self.policy.cpus or math.inf, cpuset or os.cpu_count() or 1)
        next_poll = None
        limit_fired = None
        listener = None
        blocked: dict | None = None
        log: list[dict] = []
        self._sv = False
        sel = selectors.DefaultSelector()
        buf = bytearray()
        sel.register(status_r, selectors.EVENT_READ)
        sel.register(prep.ctl, selectors.EVENT_READ)  # PID 1 sends the seccomp listener over it, or closes it
        for fd in outputs:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        for fd in list(feeds):  # feeds is shared with run(): what is closed here leaves it
            os.set_blocking(fd, False)
            if feeds[fd]:
                sel.register(fd, selectors.EVENT_WRITE)
            else:
                os.close(fd)
                del feeds[fd]

        def fire(what: str) -> None:
            nonlocal limit_fired
            if limit_fired is None:
                limit_fired = what
            self.kill()

        try:
            while sel.get_map():
                now = time.monotonic()
                if self._hard_kill_at is not None and now >= self._hard_kill_at and "status" not in msgs:
                    self._hard_kill_at = math.inf
                    self.send_signal(signal.SIGKILL)
                if "status" in msgs and all(k.fd in (status_r, listener) for k in sel.get_map().values()):
                    break  # the program and all it started are dead and reaped: only jailpy's helpers remain
                if now >= deadline and limit_fired is None and "status" not in msgs:
                    fire("wall_time")
                if next_cpu is not None and now >= next_cpu and "status" not in msgs:
                    used = cg.cpu_seconds()
                    if used >= cpu_limit:
                        fire("cpu_time")
                        next_cpu = None
                    else:  # the tree cannot use more than `cpus` CPU-seconds per second
                        next_cpu = now + min(0.5, max(0.005, (cpu_limit - used) / cpus))
                if next_poll is not None and now >= next_poll:
                    cg.poll()
                    next_poll = now + POLL_INTERVAL
                ends = [t for t in (deadline if limit_fired is None else None, self._hard_kill_at, next_cpu, next_poll)
                        if t is not None and t != math.inf]
                # at most a day: poll(2) takes no more than 2**31 ms, and a wall_time may be a year
                timeout = min(86400.0, max(0.0, min(ends) - time.monotonic())) if ends else None
                for key, _ in sel.select(timeout):
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
                    if fd == prep.ctl.fileno():
                        sel.unregister(fd)
                        try:
                            _, fds, _, _ = socket.recv_fds(prep.ctl, 1, 1)
                        except OSError:
                            fds = []
                        if fds:
                            listener = fds[0]
                            sel.register(listener, selectors.EVENT_READ)
                        continue
                    if fd == listener:
                        state = self._notification(listener, log)
                        if state == "hup":
                            sel.unregister(listener)
                        elif state is not None:
                            if blocked is None:
                                blocked = state  # the first denial is reported, with how many there were
                            else:
                                blocked["count"] += 1
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
                                if self._killed:
                                    self.kill()
                            if "started" in msg:
                                deadline = time.monotonic() + self.wall_time  # the program gets all of it
                            if "ready" in msg and cg is not None:
                                # PID 1 is about to start the program: what the cgroup holds now is
                                # jailpy's own share, given back on top of the memory limit
                                cg.raise_memory_limit(cg.baseline() or 0)
                                try:
                                    prep.ctl.sendall(b"G")
                                except OSError:
                                    pass  # PID 1 died: its status pipe says the rest
                            if "started" in msg and cg is not None:
                                next_poll = time.monotonic() + POLL_INTERVAL
                                if cpu_limit is not None:
                                    next_cpu = time.monotonic() + min(0.5, cpu_limit / cpus)
                            msgs.update(msg)
                        continue
                    out = outputs[fd]
                    if self.output_limit is not None and out.count + len(data) > self.output_limit:
                        data = data[:self.output_limit - out.count]
                        out.truncated = True
                        fire("output")
                    out.count += len(data)
                    if out.target is None:
                        out.data += data
                    elif data:
                        _write_all(out.target, data)
        finally:
            sel.close()
            if listener is not None:
                os.close(listener)
            # done with PID 1 (no more signals for it): the set-up process may now reap it and exit
            self._pidfd, pidfd = None, self._pidfd
            if pidfd is not None:
                os.close(pidfd)
            prep.close_go()
            try:
                stats = cg.stats() if cg is not None else None
            except OSError:
                stats = None
            ru = None
            if "status" in msgs:
                # PID 1 reported after killing and reaping every process of the sandbox; it and the
                # set-up process are now exiting (the kernel tears the namespaces down): reap them
                # (and remove the cgroup) on the next run instead of waiting here
                with _EXITING_LOCK:
                    if not prep.exited():
                        _EXITING[pid] = (None if prep.own else os.dup(prep.pidfd), cg)
                    elif cg is not None and not cg.remove():
                        _LEFTOVER.append(cg)
            else:
                ru = prep.wait()
                if cg is not None:
                    cg.kill()  # whatever of the sandbox is left (PID 1 is dead, so nothing should be)
                    with _EXITING_LOCK:
                        if not cg.remove():
                            _LEFTOVER.append(cg)
            prep.cgroup = None
        wall = time.monotonic() - t_start
        return self._finish(msgs, ru, wall, limit_fired, outputs, stats, blocked, log)

    def _notification(self, listener: int, log: list[dict]) -> dict | str | None:
        """Answer one seccomp notification (seccomp_unotify(2)): record it, then deny it with the
        rule's errno, kill the sandbox for a "kill" rule, or (log mode) let it run.  Returns the
        blocked_syscall record, "hup" when no process uses the filter any more, or None."""
        p = select.poll()
        p.register(listener, select.POLLIN)
        ev = p.poll(0)
        if not ev or not ev[0][1] & select.POLLIN:
            return "hup" if ev and ev[0][1] & (select.POLLHUP | select.POLLERR) else None
        n = seccomp.receive(listener)  # only with POLLIN: the ioctl would block otherwise
        if n is None:
            return None
        d = self.filter.decide(n.nr, n.args)
        rec = seccomp.blocked_record(n, d, 1)
        if d.action in ("log", "allow"):  # a log rule, or --seccomp-log (permissive): record, let it run
            for old in log:
                if old["name"] == rec["name"] and old["args"] == rec["args"]:
                    old["count"] += 1
                    break
            else:
                if len(log) < 1000:
                    log.append(rec)
            seccomp.respond(listener, n.id, cont=True)
            return None
        if d.action == "kill":
            # no answer: the call never runs.  The calling process dies first, then the sandbox
            try:
                pidfd = os.pidfd_open(n.pid)
                try:
                    if sc.seccomp_notif_id_valid(listener, n.id):  # the pid is still that task's
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                finally:
                    os.close(pidfd)
            except OSError:
                pass
            self._sv = True
            self.kill()
            return rec
        seccomp.respond(listener, n.id, error=d.errno or errno.EPERM)
        return rec

    def _finish(self, msgs: dict, ru, wall: float, limit_fired: str | None, outputs: dict[int, _Output],
                stats: "cgroups.Stats | None", blocked: dict | None, log: list[dict]) -> Result:
        common: dict = dict(protections=self.protections(), jailpy_version=__version__, policy_hash=self._digest,
                            blocked_syscall=blocked, seccomp_log=log if (log or self.policy.seccomp_log) else None)
        for out in outputs.values():
            if out.target is None:
                common[out.name] = bytes(out.data)
            common[out.name + "_bytes"] = out.count
            common[out.name + "_truncated"] = out.truncated
        oom = bool(stats and stats.oom_kills)
        if stats is not None:
            mem = stats.memory_peak_bytes
            if mem is not None and stats.memory_base_bytes:
                mem = max(0, mem - stats.memory_base_bytes)  # what jailpy's own processes held is not the program's
            pids = None if stats.pids_peak is None else max(0, stats.pids_peak - self._jailpy_pids)
            common.update(memory_peak_bytes=mem, pids_peak=pids, oom_killed=oom)
        if "error" in msgs and "exec_error" not in msgs:
            if oom:
                raise SandboxSetupError(f"cannot set up the sandbox: it ran out of memory before the program started "
                                        f"(raise --memory): {msgs['error']}")
            raise SandboxSetupError(f"cannot set up the sandbox: {msgs['error']}")
        status = msgs.get("status")
        if status is None:
            if "started" not in msgs and not self._killed:
                if oom:
                    raise SandboxSetupError("cannot set up the sandbox: it ran out of memory before the program "
                                            "started (raise --memory)")
                raise SandboxSetupError("the sandbox ended without reporting the program's status (killed from outside?)")
            # PID 1 died before reporting: killed from outside (jailpy kill NAME), by the OOM killer, or
            # SIGKILLed after KILL_GRACE; what the cgroup measured stands in for its report
            status = signal.SIGKILL  # a wait status: killed by SIGKILL
            if stats is not None:
                common.update(cpu_user_s=round(stats.cpu_user_s, 6), cpu_sys_s=round(stats.cpu_sys_s, 6))
            elif ru is not None:
                common.update(cpu_user_s=ru.ru_utime, cpu_sys_s=ru.ru_stime)
            if not (self._killed or oom):
                common["error"] = "the sandbox was killed from outside (jailpy kill, or a signal to its PID 1)"
            common["wall_s"] = round(wall, 6)
        else:
            common.update(cpu_user_s=round(msgs["utime"], 6), cpu_sys_s=round(msgs["stime"], 6),
                          max_rss_bytes=msgs["maxrss"], wall_s=round(msgs["wall"], 6))
        if "exec_error" in msgs:
            return Result(verdict=Verdict.RE, exit_code=msgs["exec_error"], error=msgs["error"], **common)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = 128 + sig if sig else os.waitstatus_to_exitcode(status)
        if self._sv:
            return Result(verdict=Verdict.SV, exit_code=128 + signal.SIGSYS, signal=int(signal.SIGSYS),
                          limit_fired="seccomp", **common)
        if sig == signal.SIGSYS and self.filter is not None:
            # SECCOMP_RET_KILL_PROCESS: the filter's answer to x32 and i386 (int 0x80) system calls
            return Result(verdict=Verdict.SV, exit_code=code, signal=sig, limit_fired="seccomp", **common)
        if limit_fired is None and oom:
            limit_fired = "memory"
        if limit_fired is None and sig == signal.SIGXCPU and self.policy.cpu_time is not None:
            limit_fired = "cpu_time"  # RLIMIT_CPU, the per-process backstop, fired first
        verdict = {"output": Verdict.OLE, "cpu_time": Verdict.TLE, "wall_time": Verdict.WLE,
                   "memory": Verdict.MLE}.get(limit_fired or "")
        if verdict in (Verdict.OLE, Verdict.TLE, Verdict.WLE) and sig is None:
            # jailpy killed the sandbox for it, but the program finished on its own in the moment
            # before: the run still failed, and exits like the others (128 + SIGKILL)
            sig, code = int(signal.SIGKILL), 128 + signal.SIGKILL
        if verdict is None:
            verdict = Verdict.SIG if sig else Verdict.OK if code == 0 else Verdict.RE
        return Result(verdict=verdict, exit_code=code, signal=sig, limit_fired=limit_fired, **common)


def run(argv: list[str], policy: Policy | None = None, stdin: StdSpec = None, stdout: int | None = None,
        stderr: int | None = None, capture_output: bool = False) -> Result:
    """Run ``argv`` once in a new sandbox: ``Sandbox(policy).run(argv, ...)``.  See :meth:`Sandbox.run`."""
    sandbox = Sandbox(policy, reuse_userns=False)
    try:
        return sandbox.run(argv, stdin=stdin, stdout=stdout, stderr=stderr, capture_output=capture_output)
    finally:
        sandbox.close()


__all__ = ["Sandbox", "run", "DEVNULL", "PIPE", "JailpyError"]
