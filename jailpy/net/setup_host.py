"""Host-side set-up of a sandbox's network from outside, for the modes that need one: checks
when the Sandbox is planned (:func:`check`), then per run :class:`Setup` (``attach`` when PID 1
sends its namespaces, ``detach`` when the run ends)."""

from __future__ import annotations

import os

from ..errors import HostError


def check(plan) -> None:
    """Raise HostError (PolicyError for an unknown network) when this host cannot give ``plan.mode``."""
    if plan.mode == "bridge":
        if plan.network is not None:
            from . import leases

            leases.get(plan.network)  # rootless: its pod is reached when the Sandbox's service starts
        elif os.geteuid() != 0:
            raise HostError("--network bridge (the default network) needs root; rootless, make a network of your "
                            "own: jailpy network create NAME, then --network bridge:NAME (or --network user, or "
                            "--network none with --allow-host for egress by name)")
    elif plan.mode == "user":
        from . import user

        user.check(plan)


class Setup:
    """The mode's host side for one Sandbox."""

    def __init__(self, plan) -> None:
        self.plan = plan
        self.pod = None
        if plan.mode == "bridge":
            from .bridge import Bridge

            if os.geteuid() != 0:  # a rootless network: its pod (jailpy.net.pod)
                from .pod import Pod

                self.pod = Pod(plan.network)
            try:
                self.impl = Bridge(plan.network or "default", plan.hostname, self.pod)
            except BaseException:
                if self.pod is not None:
                    self.pod.close()
                raise
        else:
            from .user import UserNet

            self.impl = UserNet(plan)

    def userns_parent(self):
        """The user namespace the sandboxes' own must nest in (a rootless network's pod), else None."""
        return self.pod

    def binds(self) -> list[tuple[str, str]]:
        """Host files the sandbox sees read-only, ``(source, destination)``."""
        return self.impl.binds() if hasattr(self.impl, "binds") else []

    def attach(self, netns_fd: int, userns_fd: int) -> dict:
        return self.impl.attach(netns_fd) if self.plan.mode == "bridge" else self.impl.attach(netns_fd, userns_fd)

    def detach(self, attached: dict) -> None:
        self.impl.detach(attached)

    def close(self) -> None:
        self.impl.close()
