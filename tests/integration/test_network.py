"""Egress by host name (--allow-host, --allow-net) through jailpy's proxy, with --network none.

The fake upstream (tests/net_helpers.py, tests/net/upstream.py) serves HTTP, a PyPI-style
simple index with a wheel built by the test, and DNS (dnslib), which jailpy's proxy is pointed
at with --resolver.  As root it lives in network namespaces the test makes (TEST-NET-3 and
10.77.0.0/24 addresses that exist only there; jailpy runs inside one of them through nsenter);
for any user it serves on 127.0.0.1, which runs then allow with --allow-net.  The program
inside is tests/net/probe.py: it tries each action and prints what happened."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import jailpy
from conftest import IS_ROOT, jail
from limits_helpers import TIME_FACTOR
from net_helpers import PROBE, netns_leftovers, upstream_loopback, upstream_netns

ROOT_ONLY = pytest.mark.skipif(not IS_ROOT, reason="network namespaces of the test's own need root")
PIP = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
       "--target", "/tmp/site", "--trusted-host", "index.test"]


def probe(up, actions: list, *flags: str) -> tuple[list[str], dict, subprocess.CompletedProcess]:
    """Run the probe with ``actions`` under ``flags``: (outcomes, the report, the process)."""
    p = up.run(*flags, "--report", "-", "--", sys.executable, str(PROBE), json.dumps(actions))
    assert p.returncode == 0, p.stderr.decode()
    report = json.loads(p.stderr.decode()[p.stderr.decode().index("{\n"):])
    return json.loads(p.stdout), report, p


@pytest.fixture
def netns_up(tmp_path):
    if not IS_ROOT:
        pytest.skip("network namespaces of the test's own need root")
    before = netns_leftovers()
    with upstream_netns(tmp_path) as up:
        yield up
    assert netns_leftovers() == before


@pytest.fixture
def loop_up(tmp_path):
    with upstream_loopback(tmp_path) as up:
        yield up


# ---------------------------------------------------------------- the CI-plugin case ----

@ROOT_ONLY
def test_pip_install_from_the_one_allowed_index_and_nothing_else(netns_up):
    """`jailpy exec --network none --allow-host index.test:80 -- pip install ...` installs the
    wheel; the same sandbox cannot fetch from another name or address, resolve other names,
    reach the proxy for a refused target, or get out with UDP, raw IP or IPv6."""
    flags = ("--network", "none", "--allow-host", "index.test:80")
    p = netns_up.run(*flags, "--report", "-", "--", *PIP, "--index-url", "http://index.test/simple/", "jptestpkg",
                     timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    assert b"Successfully installed jptestpkg-1.0" in p.stdout
    report = json.loads(p.stderr.decode()[p.stderr.decode().index("{\n"):])
    assert report["network"]["connections_allowed"] >= 2
    assert report["network"]["connections_refused"] == 0
    assert {"target": "index.test", "port": 80, "address": "203.0.113.2"} in report["network"]["allowed"]
    assert report["protections"]["network"]["allow_host"] == ["index.test:80"]

    actions = [
        ["get", "http://index.test/hello"],          # 0 through HTTP_PROXY
        ["direct", "http://index.test/hello"],       # 1 transparent: the stub's fake address
        ["resolve", "other.test"],                   # 2 a name not allowed: NXDOMAIN
        ["get", "http://other.test/hello"],          # 3 the proxy says 403
        ["tcp", "203.0.113.3", "80"],                # 4 an address: refused by the proxy
        ["tcp", "203.0.113.2", "80"],                # 5 the allowed host's own address, as an address
        ["connect", "203.0.113.2:80"],               # 6 the same through the HTTP proxy
        ["udp", "203.0.113.2", "53"],                # 7 UDP to the upstream's DNS: answered by the stub
        ["raw"],                                     # 8 raw IP
        ["tcp6", "2001:db8::1", "80"],               # 9 IPv6: no route
        ["tcp", "203.0.113.2", "22"],                # 10 a port nobody listens on in the sandbox
        ["connect", "127.0.0.1:3128"],               # 11 the proxy's own port, through itself
    ]
    out, report, _ = probe(netns_up, actions, *flags)
    assert out[0] == out[1] == "ok: hello from 203.0.113.2 host=index.test", out
    assert out[2].startswith("error: gaierror"), out[2]
    assert "403" in out[3], out[3]
    for i in (4, 5, 6, 8, 9, 10, 11):
        assert out[i].startswith("error"), (i, out[i])
    assert out[7] == "ok: rcode 3 from 203.0.113.2", out[7]  # NXDOMAIN from the stub, never the upstream
    assert "Network is unreachable" in out[9]
    net = report["network"]
    assert net["connections_allowed"] == 2
    refused = {(e["target"], e["port"]) for e in net["refused"]}
    assert {("other.test", 80), ("203.0.113.3", 80), ("203.0.113.2", 80), ("127.0.0.1", 3128)} <= refused
    assert "other.test" in net["dns_refused"]


@ROOT_ONLY
def test_hostile_targets_are_refused_and_none_hangs_the_proxy(netns_up):
    flags = ("--allow-host", "index.test:80", "--allow-host", "rebind.test:80", "--allow-host", "loop.test:80",
             "--allow-host", "private.test:80", "--allow-host", "mapped.test:80", "--allow-host", "*.wild.test:80")
    ok = ["INDEX.test:80", "index.test.:80", "sub.wild.test:80"]
    bad = ["[index.test]:80", "index.test:81", "index.test..:80", "ïndex.test:80", "wild.test:80",
           "2130706433:80", "0x7f.1:80", "017700000001:80", "127.1:80", "[::ffff:127.0.0.1]:80", "[::1]:80",
           "203.0.113.2:80", "0xcb.0.113.2:80", "3405803778:80", "169.254.169.254:80", "loop.test:80",
           "private.test:80", "mapped.test:80", "user@index.test:80", "index.test%2f:80"]
    actions = [["connect", t] for t in ok + bad] + [["connect", "rebind.test:80"], ["connect", "rebind.test:80"]]
    out, report, _ = probe(netns_up, actions, *flags)
    for t, o in zip(ok, out):
        assert o.startswith("ok: hello from 203.0.113.2"), (t, o)
    for t, o in zip(bad, out[len(ok):]):
        assert o.startswith("error") and "403" in o, (t, o)
    # DNS rebinding: the first answer is the upstream, the next 127.0.0.1: checked each time
    assert out[-2].startswith("ok: hello from 203.0.113.2"), out[-2]
    assert "403" in out[-1], out[-1]
    reasons = {e["target"]: e["reason"] for e in report["network"]["refused"]}
    assert "loopback" in reasons["loop.test"] and "private" in reasons["private.test"]
    assert "loopback" in reasons["mapped.test"] and "loopback" in reasons["rebind.test"]
    assert reasons["169.254.169.254"].startswith("address not allowed")


@ROOT_ONLY
def test_allow_net_lets_a_name_resolve_to_a_private_address(netns_up):
    actions = [["connect", "private.test:80"], ["tcp", "10.77.0.2", "80"], ["connect", "10.77.0.2:80"]]
    out, _, _ = probe(netns_up, actions, "--allow-host", "private.test:80", "--allow-net", "10.77.0.0/24:80")
    assert all(o == "ok: hello from 10.77.0.2" + (" host=None" if i == 1 else "") or o.startswith("ok: hello from 10.77.0.2")
               for i, o in enumerate(out)), out


@ROOT_ONLY
def test_slowloris_is_cut_off_and_others_are_served_meanwhile(netns_up):
    """A client that never finishes its request head is closed after HEAD_TIMEOUT (10 s);
    meanwhile other connections are served at once."""
    code = (
        "import socket, time, urllib.request\n"
        "slow = [socket.create_connection(('127.0.0.1', 3128), timeout=60) for _ in range(20)]\n"
        "for s in slow: s.sendall(b'CONNECT index.test:80 HTTP/1.1\\r\\n')\n"
        "t = time.monotonic()\n"
        "print(urllib.request.urlopen('http://index.test/hello', timeout=10).read().decode().strip())\n"
        "print('fast', round(time.monotonic() - t, 2))\n"
        "t = time.monotonic()\n"
        "for s in slow: s.recv(100)\n"
        "print('cut', round(time.monotonic() - t, 2))\n")
    p = netns_up.run("--allow-host", "index.test:80", "--", sys.executable, "-c", code, timeout=90)
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().split("\n")
    assert lines[0] == "hello from 203.0.113.2 host=index.test"
    assert float(lines[1].split()[1]) < 5 * TIME_FACTOR
    assert float(lines[2].split()[1]) < 10 + 10 * TIME_FACTOR


# ---------------------------------------------------------------- any user ----

def test_pip_install_through_the_proxy_as_any_user(loop_up):
    p = loop_up.run("--allow-host", f"index.test:{loop_up.http}", "--", *PIP,
                    "--index-url", f"http://index.test:{loop_up.http}/simple/", "jptestpkg", timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    assert b"Successfully installed jptestpkg-1.0" in p.stdout


def test_a_loopback_answer_is_refused_without_allow_net(loop_up):
    loop_up.extra = []  # no --allow-net
    out, report, _ = probe(loop_up, [["get", f"http://index.test:{loop_up.http}/hello"]],
                           "--allow-host", f"index.test:{loop_up.http}")
    assert "403" in out[0]
    assert "loopback" in report["network"]["refused"][0]["reason"]


@pytest.mark.parametrize("mode", ["run", "fork", "forkserver"])
def test_allow_host_in_every_way_a_sandbox_starts(loop_up, mode):
    """jailpy.run (a new user namespace), a Sandbox forking from the caller, and a Sandbox whose
    fork server starts PID 1: each run gets its own stub and channel, and its own counts."""
    port = loop_up.http
    policy = jailpy.Policy().replace(allow_host=[f"index.test:{port}"], allow_net=[f"127.0.0.1/32:{port}"],
                                     resolver=loop_up.resolver)
    argv = [sys.executable, str(PROBE), json.dumps([["direct", f"http://index.test:{port}/hello"],
                                                    ["resolve", "other.test"]])]
    if mode == "run":
        results = [jailpy.run(argv, policy, capture_output=True)]
    else:
        with jailpy.Sandbox(policy, forkserver=mode == "forkserver") as box:
            results = [box.run(argv, capture_output=True) for _ in range(3)]
            if mode == "forkserver":
                assert box._forkserver is not None and box._forkserver.ready()
    for r in results:
        out = json.loads(r.stdout)
        assert out[0] == "ok: hello from 127.0.0.1 host=index.test:%d" % port, (out, r.stderr)
        assert out[1].startswith("error: gaierror")
        assert r.network["connections_allowed"] == 1 and r.network["dns_refused"] == ["other.test"]


def test_the_stub_is_a_thread_of_pid1_the_program_cannot_end(loop_up):
    """The stub is no process of its own the program could kill; signals to PID 1 from inside
    are ignored (pid_namespaces(7); the ones PID 1 handles it forwards to the program), so after
    trying the network still works."""
    port = loop_up.http
    code = ("import os, signal, urllib.request\n"
            "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
            "for s in (signal.SIGKILL, signal.SIGSTOP):\n"
            "    try: os.kill(1, s)\n"
            "    except OSError as e: print('kill', e.errno)\n"
            f"print(urllib.request.urlopen('http://index.test:{port}/hello', timeout=10).read().decode().strip())\n")
    p = loop_up.run("--allow-host", f"index.test:{port}", "--", sys.executable, "-c", code)
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().split("\n")
    pids = json.loads(lines[0])
    assert len(pids) == 2 and pids[0] == 1, pids  # PID 1 and the program (the stub's thread took pid 2)
    assert lines[-2] == f"hello from 127.0.0.1 host=index.test:{port}"


def test_without_rules_the_network_is_unchanged(loop_up):
    r = jailpy.run([sys.executable, str(PROBE), json.dumps([["resolve", "index.test"]])], capture_output=True)
    assert r.network is None and r.protections["network"] == "none (loopback only)"
    assert json.loads(r.stdout)[0].startswith("error")


# ---------------------------------------------------------------- the policy ----

@pytest.mark.parametrize("args, message", [
    (["--network", "wifi"], "--network: expected none, user, bridge or bridge:NAME"),
    (["--allow-net", "10.0.0.0/33:80"], "--allow-net: not a network"),
    (["--allow-net", "10.0.0.0/8"], "allow-net: 10.0.0.0/8 needs a port"),
    (["--allow-host", "exa mple.org"], "--allow-host: not a host name"),
    (["--allow-host", "127.0.0.1"], "is an address, not a host name"),
    (["--allow-host", "*.org"], "a wildcard needs at least two labels"),
    (["--allow-host", "example.org:99999"], "port must be 1-65535"),
    (["--publish", "8080:80/sctp"], "protocol must be tcp or udp"),
    (["--resolver", "dns.example"], "expected IP[:PORT] of a DNS server"),
])
def test_bad_network_flags_exit_125_with_one_line(args, message):
    p = jail(*args, "--", "true")
    err = p.stderr.decode()
    assert p.returncode == 125 and err.count("\n") == 1 and message in err, err


def test_a_network_table_in_a_policy_file(tmp_path):
    from jailpy.errors import PolicyError
    from jailpy.policy import load

    f = tmp_path / "p.toml"
    f.write_text('[network]\nmode = "none"\nallow_host = ["pypi.org:443"]\nresolver = "192.0.2.53"\n')
    pol = load(str(f))
    assert pol.network == "none" and pol.allow_host == ["pypi.org:443"] and pol.resolver == "192.0.2.53"
    flat = tmp_path / "flat.toml"
    flat.write_text('network = "none"\nallow_host = ["pypi.org:443"]\nresolver = "192.0.2.53"\n')
    assert load(str(flat)).digest() == pol.digest()
    f.write_text('allow_host = ["a.org"]\n[network]\nallow_host = ["b.org"]\n')
    with pytest.raises(PolicyError, match="network.allow_host: also given as allow_host"):
        load(str(f))
    f.write_text('[network]\nmood = "none"\n')
    with pytest.raises(PolicyError, match="network.mood: unknown key"):
        load(str(f))


def test_stats_show_the_network_counts(loop_up):
    port = loop_up.http
    p = loop_up.run("--allow-host", f"index.test:{port}", "--stats", "--", sys.executable, str(PROBE),
                    json.dumps([["get", f"http://index.test:{port}/hello"], ["get", f"http://other.test:{port}/"],
                                ["resolve", "evil.test"]]))
    assert p.returncode == 0, p.stderr.decode()
    err = p.stderr.decode()
    assert "connections     1 allowed, 1 refused" in err, err
    assert f"refused         other.test:{port}" in err and "names refused   evil.test" in err, err
