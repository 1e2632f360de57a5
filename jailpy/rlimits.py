"""Per-process resource limits (setrlimit(2), getrlimit(2); prlimit(1)) for the sandbox.

Host side: :func:`plan` checks the values and returns ``(resource, soft, hard)`` triples;
:func:`describe` turns them into Result.protections["rlimits"].  Child side: :func:`apply`, called
by the sandbox's PID 1 on itself just before it starts the program (rlimits are inherited across
fork and execve).

A hard limit can only be raised with CAP_SYS_RESOURCE in the *initial* user namespace
(setrlimit(2), user_namespaces(7)), which PID 1 never has, even when root started jailpy: so a
value above this process's hard limit is refused here with HostError rather than failing later
inside the sandbox.
"""

from __future__ import annotations

import errno
import math
import resource

from .errors import HostError, PolicyError

MIN_NOFILE = 4
"""stdin, stdout, stderr and one more: fewer open files than this and no program can work."""
MIN_STACK = 64 << 10
"""Bytes; below this the dynamic loader itself may fault."""

_NAMES = {
    resource.RLIMIT_CORE: "core", resource.RLIMIT_CPU: "cpu", resource.RLIMIT_FSIZE: "fsize",
    resource.RLIMIT_NOFILE: "nofile", resource.RLIMIT_STACK: "stack",
    resource.RLIMIT_SIGPENDING: "sigpending", resource.RLIMIT_MSGQUEUE: "msgqueue",
}
QUOTAS = (resource.RLIMIT_SIGPENDING, resource.RLIMIT_MSGQUEUE)
"""Limits on per-user counts (kernel/ucount.c) that the sandbox's use also charges to jailpy's
caller, through the user namespace's owner: lowered for the program, never raised, so a value
above this process's hard limit is lowered to it rather than refused."""
_FLAGS = {resource.RLIMIT_CPU: "--cpu-time", resource.RLIMIT_FSIZE: "--fsize",
          resource.RLIMIT_NOFILE: "--nofile", resource.RLIMIT_STACK: "--stack"}
_ULIMIT = {resource.RLIMIT_CPU: "-Ht", resource.RLIMIT_FSIZE: "-Hf", resource.RLIMIT_NOFILE: "-Hn",
           resource.RLIMIT_STACK: "-Hs"}


def _int(value: object, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{flag}: expected a whole number, got {value!r}")
    return value


def plan(*, cpu_time: float | None = None, fsize: int | None = None, nofile: int | None = None,
         stack: int | None = None, sigpending: int | None = None,
         msgqueue: int | None = None) -> list[tuple[int, int, int]]:
    """The rlimits for the sandbox's processes, as ``(resource.RLIMIT_*, soft, hard)``.

    Always RLIMIT_CORE 0 (no core dumps: core(5)).  ``cpu_time`` (seconds, float): RLIMIT_CPU
    soft = ceil(cpu_time) + 1, hard = soft + 1 -- SIGXCPU at the soft limit, SIGKILL at the hard
    one -- a per-process backstop behind the cgroup's whole-tree --cpu-time check.  ``fsize``
    (bytes; RLIMIT_FSIZE, a larger write gets EFBIG/SIGXFSZ), ``nofile`` (RLIMIT_NOFILE, open fds)
    and ``stack`` (bytes; RLIMIT_STACK) with soft = hard.  None: left as inherited.

    ``sigpending`` (signals queued for the user: RLIMIT_SIGPENDING; sigqueue(3) then gets EAGAIN)
    and ``msgqueue`` (bytes of POSIX message queues: RLIMIT_MSGQUEUE; mq_open(3) then gets
    EMFILE), soft = hard, each at most this process's own hard limit (see QUOTAS).  Both count
    per user in the sandbox's user namespace, and the kernel charges the same to the namespace's
    owner (the caller) up to the caller's own limit: these bound the sandbox's share
    (setrlimit(2), kernel/ucount.c inc_rlimit_ucounts).

    Raises PolicyError for impossible values (not positive, nofile < 4, stack < 64 KiB) and
    HostError for a value above this process's own hard limit (naming it and ``ulimit -H``)."""
    out: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
    if cpu_time is not None:
        if isinstance(cpu_time, bool) or not isinstance(cpu_time, (int, float)) or not 0 < cpu_time < 1e9 \
                or math.isnan(cpu_time):
            raise PolicyError(f"--cpu-time: expected a positive number of seconds, got {cpu_time!r}")
        soft = math.ceil(cpu_time) + 1
        out.append((resource.RLIMIT_CPU, soft, soft + 1))
    if fsize is not None:
        if _int(fsize, "--fsize") < 1:
            raise PolicyError(f"--fsize: expected a positive number of bytes, got {fsize!r}")
        out.append((resource.RLIMIT_FSIZE, fsize, fsize))
    if nofile is not None:
        if _int(nofile, "--nofile") < MIN_NOFILE:
            raise PolicyError(f"--nofile: at least {MIN_NOFILE} open files are needed (stdin, stdout, stderr and "
                              f"one more), got {nofile!r}")
        out.append((resource.RLIMIT_NOFILE, nofile, nofile))
    if stack is not None:
        if _int(stack, "--stack") < MIN_STACK:
            raise PolicyError(f"--stack: at least {MIN_STACK >> 10}K is needed to start a program, got {stack!r}")
        out.append((resource.RLIMIT_STACK, stack, stack))
    for res, value, flag in ((resource.RLIMIT_SIGPENDING, sigpending, "sigpending"),
                             (resource.RLIMIT_MSGQUEUE, msgqueue, "msgqueue")):
        if value is None:
            continue
        if _int(value, flag) < 0:
            raise PolicyError(f"{flag}: expected 0 or more, got {value!r}")
        cur = resource.getrlimit(res)[1]
        value = value if cur == resource.RLIM_INFINITY else min(value, cur)
        out.append((res, value, value))
    for res, _soft, hard in out:
        if res in QUOTAS:
            continue
        cur = resource.getrlimit(res)[1]
        if cur != resource.RLIM_INFINITY and hard > cur:
            flag = _FLAGS[res]
            shown = f"{hard} s" if res == resource.RLIMIT_CPU else str(hard)
            raise HostError(f"rlimit: {flag} needs a hard {_NAMES[res]} limit of {shown}, above this process's hard "
                            f"limit {cur} (ulimit {_ULIMIT[res]}); the sandbox cannot raise it: ask for less, or raise "
                            f"it before starting jailpy (as root: prlimit, or limits.conf)")
    return out


def apply(rlimits: list[tuple[int, int, int]] | tuple[tuple[int, int, int], ...]) -> None:
    """CHILD SIDE: setrlimit(2) each ``(resource, soft, hard)`` on the calling process; its
    children inherit them.  Raises OSError naming the limit: EPERM for a hard limit above the
    current one (Python reports that as ValueError; it is turned back into the errno here)."""
    for res, soft, hard in rlimits:
        try:
            resource.setrlimit(res, (soft, hard))
        except ValueError as e:
            raise OSError(errno.EPERM, f"setrlimit {_NAMES.get(res, res)} ({soft}, {hard}): {e}") from None


def describe(rlimits: list[tuple[int, int, int]] | tuple[tuple[int, int, int], ...]) -> dict:
    """For Result.protections["rlimits"]: ``{"core": 0, "cpu": [soft, hard], "fsize": bytes,
    "nofile": n, "stack": bytes, "sigpending": signals, "msgqueue": bytes}`` (a pair only where
    soft and hard differ)."""
    out: dict = {}
    for res, soft, hard in rlimits:
        out[_NAMES.get(res, str(res))] = soft if soft == hard else [soft, hard]
    return out


__all__ = ["plan", "apply", "describe", "MIN_NOFILE", "MIN_STACK", "QUOTAS"]
