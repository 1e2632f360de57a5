"""``--publish [HOSTIP:]HOSTPORT:PORT/udp``: the same relay as for TCP, one *flow* per client.

The supervisor's socket bound to HOSTIP:HOSTPORT (udp(7)) receives a client's datagram; for a
client it has not seen, it asks the sandbox's stub (b"U" + b"id port", the channel of
:mod:`jailpy.net.host`) for a UDP socket made inside the sandbox and connected to
127.0.0.1:PORT there (connect(2) on a datagram socket only fixes the peer: it succeeds whether
anything listens or not), and keeps it for that client.  Datagrams go to the program through
that socket, so it sees them come from 127.0.0.1, and its answers (which come back on it: the
program replies to the address it got them from) are sent to the client from HOSTIP:HOSTPORT.
Nothing is routed: the sandbox still has no interface the outside reaches.

A flow ends after FLOW_IDLE seconds without a datagram either way, when its run ends, or when
MAX_FLOWS clients are served and a new one comes (the one idle longest goes).  A datagram is
never split or merged; up to QUEUED datagrams of a new client wait while its socket is made,
more are dropped (as a full socket buffer would)."""

from __future__ import annotations

import asyncio
import socket
import time

FLOW_IDLE = 60.0
"""Seconds a client's flow lives without traffic (as conntrack's UDP timeout, roughly)."""
MAX_FLOWS = 256
"""Clients served at once per published port (each holds a socket in the sandbox)."""
QUEUED = 16
"""Datagrams of a new client kept while its flow's socket is being made."""
MAX_DATAGRAM = 65535


class Flow:
    """One client's datagrams, to and from the sandbox's socket ``inner`` (None while it is made)."""

    def __init__(self, port: "Port", client, chan) -> None:
        self.port, self.client, self.chan = port, client, chan
        self.inner: socket.socket | None = None
        self.queue: list[bytes] | None = []
        self.last = time.monotonic()

    async def open(self) -> None:
        inner = await self.chan.inner(self.port.pub.port, b"U")
        if inner is None or self.queue is None:  # refused, or the flow ended meanwhile
            if inner is not None:
                inner.close()
            self.port.drop(self)
            return
        inner.setblocking(False)
        self.inner = inner
        self.port.loop.add_reader(inner.fileno(), self._on_inner)
        queue, self.queue = self.queue, None
        for data in queue:
            self.send(data)

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.inner is None:
            if self.queue is not None and len(self.queue) < QUEUED:
                self.queue.append(data)
            return
        try:
            self.inner.send(data)
        except OSError:
            pass  # nothing listens (ECONNREFUSED from an earlier ICMP error), or a full buffer: dropped

    def _on_inner(self) -> None:
        for _ in range(64):
            try:
                data = self.inner.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # an ICMP error for an earlier datagram: the socket goes on
            self.last = time.monotonic()
            try:
                self.port.sock.sendto(data, self.client)
            except OSError:
                pass

    def close(self) -> None:
        self.queue = None
        if self.inner is not None:
            try:
                self.port.loop.remove_reader(self.inner.fileno())
            except (RuntimeError, ValueError, OSError):
                pass
            self.inner.close()
            self.inner = None


class Port:
    """A published UDP port: the host's socket ``sock`` for ``pub`` (a :class:`jailpy.net.rules.Publish`),
    and its flows.  Runs in the service's loop (:class:`jailpy.net.host.Service`)."""

    def __init__(self, service, pub, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.service, self.pub, self.sock, self.loop = service, pub, sock, loop
        self.flows: dict = {}
        self.timer = None

    def on_readable(self) -> None:
        for _ in range(64):
            try:
                data, client = self.sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue
            flow = self.flows.get(client)
            if flow is not None and flow.chan.closed:  # its run ended: the client reaches the next one
                self.drop(flow)
                flow = None
            if flow is None:
                chan = self.service.newest()
                if chan is None:
                    continue  # no run is going: nothing to reach
                if len(self.flows) >= MAX_FLOWS:
                    self.drop(min(self.flows.values(), key=lambda f: f.last))
                flow = self.flows[client] = Flow(self, client, chan)
                chan.counters.published += 1
                chan._task(flow.open())
                self._arm()
            flow.send(data)

    def drop(self, flow: Flow) -> None:
        if self.flows.get(flow.client) is flow:
            del self.flows[flow.client]
        flow.close()

    def _arm(self) -> None:
        if self.timer is None:
            self.timer = self.loop.call_later(FLOW_IDLE / 4, self._expire)

    def _expire(self) -> None:
        self.timer = None
        now = time.monotonic()
        for flow in list(self.flows.values()):
            if now - flow.last > FLOW_IDLE or flow.chan.closed:
                self.drop(flow)
        if self.flows:
            self._arm()

    def close(self) -> None:
        """Drop every flow (the Sandbox closes; its loop has stopped)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for flow in list(self.flows.values()):
            self.drop(flow)
