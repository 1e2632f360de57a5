"""Host side: what makes repeated runs cheap, and the sandboxes of runs that are being built.

A :class:`Pool` belongs to one :class:`jailpy.sandbox.Sandbox` and starts its sandboxes
(:meth:`Pool.prepare`): a set-up process forked from the caller (:func:`jailpy.child.setup`),
or PID 1 cloned by the fork server (:mod:`jailpy.forkserver`) once that is ready.  What it keeps
between runs (with ``reuse_userns``):

* the user namespace (:func:`jailpy.userns.create`), joined by every run;
* a rootfs template (:meth:`Pool.template`): the read-only part of the rootfs, built once in a
  mount namespace kept by fd; each run's mount namespace starts as a copy of it;
* the fork server;
* with ``prefork``, sandboxes built ahead and waiting for their program (:meth:`Pool.take`).

Set-up processes of finished runs are reaped, and their cgroups removed, at the next run
(:func:`reap_exiting`) rather than waited for.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import child, userns
from .errors import SandboxSetupError
from .stdio import high_fd, pipe

if TYPE_CHECKING:
    from . import cgroups, forkserver, lsm, mounts

JAILPY_PIDS = 2
"""jailpy's processes in the sandbox's cgroup: the set-up process and PID 1 (only PID 1 when the
fork server started the sandbox: pids.max is then lowered by one, see :meth:`Pool.prepare`)."""
TEMPLATE_MAX_AGE = 1.0
"""Seconds a rootfs template serves runs before it is built again."""

# the interpreter that can run the fork server: this one, unless Python is embedded in another
# program (uwsgi, a C application), whose sys.executable would not take python's -I -S -c
_PYTHON = sys.executable if sys.executable and "python" in os.path.basename(sys.executable) else None


def _pidfd_exited(pidfd: int, timeout: float | None) -> bool:
    """Whether the process of ``pidfd`` has exited (pidfd_open(2): readable then), waiting up to
    ``timeout`` seconds (None: until it has)."""
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(None if timeout is None else int(timeout * 1000)))


def _exited(pid: int, pidfd: int, own: bool, timeout: float | None) -> bool:
    """Whether a set-up process (or a fork server's PID 1) has exited, waiting up to ``timeout``
    seconds (None: until it has).  ``own``: our own child, then reaped here (waitpid(2)); else a
    child of the fork server, which reaps it."""
    if not _pidfd_exited(pidfd, timeout):
        return False
    if own:
        try:
            os.waitpid(pid, 0)  # it has exited: this does not wait
        except ChildProcessError:
            pass  # reaped already (by the caller's own wait())
    return True


@dataclass(frozen=True)
class Spec:
    """What every sandbox of one Sandbox is built from: the id maps, the mount plan, the host
    name, the fds passed through, the rlimits and seccomp filter PID 1 applies, the cgroup plan
    (None: no cgroup) and the policy's ``pids`` limit (processes of the program)."""

    ids: userns.IdPlan
    mounts: "mounts.MountPlan"
    hostname: str
    pass_fds: tuple[int, ...]
    rlimits: tuple
    seccomp_bpf: bytes | None
    seccomp_listener: bool
    cgroup_plan: "cgroups.CgroupPlan | None"
    pids: int | None
    net: "object | None" = None
    """What PID 1 does for the network (jailpy.net.Inside), None: loopback only."""
    net_threads: int = 0
    """jailpy's threads in the sandbox for the network (the stub's), counted in pids.max."""
    lsm: "lsm.Plan | None" = None
    """Landlock and the exec label PID 1 applies (jailpy.lsm)."""


class Prepared:
    """A set-up process and the supervisor's ends of its pipes and control socket.  ``pidfd``
    None: our own child (forked here); else a pidfd for the sandbox's PID 1, a child of the
    fork server."""

    def __init__(self, pid: int, status_r: int, sync_r: int, go_w: int, ctl: socket.socket,
                 sources: tuple, cgroup: "cgroups.Cgroup | None", pidfd: int | None = None) -> None:
        self.pid, self.status_r, self.sync_r, self.go_w, self.ctl = pid, status_r, sync_r, go_w, ctl
        self.sources = sources  # (st_dev, st_ino) of each bind source when this sandbox was built
        self.ahead = False  # built before its run (prefork), not for it
        self.cgroup = cgroup  # the sandbox's own cgroup, removed once its processes are gone
        self.own = pidfd is None
        self.is_pid1 = not self.own  # the fork server starts the sandbox's PID 1 itself (no set-up process)
        self.jailpy_pids = 1 if self.is_pid1 else JAILPY_PIDS  # jailpy's processes in the sandbox's cgroup
        # our own child is not reaped before we wait, so the pid is this process's
        self.pidfd = os.pidfd_open(pid) if pidfd is None else pidfd
        self.net = None  # the run's jailpy.net.host.Channel, if the Sandbox has a network service
        self.userns_parent = None  # who writes the id maps when they are not ours to write (jailpy.net.pod)

    def exited(self) -> bool:
        """Whether the set-up process has exited (our own child is then reaped); never blocks."""
        return _exited(self.pid, self.pidfd, self.own, 0)

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

    def retire(self, finished: bool) -> object:
        """The run is over: leave the set-up process and the cgroup to be reaped and removed.
        ``finished``: PID 1 reported (it killed and reaped the sandbox's processes and is exiting),
        so the set-up process is reaped later (:func:`reap_exiting`) instead of waited for here;
        else wait for it and kill what is left in the cgroup.  Returns the set-up process's rusage
        when it was waited for (our own child), else None."""
        cg, self.cgroup = self.cgroup, None
        if finished:
            with _EXITING_LOCK:
                if not self.exited():
                    _EXITING[self.pid] = (os.dup(self.pidfd), self.own, cg)
                elif cg is not None and not cg.remove():
                    _LEFTOVER.append(cg)
            return None
        ru = self.wait()
        if cg is not None:
            cg.kill()  # whatever of the sandbox is left (PID 1 is dead, so nothing should be)
            with _EXITING_LOCK:
                if not cg.remove():
                    _LEFTOVER.append(cg)
        return ru


# set-up processes that reported and are exiting, to reap: pid -> (a pidfd for it, whether it is
# our own child, the sandbox's cgroup)
_EXITING: dict[int, tuple[int, bool, "cgroups.Cgroup | None"]] = {}
_LEFTOVER: list["cgroups.Cgroup"] = []  # cgroups whose processes were still exiting when we tried to remove them
_EXITING_LOCK = threading.Lock()  # runs may come from many threads


def reap_exiting(timeout: float = 0) -> None:
    """Reap set-up processes of earlier runs (see :meth:`Prepared.retire`) and remove their
    cgroups, waiting up to ``timeout`` seconds for those still exiting (they are: PID 1 has
    reported, and it and its parent end within milliseconds).  Under the lock, so no two threads
    wait for one pid (whose number could meanwhile belong to a new run)."""
    end = time.monotonic() + timeout
    with _EXITING_LOCK:
        for pid, (pidfd, own, cg) in list(_EXITING.items()):
            if _exited(pid, pidfd, own, max(0.0, end - time.monotonic())):
                os.close(pidfd)
                del _EXITING[pid]
                if cg is not None:
                    _LEFTOVER.append(cg)
        while True:
            for cg in list(_LEFTOVER):
                if cg.remove():
                    _LEFTOVER.remove(cg)
            if not _LEFTOVER or time.monotonic() >= end:
                break
            time.sleep(0.005)  # a PID 1 killed through its parent's death may still be exiting


class Pool:
    """The sandboxes of one Sandbox (see the module docstring).  ``forkserver``: None (start it at
    the second run, use it once ready), True (at the first run, and wait for it), False (never).
    ``prefork``: how many sandboxes to keep built ahead (0-8)."""

    _FD_FIELDS = ("status_w", "go_r", "ctl_fd", "template_fd", "net_fd")
    _RUN_FIELDS = ("cgroup_procs", "handshake", "build_template", "net")

    def __init__(self, spec: Spec, *, reuse_userns: bool, forkserver: bool | None, prefork: int,
                 net: "object | None" = None) -> None:
        self.spec = spec
        self.net = net  # jailpy.net.host.Service: a channel per sandbox
        self.reuse_userns = reuse_userns
        self.forkserver = forkserver
        self.prefork = prefork
        self.userns_fd: int | None = None
        self._template_fd: int | None = None  # the rootfs template's mount namespace (reuse_userns only)
        self._template_key: tuple = ()  # (when it was built, bind sources' ids then)
        self._server: "forkserver.ForkServer | None" = None
        self._server_config: dict | None = None
        self._server_failed = False
        self._spawned = 0
        self._ready: list[Prepared] = []  # prefork: built and waiting for a program, oldest first
        self.last_cgroup: tuple[str, ...] = ()  # the directories of the cgroup made last (jailpy.slots checks it went)
        self._owner = os.getpid()  # see after_fork
        parent = self.userns_parent()
        if parent is not None:
            parent.check(spec.ids)  # the host ids exist in the pod (jailpy.net.pod)

    # ---- what runs share
    def userns_parent(self):
        """Where the sandboxes' user namespaces are made (a rootless network's pod), None: here."""
        return self.net.userns_parent() if self.net is not None else None

    def userns(self) -> int | None:
        """The shared user namespace's fd (made now if there is none), or None without ``reuse_userns``."""
        if self.reuse_userns and self.userns_fd is None:
            self.userns_fd = userns.create(self.spec.ids, self.userns_parent())
        return self.userns_fd

    def template(self, key: tuple) -> int | None:
        """The mount namespace of the rootfs template, built now when there is none, when it is
        older than TEMPLATE_MAX_AGE seconds, or when a bind source was replaced since (``key``:
        the sources' ids now, :meth:`source_ids`).

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
        """Start a builder (:meth:`prepare` with ``build_template``) and return the fd of the
        template's mount namespace it sends.  Raises SandboxSetupError."""
        prep = self.prepare(build_template=True)
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

    def source_ids(self) -> tuple:
        """(st_dev, st_ino) of each bind source now (None where it is gone)."""
        ids = []
        for b in self.spec.mounts.binds:
            try:
                st = os.stat(b.src, follow_symlinks=False)
                ids.append((st.st_dev, st.st_ino))
            except OSError:
                ids.append(None)
        return tuple(ids)

    # ---- sandboxes
    def take(self) -> Prepared:
        """A sandbox waiting for its program: a prepared one that is alive and whose bind sources
        were not replaced since it was built, else a new one."""
        while self._ready:
            prep = self._ready.pop(0)
            alive = not prep.exited()
            if alive and prep.sources == self.source_ids():
                return prep
            self.discard(prep)  # dead, or a bind source was replaced since it was built
        return self.prepare()

    def fill(self) -> None:
        """Build sandboxes ahead until ``prefork`` wait (none with pass_fds)."""
        while not self.spec.pass_fds and len(self._ready) < self.prefork:
            prep = self.prepare()  # built while this run runs, on the cores it leaves free
            prep.ahead = True
            self._ready.append(prep)

    def prepare(self, build_template: bool = False) -> Prepared:
        """Start the set-up process; it builds the sandbox and then waits for the program (with
        ``build_template``: it builds a rootfs template and sends it, see :meth:`_build_template`)."""
        spec = self.spec
        cg = spec.cgroup_plan.create() if spec.cgroup_plan is not None and not build_template else None
        if cg is not None:
            self.last_cgroup = tuple(cg.paths)
        chan = net_fd = None
        try:
            if self.net is not None and not build_template:
                chan, net_fd = self.net.channel()
                net_fd = high_fd(net_fd)
            status_r, status_w = pipe()
            sync_r, sync_w = pipe()
            go_r, go_w = pipe()
            sources = self.source_ids()
            ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            child_fd = high_fd(ctl_child.detach())
            ctx = child.SpawnContext(
                pass_fds=() if build_template else spec.pass_fds, ids=spec.ids, mounts=spec.mounts,
                hostname=spec.hostname, status_w=status_w, sync_w=sync_w, go_r=go_r, ctl_fd=child_fd,
                supervisor_pid=os.getpid(), userns_fd=self.userns(),
                template_fd=None if build_template else self.template(sources),
                cgroup_procs=tuple(cg.procs) if cg else (), rlimits=spec.rlimits,
                seccomp_bpf=spec.seccomp_bpf, seccomp_listener=spec.seccomp_listener, lsm=spec.lsm,
                handshake=cg is not None, build_template=build_template, net=None if build_template else spec.net,
                net_fd=net_fd,
            )
            parent = self.userns_parent() if ctx.userns_fd is None else None
            ctx.parent_userns_fd = parent.fd if parent is not None else None
        except BaseException:
            if cg is not None:
                cg.remove()
            if chan is not None:
                chan.discard()
            if net_fd is not None:
                os.close(net_fd)
            raise
        try:
            pid, pidfd = self._spawn(ctx)
        except BaseException:
            if cg is not None:
                cg.remove()
            if chan is not None:
                chan.discard()
            for fd in (status_r, sync_r, go_w):
                os.close(fd)
            ctl.close()
            raise
        finally:
            for fd in (status_w, sync_w, go_r, child_fd) + ((net_fd,) if net_fd is not None else ()):
                os.close(fd)
        prep = Prepared(pid, status_r, sync_r, go_w, ctl, sources, cg, pidfd)
        prep.net = chan
        prep.userns_parent = parent
        prep.jailpy_pids += 0 if build_template else spec.net_threads
        if cg is not None and prep.jailpy_pids != JAILPY_PIDS and spec.pids is not None:
            try:  # before the program exists: PID 1 waits for the launch request
                cg.set_pids_max(spec.pids + prep.jailpy_pids)
            except BaseException:
                self.discard(prep)
                raise
        return prep

    def _spawn(self, ctx: "child.SpawnContext") -> tuple[int, int | None]:
        """Start a sandbox for ``ctx``: its PID 1 cloned by the fork server when that is ready (see
        :mod:`jailpy.forkserver`), else a set-up process forked here (``child.setup(ctx)``).
        Returns the pid and, for PID 1 from the fork server, a pidfd (None: our own child).
        Raises SandboxSetupError when the fork server could not start it, OSError when this
        process cannot fork."""
        fs = self._ready_forkserver(ctx.build_template) if ctx.userns_fd is not None else None
        if fs is not None:
            if self._server_config is None:
                # from the Spec, never from ctx: the first ctx may be a template builder's, which
                # has no filter and no rlimits
                spec = self.spec
                self._server_config = {
                    "pass_fds": spec.pass_fds, "ids": spec.ids, "mounts": spec.mounts,
                    "hostname": spec.hostname, "rlimits": spec.rlimits,
                    "seccomp_bpf": spec.seccomp_bpf, "seccomp_listener": spec.seccomp_listener, "lsm": spec.lsm}
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
                return fs.spawn(self._server_config, ctx.userns_fd, run, [getattr(ctx, k) for k in names] + cg_fds)
            except ChildProcessError as e:
                raise SandboxSetupError(f"cannot set up the sandbox: the fork server could not fork: {e}") from None
            except OSError:
                pass  # it died (killed from outside?): fork here, start a new one next time
            finally:
                for fd in cg_fds:
                    os.close(fd)
        gc_was = gc.isenabled()
        gc.disable()  # a collection in the child would touch (copy) every page of this process
        # the signals the supervisor forwards stay blocked in the set-up process and in PID 1 until
        # PID 1 has its handlers (child.init): one sent before then waits instead of being lost
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, child.BLOCKED)
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    child.setup(ctx)
                finally:
                    os._exit(125)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if gc_was:
                gc.enable()
        return pid, None

    def _ready_forkserver(self, for_template: bool) -> "forkserver.ForkServer | None":
        """The fork server when it is ready, else None (see ``forkserver`` in the class
        docstring).  Started at the second run's set-up (template builds do not count), so a
        Sandbox used once never pays for it."""
        if (not self.reuse_userns or self.spec.pass_fds or self.forkserver is False or self._server_failed
                or not _PYTHON):
            return None
        self._spawned += not for_template
        fs = self._server
        if fs is not None and fs.dead:
            fs.close()
            fs = self._server = None
        if fs is None and (self._spawned >= 2 or self.forkserver):
            from . import forkserver  # only here: jailpy.run() and the CLI never start one

            try:
                fs = self._server = forkserver.ForkServer(_PYTHON)
            except OSError:
                self._server_failed = True  # no interpreter to start: fork here from now on
                return None
        if fs is None:
            return None
        return fs if fs.ready(wait=bool(self.forkserver)) else None

    def discard(self, prep: Prepared) -> None:
        """End a sandbox that will not run a program, and remove its cgroup."""
        try:
            signal.pidfd_send_signal(prep.pidfd, signal.SIGKILL)  # its PID 1 follows (PDEATHSIG), and the namespaces
        except ProcessLookupError:
            pass
        prep.wait()
        prep.close()
        if prep.net is not None:
            prep.net.discard()
            prep.net = None
        if prep.cgroup is not None:
            with _EXITING_LOCK:
                if not prep.cgroup.remove():
                    _LEFTOVER.append(prep.cgroup)

    def replace_ids(self, ids: userns.IdPlan) -> None:
        """Build the next sandboxes with ``ids`` (a Sandbox that took other host ids after close(),
        or in a forked process): the user namespace and the template made with the old ones go."""
        self.release()  # in a forked process: only its copies (after_fork)
        parent = self.userns_parent()
        if parent is not None:
            parent.check(ids)
        self.spec = replace(self.spec, ids=ids)
        self._server_config = None

    # ---- lifetime
    def after_fork(self) -> None:
        """In a process forked from this Pool's owner (os.fork, multiprocessing): forget, without
        ending them, the prepared sandboxes and the fork server, which are the owner's; keep the
        user namespace and template fds (this process's own copies)."""
        if self._owner == os.getpid():
            return
        self._owner = os.getpid()
        for prep in self._ready:
            prep.close()
        self._ready = []
        if self._server is not None:
            self._server.close()  # only our copy of its socket (ForkServer.close)
            self._server = None
        self._server_config = None

    def release(self) -> None:
        """End the prepared sandboxes and the fork server; close the user namespace and template."""
        self.after_fork()
        while self._ready:
            self.discard(self._ready.pop())
        if self.userns_fd is not None:
            os.close(self.userns_fd)
            self.userns_fd = None
        if self._template_fd is not None:
            os.close(self._template_fd)
            self._template_fd = None
        if self._server is not None:
            self._server.close()
            self._server = None
