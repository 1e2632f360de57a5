"""The warm pool with a verified reset (jailpy.slots, issue 14 part 2): real sandboxes, real checks.

Each doubt the verification can have is produced for real (a process the test puts into the slot's
user namespace, a killed fork server, a box replaced or changed during the run), and the slot must
be destroyed and counted; runs that leave files or IPC objects behind must not be seen by the next.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from jailpy import _syscalls as sc
from jailpy.policy import load
from jailpy.slots import Busy, SlotPool
from jailpy.stdio import PIPE

POLICY = load("default").replace(cwd=False)


@pytest.fixture
def pool():
    p = SlotPool(2, canary_every=5)
    yield p
    p.close()


def _run(pool, argv, box=None, files=None):
    with pool.slot(POLICY, box=box) as s:
        if files is not None:
            s.fill(None, files)
        r = s.run(argv, stdout=PIPE, stderr=PIPE)
    pool.drain()
    return r


def test_runs_are_verified_and_slots_reused(pool):
    for _ in range(12):
        r = _run(pool, ["/bin/true"])
        assert r.verdict.value == "OK"
    st = pool.stats()
    assert st["runs"] == 12 and st["verifications"] == 12 and st["verification_failures"] == 0, st["last_failure"]
    assert st["destroyed"] == 0 and st["created"] <= 2 and st["canary_probes"] >= 2
    assert st["total"] == 2 and st["free"] == 2


def test_nothing_a_run_leaves_reaches_the_next(pool):
    """Files in /tmp, /dev/shm, the writable box, System V shared memory, a background process."""
    leave = ("echo x > /tmp/left; echo y > /dev/shm/left; echo z > /box/left; "
             "python3 -c 'import sysv_ipc' 2>/dev/null; (sleep 1000 &) ; "
             "python3 -c \"import ctypes; l=ctypes.CDLL(None); print(l.shmget(0x1234, 4096, 0o1666))\"")
    look = "ls -A /tmp /dev/shm /box; cat /proc/sysvipc/shm | wc -l; ls /proc | grep -c '^[0-9]'"
    for _ in range(3):
        r = _run(pool, ["/bin/sh", "-c", leave], box="rw", files={"input.txt": b"1"})
        assert r.verdict.value == "OK", r.stderr
        r = _run(pool, ["/bin/sh", "-c", look], box="rw", files={})
        out = r.stdout.decode().split()
        assert "left" not in out and "input.txt" not in out, out
        assert out[-2] == "1", f"a System V segment survived: {out}"  # only the header line
    assert pool.stats()["verification_failures"] == 0


def test_read_only_box_filled_once(pool, tmp_path):
    (tmp_path / "prog.sh").write_text("echo from-box\n")
    for _ in range(3):
        with pool.slot(POLICY, box="ro") as s:
            s.fill("v1", tree=str(tmp_path))
            r = s.run(["/bin/sh", "-c", "sh /box/prog.sh; touch /box/x 2>&1"], stdout=PIPE, stderr=PIPE)
        pool.drain()
        assert r.stdout.decode().startswith("from-box") and b"Read-only" in r.stdout + r.stderr
    assert pool.stats()["verification_failures"] == 0


def _destroyed(pool, before):
    pool.drain()
    st = pool.stats()
    return st["destroyed"] - before, st["last_failure"]


def test_a_process_left_in_the_user_namespace_destroys_the_slot(pool):
    _run(pool, ["/bin/true"])
    before = pool.stats()["destroyed"]
    with pool.slot(POLICY) as s:
        s.run(["/bin/true"])
        userns = os.dup(s.sandbox._pool.userns_fd)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # a process in the slot's user namespace, as a leak would be
            try:
                sc.setns(userns, sc.CLONE_NEWUSER)
                os.write(w, b"in")
                time.sleep(30)
            finally:
                os._exit(0)
        os.close(userns)
        assert os.read(r, 2) == b"in"
    try:
        n, last = _destroyed(pool, before)
        assert n == 1 and last["reason"].startswith("processes:"), last
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    assert _run(pool, ["/bin/true"]).verdict.value == "OK"  # a new slot takes its place


def test_a_dead_fork_server_destroys_the_slot(pool):
    _run(pool, ["/bin/true"])
    before = pool.stats()["destroyed"]
    with pool.slot(POLICY) as s:
        s.run(["/bin/true"])
        fs = s.sandbox._pool._server
        os.kill(fs.proc.pid, signal.SIGKILL)  # the slot's fork server, started by this test's pool
        fs.proc.wait()
    n, last = _destroyed(pool, before)
    assert n == 1 and last["reason"].startswith(("fds:", "processes:")), last


def test_a_changed_box_destroys_the_slot(pool, tmp_path):
    before = pool.stats()["destroyed"]
    with pool.slot(POLICY, box="ro") as s:
        s.fill("t", {"a": b"1"})
        s.run(["/bin/true"])
        with open(os.path.join(s.box, "a"), "ab") as f:  # as if the run had written to it
            f.write(b"2")
    n, last = _destroyed(pool, before)
    assert n == 1 and last["reason"].startswith("box:"), last
    with pool.slot(POLICY, box="rw") as s:
        s.run(["/bin/true"])
        os.rename(s.box, s.box + ".old")
        os.mkdir(s.box)
    n, last = _destroyed(pool, before)
    assert n == 2 and "replaced" in last["reason"], last
    os.rmdir(s.box + ".old")


def test_an_exception_in_the_block_destroys_the_slot(pool):
    before = pool.stats()["destroyed"]
    with pytest.raises(RuntimeError):
        with pool.slot(POLICY) as s:
            s.run(["/bin/true"])
            raise RuntimeError("caller failed")
    assert _destroyed(pool, before)[0] == 1


def test_busy_when_every_slot_is_taken():
    with SlotPool(1) as pool:
        with pool.slot(POLICY):
            t0 = time.monotonic()
            with pytest.raises(Busy):
                pool.acquire(POLICY, timeout=0.2)
            assert time.monotonic() - t0 < 5
        pool.drain()
        with pool.slot(POLICY.replace(hostname="other")) as s:  # the idle slot of another policy gives way
            assert s.run(["/bin/true"]).verdict.value == "OK"


def test_a_killed_pools_directory_is_swept_by_the_next_pool():
    """A process holding a SlotPool (a jailpy worker or serve) that is SIGKILLed cannot remove its
    boxes' directory; the next pool of the same user removes it (its lock is no longer held),
    and leaves a live pool's alone."""
    import subprocess
    import sys
    import tempfile

    code = ("import sys, time; from jailpy.slots import SlotPool; from jailpy.policy import load\n"
            "p = SlotPool(1)\n"
            "with p.slot(load('default').replace(cwd=False)) as s: s.run(['/bin/true'])\n"
            "print(p.root, flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        dead_root = child.stdout.readline().strip()
        assert dead_root.startswith(tempfile.gettempdir()) and os.path.isdir(dead_root), dead_root
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    live = SlotPool(1)
    try:
        assert os.path.isdir(live.root)
        other = SlotPool(1)  # a second sweep: the live pool's directory stays
        other.close()
        assert not os.path.exists(dead_root), os.listdir(dead_root)
        assert os.path.isdir(live.root)
    finally:
        live.close()
    assert not os.path.exists(live.root)
