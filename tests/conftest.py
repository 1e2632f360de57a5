"""Shared helpers for jailpy's test suite.

Everything here drives the real thing: the CLI as ``python -m jailpy exec`` in a subprocess,
or the Python API in-process.  No mocks.  The suite must pass as root and as an
unprivileged user; helpers that depend on who runs the tests (id mapping) say so.

Safety: helpers only write under tmp dirs the test created, only talk to 127.0.0.1, and
only signal processes the test itself started.  Every subprocess has a timeout.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jailpy.audit.host import marker_pids  # noqa: F401 - tests import it from here

REPO = Path(__file__).resolve().parent.parent
JAILPY = [sys.executable, "-m", "jailpy", "exec"]
TIMEOUT = 30  # seconds, for every subprocess
IS_ROOT = os.getuid() == 0
NAMESPACES = ("user", "mnt", "pid", "uts", "ipc", "net", "cgroup")

# the fds open in the program (listdir's own directory fd is closed again, so fstat drops it)
OPEN_FDS = (
    "import os, json\n"
    "fds = []\n"
    "for name in os.listdir('/proc/self/fd'):\n"
    "    try: os.fstat(int(name)); fds.append(int(name))\n"
    "    except OSError: pass\n"
    "print(json.dumps(sorted(fds)))\n"
)

# the pids in the program's /proc, its own pid and parent, every process's command line and PID 1's
PROCS = (
    "import os, json\n"
    "pids = sorted(int(d) for d in os.listdir('/proc') if d.isdigit())\n"
    "cmds = []\n"
    "for p in pids:\n"
    "    try: cmds.append(open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace'))\n"
    "    except OSError: pass\n"
    "print(json.dumps({'pids': pids, 'me': os.getpid(), 'ppid': os.getppid(), 'cmds': cmds,\n"
    "    'init': open('/proc/1/cmdline', 'rb').read().decode(errors='replace')}))\n"
)
# jailpy's documented default for the sandbox's PATH (policy.DEFAULT_PATH)
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# ------------------------------------------------------------------ running jailpy ----

def jail(*args: str | bytes, stdin=subprocess.DEVNULL, timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
    """Run ``jailpy exec ARGS...`` and capture stdout/stderr (bytes)."""
    kw.setdefault("cwd", REPO)
    return subprocess.run([*JAILPY, *args], stdin=stdin, capture_output=True, timeout=timeout, **kw)


def jail_py(code: str, *jail_args: str, argv: tuple = (), **kw) -> subprocess.CompletedProcess:
    """Run ``python3 -c CODE ARGV...`` inside the sandbox, with ``jail_args`` as jailpy flags."""
    return jail(*jail_args, "--", "python3", "-c", code, *argv, **kw)


def jail_report(report_path: Path, *args: str, **kw) -> tuple[subprocess.CompletedProcess, dict]:
    """Run jailpy with ``--report report_path`` and return (process, parsed JSON report)."""
    p = jail("--report", str(report_path), *args, **kw)
    assert report_path.exists(), f"no --report file written; exit {p.returncode}, stderr={p.stderr[-500:]!r}"
    text = report_path.read_bytes()
    try:
        return p, json.loads(text)
    except ValueError:
        raise AssertionError(f"--report file is not JSON: {text[:300]!r}; stderr={p.stderr!r}") from None


def jail_sh_redirect(jail_args: list[str], redirect: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``jailpy exec JAIL_ARGS`` through /bin/sh with a redirection such as ``0<&-``
    applied to jailpy itself (so jailpy starts with that fd closed or changed)."""
    cmd = shlex.join([*JAILPY, *jail_args]) + " " + redirect
    return subprocess.run(["sh", "-c", cmd], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, cwd=REPO)


def last_json(stderr: bytes) -> tuple[bytes, dict]:
    """Split ``--report -`` output: (what came before the JSON document, the document)."""
    i = stderr.rfind(b"\n{\n")
    start = i + 1 if i >= 0 else 0
    assert stderr[start:start + 2] == b"{\n", f"no JSON report at the end of stderr: {stderr[-500:]!r}"
    return stderr[:start], json.loads(stderr[start:])


# ------------------------------------------------------------ host process scanning ----

def unique_marker() -> str:
    """A sleep(1) duration no other process on this (shared) machine will have: e.g. 987.123456789."""
    return f"{secrets.randbelow(900) + 100}.{secrets.randbelow(10**9):09d}"


def wait_for_marker(marker: str, count: int = 1, seconds: float = 10.0) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pids = marker_pids(marker)
        if len(pids) >= count:
            return pids
        time.sleep(0.01)
    return marker_pids(marker)


def wait_gone(marker: str, seconds: float = 5.0) -> list[int]:
    """Wait up to ``seconds`` for every process with ``marker`` to vanish; return those left."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not marker_pids(marker):
            return []
        time.sleep(0.02)
    return marker_pids(marker)


# ---------------------------------------------------------------------- identity ----

def _has_subid(path: str, names: tuple[str, ...]) -> tuple[int, int] | None:
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in names and parts[1].isdigit() and parts[2].isdigit() \
                        and int(parts[2]) > 0:
                    return int(parts[1]), int(parts[2])
    except OSError:
        pass
    return None


def _root_range() -> tuple[int, int]:
    """Root's id range as jailpy.userns documents it: JAILPY_ID_RANGE, /etc/jailpy/id-range, the
    user jailpy's /etc/subuid and /etc/subgid ranges, else 0x70000000:65536."""
    text = os.environ.get("JAILPY_ID_RANGE", "").strip()
    if not text:
        try:
            with open("/etc/jailpy/id-range") as f:
                text = next((ln.split("#")[0].strip() for ln in f if ln.split("#")[0].strip()), "")
        except OSError:
            text = ""
    if text:
        first, count = text.split(":")
        return int(first), int(count)
    sub, subg = _has_subid("/etc/subuid", ("jailpy",)), _has_subid("/etc/subgid", ("jailpy",))
    if sub and subg:
        return sub[0], min(sub[1], subg[1])
    return 0x70000000, 65536


SLOT_IDS = 2  # host ids per sandbox: its uid 0 and its --uid (jailpy.userns.SLOT_IDS)


def expected_id_map(mode: str = "auto") -> tuple[str, range]:
    """What jailpy documents for this caller: ``("single"|"slot", the host uids the sandbox's uid 0
    may be)``.

    Every running sandbox has host ids of its own (jailpy.idlease): a slot of SLOT_IDS ids in a
    range, the slot's first id being the sandbox's uid 0 (its --uid, if not 0, the second).
    root: the range jailpy.userns documents (_root_range), for every id_map (``single`` maps one
    id of a slot, never nobody).  others: a slot of their /etc/subuid range when
    newuidmap/newgidmap exist (mode auto or range), else -- and with ``single`` -- their own uid,
    shared by all their sandboxes."""
    uid = os.getuid()
    if uid == 0:
        first, count = _root_range()
        return "slot", range(first, first + count - SLOT_IDS + 1, SLOT_IDS)
    try:
        names: tuple[str, ...] = (pwd.getpwuid(uid).pw_name, str(uid))
    except KeyError:
        names = (str(uid),)
    helpers = bool(shutil.which("newuidmap") and shutil.which("newgidmap"))
    sub, subg = _has_subid("/etc/subuid", names), _has_subid("/etc/subgid", names)
    if mode != "single" and sub and subg and helpers:
        return "slot", range(sub[0], sub[0] + min(sub[1], subg[1]) - SLOT_IDS + 1, SLOT_IDS)
    return "single", range(uid, uid + 1)


# ---------------------------------------------------------------------- fixtures ----

@pytest.fixture(autouse=True)
def _cwd_is_repo(monkeypatch):
    """jailpy binds the current directory; make it the repo for every test."""
    monkeypatch.chdir(REPO)


@pytest.fixture
def report_path(tmp_path) -> Path:
    return tmp_path / "report.json"


@pytest.fixture
def shared_dir(tmp_path) -> Path:
    """A host directory to bind into the sandbox.  World-writable, because the sandbox's ids
    map to another host uid (a slot of jailpy's range, or of a subuid range) than the test's."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o777)
    yield d
    # the sandbox may have created files as another host uid; we own the directory, so we
    # can unlink them (never create subdirectories from inside in tests)


@pytest.fixture
def host_sleep():
    """A ``sleep`` on the host (outside any sandbox) with a unique marker; killed afterwards."""
    marker = unique_marker()
    p = subprocess.Popen(["sleep", marker], stdin=subprocess.DEVNULL)
    try:
        assert wait_for_marker(marker) == [p.pid]
        yield p, marker
    finally:
        p.kill()
        p.wait(timeout=TIMEOUT)


@pytest.fixture
def host_tcp_server():
    """A listening TCP socket on the host's 127.0.0.1 (no accept: the kernel completes
    handshakes into the backlog).  Yields (socket, port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    try:
        yield s, s.getsockname()[1]
    finally:
        s.close()
