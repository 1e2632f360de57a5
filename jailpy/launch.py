"""The launch request: how the supervisor hands the program to a sandbox that is already built.

A sandbox is built before its program is known (a prepared sandbox, the fork server), so the
program travels later over the control socket (unix(7), SOCK_STREAM): :func:`send` on the host
side, :func:`receive` in the sandbox's PID 1.  The request is an 8-byte little-endian length,
JSON ``{"argv": [...], "env": {...}, "expect": {...}}`` and the program's stdin, stdout and
stderr fds (SCM_RIGHTS) with the first packet.  ``expect`` is what PID 1 must hold before it
starts the program (:func:`jailpy.child.expected`): a sandbox prepared with less is refused,
never run weaker.
"""

from __future__ import annotations

import errno
import json
import socket

_FIRST = 65536
"""Bytes of the request sent with the fds, in one sendmsg(2)."""


def send(ctl: socket.socket, argv: list[str], env: dict[str, str], stdio: list[int], expect: dict) -> None:
    """Host side: send the request.  Raises OSError (EPIPE, ECONNRESET: the sandbox is gone)."""
    data = json.dumps({"argv": argv, "env": env, "expect": expect}).encode()
    head = len(data).to_bytes(8, "little") + data[:_FIRST - 8]
    sent = socket.send_fds(ctl, [head], stdio)
    rest = head[sent:] + data[_FIRST - 8:]
    if rest:  # never an empty send: PID 1 may have read it all and closed its end (EPIPE)
        ctl.sendall(rest)


def receive(sock: socket.socket) -> tuple[list[str], dict[str, str], list[int], dict | None] | None:
    """Sandbox side: read the request; returns ``(argv, env, [stdin, stdout, stderr], expect)``,
    or None at EOF (the supervisor dropped this sandbox).  Raises OSError (EBADMSG) for a
    request without exactly three fds."""
    data, fds, _, _ = socket.recv_fds(sock, _FIRST, 3)
    if not data:
        return None
    size = int.from_bytes(data[:8], "little")
    data = bytearray(data[8:])
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    req = json.loads(data)
    if len(fds) != 3:
        raise OSError(errno.EBADMSG, f"expected 3 stdio fds, got {len(fds)}")
    return req["argv"], req["env"], fds, req.get("expect")
