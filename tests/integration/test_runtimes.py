"""Every runtime runs under every shipped seccomp policy, and with none (issue 4, section 3):
python3 (threads, subprocess, asyncio, multiprocessing, os.urandom, os.stat), gcc-compiled C and
C++ hello worlds (dynamic and static), Go (no cgo), Java and Node hello worlds when they are
installed, and bash's ``[ -x ]`` (faccessat2: ENOSYS or allowed, so libc falls back).

Packages (tests/run.sh installs them): gcc, libc6-dev (libc.a for -static), g++ (libstdc++-12-dev),
golang-go, default-jdk-headless (javac), nodejs.  A missing one skips its test with that reason.

A runtime may meet a deliberate denial on its way (the report then names it in blocked_syscall)
but must still do its job: exit 0, the exact output, verdict OK.
"""

from __future__ import annotations

import pytest

from seccomp_helpers import SHIPPED_POLICIES, Programs, assert_ran, programs, run_under

assert programs  # a pytest fixture, used by name

POLICIES = (*SHIPPED_POLICIES, "none")
parametrize_policy = pytest.mark.parametrize("policy", POLICIES)

# ------------------------------------------------------------------- python3 ----

PYTHON = {
    "print": ("print(1)", b"1\n"),
    "threads": (
        "import threading, queue\n"
        "q = queue.Queue()\n"
        "ts = [threading.Thread(target=lambda i=i: q.put(sum(range(i * 10000)))) for i in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(sum(q.get() for _ in range(8)) == sum(sum(range(i * 10000)) for i in range(8)))\n",
        b"True\n"),
    "subprocess": (
        "import subprocess, sys\n"
        "print(subprocess.run(['sh', '-c', 'echo child'], capture_output=True, text=True, check=True).stdout.strip())\n"
        "print(subprocess.run([sys.executable, '-c', 'print(2)'], capture_output=True, text=True,\n"
        "                     check=True).stdout.strip())\n"
        "p = subprocess.Popen(['cat'], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
        "print(p.communicate(b'piped')[0].decode(), p.returncode)\n",
        b"child\n2\npiped 0\n"),
    "asyncio": (
        "import asyncio, socket\n"
        "async def main():\n"
        "    await asyncio.sleep(0.01)\n"
        "    proc = await asyncio.create_subprocess_exec('echo', 'async child', stdout=asyncio.subprocess.PIPE)\n"
        "    out, _ = await proc.communicate()\n"
        "    a, b = socket.socketpair()\n"
        "    r, w = await asyncio.open_connection(sock=a)\n"
        "    r2, w2 = await asyncio.open_connection(sock=b)\n"
        "    w.write(b'ping\\n'); await w.drain()\n"
        "    line = await r2.readline()\n"
        "    n = await asyncio.to_thread(sum, range(10))\n"
        "    w.close(); w2.close()\n"
        "    print(out.decode().strip(), line.decode().strip(), n, proc.returncode)\n"
        "asyncio.run(main())\n",
        b"async child ping 45 0\n"),
    "multiprocessing": (
        "import multiprocessing as mp\n"
        "def sq(x): return x * x\n"
        "if __name__ == '__main__':\n"
        "    with mp.Pool(2) as pool: print(pool.map(sq, [1, 2, 3]))\n"
        "    ctx = mp.get_context('spawn')\n"
        "    q = ctx.Queue(); p = ctx.Process(target=q.put, args=('spawned',)); p.start()\n"
        "    print(q.get(timeout=20)); p.join(); print(p.exitcode)\n",
        b"[1, 4, 9]\nspawned\n0\n"),
    "urandom_stat": (
        "import os, stat\n"
        "print(len(os.urandom(16)), stat.S_ISDIR(os.stat('/').st_mode), os.path.exists('/etc/passwd'))\n",
        b"16 True True\n"),
}


@parametrize_policy
@pytest.mark.parametrize("what", list(PYTHON))
def test_python(policy: str, what: str, tmp_path):
    code, out = PYTHON[what]
    if what == "multiprocessing":  # the spawn start method re-imports __main__: needs a file
        script = tmp_path / "mp_main.py"
        script.write_text(code)
        tmp_path.chmod(0o755)
        script.chmod(0o644)
        p, rep = run_under(policy, ["python3", str(script)], "--ro-bind", str(tmp_path), timeout=60)
    else:
        p, rep = run_under(policy, ["python3", "-c", code], timeout=60)
    assert_ran(p, rep, policy, out)


# ------------------------------------------------------------- compiled programs ----

@parametrize_policy
@pytest.mark.parametrize("name,out", [
    ("hello_c", b"hello from C, 2 args, x\n"),
    ("hello_c_static", b"hello from C, 2 args, x\n"),
    ("hello_cpp", b"hello from C++, sum 500500\n"),
    ("hello_cpp_static", b"hello from C++, sum 500500\n"),
])
def test_compiled_hello(programs: Programs, policy: str, name: str, out: bytes):
    path = programs.get(name)
    argv = [str(path)] + ([] if "cpp" in name else ["a", "b"])
    p, rep = run_under(policy, argv, "--ro-bind", str(programs.dir))
    assert_ran(p, rep, policy, out)


@parametrize_policy
def test_go_hello(programs: Programs, policy: str):
    path = programs.get("hello_go")
    p, rep = run_under(policy, [str(path)], "--ro-bind", str(programs.dir))
    assert_ran(p, rep, policy, b"hello from Go, 15005000\n")


@parametrize_policy
def test_java_hello(programs: Programs, policy: str):
    programs.get("java")
    p, rep = run_under(policy, ["java", "-cp", str(programs.dir), "Hello"], "--ro-bind", str(programs.dir),
                       timeout=90)
    assert_ran(p, rep, policy, b"hello from Java\n")


@parametrize_policy
def test_node_hello(programs: Programs, policy: str):
    programs.get("node")
    code = "setTimeout(() => console.log('hello from node'), 10); Promise.resolve().then(() => {});"
    p, rep = run_under(policy, ["node", "-e", code], timeout=60)
    assert_ran(p, rep, policy, b"hello from node\n")


# ------------------------------------------------------------------------- shell ----

@parametrize_policy
def test_bash_test_x(policy: str):
    p, rep = run_under(policy, ["bash", "-c", "[ -x /bin/sh ] && echo yes"])
    assert_ran(p, rep, policy, b"yes\n")


@parametrize_policy
def test_shell_pipeline(policy: str):
    p, rep = run_under(policy, ["sh", "-c", "echo a b c | tr ' ' '\\n' | sort -r | head -1"])
    assert_ran(p, rep, policy, b"c\n")
