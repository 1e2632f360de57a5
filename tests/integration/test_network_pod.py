"""Rootless named networks (jailpy.net.pod): ``jailpy network create NAME`` as an unprivileged
user makes a pod (a user and network namespace of the caller's holding the bridge), and
``--network bridge:NAME`` puts sandboxes on it.

These run rootless only (tests/run.sh runs the suite as its throwaway user too): as root a
named network is a bridge in the machine's namespace (test_network_bridge.py).  Every bridge,
veth and address here is inside a pod, a network namespace the test's own jailpy made; the
programs dial only addresses inside the pod and, to check they cannot, the host's loopback and
own addresses.  Each test removes its network and checks the holder process is gone."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import IS_ROOT, REPO, TIMEOUT, jail
from limits_helpers import TIME_FACTOR
from net_helpers import DIAL, PROBE, SERVE, upstream_loopback

pytestmark = pytest.mark.skipif(IS_ROOT, reason="pods are rootless networks; as root see test_network_bridge.py")

SHOW = ("import json, socket, fcntl, struct, os\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24])\n"
        "print(json.dumps({'links': sorted(os.listdir('/sys/class/net')), 'addr': addr,\n"
        "                  'hosts': open('/etc/hosts').read()}))\n")


SERVE_MANY = ("import socket\n"
              "s = socket.socket(); s.bind(('0.0.0.0', 7000)); s.listen(); s.settimeout(60)\n"
              "print('listening', flush=True)\n"
              "while True:\n"
              "    c, _ = s.accept(); c.sendall(b'hello from ' + socket.gethostname().encode()); c.close()\n")


def network(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jailpy", "network", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, cwd=REPO)


def _ls() -> dict:
    p = network("ls", "--json")
    assert p.returncode == 0, p.stderr
    return {r["name"]: r for r in json.loads(p.stdout)}


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10 * TIME_FACTOR
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    return not os.path.exists(f"/proc/{pid}")


@pytest.fixture
def pod():
    """A rootless network of the test's own: (name, subnet); removed afterwards, its holder gone."""
    name = "t" + secrets.token_hex(3)
    p = network("create", name)
    assert p.returncode == 0, p.stderr.decode()
    rec = _ls()[name]
    assert rec["pod"]["running"], rec
    try:
        yield name, rec["subnet"]
    finally:
        rm = network("rm", name)
        assert _gone(rec["pod"]["pid"]), "the pod's holder outlived jailpy network rm"
        assert rm.returncode == 0 or b"no network named" in rm.stderr, rm.stderr
        assert name not in _ls()


def _serve(*flags: str, seconds: float = 10) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "jailpy", "exec", *flags, "--", sys.executable, "-c", SERVE,
                          str(seconds)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=REPO)
    assert p.stdout.readline().strip() == b"listening", p.stderr.read()
    return p


def _prefix(subnet: str) -> str:
    return subnet.rsplit(".", 1)[0] + "."


def test_two_sandboxes_on_a_pod_talk_by_hostname_and_address(pod, tmp_path):
    name, subnet = pod
    db = _serve("--network", f"bridge:{name}", "--hostname", "db")
    try:
        report = tmp_path / "r.json"
        app = jail("--network", f"bridge:{name}", "--hostname", "app", "--report", str(report), "--",
                   sys.executable, "-c", SHOW + DIAL, "db", "7000", "5")
        lines = app.stdout.decode().splitlines()
        got = json.loads(lines[0])
        assert got["links"] == ["eth0", "lo"] and got["addr"].startswith(_prefix(subnet)), got
        assert "\tdb\n" in got["hosts"] and "\tapp\n" in got["hosts"], got["hosts"]
        assert lines[1] == "hello from db", app.stderr.decode()
        rep = json.loads(report.read_text())
        assert rep["network"]["address"] == got["addr"]
        assert rep["protections"]["network"]["mode"] == f"bridge:{name}" and "pod" in rep["protections"]["network"]
        served = db.communicate(timeout=30)[0].decode()
        assert f"served {got['addr']}" in served
    finally:
        db.kill()
        db.wait(10)
    # by address too, and the hosts file forgets a sandbox that ended
    db = _serve("--network", f"bridge:{name}", "--hostname", "db2")
    try:
        hosts = jail("--network", f"bridge:{name}", "--", "cat", "/etc/hosts").stdout.decode()
        addr = next(line.split()[0] for line in hosts.splitlines() if line.endswith("\tdb2"))
        assert "\tdb\n" not in hosts and "\tapp\n" not in hosts, hosts
        app = jail("--network", f"bridge:{name}", "--", sys.executable, "-c", DIAL, addr, "7000", "5")
        assert app.stdout.decode().strip() == "hello from db2", app.stderr.decode()
    finally:
        db.kill()
        db.wait(10)


def test_every_start_path_puts_the_sandbox_on_the_pod(pod):
    """jailpy.run (a fresh user namespace, made inside the pod's), a Sandbox reusing its user
    namespace (made inside the pod's once), and its fork server (which joins that one)."""
    import jailpy

    name, subnet = pod
    srv = subprocess.Popen([sys.executable, "-m", "jailpy", "exec", "--network", f"bridge:{name}", "--hostname", "srv",
                            "--", sys.executable, "-c", SERVE_MANY], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, cwd=REPO)
    assert srv.stdout.readline().strip() == b"listening", srv.stderr.read()
    try:
        pol = jailpy.Policy().replace(network=f"bridge:{name}")
        code = SHOW + DIAL
        results = [jailpy.run([sys.executable, "-c", code, "srv", "7000", "5"], pol, capture_output=True)]
        for fs in (False, True):
            with jailpy.Sandbox(pol, forkserver=fs) as box:
                for _ in range(2):
                    results.append(box.run([sys.executable, "-c", code, "srv", "7000", "5"], capture_output=True))
                if fs:
                    assert box._forkserver is not None
        addrs = set()
        for r in results:
            assert r.exit_code == 0, (r.error, r.stderr)
            got = json.loads(r.stdout.decode().splitlines()[0])
            assert got["addr"].startswith(_prefix(subnet)) and got["addr"] == r.network["address"]
            addrs.add(got["addr"])
            assert r.stdout.decode().splitlines()[1] == "hello from srv", r.stdout
        assert len(addrs) == len(results)  # a lease of its own each
    finally:
        srv.kill()
        srv.wait(10)


def test_a_pod_sandbox_reaches_its_peers_and_nothing_else(pod):
    """No route out of the pod: not the host's loopback or own addresses (a server listens on all),
    not a sandbox on another network; the pod's own address has nothing listening."""
    name, subnet = pod
    other = "u" + secrets.token_hex(3)
    assert network("create", other).returncode == 0
    host = socket.socket()
    host.bind(("0.0.0.0", 0))
    host.listen(16)
    host.settimeout(0.1)
    port = host.getsockname()[1]
    try:
        stranger = _serve("--network", f"bridge:{other}", "--hostname", "stranger", seconds=8)
        far = _ls()[other]["hosts"][0].partition("=")[2]
        own = subprocess.run([sys.executable, "-c", "from jailpy.net.user import host_addresses; "
                              "print(' '.join(host_addresses()))"], capture_output=True, text=True,
                             timeout=30).stdout.split()
        targets = [(far, 7000), (_prefix(subnet) + "1", port)] + [(a, port) for a in own]
        code = ("import socket, sys\n"
                "for t in sys.argv[1:]:\n"
                "    h, _, p = t.rpartition(':')\n"
                "    try: socket.create_connection((h, int(p)), timeout=2).close(); print(t, 'connected')\n"
                "    except OSError as e: print(t, 'error', e)\n")
        p = jail("--network", f"bridge:{name}", "--", sys.executable, "-c", code, *[f"{h}:{t}" for h, t in targets],
                 timeout=60)
        lines = p.stdout.decode().splitlines()
        assert len(lines) == len(targets) and all(" error " in line for line in lines), lines
        with pytest.raises(OSError):
            host.accept()  # nobody came
        assert b"nobody came" in stranger.communicate(timeout=30)[0]
    finally:
        host.close()
        network("rm", other)


def test_allow_host_through_the_proxy_on_a_pod(pod, tmp_path):
    name, _ = pod
    with upstream_loopback(tmp_path) as up:
        p = up.run("--network", f"bridge:{name}", "--allow-host", f"index.test:{up.http}", "--", sys.executable,
                   str(PROBE), json.dumps([["direct", f"http://index.test:{up.http}/hello"],
                                           ["direct", f"http://other.test:{up.http}/hello"],
                                           ["resolve", "other.test"]]))
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)
    assert out[0].startswith("ok: hello"), out
    assert out[1].startswith("error") and out[2].startswith("error"), out


def test_the_holder_answers_only_its_creator(pod):
    """A program running as the caller's own uid (--id-map single) that can see the pod's socket
    (the state directory bound in) gets nothing from the holder: it cannot prove it is in the
    user namespace the pod was made from."""
    from jailpy.net import leases

    name, _ = pod
    state = leases.state_dir()
    code = ("import os, socket, sys\n"
            "for send_fd in (False, True):\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.settimeout(5)\n"
            "    s.connect(sys.argv[1])\n"
            "    fds = [os.open('/proc/self/ns/user', os.O_RDONLY)] if send_fd else []\n"
            "    socket.send_fds(s, [b'F'], fds)\n"
            "    try: msg, got, _, _ = socket.recv_fds(s, 4096, 3); print(repr(msg), len(got))\n"
            "    except OSError as e: print('error', e)\n")
    p = jail("--id-map", "single", "--ro-bind", state, "--", sys.executable, "-c", code,
             os.path.join(state, f"{name}.sock"))
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().splitlines() == ["b'' 0", "b'' 0"], p.stdout


def test_a_pod_that_ended_is_reported_and_removed(pod):
    name, _ = pod
    pid = _ls()[name]["pod"]["pid"]
    os.kill(pid, signal.SIGKILL)  # the holder this test's network create started
    assert _gone(pid)
    p = jail("--network", f"bridge:{name}", "--", "true")
    assert p.returncode == 125 and b"is not running" in p.stderr and p.stderr.count(b"\n") == 1, p.stderr
    assert _ls()[name]["pod"]["running"] is False
    assert network("rm", name).returncode == 0
    assert name not in _ls()


def test_an_interrupted_create_leaves_a_record_that_rm_removes():
    """A network whose holder never started (jailpy network create killed half-way) shows as down."""
    from jailpy.net import leases

    name = "v" + secrets.token_hex(3)
    leases.create(name)
    try:
        assert _ls()[name]["pod"]["running"] is False
        p = jail("--network", f"bridge:{name}", "--", "true")
        assert p.returncode == 125 and b"is not running" in p.stderr, p.stderr
    finally:
        assert network("rm", name).returncode == 0
    assert name not in _ls()


def test_bad_input_is_refused_in_one_line(pod):
    name, subnet = pod
    for args, msg in ((["Bad_Name"], b"network name"), (["default"], b"'default' is the root bridge's"),
                      ([name], b"exists already"), (["x" + name, "--subnet", subnet], b"overlaps network"),
                      (["y" + name, "--subnet", "10.0.0.0/8"], b"/16 to /29"), (["toolongname12"], b"network name")):
        p = network("create", *args)
        assert p.returncode == 125 and msg in p.stderr and p.stderr.count(b"\n") == 1, (args, p.stderr)
    for args, msg in ((["--network", "bridge"], b"jailpy network create NAME"),
                      (["--network", "bridge:nope"], b"no network named 'nope'")):
        p = jail(*args, "--", "true")
        assert p.returncode == 125 and msg in p.stderr and p.stderr.count(b"\n") == 1, (args, p.stderr)
    assert network("rm", "nope").returncode == 125


def test_runs_and_a_sigkill_leave_no_lease_or_veth(pod):
    from jailpy.net import leases
    from jailpy.net.pod import Pod

    name, _ = pod
    code = ("import jailpy, sys\n"
            f"pol = jailpy.Policy().replace(network='bridge:{name}')\n"
            "with jailpy.Sandbox(pol) as box:\n"
            "    for i in range(20):\n"
            "        r = box.run(['true'])\n"
            "        assert r.exit_code == 0 and r.network['address'], r\n"
            "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, cwd=REPO)
    assert p.stdout.strip() == b"ok", p.stderr.decode()[-2000:]
    victim = subprocess.Popen([sys.executable, "-m", "jailpy", "exec", "--network", f"bridge:{name}", "--", "sleep",
                               "60"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=REPO)
    with Pod(name) as pd, pd.rtnl() as rt:
        deadline = time.monotonic() + 10 * TIME_FACTOR
        while time.monotonic() < deadline and not [x for x in rt.links() if x.startswith("jpv")]:
            time.sleep(0.05)
        assert [x for x in rt.links() if x.startswith("jpv")], "the sandbox never got its veth"
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        while time.monotonic() < deadline and [x for x in rt.links() if x.startswith("jpv")]:
            time.sleep(0.05)
        assert [x for x in rt.links() if x.startswith("jpv")] == []
        assert sorted(rt.links()) == ["jp-" + name, "lo"]
    assert _ls()[name]["sandboxes"] == 0  # ls swept the SIGKILLed jailpy's lease
    with leases.locked(name):
        assert leases.live_leases(name) == {}


def test_publish_reaches_a_pod_sandbox_tcp_and_udp(pod):
    name, _ = pod
    ports = []
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    code = ("import socket\n"
            "t = socket.socket(); t.bind(('0.0.0.0', 7000)); t.listen()\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 7001))\n"
            "print('listening', flush=True)\n"
            "c, _ = t.accept(); c.sendall(b'tcp hello'); c.close()\n"
            "d, peer = u.recvfrom(100); u.sendto(b'udp ' + d, peer)\n")
    jp = subprocess.Popen([sys.executable, "-m", "jailpy", "exec", "--network", f"bridge:{name}", "--publish",
                           f"{ports[0]}:7000", "--publish", f"{ports[1]}:7001/udp", "--", sys.executable, "-c", code],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert jp.stdout.readline().strip() == b"listening", jp.stderr.read()
        assert socket.create_connection(("127.0.0.1", ports[0]), timeout=10).recv(100) == b"tcp hello"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(10)
            c.sendto(b"ping", ("127.0.0.1", ports[1]))
            assert c.recv(100) == b"udp ping"
        assert jp.wait(30) == 0, jp.stderr.read()
    finally:
        jp.kill()
        jp.wait(10)
