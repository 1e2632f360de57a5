"""The syscall fuzzer (fuzz/syscall_fuzz.py) in CI: a short seeded pass must hold every invariant,
each invariant must be able to fail (--inject), runs must be reproducible, and the generator must
refuse to run outside a sandbox.  As root and rootless (with a cgroup when JAILPY_CGROUP_PARENT
names a delegated one, else without: the fuzzer says so in its report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import IS_ROOT, REPO

FUZZ = REPO / "fuzz"
sys.path.insert(0, str(FUZZ))

import syscall_fuzz  # noqa: E402
import syscall_gen  # noqa: E402

RUN_TIMEOUT = 120  # seconds for one fuzzer run (the short passes take a few)
INVARIANTS = ("canaries", "signals", "processes", "result", "seccomp")


def fuzz(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the fuzzer with ``args`` and return (process, its --json report)."""
    out = tmp_path / "report.json"
    p = subprocess.run([sys.executable, str(FUZZ / "syscall_fuzz.py"), "--json", str(out), *args],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT, cwd=REPO)
    assert out.exists(), f"no report; exit {p.returncode}\n{p.stdout.decode()}\n{p.stderr.decode()}"
    return p, json.loads(out.read_text())


def test_short_seeded_pass_holds_every_invariant(tmp_path):
    p, rep = fuzz(tmp_path, "--count", "3000", "--seconds", "10", "--seed", "1")
    text = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 0, text
    assert rep["ok"] and all(rep["invariants"][k] == [] for k in INVARIANTS), text
    s = rep["summary"]
    assert s["stopped"] == "count" and s["error"] is None, text
    # the calls really ran: most of the 3000 completed, over most of the table, and the filter was hit
    assert s["calls"] + s["crashes"] + s["hangs"] == 3000, s
    assert s["calls"] >= 2800 and s["distinct_syscalls"] >= 400, s
    assert rep["result"]["blocked_syscall"]["count"] >= 100, rep["result"]["blocked_syscall"]
    assert rep["seccomp_check"]["notified_denials_seen"] >= 100, rep["seccomp_check"]
    assert rep["result"]["verdict"] == "OK" and rep["result"]["exit_code"] == 0
    if IS_ROOT or os.environ.get("JAILPY_CGROUP_PARENT"):
        assert rep["cgroup"] is not None, "a cgroup could be had, but the run went without"
        assert rep["cgroup"]["limits"]["memory"] == 256 << 20 and rep["cgroup"]["limits"]["pids"] == 64
    else:
        assert any("no cgroup" in n for n in rep["notes"]), rep["notes"]
    assert "ALL INVARIANTS HOLD" in text and "--seed 1" in text


def test_the_call_plan_is_reproducible_from_the_seed(tmp_path):
    """The plan the generator ran inside the sandbox is the one the host computes from the seed."""
    p, rep = fuzz(tmp_path, "--count", "1000", "--seconds", "10", "--seed", "7")
    assert p.returncode == 0, p.stdout.decode()
    names, numbers, high = syscall_fuzz.syscall_table()
    assert rep["summary"]["plan_digest"] == syscall_gen.plan_digest(7, 0, 1000, numbers, high)
    assert syscall_gen.plan_digest(8, 0, 1000, numbers, high) != rep["summary"]["plan_digest"]
    # --show prints the same calls every time, and never the calls the generator must skip
    show = [sys.executable, str(FUZZ / "syscall_fuzz.py"), "--seed", "7", "--show", *map(str, range(200))]
    a = subprocess.run(show, capture_output=True, timeout=60, check=True).stdout
    assert a == subprocess.run(show, capture_output=True, timeout=60, check=True).stdout
    lines = a.decode().splitlines()
    assert len(lines) == 200
    for bad in syscall_gen.NEVER:
        assert not any(line.split(": ", 1)[1].startswith(bad + "(") for line in lines), bad


@pytest.mark.parametrize("inject,invariant", [("ro-writable", "canaries"), ("signal", "signals"),
                                              ("stray", "processes"), ("seccomp", "seccomp")])
def test_each_invariant_can_fail(tmp_path, inject, invariant):
    """--inject breaks one invariant on purpose; the fuzzer must notice it and exit 1."""
    p, rep = fuzz(tmp_path, "--count", "600", "--seconds", "5", "--seed", "2", "--inject", inject)
    text = p.stdout.decode()
    assert p.returncode == 1, text
    assert rep["invariants"][invariant], text
    assert "INVARIANT VIOLATED" in text
    others = [k for k in INVARIANTS if k != invariant and rep["invariants"].get(k)]
    assert others == [], text


def test_generator_refuses_to_run_outside_a_sandbox(tmp_path):
    """The generator must never fuzz the host: started directly, it exits 3 before any call."""
    cfg = {"require_seccomp": True, "count": 0, "seconds": 0.001}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    p = subprocess.run([sys.executable, str(FUZZ / "syscall_gen.py"), str(tmp_path / "c.json"), "m"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert b"refusing to run outside a sandbox" in p.stderr
    assert syscall_gen.inside_sandbox(True) is not None
