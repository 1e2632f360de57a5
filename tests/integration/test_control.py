"""Named sandboxes and their control (issue 3, section 5): ``jailpy exec --name NAME``,
``jailpy ps [--json]``, ``jailpy pause NAME``, ``jailpy resume NAME``, ``jailpy kill NAME``.

Pause and resume are checked against the kernel's own accounting of the program's CPU time
(/proc/PID/stat utime + stime, read on the host), not against what jailpy says.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import time

import pytest

from conftest import JAILPY, REPO, TIMEOUT, jail, unique_marker
from limits_helpers import (
    NEEDS_CGROUP, TIME_FACTOR, assert_nothing_left, assert_one_line_error, ctl, leftover_cgroups, proc_cpu_seconds,
    program_pids,
)

# busy: prints a progress line about every 50 ms of CPU
BUSY = (
    "import time\n"
    "n = 0\n"
    "t = time.process_time()\n"
    "while True:\n"
    "    n += 1\n"
    "    if time.process_time() - t >= 0.05:\n"
    "        t = time.process_time()\n"
    "        print(n, flush=True)\n"
)


def _name() -> str:
    return f"T-{secrets.token_hex(6)}"


class Named:
    """A background ``jailpy exec --name NAME --report PATH -- python3 -c BUSY MARKER``."""

    def __init__(self, name: str, report_path, *extra: str) -> None:
        self.name = name
        self.marker = unique_marker()
        self.report_path = report_path
        self.p = subprocess.Popen([*JAILPY, "--name", name, "--report", str(report_path), "--wall-time", "60", *extra,
                                   "--", "python3", "-c", BUSY, self.marker], cwd=REPO, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = b""
        try:
            self.pid = self._program_pid()
        except BaseException:
            self.close()
            raise

    def _program_pid(self) -> int:
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.p.poll() is not None:
                raise AssertionError(f"jailpy exited {self.p.returncode}: {self.p.stderr.read()!r}")
            pids = program_pids(self.marker)
            if pids and self.read(0.05):  # running and printing progress
                assert len(pids) == 1, pids
                return pids[0]
            time.sleep(0.01)
        raise AssertionError("the named sandbox never started its program")

    def read(self, wait: float) -> bytes:
        """What the program printed within ``wait`` seconds (nothing waits longer)."""
        got = b""
        end = time.monotonic() + wait
        fd = self.p.stdout.fileno()
        while True:
            left = end - time.monotonic()
            r, _, _ = select.select([fd], [], [], max(left, 0))
            if not r:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            got += chunk
            if left <= 0:
                break
        self.out += got
        return got

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def close(self) -> bool:
        """End the sandbox: ``jailpy kill NAME`` (jailpy then exits and cleans up), SIGKILL of jailpy
        as a fallback.  True if jailpy ended on its own (so its cgroups must be gone)."""
        if self.p.poll() is None:
            ctl("kill", self.name)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()  # the sandbox dies with jailpy; its cgroup is left for a later sweep
                self.p.communicate(timeout=TIMEOUT)
                return False
        self.p.communicate(timeout=TIMEOUT)
        return True


@pytest.fixture
def named(report_path):
    box = Named(_name(), report_path)
    try:
        yield box
    finally:
        clean = box.close()
        assert_nothing_left(None, box.marker)
        assert not clean or leftover_cgroups(box.p.pid) == []


def _ps_json() -> list[dict]:
    p = ctl("ps", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert isinstance(rows, list), rows
    return rows


@NEEDS_CGROUP
def test_ps_lists_a_named_sandbox(named):
    p = ctl("ps")
    assert p.returncode == 0, p.stderr
    assert named.name.encode() in p.stdout
    (row,) = [r for r in _ps_json() if r.get("name") == named.name]
    assert row["pid"] == named.p.pid


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
def test_pause_stops_cpu_use_and_resume_continues(named):
    assert named.cpu() > 0
    p = ctl("pause", named.name)
    assert p.returncode == 0, p.stderr
    named.read(0.1)  # progress printed before the freeze, still in the pipe
    c1 = named.cpu()
    out = named.read(0.5)
    c2 = named.cpu()
    assert c2 - c1 < 0.02, f"a paused sandbox used {c2 - c1:.3f} s CPU in 0.5 s"
    assert out == b"", f"a paused sandbox printed {out[:100]!r}"
    assert named.p.poll() is None, "pause ended the sandbox"
    p = ctl("resume", named.name)
    assert p.returncode == 0, p.stderr
    c3 = named.cpu()
    out = named.read(0.5)
    c4 = named.cpu()
    assert c4 - c3 > 0.2, f"a resumed sandbox used only {c4 - c3:.3f} s CPU in 0.5 s"
    assert out, "a resumed sandbox printed nothing"


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
def test_kill_ends_the_sandbox_137(named):
    t0 = time.monotonic()
    p = ctl("kill", named.name)
    assert p.returncode == 0, p.stderr
    named.p.wait(timeout=10)
    assert named.p.returncode == 137
    assert time.monotonic() - t0 < 3 * TIME_FACTOR
    rep = json.loads(named.report_path.read_bytes())
    assert rep["exit_code"] == 137 and rep["signal"] == 9 and rep["verdict"] != "OK"
    assert_nothing_left(None, named.marker)
    assert leftover_cgroups(named.p.pid) == []
    assert named.name not in [r.get("name") for r in _ps_json()]
    # the name is free again
    p = jail("--name", named.name, "--", "true")
    assert p.returncode == 0, p.stderr


@NEEDS_CGROUP
def test_kill_of_a_paused_sandbox(named):
    assert ctl("pause", named.name).returncode == 0
    p = ctl("kill", named.name)
    assert p.returncode == 0, p.stderr
    named.p.wait(timeout=10)
    assert named.p.returncode == 137
    assert_nothing_left(None, named.marker)


@NEEDS_CGROUP
def test_name_in_use_is_refused(named):
    p = jail("--name", named.name, "--", "sh", "-c", "echo RAN")
    assert_one_line_error(p, named.name)
    assert named.p.poll() is None, "the first sandbox was disturbed"


@pytest.mark.parametrize("bad", ["../x", "", "a b", "a/b", ".hidden", "x" * 300, "-x"])
def test_bad_names_are_refused(bad):
    p = jail(f"--name={bad}", "--", "sh", "-c", "echo RAN")
    msg = assert_one_line_error(p, "name")
    assert "cgroup" not in msg, f"refused for want of a cgroup, not for the name: {msg}"


@pytest.mark.parametrize("action", ["pause", "resume", "kill"])
def test_control_of_an_unknown_name_is_refused(action):
    name = _name()
    p = ctl(action, name)
    assert_one_line_error(p, name)


@pytest.mark.parametrize("action", ["pause", "resume", "kill"])
def test_control_with_a_bad_name_is_refused(action):
    p = ctl(action, "../x")
    assert_one_line_error(p, "name")


def test_ps_with_nothing_named_of_ours():
    rows = _ps_json()
    assert all(isinstance(r, dict) and "name" in r for r in rows)
