"""The escape-attempt runner behind ``jailpy audit`` and tests/escape/.

Each probe (jailpy/audit/probes.py) is a small python3 program (stdlib and ctypes only,
jailpy/audit/programs/) run inside ``jailpy.Sandbox(policy).run(...)`` with host-side canaries
around it (jailpy/audit/host.py); its verdict, blocked or NOT BLOCKED and by which layer, is
decided from evidence (jailpy/audit/judge.py).  A probe whose verdict names the seccomp filter is
run once more with ``seccomp = "none"`` to show the layer below it ("below").

    from jailpy.audit import Auditor
    outcomes = Auditor(jailpy.policy.load("default")).run()     # every probe
    [o.status for o in outcomes]                                # "blocked", "NOT BLOCKED", ...

Nothing here needs gcc or anything beyond the python3 the sandbox finds in its PATH.  Probes
that need a cgroup (fork bomb, memory...) are "skipped" when the host gives none, never counted
as blocked.  Canaries live in a new temporary directory (or under ``canary_dir``), removed at
the end; helper processes are ended by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import seccomp as seccomp_mod
from ..errors import HostError, JailpyError, PolicyError
from ..policy import Policy, parse_size
from . import host as host_mod
from .judge import BLOCKED, ERROR, LAYERS, NOT_BLOCKED, SKIPPED, Evidence, Verdict
from .probes import BY_ID, EXOTIC_FAMILIES, IP_PROTOCOLS, PROBES, Probe

__all__ = ["Auditor", "Outcome", "PROBES", "BY_ID", "LAYERS", "BLOCKED", "NOT_BLOCKED", "SKIPPED", "ERROR",
           "select_probes"]

PROGRAM_DIR = Path(__file__).resolve().parent / "programs"
PYTHON = "python3"
"""The interpreter the probes run with when jailpy's own is not visible in the sandbox, looked up
in the sandbox's PATH (not the host's)."""
PROBE_WALL_TIME = 20.0
"""Seconds a probe run may take (instead of the policy's wall_time: a probe is bounded by itself)."""
CGROUP_FIX = ("run jailpy audit as root, or ask root for a delegated cgroup (tests/delegate-cgroup.sh create "
              "USER /PATH) and set JAILPY_CGROUP_PARENT=/PATH")
PATHS_OF_INTEREST = (
    "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches",
    "/proc/sys/fs/binfmt_misc/register", "/sys/kernel/uevent_helper", "/proc/sysrq-trigger", "/proc/kcore",
    "/proc/kmsg", "/dev/kmsg", "/dev/mem", "/dev/port", "/dev/vda", "/dev/sda", "/dev/tty0", "/dev/console",
    "/dev/vcs", "/dev/vcsa", "/proc/sys/kernel/hostname", "/proc/kallsyms", "/proc/sched_debug", "/proc/timer_list",
)
_LIMITS = ("pids", "memory", "nofile", "cpu_time", "tmp_size")
_SIZES = ("memory", "tmp_size", "output_limit")
_TIOCSETD = 0x5423
_sources: dict[str, str] = {}
_sources_lock = threading.Lock()


@dataclass
class Outcome:
    """A probe's result: ``status`` blocked | NOT BLOCKED | skipped | error; ``layers`` that
    stopped it (LAYERS keys, outermost first); ``detail`` one line of evidence; ``below`` the
    verdict with ``seccomp = "none"`` (a dict like this one's, only when seccomp was a layer);
    ``attempts`` what the program tried (its facts); ``run`` the last run's Result fields that
    matter; ``host_changes`` what the host saw change (canaries written, connections, signals,
    processes left: empty when nothing changed); ``seconds`` the wall time the probe took."""

    id: str
    category: str
    technique: str
    status: str
    layers: list[str] = field(default_factory=list)
    detail: str = ""
    below: dict | None = None
    attempts: list = field(default_factory=list)
    run: dict | None = None
    host_changes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The ``jailpy audit --json`` entry."""
        return {"id": self.id, "category": self.category, "technique": self.technique, "status": self.status,
                "layers": self.layers, "detail": self.detail, "below": self.below, "attempts": self.attempts,
                "run": self.run, "host_changes": self.host_changes, "seconds": round(self.seconds, 3)}


def select_probes(only: list[str] | None = None) -> list[Probe]:
    """The probes named in ``only`` (ids), in table order; every probe for None.  Raises
    PolicyError naming an unknown id."""
    if not only:
        return list(PROBES)
    unknown = [i for i in only if i not in BY_ID]
    if unknown:
        raise PolicyError(f"--only: no probe named {', '.join(unknown)} (jailpy audit --json lists them)")
    want = set(only)
    return [p for p in PROBES if p.id in want]


def program_source(name: str) -> str:
    """The python source run inside the sandbox for program ``name``: _lib.py, the program, main()."""
    with _sources_lock:
        if name not in _sources:
            lib = (PROGRAM_DIR / "_lib.py").read_text()
            body = (PROGRAM_DIR / f"{name}.py").read_text()
            _sources[name] = f"{lib}\n{body}\nmain()\n"
        return _sources[name]


def _modules_active() -> bool:
    """This kernel loads modules on demand (request_module): it has module support and
    kernel.modules_disabled is not 1."""
    if not os.path.exists("/proc/modules"):
        return False
    try:
        return Path("/proc/sys/kernel/modules_disabled").read_text().strip() != "1"
    except OSError:
        return True


def _hidden(policy: Policy) -> dict[str, list[str]]:
    out = {}
    if policy.rootfs is None:
        for h in policy.hide:
            try:
                out[h] = sorted(os.listdir(h))[:100]
            except OSError:
                continue
    return out


def interpreter(policy: Policy) -> str:
    """The python the probes run with: jailpy's own (its real path, e.g. /usr/bin/python3.11 for a
    venv) when the sandbox sees it, else ``python3`` from the sandbox's PATH."""
    real = os.path.realpath(sys.executable)
    if policy.rootfs is None and os.access(real, os.X_OK):
        hidden = [os.path.realpath(h) for h in policy.hide] + ["/tmp", "/dev", "/proc", "/sys"]
        if not any(real == h or real.startswith(h.rstrip("/") + "/") for h in hidden):
            return real
    return PYTHON


def _tighter(key: str, base: object, probe: object) -> object:
    """The stricter of a limit the policy has and one the probe wants."""
    if base is None:
        return probe
    if key in _SIZES:
        return base if parse_size(base) <= parse_size(probe) else probe
    return min(base, probe)


class Auditor:
    """Runs probes under ``policy`` (a :class:`~jailpy.policy.Policy`).

    ``canary_dir``: where the host-side canaries are made (a new temporary directory by
    default); a policy that exposes it writable gets a NOT BLOCKED.  ``below``: also run probes
    stopped by seccomp with ``seccomp = "none"``.  ``jobs``: probes run at once (threads; each
    run is its own sandbox).  Raises PolicyError/HostError from the constructor when the policy
    cannot make a sandbox at all (the same errors as ``jailpy exec``)."""

    def __init__(self, policy: Policy, *, canary_dir: str | os.PathLike | None = None, below: bool = True,
                 jobs: int = 4) -> None:
        from ..sandbox import Sandbox

        self.policy = policy.checked()
        self.below = below
        self.jobs = max(1, jobs)
        self.canary_dir = Path(canary_dir) if canary_dir is not None else None
        if self.canary_dir is not None and not self.canary_dir.is_dir():
            raise PolicyError(f"--canary-dir: not a directory: {canary_dir}")
        Sandbox(self.policy, reuse_userns=False).close()  # fail early, as jailpy exec would (exit 125)
        self.filter = None if policy.seccomp == "none" else seccomp_mod.prepare(policy.seccomp, log=policy.seccomp_log)
        self.python = interpreter(self.policy)
        self.token = host_mod.token()
        self.params = self._host_params(self.filter)
        self._params_unfiltered = self._host_params(None)

    def _host_params(self, f: "seccomp_mod.Filter | None") -> dict:
        """What every probe program is given: host facts, and which module-loading calls it may
        make under filter ``f`` (None: no filter, the "below" runs)."""
        st = os.stat("/")
        modules = _modules_active()

        def denied(nr: int, args: tuple[int, ...]) -> bool:
            return f is not None and f.decide(nr, args + (0,) * (6 - len(args))).action in ("errno", "kill")
        return {
            "host_root": [st.st_dev, st.st_ino],
            "host_python": os.path.realpath(sys.executable),
            "host_has": [p for p in PATHS_OF_INTEREST if os.path.exists(p)],
            "hidden": _hidden(self.policy),
            "modules": modules,
            # calls that could load a module into the host's kernel are made only where that cannot happen
            "may_call": {name: not modules or denied(41, (fam, 2, 0)) for name, fam in EXOTIC_FAMILIES.items()},
            "may_call_tiocsetd": not modules or denied(16, (0, _TIOCSETD)),
            "may_call_proto": {**{name: not modules or denied(41, tuple(t)) for name, t in IP_PROTOCOLS.items()},
                               "socketpair": not modules or denied(53, IP_PROTOCOLS["MPTCP"] + (0,))},
        }

    def run(self, probes: list[Probe] | None = None) -> list[Outcome]:
        """Run ``probes`` (all by default) and return their outcomes in table order."""
        probes = list(PROBES) if probes is None else probes
        root = self.canary_dir / f"jailpy-audit-{self.token}" if self.canary_dir is not None else \
            Path(tempfile.mkdtemp(prefix="jailpy-audit-"))
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)  # the sandbox's uid may traverse it: only the sandbox's layers stand in the way
        try:
            with ThreadPoolExecutor(self.jobs) as pool:
                return list(pool.map(lambda p: self.run_probe(p, root), probes))
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def run_probe(self, probe: Probe, root: Path) -> Outcome:
        """Run one probe under the auditor's policy, and (when seccomp stopped it) once more below."""
        t0 = time.monotonic()
        out = self._one(probe, self.policy, root / probe.id)
        if self.below and out.status == BLOCKED and "seccomp" in out.layers and self.policy.seccomp != "none":
            low = self._one(probe, self.policy.replace(seccomp="none", seccomp_log=False), root / (probe.id + "-below"))
            out.below = {"status": low.status, "layers": low.layers, "detail": low.detail,
                         "host_changes": low.host_changes}
        out.seconds = time.monotonic() - t0
        return out

    def _policy_for(self, probe: Probe, base: Policy, extra: dict) -> Policy:
        changes: dict = {}
        for k, v in {**probe.policy, **extra}.items():
            if isinstance(v, list):
                changes[k] = list(getattr(base, k)) + v
            elif k in _LIMITS:
                changes[k] = _tighter(k, getattr(base, k), v)
            else:
                changes[k] = v
        # the probe's own time bound, and room for its report: these limits stop no escape (the
        # probes that test them set their own), and a policy's tight values would only cut reports
        changes["wall_time"] = probe.policy.get("wall_time", PROBE_WALL_TIME)
        changes["output_limit"] = probe.policy.get("output_limit")
        return base.replace(**changes)

    def _one(self, probe: Probe, base: Policy, root: Path) -> Outcome:
        from ..sandbox import DEVNULL, Sandbox

        o = Outcome(probe.id, probe.category, probe.technique, ERROR)
        try:
            root.mkdir(parents=True, exist_ok=True)
            os.chmod(root, 0o755)
            with host_mod.Fixtures(probe.host, root, self.token) as fx:
                try:
                    pol = self._policy_for(probe, base, fx.policy)
                    box = Sandbox(pol, reuse_userns=probe.runs > 1)
                except (HostError, PolicyError) as e:
                    if probe.needs_cgroup:
                        o.status, o.detail = SKIPPED, f"needs a cgroup ({e}); to fix: {CGROUP_FIX}"
                        return o
                    raise
                # a run without the auditor's filter (the "below" run) may not make the calls only
                # that filter made safe (module autoload into the host's kernel)
                host = self.params if base.seccomp == self.policy.seccomp else self._params_unfiltered
                params = {**host, **probe.params, **fx.params, "probe": probe.id, "residue": self.token}
                results, errors = [], []
                try:
                    for phase in range(1, probe.runs + 1):
                        params["phase"] = phase
                        argv = [self.python, "-I", "-S", "-c", program_source(probe.program), json.dumps(params)]
                        try:
                            results.append(box.run(argv, stdin=fx.stdin if fx.stdin is not None else DEVNULL,
                                                   capture_output=True))
                        except JailpyError as e:
                            errors.append(str(e))
                finally:
                    box.close()
                observed = fx.check()
            facts = _facts(results[-1]) if results else None
            ev = Evidence(facts, results, errors, observed, box.filter, pol, params)
            v: Verdict = probe.judge(ev)
            o.status, o.layers, o.detail = v.status, v.layers, v.detail
            o.attempts = (facts or {}).get("attempts", [])
            o.host_changes = list(observed.get("changes", []))
            if results:
                o.run = _run_summary(results[-1])
        except JailpyError as e:
            o.detail = f"jailpy: {e}"
        except OSError as e:
            o.detail = f"host set-up failed: {e}"
        return o


def _facts(result) -> dict | None:
    """The probe program's last JSON line on stdout, or None."""
    for line in reversed((result.stdout or b"").decode(errors="replace").splitlines()):
        if line.startswith('{"facts"'):
            try:
                return json.loads(line)["facts"]
            except ValueError:
                return None
    return None


def _run_summary(r) -> dict:
    return {"verdict": getattr(r.verdict, "value", r.verdict), "exit_code": r.exit_code, "signal": r.signal,
            "limit_fired": r.limit_fired, "blocked_syscall": r.blocked_syscall, "pids_peak": r.pids_peak,
            "memory_peak_bytes": r.memory_peak_bytes, "wall_s": r.wall_s}
