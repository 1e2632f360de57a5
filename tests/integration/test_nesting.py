"""jailpy inside other sandboxes (issue 16): inside ``unshare -Urm --mount-proc -fp``, inside
bubblewrap, inside jailpy itself with ``--allow-nesting``.  Each case either runs with the
sandbox's own namespaces and /proc (checked from inside) or fails closed with one line naming
the setting to change.  Real namespaces, real bwrap; as root and as an unprivileged user.
(Containers run by crun: tests/integration/test_containers.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import IS_ROOT, JAILPY, REPO, TIMEOUT, last_json

# inside the sandbox: its pids, PID 1's command line, its uid map, and whether the covered proc
# of --allow-nesting can be reached
PROBE = ("import os, json; print(json.dumps({'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), "
         "'init': open('/proc/1/cmdline','rb').read().split(b'\\0')[0].decode(), "
         "'uid_map': open('/proc/self/uid_map').read().split(), 'uid': os.getuid(), "
         "'hidden': os.path.exists('/proc/.jailpy-nesting/self')}))")
INNER = [*JAILPY, "--report", "-", "--", "python3", "-c", PROBE]


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT * 2, cwd=REPO, **kw)


def _inner_ok(p: subprocess.CompletedProcess) -> tuple[dict, dict]:
    """The probe's facts and the inner jailpy's report, after checking the inner sandbox is whole:
    its own pid namespace (only PID 1, jailpy's, and the probe) and uid 0 inside."""
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    facts = json.loads(p.stdout.decode().strip().splitlines()[-1])
    _, report = last_json(p.stderr)
    assert facts["init"] == "jailpy-init" and facts["pids"] == [1, 2], facts
    assert facts["uid"] == 0 and facts["uid_map"][:1] == ["0"], facts
    assert report["verdict"] == "OK" and report["protections"]["namespaces"] == [
        "cgroup", "ipc", "mnt", "net", "pid", "user", "uts"]
    return facts, report


def test_inside_unshare_user_namespace_with_one_id():
    """`unshare -Urm --mount-proc -fp` maps one id: jailpy falls back to the single-id map (the
    caller's own id in that namespace), says so in protections.nested, and keeps every namespace
    and a /proc of its own.  This failed before ("cannot write the user namespace id map")."""
    p = _run(["unshare", "-Urm", "--mount-proc", "-fp", *INNER])
    facts, report = _inner_ok(p)
    nested = report["protections"]["nested"]
    assert "a user namespace mapping 1 uid" in nested["inside"]
    assert "maps 1 uid" in nested["weaker"]["ids"] and "groups" in nested["weaker"]
    assert report["protections"]["user"].startswith("single id: uid 0 inside = uid 0 of the enclosing user namespace")
    assert facts["uid_map"] == ["0", "0", "1"]


def test_inside_unshare_a_range_is_refused_with_the_fix():
    p = _run(["unshare", "-Urm", "--mount-proc", "-fp", *JAILPY, "--id-map", "range", "--", "true"])
    err = p.stderr.decode()
    assert p.returncode == 125 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "do not exist in this user namespace" in err or "--id-map single" in err, err


def test_not_nested_on_the_host():
    p = _run([*JAILPY, "--report", "-", "--", "true"])
    assert p.returncode == 0, p.stderr
    protections = last_json(p.stderr)[1]["protections"]
    assert protections["nested"] is None and protections["nesting"] is None


BWRAP = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
         "--ro-bind", str(REPO), str(REPO),  # the rootless CI run has the repo under /tmp
         "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
         "--chdir", str(REPO)]
needs_bwrap = pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap not installed (tests/run.sh installs it)")


@needs_bwrap
def test_inside_bubblewrap():
    """bwrap covers /proc/sys, irq and bus of the proc it mounts (as root; a normal user's covers
    fail silently), so the kernel refuses jailpy a new proc: fail closed naming the bwrap flags,
    and with them (a fully visible proc, covered) run with a /proc of its own."""
    p = _run([*BWRAP, *INNER])
    if p.returncode == 125:  # masked: the one line names the fix
        err = p.stderr.decode()
        assert "mount /proc" in err and "--bind /proc /tmp/.proc/proc --tmpfs /tmp/.proc" in err, err
        assert "Traceback" not in err
    else:
        _inner_ok(p)
    p = _run([*BWRAP, "--bind", "/proc", "/tmp/.proc/proc", "--tmpfs", "/tmp/.proc", *INNER])
    facts, report = _inner_ok(p)
    assert report["protections"]["nested"]["inside"][0] == "bubblewrap (by PID 1 is bwrap)"


def test_jailpy_inside_jailpy_needs_allow_nesting():
    """Without --allow-nesting the outer sandbox refuses the inner one's user namespace (seccomp,
    and user.max_user_namespaces 0): one line naming the flag."""
    p = _run([*JAILPY, "--", *JAILPY, "--", "true"])
    err = p.stderr.decode()
    assert p.returncode == 125 and "--allow-nesting" in err and err.count("\n") == 1, err


def test_jailpy_inside_jailpy_with_allow_nesting(tmp_path):
    """With --allow-nesting the inner jailpy builds a whole sandbox under the outer one's seccomp
    filter: its own pid namespace and /proc (the outer's covered proc lets the kernel mount one),
    uid 0 inside; both reports say what they are; the covered proc stays out of reach."""
    outer = tmp_path / "outer.json"
    p = _run([*JAILPY, "--allow-nesting", "--report", str(outer), "--", *INNER])
    facts, report = _inner_ok(p)
    nested = report["protections"]["nested"]
    assert nested["inside"][0] == "a jailpy sandbox (by PID 1 is jailpy-init)"
    assert "seccomp_report" in nested["weaker"]  # the outer filter holds the one listener
    assert report["protections"]["seccomp"]["report"] is None
    out = json.loads(outer.read_text())
    assert out["verdict"] == "OK" and out["blocked_syscall"] is None
    assert out["protections"]["nesting"]["user_namespaces"] == 64
    assert out["protections"]["quotas"]["user.max_user_namespaces"] == 64
    assert "uid 1000 inside" in out["protections"]["user"]  # the program of an allow_nesting sandbox
    # the outer program cannot reach the covered proc, nor unmount what covers it
    q = _run([*JAILPY, "--allow-nesting", "--", "sh", "-c",
              "ls /proc/.jailpy-nesting/self; umount /proc; grep -c jailpy-nesting /proc/self/mountinfo"])
    assert q.stdout.decode().split() == ["2"], (q.stdout, q.stderr)  # proc and sysfs listed, both covered
    assert b"No such file" in q.stderr


def test_allow_nesting_as_uid_0_names_the_fix():
    """Mapping uid 0 of the enclosing namespace needs CAP_SETFCAP there (verify_root_map), which
    no sandboxed program has: a nested jailpy run as uid 0 fails closed and says to drop --uid 0."""
    p = _run([*JAILPY, "--allow-nesting", "--uid", "0", "--", *JAILPY, "--", "true"])
    err = p.stderr.decode()
    assert p.returncode == 125 and "CAP_SETFCAP" in err and "uid 1000" in err, err


def test_nested_jailpy_denials_still_hold():
    """The inner sandbox's own seccomp filter (without a listener) still denies: ptrace EPERM."""
    code = "import ctypes; l = ctypes.CDLL(None, use_errno=True); print(l.ptrace(16, 1, 0, 0), ctypes.get_errno())"
    p = _run([*JAILPY, "--allow-nesting", "--", *JAILPY, "--", "python3", "-c", code])
    assert p.returncode == 0 and p.stdout.split() == [b"-1", b"1"], (p.stdout, p.stderr)


@pytest.mark.skipif(not IS_ROOT, reason="the sandbox's uid is host root only when root runs unshare -r")
def test_inside_unshare_as_root_says_the_id_is_host_root():
    """`unshare -r` run by root maps uid 0 to host root: the sandbox's one id is host root's, as
    bwrap's would be; the report names uid 0 of the parent (so a judge can refuse the run)."""
    p = _run(["unshare", "-Urm", "--mount-proc", "-fp", *JAILPY, "--report", "-", "--", "true"])
    user = last_json(p.stderr)[1]["protections"]["user"]
    assert "(uid 0 of its parent" in user, user


def test_seccomp_nesting_rules():
    """allow_nesting's changes to a policy, by the policy's own evaluation: namespaces, mounts and
    openat2 allowed; keyctl only to join a new anonymous session keyring."""
    from jailpy.seccomp import load, syscall_nr
    from jailpy.seccomp.nesting import allow_nesting

    base = load("default")
    nest = allow_nesting(base)
    assert base.digest() != nest.digest()
    newuser = 0x10000000
    for name, args, before, after in [
        ("unshare", (newuser,), "deny", "allow"), ("mount", (), "deny", "allow"), ("pivot_root", (), "deny", "allow"),
        ("openat2", (), "errno", "allow"), ("setns", (), "deny", "allow"),
        ("keyctl", (1, 0), "deny", "allow"), ("keyctl", (1, 4096), "deny", "deny"), ("keyctl", (2, 0), "deny", "deny"),
        ("ptrace", (), "deny", "deny"), ("bpf", (), "deny", "deny"),
    ]:
        assert base.evaluate(syscall_nr(name), args)[0] == before, name
        assert nest.evaluate(syscall_nr(name), args)[0] == after, (name, args)
    assert sys.modules["jailpy.seccomp.nesting"].SOURCE == "allow_nesting"
