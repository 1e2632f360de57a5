"""Helpers of the network tests: a fake upstream, and jailpy run where it can reach it.

Safety: nothing here configures the machine's own network namespace.  As root,
:func:`upstream_netns` makes two network namespaces of its own (``ip netns``): ``h`` (where jailpy
runs, through nsenter) and ``u`` (the upstream), joined by a veth created inside them, with
addresses of TEST-NET-3 (203.0.113.0/24) and 10.77.0.0/24 that exist only there; no forwarding,
no NAT.  :func:`upstream_loopback` (any user) serves on 127.0.0.1 instead.  Both end their
server and delete what they made, also when the test fails."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from conftest import IS_ROOT, REPO, TIMEOUT

UPSTREAM = Path(__file__).resolve().parent / "net" / "upstream.py"
PROBE = Path(__file__).resolve().parent / "net" / "probe.py"
# run in a sandbox: SERVE answers one connection on port 7000 with its host name (ARGV: seconds to
# wait), DIAL connects to HOST PORT (ARGV, then seconds) and prints what it got or "error ..."
SERVE = ("import socket, sys\n"
         "s = socket.socket(); s.bind(('0.0.0.0', 7000)); s.listen(); s.settimeout(float(sys.argv[1]))\n"
         "print('listening', flush=True)\n"
         "try:\n"
         "    c, a = s.accept(); c.sendall(b'hello from ' + socket.gethostname().encode()); c.close(); print('served', a[0])\n"
         "except OSError as e: print('nobody came', e)\n")
DIAL = ("import socket, sys\n"
        "try: print(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).recv(100).decode())\n"
        "except OSError as e: print('error', e)\n")
ZONE = {
    "index.test": ["203.0.113.2"], "other.test": ["203.0.113.3"], "private.test": ["10.77.0.2"],
    "loop.test": ["127.0.0.1"], "rebind.test": ["203.0.113.2", "127.0.0.1"], "mapped.test": ["::ffff:127.0.0.1"],
    "big.test": ["203.0.113.2"], "sub.wild.test": ["203.0.113.2"], "wild.test": ["203.0.113.2"],
}


@dataclass
class Upstream:
    """Where the fake upstream is: ``prefix`` runs a command where jailpy reaches it, ``resolver``
    is its DNS server, ``http`` the port of its HTTP servers, ``args`` the jailpy flags every test gives."""

    prefix: list[str]
    resolver: str
    http: int = 80
    netns: str | None = None
    extra: list[str] = field(default_factory=list)

    def run(self, *args: str, timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
        """``jailpy exec --resolver ... ARGS`` where the upstream is reachable."""
        cmd = [*self.prefix, sys.executable, "-m", "jailpy", "exec", "--resolver", self.resolver, *self.extra, *args]
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, cwd=REPO, **kw)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=TIMEOUT)


def _start_server(prefix: list[str], tmp: Path, zone: dict, http: str, dns: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([*prefix, sys.executable, str(UPSTREAM), str(tmp), json.dumps(zone), http, dns],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("ready"):
        p.kill()
        raise RuntimeError(f"the fake upstream did not start: {line} {p.stderr.read()}")
    return p, line


def _stop(p: subprocess.Popen) -> None:
    try:
        p.stdin.close()
        p.wait(10)
    except (OSError, subprocess.TimeoutExpired):
        p.kill()
        p.wait(10)


@contextmanager
def upstream_netns(tmp: Path):
    """As root: the fake upstream in network namespaces of the test's own (see the module docstring)."""
    assert IS_ROOT
    tag = secrets.token_hex(3)
    h, u = f"jpt-h-{tag}", f"jpt-u-{tag}"
    made: list[str] = []
    server = state = None
    try:
        for ns in (h, u):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("-n", h, "link", "add", f"jpth{tag}", "type", "veth", "peer", "name", f"jptu{tag}", "netns", u)
        for ns, dev, addrs in ((h, f"jpth{tag}", ["203.0.113.1/24", "10.77.0.1/24"]),
                               (u, f"jptu{tag}", ["203.0.113.2/24", "203.0.113.3/24", "10.77.0.2/24"])):
            _ip("-n", ns, "link", "set", "lo", "up")
            for a in addrs:
                _ip("-n", ns, "addr", "add", a, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        server, _ = _start_server(["ip", "netns", "exec", u], tmp, ZONE,
                                  "203.0.113.2:80,203.0.113.3:80,10.77.0.2:80", "203.0.113.2:53")
        state = Netns(h).state_dir()
        yield Upstream(["nsenter", f"--net=/run/netns/{h}"], "203.0.113.2", 80, netns=h)
    finally:
        if server is not None:
            _stop(server)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=TIMEOUT)
        _remove_state(state)


def _remove_state(state: str | None) -> None:
    """jailpy's state for a namespace the test made (a bridge test leaves a default network there)."""
    import shutil

    if state and state.startswith("/run/jailpy/net/"):
        shutil.rmtree(state, ignore_errors=True)


@contextmanager
def upstream_loopback(tmp: Path):
    """Any user: the fake upstream on 127.0.0.1 (ephemeral ports); every name of the zone answers
    127.0.0.1, so runs need ``--allow-net 127.0.0.1/32:PORT`` (loopback is refused otherwise)."""
    zone = {name: ["127.0.0.1"] for name in ZONE}
    server, line = _start_server([], tmp, zone, "127.0.0.1:0", "127.0.0.1:0")
    try:
        parts = line.split()
        http = int(parts[1].rpartition(":")[2])
        dns = int(parts[2].partition("=")[2])
        yield Upstream([], f"127.0.0.1:{dns}", http, extra=["--allow-net", f"127.0.0.1/32:{http}"])
    finally:
        _stop(server)


def netns_leftovers() -> dict:
    """What a network test could leave behind, for before/after comparisons: the test's
    namespaces, jailpy's veths and bridges, and nftables tables (all as root)."""
    out = {}
    if IS_ROOT:
        out["netns"] = sorted(n.split()[0] for n in subprocess.run(["ip", "netns"], capture_output=True, text=True,
                                                                     timeout=TIMEOUT).stdout.splitlines())
        out["links"] = sorted(line.split()[0] for line in subprocess.run(
            ["ip", "-br", "link"], capture_output=True, text=True, timeout=TIMEOUT).stdout.splitlines())
    return out


@dataclass
class Netns:
    """A network namespace of the test's own (root), where jailpy runs through nsenter."""

    name: str

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.name}"]

    def jailpy(self, *args: str, timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
        """``jailpy ARGS`` (a sub-command and its arguments) in this namespace."""
        return subprocess.run([*self.prefix, sys.executable, "-m", "jailpy", *args], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, cwd=REPO, **kw)

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([*self.prefix, sys.executable, "-m", "jailpy", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, **kw)

    def python(self, code: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        """Python code run in this namespace, outside any sandbox (as the test's own process would)."""
        return subprocess.run([*self.prefix, sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, cwd=REPO)

    def links(self) -> list[str]:
        out = subprocess.run(["ip", "-n", self.name, "-br", "link"], capture_output=True, text=True, timeout=TIMEOUT)
        return sorted(line.split()[0].partition("@")[0] for line in out.stdout.splitlines())

    def state_dir(self) -> str:
        return self.python("from jailpy.net import leases; print(leases.state_dir(create=False))").stdout.decode().strip()


@contextmanager
def netns():
    """As root: an empty network namespace (loopback up) of the test's own; deleted afterwards with
    jailpy's state for it (/run/jailpy/net/<its cookie>)."""
    assert IS_ROOT
    ns = Netns(f"jpt-n-{secrets.token_hex(3)}")
    _ip("netns", "add", ns.name)
    state = None
    try:
        _ip("-n", ns.name, "link", "set", "lo", "up")
        state = ns.state_dir()
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=TIMEOUT)
        _remove_state(state)
