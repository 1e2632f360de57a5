"""Judging one submission: compile it, run it on each test, check each output.  :class:`Judge`.

Host side, on top of the public API (:class:`jailpy.Sandbox`, :class:`jailpy.Policy`,
:class:`jailpy.Result`).  The layout of a judging, in a private temporary directory (0700):

* ``box/``: the submission's directory, bound at ``/box`` writable while it compiles (a sandbox of
  its own with the compile limits, ``id_map="single"``: the files it makes are the caller's to
  remove); the tests run in warm slots whose own read-only box at ``/box`` gets hard links of it
  (:meth:`Judge.solution_slot`), so no path of the submission is in their policy and the slots
  serve the next submission too;
* ``checker/``, ``interactor/``: the custom checker's and the interactor's boxes, compiled the same way;
* ``out-N/``: worker N's last output, bound read-only at ``/out`` for a custom checker.

The problem directory is bound read-only at ``/problem`` for the checker and the interactor only,
never for the solution.  Sandboxes come from a :class:`jailpy.slots.SlotPool` (one per policy, kept
warm and verified clean between runs); ``jobs`` tests run at once, each worker with its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import PolicyError
from ..policy import Policy, load as load_policy, parse_size
from ..stdio import DEVNULL, PIPE
from . import checkers, languages
from .languages import BOX, Language
from .problem import Limits, Problem, TestCase, load as load_problem
from .report import FROM_RESULT, CompileReport, Report, TestReport, overall

MESSAGE_MAX = 64 << 10
STDERR_KEEP = 4096
PROBLEM_MOUNT = "/problem"
OUT_MOUNT = "/out"


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _text(b: bytes | None, limit: int) -> str:
    if not b:
        return ""
    return b[:limit].decode("utf-8", "replace") + ("\n[... cut]" if len(b) > limit else "")


class Judge:
    """Judges submissions against one problem.

    ``problem``: a problem directory (or a loaded :class:`~jailpy.judge.problem.Problem`).
    ``jobs``: tests run at once (each in a sandbox of its own).  ``pool``: a
    :class:`jailpy.slots.SlotPool` to take sandboxes from (default: one of this Judge's own, closed
    by :meth:`close`).  ``base_policy``: the policy the judge's own settings go on top of (default:
    ``policies/default.toml``).  Raises PolicyError for a bad problem directory."""

    def __init__(self, problem: str | os.PathLike | Problem, *, jobs: int = 1, pool=None,
                 base_policy: Policy | None = None) -> None:
        self.problem = problem if isinstance(problem, Problem) else load_problem(problem)
        if not 1 <= jobs <= 64:
            raise PolicyError(f"--jobs: between 1 and 64 tests at once, got {jobs}")
        self.jobs = jobs
        self._own_pool = pool is None
        if pool is None:
            from ..slots import SlotPool

            pool = SlotPool(size=2 * jobs + 1)  # two per test at once (interactive), one to compile
        self.pool = pool
        self.base = base_policy or load_policy("default")

    def close(self) -> None:
        """Close the pool if this Judge made it."""
        if self._own_pool:
            self.pool.close()

    def __enter__(self) -> "Judge":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- policies
    def _policy(self, lim: Limits, lang: Language, box: str | None, writable: bool, *, problem: bool = False,
                out_dir: str | None = None, output: bool = True, pids: int | None = None) -> Policy:
        """The policy of one step.  ``box``: bound at /box (writable for a compile step); None: the
        run takes a slot with a read-only box of its own, filled by :meth:`solution_slot`."""
        spec = self.problem.spec
        ro = [] if writable or box is None else [f"{box}:{BOX}"]
        if problem:
            ro.append(f"{self.problem.dir}:{PROBLEM_MOUNT}")
        if out_dir:
            ro.append(f"{out_dir}:{OUT_MOUNT}")
        return self.base.replace(
            cwd=False, workdir=BOX, hostname="judge", bind=[f"{box}:{BOX}"] if writable else [], ro_bind=ro,
            cpu_time=float(lim.cpu_time), wall_time=float(lim.wall()), memory=lim.memory,
            output_limit=lim.output if output else None, pids=pids or lim.pids or lang.run_pids,
            env=list(self.base.env) + ["HOME=/tmp"] + list(lang.env),
            seccomp=spec.seccomp, id_map="single" if writable else self.base.id_map)

    # ---- compile
    def _compile(self, lang: Language, box: str) -> CompileReport | None:
        """Compile in ``box`` (writable) with the problem's compile limits; None when the language
        has no compile step.  Raises JailpyError when the sandbox cannot be built."""
        if not lang.compile:
            return None
        c = self.problem.spec.compile
        lim = Limits(cpu_time=c.cpu_time, wall_time=c.wall_time, memory=c.memory, output=c.output)
        pol = self._policy(lim, lang, box, True, pids=lang.compile_pids).replace(tmp_size="1G")
        with self.pool.slot(pol, fresh=True) as sb:
            r = sb.run(list(lang.compile), stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
        msg = _text((r.stderr or b"") + (r.stdout or b""), MESSAGE_MAX)
        rep = CompileReport(verdict="OK", message=msg, cpu_time_ms=_ms(r.cpu_user_s + r.cpu_sys_s),
                            wall_time_ms=_ms(r.wall_s), exit_code=r.exit_code)
        if r.verdict.value != "OK":
            rep.verdict = "CE"
            if r.verdict.value != "RE":
                rep.message = (f"the compiler was stopped: {r.verdict.value} ({r.limit_fired or r.error or 'signal'})"
                               f"\n{msg}")
        return rep

    def _prepare_program(self, src_rel: str, lang_name: str | None, tmp: Path, name: str) -> tuple[str, Language, str]:
        """Copy a problem's own program (checker, interactor) into a box and compile it.  Returns
        (box, Language, language name).  A compile error here is the problem's fault: PolicyError."""
        path = self.problem.dir / src_rel
        lname, lang = languages.resolve(lang_name, path.name, self.problem.spec.languages)
        box = tmp / name
        box.mkdir(mode=0o777)
        os.chmod(box, 0o777)
        shutil.copyfile(path, box / lang.source)
        rep = self._compile(lang, str(box))
        if rep is not None and rep.verdict != "OK":
            raise PolicyError(f"{self.problem.dir}: the {name} ({src_rel}) does not compile: "
                              f"{' '.join(rep.message.split())[:300]}")
        return str(box), lang, lname

    # ---- judging
    def judge(self, source: str | os.PathLike | bytes, lang: str | None = None, *, source_name: str | None = None,
              stop_on_first_failure: bool = False,
              progress: Callable[[TestReport, int, int], None] | None = None) -> Report:
        """Judge one submission: ``source`` is a path, or the source text (bytes) with
        ``source_name`` (for its extension) or ``lang``.  ``progress(test_report, done, total)`` is
        called as each test finishes (from worker threads).  Returns a :class:`Report`.  Raises
        PolicyError (an unknown language, an unreadable source, a checker that does not compile) and
        other JailpyErrors when a sandbox cannot be built."""
        if isinstance(source, bytes):
            text, name = source, source_name or ""
        else:
            try:
                text = Path(source).read_bytes()
            except OSError as e:
                raise PolicyError(f"cannot read the source {source}: {e.strerror}") from None
            name = source_name or os.path.basename(source)
        lname, language = languages.resolve(lang, name, self.problem.spec.languages)
        tmp = Path(tempfile.mkdtemp(prefix="jailpy-judge-"))
        try:
            return self._judge(text, lname, language, tmp, stop_on_first_failure, progress)
        finally:
            from ..slots import _clear

            with contextlib.suppress(OSError):  # (not shutil.rmtree: it recurses once per level)
                _clear(str(tmp))
                os.rmdir(tmp)

    def _judge(self, text: bytes, lname: str, lang: Language, tmp: Path, stop: bool, progress) -> Report:
        spec = self.problem.spec
        box = tmp / "box"
        box.mkdir()
        os.chmod(box, 0o777)  # the compiler's host id (as root, not root) writes here
        (box / lang.source).write_bytes(text)
        comp = self._compile(lang, str(box))
        report = Report(verdict="AC", problem=self.problem.name, language=lname, compile=comp,
                        jailpy_version=__version__)
        if comp is not None and comp.verdict == "CE":
            report.verdict = "CE"
            report.skipped = len(self.problem.tests)
            return report
        checker = interactor = None
        if spec.interactor is not None:
            interactor = self._prepare_program(spec.interactor.program, spec.interactor.lang, tmp, "interactor")
        elif spec.checker.kind == "custom":
            checker = self._prepare_program(spec.checker.program, spec.checker.lang, tmp, "checker")
        tests = self.problem.tests
        results: list[TestReport | None] = [None] * len(tests)
        failed = threading.Event()
        done = [0]
        lock = threading.Lock()
        slots = iter(range(self.jobs))
        local = threading.local()

        def work(i: int) -> None:
            if stop and failed.is_set():
                return
            if not hasattr(local, "n"):
                with lock:
                    local.n = next(slots)
            out_dir = tmp / f"out-{local.n}"
            if checker and not out_dir.exists():
                out_dir.mkdir()
            t = self._one(tests[i], lang, str(box), checker, interactor, str(out_dir))
            results[i] = t
            if t.verdict != "AC":
                failed.set()
            with lock:
                done[0] += 1
                n = done[0]
            if progress is not None:
                progress(t, n, len(tests))

        if self.jobs == 1:
            for i in range(len(tests)):
                work(i)
        else:
            with ThreadPoolExecutor(self.jobs, thread_name_prefix="jailpy-judge") as ex:
                for f in [ex.submit(work, i) for i in range(len(tests))]:
                    f.result()
        report.tests = [t for t in results if t is not None]
        report.skipped = len(tests) - len(report.tests)
        report.verdict = overall(report.tests)
        report.passed = sum(t.verdict == "AC" for t in report.tests)
        report.max_cpu_time_ms = max((t.cpu_time_ms for t in report.tests), default=0)
        report.max_memory_peak_bytes = max((t.memory_peak_bytes or 0 for t in report.tests), default=0)
        return report

    def _one(self, test: TestCase, lang: Language, box: str, checker, interactor, out_dir: str) -> TestReport:
        if interactor is not None:
            from .interactive import run_interactive

            return run_interactive(self, test, lang, box, interactor)
        lim = self.problem.spec.limits
        argv = languages.run_argv(lang, parse_size(lim.memory))
        fd = sealed_copy(test.input)
        try:
            with self.solution_slot(lim, lang, box) as sb:
                r = sb.run(argv, stdin=fd, stdout=PIPE, stderr=PIPE)
        finally:
            os.close(fd)
        t = test_report(test.name, r)
        if r.verdict.value == "OK":
            answer = Path(test.answer).read_bytes()
            self._check(t, test, r.stdout or b"", answer, checker, out_dir)
        return t

    def _check(self, t: TestReport, test: TestCase, output: bytes, answer: bytes, checker, out_dir: str) -> None:
        c = self.problem.spec.checker
        if checker is None:
            ok, msg = checkers.builtin(c.kind, output, answer, c.abs_tol, c.rel_tol)
            t.verdict, t.checker_message = ("AC" if ok else "WA"), msg
            return
        cbox, clang, _ = checker
        with open(os.path.join(out_dir, "output"), "wb") as f:
            f.write(output)
        pol = self._policy(c.limits, clang, cbox, False, problem=True, out_dir=out_dir)
        argv = languages.run_argv(clang, parse_size(c.limits.memory)) + [
            self.in_problem(test.input), f"{OUT_MOUNT}/output", self.in_problem(test.answer)]
        with self.pool.slot(pol) as sb:
            r = sb.run(argv, stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
        msg = _text((r.stderr or b"") + (r.stdout or b""), STDERR_KEEP).strip()
        if r.verdict.value in ("OK", "RE"):
            t.verdict = checkers.testlib_verdict(r.exit_code)
            t.checker_message = msg or None
            if t.verdict == "XX":
                t.error = f"the checker failed (exit status {r.exit_code})"
        else:
            t.verdict = "XX"
            t.error = f"the checker was stopped: {r.verdict.value}"
            t.checker_message = msg or None

    @contextlib.contextmanager
    def solution_slot(self, lim: Limits, lang: Language, box: str, output: bool = True):
        """A slot for a run of the submission: its policy has no path of this submission in it,
        so slots stay warm from one submission to the next; the slot's own read-only box is
        filled with the compiled ``box`` (hard links), once per submission and slot."""
        pol = self._policy(lim, lang, None, False, output=output)
        with self.pool.slot(pol, box="ro", box_at=BOX) as sb:
            sb.fill(box, tree=box)
            yield sb

    def in_problem(self, host_path: str) -> str:
        """Where a file of the problem directory is inside a checker's or interactor's sandbox."""
        return PROBLEM_MOUNT + "/" + os.path.relpath(host_path, self.problem.dir)


_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def sealed_copy(path: str) -> int:
    """A read-only fd of a sealed memfd (memfd_create(2), F_ADD_SEALS in fcntl(2)) holding a copy
    of the file ``path``: what a solution gets as stdin.  Not the problem's own file: a program
    reopens its stdin through /proc/self/fd/0 as the file itself, with the rights its uid has on
    it, so where the sandbox has the caller's uid (rootless without a subuid range, id_map single)
    and no Landlock, it could rewrite the test for every later submission.  A sealed memfd
    refuses every write (EPERM) whoever opens it.  Raises OSError."""
    mfd = os.memfd_create("jailpy-test-input", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            off = 0
            while True:
                n = os.sendfile(mfd, src.fileno(), off, max(size - off, 1 << 20))
                if not n:
                    break
                off += n
        fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, _SEALS)
        fd = os.open(f"/proc/self/fd/{mfd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(mfd)
    return fd


def judge_memory(r) -> int | None:
    """What the judge reports as memory (docs/judge.md, "What memory means"): the cgroup's peak
    less the page cache of files the run read (``Result.memory_cache_bytes``); without a cgroup,
    the peak RSS of the largest process."""
    if r.memory_peak_bytes is None:
        return r.max_rss_bytes
    return max(0, r.memory_peak_bytes - (r.memory_cache_bytes or 0))


def test_report(name: str, r) -> TestReport:
    """A TestReport from the solution's Result (the verdict before any checker: FROM_RESULT)."""
    v = r.verdict.value
    verdict = FROM_RESULT[v] or "AC"
    err = r.stderr or b""
    if verdict == "RE" and b"java.lang.OutOfMemoryError" in err:
        verdict = "MLE"
    return TestReport(name=name, verdict=verdict, cpu_time_ms=_ms(r.cpu_user_s + r.cpu_sys_s),
                      wall_time_ms=_ms(r.wall_s), memory_peak_bytes=judge_memory(r),
                      cgroup_memory_peak_bytes=r.memory_peak_bytes, exit_code=r.exit_code, signal=r.signal,
                      run_verdict=v, error=r.error, stderr=_text(err, STDERR_KEEP) or None)


def judge(problem: str | os.PathLike, source: str | os.PathLike | bytes, lang: str | None = None, *, jobs: int = 1,
          source_name: str | None = None, stop_on_first_failure: bool = False, progress=None) -> Report:
    """Judge ``source`` against the problem directory ``problem`` (see :class:`Judge`)."""
    with Judge(problem, jobs=jobs) as j:
        return j.judge(source, lang, source_name=source_name, stop_on_first_failure=stop_on_first_failure,
                       progress=progress)
