"""The host-side egress proxy (asyncio, stdlib): every TCP connection a sandbox makes to the
outside comes here as an accepted socket of the sandbox's (from :mod:`jailpy.net.stub`), with
the name or address and port the program dialled, or as a connection to its HTTP proxy port
(``CONNECT host:port`` or a plain ``GET http://host/...``).

For each: the target is put in normal form (:mod:`jailpy.net.rules`: an IP literal in any
notation is an address, a name is lower-cased, IDN-encoded, without a trailing dot; brackets,
user info and other oddities are refused), checked against ``--allow-host`` / ``--allow-net``,
a name is resolved here (the policy's ``resolver``, else the host's resolver), every address it
resolves to is checked (loopback, private, link-local/metadata, multicast and reserved ranges
are refused unless ``--allow-net`` names them), and the proxy dials the address it checked:
a name that resolves elsewhere next time (DNS rebinding) is checked again then.  Time limits
bound every step a peer could stall (HEAD_TIMEOUT, CONNECT_TIMEOUT, RESOLVE_TIMEOUT), and a
sandbox may hold at most MAX_CONNECTIONS at once (and --publish clients as many again).  Each decision is counted for the Result."""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import os
import socket
import threading

from . import dns, rules

HEAD_TIMEOUT = 10.0
"""Seconds an HTTP proxy client has to send its whole request head (slowloris)."""
CONNECT_TIMEOUT = 10.0
RESOLVE_TIMEOUT = 5.0
MAX_HEAD = 16 << 10
MAX_CONNECTIONS = 256
"""Connections of one run open at once, each way (the program's through the proxy; --publish
clients'); more are closed at once.  Each costs the supervisor two relay threads and six fds."""
MAX_LISTED = 50
"""Refused targets (and log entries) listed in the Result; the counts are complete."""
BUF = 1 << 20
"""Bytes one splice(2) moves at most (a pipe holds 64 KiB by default; splice moves what fits)."""
SPLICE_F_MOVE = 1
F_SETPIPE_SZ = 1031


class Refused(Exception):
    """A connection the rules do not allow; the message says why."""


class Counters:
    """What one run's network did (the Result's ``network`` section)."""

    def __init__(self) -> None:
        self.allowed = 0
        self.refused = 0
        self.refused_list: list[dict] = []
        self.dns_refused: list[str] = []
        self.allowed_list: list[dict] = []
        self.bytes_out = 0
        self.bytes_in = 0
        self.open = 0
        """Connections of the program's (to the proxy) being checked, dialled or relayed: at most
        MAX_CONNECTIONS, counted from the moment the supervisor receives one (jailpy.net.host)."""
        self.inbound = 0
        """--publish TCP connections being set up or relayed to this run: at most MAX_CONNECTIONS."""
        self.published = 0

    def refuse(self, target: str, port: int | None, why: str) -> None:
        self.refused += 1
        entry = {"target": target[:300], "port": port, "reason": why}
        if len(self.refused_list) < MAX_LISTED and entry not in self.refused_list:
            self.refused_list.append(entry)

    def as_dict(self) -> dict:
        return {"connections_allowed": self.allowed, "connections_refused": self.refused,
                "refused": self.refused_list, "dns_refused": self.dns_refused, "allowed": self.allowed_list,
                "bytes_sent": self.bytes_out, "bytes_received": self.bytes_in,
                "published_connections": self.published}


class Proxy:
    """The rules of one Sandbox (a :class:`jailpy.net.NetPlan`), applied in the service's loop."""

    def __init__(self, plan) -> None:
        self.hosts = plan.hosts
        self.nets = plan.nets
        self.resolver = plan.resolver

    # ---- decisions
    async def check(self, target: str, port: int) -> tuple[str, str]:
        """The address to dial for ``target`` (a name or an address) and ``port``, and the name
        it was checked as.  Raises Refused."""
        ip = rules.parse_ip(target)
        if ip is not None:
            if ip in rules.FAKE_NET:
                raise Refused("an address of the sandbox's own resolver that names nothing")
            if any(n.matches(ip, port) for n in self.nets):
                return str(ip), str(ip)
            raise Refused("address not allowed (--allow-net)")
        try:
            name = rules.normal_name(target)
        except rules.RuleError as e:
            raise Refused(str(e)) from None
        if not any(h.matches(name, port) for h in self.hosts):
            if any(h.matches(name, p) for h in self.hosts for p in h.ports):
                raise Refused(f"port {port} not allowed for {name}")
            raise Refused("name not allowed (--allow-host)")
        addrs = await self.resolve(name)
        if not addrs:
            raise Refused(f"{name} does not resolve")
        why = ""
        for a in addrs:
            ipa = ipaddress.ip_address(a)
            if any(n.matches(ipa, port) for n in self.nets):
                return a, name
            why = rules.refused(ipa) or ""
            if not why:
                return a, name
        raise Refused(f"{name} resolves to {addrs[0]} ({why}; allow it with --allow-net)")

    async def resolve(self, name: str) -> list[str]:
        """The addresses of ``name``: asked of the policy's resolver (A, then AAAA), else of the
        host's (getaddrinfo(3)).  Raises Refused when the lookup fails."""
        loop = asyncio.get_running_loop()
        try:
            if self.resolver is None:
                infos = await asyncio.wait_for(loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
                return list(dict.fromkeys(i[4][0] for i in infos))
            out: list[str] = []
            for qtype in (dns.QTYPE_A, dns.QTYPE_AAAA):
                out += await asyncio.wait_for(self._ask(name, qtype), RESOLVE_TIMEOUT)
            return out
        except (OSError, asyncio.TimeoutError, dns.DNSError) as e:
            raise Refused(f"cannot resolve {name}: {str(e) or 'timed out'}") from None

    async def _ask(self, name: str, qtype: int) -> list[str]:
        loop = asyncio.get_running_loop()
        host, port = self.resolver
        qid, query = dns.build_query(name, qtype)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            await loop.sock_connect(s, (host, port))
            for _ in range(2):
                await loop.sock_sendall(s, query)
                try:
                    while True:
                        data = await asyncio.wait_for(loop.sock_recv(s, 4096), RESOLVE_TIMEOUT / 2)
                        try:
                            rcode, addrs, _ = dns.parse_response(data, qid, name)
                        except dns.DNSError:
                            continue  # not ours: a spoofing attempt or a stale answer
                        return addrs if rcode == dns.NOERROR else []
                except asyncio.TimeoutError:
                    continue
        raise OSError("no answer from the resolver")

    async def dial(self, addr: str, port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, (addr, port)), CONNECT_TIMEOUT)
        except BaseException:
            s.close()
            raise
        return s

    # ---- connections
    async def transparent(self, conn: socket.socket, target: str, port: int, c: Counters) -> None:
        """A connection the program made to ``target``:``port`` (through the stub's listener)."""
        with conn:
            conn.setblocking(False)
            up = await self._open(target, port, c)
            if up is not None:
                await self.relay(conn, up, c)

    async def _open(self, target: str, port: int, c: Counters) -> socket.socket | None:
        try:
            addr, name = await self.check(target, port)
        except Refused as e:
            c.refuse(target, port, str(e))
            return None
        try:
            up = await self.dial(addr, port)
        except (OSError, asyncio.TimeoutError) as e:
            c.refuse(target, port, f"cannot connect to {addr}:{port}: {getattr(e, 'strerror', None) or 'timed out'}")
            return None
        c.allowed += 1
        entry = {"target": name, "port": port, "address": addr}
        if len(c.allowed_list) < MAX_LISTED and entry not in c.allowed_list:
            c.allowed_list.append(entry)
        return up

    async def http(self, conn: socket.socket, c: Counters) -> None:
        """A connection to the sandbox's HTTP proxy port: CONNECT, or one plain HTTP request."""
        loop = asyncio.get_running_loop()
        with conn:
            conn.setblocking(False)
            try:
                head = await asyncio.wait_for(self._head(conn), HEAD_TIMEOUT)
            except (asyncio.TimeoutError, OSError, ValueError) as e:
                c.refuse("(HTTP proxy client)", None, f"bad or slow request head: {e or 'timed out'}")
                return
            head, rest = head
            line, _, headers = head.partition(b"\r\n")
            parts = line.split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
                await self._deny(conn, 400, "bad request line", c, "(HTTP proxy client)", None)
                return
            method, target, version = (p.decode("latin-1") for p in parts)
            try:
                if method == "CONNECT":
                    host, port = _split_hostport(target, None)
                else:
                    host, port, path = _split_url(target)
            except ValueError as e:
                await self._deny(conn, 400, str(e), c, target, None)
                return
            up = await self._open(host, port, c)
            if up is None:
                await _send(loop, conn, f"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                                        f"jailpy: {host}:{port}: {c.refused_list[-1]['reason'] if c.refused_list else 'refused'}\n"
                            .encode("utf-8", "replace"))
                return
            if method == "CONNECT":
                await _send(loop, conn, b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    await _send(loop, up, rest)
                    c.bytes_out += len(rest)
            else:
                kept = [h for h in headers.split(b"\r\n") if h and not h.lower().startswith(
                    (b"proxy-", b"connection:", b"keep-alive:", b"host:"))]
                hostport = host if port == 80 else f"{host}:{port}"
                new = (f"{method} {path} {version}\r\nHost: {hostport}\r\nConnection: close\r\n".encode("latin-1")
                       + b"".join(h + b"\r\n" for h in kept) + b"\r\n")
                await _send(loop, up, new + rest)
                c.bytes_out += len(new) + len(rest)
            await self.relay(conn, up, c)

    async def _head(self, conn: socket.socket) -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await loop.sock_recv(conn, 4096)
            if not data:
                raise ValueError("closed before the request head ended")
            buf += data
            if len(buf) > MAX_HEAD:
                raise ValueError(f"request head over {MAX_HEAD} bytes")
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head, rest

    async def _deny(self, conn, code: int, why: str, c: Counters, target: str, port) -> None:
        c.refuse(target, port, why)
        await _send(asyncio.get_running_loop(), conn,
                    f"HTTP/1.1 {code} Bad Request\r\nConnection: close\r\n\r\njailpy: {why}\n".encode("utf-8", "replace"))

    async def relay(self, a: socket.socket, b: socket.socket, c: Counters) -> None:
        """Copy both ways until both ends are done; closes ``b`` (``a`` is the caller's).  Each
        direction is a thread moving data with splice(2) through a pipe, without copying it
        into Python (the loop only waits for the two threads)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        left = [2]

        def finished() -> None:
            left[0] -= 1
            if not left[0] and not done.done():
                done.set_result(None)
        try:
            for src, dst, out in ((a, b, True), (b, a, False)):
                threading.Thread(target=_splice, args=(src, dst, c, out, loop, finished), daemon=True,
                                 name="jailpy-relay").start()
            await done
        finally:
            b.close()


def _splice(src: socket.socket, dst: socket.socket, c: Counters, out: bool, loop, finished) -> None:
    """One direction of a relay (a thread): splice(2) ``src`` -> pipe -> ``dst`` until ``src``
    ends, then shut ``dst``'s writing side; tells the loop when done."""
    r = w = -1
    try:
        src.setblocking(True)
        dst.setblocking(True)
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, BUF)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: 64 KiB per call then
        s_fd, d_fd = src.fileno(), dst.fileno()
        while True:
            n = os.splice(s_fd, w, BUF, flags=SPLICE_F_MOVE)
            if not n:
                break
            left = n
            while left:
                left -= os.splice(r, d_fd, left, flags=SPLICE_F_MOVE)
            if out:
                c.bytes_out += n
            else:
                c.bytes_in += n
    except OSError:
        pass
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            loop.call_soon_threadsafe(finished)
        except RuntimeError:
            pass  # the loop has stopped (Sandbox.close)


async def _send(loop, sock: socket.socket, data: bytes) -> None:
    try:
        await loop.sock_sendall(sock, data)
    except OSError:
        pass


def _split_hostport(text: str, default: int | None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (``default`` when the port is missing and allowed to be)."""
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        host = "[" + host + "]"
        port = tail.removeprefix(":") if tail else ""
    else:
        host, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not port:
        if default is None:
            raise ValueError(f"expected host:port, got {text!r}")
        return host, default
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port)


def _split_url(url: str) -> tuple[str, int, str]:
    """``(host, port, path)`` of an absolute ``http://`` URL; user info is refused."""
    if not url.lower().startswith("http://"):
        raise ValueError(f"only http:// URLs (use CONNECT for others), got {url[:100]!r}")
    rest = url[7:]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    netloc, path = rest[:cut], rest[cut:] or "/"
    if path[0] != "/":
        path = "/" + path
    if "@" in netloc:
        raise ValueError("user info in a proxy URL is refused")
    host, port = _split_hostport(netloc, 80)
    return host, port, path
