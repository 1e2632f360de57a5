"""What seccomp costs in jailpy: preparing a filter, applying it per run, and syscalls under it.

    python bench/seccomp.py [--runs N] [--iterations N] [--quick] [--json]

Three parts, one invocation, every figure beside its unfiltered (or uncached) counterpart:

1. Preparing a filter, ``jailpy.seccomp.prepare(POLICY)``, for each shipped policy: cold (a fresh
   process, an empty cache directory: parse, compile with libseccomp, write the cache), warm (a
   fresh process, the on-disk BPF cache filled), and a hit of the in-memory memo (the second call
   in one process); plus ``compile_bpf()`` alone with libseccomp already loaded.
2. The cost per run: ``jailpy.Sandbox(Policy(seccomp=X)).run(["/bin/true"])`` on a prepared
   Sandbox, X = none, default, strict, docker-like, against seccomp=none; and the kernel's share
   alone, ``seccomp.install(bpf, listener)`` as the sandbox's PID 1 calls it, in a forked child.
3. Syscall-heavy code: a small C program (built with gcc at bench time; a Python loop when gcc is
   missing) times batches of getppid() and ioctl(FIONREAD) calls itself and prints ns per call;
   run without jailpy and in a sandbox under each policy, against the sandbox with seccomp=none.

Rounds rotate the order of the configurations so that drift in the machine's speed hits all of
them alike.  Only ratios measured in the same run are meaningful.  Standard library and jailpy
only; exit status 0 unless something crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import jailpy
from jailpy import Policy, caps, seccomp

POLICIES = ["default", "strict", "docker-like"]  # the shipped ones: policies/seccomp/*.toml, profiles/seccomp/*.json
CONFIGS = ["none", *POLICIES]  # seccomp= values of a Sandbox; "none" is the unfiltered baseline
SYSCALLS = ["getppid", "ioctl"]
BATCHES = 200  # timed batches per syscall and run, alternating syscalls: short (about 0.5 ms), so most
# batches run without being preempted by other work on the machine
NR = {"getppid": 110, "ioctl": 16}  # x86_64 (arch/x86/entry/syscalls/syscall_64.tbl)
FIONREAD = 0x541B

LOOP_C = r"""
/* jailpy bench: ITER calls of each named syscall in BATCHES batches (the syscalls alternating
   batch by batch).  Each batch is timed twice: CLOCK_THREAD_CPUTIME_ID (CPU time of this thread,
   user + system: time spent preempted by other work does not count) and CLOCK_MONOTONIC (wall).
   Prints "seccomp MODE FILTERS" from /proc/self/status, then for each syscall a "NAME cpu" and a
   "NAME wall" line with the ns per call of every batch. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#define MAXB 1000
static double cpu[8][MAXB], wall[8][MAXB];

static long long ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    long iter = atol(argv[1]), batches = atol(argv[2]), per = batches > 0 ? iter / batches : 0;
    int nsys = argc - 3, p[2], q;
    if (per < 1 || batches > MAXB || nsys > 8 || pipe(p)) return 2;
    char line[256];
    int mode = -1, filters = -1;
    FILE *st = fopen("/proc/self/status", "r");
    while (st && fgets(line, sizeof line, st)) {
        sscanf(line, "Seccomp: %d", &mode);
        sscanf(line, "Seccomp_filters: %d", &filters);
    }
    if (st) fclose(st);
    for (long b = 0; b < batches; b++) {
        for (int s = 0; s < nsys; s++) {
            const char *name = argv[3 + s];
            long long c0 = ns(CLOCK_THREAD_CPUTIME_ID), w0 = ns(CLOCK_MONOTONIC);
            if (!strcmp(name, "getppid")) {
                for (long i = 0; i < per; i++) syscall(SYS_getppid);
            } else if (!strcmp(name, "ioctl")) {
                for (long i = 0; i < per; i++)
                    if (ioctl(p[0], FIONREAD, &q)) { perror("ioctl"); return 3; }
            } else {
                fprintf(stderr, "unknown syscall %s\n", name);
                return 2;
            }
            long long w1 = ns(CLOCK_MONOTONIC), c1 = ns(CLOCK_THREAD_CPUTIME_ID);
            cpu[s][b] = (double)(c1 - c0) / per;
            wall[s][b] = (double)(w1 - w0) / per;
        }
    }
    printf("seccomp %d %d\n", mode, filters);
    for (int s = 0; s < nsys; s++) {
        printf("%s cpu", argv[3 + s]);
        for (long b = 0; b < batches; b++) printf(" %.3f", cpu[s][b]);
        printf("\n%s wall", argv[3 + s]);
        for (long b = 0; b < batches; b++) printf(" %.3f", wall[s][b]);
        printf("\n");
    }
    return 0;
}
"""

LOOP_PY = r"""
# jailpy bench, Python fallback of loop.c: same arguments, same output
import array, fcntl, os, sys, time
iters, batches, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
per = iters // batches
r, w = os.pipe()
buf = array.array("i", [0])
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
cpu, wall = {n: [] for n in names}, {n: [] for n in names}
getppid, ioctl, tcpu, twall = os.getppid, fcntl.ioctl, time.thread_time_ns, time.monotonic_ns
for _ in range(batches):
    for n in names:
        c0, w0 = tcpu(), twall()
        if n == "getppid":
            for _ in range(per):
                getppid()
        elif n == "ioctl":
            for _ in range(per):
                ioctl(r, 0x541B, buf, True)
        else:
            sys.exit(f"unknown syscall {n}")
        w1, c1 = twall(), tcpu()
        cpu[n].append((c1 - c0) / per)
        wall[n].append((w1 - w0) / per)
print("seccomp", status.get("Seccomp", "-1").strip(), status.get("Seccomp_filters", "-1").strip())
for n in names:
    print(n, "cpu", *(f"{v:.3f}" for v in cpu[n]))
    print(n, "wall", *(f"{v:.3f}" for v in wall[n]))
"""


# ------------------------------------------------------------------ helpers ----

def _stats(values: list[float], ndigits: int = 3) -> dict:
    """median, 10th and 90th percentile (inclusive method), min and max of ``values``."""
    v = sorted(values)
    dec = statistics.quantiles(v, n=10, method="inclusive") if len(v) > 1 else [v[0]] * 9
    return {"runs": len(v), "median": round(statistics.median(v), ndigits), "p10": round(dec[0], ndigits),
            "p90": round(dec[8], ndigits), "min": round(v[0], ndigits), "max": round(v[-1], ndigits)}


def _rotated(items: list, i: int) -> list:
    k = i % len(items)
    return items[k:] + items[:k]


def _host_filters() -> int:
    """Seccomp_filters of this process (proc(5)): what a program started without jailpy inherits."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Seccomp_filters:"):
                return int(line.split()[1])
    return 0


def bpf_path(bpf: bytes, nr: int, args: tuple[int, ...]) -> tuple[int, bool]:
    """How the kernel evaluates x86_64 syscall ``nr`` with ``args`` under ``bpf``: (instructions
    run, cached).  ``cached``: the result is SECCOMP_RET_ALLOW whatever the arguments, so the
    kernel's per-filter action cache (kernel/seccomp.c, seccomp_cache_prepare, Linux 5.11) skips
    running the BPF for it; decided the way the kernel does (seccomp_is_const_allow: only loads of
    nr and arch, conditional jumps on constants, AND with a constant, RET allow)."""
    insns = list(struct.iter_unpack("<HBBI", bpf))
    data = struct.pack("<iIQ6Q", nr, 0xC000003E, 0, *args, *(0,) * (6 - len(args)))  # AUDIT_ARCH_X86_64
    pc = a = steps = 0
    const = True
    while True:
        code, jt, jf, k = insns[pc]
        steps += 1
        pc += 1
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            const = const and k in (0, 4)
            a = int.from_bytes(data[k:k + 4], "little")
        elif code == 0x54:  # BPF_ALU | BPF_AND | BPF_K
            a &= k
        elif code == 0x05:  # BPF_JMP | BPF_JA
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # JEQ JGT JGE JSET, K
            cond = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[code]
            pc += jt if cond else jf
        elif code == 0x06:  # BPF_RET | BPF_K
            return steps, const and k == 0x7FFF0000  # SECCOMP_RET_ALLOW
        else:  # an instruction the kernel's emulator does not follow: not cached
            return steps, False


# ------------------------------------------------------------------ 1. prepare ----

def _prepare_child(policy: str) -> None:
    """In a fresh process: time prepare() twice (first call: disk cache or compile; second: memo)."""
    t0 = time.perf_counter()
    seccomp.prepare(policy)
    t1 = time.perf_counter()
    seccomp.prepare(policy)
    t2 = time.perf_counter()
    json.dump({"first_ms": (t1 - t0) * 1e3, "memo_ms": (t2 - t1) * 1e3,
               "libseccomp": "pyseccomp" in sys.modules}, sys.stdout)


def bench_prepare(rounds: int, root: str) -> tuple[list[dict], list[str]]:
    """Part 1: rows (policy, state, stats in ms, ratio to the warm disk cache)."""
    samples: dict[tuple[str, str], list[float]] = {}
    odd = set()
    for pol in POLICIES:  # untimed: load libseccomp in this process, for the compile_bpf-only row
        seccomp.compile_bpf(seccomp.load(pol))

    def child(policy: str, cache: str) -> dict:
        env = dict(os.environ, XDG_CACHE_HOME=cache)
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--prepare-child", policy], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"prepare({policy!r}) in a fresh process failed: {p.stderr.strip()}")
        return json.loads(p.stdout)

    for i in range(rounds):
        for pol in _rotated(POLICIES, i):
            cache = tempfile.mkdtemp(prefix=f"cache-{pol}-", dir=root)
            cold = child(pol, cache)  # empty cache dir: parse + compile + write
            warm = child(pol, cache)  # the same dir: the BPF from disk
            if not cold["libseccomp"]:
                odd.add(f"{pol}: a cold prepare() did not load libseccomp: the cache directory was not the empty one")
            if warm["libseccomp"]:
                odd.add(f"{pol}: a warm prepare() loaded libseccomp: the on-disk cache was not used")
            policy = seccomp.load(pol)
            t0 = time.perf_counter()
            seccomp.compile_bpf(policy)
            t1 = time.perf_counter()
            for state, ms in (("cold: fresh process, empty cache", cold["first_ms"]),
                              ("compile_bpf only (libseccomp loaded)", (t1 - t0) * 1e3),
                              ("warm: fresh process, BPF on disk", warm["first_ms"]),
                              ("in-memory hit (same process)", cold["memo_ms"]),
                              ("in-memory hit (same process)", warm["memo_ms"])):
                samples.setdefault((pol, state), []).append(ms)
            shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for pol in POLICIES:
        base = statistics.median(samples[(pol, "warm: fresh process, BPF on disk")])
        for (p, state), v in samples.items():
            if p == pol:
                rows.append({"policy": pol, "state": state, **_stats(v, 4),
                             "vs_warm": round(statistics.median(v) / base, 3)})
    return rows, sorted(odd)


# ------------------------------------------------------------------ 2. per run ----

def bench_per_run(runs: int, warmup: int) -> list[dict]:
    """Part 2: /bin/true on a prepared Sandbox per seccomp config; stats in ms, ratio to none."""
    boxes = {c: jailpy.Sandbox(Policy(seccomp=c)) for c in CONFIGS}
    times: dict[str, list[float]] = {c: [] for c in CONFIGS}

    def once(c: str) -> float:
        t0 = time.perf_counter()
        r = boxes[c].run(["/bin/true"], stdin=jailpy.DEVNULL, stdout=jailpy.DEVNULL, stderr=jailpy.DEVNULL)
        dt = time.perf_counter() - t0
        if r.exit_code != 0:
            raise RuntimeError(f"seccomp={c}: /bin/true: {r.verdict} exit {r.exit_code} {r.error or ''}")
        return dt

    for _ in range(warmup):
        for c in CONFIGS:
            once(c)
    for i in range(runs):
        for c in _rotated(CONFIGS, i):
            times[c].append(once(c) * 1e3)
    for sb in boxes.values():
        sb.close()
    base = statistics.median(times["none"])
    rows = []
    for c in CONFIGS:
        s, med = _stats(times[c]), statistics.median(times[c])
        rows.append({"seccomp": c, **s, "vs_none": round(med / base, 3), "extra_ms": round(med - base, 3)})
    return rows


def bench_install(runs: int) -> list[dict]:
    """Part 2, the kernel's share: ``seccomp.install(bpf, listener)`` as the sandbox's PID 1 calls it
    (seccomp(2) SECCOMP_SET_MODE_FILTER: copy, check and translate the BPF, build the action cache,
    create the listener), timed in a forked child (a filter cannot be removed); stats in us."""
    times: dict[str, list[float]] = {p: [] for p in POLICIES}
    filters = {p: seccomp.prepare(p) for p in POLICIES}
    for i in range(runs):
        for pol in _rotated(POLICIES, i):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: only syscalls and a write, then _exit
                code = 1
                try:
                    os.close(r)
                    caps.no_new_privs()
                    f = filters[pol]
                    t0 = time.perf_counter()
                    fd = seccomp.install(f.bpf, f.notify)
                    dt = time.perf_counter() - t0
                    os.write(w, struct.pack("d", dt))
                    code = 0 if fd is not None or not f.notify else 1
                finally:
                    os._exit(code)
            os.close(w)
            data = os.read(r, 8)
            os.close(r)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0 or len(data) != 8:
                raise RuntimeError(f"{pol}: seccomp.install in a child failed (status {status:#x})")
            times[pol].append(struct.unpack("d", data)[0] * 1e6)
    return [{"policy": p, "insns": len(filters[p].bpf) // 8, "listener": filters[p].notify, **_stats(times[p], 1)}
            for p in POLICIES]


# ------------------------------------------------------------------ 3. syscalls ----

def build_loop(workdir: str, force_python: bool, notes: list[str]) -> tuple[list[str], str]:
    """The loop program's argv prefix and what it is ("C, gcc -O2" or "Python ...")."""
    gcc = None if force_python else shutil.which("gcc")
    if gcc is not None:
        src, exe = os.path.join(workdir, "loop.c"), os.path.join(workdir, "loop")
        with open(src, "w") as f:
            f.write(LOOP_C)
        p = subprocess.run([gcc, "-O2", "-o", exe, src], capture_output=True, text=True)
        if p.returncode == 0:
            return [exe], "C (gcc -O2): syscall(SYS_getppid); ioctl(pipe, FIONREAD)"
        notes.append(f"gcc failed ({p.stderr.strip().splitlines()[-1:]}); using the Python loop")
    elif not force_python:
        notes.append("gcc: not installed; using the Python loop (Python's own overhead per call dilutes the ratios)")
    src = os.path.join(workdir, "loop.py")
    with open(src, "w") as f:
        f.write(LOOP_PY)
    py = os.path.realpath(sys.executable)
    return [py, "-I", "-S", src], f"Python {platform.python_version()}: os.getppid(); fcntl.ioctl(pipe, FIONREAD)"


def _parse_loop(out: str, where: str) -> tuple[tuple[int, int], dict[tuple[str, str], list[float]]]:
    """The loop's output: ((Seccomp mode, Seccomp_filters), {(syscall, "cpu"|"wall"): [ns per call]})."""
    lines = out.split("\n")
    head = lines[0].split()
    if len(head) != 3 or head[0] != "seccomp":
        raise RuntimeError(f"{where}: unexpected output {out[:200]!r}")
    per = {}
    for line in lines[1:]:
        if line.strip():
            name, kind, *vals = line.split()
            per[(name, kind)] = [float(v) for v in vals]
    if set(per) != {(n, k) for n in SYSCALLS for k in ("cpu", "wall")}:
        raise RuntimeError(f"{where}: unexpected output {out[:200]!r}")
    return (int(head[1]), int(head[2])), per


def bench_syscalls(loop: list[str], workdir: str, rounds: int, iterations: int) -> list[dict]:
    """Part 3: ns per syscall without jailpy and under each seccomp config; ratio to seccomp=none."""
    configs = ["no sandbox", *CONFIGS]
    boxes = {c: jailpy.Sandbox(Policy(seccomp=c, ro_bind=[workdir])) for c in CONFIGS}
    host = _host_filters()
    samples: dict[tuple[str, str, str], list[float]] = {}  # (config, syscall, cpu|wall): ns per call

    def once(c: str, iters: int) -> dict[tuple[str, str], list[float]]:
        argv = [*loop, str(iters), str(BATCHES), *SYSCALLS]
        if c == "no sandbox":
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}")
            out = p.stdout
        else:
            r = boxes[c].run(argv, stdin=jailpy.DEVNULL, capture_output=True)
            if r.exit_code != 0:
                raise RuntimeError(f"seccomp={c}: {r.verdict} exit {r.exit_code} {r.error or ''} "
                                   f"{r.stderr.decode(errors='replace').strip()} blocked: {r.blocked_syscall}")
            out = r.stdout.decode()
        (mode, filters), per = _parse_loop(out, c)
        # the program must run under exactly the filters we think: the host's, plus jailpy's one
        want = host + (0 if c in ("no sandbox", "none") else 1)
        if filters != want or (want > 0) != (mode == 2):
            raise RuntimeError(f"{c}: the program ran with Seccomp {mode}, {filters} filters; expected {want}")
        return per

    for c in configs:  # warm-up: page in the program, the libraries and the sandboxes
        once(c, max(BATCHES, iterations // 10))
    for i in range(rounds):
        for c in _rotated(configs, i):
            for (name, kind), vals in once(c, iterations).items():
                samples.setdefault((c, name, kind), []).extend(vals)
    for sb in boxes.values():
        sb.close()

    filters = {c: seccomp.prepare(c) for c in POLICIES}
    args = {"getppid": (), "ioctl": (3, FIONREAD, 0x7FFC0000)}
    rows = []
    for name in SYSCALLS:
        base = statistics.median(samples[("none", name, "cpu")])
        for c in configs:
            v = samples[(c, name, "cpu")]
            s, med = _stats(v), statistics.median(v)
            s["batches"] = s.pop("runs")
            if c in filters:
                steps, cached = bpf_path(filters[c].bpf, NR[name], args[name])
                bpf = "action cache" if cached else f"{steps} insns"
            else:
                bpf = "-"
            rows.append({"syscall": name, "config": c, **s, "vs_none": round(med / base, 3),
                         "extra_ns": round(med - base, 1),
                         "wall_median": round(statistics.median(samples[(c, name, "wall")]), 3), "bpf": bpf})
    return rows


# ------------------------------------------------------------------ main ----

def _table(headers: list[tuple[str, str, int]], rows: list[dict]) -> None:
    """headers: (key, title, width); a negative width aligns left."""
    print("  ".join(f"{t:<{-w}}" if w < 0 else f"{t:>{w}}" for _, t, w in headers))
    for r in rows:
        cells = []
        for k, _, w in headers:
            v = r[k]
            if isinstance(v, float):
                v = f"{v:.2f}x" if k.startswith("vs_") else f"{v:+.1f}" if k == "extra_ns" else \
                    f"{v:+.2f}" if k == "extra_ms" else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
            cells.append(f"{v!s:<{-w}}" if w < 0 else f"{v!s:>{w}}")
        print("  ".join(cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None,
                    help="runs of /bin/true per seccomp config (part 2); parts 1 and 3 get N/10 rounds, at least 5; "
                         "default 100 (20 with --quick)")
    ap.add_argument("--iterations", type=int, default=None,
                    help="calls of each syscall per program run (part 3); default 1000000 (200000 with --quick)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed /bin/true runs per config first; default 3")
    ap.add_argument("--quick", action="store_true", help="a short smoke run: 20 runs, 3 rounds, 200000 iterations")
    ap.add_argument("--python-loop", action="store_true", help="time the Python loop even when gcc is there")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    ap.add_argument("--prepare-child", metavar="POLICY", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.prepare_child:
        _prepare_child(args.prepare_child)
        return 0
    runs = args.runs if args.runs is not None else 20 if args.quick else 100
    iterations = args.iterations if args.iterations is not None else 200_000 if args.quick else 1_000_000
    rounds = 3 if args.quick else max(5, runs // 10)
    if runs < 2:
        ap.error("--runs must be at least 2")
    if iterations < BATCHES:
        ap.error(f"--iterations must be at least {BATCHES}")

    notes: list[str] = []
    t_start = time.perf_counter()
    root = tempfile.mkdtemp(prefix="jailpy-bench-seccomp-")
    try:
        prep_rows, prep_notes = bench_prepare(rounds, root)
        notes += prep_notes
        install_rows = bench_install(runs)
        run_rows = bench_per_run(runs, args.warmup)
        workdir = tempfile.mkdtemp(prefix="loop-", dir=root)
        for d in (root, workdir):  # the sandbox's uid may map to another host uid: let it read and run the loop
            os.chmod(d, 0o755)
        loop, loop_what = build_loop(workdir, args.python_loop, notes)
        sys_rows = bench_syscalls(loop, workdir, rounds, iterations)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    euid = os.geteuid()
    env = {"mode": "root" if euid == 0 else "rootless", "euid": euid, "kernel": platform.release(),
           "python": platform.python_version(), "jailpy": jailpy.__version__, "cpus": os.cpu_count(),
           "load_average": [round(x, 2) for x in os.getloadavg()], "runs": runs, "rounds": rounds,
           "iterations": iterations, "batches": BATCHES, "loop": loop_what, "elapsed_s": round(elapsed, 1),
           "policies": {p: str(seccomp.find(p)) for p in POLICIES}}
    if args.json:
        json.dump({"environment": env, "prepare_ms": prep_rows, "per_run_ms": run_rows, "install_us": install_rows,
                   "syscall_ns": sys_rows,
                   "notes": notes}, sys.stdout, indent=2)
        print()
        return 0

    print(f"jailpy seccomp benchmark: running as {env['mode']} (euid {euid}); kernel {env['kernel']}, "
          f"Python {env['python']}, jailpy {env['jailpy']}, {env['cpus']} CPUs, "
          f"load average {' '.join(map(str, env['load_average']))}; {elapsed:.0f} s")
    print("figures are only comparable as ratios within this one run\n")

    print(f"1. seccomp.prepare(POLICY), ms: {rounds} rounds, policies rotated; vs warm = median / the warm median")
    _table([("policy", "policy", -11), ("state", "state", -37), ("runs", "runs", 4), ("median", "median", 8),
            ("p10", "p10", 8), ("p90", "p90", 8), ("vs_warm", "vs warm", 8)], prep_rows)

    print(f"\n2. Sandbox(Policy(seccomp=X)).run(['/bin/true']), ms: prepared Sandbox, {args.warmup} warm-up runs, "
          f"{runs} rounds, order rotated")
    _table([("seccomp", "seccomp", -11), ("runs", "runs", 4), ("median", "median", 8), ("p10", "p10", 8),
            ("p90", "p90", 8), ("vs_none", "vs none", 8), ("extra_ms", "+ms", 7)], run_rows)
    print(f"   of which seccomp.install(bpf, listener) in PID 1, us: {runs} runs, each in a forked child")
    _table([("policy", "policy", -11), ("runs", "runs", 4), ("median", "median", 8), ("p10", "p10", 8),
            ("p90", "p90", 8), ("insns", "BPF insns", 9), ("listener", "listener", 8)], install_rows)

    print(f"\n3. ns per syscall, timed by the program itself: {loop_what};\n"
          f"   {iterations} calls of each per run in {BATCHES} batches, {rounds} rounds, order rotated; figures over "
          f"all batches,\n   in the thread's CPU time (CLOCK_THREAD_CPUTIME_ID; 'wall med': CLOCK_MONOTONIC); "
          f"vs none = median / seccomp=none's median\n   bpf: 'action cache' = the kernel's per-filter cache "
          f"allows the call without running the BPF; else the instructions it runs")
    _table([("syscall", "syscall", -8), ("config", "run", -11), ("batches", "batches", 7), ("median", "median", 8),
            ("p10", "p10", 8), ("p90", "p90", 8), ("vs_none", "vs none", 8), ("extra_ns", "+ns", 7),
            ("wall_median", "wall med", 8), ("bpf", "bpf", -12)], sys_rows)
    for n in notes:
        print(f"note: {n}")
    print("\npolicies: " + ", ".join(f"{p} = {path}" for p, path in env["policies"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
