"""Host-side set-up of a sandbox's network from outside (bridge and user modes): checks at plan
time (:func:`check`) and, per run, :class:`Setup` (attach when PID 1 sends its namespaces,
detach when the run ends)."""

from __future__ import annotations

from ..errors import HostError


def check(plan) -> None:
    """Raise HostError when this host cannot give ``plan.mode``."""
    raise HostError(f"--network {plan.mode}: not available in this build of jailpy; use --network none "
                    f"(with --allow-host for egress)")


class Setup:
    def __init__(self, plan) -> None:
        self.plan = plan

    def attach(self, netns_fd: int, userns_fd: int):
        raise OSError("not available")

    def detach(self, attached) -> None:
        pass

    def close(self) -> None:
        pass
