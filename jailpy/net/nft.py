"""jailpy's nftables table (``table inet jailpy``), made once per network namespace with the
``nft`` command (nft(8); the table changes only when a bridge is added, so no per-run cost).

The sandboxes' bridges are in the set ``bridges``.  Traffic from a bridge to this host's own
addresses (hook input) is dropped unless it answers a connection the host opened; traffic routed
from a bridge to any other interface, another bridge included (hook forward), is dropped both ways, whatever
``net.ipv4.ip_forward`` says (a docker host has it on).  Sandboxes on one bridge reach each other
at layer 2 (the default network's ports are isolated: bridge(8) ``isolated on``); egress goes
through jailpy's proxy, never through this host's routing."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

from ..errors import HostError

TABLE = """\
table inet jailpy {
    set bridges { type ifname; }
    set same { type ifname . ifname; }
    chain input {
        type filter hook input priority -10; policy accept;
        iifname @bridges ct state established,related accept
        iifname @bridges counter drop
    }
    chain forward {
        type filter hook forward priority -10; policy accept;
        iifname @bridges iifname . oifname != @same counter drop
        oifname @bridges iifname . oifname != @same counter drop
    }
}
"""
"""``same`` holds ``BRIDGE . BRIDGE`` for each bridge: what is routed (or, with br_netfilter, bridged)
from a bridge may only leave by the same bridge.  (The first version dropped only what went
between a bridge and an interface *outside* ``bridges``, so with ``ip_forward`` on, as on a
docker host, a sandbox of one named network reached the sandboxes of every other.)"""

MIGRATE = """\
add set inet jailpy same { type ifname . ifname; }
flush chain inet jailpy forward
add rule inet jailpy forward iifname @bridges iifname . oifname != @same counter drop
add rule inet jailpy forward oifname @bridges iifname . oifname != @same counter drop
"""
"""The forward chain of TABLE, for a table made by an older jailpy (without the set ``same``)."""


def _nft(script: str) -> None:
    exe = shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)
    if exe is None:
        raise HostError("--network bridge needs nftables (the nft command): apt-get install nftables")
    p = subprocess.run([exe, "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise HostError(f"nft: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else 'failed'}")


NFNL_SUBSYS_NFTABLES, NFT_MSG_GETSETELEM, NFPROTO_INET = 10, 13, 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE = 1, 1, 1


def members(set_name: str = "bridges") -> set[str] | None:
    """The interface names in ``set bridges`` of ``table inet jailpy`` in this network namespace
    (or, with ``set_name`` ``same``, the first name of each pair),
    read with one nfnetlink request (NFT_MSG_GETSETELEM, linux/netfilter/nf_tables.h; needs
    CAP_NET_ADMIN); None when the table or set is missing or cannot be read.  (An exec of nft(8)
    costs 5-10 ms: a bridge's first run per process would pay two.)"""
    from .rtnl import Rtnl, attr, parse_attrs

    body = (struct.pack("BBH", NFPROTO_INET, 0, 0) + attr(NFTA_SET_ELEM_LIST_TABLE, b"jailpy\0")
            + attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0"))
    try:
        with Rtnl(protocol=12) as nl:  # NETLINK_NETFILTER
            msgs = nl.request(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETSETELEM, 0, body, "list set bridges", dump=True)
    except OSError:
        return None
    out = set()
    for msg in msgs:
        elements = parse_attrs(msg[4:]).get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
        i = 0
        while i + 4 <= len(elements):  # each NFTA_LIST_ELEM: {NFTA_SET_ELEM_KEY: {NFTA_DATA_VALUE: name}}
            n = struct.unpack_from("H", elements, i)[0]
            if n < 4:
                break
            key = parse_attrs(parse_attrs(elements[i + 4:i + n]).get(NFTA_SET_ELEM_KEY, b"")).get(NFTA_DATA_VALUE, b"")
            out.add(key[:16].split(b"\0", 1)[0].decode(errors="replace"))  # IFNAMSIZ: a pair's first name
            i += (n + 3) & ~3
    return out


def ensure(bridge: str) -> None:
    """Make the table (when missing) and add ``bridge`` to its set (nothing to do when it is there
    already: :func:`members`).  Raises HostError."""
    have_set, pairs = members(), members("same")
    if have_set is not None and bridge in have_set and pairs is not None and bridge in pairs:
        return
    exe = shutil.which("nft") or "/usr/sbin/nft"
    have = subprocess.run([exe, "list", "table", "inet", "jailpy"], capture_output=True, text=True, timeout=30) \
        if os.path.exists(exe) else None
    script = TABLE
    if have is not None and have.returncode == 0:
        script = "" if " same " in have.stdout else MIGRATE
        script += "".join(f'add element inet jailpy same {{ "{b}" . "{b}" }}\n' for b in sorted(have_set or ()))
    _nft(script + f'add element inet jailpy bridges {{ "{bridge}" }}\n'
         f'add element inet jailpy same {{ "{bridge}" . "{bridge}" }}\n')


def remove_bridge(bridge: str) -> None:
    """Take ``bridge`` out of the set (``jailpy network rm``); the table stays."""
    try:
        _nft(f'delete element inet jailpy bridges {{ "{bridge}" }}\n')
    except HostError:
        pass
    try:
        _nft(f'delete element inet jailpy same {{ "{bridge}" . "{bridge}" }}\n')
    except HostError:
        pass
