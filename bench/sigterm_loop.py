"""Count what happens to SIGTERMs sent to `jailpy exec` at random moments of its start (issue 17).

The regression test (tests/regressions/test_faults.py,
test_sigterm_at_a_random_moment_of_set_up_is_never_lost) asserts that none is lost; this prints
the counts, for this checkout or another one, so the before/after figures of the closing note can
be made again:

    .venv/bin/python bench/sigterm_loop.py                    # this checkout
    git worktree add /tmp/old fe4ba14                         # the code before issues 10 and 17
    .venv/bin/python bench/sigterm_loop.py --repo /tmp/old    # run with PYTHONPATH=/tmp/old

Each try starts ``jailpy exec --no-cwd --wall-time 20 -- sleep MARKER``, waits a random delay
(0-250 ms, seeded), sends SIGTERM and waits up to 10 s.  Outcomes: ``143`` (jailpy handled it),
``killed`` (died of the signal before its handlers existed: fine), ``hung`` (still running after
10 s: then SIGKILLed), ``other`` (any other exit code), ``survivor`` (the sleep outlived jailpy).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time


def _pids_of(marker: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return out


def one(delay: float, env: dict) -> str:
    marker = f"{secrets.randbelow(900) + 100}.{secrets.randbelow(10**9):09d}"
    p = subprocess.Popen([sys.executable, "-m", "jailpy", "exec", "--no-cwd", "--wall-time", "20", "--", "sleep", marker],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", env=env)
    time.sleep(delay)
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=10)
        outcome = "143" if rc == 143 else "killed" if rc == -signal.SIGTERM else "other"
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        outcome = "hung"
    end = time.monotonic() + 2
    while _pids_of(marker) and time.monotonic() < end:
        time.sleep(0.05)
    left = _pids_of(marker)
    for pid in left:  # only the sleep this try started (its unique marker)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return "survivor" if left else outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", help="another checkout to run (put first on PYTHONPATH)")
    ap.add_argument("--tries", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    env = dict(os.environ)
    if a.repo:
        env["PYTHONPATH"] = os.path.abspath(a.repo)
    rng = random.Random(17)
    delays = [rng.uniform(0.0, 0.25) for _ in range(a.tries)]
    results: list = [None] * len(delays)

    def worker(k: int) -> None:
        for i in range(k, len(delays), 2):
            results[i] = one(delays[i], env)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = collections.Counter(results)
    lost = sum(n for k, n in counts.items() if k not in ("143", "killed"))
    out = {"repo": a.repo or ".", "tries": a.tries, "counts": dict(counts), "lost": lost,
           "load": os.getloadavg()[0]}
    print(json.dumps(out) if a.json else
          f"{out['repo']}: {a.tries} SIGTERMs: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
          + f"; lost {lost} (load {out['load']:.1f})")


if __name__ == "__main__":
    main()
