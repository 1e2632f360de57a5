"""Networking, the sandbox's side (PID 1, in the sandbox's new network namespace).

:func:`loopback_up` brings ``lo`` up (netdevice(7): SIOCGIFFLAGS / SIOCSIFFLAGS).  With egress
rules or a network mode, :func:`setup` (before PID 1 drops its capabilities) routes the
destinations the stub serves to loopback (rtnetlink(7) RTM_NEWROUTE, type ``local``), binds the
stub's sockets (ports below 1024 need CAP_NET_BIND_SERVICE) and hands the supervisor the
namespaces it configures from outside (unix(7) SCM_RIGHTS); :func:`start`, after the
capabilities are gone, waits for the supervisor's answer and starts the stub's thread
(:mod:`jailpy.net.stub`)."""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
HOST_SETUP_WAIT = 30.0
"""Seconds PID 1 waits for the supervisor to set up the network (a veth, pasta) at most."""

RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
RTN_UNICAST = 1
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RT_TABLE_MAIN, RT_TABLE_LOCAL, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_HOST = 254, 255, 3, 0, 254
RTN_LOCAL, RTN_BLACKHOLE = 2, 6
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15


def loopback_up() -> None:
    """Set IFF_UP on ``lo``; needs CAP_NET_ADMIN in the namespace.  Raises OSError."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _rta(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("HH", n, kind) + data + b"\0" * ((4 - n % 4) % 4)


def route_local(cidr: str, blackhole: bool = False) -> None:
    """``ip route add local CIDR dev lo table local``: every IPv4 destination in ``cidr`` is this
    host's own, so a connection to it reaches a listener bound to 0.0.0.0 (and getsockname(2)
    there gives the address the program dialled).  With ``blackhole``: ``ip route add blackhole
    CIDR`` instead (nothing reaches it).  Needs CAP_NET_ADMIN.  Raises OSError."""
    net, _, bits = cidr.partition("/")
    bits = bits or "32"
    if blackhole:
        rtm = struct.pack("BBBBBBBBI", socket.AF_INET, int(bits), 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                          RT_SCOPE_UNIVERSE, RTN_BLACKHOLE, 0)
        attrs = _rta(RTA_TABLE, struct.pack("I", RT_TABLE_MAIN))
    else:
        rtm = struct.pack("BBBBBBBBI", socket.AF_INET, int(bits), 0, 0, RT_TABLE_LOCAL, RTPROT_BOOT, RT_SCOPE_HOST,
                          RTN_LOCAL, 0)
        attrs = _rta(RTA_TABLE, struct.pack("I", RT_TABLE_LOCAL)) + _rta(RTA_OIF, struct.pack("i", socket.if_nametoindex("lo")))
    if int(bits):
        attrs += _rta(RTA_DST, socket.inet_aton(net))
    _netlink(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, rtm + attrs, f"add the route {cidr}")


def _netlink(kind: int, flags: int, body: bytes, what: str) -> None:
    """Send one rtnetlink request and wait for its acknowledgement.  Raises OSError."""
    msg = struct.pack("IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as s:  # NETLINK_ROUTE
        s.bind((0, 0))
        s.send(msg)
        reply = s.recv(4096)
    if len(reply) >= 20 and struct.unpack("H", reply[4:6])[0] == 2:  # NLMSG_ERROR
        err = struct.unpack("i", reply[16:20])[0]
        if err:
            raise OSError(-err, f"{what}: {os.strerror(-err)}")


class State:
    """What :func:`setup` made, for :func:`start`."""

    def __init__(self, plan, sock: socket.socket | None) -> None:
        self.plan = plan
        self.sock = sock
        self.stub = None


def setup(plan, net_fd: int | None) -> State | None:
    """Before the capabilities are dropped: route, bind, and send the namespaces (see the module
    docstring).  ``plan``: a :class:`jailpy.net.Inside` or None (loopback only).  Raises OSError."""
    if plan is None or net_fd is None or not (plan.stub or plan.host_setup):
        return None
    sock = socket.socket(fileno=net_fd)
    state = State(plan, sock)
    if plan.host_setup:
        fds = [os.open(f"/proc/self/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in ("net", "user")]
        try:
            socket.send_fds(sock, [b"S"], fds)
        finally:
            for fd in fds:
                os.close(fd)
    if plan.stub:
        from . import stub

        for cidr in plan.local_routes:
            try:
                route_local(cidr)
            except FileExistsError:
                pass  # local already (127.0.0.1/32 with --allow-net 127.0.0.1/32:PORT): its listeners get it
        state.stub = stub.Stub(plan, sock)
    return state


def wait_host(state: State | None) -> None:
    """Before the capabilities are dropped: wait for the supervisor's network set-up (a veth, a
    user-mode stack) and blackhole the addresses it names (the host's own, which a user-mode
    stack would reach).  Raises OSError when the supervisor refused or did not answer in
    HOST_SETUP_WAIT seconds."""
    if state is None or not state.plan.host_setup:
        return
    if not select.select([state.sock], [], [], HOST_SETUP_WAIT)[0]:
        raise OSError(110, "the supervisor did not set up the network in time")
    msg = state.sock.recv(65536)
    if msg[:1] != b"N":
        raise OSError(5, (msg[1:].decode(errors="replace") or "the supervisor ended") + " (network set-up)")
    import json

    answer = json.loads(msg[1:] or b"{}")
    conf = answer.get("configure")
    if conf:
        configure(conf["dev"], conf["address"], conf["prefixlen"], conf["gateway"])
    for cidr in answer.get("blackhole", ()):
        route_local(cidr, blackhole=True)


def configure(dev: str, address: str, prefixlen: int, gateway: str) -> None:
    """``ip addr add ADDRESS/PREFIXLEN dev DEV; ip link set DEV up; ip route add default via
    GATEWAY`` (rtnetlink(7) RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE).  Raises OSError."""
    idx = socket.if_nametoindex(dev)
    ifa = struct.pack("BBBBI", socket.AF_INET, prefixlen, 0, 0, idx)
    ip = socket.inet_aton(address)
    _netlink(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifa + _rta(IFA_LOCAL, ip) + _rta(IFA_ADDRESS, ip), "address")
    ifi = struct.pack("BxHiII", socket.AF_UNSPEC, 0, idx, IFF_UP, IFF_UP)
    _netlink(RTM_NEWLINK, 0, ifi, "link up")
    rtm = struct.pack("BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                      RTN_UNICAST, 0)
    _netlink(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, rtm + _rta(RTA_TABLE, struct.pack("I", RT_TABLE_MAIN))
             + _rta(RTA_GATEWAY, socket.inet_aton(gateway)) + _rta(RTA_OIF, struct.pack("i", idx)), "default route")


def start(state: State | None) -> None:
    """After the capabilities are dropped, before the seccomp filter (which then does not apply
    to the stub's thread) and the program: start the stub."""
    if state is not None and state.stub is not None:
        state.stub.start()
