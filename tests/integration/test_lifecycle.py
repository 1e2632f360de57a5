"""Nothing outlives the sandbox: killing jailpy, the program's end, the wall-time limit; and
the times jailpy reports.  Processes are found on the host by a unique argument (a sleep
duration no other process on the machine has)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import jailpy
from conftest import JAILPY, REPO, TIMEOUT, jail, jail_report, unique_marker, wait_for_marker, wait_gone


def _spawn(marker: str) -> subprocess.Popen:
    return subprocess.Popen([*JAILPY, "--", "sh", "-c", f"sleep {marker} & sleep {marker}"], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigkill_of_jailpy_mid_run_leaves_nothing():
    marker = unique_marker()
    p = _spawn(marker)
    try:
        assert len(wait_for_marker(marker, count=2)) == 2, "the sandboxed sleeps never started"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=TIMEOUT)
    assert wait_gone(marker, 5.0) == [], "sandboxed processes survived jailpy's SIGKILL"


def test_sigkill_of_jailpy_at_random_early_moments_leaves_nothing():
    marker = unique_marker()
    # calibrate: how long from exec to a running sandboxed program on this machine
    t0 = time.monotonic()
    p = _spawn(marker)
    try:
        assert wait_for_marker(marker, count=2), "the sandboxed sleeps never started"
        ready = time.monotonic() - t0
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=TIMEOUT)
    # then kill 20 runs at moments spread over start-up: interpreter start, namespace set-up,
    # id maps, rootfs, fork of the program (1 ms .. a bit after the sleeps ran)
    rng = random.Random(marker)
    for i in range(20):
        p = _spawn(marker)
        time.sleep(0.001 + (ready + 0.02) * (i + rng.random()) / 20)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=TIMEOUT)
    assert wait_gone(marker, 5.0) == [], "a sandboxed process survived an early SIGKILL of jailpy"


def test_descendants_die_when_the_program_ends():
    marker = unique_marker()
    # the payload starts a detached sleep (own session, like a daemon), waits until it runs,
    # then exits 0; the sleep must not outlive it
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen(['sleep', sys.argv[1]], start_new_session=True)\n"
        "end = time.monotonic() + 10\n"
        "while time.monotonic() < end:\n"
        "    if sys.argv[1].encode() in open(f'/proc/{p.pid}/cmdline', 'rb').read(): break\n"
        "    time.sleep(0.005)\n"
        "print('started', flush=True)\n"
    )
    t0 = time.monotonic()
    p = jail("--", "python3", "-c", code, marker, timeout=15)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"started\n"
    assert time.monotonic() - t0 < 10, "jailpy waited for the background sleep"
    assert wait_gone(marker, 5.0) == []


def test_shell_background_job_dies_when_the_shell_exits():
    marker = unique_marker()
    p = jail("--", "sh", "-c", f"sleep {marker} & exit 0", timeout=15)
    assert p.returncode == 0, p.stderr
    assert wait_gone(marker, 5.0) == []


def test_wall_time_limit_kills_the_sandbox(report_path):
    marker = unique_marker()
    t0 = time.monotonic()
    p, rep = jail_report(report_path, "--wall-time", "0.5", "--", "sh", "-c", f"sleep {marker} & sleep {marker}")
    elapsed = time.monotonic() - t0
    assert p.returncode == 137
    assert rep["verdict"] == "WLE" and rep["exit_code"] == 137 and rep["limit_fired"] == "wall_time"
    assert 0.5 <= rep["wall_s"] < 3
    assert elapsed < 5
    assert wait_gone(marker, 5.0) == []


def test_wall_time_not_reached():
    res = jailpy.run(["sh", "-c", "exit 0"], jailpy.Policy(wall_time=5), stdin=jailpy.DEVNULL, capture_output=True)
    assert res.verdict == jailpy.Verdict.OK and res.limit_fired is None and res.wall_s < 5


def test_cpu_time_of_a_busy_loop_is_reported():
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    res = jailpy.run(["python3", "-c", spin], stdin=jailpy.DEVNULL, capture_output=True)
    assert res.exit_code == 0, res.stderr
    assert res.cpu_user_s + res.cpu_sys_s > 0.2
    assert res.wall_s >= 0.25
    # the children of the program count too (it is the whole sandbox's time)
    res = jailpy.run(["sh", "-c", f"python3 -c '{spin}'; true"], stdin=jailpy.DEVNULL, capture_output=True)
    assert res.exit_code == 0, res.stderr
    assert res.cpu_user_s + res.cpu_sys_s > 0.2


def test_idle_program_uses_little_cpu():
    res = jailpy.run(["sleep", "0.3"], stdin=jailpy.DEVNULL, capture_output=True)
    assert res.exit_code == 0
    assert res.wall_s >= 0.3
    assert res.cpu_user_s + res.cpu_sys_s < 0.2


def test_wall_time_kill_still_reports_the_cpu_time_spent(report_path):
    # a judge reads CPU time for every verdict, WLE too: PID 1 ends the run and reports it
    marker = unique_marker()
    p, rep = jail_report(report_path, "--wall-time", "1", "--", "sh", "-c",
                         f"python3 -c 'while 1: pass' {marker} & python3 -c 'while 1: pass' {marker}")
    assert p.returncode == 137
    assert rep["verdict"] == "WLE" and rep["limit_fired"] == "wall_time" and rep["signal"] == 9
    # two busy loops for a second: up to 2 s of CPU on an idle host; a loaded one gives them less
    assert rep["cpu_user_s"] + rep["cpu_sys_s"] >= 0.2, rep
    assert wait_gone(marker) == []
