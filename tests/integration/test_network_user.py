"""--network user (slirp4netns or pasta) and --publish, as root and rootless.

As root, the user-mode stack runs where the fake upstream is (network namespaces the test made:
tests/net_helpers.py), so whatever the sandbox reaches is the test's own.  Rootless (the
machine's own network namespace), the programs connect only to the host's loopback and own
addresses, which the sandbox must not reach: nothing leaves the machine."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import IS_ROOT, jail
from net_helpers import PROBE, netns, upstream_netns

HAVE = {name: shutil.which(name) or os.path.exists(f"/usr/bin/{name}") for name in ("slirp4netns", "pasta")}
DIAL = ("import socket, sys\n"
        "for t in sys.argv[1:]:\n"
        "    h, _, p = t.rpartition(':')\n"
        "    try: socket.create_connection((h, int(p)), timeout=3).close(); print(t, 'connected')\n"
        "    except OSError as e: print(t, 'error', e.errno)\n")


def _helper(kind: str) -> dict:
    if not HAVE[kind]:
        pytest.skip(f"{kind} is not installed")
    if not IS_ROOT and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        pytest.skip("/dev/net/tun is not usable by this user (tests/run.sh makes it 0666, its usual mode)")
    return dict(os.environ, JAILPY_USERNET=kind)


SERVER = ("import socket, sys, threading\n"
          "s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(16); s.settimeout(0.2)\n"
          "print(s.getsockname()[1], flush=True)\n"
          "got = []; done = threading.Event()\n"
          "threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()\n"
          "while not done.is_set():\n"
          "    try: got.append(s.accept()[1][0])\n"
          "    except OSError: pass\n"
          "print(len(got), flush=True)\n")


@pytest.fixture
def where():
    """Where a test runs jailpy and its servers: as root, a network namespace of the test's own
    (nothing of the machine's is used); rootless, the machine's own (only its loopback and own
    addresses are dialled)."""
    if IS_ROOT:
        with netns() as ns:
            yield ns.prefix
    else:
        yield []


def _own_addresses(prefix: list[str]) -> list[str]:
    code = "from jailpy.net.user import host_addresses; print(' '.join(host_addresses()))"
    return subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30).stdout.split()


@pytest.mark.parametrize("kind", ["slirp4netns"])
def test_user_mode_gives_tap0_and_keeps_the_host_unreachable(kind, where):
    """tap0 10.0.2.100 with a default route; the host's loopback (10.0.2.2 and 127.0.0.1) and its
    own addresses are unreachable, though a server listens on all of them."""
    env = _helper(kind)
    server = subprocess.Popen([*where, sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        port = int(server.stdout.readline())
        targets = [f"10.0.2.2:{port}", f"127.0.0.1:{port}"] + [f"{a}:{port}" for a in _own_addresses(where)]
        p = subprocess.run([*where, sys.executable, "-m", "jailpy", "exec", "--network", "user", "--report", "-", "--",
                            sys.executable, "-c", "import os; print(sorted(os.listdir('/sys/class/net')));\n" + DIAL,
                            *targets], capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    finally:
        server.stdin.close()
        count = server.stdout.read().strip()
        server.wait(10)
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().splitlines()
    assert lines[0] == "['lo', 'tap0']"
    assert all("error" in line for line in lines[1:]), lines
    assert count == b"0"
    report = json.loads(p.stderr.decode()[p.stderr.decode().index("{\n"):])
    assert report["network"]["address"] == "10.0.2.100"
    assert report["protections"]["network"]["mode"] == "user"


@pytest.mark.parametrize("mode", ["none", "user"])
def test_publish_reaches_the_sandbox_rootless_or_root(mode, where):
    if mode == "user":
        env = _helper("slirp4netns" if HAVE["slirp4netns"] else "pasta")
    else:
        env = dict(os.environ)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = ("import socket\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 7000)); s.listen(); print('listening', flush=True)\n"
            "c, _ = s.accept(); c.sendall(b'hello from inside'); c.close()\n")
    jp = subprocess.Popen([*where, sys.executable, "-m", "jailpy", "exec", "--network", mode, "--publish", f"{port}:7000",
                           "--report", "-", "--", sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    try:
        assert jp.stdout.readline().strip() == b"listening", jp.stderr.read()
        got = subprocess.run([*where, sys.executable, "-c", "import socket, sys; print(socket.create_connection("
                              "('127.0.0.1', int(sys.argv[1])), timeout=10).recv(100).decode())", str(port)],
                             capture_output=True, timeout=30)
        assert got.stdout == b"hello from inside\n", got.stderr
        out, err = jp.communicate(timeout=30)
    finally:
        jp.kill()
        jp.wait(10)
    report = json.loads(err.decode()[err.decode().index("{\n"):])
    assert report["network"]["published_connections"] == 1
    assert report["protections"]["network"]["publish"] == [f"127.0.0.1:{port}:7000/tcp"]


UDP_ECHO = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 7000))\n"
            "print('listening', flush=True)\n"
            "for _ in range(int(sys.argv[1])):\n"
            "    data, peer = s.recvfrom(65535); s.sendto(b'echo ' + str(len(data)).encode() + b' ' + data[:8], peer)\n")


@pytest.mark.parametrize("mode", ["none", "user"])
def test_publish_udp_relays_datagrams_per_client(mode, where):
    """Each host client gets its own flow (its answers come back to it, not to the other), a
    datagram arrives whole (60000 bytes in one), and the report counts the flows."""
    env = _helper("slirp4netns" if HAVE["slirp4netns"] else "pasta") if mode == "user" else dict(os.environ)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    jp = subprocess.Popen([*where, sys.executable, "-m", "jailpy", "exec", "--network", mode, "--publish",
                           f"127.0.0.1:{port}:7000/udp", "--report", "-", "--", sys.executable, "-c", UDP_ECHO, "3"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    client = ("import socket, sys\n"
              "port = int(sys.argv[1]); a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))\n"
              "for s in (a, b): s.settimeout(10); s.connect(('127.0.0.1', port))\n"
              "a.send(b'first'); print(a.recv(100).decode())\n"
              "b.send(b'x' * 60000); print(b.recv(100).decode())\n"
              "a.send(b'third'); print(a.recv(100).decode())\n")
    try:
        assert jp.stdout.readline().strip() == b"listening", jp.stderr.read()
        got = subprocess.run([*where, sys.executable, "-c", client, str(port)], capture_output=True, timeout=30)
        assert got.stdout.decode().splitlines() == ["echo 5 first", "echo 60000 xxxxxxxx", "echo 5 third"], got.stderr
        out, err = jp.communicate(timeout=30)
    finally:
        jp.kill()
        jp.wait(10)
    report = json.loads(err.decode()[err.decode().index("{\n"):])
    assert report["exit_code"] == 0
    assert report["network"]["published_connections"] == 2
    assert report["protections"]["network"]["publish"] == [f"127.0.0.1:{port}:7000/udp"]


def test_publish_udp_forgets_an_idle_client(monkeypatch):
    """A client silent for longer than FLOW_IDLE gets a new flow (the old socket inside is closed)."""
    import threading

    import jailpy
    from jailpy.net import udp

    monkeypatch.setattr(udp, "FLOW_IDLE", 0.4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = jailpy.Sandbox(jailpy.Policy().replace(publish=[f"{port}:7000/udp"]))
    done = []
    t = threading.Thread(target=lambda: done.append(box.run([sys.executable, "-c", UDP_ECHO, "2"],
                                                            capture_output=True)))
    t.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(2)
            c.connect(("127.0.0.1", port))
            got = None
            for _ in range(50):  # until the program listens
                c.send(b"one")
                try:
                    got = c.recv(100)
                    break
                except OSError:
                    pass
            assert got == b"echo 3 one"
            time.sleep(1.5)  # > FLOW_IDLE, and the expiry timer runs every FLOW_IDLE / 4
            c.send(b"two")
            assert c.recv(100) == b"echo 3 two"
        t.join(30)
    finally:
        box.close()
    r = done[0]
    assert r.exit_code == 0, r.stderr
    assert r.network["published_connections"] == 2


def test_publish_refuses_a_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        p = jail("--publish", f"{s.getsockname()[1]}:80", "--", "true")
    assert p.returncode == 125 and b"the port is in use" in p.stderr and p.stderr.count(b"\n") == 1, p.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        p = jail("--publish", f"{s.getsockname()[1]}:53/udp", "--", "true")
    assert p.returncode == 125 and b"the port is in use" in p.stderr and p.stderr.count(b"\n") == 1, p.stderr


def test_rules_with_user_mode_are_refused():
    p = jail("--network", "user", "--allow-host", "example.org", "--", "true")
    assert p.returncode == 125 and b"second, open way out" in p.stderr


@pytest.fixture
def netns_up(tmp_path):
    if not IS_ROOT:
        pytest.skip("network namespaces of the test's own need root")
    with upstream_netns(tmp_path) as up:
        subprocess.run(["ip", "-n", up.netns, "route", "add", "default", "via", "203.0.113.2"], check=True,
                       capture_output=True, timeout=30)  # pasta wants one; inside the test's namespace only
        yield up


@pytest.mark.parametrize("kind", ["slirp4netns", "pasta"])
def test_user_mode_reaches_the_upstream_but_not_the_host(kind, netns_up):
    env = _helper(kind)
    p = subprocess.run([*netns_up.prefix, sys.executable, "-m", "jailpy", "exec", "--network", "user", "--", sys.executable,
                        str(PROBE), json.dumps([["tcp", "203.0.113.2", "80"], ["tcp", "203.0.113.1", "80"]])],
                       capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)
    assert out[0] == "ok: hello from 203.0.113.2 host=203.0.113.2", out
    assert out[1].startswith("error"), out  # the host's own address: blackholed
    assert subprocess.run(["pgrep", "-x", kind], capture_output=True).stdout == b""  # ended with the run
