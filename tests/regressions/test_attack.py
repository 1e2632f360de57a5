"""Regressions for what a hostile tester found after the hardening (issues 10 and 17): each test
failed on the code before its fix.  Real jailpy processes, a real pty and bash for job control,
real FIFOs; bounded in time; canaries under tmp dirs.

 1  Ctrl-Z stops the program too; a background job whose stdin is the terminal does not run
 2  a reader that stops (or a stopped terminal) never keeps the report or Ctrl-C waiting
 4  a program that ran past its wall time while jailpy was stopped is WLE
 5  a paused sandbox that reaches its wall time ends; a dead jailpy's frozen one is swept
 7  a caller with fds above 1023
 8  --output-limit cannot be bypassed through a read-write stdin
 9  an outside process holding the program's output pipe is not waited for
 10 a short --wall-time does not cover jailpy's own set-up
 12, 13, 14, 15  text the program chooses stays text; policies read includes once; Policy types
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import jailpy
from conftest import JAILPY, REPO, TIMEOUT, jail
from limits_helpers import NEEDS_CGROUP, TIME_FACTOR


def _read_for(fd: int, seconds: float) -> bytes:
    out, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def _shell() -> tuple[int, int]:
    pid, master = pty.fork()
    if pid == 0:
        os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
    _read_for(master, 1.0)
    return pid, master


def _end_shell(pid: int, master: int) -> None:
    os.write(master, b"kill -9 %1 2>/dev/null; exit\n")
    _read_for(master, 1.0)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    os.close(master)


@pytest.mark.parametrize("how", ["ctrl-z", "background"])
def test_a_stopped_or_background_jailpy_does_not_let_the_program_read_the_terminal(tmp_path, how):
    os.chmod(tmp_path, 0o777)
    keys = tmp_path / "keys"
    cmd = (f"{sys.executable} -m jailpy exec --no-cwd --wall-time 30 --bind {tmp_path}:/o -- "
           f"sh -c 'cat > /o/keys'" + (" &" if how == "background" else ""))
    pid, master = _shell()
    try:
        os.write(master, f"cd {REPO}; {cmd}\n".encode())
        _read_for(master, 3.0 * TIME_FACTOR)
        if how == "ctrl-z":
            os.write(master, b"\x1a")
            _read_for(master, 1.5)
        for _ in range(3):
            os.write(master, b"echo my-secret-typed-into-the-shell\n")
            _read_for(master, 0.5)
    finally:
        _end_shell(pid, master)
    assert not keys.exists() or b"secret" not in keys.read_bytes(), keys.read_bytes()


def test_a_reader_that_never_reads_gets_the_report_written_and_ctrl_c_works(tmp_path):
    fifo, rep = tmp_path / "fifo", tmp_path / "report.json"
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    w = os.open(fifo, os.O_WRONLY)
    p = subprocess.Popen([*JAILPY, "--no-cwd", "--output-limit", "100M", "--wall-time", "2", "--report", str(rep),
                          "--", "sh", "-c", "yes attack"], stdin=subprocess.DEVNULL, stdout=w,
                         stderr=subprocess.DEVNULL, cwd=REPO)
    os.close(w)
    try:
        end = time.monotonic() + 10 * TIME_FACTOR
        while not rep.exists() and time.monotonic() < end:
            time.sleep(0.1)
        assert rep.exists(), "the report waited for the reader"
        assert json.loads(rep.read_bytes())["verdict"] == "WLE"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5 * TIME_FACTOR) == 128 + signal.SIGTERM
    finally:
        p.kill()
        p.wait()
        os.close(r)


def test_a_program_that_ran_past_its_wall_time_while_jailpy_was_stopped_is_wle(tmp_path):
    rep_path = tmp_path / "report.json"
    p = subprocess.Popen([*JAILPY, "--report", str(rep_path), "--wall-time", "2", "--", "sleep", "5"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        time.sleep(1.0)
        p.send_signal(signal.SIGSTOP)
        time.sleep(6.0)
        p.send_signal(signal.SIGCONT)
        p.wait(timeout=TIMEOUT)
    finally:
        p.send_signal(signal.SIGCONT)
        p.kill()
        p.wait()
    rep = json.loads(rep_path.read_bytes())
    assert rep["verdict"] == "WLE" and rep["exit_code"] == 137 and rep["limit_fired"] == "wall_time", rep


@NEEDS_CGROUP
def test_a_paused_sandbox_that_reaches_its_wall_time_ends(tmp_path):
    name = f"attackp-{os.getpid()}"
    p = subprocess.Popen([*JAILPY, "--no-cwd", "--name", name, "--wall-time", "2", "--", "sleep", "100"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    try:
        time.sleep(1.0 * TIME_FACTOR)
        assert subprocess.run([sys.executable, "-m", "jailpy", "pause", name], capture_output=True,
                              timeout=TIMEOUT).returncode == 0
        assert p.wait(timeout=10 * TIME_FACTOR) == 137, "a frozen sandbox kept jailpy past its wall time"
    finally:
        p.kill()
        p.wait()


def test_a_caller_with_fds_above_1023():
    code = textwrap.dedent("""
        import os, resource, jailpy
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        keep = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
        sb = jailpy.Sandbox(jailpy.Policy(cwd=False, output_limit="1M", wall_time=10))
        out = os.dup2(1, 2000)
        for _ in range(3):
            r = sb.run(["echo", "hi"], stdin=jailpy.DEVNULL, stdout=out)
            assert r.exit_code == 0, r
        sb.close()
        print("done")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=TIMEOUT, cwd=REPO)
    assert p.returncode == 0 and p.stdout.endswith(b"done\n"), p.stderr[-600:]


def test_output_limit_cannot_be_bypassed_through_a_read_write_stdin(tmp_path):
    master, slave = pty.openpty()
    try:
        p = subprocess.run([*JAILPY, "--output-limit", "100", "--", "sh", "-c", "yes x | head -c 200000 >&0"],
                           stdin=slave, capture_output=True, timeout=TIMEOUT, cwd=REPO)
        leaked = _read_for(master, 1.0)
    finally:
        os.close(master)
        os.close(slave)
    assert leaked.count(b"x") <= 100, f"{leaked.count(b'x')} bytes reached the terminal through stdin"
    assert p.returncode != 0


def test_an_outside_process_holding_the_output_pipe_is_not_waited_for(tmp_path):
    # the program passes its stdout pipe out over a unix socket to a process outside
    os.chmod(tmp_path, 0o777)
    path = str(tmp_path / "sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(1)
    code = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "socket.send_fds(s, [b'x'], [1]); print('sent', flush=True)")
    p = subprocess.Popen([*JAILPY, "--bind", f"{tmp_path}:{tmp_path}", "--output-limit", "1M", "--", "python3",
                          "-c", code, path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=REPO)
    held = []
    try:
        srv.settimeout(10 * TIME_FACTOR)
        conn, _ = srv.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1, 1)
        held += fds
        out, err = p.communicate(timeout=10 * TIME_FACTOR)  # ends although `held` keeps the pipe open
        assert p.returncode == 0, err
        assert out == b"sent\n"
    finally:
        p.kill()
        p.wait()
        for fd in held:
            os.close(fd)
        srv.close()


def test_a_short_wall_time_does_not_cover_the_set_up(tmp_path):
    for _ in range(5):
        r = jailpy.run(["true"], jailpy.Policy(cwd=False, wall_time=0.05), stdin=jailpy.DEVNULL)
        assert r.verdict in (jailpy.Verdict.OK, jailpy.Verdict.WLE), r
        if r.verdict == jailpy.Verdict.WLE:  # only when /bin/true itself took that long
            assert r.wall_s >= 0.05, r


@NEEDS_CGROUP
def test_program_chosen_text_in_jailpy_ps_is_text(tmp_path):
    name = f"attackps-{os.getpid()}"
    p = subprocess.Popen([*JAILPY, "--no-cwd", "--name", name, "--wall-time", "20", "--", "sh", "-c",
                          "sleep 4", "[/]", "[bold]x"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        end = time.monotonic() + 10 * TIME_FACTOR
        out = b""
        while time.monotonic() < end and name.encode() not in out:
            ps = subprocess.run([sys.executable, "-m", "jailpy", "ps"], capture_output=True, timeout=TIMEOUT,
                                env=dict(os.environ, COLUMNS="200"))  # wide enough for the whole command
            assert ps.returncode == 0 and b"Traceback" not in ps.stderr, ps.stderr
            out = ps.stdout
            time.sleep(0.2)
        assert b"[/]" in out, out
    finally:
        p.kill()
        p.wait()


def test_a_policy_read_twice_per_include_is_read_once_and_includes_are_bounded(tmp_path):
    # each file includes the next twice: 2**20 reads before; 21 now
    for i in range(20):
        (tmp_path / f"p{i}.toml").write_text(f'include = ["p{i + 1}.toml", "p{i + 1}.toml"]\n')
    (tmp_path / "p20.toml").write_text('hostname = "deep"\n')
    t0 = time.monotonic()
    p = jail("--policy", str(tmp_path / "p0.toml"), "--", "hostname", timeout=60)
    assert p.returncode == 0 and p.stdout == b"deep\n", p.stderr
    assert time.monotonic() - t0 < 10 * TIME_FACTOR
    many = ", ".join(['"p20.toml"'] * 1000)
    (tmp_path / "many.toml").write_text(f"include = [{many}]\n")
    p = jail("--policy", str(tmp_path / "many.toml"), "--", "true")
    assert p.returncode == 125 and b"at most" in p.stderr, p.stderr


@pytest.mark.parametrize("kw", [{"cwd": "no"}, {"pids": "3"}, {"bind": "/tmp"}, {"memory": object()}])
def test_policy_fields_of_the_wrong_type_are_a_policy_error(kw):
    with pytest.raises(jailpy.PolicyError):
        jailpy.Sandbox(jailpy.Policy(**kw))


def test_pid1_shows_nothing_of_the_callers_command_line_length():
    p = jail("--", "cat", "/proc/1/cmdline")
    assert p.stdout == b"jailpy-init\0", p.stdout[:80]
