"""Issue 10 item 5: one host uid for every sandbox of a caller.

Every running sandbox must have host ids no other running sandbox has (jailpy.idlease), so a
setuid file one plants hands no one the power over another, and per-uid quotas (pipe buffers)
are not shared; the setuid/setgid bits a run leaves in a writable bind are cleared after it
(jailpy.setid), and those of a SIGKILLed jailpy before its slot is used again.

The host ids are read from the host (/proc/PID/status of the sandboxed program), never from
inside.  As root the tests that need to know which slot comes next use a private range
(JAILPY_ID_RANGE) no other test uses; rootless the range is the user's /etc/subuid one.  Setuid
files are made with ``--seccomp none`` (the default policy denies setting the bits) in temp dirs.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time

import pytest

import jailpy
from conftest import IS_ROOT, JAILPY, REPO, TIMEOUT, expected_id_map, jail, unique_marker, wait_for_marker, wait_gone
from jailpy.errors import HostError
from jailpy.policy import Policy

SETID = stat.S_ISUID | stat.S_ISGID
SINGLE = expected_id_map()[0] == "single"  # rootless without a subuid range: the caller's own id
own_id = pytest.mark.skipif(SINGLE, reason="no subuid range: every sandbox is the caller's own uid "
                                           "(the documented residual risk)")
# a range of root's no other test uses: 0x70100000, above jailpy's default block (0x70000000:65536)
PRIVATE_FIRST = 0x70100000


def _status_ids(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of host process ``pid`` (proc(5): the Uid: and Gid: lines)."""
    return _status(pid)[:2]


def _status(pid: int) -> tuple[int, int, str]:
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("Uid:", "Gid:", "State:")):
                ids[line[:3]] = line.split()[1]
    return int(ids["Uid"]), int(ids["Gid"]), ids["Sta"]


def _uid_gone(uid: int, seconds: float = 10.0) -> bool:
    """Wait until no host process but a zombie runs as ``uid`` (a killed sandbox may take a
    moment to exit; its zombies wait for init, and jailpy does not count them)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = False
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    u, _, state = _status(int(d))
                    found = u == uid and state not in ("Z", "X")
                except (OSError, KeyError):
                    continue
                if found:
                    break
        if not found:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def ids_env(monkeypatch):
    """The environment for jailpy in these tests: as root, a private range of 8 slots (set here
    for the in-process API as well), so which slot comes next is known.  Returns (env, range of
    the slots' first uids)."""
    if not IS_ROOT:
        yield dict(os.environ), expected_id_map()[1]
        return
    from jailpy.idlease import lease_dir

    first = PRIVATE_FIRST + 64 * (os.getpid() % 1000)  # one range per pytest process
    monkeypatch.setenv("JAILPY_ID_RANGE", f"{first}:16")
    yield dict(os.environ), range(first, first + 16, 2)
    for uid in range(first, first + 16, 2):  # this process's own lock files: nothing holds them now
        try:
            os.unlink(os.path.join(lease_dir(), str(uid)))
        except FileNotFoundError:
            pass


class _Running:
    """``argv`` running in Sandbox ``sb`` on a thread of its own."""

    def __init__(self, sb: jailpy.Sandbox, argv: list[str]) -> None:
        self.sb, self.result, self.error = sb, None, None
        self.thread = threading.Thread(target=self._run, args=(argv,), daemon=True)
        self.thread.start()

    def _run(self, argv):
        try:
            self.result = self.sb.run(argv, stdin=jailpy.DEVNULL, capture_output=True)
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.error = e

    def finish(self):
        self.sb.kill()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive() and self.error is None, self.error
        return self.result


def _sandboxes_in_parallel(n: int, policy: Policy | None = None) -> list[tuple[int, int]]:
    """Host (uid, gid) of the programs of ``n`` Sandboxes running at once."""
    boxes = [jailpy.Sandbox(policy or Policy()) for _ in range(n)]
    markers = [unique_marker() for _ in boxes]
    runs = []
    try:
        runs = [_Running(sb, ["sleep", m]) for sb, m in zip(boxes, markers)]
        ids = []
        for m in markers:
            pids = wait_for_marker(m)
            assert len(pids) == 1, f"sandbox with marker {m} did not start"
            ids.append(_status_ids(pids[0]))
        return ids
    finally:
        for r in runs:
            r.finish()
        for sb in boxes:
            sb.close()


@own_id
def test_two_sandboxes_run_as_different_host_ids(ids_env):
    _, slots = ids_env
    (u1, g1), (u2, g2) = _sandboxes_in_parallel(2)
    assert u1 != u2 and g1 != g2, "two running sandboxes share a host uid/gid"
    assert u1 in slots and u2 in slots


@own_id
def test_two_jailpy_exec_run_as_different_host_ids(ids_env):
    env, slots = ids_env
    markers = [unique_marker(), unique_marker()]
    # through sh -c: the marker is then a whole argument of sleep alone, not of jailpy
    procs = [subprocess.Popen([*JAILPY, "--", "sh", "-c", f"exec sleep {m}"], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for m in markers]
    try:
        uids = []
        for m in markers:
            pids = wait_for_marker(m)
            assert len(pids) == 1, m
            uids.append(_status_ids(pids[0])[0])
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)  # forwarded to the program: each run ends 143
        for p in procs:
            p.wait(TIMEOUT)
    assert uids[0] != uids[1], "two jailpy exec share a host uid"
    assert all(p.returncode == 143 for p in procs), [(p.returncode, p.stderr.read()) for p in procs]


@own_id
def test_leases_are_not_reused_while_in_use(ids_env):
    n = 5
    ids = _sandboxes_in_parallel(n)
    assert len({u for u, _ in ids}) == n and len({g for _, g in ids}) == n, ids


@pytest.mark.skipif(not IS_ROOT, reason="a range small enough to fill needs root's JAILPY_ID_RANGE")
def test_a_full_range_is_refused_not_shared(ids_env):
    held = [jailpy.Sandbox() for _ in range(8)]  # a Sandbox holds its lease from construction to close()
    try:
        with pytest.raises(HostError, match="in use"):
            jailpy.Sandbox()
        held.pop().close()
        jailpy.Sandbox().close()  # the slot given back is free again
    finally:
        for sb in held:
            sb.close()


@own_id
def test_a_sandbox_keeps_its_ids_across_runs_and_gives_them_back_at_close(ids_env):
    code = ["sh", "-c", "cat /proc/self/uid_map"]
    sb = jailpy.Sandbox()
    try:
        first = sb.run(code, stdin=jailpy.DEVNULL, capture_output=True)
        second = sb.run(code, stdin=jailpy.DEVNULL, capture_output=True)
        assert first.exit_code == 0 and first.stdout == second.stdout, (first.stdout, second.stdout)
        host = first.stdout.split()[1].decode()
        assert f"host uid {host}" in first.protections["user"], first.protections["user"]
        other = jailpy.Sandbox()
        try:
            assert other.ids.host_uids[0] != int(host), "a second Sandbox got ids the first still holds"
        finally:
            other.close()
    finally:
        sb.close()
    if IS_ROOT:  # a private range: no other lease of this process can be below
        again = jailpy.Sandbox()  # the lowest free slot: the one sb gave back
        try:
            assert again.ids.host_uids[0] == int(host)
        finally:
            again.close()
    res = sb.run(code, stdin=jailpy.DEVNULL, capture_output=True)  # a run after close() takes ids again
    sb.close()
    assert res.exit_code == 0 and res.stdout.split()[1].decode() == host, res.stdout


def _plant(path, mode: str = "6755") -> str:
    return f"cp /bin/true {path} && chmod {mode} {path} && stat -c %a {path}"


def test_setuid_file_left_in_a_writable_bind_is_cleared_after_the_run(shared_dir, ids_env):
    env, _ = ids_env
    f = shared_dir / "planted"
    p = jail("--seccomp", "none", "--bind", str(shared_dir), "--report", "-", "--", "sh", "-c", _plant(f), env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"6755\n"  # the bits were set inside ...
    st = os.stat(f)
    assert not st.st_mode & SETID, oct(st.st_mode)  # ... and are gone once jailpy returned
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert b"cleared the setuid/setgid bits" in p.stderr and str(f).encode() in p.stderr


def test_setuid_file_cleared_through_the_api_and_reported(shared_dir, ids_env):
    f = shared_dir / "planted"
    res = jailpy.run(["sh", "-c", _plant(f, "4755")], Policy(bind=[str(shared_dir)], seccomp="none"),
                     stdin=jailpy.DEVNULL, capture_output=True)
    assert res.exit_code == 0 and res.stdout == b"4755\n", res.stderr
    assert not os.stat(f).st_mode & SETID
    assert res.setid_strip["cleared"] == [str(f)] and res.setid_strip["complete"], res.setid_strip


def test_setuid_file_of_a_sigkilled_jailpy_is_cleared_before_its_slot_is_used(shared_dir, ids_env):
    env, slots = ids_env
    f = shared_dir / "planted"
    marker = unique_marker()
    p = subprocess.Popen([*JAILPY, "--seccomp", "none", "--bind", str(shared_dir), "--", "sh", "-c",
                          f"{_plant(f, '4755')} && exec sleep {marker}"],
                         env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        pids = wait_for_marker(marker)
        assert len(pids) == 1, p.stderr.read() if p.poll() is not None else "no program"
        uid = _status_ids(pids[0])[0]
        st = os.stat(f)
        assert st.st_mode & stat.S_ISUID and st.st_uid == uid  # the sandbox's own uid, setuid
    finally:
        p.kill()  # SIGKILL: jailpy cannot clear anything
        p.wait(TIMEOUT)
    assert wait_gone(marker) == []
    assert SINGLE or _uid_gone(uid)
    assert os.stat(f).st_mode & stat.S_ISUID, "nothing should have cleared the bit yet"
    # the next jailpy (binding nothing) takes the dead one's slot, and clears the file first
    q = jail("--", "cat", "/proc/self/uid_map", env=env)
    assert q.returncode == 0, q.stderr
    assert int(q.stdout.split()[1]) == uid, "the slot of a SIGKILLed jailpy was not reused"
    assert not os.stat(f).st_mode & SETID, oct(os.stat(f).st_mode)


@pytest.mark.skipif(not IS_ROOT, reason="retires a slot: needs root's private JAILPY_ID_RANGE")
def test_a_tree_beyond_the_bounds_retires_the_slot(tmp_path, monkeypatch):
    from jailpy import setid
    from jailpy.idlease import lease_dir

    first = PRIVATE_FIRST + 64 * (os.getpid() % 1000) + 32  # one slot, apart from ids_env's
    monkeypatch.setenv("JAILPY_ID_RANGE", f"{first}:2")
    d = tmp_path / "deep"
    d.mkdir()
    os.chmod(d, 0o777)
    nest = "/".join(["d"] * (setid.MAX_DEPTH + 4))
    code = f"cd {d} && mkdir -p {nest} && cd {nest} && {_plant('t', '4755')}"
    try:
        res = jailpy.run(["sh", "-c", code], Policy(bind=[str(d)], seccomp="none"),
                         stdin=jailpy.DEVNULL, capture_output=True)
        assert res.exit_code == 0 and res.stdout == b"4755\n", res.stderr
        assert not res.setid_strip["complete"] and "deeper than" in res.setid_strip["detail"], res.setid_strip
        # the setuid file may still be there: that slot's uid is never used again
        with pytest.raises(HostError, match="retired"):
            jailpy.Sandbox()
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True, timeout=TIMEOUT)
        os.unlink(os.path.join(lease_dir(), str(first)))
    try:
        jailpy.Sandbox().close()  # returned by removing the tree and the lock file
    finally:
        os.unlink(os.path.join(lease_dir(), str(first)))


def test_the_callers_own_setuid_files_are_left_alone(shared_dir, ids_env):
    env, _ = ids_env
    mine = shared_dir / "mine"
    mine.write_bytes(b"#!/bin/sh\n")
    os.chmod(mine, 0o4755)  # the caller's, set before the run
    time.sleep(0.2)  # rootless without a range the check takes files changed since the run began
    p = jail("--seccomp", "none", "--bind", str(shared_dir), "--", "true", env=env)
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(os.stat(mine).st_mode) == 0o4755


@own_id
def test_a_process_forked_from_a_sandboxs_owner_takes_ids_of_its_own(ids_env):
    # multiprocessing-style: a Sandbox made before the fork must not run the child's programs
    # with the ids the parent's runs have
    code = ["cat", "/proc/self/uid_map"]
    sb = jailpy.Sandbox()
    try:
        mine = sb.run(code, stdin=jailpy.DEVNULL, capture_output=True)
        assert mine.exit_code == 0, mine.stderr
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run once, send the host uid, never return into pytest
            try:
                os.close(r)
                res = sb.run(code, stdin=jailpy.DEVNULL, capture_output=True)
                os.write(w, res.stdout.split()[1] if res.exit_code == 0 else b"error")
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            theirs = f.read()
        os.waitpid(pid, 0)
        assert theirs.isdigit(), theirs
        assert theirs != mine.stdout.split()[1], "a forked process ran a sandbox with its parent's ids"
        again = sb.run(code, stdin=jailpy.DEVNULL, capture_output=True)  # the parent keeps its own
        assert again.stdout == mine.stdout
    finally:
        sb.close()
