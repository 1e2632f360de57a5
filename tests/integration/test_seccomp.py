"""Seccomp policies through ``jailpy exec --seccomp`` (issue 4, section 3): every syscall of the
``default`` deny list is refused under ``default`` and ``strict`` and named in the report; foreign
ABIs are refused; kill rules end the run with SV; OCI JSON profiles load and do what they say;
bad policies stop with 125; ``--seccomp-log``; ``jailpy seccomp show|compile``; the report's
protections.

The probe (tests/probes/syscall_probe.c) makes each call with harmless arguments, so a call that
is NOT filtered fails in the kernel with EFAULT/EBADF/EINVAL (or EPERM for want of a capability,
which is why a refusal by EPERM must also be named in blocked_syscall).  Exceptions, harmless
too: unshare(CLONE_NEWUSER) and personality(PER_LINUX32) succeed unfiltered and only change the
probe process; socket(AF_NETLINK) opens (and closes) a socket in the sandbox's own network.

A refusal is EPERM named in blocked_syscall, or ENOSYS.  Where the kernel itself answers ENOSYS
(here, with CONFIG_MODULES=n and no kexec, uselib or lookup_dcookie: kexec_load, kexec_file_load,
init_module, finit_module, delete_module, uselib, lookup_dcookie) an ENOSYS answer would not show
the filter, so only a named EPERM counts (seccomp(2): the filter runs before the syscall table
lookup).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
from pathlib import Path

import pytest

from conftest import REPO, jail, jail_py
from seccomp_helpers import (ALLOWED, DENIED, DESCRIBED, FOREIGN_ABI, SHIPPED_POLICIES, Call, Probe,
                             assert_one_line_error, probe, seccomp_cli, write_kill_policy)

assert probe  # a pytest fixture, used by name

SIGSYS_EXIT = 128 + signal.SIGSYS  # 159
ENOSYS_OK = (errno.EPERM, errno.ENOSYS)


def assert_named(run, label: str, *, name: str | None = None, action: str = "errno", err: int = errno.EPERM) -> dict:
    """The report's blocked_syscall names the probe's call ``label`` (name, nr, action, errno, six
    int args, a count, a text "name(...)").  ``name``: the syscall's name when the call never
    printed its line (the program was killed in it)."""
    call = run.calls.get(label)
    want = call.name if call is not None else name
    assert want, f"{label}: the probe printed nothing for it; {run.why()}"
    b = run.report.get("blocked_syscall")
    assert b is not None, f"{label}: refused but blocked_syscall is null; {run.why()}"
    assert b["name"] == want, f"{label}: blocked_syscall names {b['name']!r}, not {want!r}; {run.why()}"
    if call is not None:
        assert b["nr"] == call.nr, run.why()
    assert b["action"] == action, run.why()
    if action == "errno":
        assert b["errno"] == err, run.why()
    assert isinstance(b["args"], list) and len(b["args"]) == 6 and all(isinstance(a, int) for a in b["args"]), b
    assert isinstance(b["count"], int) and b["count"] >= 1, b
    assert isinstance(b["text"], str) and b["text"].startswith(want + "("), b
    return b


# ------------------------------------------------------------ the deny list ----

_UNFILTERED: dict[str, Call] = {}


def unfiltered(probe: Probe, label: str) -> Call:
    """The kernel's own answer to the probe's call ``label`` (``--seccomp none``), cached."""
    if label not in _UNFILTERED:
        _UNFILTERED[label] = probe.run("none", label).calls[label]
    return _UNFILTERED[label]


def assert_refused(probe: Probe, run, label: str) -> None:
    """The call ``label`` was refused by the filter: EPERM named in blocked_syscall, or ENOSYS
    where the kernel itself would not have said ENOSYS (this kernel has no kexec, modules,
    uselib or lookup_dcookie: for those only a named EPERM shows the filter at work)."""
    call = run.calls[label]
    assert call.ret == -1 and call.err in ENOSYS_OK, f"{call} got through; {run.why()}"
    if call.err == errno.EPERM:
        b = assert_named(run, label)
        if label in DESCRIBED:
            assert DESCRIBED[label] in b["text"], b
    else:
        base = unfiltered(probe, label)
        assert base.err != errno.ENOSYS, \
            f"{call}: the kernel answers ENOSYS on its own ({base}), so this does not show a refusal; " \
            f"a deliberate denial must be EPERM and named in blocked_syscall"
        b = run.report["blocked_syscall"]  # ENOSYS straight from the BPF is not reported
        assert b is None or b["name"] == call.name, run.why()


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
@pytest.mark.parametrize("label", DENIED)
def test_denied_syscall_is_refused_and_named(probe: Probe, policy: str, label: str):
    run = probe.run(policy, label)
    assert run.proc.returncode == 0 and run.report["verdict"] == "OK", run.why()
    assert_refused(probe, run, label)


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
def test_tiocsti_with_high_bits_is_caught_and_reported_with_the_full_request(probe: Probe, policy: str):
    """ioctl(2)'s request is an unsigned int in the kernel: bit 32 set is still TIOCSTI there,
    so the filter must compare the low 32 bits only."""
    run = probe.run(policy, "ioctl_tiocsti_high")
    call = run.calls["ioctl_tiocsti_high"]
    assert call.err == errno.EPERM, run.why()
    b = assert_named(run, "ioctl_tiocsti_high")
    assert b["args"][0] & 0xFFFFFFFF == 0xFFFFFFFF and b["args"][1] == 0x1_0000_5412, b


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
def test_ptrace_record_has_the_arguments(probe: Probe, policy: str):
    run = probe.run(policy, "ptrace")
    b = assert_named(run, "ptrace")
    assert b["nr"] == 101 and b["args"][:2] == [16, 1], b  # PTRACE_ATTACH, pid 1
    assert b["text"].startswith("ptrace(PTRACE_ATTACH, 1"), b


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
@pytest.mark.parametrize("label", FOREIGN_ABI)
def test_foreign_abi_syscalls_are_refused(probe: Probe, policy: str, label: str):
    """x32 (nr | 0x40000000) and i386 (int 0x80) entry points: refused with EPERM/ENOSYS, or the
    program is killed by SIGSYS (exit 159, verdict SV).  Unfiltered, int 0x80 getpid works here
    (CONFIG_IA32_EMULATION=y) and returns the pid; an x32 call is ENOSYS (CONFIG_X86_X32_ABI=n),
    so ENOSYS counts only where the kernel would have answered otherwise."""
    run = probe.run(policy, "allowed_getppid", label)
    assert run.calls["allowed_getppid"].ret == 1, run.why()  # the probe itself ran
    if label in run.calls:
        call = run.calls[label]
        assert call.ret == -1 and call.err in ENOSYS_OK, f"{call}: not refused; {run.why()}"
        assert run.proc.returncode == 0, run.why()
        if call.err == errno.ENOSYS:  # no x32 here (CONFIG_X86_X32_ABI=n): the kernel says ENOSYS itself
            assert unfiltered(probe, label).err != errno.ENOSYS, f"{call}: ENOSYS does not show a refusal"
    else:
        assert run.proc.returncode == SIGSYS_EXIT, run.why()
        assert run.report["verdict"] == "SV" and run.report["signal"] == signal.SIGSYS, run.why()


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
def test_probe_start_blocks_nothing(probe: Probe, policy: str):
    """A dynamically linked C program that makes no call of its own: ld.so and libc start-up
    must not hit a deliberate denial (else blocked_syscall would name the start-up's call)."""
    run = probe.run(policy)
    assert run.proc.returncode == 0 and run.report["verdict"] == "OK", run.why()
    assert run.report["protections"]["seccomp"]["policy"] == policy, run.why()
    assert run.report["blocked_syscall"] is None, run.why()


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
def test_allowed_calls_get_the_kernels_answer(probe: Probe, policy: str):
    labels = ALLOWED[policy]
    filtered = probe.run(policy, *labels)
    kernel = probe.run("none", *labels)
    assert filtered.proc.returncode == 0, filtered.why()
    assert {k: (c.ret, c.err) for k, c in filtered.calls.items()} == \
        {k: (c.ret, c.err) for k, c in kernel.calls.items()}, (filtered.why(), kernel.why())
    assert filtered.calls["allowed_getppid"].ret == 1
    assert filtered.report["blocked_syscall"] is None, filtered.why()


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
def test_clone3_gets_enosys_and_is_not_reported(probe: Probe, policy: str):
    """clone3 passes its flags in memory the filter cannot read: ENOSYS, so libc falls back to
    clone (unfiltered, clone3(NULL, 0) is EINVAL)."""
    run = probe.run(policy, "clone3")
    assert run.calls["clone3"].err == errno.ENOSYS, run.why()
    assert run.report["blocked_syscall"] is None, run.why()


def test_default_policy_applies_without_the_flag(probe: Probe):
    run = probe.run(None, "ptrace")
    assert run.report["protections"]["seccomp"]["policy"] == "default", run.why()
    assert run.calls["ptrace"].err == errno.EPERM
    assert_named(run, "ptrace")


# ----------------------------------------------------------------- protections ----

def test_protections_name_the_policy_and_its_hash(probe: Probe):
    seen = {}
    for policy in ("default", "strict", "default"):
        run = probe.run(policy)
        sc = run.report["protections"]["seccomp"]
        assert isinstance(sc, dict) and sc["policy"] == policy, run.why()
        assert isinstance(sc["hash"], str) and len(sc["hash"]) >= 16, sc
        assert seen.setdefault(policy, sc["hash"]) == sc["hash"], "the hash of a policy changed between runs"
    assert seen["default"] != seen["strict"]
    for policy, digest in seen.items():  # the hash identifies the policy `jailpy seccomp show` prints
        shown = seccomp_cli("show", policy)
        assert shown.returncode == 0 and digest.encode() in shown.stdout, (digest, shown.stdout[:400])


def test_seccomp_none_applies_no_filter(probe: Probe):
    """--seccomp none: no filter; ptrace(PTRACE_ATTACH, 1) then meets the kernel, which refuses
    it (the sandbox's PID 1 is not dumpable) without a report."""
    run = probe.run("none", "ptrace", "clone3")
    assert run.report["protections"]["seccomp"] is None, run.why()
    assert run.calls["ptrace"].ret == -1, f"the program attached to the sandbox's PID 1: {run.why()}"
    assert run.calls["clone3"].err == errno.EINVAL, run.why()  # the kernel's answer, not the filter's ENOSYS
    assert run.report["blocked_syscall"] is None and run.report.get("seccomp_log") is None, run.why()
    assert run.proc.returncode == 0 and run.report["verdict"] == "OK"


# --------------------------------------------------------------- custom policies ----

def _write_oci(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.chmod(path, 0o644)
    return path


OCI_TEST_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [
        {"names": ["kcmp", "setns"], "action": "SCMP_ACT_ERRNO"},  # errnoRet absent: EPERM (runtime-spec)
        {"names": ["pidfd_getfd"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
        # socket(AF_NETLINK, ...) only; AF_UNIX and AF_INET stay allowed
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EAFNOSUPPORT,
         "args": [{"index": 0, "value": 16, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"},
    ],
}


def test_oci_profile_behaves_as_its_rules_say(probe: Probe, tmp_path):
    prof = _write_oci(tmp_path / "test-profile.json", OCI_TEST_PROFILE)
    labels = ("kcmp", "setns", "pidfd_getfd", "socket_netlink", "allowed_socket_unix", "allowed_socket_inet",
              "process_vm_readv", "allowed_getppid")
    run = probe.run(str(prof), *labels)
    base = probe.run("none", *labels)
    c = run.calls
    assert run.proc.returncode == 0, run.why()
    assert (c["kcmp"].ret, c["kcmp"].err) == (-1, errno.EPERM), run.why()
    assert (c["setns"].ret, c["setns"].err) == (-1, errno.EPERM), run.why()
    assert (c["pidfd_getfd"].ret, c["pidfd_getfd"].err) == (-1, errno.EACCES), run.why()
    assert (c["socket_netlink"].ret, c["socket_netlink"].err) == (-1, errno.EAFNOSUPPORT), run.why()
    for allowed in ("allowed_socket_unix", "allowed_socket_inet", "process_vm_readv", "allowed_getppid"):
        assert (c[allowed].ret, c[allowed].err) == (base.calls[allowed].ret, base.calls[allowed].err), run.why()
    b = run.report["blocked_syscall"]
    assert b is not None and b["name"] in ("kcmp", "setns", "pidfd_getfd", "socket"), run.why()
    assert run.report["protections"]["seccomp"] is not None


def test_oci_kill_process_ends_the_run_with_sv(probe: Probe, tmp_path):
    prof = _write_oci(tmp_path / "kill-profile.json", OCI_TEST_PROFILE)
    run = probe.run(str(prof), "allowed_getppid", "uname", "allowed_getppid")
    assert list(run.calls) == ["allowed_getppid"], f"the program went on after the killing call: {run.why()}"
    assert run.proc.returncode == SIGSYS_EXIT, run.why()
    assert run.report["verdict"] == "SV" and run.report["exit_code"] == SIGSYS_EXIT, run.why()
    b = run.report["blocked_syscall"]
    assert b is not None and b["name"] == "uname" and b["action"] == "kill", run.why()


def _shipped_profiles() -> list[Path]:
    return sorted((REPO / "profiles" / "seccomp").glob("*.json"))


def test_at_least_one_oci_profile_is_shipped():
    assert _shipped_profiles(), "no profiles/seccomp/*.json"


# probe labels whose calls are independent of each other (none changes the process for the next)
INDEPENDENT = tuple(l for l in DENIED if l not in ("unshare_newuser", "personality_linux32", "open_tree_attr")) + (
    "allowed_getppid", "allowed_socket_unix", "allowed_socket_inet", "allowed_ioctl_tcgets")


def _oci_expectations(doc: dict, calls: dict) -> dict[str, int | None]:
    """For each probe label, the errno the profile's rules give its call, or None for "allowed"
    (the kernel's own answer).  Labels whose syscall is in a conditional rule (args, includes,
    excludes), in more than one rule, or under an action other than ALLOW/ERRNO are left out."""
    rules: dict[str, list[dict]] = {}
    for rule in doc.get("syscalls") or []:
        for name in rule.get("names") or ([rule["name"]] if "name" in rule else []):
            rules.setdefault(name, []).append(rule)
    default_errno = doc.get("defaultErrnoRet", errno.EPERM)
    expect: dict[str, int | None] = {}
    for label, call in calls.items():
        found = rules.get(call.name, [])
        if len(found) > 1 or any(r.get("args") or r.get("includes") or r.get("excludes") for r in found):
            continue
        action, ret = (found[0]["action"], found[0].get("errnoRet", errno.EPERM)) if found else \
            (doc["defaultAction"], default_errno)
        if action == "SCMP_ACT_ALLOW":
            expect[label] = None
        elif action == "SCMP_ACT_ERRNO":
            expect[label] = ret
    return expect


@pytest.mark.parametrize("path", _shipped_profiles(), ids=lambda p: p.name)
def test_shipped_oci_profile_behaves_as_its_rules_say(probe: Probe, path: Path):
    doc = json.loads(path.read_text())
    base = probe.run("none", *INDEPENDENT)
    expect = _oci_expectations(doc, base.calls)
    assert expect, f"{path.name}: no probe call has an unconditional rule"
    run = probe.run(str(path), *expect)
    assert run.proc.returncode == 0, run.why()
    for label, want in expect.items():
        got = run.calls[label]
        if want is None:
            assert (got.ret, got.err) == (base.calls[label].ret, base.calls[label].err), f"{path.name}: {got}"
        else:
            assert (got.ret, got.err) == (-1, want), f"{path.name}: {got}, want errno {want}"
    p = jail_py("print(1)", "--seccomp", str(path))
    assert p.returncode == 0 and p.stdout == b"1\n", p.stderr


@pytest.mark.parametrize("content,words", [
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [', ()),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kcmp"], "action": "SCMP_ACT_BOGUS"}]},
     ("SCMP_ACT_BOGUS",)),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["no_such_syscall_x"], "action": "SCMP_ACT_ERRNO"}]},
     ("no_such_syscall_x",)),
    ({"defaultAction": "SCMP_ACT_NOPE"}, ("SCMP_ACT_NOPE",)),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_WHAT"}]}]},
     ("SCMP_CMP_WHAT",)),
], ids=["bad-json", "unknown-action", "unknown-syscall", "unknown-default-action", "unknown-op"])
def test_malformed_oci_profile_is_refused_with_125(tmp_path, content, words):
    prof = _write_oci(tmp_path / "broken-profile.json", content)
    p = jail("--seccomp", str(prof), "--", "sh", "-c", "echo PROGRAM-RAN")
    err = assert_one_line_error(p, *words)
    if not words:  # bad JSON: the line must say which file, or that it is JSON that is broken
        assert "broken-profile.json" in err or "json" in err.lower(), err


def test_unknown_policy_name_is_refused_with_125():
    p = jail("--seccomp", "no-such-seccomp-policy", "--", "sh", "-c", "echo PROGRAM-RAN")
    assert_one_line_error(p, "no-such-seccomp-policy")


def test_missing_policy_path_is_refused_with_125(tmp_path):
    p = jail("--seccomp", str(tmp_path / "absent.json"), "--", "sh", "-c", "echo PROGRAM-RAN")
    assert_one_line_error(p, "absent.json")


# ----------------------------------------------------------------- --seccomp-log ----

LOGGED = ("setns", "pidfd_getfd")  # both EBADF from the kernel when they get through


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
def test_seccomp_log_lets_calls_through_and_lists_them(probe: Probe, policy: str):
    run = probe.run(policy, *LOGGED, "allowed_getppid", extra=("--seccomp-log",))
    base = probe.run("none", *LOGGED, "allowed_getppid")
    assert run.proc.returncode == 0 and run.report["verdict"] == "OK", run.why()
    for label in LOGGED:
        assert (run.calls[label].ret, run.calls[label].err) == (base.calls[label].ret, base.calls[label].err) \
               == (-1, errno.EBADF), run.why()
    log = run.report["seccomp_log"]
    assert isinstance(log, list), run.why()
    names = {e["name"] for e in log}
    assert set(LOGGED) <= names, run.why()
    for e in log:
        assert {"name", "nr", "args", "text"} <= set(e), e


def test_seccomp_log_prints_the_list_on_stderr_at_the_end(probe: Probe):
    p = jail("--seccomp-log", "--ro-bind", str(probe.dir), "--", str(probe.path), *LOGGED)
    assert p.returncode == 0, p.stderr
    assert [line.split()[4] for line in p.stdout.decode().splitlines()] == [str(errno.EBADF)] * 2
    err = p.stderr.decode()
    for name in LOGGED:
        assert name in err, f"{name} not listed on stderr: {err!r}"


def test_without_seccomp_log_the_report_has_no_log(probe: Probe):
    run = probe.run("default", "setns")
    assert run.report["seccomp_log"] is None, run.why()


# ---------------------------------------------------------- kill rules (TOML) ----

def test_kill_rule_ends_the_run_with_sv_and_names_the_call(probe: Probe, tmp_path):
    pol = write_kill_policy(tmp_path, "uname")
    run = probe.run(str(pol), "allowed_getppid", "uname", "allowed_getppid")
    assert list(run.calls) == ["allowed_getppid"], f"the program went on after the killing call: {run.why()}"
    assert run.proc.returncode == SIGSYS_EXIT, run.why()
    assert run.report["verdict"] == "SV" and run.report["exit_code"] == SIGSYS_EXIT, run.why()
    b = assert_named(run, "uname", name="uname", action="kill")
    assert b["nr"] == 63 and b["args"][0] == 1, b


def test_kill_rule_leaves_other_calls_alone(probe: Probe, tmp_path):
    pol = write_kill_policy(tmp_path, "uname")
    run = probe.run(str(pol), "allowed_getppid", "allowed_socket_unix")
    assert run.proc.returncode == 0 and run.report["verdict"] == "OK", run.why()
    assert run.report["blocked_syscall"] is None


def test_custom_policy_keeps_its_includes_and_its_own_errno(probe: Probe, tmp_path):
    """The included default still denies ptrace (EPERM); the file's own rule answers EACCES."""
    pol = write_kill_policy(tmp_path, "uname", deny_eacces="pidfd_getfd")
    run = probe.run(str(pol), "pidfd_getfd")
    assert (run.calls["pidfd_getfd"].ret, run.calls["pidfd_getfd"].err) == (-1, errno.EACCES), run.why()
    assert_named(run, "pidfd_getfd", err=errno.EACCES)
    run = probe.run(str(pol), "ptrace")
    assert run.calls["ptrace"].err == errno.EPERM, run.why()
    assert_named(run, "ptrace")


def test_a_policy_can_allow_netlink(probe: Probe, tmp_path):
    """Netlink is denied unless a policy asks: this one replaces default's socket rule."""
    pol = tmp_path / "netlink.toml"
    pol.write_text('include = ["default"]\n\n[[rules]]\ngroup = "sockets"\nwhy = "this program reads routes"\n'
                   'action = "deny"\nsyscalls = ["socket"]\n'
                   'when = "arg0 not in {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK}"\n')
    os.chmod(pol, 0o644)
    run = probe.run(str(pol), "socket_netlink", "socket_packet")
    assert run.calls["socket_netlink"].ret >= 0, run.why()
    assert run.calls["socket_packet"].err == errno.EPERM, run.why()
    assert_named(run, "socket_packet")


def test_toml_policy_with_unknown_syscall_is_refused_with_125(tmp_path):
    pol = write_kill_policy(tmp_path, "no_such_syscall_y")
    p = jail("--seccomp", str(pol), "--", "sh", "-c", "echo PROGRAM-RAN")
    assert_one_line_error(p, "no_such_syscall_y")


# ----------------------------------------------------- jailpy seccomp show|compile ----

# a deny-list policy shows what it denies, an allow-list policy what it allows; both show clone3 (ENOSYS)
SHOWN = {"default": (b"ptrace", b"clone3", b"kcmp"), "strict": (b"clone3", b"write", b"exit_group")}


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
def test_seccomp_show_prints_the_rules(policy: str):
    p = seccomp_cli("show", policy)
    assert p.returncode == 0, p.stderr
    for word in SHOWN[policy]:
        assert word in p.stdout, (word, p.stdout[:3000])


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
def test_seccomp_show_json_is_valid_json(policy: str):
    p = seccomp_cli("show", policy, "--json")
    assert p.returncode == 0, p.stderr
    text = json.dumps(json.loads(p.stdout))
    for word in SHOWN[policy]:
        assert word.decode() in text, word


def test_seccomp_show_of_an_oci_profile_path(tmp_path):
    prof = _write_oci(tmp_path / "show-profile.json", OCI_TEST_PROFILE)
    p = seccomp_cli("show", str(prof))
    assert p.returncode == 0, p.stderr
    assert b"pidfd_getfd" in p.stdout and b"uname" in p.stdout


@pytest.mark.parametrize("policy", SHIPPED_POLICIES)
def test_seccomp_compile_writes_bpf(tmp_path, policy: str):
    out = tmp_path / f"{policy}.bpf"
    p = seccomp_cli("compile", policy, "-o", str(out))
    assert p.returncode == 0, p.stderr
    data = out.read_bytes()
    assert len(data) > 0 and len(data) % 8 == 0, len(data)
    assert len(data) // 8 <= 4096, "more than BPF_MAXINSNS instructions"
    # struct sock_filter {u16 code; u8 jt, jf; u32 k}: the program starts by loading
    # seccomp_data.arch (BPF_LD|BPF_W|BPF_ABS at offset 4)
    code, _jt, _jf, k = struct.unpack("<HBBI", data[:8])
    assert (code, k) == (0x20, 4), (hex(code), k)
    # and ends in a return (class BPF_RET), as the kernel requires (bpf_check_classic)
    assert struct.unpack("<HBBI", data[-8:])[0] & 0x07 == 0x06


def test_seccomp_compile_is_deterministic(tmp_path):
    a, b = tmp_path / "a.bpf", tmp_path / "b.bpf"
    assert seccomp_cli("compile", "strict", "-o", str(a)).returncode == 0
    assert seccomp_cli("compile", "strict", "-o", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("cmd", [("show", "no-such-seccomp-policy"),
                                 ("compile", "no-such-seccomp-policy", "-o", "/dev/null")])
def test_seccomp_cli_bad_name_is_125(cmd):
    p = seccomp_cli(*cmd)
    assert_one_line_error(p, "no-such-seccomp-policy")
