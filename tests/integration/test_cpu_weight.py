"""--cpu-weight (issue 16, item 2): CPU priority between sandboxes.  Two busy sandboxes on one CPU
(--cpuset 0) share it in proportion to their weights: cgroup v2 cpu.weight, v1 cpu.shares mapped
as runc and crun map them (jailpy.cgroups.shares_of_weight).  Real cgroups, real CFS."""

from __future__ import annotations

import subprocess
import time

import pytest

from conftest import JAILPY, REPO, TIMEOUT, last_json
from limits_helpers import NEEDS_CGROUP, TIME_FACTOR

from jailpy.cgroups import shares_of_weight
from jailpy.errors import PolicyError

# busy from the wall-clock instant argv[1] to argv[1] + argv[2] seconds (both sandboxes at once,
# whatever their start-up took), then print the CPU seconds this process got in that window
BUSY = ("import sys, time\n"
        "start, length = float(sys.argv[1]), float(sys.argv[2])\n"
        "while time.time() < start: time.sleep(0.001)\n"
        "c0 = time.process_time()\n"
        "while time.time() < start + length: pass\n"
        "print(time.process_time() - c0)\n")


def test_shares_follow_runc_and_crun():
    # runc ConvertCPUSharesToCgroupV2Value: weight = 1 + (shares - 2) * 9999 / 262142; jailpy inverts it
    assert (shares_of_weight(1), shares_of_weight(10000)) == (2, 262144)
    for w in (1, 2, 50, 100, 300, 1000, 9999, 10000):
        assert 1 + (shares_of_weight(w) - 2) * 9999 // 262142 in (w - 1, w)


@pytest.mark.parametrize("bad", ["0", "10001", "-5", "1.5", "x"])
def test_out_of_range_weights_are_refused(bad):
    p = subprocess.run([*JAILPY, "--cpu-weight", bad, "--", "true"], capture_output=True, timeout=TIMEOUT, cwd=REPO)
    assert p.returncode == 125 and p.stderr.startswith(b"jailpy: error:") and p.stderr.count(b"\n") == 1, p.stderr
    with pytest.raises(PolicyError):
        from jailpy.policy import Policy
        Policy(cpu_weight=int(bad) if bad.lstrip("-").isdigit() else 0).validate()


def test_no_cgroup_refuses_a_weight():
    p = subprocess.run([*JAILPY, "--no-cgroup", "--cpu-weight", "200", "--", "true"], capture_output=True,
                       timeout=TIMEOUT, cwd=REPO)
    assert p.returncode == 125 and b"cpu-weight" in p.stderr.replace(b"_", b"-"), p.stderr


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
def test_two_busy_sandboxes_on_one_cpu_share_it_by_weight():
    """Weights 100 and 300 on CPU 0: the second gets three times the CPU of the first, within 10%,
    over the same window (other load on CPU 0 takes from both alike: CFS divides what their
    common parent gets by the weights of its children)."""
    length = 3.0 * TIME_FACTOR
    start = time.time() + 5.0 * TIME_FACTOR  # both are running by then
    procs = [subprocess.Popen([*JAILPY, "--report", "-", "--cpuset", "0", "--cpu-weight", str(w),
                               "--wall-time", str(60 * TIME_FACTOR), "--", "python3", "-c", BUSY, str(start), str(length)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
             for w in (100, 300)]
    got = []
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT + 70 * TIME_FACTOR)
        assert p.returncode == 0, err[-1500:]
        report = last_json(err)[1]
        assert report["protections"]["cgroup"]["limits"]["cpu_weight"] in (100, 300)
        got.append(float(out.split()[-1]))
    low, high = got
    assert time.time() > start + length, "the window had not passed: the sandboxes did not overlap"
    assert low > 0.05 * length, f"the weight-100 sandbox got almost no CPU: {got}"
    ratio = high / low
    assert 3 * 0.9 <= ratio <= 3 * 1.1, f"CPU seconds {got}: ratio {ratio:.2f}, expected 3 (weights 300:100)"
