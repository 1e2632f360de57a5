"""The cases from ../shared/cases/field-reports.md that the core issue covers (F01, F03, F05,
F07, F08, F09, F20), each as a regression test through the real CLI."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from conftest import JAILPY, jail, jail_report, unique_marker, wait_for_marker, wait_gone


def test_F01_self_sigterm_dies_143(tmp_path):
    p, rep = jail_report(tmp_path / "report.json", "--", "python3", "-c",
                       'import os,signal; os.kill(os.getpid(), signal.SIGTERM); print("survived")')
    assert p.returncode == 143
    assert b"survived" not in p.stdout
    assert rep["signal"] == 15 and rep["verdict"] == "SIG"


def test_F01_abort_134(tmp_path):
    p, rep = jail_report(tmp_path / "report.json", "--", "python3", "-c", "import os; os.abort()")
    assert p.returncode == 134 and rep["signal"] == 6


@pytest.mark.parametrize("code,sig", [
    ("import os,signal; os.kill(os.getpid(), signal.SIGKILL)", 9),
    ("import ctypes; ctypes.string_at(0)", 11),
])
def test_F07_signals_map_to_128_plus_n(tmp_path, code, sig):
    p, rep = jail_report(tmp_path / "report.json", "--", "python3", "-c", code)
    assert p.returncode == 128 + sig
    assert rep["signal"] == sig and rep["exit_code"] == 128 + sig


def test_F07_jailpy_errors_are_125():
    p = jail("--hostname", "bad host!", "--", "true")
    assert p.returncode == 125
    assert p.stderr.decode().count("\n") == 1 and "hostname" in p.stderr.decode()


def test_F03_sigkill_of_jailpy_leaves_nothing():
    marker = unique_marker()
    p = subprocess.Popen([*JAILPY, "--", "sh", "-c", f"sleep {marker} & sleep {marker}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert len(wait_for_marker(marker, 2)) >= 2, "the sleeps never started"
    finally:
        p.kill()
        p.wait()
    assert wait_gone(marker) == []


def test_F03_sigkill_early_in_a_loop_leaves_nothing():
    marker = unique_marker()
    for i in range(40):
        p = subprocess.Popen([*JAILPY, "--", "sh", "-c", f"sleep {marker} & sleep {marker}"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.001 + (i % 20) * 0.01)  # 1 ms .. 190 ms: from interpreter start to a running sandbox
        p.kill()
        p.wait()
    assert wait_gone(marker) == []


def test_F05_tiocsti_cannot_type_into_the_callers_terminal():
    master, slave = pty.openpty()
    try:
        code = ("import fcntl,termios,sys\n"
                "try:\n"
                "    [fcntl.ioctl(0, termios.TIOCSTI, c.encode()) for c in 'echo PWNED\\n']\n"
                "    print('typed')\n"
                "except OSError as e:\n"
                "    print('refused', e.errno)\n")
        p = subprocess.run([*JAILPY, "--", "python3", "-c", code], stdin=slave, capture_output=True, timeout=30)
        assert b"refused" in p.stdout, p.stdout + p.stderr
        r, _, _ = select.select([master], [], [], 0.2)
        typed = os.read(master, 1024) if r else b""
        assert b"PWNED" not in typed
    finally:
        os.close(master)
        os.close(slave)


def test_F08_only_std_fds_inside():
    r, w = os.pipe()
    try:
        code = "import os; print(sorted(int(x) for x in os.listdir('/proc/self/fd')))"
        p = subprocess.run([*JAILPY, "--", "python3", "-c", code], stdin=subprocess.DEVNULL, capture_output=True,
                           pass_fds=(r, w), timeout=30)
        fds = json.loads(p.stdout)
        assert fds[:3] == [0, 1, 2] and len(fds) == 4  # the 4th is listdir's own directory fd
        assert r not in fds[:3] and w not in fds[:3]
        p = subprocess.run([*JAILPY, "--pass-fd", str(w), "--", "python3", "-c", code], stdin=subprocess.DEVNULL,
                           capture_output=True, pass_fds=(r, w), timeout=30)
        assert w in json.loads(p.stdout)
    finally:
        os.close(r)
        os.close(w)


def test_F08_directory_as_stdin_is_refused(tmp_path):
    canary = tmp_path / "ran"
    os.chmod(tmp_path, 0o777)
    fd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    try:
        # the API refuses with PolicyError (exit 125 in the CLI) before anything starts
        import jailpy

        with pytest.raises(jailpy.PolicyError, match="stdin is a directory"):
            jailpy.run(["sh", "-c", f"touch {canary}"], stdin=fd)
        # the CLI: the installed `jailpy` command refuses before Python starts (CPython itself
        # cannot start with a directory on fd 0)
        launcher = os.path.join(os.path.dirname(sys.executable), "jailpy")
        p = subprocess.run([launcher, "exec", "--bind", str(tmp_path), "--", "sh", "-c", f"touch {canary}"],
                           stdin=fd, capture_output=True, timeout=30)
    finally:
        os.close(fd)
    assert p.returncode == 125
    assert b"directory" in p.stderr and p.stdout == b""
    assert not canary.exists()


def test_F09_argv_is_byte_exact():
    args = ["a b", "(x)", "it's", "ü ñ", "$HOME", "*", ""]
    p = jail("--", "python3", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *args)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == args


def test_F09_script_path_with_spaces_and_non_ascii(tmp_path):
    d = tmp_path / "dir with spaces ü"
    d.mkdir()
    script = d / "scrïpt ñ.py"
    script.write_text("print('ran')\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o755)
    os.chmod(script, 0o644)
    p = jail("--ro-bind", str(d), "--", "python3", str(script))
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"ran\n"


@pytest.mark.parametrize("redir", ["0<&-", "1>&-", "2>&-", "</dev/null"])
def test_F20_closed_or_null_std_fds_start_normally(redir):
    code = 'import sys; print(sys.stdin is None or sys.stdin.read()=="", file=sys.stderr if sys.stdout is None else sys.stdout)'
    cmd = " ".join([*(f"'{a}'" for a in JAILPY), "--", "python3", "-c", f"'{code}'", redir])
    p = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert b"Traceback" not in p.stderr and b"jailpy:" not in p.stderr
    if redir != "1>&-":
        assert p.stdout == b"True\n"
