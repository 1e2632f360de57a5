"""jailpy judge on the problem set in tests/judge/ (issue 14, part 1): real compilers, real sandboxes.

Every solution file is named for the verdict it must get: ``tests/judge/solutions/PROBLEM/VERDICT[_what].EXT``.
The problems cover C, C++, Python, Java (and Go and Node for A+B), an interactive one (guess), a float
checker (mean), a custom checker (split) and a checker that fails (broken: XX).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TIMEOUT
from limits_helpers import NEEDS_CGROUP

import jailpy
from jailpy.errors import PolicyError
from jailpy.judge import Judge, load_problem
from jailpy.judge import checkers

ROOT = REPO / "tests" / "judge"
PROBLEMS = ROOT / "problems"
SOLUTIONS = sorted(p for p in (ROOT / "solutions").glob("*/*") if p.is_file())
TOOLS = {".java": "javac", ".go": "go", ".js": "node", ".c": "gcc", ".cpp": "g++"}

pytestmark = NEEDS_CGROUP


def _expected(path: Path) -> str:
    return path.stem.split("_")[0]


@pytest.fixture(scope="module")
def judges():
    made: dict[str, Judge] = {}

    def get(problem: str) -> Judge:
        if problem not in made:
            made[problem] = Judge(PROBLEMS / problem, jobs=2)
        return made[problem]

    yield get
    for j in made.values():
        j.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_solution_gets_its_verdict(judges, solution):
    tool = TOOLS.get(solution.suffix)
    if tool and not shutil.which(tool):
        pytest.skip(f"{tool} not installed")
    report = judges(solution.parent.name).judge(solution)
    want = _expected(solution)
    assert report.verdict == want, report.to_json().decode()[:3000]
    if want == "CE":
        assert report.tests == [] and report.compile.verdict == "CE" and report.compile.message.strip()
    else:
        assert report.tests, "no test ran"
        first_bad = next((t for t in report.tests if t.verdict != "AC"), None)
        assert (first_bad.verdict if first_bad else "AC") == want
        for t in report.tests:
            assert t.cpu_time_ms >= 0 and t.wall_time_ms >= 0
            assert t.memory_peak_bytes is None or t.memory_peak_bytes > 0


def test_verdict_table_is_complete():
    """Every jailpy Result verdict maps to a judge verdict (the one documented table)."""
    from jailpy.judge.report import FROM_RESULT, VERDICTS

    assert set(FROM_RESULT) == {v.value for v in jailpy.Verdict}
    assert all(v is None or v in VERDICTS for v in FROM_RESULT.values())
    assert FROM_RESULT["WLE"] == "TLE" and FROM_RESULT["SV"] == "SV" and FROM_RESULT["SIG"] == "SIG"


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jailpy", "judge", *args], capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=REPO)


def test_cli_json_and_exit_codes():
    p = _cli("--json", str(PROBLEMS / "aplusb"), str(ROOT / "solutions/aplusb/AC.c"), "--jobs", "2")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["schema_version"] == 1 and doc["verdict"] == "AC" and doc["language"] == "c"
    assert [t["name"] for t in doc["tests"]] == ["1", "2", "10"]  # numeric order
    for t in doc["tests"]:
        assert {"name", "verdict", "cpu_time_ms", "memory_peak_bytes"} <= set(t)
    p = _cli("--json", "--stop-on-first-failure", str(PROBLEMS / "aplusb"), str(ROOT / "solutions/aplusb/WA.py"))
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert doc["verdict"] == "WA" and len(doc["tests"]) == 1 and doc["skipped"] == 2


def test_cli_table_and_lang_option(tmp_path):
    src = tmp_path / "solution.txt"  # no extension: --lang says what it is
    src.write_text("print(sum(map(int, input().split())))\n")
    p = _cli(str(PROBLEMS / "aplusb"), str(src), "--lang", "python")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "verdict: AC" in out and "test" in out and "AC" in out


@pytest.mark.parametrize("args, needle", [
    (("/nonexistent-problem", "x.py"), "problem directory not found"),
    (("tests/judge/problems/aplusb", "/nonexistent.py"), "cannot read the source"),
    (("tests/judge/problems/aplusb", "README.md"), "cannot tell the language"),
    (("tests/judge/problems/aplusb", "README.md", "--lang", "cobol"), "unknown language"),
    (("tests/judge/problems/aplusb", "tests/judge/solutions/aplusb/AC.py", "--jobs", "0"), "--jobs"),
])
def test_cli_errors_are_one_line_125(args, needle):
    p = _cli(*args, timeout=TIMEOUT)
    assert p.returncode == 125, (p.returncode, p.stderr)
    err = p.stderr.decode()
    assert err.startswith("jailpy: error: ") and needle in err and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("toml, needle", [
    ("[limits]\ncpu_time = -1\n", "limits.cpu_time"),
    ("[limits]\nmemory = \"lots\"\n", "limits.memory"),
    ("[checker]\nkind = \"fuzzy\"\n", "checker.kind"),
    ("[checker]\nkind = \"custom\"\n", "checker.program"),
    ("[checker]\nkind = \"custom\"\nprogram = \"../../etc/passwd\"\n", "outside the problem directory"),
    ("colour = 1\n", "colour: unknown key"),
    ("[limits\n", "not valid TOML"),
])
def test_bad_problem_toml(tmp_path, toml, needle):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "1.in").write_text("1\n")
    (tmp_path / "tests" / "1.out").write_text("1\n")
    (tmp_path / "problem.toml").write_text(toml)
    with pytest.raises(PolicyError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        load_problem(tmp_path)


def test_missing_answer_and_no_tests(tmp_path):
    (tmp_path / "problem.toml").write_text("")
    with pytest.raises(PolicyError, match="no tests/ directory"):
        load_problem(tmp_path)
    (tmp_path / "tests").mkdir()
    with pytest.raises(PolicyError, match="no tests"):
        load_problem(tmp_path)
    (tmp_path / "tests" / "a.in").write_text("1\n")
    with pytest.raises(PolicyError, match="has no tests/a.out"):
        load_problem(tmp_path)


def test_python_api_and_progress():
    seen = []
    report = jailpy.judge(PROBLEMS / "hello", ROOT / "solutions/hello/AC.c",
                          progress=lambda t, done, total: seen.append((t.name, done, total)))
    assert report.verdict == "AC" and report.passed == 2
    assert sorted(seen) == [("1", 1, 2), ("2", 2, 2)] or {s[0] for s in seen} == {"1", "2"}
    # the source as bytes
    report = jailpy.judge(PROBLEMS / "aplusb", b"print(sum(map(int, input().split())))\n", "python")
    assert report.verdict == "AC"


def test_compile_error_keeps_the_message():
    report = jailpy.judge(PROBLEMS / "aplusb", ROOT / "solutions/aplusb/CE.cpp")
    assert report.verdict == "CE" and "error" in report.compile.message and report.skipped == 3


def test_checkers_unit():
    assert checkers.exact(b"a\n", b"a\n")[0] and not checkers.exact(b"a \n", b"a\n")[0]
    assert checkers.tokens(b" 1\n2  ", b"1 2\n")[0] and not checkers.tokens(b"1 2 3", b"1 2")[0]
    assert checkers.floats(b"0.3333334", b"0.333333333", 1e-6, 1e-6)[0]
    assert not checkers.floats(b"0.34", b"0.333333333", 1e-6, 1e-6)[0]
    assert checkers.floats(b"1000000.5", b"1000000.0", 0, 1e-6)[0]  # relative
    assert not checkers.floats(b"nan", b"1", 1, 1)[0] and checkers.floats(b"inf", b"inf", 0, 0)[0]
    assert not checkers.floats(b"abc", b"1.0", 1, 1)[0] and checkers.floats(b"yes 1.0", b"yes 1", 0, 0)[0]
    assert [checkers.testlib_verdict(c) for c in (0, 1, 2, 3, 4, 7)] == ["AC", "WA", "WA", "XX", "WA", "XX"]


@pytest.mark.parametrize("n", [0, 32])
def test_memory_is_what_the_program_touched(n, tmp_path):
    """The judge's memory: the cgroup's peak less the page cache the run brought in (docs/judge.md)."""
    from jailpy.judge.runner import judge_memory
    from jailpy.policy import load

    pol = load("default").replace(cwd=False, memory="256M", cpu_time=5.0, pids=8)
    code = "b = bytearray({} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
    with jailpy.Sandbox(pol) as sb:
        base = judge_memory(sb.run(["python3", "-c", code.format(0)]))
        got = judge_memory(sb.run(["python3", "-c", code.format(n)]))
        # reading a file nobody had cached adds page cache to the cgroup, not to the judge's memory
        f = tmp_path / "data.bin"
        f.write_bytes(os.urandom(16 << 20))
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)  # written back first: dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    with jailpy.Sandbox(pol.replace(ro_bind=[f"{f}:/data.bin"])) as sb:
        r = sb.run(["python3", "-c", code.format(n) + "f = open('/data.bin', 'rb', buffering=0)\n"
                    "while f.read(65536): pass\n"])
    assert abs(got - base - (n << 20)) <= 1 << 20, (base, got)
    assert r.memory_cache_bytes >= 15 << 20, r  # the 16 MiB it read were charged to its cgroup as cache
    assert abs(judge_memory(r) - base - (n << 20)) <= 1 << 20, r
