"""AppArmor for the program (jailpy.lsm.apparmor, issue 13): the generated payload profile, and
runs confined by it on a kernel with AppArmor on.

This host's kernel has no AppArmor: the tests marked ``apparmor`` run in the VM lane (a stock Debian
kernel with AppArmor on, tests/vm/README.md), whose guest script installs the payload profiles of
the ``default`` policy and of tests/vm/apparmor-test.toml as root first (``jailpy apparmor install``),
so they run as root and as the unprivileged ``tester``.  Here they skip, saying why; the profile
text is still compiled (apparmor_parser -Q -K) and parsed with Debian's python3-apparmor where
those are installed (tests/run.sh installs them).

Canaries are files in the test's temporary directory; the weakened mount is the test-only hook
jailpy.mounts._TEST_WEAKEN (a read-only bind mounted writable), with Landlock off, so only the
profile stands in the way of the write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jailpy
from conftest import REPO, TIMEOUT, jail, jail_report
from jailpy import mounts
from jailpy.lsm import apparmor

APPARMOR = pytest.mark.apparmor
ON = apparmor.enabled()
needs_apparmor = pytest.mark.skipif(not ON, reason="AppArmor is not enabled in this kernel (the VM lane's is)")
TEST_POLICY = str(REPO / "tests" / "vm" / "apparmor-test.toml")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has python3-apparmor


def profile_of(policy: jailpy.Policy) -> tuple[str, str]:
    return apparmor.generate(policy, mounts.prepare(policy))


def need_loaded(name: str) -> None:
    if not apparmor.loaded(name):
        pytest.skip(f"profile {name} is not loaded (the VM lane's guest script installs it: jailpy apparmor install)")


# ---------------------------------------------------------------- the generated profile ----

def test_profile_follows_the_policy(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "one").write_text("x")
    pol = jailpy.Policy(tmpfs=["/scratch"], bind=[f"{tmp_path}/data:/data", f"{tmp_path}/one:/etc/one"],
                        ro_bind=[f"{tmp_path}/data:/ref"])
    name, text = profile_of(pol)
    assert name.startswith("jailpy-payload-") and len(name) == len("jailpy-payload-") + 12
    assert f"profile {name} flags=(attach_disconnected,mediate_deleted) {{" in text
    for line in ("deny capability,", "deny mount,", "deny ptrace,", "/scratch/** rwlkmix,", "/data/** rwlkmix,",
                 "/etc/one rwlkmix,", "/tmp/** rwlkmix,", "network unix,"):
        assert f"  {line}\n" in text, line
    assert "/ref" not in text  # read-only binds are read through /** (what the mount plan shows)
    # the same policy gives the same profile from another directory (the cwd bind is read-only)
    os.chdir(tmp_path)
    assert profile_of(pol) == (name, text)
    assert profile_of(jailpy.Policy())[0] != name


@pytest.mark.skipif(shutil.which("apparmor_parser") is None and not os.path.exists("/usr/sbin/apparmor_parser"),
                    reason="apparmor_parser is not installed (apt-get install apparmor)")
def test_profile_compiles(tmp_path):
    for pol in (jailpy.Policy(), jailpy.policy.load(TEST_POLICY), jailpy.Policy(tmpfs=["/with space"])):
        apparmor.check(profile_of(pol)[1])  # apparmor_parser -Q -K: compiled, not loaded
    with pytest.raises(jailpy.PolicyError, match="apparmor_parser refused"):
        apparmor.check("profile broken { /x rw }\n")


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON) or subprocess.run(
    [SYSTEM_PYTHON, "-c", "import apparmor.aa"], capture_output=True).returncode != 0,
    reason="Debian's python3-apparmor is not installed (apt-get install python3-apparmor)")
def test_profile_parses_with_python3_apparmor(tmp_path):
    """Debian's own profile parser (python3-apparmor, aa-logprof's library) reads the rules back."""
    name, text = profile_of(jailpy.Policy(tmpfs=["/scratch"]))
    path = tmp_path / name
    path.write_text(text)
    code = ("import json, sys, apparmor.aa as aa\n"
            "aa.init_aa()\n"
            "prof = aa.parse_profile_data(open(sys.argv[1]).read().splitlines(), sys.argv[1], False)\n"
            "name = next(iter(prof)); p = prof[name][name]\n"
            "print(json.dumps({k: [r for r in p[k].get_clean() if r] for k in ('file', 'capability', 'network', "
            "'signal', 'ptrace')} | {'flags': p['flags'], 'name': name}))\n")
    p = subprocess.run([SYSTEM_PYTHON, "-c", code, str(path)], capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    got = json.loads(p.stdout)
    assert got["name"] == name and got["flags"] == "attach_disconnected,mediate_deleted"
    assert got["capability"] == ["deny capability,"] and got["ptrace"] == ["deny ptrace,"]
    writable = sorted(r.split()[0] for r in got["file"] if not r.startswith("deny") and "w" in r.split()[1])
    assert writable == sorted(["/dev/full", "/dev/mqueue/**", "/dev/null", "/dev/ptmx", "/dev/pts/*", "/dev/pts/ptmx",
                               "/dev/random", "/dev/shm/", "/dev/shm/**", "/dev/tty", "/dev/urandom", "/dev/zero",
                               "/scratch/", "/scratch/**", "/tmp/", "/tmp/**"]), writable
    assert "network inet stream," in got["network"] and not any("raw" in r and "netlink" not in r
                                                                for r in got["network"])


def test_generate_cli_prints_the_profile():
    p = subprocess.run([sys.executable, "-m", "jailpy", "apparmor", "generate", "--policy", TEST_POLICY],
                       capture_output=True, timeout=TIMEOUT, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == profile_of(jailpy.policy.load(TEST_POLICY))[1]


def test_asked_for_where_apparmor_is_off_fails_closed():
    if ON:
        pytest.skip("AppArmor is on here")
    p = jail("--apparmor", "generate", "--", "true")
    assert p.returncode == 125 and b"AppArmor is not enabled" in p.stderr and p.stderr.count(b"\n") == 1


# ---------------------------------------------------------------- runs confined (VM lane) ----

@APPARMOR
@needs_apparmor
@pytest.mark.parametrize("path", ["fresh", "forkserver"])
def test_the_program_runs_under_the_generated_profile(path):
    pol = jailpy.policy.load(TEST_POLICY).replace(apparmor="generate")
    name = profile_of(pol)[0]
    need_loaded(name)
    argv = ["sh", "-c", "cat /proc/self/attr/current; echo x > /scratch/f && cat /scratch/f"]
    if path == "fresh":
        r = jailpy.run(argv, pol, capture_output=True)
    else:
        with jailpy.Sandbox(pol, forkserver=True) as sb:
            r = sb.run(argv, capture_output=True)
    assert r.exit_code == 0, (r.error, r.stderr)
    assert r.stdout.decode() == f"{name} (enforce)\nx\n"
    assert r.protections["lsm"]["profile"] == name and r.protections["lsm"]["label"] == name


@APPARMOR
@needs_apparmor
def test_the_profile_stops_a_write_the_mounts_would_allow(tmp_path, monkeypatch):
    """A read-only bind mounted writable (the test-only hook) and Landlock off: only the profile
    refuses the write, with EACCES."""
    canary = tmp_path / "canary"
    canary.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(canary, 0o777)
    (canary / "t").write_text("c")
    os.chmod(canary / "t", 0o666)
    monkeypatch.setattr(mounts, "_TEST_WEAKEN", ("/canary",))
    pol = jailpy.Policy(ro_bind=[f"{canary}:/canary"], landlock="off", apparmor="generate")
    need_loaded(profile_of(pol)[0])
    code = ("import errno\ntry:\n    open('/canary/t', 'a').write('x'); print('ok')\n"
            "except OSError as e:\n    print(errno.errorcode[e.errno])\n")
    assert jailpy.run(["python3", "-c", code], pol.replace(apparmor="off"), capture_output=True).stdout == b"ok\n"
    r = jailpy.run(["python3", "-c", code], pol, capture_output=True)
    assert r.stdout == b"EACCES\n", (r.stdout, r.stderr, r.error)
    assert (canary / "t").read_text() == "cx"  # only the unconfined run wrote


@APPARMOR
@needs_apparmor
def test_no_raw_or_packet_sockets():
    pol = jailpy.Policy(apparmor="generate", seccomp="none")  # the profile, not seccomp, must refuse
    need_loaded(profile_of(pol)[0])
    code = ("import errno, os, socket\n"
            "def t(f):\n    try:\n        f(); return 'ok'\n    except OSError as e:\n        return errno.errorcode[e.errno]\n"
            "print(t(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)), t(lambda: socket.socket(socket.AF_INET, "
            "socket.SOCK_RAW, 1)), t(lambda: socket.socketpair()), t(lambda: socket.create_server(('127.0.0.1', 0))))\n")
    r = jailpy.run(["python3", "-c", code], pol, capture_output=True)
    assert r.exit_code == 0, r.stderr
    packet, raw, pair, tcp = r.stdout.decode().split()
    assert packet == raw == "EACCES" and pair == tcp == "ok", r.stdout


@APPARMOR
@needs_apparmor
def test_stdout_to_a_host_file_survives_the_profile(tmp_path):
    """The program's stdout, a file outside its root ("disconnected" for AppArmor), keeps working."""
    pol_args = ("--policy", TEST_POLICY, "--apparmor", "generate")
    need_loaded(profile_of(jailpy.policy.load(TEST_POLICY))[0])
    out = tmp_path / "out.txt"
    with open(out, "wb") as f:
        p = subprocess.run([sys.executable, "-m", "jailpy", "exec", *pol_args, "--", "echo", "hello"], stdout=f,
                           stderr=subprocess.PIPE, timeout=TIMEOUT * 2, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == b"hello\n"


@APPARMOR
@needs_apparmor
def test_a_profile_that_is_not_loaded_fails_closed(report_path):
    p = jail("--apparmor", "jailpy-payload-000000000000", "--", "true")
    assert p.returncode == 125 and b"is not loaded" in p.stderr and p.stderr.count(b"\n") == 1
    p, rep = jail_report(report_path, "--apparmor", "off", "--", "cat", "/proc/self/attr/current")
    assert p.returncode == 0 and p.stdout == b"unconfined\n" and rep["protections"]["lsm"] is None


@APPARMOR
@needs_apparmor
def test_install_needs_root_and_loads():
    p = subprocess.run([sys.executable, "-m", "jailpy", "apparmor", "install", "--policy", TEST_POLICY,
                        "--no-launcher"], capture_output=True, timeout=TIMEOUT * 4, cwd=REPO)
    if os.geteuid() != 0:
        assert p.returncode == 125 and b"run it as root" in p.stderr
        return
    assert p.returncode == 0, p.stderr
    name = profile_of(jailpy.policy.load(TEST_POLICY))[0]
    assert f"loaded {name}".encode() in p.stdout and apparmor.loaded(name)


@APPARMOR
@needs_apparmor
def test_the_userns_restriction_fix_where_the_kernel_has_it():
    """Ubuntu's kernel.apparmor_restrict_unprivileged_userns and AppArmor's userns_create are
    patches Debian's kernel lacks: there jailpy installs no launcher (it is not needed) and the
    doctor says the sysctl does not exist.  On a kernel that has them, the launcher's profile must
    compile (AppArmor 4 userspace: abi 4.0, the userns rule)."""
    sysctl = os.path.exists("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    assert sysctl == apparmor.userns_mediated() or not sysctl
    if not apparmor.userns_mediated():
        from jailpy import doctor

        checks = {c.name: c for c in doctor.user_namespaces()}
        assert "no kernel.apparmor_restrict_unprivileged_userns" in checks["AppArmor userns restriction"].detail
        if os.geteuid() == 0:
            p = subprocess.run([sys.executable, "-m", "jailpy", "apparmor", "install", "--policy", TEST_POLICY],
                               capture_output=True, timeout=TIMEOUT * 4, cwd=REPO)
            assert p.returncode == 0 and b"launcher: not needed" in p.stdout, p.stderr
        pytest.skip("this kernel does not mediate user namespaces (no Ubuntu patches): the launcher is not needed, "
                    "and its profile (abi 4.0, userns) needs AppArmor 4's parser")
    script, profile = apparmor.launcher_text("/usr/bin/python3")
    apparmor.check(profile)
    assert f"profile jailpy-launcher {apparmor.LAUNCHER_PATH} flags=(unconfined)" in profile
    assert "userns," in profile and "python3 -I -m jailpy" in script
