"""jailpy's nftables table (``table inet jailpy``), made once per network namespace with the
``nft`` command (nft(8); the table changes only when a bridge is added, so no per-run cost).

The sandboxes' bridges are in the set ``bridges``.  Traffic from a bridge to this host's own
addresses (hook input) is dropped unless it answers a connection the host opened; traffic routed
between a bridge and any other interface (hook forward) is dropped both ways, whatever
``net.ipv4.ip_forward`` says (a docker host has it on).  Sandboxes on one bridge reach each other
at layer 2 (the default network's ports are isolated: bridge(8) ``isolated on``); egress goes
through jailpy's proxy, never through this host's routing."""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import HostError

TABLE = """\
table inet jailpy {
    set bridges { type ifname; }
    chain input {
        type filter hook input priority -10; policy accept;
        iifname @bridges ct state established,related accept
        iifname @bridges counter drop
    }
    chain forward {
        type filter hook forward priority -10; policy accept;
        iifname @bridges oifname != @bridges counter drop
        oifname @bridges iifname != @bridges counter drop
    }
}
"""


def _nft(script: str) -> None:
    exe = shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)
    if exe is None:
        raise HostError("--network bridge needs nftables (the nft command): apt-get install nftables")
    p = subprocess.run([exe, "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise HostError(f"nft: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else 'failed'}")


def ensure(bridge: str) -> None:
    """Make the table (when missing) and add ``bridge`` to its set.  Raises HostError."""
    exe = shutil.which("nft") or "/usr/sbin/nft"
    have = subprocess.run([exe, "list", "table", "inet", "jailpy"], capture_output=True, text=True, timeout=30) \
        if os.path.exists(exe) else None
    script = "" if have is not None and have.returncode == 0 else TABLE
    _nft(script + f'add element inet jailpy bridges {{ "{bridge}" }}\n')


def remove_bridge(bridge: str) -> None:
    """Take ``bridge`` out of the set (``jailpy network rm``); the table stays."""
    try:
        _nft(f'delete element inet jailpy bridges {{ "{bridge}" }}\n')
    except HostError:
        pass
