"""Interactive problems: the solution and the interactor in two sandboxes, connected by pipes.

The solution's stdout is the interactor's stdin and the interactor's stdout the solution's stdin
(two pipe(2)s made here; each sandbox gets its ends as its stdio).  Both run at once, each with
its own limits, from two threads.  This process holds its copies of the four ends while the two
start, and closes the ends of a side as soon as that side's run is over, so the other side sees
EOF (reading) or EPIPE (writing) then and does not wait for its own limit.

The verdict (docs/judge.md): a limit the solution hit (TLE, MLE, SV, OLE) first; else the
interactor's exit status (testlib-style: 0 accepted, 1 or 2 wrong answer, else XX), if it is
not 0; else the solution's own end (RE, SIG), else AC.  An interactor that was itself stopped by
a limit or a signal is XX.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from ..errors import JailpyError
from ..policy import parse_size
from ..stdio import DEVNULL, PIPE
from . import checkers, languages
from .report import TestReport

if TYPE_CHECKING:
    from .languages import Language
    from .problem import TestCase
    from .runner import Judge

INTERACTOR_STDERR = 4096


def run_interactive(judge: "Judge", test: "TestCase", lang: "Language", box: str, interactor: tuple) -> TestReport:
    """Run one test of an interactive problem (see the module docstring); returns its TestReport.
    Raises JailpyError when a sandbox cannot be built."""
    from .runner import _text, test_report

    spec = judge.problem.spec
    ibox, ilang, _ = interactor
    int_pol = judge._policy(spec.interactor.limits, ilang, ibox, False, problem=True, output=False)
    sol_argv = languages.run_argv(lang, parse_size(spec.limits.memory))
    int_argv = languages.run_argv(ilang, parse_size(spec.interactor.limits.memory)) + [
        judge.in_problem(test.input), "/tmp/tout"] + ([judge.in_problem(test.answer)] if test.answer else [])
    to_int_r, to_int_w = os.pipe2(os.O_CLOEXEC)  # solution's stdout -> interactor's stdin
    to_sol_r, to_sol_w = os.pipe2(os.O_CLOEXEC)  # interactor's stdout -> solution's stdin
    open_fds = {to_int_r, to_int_w, to_sol_r, to_sol_w}
    lock = threading.Lock()

    def close(*fds: int) -> None:
        with lock:
            for fd in fds:
                if fd in open_fds:
                    open_fds.discard(fd)
                    os.close(fd)

    results: dict[str, object] = {}

    def side(name: str, pol, argv, stdin: int, stdout: int, stderr) -> None:
        try:
            slot = judge.pool.slot(pol) if pol is not None else judge.solution_slot(spec.limits, lang, box, output=False)
            with slot as sb:
                results[name] = sb.run(argv, stdin=stdin, stdout=stdout, stderr=stderr)
        except BaseException as e:  # noqa: BLE001 - reported below, from the caller's thread
            results[name] = e
        finally:
            close(stdin, stdout)  # the other side now sees EOF or EPIPE

    other = threading.Thread(target=side, name="jailpy-interactor",
                             args=("interactor", int_pol, int_argv, to_int_r, to_sol_w, PIPE))
    other.start()
    try:
        side("solution", None, sol_argv, to_sol_r, to_int_w, DEVNULL)
    finally:
        other.join()
        close(*list(open_fds))
    for name in ("solution", "interactor"):
        if isinstance(results.get(name), BaseException):
            e = results[name]
            if isinstance(e, JailpyError):
                raise e
            raise RuntimeError(f"the {name}'s run failed: {e}") from e
    sol, inter = results["solution"], results["interactor"]
    t = test_report(test.name, sol)
    imsg = _text(inter.stderr or b"", INTERACTOR_STDERR).strip() or None
    t.checker_message = imsg
    if t.verdict in ("TLE", "MLE", "OLE", "SV"):
        return t
    if inter.verdict.value not in ("OK", "RE"):
        t.verdict, t.error = "XX", f"the interactor was stopped: {inter.verdict.value}"
        return t
    iv = checkers.testlib_verdict(inter.exit_code)
    if iv != "AC":
        t.verdict = iv
        if iv == "XX":
            t.error = f"the interactor failed (exit status {inter.exit_code})"
        return t
    return t  # the solution's own end: AC, RE or SIG
