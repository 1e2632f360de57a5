"""Host-side set-up of a sandbox's network from outside, for the modes that need one: checks
when the Sandbox is planned (:func:`check`), then per run :class:`Setup` (``attach`` when PID 1
sends its namespaces, ``detach`` when the run ends)."""

from __future__ import annotations

import importlib.util
import os

from ..errors import HostError


def check(plan) -> None:
    """Raise HostError (PolicyError for an unknown network) when this host cannot give ``plan.mode``."""
    if plan.mode == "bridge":
        if os.geteuid() != 0:
            raise HostError("--network bridge needs root; rootless, use --network user (its own network through "
                            "pasta or slirp4netns), or --network none with --allow-host for egress by name")
        if importlib.util.find_spec("pyroute2") is None:
            raise HostError("--network bridge needs pyroute2: pip install 'jailpy[net]'")
        if plan.network is not None:
            from . import leases

            leases.get(plan.network)
    elif plan.mode == "user":
        from . import user

        user.check(plan)


class Setup:
    """The mode's host side for one Sandbox."""

    def __init__(self, plan) -> None:
        self.plan = plan
        if plan.mode == "bridge":
            from .bridge import Bridge

            self.impl = Bridge(plan.network or "default", plan.hostname)
        else:
            from .user import UserNet

            self.impl = UserNet(plan)

    def binds(self) -> list[tuple[str, str]]:
        """Host files the sandbox sees read-only, ``(source, destination)``."""
        return self.impl.binds() if hasattr(self.impl, "binds") else []

    def attach(self, netns_fd: int, userns_fd: int) -> dict:
        return self.impl.attach(netns_fd) if self.plan.mode == "bridge" else self.impl.attach(netns_fd, userns_fd)

    def detach(self, attached: dict) -> None:
        self.impl.detach(attached)

    def close(self) -> None:
        self.impl.close()
