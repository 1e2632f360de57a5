"""jailpy's own errors: exit status 125, one line on stderr naming the cause, and the program
never runs.  Also policy files (--policy)."""

from __future__ import annotations

import pytest

from conftest import jail

RAN = ["--", "sh", "-c", "echo PROGRAM-RAN"]


def assert_refused(p, *words: str) -> None:
    assert p.returncode == 125, (p.returncode, p.stderr)
    assert p.stdout == b"", "the program ran"
    err = p.stderr.decode()
    assert b"Traceback" not in p.stderr
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    assert err.startswith("jailpy: ")
    for w in words:
        assert w in err, f"{w!r} not named in {err!r}"


# ----------------------------------------------------------------- usage errors ----

def test_unknown_flag_is_125_with_one_line():
    assert_refused(jail("--no-such-flag", *RAN), "--no-such-flag")


def test_bad_flag_value_is_125_with_one_line():
    assert_refused(jail("--wall-time", "soon", *RAN), "soon")


def test_flag_after_the_command_goes_to_the_program():
    p = jail("--", "sh", "-c", 'echo "$0 $1"', "--no-such-flag", "--report")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"--no-such-flag --report\n"


def test_missing_command_is_125_with_one_line():
    assert_refused(jail())


# ------------------------------------------------------------- invalid requests ----

def test_missing_bind_source():
    assert_refused(jail("--bind", "/nonexistent/jailpy-src", *RAN), "/nonexistent/jailpy-src")


def test_missing_ro_bind_source():
    assert_refused(jail("--ro-bind", "/nonexistent/jailpy-src:/tmp/x", *RAN), "/nonexistent/jailpy-src")


def test_relative_bind_destination(tmp_path):
    assert_refused(jail("--ro-bind", f"{tmp_path}:relative/dst", *RAN), "relative/dst")


@pytest.mark.parametrize("dst", ["/proc/x", "/dev/x", "/"])
def test_bind_over_proc_dev_or_root_is_refused(tmp_path, dst):
    assert_refused(jail("--bind", f"{tmp_path}:{dst}", *RAN))


@pytest.mark.parametrize("dst", ["/", "/dev", "/dev/shm", "/proc", "/proc/sys"])
def test_tmpfs_over_root_proc_or_dev_is_refused(dst):
    # a tmpfs over /dev would take /dev/null and the rest away, read-only; over / or /proc the
    # sandbox cannot be built: refused up front, naming the destination
    assert_refused(jail("--tmpfs", dst, *RAN), "--tmpfs", dst)


@pytest.mark.parametrize("flag,value", [("--memory", "16777216.00001T"), ("--tmp-size", "16777216T"),
                                        ("--tmpfs", "/scratch:16777216T"), ("--fsize", "18446744073709551616"),
                                        ("--stack", "9223372036854775808"), ("--output-limit", "1048577T")])
def test_sizes_beyond_what_the_kernel_takes_are_refused(flag, value):
    # at 2**64 bytes a tmpfs size= wraps to 0, which means no limit at all; rlimits overflow
    assert_refused(jail(flag, value, *RAN), flag)


def test_bind_destination_under_read_only_host_dir_is_refused(tmp_path):
    # the mount point cannot be created in the read-only /etc: jailpy refuses, nothing runs
    assert_refused(jail("--ro-bind", f"{tmp_path}:/etc/jailpy-test-dst", *RAN), "/etc/jailpy-test-dst")


def test_bad_hostname():
    assert_refused(jail("--hostname", "bad host!", *RAN), "hostname")


def test_pass_fd_below_3():
    assert_refused(jail("--pass-fd", "1", *RAN), "pass-fd")


def test_report_path_not_writable(tmp_path):
    assert_refused(jail("--report", str(tmp_path / "no-such-dir" / "r.json"), *RAN), "--report")


def test_policy_name_that_does_not_exist():
    assert_refused(jail("--policy", "nonexistent", *RAN), "nonexistent")


def test_policy_path_that_does_not_exist(tmp_path):
    assert_refused(jail("--policy", str(tmp_path / "missing.toml"), *RAN), "missing.toml")


# ------------------------------------------------------------------ policy files ----

BAD_POLICIES = [
    # id, file content, key the message must name
    ("unknown-key", 'hostname = "ok"\nno_such_key = 1\n', "no_such_key"),
    ("wrong-type", "hostname = 5\n", "hostname"),
    ("bad-hostname", 'hostname = "bad_host!"\n', "hostname"),
    ("negative-wall-time", "wall_time = -1\n", "wall_time"),
    ("bad-size", 'tmp_size = "lots"\n', "tmp_size"),
    ("bad-enum", 'id_map = "sideways"\n', "id_map"),
    ("bad-list-item", "env = [1]\n", "env"),
    ("bad-env-entry", 'env = ["NOEQUALS"]\n', "env"),
    ("relative-hide", 'hide = ["home"]\n', "hide"),
    ("not-toml", "hostname = = 3\n", "TOML"),
]


@pytest.mark.parametrize("content,key", [b[1:] for b in BAD_POLICIES], ids=[b[0] for b in BAD_POLICIES])
def test_bad_policy_file_is_125_naming_key_and_file(tmp_path, content, key):
    path = tmp_path / "bad-policy.toml"
    path.write_text(content)
    assert_refused(jail("--policy", str(path), *RAN), key, str(path))


def test_policy_file_is_applied_and_flags_override_it(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('include = ["default"]\nhostname = "frompolicy"\nenv = ["FROM_POLICY=1"]\n')
    p = jail("--policy", str(path), "--", "sh", "-c", 'echo "$(hostname) $FROM_POLICY"')
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"frompolicy 1\n"
    p = jail("--policy", str(path), "--hostname", "fromflag", "--", "hostname")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"fromflag\n"


def test_default_policy_by_name():
    p = jail("--policy", "default", "--", "hostname")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"jailpy\n"
