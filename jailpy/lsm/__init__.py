"""A second wall behind the namespaces and mounts: Linux security modules.

* :mod:`jailpy.lsm.landlock`: Landlock (landlock(7)), unprivileged, on by default where the kernel
  has it; rules derived from the mount plan.
* :mod:`jailpy.lsm.apparmor` and :mod:`jailpy.lsm.selinux`: an exec label for the program (an
  AppArmor profile, an SELinux type with per-sandbox MCS categories), asked for by the policy
  and installed by an administrator; imported only when asked for.

Each module has a host side (``prepare``: check the host, fail closed, make a plain picklable
plan) and a sandbox side (``apply``, in the sandbox's PID 1 after pivot_root, before seccomp:
jailpy.child.init).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import HostError
from . import landlock

if TYPE_CHECKING:
    from ..mounts import MountPlan
    from ..policy import Policy


@dataclass(frozen=True)
class Plan:
    """What PID 1 applies (plain data: pickled to the fork server).  ``landlock``: None when off or
    unavailable."""

    landlock: landlock.Plan | None = None


@dataclass(frozen=True)
class Prepared:
    """The host side's result: ``plan`` for the sandbox side, and what Result.protections says
    (``landlock``; ``lsm``: the exec label, None without one)."""

    plan: Plan
    landlock: dict
    lsm: dict | None = None


def prepare(policy: "Policy", mounts: "MountPlan", tcp: landlock.TcpRules | None = None) -> Prepared:
    """Host side: check what the policy asks for against this host and plan it.  ``tcp``: the
    network policy's TCP rules (jailpy.net, when the network is not none), None for network
    none.  Raises HostError (fail closed) naming what is missing and the fix."""
    try:
        ll_plan, ll_desc = landlock.prepare(policy.landlock, mounts, tcp)
    except landlock.Unavailable as e:
        raise HostError(str(e)) from None
    return Prepared(Plan(ll_plan), ll_desc)


def apply(plan: Plan | None) -> None:
    """Sandbox side, in PID 1 after pivot_root and no_new_privs, before seccomp: Landlock (the
    process restricts itself; inherited by the program).  Raises OSError."""
    if plan is None:
        return
    if plan.landlock is not None:
        landlock.apply(plan.landlock)
