"""The Python API (jailpy.run, Sandbox, Policy, Result) and the --report JSON document."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

import jailpy
from conftest import NAMESPACES, jail_report, unique_marker, wait_for_marker, wait_gone


def run(argv, policy=None, **kw):
    kw.setdefault("stdin", jailpy.DEVNULL)
    kw.setdefault("capture_output", True)
    return jailpy.run(argv, policy, **kw)


def test_run_ok_with_captured_output():
    res = run(["sh", "-c", "printf out; printf err >&2"])
    assert isinstance(res, jailpy.Result)
    assert res.verdict == jailpy.Verdict.OK
    assert res.exit_code == 0 and res.signal is None and res.error is None
    assert res.stdout == b"out" and res.stderr == b"err"
    assert res.stdout_bytes == 3 and res.stderr_bytes == 3
    assert res.wall_s > 0
    assert sorted(res.protections["namespaces"]) == sorted(NAMESPACES)


def test_run_runtime_error_verdict():
    res = run(["sh", "-c", "exit 3"])
    assert res.verdict == jailpy.Verdict.RE and res.exit_code == 3 and res.signal is None


def test_run_signal_verdict():
    res = run(["python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGUSR2)"])
    assert res.verdict == jailpy.Verdict.SIG
    assert res.signal == 12 and res.exit_code == 140


@pytest.mark.parametrize("argv,code", [(["jailpy-no-such-command"], 127), (["/etc/passwd"], 126)],
                         ids=["not-found", "not-executable"])
def test_run_cannot_execute(argv, code):
    res = run(argv)
    assert res.exit_code == code and res.verdict == jailpy.Verdict.RE
    assert argv[0] in res.error
    assert res.stdout == b""


def test_stdin_bytes_are_fed():
    data = os.urandom(1 << 20)  # far more than a pipe holds: jailpy must feed while it reads
    res = run(["cat"], stdin=data)
    assert res.exit_code == 0, res.stderr
    assert res.stdout == data


def test_stdin_bytes_not_read_by_the_program():
    res = run(["true"], stdin=os.urandom(1 << 20))
    assert res.verdict == jailpy.Verdict.OK


def test_empty_stdin_bytes_is_eof():
    res = run(["sh", "-c", "cat; echo eof"], stdin=b"")
    assert res.stdout == b"eof\n"


def test_stdout_only_pipe():
    res = jailpy.run(["sh", "-c", "echo out; echo err >&2"], stdin=jailpy.DEVNULL, stdout=jailpy.PIPE,
                     stderr=jailpy.DEVNULL)
    assert res.stdout == b"out\n" and res.stderr is None


def test_large_output_on_both_streams_is_captured_whole():
    # 4 MiB on each stream, interleaved: a supervisor that reads one pipe at a time deadlocks
    code = ("import os\n"
            "for i in range(64):\n"
            "    os.write(1, bytes([i]) * 65536); os.write(2, bytes([255 - i]) * 65536)\n")
    res = run(["python3", "-c", code])
    assert res.exit_code == 0
    assert res.stdout == b"".join(bytes([i]) * 65536 for i in range(64))
    assert res.stderr == b"".join(bytes([255 - i]) * 65536 for i in range(64))


def test_background_process_holding_stdout_does_not_delay_the_end():
    marker = unique_marker()
    t0 = time.monotonic()
    res = run(["sh", "-c", f"sleep {marker} & echo started"], jailpy.Policy(wall_time=10))
    assert time.monotonic() - t0 < 10
    assert res.verdict == jailpy.Verdict.OK and res.stdout == b"started\n"
    assert wait_gone(marker, 5.0) == []


def test_policy_fields_apply(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "f").write_text("bound\n")
    os.chmod(d, 0o755)
    os.chmod(d / "f", 0o644)
    pol = jailpy.Policy(hostname="apihost", env=["A=1"], ro_bind=[f"{d}:/tmp/data"])
    res = jailpy.Sandbox(pol).run(["sh", "-c", 'echo "$(hostname) $A $(cat /tmp/data/f)"'], stdin=jailpy.DEVNULL,
                                  capture_output=True)
    assert res.exit_code == 0, res.stderr
    assert res.stdout == b"apihost 1 bound\n"


def test_sandbox_runs_twice_with_a_fresh_tmp_each_time():
    sb = jailpy.Sandbox(jailpy.Policy(cwd=False))  # the repo may live under /tmp: keep it out
    code = "import os; print(os.listdir('/tmp')); open('/tmp/left-over', 'w').write('x')"
    first = sb.run(["python3", "-c", code], stdin=jailpy.DEVNULL, capture_output=True)
    second = sb.run(["python3", "-c", code], stdin=jailpy.DEVNULL, capture_output=True)
    assert first.stdout == second.stdout == b"[]\n"
    assert first.policy_hash == second.policy_hash


@pytest.mark.parametrize("kwargs,key", [
    ({"hostname": "bad host!"}, "hostname"),
    ({"env": ["NOEQUALS"]}, "env"),
    ({"wall_time": 0}, "wall_time"),
    ({"pass_fd": [2]}, "pass_fd"),
    ({"bind": ["/tmp:relative"]}, "bind"),
], ids=["hostname", "env", "wall_time", "pass_fd", "bind-dst"])
def test_invalid_policy_raises_policy_error(kwargs, key):
    with pytest.raises(jailpy.PolicyError, match=key):
        jailpy.Sandbox(jailpy.Policy(**kwargs))


def test_missing_bind_source_raises_before_anything_runs():
    with pytest.raises(jailpy.PolicyError, match="/nonexistent/jailpy-src"):
        jailpy.Sandbox(jailpy.Policy(bind=["/nonexistent/jailpy-src"]))


def test_empty_argv_raises():
    with pytest.raises(jailpy.PolicyError):
        jailpy.Sandbox().run([])


def _run_and_kill(marker: str) -> dict:
    """Run two sleeps in a Sandbox on a thread, call Sandbox.kill() once they run; returns
    {'r': Result} or {'e': exception} from run()."""
    sb = jailpy.Sandbox()
    out: dict = {}

    def target() -> None:
        try:
            out["r"] = sb.run(["sh", "-c", f"sleep {marker} & sleep {marker}"], stdin=jailpy.DEVNULL,
                              capture_output=True)
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["e"] = e

    t = threading.Thread(target=target)
    t.start()
    try:
        assert len(wait_for_marker(marker, count=2)) == 2, "the sandboxed sleeps never started"
        sb.kill()
    finally:
        t.join(timeout=10)
    assert not t.is_alive(), "run() did not return after kill()"
    return out


def test_kill_from_another_thread_ends_everything():
    marker = unique_marker()
    _run_and_kill(marker)
    assert wait_gone(marker, 5.0) == []


def test_kill_from_another_thread_returns_a_result():
    out = _run_and_kill(unique_marker())
    assert "e" not in out, repr(out.get("e"))
    res = out["r"]
    assert res.exit_code == 137 and res.signal == 9


def test_concurrent_runs_from_threads():
    # a judge runs sandboxes from a thread pool: every run gets its own output back
    out: dict = {}

    def worker(i: int) -> None:
        for j in range(3):
            r = run(["sh", "-c", f"echo {i}-{j}; exit {i}"])
            out[(i, j)] = (r.stdout, r.exit_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert out == {(i, j): (f"{i}-{j}\n".encode(), i) for i in range(4) for j in range(3)}


def test_concurrent_run_does_not_hold_another_runs_stdin_open():
    a = jailpy.Sandbox()
    done: dict = {}

    def run_b() -> None:
        t0 = time.monotonic()
        r = run(["sh", "-c", "sleep 0.5; wc -c"], stdin=b"x" * (1 << 20))  # jailpy feeds while wc is asleep
        done["b"] = (r.stdout, time.monotonic() - t0)

    tb = threading.Thread(target=run_b)
    ta = threading.Thread(target=lambda: a.run(["sleep", "30"], stdin=jailpy.DEVNULL, capture_output=True))
    tb.start()
    time.sleep(0.2)  # B is feeding its stdin now
    ta.start()
    try:
        tb.join(timeout=2.5)
        b_finished_alone = not tb.is_alive()
    finally:
        time.sleep(0.2)
        a.kill()
        ta.join(timeout=10)
        tb.join(timeout=10)
    assert done["b"][0].strip() == b"1048576"
    assert b_finished_alone, "run B waited for run A's sandbox to end"


def test_to_json_leaves_captured_bytes_out():
    res = run(["echo", "secret output"])
    doc = json.loads(res.to_json())
    assert "stdout" not in doc and "stderr" not in doc
    assert doc["stdout_bytes"] == len(b"secret output\n")
    assert b"secret output" not in res.to_json()


def test_report_file_schema(report_path):
    p, rep = jail_report(report_path, "--", "python3", "-c", "import time\nt = time.process_time()\n"
                         "while time.process_time() - t < 0.05: pass\n")
    assert p.returncode == 0, p.stderr
    assert rep["schema_version"] == 1
    assert rep["verdict"] == "OK" and rep["exit_code"] == 0 and rep["signal"] is None
    for key in ("wall_s", "cpu_user_s", "cpu_sys_s"):
        assert isinstance(rep[key], float), key
    assert rep["wall_s"] > 0 and rep["cpu_user_s"] + rep["cpu_sys_s"] > 0.03
    prot = rep["protections"]
    assert sorted(prot["namespaces"]) == sorted(NAMESPACES)
    assert prot["no_new_privs"] is True
    assert isinstance(rep["policy_hash"], str) and rep["policy_hash"]
    assert rep["jailpy_version"] == jailpy.__version__


def test_report_of_a_signal(report_path):
    p, rep = jail_report(report_path, "--", "python3", "-c", "import os; os.kill(os.getpid(), 15)")
    assert p.returncode == 143
    assert rep["verdict"] == "SIG" and rep["signal"] == 15 and rep["exit_code"] == 143


def test_wall_time_through_the_api():
    t0 = time.monotonic()
    res = run(["sleep", "10"], jailpy.Policy(wall_time=0.5))
    assert time.monotonic() - t0 < 5
    assert res.verdict == jailpy.Verdict.WLE and res.exit_code == 137 and res.limit_fired == "wall_time"
    assert 0.5 <= res.wall_s < 3


# ------------------------------------------------------------------- prefork ----

def test_prefork_runs_are_fresh_sandboxes_and_close_ends_the_prepared_one():
    sb = jailpy.Sandbox(jailpy.Policy(cwd=False), prefork=True)
    try:
        code = "import os; print(os.listdir('/tmp'), os.getpid()); open('/tmp/left-over', 'w').write('x')"
        outs = [sb.run(["python3", "-c", code], stdin=jailpy.DEVNULL, capture_output=True) for _ in range(3)]
        assert [r.exit_code for r in outs] == [0, 0, 0]
        assert all(r.stdout.startswith(b"[] ") for r in outs), [r.stdout for r in outs]
        prepared = sb._ready[0]
        assert prepared is not None and os.path.exists(f"/proc/{prepared.pid}")
        ns = [sb.run(["readlink", "/proc/self/ns/pid"], stdin=jailpy.DEVNULL, capture_output=True).stdout
              for _ in range(2)]
        assert ns[0] != ns[1], "two runs shared a pid namespace"
    finally:
        sb.close()
    end = time.monotonic() + 5
    while os.path.exists(f"/proc/{prepared.pid}") and time.monotonic() < end:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{prepared.pid}"), "close() left the prepared sandbox running"


def test_prefork_sends_argv_env_and_stdio_of_each_run():
    sb = jailpy.Sandbox(jailpy.Policy(env=["K=v"]), prefork=True)
    try:
        for word in ("a b", "ü", ""):
            r = sb.run(["sh", "-c", 'read x; printf "%s|%s|%s" "$1" "$K" "$x"', "sh", word],
                       stdin=f"in-{word}\n".encode(), capture_output=True)
            assert r.stdout == f"{word}|v|in-{word}".encode()
        r = sb.run(["python3", "-c", "import sys; print('x' * 200000, end='')"], stdin=jailpy.DEVNULL,
                   capture_output=True)
        assert r.stdout == b"x" * 200000
        big = ["echo", "y" * 100000]  # a request larger than one socket message
        assert sb.run(big, stdin=jailpy.DEVNULL, capture_output=True).stdout == b"y" * 100000 + b"\n"
    finally:
        sb.close()


def test_prefork_sees_a_bind_source_replaced_between_runs(tmp_path):
    src = tmp_path / "box"
    src.mkdir()
    (src / "f").write_text("first\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(src, 0o755)
    os.chmod(src / "f", 0o644)
    sb = jailpy.Sandbox(jailpy.Policy(ro_bind=[f"{src}:/box"], cwd=False), prefork=True)
    try:
        assert sb.run(["cat", "/box/f"], stdin=jailpy.DEVNULL, capture_output=True).stdout == b"first\n"
        time.sleep(0.5)  # the next sandbox is built by now, with the old directory bound
        # a judge's work dir, deleted and made again for the next submission
        # (made beside the old one first, so the two cannot share an inode number)
        new = tmp_path / "box.new"
        new.mkdir()
        (new / "f").write_text("second\n")
        os.chmod(new, 0o755)
        os.chmod(new / "f", 0o644)
        src.rename(tmp_path / "box.old")
        new.rename(src)
        assert sb.run(["cat", "/box/f"], stdin=jailpy.DEVNULL, capture_output=True).stdout == b"second\n"
    finally:
        sb.close()
