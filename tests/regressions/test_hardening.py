"""Regressions for the CLI side of issues 10 (hardening) and 17 (faults under stress): each test
failed on the code before its fix.  Through the real CLI in subprocesses, as conftest's jail()
helpers run it.  Host files are never at stake: every "victim" is a canary under tmp_path.

 1  --report never follows a link and is refused in a directory the sandbox can write
 2  the registry of named sandboxes: no directory another user can take first; stale entries swept
 3  docker-style SRC:DST:ro binds; unknown options, a destination bound twice, dir onto file refused
 4  paths that are not UTF-8 (cwd, --rootfs, binds, --env) never crash the CLI; JSON stays valid
 5  jailpy audit: a distinct exit status when probes were skipped; readable at 80 columns
 6  jailpy --version; "Did you mean" once
 7  the launcher at tiny open-file limits: one line and 125, never sh's exit 2
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import IS_ROOT, JAILPY, REPO, TIMEOUT, expected_id_map, jail, unique_marker, wait_gone

CLI = [sys.executable, "-m", "jailpy"]
RAN = ["--", "sh", "-c", "echo PROGRAM-RAN"]


def one_line_125(p: subprocess.CompletedProcess, *words: str) -> str:
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 125, (p.returncode, err)
    assert b"Traceback" not in p.stderr, err
    assert err.count("\n") == 1 and err.startswith("jailpy: error: "), f"not one line: {err!r}"
    for w in words:
        assert w in err, (w, err)
    return err


def canary(tmp_path: Path) -> Path:
    c = tmp_path / "canary.txt"
    c.write_text("precious\n")
    return c


# ------------------------------------------------------------------ 1: --report ----

def test_report_symlink_planted_by_a_sandbox_is_replaced_not_followed(tmp_path, shared_dir):
    victim = canary(tmp_path)
    # run 1: a sandbox with a writable bind plants report.json -> the canary
    p = jail("--bind", str(shared_dir), "--", "ln", "-s", str(victim), f"{shared_dir}/report.json")
    assert p.returncode == 0, p.stderr
    assert (shared_dir / "report.json").is_symlink()
    # run 2 (no bind): the caller asks for its report there
    p = jail("--report", str(shared_dir / "report.json"), "--", "true")
    assert p.returncode == 0, p.stderr
    assert victim.read_text() == "precious\n", "jailpy wrote through the planted symlink"
    rep = shared_dir / "report.json"
    assert not rep.is_symlink() and json.loads(rep.read_bytes())["verdict"] == "OK"


def test_report_through_a_directory_symlink_of_a_sandbox_is_refused(tmp_path, shared_dir):
    kind, host_uid = expected_id_map()
    if host_uid == os.getuid():
        pytest.skip("the sandbox is this user's own uid (single id map): its symlinks look like the caller's")
    target = tmp_path / "victim-dir"
    target.mkdir()
    p = jail("--bind", str(shared_dir), "--", "ln", "-s", str(target), f"{shared_dir}/out")
    assert p.returncode == 0, p.stderr
    p = jail("--report", str(shared_dir / "out" / "report.json"), *RAN)
    one_line_125(p, "--report", "symlink")
    assert p.stdout == b"" and os.listdir(target) == []


def test_report_hard_link_and_fifo_are_replaced(tmp_path):
    victim = canary(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    os.link(victim, out / "r1.json")
    os.mkfifo(out / "r2.json")  # an open for writing would block until a reader came: forever
    for name in ("r1.json", "r2.json"):
        p = jail("--report", str(out / name), "--", "true", timeout=20)
        assert p.returncode == 0, p.stderr
        assert stat.S_ISREG(os.lstat(out / name).st_mode)
        assert json.loads((out / name).read_bytes())["verdict"] == "OK"
    assert victim.read_text() == "precious\n"


def test_xx_report_on_error_is_not_written_through_a_symlink(tmp_path):
    victim = canary(tmp_path)
    link = tmp_path / "report.json"
    link.symlink_to(victim)
    p = jail("--report", str(link), "--hostname", "bad host!", *RAN)
    one_line_125(p, "hostname")
    assert victim.read_text() == "precious\n"
    assert json.loads(link.read_bytes())["verdict"] == "XX" and not link.is_symlink()


@pytest.mark.parametrize("where", ["same", "below"])
def test_report_in_a_directory_the_sandbox_can_write_is_refused_before_the_run(tmp_path, shared_dir, where):
    report = shared_dir / "report.json" if where == "same" else shared_dir / "sub" / "report.json"
    report.parent.mkdir(exist_ok=True)
    p = jail("--bind", str(shared_dir), "--report", str(report), *RAN)
    one_line_125(p, "--report", "--bind")
    assert p.stdout == b"", "the program ran"
    # read-only binds cannot forge anything: allowed
    p = jail("--bind", f"{shared_dir}::ro", "--report", str(report), *RAN)
    assert p.returncode == 0 and p.stdout == b"PROGRAM-RAN\n", p.stderr
    assert json.loads(report.read_bytes())["verdict"] == "OK"


def test_report_in_a_directory_passed_as_a_file_descriptor_is_refused(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        p = jail("--pass-fd", str(fd), "--report", str(d / "report.json"), *RAN, pass_fds=(fd,))
    finally:
        os.close(fd)
    one_line_125(p, "--report", "--pass-fd")


def test_report_file_is_complete_or_absent_and_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    p = jail("--report", str(out / "report.json"), "--", "true")
    assert p.returncode == 0
    assert os.listdir(out) == ["report.json"]


# ------------------------------------------------------------------ 2: registry ----

def test_registry_directory_cannot_be_taken_first_by_another_user(tmp_path):
    """Before: /tmp/jailpy-UID, which any local user can make first: then --name, ps and kill failed."""
    uid = 65534 if IS_ROOT else os.getuid()
    taken = Path(f"/tmp/jailpy-{uid}")
    if os.path.lexists(taken):
        pytest.skip(f"{taken} exists already on this machine")
    home = Path(tempfile.mkdtemp(prefix="jailpy-home-", dir="/tmp"))
    try:
        taken.mkdir(mode=0o755)
        if IS_ROOT:  # the other user is root here; jailpy runs as nobody, with a home of its own
            os.chown(home, uid, uid)
            kw = dict(user=uid, group=uid, extra_groups=[])
        else:  # the directory is ours, but open to everyone: as unusable as another user's
            os.chmod(taken, 0o777)
            kw = {}
        env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME")}
        env["HOME"] = str(home)
        p = subprocess.run([*CLI, "ps", "--json"], cwd=home, env=env, capture_output=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL, **kw)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout) == []
        # where `jailpy exec --name` registers (it needs a cgroup, which nobody here has): in the home
        p = subprocess.run([sys.executable, "-c", "from jailpy import registry; print(registry.directory(create=True))"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, **kw)
        d = Path(p.stdout.strip())
        assert p.returncode == 0 and d.parent == home / ".cache" / "jailpy" / "run", (p.stdout, p.stderr)
        st = os.lstat(d)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700
    finally:
        taken.rmdir()
        shutil.rmtree(home)


def _registry_dir(env: dict) -> Path:
    if IS_ROOT:
        return Path("/run/jailpy")
    return Path(env["XDG_RUNTIME_DIR"]) / "jailpy"


def test_sigkilled_named_runs_leave_no_stale_entries_after_the_next_named_run(tmp_path):
    """Before: 500 SIGKILLed `jailpy exec --name` left 398 entries; a later --name run removed none."""
    env = dict(os.environ)
    if not IS_ROOT:
        xdg = tmp_path / "xdg"
        xdg.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(xdg)
    token = unique_marker().replace(".", "")[-8:]
    probe = subprocess.run([*JAILPY, "--no-cwd", "--name", f"hc-probe-{token}", "--", "true"], env=env,
                           capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if probe.returncode == 125 and b"cgroup" in probe.stderr:
        pytest.skip(f"--name needs a cgroup, and this user has none: {probe.stderr.decode().strip()}")
    assert probe.returncode == 0, probe.stderr
    reg = _registry_dir(env)
    n = 24
    marker = unique_marker()
    names = [f"hc-stale-{token}-{i}" for i in range(n)]
    procs = [subprocess.Popen([*JAILPY, "--no-cwd", "--name", name, "--", "sleep", marker], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name in names]
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not all((reg / f"{name}.json").exists() for name in names):
            time.sleep(0.05)
        registered = [name for name in names if (reg / f"{name}.json").exists()]
        assert len(registered) == n, f"only {len(registered)} of {n} registered"
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(timeout=TIMEOUT)
    left = wait_gone(marker, 20)
    for pid in left:  # PID 1 follows its supervisor (PDEATHSIG): nothing should be left to end
        os.kill(pid, signal.SIGKILL)
    assert left == []
    stale = [name for name in names if (reg / f"{name}.json").exists()]
    assert len(stale) == n, "SIGKILLed supervisors cannot remove their own entries"
    p = subprocess.run([*JAILPY, "--no-cwd", "--name", f"hc-fresh-{token}", "--", "true"], env=env,
                       capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    stale = [name for name in names if (reg / f"{name}.json").exists()]
    assert stale == [], f"{len(stale)} stale entries left after the next --name run"


# -------------------------------------------------------------------- 3: binds ----

def test_docker_style_ro_option_makes_a_read_only_bind(tmp_path, shared_dir):
    p = jail("--bind", f"{shared_dir}:/data:ro", "--", "sh", "-c",
             "test -d /data && ! test -e /data:ro && touch /data/x 2>/dev/null; echo $?; "
             "grep ' /data ' /proc/self/mountinfo | cut -d' ' -f6")
    assert p.returncode == 0, p.stderr
    rc, opts = p.stdout.decode().split()
    assert rc != "0" and opts.split(",")[0] == "ro", p.stdout
    assert os.listdir(shared_dir) == []
    p = jail("--bind", f"{shared_dir}::ro", "--", "sh", "-c", f"touch {shared_dir}/x")
    assert p.returncode != 0 and os.listdir(shared_dir) == []


@pytest.mark.parametrize("flag,spec,word", [
    ("--bind", "{d}:/data:z", "'z'"), ("--bind", "{d}:/data:ro,Z", "'Z'"), ("--bind", "{d}:/data:", "''"),
    ("--bind", "{d}:/data:ro,rw", "ro and rw"), ("--ro-bind", "{d}:/data:rw", "rw"),
    ("--bind", "{d}:/data:ro:x", "':'"), ("--bind", "{d}:ro", "{d}::ro"),
])
def test_unknown_or_contradictory_bind_options_are_refused(tmp_path, flag, spec, word):
    one_line_125(jail(flag, spec.format(d=tmp_path), *RAN), flag, word.format(d=tmp_path))


@pytest.mark.parametrize("args", [
    ["--bind", "{d}:/data", "--ro-bind", "{d}:/data"],
    ["--ro-bind", "{d}:/data", "--ro-bind", "{d}:/data/"],
    ["--tmpfs", "/data", "--bind", "{d}:/data"],
])
def test_same_destination_twice_is_refused(tmp_path, args):
    one_line_125(jail(*[a.format(d=tmp_path) for a in args], *RAN), "/data", "already")


def test_directory_onto_a_file_and_file_onto_a_directory_are_refused_before_the_run(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    err = one_line_125(jail("--ro-bind", f"{tmp_path}:/etc/hostname", *RAN), "directory", "/etc/hostname")
    assert "is a file" in err and "set up the sandbox" not in err
    err = one_line_125(jail("--ro-bind", f"{f}:/etc", *RAN), "/etc")
    assert "is a directory" in err and "set up the sandbox" not in err


# --------------------------------------------------------- 4: paths not UTF-8 ----

def test_non_utf8_working_directory_gives_valid_json(tmp_path):
    d = os.path.join(os.fsencode(tmp_path), b"cwd-\xff")
    os.mkdir(d)
    report = tmp_path / "report.json"
    p = subprocess.run([*JAILPY, "--report", str(report), "--", "pwd"], cwd=d, capture_output=True,
                       timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr
    assert p.stdout.strip() == d
    rep = json.loads(report.read_bytes().decode("utf-8"))  # strict UTF-8: valid JSON text
    assert "cwd-\\xff" in rep["protections"]["cwd"], rep["protections"]["cwd"]


def test_non_utf8_rootfs_bind_report_and_env_do_not_crash_the_cli(tmp_path):
    base = os.fsencode(tmp_path)
    src = os.path.join(base, b"src-\xff")
    os.mkdir(src)
    with open(os.path.join(src, b"f"), "w") as f:
        f.write("hello\n")
    report = os.path.join(base, b"r-\xfe.json")
    p = subprocess.run([*JAILPY, b"--ro-bind", src + b":/data", b"--env", b"X=\xff", b"--report", report, b"--",
                        b"sh", b"-c", b'cat /data/f; printf "%s" "$X"'],
                       cwd=REPO, capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr
    assert p.stdout == b"hello\n\xff"
    assert json.loads(open(report, "rb").read().decode("utf-8"))["verdict"] == "OK"
    top = tempfile.mkdtemp(prefix="jailpy-rootfs-", dir="/tmp")  # one the sandbox's ids can traverse
    try:
        os.chmod(top, 0o755)
        rootfs = os.path.join(os.fsencode(top), b"root-\xff")
        os.mkdir(rootfs, 0o755)
        p = subprocess.run([*JAILPY, b"--no-cwd", b"--rootfs", rootfs, b"--report", b"-", b"--", b"true"],
                           capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(top)
    assert p.returncode == 127 and b"Traceback" not in p.stderr, p.stderr  # an empty root: no `true` in it
    doc = p.stderr[p.stderr.index(b"{"):]
    assert "root-\\xff" in json.loads(doc.decode("utf-8"))["protections"]["rootfs"]


def test_non_utf8_bytes_in_messages_are_escaped_as_backslash_x():
    p = subprocess.run([*JAILPY, b"--bind", b"/nonexistent/src-\xff", *[a.encode() for a in RAN]],
                       capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    one_line_125(p, "src-\\xff")
    p.stderr.decode("utf-8")


# -------------------------------------------------------------------- 5: audit ----

AUDIT = [*CLI, "audit"]


def test_audit_exits_2_when_probes_were_skipped(tmp_path):
    pol = tmp_path / "nocgroup.toml"
    pol.write_text('include = ["default"]\nno_cgroup = true\n')
    p = subprocess.run([*AUDIT, "--policy", str(pol), "--only", "res-fork-bomb,net-egress", "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    statuses = {o["id"]: o["status"] for o in json.loads(p.stdout)}
    assert statuses == {"res-fork-bomb": "skipped", "net-egress": "blocked"}, statuses
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "skipped" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_audit_table_keeps_every_result_at_80_columns():
    from jailpy.audit import PROBES

    p = subprocess.run(AUDIT, cwd=REPO, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                       env={**os.environ, "COLUMNS": "80"})
    assert p.returncode in (0, 1, 2), p.stderr
    lines = p.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert lines[0].split()[0] == "RESULT"
    found = {}
    for line in lines[1:]:
        m = re.match(r"^(blocked|NOT BLOCKED|skipped|error)\s+(\S+)\s", line)
        if m:
            found[m.group(2)] = m.group(1)
    assert set(found) == {pr.id for pr in PROBES}, set(pr.id for pr in PROBES) ^ set(found)


# ---------------------------------------------------------- 6: version, typos ----

def test_version():
    from jailpy import __version__

    p = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and p.stdout == f"jailpy {__version__}\n", (p.returncode, p.stdout, p.stderr)


def test_did_you_mean_is_printed_once():
    p = subprocess.run([*CLI, "exce"], capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 125
    assert p.stderr.count("Did you mean") == 1 and "'exec'" in p.stderr, p.stderr


# ---------------------------------------------------------- 7: launcher, EMFILE ----

@pytest.fixture
def launcher(tmp_path) -> Path:
    """scripts/jailpy as installed (executable, run by the kernel through its #! line), with a
    python3 beside it that is this test's interpreter."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(REPO / "scripts" / "jailpy", bindir / "jailpy")
    (bindir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    for f in ("jailpy", "python3"):
        os.chmod(bindir / f, 0o755)
    return bindir / "jailpy"


@pytest.mark.parametrize("limit", [4, 8, 10, 11, 12, 13, 14, 16])
def test_launcher_at_a_tiny_open_file_limit_says_so_in_one_line(launcher, limit):
    for extra in ([], ["--report", os.path.join(os.path.dirname(launcher), "r.json"), "--output-limit", "1M"]):
        cmd = f"ulimit -n {limit}; exec {launcher} exec {' '.join(extra)} -- true"
        p = subprocess.run(["sh", "-c", cmd], cwd=REPO, capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        if p.returncode == 0:
            assert limit >= 12 and p.stderr == b"", p.stderr
            continue
        err = one_line_125(p)  # sh's own failure was exit 2: "/bin/sh: 0: 3: Too many open files"
        if limit <= 10:  # sh cannot even read a script: the launcher's first line refuses
            assert f"ulimit -n is {limit}" in err, err
