"""The rootfs template and the fork server, through the Python API.

A ``Sandbox(policy)`` (``reuse_userns``, the default) builds the read-only part of its rootfs once,
in a mount namespace kept by fd, and each run's mount namespace starts as a copy of it.  With
``forkserver=True`` each run's PID 1 is cloned by a small ``python -I -S`` process, the fork
server (jailpy.forkserver), and not forked from the caller.  These tests check that such a run
is as isolated as a run forked from the caller, and behaves the same, and that the template
follows changes to its bind sources.

How a test knows that a run went through the fork server: ``ForkServer.spawn`` is wrapped (the
real method still runs) to record, for each sandbox the server starts, the host pid of the new
PID 1 and that process's parent as /proc/PID/stat gives it.  It is read while PID 1 is waiting
for its program; the pidfd the server sent is checked afterwards to show the process had not
exited, so the pid was still its own.  A run forked from the caller records nothing, and
:meth:`Box.run` fails then.  Tests whose program sleeps also follow the program's parent chain
on the host: the program's parent is PID 1, and PID 1's parent is the fork server.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

import jailpy
from conftest import (NAMESPACES, OPEN_FDS, PROCS, REPO, SANDBOX_PATH, TIMEOUT, expected_id_map, marker_pids,
                      unique_marker)
from jailpy import forkserver, pool
from limits_helpers import FORK_UNTIL_REFUSED, MiB, NEEDS_CGROUP, PEAK_SLACK, TIME_FACTOR, ctl, program_pids

# Tests marked `vm` also run on the VM lane's older stock kernel: setns(2) into a template,
# clone(2) with namespace flags, detached mounts moved between mount namespaces, proc and sysfs
# mounted over covered ones (tests/vm/README.md).
VM = pytest.mark.vm

# ---------------------------------------------------------------- instrumentation ----

SPAWNS: list[dict] = []
"""One entry per sandbox a fork server started during the current test (see the module docstring):
``server`` (the fork server's pid), ``pid`` (PID 1's host pid), ``ppid`` (its parent then, None if
it had exited already) and ``build`` (a rootfs template's builder, not a run)."""


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of host process ``pid`` (proc(5) /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _ppid(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[1]


def _exited(pidfd: int) -> bool:
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(0))


@pytest.fixture(autouse=True)
def _record_spawns(monkeypatch):
    real = forkserver.ForkServer.spawn

    def spawn(self, config, userns_fd, run, fds):
        build = bool(run.get("build_template"))
        pid, pidfd = real(self, config, userns_fd, run, fds)
        ppid = _ppid(pid)
        if _exited(pidfd):
            ppid = None  # it may already be reaped, and its pid another process's
        SPAWNS.append({"server": self.proc.pid, "pid": pid, "ppid": ppid, "build": build})
        return pid, pidfd

    SPAWNS.clear()
    monkeypatch.setattr(forkserver.ForkServer, "spawn", spawn)
    yield
    SPAWNS.clear()


def _run_spawns(since: int) -> list[dict]:
    return [s for s in SPAWNS[since:] if not s["build"]]


def assert_through_forkserver(sb: jailpy.Sandbox, since: int, expect: int = 1) -> None:
    """Exactly ``expect`` sandboxes for runs were started since ``SPAWNS[since]``, each by ``sb``'s
    fork server, which is ready, and each PID 1 was a child of that server."""
    fs = sb._forkserver
    assert fs is not None and fs.ready(), "the Sandbox has no ready fork server after the run"
    runs = _run_spawns(since)
    assert len(runs) == expect, (f"{len(runs)} sandboxes were started by a fork server during the run, "
                                 f"expected {expect}: the run was forked from the caller")
    for s in runs:
        assert s["server"] == fs.proc.pid, f"started by fork server {s['server']}, not by {fs.proc.pid}: {s}"
        assert s["ppid"] == fs.proc.pid, (f"PID 1 (host pid {s['pid']}) had parent {s['ppid']}, "
                                          f"not the fork server {fs.proc.pid}")


class Box:
    """A ``Sandbox(forkserver=True)`` whose runs are checked to have gone through its fork server."""

    def __init__(self, policy: jailpy.Policy | None = None, **kw) -> None:
        kw.setdefault("forkserver", True)
        self.sb = jailpy.Sandbox(policy, **kw)

    def run(self, argv: list[str], expect: int = 1, **kw) -> jailpy.Result:
        kw.setdefault("stdin", jailpy.DEVNULL)
        kw.setdefault("capture_output", True)
        since = len(SPAWNS)
        res = self.sb.run(argv, **kw)
        assert_through_forkserver(self.sb, since, expect)
        return res


@pytest.fixture
def box():
    """``box(policy, **Sandbox_kwargs)`` makes a :class:`Box`; all are closed afterwards."""
    made: list[Box] = []

    def make(policy: jailpy.Policy | None = None, **kw) -> Box:
        b = Box(policy, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.sb.close()


def _policy(**kw) -> jailpy.Policy:
    # the repo may live under /tmp (tests/run.sh's rootless copy): keep it out of the sandbox
    kw.setdefault("cwd", False)
    return jailpy.Policy(**kw)


class Background:
    """``sb.run(argv)`` on a thread (a program that sleeps); :meth:`finish` waits for its Result."""

    def __init__(self, sb: jailpy.Sandbox, argv: list[str]) -> None:
        self.sb = sb
        self.out: dict = {}
        self.since = len(SPAWNS)

        def target() -> None:
            try:
                self.out["r"] = sb.run(argv, stdin=jailpy.DEVNULL, capture_output=True)
            except BaseException as e:  # noqa: BLE001 - handed to the test
                self.out["e"] = e

        self.t = threading.Thread(target=target)
        self.t.start()

    def finish(self, timeout: float = 10.0) -> jailpy.Result:
        self.t.join(timeout * TIME_FACTOR)
        if self.t.is_alive():  # never leave it running
            self.sb.kill()
            self.t.join(TIMEOUT)
            raise AssertionError("run() did not return in time")
        if "e" in self.out:
            raise self.out["e"]
        return self.out["r"]

    def __enter__(self) -> "Background":
        return self

    def __exit__(self, *exc) -> None:
        if self.t.is_alive():
            self.sb.kill()
            self.t.join(TIMEOUT)


def wait_program(marker: str, argv0: bytes = b"sleep", seconds: float = 10.0) -> int:
    """The host pid of the sandboxed ``sleep MARKER``, once it runs."""
    end = time.monotonic() + seconds * TIME_FACTOR
    while time.monotonic() < end:
        pids = program_pids(marker, argv0)
        if pids:
            assert len(pids) == 1, pids
            return pids[0]
        time.sleep(0.01)
    raise AssertionError(f"the sandboxed program with {marker} never started")


def assert_program_under(server_pid: int, marker: str) -> int:
    """The program ``sleep MARKER`` runs on the host as a child of a PID 1 that is a child of the
    fork server ``server_pid``; returns the program's host pid."""
    prog = wait_program(marker)
    pid1 = _ppid(prog)
    assert pid1 is not None and pid1 != server_pid, f"the program's parent is {pid1}"
    assert _ppid(pid1) == server_pid, (f"PID 1 (host pid {pid1}) has parent {_ppid(pid1)}, not the fork "
                                       f"server {server_pid}")
    return prog


def assert_program_under_server(sb: jailpy.Sandbox, marker: str) -> int:
    """Wait for ``sb``'s fork server to exist, then :func:`assert_program_under` it."""
    end = time.monotonic() + 10 * TIME_FACTOR
    while sb._forkserver is None and time.monotonic() < end:
        time.sleep(0.005)
    return assert_program_under(sb._forkserver.proc.pid, marker)


def _replace(path, text: str) -> None:
    """Replace the file ``path`` by rename, as a package manager does (a new inode)."""
    tmp = f"{path}.new"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def _source_dir(tmp_path, name: str, text: str):
    """A directory ``name`` holding ``f`` with ``text``, readable by any uid (the sandbox's may not
    be ours)."""
    os.chmod(tmp_path, 0o755)
    d = tmp_path / name
    d.mkdir()
    os.chmod(d, 0o755)
    _replace(d / "f", text)
    return d


# ------------------------------------------------------------------ the fork server ----

@VM
def test_the_program_runs_under_pid1_cloned_by_the_fork_server(box):
    b = box(_policy(wall_time=60))
    marker = unique_marker()
    with Background(b.sb, ["sleep", marker]) as bg:
        fs = None
        end = time.monotonic() + 10 * TIME_FACTOR
        while fs is None and time.monotonic() < end:
            fs = b.sb._forkserver
            time.sleep(0.005)
        assert fs is not None, "forkserver=True started no fork server at the first run"
        prog = assert_program_under(fs.proc.pid, marker)
        assert _ppid(fs.proc.pid) == os.getpid(), "the fork server is not the caller's child"
        with open(f"/proc/{fs.proc.pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        assert cmd[0] == os.fsencode(sys.executable) and cmd[1:3] == [b"-I", b"-S"], cmd
        b.sb.kill()
        res = bg.finish()
    assert res.exit_code == 137 and res.signal == 9
    assert_through_forkserver(b.sb, bg.since)
    assert _stat(prog) is None or _stat(prog)[0] == "Z"


# ------------------------------------------------------------------------ isolation ----

NS_CODE = ("import os, json; print(json.dumps({n: os.stat('/proc/self/ns/' + n).st_ino for n in %r}))"
           % (NAMESPACES,))


@VM
def test_every_namespace_is_new_and_each_run_gets_its_own(box):
    # a namespace's inode number is free for a new namespace once the old one is gone, so the
    # first run's namespaces are held open (from its sleeping program) while the second runs
    b = box(_policy(wall_time=60))
    held: dict[str, int] = {}
    try:
        marker = unique_marker()
        with Background(b.sb, ["sleep", marker]) as bg:
            prog = wait_program(marker)
            for ns in NAMESPACES:
                held[ns] = os.open(f"/proc/{prog}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            assert _stat(prog)[0] != "Z", "the program ended while its namespaces were opened"
            b.sb.kill()
            assert bg.finish().signal == 9
        assert_through_forkserver(b.sb, bg.since)
        first = {ns: os.fstat(fd).st_ino for ns, fd in held.items()}
        res = b.run(["python3", "-c", NS_CODE])
        assert res.exit_code == 0, res.stderr
        second = json.loads(res.stdout)
        template = os.fstat(b.sb._template_fd).st_ino
    finally:
        for fd in held.values():
            os.close(fd)
    for ns in NAMESPACES:
        host = os.stat(f"/proc/self/ns/{ns}").st_ino
        assert first[ns] != host and second[ns] != host, f"the sandbox shares the host's {ns} namespace"
    for ns in ("mnt", "pid", "net", "uts", "ipc", "cgroup"):
        assert first[ns] != second[ns], f"two runs of one Sandbox shared a {ns} namespace"
    # documented: the runs of one Sandbox share its user namespace (reuse_userns)
    assert first["user"] == second["user"]
    # the run's mount namespace is a copy of the template's, not the template itself (alive
    # while the Sandbox holds its fd, so its number cannot have been reused)
    assert second["mnt"] != template


def test_no_capabilities_and_no_new_privs(box):
    res = box(_policy()).run(["cat", "/proc/self/status"])
    assert res.exit_code == 0, res.stderr
    fields = dict(line.split(":", 1) for line in res.stdout.decode().splitlines() if ":" in line)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap].strip(), 16) == 0, f"{cap} = {fields[cap].strip()}"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2", "no seccomp filter on the program"  # SECCOMP_MODE_FILTER


RLIMITS = "import resource as r; print(*[r.getrlimit(x) for x in (r.RLIMIT_NOFILE, r.RLIMIT_FSIZE, r.RLIMIT_CORE)])"


def test_rlimits_apply(box):
    b = box(_policy(nofile=50, fsize="1M"))
    for _ in range(2):
        res = b.run(["python3", "-c", RLIMITS])
        assert res.exit_code == 0, res.stderr
        assert res.stdout == f"(50, 50) ({MiB}, {MiB}) (0, 0)\n".encode(), res.stdout




def test_only_fds_0_1_2_are_open(box, tmp_path):
    extra = os.open(tmp_path / "extra", os.O_CREAT | os.O_RDWR)
    os.set_inheritable(extra, True)  # the caller holds an inheritable fd: it must not get in
    try:
        b = box(_policy())
        for _ in range(2):
            res = b.run(["python3", "-c", OPEN_FDS])
            assert res.exit_code == 0, res.stderr
            assert json.loads(res.stdout) == [0, 1, 2]
    finally:
        os.close(extra)


def test_environment_is_scrubbed(box, monkeypatch):
    monkeypatch.setenv("JAILPY_TEST_SECRET", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    res = box(_policy(env=["ADDED=1"])).run(["env", "-0"])
    assert res.exit_code == 0, res.stderr
    inside = dict(item.split("=", 1) for item in res.stdout.decode().split("\0") if item)
    want = {"PATH", "HOME", "LANG", "ADDED"} | ({"TERM"} if "TERM" in os.environ else set())
    assert set(inside) == want, inside
    assert inside["PATH"] == SANDBOX_PATH and inside["ADDED"] == "1"
    assert b"hunter2" not in res.stdout and b"nope" not in res.stdout


WRITE_PROBE = (
    "import errno, sys\n"
    "for p in sys.argv[1:]:\n"
    "    try:\n"
    "        open(p, 'x').close(); print(p, 'written')\n"
    "    except OSError as e: print(p, errno.errorcode[e.errno])\n"
)


def test_writes_outside_tmp_fail_with_erofs(box):
    paths = ["/jailpy-probe", "/etc/jailpy-probe", "/usr/jailpy-probe", "/var/jailpy-probe", "/home/jailpy-probe"]
    for p in paths:
        assert not os.path.exists(p)
    res = box(_policy()).run(["python3", "-c", WRITE_PROBE, *paths])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.decode().splitlines() == [f"{p} EROFS" for p in paths]
    for p in paths:
        assert not os.path.exists(p)


FRESH = (
    "import os, sys\n"
    "name = sys.argv[1]\n"
    "print(sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm')))\n"
    "for d in ('/tmp', '/dev/shm'):\n"
    "    open(f'{d}/{name}', 'w').write('x' * 100)\n"
    "    assert open(f'{d}/{name}').read() == 'x' * 100\n"
)


@VM
def test_tmp_and_dev_shm_are_writable_and_fresh_each_run(box):
    name = f"jailpy-probe-{os.urandom(6).hex()}"
    b = box(_policy())
    try:
        for _ in range(3):
            res = b.run(["python3", "-c", FRESH, name])
            assert res.exit_code == 0, res.stderr
            assert res.stdout == b"[] []\n", "/tmp or /dev/shm kept a file from an earlier run"
        for d in ("/tmp", "/dev/shm"):
            assert not os.path.exists(f"{d}/{name}"), f"a file written in the sandbox's {d} appeared on the host"
    finally:  # only if the defence failed: do not leave the probe behind
        for d in ("/tmp", "/dev/shm"):
            try:
                os.unlink(f"{d}/{name}")
            except OSError:
                pass


def test_hidden_directories_are_empty(box):
    hidden = [h for h in ("/home", "/root", "/run", "/var/tmp", "/srv") if os.path.isdir(h)]
    shown = []
    for h in hidden:
        try:
            shown.append(bool(os.listdir(h)))
        except PermissionError:
            shown.append(True)  # not listable by us (a 0700 /root), so not known to be empty
    assert any(shown), "every hidden directory is empty on the host: nothing to check"
    code = "import os, sys, json; print(json.dumps([os.listdir(p) for p in sys.argv[1:]]))"
    res = box(_policy()).run(["python3", "-c", code, *hidden])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == [[] for _ in hidden]




def test_no_host_process_is_visible(box, host_sleep):
    _, marker = host_sleep
    res = box(_policy()).run(["python3", "-c", PROCS])
    assert res.exit_code == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["pids"] == sorted({1, r["me"]}), f"other processes are visible in the sandbox's /proc: {r['pids']}"
    assert r["ppid"] == 1
    assert not any(marker in c for c in r["cmds"]), "a host process is visible inside"


ID_CODE = "print(open('/proc/self/uid_map').read() + open('/proc/self/gid_map').read(), end='')"


def _maps(ids) -> list[bytes]:
    """What /proc/self/uid_map and gid_map show for a Sandbox's IdPlan (``ids``)."""
    return [str(x).encode() for m in (ids.uid_map, ids.gid_map) for row in m for x in row]


def test_id_maps_are_those_of_a_run_forked_from_the_caller(box):
    b = box(_policy())
    res = b.run(["python3", "-c", ID_CODE])
    assert res.exit_code == 0, res.stderr
    direct = jailpy.Sandbox(_policy(), forkserver=False)
    try:
        since = len(SPAWNS)
        ref = direct.run(["python3", "-c", ID_CODE], stdin=jailpy.DEVNULL, capture_output=True)
        assert direct._forkserver is None and SPAWNS[since:] == [], "forkserver=False used a fork server"
    finally:
        direct.close()
    assert ref.exit_code == 0, ref.stderr
    # each Sandbox has host ids of its own (jailpy.idlease): the same maps, each with its own ids
    assert res.stdout.split() == _maps(b.sb.ids) and ref.stdout.split() == _maps(direct.ids)
    mine, theirs = b.sb.ids, direct.ids
    assert (mine.uid, mine.gid, mine.helper, mine.setgroups) == (theirs.uid, theirs.gid, theirs.helper, theirs.setgroups)
    for m, t in ((mine.uid_map, theirs.uid_map), (mine.gid_map, theirs.gid_map)):
        assert [(inside, n) for inside, _, n in m] == [(inside, n) for inside, _, n in t]
    mode, host_uids = expected_id_map()
    assert res.stdout.split()[0] == b"0" and int(res.stdout.split()[1]) in host_uids, res.stdout


# ----------------------------------------------------------------------- exit codes ----

@pytest.mark.parametrize("argv,code,sig", [
    (["true"], 0, None),
    (["sh", "-c", "exit 3"], 3, None),
    (["sh", "-c", "kill -TERM $$"], 143, 15),
    (["python3", "-c", "import os; os.abort()"], 134, 6),
], ids=["ok", "exit-3", "sigterm", "abort"])
def test_exit_status(box, argv, code, sig):
    b = box(_policy())
    for _ in range(2):  # the first run starts the fork server, the second reuses it
        res = b.run(argv)
        assert (res.exit_code, res.signal) == (code, sig), (res, res.stderr)
        assert res.verdict == (jailpy.Verdict.OK if code == 0 else jailpy.Verdict.SIG if sig else jailpy.Verdict.RE)
        assert res.error is None and res.blocked_syscall is None


@pytest.mark.parametrize("argv,code", [(["jailpy-no-such-command"], 127), (["/etc/passwd"], 126)],
                         ids=["not-found", "not-executable"])
def test_cannot_execute(box, argv, code):
    res = box(_policy()).run(argv)
    assert res.exit_code == code and res.verdict == jailpy.Verdict.RE, res
    assert res.error and argv[0] in res.error
    assert res.stdout == b""


def test_stdin_is_fed_and_output_captured(box):
    data = os.urandom(1 << 20)  # more than a pipe holds
    b = box(_policy())
    res = b.run(["sh", "-c", "cat; echo to-stderr >&2"], stdin=data)
    assert res.exit_code == 0, res.stderr
    assert res.stdout == data and res.stderr == b"to-stderr\n"
    res = b.run(["sh", "-c", "read x; printf '%s|%s' \"$x\" \"$1\"", "sh", "a b"], stdin=b"line\n")
    assert res.stdout == b"line|a b"


# -------------------------------------------------------------------------- seccomp ----

def test_denied_syscall_is_eperm_and_named(box):
    # ptrace(PTRACE_ATTACH, 1, 0, 0): refused with EPERM by the kernel too (PID 1 is not
    # dumpable), so only the report naming it shows that the filter answered
    code = ("import ctypes, errno\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "r = libc.syscall(101, 16, 1, 0, 0)\n"
            "print(r, errno.errorcode.get(ctypes.get_errno()))\n")
    res = box(_policy()).run(["python3", "-c", code])
    assert res.exit_code == 0, res.stderr
    assert res.stdout == b"-1 EPERM\n"
    b = res.blocked_syscall
    assert b is not None and b["name"] == "ptrace" and b["nr"] == 101, b
    assert b["args"][:2] == [16, 1] and b["action"] == "errno" and b["errno"] == errno.EPERM, b


@VM
def test_default_sandbox_keeps_seccomp_and_rlimits_once_its_fork_server_builds_the_template(monkeypatch):
    # forkserver=None (the default): the fork server starts at the second set-up and is used once
    # ready.  A template older than TEMPLATE_MAX_AGE (here 0: always; by default after a second
    # between runs) is built again before the run's sandbox, so the first thing this fork server
    # starts is a template's builder: the runs it starts after that must still get the policy's
    # seccomp filter and rlimits
    monkeypatch.setattr(pool, "TEMPLATE_MAX_AGE", 0)
    code = "import resource as r; print(open('/proc/self/status').read().split('Seccomp:')[1].split()[0], " \
           "*r.getrlimit(r.RLIMIT_NOFILE))"
    sb = jailpy.Sandbox(_policy(nofile=50))
    try:
        outs = [sb.run(["python3", "-c", code], stdin=jailpy.DEVNULL, capture_output=True).stdout]
        assert sb._forkserver is None, "a fork server started at the first run (a Sandbox used once pays for it)"
        outs.append(sb.run(["python3", "-c", code], stdin=jailpy.DEVNULL, capture_output=True).stdout)
        assert sb._forkserver is not None, "no fork server started at the second run"
        assert sb._forkserver.ready(wait=True)
        assert SPAWNS == []  # the first two runs were forked from the caller
        for _ in range(3):
            since = len(SPAWNS)
            outs.append(sb.run(["python3", "-c", code], stdin=jailpy.DEVNULL, capture_output=True).stdout)
            assert [s["build"] for s in SPAWNS[since:]] == [True, False], SPAWNS[since:]
            assert_through_forkserver(sb, since)
        assert outs == [b"2 50 50\n"] * len(outs), outs
    finally:
        sb.close()


@pytest.mark.parametrize("weaker", [{"seccomp_bpf": None}, {"rlimits": ()}], ids=["no-seccomp", "no-rlimits"])
def test_a_sandbox_prepared_with_weaker_protections_refuses_to_start_the_program(box, tmp_path, weaker):
    # fail closed: PID 1 compares what it holds with what the launch request (built from the
    # Sandbox, not from the spawn's context) expects, and refuses before the program exists
    marker = tmp_path / "ran"
    os.chmod(tmp_path, 0o777)
    pol = _policy(nofile=50, bind=[f"{tmp_path}:{tmp_path}"])
    sb = box(pol)
    assert sb.run(["true"]).exit_code == 0
    sb.sb._forkserver_config = dict(sb.sb._forkserver_config, **weaker)
    with pytest.raises(jailpy.SandboxSetupError, match="other protections"):
        sb.sb.run(["sh", "-c", f"touch {marker}"], stdin=jailpy.DEVNULL, capture_output=True)
    assert not marker.exists()


# --------------------------------------------------------------------------- cgroups ----

def _cgroups_of_this_process() -> set[str]:
    return set(glob.glob(f"/sys/fs/cgroup/**/jailpy-{os.getpid()}-*", recursive=True))


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
@NEEDS_CGROUP
def test_memory_limit_is_MLE(box):
    before = _cgroups_of_this_process()
    b = box(_policy(memory="64M", wall_time=20))
    res = b.run(["python3", "-c", "x = b'1' * (256 << 20)\nprint('survived', flush=True)\n"])
    assert res.verdict == jailpy.Verdict.MLE and res.exit_code == 137 and res.oom_killed, res
    assert res.limit_fired == "memory" and res.stdout == b""
    assert res.memory_peak_bytes is not None and res.memory_peak_bytes <= 64 * MiB + PEAK_SLACK
    ok = b.run(["python3", "-c", "x = b'1' * (16 << 20)\nprint('survived')\n"])
    assert ok.verdict == jailpy.Verdict.OK and ok.stdout == b"survived\n", ok
    b.sb.close()
    assert _cgroups_of_this_process() - before == set(), "the runs' cgroups were left behind"


@NEEDS_CGROUP
def test_pids_limit(box):
    code = FORK_UNTIL_REFUSED
    res = box(_policy(pids=10, wall_time=30)).run(["python3", "-c", code])
    assert res.exit_code == 0, res.stderr
    name, n = res.stdout.split()
    assert name == b"EAGAIN" and 1 <= int(n) < 10, res.stdout


@NEEDS_CGROUP
def test_cpu_time_limit_is_TLE(box):
    res = box(_policy(cpu_time=1, wall_time=20)).run(["python3", "-c", "while True: pass"])
    assert res.verdict == jailpy.Verdict.TLE and res.limit_fired == "cpu_time" and res.exit_code == 137, res
    assert res.cpu_user_s + res.cpu_sys_s >= 0.9, res


# ------------------------------------------------------------------- kill and signals ----

def test_kill_from_another_thread_ends_the_run(box):
    b = box(_policy(wall_time=60))
    b.run(["true"])  # the fork server is running; this run's sandbox is its second
    marker = unique_marker()
    with Background(b.sb, ["sleep", marker]) as bg:
        prog = assert_program_under(b.sb._forkserver.proc.pid, marker)
        b.sb.kill()
        res = bg.finish()
    assert res.exit_code == 137 and res.signal == 9, res
    assert_through_forkserver(b.sb, bg.since)
    assert _stat(prog) is None or _stat(prog)[0] == "Z"
    assert program_pids(marker, b"sleep") == []


def test_send_signal_reaches_the_program(box):
    b = box(_policy(wall_time=60))
    marker = unique_marker()
    with Background(b.sb, ["sleep", marker]) as bg:
        assert_program_under_server(b.sb, marker)
        b.sb.send_signal(signal.SIGTERM)
        res = bg.finish()
    assert res.exit_code == 143 and res.signal == signal.SIGTERM and res.verdict == jailpy.Verdict.SIG, res
    assert_through_forkserver(b.sb, bg.since)


# ---------------------------------------------------------------- mounts made per run ----

LATE = (
    "import os, errno, json\n"
    "out = {'data': open('/tmp/data/f').read(), 'scratch': os.listdir('/scratch'),\n"
    "       'sub': os.listdir('/tmp/sub'), 'tmp': sorted(os.listdir('/tmp'))}\n"
    "for d in ('/scratch', '/tmp/sub', '/tmp'):\n"
    "    open(d + '/written', 'w').write('x')\n"
    "try:\n"
    "    open('/tmp/data/new', 'x'); out['ro'] = 'written'\n"
    "except OSError as e: out['ro'] = errno.errorcode[e.errno]\n"
    "print(json.dumps(out))\n"
)


@VM
def test_late_bind_and_tmpfs_mounts_work_on_every_run(box, tmp_path):
    src = _source_dir(tmp_path, "src", "v0")
    b = box(_policy(ro_bind=[f"{src}:/tmp/data"], tmpfs=["/scratch:8M", "/tmp/sub:8M"]))
    for i in range(3):
        _replace(src / "f", f"v{i}")
        res = b.run(["python3", "-c", LATE])
        assert res.exit_code == 0, res.stderr
        assert json.loads(res.stdout) == {"data": f"v{i}", "scratch": [], "sub": [], "tmp": ["data", "sub"],
                                          "ro": "EROFS"}, f"run {i}"
    assert sorted(os.listdir(src)) == ["f"]


# ------------------------------------------------------------------ template refresh ----

def _builds(server_pid: int) -> int:
    return sum(1 for s in SPAWNS if s["build"] and s["server"] == server_pid)


@VM
def test_template_is_rebuilt_when_older_than_max_age(box, tmp_path, monkeypatch):
    monkeypatch.setattr(pool, "TEMPLATE_MAX_AGE", 0)
    src = _source_dir(tmp_path, "data", "first")
    b = box(_policy(ro_bind=[f"{src}:/data"]))
    assert not b.sb.mounts.binds[0].late  # in the template, not mounted per run
    assert b.run(["cat", "/data/f"]).stdout == b"first"
    _replace(src / "f", "second")  # the directory stays: only the file under it is new
    assert b.run(["cat", "/data/f"]).stdout == b"second"
    # every run found the template too old and had the fork server build a new one
    assert _builds(b.sb._forkserver.proc.pid) == 2


def test_template_is_kept_within_max_age(box, tmp_path, monkeypatch):
    # an age no run reaches here: only a bind source's identity makes a new template
    monkeypatch.setattr(pool, "TEMPLATE_MAX_AGE", 3600.0)
    src = _source_dir(tmp_path, "data", "first")
    b = box(_policy(ro_bind=[f"{src}:/data"]))
    assert b.run(["cat", "/data/f"]).stdout == b"first"
    _replace(src / "f", "second")  # a bound directory shows the host's files as they are now
    assert b.run(["cat", "/data/f"]).stdout == b"second"
    assert b.run(["cat", "/data/f"]).stdout == b"second"
    assert _builds(b.sb._forkserver.proc.pid) == 1


@pytest.mark.parametrize("max_age", [None, 3600.0], ids=["default-age", "long-age"])
def test_bind_source_dir_replaced_is_seen_by_the_next_run(box, tmp_path, monkeypatch, max_age):
    if max_age is not None:  # then only the source's new inode can make the next run see it
        monkeypatch.setattr(pool, "TEMPLATE_MAX_AGE", max_age)
    src = _source_dir(tmp_path, "box", "first")
    b = box(_policy(ro_bind=[f"{src}:/data"]))
    assert b.run(["cat", "/data/f"]).stdout == b"first"
    # removed and made again (made beside the old one first, so the two cannot share an inode
    # number; the old one is kept with its content, which a stale template would still show)
    new = _source_dir(tmp_path, "box.new", "second")
    src.rename(tmp_path / "box.old")
    new.rename(src)
    res = b.run(["cat", "/data/f"])
    assert res.stdout == b"second", (res.stdout, res.stderr)


def test_bind_source_file_replaced_by_rename_is_seen_by_the_next_run(box, tmp_path, monkeypatch):
    monkeypatch.setattr(pool, "TEMPLATE_MAX_AGE", 3600.0)
    src = _source_dir(tmp_path, "conf", "first")
    b = box(_policy(ro_bind=[f"{src / 'f'}:/data-f"]))
    assert b.run(["cat", "/data-f"]).stdout == b"first"
    _replace(src / "f", "second")  # the bind held the old inode
    res = b.run(["cat", "/data-f"])
    assert res.stdout == b"second", (res.stdout, res.stderr)


# ------------------------------------------------------------- the fork server's life ----

def test_runs_fall_back_when_the_fork_server_dies_and_a_new_one_starts(box):
    b = box(_policy())
    assert b.run(["echo", "one"]).stdout == b"one\n"
    fs = b.sb._forkserver
    old = fs.proc.pid
    os.kill(old, signal.SIGKILL)
    fs.proc.wait(timeout=10)
    since = len(SPAWNS)
    res = b.sb.run(["echo", "two"], stdin=jailpy.DEVNULL, capture_output=True)
    assert res.verdict == jailpy.Verdict.OK and res.stdout == b"two\n", res
    assert not any(s["server"] == old for s in SPAWNS[since:])
    res = b.run(["echo", "three"])  # through a fork server again (Box.run checks)
    assert res.stdout == b"three\n"
    assert b.sb._forkserver.proc.pid != old


SUPERVISOR = (
    "import sys, threading, time, jailpy\n"
    "sb = jailpy.Sandbox(jailpy.Policy(cwd=False, wall_time=300), forkserver=True)\n"
    "threading.Thread(target=sb.run, args=(['sleep', sys.argv[1]],), daemon=True,\n"
    "                 kwargs={'stdin': jailpy.DEVNULL, 'stdout': jailpy.DEVNULL, 'stderr': jailpy.DEVNULL}).start()\n"
    "end = time.monotonic() + 30\n"
    "while sb._forkserver is None and time.monotonic() < end:\n"
    "    time.sleep(0.005)\n"
    "print(sb._forkserver.proc.pid, flush=True)\n"
    "time.sleep(300)\n"
)


def _gone(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is None or st[0] in ("Z", "X") or st[2] != start


@VM
def test_fork_server_and_sandbox_die_with_the_supervisor():
    marker = unique_marker()
    p = subprocess.Popen([sys.executable, "-c", SUPERVISOR, marker], cwd=REPO, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 20 * TIME_FACTOR)
        line = p.stdout.readline() if ready else b""
        assert line.strip().isdigit(), f"no fork server pid: {line!r}; exit {p.poll()}"
        server = int(line)
        assert _ppid(server) == p.pid, "the fork server is not the supervisor's child"
        start = _stat(server)[2]
        assert_program_under(server, marker)
    finally:
        p.kill()
        p.communicate(timeout=TIMEOUT)
    end = time.monotonic() + 5 * TIME_FACTOR
    while time.monotonic() < end and not (_gone(server, start) and not marker_pids(marker)):
        time.sleep(0.02)
    assert _gone(server, start), "the fork server outlived its supervisor"
    assert marker_pids(marker) == [], "the sandboxed program outlived its supervisor"


def test_close_ends_the_fork_server(box):
    b = box(_policy())
    b.run(["true"])
    proc = b.sb._forkserver.proc
    start = _stat(proc.pid)[2]
    b.sb.close()
    assert b.sb._forkserver is None
    assert proc.returncode is not None and _gone(proc.pid, start)


def test_prefork_with_the_fork_server(box):
    b = box(_policy(), prefork=True)
    code = "import os; print(os.listdir('/tmp')); open('/tmp/left-over', 'w').write('x')"
    # the first run starts its own sandbox and the next one's; each later run starts the next one's
    outs = [b.run(["python3", "-c", code], expect=2 if i == 0 else 1) for i in range(3)]
    assert [r.exit_code for r in outs] == [0, 0, 0], [r.stderr for r in outs]
    assert [r.stdout for r in outs] == [b"[]\n"] * 3
    waiting = b.sb._ready[0]
    assert _ppid(waiting.pid) == b.sb._forkserver.proc.pid
    b.sb.close()
    end = time.monotonic() + 5 * TIME_FACTOR
    while os.path.exists(f"/proc/{waiting.pid}") and time.monotonic() < end:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{waiting.pid}"), "close() left the prepared sandbox running"


@pytest.mark.parametrize("fs", [True, False], ids=["forkserver", "forked"])
def test_prefork_runs_each_program_exactly_once(tmp_path, fs):
    # a prepared PID 1 reads the launch request, installs its filter and closes its end at
    # once: the supervisor must not take that for a dead sandbox and run the program again
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    sb = jailpy.Sandbox(_policy(bind=[f"{out}:/out"]), prefork=True, forkserver=fs)
    try:
        for i in range(12):
            r = sb.run(["sh", "-c", f"echo {i} >> /out/log"], stdin=jailpy.DEVNULL, capture_output=True)
            assert r.exit_code == 0, r
    finally:
        sb.close()
    assert (out / "log").read_text().split() == [str(i) for i in range(12)]


def test_pass_fd_does_not_use_the_fork_server():
    r, w = os.pipe()
    sb = jailpy.Sandbox(_policy(pass_fd=[w]), forkserver=True)
    try:
        for i in range(2):
            res = sb.run(["python3", "-c", OPEN_FDS + f"os.write({w}, b'run{i};')"], stdin=jailpy.DEVNULL,
                         capture_output=True)
            assert res.exit_code == 0, res.stderr
            assert json.loads(res.stdout) == [0, 1, 2, w]
        assert sb._forkserver is None and SPAWNS == []
        os.set_blocking(r, False)
        assert os.read(r, 100) == b"run0;run1;"
    finally:
        sb.close()
        os.close(r)
        os.close(w)


def test_reuse_userns_false_does_not_use_the_fork_server():
    sb = jailpy.Sandbox(_policy(), reuse_userns=False, forkserver=True)
    try:
        for _ in range(2):
            res = sb.run(["echo", "x"], stdin=jailpy.DEVNULL, capture_output=True)
            assert res.stdout == b"x\n", res
        assert sb._forkserver is None and SPAWNS == []
    finally:
        sb.close()


# ------------------------------------------------------------------------ named runs ----

@NEEDS_CGROUP
def test_named_sandbox_is_listed_and_killed_by_name(box):
    name = f"T-{os.urandom(6).hex()}"
    b = box(_policy(wall_time=60), name=name)
    marker = unique_marker()
    with Background(b.sb, ["sleep", marker]) as bg:
        assert_program_under_server(b.sb, marker)
        p = ctl("ps", "--json")
        assert p.returncode == 0, p.stderr
        rows = [row for row in json.loads(p.stdout) if row.get("name") == name]
        assert len(rows) == 1 and rows[0]["pid"] == os.getpid(), rows
        p = ctl("kill", name)
        assert p.returncode == 0, p.stderr
        res = bg.finish()
    assert res.exit_code == 137 and res.signal == 9 and res.verdict != jailpy.Verdict.OK, res
    assert_through_forkserver(b.sb, bg.since)
    assert program_pids(marker, b"sleep") == []
    p = ctl("ps", "--json")
    assert name not in [row.get("name") for row in json.loads(p.stdout)]


@pytest.mark.parametrize("fs", [True, False], ids=["forkserver", "forked"])
def test_close_during_a_run_ends_it_like_kill(fs):
    # close() from another thread: the run ends with signal 9 and no "killed from outside" error,
    # whether its PID 1 came from the fork server (which close() ends) or from this process
    sb = jailpy.Sandbox(_policy(), forkserver=fs)
    marker = unique_marker()
    with Background(sb, ["sleep", marker]) as bg:
        wait_program(marker)
        t0 = time.monotonic()
        sb.close()
        res = bg.finish()
    assert res.exit_code == 137 and res.signal == 9 and res.error is None, res
    assert time.monotonic() - t0 < 5 * TIME_FACTOR
    assert program_pids(marker, b"sleep") == []


@NEEDS_CGROUP
@pytest.mark.parametrize("fs", [True, False], ids=["forkserver", "forked"])
def test_ps_counts_only_the_programs_processes(fs):
    # PID 1 (and the set-up process of a run forked from this process) are in the cgroup too:
    # jailpy ps leaves out as many as the run really has
    name = f"T-{os.urandom(6).hex()}"
    sb = jailpy.Sandbox(_policy(pids=16, wall_time=60), name=name, forkserver=fs)
    marker = unique_marker()
    try:
        with Background(sb, ["sh", "-c", f"sleep {marker} & sleep {marker} & sleep {marker} & wait"]) as bg:
            end = time.monotonic() + 10 * TIME_FACTOR
            while len(program_pids(marker, b"sleep")) < 3 and time.monotonic() < end:
                time.sleep(0.01)
            p = ctl("ps", "--json")
            assert p.returncode == 0, p.stderr
            rows = [row for row in json.loads(p.stdout) if row.get("name") == name]
            assert len(rows) == 1 and rows[0]["pids"] == 4, rows  # sh and three sleeps
            sb.kill()
            bg.finish()
    finally:
        sb.close()


def test_a_process_forked_from_the_caller_leaves_its_fork_server_and_prepared_sandbox_alone():
    # os.fork()/multiprocessing copy the Sandbox: the copy must start its own fork server and
    # sandboxes, and must not end (close(), garbage collection) the caller's
    sb = jailpy.Sandbox(_policy(), prefork=True, forkserver=True)
    try:
        assert sb.run(["true"], stdin=jailpy.DEVNULL).exit_code == 0
        server, waiting = sb._forkserver.proc.pid, sb._ready[0].pid
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                res = sb.run(["sh", "-c", "echo child"], stdin=jailpy.DEVNULL, capture_output=True)
                own = sb._forkserver is not None and sb._forkserver.proc.pid != server
                sb.close()
                os.write(w, f"{res.exit_code} {res.stdout!r} {own}".encode())
            finally:
                os._exit(0)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        report = os.read(r, 4096).decode()
        os.close(r)
        assert report == "0 b'child\\n' True", report
        assert _ppid(server) == os.getpid() and _ppid(waiting) == server
        res = sb.run(["sh", "-c", "echo parent"], stdin=jailpy.DEVNULL, capture_output=True)
        assert res.stdout == b"parent\n"
    finally:
        sb.close()
