"""--network bridge and named networks (root), and what is refused without root.

Every bridge, veth, address and nftables rule is made inside a network namespace the test made
(tests/net_helpers.py: netns(); jailpy runs there through nsenter), never in the machine's own;
nothing enables forwarding or NAT.  The programs inside read their interfaces from /sys and
/proc (the sandbox's seccomp policy refuses netlink sockets to `ip`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import IS_ROOT, jail
from limits_helpers import TIME_FACTOR
from net_helpers import DIAL, PROBE, SERVE, netns, upstream_netns

ROOT_ONLY = pytest.mark.skipif(not IS_ROOT, reason="bridges need root")

SHOW = ("import json, socket, fcntl, struct, os\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24])\n"
        "routes = [l.split()[:3] for l in open('/proc/net/route').read().splitlines()[1:]]\n"
        "print(json.dumps({'links': sorted(os.listdir('/sys/class/net')), 'addr': addr, 'routes': routes,\n"
        "                  'hosts': open('/etc/hosts').read(), 'resolv': open('/etc/resolv.conf').read()}))\n")
@pytest.fixture
def ns():
    if not IS_ROOT:
        pytest.skip("bridges need root")
    with netns() as n:
        yield n
        _no_veth_left(n)


def _serve(ns, *flags: str, seconds: float = 10) -> subprocess.Popen:
    p = ns.popen("exec", *flags, "--", sys.executable, "-c", SERVE, str(seconds))
    assert p.stdout.readline().strip() == b"listening", p.stderr.read()
    return p


@ROOT_ONLY
def test_a_bridged_sandbox_gets_eth0_an_address_and_a_default_route(ns):
    p = ns.jailpy("exec", "--network", "bridge", "--report", "-", "--", sys.executable, "-c", SHOW)
    assert p.returncode == 0, p.stderr.decode()
    got = json.loads(p.stdout)
    report = json.loads(p.stderr.decode()[p.stderr.decode().index("{\n"):])
    assert got["links"] == ["eth0", "lo"]
    assert got["addr"] == report["network"]["address"] and got["addr"].startswith("10.213.0.")
    assert ["eth0", "00000000", "0100D50A"] in got["routes"]  # default via 10.213.0.1 (little-endian hex)
    assert "nameserver 127.0.0.1" in got["resolv"]
    assert report["protections"]["network"]["mode"] == "bridge"
    assert "jailpy0" in ns.links()
    nft = subprocess.run(["ip", "netns", "exec", ns.name, "nft", "list", "table", "inet", "jailpy"],
                         capture_output=True, text=True, timeout=30).stdout
    assert '"jailpy0"' in nft and "iifname @bridges counter" in nft


@ROOT_ONLY
def test_sandboxes_on_the_default_bridge_reach_neither_each_other_nor_the_host(ns):
    host = subprocess.Popen([*ns.prefix, sys.executable, "-c", SERVE, "6"], stdout=subprocess.PIPE)
    assert host.stdout.readline().strip() == b"listening"
    a = _serve(ns, "--network", "bridge", seconds=6)
    time.sleep(0.2)
    b = ns.jailpy("exec", "--network", "bridge", "--", sys.executable, "-c",
                  "import subprocess, sys\n"
                  f"for t in ('10.213.0.2', '10.213.0.1'): subprocess.run([sys.executable, '-c', {DIAL!r}, t, '7000', '2'])")
    assert b.stdout.decode().count("error") == 2, b.stdout.decode()
    assert b"nobody came" in a.communicate(timeout=30)[0]
    assert b"nobody came" in host.communicate(timeout=30)[0]


@ROOT_ONLY
def test_two_sandboxes_on_a_named_network_talk_by_hostname(ns):
    p = ns.jailpy("network", "create", "ci", "--subnet", "10.214.9.0/24")
    assert p.returncode == 0, p.stderr.decode()
    db = _serve(ns, "--network", "bridge:ci", "--hostname", "db")
    app = ns.jailpy("exec", "--network", "bridge:ci", "--hostname", "app", "--", sys.executable, "-c", DIAL, "db",
                    "7000", "5")
    assert app.stdout.decode().strip() == "hello from db", app.stderr.decode()
    assert b"served 10.214.9.3" in db.communicate(timeout=30)[0]
    ls = json.loads(ns.jailpy("network", "ls", "--json").stdout)
    assert {"name": "ci", "subnet": "10.214.9.0/24", "bridge": "jp-ci", "sandboxes": 0, "hosts": []} in ls
    assert ns.jailpy("network", "rm", "ci").returncode == 0
    assert "jp-ci" not in ns.links()


@ROOT_ONLY
def test_network_create_refuses_overlaps_and_bad_names(ns):
    assert ns.jailpy("network", "create", "one", "--subnet", "10.214.9.0/24").returncode == 0
    for args, msg in ((["two", "--subnet", "10.214.9.128/25"], "overlaps network 'one'"),
                      (["one"], "exists already"), (["Bad_Name"], "network name"),
                      (["three", "--subnet", "10.0.0.0/8"], "/16 to /29"),
                      (["five", "--subnet", "10.214.0.0/8"], "host bits are set"),
                      (["four", "--subnet", "banana"], "not a network")):
        p = ns.jailpy("network", "create", *args)
        assert p.returncode == 125 and msg in p.stderr.decode() and p.stderr.count(b"\n") == 1, p.stderr
    p = ns.jailpy("exec", "--network", "bridge:nope", "--", "true")
    assert p.returncode == 125 and b"no network named 'nope'" in p.stderr


@ROOT_ONLY
def test_publish_reaches_a_bridged_sandbox(ns):
    srv = _serve(ns, "--network", "bridge", "--publish", "127.0.0.1:18471:7000", "--hostname", "pub")
    got = subprocess.run([*ns.prefix, sys.executable, "-c", DIAL, "127.0.0.1", "18471", "5"], capture_output=True,
                         timeout=30)
    assert got.stdout.decode().strip() == "hello from pub"
    srv.communicate(timeout=30)


@ROOT_ONLY
def test_fifty_runs_and_a_sigkill_leave_nothing_behind(ns):
    code = ("import jailpy, sys\n"
            "pol = jailpy.Policy().replace(network='bridge')\n"
            "with jailpy.Sandbox(pol) as box:\n"
            "    for i in range(50):\n"
            "        r = box.run(['true'])\n"
            "        assert r.exit_code == 0 and r.network['address'], r\n"
            "print('ok')\n")
    p = subprocess.run([*ns.prefix, sys.executable, "-c", code], capture_output=True, timeout=300)
    assert p.stdout.strip() == b"ok", p.stderr.decode()[-2000:]
    _no_veth_left(ns)
    state = ns.state_dir()
    assert _leases(state) == {}
    # SIGKILL jailpy mid-run: the kernel takes the veth with the sandbox; the lease is swept later
    victim = ns.popen("exec", "--network", "bridge", "--", "sleep", "60")
    deadline = time.monotonic() + 10 * TIME_FACTOR
    while time.monotonic() < deadline and not _leases(state):
        time.sleep(0.05)
    assert [x for x in ns.links() if x.startswith("jpv")]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    _no_veth_left(ns)
    assert json.loads(ns.jailpy("network", "ls", "--json").stdout)[0]["sandboxes"] == 0
    assert _leases(state) == {}


def _leases(state: str) -> dict:
    with open(os.path.join(state, "default.leases")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def _no_veth_left(ns) -> None:
    """The kernel deletes a finished sandbox's veth with its namespace, asynchronously: wait (bounded)."""
    deadline = time.monotonic() + 10 * TIME_FACTOR
    while time.monotonic() < deadline and [x for x in ns.links() if x.startswith("jpv")]:
        time.sleep(0.05)
    assert [x for x in ns.links() if x.startswith("jpv")] == []


def test_bridge_needs_root():
    if IS_ROOT:
        pytest.skip("checks the rootless message")
    p = jail("--network", "bridge", "--", "true")
    assert p.returncode == 125 and b"(the default network) needs root" in p.stderr and p.stderr.count(b"\n") == 1
    assert b"jailpy network create NAME" in p.stderr


@pytest.fixture
def netns_up(tmp_path):
    if not IS_ROOT:
        pytest.skip("network namespaces of the test's own need root")
    with upstream_netns(tmp_path) as up:
        yield up


@ROOT_ONLY
def test_allow_host_with_a_bridge(netns_up):
    p = netns_up.run("--network", "bridge", "--allow-host", "index.test:80", "--report", "-", "--", sys.executable,
                     str(PROBE), json.dumps([["direct", "http://index.test/hello"], ["tcp", "203.0.113.2", "80"],
                                             ["resolve", "other.test"]]))
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)
    assert out[0] == "ok: hello from 203.0.113.2 host=index.test", out
    assert out[1].startswith("error") and out[2].startswith("error"), out
