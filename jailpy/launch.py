"""The launch request: how the supervisor hands the program to a sandbox that is already built.

A sandbox is built before its program is known (a prepared sandbox, the fork server), so the
program travels later over the control socket (unix(7), SOCK_STREAM): :func:`send` on the host
side, :func:`receive` in the sandbox's PID 1.

The request never blocks the supervisor, however large the program's arguments and
environment: they are written into a sealed memfd (memfd_create(2), fcntl(2) F_ADD_SEALS), and
the socket carries one byte and four fds (SCM_RIGHTS): the memfd, then the program's stdin,
stdout and stderr.  The memfd holds one JSON line ``{"argc": N, "envc": M, "expect": {...}}``
and then the N arguments and M ``NAME=VALUE`` strings, each ended by a NUL byte: bytes, as
execve(2) takes them (a path or a value need not be UTF-8).  ``expect`` is what PID 1 must hold
before it starts the program (:func:`jailpy.child.expected`): a sandbox prepared with less is
refused, never run weaker.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket

MAX_REQUEST = 1 << 30
"""Bytes PID 1 reads at most: far above what execve(2) accepts (ARG_MAX is a quarter of the stack
limit, and at most 6 MiB of strings with an unlimited stack), below what would exhaust memory."""
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _encode(argv: list, env: dict, expect: dict) -> bytes:
    args = [os.fsencode(a) for a in argv]
    pairs = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    for item in args + pairs:
        if b"\0" in item:
            raise ValueError(f"a NUL byte in {item[:60]!r}: execve(2) cannot pass it")
    head = json.dumps({"argc": len(args), "envc": len(pairs), "expect": expect}).encode()
    return head + b"\n" + b"".join(x + b"\0" for x in args + pairs)


def send(ctl: socket.socket, argv: list, env: dict, stdio: list[int], expect: dict) -> None:
    """Host side: send the request.  ``argv`` items and ``env`` keys and values are str
    (encoded with os.fsencode, so surrogate-escaped bytes come back as they were) or bytes.
    Raises ValueError for a string holding a NUL byte, OSError (EPIPE, ECONNRESET: the sandbox
    is gone; EMFILE: no fd left for the memfd)."""
    data = _encode(argv, env, expect)
    fd = os.memfd_create("jailpy-launch", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)  # PID 1 reads exactly what was written
        socket.send_fds(ctl, [b"L"], [fd, *stdio])
    finally:
        os.close(fd)


def receive(sock: socket.socket) -> tuple[list[bytes], list[bytes], list[int], dict | None] | None:
    """Sandbox side: read the request; returns ``(argv, env, [stdin, stdout, stderr], expect)``
    with ``argv`` and ``env`` (``NAME=VALUE``) as bytes, or None at EOF (the supervisor dropped
    this sandbox).  Raises OSError (EBADMSG) for a malformed request."""
    data, fds, _, _ = socket.recv_fds(sock, 16, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    if data != b"L" or len(fds) != 4:
        for fd in fds:
            os.close(fd)
        raise OSError(errno.EBADMSG, f"a malformed launch request ({len(fds)} fds)")
    memfd, stdio = fds[0], fds[1:]
    try:
        size = os.fstat(memfd).st_size
        if size > MAX_REQUEST:
            raise OSError(errno.E2BIG, f"the launch request is {size} bytes")
        raw = bytearray()
        while len(raw) < size:
            chunk = os.pread(memfd, size - len(raw), len(raw))
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(memfd)
    head, _, rest = bytes(raw).partition(b"\n")
    try:
        req = json.loads(head)
        items = rest.split(b"\0")[:-1]
        argc, envc = req["argc"], req["envc"]
        if len(items) != argc + envc or argc < 1:
            raise ValueError("counts")
    except (ValueError, KeyError, TypeError):
        for fd in stdio:
            os.close(fd)
        raise OSError(errno.EBADMSG, "a malformed launch request") from None
    return items[:argc], items[argc:], stdio, req.get("expect")
