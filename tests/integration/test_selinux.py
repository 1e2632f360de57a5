"""SELinux for the program (jailpy.lsm.selinux, issue 13): jailpy's module, and runs under jailpy_t
with per-run MCS categories on a kernel with SELinux enforcing.

This host's kernel has SELinux compiled in but off: the tests marked ``selinux`` run in the VM
lane's second boot (selinux=1 security=selinux enforcing=1, Debian's refpolicy, jailpy.cil
installed in the image; tests/vm/README.md), as root and as ``tester`` (both run in the guest's
kernel_t, there being no init system to give them another domain).  Here they skip, saying why;
the module is still compiled against Debian's policy where selinux-policy-default and semodule
are installed, into a copy of the policy store (never the host's own).

Files the tests label (chcon) are their own, in their temporary directories.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

import jailpy
from conftest import REPO, TIMEOUT, jail
from jailpy import mounts
from jailpy.lsm import selinux

SELINUX = pytest.mark.selinux
ENFORCING = selinux.enabled() and selinux.enforcing()
needs_selinux = pytest.mark.skipif(not ENFORCING, reason="SELinux is not enforcing here (the VM lane's SELinux "
                                                         "boot is)")
LABEL = re.compile(r"^[a-z_]+:[a-z_]+:jailpy_t:s0:c(\d+),c(\d+)$")


def categories(label: str) -> tuple[int, int]:
    m = LABEL.match(label)
    assert m, label
    a, b = int(m.group(1)), int(m.group(2))
    assert 0 <= a < b <= 1023, label
    return a, b


def test_categories_are_two_distinct_ones_in_order():
    seen = set()
    for _ in range(200):
        label = selinux.with_categories("system_u:system_r:jailpy_t")
        seen.add(categories(label))
    assert len(seen) > 190  # random: two runs share a pair once in 500000
    assert selinux.with_categories("u:r:t:s0:c1,c2") == "u:r:t:s0:c1,c2"  # a given level is kept


def test_asked_for_where_selinux_is_off_fails_closed():
    if selinux.enabled():
        pytest.skip("SELinux is on here")
    for value in ("auto", "system_u:system_r:jailpy_t"):
        p = jail("--selinux-label", value, "--", "true")
        assert p.returncode == 125 and b"SELinux is not enabled" in p.stderr and p.stderr.count(b"\n") == 1


def test_a_malformed_label_is_a_policy_error():
    p = jail("--selinux-label", "jailpy_t", "--", "true")
    assert p.returncode == 125 and b"expected USER:ROLE:TYPE" in p.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("semodule") or not os.path.isdir("/var/lib/selinux/default"),
                    reason="needs root, semodule and Debian's selinux-policy-default (apt-get install "
                           "selinux-policy-default semodule-utils)")
def test_the_module_compiles_against_debians_policy(tmp_path):
    """semodule -n -i into a copy of the policy store (-p): the host's own store is left alone."""
    for d in ("var/lib/selinux", "etc/selinux"):
        shutil.copytree(f"/{d}", tmp_path / d, symlinks=True)
    cil = selinux.module_path()
    p = subprocess.run(["semodule", "-p", str(tmp_path), "-n", "-i", str(cil)], capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    p = subprocess.run(["semodule", "-p", str(tmp_path), "-l"], capture_output=True, timeout=120)
    assert b"jailpy" in p.stdout.split()
    if shutil.which("seinfo"):
        pol = max((tmp_path / "etc/selinux/default/policy").glob("policy.*"))
        p = subprocess.run(["seinfo", str(pol), "-x", "-t", "jailpy_t"], capture_output=True, timeout=120)
        assert b"mcs_constrained_type" in p.stdout and b"domain" in p.stdout, p.stdout


# ---------------------------------------------------------------- enforcing (VM lane) ----

@SELINUX
@needs_selinux
@pytest.mark.parametrize("path", ["fresh", "forkserver"])
def test_the_program_runs_as_jailpy_t_with_categories_of_its_run(path):
    pol = jailpy.Policy(selinux_label="auto")
    argv = ["cat", "/proc/self/attr/current"]
    if path == "fresh":
        results = [jailpy.run(argv, pol, capture_output=True) for _ in range(2)]
    else:
        with jailpy.Sandbox(pol, forkserver=True) as sb:
            results = [sb.run(argv, capture_output=True) for _ in range(2)]
    labels = []
    for r in results:
        assert r.exit_code == 0, (r.error, r.stderr)
        label = r.stdout.decode().strip("\0\n")
        categories(label)
        assert r.protections["lsm"]["type"] == "jailpy_t" and r.protections["lsm"]["label"] == label
        labels.append(label)
    assert labels[0] != labels[1]  # each run its own pair


@SELINUX
@needs_selinux
def test_no_network_sockets_under_jailpy_t():
    code = ("import errno, socket\n"
            "def t(*a):\n    try:\n        socket.socket(*a).close(); return 'ok'\n"
            "    except OSError as e:\n        return errno.errorcode[e.errno]\n"
            "print(t(socket.AF_INET, socket.SOCK_STREAM), t(socket.AF_INET, socket.SOCK_DGRAM), t(socket.AF_UNIX))\n")
    r = jailpy.run(["python3", "-c", code], jailpy.Policy(selinux_label="auto", seccomp="none"), capture_output=True)
    assert r.stdout == b"EACCES EACCES ok\n", (r.stdout, r.stderr, r.error)


def _labelled_dir(tmp_path, name: str, type_: str, mode: int = 0o777):
    d = tmp_path / name
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(d, mode)
    p = subprocess.run(["chcon", "-t", type_, str(d)], capture_output=True, timeout=TIMEOUT)
    if p.returncode != 0:
        pytest.skip(f"chcon -t {type_}: {p.stderr.decode().strip()}")
    return d


@SELINUX
@needs_selinux
def test_the_type_stops_a_write_the_mounts_would_allow(tmp_path, monkeypatch):
    """A read-only bind mounted writable (the test-only hook), Landlock off: a directory of a type
    jailpy_t may read but not write (usr_t) refuses the write with EACCES."""
    canary = _labelled_dir(tmp_path, "canary", "usr_t")
    monkeypatch.setattr(mounts, "_TEST_WEAKEN", ("/canary",))
    pol = jailpy.Policy(ro_bind=[f"{canary}:/canary"], landlock="off", seccomp="none")
    code = ("import errno, os\ntry:\n    open('/canary/new', 'w').write('x'); print('ok')\n"
            "except OSError as e:\n    print(errno.errorcode[e.errno])\nprint(os.listdir('/canary'))\n")
    assert jailpy.run(["python3", "-c", code], pol, capture_output=True).stdout == b"ok\n['new']\n"
    (canary / "new").unlink()
    r = jailpy.run(["python3", "-c", code], pol.replace(selinux_label="auto"), capture_output=True)
    assert r.stdout == b"EACCES\n[]\n", (r.stdout, r.stderr, r.error)


@SELINUX
@needs_selinux
def test_categories_keep_two_sandboxes_apart(tmp_path):
    """A writable bind of a jailpy_file_t directory shared by two runs: what one run writes carries
    its categories, so the next run (other categories) cannot read it; the host can, and two
    runs given the same level share it."""
    shared = _labelled_dir(tmp_path, "shared", "jailpy_file_t")
    pol = jailpy.Policy(bind=[f"{shared}:/shared"], selinux_label="auto", seccomp="none")
    write = ["sh", "-c", "echo secret > /shared/f && cat /shared/f"]
    read = ["python3", "-c", "import errno\ntry:\n    print(open('/shared/f').read().strip())\n"
                             "except OSError as e:\n    print(errno.errorcode[e.errno])\n"]
    r1 = jailpy.run(write, pol, capture_output=True)
    assert r1.stdout == b"secret\n", (r1.stderr, r1.error)
    r2 = jailpy.run(read, pol, capture_output=True)
    assert r2.stdout == b"EACCES\n", (r2.stdout, r2.stderr)
    assert (shared / "f").read_text() == "secret\n"
    label = r1.protections["lsm"]["label"]
    fixed = pol.replace(selinux_label=label)  # the first run's own level, given explicitly
    r3 = jailpy.run(read, fixed, capture_output=True)
    assert r3.stdout == b"secret\n", (r3.stdout, r3.stderr, r3.error)
    assert r3.protections["lsm"]["label"] == label


@SELINUX
@needs_selinux
def test_unknown_type_or_permissive_fails_closed():
    p = jail("--selinux-label", "system_u:system_r:jailpy_nope_t", "--", "true")
    assert p.returncode == 125 and b"not a valid context" in p.stderr and p.stderr.count(b"\n") == 1
    if os.geteuid() != 0:
        return
    subprocess.run(["setenforce", "0"], check=True, timeout=TIMEOUT)
    try:
        p = jail("--selinux-label", "auto", "--", "true")
    finally:
        subprocess.run(["setenforce", "1"], check=True, timeout=TIMEOUT)
    assert p.returncode == 125 and b"permissive" in p.stderr


@SELINUX
@needs_selinux
def test_doctor_reports_selinux():
    p = subprocess.run([sys.executable, "-m", "jailpy", "doctor", "--json"], capture_output=True,
                       timeout=TIMEOUT * 4, cwd=REPO)
    import json

    checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
    assert checks["SELinux"]["status"] == "ok" and "jailpy_t is in the policy" in checks["SELinux"]["detail"]
