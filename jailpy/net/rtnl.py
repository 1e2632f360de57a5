"""A small rtnetlink client (rtnetlink(7), netlink(7)): the few link and address requests the
bridge modes make, on a netlink socket of the caller's choosing.

It replaces pyroute2 here: that library costs about 200 ms to import (its package imports
everything), more than a whole ``jailpy exec``, and it cannot take a socket made elsewhere.
A netlink socket belongs to the network namespace it was made in, whatever namespace its user
is in later: :class:`Rtnl` takes an fd (a socket a rootless network's pod made in its own
namespace, :mod:`jailpy.net.pod`), or makes one here.

Each request asks for an acknowledgement (NLM_F_ACK) and waits for it: errors come back as
OSError with the kernel's errno (EEXIST, ENODEV, EPERM...)."""

from __future__ import annotations

import os
import socket
import struct

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_ROOT, NLM_F_MATCH = 0x100, 0x200
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLA_F_NESTED = 0x8000
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_GETADDR = 20, 22
IFLA_IFNAME, IFLA_MASTER, IFLA_PROTINFO, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 10, 12, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BRPORT_ISOLATED = 33
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
AF_BRIDGE = 7
_HDR = struct.Struct("IHHII")  # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index


def attr(kind: int, data: bytes) -> bytes:
    """One netlink attribute (struct nlattr), padded to 4 bytes."""
    n = 4 + len(data)
    return struct.pack("HH", n, kind) + data + b"\0" * (-n % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def name_attr(name: str) -> bytes:
    return attr(IFLA_IFNAME, name.encode() + b"\0")


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """The attributes of a message body, by type (the last one of a type wins)."""
    out, i = {}, 0
    while i + 4 <= len(data):
        n, kind = struct.unpack_from("HH", data, i)
        if n < 4:
            break
        out[kind & ~NLA_F_NESTED] = data[i + 4:i + n]
        i += (n + 3) & ~3
    return out


class Rtnl:
    """A NETLINK_ROUTE socket (``protocol`` 0; NETLINK_NETFILTER is 12): ``fd`` one made elsewhere
    (taken over: closed with this object), None: a new one in the caller's network namespace.
    Not thread-safe: one request at a time."""

    def __init__(self, fd: int | None = None, protocol: int = 0) -> None:
        if fd is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        else:
            self.sock = socket.socket(fileno=fd)
        self.sock.settimeout(10)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes, what: str, dump: bool = False) -> list[bytes]:
        """Send one request and read until its acknowledgement (or, with ``dump``, the end of the
        dump).  Returns the bodies of the messages that answered it.  Raises OSError (the kernel's
        errno, ``what`` in the message; ETIMEDOUT after 10 s without an answer)."""
        self.seq += 1
        seq = self.seq
        flags |= NLM_F_REQUEST | (NLM_F_ROOT | NLM_F_MATCH if dump else NLM_F_ACK)
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, flags, seq, 0) + body)
        out: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 16)
            i = 0
            while i + _HDR.size <= len(data):
                n, mtype, _, mseq, _ = _HDR.unpack_from(data, i)
                if n < _HDR.size:
                    break
                payload = data[i + _HDR.size:i + n]
                i += (n + 3) & ~3
                if mseq != seq:
                    continue  # an answer to an earlier request that timed out
                if mtype == NLMSG_ERROR:
                    err = struct.unpack_from("i", payload)[0]
                    if err:
                        raise OSError(-err, f"{what}: {os.strerror(-err)}")
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append(payload)

    # ---- links
    def link_index(self, name: str) -> int | None:
        """The index of the link ``name`` in the socket's namespace, None when there is none."""
        try:
            got = self.request(RTM_GETLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + name_attr(name),
                               f"find link {name}")
        except OSError as e:
            if e.errno == 19:  # ENODEV
                return None
            raise
        return _IFINFO.unpack_from(got[0])[2] if got else None

    def links(self) -> dict[str, int]:
        """Every link in the socket's namespace: name -> index."""
        out = {}
        for msg in self.request(RTM_GETLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0), "list links", dump=True):
            name = parse_attrs(msg[_IFINFO.size:]).get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
            out[name] = _IFINFO.unpack_from(msg)[2]
        return out

    def add_bridge(self, name: str) -> int:
        """``ip link add NAME type bridge``; returns its index."""
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                     + name_attr(name) + nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"bridge")), f"add bridge {name}")
        idx = self.link_index(name)
        if idx is None:
            raise OSError(19, f"bridge {name} vanished")
        return idx

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, master: int) -> None:
        """``ip link add NAME master MASTER up type veth peer name PEER netns FD``: the peer is
        created directly in the namespace of ``peer_netns_fd`` (needs CAP_NET_ADMIN over both
        namespaces' owning user namespaces, for the socket's opener and the caller alike:
        net/core/rtnetlink.c rtnl_link_get_net_capable)."""
        peer_msg = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + name_attr(peer) + attr(IFLA_NET_NS_FD,
                                                                                      struct.pack("i", peer_netns_fd))
        body = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, IFF_UP, IFF_UP) + name_attr(name)
                + attr(IFLA_MASTER, struct.pack("I", master))
                + nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"veth"),
                         nested(IFLA_INFO_DATA, nested(VETH_INFO_PEER, peer_msg))))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add veth {name}")

    def set_isolated(self, index: int) -> None:
        """``bridge link set dev IFACE isolated on`` (bridge(8)): the port reaches only ports that
        are not isolated (the bridge itself), not its isolated siblings."""
        body = _IFINFO.pack(AF_BRIDGE, 0, index, 0, 0) + nested(IFLA_PROTINFO, attr(IFLA_BRPORT_ISOLATED, b"\1"))
        self.request(RTM_SETLINK, 0, body, f"isolate bridge port {index}")

    def set_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP), f"link {index} up")

    def delete(self, index: int) -> None:
        self.request(RTM_DELLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0), f"delete link {index}")

    def delete_name(self, name: str) -> bool:
        """Delete the link ``name`` if it is there; whether it was."""
        try:
            self.request(RTM_DELLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + name_attr(name),
                         f"delete link {name}")
        except OSError as e:
            if e.errno == 19:
                return False
            raise
        return True

    # ---- addresses
    def addresses(self, index: int) -> list[str]:
        """The IPv4 addresses on link ``index``."""
        out = []
        for msg in self.request(RTM_GETADDR, 0, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0), "list addresses",
                                dump=True):
            family, _, _, _, idx = _IFADDR.unpack_from(msg)
            a = parse_attrs(msg[_IFADDR.size:]).get(IFA_LOCAL)
            if idx == index and family == socket.AF_INET and a and len(a) == 4:
                out.append(socket.inet_ntoa(a))
        return out

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        """``ip addr add ADDRESS/PREFIXLEN dev INDEX``."""
        ip = socket.inet_aton(address)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, _IFADDR.pack(socket.AF_INET, prefixlen, 0, 0, index)
                     + attr(IFA_LOCAL, ip) + attr(IFA_ADDRESS, ip), f"add address {address}")
