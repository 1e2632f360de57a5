"""What the network facility costs: per-run set-up of ``--network bridge`` and of ``--allow-host``
over ``--network none``, and the egress proxy's throughput against a direct connection.

    sudo .venv/bin/python bench/network.py [--runs N] [--mb 100] [--json]
    .venv/bin/python bench/network.py [--runs N] [--mb 100] [--json]      (rootless: a pod network)

As root everything runs inside network namespaces the benchmark makes (the fake upstream of the
tests, tests/net_helpers.py: HTTP on 203.0.113.2 in one namespace, jailpy in another, joined by
a veth), which are deleted at the end.  Rootless, "bridge" is a rootless named network (a pod,
jailpy.net.pod) the benchmark creates and removes, and the upstream serves on 127.0.0.1 (so the
proxied runs add --allow-net 127.0.0.1/32:PORT).  Only ratios measured in the same run mean
anything; absolute milliseconds depend on the machine and its load (the load average is printed).

Rows (each in interleaved rounds, so drift hits all alike):
* API per run: ``Sandbox(policy).run(["/bin/true"])`` on a prepared Sandbox per mode;
* API fresh: ``jailpy.run(["/bin/true"], policy)`` (a new Sandbox, user namespace and id maps);
* CLI per run: ``jailpy exec FLAGS -- /bin/true`` (includes importing asyncio for the network
  service, about 30 ms);
* throughput: a 100 MB download by a Python client (recv_into, 256 KiB buffer) direct from the
  namespace jailpy runs in, and from inside a sandbox through the proxy (--allow-host,
  transparent path), best of 3 each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLIENT = ("import socket, sys, time\n"
          "t = time.perf_counter(); s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)\n"
          "s.sendall(f'GET /big?mb={sys.argv[3]} HTTP/1.0\\r\\nHost: {sys.argv[1]}\\r\\n\\r\\n'.encode())\n"
          "buf = bytearray(1 << 18); n = 0\n"
          "while True:\n"
          "    k = s.recv_into(buf)\n"
          "    if not k: break\n"
          "    n += k\n"
          "print(n, time.perf_counter() - t)\n")
def modes(bridge: str, resolver: str, extra: list[str]) -> dict[str, list[str]]:
    return {"none": [], "bridge": ["--network", bridge],
            "allow-host": ["--allow-host", "index.test:80", "--resolver", resolver, *extra]}


def _policy(jailpy, flags: list[str]):
    changes: dict = {}
    for k, v in zip(flags[::2], flags[1::2]):
        key = k[2:].replace("-", "_")
        if key in ("allow_host", "allow_net"):
            changes.setdefault(key, []).append(v)
        else:
            changes[key] = v
    return jailpy.Policy().replace(**changes) if changes else jailpy.Policy()


def _interleaved(names: list[str], rounds: int, one) -> dict[str, float]:
    """Median milliseconds of ``one(name)`` per name, the order rotating each round."""
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t = time.perf_counter()
            one(name)
            times[name].append(time.perf_counter() - t)
    return {n: statistics.median(v) * 1000 for n, v in times.items()}


def child(args, table: dict[str, list[str]], host: str, big: list[str]) -> dict:
    """Where jailpy runs: the measurements (see the module docstring).  ``table``: mode -> flags;
    ``host``/``big``: the upstream's address for the direct download and the flags and name of
    the proxied one."""
    import jailpy

    out: dict = {"load": os.getloadavg()[0]}
    io = {"stdin": jailpy.DEVNULL, "stdout": jailpy.DEVNULL, "stderr": jailpy.DEVNULL}
    boxes = {name: jailpy.Sandbox(_policy(jailpy, flags)) for name, flags in table.items()}
    for box in boxes.values():
        for _ in range(5):
            box.run(["/bin/true"], **io)

    def api(name: str) -> None:
        assert boxes[name].run(["/bin/true"], **io).exit_code == 0

    out["api_ms"] = _interleaved(list(table), args.runs, api)
    for box in boxes.values():
        box.close()

    def fresh(name: str) -> None:
        assert jailpy.run(["/bin/true"], _policy(jailpy, table[name]), **io).exit_code == 0

    out["fresh_ms"] = _interleaved(list(table), max(10, args.runs // 2), fresh)

    def cli(name: str) -> None:
        subprocess.run([sys.executable, "-m", "jailpy", "exec", *table[name], "--", "/bin/true"], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=REPO)

    out["cli_ms"] = _interleaved(list(table), max(10, args.runs // 4), cli)
    direct, proxied = [], []
    port = big[-1]
    for _ in range(3):
        p = subprocess.run([sys.executable, "-c", CLIENT, host, port, str(args.mb)], capture_output=True,
                           check=True, timeout=300)
        n, dt = p.stdout.split()
        direct.append(int(n) / float(dt))
        p = subprocess.run([sys.executable, "-m", "jailpy", "exec", *big[:-1], "--", sys.executable, "-c", CLIENT,
                            "big.test", port, str(args.mb)], capture_output=True, check=True, timeout=300, cwd=REPO)
        n, dt = p.stdout.split()
        proxied.append(int(n) / float(dt))
    out["throughput_MBps"] = {"direct": max(direct) / 1e6, "proxy": max(proxied) / 1e6}
    return out


def rootless(args) -> dict:
    """As a normal user: "bridge" is a pod network made for the benchmark, the upstream is on 127.0.0.1."""
    import secrets

    sys.path.insert(0, str(REPO / "tests"))
    from net_helpers import upstream_loopback

    name = "bench" + secrets.token_hex(3)
    jp = [sys.executable, "-m", "jailpy", "network"]
    subprocess.run([*jp, "create", name], check=True, capture_output=True, cwd=REPO, timeout=60)
    try:
        with tempfile.TemporaryDirectory() as tmp, upstream_loopback(Path(tmp)) as up:
            extra = ["--allow-net", f"127.0.0.1/32:{up.http}"]
            table = modes(f"bridge:{name}", up.resolver, extra)
            big = ["--allow-host", f"big.test:{up.http}", "--resolver", up.resolver, *extra, str(up.http)]
            return child(args, table, "127.0.0.1", big)
    finally:
        subprocess.run([*jp, "rm", name], capture_output=True, cwd=REPO, timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        big = ["--allow-host", "big.test:80", "--resolver", "203.0.113.2", "80"]
        print(json.dumps(child(args, modes("bridge", "203.0.113.2", []), "203.0.113.2", big)))
        return 0
    root = os.geteuid() == 0
    if not root:
        res = rootless(args)
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from net_helpers import upstream_netns

        with tempfile.TemporaryDirectory() as tmp, upstream_netns(Path(tmp)) as up:
            p = subprocess.run([*up.prefix, sys.executable, __file__, "--child", "--runs", str(args.runs), "--mb",
                                str(args.mb)], capture_output=True, text=True, cwd=REPO, timeout=3600)
            if p.returncode != 0:
                print(p.stderr[-3000:], file=sys.stderr)
                return 1
            res = json.loads(p.stdout)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    who = "root (bridge: the machine's bridge, in a namespace of the benchmark's)" if root else \
        f"uid {os.getuid()} (bridge: a rootless pod network)"
    print(f"jailpy network bench: {args.runs} rounds, kernel {os.uname().release}, {os.cpu_count()} CPUs, {who}, "
          f"load average {res['load']:.2f}")
    for key, title in (("api_ms", "API per run (prepared Sandbox)"), ("fresh_ms", "API fresh (jailpy.run)"),
                       ("cli_ms", "CLI per run (jailpy exec)")):
        base = res[key]["none"]
        print(f"\n{title}")
        for name, ms in res[key].items():
            print(f"  {name:<11} {ms:8.1f} ms   x{ms / base:5.2f}   {ms - base:+7.1f} ms over none")
    tp = res["throughput_MBps"]
    print(f"\n{args.mb} MB download: direct {tp['direct']:.0f} MB/s, through the proxy {tp['proxy']:.0f} MB/s: "
          f"x{tp['proxy'] / tp['direct']:.2f} of direct")
    api = res["api_ms"]
    for label, ok in ((f"bridge <= +15 ms per run (API): {api['bridge'] - api['none']:+.1f} ms",
                       api["bridge"] - api["none"] <= 15),
                      (f"allow-host <= +5 ms per run (API): {api['allow-host'] - api['none']:+.1f} ms",
                       api["allow-host"] - api["none"] <= 5),
                      (f"proxy >= 0.8x direct: x{tp['proxy'] / tp['direct']:.2f}", tp["proxy"] >= 0.8 * tp["direct"])):
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
