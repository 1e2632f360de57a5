"""Start-up cost of one sandboxed ``/bin/true``: jailpy (API and CLI) against bubblewrap and unshare.

    python bench/startup.py [--runs N] [--json]

Every tool runs ``/bin/true`` N times (the CLI N/4 times, at least 20), after a warm-up, in
interleaved rounds (round-robin, the order rotated each round) so that machine drift hits all
tools alike.  Only ratios measured in the same run are meaningful: absolute milliseconds depend
on the machine, the kernel and its load.

Standard library and jailpy only.  Exit status 0 unless something crashed (a target missed is
printed as FAIL, not an error).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import jailpy

PAYLOAD = ["/bin/true"]
API_TARGET_RATIO = 1.5  # jailpy API (prepared sandbox) median <= 1.5x bwrap's median
CLI_TARGET_MS = 120.0  # jailpy exec median <= 120 ms
BWRAP_ARGS = ["--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
UNSHARE_ARGS = ["-Urpf", "--mount", "--net", "--uts", "--ipc"]


class Bench:
    """One tool: a name, a target number of runs, and ``once()`` returning one run's seconds."""

    def __init__(self, name: str, runs: int, once, what: str) -> None:
        self.name, self.runs, self.once, self.what = name, runs, once, what
        self.times: list[float] = []


def _popen_timer(argv: list[str]):
    def once() -> float:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rc = p.wait()
        dt = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {rc}")
        return dt
    return once


def _check_cmd(argv: list[str]) -> str | None:
    """None when ``argv`` runs and exits 0, else a one-line reason (with its stderr)."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode == 0:
        return None
    err = p.stderr.decode(errors="replace").strip().splitlines()
    return f"exit {p.returncode}" + (f": {err[-1]}" if err else "")


def _api_prepared():
    sb = jailpy.Sandbox()

    def once() -> float:
        t0 = time.perf_counter()
        r = sb.run(PAYLOAD)
        dt = time.perf_counter() - t0
        if r.exit_code != 0:
            raise RuntimeError(f"jailpy Sandbox.run: {r.verdict} exit {r.exit_code} {r.error or ''}")
        return dt
    return once


def _api_prefork():
    sb = jailpy.Sandbox(prefork=True)

    def once() -> float:
        # two runs back to back, timing the second: its sandbox is still being built while the
        # first runs, the busy case (after idle time a prefork run costs less)
        sb.run(PAYLOAD)
        t0 = time.perf_counter()
        r = sb.run(PAYLOAD)
        dt = time.perf_counter() - t0
        if r.exit_code != 0:
            raise RuntimeError(f"jailpy Sandbox(prefork).run: {r.verdict} exit {r.exit_code} {r.error or ''}")
        return dt
    return once


def _api_fresh() -> float:
    t0 = time.perf_counter()
    r = jailpy.run(PAYLOAD)
    dt = time.perf_counter() - t0
    if r.exit_code != 0:
        raise RuntimeError(f"jailpy.run: {r.verdict} exit {r.exit_code} {r.error or ''}")
    return dt


def build(runs: int, notes: list[str]) -> list[Bench]:
    benches = [
        Bench("jailpy API (prepared)", runs, _api_prepared(), "sb = jailpy.Sandbox() once; sb.run(['/bin/true'])"),
        Bench("jailpy API (prefork)", runs, _api_prefork(),
              "sb = jailpy.Sandbox(prefork=True) once; two sb.run back to back, the second timed"),
        Bench("jailpy API (fresh)", runs, _api_fresh, "jailpy.run(['/bin/true'])"),
    ]
    cli = os.path.join(os.path.dirname(sys.executable), "jailpy")
    cli_argv = [cli, "exec", "--", *PAYLOAD]
    if not os.access(cli, os.X_OK):
        notes.append(f"jailpy CLI: not found at {cli}; skipped")
    elif (why := _check_cmd(cli_argv)) is not None:
        notes.append(f"jailpy CLI: {why}; skipped")
    else:
        benches.append(Bench("jailpy CLI", min(runs, max(20, runs // 4)), _popen_timer(cli_argv), " ".join(["jailpy", *cli_argv[1:]])))
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        print("bwrap: not installed", file=sys.stderr)
        notes.append("bwrap: not installed")
    else:
        argv = [bwrap, *BWRAP_ARGS, *PAYLOAD]
        if (why := _check_cmd(argv)) is not None:
            notes.append(f"bwrap: {why}; skipped")
        else:
            benches.append(Bench("bwrap", runs, _popen_timer(argv), " ".join(["bwrap", *BWRAP_ARGS, *PAYLOAD])))
    unshare = shutil.which("unshare")
    if unshare is None:
        notes.append("unshare: not installed")
    else:
        argv = [unshare, *UNSHARE_ARGS, *PAYLOAD]
        if (why := _check_cmd(argv)) is not None:
            notes.append(f"unshare: {why}; skipped")
        else:
            benches.append(Bench("unshare", runs, _popen_timer(argv), " ".join(["unshare", *UNSHARE_ARGS, *PAYLOAD])))
    return benches


def measure(benches: list[Bench], rounds: int, warmup: int) -> None:
    for _ in range(warmup):
        for b in benches:
            b.once()
    for i in range(rounds):
        k = i % len(benches)
        for b in benches[k:] + benches[:k]:  # rotate the order: no tool always runs first
            # spread a tool's runs evenly over the rounds: run it when its quota steps up
            if (i + 1) * b.runs // rounds > i * b.runs // rounds:
                b.times.append(b.once())


def stats(b: Bench) -> dict:
    ms = sorted(t * 1000 for t in b.times)
    dec = statistics.quantiles(ms, n=10, method="inclusive")
    return {"tool": b.name, "command": b.what, "runs": len(ms), "median_ms": round(statistics.median(ms), 3),
            "p10_ms": round(dec[0], 3), "p90_ms": round(dec[8], 3), "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="runs per tool (the CLI gets N/4, at least 20); default 200")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs of each tool first; default 3")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = ap.parse_args()
    if args.runs < 2:
        ap.error("--runs must be at least 2")

    notes: list[str] = []
    benches = build(args.runs, notes)
    measure(benches, args.runs, args.warmup)
    rows = [stats(b) for b in benches]
    by = {r["tool"]: r for r in rows}
    base = by.get("bwrap")
    for r in rows:
        r["vs_bwrap"] = round(r["median_ms"] / base["median_ms"], 3) if base else None

    checks = []
    for name in ("jailpy API (prepared)", "jailpy API (prefork)"):
        api = by.get(name)
        what = f"{name[7:]} per run <= {API_TARGET_RATIO}x bwrap"
        if base and api:
            ok = api["median_ms"] <= API_TARGET_RATIO * base["median_ms"]
            checks.append({"check": what, "passed": ok,
                           "value": f"{api['vs_bwrap']:.2f}x ({api['median_ms']:.2f} ms vs {base['median_ms']:.2f} ms)"})
        else:
            checks.append({"check": what, "passed": None, "value": "not measured (no bwrap)"})
    cli = by.get("jailpy CLI")
    if cli:
        checks.append({"check": f"CLI median <= {CLI_TARGET_MS:g} ms", "passed": cli["median_ms"] <= CLI_TARGET_MS,
                       "value": f"{cli['median_ms']:.1f} ms"})
    else:
        checks.append({"check": f"CLI median <= {CLI_TARGET_MS:g} ms", "passed": None, "value": "not measured"})

    euid = os.geteuid()
    env = {"mode": "root" if euid == 0 else "rootless", "euid": euid, "kernel": platform.release(),
           "python": platform.python_version(), "jailpy": jailpy.__version__, "cpus": os.cpu_count(),
           "runs": args.runs, "warmup": args.warmup}

    if args.json:
        json.dump({"environment": env, "results": rows, "checks": checks, "notes": notes}, sys.stdout, indent=2)
        print()
        return 0

    print(f"jailpy start-up benchmark: /bin/true, {args.runs} interleaved rounds after {args.warmup} warm-up runs each")
    print(f"running as {env['mode']} (euid {euid}); kernel {env['kernel']}, Python {env['python']}, "
          f"jailpy {env['jailpy']}, {env['cpus']} CPUs")
    print("figures are only comparable as ratios within this one run\n")
    w = max(len(r["tool"]) for r in rows)
    print(f"{'tool':<{w}}  {'runs':>5}  {'median ms':>9}  {'p10 ms':>8}  {'p90 ms':>8}  {'vs bwrap':>8}")
    for r in rows:
        ratio = f"{r['vs_bwrap']:.2f}x" if r["vs_bwrap"] is not None else "-"
        print(f"{r['tool']:<{w}}  {r['runs']:>5}  {r['median_ms']:>9.2f}  {r['p10_ms']:>8.2f}  {r['p90_ms']:>8.2f}  {ratio:>8}")
    print()
    for c in checks:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[c["passed"]]
        print(f"{verdict}  {c['check']}: {c['value']}")
    for n in notes:
        print(f"note: {n}")
    print("\ncommands:")
    for r in rows:
        print(f"  {r['tool']:<{w}}  {r['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
