"""What the report says a run used (issue 3): CPU time, memory peak, process peak, output bytes,
and how exact those numbers are.  A judge decides on them, so they are checked against what the
program itself measured or allocated.

Accuracy targets: a program that allocates and touches exactly N MiB reports a memory peak within
5% of N MiB + the runtime's base (the same program with N = 0); a busy loop's reported CPU time is
within 5% + 10 ms of its own time.process_time().
"""

from __future__ import annotations

import re

import pytest

import jailpy
from conftest import jail
from limits_helpers import HAVE_CGROUP, MiB, NEEDS_CGROUP, cpu_s, report_of, run_jail

TOUCH = (
    "import sys, time\n"
    "n = int(sys.argv[1]) << 20\n"
    "b = bytearray(n)\n"
    "b[::4096] = b'\\1' * len(range(0, n, 4096))  # touch every page\n"
    "time.sleep(0.1)\n"
    "print(len(b))\n"
)


def _peak(tmp_path, mib: int) -> int:
    cp = run_jail(tmp_path / f"touch{mib}.json", "--memory", "1G", "--", "python3", "-c", TOUCH, str(mib))
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert int(cp.stdout) == mib * MiB
    assert rep["memory_peak_bytes"] is not None, rep
    return rep["memory_peak_bytes"]


@NEEDS_CGROUP
@pytest.mark.parametrize("mib", [64, 128])
def test_memory_peak_is_accurate(tmp_path, mib):
    base = _peak(tmp_path, 0)
    peak = _peak(tmp_path, mib)
    want = base + mib * MiB
    print(f"memory accuracy: N={mib} MiB base={base / MiB:.2f} MiB peak={peak / MiB:.2f} MiB "
          f"error={(peak - want) / MiB:+.2f} MiB ({(peak - want) / want:+.2%})")
    assert abs(peak - want) <= 0.05 * want, (
        f"peak {peak / MiB:.1f} MiB for {mib} MiB touched on a base of {base / MiB:.1f} MiB")


SPIN = (
    "import time\n"
    "t0 = time.process_time()\n"
    "while time.process_time() - t0 < 1.0: pass\n"
    "print(time.process_time())\n"
)


@pytest.mark.parametrize("flags", [
    pytest.param((), id="default"),
    pytest.param(("--pids", "100", "--memory", "512M"), id="cgroup", marks=NEEDS_CGROUP),
])
def test_cpu_time_is_accurate(report_path, flags):
    cp = run_jail(report_path, *flags, "--", "python3", "-c", SPIN)
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    own = float(cp.stdout)
    got = cpu_s(rep)
    print(f"cpu accuracy ({'+'.join(flags) or 'default'}): own={own:.4f} s report={got:.4f} s "
          f"error={got - own:+.4f} s")
    assert abs(got - own) <= 0.05 * own + 0.010, f"report {got:.3f} s, program measured {own:.3f} s"


@NEEDS_CGROUP
def test_cpu_time_of_parent_and_children_is_summed(report_path):
    # two children spin 0.5 s each while the parent waits: ~1 s of CPU in ~0.5 s of wall time
    code = ("import os, time\n"
            "for _ in range(2):\n"
            "    if os.fork() == 0:\n"
            "        t0 = time.process_time()\n"
            "        while time.process_time() - t0 < 0.5: pass\n"
            "        os._exit(0)\n"
            "os.wait(); os.wait()\n")
    cp = run_jail(report_path, "--memory", "256M", "--", "python3", "-c", code)
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert 1.0 <= cpu_s(rep) <= 1.3, cpu_s(rep)


@NEEDS_CGROUP
def test_pids_peak_counts_processes_at_once(report_path):
    # sh and 5 sleeps at once (plus what jailpy keeps in the sandbox: PID 1, at most a helper)
    cp = run_jail(report_path, "--pids", "50", "--", "sh", "-c",
                  "for i in 1 2 3 4 5; do sleep 0.5 & done; wait")
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert 6 <= rep["pids_peak"] <= 9, rep["pids_peak"]


@NEEDS_CGROUP
def test_a_normal_run_is_not_oom_killed(report_path):
    cp = run_jail(report_path, "--memory", "256M", "--pids", "50", "--cpu-time", "5", "--", "true")
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert rep["verdict"] == "OK" and rep["oom_killed"] is False and rep["limit_fired"] is None
    assert rep["memory_peak_bytes"] > 0 and rep["pids_peak"] >= 1


def test_output_bytes_are_counted(report_path):
    code = "import os\nos.write(1, b'o' * 12345)\nos.write(2, b'e' * 678)\n"
    cp = run_jail(report_path, "--output-limit", "1M", "--", "python3", "-c", code)
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"o" * 12345 and cp.stderr == b"e" * 678
    assert rep["stdout_bytes"] == 12345 and rep["stderr_bytes"] == 678
    assert rep["stdout_truncated"] is False and rep["stderr_truncated"] is False


def test_output_bytes_through_the_api():
    res = jailpy.run(["python3", "-c", "import os\nos.write(1, b'o' * 5000)\nos.write(2, b'e' * 7)"],
                     jailpy.Policy(output_limit="64K"), stdin=jailpy.DEVNULL, capture_output=True)
    assert res.exit_code == 0, res.stderr
    assert res.stdout == b"o" * 5000 and res.stderr == b"e" * 7
    assert res.stdout_bytes == 5000 and res.stderr_bytes == 7


REPORT_KEYS = {
    "schema_version": int, "verdict": str, "exit_code": int, "signal": (int, type(None)), "wall_s": float,
    "cpu_user_s": float, "cpu_sys_s": float, "max_rss_bytes": (int, type(None)),
    "memory_peak_bytes": (int, type(None)), "pids_peak": (int, type(None)), "oom_killed": bool,
    "stdout_bytes": (int, type(None)), "stderr_bytes": (int, type(None)), "stdout_truncated": bool,
    "stderr_truncated": bool, "limit_fired": (str, type(None)), "blocked_syscall": (dict, type(None)),
    "error": (str, type(None)), "protections": dict, "jailpy_version": str, "policy_hash": str,
}


def test_report_schema_with_limits(report_path):
    flags = ["--memory", "256M", "--pids", "64", "--cpu-time", "5"] if HAVE_CGROUP else []
    cp = run_jail(report_path, *flags, "--fsize", "8M", "--nofile", "64", "--stack", "8M", "--wall-time", "30",
                  "--", "true")
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    for key, typ in REPORT_KEYS.items():
        assert key in rep, f"report has no {key!r}"
        assert isinstance(rep[key], typ), f"{key}: {rep[key]!r}"
    prot = rep["protections"]
    assert prot["wall_time"] == {"seconds": 30, "source": "policy"}
    rl = prot["rlimits"]
    assert rl["core"] in (0, [0, 0]), rl
    assert rl["fsize"] in (8 * MiB, [8 * MiB, 8 * MiB]) and rl["nofile"] in (64, [64, 64]), rl
    assert rl["stack"] in (8 * MiB, [8 * MiB, 8 * MiB]), rl
    if HAVE_CGROUP:
        cg = prot["cgroup"]
        assert isinstance(cg, dict) and cg.get("version") in (1, 2), cg
        assert rep["memory_peak_bytes"] > 0 and rep["pids_peak"] >= 1


def test_stats_prints_a_table_on_stderr():
    p = jail("--stats", "--", "sh", "-c", "echo hi; exit 3")
    assert p.returncode == 3
    assert p.stdout == b"hi\n"
    err = p.stderr.decode()
    assert re.search(r"\bRE\b", err), err  # the verdict
    assert "cpu" in err.lower() and "wall" in err.lower(), err
