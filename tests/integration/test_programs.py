"""Real programs work inside: Python with threads and subprocesses, shell pipelines, a C
compiler, pip."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import SANDBOX_PATH, jail, jail_py


def test_python_threads_and_subprocess():
    code = (
        "import threading, subprocess, queue\n"
        "q = queue.Queue()\n"
        "ts = [threading.Thread(target=lambda i=i: q.put(sum(range(i * 10000)))) for i in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "total = sum(q.get() for _ in range(8))\n"
        "out = subprocess.run(['sh', '-c', 'echo child $$'], capture_output=True, text=True, check=True).stdout\n"
        "print(total == sum(sum(range(i * 10000)) for i in range(8)), out.split()[0])\n"
    )
    p = jail_py(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"True child\n"


def test_shell_pipeline():
    p = jail("--", "sh", "-c", "echo a b c | tr ' ' '\\n' | wc -l")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == b"3"


def test_multiprocessing_pool():
    code = (
        "import multiprocessing as mp\n"
        "with mp.Pool(2) as pool: print(pool.map(abs, [-1, -2, -3]))\n"
    )
    p = jail_py(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"[1, 2, 3]\n"


@pytest.mark.skipif(shutil.which("gcc", path=SANDBOX_PATH) is None, reason="gcc is not installed")
def test_gcc_compiles_and_runs_a_c_program():
    script = (
        "set -e\n"
        "cat > /tmp/hello.c <<'EOF'\n"
        "#include <stdio.h>\n"
        "int main(int argc, char **argv) { printf(\"hello from C, %d args\\n\", argc - 1); return 0; }\n"
        "EOF\n"
        "gcc -O1 -o /tmp/h /tmp/hello.c\n"
        "/tmp/h one two\n"
    )
    p = jail("--", "sh", "-c", script, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"hello from C, 2 args\n"


def _host_pip_works() -> bool:
    try:
        return subprocess.run(["python3", "-m", "pip", "--version"], env={"PATH": SANDBOX_PATH},
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _host_pip_works(), reason="python3 -m pip does not work on this host")
def test_pip_version():
    p = jail("--", "python3", "-m", "pip", "--version", timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"pip ")


def test_common_tools_see_the_sandbox():
    p = jail("--", "sh", "-c", "id -u; uname -n; ls /proc | grep -c '^[0-9]'")
    assert p.returncode == 0, p.stderr
    uid, node, nprocs = p.stdout.decode().split()
    assert uid == "0" and node == "jailpy"
    assert int(nprocs) <= 4  # init, sh, ls, grep (the pipeline's members)
