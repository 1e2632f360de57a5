"""``jailpy network``: named networks for ``--network bridge:NAME`` (no kernel logic here).

``jailpy network create NAME [--subnet CIDR]``   record a network; its bridge is made at first use
``jailpy network ls [--json]``                   the networks, their subnets and sandboxes
``jailpy network rm NAME``                       remove one (its bridge too) when no sandbox uses it
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

network_app = typer.Typer(
    name="network",
    help="Named networks: sandboxes on one (--network bridge:NAME) reach each other by address and --hostname.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@network_app.command("create", help="Create a named network (root). Example: jailpy network create ci --subnet "
                     "10.214.7.0/24, then jailpy exec --network bridge:ci --hostname db -- ...")
def create(
    name: Annotated[str, typer.Argument(help="Up to 11 of a-z 0-9 -.", show_default=False)],
    subnet: Annotated[Optional[str], typer.Option(metavar="CIDR",
        help="Its IPv4 subnet, /16 to /29 (default: the first free 10.214.N.0/24). It may not overlap another "
             "network of jailpy's or a route of this machine.")] = None,
) -> None:
    import os

    from .errors import HostError
    from .net import leases

    if os.geteuid() != 0:
        raise HostError("jailpy network create needs root (bridges live in the machine's network namespace); "
                        "rootless sandboxes can publish ports (--publish) and reach hosts by name (--allow-host)")
    rec = leases.create(name, subnet)
    print(f"network {rec['name']}: {rec['subnet']} (bridge {rec['bridge']})")


@network_app.command("ls", help="List the named networks and how many sandboxes are on each.")
def ls(json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    from .net import leases

    rows = []
    for rec in leases.networks():
        with leases.locked(rec["name"]):
            live = leases.live_leases(rec["name"])
        leases.sweep(rec["name"], _sweeper(rec))
        rows.append({"name": rec["name"], "subnet": rec["subnet"], "bridge": rec["bridge"], "sandboxes": len(live),
                     "hosts": sorted(f"{v['hostname']}={a}" for a, v in live.items())})
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['name']:<12} {r['subnet']:<18} {r['bridge']:<15} {r['sandboxes']} sandbox(es)"
              + (f": {' '.join(r['hosts'])}" if r["hosts"] else ""))


def _sweeper(rec: dict):
    """Deletes a stale lease's veth, if it is still there (``ip link del``; no pyroute2 import here)."""
    import subprocess

    def sweep(lease: dict) -> None:
        if lease.get("veth"):
            subprocess.run(["ip", "link", "del", lease["veth"]], capture_output=True, timeout=10)
    return sweep


@network_app.command("rm", help="Remove a named network and its bridge (refused while a sandbox is on it).")
def rm(name: Annotated[str, typer.Argument(show_default=False)]) -> None:
    import subprocess

    from .net import leases, nft

    rec = leases.get(name, create_default=False)
    leases.sweep(name, _sweeper(rec))
    leases.remove(name)
    subprocess.run(["ip", "link", "del", rec["bridge"]], capture_output=True, timeout=10)
    nft.remove_bridge(rec["bridge"])
    print(f"removed network {name}")
