"""Kernel facts to a Result: one pure function, :func:`decide`.

The facts of a run (:class:`Facts`) are what PID 1 reported on its status pipe (the payload's
wait status, its rusage, or why it could not start), what the supervisor measured (wall time,
which of its own limits it fired, seccomp denials) and the cgroup's accounting at the end.
Nothing here touches the kernel: the verdict can be tested over recorded facts.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import SandboxSetupError
from .result import Result, Verdict

if TYPE_CHECKING:
    from .cgroups import Stats
    from .stdio import Output


@dataclass
class Facts:
    """What is known about one finished run.

    ``msgs``: PID 1's status messages merged (``status``: the payload's wait status as waitpid(2)
    gives it; ``utime``/``stime``/``maxrss``/``wall``: its children's rusage, seconds and bytes;
    ``exec_error``: 126/127 with ``error``; ``error`` alone: the set-up failed; ``started``: the
    payload's pid).  ``rusage``: of our own set-up process when PID 1 never reported.  ``wall``:
    seconds the supervisor measured.  ``limit_fired``: the first of jailpy's own limits the
    supervisor acted on (``"wall_time"``, ``"cpu_time"``, ``"output"``).  ``killed``: the run was
    ended by Sandbox.kill() (or a limit).  ``seccomp_kill``: a seccomp "kill" rule fired."""

    msgs: dict
    wall: float
    rusage: object = None
    limit_fired: str | None = None
    outputs: list["Output"] = field(default_factory=list)
    stats: "Stats | None" = None
    blocked: dict | None = None
    seccomp_log: list[dict] = field(default_factory=list)
    killed: bool = False
    seccomp_kill: bool = False
    jailpy_pids: int = 2
    """jailpy's own processes in the cgroup (left out of pids_peak)."""


@dataclass(frozen=True)
class Context:
    """What the Sandbox contributes to every Result: ``protections``, the policy's ``digest``,
    whether ``seccomp_log`` (permissive mode) was asked, a seccomp filter was ``filtered`` at all,
    the ``wall_time`` limit (seconds) and the ``cpu_time`` limit (seconds, None: none)."""

    protections: dict
    digest: str
    version: str
    seccomp_log: bool = False
    filtered: bool = False
    wall_time: float = float("inf")
    cpu_time: float | None = None


def decide(f: Facts, ctx: Context) -> Result:
    """The Result of a run from its facts.  Raises SandboxSetupError when the program never
    started because the sandbox could not be set up (the message says why)."""
    common: dict = dict(protections=dict(ctx.protections), jailpy_version=ctx.version, policy_hash=ctx.digest,
                        blocked_syscall=f.blocked,
                        seccomp_log=f.seccomp_log if (f.seccomp_log or ctx.seccomp_log) else None)
    for out in f.outputs:
        if out.target is None:
            common[out.name] = bytes(out.data)
        common[out.name + "_bytes"] = out.count
        common[out.name + "_truncated"] = out.truncated
    stats = f.stats
    oom = bool(stats and stats.oom_kills)
    if stats is not None:
        mem = stats.memory_peak_bytes
        if mem is not None and stats.memory_base_bytes:
            mem = max(0, mem - stats.memory_base_bytes)  # what jailpy's own processes held is not the program's
        pids = None if stats.pids_peak is None else max(0, stats.pids_peak - f.jailpy_pids)
        common.update(memory_peak_bytes=mem, pids_peak=pids, oom_killed=oom,
                      io_read_bytes=stats.io_read_bytes, io_write_bytes=stats.io_write_bytes)
    msgs = f.msgs
    if f.limit_fired == "setup" and "started" not in msgs:
        raise SandboxSetupError("cannot set up the sandbox: it was not ready after a minute (an overloaded host, "
                                "or a bind source on a file system that does not answer?)")
    if "error" in msgs and "exec_error" not in msgs:
        if oom:
            raise SandboxSetupError(f"cannot set up the sandbox: it ran out of memory before the program started "
                                    f"(raise --memory): {msgs['error']}")
        raise SandboxSetupError(f"cannot set up the sandbox: {msgs['error']}")
    status = msgs.get("status")
    if status is None:
        if "started" not in msgs and not f.killed:
            if oom:
                raise SandboxSetupError("cannot set up the sandbox: it ran out of memory before the program "
                                        "started (raise --memory)")
            raise SandboxSetupError("the sandbox ended without reporting the program's status (killed from outside?)")
        # PID 1 died before reporting: killed from outside (jailpy kill NAME), by the OOM killer, or
        # SIGKILLed after KILL_GRACE; what the cgroup measured stands in for its report
        status = signal.SIGKILL  # a wait status: killed by SIGKILL
        if stats is not None:
            common.update(cpu_user_s=round(stats.cpu_user_s, 6), cpu_sys_s=round(stats.cpu_sys_s, 6))
        elif f.rusage is not None:
            common.update(cpu_user_s=f.rusage.ru_utime, cpu_sys_s=f.rusage.ru_stime)
        if not (f.killed or oom):
            common["error"] = "the sandbox was killed from outside (jailpy kill, or a signal to its PID 1)"
        common["wall_s"] = round(f.wall, 6)
    else:
        common.update(cpu_user_s=round(msgs["utime"], 6), cpu_sys_s=round(msgs["stime"], 6),
                      max_rss_bytes=msgs["maxrss"], wall_s=round(msgs["wall"], 6))
    if "exec_error" in msgs:
        return Result(verdict=Verdict.RE, exit_code=msgs["exec_error"], error=msgs["error"], **common)
    if "not_started" in msgs and not f.killed:
        common["error"] = (f"the program was not started: signal {msgs['not_started']} came while the sandbox "
                           f"was being set up")
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = 128 + sig if sig else os.waitstatus_to_exitcode(status)
    if f.seccomp_kill:
        return Result(verdict=Verdict.SV, exit_code=128 + signal.SIGSYS, signal=int(signal.SIGSYS),
                      limit_fired="seccomp", **common)
    if sig == signal.SIGSYS and ctx.filtered:
        # SECCOMP_RET_KILL_PROCESS: the filter's answer to x32 and i386 (int 0x80) system calls
        return Result(verdict=Verdict.SV, exit_code=code, signal=sig, limit_fired="seccomp", **common)
    limit_fired = _first_limit(f, ctx, sig, oom)
    verdict = {"output": Verdict.OLE, "cpu_time": Verdict.TLE, "wall_time": Verdict.WLE,
               "memory": Verdict.MLE}.get(limit_fired or "")
    if verdict in (Verdict.OLE, Verdict.TLE, Verdict.WLE) and sig is None:
        # jailpy killed the sandbox for it, but the program finished on its own in the moment
        # before: the run still failed, and exits like the others (128 + SIGKILL)
        sig, code = int(signal.SIGKILL), 128 + signal.SIGKILL
    if verdict is None:
        verdict = Verdict.SIG if sig else Verdict.OK if code == 0 else Verdict.RE
    return Result(verdict=verdict, exit_code=code, signal=sig, limit_fired=limit_fired, **common)


def _first_limit(f: Facts, ctx: Context, sig: int | None, oom: bool) -> str | None:
    """Which limit ended the run, by the kernel's evidence where there is some, else by what the
    supervisor acted on first.

    The program's own end outranks a clock: the supervisor may act late (stopped, starved,
    suspended) and fire a wall-time kill at a program that had already exited, so a wall-time
    kill counts only when PID 1 measured the program running for at least the limit; and a
    program PID 1 measured running past the limit is WLE even when the supervisor never fired.  SIGXCPU
    is RLIMIT_CPU's backstop (the kernel's own CPU limit): TLE.  An OOM kill in the cgroup is
    MLE when the supervisor fired nothing itself.  A program that exited on its own having used
    more CPU than ``cpu_time`` (measured by PID 1's rusage of its children) is TLE: it took more
    than it was given before the supervisor's next look.  Refused forks (the cgroup's pids.max)
    are named ``pids`` when nothing else fired."""
    msgs = f.msgs
    fired = None if f.limit_fired == "setup" else f.limit_fired
    ran = msgs.get("wall")
    if fired == "wall_time" and "status" in msgs and ran is not None and ran < ctx.wall_time:
        fired = None  # it ended before the deadline: the supervisor was late, not the program
    if fired is None and "status" in msgs and "not_started" not in msgs and ran is not None \
            and ran >= ctx.wall_time:
        fired = "wall_time"  # it ran past its deadline while the supervisor was late (stopped, starved)
    if sig == signal.SIGXCPU and ctx.cpu_time is not None:
        return "cpu_time"
    if fired is None and oom:
        return "memory"
    if fired is None and ctx.cpu_time is not None and "utime" in msgs and "not_started" not in msgs \
            and msgs["utime"] + msgs["stime"] > ctx.cpu_time:
        return "cpu_time"
    if fired is None and f.stats is not None and f.stats.pids_max_hits:
        return "pids"
    return fired
