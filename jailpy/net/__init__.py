"""The network facility: what the sandbox's network namespace holds and what leaves it.

Modes (policy ``network``, ``--network``):

* ``none`` (default): a new network namespace with only loopback.
* ``bridge`` / ``bridge:NAME`` (root, or a user-owned named network): a veth pair per sandbox on
  a jailpy bridge (:mod:`jailpy.net.bridge`), an address leased from a file that survives a
  SIGKILLed jailpy (:mod:`jailpy.net.leases`), nftables isolation (:mod:`jailpy.net.nft`);
  rootless, the bridge is in the network's pod (:mod:`jailpy.net.pod`).
* ``user`` (rootless): user-mode networking by pasta or slirp4netns (:mod:`jailpy.net.user`).

Egress (``--allow-host``, ``--allow-net``) works the same in every mode: a stub resolver and
transparent listeners in the sandbox's PID 1 (:mod:`jailpy.net.stub`) hand each connection to a
host-side proxy (:mod:`jailpy.net.proxy`, run by :mod:`jailpy.net.host`), which checks it against
the rules (:mod:`jailpy.net.rules`), resolves the name itself and dials the address it checked.

This module is imported by the sandbox's side too: it holds only the plan (plain picklable
data) and re-exports the sandbox-side functions.  Everything else is imported when a network is
asked for.  Host side: :func:`prepare`.  Sandbox side: :func:`jailpy.net.inside.setup` and
:func:`jailpy.net.inside.start`.
"""

from __future__ import annotations

import os

from .inside import loopback_up  # noqa: F401 - child.py's name for it

HTTP_PROXY_PORT = 3128
"""The sandbox's HTTP proxy port on 127.0.0.1 (HTTP_PROXY and HTTPS_PROXY point there)."""


class Inside:
    """What the sandbox's PID 1 does for the network (picklable: it travels to the fork server).

    ``host_setup``: send the sandbox's network and user namespaces to the supervisor, which sets
    up the veth or the user-mode stack, and wait for its answer before the program starts.
    ``stub``: run the stub resolver and the transparent listeners on ``ports`` (and the HTTP
    proxy listener) for the names ``hosts`` (normal form or ``*.suffix``) when ``proxied``, and
    serve ``--publish`` (connect inside for the supervisor's relay).  ``local_routes``: the IPv4
    destinations routed to loopback so connections to them reach the listeners (``0.0.0.0/0``
    without another route out; the fake range and --allow-net's networks beside a real interface).
    (A plain class: a dataclass would cost every ``jailpy exec`` a millisecond to import.)"""

    def __init__(self, mode: str = "none", host_setup: bool = False, stub: bool = False, hosts: tuple = (),
                 ports: tuple = (), local_routes: tuple = (), proxied: bool = False) -> None:
        self.mode, self.host_setup, self.stub, self.proxied = mode, host_setup, stub, proxied
        self.hosts, self.ports, self.local_routes = tuple(hosts), tuple(ports), tuple(local_routes)


class NetPlan:
    """The host side's plan for one Sandbox (:func:`prepare`): ``mode``, the named ``network``
    (``bridge:NAME``) or None, the parsed rules (``hosts``, ``nets``, ``publish``), the proxy's
    ``resolver`` (``(ip, port)``, None: the host's), what PID 1 does (``inside``) and the
    Result's ``description``."""

    def __init__(self, mode: str = "none", network: str | None = None, hosts: tuple = (), nets: tuple = (),
                 publish: tuple = (), resolver: tuple[str, int] | None = None) -> None:
        self.mode, self.network = mode, network
        self.hosts, self.nets, self.publish, self.resolver = hosts, nets, publish, resolver
        self.inside = Inside()
        self.description: dict | str = "none (loopback only)"
        self.hostname = "jailpy"

    @property
    def jailpy_threads(self) -> int:
        """Threads of jailpy's in the sandbox for this plan (the stub's): each counts in pids.max."""
        return 1 if self.inside.stub else 0

    @property
    def proxied(self) -> bool:
        """Egress through jailpy's proxy (some --allow-host or --allow-net)."""
        return bool(self.hosts or self.nets)

    def environment(self) -> dict[str, str]:
        """Variables for clients that use a proxy only when told (the transparent path serves the others)."""
        if not self.proxied:
            return {}
        url = f"http://127.0.0.1:{HTTP_PROXY_PORT}"
        return {"http_proxy": url, "https_proxy": url, "HTTP_PROXY": url, "HTTPS_PROXY": url,
                "no_proxy": "localhost,127.0.0.1,::1", "NO_PROXY": "localhost,127.0.0.1,::1"}


def prepare(policy) -> NetPlan:
    """Host side: the plan for ``policy``'s network fields (validated already).  Checks the host
    for what the mode needs (root or a user-owned network for bridge, pasta or slirp4netns for
    user).  Raises PolicyError (bad rules) or HostError (this host cannot give it: the message
    names what is missing and the fix)."""
    if policy.network == "none" and not (policy.allow_host or policy.allow_net or policy.publish):
        return NetPlan()  # loopback only: nothing to import or check
    from . import rules

    mode, _, name = policy.network.partition(":")
    hosts = tuple(rules.parse_host(h) for h in policy.allow_host)
    nets = tuple(rules.parse_net(n) for n in policy.allow_net)
    publish = tuple(rules.parse_publish(p) for p in policy.publish)
    resolver = None
    if policy.resolver is not None:
        resolver = rules.parse_resolver(policy.resolver)
    plan = NetPlan(mode, name or None, hosts, nets, publish, resolver)
    plan.hostname = policy.hostname
    if mode == "user" and plan.proxied:
        from ..errors import PolicyError

        raise PolicyError("allow-host/allow-net with --network user: the user-mode stack would be a second, open "
                          "way out; use --network none (or bridge) with the rules")
    ports = sorted({p for h in hosts for p in h.ports} | {n.port for n in nets if n.port is not None})
    if any(n.port is None for n in nets):
        from ..errors import PolicyError

        bad = next(n for n in nets if n.port is None)
        raise PolicyError(f"allow-net: {bad.net} needs a port (CIDR:PORT): jailpy's proxy takes connections port "
                          f"by port")
    if mode in ("bridge", "user"):
        from . import setup_host

        setup_host.check(plan)
    routes = ("0.0.0.0/0",) if mode == "none" else (str(rules.FAKE_NET),) + tuple(
        n.net for n in nets if ":" not in n.net)
    plan.inside = Inside(mode=mode, host_setup=mode != "none", stub=plan.proxied or bool(publish),
                         hosts=tuple(h.name for h in hosts), ports=tuple(ports),
                         local_routes=routes if plan.proxied else (), proxied=plan.proxied)
    plan.description = describe(plan)
    if plan.inside.stub:
        from . import stub  # noqa: F401 - here, so the sandbox's side (forked from this process) has it
    return plan


def service(plan: NetPlan):
    """The supervisor's network service for ``plan`` (:class:`jailpy.net.host.Service`)."""
    from .host import Service

    return Service(plan)


def describe(plan: NetPlan) -> dict | str:
    """``protections.network`` of the Result."""
    if plan.mode == "none" and not plan.proxied and not plan.publish:
        return "none (loopback only)"
    d: dict = {"mode": plan.mode + (f":{plan.network}" if plan.network else "")}
    if plan.mode == "bridge" and plan.network and os.geteuid() != 0:
        d["pod"] = ("the network's bridge is in a user and network namespace of the caller's (jailpy network "
                    "create); the sandbox's user namespace is made inside it and has no capability over it")
    if plan.proxied:
        d["egress"] = "jailpy's proxy (TCP only; names resolved and checked on the host)"
        d["allow_host"] = [f"{h.name}:{','.join(map(str, h.ports))}" for h in plan.hosts]
        d["allow_net"] = [n.net + (f":{n.port}" if n.port else "") for n in plan.nets]
    elif plan.mode == "user":
        d["egress"] = ("open: the user-mode stack (slirp4netns or pasta) connects out as the caller; "
                       "not to this machine's loopback or its own addresses")
    else:
        d["egress"] = "none"
    if plan.publish:
        d["publish"] = [str(p) for p in plan.publish]
    return d
