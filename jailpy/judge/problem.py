"""A problem directory: ``problem.toml`` (documented in docs/judge.md) and its tests.

The smallest problem.toml that works::

    [limits]
    cpu_time = 1.0
    memory = "256M"
    [checker]
    kind = "tokens"

with the tests found as ``tests/NAME.in`` / ``tests/NAME.out`` (sorted by NAME, numbers in
numeric order).  Everything else has a default.  :func:`load` reads and checks it, raising
PolicyError with one line naming the file and the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

from ..errors import PolicyError
from ..policy import parse_size, read_toml

MAX_TESTS = 10_000


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Limits of one run: ``cpu_time`` and ``wall_time`` in seconds (wall default: 2 x cpu + 1),
    ``memory`` and ``output`` sizes (``"256M"`` or bytes), ``pids`` (processes and threads;
    default: the language's)."""

    cpu_time: float = 1.0
    wall_time: float | None = None
    memory: str | int = "256M"
    output: str | int = "64M"
    pids: int | None = None

    def wall(self) -> float:
        return self.wall_time if self.wall_time is not None else 2 * self.cpu_time + 1.0


class Checker(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How an output is judged: ``exact`` (identical bytes), ``tokens`` (the same whitespace-separated
    tokens), ``float`` (tokens; numbers equal within ``abs_tol`` or ``rel_tol``), ``custom``
    (``program``, a source file in the problem directory, run testlib-style: ``checker INPUT OUTPUT
    ANSWER``, exit 0 accepted, 1 or 2 wrong answer, anything else a checker failure)."""

    kind: str = "tokens"
    abs_tol: float = 1e-6
    rel_tol: float = 1e-6
    program: str | None = None
    lang: str | None = None
    limits: Limits = msgspec.field(default_factory=lambda: Limits(cpu_time=5.0, memory="512M"))


class Interactor(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An interactive problem's interactor: ``program`` (a source file in the problem directory) and
    its ``lang``; it runs as ``interactor INPUT OUTPUT ANSWER`` with its stdin the solution's stdout
    and its stdout the solution's stdin; exit 0 accepted, 1 or 2 wrong answer, else a failure."""

    program: str
    lang: str | None = None
    limits: Limits = msgspec.field(default_factory=lambda: Limits(cpu_time=5.0, memory="256M"))


class CompileLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The compile step's limits (it runs in a sandbox of its own)."""

    cpu_time: float = 30.0
    wall_time: float = 60.0
    memory: str | int = "1G"
    output: str | int = "1M"


class TestCase(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One test: ``input`` and ``answer`` paths (relative to the problem directory)."""

    __test__ = False  # not a pytest class
    name: str
    input: str
    answer: str | None = None


class ProblemFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str | None = None
    limits: Limits = msgspec.field(default_factory=Limits)
    compile: CompileLimits = msgspec.field(default_factory=CompileLimits)
    checker: Checker = msgspec.field(default_factory=Checker)
    interactor: Interactor | None = None
    tests: list[TestCase] = []
    languages: dict[str, dict] = {}
    seccomp: str = "default"


class Problem:
    """A loaded problem: ``dir`` (absolute), ``spec`` (the parsed ProblemFile), ``tests``
    (TestCase with absolute paths, in order)."""

    def __init__(self, dir: Path, spec: ProblemFile, tests: list[TestCase]) -> None:
        self.dir, self.spec, self.tests = dir, spec, tests
        self.name = spec.name or dir.name


_KINDS = ("exact", "tokens", "float", "custom")


def field_error(msg: str) -> tuple[str, str]:
    """(the field's path, what is wrong) from a msgspec ValidationError's message: ``Expected
    `int`, got `str` - at `$.cmd[0].cpu_time_ms``` -> ("cmd[0].cpu_time_ms", "Expected ...");
    a missing or unknown field is named itself (``cmd[0].args``, "required" / "unknown key")."""
    m = re.match(r"(.*?) - at `\$(.*)`$", msg, re.S)
    field, what = (m.group(2).lstrip("."), m.group(1)) if m else ("", msg)
    k = re.fullmatch(r"Object (missing required|contains unknown) field `(.*)`", what, re.S)
    if k:
        name = f"{field}.{k.group(2)}" if field else k.group(2)
        return name, "required" if k.group(1).startswith("missing") else "unknown key"
    return field, what


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _inside(base: Path, rel: str, what: str, source: str) -> Path:
    p = (base / rel).resolve()
    if not (p == base or str(p).startswith(str(base) + os.sep)):
        raise PolicyError(f"{source}: {what}: {rel!r} is outside the problem directory")
    if not p.is_file():
        raise PolicyError(f"{source}: {what}: file not found: {rel}")
    return p


def load(problem_dir: str | os.PathLike) -> Problem:
    """Read ``PROBLEM_DIR/problem.toml`` and find its tests.  Raises PolicyError (one line naming
    the file and the key) for a missing directory or file, an unknown key, a bad value, a test or
    program outside the directory, or no tests at all."""
    d = Path(problem_dir)
    if not d.is_dir():
        raise PolicyError(f"problem directory not found: {problem_dir}")
    d = d.resolve()
    path = d / "problem.toml"
    if not path.is_file():
        raise PolicyError(f"{d}: no problem.toml")
    raw = read_toml(path)
    try:
        spec = msgspec.convert(raw, ProblemFile, strict=False)
    except msgspec.ValidationError as e:
        field, what = field_error(str(e))
        raise PolicyError(f"{path}: {field + ': ' if field else ''}{what}") from None
    _check(spec, path, d)
    tests = _tests(spec, path, d)
    return Problem(d, spec, tests)


def _check_limits(lim: Limits | CompileLimits, key: str, path: Path) -> None:
    def bad(field: str, why: str) -> PolicyError:
        return PolicyError(f"{path}: {key}.{field}: {why}")

    if not 0 < lim.cpu_time <= 3600:
        raise bad("cpu_time", f"must be more than 0 and at most 3600 seconds, got {lim.cpu_time}")
    if lim.wall_time is not None and not 0 < lim.wall_time <= 7200:
        raise bad("wall_time", f"must be more than 0 and at most 7200 seconds, got {lim.wall_time}")
    for field in ("memory", "output"):
        try:
            n = parse_size(getattr(lim, field))
        except PolicyError as e:
            raise bad(field, str(e).partition(": ")[2] or str(e)) from None
        if field == "memory" and n < 16 << 20:
            raise bad(field, f"at least 16M is needed to start a program, got {getattr(lim, field)!r}")
    pids = getattr(lim, "pids", None)
    if pids is not None and not 1 <= pids <= 4096:
        raise bad("pids", f"must be between 1 and 4096, got {pids}")


def _check(spec: ProblemFile, path: Path, d: Path) -> None:
    _check_limits(spec.limits, "limits", path)
    _check_limits(spec.compile, "compile", path)
    c = spec.checker
    if c.kind not in _KINDS:
        raise PolicyError(f"{path}: checker.kind: expected one of {', '.join(_KINDS)}, got {c.kind!r}")
    if c.abs_tol < 0 or c.rel_tol < 0:
        raise PolicyError(f"{path}: checker: tolerances must be 0 or more")
    if c.kind == "custom":
        if not c.program:
            raise PolicyError(f"{path}: checker.program: a custom checker needs a program (a source file)")
        _inside(d, c.program, "checker.program", str(path))
        _check_limits(c.limits, "checker.limits", path)
    if spec.interactor is not None:
        _inside(d, spec.interactor.program, "interactor.program", str(path))
        _check_limits(spec.interactor.limits, "interactor.limits", path)
    if spec.seccomp not in ("default", "strict"):
        raise PolicyError(f"{path}: seccomp: expected default or strict, got {spec.seccomp!r}")


def _tests(spec: ProblemFile, path: Path, d: Path) -> list[TestCase]:
    tests: list[TestCase] = []
    need_answer = spec.interactor is None
    if spec.tests:
        seen = set()
        for i, t in enumerate(spec.tests):
            if t.name in seen:
                raise PolicyError(f"{path}: tests[{i}].name: {t.name!r} given twice")
            seen.add(t.name)
            inp = _inside(d, t.input, f"tests[{i}].input", str(path))
            ans = _inside(d, t.answer, f"tests[{i}].answer", str(path)) if t.answer else None
            if ans is None and need_answer:
                raise PolicyError(f"{path}: tests[{i}].answer: missing (only interactive problems may leave it out)")
            tests.append(TestCase(name=t.name, input=str(inp), answer=str(ans) if ans else None))
    else:
        tdir = d / "tests"
        if not tdir.is_dir():
            raise PolicyError(f"{path}: no [[tests]] list and no tests/ directory")
        for f in sorted(tdir.glob("*.in"), key=lambda p: _natural(p.stem)):
            ans = f.with_suffix(".out")
            if not ans.is_file():
                if need_answer:
                    raise PolicyError(f"{d}: tests/{f.name} has no tests/{ans.name}")
                ans = None
            tests.append(TestCase(name=f.stem, input=str(f), answer=str(ans) if ans else None))
    if not tests:
        raise PolicyError(f"{path}: no tests (tests/NAME.in with tests/NAME.out, or a [[tests]] list)")
    if len(tests) > MAX_TESTS:
        raise PolicyError(f"{path}: {len(tests)} tests: at most {MAX_TESTS}")
    return tests
