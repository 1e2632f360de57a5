"""The seccomp cases of ../shared/cases/field-reports.md (F15, F16, F18), one test each per shipped
policy, through the real CLI."""

from __future__ import annotations

import pytest

from seccomp_helpers import SHIPPED_POLICIES, Programs, assert_ran, blocked_summary, programs, run_under

assert programs  # a pytest fixture, used by name

parametrize_policy = pytest.mark.parametrize("policy", SHIPPED_POLICIES)


def _blocked_is_named(report: dict) -> None:
    """F15: "if a syscall is blocked, the report names it"."""
    b = report["blocked_syscall"]
    if b is not None:
        assert isinstance(b.get("name"), str) and b["name"] and b["text"].startswith(b["name"] + "("), b


@parametrize_policy
def test_F15_python_c_and_urandom_stat_run(programs: Programs, policy: str):
    p, rep = run_under(policy, ["python3", "-c", "print(1)"])
    assert_ran(p, rep, policy, b"1\n")
    _blocked_is_named(rep)
    hello = programs.get("hello_c")
    p, rep = run_under(policy, [str(hello)], "--ro-bind", str(programs.dir))
    assert_ran(p, rep, policy, b"hello from C, 0 args, x\n")
    _blocked_is_named(rep)
    p, rep = run_under(policy, ["python3", "-c", 'import os; os.urandom(8); os.stat("/"); print("ok")'])
    assert_ran(p, rep, policy, b"ok\n")
    _blocked_is_named(rep)


@parametrize_policy
def test_F16_threading_prints_ok(policy: str):
    """rseq, clone3 and friends are allowed or ENOSYS, never a kill."""
    p, rep = run_under(policy, ["python3", "-c",
                                'import threading; t=threading.Thread(target=print,args=("ok",)); t.start(); t.join()'])
    assert_ran(p, rep, policy, b"ok\n")
    assert rep["verdict"] != "SV" and p.returncode != 159, blocked_summary(rep)


@parametrize_policy
def test_F18_access_x_ok_and_bash_test_x(policy: str):
    """faccessat2 is newer than some policies: ENOSYS (or allowed) so libc falls back."""
    p, rep = run_under(policy, ["python3", "-c",
                                'import os; print(os.access("/bin/sh", os.X_OK, effective_ids=True))'])
    assert_ran(p, rep, policy, b"True\n")
    p, rep = run_under(policy, ["bash", "-c", "[ -x /bin/sh ] && echo yes"])
    assert_ran(p, rep, policy, b"yes\n")
