"""``jailpy network``: named networks for ``--network bridge:NAME`` (no kernel logic here).

``jailpy network create NAME [--subnet CIDR]``   record a network; its bridge is made at first use
                                                 (rootless: start its pod, jailpy.net.pod)
``jailpy network ls [--json]``                   the networks, their subnets and sandboxes
``jailpy network rm NAME``                       remove one (its bridge, or its pod) when no sandbox uses it
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


@network_app.command("create", help="Create a named network. As root its bridge is in this machine's network "
                     "namespace; rootless it lives in a pod of yours (a user and network namespace kept by a small "
                     "process until jailpy network rm; a reboot ends it). Example: jailpy network create ci "
                     "--subnet 10.214.7.0/24, then jailpy exec --network bridge:ci --hostname db -- ...")
def create(
    name: Annotated[str, typer.Argument(help="Up to 11 of a-z 0-9 -.", show_default=False)],
    subnet: Annotated[Optional[str], typer.Option(metavar="CIDR",
        help="Its IPv4 subnet, /16 to /29 (default: the first free 10.214.N.0/24). It may not overlap another "
             "network of jailpy's or a route of this machine.")] = None,
) -> None:
    import os

    from .net import leases

    if os.geteuid() != 0:
        from .net import pod

        if name == "default":
            from .errors import PolicyError

            raise PolicyError("network name: 'default' is the root bridge's (--network bridge); pick another name")
        rec = leases.create(name, subnet)
        try:
            held = pod.start(rec)
        except BaseException:
            leases.remove(name)
            raise
        rec = leases.update(name, pod=held)
        print(f"network {rec['name']}: {rec['subnet']} (bridge {rec['bridge']} in a pod of uid {os.getuid()}, "
              f"held by pid {held['pid']} until jailpy network rm {name} or a reboot)")
        return
    rec = leases.create(name, subnet)
    print(f"network {rec['name']}: {rec['subnet']} (bridge {rec['bridge']})")


@network_app.command("ls", help="List the named networks and how many sandboxes are on each.")
def ls(json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    import os

    from .net import leases
    from .net.bridge import sweeper

    rows = []
    for rec in leases.networks():
        leases.sweep(rec["name"], sweeper(rec))
        with leases.locked(rec["name"]):
            live = leases.live_leases(rec["name"])
        row = {"name": rec["name"], "subnet": rec["subnet"], "bridge": rec["bridge"], "sandboxes": len(live),
               "hosts": sorted(f"{v['hostname']}={a}" for a, v in live.items())}
        if os.geteuid() != 0:  # a pod (a record without one: its network create was interrupted)
            from .net import pod

            held = rec.get("pod") or {}
            row["pod"] = {"pid": held.get("pid"), "running": pod.alive(held)}
        rows.append(row)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = "" if "pod" not in r else (f"  pod {r['pod']['pid']}" if r["pod"]["running"] else "  pod DOWN (rm it)")
        print(f"{r['name']:<12} {r['subnet']:<18} {r['bridge']:<15} {r['sandboxes']} sandbox(es)"
              + (f": {' '.join(r['hosts'])}" if r["hosts"] else "") + state)


@network_app.command("rm", help="Remove a named network and its bridge or pod (refused while a sandbox is on it).")
def rm(name: Annotated[str, typer.Argument(show_default=False)]) -> None:
    import os

    from .net import leases, nft
    from .net.bridge import sweeper
    from .net.rtnl import Rtnl

    rec = leases.get(name, create_default=False)
    leases.sweep(name, sweeper(rec))
    if os.geteuid() != 0:
        from .net import pod

        leases.remove(name, before=lambda: pod.stop(name, rec.get("pod")))
    else:
        leases.remove(name)
        with Rtnl() as rt:
            rt.delete_name(rec["bridge"])
        nft.remove_bridge(rec["bridge"])
    print(f"removed network {name}")
