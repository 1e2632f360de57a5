"""Networking.  Child side: :func:`loopback_up` brings ``lo`` up in the sandbox's new network
namespace (netdevice(7): SIOCGIFFLAGS / SIOCSIFFLAGS), so the program can use 127.0.0.1
and nothing else: a new network namespace has no other interface and no route out."""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """Set IFF_UP on ``lo``; needs CAP_NET_ADMIN in the namespace.  Raises OSError."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
