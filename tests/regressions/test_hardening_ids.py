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

import json
import os
import re
import signal
import stat
import subprocess
import threading
import time

import pytest

import jailpy
from conftest import (IS_ROOT, JAILPY, REPO, TIMEOUT, expected_id_map, jail, last_json, unique_marker, wait_for_marker,
                      wait_gone)
from limits_helpers import TIME_FACTOR
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


def _record(name: str) -> dict | None:
    """The record in the lock file ``name`` of this caller's lease directory (jailpy.idlease)."""
    from jailpy.idlease import lease_dir

    data = open(os.path.join(lease_dir(), name), "rb").read()
    return json.loads(data) if data.strip() else None


@pytest.fixture
def one_slot(monkeypatch):
    """As root, a private range of one slot (apart from ids_env's), so that the next Sandbox must
    take that slot or be refused; its lock file is removed afterwards.  Returns its name."""
    if not IS_ROOT:
        yield None
        return
    from jailpy.idlease import lease_dir

    first = PRIVATE_FIRST + 64 * (os.getpid() % 1000) + 32
    monkeypatch.setenv("JAILPY_ID_RANGE", f"{first}:2")
    yield str(first)
    try:
        os.unlink(os.path.join(lease_dir(), str(first)))
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- attack report: setid_submount.sh
@pytest.mark.skipif(not IS_ROOT, reason="mounts a tmpfs below the bind on the host: root only")
def test_setuid_file_on_a_filesystem_mounted_below_a_writable_bind_is_cleared(shared_dir, ids_env):
    # the bind is recursive (open_tree AT_RECURSIVE): the program writes into the submount too, so
    # the check must walk it (it once skipped "another filesystem" and still said complete)
    env, _ = ids_env
    mnt = shared_dir / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0777", "jailpy-test-sub", str(mnt)], check=True)
    try:
        loop = shared_dir / "loop"  # a bind mount of the bind's own directory below it: walked once, not forever
        loop.mkdir()
        subprocess.run(["mount", "--bind", str(shared_dir), str(loop)], check=True)
        try:
            p = jail("--seccomp", "none", "--bind", f"{shared_dir}:/o", "--report", "-", "--", "sh", "-c",
                     _plant("/o/mnt/sub", "4755"), env=env)
        finally:
            subprocess.run(["umount", str(loop)], check=True)
        assert p.returncode == 0 and p.stdout == b"4755\n", p.stderr
        found = last_json(p.stderr)[1]["setid_strip"]
        st = os.stat(mnt / "sub")
        assert not st.st_mode & SETID, f"setuid file on the submount survived: {oct(st.st_mode)} {found}"
        assert found["complete"] and str(mnt / "sub") in found["cleared"], found
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---------------------------------------------------------------- attack report: retire_slots.sh
def test_a_deep_tree_is_checked_in_full_and_its_slot_given_back(shared_dir, ids_env, one_slot):
    # 66 nested directories once beat the depth bound (64): the check was incomplete and the slot
    # retired for good, one per run.  The walk holds no fd per level now: 300 levels (> a PATH_MAX
    # of names below) are checked like any tree
    env, _ = ids_env
    nest = "/".join(["d" * 20] * 300)  # 6300 bytes: more than PATH_MAX from the bind
    code = ("import os, shutil\nos.chdir('/o')\nfor _ in range(300):\n    os.mkdir('d' * 20)\n    os.chdir('d' * 20)\n"
            "shutil.copy('/bin/true', 't')\nos.chmod('t', 0o4755)\nprint(oct(os.stat('t').st_mode)[-4:])")
    res = jailpy.run(["python3", "-c", code], Policy(bind=[f"{shared_dir}:/o"], seccomp="none"),
                     stdin=jailpy.DEVNULL, capture_output=True)
    assert res.exit_code == 0 and res.stdout == b"4755\n", res.stderr
    assert res.setid_strip["complete"], res.setid_strip
    assert res.setid_strip["cleared_count"] == 1 and res.setid_strip["cleared"][0].endswith("/t"), res.setid_strip
    fd = os.open(shared_dir, os.O_RDONLY)
    try:
        for part in nest.split("/"):  # beyond PATH_MAX: walk down by fd
            nfd = os.open(part, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        assert not os.stat("t", dir_fd=fd).st_mode & SETID
    finally:
        os.close(fd)
    if one_slot:  # the only slot of the range: usable again at once
        jailpy.Sandbox().close()
        assert _record(one_slot) is None


def test_a_check_that_cannot_finish_leaves_the_slot_waiting_not_retired(shared_dir, ids_env, one_slot, monkeypatch):
    # a check beyond its bound (here: 40 names instead of a million) keeps the slot out of use
    # only until a later check finishes: once the tree is gone the slot comes back, without
    # anyone removing its lock file (it was retired for good: one lost slot per hostile run)
    from jailpy import setid

    monkeypatch.setattr(setid, "MAX_ENTRIES", 40)
    sb = jailpy.Sandbox(Policy(bind=[str(shared_dir)], seccomp="none"))
    name = sb._lease.name
    try:
        res = sb.run(["sh", "-c", f"for i in $(seq 60); do : > {shared_dir}/f$i; done; {_plant(shared_dir / 'z', '4755')}"],
                     stdin=jailpy.DEVNULL, capture_output=True)
    finally:
        sb.close()
    assert res.exit_code == 0, res.stderr
    assert not res.setid_strip["complete"] and "more than 40 names" in res.setid_strip["detail"], res.setid_strip
    rec = _record(name)
    assert rec is not None and "more than 40 names" in rec.get("unchecked", ""), rec
    assert "retired" not in rec, rec
    if one_slot:
        with pytest.raises(HostError, match=f"wait for a check .*{re.escape(str(shared_dir))}"):
            jailpy.Sandbox()  # the tree is still there: checked again, still too big
    else:  # a range of many slots: a free one is taken, not the waiting one
        other = jailpy.Sandbox()
        try:
            assert other._lease.name != name
        finally:
            other.close()
        assert _record(name).get("unchecked"), "the waiting slot was given out"
    for f in shared_dir.iterdir():
        f.unlink()
    if one_slot:
        again = jailpy.Sandbox()  # the only slot: checked again, in full now, and taken
        again.close()
    else:
        import fcntl

        from jailpy import idlease
        fd = os.open(os.path.join(idlease.lease_dir(), name), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert idlease._usable(fd, idlease._read_record(fd), sb._lease.own), "the slot did not come back"
        finally:
            os.close(fd)
    assert _record(name) is None


def _walkers(pid: int, path: str) -> bool:
    """Whether process ``pid`` or one of its descendants has an fd open on ``path`` or below."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    if os.readlink(f"/proc/{p}/fd/{fd}").startswith(path):
                        return True
                except OSError:
                    continue
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return False


def test_sigterm_during_the_check_ends_jailpy_promptly(shared_dir, ids_env):
    # a million hard links kept jailpy walking ~14 s after the run, SIGTERM ignored: a signal
    # after the run now stops the check (the slot then waits for the next check)
    env, _ = ids_env
    for j in range(4):  # 200,000 names, no inode each: a walk of a second or more
        src = shared_dir / f"f{j}"
        src.touch()
        for i in range(50_000):
            os.link(src, shared_dir / f"l{j}-{i}")
    ran = shared_dir / "ran"
    # bound at /o: a sandbox process's fd shows /o/..., only a host-side walk shows the host path
    p = subprocess.Popen([*JAILPY, "--bind", f"{shared_dir}:/o", "--", "touch", "/o/ran"], env=env, cwd=REPO,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + TIMEOUT
        while not (ran.exists() and _walkers(p.pid, str(shared_dir))) and p.poll() is None and time.monotonic() < end:
            time.sleep(0.002)
        assert p.poll() is None, f"the check ended before it could be stopped: {p.stderr.read()}"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=TIMEOUT)[1]
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(TIMEOUT)
    assert b"stopped before the end" in err, err
    assert took < 2.0 * TIME_FACTOR, f"jailpy took {took:.2f} s to stop after SIGTERM"
    assert p.returncode == 0, err  # the program's own status: it had ended


# ---------------------------------------------------------------- attack report: lease_tmp_squat.sh
def _lease_dir_as_homeless(xdg: str | None, userns: bool = False, own_tmp: bool = False) -> tuple[str | None, str]:
    """lease_dir() in a child that is a user with no home directory (as root: a uid the password
    database does not know; rootless: this user, its home looked up as missing), with
    XDG_RUNTIME_DIR ``xdg``; with ``userns``, as uid 0 of a user namespace of its own (like
    ``unshare -r``), with ``own_tmp`` and a tmpfs of that namespace's on /tmp (like a sandbox's).
    Returns (the directory or None, the error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            from jailpy import _syscalls as sc
            from jailpy import hostfiles, idlease  # noqa: F401  (before a tmpfs on /tmp may hide a repo under /tmp)

            if xdg is None:
                os.environ.pop("XDG_RUNTIME_DIR", None)
            else:
                os.environ["XDG_RUNTIME_DIR"] = xdg
            if IS_ROOT:
                os.setgroups([])
                os.setresgid(HOMELESS, HOMELESS, HOMELESS)
                os.setresuid(HOMELESS, HOMELESS, HOMELESS)
                sc.prctl(sc.PR_SET_DUMPABLE, 1)  # the id change made /proc/self root's: uid_map too
            else:
                idlease._home = idlease._outer_home = lambda uid: None
            if userns:
                uid, gid = os.getuid(), os.getgid()
                sc.unshare(sc.CLONE_NEWUSER | (sc.CLONE_NEWNS if own_tmp else 0))
                for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                    with open(f"/proc/self/{name}", "w") as f:
                        f.write(text)
                if own_tmp:
                    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
                    sc.mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777")
            try:
                out = {"dir": idlease.lease_dir()}
                marker = f"marker-{os.urandom(8).hex()}"  # to tell, outside, whose /tmp it was
                open(os.path.join(out["dir"], marker), "x").close()
                out["marker"] = marker
            except HostError as e:
                out = {"error": str(e)}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = json.loads(f.read() or b"{}")
    os.waitpid(pid, 0)
    _markers[out.get("dir")] = out.get("marker")
    return out.get("dir"), out.get("error", "")


_markers: dict = {}  # lease directory -> the marker file the child made in it
HOMELESS = 0x70200000 + os.getpid() % 1000  # as root: a uid no account has (no home)


def test_a_user_without_a_home_never_keeps_its_leases_in_tmp(tmp_path):
    # /tmp/jailpy-UID/ids was the fallback: another user could create it first and block every run
    import shutil
    import tempfile

    uid = HOMELESS if IS_ROOT else os.getuid()
    squat = f"/tmp/jailpy-{uid}"
    made = not os.path.lexists(squat)
    if made:  # what another user could have made (as root: root's, for the homeless uid)
        os.mkdir(squat, 0o777)
        os.chmod(squat, 0o777)
    top = tempfile.mkdtemp(prefix="jailpy-test-xdg-")  # reachable by the homeless uid
    try:
        os.chmod(top, 0o755)
        run = os.path.join(top, "run")
        os.mkdir(run, 0o700)
        if IS_ROOT:
            os.chown(run, HOMELESS, HOMELESS)
        d, err = _lease_dir_as_homeless(run)
        assert d == os.path.join(run, "jailpy", "ids"), (d, err)  # XDG_RUNTIME_DIR when set: never /tmp
        d, err = _lease_dir_as_homeless(None)
        assert d is None and "XDG_RUNTIME_DIR" in err and "home directory" in err, (d, err)
        assert not made or os.listdir(squat) == [], "jailpy used the directory another user made"
    finally:
        shutil.rmtree(top)
        if made:
            shutil.rmtree(squat)


def test_in_a_user_namespace_the_hosts_tmp_is_not_used_but_the_namespaces_own_is():
    # inside `unshare -r` (uid 0 there, whose home is not its own) jailpy fell back to
    # /tmp/jailpy-0-MAP in the host's /tmp: any local user could create it first.  It is used
    # only when /tmp is the namespace's own (a jailpy sandbox's, bwrap --tmpfs /tmp)
    before = set(os.listdir("/tmp"))
    d, err = _lease_dir_as_homeless(None, userns=True)
    assert d is None and "/tmp is not this user namespace's" in err and "XDG_RUNTIME_DIR" in err, (d, err)
    assert not {n for n in set(os.listdir("/tmp")) - before if n.startswith("jailpy-0-")}, "used the host's /tmp"
    d, err = _lease_dir_as_homeless(None, userns=True, own_tmp=True)
    assert d is not None and d.startswith("/tmp/jailpy-0-") and "/ids" in d, (d, err)
    # a marker the child made there is not in the host's /tmp (a directory of that name may exist
    # on the host from an earlier `unshare -r` of this user's: that is not this one)
    assert _markers[d] and not os.path.exists(os.path.join(d, _markers[d])), "the namespace's own /tmp should not be the host's"
