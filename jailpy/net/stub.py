"""The sandbox's stub resolver and transparent listeners: a thread of the sandbox's PID 1.

* DNS on UDP port 53 of every address (``0.0.0.0``; with the local route any resolver the
  program's resolv.conf names lands here): an A query for an allowed name gets a fake address
  from :data:`jailpy.net.rules.FAKE_NET`, the same one for the whole run; any other type for an
  allowed name an empty answer; every other name NXDOMAIN, and the supervisor is told.
* TCP listeners on ``0.0.0.0:PORT`` for the allowed ports: a connection's local address
  (getsockname(2)) is the address the program dialled; the fake address is turned back into
  the name, and the accepted socket is sent (SCM_RIGHTS) with ``name port`` to the supervisor's
  proxy, which decides, dials and relays.  The stub decides nothing.
* 127.0.0.1:3128, the HTTP proxy HTTP_PROXY names: its connections go to the proxy as they are.

The thread runs in PID 1, which the program cannot signal or trace (pid_namespaces(7); PID 1 is
not dumpable), without capabilities and without the program's seccomp filter (installed later,
on PID 1's main thread only).  If the supervisor goes away, the stub closes its listeners:
the sandbox then has no network at all."""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading

from . import HTTP_PROXY_PORT, dns
from .rules import FAKE_NET, RuleError, normal_name

IP_PKTINFO = 8
STACK = 256 << 10
"""The thread's stack: fixed, so the program's RLIMIT_STACK (--stack) does not size it."""


class Stub:
    """Bound sockets and the name table; :meth:`start` runs the loop in a thread."""

    def __init__(self, plan, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.exact = {h for h in plan.hosts if not h.startswith("*.")}
        self.suffixes = tuple(h[1:] for h in plan.hosts if h.startswith("*."))
        self.by_name: dict[str, str] = {}
        self.by_addr: dict[str, str] = {}
        self.next_addr = int(FAKE_NET.network_address) + 1
        self.last_addr = int(FAKE_NET.broadcast_address) - 1
        self.refused: set[str] = set()
        self.listeners: dict[int, str] = {}  # fd -> "T" (transparent) or "H" (HTTP proxy)
        self.socks: list[socket.socket] = []
        self.dns = None
        if not plan.proxied:
            return  # --publish alone: only the relay's connections (see _on_ctl)
        self.dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dns.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.dns.bind(("0.0.0.0", 53))
        self.socks.append(self.dns)
        for port in plan.ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", port))
            s.listen(128)
            self.socks.append(s)
            self.listeners[s.fileno()] = "T"
        if HTTP_PROXY_PORT not in plan.ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", HTTP_PROXY_PORT))
            s.listen(128)
            self.socks.append(s)
            self.listeners[s.fileno()] = "H"
        for s in self.socks:
            s.setblocking(False)

    def start(self) -> None:
        threading.stack_size(STACK)
        threading.Thread(target=self._loop, name="jailpy-net-stub", daemon=True).start()

    def allowed(self, name: str) -> bool:
        return name in self.exact or any(name.endswith(s) for s in self.suffixes)

    def address(self, name: str) -> str | None:
        """The fake address of an allowed ``name`` (assigned on first use), None when it is not allowed."""
        if not self.allowed(name):
            return None
        addr = self.by_name.get(name)
        if addr is None and self.next_addr <= self.last_addr:
            addr = str(ipaddress.IPv4Address(self.next_addr))
            self.next_addr += 1
            self.by_name[name] = addr
            self.by_addr[addr] = name
        return addr

    def _loop(self) -> None:
        poll = select.poll()
        for s in self.socks:
            poll.register(s, select.POLLIN)
        poll.register(self.ctl, select.POLLIN)
        self._tell(b"R")
        try:
            while True:
                for fd, ev in poll.poll():
                    if fd == self.ctl.fileno():
                        if not self._on_ctl():
                            return  # the supervisor is gone: no more network
                    elif self.dns is not None and fd == self.dns.fileno():
                        self._on_dns()
                    else:
                        self._on_accept(fd)
        except OSError:
            return
        finally:
            for s in self.socks:
                s.close()

    def _on_ctl(self) -> bool:
        """A request of the supervisor's: b"C" + b"id port" (TCP) or b"U" + b"id port" (UDP):
        connect to 127.0.0.1:port here (a --publish relay) and send the socket back (b"c" + id)
        or why not (b"x" + id + b" " + errno).  False when the channel has closed."""
        try:
            msg = self.ctl.recv(64)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not msg:
            return False
        rid, _, port = msg[1:].partition(b" ")
        if msg[:1] in (b"C", b"U") and rid.isdigit() and port.isdigit():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if msg[:1] == b"U" else socket.SOCK_STREAM)
            try:
                s.settimeout(2)
                s.connect(("127.0.0.1", int(port)))
                self._tell(b"c" + rid, s.fileno())
            except OSError as e:
                self._tell(b"x" + rid + b" " + str(e.errno or 0).encode())
            finally:
                s.close()
        return True

    def _on_dns(self) -> None:
        try:
            data, anc, _, peer = self.dns.recvmsg(4096, socket.CMSG_SPACE(12))
        except BlockingIOError:
            return
        try:
            _, _, qname, qtype = dns.parse_query(data)
        except dns.DNSError:
            return
        try:
            name = normal_name(qname)
        except RuleError:
            name = None
        addr = self.address(name) if name else None
        if addr is None:
            rcode = dns.NXDOMAIN
            shown = name or qname[:253]
            if shown not in self.refused and len(self.refused) < 1000:
                self.refused.add(shown)
                self._tell(b"D" + shown.encode("utf-8", "backslashreplace")[:300])
        else:
            rcode = dns.NOERROR
        reply = dns.answer(data, rcode, addr if qtype == dns.QTYPE_A else None)
        ctrl = []
        for level, kind, value in anc:  # answer from the address the query was sent to
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
                ctrl = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", 0, value[8:12], b"\0" * 4))]
        try:
            self.dns.sendmsg([reply], ctrl, 0, peer)
        except OSError:
            pass

    def _on_accept(self, fd: int) -> None:
        listener = next(s for s in self.socks if s.fileno() == fd)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            if self.listeners[fd] == "H":
                self._tell(b"H", conn.fileno())
                return
            addr, port = conn.getsockname()[:2]
            target = self.by_addr.get(addr, addr)
            self._tell(b"T" + f"{target} {port}".encode(), conn.fileno())

    def _tell(self, msg: bytes, fd: int | None = None) -> None:
        try:
            socket.send_fds(self.ctl, [msg], [fd] if fd is not None else [])
        except OSError:
            pass
