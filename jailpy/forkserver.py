"""A fork server: a small process that forks the set-up processes of one Sandbox's runs.

Each run needs two new processes (:mod:`jailpy.child`: the set-up process and the sandbox's
PID 1).  Forked from the caller, they start as copies of the caller's whole address space:
fork(2) copies its page tables, and every page Python then touches (reference counts are
writes) is copied on write, in the child and in the caller alike.  With a caller of 20 MB that
was most of a run's cost.  The fork server is a fresh interpreter (``python -I -S``) that
imports only the sandbox's side of jailpy, so runs fork from about 10 MB of compact memory,
and the caller's memory (its secrets too) is never copied into a sandbox.

:class:`ForkServer` is the caller's handle (used by :class:`jailpy.supervisor.Sandbox` for
runs that share a user namespace); :func:`main` is the server.  They speak over a
SOCK_SEQPACKET socket pair (unix(7)): one message per packet, fds passed with SCM_RIGHTS.

    server -> caller   b"R"                              ready (sent once, after the imports)
    caller -> server   b"C" + pickle(dict)               SpawnContext fields every run shares
    caller -> server   b"S" + pickle(dict), fds          fork one set-up process: the dict holds
                                                         the run's own fields and "fds", the
                                                         names of the fd fields, in the order
                                                         of the fds sent
    server -> caller   b"P" + pid (8 bytes), [pidfd]     its pid and a pidfd (pidfd_open(2)),
                       or b"E" + message                 or why the fork failed

The server forks nothing else and never reads from the sandbox.  It exits when the caller's
socket closes or the caller's process ends (a pidfd of its parent polls readable); its
set-up processes then die by their parent-death signal, and with them the sandboxes.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import subprocess
import sys

_MAX_MSG = 1 << 20


class ForkServer:
    """The caller's end: starts the server (``sys.executable -I -S``) without waiting for it.

    :meth:`ready` says whether it has finished starting (non-blocking); :meth:`spawn` asks it
    for a set-up process.  Raises OSError when the interpreter cannot be started."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = "import sys; sys.path.insert(0, sys.argv[2]); from jailpy import forkserver; forkserver.main(int(sys.argv[1]))"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", code, str(theirs.fileno()), top], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                env={"PATH": "/usr/bin:/bin"})
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.sock = mine
        self._ready = False
        self._config: dict | None = None
        self.dead = False

    def ready(self) -> bool:
        """True once the server has said it is ready; never blocks."""
        if not self._ready and not self.dead:
            if select.select([self.sock], [], [], 0)[0]:
                try:
                    self._ready = self.sock.recv(16) == b"R"
                except OSError:
                    self._ready = False
                if not self._ready:
                    self.dead = True
        return self._ready and not self.dead

    def spawn(self, config: dict, run: dict, fds: list[int]) -> tuple[int, int]:
        """Fork a set-up process with the SpawnContext fields ``config`` (shared by every run; sent
        again only when it changes) and ``run`` (with ``"fds"``: the names of the fields ``fds``
        fill).  Returns ``(pid, pidfd)``; the pidfd is the caller's to close.  Raises OSError (the
        server is gone: :attr:`dead` is then set) or ChildProcessError (the fork failed)."""
        try:
            if config is not self._config:
                self.sock.sendall(b"C" + pickle.dumps(config))
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
        """End the server (its set-up processes die with it) and reap it."""
        self.dead = True
        self.sock.close()
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()


def main(sock_fd: int) -> None:
    """The server's loop (see the module docstring).  Never returns."""
    import gc

    from . import child

    sock = socket.socket(fileno=sock_fd)
    parent = os.pidfd_open(os.getppid())
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    gc.collect()
    gc.freeze()  # nothing loaded so far is ever scanned again: forked copies stay shared
    gc.disable()
    sock.sendall(b"R")
    config: dict = {}
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
                config = pickle.loads(msg[1:])
            elif msg[:1] == b"S":
                _spawn(sock, config, pickle.loads(msg[1:]), fds, child)
            for fd in fds:
                os.close(fd)


def _spawn(sock: socket.socket, config: dict, run: dict, fds: list[int], child) -> None:
    fields = dict(config)
    names = run.pop("fds")
    fields.update(run)
    fields.update(zip(names, fds))
    fields["supervisor_pid"] = os.getpid()  # the parent the set-up process watches
    try:
        ctx = child.SpawnContext(**fields)
        pid = os.fork()
    except Exception as e:  # noqa: BLE001 - reported to the caller, who raises it
        sock.sendall(b"E" + f"{type(e).__name__}: {e}".encode())
        return
    if pid == 0:
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            child.setup(ctx)
        finally:
            os._exit(125)
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
