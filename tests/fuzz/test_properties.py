"""Property tests (hypothesis) for everything jailpy reads from a user: policy TOML (from_dict and
files with includes), the ``jailpy exec`` flag mapping, seccomp TOML policies and OCI/Docker JSON
profiles.  The property, for any input: it loads into a valid object, or it is refused with a
jailpy error (PolicyError / SeccompError: exit 125) of one line; never another exception.

Every test is bounded (settings(max_examples=...)); the whole file runs in well under a minute.
No hypothesis database is kept (database=None: nothing written into the checkout).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jailpy.sandbox
from jailpy import cli, seccomp
from jailpy.errors import JailpyError, PolicyError
from jailpy.policy import from_dict, load

from conftest import JAILPY, REPO, TIMEOUT
from fuzz_strategies import (FIELD_VALUES, conditions, json_mutations, json_value, oci_docs, policy_dicts,
                             policy_is_valid, seccomp_docs, to_toml, value, weird_text)

# Deterministic by default (the same examples on every CI run: a red build means a change, not luck);
# JAILPY_FUZZ_RANDOM=1 explores new examples and JAILPY_FUZZ_SCALE=N runs N times as many.
_SCALE = max(1, int(os.environ.get("JAILPY_FUZZ_SCALE", "1")))
FAST = settings(max_examples=300 * _SCALE, deadline=None, database=None,
                derandomize=os.environ.get("JAILPY_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(FAST, max_examples=150 * _SCALE)
DOCKER_LIKE = REPO / "profiles" / "seccomp" / "docker-like.json"


def assert_clean_error(e: BaseException, *must_name: str) -> None:
    """A jailpy refusal: a PolicyError (SeccompError is one) whose message is one non-empty line
    naming ``must_name`` (the file, the source)."""
    assert isinstance(e, PolicyError), f"{type(e).__name__}: {e}"
    msg = str(e)
    assert msg.strip(), "empty error message"
    assert "\n" not in msg and "\r" not in msg, f"error message is not one line: {msg!r}"
    for w in must_name:
        assert w in msg, f"{w!r} not named in {msg!r}"


@contextlib.contextmanager
def scratch_dir():
    with tempfile.TemporaryDirectory(prefix="jailpy-prop-") as d:
        yield Path(d)


# ------------------------------------------------------------------ policy TOML ----

@FAST
@given(policy_dicts())
def test_from_dict_loads_or_refuses_with_one_line(d):
    try:
        p = from_dict(d, "fuzz-source")
    except PolicyError as e:
        assert_clean_error(e, "fuzz-source")
    else:
        assert policy_is_valid(p)


INCLUDES = st.lists(st.sampled_from(["default", "nope", "bad name", "./base.toml", "base.toml", "./loop.toml",
                                     "./missing.toml", "../x.toml", "sub/", "/dev/null", "/etc/hostname"]), max_size=3)


@FAST
@given(policy_dicts(), policy_dicts(), st.one_of(st.none(), INCLUDES, value), st.booleans())
def test_policy_file_loads_or_refuses_with_one_line(d, base, include, loop):
    with scratch_dir() as tmp:
        (tmp / "base.toml").write_text(to_toml(base))
        (tmp / "loop.toml").write_text('include = ["./main.toml"]\n' if loop else "")
        doc = dict(d)
        if include is not None:
            doc["include"] = include
        main = tmp / "main.toml"
        main.write_text(to_toml(doc))
        try:
            p = load(str(main))
        except PolicyError as e:
            assert_clean_error(e)
        else:
            assert policy_is_valid(p)


@FAST
@given(policy_dicts(extra_keys=False),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.binary(max_size=4)), min_size=1, max_size=4))
def test_mutated_policy_bytes_load_or_refuse(d, edits):
    raw = bytearray(to_toml(d).encode() or b'hostname = "x"\n')
    for pos, op, data in edits:
        pos %= len(raw) + 1
        if op == 0:
            raw[pos:pos] = data
        elif op == 1:
            del raw[pos:pos + len(data) + 1]
        else:
            raw[pos:pos + len(data)] = data
    with scratch_dir() as tmp:
        f = tmp / "m.toml"
        f.write_bytes(bytes(raw))
        try:
            p = load(str(f))
        except PolicyError as e:
            assert_clean_error(e, str(f))
        else:
            assert policy_is_valid(p)


# ------------------------------------------------------------------ CLI mapping ----

class _Captured(Exception):
    """Raised by the Sandbox stand-in: carries the Policy the CLI built (no sandbox is started)."""


class _NoSandbox:
    def __init__(self, policy, **kw):
        raise _Captured(policy)


_INT_FLAGS = {"pids", "nofile", "uid", "gid", "cpu_weight", "io_weight", "io_read_iops", "io_write_iops"}
_FLOAT_FLAGS = {"wall_time", "cpu_time", "cpus"}
_LIST_FLAGS = {"bind", "ro_bind", "tmpfs", "env", "env_pass", "pass_fd", "allow_host", "allow_net", "publish"}
_VALUE_FLAGS = sorted(set(FIELD_VALUES) - {"cwd", "no_cgroup", "seccomp_log", "allow_nesting", "hide"})
cli_text = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=16),
    st.sampled_from(["64M", "0", "-1", "1.5", "1e3", "nan", "inf", " 7 ", "1_0", "١٢", "0x10", "judge", "/judge",
                     "none", "default", "strict", "auto", "range", "single", "/tmp", "/tmp:/x", "A=B", "0-1"]),
)


@st.composite
def cli_flags(draw) -> list[tuple[str, str]]:
    out = [(k, draw(cli_text)) for k in draw(st.lists(st.sampled_from(_VALUE_FLAGS), max_size=5, unique=True))]
    for k in _LIST_FLAGS:
        if draw(st.integers(0, 6)) == 0:
            out.append((k, draw(cli_text)))
    out += [(k, None) for k in ("no_cwd", "no_cgroup", "seccomp_log", "allow_nesting") if draw(st.integers(0, 4)) == 0]
    return out


def _convert(key: str, text: str):
    """What the flag's value is as a Policy field (click converts with int()/float())."""
    if key in _INT_FLAGS or key == "pass_fd":
        return int(text)
    if key in _FLOAT_FLAGS:
        return float(text)
    return text


@settings(FAST, max_examples=200 * _SCALE)
@given(cli_flags())
def test_cli_flags_map_to_the_policy_or_exit_125(flags):
    argv = ["exec"]
    for k, v in flags:
        argv.append("--" + k.replace("_", "-") + ("" if v is None else "=" + v))
    argv += ["--", "/bin/true"]
    changes: dict = {}
    api_ok = True
    try:
        for k, v in flags:
            if v is None:
                changes[{"no_cwd": "cwd"}.get(k, k)] = k != "no_cwd"
            elif k in _LIST_FLAGS:
                changes.setdefault(k, []).append(_convert(k, v))
            else:
                changes[k] = _convert(k, v)
        expected = load("default").replace(**changes)
    except (ValueError, PolicyError):
        api_ok = False
    err = _run_cli(argv)
    if isinstance(err, _Captured):
        got = err.args[0]
        assert api_ok, f"the CLI accepted {argv} but the API refuses {changes}"
        assert msgspec.to_builtins(got) == msgspec.to_builtins(expected), (argv, got, expected)
    else:
        rc, out, text = err
        assert rc == 125, (argv, rc, text)
        assert out == "", out
        assert text.startswith("jailpy: error: ") and text.count("\n") == 1, f"not one line: {text!r}"
        assert "Traceback" not in text
        assert not api_ok, f"the CLI refused {argv} ({text.strip()}) but the API accepts {changes}"


def _run_cli(argv: list[str]):
    """cli.main(argv) with the Sandbox replaced by _NoSandbox: the captured Policy, or
    (exit status, stdout, stderr)."""
    import io

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jailpy.sandbox, "Sandbox", _NoSandbox)
        mp.setattr(sys, "stdout", out)
        mp.setattr(sys, "stderr", err)
        try:
            rc = cli.main(argv)
        except _Captured as c:
            return c
    return rc, out.getvalue(), err.getvalue()


_KNOWN_FLAGS = {"--" + k.replace("_", "-") for k in FIELD_VALUES} | {
    "--policy", "--name", "--stats", "--report", "--help", "--no-cwd", "--no-cgroup"}
BAD_FLAGS = {  # each value is invalid by construction, so the program must never run
    "unknown": st.builds(lambda s: f"--{s}", st.text("abcdefghijklmnopqrstuvwxyz-", min_size=3, max_size=12)
                         .filter(lambda s: not s.startswith("-") and f"--{s}" not in _KNOWN_FLAGS)),
    "memory": st.builds(lambda s: f"--memory={s}", st.text("abcdefghijklmnopqrstuvwxyz !?", min_size=1, max_size=8)),
    "pids": st.builds(lambda s: f"--pids={s}", st.text("abcxyz.!", min_size=1, max_size=6)),
    "wall-time": st.builds(lambda n: f"--wall-time=-{n}", st.integers(0, 10 ** 6)),
    "nofile": st.builds(lambda n: f"--nofile={n}", st.integers(-100, 15)),
    "hostname": st.builds(lambda s: f"--hostname={s}!", st.text("abc -", max_size=6)),
    "id-map": st.builds(lambda s: f"--id-map=x{s}", st.text("abcxyz", max_size=6)),
    "seccomp": st.builds(lambda s: f"--seccomp=nope-{s}", st.text("abcxyz", max_size=6)),
    "cpuset": st.builds(lambda s: f"--cpuset={s}", st.text("abc-,;", min_size=1, max_size=6)),
    "pass-fd-low": st.builds(lambda n: f"--pass-fd={n}", st.integers(-5, 2)),
    "pass-fd-huge": st.builds(lambda n: f"--pass-fd={n}", st.integers(2 ** 31, 2 ** 70)),
}


@pytest.mark.parametrize("family", sorted(BAD_FLAGS))
@settings(FAST, max_examples=2 * _SCALE)
@given(data=st.data())
def test_jailpy_exec_with_garbage_flags_exits_125_with_one_line(family, data):
    flags = data.draw(st.lists(BAD_FLAGS[family], min_size=1, max_size=2))
    if data.draw(st.booleans()):
        flags.append(data.draw(st.one_of(*BAD_FLAGS.values())))
    p = subprocess.run([*JAILPY, *flags, "--", "sh", "-c", "echo PROGRAM-RAN"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=TIMEOUT, cwd=REPO)
    assert b"Traceback" not in p.stderr, p.stderr.decode()
    assert p.returncode == 125, (flags, p.returncode, p.stderr)
    assert p.stdout == b""
    assert p.stderr.count(b"\n") == 1 and p.stderr.startswith(b"jailpy: "), p.stderr


# ------------------------------------------------------------------ seccomp TOML ----

@SLOW
@given(seccomp_docs())
def test_seccomp_toml_loads_or_refuses_with_one_line(doc):
    with scratch_dir() as tmp:
        f = tmp / "self.toml"
        f.write_text(to_toml(doc))
        try:
            pol = seccomp.load(str(f))
        except PolicyError as e:
            assert_clean_error(e)
            return
        assert isinstance(pol, seccomp.SeccompPolicy)
        _check_policy(pol)


def _check_policy(pol: "seccomp.SeccompPolicy") -> None:
    """A policy that loads can be shown, hashed and compiled (or libseccomp refuses it cleanly),
    and its BPF agrees with its own rules on a few calls."""
    json.dumps(pol.to_dict())
    pol.describe()
    assert pol.digest().startswith("sha256:")
    try:
        bpf = seccomp.compile_bpf(pol)
    except PolicyError as e:
        assert_clean_error(e)
        return
    assert bpf and len(bpf) % 8 == 0
    filt = seccomp.Filter(bpf, pol.digest(), pol.name, notify=False)
    for r in pol.rules[:8]:
        for args in ((0,) * 6, (1, 2, 3, 4, 5, 6), ((1 << 64) - 1,) * 6):
            want, werr = pol.evaluate(r.nr, args)
            d = filt.decide(r.nr, args)
            assert _same(want, werr, d, pol.report), (r, args, want, werr, d)


def _same(want: str, werr: int, d: "seccomp.Decision", report: bool) -> bool:
    if want == "allow":
        return d.action == "allow"
    if want in ("deny", "errno"):
        return d.action == "errno" and d.errno == werr
    if want == "kill":
        return d.action == "kill"
    return d.action == "log"


@settings(FAST, max_examples=300 * _SCALE)
@given(st.one_of(conditions(), weird_text))
def test_seccomp_condition_parses_or_refuses(text):
    try:
        alts = seccomp.parse_condition(text, "when")
    except PolicyError as e:
        assert_clean_error(e, "when")
    else:
        assert alts and all(isinstance(a, tuple) for a in alts)
        for alt in alts:
            for arg, op, a, b in alt:
                assert 0 <= arg <= 5 and op in ("==", "!=", "<", "<=", ">", ">=", "&==")
                assert 0 <= a < 1 << 64 and 0 <= b < 1 << 64


# ------------------------------------------------------------------ OCI JSON ----

def _load_json_doc(raw: bytes) -> None:
    with scratch_dir() as tmp:
        f = tmp / "profile.json"
        f.write_bytes(raw)
        try:
            pol = seccomp.load(str(f))
        except PolicyError as e:
            assert_clean_error(e, str(f))
            return
        assert isinstance(pol, seccomp.SeccompPolicy)
        _check_policy(pol)


@SLOW
@given(oci_docs())
def test_oci_json_loads_or_refuses_with_one_line(doc):
    _load_json_doc(json.dumps(doc).encode())


@SLOW
@given(st.data())
def test_mutated_docker_like_profile_loads_or_refuses(data):
    doc = json.loads(DOCKER_LIKE.read_bytes())
    _load_json_doc(json.dumps(data.draw(json_mutations(doc))).encode())


@FAST
@given(st.one_of(json_value, st.binary(max_size=64),
                 st.builds(lambda n: b"[" * n + b"]" * n, st.integers(1, 100_000)),
                 st.builds(lambda b, n: DOCKER_LIKE.read_bytes()[:n] + b, st.binary(max_size=8), st.integers(0, 9000))))
def test_arbitrary_json_bytes_load_or_refuse(doc):
    _load_json_doc(doc if isinstance(doc, bytes) else json.dumps(doc).encode())


# ------------------------------------------------------------------ every loaded policy builds a Sandbox ----

@settings(FAST, max_examples=60 * _SCALE)
@given(policy_dicts(extra_keys=False))
def test_a_loaded_policy_is_accepted_or_refused_by_sandbox_without_traceback(d):
    """Sandbox(policy) checks the host side (bind sources, ids, cgroup, seccomp) and starts
    nothing: any Policy the loader accepts gives a Sandbox or a JailpyError."""
    d = {k: v for k, v in d.items() if k not in ("cgroup_parent",)}  # no cgroup directories are made here
    try:
        p = from_dict(d, "fuzz")
    except PolicyError:
        return
    try:
        box = jailpy.sandbox.Sandbox(p, reuse_userns=False)
    except JailpyError as e:
        assert "\n" not in str(e), str(e)
    else:
        box.close()


# ------------------------------------------------------------------ what the fuzzers found ----
# Inputs the fuzzers (these properties and fuzz/atheris_loaders.py) found crashing a loader with a
# traceback or a multi-line error; each must be refused with a one-line jailpy error.  The same
# inputs are in the seed corpus fuzz/corpus/.

_DEEP_TOML = b"include = " + b"[" * 3000 + b"]" * 3000 + b"\n"
FINDINGS = [
    ("policy", b'"a\\nb" = 1\n', "a quoted key with a newline: the unknown-key error spanned two lines"),
    ("policy", b'hostname = "\xff\xfe"\n', "not UTF-8: UnicodeDecodeError traceback"),
    ("policy", _DEEP_TOML, "arrays nested 3000 deep: RecursionError traceback"),
    ("policy", b'ro_bind = ["/tmp\\u0000x"]\n', "a NUL byte in a bind source: loads, then Sandbox() ValueError"),
    ("policy", b'hide = ["/x\\u0000"]\n', "a NUL byte in hide: loads, then Sandbox() ValueError traceback"),
    ("policy", b"pass_fd = [2147483648]\n", "an fd beyond a C int: loads, then Sandbox() OverflowError traceback"),
    ("seccomp", b'known_max_nr = 469\ndefault_action = "\xff"\n', "not UTF-8: UnicodeDecodeError traceback"),
    ("seccomp", _DEEP_TOML, "arrays nested 3000 deep: RecursionError traceback"),
    ("oci", b'{"defaultAction": "SCMP_ACT_ALLOW", "flags": [[]]}', "a list in flags: TypeError unhashable"),
    ("oci", b'{"defaultAction": "SCMP_ACT_ALLOW", "archMap": [{"architecture": "SCMP_ARCH_X86_64", '
            b'"subArchitectures": 5}]}', "subArchitectures not a list: TypeError"),
    ("oci", b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", '
            b'"includes": {"arches": 5}}]}', "includes.arches not a list: TypeError"),
    ("oci", b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", '
            b'"args": [{"index": 0, "op": [], "value": 1}]}]}', "args op not a string: TypeError unhashable"),
    ("policy", b'include = ["./base.\\nml"]\n', "an include path with a newline: two-line error"),
    ("seccomp", b'include = ["./loop.' + b"[" * 300 + b'toml"]\n', "an include path too long: OSError ENAMETOOLONG"),
    ("policy", b'include = ["./' + b"x" * 300 + b'.toml"]\n', "an include path too long: OSError ENAMETOOLONG"),
    ("oci", b'{"defaultAction": "SCMP_ACT_ALLOW", "architectures": "0", "archMap": [{"architecture": '
            b'"SCMP_ARCH_X86_64"}]}', "architectures a string, with archMap: TypeError"),
    ("oci", b"[" * 5000 + b"]" * 5000, "arrays nested 5000 deep: RecursionError traceback"),
    ("oci", b'{"defaultAction": "SCMP_ACT_ALLOW", "\\n": 1}', "a key with a newline: two-line error"),
]


@pytest.mark.parametrize("kind,raw,what", FINDINGS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(FINDINGS)])
def test_fuzz_findings_are_refused_with_one_line(kind, raw, what):
    with scratch_dir() as tmp:
        f = tmp / ("p.json" if kind == "oci" else "p.toml")
        f.write_bytes(raw)
        loader = load if kind == "policy" else seccomp.load
        try:
            p = loader(str(f))
        except PolicyError as e:
            assert_clean_error(e, str(f))
        else:
            pytest.fail(f"{what}: loaded as {p!r}")
