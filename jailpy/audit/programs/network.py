# Network probes (run inside the sandbox after _lib.py).  Traffic only to loopback; the egress
# test uses connect() on UDP sockets, which sends nothing and only asks for a route.
import ctypes
import socket
import struct

AF_PACKET, AF_NETLINK = 17, 16


def net_egress(p):
    att = []
    for what, fam, addr in (("a route to 192.0.2.1 (TEST-NET-1)", socket.AF_INET, ("192.0.2.1", 9)),
                            ("a route to 2001:db8::1 (documentation prefix)", socket.AF_INET6, ("2001:db8::1", 9))):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.connect(addr)  # UDP connect: a route lookup, no packet
            att.append(attempt(what, "connect", 0, None, through=True))
        except OSError as e:
            att.append(attempt(what, "connect", -1, ename(e.errno), layer="namespace"))
        finally:
            s.close()
    ifaces = [line.split(":")[0].strip() for line in (read_text("/proc/net/dev") or "").splitlines()[2:]]
    other = [i for i in ifaces if i != "lo"]
    att.append(attempt("network interfaces other than lo", "socket", 0 if other else -1, None,
                       through=bool(other), layer="namespace", detail=", ".join(ifaces)))
    return {"attempts": att}


def net_host_loopback(p):
    att = []
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", p["tcp_port"]))
        att.append(attempt(f"connect to the host's 127.0.0.1:{p['tcp_port']} (a canary server)", "connect", 0, None,
                           through=True))
    except OSError as e:
        att.append(attempt(f"connect to the host's 127.0.0.1:{p['tcp_port']} (a canary server)", "connect", -1,
                           ename(e.errno), layer="namespace"))
    finally:
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(b"jailpy-audit", ("127.0.0.1", p["udp_port"]))
        att.append(attempt(f"a datagram to 127.0.0.1:{p['udp_port']} reaching the host's canary", "sendto", 0, None,
                           through=False, layer="namespace", detail="sent; the host received nothing"))
    except OSError as e:
        att.append(attempt("send a datagram to the host's loopback", "sendto", -1, ename(e.errno), layer="namespace"))
    finally:
        u.close()
    return {"attempts": att}


def net_raw_socket(p):
    return {"attempts": [sysc("socket(AF_INET, SOCK_RAW, ICMP)", "socket", socket.AF_INET, socket.SOCK_RAW, 1),
                         sysc("socket(AF_INET6, SOCK_RAW, ICMPV6)", "socket", socket.AF_INET6, socket.SOCK_RAW, 58)]}


def net_packet_socket(p):
    return {"attempts": [sysc("socket(AF_PACKET, SOCK_RAW) (sniff or forge frames)", "socket", AF_PACKET,
                              socket.SOCK_RAW, 0x0300)]}


def _links(fd):
    """RTM_GETLINK dump on a NETLINK_ROUTE socket: the interface names it sees (rtnetlink(7))."""
    req = struct.pack("=IHHII", 32, 18, 0x301, 1, 0) + struct.pack("=BxHiII", 0, 0, 0, 0, 0)  # NLM_F_REQUEST|DUMP
    os.write(fd, req)
    names = []
    for _ in range(64):
        data = os.read(fd, 65536)
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == 3 or length < 16:  # NLMSG_DONE
                return names
            a = off + 16 + 16  # after nlmsghdr and ifinfomsg
            while a + 4 <= off + length:
                alen, atype = struct.unpack_from("=HH", data, a)
                if atype == 3:  # IFLA_IFNAME
                    names.append(data[a + 4:a + alen].rstrip(b"\0").decode())
                a += (alen + 3) & ~3 if alen else 4
            off += (length + 3) & ~3
    return names


def net_netlink(p):
    fd, err = raw("socket", AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    if fd < 0:
        return {"attempts": [attempt("socket(AF_NETLINK, NETLINK_ROUTE) (routing and interfaces)", "socket", fd, err,
                                     args=[AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0])]}
    try:
        names = _links(fd)
    finally:
        os.close(fd)
    other = [n for n in names if n != "lo"]
    return {"attempts": [attempt("socket(AF_NETLINK, NETLINK_ROUTE) and an RTM_GETLINK dump", "socket", 0, None,
                                 through=bool(other), layer="namespace",
                                 args=[AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0],
                                 detail=f"interfaces seen: {', '.join(names)}")]}


def net_exotic_families(p):
    att = []
    for name, fam in p["families"].items():
        if not p["may_call"].get(name, False):
            # the filter lets it through and this kernel autoloads modules: calling it could load
            # a module into the host's kernel, so it is reported as reachable without calling it
            att.append(attempt(f"socket({name}) (module autoload net-pf-{fam})", "socket", 0, None, through=True,
                               args=[fam, socket.SOCK_DGRAM, 0], detail="not called: it would reach the kernel and "
                               "could load a module"))
            continue
        a = sysc(f"socket({name})", "socket", fam, socket.SOCK_DGRAM, 0)
        if a["errno"] in ("EAFNOSUPPORT", "ESOCKTNOSUPPORT", "EPROTONOSUPPORT", "EPROTOTYPE", "EOPNOTSUPP"):
            # the family lookup (and any module autoload) happened: harmless only without loadable modules
            a.update(through=p["modules"], layer=None if p["modules"] else "kernel",
                     detail="reached the family lookup; this kernel loads no modules" if not p["modules"] else
                     "reached the family lookup, where the kernel loads modules on demand")
        att.append(a)
    return {"attempts": att}


def net_ip_protocols(p):
    # IPv4/IPv6 sockets of protocols and types beyond TCP, UDP and ICMP.  Each may make the
    # kernel load a module (net-pf-N-proto-P-type-T): called only where the filter denies it or
    # this kernel loads no modules (the host computed may_call_proto); any fd is closed at once.
    att = []
    for name, (fam, typ, proto) in p["ip_protocols"].items():
        kind = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 5: "SOCK_SEQPACKET", 6: "SOCK_DCCP", 10: "SOCK_PACKET"}.get(typ, typ)
        what = f"socket({'AF_INET6' if fam == socket.AF_INET6 else 'AF_INET'}, {kind}, {proto}) ({name})"
        if not p["may_call_proto"].get(name, False):
            att.append(attempt(what, "socket", 0, None, through=True, args=[fam, typ, proto],
                               detail="not called: the filter lets it through and this kernel loads modules on demand"))
            continue
        a = sysc(what, "socket", fam, typ, proto)
        if a["errno"] in ("EPROTONOSUPPORT", "ESOCKTNOSUPPORT"):
            a.update(layer="kernel", detail="no such protocol in this kernel")  # the host judge names the filter
        att.append(a)
    fam, typ, proto = p["ip_protocols"]["MPTCP"]
    if p["may_call_proto"].get("socketpair", False):
        pair = (ctypes.c_int * 2)(-1, -1)
        a = sysc(f"socketpair(AF_INET, SOCK_STREAM, {proto}) (makes an MPTCP socket before it fails)", "socketpair",
                 fam, typ, proto, pair)
        if a["ret"] == 0:  # the kernel writes the fd numbers before it fails: only a success made them
            for fd in pair:
                os.close(fd)
        if a["errno"] == "EOPNOTSUPP":
            a.update(through=False, layer="kernel", detail="EOPNOTSUPP: inet sockets have no pairs")
        att.append(a)
    return {"attempts": att}


PROBES = {
    "net-egress": net_egress, "net-host-loopback": net_host_loopback, "net-raw-socket": net_raw_socket,
    "net-packet-socket": net_packet_socket, "net-netlink": net_netlink, "net-exotic-families": net_exotic_families,
    "net-ip-protocols": net_ip_protocols,
}
