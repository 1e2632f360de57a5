"""Runs inside the sandbox in the network tests: tries each action of a JSON list and prints a
JSON list of outcomes ("ok: ..." or "error: ...").  Every socket has a timeout.

    ["resolve", NAME]                     gethostbyname
    ["get", URL]                          urllib, using HTTP_PROXY as set
    ["direct", URL]                       urllib without a proxy (the transparent path)
    ["tcp", HOST, PORT]                   connect, send GET /hello, read the first line
    ["connect", TARGET]                   CONNECT TARGET through 127.0.0.1:3128; the status line
    ["udp", HOST, PORT]                   a DNS query for other.test; the answer's rcode
    ["raw"]                               a raw IP socket
    ["tcp6", ADDR, PORT]                  connect over IPv6
"""

import json
import socket
import struct
import sys
import urllib.request

TIMEOUT = 8


def _body(s):
    """The body of an HTTP/1.0 response, read to the end (the server closes)."""
    data = b""
    while len(data) < 65536:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data:
        raise OSError("closed without an answer")
    return data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()


def act(a):
    kind = a[0]
    if kind == "resolve":
        return socket.gethostbyname(a[1])
    if kind in ("get", "direct"):
        handlers = [urllib.request.ProxyHandler({})] if kind == "direct" else []
        with urllib.request.build_opener(*handlers).open(a[1], timeout=TIMEOUT) as r:
            return r.read(200).decode(errors="replace").strip()
    if kind == "tcp":
        with socket.create_connection((a[1], int(a[2])), timeout=TIMEOUT) as s:
            s.sendall(f"GET /hello HTTP/1.0\r\nHost: {a[1]}\r\n\r\n".encode())
            return _body(s)
    if kind == "connect":
        with socket.create_connection(("127.0.0.1", 3128), timeout=TIMEOUT) as s:
            s.sendall(f"CONNECT {a[1]} HTTP/1.1\r\nHost: {a[1]}\r\n\r\n".encode())
            line = s.recv(4096).split(b"\r\n")[0].decode(errors="replace")
            if " 200 " not in line + " ":
                raise OSError(line)
            s.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
            return _body(s)
    if kind == "udp":
        q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x05other\x04test\x00" + struct.pack("!HH", 1, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(TIMEOUT)
            s.sendto(q, (a[1], int(a[2])))
            data, peer = s.recvfrom(4096)
            return f"rcode {data[3] & 0xF} from {peer[0]}"
    if kind == "raw":
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        return "raw socket made"
    if kind == "tcp6":
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.settimeout(TIMEOUT)
            s.connect((a[1], int(a[2])))
            return "connected"
    raise ValueError(kind)


out = []
for a in json.loads(sys.argv[1]):
    try:
        out.append("ok: " + str(act(a)))
    except Exception as e:  # noqa: BLE001
        out.append(f"error: {type(e).__name__}: {e}")
print(json.dumps(out))
