"""The judge's verdicts and its report: one table from jailpy's Result verdict to the judge's,
and the versioned JSON document ``jailpy judge --json`` prints (docs/judge.md).

``schema_version`` changes whenever a key changes meaning or disappears; keys may be added
without a change.  Times are milliseconds (int), sizes bytes (int).
"""

from __future__ import annotations

import msgspec

SCHEMA_VERSION = 1

VERDICTS = ("AC", "WA", "TLE", "MLE", "OLE", "RE", "SIG", "SV", "CE", "XX")
"""AC accepted, WA wrong answer, TLE time limit (CPU or wall clock), MLE memory limit, OLE output
limit, RE runtime error (a non-zero exit status), SIG killed by a signal jailpy did not send, SV
security violation (a seccomp rule killed it), CE compile error, XX the judge failed (checker or
interactor failure, a sandbox that could not be built)."""

FROM_RESULT = {
    "OK": None,   # the checker decides: AC or WA (XX when the checker itself fails)
    "RE": "RE",
    "SIG": "SIG",
    "TLE": "TLE",
    "WLE": "TLE",
    "MLE": "MLE",
    "OLE": "OLE",
    "SV": "SV",
    "XX": "XX",
}
"""jailpy's Result verdict -> the judge's verdict, the one table (docs/judge.md "Verdicts").
WLE (wall clock) is TLE for a judge: a program that sleeps or waits past the wall limit did not
finish in time.  A Java program that ends with java.lang.OutOfMemoryError (its heap is set to 3/4
of the memory limit, so the JVM reports it before the cgroup's OOM killer would) is MLE."""


class TestReport(msgspec.Struct, kw_only=True, omit_defaults=False):
    """One test's outcome.  ``memory_peak_bytes``: what the judge reports as memory, the peak of
    the sandbox's cgroup less the page cache of files the run read (docs/judge.md, "What memory
    means"); ``cgroup_memory_peak_bytes``: the cgroup's own peak (where the limit is enforced)."""

    __test__ = False  # not a pytest class
    name: str
    verdict: str
    cpu_time_ms: int
    wall_time_ms: int
    memory_peak_bytes: int | None
    cgroup_memory_peak_bytes: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    run_verdict: str | None = None
    """jailpy's own Result verdict of the solution's run (OK, RE, TLE, WLE, ...)."""
    checker_message: str | None = None
    error: str | None = None
    stderr: str | None = None
    """The first 4 KiB of what the program wrote on stderr."""


class CompileReport(msgspec.Struct, kw_only=True):
    verdict: str
    """OK or CE."""
    message: str = ""
    """What the compiler printed (stderr, then stdout), at most 64 KiB."""
    cpu_time_ms: int = 0
    wall_time_ms: int = 0
    exit_code: int | None = None


class Report(msgspec.Struct, kw_only=True):
    """A submission's outcome: ``verdict`` is the first failing test's (in the problem's order),
    CE when it did not compile, else AC."""

    schema_version: int = SCHEMA_VERSION
    verdict: str
    problem: str
    language: str
    compile: CompileReport | None = None
    tests: list[TestReport] = []
    skipped: int = 0
    """Tests not run (--stop-on-first-failure after a failure)."""
    passed: int = 0
    max_cpu_time_ms: int = 0
    max_memory_peak_bytes: int = 0
    jailpy_version: str = ""

    def to_dict(self) -> dict:
        return msgspec.to_builtins(self)

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)


def overall(tests: list[TestReport]) -> str:
    """The first failing test's verdict, else AC."""
    return next((t.verdict for t in tests if t.verdict != "AC"), "AC")
