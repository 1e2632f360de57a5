"""The fake upstream of the network tests: HTTP servers, a PyPI-style simple index serving a
wheel built here, and a DNS server (dnslib) with the test's names.  Started by tests/net_helpers.py,
inside a network namespace the test made (as root) or on 127.0.0.1 (rootless).

    upstream.py DIR ZONE_JSON HTTP_ADDR:PORT[,...] DNS_ADDR:PORT

Each HTTP address serves: /hello (its own address), /big?mb=N (N MiB of zeros), the index at
/simple/ and the wheel at /files/.  The zone maps a name to a list of answers; a name whose list
has several is answered with each in turn (the rebinding test).  Writes "ready" to stdout once
every socket is bound; exits when stdin closes (the test ended) or after 600 s."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import signal
import socket
import socketserver
import sys
import threading
import zipfile

PKG = "jptestpkg"
VERSION = "1.0"
WHEEL = f"{PKG}-{VERSION}-py3-none-any.whl"


def build_wheel() -> bytes:
    files = {f"{PKG}/__init__.py": b"MAGIC = 'jailpy-net-test'\n",
             f"{PKG}-{VERSION}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PKG}\nVersion: {VERSION}\n".encode(),
             f"{PKG}-{VERSION}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: jailpy-tests\nRoot-Is-Purelib: true\n"
                                                 b"Tag: py3-none-any\n"}
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    record += f"{PKG}-{VERSION}.dist-info/RECORD,,\n"
    files[f"{PKG}-{VERSION}.dist-info/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


WHEEL_DATA = build_wheel()
WHEEL_SHA = hashlib.sha256(WHEEL_DATA).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a) -> None:
        pass

    def _send(self, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/hello":
            self._send(f"hello from {self.server.server_address[0]} host={self.headers.get('Host')}\n".encode())
        elif path == "/big":
            n = int(query.partition("=")[2] or 1) << 20
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = bytes(1 << 20)
            while n > 0:
                self.wfile.write(chunk[:min(n, len(chunk))])
                n -= len(chunk)
        elif path in ("/simple/", "/simple"):
            self._send(f'<html><body><a href="/simple/{PKG}/">{PKG}</a></body></html>'.encode(), "text/html")
        elif path.rstrip("/") == f"/simple/{PKG}":
            self._send(f'<html><body><a href="/files/{WHEEL}#sha256={WHEEL_SHA}">{WHEEL}</a></body></html>'.encode(),
                       "text/html")
        elif path == f"/files/{WHEEL}":
            self._send(WHEEL_DATA, "application/octet-stream")
        else:
            self.send_error(404)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_dns(sock: socket.socket, zone: dict) -> None:
    from dnslib import DNSRecord

    turns: dict[str, int] = {}
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            q = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001
            continue
        try:
            sock.sendto(answer(q, zone, turns), peer)
        except Exception as e:  # noqa: BLE001 - one bad query must not end the server
            print(f"dns: {e!r}", file=sys.stderr, flush=True)


def answer(q, zone: dict, turns: dict) -> bytes:
    import ipaddress

    from dnslib import AAAA, QTYPE, RR, A

    name = str(q.q.qname).rstrip(".").lower()
    reply = q.reply()
    answers = zone.get(name)
    if answers is None:
        reply.header.rcode = 3
    else:
        i = turns.get(name, 0)
        if q.q.qtype == QTYPE.A:
            turns[name] = i + 1
        addr = answers[min(i, len(answers) - 1)]
        if ":" in addr and q.q.qtype == QTYPE.AAAA:
            reply.add_answer(RR(q.q.qname, QTYPE.AAAA, rdata=AAAA(list(ipaddress.IPv6Address(addr).packed)), ttl=1))
        elif ":" not in addr and q.q.qtype == QTYPE.A:
            reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(addr), ttl=1))
    return reply.pack()


def main() -> None:
    zone = json.loads(sys.argv[2])
    servers = []
    for spec in sys.argv[3].split(","):
        host, _, port = spec.rpartition(":")
        servers.append(Server((host, int(port)), Handler))
    dhost, _, dport = sys.argv[4].rpartition(":")
    dsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dsock.bind((dhost, int(dport)))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    threading.Thread(target=serve_dns, args=(dsock, zone), daemon=True).start()
    print("ready " + " ".join(f"{s.server_address[0]}:{s.server_address[1]}" for s in servers)
          + f" dns={dsock.getsockname()[1]}", flush=True)
    signal.alarm(600)  # bounded, whatever the test does
    sys.stdin.read()


if __name__ == "__main__":
    main()
