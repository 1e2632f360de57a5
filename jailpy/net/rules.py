"""Egress rules: parsing and checking ``--allow-host``, ``--allow-net``, ``--publish`` and the
addresses jailpy's proxy refuses.  Pure functions, no I/O; used by the policy's validation, the
host-side proxy (:mod:`jailpy.net.proxy`) and the sandbox-side stub (:mod:`jailpy.net.stub`).

Host names are compared in one normal form (:func:`normal_name`): lower case, no trailing dot,
IDN labels in their ASCII (punycode) form, only letters, digits, ``-`` and ``_``.  Anything that
parses as an IP address in any notation inet_aton(3) accepts (``2130706433``, ``0x7f.1``,
``017700000001``, ``127.1``) or as an IPv6 literal (with or without brackets, IPv4-mapped) is
an address, never a name: it is allowed only by ``--allow-net``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
DEFAULT_PORTS = (80, 443)
"""Ports of an ``--allow-host NAME`` given without one."""
FAKE_NET = ipaddress.ip_network("198.18.0.0/15")
"""Where the sandbox's stub DNS takes the addresses it answers allowed names with (RFC 2544's
benchmarking range: never a real host)."""

# what the proxy never dials unless --allow-net names it: this machine, its LANs, link-local
# (cloud metadata at 169.254.169.254 and fd00:ec2::254 included), multicast and reserved ranges
REFUSED_NETS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "100::/64", "2001:db8::/32"))


class RuleError(ValueError):
    """A rule that cannot be parsed; the message says what was expected."""


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an address when it is one in any notation a resolver or inet_aton(3) would
    take: dotted quad, fewer parts (``127.1``), decimal (``2130706433``), octal (``0177.0.0.1``),
    hex (``0x7f000001``), or IPv6 (``[::1]``, ``::ffff:127.0.0.1``, with a zone ``%eth0``).
    IPv4-mapped and -compatible IPv6 addresses come back as IPv4.  None: not an address."""
    t = text.strip().lower()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    t = t.rstrip(".") if t.count(":") == 0 else t
    if ":" in t:
        try:
            a = ipaddress.IPv6Address(t.partition("%")[0])
        except ValueError:
            return None
        return unmap(a)
    parts = t.split(".")
    if not 1 <= len(parts) <= 4 or not all(parts):
        return None
    nums = []
    for p in parts:
        try:
            if p.startswith("0x"):
                nums.append(int(p[2:], 16) if p[2:] else 0)
            elif len(p) > 1 and p.startswith("0"):
                nums.append(int(p, 8))
            else:
                if not p.isdigit():
                    return None
                nums.append(int(p))
        except ValueError:
            return None
    value = 0
    for i, n in enumerate(nums[:-1]):
        if n > 255:
            return None
        value |= n << (24 - 8 * i)
    last_bits = 32 - 8 * (len(nums) - 1)
    if nums[-1] >= 1 << last_bits:
        return None
    return ipaddress.IPv4Address(value | nums[-1])


def unmap(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address inside an IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``),
    NAT64 (``64:ff9b::/96``), 6to4 (``2002::/16``) or Teredo IPv6 address; else ``a``."""
    if isinstance(a, ipaddress.IPv4Address):
        return a
    if a.ipv4_mapped is not None:
        return a.ipv4_mapped
    if a.sixtofour is not None:
        return a.sixtofour
    if a.teredo is not None:
        return a.teredo[1]
    n = int(a)
    if n >> 32 == 0 and n > 1:  # ::a.b.c.d (deprecated IPv4-compatible)
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if n >> 32 == 0x0064FF9B << 64:  # 64:ff9b::a.b.c.d
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    return a


def normal_name(text: str) -> str:
    """A host name in normal form (see the module docstring).  Raises RuleError for an empty name,
    an address, a bracketed or otherwise malformed name, or one longer than 253 characters."""
    t = text.strip()
    if not t or any(c in t for c in "[]/@:%\\ \t\r\n\0"):
        raise RuleError(f"not a host name: {text!r}")
    t = t.rstrip(".") if t.endswith(".") and not t.endswith("..") else t
    try:
        t = t.encode("idna").decode("ascii") if not t.isascii() else t
    except UnicodeError:
        raise RuleError(f"not a host name (bad international name): {text!r}") from None
    t = t.lower()
    if parse_ip(t) is not None:
        raise RuleError(f"{text!r} is an address, not a host name (use --allow-net for addresses)")
    labels = t.split(".")
    if len(t) > 253 or not all(_LABEL.match(x) for x in labels):
        raise RuleError(f"not a host name: {text!r}")
    if labels[-1].isdigit():
        raise RuleError(f"not a host name (all-numeric last label): {text!r}")
    return t


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise RuleError(f"port must be 1-65535, got {text!r} in {spec!r}")
    return int(text)


@dataclass(frozen=True)
class HostRule:
    """``--allow-host NAME[:PORT]``: ``name`` in normal form, or ``*.suffix`` (any name below
    suffix, not suffix itself); ``ports`` (DEFAULT_PORTS when none was given)."""

    name: str
    ports: tuple[int, ...]

    def matches(self, name: str, port: int) -> bool:
        """Whether normal-form ``name`` and ``port`` are allowed by this rule."""
        if port not in self.ports:
            return False
        if self.name.startswith("*."):
            return name.endswith(self.name[1:])
        return name == self.name


def parse_host(spec: str) -> HostRule:
    """Parse ``NAME[:PORT]`` or ``*.SUFFIX[:PORT]``.  Raises RuleError."""
    if not isinstance(spec, str):
        raise RuleError(f"expected NAME[:PORT], got {spec!r}")
    name, sep, port = spec.rpartition(":") if ":" in spec else (spec, "", "")
    ports = (_port(port, spec),) if sep else DEFAULT_PORTS
    wild = name.startswith("*.")
    base = normal_name(name[2:] if wild else name)
    if wild and "." not in base:
        raise RuleError(f"a wildcard needs at least two labels after '*.' (like *.example.org), got {spec!r}")
    return HostRule(("*." if wild else "") + base, ports)


@dataclass(frozen=True)
class NetRule:
    """``--allow-net CIDR[:PORT]``: a network (``str``, for pickling) and a port (None: any)."""

    net: str
    port: int | None

    def matches(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        return unmap(addr) in ipaddress.ip_network(self.net) and self.port in (None, port)


def parse_net(spec: str) -> NetRule:
    """Parse ``CIDR[:PORT]`` (``10.0.0.0/8:5432``, ``192.0.2.7``, ``[2001:db8::/32]:443``).  Raises RuleError."""
    if not isinstance(spec, str):
        raise RuleError(f"expected CIDR[:PORT], got {spec!r}")
    s = spec.strip()
    port = None
    if s.startswith("["):
        head, _, tail = s[1:].partition("]")
        if tail:
            if not tail.startswith(":"):
                raise RuleError(f"expected [IPV6/LEN]:PORT, got {spec!r}")
            port = _port(tail[1:], spec)
        s = head
    elif s.count(":") == 1:
        s, _, p = s.partition(":")
        port = _port(p, spec)
    try:
        net = ipaddress.ip_network(s, strict=False)
    except ValueError:
        raise RuleError(f"not a network like 192.0.2.0/24 or 2001:db8::/32: {spec!r}") from None
    if "/" in s and net.network_address != ipaddress.ip_network(s, strict=False).network_address:
        raise RuleError(f"bad network {spec!r}")
    return NetRule(str(net), port)


def refused(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why the proxy refuses to dial ``addr`` unless ``--allow-net`` names it: ``"loopback"``,
    ``"private"``... or None when it is a public address."""
    a = unmap(addr)
    for n in REFUSED_NETS:
        if a.version == n.version and a in n:
            if a.is_loopback:
                return "loopback"
            if a.is_link_local:
                return "link-local (cloud metadata)"
            if a.is_multicast:
                return "multicast"
            return "private or reserved"
    return None


@dataclass(frozen=True)
class Publish:
    """``--publish [HOSTIP:]HOSTPORT:PORT[/tcp|udp]``."""

    host_ip: str
    host_port: int
    port: int
    proto: str

    def __str__(self) -> str:
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{ip}:{self.host_port}:{self.port}/{self.proto}"


def parse_publish(spec: str) -> Publish:
    """Parse ``[HOSTIP:]HOSTPORT:PORT[/tcp|udp]``; HOSTIP defaults to 127.0.0.1.  Raises RuleError."""
    if not isinstance(spec, str):
        raise RuleError(f"expected [HOSTIP:]HOSTPORT:PORT[/tcp|udp], got {spec!r}")
    s, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise RuleError(f"protocol must be tcp or udp, got {proto!r} in {spec!r}")
    host_ip = "127.0.0.1"
    if s.startswith("["):
        host_ip, _, s = s[1:].partition("]")
        s = s.removeprefix(":")
    parts = s.split(":")
    if len(parts) == 3 and not host_ip.count(":"):
        host_ip, parts = parts[0], parts[1:]
    if len(parts) != 2:
        raise RuleError(f"expected [HOSTIP:]HOSTPORT:PORT[/tcp|udp], got {spec!r}")
    try:
        ip = ipaddress.ip_address(host_ip)
    except ValueError:
        raise RuleError(f"not an IP address: {host_ip!r} in {spec!r}") from None
    return Publish(str(ip), _port(parts[0], spec), _port(parts[1], spec), proto)


def parse_resolver(spec: str) -> tuple[str, int]:
    """``IP[:PORT]`` or ``[IPV6]:PORT`` of the DNS server jailpy's proxy asks (port 53 by default).
    Raises RuleError."""
    s, port = spec.strip(), 53
    if s.startswith("["):
        s, _, tail = s[1:].partition("]")
        if tail:
            port = _port(tail.removeprefix(":"), spec)
    elif s.count(":") == 1:
        s, _, p = s.partition(":")
        port = _port(p, spec)
    try:
        return str(ipaddress.ip_address(s)), port
    except ValueError:
        raise RuleError(f"expected IP[:PORT] of a DNS server, got {spec!r}") from None
