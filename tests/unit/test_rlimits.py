"""jailpy.rlimits: the plan's values and errors, and the kernel enforcing what apply() sets, in
real child processes (setrlimit(2)).  Runs the same as root and unprivileged."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from jailpy import rlimits
from jailpy.errors import HostError, PolicyError

PY = [sys.executable, "-I", "-c"]
KiB, MiB = 1 << 10, 1 << 20


def run(plan, code: str, *argv: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run ``python -c code`` with ``plan`` applied in the child before exec (as PID 1 does to itself)."""
    p = subprocess.run([*PY, code, *argv], preexec_fn=lambda: rlimits.apply(plan), capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


# ------------------------------------------------------------------- plan ----

def test_core_is_always_off():
    assert rlimits.plan() == [(resource.RLIMIT_CORE, 0, 0)]
    assert rlimits.describe(rlimits.plan()) == {"core": 0}


@pytest.mark.parametrize("cpu_time,soft", [(0.1, 2), (1, 2), (1.5, 3), (2.0, 3), (59.9, 61)])
def test_cpu_backstop_is_ceil_plus_one_and_hard_one_more(cpu_time, soft):
    p = rlimits.plan(cpu_time=cpu_time)
    assert (resource.RLIMIT_CPU, soft, soft + 1) in p
    assert rlimits.describe(p)["cpu"] == [soft, soft + 1]


def test_sizes_are_soft_equals_hard():
    p = rlimits.plan(fsize=MiB, nofile=64, stack=256 * KiB)
    assert {(r, s, h) for r, s, h in p} == {(resource.RLIMIT_CORE, 0, 0), (resource.RLIMIT_FSIZE, MiB, MiB),
                                           (resource.RLIMIT_NOFILE, 64, 64),
                                           (resource.RLIMIT_STACK, 256 * KiB, 256 * KiB)}
    assert rlimits.describe(p) == {"core": 0, "fsize": MiB, "nofile": 64, "stack": 256 * KiB}


@pytest.mark.parametrize("kw,flag", [
    (dict(cpu_time=0), "--cpu-time"), (dict(cpu_time=-1), "--cpu-time"), (dict(cpu_time=float("nan")), "--cpu-time"),
    (dict(cpu_time=True), "--cpu-time"), (dict(cpu_time="1"), "--cpu-time"),
    (dict(fsize=0), "--fsize"), (dict(fsize=1.5), "--fsize"),
    (dict(nofile=3), "--nofile"), (dict(nofile=0), "--nofile"),
    (dict(stack=64 * KiB - 1), "--stack"), (dict(stack=4096), "--stack"),
])
def test_impossible_values_are_policy_errors(kw, flag):
    with pytest.raises(PolicyError, match=flag):
        rlimits.plan(**kw)


def test_above_our_own_hard_limit_is_a_host_error_naming_it():
    """PID 1 has no CAP_SYS_RESOURCE in the initial user namespace, so it can never raise a hard
    limit: a value above ours is refused up front, naming the current hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("RLIMIT_NOFILE hard limit is unlimited here")
    with pytest.raises(HostError) as e:
        rlimits.plan(nofile=hard + 1)
    assert str(hard) in str(e.value) and "--nofile" in str(e.value) and "ulimit -Hn" in str(e.value)
    assert (resource.RLIMIT_NOFILE, hard, hard) in rlimits.plan(nofile=hard)


def test_a_lowered_hard_limit_is_respected():
    """In a child whose own hard RLIMIT_FSIZE is 1 MiB, asking for 2 MiB is refused."""
    code = ("import resource\nfrom jailpy import rlimits\nfrom jailpy.errors import HostError\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
            "try:\n    rlimits.plan(fsize=2 << 20)\nexcept HostError as e:\n    print('refused:', e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.stdout.startswith("refused:") and "1048576" in p.stdout and "--fsize" in p.stdout, (p.stdout, p.stderr)


def test_quota_rlimits_are_planned_and_described():
    p = rlimits.plan(sigpending=100, msgqueue=64 * KiB)
    assert (resource.RLIMIT_SIGPENDING, 100, 100) in p and (resource.RLIMIT_MSGQUEUE, 64 * KiB, 64 * KiB) in p
    assert rlimits.describe(p) == {"core": 0, "sigpending": 100, "msgqueue": 64 * KiB}
    assert rlimits.plan(sigpending=0, msgqueue=0)[1:] == [(resource.RLIMIT_SIGPENDING, 0, 0),
                                                          (resource.RLIMIT_MSGQUEUE, 0, 0)]


@pytest.mark.parametrize("kw,flag", [(dict(sigpending=-1), "sigpending"), (dict(sigpending=True), "sigpending"),
                                     (dict(msgqueue=1.5), "msgqueue"), (dict(msgqueue="1M"), "msgqueue")])
def test_bad_quota_rlimits_are_policy_errors(kw, flag):
    with pytest.raises(PolicyError, match=flag):
        rlimits.plan(**kw)


def test_quota_rlimits_above_our_hard_limit_are_lowered_to_it():
    """sigpending and msgqueue only ever lower what the caller has (they bound the sandbox's share
    of the caller's own counts): above this process's hard limit they become that limit, no error."""
    code = ("import resource as r\nfrom jailpy import rlimits\n"
            "r.setrlimit(r.RLIMIT_MSGQUEUE, (4096, 4096)); r.setrlimit(r.RLIMIT_SIGPENDING, (7, 7))\n"
            "print(rlimits.describe(rlimits.plan(sigpending=1000, msgqueue=1 << 20)))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.stdout.strip() == "{'core': 0, 'sigpending': 7, 'msgqueue': 4096}", (p.stdout, p.stderr)


# ------------------------------------------------------ the kernel enforcing ----

def test_sigpending_stops_sigqueue_with_eagain():
    """RLIMIT_SIGPENDING counts the real-time signals queued for the user (all of its processes:
    here normally none but this one's): sigqueue(3) past it gets EAGAIN.  Bounded: 100 tries."""
    code, out, err = run(rlimits.plan(sigpending=10), """
import ctypes, errno, os, signal
libc = ctypes.CDLL(None, use_errno=True)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
n = 0
for _ in range(100):
    if libc.sigqueue(os.getpid(), signal.SIGRTMIN, ctypes.c_void_p(0)) != 0:
        print(n, errno.errorcode[ctypes.get_errno()])
        break
    n += 1
""")
    assert code == 0, err
    n, e = out.split()
    assert e == "EAGAIN" and 0 < int(n) <= 10, out


def test_applied_limits_are_what_the_child_sees():
    plan = rlimits.plan(cpu_time=5, fsize=3 * MiB, nofile=40, stack=512 * KiB)
    code, out, err = run(plan, "import resource as r\nprint([r.getrlimit(x) for x in (r.RLIMIT_CORE, r.RLIMIT_CPU, "
                               "r.RLIMIT_FSIZE, r.RLIMIT_NOFILE, r.RLIMIT_STACK)])")
    assert code == 0, err
    assert eval(out) == [(0, 0), (6, 7), (3 * MiB, 3 * MiB), (40, 40), (512 * KiB, 512 * KiB)]


def test_nofile_makes_open_fail_with_emfile():
    code, out, err = run(rlimits.plan(nofile=16), """
import errno, os
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print(max(fds), errno.errorcode[e.errno])
""")
    assert code == 0, err
    assert out.split() == ["15", "EMFILE"]


def test_fsize_stops_a_write_at_the_limit(tmp_path):
    f = tmp_path / "big"
    code, out, err = run(rlimits.plan(fsize=MiB), """
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
n = 0
try:
    while n < 2 << 20:
        n += os.write(fd, b"x" * 65536)
except OSError as e:
    print(n, errno.errorcode[e.errno])
""", str(f))  # Python ignores SIGXFSZ, so the write fails with EFBIG (setrlimit(2))
    assert code == 0, err
    assert out.split() == [str(MiB), "EFBIG"] and f.stat().st_size == MiB


def test_stack_limit_is_enforced():
    deep = ("import sys\nsys.setrecursionlimit(10**7)\nl = []\nfor _ in range(2000):\n    l = [l]\n"
            "print(len(repr(l)))")
    code, out, err = run(rlimits.plan(stack=256 * KiB), deep)
    assert code == -signal.SIGSEGV, (code, out, err)
    if resource.getrlimit(resource.RLIMIT_STACK)[0] not in (resource.RLIM_INFINITY,) and \
            resource.getrlimit(resource.RLIMIT_STACK)[0] < 4 * MiB:
        pytest.skip("this process's own stack limit is too small for the control run")
    assert run(rlimits.plan(), deep)[:2] == (0, "4002\n")


ABORT = """
import os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))  # try to turn core dumps back on
print(resource.getrlimit(resource.RLIMIT_CORE), flush=True)
os.abort()
"""


def _abort(plan, cwd) -> tuple[int, str]:
    p = subprocess.Popen([*PY, ABORT], preexec_fn=lambda: rlimits.apply(plan), stdout=subprocess.PIPE, cwd=cwd)
    out = p.stdout.read().decode()
    _, status = os.waitpid(p.pid, 0)
    p.returncode = -1  # reaped here, for the raw status (WCOREDUMP)
    p.stdout.close()
    return status, out


def test_core_dumps_are_off_even_when_the_program_crashes(tmp_path):
    """RLIMIT_CORE 0/0: a crashing program cannot turn dumps back on and leaves no core (core(5))."""
    status, out = _abort(rlimits.plan(), tmp_path)
    assert os.WTERMSIG(status) == signal.SIGABRT and out.strip() == "(0, 0)"
    assert not os.WCOREDUMP(status) and os.listdir(tmp_path) == []
    # the control: without the plan this host would dump one (when the hard limit and core(5)'s
    # core_pattern allow a core file in the working directory at all)
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == 0 or open("/proc/sys/kernel/core_pattern").read().strip() \
            not in ("core", "core.%p"):
        pytest.skip("core dumps are off on this host anyway: no control run")
    status, _ = _abort([], tmp_path)
    assert os.WCOREDUMP(status) and os.listdir(tmp_path)


def test_cpu_backstop_sends_sigxcpu_at_the_soft_limit_and_sigkill_at_the_hard_one():
    """cpu_time=0.5 -> soft 2 s (SIGXCPU), hard 3 s (SIGKILL, for a program ignoring SIGXCPU)."""
    busy = "import signal, sys\nif sys.argv[1] == 'ignore':\n    signal.signal(signal.SIGXCPU, signal.SIG_IGN)\n" \
           "while True:\n    pass\n"
    plan = rlimits.plan(cpu_time=0.5)
    t0 = time.monotonic()
    code, _, _ = run(plan, busy, "default")
    assert code == -signal.SIGXCPU and time.monotonic() - t0 > 1.5  # at 2 s of CPU, not before
    code, _, _ = run(plan, busy, "ignore")
    assert code == -signal.SIGKILL


def test_apply_cannot_raise_a_hard_limit_above_the_callers():
    """apply() does what setrlimit(2) does: raising a hard limit needs CAP_SYS_RESOURCE; the
    error is an OSError with EPERM (Python itself raises ValueError)."""
    code = ("import resource, errno\nfrom jailpy import rlimits\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))\n"
            "import os\nos.setgroups([]) if os.getuid() == 0 else None\n"
            "if os.getuid() == 0:\n    os.setgid(65534); os.setuid(65534)\n"
            "try:\n    rlimits.apply([(resource.RLIMIT_NOFILE, 64, 64)])\nexcept OSError as e:\n"
            "    print(errno.errorcode[e.errno])\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd="/")
    assert p.stdout.strip() == "EPERM", (p.stdout, p.stderr)
