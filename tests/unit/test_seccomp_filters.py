"""jailpy.seccomp: loading policies, compiling them, and real filters on the real kernel.

Filters are installed only in forked children (os.fork; the child sets no_new_privs, installs
the filter, probes and reports through a pipe, then os._exit), never in the pytest process.
Probes use harmless arguments: an invalid fd, a pid that does not exist, flag combinations the
kernel rejects with EINVAL, so a call that the filter let through fails without effect.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jailpy import _syscalls as sc
from jailpy import seccomp
from jailpy.seccomp import cache as seccomp_cache
from jailpy.seccomp import language
from jailpy.errors import PolicyError

REPO = Path(__file__).resolve().parents[2]
PYTHON3 = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
NR = {"getpid": 39, "ptrace": 101, "ioctl": 16, "clone": 56, "unshare": 272, "socket": 41, "personality": 135,
      "clone3": 435, "statmount": 457, "file_setattr": 469, "getcwd": 79, "uname": 63}
NO_SUCH_PID = 0x3FFFFFFF  # above pid_max: PTRACE_ATTACH fails with ESRCH, never attaches
TIOCSTI = 0x5412
SHIPPED = ["default", "strict", "docker-like"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own seccomp cache dir and an empty in-memory cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seccomp_cache._MEMO.clear()
    yield
    seccomp_cache._MEMO.clear()


# ------------------------------------------------------------------ helpers ----

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def raw(nr: int, *args: int) -> tuple[int, int]:
    """syscall(2) in this process: (return value, errno or 0)."""
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a & (2**64 - 1)) for a in args])
    return ret, (ctypes.get_errno() if ret == -1 else 0)


class Run:
    """What a filtered child did: exit status, its output (JSON for probes, bytes for programs),
    and the notifications the parent received, with the decisions."""

    def __init__(self, status: int, output: bytes, notes: list):
        self.status = status
        self.output = output
        self.notes = notes

    @property
    def result(self):
        return json.loads(self.output) if self.output else None

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None

    @property
    def exit_code(self) -> int | None:
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None

    def names(self) -> list[str]:
        return [d.name for _, d in self.notes]


def _answer_as_decided(filt):
    def on_notify(lfd, notif, pid):
        d = filt.decide(notif.nr, notif.args)
        if seccomp.answer(lfd, notif, d):
            os.kill(pid, signal.SIGKILL)
        return d
    return on_notify


def run_filtered(bpf: bytes, listener: bool, body, on_notify=None, timeout: float = 60.0) -> Run:
    """Fork; the child sets no_new_privs, installs ``bpf`` (with a listener it hands over through
    SCM_RIGHTS), then runs ``body(w)`` which writes its output to fd ``w``, and exits 0.  The parent
    answers each notification with ``on_notify(listener_fd, notif, pid) -> Decision`` until the
    child has exited."""
    a, b = socket.socketpair()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            a.close()
            os.close(r)
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
            fd = seccomp.install(bpf, listener)
            if fd is not None:
                socket.send_fds(b, [b"L"], [fd])
                os.close(fd)
            b.close()
            body(w)
        except BaseException as e:  # noqa: BLE001
            code = 3
            try:
                os.write(w, json.dumps({"exception": repr(e)}).encode())
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)
    b.close()
    os.close(w)
    lfd = None
    if listener:
        _, fds, _, _ = socket.recv_fds(a, 1, 1)
        lfd = fds[0] if fds else None
    a.close()
    notes, out, status = [], bytearray(), None
    deadline = time.monotonic() + timeout
    try:
        while status is None or r is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"filtered child still running after {timeout} s; notifications: {notes}")
            p = select.poll()
            if r is not None:
                p.register(r, select.POLLIN)
            if lfd is not None:
                p.register(lfd, select.POLLIN)
            for fd, ev in p.poll(50):
                if fd == lfd and ev & select.POLLIN:
                    n = seccomp.receive(lfd)
                    if n is not None:
                        notes.append((n, (on_notify or _default_deny)(lfd, n, pid)))
                elif fd == lfd and ev & (select.POLLHUP | select.POLLERR):
                    os.close(lfd)
                    lfd = None
                elif fd == r:
                    chunk = os.read(r, 65536)
                    if chunk:
                        out += chunk
                    else:
                        os.close(r)
                        r = None
            if status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for fd in (r, lfd):
            if fd is not None:
                os.close(fd)
    return Run(status, bytes(out), notes)


def _default_deny(lfd, notif, pid):
    seccomp.respond(lfd, notif.id, error=errno.EPERM)
    return seccomp.Decision("errno", errno.EPERM, seccomp.syscall_name(notif.nr))


def probe(filt, calls: list[tuple], on_notify=None) -> Run:
    """Run raw syscalls ``calls`` [(nr, args...), ...] under ``filt`` in a child; result: [[ret, errno], ...]."""
    def body(w):
        os.write(w, json.dumps([list(raw(*c)) for c in calls]).encode())
    return run_filtered(filt.bpf, filt.notify, body, on_notify or _answer_as_decided(filt))


def run_program(filt, argv: list[str], on_notify=None, timeout: float = 60.0) -> Run:
    """execv ``argv`` under ``filt`` (installed before exec); output: its stdout and stderr."""
    def body(w):
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.execv(argv[0], argv)
    return run_filtered(filt.bpf, filt.notify, body, on_notify or _answer_as_decided(filt), timeout)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


# ------------------------------------------------------------------ loading ----

@pytest.mark.parametrize("text,needle", [
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["ptrce"]\n',
     "unknown syscall 'ptrce'"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["vm86"]\n',
     "not an x86_64 syscall"),
    ('known_max_nr = 469\ndefault_action = "allow"\ncolour = 1\n', "colour: unknown key"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["ptrace"]\nwhy = "x"\n'
     'errnos = 1\n', "errnos: unknown key"),
    ('known_max_nr = 469\ndefault_action = "permit"\n', "default_action: expected one of"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "block"\nsyscalls = ["ptrace"]\n',
     "action: expected one of"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "errno"\nsyscalls = ["ptrace"]\n',
     "errno: action errno needs an errno"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nerrno = "EWHAT"\n'
     'syscalls = ["ptrace"]\n', "errno: expected an errno name"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "kill"\nerrno = 1\nsyscalls = ["ptrace"]\n',
     "only deny and errno rules take an errno"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["socket"]\n'
     'when = "arg7 == 1"\n', "cannot read condition"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["socket"]\n'
     'when = "arg0 == AF_NOPE"\n', "unknown value 'AF_NOPE'"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["socket"]\n'
     'when = "arg0 > 1 and arg0 < 5"\n', "arg0 appears twice"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["socket"]\n'
     'when = "arg0 & 0xf == 0x10"\n', "can never match"),
    ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["socket"]\n'
     '[[rules]]\naction = "kill"\nsyscalls = ["socket"]\nwhen = "arg0 == 17"\n', "overlap with different actions"),
    ('default_action = "allow"\n', "known_max_nr: missing"),
    ('known_max_nr = 469\n', "default_action: missing"),
    ('known_max_nr = 300\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["clone3"]\n',
     "above known_max_nr 300"),
    ('known_max_nr = 469\ndefault_action = "allow"\nreport = "yes"\n', "report: expected true or false"),
    ('known_max_nr = 469\ndefault_action = "allow"\ninclude = ["no-such-policy"]\n', "no seccomp policy named"),
    ('known_max_nr = 469\ndefault_action = "allow\n', "not valid TOML"),
])
def test_bad_toml_is_one_line_naming_file_and_key(tmp_path, text, needle):
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(seccomp.SeccompError) as e:
        seccomp.load(str(path))
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg, msg
    assert isinstance(e.value, PolicyError)


def test_include_loop_is_an_error(tmp_path):
    write(tmp_path, "a.toml", 'include = ["./b.toml"]\nknown_max_nr = 469\ndefault_action = "allow"\n')
    write(tmp_path, "b.toml", 'include = ["./a.toml"]\n')
    with pytest.raises(seccomp.SeccompError, match="include loop") as e:
        seccomp.load(str(tmp_path / "a.toml"))
    assert "\n" not in str(e.value)


def test_includes_replace_rules_per_syscall_and_netlink_only_where_asked(tmp_path):
    default = seccomp.load("default")
    assert default.evaluate(NR["socket"], (16, 3, 0)) == ("deny", errno.EPERM)  # AF_NETLINK
    path = write(tmp_path, "netlink.toml", f'''
        include = ["{REPO}/policies/seccomp/default.toml"]
        [[rules]]
        action = "deny"
        syscalls = ["socket"]
        when = "arg0 not in {{AF_UNIX, AF_INET, AF_INET6, AF_NETLINK}}"
    ''')
    pol = seccomp.load(str(path))
    assert pol.evaluate(NR["socket"], (16, 3, 0)) == ("allow", 0)
    assert pol.evaluate(NR["socket"], (17, 3, 0)) == ("deny", errno.EPERM)
    assert pol.evaluate(41 + 12, (16, 1, 0, 0)) == ("deny", errno.EPERM), "socketpair keeps the included rule"
    assert pol.evaluate(NR["ptrace"]) == ("deny", errno.EPERM)
    run = probe(seccomp.prepare(str(path)), [(NR["socket"], 16, 3, 0), (NR["socket"], 17, 3, 0)])
    (nl_fd, nl_err), (pk_ret, pk_err) = run.result
    assert nl_fd >= 0 and nl_err == 0, "AF_NETLINK allowed by the policy that asks for it"
    assert (pk_ret, pk_err) == (-1, errno.EPERM) and run.names() == ["socket"]


@pytest.mark.parametrize("doc,needle", [
    ("{not json", "not valid JSON"),
    ('{"defaultAction": "SCMP_ACT_PERMIT", "syscalls": []}', "unknown action 'SCMP_ACT_PERMIT'"),
    ('{"syscalls": []}', "defaultAction: missing"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ptrce"], "action": "SCMP_ACT_ERRNO"}]}',
     "unknown syscall 'ptrce'"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_NOPE"}]}',
     "syscalls[0]: action: unknown action"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ptrace"]}]}', "action: missing"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}',
     "names: expected a non-empty list"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", '
     '"args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}', "index: expected 0 to 5"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", '
     '"args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]}', "op: expected one of"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscals": []}', "syscals: unknown key"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"], "syscalls": []}',
     "does not cover SCMP_ARCH_X86_64"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_oci_profile_names_the_problem(tmp_path, doc, needle):
    path = tmp_path / "bad.json"
    path.write_text(doc)
    with pytest.raises(seccomp.SeccompError) as e:
        seccomp.load(str(path))
    assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(seccomp.SeccompError, match=r"no seccomp policy named 'nope' \(known: .*default.*strict"):
        seccomp.load("nope")


def test_digest_is_stable_and_ignores_layout(tmp_path):
    a = seccomp.load("default")
    assert a.digest() == seccomp.load("default").digest() and a.digest().startswith("sha256:")
    # another process with another hash seed computes the same digest
    for seed in ("1", "2"):
        code = "from jailpy import seccomp; print(seccomp.load('default').digest())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60)
        assert out.stdout.strip() == a.digest(), out.stderr
    one = write(tmp_path, "one.toml", '''
        known_max_nr = 469
        default_action = "allow"
        [[rules]]
        group = "x"
        why = "a reason"
        action = "deny"
        syscalls = ["ptrace", "kcmp"]
    ''')
    two = write(tmp_path, "two.toml", '''
        # the same rules, written differently
        default_action = "allow"
        known_max_nr = 469
        [[rules]]
        action = "deny"
        errno = "EPERM"
        syscalls = ["kcmp"]
        [[rules]]
        group = "other"
        action = "deny"
        syscalls = ["ptrace"]
    ''')
    three = write(tmp_path, "three.toml", one.read_text().replace('"kcmp"', '"kcmp", "bpf"'))
    d1, d2, d3 = (seccomp.load(str(p)).digest() for p in (one, two, three))
    assert d1 == d2 and d1 != d3


def test_shipped_policies_load_and_compile():
    for name in SHIPPED:
        pol = seccomp.load(name)
        bpf = seccomp.compile_bpf(pol)
        assert len(bpf) % 8 == 0 and 0 < len(bpf) // 8 <= 4096
        assert seccomp.compile_bpf(pol) == bpf, "compilation is deterministic"
        assert pol.describe().startswith(f"seccomp policy {name}")
        assert json.loads(json.dumps(pol.to_dict()))["hash"] == pol.digest()


# ------------------------------------------------------------------ decide == BPF == policy ----

def _interesting_args(pol) -> list[tuple[int, ...]]:
    vals = {0, 1, 2, 0xFFFFFFFF, 2**64 - 1, 1 << 32}
    for r in pol.rules:
        for alt in r.alternatives or ():
            for _, _, a, b in alt:
                for v in (a, b):
                    vals |= {v, (v + 1) % 2**64, (v - 1) % 2**64, v | (1 << 32), v | 1 << 63}
    rnd = random.Random(4)
    vals = sorted(vals)
    return [tuple(rnd.choice(vals) for _ in range(6)) for _ in range(60)] + [(v,) * 6 for v in vals]


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("log", [False, True])
def test_decide_runs_the_bpf_and_agrees_with_the_policy(name, log):
    pol = seccomp.load(name)
    filt = seccomp.prepare(name, log=log)
    nrs = sorted({r.nr for r in pol.rules} | {0, 39, 60, 101, 200, 334, 456, 462, 469, 470, 1000})
    for nr in nrs:
        for args in _interesting_args(pol)[:80]:
            action, err = pol.evaluate(nr, args)
            d = filt.decide(nr, args)
            if action == "allow" or action == "errno":
                assert (d.action, d.errno, d.notified) == (action, err, False), (nr, args, d)
            elif log:
                assert (d.action, d.would, d.notified) == ("log", "kill" if action == "kill" else
                                                            None if action == "log" else "errno", True), (nr, args, d)
            elif action == "deny":
                assert (d.action, d.errno, d.notified) == ("errno", err, True), (nr, args, d)
            else:
                assert (d.action, d.notified) == (action, True), (nr, args, d)


def test_conditions_parse_into_libseccomp_comparisons():
    assert seccomp.parse_condition("low32(arg1) == TIOCSTI") == [((1, "&==", 0xFFFFFFFF, TIOCSTI),)]
    alts = seccomp.parse_condition("arg0 & CLONE_NEWUSER|CLONE_NEWNS != 0")
    assert sorted(alts) == [((0, "&==", 0x20000, 0x20000),), ((0, "&==", 0x10000000, 0x10000000),)]
    alts = seccomp.parse_condition("arg0 not in {AF_UNIX, AF_INET, AF_INET6}")
    match = lambda v: any(all(language._cmp_match(c, (v,) + (0,) * 5) for c in a) for a in alts)  # noqa: E731
    assert [v for v in range(64) if not match(v)] == [1, 2, 10] and match(2**64 - 1) and match(1 << 32 | 1)
    alts = seccomp.parse_condition("low32(arg0) not in {0, 0xffffffff} and arg1 == 3")
    match = lambda v, w: any(all(language._cmp_match(c, (v, w, 0, 0, 0, 0)) for c in a) for a in alts)  # noqa: E731
    assert not match(0, 3) and not match(0xFFFFFFFF, 3) and not match(1 << 32, 3) and match(8, 3) and not match(8, 4)
    assert match(0xFFFFFFFE, 3) and match(0x80000000, 3) and match((1 << 40) | 0x400000, 3)


def test_overlap_check_agrees_with_brute_force():
    rnd = random.Random(7)
    ops = ["==", "!=", "<", "<=", ">", ">=", "&=="]
    for _ in range(3000):
        cmps = []
        for _ in range(2):
            op = rnd.choice(ops)
            if op == "&==":
                m = rnd.randrange(64)
                cmps.append((0, op, m, rnd.randrange(64) & m))
            else:
                cmps.append((0, op, rnd.randrange(1, 63), 0))
        p, q = (c,), (d,) = [(c,) for c in cmps]
        brute = any(language._cmp_match(c, (x,) + (0,) * 5) and language._cmp_match(d, (x,) + (0,) * 5)
                    for x in list(range(130)) + [2**64 - 1, 2**63, 2**32])
        assert language._alts_overlap(p, q) == brute, (c, d)


# ------------------------------------------------------------------ real filters ----

def test_enosys_stub_for_syscalls_newer_than_the_policy(tmp_path):
    filt = seccomp.prepare("default")
    run = probe(filt, [(1000,), (470,), (NR["getpid"],), (NR["clone3"], 0, 0), (NR["statmount"], 0, 0, 0, 0),
                       (NR["file_setattr"], 2**32 - 1, 0, 0, 0, 0)])
    r1000, r470, (pid, perr), clone3, statmount, (_, fs_err) = run.result
    assert r1000 == [-1, errno.ENOSYS] and r470 == [-1, errno.ENOSYS]
    assert pid > 0 and perr == 0, "a known, allowed syscall still works"
    assert clone3 == [-1, errno.ENOSYS] and statmount == [-1, errno.ENOSYS]
    assert fs_err not in (0, errno.ENOSYS, errno.EPERM), "469 (file_setattr) is known and allowed: the kernel answers"
    assert run.notes == [], "ENOSYS is answered in BPF, without a notification"
    # a policy written for an older kernel: getrandom (318) is "newer" and gets ENOSYS, getpid works
    old = write(tmp_path, "old.toml", 'known_max_nr = 300\ndefault_action = "allow"\n')
    run = probe(seccomp.prepare(str(old)), [(318, 0, 0, 0), (NR["getpid"],)])
    assert run.result[0] == [-1, errno.ENOSYS] and run.result[1][0] > 0
    # under a deny-by-default policy, unknown numbers get ENOSYS from the stub, not the default denial
    run = probe(seccomp.prepare("strict"), [(1000,), (470,), (NR["clone3"], 0, 0), (NR["getpid"],)])
    assert run.result[:3] == [[-1, errno.ENOSYS]] * 3 and run.result[3][0] > 0 and run.notes == []


def test_denied_call_is_notified_and_answered(tmp_path):
    filt = seccomp.prepare("default")
    assert filt.notify
    seen = []

    def answer(lfd, notif, pid):
        seen.append(notif)
        d = filt.decide(notif.nr, notif.args)
        seccomp.respond(lfd, notif.id, error=errno.EPERM if len(seen) == 1 else errno.EACCES)
        return d

    run = probe(filt, [(NR["ptrace"], 16, NO_SUCH_PID, 0, 0), (NR["ptrace"], 16, NO_SUCH_PID, 0, 0)], answer)
    assert run.result == [[-1, errno.EPERM], [-1, errno.EACCES]], "the child gets the errno the supervisor answers"
    n = seen[0]
    assert n.nr == NR["ptrace"] and n.arch == sc.AUDIT_ARCH_X86_64 and n.args[:4] == (16, NO_SUCH_PID, 0, 0)
    assert n.pid > 0 and len(n.args) == 6
    d = run.notes[0][1]
    assert (d.action, d.errno, d.name) == ("errno", errno.EPERM, "ptrace")
    assert seccomp.describe(n.nr, n.args) == f"ptrace(PTRACE_ATTACH, {NO_SUCH_PID}, 0x0, 0x0)"
    rec = seccomp.blocked_record(n, d, 2)
    assert rec == {"name": "ptrace", "nr": 101, "args": list(n.args), "action": "errno", "errno": 1,
                   "text": f"ptrace(PTRACE_ATTACH, {NO_SUCH_PID}, 0x0, 0x0)", "count": 2}


def test_continue_lets_the_call_run():
    filt = seccomp.prepare("default")

    def cont(lfd, notif, pid):
        seccomp.respond(lfd, notif.id, cont=True)
        return filt.decide(notif.nr, notif.args)

    run = probe(filt, [(NR["ptrace"], 16, NO_SUCH_PID, 0, 0)], cont)
    assert run.result == [[-1, errno.ESRCH]], "the kernel ran ptrace: no such process"
    assert run.names() == ["ptrace"]
    with pytest.raises(ValueError):
        seccomp.respond(0, 1)


def test_answering_a_notification_of_a_dead_task_is_not_an_error():
    filt = seccomp.prepare("default")
    valid = []

    def kill_then_answer(lfd, notif, pid):
        valid.append(sc.seccomp_notif_id_valid(lfd, notif.id))
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            if not sc.seccomp_notif_id_valid(lfd, notif.id):
                break
            time.sleep(0.01)
        valid.append(sc.seccomp_notif_id_valid(lfd, notif.id))
        seccomp.respond(lfd, notif.id, error=errno.EPERM)  # ENOENT inside: ignored
        return filt.decide(notif.nr, notif.args)

    run = probe(filt, [(NR["ptrace"], 16, NO_SUCH_PID, 0, 0)], kill_then_answer)
    assert run.signal == signal.SIGKILL and valid == [True, False]


def test_permissive_log_filter_continues_and_says_what_would_have_happened():
    filt = seccomp.prepare("default", log=True)
    assert filt.permissive and filt.notify
    run = probe(filt, [(NR["ptrace"], 16, NO_SUCH_PID, 0, 0), (NR["clone3"], 0, 0), (1000,)])
    assert run.result == [[-1, errno.ESRCH], [-1, errno.ENOSYS], [-1, errno.ENOSYS]]
    (n, d), = run.notes
    assert (d.action, d.would, d.errno) == ("log", "errno", errno.EPERM)
    assert seccomp.blocked_record(n, d, 1)["action"] == "errno"


def test_ioctl_tiocsti_caught_on_the_low_32_bits():
    filt = seccomp.prepare("default")
    run = probe(filt, [(NR["ioctl"], 2**32 - 1, TIOCSTI, 0), (NR["ioctl"], 2**32 - 1, (1 << 32) | TIOCSTI, 0),
                       (NR["ioctl"], 2**32 - 1, 0x541C, 0), (NR["ioctl"], 2**32 - 1, 0x5401, 0)])
    assert run.result == [[-1, errno.EPERM]] * 3 + [[-1, errno.EBADF]], "TCGETS on fd -1 reaches the kernel"
    assert [n.args[1] for n, _ in run.notes] == [TIOCSTI, (1 << 32) | TIOCSTI, 0x541C]
    assert seccomp.describe(16, run.notes[1][0].args).startswith("ioctl(-1, 0x100005412 (TIOCSTI)")


@pytest.mark.parametrize("name", ["default", "strict"])
def test_namespace_flags_denied_for_clone_and_unshare(name):
    filt = seccomp.prepare(name)
    newuser_fs = 0x10000000 | 0x200  # CLONE_NEWUSER|CLONE_FS: the kernel says EINVAL before creating anything
    run = probe(filt, [(NR["clone"], newuser_fs, 0, 0, 0, 0), (NR["clone"], 0x20000 | 0x200, 0, 0, 0, 0),
                       (NR["unshare"], 0x10000000), (NR["unshare"], 0x80)])
    assert run.result == [[-1, errno.EPERM]] * 4, run.result
    assert run.names() == ["clone", "clone", "unshare", "unshare"]
    assert seccomp.describe(NR["clone"], run.notes[0][0].args).startswith("clone(CLONE_FS|CLONE_NEWUSER, 0x0")
    # without the filter the same clone is refused by the kernel itself (it never creates a child)
    assert raw(NR["clone"], newuser_fs, 0, 0, 0, 0) == (-1, errno.EINVAL)


def test_unshare_without_namespace_flags_stays_allowed_under_default():
    run = probe(seccomp.prepare("default"), [(NR["unshare"], 0), (NR["unshare"], 0x400)])  # 0, CLONE_FILES
    assert run.result == [[0, 0], [0, 0]] and run.notes == []


@pytest.mark.parametrize("name", ["default", "strict"])
def test_socket_families(name):
    af_packet, af_bluetooth, af_netlink = 17, 31, 16
    run = probe(seccomp.prepare(name), [(NR["socket"], af_packet, 3, 0), (NR["socket"], af_bluetooth, 1, 0),
                                        (NR["socket"], af_netlink, 3, 0), (NR["socket"], 1, 1, 0),
                                        (NR["socket"], (1 << 32) | af_packet, 3, 0)])
    packet, bt, netlink, unix, high = run.result
    assert packet == bt == netlink == high == [-1, errno.EPERM]
    assert unix[0] >= 0 and unix[1] == 0, "AF_UNIX is allowed"
    assert run.names() == ["socket"] * 4
    assert seccomp.describe(NR["socket"], run.notes[0][0].args) == "socket(AF_PACKET, SOCK_RAW, 0)"


def test_personality_beyond_the_defaults(tmp_path):
    run = probe(seccomp.prepare("default"), [(NR["personality"], 0xFFFFFFFF), (NR["personality"], 0),
                                             (NR["personality"], 0x0400000), (NR["personality"], 0xFFFFFFFF)])
    query, set0, rie, after = run.result
    assert query[1] == 0 and set0[1] == 0 and rie == [-1, errno.EPERM] and after == [0, 0]
    assert seccomp.describe(NR["personality"], run.notes[0][0].args) == "personality(READ_IMPLIES_EXEC)"


def _int80_probe(tmp_path: Path) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    src = tmp_path / "int80.c"
    src.write_text(textwrap.dedent(r"""
        #include <stdio.h>
        #include <unistd.h>
        int main(void) {
            long ret;
            __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(20L) : "memory");  /* i386 getpid */
            printf("%ld %d\n", ret, (int)getpid());
            return 0;
        }
    """))
    exe = tmp_path / "int80"
    subprocess.run(["gcc", "-O0", "-o", str(exe), str(src)], check=True, capture_output=True, timeout=60)
    return exe


@pytest.mark.parametrize("name", SHIPPED)
def test_non_native_syscalls_kill_the_process(tmp_path, name):
    filt = seccomp.prepare(name)
    exe = _int80_probe(tmp_path)
    plain = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    if plain.returncode != 0:
        pytest.skip(f"int 0x80 does not work on this kernel even unfiltered (status {plain.returncode})")
    ret, pid = plain.stdout.split()
    assert ret == pid, "unfiltered, int 0x80 getpid works: the probe is real"
    run = run_program(filt, [str(exe)])
    assert run.signal == signal.SIGSYS and run.output == b"" and run.notes == []
    # x32: getpid with the x32 bit; unfiltered this kernel answers ENOSYS (x32 ABI off) or the pid
    run = probe(filt, [(sc.X32_SYSCALL_BIT | 39,)])
    assert run.signal == signal.SIGSYS and run.result is None


def test_kill_rule_is_notified_and_report_false_kills_in_bpf(tmp_path):
    text = '''
        known_max_nr = 469
        default_action = "allow"
        report = {report}
        [[rules]]
        action = "kill"
        syscalls = ["uname"]
        [[rules]]
        action = "deny"
        errno = "EACCES"
        syscalls = ["getcwd"]
    '''
    reported = write(tmp_path, "kill.toml", text.format(report="true"))
    filt = seccomp.prepare(str(reported))
    run = probe(filt, [(NR["getcwd"], 0, 0), (NR["uname"], 0)])
    assert run.signal == signal.SIGKILL, "the parent killed it as the decision said"
    assert [(d.action, d.errno, d.name) for _, d in run.notes] == [("errno", errno.EACCES, "getcwd"),
                                                                   ("kill", 0, "uname")]
    assert seccomp.blocked_record(run.notes[1][0], run.notes[1][1], 1)["errno"] is None
    plain = write(tmp_path, "plain.toml", text.format(report="false"))
    filt = seccomp.prepare(str(plain))
    assert not filt.notify
    run = probe(filt, [(NR["getcwd"], 0, 0)])
    assert run.result == [[-1, errno.EACCES]] and run.notes == []
    run = probe(filt, [(NR["uname"], 0)])
    assert run.signal == signal.SIGSYS


# ------------------------------------------------------------------ cache ----

def test_cached_bpf_equals_fresh_and_is_private(tmp_path):
    for name in ("default", "strict"):
        for log in (False, True):
            filt = seccomp.prepare(name, log=log)
            assert filt.bpf == seccomp.compile_bpf(seccomp.load(name), log=log)
    files = list(seccomp.cache_dir().glob("*.bpf"))
    assert len(files) == 4 and len(list(seccomp.cache_dir().glob("src-*.json"))) == 4
    assert stat.S_IMODE(seccomp.cache_dir().stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    seccomp_cache._MEMO.clear()
    before = {f: f.stat().st_mtime_ns for f in files}
    again = seccomp.prepare("strict")
    assert again.bpf == seccomp.compile_bpf(seccomp.load("strict"))
    assert {f: f.stat().st_mtime_ns for f in files} == before, "a cache hit rewrites nothing"


def test_cache_hit_parses_no_toml_and_loads_no_libseccomp(tmp_path):
    code = ("import sys; from jailpy import seccomp; f = seccomp.prepare('strict'); "
            "print(f.digest, len(f.bpf), 'pyseccomp' in sys.modules, 'tomllib' in sys.modules)")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                           timeout=60).stdout.split() for _ in range(2)]
    digest = seccomp.load("strict").digest()
    assert outs[0][:1] == [digest] and outs[0][2:] == ["True", "True"], "the first run compiles"
    assert outs[1][:2] == outs[0][:2] and outs[1][2:] == ["False", "False"], "the second only reads the cache"


def test_editing_an_included_file_invalidates_the_disk_cache(tmp_path):
    write(tmp_path, "set.toml", '[[rules]]\naction = "deny"\nsyscalls = ["kcmp"]\n')
    top = write(tmp_path, "top.toml", 'include = ["./set.toml"]\nknown_max_nr = 469\ndefault_action = "allow"\n')
    a = seccomp.prepare(str(top))
    seccomp_cache._MEMO.clear()
    assert seccomp.prepare(str(top)).digest == a.digest
    write(tmp_path, "set.toml", '[[rules]]\naction = "deny"\nsyscalls = ["bpf"]\n')
    seccomp_cache._MEMO.clear()
    b = seccomp.prepare(str(top))
    assert b.digest != a.digest and b.decide(321, (0,) * 6).action == "errno"  # bpf
    assert b.decide(312, (0,) * 6).action == "allow"  # kcmp


@pytest.mark.parametrize("where", ["jailpy", "seccomp"])
def test_the_cache_is_never_written_or_read_through_a_planted_symlink(tmp_path, where):
    # issue 10 item 2: files jailpy writes on the caller's behalf are never redirected by a link
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    cache = tmp_path / "cache" / "jailpy"
    cache.parent.mkdir()
    if where == "jailpy":
        cache.symlink_to(victim)
    else:
        cache.mkdir(mode=0o700)
        (cache / "seccomp").symlink_to(victim)
    filt = seccomp.prepare("strict")
    assert filt.bpf == seccomp.compile_bpf(seccomp.load("strict"))
    assert list(victim.iterdir()) == [], "the cache was written through the link"


def _only_cache_file() -> Path:
    (f,) = seccomp.cache_dir().glob("*.bpf")
    return f


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "group-writable"])
def test_damaged_cache_entry_is_recompiled(tmp_path, damage):
    fresh = seccomp.prepare("default").bpf
    f = _only_cache_file()
    data = bytearray(f.read_bytes())
    if damage == "flip":
        data[100] ^= 0x04  # e.g. a jump offset: a still well-formed but different filter
        f.write_bytes(bytes(data))
    elif damage == "truncate":
        f.write_bytes(bytes(data[:-8]))
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        f.chmod(0o620)
    seccomp_cache._MEMO.clear()
    assert seccomp.prepare("default").bpf == fresh
    if damage != "group-writable":
        assert f.read_bytes()[:-32] == fresh, "the damaged entry was rewritten"


def test_in_memory_cache_sees_policy_edits(tmp_path):
    p = write(tmp_path, "p.toml", 'known_max_nr = 469\ndefault_action = "allow"\n')
    a = seccomp.prepare(str(p))
    assert seccomp.prepare(str(p)) is a
    time.sleep(0.01)
    p.write_text('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["kcmp"]\n')
    b = seccomp.prepare(str(p))
    assert b.digest != a.digest and b.notify and not a.notify


# ------------------------------------------------------------------ OCI profiles ----

def test_docker_like_profile_loads_and_behaves():
    pol = seccomp.load("docker-like")
    assert pol.default_action == "deny" and pol.known_max_nr == 456  # the newest syscall it names
    assert any("SCMP_ARCH_X86" in n for n in pol.notes)
    filt = seccomp.prepare("docker-like")
    vsock, unix = 40, 1
    run = probe(filt, [(NR["ptrace"], 16, NO_SUCH_PID, 0, 0), (NR["clone3"], 0, 0), (NR["socket"], vsock, 1, 0),
                       (NR["socket"], unix, 1, 0), (NR["clone"], 0x10000000 | 0x200, 0, 0, 0, 0),
                       (NR["personality"], 8), (NR["personality"], 0x0400000), (NR["getpid"],), (457, 0, 0, 0, 0),
                       (NR["uname"] + 2000,)])
    ptrace, clone3, vs, ux, clone_ns, per32, rie, pid, newer, huge = run.result
    assert ptrace == [-1, errno.EPERM] and clone3 == [-1, errno.ENOSYS] and vs == [-1, errno.EPERM]
    assert ux[0] >= 0 and clone_ns == [-1, errno.EPERM] and per32[1] == 0 and rie == [-1, errno.EPERM]
    assert pid[0] > 0 and newer == [-1, errno.ENOSYS] and huge == [-1, errno.ENOSYS]
    assert run.names() == ["ptrace", "socket", "clone", "personality"]
    prog = run_program(filt, [PYTHON3, "-c", "print(1)"])
    assert (prog.exit_code, prog.output, prog.notes) == (0, b"1\n", [])


def test_oci_profile_actions_and_args(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 9, "op": "SCMP_CMP_EQ"}]},
            {"names": ["kcmp"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_PTRACE"]}},
        ]}))
    pol = seccomp.load(str(path))
    assert pol.known_max_nr is None, "default allow: no ENOSYS stub (as runc)"
    assert pol.evaluate(NR["socket"], (2, 2, 0)) == ("deny", 1) and pol.evaluate(NR["socket"], (2, 1, 0))[0] == "allow"
    assert pol.evaluate(NR["personality"], (9,)) == ("kill", 0), "repeated index: each comparison is a rule (runc)"
    assert pol.evaluate(312, (0,) * 6)[0] == "allow", "an entry for CAP_SYS_PTRACE holders does not apply"
    filt = seccomp.prepare(str(path))
    run = probe(filt, [(NR["getcwd"], 0, 0), (NR["uname"], 0), (NR["socket"], 2, 2, 0), (NR["socket"], 2, 1, 0),
                       (1000,)])
    cwd, uname, udp, tcp, huge = run.result
    assert cwd == [-1, errno.EACCES] and uname == [-1, errno.ENOSYS] and udp == [-1, errno.EPERM] and tcp[0] >= 0
    assert huge == [-1, errno.ENOSYS], "the kernel's own ENOSYS"
    assert run.names() == ["getcwd", "socket"], "ENOSYS stays in BPF, unreported"
    run = probe(filt, [(NR["personality"], 9)])
    assert run.signal == signal.SIGKILL and run.notes[0][1].action == "kill"


# ------------------------------------------------------------------ runtimes ----

PY_CHECKS = {
    "print": ("print(1)", "1"),
    "threading": ("import threading; t=threading.Thread(target=print,args=('ok',)); t.start(); t.join()", "ok"),
    "subprocess": ("import subprocess; print(subprocess.run(['/bin/echo','sub'],capture_output=True,text=True)"
                   ".stdout.strip())", "sub"),
    "multiprocessing": ("import multiprocessing as m\nif __name__=='__main__':\n with m.Pool(2) as p: "
                        "print(sum(p.map(abs,[-1,-2,3])))", "6"),
    "asyncio": ("import asyncio\nasync def f():\n await asyncio.sleep(0.01); r,w=await asyncio.open_connection"
                "(sock=__import__('socket').socketpair()[0]); return 5\nprint(asyncio.run(f()))", "5"),
    "urandom-stat": ("import os; os.urandom(8); os.stat('/'); print('ok')", "ok"),
    "access": ("import os; print(os.access('/bin/sh', os.X_OK, effective_ids=True))", "True"),
}


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("check", sorted(PY_CHECKS))
def test_python_works_under_the_policy(name, check):
    code, want = PY_CHECKS[check]
    run = run_program(seccomp.prepare(name), [PYTHON3, "-c", code])
    assert (run.exit_code, run.output.decode().strip(), run.names()) == (0, want, []), run.output


@pytest.mark.parametrize("name", SHIPPED)
def test_bash_test_x_works_under_the_policy(name):
    run = run_program(seccomp.prepare(name), ["/bin/bash", "-c", "[ -x /bin/sh ] && echo yes"])
    assert (run.exit_code, run.output, run.names()) == (0, b"yes\n", [])


@pytest.fixture(scope="module")
def hello_programs(tmp_path_factory) -> dict[str, list[str]]:
    d = tmp_path_factory.mktemp("hello")
    progs: dict[str, list[str]] = {}
    (d / "h.c").write_text('#include <stdio.h>\nint main(void){puts("hello");return 0;}\n')
    (d / "h.cc").write_text('#include <iostream>\n#include <thread>\nint main(){std::thread t([]{});t.join();'
                            'std::cout<<"hello"<<std::endl;}\n')
    for cc, src, ext in (("gcc", "h.c", "c"), ("g++", "h.cc", "cc")):
        if shutil.which(cc):
            for link in ("dynamic", "static"):
                exe = d / f"{ext}-{link}"
                flags = ["-static"] if link == "static" else []
                r = subprocess.run([cc, "-O2", *flags, "-pthread", "-o", str(exe), str(d / src)], capture_output=True,
                                   timeout=120)
                if r.returncode == 0:
                    progs[f"{ext}-{link}"] = [str(exe)]
    if shutil.which("java") and shutil.which("javac"):
        (d / "Hello.java").write_text('public class Hello { public static void main(String[] a) throws Exception {'
                                      ' Thread t = new Thread(() -> {}); t.start(); t.join();'
                                      ' System.out.println("hello"); } }\n')
        javac = subprocess.run(["javac", "-d", str(d), str(d / "Hello.java")], capture_output=True, timeout=120)
        if javac.returncode == 0:
            progs["java"] = [os.path.realpath(shutil.which("java")), "-Xshare:auto", "-cp", str(d), "Hello"]
    if shutil.which("go"):
        (d / "go").mkdir()
        (d / "go" / "main.go").write_text(
            'package main\nimport ("fmt"; "os/exec"; "sync")\nfunc main() {\n var wg sync.WaitGroup\n'
            ' for i := 0; i < 4; i++ { wg.Add(1); go func() { defer wg.Done() }() }\n wg.Wait()\n'
            ' if err := exec.Command("/bin/true").Run(); err != nil { panic(err) }\n fmt.Println("hello")\n}\n')
        env = {**os.environ, "GOCACHE": str(d / "gocache"), "GOPATH": str(d / "gopath"), "HOME": str(d),
               "GO111MODULE": "off", "CGO_ENABLED": "0"}
        r = subprocess.run(["go", "build", "-o", str(d / "go-static"), "main.go"], cwd=d / "go", env=env,
                           capture_output=True, timeout=300)
        if r.returncode == 0:
            progs["go"] = [str(d / "go-static")]
    if shutil.which("node"):
        progs["node"] = [os.path.realpath(shutil.which("node")), "-e", "setTimeout(() => console.log('hello'), 5)"]
    return progs


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("prog", ["c-dynamic", "c-static", "cc-dynamic", "cc-static", "go", "java", "node"])
def test_compiled_programs_and_runtimes_work_under_the_policy(hello_programs, name, prog):
    if prog not in hello_programs:
        pytest.skip(f"{prog}: compiler or runtime not installed here")
    run = run_program(seccomp.prepare(name), hello_programs[prog], timeout=120)
    assert (run.exit_code, run.output, run.names()) == (0, b"hello\n", []), run.output[-2000:]


@pytest.mark.parametrize("name", SHIPPED)
def test_what_pid1_does_after_installing_the_filter_is_allowed(name):
    """The sandbox's PID 1 installs the filter on itself, then posix_spawn()s the program
    (clone3 -> ENOSYS -> clone(CLONE_VM|CLONE_VFORK), setsid, signal resets, execve), waits,
    handles signals, reads its children's rusage and writes a status line."""
    def body(w):
        import resource

        got = []
        signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
        os.kill(os.getpid(), signal.SIGUSR1)
        pid = sc.posix_spawnp("/bin/true", ["/bin/true"], {"PATH": "/usr/bin:/bin"})
        _, status, _ = os.wait4(pid, 0)
        try:
            os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            pass
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.monotonic()
        os.write(w, json.dumps({"status": status, "signal": got, "utime": ru.ru_utime, "t": t}).encode())
        os.close(w)

    run = run_filtered(seccomp.prepare(name).bpf, True, body, _answer_as_decided(seccomp.prepare(name)))
    assert run.exit_code == 0 and run.result["status"] == 0 and run.result["signal"] == [1], run.output
    assert run.names() == []


def test_strict_denies_what_default_allows():
    strict = seccomp.load("strict")
    for call in ("chroot", "setuid", "inotify_init1", "shmget", "seccomp", "sethostname", "mknodat"):
        assert strict.evaluate(seccomp.syscall_nr(call)) == ("deny", errno.EPERM), call
        assert seccomp.load("default").evaluate(seccomp.syscall_nr(call))[0] == "allow", call
    run = probe(seccomp.prepare("strict"), [(seccomp.syscall_nr("chroot"), 0), (NR["ioctl"], 2**32 - 1, 0x5401, 0),
                                           (NR["ioctl"], 2**32 - 1, 0x5402, 0)])
    assert run.result == [[-1, errno.EPERM], [-1, errno.EBADF], [-1, errno.EPERM]]
    assert run.names() == ["chroot", "ioctl"]


# ------------------------------------------------------------------ CLI ----

def _cli(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys; from jailpy.cli import app, main; from jailpy.cli_seccomp import seccomp_app\n"
            "if not any(getattr(g, 'name', None) == 'seccomp' for g in app.registered_groups):\n"
            "    app.add_typer(seccomp_app, name='seccomp')\n"
            "sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, "seccomp", *args], capture_output=True, cwd=REPO, timeout=60)


def test_cli_show_compile_and_errors(tmp_path):
    p = _cli("show", "default")
    assert p.returncode == 0 and b"seccomp policy default" in p.stdout and b"ptrace" in p.stdout
    p = _cli("show", "strict", "--json")
    data = json.loads(p.stdout)
    assert data["hash"] == seccomp.load("strict").digest() and data["default_action"] == "deny"
    out = tmp_path / "strict.bpf"
    p = _cli("compile", "strict", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == seccomp.compile_bpf(seccomp.load("strict")) and out.stat().st_size % 8 == 0
    p = _cli("show", "no-such")
    assert p.returncode == 125 and p.stderr.startswith(b"jailpy: error: no seccomp policy named") \
        and p.stderr.count(b"\n") == 1
    bad = write(tmp_path, "bad.json", "{")
    p = _cli("compile", str(bad), "-o", str(tmp_path / "x"))
    assert p.returncode == 125 and b"not valid JSON" in p.stderr


def test_condition_values_take_the_names_and_octal_of_c():
    # the shipped policies name their values (no bare 0xc00 or 0x540a), and a leading 0 is never
    # silently decimal: '06000' is refused, '0o6000' is octal
    assert seccomp.parse_condition("low32(arg2) == IPPROTO_MPTCP") == seccomp.parse_condition("low32(arg2) == 262")
    assert seccomp.parse_condition("arg1 & S_ISUID|S_ISGID != 0") == seccomp.parse_condition("arg1 & 0o6000 != 0")
    assert seccomp.parse_condition("arg1 & O_CREAT|__O_TMPFILE != 0") == seccomp.parse_condition("arg1 & 0x400040 != 0")
    assert seccomp.parse_condition("low32(arg1) == TCXONC") == seccomp.parse_condition("low32(arg1) == 0x540a")
    with pytest.raises(seccomp.SeccompError, match="0o6000"):
        seccomp.parse_condition("arg1 & 06000 != 0")
    assert seccomp.describe(NR["ioctl"], (1, 0x540A, 0, 0, 0, 0)) == "ioctl(1, TCXONC, 0x0)"
    assert seccomp.describe(90, (0x1000, 0o4755, 0, 0, 0, 0)) == "chmod(0x1000, 0o4755)"  # 90: chmod
