"""Verdicts of the audit probes: blocked or NOT BLOCKED, and which layer stopped the attempt,
decided from evidence (the probe program's facts, the run's :class:`~jailpy.result.Result`, the
compiled seccomp filter and what the host observed).

A probe program reports "attempts" (see jailpy/audit/programs/_lib.py): each says whether it got
through and, if not, the program's reading of the errno (EROFS: mount, ESRCH for a host pid:
namespace, EPERM of a capability check: capability...).  :func:`seccomp_stopped` overrides that
reading with "seccomp" when the sandbox's filter denies that very call, with those arguments,
with that errno: :meth:`jailpy.seccomp.Filter.decide` runs the same BPF the kernel ran, and the
Result's ``blocked_syscall`` names the first such denial.  A host-side change (a canary file
written, a connection on the canary server, a signal to the helper, a process left running) is
always NOT BLOCKED, whatever the program said.
"""

from __future__ import annotations

import errno
import signal
from dataclasses import dataclass, field

LAYERS = {
    "namespace": "a Linux namespace: the target does not exist in the sandbox's pid, net, ipc, uts, user or "
                 "cgroup namespace",
    "mount": "the sandbox's mount table: not mounted, hidden, read-only, nosuid/nodev, masked, or a size-capped tmpfs",
    "capability": "no capabilities (and the sandbox's PID 1 is not dumpable, so ptrace-style access to it needs one)",
    "permissions": "file permissions: the sandbox's uid is a stranger to host files",
    "no_new_privs": "no_new_privs: execve grants no privileges",
    "session": "a new session (setsid): the caller's terminal is not the program's",
    "seccomp": "the seccomp filter denied the system call",
    "cgroup": "the sandbox's cgroup limits (pids, memory, CPU time)",
    "rlimit": "a resource limit (setrlimit(2)) of the program",
    "jailpy": "jailpy's own set-up and supervisor: clean environment, closed fds, output and wall-time limits, "
              "killing whatever is left when the program ends",
    "kernel": "this kernel or its sysctls refuse it to every unprivileged process (not jailpy's doing)",
    "landlock": "Landlock (landlock(7)): the kernel refused a file access the sandbox's mount plan does not grant "
                "(EACCES where file permissions and mounts would allow it: access(2) says so), even if a mount let "
                "it through",
    "lsm": "a security module's label (AppArmor profile, SELinux type) refused it",
}
"""The layers a verdict may name, with what each means (``jailpy audit --json`` lists them too)."""

BLOCKED, NOT_BLOCKED, SKIPPED, ERROR = "blocked", "NOT BLOCKED", "skipped", "error"


@dataclass
class Verdict:
    """``status``: blocked, NOT BLOCKED, skipped or error (the probe could not tell); ``layers``:
    what stopped it, outermost first (LAYERS keys); ``detail``: one line of evidence."""

    status: str
    layers: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class Evidence:
    """Everything a judge may use.  ``facts``: the probe program's report of the last run (None
    when it printed none); ``results``: the Result of each run; ``errors``: jailpy's refusals
    (SandboxSetupError texts) of runs that did not start; ``host``: Fixtures.check();
    ``filter``: the compiled seccomp filter (None without one); ``policy``: the run's Policy;
    ``params``: what the program was given."""

    facts: dict | None
    results: list
    errors: list[str]
    host: dict
    filter: object | None
    policy: object
    params: dict

    @property
    def result(self):
        """The last run's Result, or None."""
        return self.results[-1] if self.results else None


def _errno_name(n: int) -> str:
    return errno.errorcode.get(n, str(n))


def _verdict(r) -> str:
    """A Result's verdict as text ("OK", "TLE"...)."""
    return getattr(r.verdict, "value", r.verdict)


def seccomp_stopped(ev: Evidence, a: dict) -> bool:
    """True when the seccomp filter is what refused attempt ``a``: a process killed by SIGSYS, or
    the filter's decision for the call (``nr`` and integer ``args``) is a denial with exactly the
    errno the program saw (or a kill rule that ended the run: verdict SV)."""
    f = ev.filter
    if f is None:
        return False
    if a.get("killed_by") == signal.SIGSYS:
        return True
    nr = a.get("nr")
    if nr is None or a.get("through"):
        return False
    args = tuple(((list(a.get("args") or []) + [0] * 6)[:6]))
    d = f.decide(int(nr), tuple(int(x) & 0xFFFFFFFFFFFFFFFF for x in args))
    if d.action == "errno":
        return a.get("errno") == _errno_name(d.errno)
    if d.action == "kill":
        r = ev.result
        return r is not None and _verdict(r) == "SV"
    return False


def landlock_applied(ev: Evidence) -> bool:
    """Whether the last run had Landlock (its Result's protections.landlock.applied)."""
    r = ev.result
    return bool(r is not None and ((r.protections or {}).get("landlock") or {}).get("applied"))


def _unique(seq) -> list:
    out = []
    for x in seq:
        if x and x not in out:
            out.append(x)
    return out


def describe(a: dict) -> str:
    """One attempt as text: what, the answer, the program's note."""
    if a.get("killed_by"):
        got = f"killed by {signal.Signals(a['killed_by']).name}"
    elif a.get("errno"):
        got = a["errno"] + (" (it reached the kernel)" if a.get("through") else "")
    else:
        got = "succeeded" if a.get("through") else "no"
    text = f"{a['what']}: {got}"
    if a.get("detail"):
        text += f" ({a['detail']})"
    return text


def host_changed(ev: Evidence) -> Verdict | None:
    """NOT BLOCKED when the host saw any change, else None."""
    changes = ev.host.get("changes") or []
    if changes:
        return Verdict(NOT_BLOCKED, [], "host changed: " + "; ".join(changes[:3]))
    return None


def no_report(ev: Evidence) -> Verdict:
    """An error verdict: the program did not report (how the run ended, its stderr's tail)."""
    r = ev.result
    if r is None:
        return Verdict(ERROR, [], "; ".join(ev.errors)[:300] or "the probe did not run")
    if _verdict(r) == "SV" and ev.filter is not None:
        what = (r.blocked_syscall or {}).get("text", "a system call")
        return Verdict(BLOCKED, ["seccomp"], f"a seccomp kill rule ended the sandbox at {what} (verdict SV)")
    tail = (r.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
    return Verdict(ERROR, [], f"the probe reported nothing (verdict {_verdict(r)}, "
                              f"exit {r.exit_code}{', ' + r.error if r.error else ''}) {tail[0][:200]}".strip())


def _no_facts(ev: Evidence) -> Verdict | None:
    """What every judge of the probe's own report decides first: NOT BLOCKED when the host
    changed, ERROR when the probe reported nothing or failed; else None."""
    changed = host_changed(ev)
    if changed:
        return changed
    if ev.facts is None:
        return no_report(ev)
    if "exception" in ev.facts:
        return Verdict(ERROR, [], f"the probe failed: {ev.facts['exception']}"[:300])
    return None


def by_attempts(ev: Evidence) -> Verdict:
    """The default judge: NOT BLOCKED when the host changed or any attempt got through; else
    blocked, by the layers of the attempts (seccomp where the filter refused the call)."""
    first = _no_facts(ev)
    if first:
        return first
    facts = ev.facts
    if facts.get("skip"):
        return Verdict(SKIPPED, [], facts["skip"])
    atts = facts.get("attempts") or []
    if not atts:
        return Verdict(ERROR, [], "the probe made no attempt")
    for a in atts:
        if not a.get("through") and seccomp_stopped(ev, a):
            a["layer"] = "seccomp"
            a.pop("detail", None)  # the program's reading of that errno was about the kernel, not the filter
        elif a.get("layer") == "landlock" and not landlock_applied(ev):
            a["layer"] = "lsm"  # access(2) allowed it and no Landlock ran: an AppArmor profile refused it
    through = [a for a in atts if a.get("through")]
    if through:
        return Verdict(NOT_BLOCKED, [], "; ".join(describe(a) for a in through[:3]))
    more = f" (+{len(atts) - 2} more)" if len(atts) > 2 else ""
    return Verdict(BLOCKED, _unique(a.get("layer") for a in atts), "; ".join(describe(a) for a in atts[:2]) + more)


def _pids_layer(ev: Evidence, made: int) -> list[str]:
    r = ev.result
    limit = getattr(ev.policy, "pids", None)
    if r is not None and r.pids_peak is not None and limit is not None and r.pids_peak >= limit:
        return ["cgroup"]
    return ["rlimit"] if limit is None else ["cgroup"]


def count_limited(kind: str, layer: str) -> "callable":
    """Judge of a bounded loop (fork, threads, fds, inodes): blocked when the loop stopped
    before its bound; ``layer`` names what stops it ("pids" means the cgroup's pids.max)."""
    def judge(ev: Evidence) -> Verdict:
        first = _no_facts(ev)
        if first:
            return first
        f = ev.facts
        bound = ev.params["bound"]
        if f["made"] >= bound or not f.get("errno"):
            return Verdict(NOT_BLOCKED, [], f"{f['made']} {kind} made (the probe's own bound), nothing stopped it")
        layers = _pids_layer(ev, f["made"]) if layer == "pids" else [layer]
        peak = ev.result.pids_peak if ev.result is not None else None
        extra = f", cgroup pids peak {peak} of {ev.policy.pids}" if layer == "pids" else ""
        return Verdict(BLOCKED, layers, f"stopped after {f['made']} {kind}: {f['errno']}{extra}")
    return judge


def memory_bomb(ev: Evidence) -> Verdict:
    """Blocked when the cgroup's memory limit ended the run (MLE / an OOM kill) or allocation
    failed before the probe's bound."""
    r = ev.result
    if r is None:
        return no_report(ev)
    v = _verdict(r)
    f = ev.facts or {}
    if v == "MLE" or r.oom_killed:
        return Verdict(BLOCKED, ["cgroup"], f"verdict {v}: the OOM killer ended it in its cgroup (limit "
                                            f"{ev.policy.memory}, peak {r.memory_peak_bytes} bytes)")
    if f.get("errno") == "ENOMEM":
        return Verdict(BLOCKED, ["cgroup"], f"allocation failed after {f['made'] >> 20} MiB (limit {ev.policy.memory})")
    if f.get("made", 0) >= ev.params["bound"]:
        return Verdict(NOT_BLOCKED, [], f"{f['made'] >> 20} MiB allocated and touched, over the "
                                        f"{ev.policy.memory} limit")
    return no_report(ev)


def tmpfs_fill(ev: Evidence) -> Verdict:
    """Blocked when every writable tmpfs (/tmp, /dev/shm) filled up (ENOSPC) before the bound."""
    f = ev.facts
    if f is None or "fills" not in f:
        return no_report(ev)
    bound = ev.params["bound"]
    over = {d: w for d, (w, e) in f["fills"].items() if w >= bound or not e}
    if over:
        return Verdict(NOT_BLOCKED, [], "; ".join(f"{d}: {w >> 20} MiB written" for d, w in over.items()))
    return Verdict(BLOCKED, ["mount"], "; ".join(f"{d}: {e} after {w >> 20} MiB" for d, (w, e) in f["fills"].items())
                   + f" (tmp_size {ev.policy.tmp_size})")


def output_flood(ev: Evidence) -> Verdict:
    """Blocked when jailpy cut the output at the limit (verdict OLE, at most the limit passed)."""
    r = ev.result
    if r is None:
        return no_report(ev)
    v = _verdict(r)
    limit = ev.params["limit"]
    n = max(r.stdout_bytes or 0, len(r.stdout or b""))
    if v == "OLE" and n <= limit:
        return Verdict(BLOCKED, ["jailpy"], f"verdict OLE after {n} bytes of stdout (limit {limit})")
    return Verdict(NOT_BLOCKED, [], f"verdict {v}, {n} bytes of stdout passed (limit {limit})")


def cpu_hog(ev: Evidence) -> Verdict:
    """Blocked when the CPU-time limit ended the run (TLE) before the program's own end."""
    r = ev.result
    if r is None:
        return no_report(ev)
    v = _verdict(r)
    if v == "TLE":
        layer = "rlimit" if r.signal == signal.SIGXCPU else "cgroup"
        return Verdict(BLOCKED, [layer], f"verdict TLE after {r.cpu_user_s + r.cpu_sys_s:.2f} s of CPU "
                                         f"(limit {ev.policy.cpu_time} s, {r.wall_s:.2f} s wall)")
    return Verdict(NOT_BLOCKED, [], f"verdict {v}: {r.cpu_user_s + r.cpu_sys_s:.2f} s of CPU used, limit "
                                    f"{ev.policy.cpu_time} s")


def left_behind(kind: str) -> "callable":
    """Judge of the probes that leave a process behind: blocked when the host found none after the
    run; ``kind`` "exit" (the program exits) or "wall" (the wall-time limit ends it) or "stall"
    (the run must end promptly although the process holds stdout and stderr open)."""
    def judge(ev: Evidence) -> Verdict:
        changed = host_changed(ev)
        if changed:
            return changed
        r = ev.result
        if r is None:
            return no_report(ev)
        v = _verdict(r)
        if kind == "wall":
            if v != "WLE":
                return Verdict(NOT_BLOCKED, [], f"verdict {v}: the wall-time limit did not end it")
            return Verdict(BLOCKED, ["jailpy", "namespace"], f"verdict WLE after {r.wall_s:.2f} s; nothing left on "
                                                             f"the host (the pid namespace died with its PID 1)")
        if kind == "stall" and r.wall_s > 5:
            return Verdict(NOT_BLOCKED, [], f"the run took {r.wall_s:.1f} s: a left-over process held its pipes")
        if ev.facts is None:
            return no_report(ev)
        what = "the run ended at once" if kind == "stall" else "nothing left on the host"
        return Verdict(BLOCKED, ["jailpy", "namespace"], f"{what} ({r.wall_s:.2f} s): PID 1 killed what was left and "
                                                         f"the pid namespace died with it")
    return judge


def symlink_race(ev: Evidence) -> Verdict:
    """Blocked when no run changed the host while the destination was being swapped."""
    changed = host_changed(ev)
    if changed:
        return changed
    ran = len(ev.results)
    seen = (ev.facts or {}).get("seen", [])
    outside = [s for s in seen if s.startswith(ev.params["outside"])]
    if outside:
        return Verdict(NOT_BLOCKED, [], f"the bind landed on the host path {outside[0]}")
    return Verdict(BLOCKED, ["mount"], f"{ran + len(ev.errors)} runs while a thread swapped the destination with a "
                                       f"symlink to a host path: {ran} ran, {len(ev.errors)} refused "
                                       f"(mount point changed); host unchanged")
