"""jailpy worker on Dramatiq + Redis (issue 14, part 4): a real redis-server on 127.0.0.1 (a free
port, no persistence unless the test is about a restart), real ``jailpy worker`` processes.

N jobs with M workers give N results; a worker SIGKILLed mid-job has its job run again elsewhere and
the result stored exactly once; a restarted broker (with an append-only file) loses no acknowledged
result; ``jailpy serve --broker`` adds /v1/jobs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, unique_marker, wait_gone
from limits_helpers import NEEDS_CGROUP

pytest.importorskip("dramatiq")
pytest.importorskip("redis")
pytestmark = [NEEDS_CGROUP, pytest.mark.skipif(shutil.which("redis-server") is None,
                                               reason="redis-server not installed (tests/run.sh installs it)")]

HEARTBEAT = 1.5  # seconds: a worker silent this long is dead


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A redis-server of the test's own on 127.0.0.1; ``durable``: an append-only file synced on
    every write, in the test's directory (for the restart test); else no persistence."""

    def __init__(self, tmp, durable: bool = False, port: int | None = None) -> None:
        self.tmp, self.durable = tmp, durable
        self.port = port or free_port()
        persist = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--dir", str(tmp), "--protected-mode", "yes", *persist],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        client = redis.Redis(port=self.port)
        end = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    r = Redis(tmp_path)
    yield r
    r.kill()


class WorkerProc:
    def __init__(self, url: str, slots: int = 1) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jailpy", "worker", "--broker", url, "--slots", str(slots),
             "--heartbeat-timeout", str(HEARTBEAT), "--problems", str(REPO / "tests/judge/problems")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        line = self.proc.stdout.readline().decode()
        assert "ready" in line, (line, self.proc.stderr.read(2000) if self.proc.poll() is not None else "")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def workers():
    made: list[WorkerProc] = []

    def start(url: str, n: int = 1, slots: int = 1) -> list[WorkerProc]:
        new = [WorkerProc(url, slots) for _ in range(n)]
        made.extend(new)
        return new

    yield start
    for w in made:
        w.stop()


def store(url):
    from jailpy.service.jobs import JobStore

    return JobStore(url)


def job(i: int, extra: str = "") -> dict:
    return {"cmd": [{"args": ["sh", "-c", f"{extra}echo $(({i} * 7))"], "cpu_time_ms": 2000, "wall_time_ms": 30000}]}


@pytest.mark.timeout(180)
def test_n_jobs_m_workers_give_n_results(redis_server, workers):
    from jailpy import service

    ws = workers(redis_server.url, n=2)
    ids = {i: service.submit(job(i), redis_server.url) for i in range(16)}
    st = store(redis_server.url)
    for i, jid in ids.items():
        r = service.result(jid, redis_server.url, wait=90)
        assert r["state"] == "done", r
        assert r["result"]["results"][0]["stdout"] == f"{i * 7}\n"
        raw = st.raw(jid)
        assert raw["attempts"] == "1" and raw["writes"] == "1"
    by = {st.raw(j)["worker"] for j in ids.values()}
    assert by <= {f"{socket.gethostname()}:{w.pid}" for w in ws}
    info = st.workers()
    assert {f"{socket.gethostname()}:{w.pid}" for w in ws} <= set(info)
    for v in info.values():
        assert v["slots"] == 1 and v["cgroup"] in ("v1", "v2")


@pytest.mark.timeout(180)
def test_killed_worker_job_is_redelivered_and_stored_once(redis_server, workers):
    from jailpy import service

    st = store(redis_server.url)
    a, b = workers(redis_server.url, n=2)
    marker = unique_marker()
    jid = service.submit(job(6, extra=f"sleep {marker} & sleep 3; kill %1; "), redis_server.url)
    end = time.monotonic() + 60
    while (raw := st.raw(jid))["state"] != "running":
        assert time.monotonic() < end, raw
        time.sleep(0.05)
    victim = a if raw["worker"].endswith(f":{a.pid}") else b
    other = b if victim is a else a
    os.kill(victim.pid, signal.SIGKILL)  # mid-job: it never acknowledges the message
    victim.proc.wait(timeout=10)
    assert wait_gone(marker, 10) == [], "the dead worker's sandbox outlived it"
    r = service.result(jid, redis_server.url, wait=120)
    assert r["state"] == "done", r
    assert r["result"]["results"][0]["stdout"] == "42\n"
    raw = st.raw(jid)
    assert raw["attempts"] == "2" and raw["writes"] == "1", raw
    assert raw["worker"].endswith(f":{other.pid}")
    # the write is idempotent: a late second run of the same job stores nothing
    assert st.finish(jid, {"results": []}) is False
    assert st.raw(jid)["writes"] == "1" and service.result(jid, redis_server.url)["result"] == r["result"]


@pytest.mark.timeout(180)
def test_restarted_broker_loses_no_acknowledged_result(tmp_path, workers):
    from jailpy import service

    rs = Redis(tmp_path, durable=True)
    try:
        workers(rs.url, n=1)
        ids = [service.submit(job(i), rs.url) for i in range(5)]
        for jid in ids:
            assert service.result(jid, rs.url, wait=60)["state"] == "done"
        rs.kill()  # SIGKILL: no shutdown save; what was acknowledged is in the append-only file
        rs = Redis(tmp_path, durable=True, port=rs.port)
        for i, jid in enumerate(ids):
            r = service.result(jid, rs.url)
            assert r is not None and r["state"] == "done", r
            assert r["result"]["results"][0]["stdout"] == f"{i * 7}\n"
        later = service.submit(job(9), rs.url)  # the worker reconnects and goes on
        r = service.result(later, rs.url, wait=90)
        assert r["state"] == "done" and r["result"]["results"][0]["stdout"] == "63\n", r
    finally:
        rs.kill()


@pytest.mark.timeout(180)
def test_serve_with_broker_adds_jobs_and_judge_jobs(redis_server, workers, tmp_path):
    import httpx

    from jailpy import service

    workers(redis_server.url, n=1)
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-m", "jailpy", "serve", "--listen", f"127.0.0.1:{port}", "--broker",
                            redis_server.url], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, cwd=REPO)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            end = time.monotonic() + 30
            while True:
                try:
                    if c.get("/v1/health").json()["broker"]:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < end and srv.poll() is None, srv.stderr.read(2000) if srv.poll() else ""
                time.sleep(0.1)
            r = c.post("/v1/jobs", json=job(3))
            assert r.status_code == 202, r.text
            jid = r.json()["id"]
            end = time.monotonic() + 60
            while (st := c.get(f"/v1/jobs/{jid}").json())["state"] not in ("done", "failed"):
                assert st["state"] in ("queued", "running") and time.monotonic() < end, st
                time.sleep(0.1)
            assert st["state"] == "done" and st["result"]["results"][0]["stdout"] == "21\n"
            assert c.post("/v1/jobs", json={"cmd": []}).status_code == 400
            assert c.get("/v1/jobs/nope").status_code == 404
    finally:
        srv.terminate()
        srv.wait(timeout=30)
        srv.stderr.close()
    jid = service.submit({"problem": "aplusb", "source": "print(sum(map(int, input().split())))", "lang": "python"},
                         redis_server.url, kind="judge")
    r = service.result(jid, redis_server.url, wait=90)
    assert r["state"] == "done" and r["result"]["verdict"] == "AC", r


def test_worker_refuses_a_host_that_cannot_run_jobs(redis_server):
    env = dict(os.environ, JAILPY_CGROUP_PARENT="/jailpy-no-such-parent/x")
    p = subprocess.run([sys.executable, "-m", "jailpy", "worker", "--broker", redis_server.url], env=env,
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert p.returncode == 125, p
    assert p.stderr.startswith(b"jailpy: error: this host cannot run jobs") and p.stderr.count(b"\n") == 1, p.stderr


def test_worker_refuses_a_host_that_fails_doctors_essentials():
    """Inside a sandbox (--seccomp none: the kernel's own quota answers) no user namespace can be
    made: the worker names doctor's failed check and its fix before it touches the broker."""
    p = subprocess.run([sys.executable, "-m", "jailpy", "exec", "--seccomp", "none", "--", sys.executable, "-m",
                        "jailpy", "worker", "--broker", "redis://127.0.0.1:1/0"], capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL, cwd=REPO)
    assert p.returncode == 125, p
    err = p.stderr.decode()
    assert err.startswith("jailpy: error: this host cannot run jobs: jailpy doctor: ") and err.count("\n") == 1, err
    assert "user namespaces" in err and "sysctl -w user.max_user_namespaces=" in err, err


def test_bad_broker_url():
    p = subprocess.run([sys.executable, "-m", "jailpy", "worker", "--broker", "http://x"], capture_output=True,
                       timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert p.returncode == 125 and b"--broker" in p.stderr
