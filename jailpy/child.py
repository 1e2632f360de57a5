"""The sandbox side of the fork, in three processes.

``setup``  (forked by the supervisor, still in the host pid namespace): unshare(2) the user,
           mount, pid, uts, ipc, net and cgroup namespaces (or join a shared user namespace
           and a rootfs template's mount namespace with setns(2) first); wait for the
           supervisor to write the id maps; switch ids; fork ``init``; wait for it.
``init``   (PID 1 of the new pid namespace): build the rootfs (or, in a template's copy, add
           what each run gets afresh), set the hostname, bring up loopback, pivot_root; fork
           ``payload``; then reap every process, forward signals, and report the payload's
           wait status.  When it exits the kernel kills whatever is left in the namespace
           (pid_namespaces(7)).
``payload``: started by PID 1 with posix_spawn after PID 1 applied rlimits, closed fds,
           dropped capabilities, set no_new_privs and restricted itself with Landlock
           (jailpy.lsm; all inherited); the payload gets a new session and default signal
           dispositions.

With a fork server (jailpy.forkserver) there is no ``setup``: the server clones PID 1 straight
into the new namespaces and :func:`start_pid1` does the rest of setup's work before ``init``.
A rootfs template is built the same way, by ``setup`` with ``build_template`` (or the fork
server) and :func:`_template_init` as PID 1 of a throwaway pid namespace.

Nothing here may return into the supervisor's code: every path ends in ``os._exit``.
Failures are reported as one JSON line on the status pipe (writes below PIPE_BUF are atomic).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import signal
import socket
import time
from dataclasses import dataclass

from . import _syscalls as sc
from . import caps, cgroups, launch, lsm, mounts, net, rootfs, seccomp, userns

KILL_ALL = signal.SIGRTMIN + 2
"""Sent by the supervisor to PID 1 to end the run (a time limit, Sandbox.kill): PID 1 SIGKILLs
every other process of the sandbox, reaps them and reports as usual, CPU times included."""
STOP_ALL = signal.SIGRTMIN + 3
"""Sent by the supervisor to PID 1 when jailpy itself is stopped by job control (Ctrl-Z): PID 1
stops every other process of the sandbox (SIGSTOP), which would otherwise run on, and read the
terminal, while the shell has it back.  Its wall time stops counting."""
CONT_ALL = signal.SIGRTMIN + 4
"""Sent by the supervisor to PID 1 when jailpy continues: PID 1 continues them (SIGCONT)."""
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
BLOCKED = FORWARDED + (KILL_ALL, STOP_ALL, CONT_ALL)
"""What stays blocked from the set-up process's start until PID 1 has its handlers."""
NAMESPACES = {
    "user": sc.CLONE_NEWUSER, "mnt": sc.CLONE_NEWNS, "pid": sc.CLONE_NEWPID, "uts": sc.CLONE_NEWUTS,
    "ipc": sc.CLONE_NEWIPC, "net": sc.CLONE_NEWNET, "cgroup": sc.CLONE_NEWCGROUP,
}


@dataclass
class SpawnContext:
    """What the supervisor hands across the fork.  fds are the supervisor's, all >= 3.  The
    program itself (argv, environment, stdio fds) comes later over ``ctl_fd``: the sandbox can
    be built before it is known (Sandbox(prefork=True))."""

    pass_fds: tuple[int, ...]
    ids: userns.IdPlan
    mounts: mounts.MountPlan
    hostname: str
    status_w: int
    sync_w: int
    go_r: int
    ctl_fd: int
    supervisor_pid: int
    userns_fd: int | None = None
    """A prepared user namespace to join (userns.create); None: unshare a new one."""
    cgroup_procs: tuple[str, ...] = ()
    """cgroup.procs files of the sandbox's cgroup (one per v1 hierarchy): the set-up process joins
    them before it unshares the cgroup namespace, so that cgroup is the namespace's root."""
    rlimits: tuple[tuple[int, int, int], ...] = ()
    """(resource, soft, hard) set by PID 1 on itself just before it starts the program (inherited)."""
    seccomp_bpf: bytes | None = None
    """The seccomp filter PID 1 installs on itself just before it starts the program (inherited)."""
    seccomp_listener: bool = False
    """Ask the kernel for a notification listener (seccomp_unotify(2)); PID 1 sends it to the supervisor."""
    handshake: bool = False
    """PID 1 reports ``ready`` and waits for the supervisor's go (b"G" on ``ctl_fd``) before it starts
    the program: the supervisor measures the cgroup's baseline in between (jailpy's own share)."""
    template_fd: int | None = None
    """A rootfs template's mount namespace (see ``build_template``): the set-up process joins it
    before it unshares, so the run's mount namespace starts as a copy of the template's and PID 1
    adds only what every run gets afresh (rootfs.refresh_rootfs).  Needs ``userns_fd``."""
    cgroup_fds: tuple[int, ...] = ()
    """The same cgroup.procs files, opened by the supervisor (for PID 1 cloned by the fork server,
    whose mount namespace is already the rootfs template's, without the host's /sys)."""
    bounding_dropped: bool = False
    """The capability bounding set is empty already (the fork server empties its own once, and
    its clones inherit it: capabilities(7)), so PID 1 need not drop it again."""
    lsm: "lsm.Plan | None" = None
    """Landlock (and an exec label) PID 1 applies to itself after no_new_privs, before seccomp (jailpy.lsm)."""
    build_template: bool = False
    """This process tree builds a rootfs template instead of running a program: PID 1 builds it
    (rootfs.build_rootfs ``template=True``), pivots into it and sends an fd of its mount namespace
    over ``ctl_fd``."""
    net: object = None
    """What PID 1 does for the network (a jailpy.net.Inside), None: loopback only."""
    net_fd: int | None = None
    """PID 1's end of the run's network channel (jailpy.net.host), with ``net``."""
    parent_userns_fd: int | None = None
    """The user namespace to make the sandbox's own in (a rootless network's pod, jailpy.net.pod):
    the set-up process joins it before it unshares; without ``userns_fd`` only."""


def _send(ctx: SpawnContext, **msg: object) -> None:
    try:
        os.write(ctx.status_w, json.dumps(msg).encode() + b"\n")
    except OSError:
        pass


def _die_with_parent(parent_alive) -> None:
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if not parent_alive():
        os._exit(125)


def setup(ctx: SpawnContext) -> None:
    """The ``setup`` process (see module docstring).  Never returns."""
    step = "set-up"
    try:
        _die_with_parent(lambda: os.getppid() == ctx.supervisor_pid)
        _stdio_to_devnull()  # the helpers hold none of the caller's stdio
        keep = (ctx.status_w, ctx.sync_w, ctx.go_r, ctx.ctl_fd, *ctx.pass_fds, *_net_fds(ctx))
        _close_all_but(keep + tuple(fd for fd in (ctx.userns_fd, ctx.template_fd, ctx.parent_userns_fd)
                                    if fd is not None))
        if ctx.cgroup_procs:
            step = "join the sandbox's cgroup"
            cgroups.join(ctx.cgroup_procs)
        step = "unshare the namespaces"
        sources = None
        try:
            flags = 0
            for f in NAMESPACES.values():
                flags |= f
            if ctx.build_template:
                flags = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWNET  # for its own proc and sysfs
            if ctx.userns_fd is not None:
                sc.setns(ctx.userns_fd, sc.CLONE_NEWUSER)
                os.close(ctx.userns_fd)
                flags &= ~sc.CLONE_NEWUSER
            elif ctx.parent_userns_fd is not None:
                # the pod's: the sandbox's user namespace nests in it, so the pod's netlink socket
                # reaches the sandbox's network namespace (jailpy.net.pod); the set-up process has
                # the pod's capabilities only until the unshare below
                sc.setns(ctx.parent_userns_fd, sc.CLONE_NEWUSER)
                os.close(ctx.parent_userns_fd)
            if ctx.template_fd is not None:
                if any(b.late for b in ctx.mounts.binds):
                    step = "open the bind sources"
                    sc.unshare(sc.CLONE_NEWNS)  # the host's files, in a mount namespace this user namespace owns
                    sources = rootfs.clone_late_sources(ctx.mounts, rootfs.open_sources(ctx.mounts, "late"))
                else:
                    sources = []
                step = "join the rootfs template"
                sc.setns(ctx.template_fd, sc.CLONE_NEWNS)  # root and cwd: the template's root
                os.close(ctx.template_fd)
                step = "unshare the namespaces"
            sc.unshare(flags)  # with CLONE_NEWNS: a copy of the mount namespace joined above
        except OSError as e:
            raise OSError(e.errno, userns.unshare_hint(e) if step == "unshare the namespaces" else e.strerror) from None
        if ctx.userns_fd is None and ctx.ids.self_write and ctx.parent_userns_fd is None:
            step = "write the id maps"
            userns.write_own_maps(ctx.ids)
        if ctx.userns_fd is None:
            os.write(ctx.sync_w, b"u")
            if os.read(ctx.go_r, 1) != b"g":
                os._exit(125)  # the supervisor refused (it reports why) or died
        if sources is None:
            step = "open the bind sources"
            sources = rootfs.open_sources(ctx.mounts, "early" if ctx.build_template else "all")
        step = "switch to the sandbox ids"
        userns.become(ctx.ids)
        # a change of credentials clears the parent-death signal (prctl(2) PR_SET_PDEATHSIG): set it again
        _die_with_parent(lambda: os.getppid() == ctx.supervisor_pid)
        pid = os.fork()
        if pid == 0:
            if ctx.build_template:
                _template_init(ctx, sources)
            init(ctx, sources)
        _send(ctx, pid1=pid)
        for fd in (0, 1, 2, ctx.ctl_fd, ctx.status_w, ctx.sync_w, *sources, *_net_fds(ctx)):
            os.close(fd)
        # wait for PID 1 without reaping it, then until the supervisor is done with this run
        # (go pipe closed): until then its pid cannot be reused, so the supervisor's
        # pidfd_open(pid1) and signals can never reach another process
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            while os.read(ctx.go_r, 64):
                pass
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - must never return into the supervisor
        _send(ctx, error=f"{step}: {_describe(e)}")
        os._exit(125)


def start_pid1(ctx: SpawnContext, sources: list[int]) -> None:
    """PID 1 cloned by the fork server (jailpy.forkserver: clone(2) with new mount, pid, net, uts
    and ipc namespaces, from inside the sandbox's user namespace and, for a run, a copy of the
    rootfs template's mount namespace): what the set-up process does for a forked sandbox,
    then :func:`init` (or, with ``ctx.build_template``, the template's build).  ``sources``:
    the late binds' detached mounts (rootfs.clone_late_sources), made by the fork server.
    Never returns."""
    step = "set-up"
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the fork server
        signal.set_wakeup_fd(-1)  # the fork server's
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if _hup(ctx.go_r):
            os._exit(125)  # the supervisor is gone
        _stdio_to_devnull()
        _close_all_but((ctx.status_w, ctx.go_r, ctx.ctl_fd, *sources, *ctx.cgroup_fds, *_net_fds(ctx)))
        if ctx.cgroup_fds:
            step = "join the sandbox's cgroup"
            for fd, path in zip(ctx.cgroup_fds, ctx.cgroup_procs):
                try:
                    os.write(fd, b"0")  # with the caller's uid still: see setup()
                except OSError as e:
                    raise OSError(e.errno, f"{path}: {e.strerror}") from None
                os.close(fd)
        if not ctx.build_template:
            step = "unshare the cgroup namespace"
            sc.unshare(sc.CLONE_NEWCGROUP)  # rooted at the cgroup just joined
        else:
            step = "open the bind sources"
            sources = rootfs.open_sources(ctx.mounts, "early")
        step = "switch to the sandbox ids"
        userns.become(ctx.ids)
    except BaseException as e:  # noqa: BLE001 - must never return into the fork server
        _send(ctx, error=f"{step}: {_describe(e)}")
        os._exit(125)
    if ctx.build_template:
        _template_init(ctx, sources)
    init(ctx, sources)


def _net_fds(ctx: SpawnContext) -> tuple[int, ...]:
    return () if ctx.net_fd is None else (ctx.net_fd,)


def _stdio_to_devnull() -> None:
    """Point fds 0, 1 and 2 at /dev/null."""
    null = os.open("/dev/null", os.O_RDWR)
    for i in (0, 1, 2):
        if null != i:
            os.dup2(null, i)
    if null > 2:
        os.close(null)


def _close_all_but(keep: tuple[int, ...]) -> None:
    """Close every fd above 2 not in ``keep``.  The supervisor's process may hold any number of
    fds (other threads' runs, a service's sockets); this process never execs, so close-on-exec
    would not drop them, and PID 1 of the sandbox must not hold them (close_range(2))."""
    lo = 3
    for fd in sorted(k for k in set(keep) if k >= 3):
        if fd > lo:
            sc.close_range(lo, fd - 1)
        lo = fd + 1
    sc.close_range(lo, 0xFFFFFFFF)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError):
        if e.errno == errno.ENOSYS:
            return f"{e.strerror}: this kernel is too old (jailpy needs Linux 5.12 or newer)"
        if e.errno == errno.EMFILE:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            return (f"{e.strerror or 'Too many open files'}: the sandbox's set-up may open {soft} file descriptors "
                    f"(the caller's ulimit -n): raise it (ulimit -n 1024)")
        return e.strerror or str(e)
    return f"{type(e).__name__}: {e}"


def init(ctx: SpawnContext, sources: list[int]) -> None:
    """PID 1 of the sandbox (see module docstring).  Never returns."""
    pending: list[int] = []
    payload = 0
    stopped: float | None = None  # since when STOP_ALL holds the sandbox (time.monotonic)
    paused = 0.0  # seconds the sandbox was held so, left out of the program's wall time

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopped, paused
        if signum in (STOP_ALL, CONT_ALL):
            if signum == STOP_ALL and stopped is None:
                stopped = time.monotonic()
            elif signum == CONT_ALL and stopped is not None:
                paused += time.monotonic() - stopped
                stopped = None
            if payload:
                try:
                    os.kill(-1, signal.SIGSTOP if signum == STOP_ALL else signal.SIGCONT)
                except OSError:
                    pass
            return
        if payload:
            try:
                if signum == KILL_ALL:
                    os.kill(-1, signal.SIGKILL)
                elif signum in (signal.SIGINT, signal.SIGQUIT):
                    # as a terminal sends Ctrl-C and Ctrl-\: to the program's whole process group
                    # (it leads one: setsid), so a shell's foreground child gets it too (termios(3))
                    os.killpg(payload, signum)
                else:
                    os.kill(payload, signum)
            except OSError:
                pass
        else:
            pending.append(signum)

    step = "start"
    try:
        _die_with_parent(lambda: not _hup(ctx.go_r))
        for s in BLOCKED:
            signal.signal(s, forward)
        # blocked since before this process existed (the supervisor's or fork server's mask, see
        # pool.Pool._spawn): a signal sent meanwhile waited, and is handled now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)
        # the id switch made this process non-dumpable, so its /proc/self files belong to the host's
        # root (proc(5)); dumpable for a moment (nothing else runs in the sandbox yet) to open its
        # oom_score_adj, kept open: after PR_SET_DUMPABLE 0 below it could not be opened again
        # (in a template's copy, /proc is the run's own only once refresh_rootfs mounted it)
        step = "build the rootfs"
        if ctx.template_fd is not None:
            rootfs.refresh_rootfs(ctx.mounts, sources)
        sc.prctl(sc.PR_SET_DUMPABLE, 1)
        oom_fd = os.open("/proc/self/oom_score_adj", os.O_RDWR | os.O_CLOEXEC)
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        step = "bring up loopback"
        net.loopback_up()
        step = "set up the network"  # here, where /proc/self is still this process's (see build_rootfs)
        net_state = net.inside.setup(ctx.net, ctx.net_fd)
        step = "build the rootfs"
        if ctx.template_fd is None:
            rootfs.build_rootfs(ctx.mounts, sources)
        step = "set the hostname"
        sc.sethostname(ctx.hostname)
        if ctx.template_fd is None:
            step = "pivot_root into the rootfs"
            rootfs.enter_rootfs(ctx.mounts)
        rootfs.enter_workdir(ctx.mounts)
        step = "set up the network"
        net.inside.wait_host(net_state)  # the supervisor's part (a veth, pasta), done while the rootfs was built
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        step = "restrict the program"
        _forget_the_caller()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        sc.close_range(3, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)
        for fd in ctx.pass_fds:
            os.set_inheritable(fd, True)
        try:
            sc.keyctl_join_session_keyring()  # not the caller's session keyring (keyrings(7))
        except OSError as e:
            if e.errno != errno.ENOSYS:  # no keyrings in this kernel: nothing to inherit either
                raise
        if not ctx.bounding_dropped:
            caps.drop_bounding()
        # PID 1 keeps CAP_KILL, only to forward signals to a payload running as another uid;
        # with the bounding set empty the payload's execve grants it nothing (capabilities(7))
        caps.drop_all(1 << sc.CAP_KILL)
        caps.no_new_privs()
        step = "apply Landlock and the exec label"
        label = lsm.apply(ctx.lsm)
        if label is not None:
            _send(ctx, lsm_label=label)
        step = "receive the program"
        ctl = socket.socket(fileno=ctx.ctl_fd)
        request = launch.receive(ctl)
        if request is None:
            os._exit(0)  # the supervisor dropped this prepared sandbox
        argv, env, fds, expect = request
        held = expected(ctx.seccomp_bpf, ctx.rlimits, ctx.lsm)
        if expect != held:
            raise OSError(errno.EPERM, f"this sandbox was prepared with other protections ({held}) than the run "
                                       f"asks for ({expect}); refusing to start the program")
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        # Python runs a signal handler in the main thread between bytecodes, never inside a
        # system call that was not interrupted: a forwarded signal that comes just before the
        # wait for the program below (or to the stub's thread) would wait with it until the wall
        # time.  So each handled signal (SIGCHLD too, for the program's end) also writes a byte to
        # this pipe, and that wait reads it instead of blocking in wait4(2); made before the
        # rlimits (RLIMIT_NOFILE) and the seccomp filter; close-on-exec, the program has none of it.
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)  # signal.set_wakeup_fd wants it so: a handler never blocks
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        step = "apply the rlimits"
        for res, soft, hard in ctx.rlimits:
            resource.setrlimit(res, (soft, hard))
        if ctx.handshake:
            step = "wait for the supervisor"
            _send(ctx, ready=1)
            if ctl.recv(1) != b"G":
                os._exit(0)  # the supervisor gave up on this run
        step = "start the network"
        net.inside.start(net_state)  # a thread of PID 1's, without the capabilities and seccomp filter
        if ctx.seccomp_bpf is not None:
            step = "install the seccomp filter"
            listener = seccomp.install(ctx.seccomp_bpf, ctx.seccomp_listener)
            if listener is not None:
                socket.send_fds(ctl, [b"L"], [listener])
                os.close(listener)
        ctl.close()
        step = "start the program"
        while stopped is not None and not pending:
            time.sleep(0.05)  # jailpy is stopped (job control): the program starts when it continues
        if pending:
            # asked to stop (a forwarded signal, or the supervisor's KILL_ALL) before the program
            # existed: it is not started, and the run ends as if the signal had killed it
            sig = signal.SIGKILL if KILL_ALL in pending else pending[0]
            _send(ctx, not_started=int(sig), status=int(sig), utime=0.0, stime=0.0, maxrss=0, wall=0.0)
            os._exit(0)
        # the OOM killer should pick the program, not this process (proc(5) oom_score_adj): the
        # program inherits 1000; this process goes back to what it had
        old_adj = os.pread(oom_fd, 16, 0)
        os.pwrite(oom_fd, b"1000", 0)
        t0 = time.monotonic()
        try:
            payload = spawn_payload(argv, env)
        except OSError as e:
            code = 127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126
            _send(ctx, exec_error=code, error=_exec_error(argv[0], env, e, ctx.mounts), status=code << 8,
                  utime=0.0, stime=0.0, maxrss=0, wall=0.0)
            os._exit(0)
        finally:
            os.pwrite(oom_fd, old_adj.strip() or b"0", 0)
            os.close(oom_fd)
        _send(ctx, started=payload)
        for fd in (0, 1, 2):
            os.close(fd)
        for s in pending:
            forward(s, None)
        if stopped is not None:  # a STOP_ALL that came while the program was being started
            forward(STOP_ALL, None)
        status = None
        while status is None:
            try:
                p, st, _ = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if p == payload:
                status = st
            elif p == 0:
                os.read(wake_r, 512)  # until a signal comes (see wake_r): its handler runs after it
        t1 = time.monotonic() - paused - (time.monotonic() - stopped if stopped is not None else 0.0)
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        while True:
            try:
                os.wait4(-1, 0)
            except ChildProcessError:
                break
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        _send(ctx, status=status, utime=ru.ru_utime, stime=ru.ru_stime, maxrss=ru.ru_maxrss * 1024, wall=t1 - t0)
        os._exit(0)
    except BaseException as e:  # noqa: BLE001
        _send(ctx, error=f"{step}: {_describe(e)}")
        os._exit(125)


def _template_init(ctx: SpawnContext, sources: list[int]) -> None:
    """PID 1 of a template builder's throwaway pid namespace: build the template's rootfs, pivot
    into it and send an fd of this mount namespace (/proc/self/ns/mnt, namespaces(7)) over
    ``ctl_fd``; the fd keeps the namespace alive after this process exits.  Never returns."""
    step = "build the rootfs template"
    try:
        _die_with_parent(lambda: not _hup(ctx.go_r))
        rootfs.build_rootfs(ctx.mounts, sources, template=True)
        rootfs.enter_rootfs(ctx.mounts)
        fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        socket.send_fds(socket.socket(fileno=ctx.ctl_fd), [b"T"], [fd])
        os._exit(0)
    except BaseException as e:  # noqa: BLE001
        _send(ctx, error=f"{step}: {_describe(e)}")
        os._exit(125)


def _hup(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & (select.POLLHUP | select.POLLERR) for _, ev in p.poll(0))


def expected(seccomp_bpf: bytes | None, rlimits: tuple, lsm_plan: "lsm.Plan | None" = None) -> dict:
    """What PID 1 checks against the launch request before it starts the program: the size in
    bytes of the seccomp filter it will install (0: none), the rlimits it will set and the
    Landlock ABI it applied (0: none)."""
    ll = lsm_plan.landlock if lsm_plan is not None else None
    return {"seccomp_bytes": len(seccomp_bpf or b""), "rlimits": [list(r) for r in rlimits],
            "landlock_abi": ll.abi if ll is not None else 0}


def _path(env: list[bytes]) -> bytes:
    return next((e[5:] for e in env if e.startswith(b"PATH=")), b"")


def spawn_payload(argv: list[bytes], env: list[bytes]) -> int:
    """Start the program with posix_spawn(3) (a vfork: no copy of this Python process):
    a new session (setsid, so it cannot reach the caller's terminal with TIOCSTI), every
    signal disposition at its default and none blocked; the rest of the restrictions were
    applied to PID 1 and are inherited.  ``env`` holds ``NAME=VALUE`` strings.  Returns its
    pid; raises OSError when the program cannot be executed (ENOENT: not found, E2BIG: the
    arguments and environment exceed what execve(2) accepts)."""
    os.environb[b"PATH"] = _path(env)  # posix_spawnp searches the caller's PATH
    return sc.posix_spawnp(argv[0], argv, env)


def _exec_error(arg0: bytes, env: list[bytes], e: OSError, plan: mounts.MountPlan) -> str:
    """One line for a program that could not be started (``e`` from :func:`spawn_payload`): for
    one not found, where it was looked for and, when that is a directory the sandbox hides or
    does not have, how to make it visible."""
    name = arg0.decode(errors="backslashreplace")
    if e.errno == errno.EACCES and b"/" in arg0 and os.path.isdir(arg0):  # execve(2) says only EACCES
        return f"{name}: cannot execute: it is a directory"
    if e.errno not in (errno.ENOENT, errno.ENOTDIR):
        return f"{name}: cannot execute: {e.strerror}"
    if b"/" not in arg0:
        return f"{name}: not found in the sandbox's PATH ({_path(env).decode(errors='backslashreplace')})"
    path = os.path.normpath(os.path.join(os.getcwd(), name))
    hidden = plan.hidden_under(path)
    if hidden:
        return (f"{name}: not found: {path} is under {hidden}, which the sandbox hides; make it visible "
                f"with --ro-bind {os.path.dirname(path)} (or --ro-bind {path})")
    return f"{name}: not found ({path} does not exist in the sandbox)"


def _forget_the_caller() -> None:
    """Overwrite this process's command line and environment strings (the memory at arg_start..
    arg_end and env_start..env_end, proc(5) /proc/PID/stat fields 48-51), which /proc/1/cmdline
    shows to the program: a forked PID 1 started as a copy of the caller, whose command line may
    hold secrets.  The command line becomes ``jailpy-init``; the name (comm) too (PR_SET_NAME)."""
    import ctypes

    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()  # fields[0] is field 3 (state)
    arg_start, arg_end, env_start, env_end = (int(fields[n - 3]) for n in (48, 49, 50, 51))
    if 0 < env_start < env_end:
        ctypes.memset(env_start, 0, env_end - env_start)
    title = b"jailpy-init\0"
    if arg_end - arg_start > len(title):
        # the rest is not NUL, so the kernel reads the area as a process title and shows it up to
        # the first NUL (fs/proc/base.c get_mm_proctitle): nothing of the old length either
        ctypes.memset(arg_start, ord("."), arg_end - arg_start)
        ctypes.memmove(arg_start, title, len(title))
    name = ctypes.create_string_buffer(title)
    sc.prctl(sc.PR_SET_NAME, ctypes.addressof(name))
