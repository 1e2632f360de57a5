"""A fork server: a small process that starts the sandboxes of one Sandbox's runs.

Forked from the caller, a run needs two new processes (:mod:`jailpy.child`: a set-up process
that unshares the namespaces, then the sandbox's PID 1), and both start as copies of the
caller's whole address space: fork(2) copies its page tables, and every page Python then
touches (reference counts are writes) is copied on write, in the child and in the caller
alike.  That was most of a run's cost.  The fork server is a fresh interpreter
(``python -I -S``) that imports only the sandbox's side of jailpy; it joins the Sandbox's user
namespace once and starts each sandbox's PID 1 itself, with clone(2) and the namespace flags,
from inside a copy of the rootfs template's mount namespace (:func:`jailpy.child.start_pid1`).
One process per run instead of two, copied from a small process, and the caller's memory (its
secrets too) is never copied into a sandbox.

:class:`ForkServer` is the caller's handle (used by :class:`jailpy.sandbox.Sandbox`);
:func:`main` is the server.  They speak over a SOCK_SEQPACKET socket pair (unix(7)): one
message per packet, fds passed with SCM_RIGHTS.

    server -> caller   b"R"                          ready (sent once, after the imports)
    caller -> server   b"C" + pickle(dict), [userns] SpawnContext fields every run shares; the
                                                     first also brings the user namespace fd
    caller -> server   b"S" + pickle(dict), fds      start one sandbox: the dict holds the run's
                                                     own fields and "fds", the names of the fd
                                                     fields (status_w, go_r, ctl_fd,
                                                     template_fd, and cgroup_fds once for each
                                                     cgroup.procs file), in the order sent
    server -> caller   b"P" + pid (8 bytes), [pidfd] PID 1's pid and a pidfd (pidfd_open(2)),
                       or b"E" + message             or why it could not be started

The server never reads from a sandbox.  It exits when the caller's socket closes or the
caller's process ends (a pidfd of its parent polls readable); the sandboxes' PID 1s then die
by their parent-death signal (prctl(2) PR_SET_PDEATHSIG), and their pid namespaces with them.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import threading

_MAX_MSG = 1 << 18


class ForkServer:
    """The caller's end: starts the server (``python -I -S``, ``python`` the path of a Python
    interpreter of the same version as the caller's) without waiting for it.

    :meth:`ready` says whether it has finished starting (non-blocking); :meth:`spawn` asks it
    to start a sandbox's PID 1.  Raises OSError when the interpreter cannot be started."""

    def __init__(self, python: str) -> None:
        import subprocess  # the caller's side only: the server never imports it

        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = ("import sys; sys.path.insert(0, sys.argv[2]); from jailpy import forkserver; "
                "forkserver.main(int(sys.argv[1]))")
        try:
            self.proc = subprocess.Popen(
                [python, "-I", "-S", "-c", code, str(theirs.fileno()), top], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                env={"PATH": "/usr/bin:/bin"})
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.sock = mine
        self.owner = os.getpid()  # a process that forked from the caller must not use (or end) it
        self._lock = threading.Lock()  # one request and its answer at a time
        self._ready = False
        self._config: dict | None = None
        self.dead = False

    def ready(self, wait: bool = False) -> bool:
        """True once the server has said it is ready.  ``wait``: wait for that (up to 30 s) instead
        of answering at once."""
        if not self._ready and not self.dead:
            p = select.poll()  # not select(2): the caller may hold fds above 1023 (FD_SETSIZE)
            p.register(self.sock, select.POLLIN)
            if p.poll(30000 if wait else 0):
                try:
                    self._ready = self.sock.recv(16) == b"R"
                except OSError:
                    self._ready = False
                if not self._ready:
                    self.dead = True
        return self._ready and not self.dead

    def spawn(self, config: dict, userns_fd: int, run: dict, fds: list[int]) -> tuple[int, int]:
        """Start PID 1 of a sandbox (child.start_pid1) with the SpawnContext fields ``config``
        (shared by every run; sent again only when it changes; the first time with the user
        namespace ``userns_fd``, which the server joins) and ``run`` (with ``"fds"``: the names of
        the fields ``fds`` fill).  Returns ``(pid, pidfd)``; the pidfd is the caller's to close.
        Raises OSError (the server is gone: :attr:`dead` is then set) or ChildProcessError (it
        could not start the sandbox)."""
        try:
            with self._lock:
                if config is not self._config:
                    socket.send_fds(self.sock, [b"C" + pickle.dumps(config)], [userns_fd] if self._config is None else [])
                    self._config = config
                socket.send_fds(self.sock, [b"S" + pickle.dumps(run)], fds)
                msg, got, _, _ = socket.recv_fds(self.sock, 4096, 1)
        except OSError:
            self.dead = True
            raise
        if msg[:1] == b"P" and len(got) == 1:
            return int.from_bytes(msg[1:9], "little"), got[0]
        for fd in got:
            os.close(fd)
        if not msg:
            self.dead = True
            raise OSError("the fork server ended")
        raise ChildProcessError(msg[1:].decode(errors="replace") or "the fork server could not fork")

    def close(self) -> None:
        """End the server (the sandboxes it started die with it) and reap it.  In a process forked
        from the caller (os.fork, multiprocessing) only this process's copy of the socket is
        closed: the server is the caller's."""
        self.dead = True
        self.sock.close()
        if os.getpid() != self.owner:
            return
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()


def main(sock_fd: int) -> None:
    """The server's loop (see the module docstring).  Never returns."""
    import gc

    from . import _syscalls as sc
    from . import caps, child, rootfs
    from .net import stub  # noqa: F401 - the network stub of PID 1s that run without the host's files

    # blocked here and so in every PID 1 cloned from here, until it has its handlers (child.init)
    signal.pthread_sigmask(signal.SIG_BLOCK, child.BLOCKED)
    sock = socket.socket(fileno=sock_fd)
    parent = os.pidfd_open(os.getppid())
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    gc.collect()
    gc.freeze()  # nothing loaded so far is ever scanned again: forked copies stay shared
    gc.disable()
    sock.sendall(b"R")
    state = _State(sc, caps, child, rootfs)
    poller = select.poll()
    for fd in (sock.fileno(), parent, wake_r):
        poller.register(fd, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == parent:
                os._exit(0)
            if fd == wake_r:
                try:
                    while os.read(wake_r, 64):
                        pass
                except BlockingIOError:
                    pass
                _reap()
                continue
            try:
                msg, fds, _, _ = socket.recv_fds(sock, _MAX_MSG, 16)
            except OSError:
                os._exit(0)
            if not msg:
                os._exit(0)  # the caller closed its end
            if msg[:1] == b"C":
                try:
                    state.configure(pickle.loads(msg[1:]), fds)
                except Exception:  # noqa: BLE001 - the caller sees the socket close and forks itself
                    os._exit(1)
            try:
                if msg[:1] == b"S":
                    state.spawn(sock, pickle.loads(msg[1:]), fds)
            except Exception as e:  # noqa: BLE001 - reported to the caller, who raises it
                sock.sendall(b"E" + f"{type(e).__name__}: {e}".encode())
            for fd in fds:
                os.close(fd)


class _State:
    """The server's side: in the sandbox's user namespace, with a mount namespace of its own that
    shows the host's files (``host``) and the current rootfs template's (``template``)."""

    def __init__(self, sc, caps, child, rootfs) -> None:
        self.sc, self.caps, self.child, self.rootfs = sc, caps, child, rootfs
        self.config: dict = {}
        self.host: int | None = None
        self.template: int | None = None
        self.template_id: tuple = ()
        self.where = "host"

    def configure(self, config: dict, fds: list[int]) -> None:
        """b"C": the fields every run shares; the first one brings the user namespace (fds[0])."""
        sc = self.sc
        self.config = config
        if self.host is None:
            sc.setns(fds[0], sc.CLONE_NEWUSER)  # full capabilities there; ids unchanged (user_namespaces(7))
            sc.unshare(sc.CLONE_NEWNS)  # a mount namespace this user namespace owns, for open_tree(2)
            self.host = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            self.caps.drop_bounding()  # once here rather than in every PID 1 (inherited; this process never execs)

    def _enter(self, where: str) -> None:
        if self.where != where:
            self.sc.setns(self.host if where == "host" else self.template, self.sc.CLONE_NEWNS)
            self.where = where

    def spawn(self, sock: socket.socket, run: dict, fds: list[int]) -> None:
        """b"S": clone PID 1 of a run (or of a template's build) and report it."""
        sc, child, rootfs = self.sc, self.child, self.rootfs
        fields = dict(self.config)
        names = run.pop("fds")
        fields.update(run)
        for name, fd in zip(names, fds):
            if name == "cgroup_fds":
                fields["cgroup_fds"] = fields.get("cgroup_fds", ()) + (fd,)
            else:
                fields[name] = fd
        fields.setdefault("sync_w", -1)
        fields["supervisor_pid"] = os.getpid()
        fields["bounding_dropped"] = True
        ctx = child.SpawnContext(**fields)
        trees: list[int] = []
        flags = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWNET
        try:
            if ctx.build_template:
                self._enter("host")
            else:
                flags |= sc.CLONE_NEWUTS | sc.CLONE_NEWIPC
                st = os.fstat(ctx.template_fd)
                if (st.st_dev, st.st_ino) != self.template_id:
                    if self.where == "template":
                        self._enter("host")
                    if self.template is not None:
                        os.close(self.template)
                    self.template = os.dup(ctx.template_fd)
                    self.template_id = (st.st_dev, st.st_ino)
                if any(b.late for b in ctx.mounts.binds):
                    self._enter("host")
                    trees = rootfs.clone_late_sources(ctx.mounts, rootfs.open_sources(ctx.mounts, "late"))
                self._enter("template")
            pid = sc.clone(flags)
            if pid == 0:
                try:
                    child.start_pid1(ctx, trees)
                finally:
                    os._exit(125)
        finally:
            for fd in trees:
                os.close(fd)
        pidfd = os.pidfd_open(pid)  # our own child, not reaped yet: it is this process
        try:
            socket.send_fds(sock, [b"P" + pid.to_bytes(8, "little")], [pidfd])
        finally:
            os.close(pidfd)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
