"""What the network facility costs: per-run set-up of ``--network bridge`` and of ``--allow-host``
over ``--network none``, and the egress proxy's throughput against a direct connection.

    sudo .venv/bin/python bench/network.py [--runs N] [--mb 100] [--json]

As root only: everything runs inside network namespaces the benchmark makes (the fake upstream
of the tests, tests/net_helpers.py: HTTP on 203.0.113.2 in one namespace, jailpy in another,
joined by a veth), which are deleted at the end.  Only ratios measured in the same run mean
anything; absolute milliseconds depend on the machine and its load.

Rows (each in interleaved rounds, so drift hits all alike):
* API per run: ``Sandbox(policy).run(["/bin/true"])`` on a prepared Sandbox per mode;
* CLI per run: ``jailpy exec FLAGS -- /bin/true`` (includes importing pyroute2 for bridge);
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
          "t = time.perf_counter(); s = socket.create_connection((sys.argv[1], 80), timeout=30)\n"
          "s.sendall(f'GET /big?mb={sys.argv[2]} HTTP/1.0\\r\\nHost: {sys.argv[1]}\\r\\n\\r\\n'.encode())\n"
          "buf = bytearray(1 << 18); n = 0\n"
          "while True:\n"
          "    k = s.recv_into(buf)\n"
          "    if not k: break\n"
          "    n += k\n"
          "print(n, time.perf_counter() - t)\n")
MODES = {"none": [], "bridge": ["--network", "bridge"],
         "allow-host": ["--allow-host", "index.test:80", "--resolver", "203.0.113.2"]}


def child(args) -> dict:
    """In the jailpy side's namespace: the measurements (see the module docstring)."""
    import jailpy

    out: dict = {"api_ms": {}, "cli_ms": {}}
    boxes = {}
    for name, flags in MODES.items():
        pol = jailpy.Policy()
        changes = {}
        for k, v in zip(flags[::2], flags[1::2]):
            key = k[2:].replace("-", "_")
            changes[key] = [v] if key == "allow_host" else v
        boxes[name] = jailpy.Sandbox(pol.replace(**changes) if changes else pol)
    times: dict[str, list[float]] = {n: [] for n in MODES}
    for box in boxes.values():
        for _ in range(5):
            box.run(["/bin/true"], stdin=jailpy.DEVNULL, stdout=jailpy.DEVNULL, stderr=jailpy.DEVNULL)
    order = list(MODES)
    for i in range(args.runs):
        for name in order[i % 3:] + order[:i % 3]:
            t = time.perf_counter()
            r = boxes[name].run(["/bin/true"], stdin=jailpy.DEVNULL, stdout=jailpy.DEVNULL, stderr=jailpy.DEVNULL)
            times[name].append(time.perf_counter() - t)
            assert r.exit_code == 0, r
    for box in boxes.values():
        box.close()
    out["api_ms"] = {n: statistics.median(v) * 1000 for n, v in times.items()}
    cli: dict[str, list[float]] = {n: [] for n in MODES}
    for i in range(max(10, args.runs // 4)):
        for name in order[i % 3:] + order[:i % 3]:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "jailpy", "exec", *MODES[name], "--", "/bin/true"], check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=REPO)
            cli[name].append(time.perf_counter() - t)
    out["cli_ms"] = {n: statistics.median(v) * 1000 for n, v in cli.items()}
    direct, proxied = [], []
    for _ in range(3):
        p = subprocess.run([sys.executable, "-c", CLIENT, "203.0.113.2", str(args.mb)], capture_output=True,
                           check=True, timeout=300)
        n, dt = p.stdout.split()
        direct.append(int(n) / float(dt))
        p = subprocess.run([sys.executable, "-m", "jailpy", "exec", "--allow-host", "big.test:80", "--resolver",
                            "203.0.113.2", "--", sys.executable, "-c", CLIENT, "big.test", str(args.mb)],
                           capture_output=True, check=True, timeout=300, cwd=REPO)
        n, dt = p.stdout.split()
        proxied.append(int(n) / float(dt))
    out["throughput_MBps"] = {"direct": max(direct) / 1e6, "proxy": max(proxied) / 1e6}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if os.geteuid() != 0:
        print("bench/network.py: run as root (it makes network namespaces of its own for bridges and the upstream)")
        return 0
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
    print(f"jailpy network bench: {args.runs} rounds, kernel {os.uname().release}, {os.cpu_count()} CPUs, root")
    for key, title in (("api_ms", "API per run (prepared Sandbox)"), ("cli_ms", "CLI per run (jailpy exec)")):
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
