"""Helpers for the seccomp tests (tests/integration/test_seccomp.py, test_runtimes.py,
tests/regressions/test_field_seccomp.py): the syscall probe (tests/probes/syscall_probe.c),
compiled once per session, and running it through ``jailpy exec --seccomp POLICY``.

The probe makes each named system call with harmless arguments and prints one line per call:
``LABEL SYSCALL NR RET ERRNO``.  Nothing here mocks the kernel: every answer comes from a real
seccomp filter (or from the kernel when no filter stops the call).

Pytest fixtures defined here must be imported into the test module that uses them
(``from seccomp_helpers import probe``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from jailpy.lsm import landlock as _landlock

from conftest import JAILPY, REPO, TIMEOUT, jail, last_json

PROBES = REPO / "tests" / "probes"
PROBE_SRC = PROBES / "syscall_probe.c"
SECCOMP_CLI = [sys.executable, "-m", "jailpy", "seccomp"]
SHIPPED_POLICIES = ("default", "strict")
# bounds every probe run: a filter that lets something through must not hang the suite
PROBE_WALL_TIME = "20"

# Every deliberately denied syscall of issue 4's `default` list (section 1), as probe labels.
# Both shipped policies must refuse each: EPERM with the report's blocked_syscall naming it, or ENOSYS.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key",
    "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr",
    "mount", "umount2", "pivot_root",
    "unshare_newuser", "unshare_newns", "unshare_newnet", "clone_newuser", "clone_newns", "setns",
    "kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "acct",
    "clock_settime", "settimeofday", "adjtimex", "clock_adjtime",
    "open_by_handle_at", "name_to_handle_at", "personality_linux32", "modify_ldt", "uselib", "syslog",
    "quotactl", "quotactl_fd", "lookup_dcookie",
    "ioctl_tiocsti", "ioctl_tiocsti_high", "ioctl_tioclinux",
    "socket_packet", "socket_netlink", "socket_bluetooth",
)
# calls of another ABI than x86_64: refused (EPERM/ENOSYS, or the program killed by SIGSYS)
FOREIGN_ABI = ("x32_getpid", "int80_getpid")
# what the report's blocked_syscall["text"] must contain for these (the decoded constants)
DESCRIBED = {
    "ptrace": "ptrace(PTRACE_ATTACH, 1",
    "ioctl_tiocsti": "TIOCSTI",
    "ioctl_tioclinux": "TIOCLINUX",
    "clone_newuser": "CLONE_NEWUSER",
    "clone_newns": "CLONE_NEWNS",
    "unshare_newuser": "CLONE_NEWUSER",
    "unshare_newns": "CLONE_NEWNS",
    "unshare_newnet": "CLONE_NEWNET",
    "socket_packet": "AF_PACKET",
    "socket_netlink": "AF_NETLINK",
    "socket_bluetooth": "AF_BLUETOOTH",
    "personality_linux32": "PER_LINUX32",
}
# calls each policy must let through; their answer is then the kernel's (as under --seccomp none)
ALLOWED = {
    "default": ("allowed_getppid", "allowed_socket_unix", "allowed_socket_inet", "allowed_ioctl_tcgets",
                "allowed_personality_query"),
    "strict": ("allowed_getppid", "allowed_socket_unix", "allowed_ioctl_tcgets", "allowed_personality_query"),
}


@dataclass(frozen=True)
class Call:
    """One probe line: the syscall ``name`` (x86_64, libseccomp's spelling), its number ``nr``,
    the raw return value ``ret`` and ``err`` (errno; 0 when ret >= 0)."""
    label: str
    name: str
    nr: int
    ret: int
    err: int

    def __str__(self) -> str:
        e = errno.errorcode.get(self.err, str(self.err)) if self.err else "-"
        return f"{self.label}: {self.name}(nr {self.nr}) = {self.ret} ({e})"


def parse_probe(stdout: bytes) -> dict[str, Call]:
    """Parse the probe's output into {label: Call}."""
    calls = {}
    for line in stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 5:
            raise AssertionError(f"unexpected probe line {line!r} in {stdout!r}")
        label, name, nr, ret, err = parts
        calls[label] = Call(label, name, int(nr), int(ret), int(err))
    return calls


@dataclass
class ProbeRun:
    """A probe run through jailpy: the process, the --report document, and the probe's answers."""
    proc: subprocess.CompletedProcess
    report: dict
    calls: dict[str, Call]
    before_report: bytes  # stderr before the JSON report (the program's stderr, jailpy's log lines)

    def why(self) -> str:
        """Everything a failure message needs."""
        return (f"exit {self.proc.returncode}; calls: {[str(c) for c in self.calls.values()]}; "
                f"verdict {self.report.get('verdict')}; blocked_syscall {self.report.get('blocked_syscall')}; "
                f"seccomp_log {self.report.get('seccomp_log')}; stderr {self.before_report[-800:]!r}")


class Probe:
    """The compiled probe in a directory readable by the sandbox's ids (0755)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.path = directory / "syscall_probe"

    def run(self, seccomp: str | None, *labels: str, extra: tuple[str, ...] = ()) -> ProbeRun:
        """Run ``jailpy exec --report - [--seccomp SECCOMP] EXTRA -- probe LABELS...``.
        ``seccomp=None`` gives no --seccomp flag (jailpy's default)."""
        flags = ["--report", "-", "--wall-time", PROBE_WALL_TIME, "--ro-bind", str(self.dir)]
        if seccomp is not None:
            flags += ["--seccomp", seccomp]
        p = jail(*flags, *extra, "--", str(self.path), *labels)
        assert b"jailpy: error" not in p.stderr, p.stderr
        before, report = last_json(p.stderr)
        return ProbeRun(p, report, parse_probe(p.stdout), before)


def _compile(src: Path, out: Path, *flags: str, compiler: str = "gcc") -> None:
    p = subprocess.run([compiler, "-O1", "-Wall", "-o", str(out), str(src), *flags],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, f"{compiler} {src.name} {flags}: {p.stderr.decode()}"
    os.chmod(out, 0o755)


def shared_tmp_dir(tmp_path_factory, name: str) -> Path:
    """A session tmp dir the sandbox's ids can read (they are not the test's uid)."""
    d = tmp_path_factory.mktemp(name)
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="session")
def probe(tmp_path_factory) -> Probe:
    """tests/probes/syscall_probe.c compiled with gcc (dynamically linked) into a session tmp dir."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (tests/run.sh installs gcc and libc6-dev)")
    d = shared_tmp_dir(tmp_path_factory, "seccomp-probe")
    _compile(PROBE_SRC, d / "syscall_probe")
    return Probe(d)


def seccomp_cli(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``jailpy seccomp ARGS...`` (show, compile)."""
    return subprocess.run([*SECCOMP_CLI, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, cwd=REPO)


def assert_one_line_error(p: subprocess.CompletedProcess, *words: str) -> str:
    """jailpy's own error: exit 125, nothing on stdout, one line ``jailpy: error: ...`` naming ``words``."""
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 125, (p.returncode, err)
    assert p.stdout == b"", f"the program ran: {p.stdout!r}"
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    assert err.startswith("jailpy: error:"), err
    for w in words:
        assert w in err, f"{w!r} not named in {err!r}"
    return err


def report_json(p: subprocess.CompletedProcess) -> dict:
    """The --report - document at the end of stderr."""
    return last_json(p.stderr)[1]


def blocked_summary(report: dict) -> str:
    """A short description of what the report says was blocked (for assertion messages)."""
    b = report.get("blocked_syscall")
    log = report.get("seccomp_log")
    return json.dumps({"verdict": report.get("verdict"), "blocked_syscall": b, "seccomp_log": log})


def write_kill_policy(directory: Path, syscall: str, *, deny_eacces: str = "pidfd_getfd") -> Path:
    """A TOML seccomp policy (the format of policies/seccomp/*.toml) in ``directory``: the shipped
    ``default`` plus ``action = "kill"`` for ``syscall`` and a denial answered EACCES (not EPERM)
    for ``deny_eacces``.  Returns its path."""
    path = directory / "kill-policy.toml"
    path.write_text(
        'include = ["default"]\n'
        "\n[[rules]]\n"
        'group = "test-kill"\n'
        'why = "the kill-rule test: the probe makes this call on purpose"\n'
        'action = "kill"\n'
        f'syscalls = ["{syscall}"]\n'
        "\n[[rules]]\n"
        'group = "test-errno"\n'
        'why = "a denial answered with another errno than EPERM"\n'
        'action = "deny"\n'
        'errno = "EACCES"\n'
        f'syscalls = ["{deny_eacces}"]\n')
    os.chmod(path, 0o644)
    return path


# ------------------------------------------------------------------ runtimes ----

def policy_flags(policy: str) -> list[str]:
    """The jailpy flags for ``policy`` ("none" included)."""
    return ["--seccomp", policy]


def run_under(policy: str, argv: list[str], *extra: str,
              timeout: float = TIMEOUT) -> tuple[subprocess.CompletedProcess, dict]:
    """``jailpy exec --report - --seccomp POLICY EXTRA -- ARGV``: (process, report)."""
    p = jail("--report", "-", *policy_flags(policy), *extra, "--", *argv, timeout=timeout)
    assert b"jailpy: error" not in p.stderr, p.stderr
    return p, last_json(p.stderr)[1]


_HAS_LANDLOCK = _landlock.abi_or_reason()[0] > 0


def assert_ran(p: subprocess.CompletedProcess, report: dict, policy: str, stdout: bytes) -> None:
    """The program exited 0 with exactly ``stdout``, verdict OK, under ``policy``."""
    why = f"exit {p.returncode}; stderr {p.stderr[-1500:]!r}; {blocked_summary(report)}"
    assert p.returncode == 0 and report["verdict"] == "OK", why
    assert p.stdout == stdout, why
    ll = report["protections"]["landlock"]  # every runtime also runs under Landlock where the kernel has it
    assert ll["applied"] == _HAS_LANDLOCK, ll
    sc = report["protections"]["seccomp"]
    if policy == "none":
        assert sc is None, sc
    else:
        assert sc is not None and sc["policy"] == policy, sc


class Programs:
    """Compiled test programs in a directory the sandbox's ids can read; attributes are paths or
    None, with ``missing[name]`` saying why a program could not be built."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.missing: dict[str, str] = {}
        self.paths: dict[str, Path] = {}

    def get(self, name: str) -> Path:
        """The program's path, or pytest.skip with the reason it is missing."""
        if name not in self.paths:
            pytest.skip(self.missing.get(name, f"{name} was not built"))
        return self.paths[name]


def _try_build(progs: Programs, name: str, compiler: str, src: Path, *flags: str, package: str) -> None:
    if shutil.which(compiler) is None:
        progs.missing[name] = f"{compiler} is not installed (apt-get install {package})"
        return
    out = progs.dir / name
    p = subprocess.run([compiler, "-O1", "-o", str(out), str(src), *flags], capture_output=True, timeout=180)
    if p.returncode != 0:
        progs.missing[name] = f"{compiler} {' '.join(flags)} failed (apt-get install {package}): " \
                              f"{p.stderr.decode(errors='replace')[-300:]}"
        return
    os.chmod(out, 0o755)
    progs.paths[name] = out


@pytest.fixture(scope="session")
def programs(tmp_path_factory) -> Programs:
    """hello.c and hello.cpp built dynamic and static, Hello.java compiled, hello.go built without
    cgo (when gcc, g++, javac, go exist), in a session tmp dir."""
    progs = Programs(shared_tmp_dir(tmp_path_factory, "seccomp-programs"))
    _try_build(progs, "hello_c", "gcc", PROBES / "hello.c", package="gcc libc6-dev")
    _try_build(progs, "hello_c_static", "gcc", PROBES / "hello.c", "-static", package="gcc libc6-dev")
    _try_build(progs, "hello_cpp", "g++", PROBES / "hello.cpp", package="g++")
    _try_build(progs, "hello_cpp_static", "g++", PROBES / "hello.cpp", "-static", package="g++ (libstdc++-12-dev)")
    if shutil.which("java") is None:
        progs.missing["java"] = "java is not installed (apt-get install default-jre-headless)"
    elif shutil.which("javac") is None:
        progs.missing["java"] = "javac is not installed (apt-get install default-jdk-headless)"
    else:
        p = subprocess.run(["javac", "-d", str(progs.dir), str(PROBES / "Hello.java")], capture_output=True,
                           timeout=180)
        if p.returncode == 0:
            os.chmod(progs.dir / "Hello.class", 0o644)
            progs.paths["java"] = progs.dir / "Hello.class"
        else:
            progs.missing["java"] = f"javac failed: {p.stderr.decode(errors='replace')[-300:]}"
    if shutil.which("go") is None:
        progs.missing["hello_go"] = "go is not installed (apt-get install golang-go)"
    else:
        work = progs.dir / "go-work"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "GOCACHE": str(work / "cache"),
               "GOPATH": str(work / "gopath"), "CGO_ENABLED": "0", "GO111MODULE": "off"}
        out = progs.dir / "hello_go"
        p = subprocess.run(["go", "build", "-o", str(out), str(PROBES / "hello.go")], capture_output=True,
                           timeout=300, env=env, cwd=progs.dir)
        shutil.rmtree(work, ignore_errors=True)
        if p.returncode == 0:
            os.chmod(out, 0o755)
            progs.paths["hello_go"] = out
        else:
            progs.missing["hello_go"] = f"go build failed: {p.stderr.decode(errors='replace')[-300:]}"
    if shutil.which("node") is None:
        progs.missing["node"] = "node is not installed (apt-get install nodejs)"
    else:
        progs.paths["node"] = Path(shutil.which("node"))
    return progs


__all__ = ["ALLOWED", "Call", "DENIED", "DESCRIBED", "FOREIGN_ABI", "JAILPY", "PROBES", "Probe", "ProbeRun",
           "Programs", "SHIPPED_POLICIES", "assert_one_line_error", "assert_ran", "blocked_summary", "parse_probe",
           "policy_flags", "probe", "programs", "report_json", "run_under", "seccomp_cli", "shared_tmp_dir",
           "write_kill_policy"]
