"""The cases from ../shared/cases/field-reports.md about limits, time, output and verdicts
(F02, F10, F12, F13, F19, F22, F24, F25), one regression test each, through the real CLI.

F17 (mmap of 1 GiB under --memory 32M is OK) is tests/integration/test_limits.py::
test_address_space_is_not_memory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time

import pytest

from conftest import IS_ROOT, JAILPY, REPO, TIMEOUT, marker_pids, unique_marker
from limits_helpers import (
    MiB, NEEDS_CGROUP, PEAK_SLACK, assert_nothing_left, assert_one_line_error, cpu_s, report_of, run_jail,
)


def _assert_mle(cp, limit: int) -> dict:
    rep = report_of(cp)
    assert cp.returncode == 137, f"exit {cp.returncode}: {cp.stderr[-400:]!r}"
    assert rep["verdict"] == "MLE" and rep["oom_killed"] is True and rep["exit_code"] == 137, rep
    assert rep["limit_fired"] == "memory"
    peak = rep["memory_peak_bytes"]
    assert peak is not None and 0.75 * limit <= peak <= limit + PEAK_SLACK, f"peak {peak} for a limit of {limit}"
    assert b"survived" not in cp.stdout
    return rep


@NEEDS_CGROUP
def test_F02_memory_limit_holds_without_swap(report_path):
    cp = run_jail(report_path, "--memory", "64M", "--wall-time", "20", "--",
                  "python3", "-c", 'x = b"1" * (256 << 20); print("survived")')
    _assert_mle(cp, 64 * MiB)
    assert_nothing_left(cp)


@NEEDS_CGROUP
def test_F10_cpu_time_summed_over_parent_and_child(report_path):
    marker = unique_marker()
    cp = run_jail(report_path, "--cpu-time", "1", "--wall-time", "5", "--",
                  "python3", "-c", "import os; os.fork(); [0 for _ in iter(int, 1)]", marker)
    rep = report_of(cp)
    assert cp.returncode == 137, (cp.returncode, cp.stderr)
    assert rep["verdict"] == "TLE" and rep["limit_fired"] == "cpu_time", rep
    assert 0.9 <= cpu_s(rep) <= 1.6, cpu_s(rep)
    assert rep["wall_s"] < 5
    assert_nothing_left(cp, marker)


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
def test_F12_unprivileged_without_a_delegated_cgroup_refuses():
    # root: a forked child that drops to uid 1001; rootless: the current user.  Either way no
    # JAILPY_CGROUP_PARENT and no --cgroup-parent, on a host where / of the cgroup tree is root's
    env = {k: v for k, v in os.environ.items() if k != "JAILPY_CGROUP_PARENT"}
    env["HOME"] = "/tmp"
    as_user = {"user": 1001, "group": 1001, "extra_groups": []} if IS_ROOT else {}
    canary = f"RAN-{secrets.token_hex(4)}"
    p = subprocess.run([*JAILPY, "--memory", "64M", "--", "sh", "-c", f"echo {canary}"], cwd=REPO, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, **as_user)
    if IS_ROOT and p.returncode != 125 and b"No module named" in p.stderr:
        pytest.skip("uid 1001 cannot read this checkout")
    assert canary.encode() not in p.stdout, "the program ran without its memory limit"
    msg = assert_one_line_error(p, "memory")  # the controller
    assert "/sys/fs/cgroup" in msg, f"no cgroup path named: {msg}"
    assert any(fix in msg for fix in ("--cgroup-parent", "JAILPY_CGROUP_PARENT", "chown", "systemd-run")), \
        f"no fix named: {msg}"


@NEEDS_CGROUP
def test_F13_memory_limit_python(report_path):
    cp = run_jail(report_path, "--memory", "512M", "--wall-time", "30", "--",
                  "python3", "-c", 'x = b"1" * (800 << 20); print("survived")', timeout=60)
    _assert_mle(cp, 512 * MiB)
    assert_nothing_left(cp)


C_BOMB = r"""
#include <stdio.h>
static char big[800UL << 20];
int main(void) {
    volatile char *p = big;
    for (unsigned long i = 0; i < sizeof big; i += 4096)
        p[i] = 1;
    puts("survived");
    return 0;
}
"""


@NEEDS_CGROUP
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed (tests/run.sh installs it)")
def test_F13_memory_limit_c_global_array(tmp_path, report_path):
    d = tmp_path / "prog"
    d.mkdir()
    (d / "bomb.c").write_text(C_BOMB)
    subprocess.run(["gcc", "-O0", "-o", str(d / "bomb"), str(d / "bomb.c")], check=True, timeout=60)
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o755)
    os.chmod(d / "bomb", 0o755)
    cp = run_jail(report_path, "--memory", "512M", "--wall-time", "30", "--ro-bind", str(d), "--",
                  str(d / "bomb"), timeout=60)
    _assert_mle(cp, 512 * MiB)
    assert_nothing_left(cp)


@NEEDS_CGROUP
def test_F19_ten_sandboxes_of_one_user_each_with_pids_20(tmp_path):
    # sleep durations no other process has: 3.<random> seconds
    marker = f"3.{secrets.randbelow(10**9):09d}"
    script = f"for i in $(seq 15); do sleep {marker} & done; wait; echo done"
    procs = [subprocess.Popen([*JAILPY, "--pids", "20", "--wall-time", "30", "--", "sh", "-c", script], cwd=REPO,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(10)]
    most = 0
    try:
        deadline = time.monotonic() + 60
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            most = max(most, len(marker_pids(marker)))
            time.sleep(0.05)
        results = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and out == b"done\n", (p.returncode, out, err)
        assert b"fork" not in err.lower(), err
    print(f"F19: at most {most} of the 10 x 15 sleeps ran at once")
    assert most > 20, f"only {most} sleeps at once: the 10 sandboxes did not run side by side"
    assert_nothing_left(None, marker)
    assert marker_pids(marker) == []


@NEEDS_CGROUP
def test_F22_jailpy_survives_a_limit_its_own_size_would_not_fit(report_path):
    cp = run_jail(report_path, "--memory", "1G", "--wall-time", "30", "--",
                  "python3", "-c", 'a = "a" * (2 << 30); print("survived")', timeout=60)
    _assert_mle(cp, 1 << 30)
    assert_nothing_left(cp)


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
def test_F24_verdict_from_the_oom_event_not_the_exit_code(tmp_path):
    cp = run_jail(tmp_path / "oom.json", "--memory", "128M", "--wall-time", "20", "--",
                  "python3", "-c", 'x = b"1" * (512 << 20); print("survived")')
    _assert_mle(cp, 128 * MiB)
    cp = run_jail(tmp_path / "exit.json", "--memory", "128M", "--", "python3", "-c", "raise SystemExit(137)")
    rep = report_of(cp)
    assert cp.returncode == 137
    assert rep["verdict"] == "RE" and rep["exit_code"] == 137 and rep["signal"] is None, rep
    assert rep["oom_killed"] is False and rep["limit_fired"] is None


@pytest.mark.parametrize("code,stream", [
    ('import os; os.write(1, b"h" * 10**7)', "stdout"),
    ('import os; os.write(2, b"h" * 10**7)', "stderr"),
    ('import os\nwhile True: os.write(1, b"h")', "stdout"),
    ('import os\nwhile True: os.write(2, b"h")', "stderr"),
], ids=["stdout", "stderr", "tiny-stdout", "tiny-stderr"])
def test_F25_output_limit(report_path, code, stream):
    cp = run_jail(report_path, "--output-limit", "1K", "--wall-time", "10", "--", "python3", "-c", code)
    rep = report_of(cp)
    data = cp.stdout if stream == "stdout" else cp.stderr
    kept = len(data) - len(data.lstrip(b"h"))
    assert kept <= 1024 and b"hh" not in data[kept:], f"{kept} bytes of the flood reached the caller"
    assert rep["verdict"] == "OLE" and rep[f"{stream}_truncated"] is True, rep
    assert cp.returncode == 137
    assert rep["wall_s"] < 3, "not killed promptly"
    assert_nothing_left(cp)
