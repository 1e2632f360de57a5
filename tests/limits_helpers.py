"""Helpers for the resource-limit, accounting and control tests (issue 3).

Everything drives the real ``jailpy`` CLI in a subprocess on real cgroups; nothing is mocked.

Cgroups and who runs the tests: as root jailpy makes its own parent cgroup; an unprivileged
user gets limits only under a parent an administrator delegated (chowned) to it, passed as
``--cgroup-parent`` or in the environment variable ``JAILPY_CGROUP_PARENT`` (tests/run.sh
sets one up for its rootless run).  Tests that need a cgroup are marked :data:`NEEDS_CGROUP`
and are skipped rootless without that variable.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import IS_ROOT, JAILPY, REPO, TIMEOUT

MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
# how far memory_peak_bytes may be above the --memory limit: the kernel's page counter never lets
# usage pass memory.max / memory.limit_in_bytes (mm/page_counter.c), so the peak should be at most the
# limit; 2 MiB is the contract's "small slack" (page rounding of what jailpy reports)
PEAK_SLACK = 2 * MiB

CGROUP_PARENT = os.environ.get("JAILPY_CGROUP_PARENT") or None
HAVE_CGROUP = IS_ROOT or CGROUP_PARENT is not None
NEEDS_CGROUP = pytest.mark.skipif(not HAVE_CGROUP, reason="no delegated cgroup (set JAILPY_CGROUP_PARENT)")


def jailpy_cmd(*args: str) -> list[str]:
    """argv for ``jailpy ARGS...`` (any subcommand: ps, pause, resume, kill, exec)."""
    return [sys.executable, "-m", "jailpy", *args]


def ctl(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``jailpy ARGS...`` (e.g. ``ctl("pause", name)``) and capture its output (bytes)."""
    return subprocess.run(jailpy_cmd(*args), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          cwd=REPO)


def run_jail(report_path: Path | None, *args: str, timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
    """Run ``jailpy exec [--report report_path] ARGS...``; the CompletedProcess also carries
    ``pid`` (jailpy's own pid: its cgroups are named ``jailpy-<pid>-<n>``), ``elapsed`` (seconds,
    as the caller saw it) and ``report`` (the parsed JSON, or None when no report was written)."""
    cmd = [*JAILPY, *(["--report", str(report_path)] if report_path else []), *args]
    kw.setdefault("cwd", REPO)
    kw.setdefault("stdin", subprocess.DEVNULL)
    t0 = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()  # the sandbox dies with jailpy
            p.communicate()
            raise
    cp = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    cp.pid = p.pid
    cp.elapsed = time.monotonic() - t0
    cp.report = None
    if report_path is not None and report_path.exists() and report_path.stat().st_size:
        try:
            cp.report = json.loads(report_path.read_bytes())
        except ValueError:
            raise AssertionError(f"--report is not JSON: {report_path.read_bytes()[:300]!r}") from None
    return cp


def report_of(cp: subprocess.CompletedProcess) -> dict:
    """The report of a :func:`run_jail` run; fails the test (with jailpy's stderr) if there is none."""
    assert cp.report is not None, f"no --report written; exit {cp.returncode}, stderr={cp.stderr[-600:]!r}"
    return cp.report


def cpu_s(rep: dict) -> float:
    """User + system CPU seconds of a report."""
    return rep["cpu_user_s"] + rep["cpu_sys_s"]


def assert_one_line_error(p: subprocess.CompletedProcess, *words: str) -> str:
    """jailpy's own error: exit 125, exactly one line ``jailpy: error: ...`` on stderr, nothing on
    stdout, and each of ``words`` (case-insensitive) in it.  Returns the line."""
    msg = p.stderr.decode(errors="replace")
    assert p.returncode == 125, f"exit {p.returncode}, expected 125; stderr={msg!r} stdout={p.stdout[:200]!r}"
    assert msg.count("\n") == 1 and msg.endswith("\n"), f"expected one line on stderr, got {msg!r}"
    assert msg.startswith("jailpy: error: "), msg
    assert p.stdout == b"", p.stdout[:200]
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not named in {msg!r}"
    return msg


def find_key(obj, key: str):
    """The first value stored under ``key`` anywhere in nested dicts/lists ``obj``, or None."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        items = obj.values()
    elif isinstance(obj, list):
        items = obj
    else:
        return None
    for v in items:
        found = find_key(v, key)
        if found is not None:
            return found
    return None


def stated_limit(rep: dict, key: str, asked: int) -> int:
    """The limit the report's ``protections.cgroup`` states for ``key`` (e.g. "pids"), if it states
    an int, else ``asked``."""
    v = find_key(rep["protections"].get("cgroup"), key)
    return v if isinstance(v, int) and not isinstance(v, bool) else asked


def leftover_cgroups(jailpy_pid: int) -> list[str]:
    """Cgroup directories named for this jailpy process (``jailpy-<pid>-<n>``) still present in any
    hierarchy under /sys/fs/cgroup."""
    return glob.glob(f"/sys/fs/cgroup/**/jailpy-{jailpy_pid}-*", recursive=True)


def assert_nothing_left(cp: subprocess.CompletedProcess | None = None, marker: str | None = None) -> None:
    """No process with ``marker`` as a whole argument survives, and the cgroups of run ``cp``
    (from :func:`run_jail`) are gone."""
    if marker is not None:
        from conftest import wait_gone

        left = wait_gone(marker, 5.0)
        assert left == [], f"processes left running: {left}"
    if cp is not None:
        left = leftover_cgroups(cp.pid)
        assert left == [], f"cgroups left behind: {left}"


def program_pids(marker: str, argv0: bytes = b"python3") -> list[int]:
    """Host pids of sandboxed programs: argv[0] == ``argv0`` and ``marker`` a whole argument (jailpy's
    own processes carry the marker too, but their argv[0] is the interpreter's path)."""
    want = marker.encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and args[0] == argv0 and want in args:
            found.append(int(d))
    return found


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of host process ``pid`` in seconds (proc(5): /proc/PID/stat fields 14, 15)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cgroups(pid: int) -> dict[str, str]:
    """``{controllers: path}`` from /proc/PID/cgroup (cgroups(7)); v2 is under the key ""."""
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            out[ctrls] = path
    return out


TIME_FACTOR = float(os.environ.get("JAILPY_TEST_TIME_FACTOR", "1"))
"""Scales "promptly" bounds of the tests for slow machines: the VM lane runs under emulation, 10-50x
slower than the host, and sets 5 (tests/vm/smoke_v2.sh)."""


# forks children that sleep until a fork fails, then prints the errno's name and how many it made
FORK_UNTIL_REFUSED = ("import errno, os\n"
                      "kids = []\n"
                      "try:\n"
                      "    while True:\n"
                      "        pid = os.fork()\n"
                      "        if pid == 0:\n"
                      "            import time; time.sleep(30); os._exit(0)\n"
                      "        kids.append(pid)\n"
                      "except OSError as e:\n"
                      "    print(errno.errorcode[e.errno], len(kids))\n")
