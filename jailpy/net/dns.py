"""A small DNS message codec (RFC 1035): enough for the sandbox's stub resolver to answer A
queries, and for the host-side proxy to ask one server for the A and AAAA records of a name.
Stdlib only (the stub runs inside the sandbox's PID 1, which imports nothing heavy)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

QTYPE_A, QTYPE_AAAA = 1, 28
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, REFUSED = 0, 1, 2, 3, 5


class DNSError(ValueError):
    """A message that cannot be parsed."""


def _read_name(msg: bytes, off: int, depth: int = 0) -> tuple[str, int]:
    """The name at ``off`` (following compression pointers, at most 16 deep) and the offset after it."""
    labels = []
    end = None
    for _ in range(128):
        if off >= len(msg):
            raise DNSError("name runs past the message")
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or depth > 16:
                raise DNSError("bad compression pointer")
            ptr = ((n & 0x3F) << 8) | msg[off + 1]
            if end is None:
                end = off + 2
            if ptr >= off:
                raise DNSError("forward compression pointer")
            off, depth = ptr, depth + 1
            continue
        if n & 0xC0:
            raise DNSError("bad label type")
        label = msg[off + 1:off + 1 + n]
        if len(label) != n:
            raise DNSError("label runs past the message")
        labels.append(label.decode("latin-1"))
        off += 1 + n
    else:
        raise DNSError("too many labels")
    return ".".join(labels), (end if end is not None else off)


def parse_query(msg: bytes) -> tuple[int, int, str, int]:
    """``(id, flags, qname, qtype)`` of a query with one question.  Raises DNSError."""
    if len(msg) < 12:
        raise DNSError("short message")
    qid, flags, qd = struct.unpack("!HHH", msg[:6])
    if flags & 0x8000 or qd != 1:
        raise DNSError("not a query with one question")
    name, off = _read_name(msg, 12)
    if off + 4 > len(msg):
        raise DNSError("short question")
    qtype, _ = struct.unpack("!HH", msg[off:off + 4])
    return qid, flags, name, qtype


def answer(query: bytes, rcode: int, addr: str | None = None, ttl: int = 300) -> bytes:
    """The response to ``query`` (parsed by :func:`parse_query`): its question copied, the
    ``rcode``, and an A record ``addr`` when given."""
    qid, flags, _, _ = parse_query(query)
    _, end = _read_name(query, 12)
    question = query[12:end + 4]
    rflags = 0x8000 | (flags & 0x0100) | 0x0080 | (flags & 0x7800) | rcode  # QR, RD copied, RA, opcode
    an = 1 if addr else 0
    out = struct.pack("!HHHHHH", qid, rflags, 1, an, 0, 0) + question
    if addr:
        out += struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, ttl, 4) + socket.inet_aton(addr)
    return out


def build_query(name: str, qtype: int) -> tuple[int, bytes]:
    """A recursive query for ``name`` (normal form); returns ``(id, message)``."""
    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        raw = label.encode("ascii")
        q += bytes([len(raw)]) + raw
    return qid, q + b"\0" + struct.pack("!HH", qtype, 1)


def parse_response(msg: bytes, qid: int, name: str) -> tuple[int, list[str], int]:
    """``(rcode, addresses, min TTL)`` of a response to the query ``qid`` for ``name``: the A and
    AAAA records of ``name`` and of the names its CNAME records lead to.  Raises DNSError for a
    response to another query."""
    if len(msg) < 12:
        raise DNSError("short response")
    rid, flags, qd, an = struct.unpack("!HHHH", msg[:8])
    if rid != qid or not flags & 0x8000:
        raise DNSError("not the response to this query")
    off = 12
    for _ in range(qd):
        qname, off = _read_name(msg, off)
        if qname.lower().rstrip(".") != name:
            raise DNSError("response to another name")
        off += 4
    names = {name}
    addrs: list[str] = []
    ttl = 1 << 31
    for _ in range(an):
        rname, off = _read_name(msg, off)
        if off + 10 > len(msg):
            raise DNSError("short record")
        rtype, _, rttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if len(rdata) != rdlen:
            raise DNSError("record runs past the message")
        if rname.lower().rstrip(".") in names:
            if rtype == 5:  # CNAME
                names.add(_read_name(msg, off)[0].lower().rstrip("."))
            elif rtype == QTYPE_A and rdlen == 4:
                addrs.append(str(ipaddress.IPv4Address(rdata)))
                ttl = min(ttl, rttl)
            elif rtype == QTYPE_AAAA and rdlen == 16:
                addrs.append(str(ipaddress.IPv6Address(rdata)))
                ttl = min(ttl, rttl)
        off += rdlen
    return flags & 0xF, addrs, ttl
