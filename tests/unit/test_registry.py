"""The registry of named sandboxes (jailpy.registry): real files in a private directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jailpy import registry
from jailpy.errors import HostError, PolicyError


@pytest.fixture
def regdir(tmp_path, monkeypatch):
    if os.getuid() == 0:
        pytest.skip("root's registry is /run/jailpy; these tests redirect XDG_RUNTIME_DIR, which only users have")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path / "jailpy"


@pytest.mark.parametrize("name", ["", "../x", "a b", "-x", ".x", "x" * 65, "a/b", "é"])
def test_bad_names_are_refused(name):
    with pytest.raises(PolicyError, match="not a valid sandbox name"):
        registry.check_name(name)


@pytest.mark.parametrize("name", ["a", "judge-1", "T_2.x", "x" * 64])
def test_good_names(name):
    assert registry.check_name(name) == name


def test_register_lookup_unregister(regdir):
    path = registry.register("one", ["true"], ["/sys/fs/cgroup/jailpy/jailpy-1-0"], 2)
    assert oct(os.stat(regdir).st_mode & 0o777) == "0o700"
    e = registry.lookup("one")
    assert (e.name, e.supervisor_pid, e.argv, e.cgroup, e.cgroup_version) == ("one", os.getpid(), ["true"],
                                                                              ["/sys/fs/cgroup/jailpy/jailpy-1-0"], 2)
    with pytest.raises(PolicyError, match="already running"):
        registry.register("one", ["true"], [], 2)
    registry.unregister(path)
    with pytest.raises(PolicyError, match="no running sandbox named 'one'"):
        registry.lookup("one")


def test_a_dead_supervisors_entry_is_stale_and_replaced(regdir):
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(p.stdout)
    regdir.mkdir(mode=0o700)
    (regdir / "old.json").write_text(json.dumps(dict(name="old", supervisor_pid=dead, supervisor_start=1, started=0.0,
                                                     argv=["x"], cgroup=[], cgroup_version=1)))
    assert registry.entries() == []
    assert not (regdir / "old.json").exists()
    (regdir / "old.json").write_text(json.dumps(dict(name="old", supervisor_pid=dead, supervisor_start=1, started=0.0,
                                                     argv=["x"], cgroup=[], cgroup_version=1)))
    registry.unregister(registry.register("old", ["y"], [], 1))  # the stale claim does not block the name


def test_a_reused_pid_does_not_keep_an_entry_alive(regdir):
    regdir.mkdir(mode=0o700)
    # our own pid, but another start time: the process that registered is gone and the pid was reused
    (regdir / "re.json").write_text(json.dumps(dict(name="re", supervisor_pid=os.getpid(), supervisor_start=1,
                                                    started=0.0, argv=["x"], cgroup=[], cgroup_version=1)))
    assert registry.entries() == []


def test_a_directory_writable_by_others_is_refused(regdir):
    regdir.mkdir(mode=0o700)
    os.chmod(regdir, 0o777)
    with pytest.raises(HostError, match="not a private directory"):
        registry.entries()


def test_a_symlinked_directory_is_refused(regdir, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    regdir.symlink_to(target)
    with pytest.raises(HostError, match="not a private directory"):
        registry.register("x", ["y"], [], 1)
