"""The host-side mount plan: which paths get hidden, which binds are refused."""

from __future__ import annotations

import os

import pytest

from jailpy import Policy, PolicyError
from jailpy import mounts


def test_hide_through_a_symlink_hides_its_target_too(tmp_path):
    real = tmp_path / "var" / "home"
    real.mkdir(parents=True)
    link = tmp_path / "home"
    link.symlink_to(real)
    hidden = mounts._resolve_hide([str(link), str(tmp_path / "missing")])
    assert str(real) in hidden  # Fedora-style /home -> var/home: the real directory is covered
    assert str(link) not in hidden  # a nested symlink path is never mounted over by path


def test_hide_refuses_files(tmp_path):
    f = tmp_path / "key"
    f.write_text("secret")
    with pytest.raises(PolicyError, match="not a directory"):
        mounts._resolve_hide([str(f)])


@pytest.mark.parametrize("spec", ["/tmp://proc", "/tmp:/proc/x", "/tmp:///dev", "/tmp:/", "/proc:/x", "/sys:/x",
                                  "/proc/self:/x"])
def test_binds_over_or_from_kernel_filesystems_are_refused(spec):
    with pytest.raises(PolicyError):
        mounts.prepare(Policy(ro_bind=[spec], cwd=False))


def test_cwd_that_holds_a_hidden_directory_is_not_bound(monkeypatch):
    monkeypatch.chdir("/")
    plan = mounts.prepare(Policy())
    assert not any(b.dst == "/" for b in plan.binds) and plan.cwd_note.startswith("not bound")
    if os.path.isdir("/var/tmp"):
        monkeypatch.chdir("/var")
        plan = mounts.prepare(Policy())
        assert not any(b.dst == "/var" for b in plan.binds)
