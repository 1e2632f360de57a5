"""``jailpy doctor``: the host checks, as root and rootless here and in the VM lane (a stock Debian
kernel, cgroup v2, AppArmor on).  A failing host is made for real: the doctor run inside a jailpy
sandbox, where ``user.max_user_namespaces`` is 0 (the kernel refuses a nested user namespace with
ENOSPC), must say so, name the fix and exit 1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, TIMEOUT, jail

VM = pytest.mark.vm
NAMES = {"kernel", "user namespaces", "AppArmor userns restriction", "id ranges", "cgroup", "Landlock", "AppArmor",
         "SELinux", "seccomp", "user-mode networking", "TIOCSTI", "CPU frequency", "container", "default policy"}


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jailpy", "doctor", *args], capture_output=True, timeout=TIMEOUT * 4,
                          cwd=REPO, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "COLUMNS": "120",
                                         **({"JAILPY_CGROUP_PARENT": p} if (p := _parent()) else {})})


def _parent() -> str | None:
    import os

    return os.environ.get("JAILPY_CGROUP_PARENT")


@VM
def test_doctor_json_on_this_host():
    p = doctor("--json")
    rep = json.loads(p.stdout)
    assert p.returncode == 0 and rep["ok"] is True, p.stdout[-3000:]
    names = {c["name"] for c in rep["checks"]}
    assert NAMES <= names, NAMES - names
    for c in rep["checks"]:
        assert c["status"] in ("ok", "warn", "fail", "info") and c["detail"], c
        if c["status"] in ("warn", "fail"):
            assert c["fix"], f"no fix for {c}"
        assert not (c["needed"] and c["status"] == "fail"), c
    by = {c["name"]: c for c in rep["checks"]}
    assert by["default policy"]["status"] == "ok" and "jailpy exec -- true ran" in by["default policy"]["detail"]
    assert by["user namespaces"]["status"] == "ok" and by["user namespaces"]["needed"]


@VM
def test_doctor_text_report():
    p = doctor()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    lines = p.stdout.decode().splitlines()
    assert lines[0].startswith("jailpy doctor: Linux ")
    assert lines[-1] == "jailpy doctor: everything the default policy needs is here"
    heads = [ln.split()[0] for ln in lines[1:-1] if not ln.startswith(" ")]
    assert set(heads) <= {"OK", "WARN", "FAIL", "INFO"} and len(heads) >= len(NAMES)


def test_doctor_fails_where_user_namespaces_are_not_allowed():
    """Inside a sandbox (--seccomp none, so the kernel's own quota answers) no user namespace can
    be made: the check fails with the sysctl to raise, and doctor exits 1."""
    p = jail("--seccomp", "none", "--", sys.executable, "-m", "jailpy", "doctor", "--json", timeout=TIMEOUT * 4)
    assert p.returncode == 1, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    rep = json.loads(p.stdout)
    by = {c["name"]: c for c in rep["checks"]}
    ns = by["user namespaces"]
    assert rep["ok"] is False and ns["status"] == "fail" and ns["needed"]
    assert "ENOSPC" in ns["detail"] and "user.max_user_namespaces=0" in ns["detail"]
    assert "sysctl -w user.max_user_namespaces=" in ns["fix"]
    assert by["default policy"]["status"] == "fail"
