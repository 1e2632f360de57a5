"""``jailpy judge``, ``jailpy serve`` and ``jailpy worker``: parse, call the API, print.

Registered in jailpy/cli.py.  Nothing here is imported by ``jailpy exec``'s start-up beyond
typer (already loaded): the judge and the service are imported when their command runs.

``jailpy judge`` exits 0 when the submission is accepted (AC), 1 for any other verdict, 125 for
jailpy's own errors (a bad problem directory, an unknown language, a sandbox that cannot be built).
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

STYLE = {"AC": "green", "WA": "red", "CE": "yellow", "XX": "bold magenta"}


def judge_command(
    problem_dir: Annotated[str, typer.Argument(metavar="PROBLEM_DIR", help="A directory with a problem.toml.")],
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="The submission's source file.")],
    lang: Annotated[Optional[str], typer.Option("--lang", "-l", metavar="LANG",
        help="c, cpp, python, java, go or node (default: from SOURCE's extension).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", metavar="N", help="Run N tests at once.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON (docs/judge.md) instead of a table.")] = False,
    stop: Annotated[bool, typer.Option("--stop-on-first-failure", help="Stop at the first test that fails.")] = False,
) -> None:
    """Compile SOURCE and run it on every test of PROBLEM_DIR in a sandbox; print a verdict per test.

    Exit status: 0 accepted (AC), 1 any other verdict, 125 jailpy's own error."""
    from .judge import Judge

    with Judge(problem_dir, jobs=jobs) as j:
        total = len(j.problem.tests)
        if json_out or not sys.stderr.isatty():
            report = j.judge(source, lang, stop_on_first_failure=stop)
        else:
            report = _with_progress(j, source, lang, stop, total)
    if json_out:
        sys.stdout.buffer.write(report.to_json() + b"\n")
    else:
        _print_table(report)
    raise typer.Exit(0 if report.verdict == "AC" else 1)


def _with_progress(j, source: str, lang: str | None, stop: bool, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("compiling", total=total)

        def progress(t, done: int, n: int) -> None:
            bar.update(task, completed=done, description=f"test {t.name}: {t.verdict}")

        return j.judge(source, lang, stop_on_first_failure=stop, progress=progress)


def _print_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    if report.compile is not None and report.compile.verdict == "CE":
        con.print("[yellow]compile error[/yellow]")
        con.print(report.compile.message.rstrip(), markup=False)
    if report.tests:
        table = Table(title=f"{report.problem} ({report.language})")
        for col in ("test", "verdict", "cpu ms", "wall ms", "memory", "detail"):
            table.add_column(col, justify="right" if col in ("cpu ms", "wall ms", "memory") else "left")
        for t in report.tests:
            mem = f"{t.memory_peak_bytes / (1 << 20):.1f} MiB" if t.memory_peak_bytes else "-"
            detail = t.error or t.checker_message or ""
            v = t.verdict
            table.add_row(t.name, f"[{STYLE.get(v, 'red')}]{v}[/]", str(t.cpu_time_ms), str(t.wall_time_ms), mem,
                          detail[:60])
        con.print(table)
    extra = f", {report.skipped} not run" if report.skipped and report.tests else ""
    con.print(f"verdict: [{STYLE.get(report.verdict, 'red')}]{report.verdict}[/] "
              f"({report.passed}/{len(report.tests)} passed{extra}; max {report.max_cpu_time_ms} ms, "
              f"{report.max_memory_peak_bytes / (1 << 20):.1f} MiB)")
