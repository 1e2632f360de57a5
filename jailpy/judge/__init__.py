"""Judging submissions against problems: ``jailpy judge`` and its Python API.

    import jailpy
    report = jailpy.judge("problems/aplusb", "sol.py")
    report.verdict, [(t.name, t.verdict, t.cpu_time_ms) for t in report.tests]

:class:`Judge` keeps its sandboxes warm between submissions (a :class:`jailpy.slots.SlotPool`);
:func:`judge` is one submission.  A problem directory is documented in docs/judge.md; the report
(:class:`Report`) is a versioned JSON document.  Only the standard library, msgspec and jailpy's
public API: no server dependency.
"""

from __future__ import annotations

from .problem import Problem, load as load_problem
from .report import SCHEMA_VERSION, VERDICTS, Report, TestReport
from .runner import Judge, judge

__all__ = ["Judge", "Problem", "Report", "SCHEMA_VERSION", "TestReport", "VERDICTS", "judge", "load_problem"]


class _CallableModule(__import__("types").ModuleType):
    """``jailpy.judge`` is this package once imported (Python sets the attribute), so the package
    itself is callable: ``jailpy.judge(problem, source, ...)`` is :func:`judge`."""

    def __call__(self, *args, **kwargs) -> Report:
        return judge(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
