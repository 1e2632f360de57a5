"""How accurate the judge's figures are: CPU time, memory, verdicts.

    python bench/judge_accuracy.py [--runs 20] [--json] [--skip-verdicts]

1. CPU time: a C program that does a fixed amount of work (about 1 s of CPU, calibrated at the
   start) runs ``--runs`` times pooled (a :class:`jailpy.slots.SlotPool` slot, as the judge and
   the server run tests) and fresh (``jailpy.run``, a new sandbox each time).  Reported: mean,
   standard deviation and the coefficient of variation (CV = stdev / mean) of the Result's
   ``cpu_user_s + cpu_sys_s``.  Target: CV <= 2% in both.
2. Memory: a C program that allocates and touches N MiB (N = 0, 16, 64, 128; ``mmap`` +
   a write to each page), and the same in Python (``bytearray``), run cold (the program and the
   runtime's executable evicted from the page cache with posix_fadvise(POSIX_FADV_DONTNEED), and a
   new Sandbox: its first run)
   and warm (the fifth run of that Sandbox); node too when it is installed (``Buffer.alloc``).  The
   judge's memory is ``memory_peak_bytes`` of its report: the cgroup's peak less the page cache of
   files the run read (docs/judge.md, "What memory means"); the cgroup's own peak is shown beside it.
   Target: for each N, |memory(N) - (memory(0) + N)| <= 1 MiB, cold and warm alike.
3. Verdicts: every solution of tests/judge/solutions judged; each must get the verdict its
   file name says.

Exit 0 unless something crashed; a missed target prints FAIL.  Needs gcc and a cgroup (root, or
JAILPY_CGROUP_PARENT).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jailpy  # noqa: E402
from jailpy.policy import load  # noqa: E402
from jailpy.judge.runner import judge_memory  # noqa: E402
from jailpy.slots import SlotPool  # noqa: E402
from jailpy.stdio import DEVNULL, PIPE  # noqa: E402

MiB = 1 << 20
CV_TARGET = 0.02
MEM_TOLERANCE = MiB
REPO = Path(__file__).resolve().parent.parent

BUSY_C = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    unsigned long n = strtoul(argv[1], 0, 10), x = 1;
    for (unsigned long i = 0; i < n; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    printf("%lu\n", x & 1);
    return 0;
}
"""
TOUCH_C = r"""
#include <stdlib.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    size_t n = strtoul(argv[1], 0, 10) << 20;
    if (n) {
        volatile char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        for (size_t i = 0; i < n; i += 4096) p[i] = 1;
    }
    return 0;
}
"""
TOUCH_JS = "const n = Number(process.argv[2]) << 20; const b = Buffer.alloc(n, 1); process.exit(b.length === n ? 0 : 1);\n"
TOUCH_PY = "import sys\nn = int(sys.argv[1]) << 20\nb = bytearray(n)\nfor i in range(0, n, 4096): b[i] = 1\n"


def _build(d: Path, name: str, src: str) -> Path:
    (d / f"{name}.c").write_text(src)
    subprocess.run(["gcc", "-O1", "-o", str(d / name), str(d / f"{name}.c")], check=True)
    return d / name


def _evict(path: Path) -> None:
    """Drop ``path``'s clean pages from the page cache (a hint to the kernel, for a file opened
    read-only: posix_fadvise(2) POSIX_FADV_DONTNEED; pages mapped by a running process stay)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.stat(fd).st_uid == os.getuid():
            os.fsync(fd)  # our own new files (the compiled program): dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cpu_part(d: Path, runs: int) -> dict:
    busy = _build(d, "busy", BUSY_C)
    pol = load("default").replace(cwd=False, ro_bind=[f"{d}:/bench"], cpu_time=10.0, memory="64M", pids=4,
                                  wall_time=60.0)
    # calibrate: iterations for about 1 s of CPU
    n = 50_000_000
    t = subprocess.run(["/usr/bin/time", "-f", "%U %S", str(busy), str(n)], capture_output=True, text=True)
    try:
        u, s = map(float, t.stderr.split()[-2:])
        n = int(n / max(0.05, u + s))
    except ValueError:
        n = 500_000_000
    argv = ["/bench/busy", str(n)]
    out: dict = {"iterations": n}
    with SlotPool(2) as pool:
        with pool.slot(pol) as s:
            s.run(argv, stdout=DEVNULL)
        samples = {"pooled": [], "fresh": []}
        for i in range(runs):
            for mode in ("pooled", "fresh") if i % 2 == 0 else ("fresh", "pooled"):
                if mode == "pooled":
                    pool.drain()
                    with pool.slot(pol) as s:
                        r = s.run(argv, stdout=DEVNULL)
                else:
                    r = jailpy.run(argv, policy=pol, stdout=DEVNULL)
                if r.verdict.value != "OK":
                    raise RuntimeError(f"busy run: {r.verdict} {r.error}")
                samples[mode].append(r.cpu_user_s + r.cpu_sys_s)
    for mode, xs in samples.items():
        mean = statistics.mean(xs)
        sd = statistics.stdev(xs)
        out[mode] = {"runs": len(xs), "mean_s": mean, "stdev_s": sd, "cv": sd / mean, "min_s": min(xs), "max_s": max(xs)}
    return out


def mem_part(d: Path) -> dict:
    touch = _build(d, "touch", TOUCH_C)
    (d / "touch.py").write_text(TOUCH_PY)
    (d / "touch.js").write_text(TOUCH_JS)
    pol = load("default").replace(cwd=False, ro_bind=[f"{d}:/bench"], cpu_time=10.0, memory="512M", pids=4,
                                  wall_time=60.0)
    pol = pol.replace(pids=32)  # node's threads
    rows = {}
    langs = [("c", ["/bench/touch"]), ("python", ["python3", "/bench/touch.py"])]
    if shutil.which("node"):
        langs.append(("node", ["node", "/bench/touch.js"]))
    for lang, argv0 in langs:
        for n in (0, 16, 64, 128):
            res = {}
            for phase in ("cold", "warm"):
                if phase == "cold":
                    for f in (touch, d / "touch.py", d / "touch.js", shutil.which("python3"), shutil.which("node")):
                        if f and os.path.exists(f):
                            _evict(Path(os.path.realpath(f)))
                    sb = jailpy.Sandbox(pol)
                    runs = 1
                else:
                    runs = 5
                for _ in range(runs):
                    r = sb.run(argv0 + [str(n)], stdout=PIPE, stderr=PIPE)
                if r.verdict.value != "OK":
                    raise RuntimeError(f"touch {lang} {n}: {r.verdict} {r.error} {r.stderr!r}")
                res[phase] = {"memory_peak_bytes": judge_memory(r), "cgroup_memory_peak_bytes": r.memory_peak_bytes,
                              "max_rss_bytes": r.max_rss_bytes}
                if phase == "warm":
                    sb.close()
            rows[f"{lang} {n} MiB"] = {"lang": lang, "n_mib": n, **res}
    checks = []
    for key, row in rows.items():
        base = rows[f"{row['lang']} 0 MiB"]
        for phase in ("cold", "warm"):
            want = base[phase]["memory_peak_bytes"] + row["n_mib"] * MiB
            got = row[phase]["memory_peak_bytes"]
            checks.append(abs(got - want) <= MEM_TOLERANCE)
            row[phase]["error_bytes"] = got - want
        row["cold_minus_warm_bytes"] = row["cold"]["memory_peak_bytes"] - row["warm"]["memory_peak_bytes"]
        checks.append(abs(row["cold_minus_warm_bytes"]) <= MEM_TOLERANCE)
    return {"rows": rows, "pass": all(checks)}


def verdict_part() -> dict:
    from jailpy.judge import Judge

    sols = sorted(p for p in (REPO / "tests/judge/solutions").glob("*/*") if p.is_file())
    wrong, judges = [], {}
    t0 = time.monotonic()
    try:
        for p in sols:
            j = judges.get(p.parent.name) or judges.setdefault(p.parent.name, Judge(REPO / "tests/judge/problems" / p.parent.name))
            got = j.judge(p).verdict
            want = p.stem.split("_")[0]
            if got != want:
                wrong.append(f"{p.parent.name}/{p.name}: {got}, expected {want}")
    finally:
        for j in judges.values():
            j.close()
    return {"solutions": len(sols), "wrong": wrong, "seconds": time.monotonic() - t0, "pass": not wrong}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip-verdicts", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jailpy-accuracy-") as tmp:
        d = Path(tmp)
        os.chmod(d, 0o755)
        res = {"host": {"cpus": os.cpu_count(), "root": os.getuid() == 0, "loadavg": os.getloadavg()[0]},
               "cpu": cpu_part(d, args.runs), "memory": mem_part(d)}
    if not args.skip_verdicts:
        res["verdicts"] = verdict_part()
    cpu = res["cpu"]
    res["targets"] = {f"CPU time CV <= 2% ({m})": {"cv": cpu[m]["cv"], "pass": cpu[m]["cv"] <= CV_TARGET}
                      for m in ("pooled", "fresh")}
    res["targets"]["memory within 1 MiB of N + base, cold and warm"] = {"pass": res["memory"]["pass"]}
    if "verdicts" in res:
        res["targets"]["every verdict right"] = {"pass": res["verdicts"]["pass"]}
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    h = res["host"]
    print(f"{h['cpus']} CPUs, {'root' if h['root'] else 'rootless'}, load average {h['loadavg']:.2f}")
    print(f"\nCPU time of a fixed ~1 s busy loop ({cpu['iterations']} iterations):")
    for m in ("pooled", "fresh"):
        c = cpu[m]
        print(f"  {m:7} {c['runs']} runs: mean {c['mean_s']:.4f} s, stdev {c['stdev_s'] * 1000:.1f} ms, "
              f"CV {c['cv'] * 100:.2f}% (min {c['min_s']:.4f}, max {c['max_s']:.4f})")
    print("\nmemory (the judge's: the cgroup's peak less the page cache the run brought in; the cgroup's own "
          "peak beside it), MiB:")
    print(f"  {'program':16} {'cold':>8} {'warm':>8} {'error':>7} {'cgroup cold':>12} {'cgroup warm':>12}")
    for key, row in res["memory"]["rows"].items():
        c, w = row["cold"], row["warm"]
        err = max(abs(c["error_bytes"]), abs(w["error_bytes"])) / MiB
        cg = [(x["cgroup_memory_peak_bytes"] or 0) / MiB for x in (c, w)]
        print(f"  {key:16} {c['memory_peak_bytes'] / MiB:8.2f} {w['memory_peak_bytes'] / MiB:8.2f} {err:7.2f} "
              f"{cg[0]:12.2f} {cg[1]:12.2f}")
    if "verdicts" in res:
        v = res["verdicts"]
        print(f"\nverdicts: {v['solutions'] - len(v['wrong'])}/{v['solutions']} right ({v['seconds']:.0f} s)")
        for w in v["wrong"]:
            print(f"  {w}")
    print()
    for name, t in res["targets"].items():
        extra = f" {t['cv'] * 100:.2f}%" if "cv" in t else ""
        print(f"{name}:{extra} {'PASS' if t['pass'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
