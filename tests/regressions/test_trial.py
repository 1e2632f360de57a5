"""Regressions from a new user's trial of the README and --help (root and rootless): each test is
one thing that failed, misled or differed from the docs, through the real CLI where it can be.

Safety: servers only on 127.0.0.1 or a unix socket under tmp_path; `jailpy selinux install` is
only ever pointed at a stand-in `semodule` in tmp_path (never the host's policy store);
`--network user` as root runs in a network namespace of the test's own."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import IS_ROOT, REPO, TIMEOUT
from limits_helpers import NEEDS_CGROUP


def _jailpy(*args: str, env: dict | None = None, timeout: float = TIMEOUT, prefix: tuple = ()):
    return subprocess.run([*prefix, sys.executable, "-m", "jailpy", *args], capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=REPO, env=env)


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    err = p.stderr.decode()
    assert p.returncode == 125, (p.returncode, err[-2000:])
    assert err.count("\n") == 1 and err.startswith("jailpy: error: "), err[-2000:]
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------- jailpy serve --listen ----

def _need_service():
    for mod in ("uvicorn", "starlette", "prometheus_client"):
        pytest.importorskip(mod)


def test_serve_port_in_use_is_one_error_line_125():
    """It printed "serving on", then uvicorn's own ERROR line, and exited 3."""
    _need_service()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = _jailpy("serve", "--listen", f"127.0.0.1:{port}")
    err = _one_error_line(p)
    assert f"--listen 127.0.0.1:{port}" in err and "in use" in err and "serving" not in err


def test_serve_unix_socket_in_a_missing_directory_is_one_error_line_125(tmp_path):
    """It printed a traceback of uvicorn's and asyncio's (twice) and exited 1."""
    _need_service()
    path = tmp_path / "no" / "such" / "dir" / "s"
    err = _one_error_line(_jailpy("serve", "--listen", f"unix:{path}"))
    assert f"unix:{path}" in err and "No such file or directory" in err


def test_serve_refuses_to_start_where_no_run_can_be_made():
    """Rootless without a delegated cgroup, serve started and answered every request XX with the
    cgroup error; jailpy worker refuses to start there (one line, 125), and so does serve now."""
    _need_service()
    if IS_ROOT:
        pytest.skip("root makes its own cgroups: every run can be made")
    env = dict(os.environ, JAILPY_CGROUP_PARENT="/jailpy-trial-missing-parent")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = _one_error_line(_jailpy("serve", "--listen", f"127.0.0.1:{port}", env=env))
    assert "cannot run" in err and "/jailpy-trial-missing-parent" in err, err


@pytest.mark.parametrize("value", ["-1", "0"])
def test_serve_max_body_below_one_byte_is_refused(value):
    """--max-body -1 was taken: the server started (and then refused every body)."""
    _need_service()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free again when jailpy runs: nothing may listen if it is refused
    err = _one_error_line(_jailpy("serve", "--listen", f"127.0.0.1:{port}", "--max-body", value))
    assert "--max-body" in err and value in err


# ------------------------------------------------------- protections.network for user ----

def test_network_user_report_says_egress_is_open():
    """--network user connects out through slirp4netns or pasta, yet the report said
    "egress": "none"."""
    if not (shutil.which("slirp4netns") or shutil.which("pasta")):
        pytest.skip("neither slirp4netns nor pasta is installed")
    if not IS_ROOT and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        pytest.skip("/dev/net/tun is not usable by this user (tests/run.sh makes it 0666, its usual mode)")
    if IS_ROOT:  # the user-mode stack in a network namespace of the test's own, not the machine's
        from net_helpers import netns

        with netns() as ns:
            p = _jailpy("exec", "--network", "user", "--report", "-", "--", "true", prefix=tuple(ns.prefix),
                        timeout=60)
    else:
        p = _jailpy("exec", "--network", "user", "--report", "-", "--", "true", timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 0, err[-2000:]
    net = json.loads(err[err.index("{\n"):])["protections"]["network"]
    assert net["mode"] == "user"
    assert net["egress"].startswith("open"), net
    none = _jailpy("exec", "--report", "-", "--", "true")
    assert json.loads(none.stderr.decode()[none.stderr.decode().index("{\n"):])["protections"]["network"] == \
        "none (loopback only)"


# ----------------------------------------------------- the cgroup hint of jailpy judge ----

def test_cgroup_hint_names_what_jailpy_judge_can_take():
    """Rootless on cgroup v1 without a delegated cgroup, `jailpy judge` said "then pass
    --cgroup-parent /judge", a flag judge does not have; JAILPY_CGROUP_PARENT is what it reads."""
    if IS_ROOT:
        pytest.skip("root needs no delegated cgroup: the hint is for normal users")
    with open("/proc/self/cgroup") as f:
        if not any(line.split(":")[1] for line in f.read().splitlines() if line.strip()):
            pytest.skip("not cgroup v1: the v2 hints are tested in the VM lane")
    env = {k: v for k, v in os.environ.items() if k != "JAILPY_CGROUP_PARENT"}
    parent = "/jailpy-trial-missing-parent"
    env["JAILPY_CGROUP_PARENT"] = parent
    err = _one_error_line(_jailpy("judge", "tests/judge/problems/aplusb", "tests/judge/solutions/aplusb/AC.py",
                                  env=env, timeout=120))
    assert f"set JAILPY_CGROUP_PARENT={parent}" in err, err
    assert f"then pass --cgroup-parent {parent}" not in err, err
    assert "--cgroup-parent" not in _jailpy("judge", "--help").stdout.decode()


def test_doctor_prints_the_cgroup_fix_once():
    """Rootless without a delegated cgroup, doctor's cgroup line held the whole "ask root for: ..."
    fix and then printed it again as "fix:"."""
    if IS_ROOT:
        pytest.skip("root needs no delegated cgroup: nothing to fix")
    env = dict(os.environ, JAILPY_CGROUP_PARENT="/jailpy-trial-missing-parent")
    p = _jailpy("doctor", "--json", env=env, timeout=120)
    check = next(c for c in json.loads(p.stdout)["checks"] if c["name"] == "cgroup")
    if check["status"] == "ok":
        pytest.skip("limits work here: nothing to fix")
    assert check["fix"] and check["fix"] not in check["detail"], check
    assert "ask root for" not in check["detail"] and "cannot be used" in check["detail"], check


# ---------------------------------------------------------------- doctor in a container ----

def test_doctor_container_hint_matches_the_readme():
    """In a container, doctor said "..., or --privileged" and left out systempaths=unconfined,
    which the README (Running inside a container) says is what is needed, with no capability."""
    from jailpy import doctor

    check = doctor.container()
    if check.detail.startswith("not in a container"):
        pytest.skip("not in a container here")
    assert "--privileged" not in check.detail, check.detail
    assert "systempaths=unconfined" in check.detail and "unmask=ALL" in check.detail, check.detail
    readme = (REPO / "README.md").read_text()
    assert "systempaths=unconfined" in readme and "unmask=ALL" in readme


# ----------------------------------------------------------- jailpy selinux install ----

@pytest.fixture
def fake_semodule(tmp_path):
    """A stand-in semodule first on PATH that records its arguments and changes nothing."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "semodule.log"
    fake = bindir / "semodule"
    fake.write_text(f"#!/bin/sh\nprintf '%s ' \"$@\" >> {log}\n")
    fake.chmod(0o755)
    return dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"), log


def test_selinux_install_refuses_where_selinux_is_off(fake_semodule):
    """On a host with SELinux off it ran semodule -i, changed the policy store and said
    "installed"; `jailpy apparmor install` refuses without AppArmor.  Now: refused, unless -n."""
    from jailpy.lsm import selinux

    if selinux.enabled():
        pytest.skip("SELinux is enabled here")
    env, log = fake_semodule
    err = _one_error_line(_jailpy("selinux", "install", env=env))
    if not IS_ROOT:
        assert "as root" in err
        return
    assert "not enabled" in err and "--no-reload" in err, err
    assert not log.exists(), "semodule was run"
    p = _jailpy("selinux", "install", "--no-reload", env=env)
    assert p.returncode == 0, p.stderr.decode()
    assert b"not loaded (-n)" in p.stdout
    assert log.read_text().split()[:2] == ["-n", "-i"] and log.read_text().strip().endswith("jailpy.cil")


# ------------------------------------------------------------------- exit status 126 ----

@pytest.mark.parametrize("arg0,why", [("/etc", "it is a directory"), ("./tests", "it is a directory"),
                                      ("./README.md", "Permission denied")])
def test_a_directory_as_the_program_says_so(arg0, why):
    """`jailpy exec -- /etc` said "cannot execute: Permission denied" (execve's EACCES), which
    sends a user looking at modes; the README's table says 126 is also "a directory"."""
    p = _jailpy("exec", "--", arg0)
    assert p.returncode == 126, p.stderr.decode()
    assert p.stderr.decode() == f"jailpy: {arg0}: cannot execute: {why}\n"


# --------------------------------------------------------------------------- jailpy ps ----

@NEEDS_CGROUP
def test_ps_keeps_one_line_per_sandbox_in_80_columns():
    """A long command wrapped over four lines of the COMMAND column in a pipe (80 columns), cut
    mid-word; now the other columns stay whole and the command is cut with an ellipsis."""
    import secrets
    import time

    name = f"T-{secrets.token_hex(6)}"
    code = "import time; time.sleep(30)  # " + "a long comment that makes the command wider than the table " * 2
    p = subprocess.Popen([sys.executable, "-m", "jailpy", "exec", "--name", name, "--wall-time", "40", "--",
                          "python3", "-c", code], cwd=REPO, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 15
        while name not in _jailpy("ps", "--json").stdout.decode():
            assert p.poll() is None and time.monotonic() < end, p.stderr.read() if p.poll() is not None else "slow"
            time.sleep(0.1)
        out = _jailpy("ps", env=dict(os.environ, COLUMNS="80")).stdout.decode()
    finally:
        _jailpy("kill", name)
        p.wait(timeout=TIMEOUT)
        p.stderr.close()
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].split() == ["NAME", "PID", "STATE", "RUNNING", "CPU", "MEMORY", "PIDS", "COMMAND"], out
    (row,) = [line for line in lines if name in line]
    assert all(len(line) <= 80 for line in lines), out
    assert row.split()[:2] == [name, str(p.pid)] and row.rstrip().endswith("…"), out
    # no continuation lines: every line after the header is a sandbox's row, with its PID second
    assert all(len(line.split()) >= 8 and line.split()[1].isdigit() for line in lines[1:]), out
