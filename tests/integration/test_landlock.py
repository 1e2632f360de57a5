"""Landlock in real sandboxes (jailpy.lsm.landlock, issue 13): what Result.protections says, what
the program may still do (write /tmp, /dev/shm, --tmpfs and writable binds made afresh each run),
and Landlock alone stopping a write where the mounts were deliberately weakened (a test-only
hook, jailpy.mounts._TEST_WEAKEN: a read-only bind mounted writable, as a mount bug would).

Each behaviour is checked in the three ways a sandbox starts: ``jailpy.run`` (fresh: a new user
namespace, the rootfs built by PID 1), ``Sandbox(forkserver=False)`` (a shared user namespace and
a rootfs template, set-up forked from the caller) and ``Sandbox(forkserver=True)`` (PID 1 cloned
by the fork server), with three runs per Sandbox so the per-run mounts are new inodes each time.
Canaries live in the test's temporary directories, bound at paths outside /tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import jailpy
from conftest import jail, jail_py, jail_report
from jailpy import audit, mounts
from jailpy.lsm import landlock as ll

KERNEL_ABI, WHY = ll.abi_or_reason()
pytestmark = pytest.mark.skipif(not KERNEL_ABI, reason=f"no Landlock here: {WHY}")
VM = pytest.mark.vm
PATHS = ("fresh", "reuse", "forkserver")

PROBE = r"""
import errno, json, os, sys
def t(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
def write(path):
    with open(path, "a") as f:
        f.write("x")
out = {}
for p in sys.argv[1:]:
    what, _, path = p.partition("=")
    if what == "write":
        out[p] = t(lambda: write(path))
    elif what == "new":  # a file of its own each run (another run may have other host ids)
        out[p] = t(lambda: write(path + "." + os.urandom(6).hex()))
    elif what == "read":
        out[p] = t(lambda: open(path).read())
    elif what == "list":
        out[p] = t(lambda: os.listdir(path))
    elif what == "exec":
        def run():
            with open(path, "w") as f:
                f.write("#!/bin/sh\nexit 7\n")
            os.chmod(path, 0o755)
            _, st = os.waitpid(os.posix_spawn(path, [path], {}), 0)
            if os.waitstatus_to_exitcode(st) != 7:
                raise OSError(errno.EIO, "did not run")
        out[p] = t(run)
print(json.dumps(out))
"""


def run_in(path: str, policy: jailpy.Policy, argv: list[str], runs: int = 1) -> list[jailpy.Result]:
    """``runs`` runs of ``argv`` under ``policy``, started the ``path`` way (see the module docstring)."""
    if path == "fresh":
        return [jailpy.run(argv, policy, capture_output=True) for _ in range(runs)]
    with jailpy.Sandbox(policy, forkserver=path == "forkserver") as sb:
        out = [sb.run(argv, capture_output=True) for _ in range(runs)]
        assert (sb._forkserver is not None) == (path == "forkserver")
        return out


def probe(path: str, policy: jailpy.Policy, *checks: str, runs: int = 1) -> list[dict]:
    results = run_in(path, policy, ["python3", "-I", "-c", PROBE, *checks], runs)
    for r in results:
        assert r.exit_code == 0, (r.error, r.stderr[-800:])
    return [json.loads(r.stdout) for r in results]


@pytest.fixture
def canary(tmp_path) -> Path:
    """A directory anyone may write (DAC lets the sandbox's ids in): only mounts and Landlock
    stand in the way."""
    d = tmp_path / "canary"
    d.mkdir()
    os.chmod(d, 0o777)
    (d / "target.txt").write_text("canary\n")
    os.chmod(d / "target.txt", 0o666)
    return d


def test_protections_say_what_is_applied(report_path):
    p, rep = jail_report(report_path, "--tmpfs", "/scratch", "--", "true")
    assert p.returncode == 0, p.stderr
    d = rep["protections"]["landlock"]
    assert d["applied"] is True and d["mode"] == "auto"
    assert d["abi"] == min(KERNEL_ABI, ll.KNOWN_ABI) and d["kernel_abi"] == KERNEL_ABI
    assert d["fs"]["read_dir"] == ["/"] and set(d["fs"]["all_rights"]) == {"/tmp", "/dev/shm", "/scratch"}
    assert "/usr" in d["fs"]["read_execute"] and "/home" not in d["fs"]["read_execute"]
    assert d["scoped"] == (["abstract_unix_socket", "signal"] if d["abi"] >= 6 else [])
    assert d["net"]["handled"] == []  # network none: the sandbox's own loopback, not restricted
    assert rep["protections"]["lsm"] is None


def test_off_and_bad_values(report_path):
    p, rep = jail_report(report_path, "--landlock", "off", "--", "true")
    assert p.returncode == 0 and rep["protections"]["landlock"] == {"applied": False, "mode": "off",
                                                                     "reason": "--landlock off"}
    p = jail("--landlock", "maybe", "--", "true")
    assert p.returncode == 125 and p.stderr.startswith(b"jailpy: error: ") and p.stderr.count(b"\n") == 1
    assert b"auto, on, off" in p.stderr


@VM
@pytest.mark.parametrize("path", PATHS)
def test_landlock_alone_stops_a_write_through_a_weakened_mount(path, canary, monkeypatch):
    monkeypatch.setattr(mounts, "_TEST_WEAKEN", ("/canary",))
    pol = jailpy.Policy(ro_bind=[f"{canary}:/canary"])
    checks = ("write=/canary/target.txt", "write=/canary/new.txt", "read=/canary/target.txt")
    off = probe(path, pol.replace(landlock="off"), *checks)
    # the hook works: without Landlock the read-only bind takes writes (and they reach the host)
    assert off == [{"write=/canary/target.txt": "ok", "write=/canary/new.txt": "ok", "read=/canary/target.txt": "ok"}]
    assert (canary / "target.txt").read_text() == "canary\nx" and (canary / "new.txt").exists()
    (canary / "new.txt").unlink()
    results = run_in(path, pol, ["python3", "-I", "-c", PROBE, *checks], runs=2)
    for r in results:
        assert json.loads(r.stdout) == {"write=/canary/target.txt": "EACCES", "write=/canary/new.txt": "EACCES",
                                        "read=/canary/target.txt": "ok"}
        assert r.protections["landlock"]["applied"] and "/canary" in r.protections["landlock"]["fs"]["read_execute"]
        assert "TEST ONLY: read-only binds mounted writable: /canary" in r.protections["rootfs"]
    assert (canary / "target.txt").read_text() == "canary\nx" and not (canary / "new.txt").exists()


@VM
@pytest.mark.parametrize("path", PATHS)
def test_per_run_mounts_stay_writable(path, shared_dir, tmp_path):
    """Rules for /tmp, /dev/shm, a --tmpfs and binds below them are made once they are mounted
    (new inodes each run, also in a rootfs template's copy); the rest stays read-only."""
    late = tmp_path / "late"
    late.mkdir()
    os.chmod(late, 0o777)
    pol = jailpy.Policy(tmpfs=["/scratch"], bind=[f"{shared_dir}:/data", f"{late}:/tmp/late"])
    ok = ["write=/tmp/a", "write=/dev/shm/a", "write=/scratch/a", "new=/data/a", "new=/tmp/late/a",
          "exec=/tmp/prog", "exec=/scratch/prog", "write=/dev/null", "read=/etc/hostname", "list=/home", "list=/"]
    for got in probe(path, pol, *ok, runs=3):
        assert got == {k: "ok" for k in ok}, got
    bad = probe(path, pol, "write=/etc/jailpy-x", "write=/home/jailpy-x", "write=/proc/self/comm")[0]
    assert bad["write=/etc/jailpy-x"] == "EROFS" and bad["write=/home/jailpy-x"] == "EROFS"
    assert bad["write=/proc/self/comm"] == "EACCES"  # nothing under /proc is granted writing


def test_runtimes_run_under_landlock_on(tmp_path):
    """A compiler, a shell and Python's multiprocessing (unix sockets in /tmp, a spawned
    interpreter) under ``--landlock on``; the full matrix of runtimes is tests/integration/test_runtimes.py,
    whose runs all have Landlock (seccomp_helpers.assert_ran checks it)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install gcc libc6-dev)")
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void){puts("compiled");return 0;}\n')
    os.chmod(tmp_path, 0o755)
    os.chmod(src, 0o644)
    script = ("set -e; gcc -o /tmp/hello $0; /tmp/hello; "
              "python3 -c 'import multiprocessing as mp\nif __name__ == \"__main__\":\n"
              "    with mp.Pool(2) as p: print(p.map(abs, [-1, -2]))'; echo done")
    p = jail("--landlock", "on", "--ro-bind", str(src), "--", "bash", "-c", script, str(src))
    assert p.returncode == 0, p.stderr[-1500:]
    assert p.stdout == b"compiled\n[1, 2]\ndone\n"


def test_audit_counts_landlock_as_the_layer_that_stopped_a_probe(monkeypatch):
    """``jailpy audit``'s fs-ro-bind-write probe against a weakened read-only bind: with Landlock the
    writes fail with EACCES and the outcome's layers name Landlock; without it they go through."""
    canary_dir = Path(tempfile.mkdtemp(dir="/var/tmp"))  # not under /tmp: the sandbox's /tmp is writable
    try:
        os.chmod(canary_dir, 0o755)
        outcomes = {}
        for mode in ("auto", "off"):
            a = audit.Auditor(jailpy.Policy(landlock=mode), canary_dir=canary_dir)
            monkeypatch.setattr(mounts, "_TEST_WEAKEN",
                                (str(canary_dir / f"jailpy-audit-{a.token}" / "fs-ro-bind-write" / "ro"),))
            outcomes[mode] = a.run(audit.select_probes(["fs-ro-bind-write"]))[0]
    finally:
        shutil.rmtree(canary_dir, ignore_errors=True)
    on, off = outcomes["auto"], outcomes["off"]
    assert off.status == audit.NOT_BLOCKED, off.detail  # the weakened mount lets writes through
    assert on.status == audit.BLOCKED and "landlock" in on.layers, (on.status, on.layers, on.detail)
    by_what = {a["what"].split(" ")[0]: a for a in on.attempts}
    for what in ("append", "create", "mkdir", "rename", "unlink"):
        assert by_what[what]["errno"] == "EACCES" and by_what[what]["layer"] == "landlock", by_what[what]
    assert "landlock" in audit.LAYERS and "Landlock" in audit.LAYERS["landlock"]


def test_cli_help_names_the_flag():
    p = jail("--help")
    assert b"--landlock" in p.stdout


def test_hidden_directories_stay_hidden_when_listed():
    p = jail_py("import os; print(os.listdir('/root'), os.listdir('/'))")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"[] [")


@pytest.mark.skipif(KERNEL_ABI < 4, reason="TCP rules need Landlock ABI 4 (Linux 6.7)")
def test_tcp_follows_the_network_allowlist():
    """With --allow-host (egress through jailpy's proxy) TCP connect is allowed only to the allowed
    ports and the HTTP proxy port, and bind to none (no --publish): a connect to another loopback
    port is EACCES, not ECONNREFUSED; with Landlock off it reaches the (empty) port."""
    code = ("import errno, json, socket\n"
            "def t(f):\n    try:\n        f(); return 'ok'\n    except OSError as e:\n        return errno.errorcode[e.errno]\n"
            "def conn(port):\n    s = socket.socket(); s.settimeout(5)\n    try:\n        s.connect(('127.0.0.1', port))\n"
            "    finally:\n        s.close()\n"
            "def bind():\n    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.close()\n"
            "print(json.dumps([t(lambda: conn(9999)), t(lambda: conn(3128)), t(bind)]))\n")
    pol = jailpy.Policy(allow_host=["example.test:8080"])
    on = jailpy.run(["python3", "-c", code], pol, capture_output=True)
    off = jailpy.run(["python3", "-c", code], pol.replace(landlock="off"), capture_output=True)
    assert json.loads(on.stdout) == ["EACCES", "ok", "EACCES"], (on.stdout, on.stderr)
    assert json.loads(off.stdout) == ["ECONNREFUSED", "ok", "ok"], (off.stdout, off.stderr)
    assert on.protections["landlock"]["net"] == {"handled": ["bind_tcp", "connect_tcp"], "tcp_connect": [3128, 8080],
                                                 "tcp_bind": []}


def test_allow_nesting_goes_without_landlock(report_path):
    """A Landlock domain refuses every mount, which a nested sandbox must make: --allow-nesting
    runs without it (auto says why) and refuses --landlock on."""
    p, rep = jail_report(report_path, "--allow-nesting", "--", "true")
    assert p.returncode == 0, p.stderr
    d = rep["protections"]["landlock"]
    assert d["applied"] is False and "--allow-nesting" in d["reason"]
    p = jail("--allow-nesting", "--landlock", "on", "--", "true")
    assert p.returncode == 125 and b"--landlock on with --allow-nesting" in p.stderr and p.stderr.count(b"\n") == 1
