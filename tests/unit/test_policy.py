"""The policy loader: defaults, includes, CLI overrides and the errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from jailpy import Policy, PolicyError
from jailpy import policy as policy_mod


def test_default_toml_matches_the_builtin_defaults():
    assert msgspec.to_builtins(policy_mod.load("default")) == msgspec.to_builtins(Policy())


def test_include_then_override(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('include = ["default"]\nhostname = "base"\ntmp_size = "64M"\n')
    child = tmp_path / "child.toml"
    child.write_text('include = ["./base.toml"]\nhostname = "child"\n')
    p = policy_mod.load(str(child))
    assert p.hostname == "child" and p.tmp_size == "64M" and p.hide == Policy().hide


@pytest.mark.parametrize("text,key", [
    ('hostnme = "x"\n', "hostnme"),
    ('tmp_size = "lots"\n', "tmp_size"),
    ('hostname = 5\n', "hostname"),
    ('hostname = "bad name!"\n', "hostname"),
    ('id_map = "many"\n', "id_map"),
    ('bind = ["src:relative/dst"]\n', "bind"),
    ('env = ["NOEQUALS"]\n', "env"),
    ('pass_fd = [1]\n', "pass_fd"),
    ('wall_time = -1\n', "wall_time"),
    ('uid = 70000\n', "uid"),
])
def test_bad_policy_file_names_key_and_file(tmp_path, text, key):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(PolicyError) as e:
        policy_mod.load(str(f))
    assert key in str(e.value) and str(f) in str(e.value)


def test_include_loop_is_an_error(tmp_path):
    (tmp_path / "a.toml").write_text('include = ["./b.toml"]\n')
    (tmp_path / "b.toml").write_text('include = ["./a.toml"]\n')
    with pytest.raises(PolicyError, match="include loop"):
        policy_mod.load(str(tmp_path / "a.toml"))


def test_not_toml_is_an_error(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("this is = = not toml")
    with pytest.raises(PolicyError, match="not valid TOML"):
        policy_mod.load(str(f))


@pytest.mark.parametrize("value,expected", [("64M", 64 << 20), ("1G", 1 << 30), ("512k", 512 << 10),
                                            ("1KiB", 1024), (4096, 4096), ("1.5M", 3 << 19)])
def test_parse_size(value, expected):
    assert policy_mod.parse_size(value) == expected


@pytest.mark.parametrize("value", ["0", "-1M", "1X", "", True, "M"])
def test_parse_size_rejects(value):
    with pytest.raises(PolicyError):
        policy_mod.parse_size(value)


def test_replace_validates():
    with pytest.raises(PolicyError, match="hostname"):
        Policy().replace(hostname="")
    assert Policy().replace(hostname="box").hostname == "box"


def test_cli_policy_errors_exit_125_with_one_line(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('colour = "blue"\n')
    p = subprocess.run([sys.executable, "-m", "jailpy", "exec", "--policy", str(f), "--", "true"],
                       capture_output=True, timeout=30)
    assert p.returncode == 125
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "colour" in err and str(f) in err


@pytest.mark.parametrize("flags", [["--tmp-size", "0"], ["--id-map", "weird"], ["--pass-fd", "x"],
                                   ["--wall-time", "-3"], ["--network", "host"], ["--no-such-flag"],
                                   ["--bind", "/definitely/not/here"], ["--rootfs", "/definitely/not/here"]])
def test_cli_bad_flags_exit_125(flags):
    p = subprocess.run([sys.executable, "-m", "jailpy", "exec", *flags, "--", "true"], capture_output=True, timeout=30)
    assert p.returncode == 125, p.stderr
    assert p.stderr.decode().count("\n") == 1 and p.stderr.startswith(b"jailpy: error: ")


def test_cli_without_a_command_exits_125():
    p = subprocess.run([sys.executable, "-m", "jailpy", "exec"], capture_output=True, timeout=30)
    assert p.returncode == 125
