"""Issue 10, the seccomp items, under both shipped policies through the real CLI
(``jailpy exec --seccomp default|strict``):

1. machine-wide AIO: io_setup gets ENOSYS (libaio falls back), reported in blocked_syscall;
2. socket protocols: IPv4/IPv6 sockets only as TCP, UDP and ICMP; MPTCP, UDP-Lite, SCTP... get
   EPROTONOSUPPORT, while TCP and UDP on 127.0.0.1 keep working;
3. setuid/setgid bits: chmod, open(O_CREAT) and mknod with S_ISUID|S_ISGID fail with EPERM and
   the mode stays; plain modes, ``cp -p`` and ``install -m 755`` keep working;
4. the caller's terminal: on a real pty, tcflow(TCOOFF) and the terminal-setting ioctls fail
   with EPERM while isatty, tcgetattr and TIOCGWINSZ keep working; the host's pty is unchanged.

Every probe is harmless without the defence: an AIO context of one event is destroyed at once,
sockets are closed at once and only loopback is used, files are made in the sandbox's own
/tmp, and a TCOOFF that got through is undone at once (TCOON) inside and again by the test.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time

import pytest

from conftest import JAILPY, REPO, TIMEOUT
from seccomp_helpers import SHIPPED_POLICIES, blocked_summary, run_under, seccomp_cli

parametrize_policy = pytest.mark.parametrize("policy", SHIPPED_POLICIES)


def _inside(policy: str, code: str, *extra: str) -> tuple[dict, dict, subprocess.CompletedProcess]:
    """Run python3 -c CODE under ``policy``; CODE prints one JSON line last.  Returns (what the
    program printed, the report, the process)."""
    p, rep = run_under(policy, ["python3", "-c", code], "--wall-time", "20", *extra)
    why = f"exit {p.returncode}; stdout {p.stdout[-800:]!r}; stderr {p.stderr[-1200:]!r}; {blocked_summary(rep)}"
    assert p.returncode == 0 and rep["verdict"] == "OK", why
    return json.loads(p.stdout.strip().splitlines()[-1]), rep, p


def _blocked(rep: dict, name: str, err: int) -> dict:
    b = rep["blocked_syscall"]
    assert b is not None, f"nothing reported as blocked: {blocked_summary(rep)}"
    assert b["name"] == name and b["action"] == "errno" and b["errno"] == err, blocked_summary(rep)
    assert b["text"].startswith(name + "("), b
    return b


# --------------------------------------------------------------------- 1. AIO ----

AIO = """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ctx = ctypes.c_ulong(0)
r = libc.syscall(ctypes.c_long(206), ctypes.c_long(1), ctypes.byref(ctx))  # io_setup(1, &ctx)
e = ctypes.get_errno() if r == -1 else 0
if r == 0:
    libc.syscall(ctypes.c_long(207), ctx)  # io_destroy: the one event goes back to fs.aio-max-nr at once
r2 = libc.syscall(ctypes.c_long(208), ctypes.c_long(0), 0, 1, None, None)  # io_getevents(bad ctx)
e2 = ctypes.get_errno() if r2 == -1 else 0
print(json.dumps({"ret": r, "errno": e, "getevents_errno": e2}))
"""


@parametrize_policy
def test_io_setup_gets_enosys_and_is_reported(policy: str):
    out, rep, _ = _inside(policy, AIO)
    assert out["ret"] == -1 and out["errno"] == errno.ENOSYS, f"io_setup: {out}; {blocked_summary(rep)}"
    assert out["getevents_errno"] == errno.ENOSYS, out  # the family, not only io_setup
    b = _blocked(rep, "io_setup", errno.ENOSYS)
    assert b["nr"] == 206 and b["args"][0] == 1 and b["count"] == 2, b


# ------------------------------------------------------------ 2. socket protocols ----

SOCKETS = r"""
import json, os, socket, errno
out = {"denied": {}}
def try_socket(label, fam, typ, proto):
    try:
        s = socket.socket(fam, typ, proto)
    except OSError as e:
        out["denied"][label] = e.errno
        return
    s.close()
    out["denied"][label] = 0
try_socket("mptcp", socket.AF_INET, socket.SOCK_STREAM, 262)
try_socket("udplite", socket.AF_INET, socket.SOCK_DGRAM, 136)
try_socket("mptcp6", socket.AF_INET6, socket.SOCK_STREAM, 262)
try_socket("udplite6", socket.AF_INET6, socket.SOCK_DGRAM, 136)
try_socket("sctp", socket.AF_INET, socket.SOCK_STREAM, 132)
try_socket("seqpacket", socket.AF_INET, socket.SOCK_SEQPACKET, 0)
try_socket("raw", socket.AF_INET, socket.SOCK_RAW, 1)
try:
    socket.socketpair(socket.AF_INET, socket.SOCK_STREAM, 262)
    out["denied"]["socketpair_mptcp"] = 0
except OSError as e:
    out["denied"]["socketpair_mptcp"] = e.errno
# what keeps working: TCP and UDP on the sandbox's own loopback
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname(), timeout=5)
a, _ = srv.accept(); c.sendall(b"tcp"); out["tcp"] = a.recv(3).decode()
for s in (a, c, srv): s.close()
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP); u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u2.sendto(b"udp", u1.getsockname())
u1.settimeout(5); out["udp"] = u1.recv(3).decode(); u1.close(); u2.close()
# ICMP echo ("ping") sockets: the kernel decides by net.ipv4.ping_group_range, not the filter
out["ping_group_range"] = open("/proc/sys/net/ipv4/ping_group_range").read().split()
out["gid"] = os.getgid()
for label, fam, proto in (("ping", socket.AF_INET, 1), ("ping6", socket.AF_INET6, 58)):
    try:
        socket.socket(fam, socket.SOCK_DGRAM, proto).close(); out[label] = 0
    except OSError as e:
        out[label] = e.errno
print(json.dumps(out))
"""
SOCKET_DENIALS = ("mptcp", "udplite", "mptcp6", "udplite6", "sctp", "seqpacket", "raw")


@parametrize_policy
def test_only_tcp_udp_and_icmp_sockets_over_ip(policy: str):
    out, rep, _ = _inside(policy, SOCKETS)
    why = f"{out}; {blocked_summary(rep)}"
    for label in SOCKET_DENIALS:
        assert out["denied"][label] == errno.EPROTONOSUPPORT, f"{label}: {why}"
    assert out["denied"]["socketpair_mptcp"] == errno.EOPNOTSUPP, why
    b = _blocked(rep, "socket", errno.EPROTONOSUPPORT)
    # python adds SOCK_CLOEXEC: the type is compared on its low 4 bits
    assert b["args"][0] == 2 and b["args"][1] & 0xF == 1 and b["args"][2] == 262, b
    assert b["text"].startswith("socket(AF_INET, SOCK_STREAM"), b
    # every denial is one of ours: the TCP, UDP and ping sockets met no rule
    assert b["count"] == len(SOCKET_DENIALS) + 1, why
    assert out["tcp"] == "tcp" and out["udp"] == "udp", why
    lo, hi = (int(x) for x in out["ping_group_range"])
    for label in ("ping", "ping6"):
        if lo <= out["gid"] <= hi:
            assert out[label] == 0, f"{label}: {why}"
        else:
            assert out[label] in (0, errno.EACCES), f"{label}: {why}"


# ---------------------------------------------------------------- 3. setid bits ----

SETID = r"""
import json, os, stat, subprocess
os.chdir("/tmp")
out = {}
def mode(p): return stat.S_IMODE(os.lstat(p).st_mode)
with open("f", "w") as f: f.write("x")
os.chmod("f", 0o644)
for label, m in (("chmod_4755", 0o4755), ("chmod_2755", 0o2755), ("chmod_6755", 0o6755)):
    try: os.chmod("f", m); out[label] = 0
    except OSError as e: out[label] = e.errno
out["mode_after_setid"] = oct(mode("f"))
fd = os.open("f", os.O_RDONLY)
try: os.fchmod(fd, 0o4755); out["fchmod_4755"] = 0
except OSError as e: out["fchmod_4755"] = e.errno
os.close(fd)
p = subprocess.run(["chmod", "4755", "f"], capture_output=True, text=True)
out["chmod_cmd"] = [p.returncode, p.stderr.strip()]
out["mode_after_cmd"] = oct(mode("f"))
os.chmod("f", 0o755); out["mode_755"] = oct(mode("f"))
os.chmod("f", 0o1777); out["mode_sticky"] = oct(mode("f")); os.chmod("f", 0o755)
try:
    fd = os.open("g", os.O_CREAT | os.O_WRONLY, 0o4755); os.close(fd); out["open_creat_4755"] = 0
except OSError as e:
    out["open_creat_4755"] = e.errno
out["g_exists"] = os.path.exists("g")
try:
    fd = os.open("h", os.O_CREAT | os.O_WRONLY, 0o755); os.close(fd); out["open_creat_755"] = oct(mode("h"))
except OSError as e:
    out["open_creat_755"] = e.errno
try: os.mknod("m", stat.S_IFREG | 0o2755); out["mknod_2755"] = 0
except OSError as e: out["mknod_2755"] = e.errno
out["m_exists"] = os.path.exists("m")
p = subprocess.run(["cp", "-p", "f", "f2"], capture_output=True, text=True)
out["cp_p"] = [p.returncode, p.stderr.strip(), oct(mode("f2")) if os.path.exists("f2") else None]
p = subprocess.run(["install", "-m", "755", "f", "f3"], capture_output=True, text=True)
out["install"] = [p.returncode, p.stderr.strip(), oct(mode("f3")) if os.path.exists("f3") else None]
print(json.dumps(out))
"""


@parametrize_policy
def test_setuid_and_setgid_bits_cannot_be_set(policy: str):
    out, rep, _ = _inside(policy, SETID)
    why = f"{out}; {blocked_summary(rep)}"
    for label in ("chmod_4755", "chmod_2755", "chmod_6755", "fchmod_4755", "open_creat_4755", "mknod_2755"):
        assert out[label] == errno.EPERM, f"{label}: {why}"
    assert out["mode_after_setid"] == "0o644" and out["mode_after_cmd"] == "0o644", why
    assert out["chmod_cmd"][0] == 1 and "Operation not permitted" in out["chmod_cmd"][1], why
    assert not out["g_exists"] and not out["m_exists"], why
    # what keeps working: plain modes, the sticky bit, creating with a mode, cp -p, install -m
    assert out["mode_755"] == "0o755" and out["mode_sticky"] == "0o1777", why
    assert out["open_creat_755"] == "0o755", why
    assert out["cp_p"] == [0, "", "0o755"], why
    assert out["install"] == [0, "", "0o755"], why
    assert _blocked(rep, "chmod", errno.EPERM)["args"][1] == 0o4755, why


# ----------------------------------------------------------------- 4. terminal ----

TERMINAL = r"""
import fcntl, json, os, struct, termios
out = {"isatty": os.isatty(0)}
def call(label, fn):
    try:
        fn(); out[label] = 0
    except termios.error as e:
        out[label] = e.args[0]
    except OSError as e:
        out[label] = e.errno
def tcooff():
    termios.tcflow(0, termios.TCOOFF)
    termios.tcflow(0, termios.TCOON)  # got through: undo it at once, before anything is written
call("tcflow_tcooff", tcooff)
call("tcgetattr", lambda: out.__setitem__("attrs", termios.tcgetattr(0)))
call("tiocgwinsz", lambda: fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
call("tcsetattr_same", lambda: termios.tcsetattr(0, termios.TCSANOW, out["attrs"]))
call("tiocswinsz_same", lambda: fcntl.ioctl(0, termios.TIOCSWINSZ, size))
call("tcflush", lambda: termios.tcflush(0, termios.TCIFLUSH))
call("tcsendbreak", lambda: termios.tcsendbreak(0, 0))
call("tcdrain", lambda: termios.tcdrain(1))
del out["attrs"]
print("RESULT " + json.dumps(out), flush=True)
"""


def _read_until_exit(proc: subprocess.Popen, master: int, seconds: float) -> bytes:
    """What the program wrote to the pty, read until jailpy exits (bounded)."""
    got = bytearray()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                got += os.read(master, 65536)
            except OSError:  # EIO: no slave open any more
                pass
        elif proc.poll() is not None:
            break
    return bytes(got)


@parametrize_policy
def test_terminal_cannot_be_stopped_or_changed(policy: str, tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    before = termios.tcgetattr(slave)
    report = tmp_path / "report.json"
    proc = subprocess.Popen([*JAILPY, "--report", str(report), "--seccomp", policy, "--wall-time", "20", "--",
                             "python3", "-c", TERMINAL], stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=REPO)
    try:
        text = _read_until_exit(proc, master, TIMEOUT)
        proc.wait(timeout=5)
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        termios.tcflow(slave, termios.TCOON)  # whatever happened inside, the test's pty flows again
        after = termios.tcgetattr(slave)
        size = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
        os.close(master)
        os.close(slave)
    rep = json.loads(report.read_text())
    lines = [line for line in text.decode(errors="replace").splitlines() if line.startswith("RESULT ")]
    why = f"exit {proc.returncode}; pty {text[-600:]!r}; stderr {stderr[-600:]!r}; {blocked_summary(rep)}"
    assert proc.returncode == 0 and rep["verdict"] == "OK" and lines, why
    out = json.loads(lines[-1][len("RESULT "):])
    why = f"{out}; {why}"
    assert out["tcflow_tcooff"] == errno.EPERM, why
    for label in ("tcsetattr_same", "tiocswinsz_same", "tcflush", "tcsendbreak"):
        assert out[label] == errno.EPERM, f"{label}: {why}"
    # reading the terminal keeps working
    assert out["isatty"] is True and out["tcgetattr"] == 0 and out["tiocgwinsz"] == 0, why
    if policy == "default":
        assert out["tcdrain"] == 0, why  # TCSBRK with a non-zero argument: tcdrain, not a break
    b = _blocked(rep, "ioctl", errno.EPERM)
    assert b["args"][1] == termios.TCXONC and b["args"][2] == termios.TCOOFF, b
    assert b["count"] >= 5, b
    # the host's terminal is as it was
    assert after == before and size[:2] == (33, 111), (before, after, size)


def test_strict_names_its_terminal_denials():
    """strict's allow-list already refused these ioctls; it now names them (`seccomp show`), so
    that widening its ioctl allow-list cannot let them through unnoticed (overlapping rules
    with different actions are refused when the policy loads)."""
    p = seccomp_cli("show", "strict", "--json")
    assert p.returncode == 0, p.stderr
    rules = [r for r in json.loads(p.stdout)["rules"] if r["group"] == "terminal-settings"]
    assert rules and all(r["action"] == "deny" and r["syscalls"] == ["ioctl"] for r in rules), rules
    assert any("0x540a" in w for r in rules for w in r["when"]), rules  # TCXONC


# --------------------------------------------------------- 5. the audit probes ----

NEW_PROBES = ("res-aio-events", "net-ip-protocols", "fs-setid-bits", "term-stop-output", "term-change-settings")


@parametrize_policy
def test_audit_probes_of_issue_10_are_blocked_by_seccomp_and_can_fail(policy: str):
    """Each probe is blocked by the filter, leaves the host as it was, and fails when the filter
    is missing (the auditor's run with seccomp "none", ``below``): it can tell."""
    from jailpy.audit import BLOCKED, BY_ID, NOT_BLOCKED, Auditor
    from jailpy.policy import load

    auditor = Auditor(load("default").replace(seccomp=policy))
    outcomes = auditor.run([BY_ID[i] for i in NEW_PROBES])
    for o in outcomes:
        why = f"{o.id}: {o.status} {o.layers} {o.detail}; below {o.below}; attempts {json.dumps(o.attempts)[:1200]}"
        assert o.status == BLOCKED and o.layers == ["seccomp"] and o.host_changes == [], why
        assert o.below is not None and o.below["host_changes"] == [], why
        if o.id == "res-aio-events" and not os.path.exists("/proc/sys/fs/aio-max-nr"):
            continue  # a kernel without AIO refuses it on its own
        assert o.below["status"] == NOT_BLOCKED, why
