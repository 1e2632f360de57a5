"""Per-user-namespace kernel quotas: the ``user.max_*`` sysctls of the sandbox's user namespace
(user_namespaces(7); kernel/ucount.c; Documentation/admin-guide/sysctl/user.rst).

Why: the kernel counts inotify instances and watches, fanotify groups and marks and namespaces
per user *and per user namespace*, and charges every count at each level up to the initial
namespace (inc_ucount walks ``ns->ucounts`` to the top).  The level above the sandbox's user
namespace is its owner: jailpy's caller (root for a root-run jailpy).  Without a limit of its own
the sandbox can take all of the caller's share, e.g. every inotify instance root may have, while
it runs.  Each user namespace has its own ``/proc/sys/user/max_*``, checked at its level, so small
values there bound what the sandbox can take from the caller.  (Pending signals and POSIX
message queue bytes are counted the same way but bounded by rlimits: :mod:`jailpy.rlimits`.)

Host side: :func:`plan` turns the policy into ``(name, value)`` pairs for the sysctls this kernel
has; :func:`describe` for Result.protections.  Child side: :func:`apply`, called by the sandbox's
PID 1 in its fresh /proc (rootfs._per_run) before /proc/sys is made read-only: writing needs
CAP_SYS_RESOURCE in the namespace that owns the sysctl set (kernel/ucount.c set_permissions),
which PID 1 has until it drops its capabilities, and the program never has; the values apply to
the namespace PID 1 is in, whichever path made it (a fresh user namespace per run, or one shared
by the runs of a Sandbox with ``reuse_userns``: then each run writes the same values again).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .policy import Policy

USER_SYSCTLS = ("max_inotify_instances", "max_inotify_watches", "max_fanotify_groups", "max_fanotify_marks",
                "max_user_namespaces")
"""Policy fields that are, by the same name, sysctls in /proc/sys/user (user.rst)."""
HOST_DIR = "/proc/sys/user"


def plan(policy: "Policy") -> tuple[tuple[str, int], ...]:
    """Host side: ``(sysctl name, value)`` for each of USER_SYSCTLS this kernel has (it lists
    them in /proc/sys/user; the sandbox runs on the same kernel).  A kernel without one (no
    fanotify: CONFIG_FANOTIFY=n, or older than 5.13) has nothing to bound there: skipped.  With
    ``allow_nesting`` a ``max_user_namespaces`` of 0 (the default) becomes
    jailpy.nesting.NESTED_USER_NAMESPACES: the nesting the policy allows needs user namespaces."""
    out = []
    for name in USER_SYSCTLS:
        if os.path.exists(os.path.join(HOST_DIR, name)):
            value = int(getattr(policy, name))
            if name == "max_user_namespaces" and value == 0 and policy.allow_nesting:
                from .nesting import NESTED_USER_NAMESPACES

                value = NESTED_USER_NAMESPACES  # 0 would refuse every nested sandbox the policy allows
            out.append((name, value))
    return tuple(out)


def apply(proc: str, settings: tuple[tuple[str, int], ...] | list) -> None:
    """CHILD SIDE, in the sandbox's PID 1 with its capabilities still held: write each value to
    ``proc``/sys/user/NAME (``proc``: where the sandbox's own proc is mounted) and read it back.
    Raises OSError naming the sysctl when the kernel refuses or keeps another value."""
    for name, value in settings:
        path = f"{proc}/sys/user/{name}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                os.write(fd, b"%d\n" % value)
                got = os.pread(fd, 32, 0).strip()
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(e.errno, f"set user.{name} = {value} in the sandbox's user namespace: {e.strerror}") \
                from None
        if got != b"%d" % value:
            raise OSError(0, f"set user.{name} = {value} in the sandbox's user namespace: the kernel kept "
                             f"{got.decode(errors='replace')}")


def describe(settings: tuple[tuple[str, int], ...] | list, pty_max: int) -> dict:
    """For Result.protections["quotas"]: ``{"user.max_inotify_instances": n, ...,
    "devpts.max": pty_max}``."""
    out: dict = {f"user.{name}": value for name, value in settings}
    out["devpts.max"] = pty_max
    return out


__all__ = ["plan", "apply", "describe", "USER_SYSCTLS"]
