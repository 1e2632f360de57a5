"""The atheris harness (fuzz/atheris_loaders.py) in CI: every seed-corpus input replays without a
crash (no atheris needed), the harness can report a crash, and, where atheris is installed, a
short coverage-guided run of each target finishes clean without writing into the seed corpus."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO

FUZZ = REPO / "fuzz"
sys.path.insert(0, str(FUZZ))

import atheris_loaders  # noqa: E402

TARGETS = atheris_loaders.TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_seed_corpus_replays_without_a_crash(target, capsys):
    files = [f for f in (FUZZ / "corpus" / target).iterdir() if f.is_file()]
    assert len(files) >= 12, f"the {target} seed corpus has {len(files)} files"
    rc = atheris_loaders.replay(target, [])
    out = capsys.readouterr()
    assert rc == 0, out.err[-4000:]
    assert f"replayed {len(files)} inputs" in out.out and "0 crashed" in out.out
    loaded = int(out.out.split(" loaded")[0].rsplit(" ", 1)[1])
    assert loaded >= 3, f"too few seeds load: the fuzzer would rarely get past the first checks: {out.out}"


def test_the_harness_reports_crashes(tmp_path, monkeypatch, capsys):
    """A loader that raises something other than a one-line PolicyError is a crash."""
    (tmp_path / "x.toml").write_text('hostname = "x"\n')
    import jailpy.policy

    monkeypatch.setattr(jailpy.policy, "load", lambda path: (_ for _ in ()).throw(RuntimeError("boom")))
    assert atheris_loaders.replay("policy", [str(tmp_path)]) == 1
    assert "RuntimeError: boom" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="not one line"):
        atheris_loaders.Harness._one_line(ValueError("two\nlines"))


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (pip install atheris)")
@pytest.mark.parametrize("target", TARGETS)
def test_a_short_atheris_run_is_clean(target, tmp_path):
    before = sorted(p.name for p in (FUZZ / "corpus" / target).iterdir())
    env = {"JAILPY_FUZZ_OUT": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    p = subprocess.run([sys.executable, str(FUZZ / "atheris_loaders.py"), target, str(FUZZ / "corpus" / target),
                        "-runs=300", "-seed=1"], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                       cwd=REPO)
    assert p.returncode == 0, p.stderr.decode()[-4000:]
    assert b"Done 300 runs" in p.stderr
    assert sorted(p.name for p in (FUZZ / "corpus" / target).iterdir()) == before, "atheris wrote into the seeds"
    assert list((tmp_path / target).iterdir()), "new inputs did not go to JAILPY_FUZZ_OUT"
