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

import os
from typing import TYPE_CHECKING, NamedTuple

from ..errors import HostError, PolicyError
from . import landlock

if TYPE_CHECKING:
    from ..mounts import MountPlan
    from ..policy import Policy

APPARMOR_ATTR = ("/proc/thread-self/attr/apparmor", "/proc/thread-self/attr")
"""Where a thread's AppArmor attributes are: the LSM's own directory (Linux 5.8), else the shared one."""
SELINUX_ATTR = ("/proc/thread-self/attr/selinux", "/proc/thread-self/attr")


class Plan(NamedTuple):
    """What PID 1 applies (plain data: pickled to the fork server).  ``landlock``: None when off or
    unavailable; ``apparmor``: the profile the program moves into at its execve; ``selinux``: its
    SELinux context (without a level: PID 1 adds two random categories); None: none."""

    landlock: landlock.Plan | None = None
    apparmor: str | None = None
    selinux: str | None = None


class Prepared(NamedTuple):
    """The host side's result: ``plan`` for the sandbox side, and what Result.protections says
    (``landlock``; ``lsm``: the exec label, None without one)."""

    plan: Plan
    landlock: dict
    lsm: dict | None = None


def prepare(policy: "Policy", mounts: "MountPlan", tcp: landlock.TcpRules | None = None) -> Prepared:
    """Host side: check what the policy asks for against this host and plan it.  ``tcp``: the
    network policy's TCP rules (jailpy.net, when the network is not none), None for network
    none.  Raises HostError (fail closed) naming what is missing and the fix, PolicyError for a
    bad value."""
    if policy.allow_nesting and policy.landlock != "off":
        # a Landlock domain refuses every mount and pivot_root (landlock(7)), which a nested sandbox must make
        if policy.landlock == "on":
            raise PolicyError("--landlock on with --allow-nesting: a Landlock domain refuses the mounts a nested "
                              "sandbox makes (landlock(7)); use --landlock auto (then off) or off")
        ll_plan, ll_desc = None, {"applied": False, "mode": policy.landlock,
                                  "reason": "--allow-nesting: a Landlock domain would refuse the mounts and "
                                            "pivot_root of a nested sandbox"}
    else:
        try:
            ll_plan, ll_desc = landlock.prepare(policy.landlock, mounts, tcp)
        except landlock.Unavailable as e:
            raise HostError(str(e)) from None
    profile = context = lsm_desc = None
    if policy.apparmor != "off":
        from . import apparmor

        profile, lsm_desc = apparmor.prepare(policy.apparmor, policy, mounts)
    if policy.selinux_label != "off":
        from . import selinux

        if profile is not None:
            raise HostError("--apparmor and --selinux-label: a host runs one of them; give one")
        context, lsm_desc = selinux.prepare(policy.selinux_label)
    return Prepared(Plan(ll_plan, profile, context), ll_desc, lsm_desc)


def _apparmor_label() -> str | None:
    for d in APPARMOR_ATTR:
        try:
            with open(os.path.join(d, "current")) as f:
                return f.read().strip().replace("\0", "")
        except OSError:
            continue
    return None


def _attr(dirs: tuple[str, ...]) -> str:
    """The thread's attr/exec for an LSM: in its own directory (Linux 5.8+), else the shared one."""
    return os.path.join(next((d for d in dirs if os.path.exists(os.path.join(d, "exec"))), dirs[-1]), "exec")


def apply(plan: Plan | None) -> str | None:
    """Sandbox side, in PID 1 after pivot_root and no_new_privs, before seccomp: Landlock (the
    process restricts itself; inherited by the program), then the exec label the program gets
    at its execve, written to the thread's attr/exec (opened before Landlock, which would refuse
    it under /proc): AppArmor ``exec PROFILE`` from an unconfined PID 1, else ``stack PROFILE``;
    SELinux the context, with two random categories when it has no level.  Returns the label the
    program will run under (None without one).  Raises OSError naming what failed: the program
    is never started without what was asked for."""
    if plan is None:
        return None
    attr_fd, request, label = -1, b"", None
    if plan.selinux is not None:
        from .selinux import with_categories

        label = with_categories(plan.selinux)
        request = label.encode()
        attr_fd = os.open(_attr(SELINUX_ATTR), os.O_WRONLY | os.O_CLOEXEC)
    if plan.apparmor is not None:
        current = _apparmor_label()
        if current in (None, "unconfined"):
            request, label = f"exec {plan.apparmor}".encode(), plan.apparmor
        else:  # jailpy runs confined (the launcher's profile): only a stack keeps within it under no_new_privs
            request, label = f"stack {plan.apparmor}".encode(), f"{current.rsplit(' (', 1)[0]}//&{plan.apparmor}"
        attr_fd = os.open(_attr(APPARMOR_ATTR), os.O_WRONLY | os.O_CLOEXEC)
    try:
        if plan.landlock is not None:
            landlock.apply(plan.landlock)
        if attr_fd >= 0:
            try:
                os.write(attr_fd, request)
            except OSError as e:
                if plan.selinux is not None:
                    raise OSError(e.errno, f"SELinux context {label}: {e.strerror}") from None
                why = "not loaded" if e.errno == 2 else e.strerror
                raise OSError(e.errno, f"AppArmor profile {plan.apparmor}: {why} ({request.decode()})") from None
    finally:
        if attr_fd >= 0:
            os.close(attr_fd)
    return label
