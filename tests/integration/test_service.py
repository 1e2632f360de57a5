"""jailpy serve (issue 14, part 3): a real uvicorn on 127.0.0.1, driven by httpx.

Every endpoint, bearer auth, 429 when every slot is busy, 400 naming the field for 30 malformed
requests, a 50 MB output capped, go-judge's documented /run examples (README "Example Request &
Response": compile + copyOutCached, run by fileId, two commands joined by pipeMapping, an
infinite loop with clockLimit), and 200 concurrent requests with every result right.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO
from limits_helpers import NEEDS_CGROUP

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

pytestmark = NEEDS_CGROUP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp, slots: int = 2, extra: tuple = ()) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        tf = tmp / f"token-{self.port}"
        tf.write_text(self.token + "\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jailpy", "serve", "--listen", f"127.0.0.1:{self.port}", "--slots", str(slots),
             "--problems", str(REPO / "tests/judge/problems"), "--token-file", str(tf), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        end = time.monotonic() + 30
        while True:
            try:
                if self.client.get("/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > end:
                out = self.proc.communicate(timeout=5)
                raise AssertionError(f"jailpy serve did not start: {out}")
            time.sleep(0.1)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"), slots=2)
    yield s
    s.close()


def run1(server, **cmd) -> dict:
    r = server.client.post("/v1/run", json={"cmd": [cmd]})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


def test_run_files_stdin_copy_out(server):
    res = run1(server, args=["python3", "main.py"], stdin="21", files={"main.py": "import sys\n"
               "n = int(input())\nopen('out.txt', 'w').write(str(n * 2))\nprint(n + 1)\nprint('e', file=sys.stderr)"},
               cpu_time_ms=2000, wall_time_ms=5000, memory_bytes=268435456, max_processes=16, copy_out=["out.txt"])
    assert res["verdict"] == "OK" and res["exit_code"] == 0 and res["signal"] is None
    assert res["stdout"] == "22\n" and res["stderr"] == "e\n" and res["files"] == {"out.txt": "42"}
    assert res["cpu_time_ms"] >= 0 and res["wall_time_ms"] > 0 and res["memory_peak_bytes"] > 0


@pytest.mark.parametrize("code, verdict", [
    ("while True: pass", "TLE"), ("raise SystemExit(4)", "RE"), ("import os; os.kill(os.getpid(), 11)", "SIG"),
    ("x = bytearray(400 << 20)", "MLE"), ("import time; time.sleep(30)", "WLE"),
])
def test_run_verdicts(server, code, verdict):
    res = run1(server, args=["python3", "-c", code], cpu_time_ms=500, wall_time_ms=1500, memory_bytes=128 << 20)
    assert res["verdict"] == verdict, res


def test_copy_out_cached_and_files_api(server):
    res = run1(server, args=["sh", "-c", "printf hello > a.bin"], copy_out_cached=["a.bin"], copy_out=["missing?"])
    fid = res["file_ids"]["a.bin"]
    assert res["file_errors"] == []
    c = server.client
    assert c.get(f"/v1/files/{fid}").content == b"hello"
    assert fid in c.get("/v1/files").json()
    res = run1(server, args=["cat", "in.txt"], files={"in.txt": {"file_id": fid}})
    assert res["stdout"] == "hello"
    up = c.post("/v1/files?name=x", content=b"uploaded")
    assert up.status_code == 201
    fid2 = up.json()["id"]
    assert run1(server, args=["cat"], stdin={"file_id": fid2})["stdout"] == "uploaded"
    assert c.delete(f"/v1/files/{fid2}").status_code == 204
    assert c.get(f"/v1/files/{fid2}").status_code == 404
    assert c.delete(f"/v1/files/{fid2}").status_code == 404
    r = c.post("/v1/run", json={"cmd": [{"args": ["cat"], "stdin": {"file_id": fid2}}]})
    assert r.status_code == 400 and r.json()["field"] == "cmd[0].stdin"
    res = run1(server, args=["cat", "nope"], copy_out=["nope"])
    assert res["verdict"] == "RE" and res["file_errors"][0]["type"] == "CopyOutOpen"


def test_pipes_between_commands(server):
    r = server.client.post("/v1/run", json={"cmd": [
        {"args": ["python3", "-c", "print('ping'); import sys; print(input(), file=sys.stderr)"]},
        {"args": ["python3", "-c", "import sys; x = input(); print(x.upper(), flush=True)"]},
    ], "pipes": [{"from_cmd": 0, "to_cmd": 1}, {"from_cmd": 1, "to_cmd": 0}]})
    assert r.status_code == 200, r.text
    a, b = r.json()["results"]
    assert a["verdict"] == b["verdict"] == "OK", (a, b)
    assert a["stderr"] == "PING\n" and a["stdout"] is None


def test_50mb_output_is_capped(server):
    res = run1(server, args=["python3", "-c", "import sys\nfor _ in range(50): sys.stdout.write('x' * 1000000)"],
               output_bytes=1 << 20, wall_time_ms=20000, cpu_time_ms=10000)
    assert res["verdict"] == "OLE" and res["stdout_truncated"] is True
    assert len(res["stdout"]) == 1 << 20


def test_judge_endpoint(server):
    c = server.client
    r = c.post("/v1/judge", json={"problem": "aplusb", "source": "print(sum(map(int, input().split())))\n",
                                  "lang": "python"})
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == "AC" and len(r.json()["tests"]) == 3
    r = c.post("/v1/judge", json={"problem": "aplusb", "source": "int main(){return 1;}", "source_name": "x.c"})
    assert r.status_code == 200 and r.json()["verdict"] == "RE"
    r = c.post("/v1/judge", json={"problem": "../etc", "source": "x", "lang": "python"})
    assert r.status_code == 400 and r.json()["field"] == "problem"
    r = c.post("/v1/judge", json={"problem": "aplusb", "source": "x", "lang": "cobol"})
    assert r.status_code == 400 and r.json()["field"] == "lang"


def test_health_and_metrics(server):
    run1(server, args=["true"])
    h = server.client.get("/v1/health").json()
    assert h["status"] == "ok" and h["cgroup"] in ("v1", "v2") and h["slots"]["total"] == 2
    assert h["verifications"] >= 1 and "last_failed_verification" in h
    text = server.client.get("/metrics").text
    for name in ("jailpy_runs_total{verdict=\"OK\"}", "jailpy_run_seconds_bucket", "jailpy_requests_in_flight",
                 "jailpy_pool_verifications_total", "jailpy_pool_destroyed_total", "jailpy_slots_free"):
        assert name in text, name


def test_auth(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for path in ("/v1/health", "/metrics", "/v1/files"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/run", json={"cmd": [{"args": ["true"]}]}, headers={"Authorization": "Basic x"}).status_code == 401


def test_listening_beyond_loopback_needs_a_token():
    p = subprocess.run([sys.executable, "-m", "jailpy", "serve", "--listen", "0.0.0.0:1"], capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL, cwd=REPO)
    assert p.returncode == 125 and b"--token-file" in p.stderr and p.stderr.count(b"\n") == 1


def test_429_when_every_slot_is_busy(server):
    body = {"cmd": [{"args": ["sleep", "2"], "wall_time_ms": 10000}]}
    codes, headers = [], []

    def go():
        r = server.client.post("/v1/run", json=body)
        codes.append(r.status_code)
        headers.append(r.headers.get("retry-after"))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
    assert all(h == "1" for c, h in zip(codes, headers) if c == 429)


MALFORMED = [
    (b"not json", "body"), (b"[]", "body"), (b"{}", "cmd"), (b'{"cmd": []}', "cmd"),
    (b'{"cmd": 5}', "cmd"), (b'{"cmd": [{}]}', "args"), (b'{"cmd": [{"args": []}]}', "cmd[0].args"),
    (b'{"cmd": [{"args": "ls"}]}', "cmd[0].args"), (b'{"cmd": [{"args": [1]}]}', "cmd[0].args[0]"),
    (b'{"cmd": [{"args": [""]}]}', "cmd[0].args"), (b'{"cmd": [{"args": ["a\\u0000b"]}]}', "cmd[0].args"),
    (b'{"cmd": [{"args": ["x"], "cpu_time_ms": -1}]}', "cmd[0].cpu_time_ms"),
    (b'{"cmd": [{"args": ["x"], "cpu_time_ms": 1e9}]}', "cmd[0].cpu_time_ms"),
    (b'{"cmd": [{"args": ["x"], "cpu_time_ms": "1"}]}', "cmd[0].cpu_time_ms"),
    (b'{"cmd": [{"args": ["x"], "memory_bytes": 1024}]}', "cmd[0].memory_bytes"),
    (b'{"cmd": [{"args": ["x"], "wall_time_ms": 0}]}', "cmd[0].wall_time_ms"),
    (b'{"cmd": [{"args": ["x"], "max_processes": 0}]}', "cmd[0].max_processes"),
    (b'{"cmd": [{"args": ["x"], "output_bytes": 999999999999}]}', "cmd[0].output_bytes"),
    (b'{"cmd": [{"args": ["x"], "env": ["NOEQUALS"]}]}', "cmd[0].env[0]"),
    (b'{"cmd": [{"args": ["x"], "files": {"../escape": "x"}}]}', "cmd[0].files"),
    (b'{"cmd": [{"args": ["x"], "files": {"/abs": "x"}}]}', "cmd[0].files"),
    (b'{"cmd": [{"args": ["x"], "files": {"a": {}}}]}', "cmd[0].files.a"),
    (b'{"cmd": [{"args": ["x"], "files": {"a": 5}}]}', "cmd[0].files"),
    (b'{"cmd": [{"args": ["x"], "stdin": 5}]}', "cmd[0].stdin"),
    (b'{"cmd": [{"args": ["x"], "copy_out": ["../../etc/passwd"]}]}', "cmd[0].copy_out[0]"),
    (b'{"cmd": [{"args": ["x"], "seccomp": "none"}]}', "cmd[0].seccomp"),
    (b'{"cmd": [{"args": ["x"], "colour": 1}]}', "colour"),
    (b'{"cmd": [{"args": ["x"]}], "pipes": [{"from_cmd": 0, "to_cmd": 3}]}', "pipes[0].to_cmd"),
    (b'{"cmd": [{"args": ["x"]}], "pipes": [{"from_cmd": 0, "to_cmd": 0}]}', "pipes[0]"),
    (b'{"cmd": [' + b",".join([b'{"args": ["x"]}'] * 9) + b"]}", "cmd"),
]


@pytest.mark.parametrize("body, field", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_requests_get_400_naming_the_field(server, body, field):
    r = server.client.post("/v1/run", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (r.status_code, r.text)
    doc = r.json()
    assert field in doc["field"], doc
    assert "Traceback" not in r.text and "\n" not in doc["error"]


def test_body_size_limit(tmp_path):
    s = Server(tmp_path, slots=1, extra=("--max-body", "1000"))
    try:
        r = s.client.post("/v1/run", content=b"x" * 5000)
        assert r.status_code == 413 and r.json()["field"] == "body"
        assert s.client.get("/nope").status_code == 404
    finally:
        s.close()


# ---- go-judge compatibility: its README's examples, unchanged

GJ_COMPILE = {"cmd": [{
    "args": ["/usr/bin/g++", "a.cc", "-o", "a"], "env": ["PATH=/usr/bin:/bin"],
    "files": [{"content": ""}, {"name": "stdout", "max": 10240}, {"name": "stderr", "max": 10240}],
    "cpuLimit": 10000000000, "memoryLimit": 104857600, "procLimit": 50,
    "copyIn": {"a.cc": {"content": "#include <iostream>\nusing namespace std;\nint main() {\nint a, b;\ncin >> a >> b;\n"
                                   "cout << a + b << endl;\n}"}},
    "copyOut": ["stdout", "stderr"], "copyOutCached": ["a.cc", "a"]}]}
GJ_PIPES = {"cmd": [{
    "args": ["/bin/cat", "1"], "env": ["PATH=/usr/bin:/bin"],
    "files": [{"content": ""}, None, {"name": "stderr", "max": 10240}],
    "cpuLimit": 1000000000, "memoryLimit": 1048576, "procLimit": 50,
    "copyIn": {"1": {"content": "TEST 1"}}, "copyOut": ["stderr"]}, {
    "args": ["/bin/cat"], "env": ["PATH=/usr/bin:/bin"],
    "files": [None, {"name": "stdout", "max": 10240}, {"name": "stderr", "max": 10240}],
    "cpuLimit": 1000000000, "memoryLimit": 1048576, "procLimit": 50, "copyOut": ["stdout", "stderr"]}],
    "pipeMapping": [{"in": {"index": 0, "fd": 1}, "out": {"index": 1, "fd": 0}}]}
GJ_LOOP = {"cmd": [{
    "args": ["/usr/bin/python3", "1.py"], "env": ["PATH=/usr/bin:/bin"],
    "files": [{"content": ""}, {"name": "stdout", "max": 10240}, {"name": "stderr", "max": 10240}],
    "cpuLimit": 3000000000, "clockLimit": 4000000000, "memoryLimit": 104857600, "procLimit": 50, "cpuRate": 0.1,
    "copyIn": {"1.py": {"content": "while True:\n    pass"}}}]}


def test_gojudge_compile_then_run_by_file_id(server):
    r = server.client.post("/run", json=GJ_COMPILE)
    assert r.status_code == 200, r.text
    [res] = r.json()
    assert res["status"] == "Accepted" and res["exitStatus"] == 0
    assert res["files"] == {"stderr": "", "stdout": ""} and set(res["fileIds"]) == {"a", "a.cc"}
    assert res["time"] > 0 and res["memory"] > 0 and res["runTime"] > 0
    run = {"cmd": [{
        "args": ["a"], "env": ["PATH=/usr/bin:/bin"],
        "files": [{"content": "1 1"}, {"name": "stdout", "max": 10240}, {"name": "stderr", "max": 10240}],
        "cpuLimit": 10000000000, "memoryLimit": 104857600, "procLimit": 50,
        "copyIn": {"a": {"fileId": res["fileIds"]["a"]}}}]}
    r = server.client.post("/run", json=run)
    assert r.status_code == 200, r.text
    [res] = r.json()
    assert res["status"] == "Accepted" and res["exitStatus"] == 0, res
    assert res["files"] == {"stderr": "", "stdout": "2\n"}


def test_gojudge_pipe_mapping(server):
    r = server.client.post("/run", json=GJ_PIPES)
    assert r.status_code == 200, r.text
    a, b = r.json()
    assert a["status"] == b["status"] == "Accepted", (a, b)
    assert a["files"] == {"stderr": ""} and b["files"] == {"stderr": "", "stdout": "TEST 1"}


def test_gojudge_infinite_loop(server):
    r = server.client.post("/run", json=GJ_LOOP)
    assert r.status_code == 200, r.text
    [res] = r.json()
    assert res["status"] == "Time Limit Exceeded" and res["exitStatus"] == 9
    assert res["files"] == {"stderr": "", "stdout": ""}


def test_gojudge_bad_requests(server):
    for body, field in (({"cmd": [{"args": ["x"], "copyIn": {"a": {"src": "/etc/passwd"}}}]}, "src"),
                        ({"cmd": [{"args": ["x"], "tty": True}]}, "tty"), ({"cmd": "x"}, "cmd"),
                        ({"cmd": [{"args": ["x"], "cpuLimit": "fast"}]}, "cpuLimit")):
        r = server.client.post("/run", json=body)
        assert r.status_code == 400 and field in r.json()["field"], r.text


@pytest.mark.timeout(240)
def test_200_concurrent_requests_all_correct(tmp_path):
    s = Server(tmp_path, slots=4)
    results: dict[int, str] = {}
    tries = [0]

    def one(i: int, client) -> None:
        body = {"cmd": [{"args": ["sh", "-c", f"echo $(({i} * 3))"], "cpu_time_ms": 2000, "wall_time_ms": 10000}]}
        for _ in range(2000):
            tries[0] += 1
            try:
                r = client.post("/v1/run", json=body)
            except (httpx.ReadError, httpx.RemoteProtocolError):  # a kept-alive connection the server closed
                continue
            if r.status_code == 429:
                time.sleep(0.02 + (i % 7) * 0.005)
                continue
            assert r.status_code == 200, r.text
            res = r.json()["results"][0]
            results[i] = res["stdout"] if res["verdict"] == "OK" else f"{res['verdict']}: {res['error']}"
            return

    try:
        with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=60,
                          limits=httpx.Limits(max_connections=200)) as client:
            threads = [threading.Thread(target=one, args=(i, client)) for i in range(200)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=200)
            elapsed = time.monotonic() - t0
        assert len(results) == 200, f"{len(results)} answered"
        wrong = {i: out for i, out in results.items() if out != f"{i * 3}\n"}
        assert not wrong, list(wrong.items())[:5]
        health = s.client.get("/v1/health").json()
        assert health["verification_failures"] == 0, health
        print(f"200 requests in {elapsed:.1f} s, {tries[0]} tries")
    finally:
        s.close()
