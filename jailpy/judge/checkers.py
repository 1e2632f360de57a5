"""Built-in checkers: compare a program's output with the answer.  Pure functions over bytes.

Each returns ``(accepted, message)``; the message says where the first difference is (for the
report's ``checker_message``).  Custom checkers (testlib-style programs) are run by
:mod:`jailpy.judge.runner` in a sandbox of their own; :func:`testlib_verdict` reads their exit status.
"""

from __future__ import annotations

import math

TESTLIB_EXIT = {0: "AC", 1: "WA", 2: "WA", 4: "WA"}
"""testlib's exit codes: 0 _ok, 1 _wa, 2 _pe (presentation error: judged WA here), 3 _fail (the
checker failed: XX), 4 _dirt (WA), 7 _points (not supported: XX)."""


def _show(b: bytes, limit: int = 40) -> str:
    s = b[:limit].decode("utf-8", "replace")
    return repr(s + ("..." if len(b) > limit else ""))


def exact(output: bytes, answer: bytes) -> tuple[bool, str]:
    """The same bytes."""
    if output == answer:
        return True, "identical"
    n = next((i for i, (a, b) in enumerate(zip(output, answer)) if a != b), min(len(output), len(answer)))
    line = output.count(b"\n", 0, n) + 1
    return False, f"differs at byte {n} (line {line}): got {_show(output[n:])}, expected {_show(answer[n:])}"


def tokens(output: bytes, answer: bytes) -> tuple[bool, str]:
    """The same whitespace-separated tokens (spaces, tabs, newlines and their number do not matter)."""
    got, want = output.split(), answer.split()
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return False, f"token {i + 1}: got {_show(a)}, expected {_show(b)}"
    if len(got) != len(want):
        return False, f"{len(got)} tokens, expected {len(want)}"
    return True, f"{len(got)} tokens"


def _num(t: bytes) -> float | None:
    try:
        v = float(t)
    except ValueError:
        return None
    return v


def floats(output: bytes, answer: bytes, abs_tol: float, rel_tol: float) -> tuple[bool, str]:
    """Tokens as :func:`tokens`, except that where the answer's token is a number the output's must
    be a number within ``abs_tol`` or ``rel_tol`` (relative to the answer) of it.  NaN and
    infinities must match exactly."""
    got, want = output.split(), answer.split()
    if len(got) != len(want):
        return False, f"{len(got)} tokens, expected {len(want)}"
    worst = 0.0
    for i, (a, b) in enumerate(zip(got, want)):
        x, y = _num(a), _num(b)
        if y is None:
            if a != b:
                return False, f"token {i + 1}: got {_show(a)}, expected {_show(b)}"
            continue
        if x is None:
            return False, f"token {i + 1}: got {_show(a)}, expected the number {_show(b)}"
        if math.isnan(y) or math.isinf(y) or math.isnan(x) or math.isinf(x):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False, f"token {i + 1}: got {_show(a)}, expected {_show(b)}"
            continue
        err = abs(x - y)
        if err > abs_tol and err > rel_tol * abs(y):
            return False, (f"token {i + 1}: got {_show(a)}, expected {_show(b)} (difference {err:.3g} over "
                           f"abs_tol {abs_tol:g} and rel_tol {rel_tol:g})")
        worst = max(worst, err)
    return True, f"{len(got)} tokens, largest difference {worst:.3g}"


def builtin(kind: str, output: bytes, answer: bytes, abs_tol: float = 1e-6, rel_tol: float = 1e-6) -> tuple[bool, str]:
    """Run the built-in checker ``kind`` (exact, tokens, float)."""
    if kind == "exact":
        return exact(output, answer)
    if kind == "tokens":
        return tokens(output, answer)
    if kind == "float":
        return floats(output, answer, abs_tol, rel_tol)
    raise ValueError(f"not a built-in checker: {kind}")


def testlib_verdict(exit_code: int) -> str:
    """The verdict (AC, WA, XX) a testlib-style checker or interactor gave by its exit status."""
    return TESTLIB_EXIT.get(exit_code, "XX")
