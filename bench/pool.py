"""The warm pool's per-run cost against bubblewrap's, and how runs/s scale with workers.

    python bench/pool.py [--runs N] [--seconds S] [--json]

Part 1, per-run cost of ``/bin/true`` (medians over N runs, interleaved rounds):

* ``pooled``: ``with pool.slot(policy) as s: s.run(["/bin/true"])`` on a warm
  :class:`jailpy.slots.SlotPool` (two slots), timed as the caller sees it.  The slot's
  verification and the next sandbox's build happen after the block, in the pool's background
  thread; the rounds leave it the time to finish (``pool.drain()``, not timed), as a judge
  machine between submissions would.  This is the latency of a run taken from a warm pool;
* ``pooled, back to back``: the same without the pause: the caller waits for a slot that is
  still being verified or built when it is faster than the pool;
* ``bwrap``: ``bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp /bin/true``.

Target: pooled median <= 0.5x bwrap's median.

Part 2, scaling: runs/s over ``--seconds`` with 1 worker thread, then 2 (each with its own
pool of 2 slots), on a policy with limits (memory, CPU time, pids: a judge's).  Target: 2
workers >= 1.7x one worker on a machine with 2 free cores.

Only ratios measured in one run mean anything (bench/README.md).  Exit 0 unless something
crashed; a missed target prints FAIL.
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
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jailpy  # noqa: E402
from jailpy.policy import load  # noqa: E402
from jailpy.slots import SlotPool  # noqa: E402

PAYLOAD = ["/bin/true"]
RATIO_TARGET = 0.5
SCALE_TARGET = 1.7
BWRAP = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]


def _bwrap_once() -> float:
    t0 = time.perf_counter()
    rc = subprocess.call(BWRAP + PAYLOAD, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"bwrap exited {rc}")
    return dt


def _pooled_once(pool: SlotPool, policy, drain: bool) -> float:
    if drain:
        pool.drain()
    t0 = time.perf_counter()
    with pool.slot(policy) as s:
        r = s.run(PAYLOAD)
    dt = time.perf_counter() - t0
    if r.exit_code != 0:
        raise RuntimeError(f"pooled run: {r.verdict} {r.error}")
    return dt


def per_run(runs: int, policy) -> dict:
    have_bwrap = shutil.which("bwrap") is not None
    times: dict[str, list[float]] = {"pooled": [], "pooled, back to back": [], "bwrap": []}
    with SlotPool(2) as pool:
        for _ in range(6):  # warm: both slots made, fork servers ready, first canaries done
            _pooled_once(pool, policy, True)
        if have_bwrap:
            _bwrap_once()
        order = list(times)
        for i in range(runs):
            for name in order[i % 3:] + order[:i % 3]:
                if name == "bwrap":
                    if have_bwrap:
                        times[name].append(_bwrap_once())
                else:
                    times[name].append(_pooled_once(pool, policy, name == "pooled"))
        stats = pool.stats()
    out = {}
    for name, ts in times.items():
        if ts:
            ts.sort()
            out[name] = {"runs": len(ts), "median_ms": statistics.median(ts) * 1000,
                         "p10_ms": ts[len(ts) // 10] * 1000, "p90_ms": ts[len(ts) * 9 // 10] * 1000}
    out["pool"] = {k: stats[k] for k in ("runs", "verifications", "verification_failures", "destroyed", "canary_probes")}
    return out


def scaling(seconds: float, policy) -> dict:
    def rate(workers: int) -> float:
        pools = [SlotPool(2) for _ in range(workers)]
        for p in pools:
            for _ in range(4):
                _pooled_once(p, policy, True)
        counts = [0] * workers
        stop = time.monotonic() + seconds

        def work(i: int) -> None:
            while time.monotonic() < stop:
                _pooled_once(pools[i], policy, False)
                counts[i] += 1

        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        for p in pools:
            p.close()
        return sum(counts) / elapsed

    one = rate(1)
    two = rate(2)
    return {"1 worker runs/s": one, "2 workers runs/s": two, "speed-up": two / one if one else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    plain = load("default").replace(cwd=False)
    judge_like = plain.replace(memory="256M", cpu_time=2.0, pids=16)
    res = {"host": {"kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "root": os.getuid() == 0, "loadavg": os.getloadavg()[0]},
           "per_run": per_run(args.runs, plain), "per_run_with_limits": per_run(max(20, args.runs // 2), judge_like),
           "scaling": scaling(args.seconds, judge_like)}
    pr, sc = res["per_run"], res["scaling"]
    ratio = pr["pooled"]["median_ms"] / pr["bwrap"]["median_ms"] if "bwrap" in pr else None
    res["targets"] = {
        "pooled <= 0.5x bwrap": None if ratio is None else {"ratio": ratio, "pass": ratio <= RATIO_TARGET},
        "2 workers >= 1.7x one": {"ratio": sc["speed-up"], "pass": sc["speed-up"] >= SCALE_TARGET},
    }
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    h = res["host"]
    print(f"kernel {h['kernel']}, Python {h['python']}, {h['cpus']} CPUs, {'root' if h['root'] else 'rootless'}, "
          f"load average {h['loadavg']:.2f}")
    for title, part in (("no limits", pr), ("memory, cpu_time, pids limits (a cgroup per run)", res["per_run_with_limits"])):
        print(f"\nper run of /bin/true, {title}:")
        print(f"  {'':24} {'runs':>5} {'median ms':>10} {'p10':>7} {'p90':>7} {'vs bwrap':>9}")
        base = part.get("bwrap", {}).get("median_ms")
        for name in ("pooled", "pooled, back to back", "bwrap"):
            if name in part:
                m = part[name]
                vs = f"{m['median_ms'] / base:.2f}x" if base else "-"
                print(f"  {name:24} {m['runs']:>5} {m['median_ms']:>10.2f} {m['p10_ms']:>7.2f} {m['p90_ms']:>7.2f} {vs:>9}")
        print(f"  pool: {part['pool']}")
    print(f"\nscaling (limits): 1 worker {sc['1 worker runs/s']:.1f} runs/s, 2 workers {sc['2 workers runs/s']:.1f} "
          f"runs/s: {sc['speed-up']:.2f}x")
    print()
    for name, t in res["targets"].items():
        if t is None:
            print(f"{name}: bwrap not installed (apt-get install bubblewrap)")
        else:
            print(f"{name}: {t['ratio']:.2f} {'PASS' if t['pass'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
