"""Resource limits enforced by the kernel (issue 3): memory, processes, CPU time, CPU quota and
set, wall time, output, /tmp size, rlimits; fail-closed refusals and bad values.

Each test runs a real program through the ``jailpy exec`` CLI (or the Python API) on real cgroups
and checks the verdict, the exit status and the report's numbers.  Processes are found on the
host by a unique argument (conftest.unique_marker); nothing may outlive a test.  Tests that need
a cgroup skip rootless without a delegated parent (JAILPY_CGROUP_PARENT).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time

import pytest

import jailpy
from conftest import IS_ROOT, JAILPY, REPO, TIMEOUT, jail, unique_marker
from limits_helpers import (
    FORK_UNTIL_REFUSED, MiB, NEEDS_CGROUP, PEAK_SLACK, TIME_FACTOR, assert_nothing_left, assert_one_line_error, cpu_s, leftover_cgroups, proc_cgroups,
    program_pids, report_of, run_jail, stated_limit,
)

# ------------------------------------------------------------------------ memory ----

MEMORY_BOMB = "x = b'1' * ({mib} << 20)\nprint('survived', flush=True)\n"


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
def test_memory_bomb_is_MLE_and_jailpy_survives(report_path):
    cp = run_jail(report_path, "--memory", "64M", "--wall-time", "20", "--",
                  "python3", "-c", MEMORY_BOMB.format(mib=256))
    rep = report_of(cp)
    assert cp.returncode == 137, f"jailpy exited {cp.returncode} (125 would mean jailpy itself died): {cp.stderr!r}"
    assert b"Traceback" not in cp.stderr
    assert rep["verdict"] == "MLE" and rep["exit_code"] == 137 and rep["oom_killed"] is True, rep
    assert rep["limit_fired"] == "memory"
    assert b"survived" not in cp.stdout
    peak = rep["memory_peak_bytes"]
    assert peak is not None and 0.75 * 64 * MiB <= peak <= 64 * MiB + PEAK_SLACK, peak
    assert_nothing_left(cp)


@NEEDS_CGROUP
def test_memory_limit_through_the_api():
    res = jailpy.run(["python3", "-c", MEMORY_BOMB.format(mib=256)], jailpy.Policy(memory="64M", wall_time=20),
                     stdin=jailpy.DEVNULL, capture_output=True)
    assert res.verdict == jailpy.Verdict.MLE and res.exit_code == 137 and res.oom_killed, res
    assert res.stdout == b""
    assert res.memory_peak_bytes <= 64 * MiB + PEAK_SLACK


@NEEDS_CGROUP
def test_memory_within_the_limit_is_OK(report_path):
    cp = run_jail(report_path, "--memory", "128M", "--", "python3", "-c", MEMORY_BOMB.format(mib=32))
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"survived\n"
    assert rep["verdict"] == "OK" and rep["oom_killed"] is False and rep["limit_fired"] is None
    assert 32 * MiB <= rep["memory_peak_bytes"] <= 128 * MiB + PEAK_SLACK


@NEEDS_CGROUP
def test_address_space_is_not_memory(report_path):
    # F17: limits apply to memory in use, not to mapped address space
    code = "import mmap\nm = mmap.mmap(-1, 1 << 30)\nm[0] = 1\nprint('ok')\n"
    cp = run_jail(report_path, "--memory", "32M", "--", "python3", "-c", code)
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ok\n"
    assert rep["verdict"] == "OK" and rep["oom_killed"] is False
    assert rep["memory_peak_bytes"] <= 32 * MiB + PEAK_SLACK


@NEEDS_CGROUP
def test_no_swap_escape(report_path):
    # the limit covers memory + swap: a program cannot push its pages out to swap and keep going
    # (host without swap: this is the plain memory limit; with swap it checks memsw / swap.max 0)
    code = "x = bytearray(200 << 20)\nx[::4096] = b'1' * (len(x) // 4096)\nprint('survived', flush=True)\n"
    cp = run_jail(report_path, "--memory", "96M", "--wall-time", "20", "--", "python3", "-c", code)
    rep = report_of(cp)
    assert cp.returncode == 137 and rep["verdict"] == "MLE", (cp.returncode, rep, cp.stderr)
    assert b"survived" not in cp.stdout


# --------------------------------------------------------------------- processes ----

FORK_BOMB = r"""
import os, sys, time
end = time.monotonic() + 1.5
made = failed = 0
main = True
while time.monotonic() < end:
    try:
        pid = os.fork()
    except BlockingIOError:
        failed += 1
        time.sleep(0.002)
        continue
    if pid == 0:
        main, made, failed = False, 0, 0
    else:
        made += 1
if main:
    print(made, failed, flush=True)
else:
    time.sleep(60)
"""


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
def test_fork_bomb_is_contained(report_path):
    marker = unique_marker()
    limit = 20
    seen = [0]
    stop = threading.Event()

    def count():  # host view during the run: never more sandboxed processes than the limit
        while not stop.is_set():
            seen[0] = max(seen[0], len(program_pids(marker)))
            time.sleep(0.02)

    t = threading.Thread(target=count)
    t.start()
    try:
        host_ok = []

        def host_forks():  # the host can still start processes while the sandbox is at its limit
            time.sleep(0.8)
            t0 = time.monotonic()
            r = subprocess.run(["true"], timeout=10)
            host_ok.append((r.returncode, time.monotonic() - t0))

        h = threading.Thread(target=host_forks)
        h.start()
        cp = run_jail(report_path, "--pids", str(limit), "--wall-time", "20", "--",
                      "python3", "-c", FORK_BOMB, marker)
        h.join()
    finally:
        stop.set()
        t.join()
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    made, failed = map(int, cp.stdout.split())
    assert failed > 0, "fork never failed: the pids limit was not applied"
    assert made < limit
    assert rep["verdict"] == "OK"
    want = stated_limit(rep, "pids", limit)
    assert limit <= want <= limit + 3, f"protections state pids {want} for --pids {limit}"
    assert rep["pids_peak"] == want, rep["pids_peak"]
    assert seen[0] <= want, f"{seen[0]} sandboxed python processes at once with --pids {limit}"
    assert host_ok and host_ok[0][0] == 0 and host_ok[0][1] < 2, host_ok
    assert_nothing_left(cp, marker)


@NEEDS_CGROUP
def test_pids_limit_fork_fails_with_EAGAIN():
    code = FORK_UNTIL_REFUSED
    p = jail("--pids", "10", "--", "python3", "-c", code)
    assert p.returncode == 0, p.stderr
    name, n = p.stdout.split()
    assert name == b"EAGAIN"
    assert 1 <= int(n) < 10


# ------------------------------------------------------------------------ CPU time ----

@NEEDS_CGROUP
@pytest.mark.parametrize("code", [
    # a busy parent and a busy child (F10)
    "import os\nos.fork()\nwhile True: pass\n",
    # threads
    "import threading\n"
    "def spin():\n    while True: pass\n"
    "for _ in range(3): threading.Thread(target=spin, daemon=True).start()\n"
    "spin()\n",
    # a daemonised grandchild (setsid + double fork) spins while the program idles
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        while True: pass\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "time.sleep(60)\n",
], ids=["parent-and-child", "threads", "daemonised-grandchild"])
@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
def test_cpu_time_limit_is_TLE_summed_over_the_tree(report_path, code):
    marker = unique_marker()
    cp = run_jail(report_path, "--cpu-time", "1", "--wall-time", "10", "--", "python3", "-c", code, marker)
    rep = report_of(cp)
    assert cp.returncode == 137, (cp.returncode, cp.stderr)
    assert rep["verdict"] == "TLE" and rep["limit_fired"] == "cpu_time" and rep["exit_code"] == 137, rep
    assert 0.9 <= cpu_s(rep) <= 1.6, cpu_s(rep)
    assert rep["wall_s"] < 5 and cp.elapsed < 8 * TIME_FACTOR, (rep["wall_s"], cp.elapsed)
    assert_nothing_left(cp, marker)


@NEEDS_CGROUP
def test_cpu_time_counts_cpu_not_wall_time(report_path):
    cp = run_jail(report_path, "--cpu-time", "1", "--", "sleep", "1.5")
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert rep["verdict"] == "OK" and rep["limit_fired"] is None
    assert rep["wall_s"] >= 1.5


@NEEDS_CGROUP
def test_cpu_time_sets_an_rlimit_backstop():
    code = "import resource\nprint(*resource.getrlimit(resource.RLIMIT_CPU))\n"
    p = jail("--cpu-time", "1", "--", "python3", "-c", code)
    assert p.returncode == 0, p.stderr
    soft, hard = map(int, p.stdout.split())
    assert soft != resource.RLIM_INFINITY and 1 <= soft <= hard, (soft, hard)


# ----------------------------------------------------------------------- wall time ----

def test_wall_time_limit_is_WLE_at_about_one_second(report_path):
    marker = unique_marker()
    cp = run_jail(report_path, "--wall-time", "1", "--", "sleep", marker)
    rep = report_of(cp)
    assert cp.returncode == 137
    assert rep["verdict"] == "WLE" and rep["limit_fired"] == "wall_time" and rep["exit_code"] == 137
    assert 1.0 <= rep["wall_s"] < 1.5, rep["wall_s"]
    assert cp.elapsed < 4
    assert rep["protections"]["wall_time"] == {"seconds": 1, "source": "policy"}
    assert_nothing_left(cp, marker)


def test_default_wall_time_is_in_the_protections(report_path):
    cp = run_jail(report_path, "--", "true")
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert rep["protections"]["wall_time"] == {"seconds": 3600, "source": "default"}


def test_default_wall_time_through_the_api():
    res = jailpy.run(["true"], stdin=jailpy.DEVNULL, capture_output=True)
    assert res.exit_code == 0
    assert res.protections["wall_time"] == {"seconds": 3600, "source": "default"}


# ------------------------------------------------------------- nothing outlives it ----

DAEMON = (
    "import os, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        fd = os.open('/dev/null', os.O_RDWR)\n"
    "        for i in range(3): os.dup2(fd, i)\n"
    "        os.execvp('sleep', ['sleep', sys.argv[1]])\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "def running():  # the daemon's sleep, seen in the sandbox's /proc (PID 1 and we carry the marker too)\n"
    "    for p in os.listdir('/proc'):\n"
    "        if p.isdigit() and p not in ('1', str(os.getpid())):\n"
    "            try:\n"
    "                if sys.argv[1].encode() in open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0'): return True\n"
    "            except OSError: pass\n"
    "end = time.monotonic() + 10\n"
    "while time.monotonic() < end and not running(): time.sleep(0.01)\n"
    "print('daemon running' if running() else 'no daemon', flush=True)\n"
)


@pytest.mark.parametrize("limits", [
    pytest.param((), id="no-limits"),
    pytest.param(("--pids", "50", "--memory", "256M"), id="cgroup", marks=NEEDS_CGROUP),
])
def test_detached_grandchild_dies_at_the_end(report_path, limits):
    marker = unique_marker()
    cp = run_jail(report_path, *limits, "--", "python3", "-c", DAEMON, marker, timeout=20)
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"daemon running\n"
    assert rep["verdict"] == "OK"
    assert cp.elapsed < 10
    assert_nothing_left(cp, marker)


# ---------------------------------------------------------------------- output ----

def _leading(data: bytes, ch: bytes) -> int:
    """How many bytes at the start of ``data`` are ``ch``."""
    return len(data) - len(data.lstrip(ch))


@pytest.mark.parametrize("fd", [1, 2], ids=["stdout", "stderr"])
@pytest.mark.parametrize("style", ["one-big-write", "tiny-writes", "print-loop"])
def test_output_limit_is_OLE(report_path, fd, style):
    code = {
        "one-big-write": f"import os\nos.write({fd}, b'h' * 10**7)\nos.write({fd}, b'END')\n",
        "tiny-writes": f"import os\nwhile True: os.write({fd}, b'h')\n",
        "print-loop": f"import sys\nout = {'sys.stdout' if fd == 1 else 'sys.stderr'}\n"
                      "while True: print('h', end='', file=out, flush=True)\n",
    }[style]
    cp = run_jail(report_path, "--output-limit", "1K", "--wall-time", "10", "--", "python3", "-c", code)
    rep = report_of(cp)
    stream, other = (cp.stdout, cp.stderr) if fd == 1 else (cp.stderr, cp.stdout)
    name = "stdout" if fd == 1 else "stderr"
    n = _leading(stream, b"h")
    assert 0 < n <= 1024, f"{n} bytes of the flood reached the caller's {name}"
    assert b"hh" not in stream[n:] and b"END" not in stream
    assert b"hhh" not in other, other[:300]
    assert cp.returncode == 137, (cp.returncode, cp.stderr[-300:])
    assert rep["verdict"] == "OLE" and rep["limit_fired"] == "output" and rep["exit_code"] == 137, rep
    assert rep[f"{name}_truncated"] is True
    assert rep["stdout_truncated" if fd == 2 else "stderr_truncated"] is False
    assert rep[f"{name}_bytes"] is not None and rep[f"{name}_bytes"] >= n
    assert rep["wall_s"] < 3 and cp.elapsed < 6, "the program was not killed promptly"
    assert_nothing_left(cp)


def test_output_exactly_at_the_limit_is_OK(report_path):
    code = "import os\nos.write(1, b'o' * 1024)\nos.write(2, b'e' * 1024)\n"
    cp = run_jail(report_path, "--output-limit", "1K", "--", "python3", "-c", code)
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"o" * 1024 and cp.stderr == b"e" * 1024  # the limit is per stream
    assert rep["verdict"] == "OK" and rep["limit_fired"] is None
    assert rep["stdout_truncated"] is False and rep["stderr_truncated"] is False
    assert rep["stdout_bytes"] == 1024 and rep["stderr_bytes"] == 1024


def test_output_one_byte_over_the_limit_is_OLE(report_path):
    cp = run_jail(report_path, "--output-limit", "1K", "--", "python3", "-c", "import os\nos.write(1, b'o' * 1025)\n")
    rep = report_of(cp)
    assert rep["verdict"] == "OLE" and rep["stdout_truncated"] is True, rep
    assert cp.stdout == b"o" * _leading(cp.stdout, b"o") and len(cp.stdout) <= 1024


def test_output_limit_through_the_api():
    policy = jailpy.Policy(output_limit="1K", wall_time=10)
    res = jailpy.run(["python3", "-c", "while True: print('x' * 100, flush=True)"], policy,
                     stdin=jailpy.DEVNULL, capture_output=True)
    assert res.verdict == jailpy.Verdict.OLE and res.stdout_truncated, res
    assert 0 < len(res.stdout) <= 1024 and set(res.stdout) <= set(b"x\n")
    assert res.wall_s < 3


# --------------------------------------------------------------------- /tmp size ----

FILL_TMP = (
    "import errno, os, sys\n"
    "n = 0\n"
    "f = open('/tmp/fill', 'wb', buffering=0)\n"
    "try:\n"
    "    while True: n += f.write(b'\\1' * 65536)\n"
    "except OSError as e:\n"
    "    print(errno.errorcode[e.errno], n, flush=True)\n"
    "    sys.exit(int(sys.argv[1]))\n"
)


@pytest.mark.parametrize("rc,verdict", [(0, "OK"), (3, "RE")])
def test_filling_tmp_is_ENOSPC_and_the_verdict_follows_the_exit(report_path, rc, verdict):
    cp = run_jail(report_path, "--tmp-size", "8M", "--", "python3", "-c", FILL_TMP, str(rc))
    rep = report_of(cp)
    err, n = cp.stdout.split()
    assert err == b"ENOSPC", cp.stdout
    assert 7 * MiB <= int(n) <= 8 * MiB
    assert cp.returncode == rc and rep["exit_code"] == rc
    assert rep["verdict"] == verdict and rep["limit_fired"] is None and rep["oom_killed"] is False


@NEEDS_CGROUP
def test_tmp_files_are_charged_to_the_sandbox(report_path):
    cp = run_jail(report_path, "--memory", "256M", "--tmp-size", "48M", "--", "python3", "-c", FILL_TMP, "0")
    rep = report_of(cp)
    assert cp.returncode == 0 and cp.stdout.split()[0] == b"ENOSPC", (cp.stdout, cp.stderr)
    assert rep["memory_peak_bytes"] >= 48 * MiB, rep["memory_peak_bytes"]


# ------------------------------------------------------------- CPU quota and set ----

@NEEDS_CGROUP
def test_cpus_half_a_cpu(report_path):
    code = ("import time\n"
            "end = time.monotonic() + 1.0\n"
            "while time.monotonic() < end: pass\n"
            "print(time.process_time())\n")
    cp = run_jail(report_path, "--cpus", "0.5", "--", "python3", "-c", code)
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    own = float(cp.stdout)
    assert 0.4 <= own <= 0.65, f"the program got {own:.3f} s CPU in 1 s of wall time at --cpus 0.5"
    assert 0.4 <= cpu_s(rep) <= 0.7, cpu_s(rep)


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
def test_cpus_quota_and_limits_are_visible_read_only_inside(report_path):
    # the kernel's own record of the limits, read where the program sees its cgroup (its cgroup
    # namespace root, mounted read-only at /sys/fs/cgroup): timing-free, so it holds under emulation too
    code = ("import os\n"
            "v2 = os.path.exists('/sys/fs/cgroup/cgroup.controllers')\n"
            "cpu = open('/sys/fs/cgroup/cpu.max' if v2 else '/sys/fs/cgroup/cpu/cpu.cfs_quota_us').read().split()[0]\n"
            "pids = open('/sys/fs/cgroup/pids.max' if v2 else '/sys/fs/cgroup/pids/pids.max').read().strip()\n"
            "cg = open('/proc/self/cgroup').read().split()\n"
            "try:\n"
            "    open('/sys/fs/cgroup/pids.max' if v2 else '/sys/fs/cgroup/pids/pids.max', 'w').write('max')\n"
            "    w = 'writable'\n"
            "except OSError as e:\n"
            "    w = os.strerror(e.errno).replace(' ', '-')\n"
            "print(cpu, pids, w, all(line.endswith(':/') for line in cg))\n")
    cp = run_jail(report_path, "--cpus", "0.5", "--pids", "30", "--", "python3", "-c", code)
    assert cp.returncode == 0, cp.stderr
    cpu, pids, writable, root = cp.stdout.decode().split()
    assert cpu == "50000"  # µs per 100000 µs period: half a CPU
    assert int(pids) >= 30  # the program's 30 (jailpy's two helpers are added on top)
    assert writable == "Read-only-file-system" and root == "True"


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
@pytest.mark.parametrize("cpuset,want", [("0", {0}), ("1", {1}), ("0-1", {0, 1})])
def test_cpuset_is_the_affinity_the_program_sees(cpuset, want):
    if max(want) >= os.cpu_count():
        pytest.skip(f"this machine has {os.cpu_count()} cpus")
    code = "import os\nprint(sorted(os.sched_getaffinity(0)))\nos.sched_setaffinity(0, range(os.cpu_count()))\n" \
           "print(sorted(os.sched_getaffinity(0)))\n"
    p = jail("--cpuset", cpuset, "--", "python3", "-c", code)
    assert p.returncode == 0, p.stderr
    first, after = p.stdout.decode().splitlines()
    assert set(eval(first)) == want
    assert set(eval(after)) <= want, "the program widened its affinity beyond --cpuset"


# ---------------------------------------------------------------------- rlimits ----

def test_fsize_gives_EFBIG_when_SIGXFSZ_is_ignored(report_path):
    code = ("import errno, os, signal\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "fd = os.open('/tmp/big', os.O_WRONLY | os.O_CREAT, 0o600)\n"
            "n = 0\n"
            "try:\n"
            "    while n < 2 << 20: n += os.write(fd, b'f' * 65536)\n"
            "    print('wrote', n)\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno], os.fstat(fd).st_size)\n")
    cp = run_jail(report_path, "--fsize", "1M", "--", "python3", "-c", code)
    rep = report_of(cp)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == [b"EFBIG", str(1 << 20).encode()]
    assert rep["verdict"] == "OK"


def test_fsize_default_SIGXFSZ_kills(report_path):
    # not python3: CPython ignores SIGXFSZ itself.  head writes in blocks: the write that crosses
    # the limit is cut short at it, the next one raises SIGXFSZ (setrlimit(2)), whose default action
    # ends the process (so this also checks the program starts with default signal dispositions)
    cp = run_jail(report_path, "--fsize", "1M", "--", "sh", "-c", "exec head -c 2M /dev/zero > /tmp/big")
    rep = report_of(cp)
    assert b"File too large" not in cp.stderr, "head got EFBIG: it started with SIGXFSZ ignored"
    assert cp.returncode == 128 + signal.SIGXFSZ, (cp.returncode, cp.stderr)
    assert rep["signal"] == signal.SIGXFSZ and rep["verdict"] == "SIG", rep


def test_nofile_limits_open_files():
    code = ("import errno, resource\n"
            "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
            "files = []\n"
            "try:\n"
            "    for _ in range(32): files.append(open('/dev/null'))\n"
            "    print('opened all')\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno], len(files))\n")
    p = jail("--nofile", "16", "--", "python3", "-c", code)
    assert p.returncode == 0, p.stderr
    lim, res = p.stdout.decode().splitlines()
    assert lim == "16 16"
    err, n = res.split()
    assert err == "EMFILE" and 0 < int(n) <= 13


def test_stack_and_core_rlimits():
    code = ("import resource as r\n"
            "print(*r.getrlimit(r.RLIMIT_STACK), *r.getrlimit(r.RLIMIT_CORE))\n")
    p = jail("--stack", "16M", "--", "python3", "-c", code)
    assert p.returncode == 0, p.stderr
    assert list(map(int, p.stdout.split())) == [16 * MiB, 16 * MiB, 0, 0]


def test_core_dumps_are_off_by_default():
    p = jail("--", "python3", "-c", "import resource as r; print(*r.getrlimit(r.RLIMIT_CORE))")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"0 0\n"


# ------------------------------------------------------- where the processes are ----

@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
def test_only_the_sandbox_is_in_the_cgroup_and_it_is_its_root():
    marker = unique_marker()
    code = ("import time\n"
            "print(open('/proc/self/cgroup').read(), end='', flush=True)\n"
            "time.sleep(2)\n")
    p = subprocess.Popen([*JAILPY, "--memory", "128M", "--pids", "50", "--wall-time", str(20 * TIME_FACTOR), "--",
                          "python3", "-c", code, marker], cwd=REPO, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 10 * TIME_FACTOR  # a cold start under the VM lane's emulation took longer
        while time.monotonic() < end and not program_pids(marker):
            time.sleep(0.01)
        progs = program_pids(marker)
        assert len(progs) == 1, f"the program never started: {progs}"
        host_view = proc_cgroups(progs[0])
        jailpy_view = proc_cgroups(p.pid)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()  # the sandbox dies with jailpy
            p.communicate(timeout=TIMEOUT)
    assert p.returncode == 0, err
    inside = out.decode().splitlines()
    # inside: the cgroup namespace root is the sandbox's own cgroup, in every hierarchy
    assert inside and all(line.rsplit(":", 1)[1] == "/" for line in inside), inside
    # on the host: the program is in a jailpy-<pid>-<n> cgroup of this jailpy; jailpy itself is not
    mem = [path for ctrls, path in host_view.items() if "memory" in ctrls.split(",") or ctrls == ""]
    assert any(f"/jailpy-{p.pid}-" in path for path in mem), host_view
    assert not any(f"/jailpy-{p.pid}-" in path for path in jailpy_view.values()), jailpy_view
    assert_nothing_left(None, marker)
    assert leftover_cgroups(p.pid) == []


# ------------------------------------------------------------- fail closed, --no-cgroup ----

@pytest.mark.parametrize("flags", [("--memory", "64M"), ("--pids", "10"), ("--cpu-time", "1")],
                         ids=["memory", "pids", "cpu-time"])
def test_no_cgroup_with_a_cgroup_limit_is_refused(flags):
    p = jail("--no-cgroup", *flags, "--", "sh", "-c", "echo RAN")
    assert_one_line_error(p, "no-cgroup", flags[0].lstrip("-"))


def test_no_cgroup_alone_runs_without_one(report_path):
    cp = run_jail(report_path, "--no-cgroup", "--", "sh", "-c", "echo ran")
    rep = report_of(cp)
    assert cp.returncode == 0 and cp.stdout == b"ran\n", cp.stderr
    assert rep["protections"]["cgroup"] is None
    assert rep["memory_peak_bytes"] is None and rep["pids_peak"] is None
    assert_nothing_left(cp)


@pytest.mark.parametrize("parent", ["relative/path", "/../etc", "/jailpy-no-such-parent-{r}"])
def test_bad_cgroup_parent_is_refused(parent):
    p = jail("--cgroup-parent", parent.format(r=unique_marker()), "--memory", "64M", "--", "sh", "-c", "echo RAN")
    assert_one_line_error(p, "cgroup")


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
def test_cgroup_parent_not_delegated_to_the_user_is_refused():
    # "/" exists in every hierarchy and is root's: an unprivileged user (uid 1001 in a forked child
    # when the tests run as root, else the current user) may not make cgroups there
    env = {k: v for k, v in os.environ.items() if k != "JAILPY_CGROUP_PARENT"}
    env["HOME"] = "/tmp"
    as_user = {"user": 1001, "group": 1001, "extra_groups": []} if IS_ROOT else {}
    p = subprocess.run([*JAILPY, "--cgroup-parent", "/", "--memory", "64M", "--", "sh", "-c", "echo RAN"],
                       cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, **as_user)
    if IS_ROOT and p.returncode != 125 and b"No module named" in p.stderr:
        pytest.skip("uid 1001 cannot read this checkout")
    assert_one_line_error(p, "/sys/fs/cgroup", "memory")


# --------------------------------------------------------------------- bad values ----

@pytest.mark.parametrize("flag,value", [
    ("--memory", "0"), ("--memory", "abc"), ("--memory", "-5M"),
    ("--pids", "0"), ("--pids", "x"),
    ("--cpus", "-1"), ("--cpus", "0"),
    ("--cpuset", "abc"), ("--cpuset", "1-0"),
    ("--cpu-time", "0"), ("--cpu-time", "-1"),
    ("--wall-time", "0"),
    ("--output-limit", "x"), ("--output-limit", "0"),
    ("--fsize", "0"), ("--nofile", "0"), ("--stack", "abc"),
])
def test_bad_values_are_refused_in_one_line(flag, value):
    p = jail(f"{flag}={value}", "--", "sh", "-c", "echo RAN")
    assert_one_line_error(p, flag.lstrip("-").split("-")[0])


@NEEDS_CGROUP
def test_cpuset_of_a_cpu_this_machine_lacks_is_refused():
    p = jail("--cpuset", "99", "--", "sh", "-c", "echo RAN")
    assert_one_line_error(p, "cpuset", "99")
