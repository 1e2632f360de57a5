"""What the program is started with: file descriptors, environment, argv, stdin/stdout/stderr,
its terminal, forwarded signals, and how its end maps to jailpy's exit status."""

from __future__ import annotations

import ast
import errno
import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

import jailpy
from conftest import (JAILPY, OPEN_FDS, REPO, SANDBOX_PATH, TIMEOUT, jail, jail_py, jail_report, jail_sh_redirect,
                      last_json)

# ----------------------------------------------------------------------- fds ----



def test_only_fds_0_1_2_are_open_even_if_the_caller_has_more(tmp_path):
    r, w = os.pipe()
    f = os.open(tmp_path / "extra", os.O_CREAT | os.O_RDWR)
    try:
        p = jail_py(OPEN_FDS, pass_fds=(r, w, f))
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout) == [0, 1, 2]
    finally:
        for fd in (r, w, f):
            os.close(fd)


def test_api_closes_inheritable_fds_of_the_caller(tmp_path):
    fd = os.open(tmp_path / "extra", os.O_CREAT | os.O_RDWR)
    os.set_inheritable(fd, True)
    try:
        res = jailpy.run(["python3", "-c", OPEN_FDS], stdin=jailpy.DEVNULL, capture_output=True)
    finally:
        os.close(fd)
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == [0, 1, 2]


def test_pass_fd_keeps_that_fd():
    r, w = os.pipe()
    try:
        code = OPEN_FDS + f"os.write({w}, b'hello through the fd')\n"
        p = jail_py(code, "--pass-fd", str(w), pass_fds=(r, w))
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout) == [0, 1, 2, w]
        os.set_blocking(r, False)
        assert os.read(r, 100) == b"hello through the fd"
    finally:
        os.close(r)
        os.close(w)


def test_pass_fd_that_is_not_open_is_refused():
    p = jail("--pass-fd", "987", "--", "true")
    assert p.returncode == 125
    assert p.stderr.count(b"\n") == 1 and b"987" in p.stderr


# ----------------------------------------------------------------- environment ----

def _env_of_program(*jail_args: str, env: dict) -> dict:
    p = jail(*jail_args, "--", "env", "-0", env=env)
    assert p.returncode == 0, p.stderr
    return dict(item.split("=", 1) for item in p.stdout.decode().split("\0") if item)


def test_environment_is_scrubbed():
    caller = dict(os.environ, JAILPY_TEST_SECRET="hunter2", AWS_SECRET_ACCESS_KEY="nope", TERM="xterm-test")
    inside = _env_of_program(env=caller)
    assert set(inside) == {"PATH", "HOME", "LANG", "TERM"}, inside
    assert "hunter2" not in json.dumps(inside)
    assert inside["TERM"] == "xterm-test"
    assert inside["PATH"] == SANDBOX_PATH
    assert inside["HOME"] != os.environ.get("HOME")


def test_term_is_absent_when_the_caller_has_none():
    caller = {k: v for k, v in os.environ.items() if k != "TERM"}
    inside = _env_of_program(env=caller)
    assert set(inside) == {"PATH", "HOME", "LANG"}, inside


def test_env_and_env_pass_flags():
    caller = dict(os.environ, JAILPY_TEST_PASSED="passed value", JAILPY_TEST_SECRET="hunter2")
    caller.pop("JAILPY_TEST_UNSET", None)
    inside = _env_of_program("--env", "FOO=bar=baz", "--env", "EMPTY=", "--env-pass", "JAILPY_TEST_PASSED",
                             "--env-pass", "JAILPY_TEST_UNSET", env=caller)
    assert inside["FOO"] == "bar=baz"
    assert inside["EMPTY"] == ""
    assert inside["JAILPY_TEST_PASSED"] == "passed value"
    assert "JAILPY_TEST_UNSET" not in inside
    assert "JAILPY_TEST_SECRET" not in inside


# ------------------------------------------------------------------------ argv ----

def test_argv_is_passed_exactly():
    args = ["a b", "(x)", "it's", "ü ñ", "$HOME", "*", ""]
    p = jail("--", "python3", "-c", "import sys; print(sys.argv[1:])", *args)
    assert p.returncode == 0, p.stderr
    assert p.stdout == (repr(args) + "\n").encode()
    assert len(ast.literal_eval(p.stdout.decode())) == 7


def test_argv_bytes_that_are_not_utf8_and_option_lookalikes():
    args = [b"\xff\xfe", b"caf\xc3\xa9", b"--report", b"-", b"-h", b"--", b"\t\n"]
    p = jail("--", "python3", "-c", "import os, sys; print([os.fsencode(a).hex() for a in sys.argv[1:]])", *args)
    assert p.returncode == 0, p.stderr
    assert ast.literal_eval(p.stdout.decode()) == [a.hex() for a in args]


# ----------------------------------------------------------------------- stdio ----

def test_stdin_dev_null():
    p = jail("--", "sh", "-c", "cat; echo rc=$?", stdin=subprocess.DEVNULL)
    assert p.returncode == 0
    assert p.stdout == b"rc=0\n"


def test_stdin_pipe_with_data():
    data = os.urandom(300_000)  # more than a pipe buffer
    p = subprocess.run([*JAILPY, "--", "cat"], input=data, capture_output=True, timeout=TIMEOUT, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert p.stdout == data


def test_report_dash_goes_to_stderr_after_the_programs_stderr():
    p = jail("--report", "-", "--", "sh", "-c", "echo out; echo program-stderr >&2; exit 4")
    assert p.returncode == 4
    assert p.stdout == b"out\n"
    before, rep = last_json(p.stderr)
    assert before == b"program-stderr\n"
    assert rep["exit_code"] == 4 and rep["verdict"] == "RE"


# the program reports on an fd that stays open: stdout, or stderr when stdout is the closed one
RAN = "import os, sys; os.write(2 if sys.argv[1] == '1' else 1, b'ran\\n')"


@pytest.mark.parametrize("fd", [0, 1, 2], ids=["stdin", "stdout", "stderr"])
def test_closed_std_fd_starts_normally(fd):
    p = jail_sh_redirect(["--", "python3", "-c", RAN, str(fd)], f"{fd}>&-" if fd else "0<&-")
    assert p.returncode == 0, p.stderr
    assert b"Traceback" not in p.stderr + p.stdout
    assert (p.stderr if fd == 1 else p.stdout) == b"ran\n"


FD_STATE = (
    "import os, stat, sys\n"
    "i = int(sys.argv[1])\n"
    "try:\n"
    "    st = os.fstat(i)\n"
    "    null = os.stat('/dev/null')\n"
    "    state = 'devnull' if stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev else 'other:' + os.readlink(f'/proc/self/fd/{i}')\n"
    "except OSError:\n"
    "    state = 'closed'\n"
    "os.write(2 if i == 1 else 1, state.encode() + b'\\n')\n"
)


@pytest.mark.parametrize("fd", [0, 1, 2], ids=["stdin", "stdout", "stderr"])
def test_closed_std_fd_is_dev_null_inside(fd):
    p = jail_sh_redirect(["--", "python3", "-c", FD_STATE, str(fd)], f"{fd}>&-" if fd else "0<&-")
    assert p.returncode == 0, p.stderr
    assert (p.stderr if fd == 1 else p.stdout) == b"devnull\n"


@pytest.mark.parametrize("fd", [0, 1, 2], ids=["stdin", "stdout", "stderr"])
def test_closed_std_fd_does_not_hand_the_report_file_to_the_program(tmp_path, fd):
    # the --report file opened by jailpy must not take the free std fd number and reach the program
    report = tmp_path / "report.json"
    code = "import os, sys\ntry: os.write(int(sys.argv[1]), b'FORGED')\nexcept OSError: pass\n"
    p = jail_sh_redirect(["--report", str(report), "--", "python3", "-c", code, str(fd)],
                         f"{fd}>&-" if fd else "0<&-")
    assert p.returncode == 0, p.stderr
    text = report.read_bytes()
    assert b"FORGED" not in text
    rep = json.loads(text)
    assert rep["verdict"] == "OK" and rep["exit_code"] == 0


def test_report_dash_with_stderr_closed_keeps_the_programs_status():
    p = jail_sh_redirect(["--report", "-", "--", "sh", "-c", "exit 7"], "2>&-")
    assert p.returncode == 7
    assert b"Traceback" not in p.stdout


# the API: a caller (a judge's worker, say) whose std fd is closed runs a program with that
# fd inherited (None); the program must find /dev/null there, as child.setup intends
API_CLOSED_FD_DRIVER = (
    "import os, sys\n"
    "i, out = int(sys.argv[1]), sys.argv[2]\n"
    "os.close(i)\n"
    "import jailpy\n"
    "spec = {k: (None if n == i else (jailpy.DEVNULL if n == 0 else jailpy.PIPE))\n"
    "        for n, k in enumerate(('stdin', 'stdout', 'stderr'))}\n"
    "r = jailpy.run(['python3', '-c', sys.argv[3], str(i)], **spec)\n"
    "open(out, 'wb').write((r.stdout or b'') + (r.stderr or b''))\n"
)


@pytest.mark.parametrize("fd", [0, 1, 2], ids=["stdin", "stdout", "stderr"])
def test_api_closed_std_fd_is_dev_null_inside(tmp_path, fd):
    out = tmp_path / "state"
    p = subprocess.run([sys.executable, "-c", API_CLOSED_FD_DRIVER, str(fd), str(out), FD_STATE],
                       capture_output=True, timeout=TIMEOUT, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == b"devnull\n"


def test_directory_as_stdin_is_refused_by_the_api(shared_dir):
    canary = shared_dir / "ran"
    fd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(jailpy.PolicyError, match="directory"):
            jailpy.run(["sh", "-c", f"touch {canary}"], jailpy.Policy(bind=[str(shared_dir)]), stdin=fd)
    finally:
        os.close(fd)
    assert not canary.exists()


def _cli_with_directory_stdin(shared_dir):
    canary = shared_dir / "ran"
    fd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    try:
        # the installed `jailpy` command (a sh launcher): `python -m jailpy` cannot even start here
        launcher = os.path.join(os.path.dirname(sys.executable), "jailpy")
        p = subprocess.run([launcher, "exec", "--bind", str(shared_dir), "--", "sh", "-c", f"touch {canary}"],
                           stdin=fd, capture_output=True, timeout=TIMEOUT, cwd=REPO)
    finally:
        os.close(fd)
    return p, canary


def test_directory_as_stdin_is_refused_by_the_cli(shared_dir):
    p, canary = _cli_with_directory_stdin(shared_dir)
    assert p.returncode != 0
    assert b"directory" in p.stderr
    assert p.stdout == b""
    assert not canary.exists(), "the program ran"


def test_directory_as_stdin_exits_125(shared_dir):
    p, _ = _cli_with_directory_stdin(shared_dir)
    assert p.returncode == 125
    assert p.stderr == b"jailpy: error: stdin is a directory; give a file, a pipe or /dev/null\n"


# -------------------------------------------------------------------- terminal ----

TIOCSTI_CODE = (
    "import fcntl, termios\n"
    "try:\n"
    "    fcntl.ioctl(0, termios.TIOCSTI, b'Q')\n"
    "    print('typed')\n"
    "except OSError as e:\n"
    "    print('refused', e.errno)\n"
)


def _on_a_pty(argv: list[str], until: bytes | None = None) -> tuple[bytes, bytes]:
    """Run argv with a new pty as its controlling terminal and stdin; return (stdout, what
    the terminal echoed back to the master): read for 0.3 s, or up to 3 s until ``until`` shows."""
    master, slave = pty.openpty()
    try:
        p = subprocess.run(argv, stdin=slave, capture_output=True, timeout=TIMEOUT, cwd=REPO, start_new_session=True,
                           preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        echoed = b""
        end = time.monotonic() + (3.0 if until else 0.3)
        while time.monotonic() < end and not (until and until in echoed):
            r, _, _ = select.select([master], [], [], 0.05)
            if r:
                try:
                    echoed += os.read(master, 1024)
                except OSError:
                    break
        return p.stdout, echoed
    finally:
        os.close(master)
        os.close(slave)


def test_tiocsti_cannot_type_into_the_callers_terminal():
    # control: outside the sandbox, a process on the same terminal can push a character
    out, echoed = _on_a_pty(["python3", "-c", TIOCSTI_CODE], until=b"Q")
    if out != b"typed\n":
        pytest.skip(f"TIOCSTI is refused on this kernel even outside a sandbox ({out!r}): nothing to tell apart")
    assert b"Q" in echoed
    out, echoed = _on_a_pty([*JAILPY, "--", "python3", "-c", TIOCSTI_CODE])
    assert out == f"refused {errno.EPERM}\n".encode()
    assert b"Q" not in echoed


def test_program_runs_in_a_new_session_without_a_controlling_terminal():
    code = (
        "import os, errno\n"
        "print(os.getsid(0) == os.getpid())\n"
        "try: os.open('/dev/tty', os.O_RDWR); print('tty')\n"
        "except OSError as e: print(errno.errorcode[e.errno])\n"
    )
    out, _ = _on_a_pty([*JAILPY, "--", "python3", "-c", code])
    assert out == b"True\nENXIO\n"


# --------------------------------------------------------------------- signals ----

WAIT_FOR_SIGNAL = (
    "import signal, sys, time\n"
    "got = []\n"
    "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):\n"
    "    signal.signal(s, lambda n, f: got.append(n))\n"
    "print('ready', flush=True)\n"
    "end = time.monotonic() + 10\n"
    "while not got and time.monotonic() < end: time.sleep(0.01)\n"
    "print('got', got[0] if got else None, flush=True)\n"
)


def _signal_jailpy_when_ready(argv: list[str], sig: int, settle: float = 0.0):
    """Start ``jailpy exec -- argv``, wait for the program's first line "ready", sleep ``settle``
    seconds, send ``sig`` to jailpy and wait.  Returns (process, stdout after "ready", stderr,
    seconds from the signal to jailpy's exit)."""
    p = subprocess.Popen([*JAILPY, "--", *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert p.stdout.readline() == b"ready\n"
        time.sleep(settle)
        t0 = time.monotonic()
        p.send_signal(sig)
        out, err = p.communicate(timeout=TIMEOUT)
        return p, out, err, time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP, signal.SIGQUIT,
                                 signal.SIGUSR2], ids=lambda s: s.name)
def test_signal_to_jailpy_is_forwarded_to_the_program(sig):
    p, out, err, _ = _signal_jailpy_when_ready(["python3", "-c", WAIT_FOR_SIGNAL], sig)
    assert out == f"got {int(sig)}\n".encode(), err
    assert p.returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=lambda s: s.name)
def test_ctrl_c_reaches_a_shells_foreground_child(sig):
    # a terminal sends Ctrl-C and Ctrl-\ to the whole foreground process group: a shell waiting
    # for its child must not outlive it (sh ignores nothing here, but waits for `sleep` first)
    # (0.2 s: sh has started sleep)
    p, out, err, took = _signal_jailpy_when_ready(["sh", "-c", "echo ready; sleep 20; echo after"], sig, 0.2)
    assert b"after" not in out, "the shell went on after its child was interrupted"
    assert p.returncode == 128 + sig, (p.returncode, err)
    assert took < 10, "the signal did not reach the foreground child"


def _signal_masks_of_the_program() -> dict:
    p = jail("--", "cat", "/proc/self/status")
    assert p.returncode == 0, p.stderr
    fields = dict(line.split(":\t", 1) for line in p.stdout.decode().splitlines() if ":\t" in line)
    return {k: int(fields[k], 16) for k in ("SigIgn", "SigBlk", "SigCgt")}


def test_program_starts_with_sigpipe_and_sigxfsz_at_default():
    # jailpy runs in Python, which ignores SIGPIPE and SIGXFSZ; the program must not inherit that
    masks = _signal_masks_of_the_program()
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
        assert not masks["SigIgn"] & (1 << (sig - 1)), f"{sig.name} is ignored in the program"
    assert masks["SigBlk"] == 0


def test_sigpipe_kills_a_writer_inside():
    # with SIGPIPE ignored, yes(1) would exit 1 on EPIPE instead of dying of SIGPIPE (141)
    p = jail("--", "sh", "-c", 'exec 3>&1; { yes 2>/dev/null; echo "yes=$?" >&3; } | true')
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"yes=141\n"


def test_program_starts_with_no_signal_ignored():
    assert _signal_masks_of_the_program()["SigIgn"] == 0


@pytest.mark.parametrize("id_map", ["auto", "single"])
def test_program_cannot_read_pid1_memory_or_environment(id_map):
    # PID 1 is a fork of jailpy: it holds the caller's environment and memory; the program
    # runs as the same uid, so only PR_SET_DUMPABLE=0 keeps /proc/1/{environ,mem,...} closed
    # (with a single id map the ids do not change, so the kernel does not do it by itself)
    env = dict(os.environ, JAILPY_TEST_SECRET="hunter2-secret")
    code = (
        "import os, errno\n"
        "for p in ('environ', 'mem', 'maps', 'fd', 'cwd', 'root'):\n"
        "    path = '/proc/1/' + p\n"
        "    try:\n"
        "        data = open(path, 'rb').read(65536) if p in ('environ', 'mem', 'maps') else str(os.listdir(path)).encode()\n"
        "        print(p, 'READ', b'hunter2' in data)\n"
        "    except OSError as e: print(p, errno.errorcode[e.errno])\n"
    )
    p = jail_py(code, "--id-map", id_map, env=env)
    assert p.returncode == 0, p.stderr
    assert b"hunter2" not in p.stdout
    lines = p.stdout.decode().splitlines()
    assert lines == [f"{n} EACCES" for n in ("environ", "mem", "maps", "fd", "cwd", "root")], lines


def test_program_cannot_kill_pid1_from_inside():
    code = (
        "import os, signal, time\n"
        "os.kill(1, signal.SIGKILL)\n"
        "time.sleep(0.2)\n"
        "print(os.path.exists('/proc/1'))\n"
    )
    p = jail_py(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"True\n"


# ------------------------------------------------------------------ exit codes ----

EXITS = [
    # id, argv, exit status, verdict, signal
    ("exit-0", ["true"], 0, "OK", None),
    ("exit-3", ["sh", "-c", "exit 3"], 3, "RE", None),
    ("exit-255", ["sh", "-c", "exit 255"], 255, "RE", None),
    ("sh-self-sigterm", ["sh", "-c", "kill -TERM $$; echo survived"], 143, "SIG", 15),
    ("py-self-sigterm", ["python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM); print('survived')"],
     143, "SIG", 15),
    ("abort", ["python3", "-c", "import os; os.abort()"], 134, "SIG", 6),
    ("self-sigkill", ["python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL); print('survived')"],
     137, "SIG", 9),
    ("segfault", ["python3", "-c", "import ctypes; ctypes.string_at(0)"], 139, "SIG", 11),
    ("missing-command", ["jailpy-no-such-command"], 127, "RE", None),
    ("missing-path", ["/nonexistent/jailpy-cmd"], 127, "RE", None),
    ("not-executable", ["/etc/passwd"], 126, "RE", None),
    ("directory", ["/usr"], 126, "RE", None),
]


@pytest.mark.parametrize("argv,status,verdict,sig", [e[1:] for e in EXITS], ids=[e[0] for e in EXITS])
def test_exit_status_and_report(report_path, argv, status, verdict, sig):
    p, rep = jail_report(report_path, "--", *argv)
    assert p.returncode == status, p.stderr
    assert b"survived" not in p.stdout
    assert rep["exit_code"] == status
    assert rep["verdict"] == verdict
    assert rep["signal"] == sig
    if status in (126, 127):
        assert p.stderr.count(b"\n") == 1 and p.stderr.startswith(b"jailpy: ")
        assert argv[0].encode() in p.stderr
        assert rep["error"]
    else:
        assert b"Traceback" not in p.stderr and b"jailpy:" not in p.stderr


def test_core_dump_is_not_written(shared_dir):
    # RLIMIT_CORE is 0 for the program: an abort inside a writable bound cwd leaves no core file
    p = subprocess.run([*JAILPY, "--bind", str(shared_dir), "--", "python3", "-c",
                        "import os, resource; print(resource.getrlimit(resource.RLIMIT_CORE), flush=True); os.abort()"],
                       cwd=shared_dir, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 134
    assert p.stdout == b"(0, 0)\n"
    assert os.listdir(shared_dir) == []
