"""The supervisor's network service: one asyncio loop in a thread per Sandbox that has a
network plan, serving every run's channel (a SOCK_SEQPACKET socket pair, unix(7), one end in
the sandbox's PID 1).  Messages from the sandbox:

    b"S", [netns fd, userns fd]     set up the network from outside (a veth, pasta); the answer
                                    is b"N" (done) or b"E" + why
    b"T" + b"target port", [fd]     a connection the program made (the stub's listener)
    b"H", [fd]                      a connection to the sandbox's HTTP proxy port
    b"D" + name                     a name the stub refused to resolve
    b"R"                            the stub runs (the program is about to start)
    b"c" + id, [fd] / b"x" + id errno
                                    the answer to the supervisor's b"C" + b"id port" (TCP) or
                                    b"U" + b"id port" (UDP, jailpy.net.udp): a socket connected to
                                    the sandbox's 127.0.0.1:port (--publish); ``id`` pairs an
                                    answer with its request

:meth:`Channel.finish` ends a run's part: what the host set up is taken down, and the counts go
to the Result (``network``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import threading

from .proxy import MAX_CONNECTIONS, Counters, Proxy

FINISH_WAIT = 5.0
"""Seconds :meth:`Channel.finish` waits for the loop (a set-up still going) at most."""
MAX_PENDING = 64
"""--publish requests (b"C"/b"U") of a run waiting for the stub at once; a new client beyond is
turned away (TCP: closed; UDP: its datagrams dropped) rather than queued behind the others."""


class Service:
    """The loop thread of one Sandbox (started at the first channel)."""

    def __init__(self, plan) -> None:
        self.plan = plan
        self.proxy = Proxy(plan)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.setup = None
        if plan.inside.host_setup:
            from . import setup_host

            self.setup = setup_host.Setup(plan)
        self._lock = threading.Lock()
        self.detaching: list[concurrent.futures.Future] = []
        self._detacher: concurrent.futures.ThreadPoolExecutor | None = None
        self.running: list[Channel] = []  # channels whose stub runs, newest last (--publish goes there)
        self.listeners: list[socket.socket] | None = None
        self.udp_ports: list = []  # jailpy.net.udp.Port of each --publish .../udp
        self._listen()

    def _listen(self) -> None:
        """Bind the --publish ports (at the Sandbox's start, and again after close())."""
        if self.listeners is None:
            self.listeners = []
            try:
                for p in self.plan.publish:
                    self.listeners.append(_listen(p))
            except BaseException:
                for s in self.listeners:
                    s.close()
                self.listeners = None
                raise
            if self.listeners:
                loop = self._start()
                for pub, sock in zip(self.plan.publish, self.listeners):
                    if pub.proto == "udp":
                        from .udp import Port

                        port = Port(self, pub, sock, loop)
                        self.udp_ports.append(port)
                        loop.call_soon_threadsafe(loop.add_reader, sock.fileno(), port.on_readable)
                    else:
                        loop.call_soon_threadsafe(loop.add_reader, sock.fileno(), self._on_publish, sock)

    def newest(self) -> "Channel | None":
        """The newest run whose stub runs (--publish reaches that one), None when no run is going."""
        return next((c for c in reversed(self.running) if not c.closed), None)

    def userns_parent(self):
        """The user namespace the sandboxes' own must be made in (a rootless network's pod:
        :class:`jailpy.net.pod.Pod`, with ``fd`` and ``write_maps``), None: the caller's."""
        return self.setup.userns_parent() if self.setup is not None else None

    def binds(self) -> list[tuple[str, str]]:
        """Host files the sandbox sees read-only (bridge mode: the network's /etc/hosts)."""
        return self.setup.binds() if self.setup is not None else []

    def _on_publish(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        port = next(p.port for p, s in zip(self.plan.publish, self.listeners) if s is listener)
        chan = self.newest()
        if chan is None or chan.counters.inbound >= MAX_CONNECTIONS:
            conn.close()  # no run is going: nothing to reach; or as many clients as a run may have
            return
        chan.counters.inbound += 1
        chan._task(_counted(chan.relay_in(conn, port), chan.counters, "inbound"))

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.loop is None or self.thread is None or not self.thread.is_alive():
                self.loop = asyncio.new_event_loop()
                self.thread = threading.Thread(target=self.loop.run_forever, name="jailpy-net", daemon=True)
                self.thread.start()
            return self.loop

    def channel(self) -> tuple["Channel", int]:
        """A new run's channel, and the fd of the sandbox's end (the caller passes it to PID 1
        and closes it)."""
        self._listen()
        loop = self._start()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine.setblocking(False)
        chan = Channel(self, mine)
        loop.call_soon_threadsafe(loop.add_reader, mine.fileno(), chan._on_message)
        return chan, theirs.detach()

    def detach(self, attached: dict) -> None:
        """Take down what the host set up for a finished run (a veth and its lease, a user-mode
        stack) in the background: the next run need not wait for the kernel (deleting a veth
        takes 20-30 ms).  :meth:`close` waits for it."""
        with self._lock:
            self.detaching = [f for f in self.detaching if not f.done()]
            self.detaching.append(self._pool().submit(self.setup.detach, attached))

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._detacher is None:
            self._detacher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jailpy-net-detach")
        return self._detacher

    def close(self) -> None:
        """Wait for the background detaches, stop the loop (open relays end), join the thread and
        close the --publish ports (bound again if the Sandbox runs again)."""
        concurrent.futures.wait(self.detaching, FINISH_WAIT)
        self.detaching = []
        loop, thread = self.loop, self.thread
        self.loop = self.thread = None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(FINISH_WAIT)
        for port in self.udp_ports:
            port.close()
        self.udp_ports = []
        for s in self.listeners or ():
            s.close()
        self.listeners = None
        if self.setup is not None:
            self.setup.close()


class Channel:
    """One run's end of the channel, its counters and what the host set up for it."""

    def __init__(self, service: Service, sock: socket.socket) -> None:
        self.service = service
        self.sock = sock
        self.counters = Counters()
        self.tasks: set[asyncio.Task] = set()
        self.attached = None  # what Setup.attach made (a veth and lease, a pasta process)
        self.setup_error: str | None = None
        self.closed = False
        self.pending: dict[int, asyncio.Future] = {}  # b"C"/b"U" requests waiting for the stub's answer, by id
        self._next_id = 0

    def _on_message(self) -> None:
        try:
            msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 2)
        except BlockingIOError:
            return
        except OSError:
            msg, fds = b"", []
        if not msg:
            self._stop_reading()
            return
        kind = msg[:1]
        if kind in (b"T", b"H") and len(fds) == 1:
            conn = socket.socket(fileno=fds[0])
            target, _, port = msg[1:].decode("utf-8", "replace").rpartition(" ")
            c = self.counters
            if c.open >= MAX_CONNECTIONS:  # counted from here: a check, a dial and a head wait hold one too
                conn.close()
                c.refuse(target or "(HTTP proxy client)", int(port) if port.isdigit() else None,
                         f"more than {MAX_CONNECTIONS} connections at once")
                return
            c.open += 1
            if kind == b"T":
                coro = self.service.proxy.transparent(conn, target, int(port) if port.isdigit() else 0, c)
            else:
                coro = self.service.proxy.http(conn, c)
            self._task(_counted(coro, c, "open"))
        elif kind == b"D":
            names = self.counters.dns_refused
            name = msg[1:].decode("utf-8", "replace")
            if len(names) < 50 and name not in names:
                names.append(name)
        elif kind == b"S" and len(fds) == 2 and self.service.setup is not None:
            self._task(self._host_setup(fds))
        elif kind == b"R":
            self.service.running.append(self)
        elif kind in (b"c", b"x"):
            rid = msg[1:].split(b" ", 1)[0]
            fut = self.pending.pop(int(rid), None) if rid.isdigit() else None
            if fut is not None and not fut.done():
                fut.set_result(socket.socket(fileno=fds.pop()) if kind == b"c" and fds else None)
            for fd in fds:
                os.close(fd)
        else:
            for fd in fds:
                os.close(fd)

    def _task(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _host_setup(self, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        setup = self.service.setup
        try:
            if setup.plan.mode == "bridge":  # a lease and one netlink request: in the loop (a thread hop costs more)
                self.attached = setup.attach(fds[0], fds[1])
            else:  # a user-mode stack, which takes a while to start
                self.attached = await loop.run_in_executor(None, setup.attach, fds[0], fds[1])
            reply = b"N" + json.dumps({k: self.attached[k] for k in ("blackhole", "configure")
                                       if k in self.attached}).encode()
        except Exception as e:  # noqa: BLE001 - reported to PID 1, which fails the run with it
            self.setup_error = str(e)
            reply = b"E" + str(e).encode("utf-8", "replace")[:3000]
        finally:
            for fd in fds:
                os.close(fd)
        if self.closed and self.attached is not None:  # the run was given up meanwhile (a discarded sandbox)
            self.service.detach(self.attached)
            self.attached = None
            return
        try:
            self.sock.send(reply)
        except OSError:
            pass

    async def inner(self, port: int, kind: bytes = b"C") -> socket.socket | None:
        """A socket the stub made in the sandbox, connected to its 127.0.0.1:``port``: TCP
        (``kind`` b"C") or UDP (b"U"); None when it could not (nothing listens on the TCP port)
        or did not answer in 10 s."""
        if len(self.pending) >= MAX_PENDING:
            return None  # a flood of new clients: the stub answers one at a time
        fut = asyncio.get_running_loop().create_future()
        rid, self._next_id = self._next_id, self._next_id + 1
        self.pending[rid] = fut
        try:
            self.sock.send(kind + b"%d %d" % (rid, port))
            return await asyncio.wait_for(fut, 10)
        except (OSError, asyncio.TimeoutError):
            return None
        finally:
            # an answer that never comes (the request was not sent: a full channel; or late) must
            # not take the next request's: answers carry the request's id
            self.pending.pop(rid, None)

    async def relay_in(self, conn: socket.socket, port: int) -> None:
        """A --publish connection: ask the stub for a socket connected to the sandbox's
        127.0.0.1:``port``, then copy both ways."""
        with conn:
            conn.setblocking(False)
            inner = await self.inner(port)
            if inner is None:
                return  # nothing listens there: the client sees the connection close
            inner.setblocking(False)
            self.counters.published += 1
            await self.service.proxy.relay(conn, inner, Counters())

    def _stop_reading(self) -> None:
        if self in self.service.running:
            self.service.running.remove(self)
        if not self.closed:
            self.closed = True
            try:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            except (OSError, ValueError):
                pass

    def finish(self) -> dict:
        """End of the run: stop reading the channel, take down what the host set up, and return the
        counts (the Result's ``network``).  Relays still going (a program's child that outlived
        it cannot exist: PID 1 killed them all) end when their peers close."""
        loop = self.service.loop

        async def done() -> None:
            self._stop_reading()
            self.sock.close()

        if loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(done(), loop).result(FINISH_WAIT)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
        else:
            self.sock.close()
        out = self.counters.as_dict()
        if self.attached is not None and self.service.setup is not None:
            out["address"] = self.attached.get("address")
            self.service.detach(self.attached)
            self.attached = None
        if self.attached is None and self.service.setup is not None and self.setup_error:
            out["setup_error"] = self.setup_error
        return out

    def discard(self) -> None:
        """A sandbox that never ran a program: like :meth:`finish`, without the counts."""
        self.finish()


async def _counted(coro, counters: Counters, name: str) -> None:
    """Run ``coro``; then give back the connection ``counters.<name>`` counted for it."""
    try:
        await coro
    finally:
        setattr(counters, name, getattr(counters, name) - 1)


def _listen(pub) -> socket.socket:
    """The host side of ``--publish``: a listening TCP socket, or a bound UDP one, on
    HOSTIP:HOSTPORT.  Raises
    HostError when it cannot be bound (in use, an address this host does not have)."""
    from ..errors import HostError

    family = socket.AF_INET6 if ":" in pub.host_ip else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM if pub.proto == "udp" else socket.SOCK_STREAM)
    try:
        if pub.proto == "udp":
            s.bind((pub.host_ip, pub.host_port))
        else:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((pub.host_ip, pub.host_port))
            s.listen(128)
    except OSError as e:
        s.close()
        raise HostError(f"--publish {pub}: cannot listen on {pub.host_ip}:{pub.host_port}: {e.strerror}"
                        + (" (the port is in use: pick another)" if e.errno == 98 else "")) from None
    s.setblocking(False)
    return s
