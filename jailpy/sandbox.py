"""The host side's public face: ``Sandbox(policy)`` and ``run()``.  Policy in, Result out.

``Sandbox(policy)`` checks the policy and the host once (fail closed) and plans each facility:
ids (:mod:`jailpy.userns`), mounts (:mod:`jailpy.mounts`), cgroup (:mod:`jailpy.cgroups`),
rlimits, seccomp.  ``Sandbox.run(argv)`` then:

1. opens the program's stdio (:mod:`jailpy.stdio`);
2. takes a sandbox from its :class:`~jailpy.pool.Pool` (built now, or ahead of time);
3. sends it the program (:mod:`jailpy.launch`);
4. watches the run (:mod:`jailpy.watch`): output, stdin, limits, signals, seccomp notifications;
5. turns the facts into a Result (:mod:`jailpy.verdict`).
"""

from __future__ import annotations

import errno
import math
import os
import time

from . import __version__, cgroups, child, idlease, launch, lsm, mounts, nesting, net, registry, rlimits, seccomp, ucounts, userns
from .errors import HostError, JailpyError, PolicyError, fd_exhausted
from .policy import DEFAULT_PATH, DEFAULT_WALL_TIME, Policy, parse_size
from .pool import JAILPY_PIDS, Pool, Spec, reap_exiting
from .result import Result
from .stdio import DEVNULL, PIPE, StdSpec, open_stdio
from .verdict import Context, decide
from .watch import Limits, RunControl, Watch


REAP_WAIT = 1.0
"""Seconds :meth:`Sandbox.close` waits at most for jailpy's exiting helpers (they take milliseconds)."""


class _fd_limit:
    """Turns running out of file descriptors (EMFILE, ENFILE) into a HostError naming the limit:
    a run needs about a dozen fds of the caller's for a moment (pipes, sockets, pidfds, a memfd)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if isinstance(err, OSError) and err.errno in (errno.EMFILE, errno.ENFILE):
            raise HostError(fd_exhausted(err)) from None
        emfile = os.strerror(errno.EMFILE)
        if isinstance(err, JailpyError) and emfile in str(err) and "ulimit" not in str(err):
            # a step that reported its own EMFILE (the sandbox's set-up, an id map): say which limit
            raise type(err)(f"{err} ({fd_exhausted(OSError(errno.EMFILE, emfile))})") from None
        return False


class Sandbox:
    """A prepared sandbox configuration; :meth:`run` may be called many times.

    Every run gets new mount, pid, uts, ipc, net and cgroup namespaces, and (when the policy
    asks for a limit that needs one, a name or a cgroup parent) a cgroup of its own.  With
    ``reuse_userns`` (the default) the runs of one Sandbox share one user namespace, made on the
    first run: that saves creating it and, rootless with a subuid range, two newuidmap/newgidmap
    processes per run (about 3 ms here).  What runs share through it is per-user kernel state of
    the sandbox's uid: its keyrings (keyrings(7)) and per-uid counts such as RLIMIT_NPROC.  Pass
    ``reuse_userns=False`` for a fresh user namespace per run (``jailpy.run`` and the CLI do).

    With ``reuse_userns``, two more things are shared to make a run cheap (:mod:`jailpy.pool`):

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
        with _fd_limit():
            self._plan(policy, reuse_userns, prefork, name, forkserver)

    def _plan(self, policy: Policy | None, reuse_userns: bool, prefork: bool | int, name: str | None,
              forkserver: bool | None) -> None:
        """Check the policy and the host, and plan each facility (see the class docstring)."""
        self.reuse_userns = reuse_userns
        self.forkserver = forkserver
        self.prefork = int(prefork)
        if not 0 <= self.prefork <= 8:
            raise PolicyError(f"prefork: between 0 and 8 sandboxes kept ready, got {prefork}")
        self._control = RunControl()
        self._sinks: list = []  # the last run's output still on its way (wait_output)
        self.policy = pol = (policy or Policy()).checked()
        self.name = registry.check_name(name) if name is not None else None
        if self.name is not None and pol.no_cgroup:
            raise PolicyError("--name needs a cgroup (jailpy ps, pause and kill act through it), but --no-cgroup is set")
        self.image = None
        if pol.image is not None:  # an OCI image's layers as the root (unpacked once, in the store)
            from .image import prepare as prepare_image

            self.image = prepare_image(pol.image)
        self.mounts = mounts.prepare(pol, self.image)
        self.net = net.prepare(pol)
        # Landlock from the mount plan, TCP rules from the network plan (jailpy.lsm), an exec label
        self.lsm = lsm.prepare(pol, self.mounts, tcp=lsm.landlock.tcp_rules(self.net))
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
                                          stack=parse_size(pol.stack) if pol.stack is not None else None,
                                          sigpending=pol.sigpending, msgqueue=parse_size(pol.msgqueue)))
        self.cgroup_plan = self._cgroup_plan()
        if self.cgroup_plan is not None:
            self.mounts.cgroup_fs = self.cgroup_plan.fs_mounts()
        self.enclosure = nesting.detect()  # what encloses jailpy itself (a container, a sandbox), if anything
        self._listener = not self.enclosure.seccomp_filters or nesting.listener_possible()
        self.filter = None if pol.seccomp == "none" else seccomp.prepare(
            pol.seccomp, log=pol.seccomp_log, nesting=pol.allow_nesting, notify=self._listener)
        f = self.filter
        uid, gid = self.image.ids() if self.image is not None else (None, None)  # the image's User
        self._ids_asked = nesting.program_ids(pol.uid if pol.uid is not None else uid,
                                              pol.gid if pol.gid is not None else gid, pol.allow_nesting)
        self._lease = idlease.take(*self._ids_asked, pol.id_map, [b.src for b in self.mounts.binds if b.rw])
        self.ids = self._lease.ids  # host ids of this Sandbox's own, until close() (jailpy.idlease)
        if self.image is not None and (why := self.image.unreachable(mounts._host_id(self.ids.uid_map, 0))):
            raise HostError(why)
        self._check_state_binds()
        self.warnings = mounts.unwritable_binds(self.mounts, self.ids)
        """What will not work as the policy seems to expect (one line each, with the fix): the CLI
        prints them before the run."""
        self._context = Context(self._describe_protections(), pol.digest(), __version__,  # fixed per Sandbox
                                seccomp_log=pol.seccomp_log, filtered=f is not None, wall_time=self.wall_time,
                                cpu_time=pol.cpu_time)
        self._expect = child.expected(f.bpf if f else None, self.rlimits, self.lsm.plan)
        cpuset = len(cgroups.parse_cpulist(pol.cpuset or ""))
        self._limits = Limits(self.wall_time, self.output_limit, pol.cpu_time,
                              min(pol.cpus or math.inf, cpuset or os.cpu_count() or 1))
        inside = self.net.inside if self.net.inside.stub or self.net.inside.host_setup else None
        self._net_service = net.service(self.net) if inside else None
        if self._net_service is not None:  # the network's /etc/hosts, resolv.conf (bridge)
            self.mounts.binds += [mounts.BindSpec(src, dst, False, False) for src, dst in self._net_service.binds()]
        self._pool = Pool(Spec(self.ids, self.mounts, pol.hostname, tuple(pol.pass_fd), self.rlimits,
                               f.bpf if f else None, bool(f and f.notify), self.cgroup_plan, pol.pids,
                               inside, int(bool(inside and inside.stub)), lsm=self.lsm.plan),
                          reuse_userns=reuse_userns, forkserver=forkserver, prefork=self.prefork,
                          net=self._net_service)

    def _check_state_binds(self) -> None:
        """Refuse (PolicyError) a writable bind that would let the program write jailpy's own state
        in the caller's name: the seccomp cache (compiled filters later runs load), the id leases
        and the registry of named sandboxes.  Only a program running as the caller's own uid can
        (``--id-map single`` without a subuid range): the directories are 0700 and the caller's."""
        prog = mounts._host_id(self.ids.uid_map, self.ids.uid)
        binds = [b.src for b in self.mounts.binds if b.rw]
        if prog != os.getuid() or not binds:
            return
        base, parts = registry._location()
        state = [str(seccomp.cache_dir()), idlease.lease_dir(), os.path.join(base, *parts)]
        for src in binds:
            for d in state:
                d = os.path.realpath(d)
                if mounts._under(d, src) or mounts._under(src, d):
                    raise PolicyError(f"--bind {src}: the program runs as you and would be able to write {d}, "
                                      f"jailpy's own state (seccomp cache, id leases, registry) that later runs "
                                      f"trust; bind a directory outside it, or use a subuid range (--id-map range)")

    def _cgroup_plan(self) -> "cgroups.CgroupPlan | None":
        pol = self.policy
        if pol.no_cgroup:
            return None
        limits = cgroups.Limits(memory=parse_size(pol.memory) if pol.memory is not None else None,
                                pids=pol.pids + JAILPY_PIDS + self.net.jailpy_threads if pol.pids is not None else None,
                                cpus=pol.cpus, cpuset=pol.cpuset, cpu_weight=pol.cpu_weight, io=self._io_limits())
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

    def _io_limits(self) -> "cgroups.IoLimits | None":
        """The disk IO limits, on the disks of the writable binds (jailpy.cgroups.io.devices)."""
        pol = self.policy
        if all(getattr(pol, k) is None for k in ("io_read_bps", "io_write_bps", "io_read_iops", "io_write_iops",
                                                  "io_weight")):
            return None
        from .cgroups import io

        size = lambda v: parse_size(v) if v is not None else None  # noqa: E731
        return io.IoLimits(io.devices([b.src for b in self.mounts.binds if b.rw]), size(pol.io_read_bps),
                           size(pol.io_write_bps), pol.io_read_iops, pol.io_write_iops, pol.io_weight)

    def _environment(self) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "HOME": "/tmp", "LANG": os.environ.get("LANG", "C.UTF-8")}
        env.update(kv.split("=", 1) for kv in (self.image.env if self.image is not None else ()))
        env.update(self.net.environment())
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
        return dict(self._context.protections)

    def _describe_protections(self) -> dict:
        f = self.filter
        return {
            "namespaces": sorted(child.NAMESPACES),
            "user": self.ids.description,
            "rootfs": self.mounts.description,
            "cwd": self.mounts.cwd_note,
            "network": self.net.description,
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
            "quotas": ucounts.describe(self.mounts.sysctls, self.mounts.pty_max),
            "wall_time": {"seconds": self.wall_time, "source": "default" if self.policy.wall_time is None else "policy"},
            "output_limit": self.output_limit,
            "landlock": self.lsm.landlock,
            "lsm": self.lsm.lsm,
            "nested": nesting.describe(self.enclosure, self._lease.own, userns.setgroups_denied(),
                                       self.cgroup_plan is not None, self._listener),
            "nesting": None if not self.policy.allow_nesting else {
                "user_namespaces": dict(self.mounts.sysctls).get("max_user_namespaces"),
                "seccomp": "namespace and mount calls allowed (and keyctl to join a new session keyring)",
                "proc": "a second proc and sysfs, fully visible and covered, let the kernel mount new ones",
            },
        }

    def run(
        self,
        argv: list[str],
        stdin: StdSpec = None,
        stdout: int | None = None,
        stderr: int | None = None,
        capture_output: bool = False,
        wait_output: bool = True,
    ) -> Result:
        """Run ``argv`` (``argv[0]`` looked up in the sandbox's PATH) and wait for it.

        ``stdin``: None (inherit fd 0), an fd, ``DEVNULL``, or bytes fed through a pipe.
        ``stdout``/``stderr``: None (inherit), an fd, ``DEVNULL`` or ``PIPE``; ``capture_output``
        sets both to PIPE and the bytes land in ``Result.stdout``/``stderr``.  With an output
        limit, inherited and fd outputs go through a pipe that jailpy copies and counts.
        Returns a Result (also for 126/127: see ``Result.error``).  Raises PolicyError for a
        bad argument (a directory as stdin, an empty argv, a name already running) and
        SandboxSetupError when the sandbox could not be built; nothing is left running then.

        With an output limit, output for an fd of yours is written by a thread of jailpy's, which
        holds at most 1 MiB a stream for a reader that does not keep up (the limits run on
        whatever the reader does).  ``wait_output``: return only once it is written (the
        default); False: return as soon as the program is done and the Result known, while what
        is left is written in the background (:meth:`wait_output` waits for it).

        The sandbox dies with the thread that called run() (PR_SET_PDEATHSIG): call it from a
        thread that outlives the run."""
        if isinstance(argv, (str, bytes)):
            raise PolicyError(f"argv must be a list of strings, like [{argv!r}], not a string")
        if not argv and self.image is not None:  # the image's Entrypoint + Cmd
            argv = self.image.argv
        if not argv:
            raise PolicyError("no command given" + (" (and the image's config has no Entrypoint or Cmd)"
                                                    if self.image is not None else ""))
        for a in argv:
            if not isinstance(a, (str, bytes)) or "\0" in (a if isinstance(a, str) else a.decode("latin-1")):
                raise PolicyError(f"argv: each argument must be a string without NUL bytes, got {a!r}")
        if capture_output:
            stdout = stderr = PIPE
        control = self._control
        self._hold_ids()
        control.begin()
        self._lease.stop.clear()  # from now on a signal reaches the run; after it, the check (send_signal)
        try:
            with _fd_limit():
                result = self._run(list(argv), stdin, stdout, stderr, wait_output)
        finally:
            control.end()
            self._lease.after_run()  # clear setuid/setgid bits the run left in writable binds
        return self._lease.note(result)

    def wait_output(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: until done) for the output of the last run that
        is still being written to your fds (``run(..., wait_output=False)``); True when all of it
        is written (or its reader went away)."""
        end = None if timeout is None else time.monotonic() + timeout
        for sink in self._sinks:
            if not sink.wait(None if end is None else max(0.0, end - time.monotonic())):
                return False
        self._sinks = []
        return True

    def _run(self, argv: list, stdin: StdSpec, stdout: StdSpec, stderr: StdSpec, wait_output: bool) -> Result:
        io = open_stdio(stdin, stdout, stderr, self.output_limit)
        pool, control = self._pool, self._control
        entry = prep = None
        t_start = time.monotonic()
        try:
            pool.after_fork()
            reap_exiting()
            prep = pool.take()
            if self.name is not None:
                entry = registry.register(self.name, argv, list(prep.cgroup.paths), self.cgroup_plan.version,
                                          prep.jailpy_pids)
            t_start = time.monotonic()
            try:
                launch.send(prep.ctl, argv, self.env, io.fds, self._expect)
            except (BrokenPipeError, ConnectionResetError):
                if prep.ahead:  # a sandbox built before this run died meanwhile: build a new one
                    pool.discard(prep)
                    prep = pool.prepare()
                    try:
                        launch.send(prep.ctl, argv, self.env, io.fds, self._expect)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # its set-up failed already: the watch reads why from its status pipe
                # else its set-up failed already: the watch reads why (verdict: SandboxSetupError)
            io.close_sent()
            control.setup_pidfd = prep.pidfd
            pool.fill()
            watch = Watch(prep, control, self._limits, io, t_start, self.ids, pool.userns_fd is None,
                          self.filter.decide if self.filter else None, wait_output)
            watch.start()
        except BaseException:
            control.setup_pidfd = None
            if control.pidfd is not None:
                os.close(control.pidfd)
                control.pidfd = None
            if prep is not None:
                pool.discard(prep)
            if entry is not None:
                registry.unregister(entry)
            io.close()
            raise
        try:
            facts = watch.run()
            self._sinks = list(watch.sinks.values())
        finally:
            if entry is not None:
                registry.unregister(entry)
            io.close()
            control.setup_pidfd = None
            prep.close()
            network = prep.net.finish() if prep.net is not None else None  # counts; what the host set up goes
        result = decide(facts, self._context)
        result.network = network
        if "lsm_label" in facts.msgs:  # this run's label (SELinux: its own categories), as PID 1 wrote it
            lsm_desc = dict(result.protections["lsm"] or {}, label=facts.msgs["lsm_label"])
            result.protections = dict(result.protections, lsm=lsm_desc)
        return result

    def _hold_ids(self) -> None:
        """The run's host ids: after close(), or in a process forked from the Sandbox's owner, a
        lease is taken (again), the same slot if it is free, else another (then the maps, the Pool
        and the Result's protections follow)."""
        if not self._lease.held:
            old = self._lease
            old.release()  # a fork's copy: closes only that
            self._lease = idlease.take(*self._ids_asked, self.policy.id_map, old.binds,
                                       prefer=old.name)
            if self._lease.ids != self.ids:
                self.ids = self._lease.ids
                self._context.protections["user"] = self.ids.description
                self._pool.replace_ids(self.ids)
        self._lease.begin()

    def send_signal(self, sig: int) -> None:
        """Forward ``sig`` to the running program (through the sandbox's PID 1).  A signal sent
        while the sandbox is being set up reaches the program as soon as it can: if the program
        has not started yet, it is not started and the run ends as if the signal had killed it
        (exit code 128+N, ``Result.error`` says so).  Between runs (see :meth:`hold_signals`)
        it stops the check of the writable binds that follows a run, if one is going: that check
        then reports itself incomplete (``Result.setid_strip``) and the slot of ids waits for a
        check that finishes before it is used again (:mod:`jailpy.idlease`); else a no-op."""
        self._control.send_signal(sig)
        if self._control.idle():
            self._lease.interrupt()

    def hold_signals(self) -> None:
        """Keep what :meth:`send_signal` and :meth:`kill` are given from now until the next
        :meth:`run` begins, for that run: for a caller whose signal handlers exist before the
        run does (the CLI forwards SIGTERM and Ctrl-C this way), so none is lost in between."""
        self._control.hold()

    def suspend(self) -> None:
        """Stop the running program and everything it started (SIGSTOP to each, through the
        sandbox's PID 1) and its wall-time clock, until :meth:`resume`: what job control does to
        a program in a shell (the CLI does it on Ctrl-Z).  No-op when nothing runs."""
        self._control.suspend()

    def resume(self) -> None:
        """Continue what :meth:`suspend` stopped (SIGCONT); the wall-time clock runs again."""
        self._control.resume()

    def kill(self) -> None:
        """End the running program and everything it started: PID 1 SIGKILLs them all, reaps them
        and reports, so :meth:`run` returns a Result with signal 9 (exit code 137) and the CPU
        times spent.  If PID 1 has not reported within KILL_GRACE seconds it is SIGKILLed itself
        (the kernel then kills the whole pid namespace: pid_namespaces(7)).  Between runs it
        stops the check of the writable binds that is going, as :meth:`send_signal` does."""
        self._control.kill()
        if self._control.idle():
            self._lease.interrupt()

    def close(self, wait: bool | None = None) -> None:
        """End a run that is going (as :meth:`kill` does: its :meth:`run` returns signal 9), the
        prepared sandbox (prefork) and the fork server, release the user namespace and the rootfs
        template, reap finished helpers and remove their cgroups, and give back the host ids
        (:mod:`jailpy.idlease`; all but reaping and cgroups are also done when the Sandbox is
        garbage-collected).  A later :meth:`run` starts afresh.

        ``wait``: wait (at most REAP_WAIT seconds) for jailpy's helper processes of finished runs,
        which are exiting, so they are reaped and their cgroups removed now (the default, and
        True); False: do not wait, they are reaped by a later run (or by init when this process
        exits)."""
        if self._control.active():
            self.kill()  # a run is going (called from another thread): it ends the same way in every mode
        self._pool.release()
        if self._net_service is not None:
            self._net_service.close()
        reap_exiting(timeout=0 if wait is False else REAP_WAIT)
        if self.image is not None:
            self.image.release()  # jailpy image rm may remove it now
        self._lease.release(busy=self._control.active)  # when the run that is going ends, if one is

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        for part in ("_pool", "_lease", "image"):
            try:
                getattr(self, part).release()
            except Exception:  # noqa: BLE001 - interpreter shutdown, or a constructor that raised
                pass

    # the pool's state under the names the tests use to look inside (not an API)
    _forkserver = property(lambda self: self._pool._server)
    _ready = property(lambda self: self._pool._ready)
    _template_fd = property(lambda self: self._pool._template_fd)
    _forkserver_config = property(lambda self: self._pool._server_config,
                                  lambda self, value: setattr(self._pool, "_server_config", value))


def run(argv: list[str], policy: Policy | None = None, stdin: StdSpec = None, stdout: int | None = None,
        stderr: int | None = None, capture_output: bool = False) -> Result:
    """Run ``argv`` once in a new sandbox: ``Sandbox(policy).run(argv, ...)``.  See :meth:`Sandbox.run`."""
    sandbox = Sandbox(policy, reuse_userns=False)
    try:
        return sandbox.run(argv, stdin=stdin, stdout=stdout, stderr=stderr, capture_output=capture_output)
    finally:
        sandbox.close()


__all__ = ["Sandbox", "run", "DEVNULL", "PIPE", "JailpyError"]
