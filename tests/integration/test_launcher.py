"""The installed `jailpy` command (scripts/jailpy, a sh launcher in front of Python)."""

from __future__ import annotations

import os
import subprocess
import sys

LAUNCHER = os.path.join(os.path.dirname(sys.executable), "jailpy")


def test_modules_in_the_current_directory_are_never_imported_by_jailpy(tmp_path):
    # untrusted code's directory is where users run jailpy from: a module there named like one
    # of jailpy's dependencies must not run on the host
    canary = tmp_path / "imported"
    for mod in ("msgspec", "typer", "click", "json", "jailpy"):
        (tmp_path / f"{mod}.py").write_text(f"open({str(canary)!r}, 'a').write('{mod} ')\n")
    p = subprocess.run([LAUNCHER, "exec", "--", "true"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert not canary.exists(), canary.read_text()


def test_launcher_passes_the_exit_status_and_arguments():
    p = subprocess.run([LAUNCHER, "exec", "--", "sh", "-c", 'printf "%s|" "$@"; exit 7', "sh", "a b", ""],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert p.returncode == 7
    assert p.stdout == b"a b||"
