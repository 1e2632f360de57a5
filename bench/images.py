"""The cost of running on an image (``--image``) against ``--rootfs DIR`` on the same files.

    python bench/images.py [--runs N] [--extra DIR] [--json]

Builds the tests' image (Debian's static busybox, files written here, a whiteout and an opaque
directory across two layers: tests/image_helpers.py) as an OCI image layout with gzip layers;
``--extra DIR`` adds a third layer holding a copy of host directory DIR (e.g. /usr/lib/python3.11,
for a layer of thousands of files).  Then, with a store of its own (JAILPY_IMAGE_STORE in a temp
directory):

* ``first run``: ``jailpy exec --image oci:... -- /bin/true`` with an empty store (the layers are
  checked, unpacked and stacked), a few times, each with a new store;
* ``cached``: the same once the store holds the image (the index, manifest and config are read
  and checked each run), against ``jailpy exec --rootfs DIR -- /bin/true`` where DIR is the very
  tree the image resolved to, in interleaved rounds;
* the same two through the API (``jailpy.run(argv, Policy(image=...))`` against
  ``Policy(rootfs=...)``, in this process), without Python's start-up;
* ``resolve``: ``jailpy.image.prepare(ref)`` alone on the made image (read and check the index,
  manifest and config, one lock, one stat), many times: all that a cached ``--image`` run does
  that a ``--rootfs`` run does not (then both build the same mounts from a directory), and
  ``import jailpy.image`` in a new interpreter that has imported the CLI (what ``jailpy exec``
  pays once more; a cached run imports nothing else of the image code).

Target: a cached run within +1 ms of ``--rootfs``: checked on ``resolve`` + the import, the
extra work measured directly; the medians' differences of whole runs are printed too, but on a
busy machine their noise is larger than 1 ms.  A missed target prints FAIL; the exit status is 0 unless
something crashed.  Only figures from the same run compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import image_helpers as h  # noqa: E402

TARGET_MS = 1.0
CLI = [sys.executable, "-m", "jailpy", "exec", "--no-cwd"]


def _layer_of(directory: str) -> bytes:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(directory, arcname=directory.lstrip("/"), filter=lambda ti: ti if ti.isfile() or ti.isdir() or ti.issym() else None)
    return buf.getvalue()


def _cli(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(CLI + args + ["--", "/bin/true"], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"jailpy exec {' '.join(args)}: exit {p.returncode}: {p.stderr.decode(errors='replace')}")
    return dt


def _api(policy) -> float:
    import jailpy

    t0 = time.perf_counter()
    r = jailpy.run(["/bin/true"], policy)
    dt = time.perf_counter() - t0
    if r.exit_code != 0:
        raise RuntimeError(f"jailpy.run: {r}")
    return dt


def _ms(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"runs": len(xs), "median_ms": statistics.median(xs) * 1e3, "p10_ms": xs[len(xs) // 10] * 1e3,
            "p90_ms": xs[(len(xs) * 9) // 10] * 1e3}


def _store() -> str:
    d = tempfile.mkdtemp(prefix="jailpy-bench-store-")
    os.chmod(d, 0o755)
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40, help="cached runs of each (default 40)")
    ap.add_argument("--first", type=int, default=5, help="first runs, each with an empty store (default 5)")
    ap.add_argument("--extra", metavar="DIR", help="add a layer holding a copy of host directory DIR")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from jailpy import Policy

    # bytecode, as tests/run.sh makes it: without it every CLI run compiles jailpy's modules again
    # (PYTHONDONTWRITEBYTECODE), and the image's three modules would count their compilation
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parent.parent / "jailpy")],
                   stdout=subprocess.DEVNULL, check=True)
    work = Path(tempfile.mkdtemp(prefix="jailpy-bench-images-"))
    os.chmod(work, 0o755)
    stores = []
    try:
        layers = [h.busybox_layer(), h.top_layer()] + ([_layer_of(a.extra)] if a.extra else [])
        ref = h.write_oci(work / "oci", layers)
        files = sum(len(tarfile.open(fileobj=__import__("io").BytesIO(raw)).getnames()) for raw in layers)
        first = []
        for _ in range(a.first):
            stores.append(_store())
            first.append(_cli(["--image", ref], dict(os.environ, JAILPY_IMAGE_STORE=stores[-1])))
        store = stores[-1]
        env = dict(os.environ, JAILPY_IMAGE_STORE=store)
        os.environ["JAILPY_IMAGE_STORE"] = store
        rootfs = next((Path(store) / "images" / "sha256").iterdir()) / "rootfs"
        img_pol, dir_pol = Policy(image=ref, cwd=False), Policy(rootfs=str(rootfs), cwd=False)
        times: dict[str, list[float]] = {k: [] for k in ("cli image", "cli rootfs", "api image", "api rootfs")}
        for _ in range(3):  # warm-up
            _cli(["--image", ref], env), _cli(["--rootfs", str(rootfs)], env), _api(img_pol), _api(dir_pol)
        for i in range(a.runs):
            order = [("cli image", lambda: _cli(["--image", ref], env)),
                     ("cli rootfs", lambda: _cli(["--rootfs", str(rootfs)], env)),
                     ("api image", lambda: _api(img_pol)), ("api rootfs", lambda: _api(dir_pol))]
            for name, fn in order[i % 4:] + order[: i % 4]:
                times[name].append(fn())
        from jailpy import image as image_mod

        resolve = []
        for _ in range(a.runs * 10):
            t0 = time.perf_counter()
            image_mod.prepare(ref).release()
            resolve.append(time.perf_counter() - t0)
        imports = []
        for _ in range(9):
            p = subprocess.run([sys.executable, "-c", "import time, jailpy.cli, jailpy.sandbox; t = time.perf_counter(); "
                                "import jailpy.image; print(time.perf_counter() - t)"],
                               capture_output=True, text=True, check=True)
            imports.append(float(p.stdout))
        res = {"who": "root" if os.geteuid() == 0 else "rootless", "kernel": platform.release(),
               "layers": len(layers), "members": files, "first run (unpack)": _ms(first)}
        res.update({k: _ms(v) for k, v in times.items()})
        res["resolve"], res["import"] = _ms(resolve), _ms(imports)
        extra = res["resolve"]["median_ms"] + res["import"]["median_ms"]
        res["extra_ms"] = extra
        api_delta = res["api image"]["median_ms"] - res["api rootfs"]["median_ms"]
        cli_delta = res["cli image"]["median_ms"] - res["cli rootfs"]["median_ms"]
        res["api_delta_ms"], res["cli_delta_ms"] = api_delta, cli_delta
        res["api_ratio"] = res["api image"]["median_ms"] / res["api rootfs"]["median_ms"]
        res["cli_ratio"] = res["cli image"]["median_ms"] / res["cli rootfs"]["median_ms"]
        res["first_ratio"] = res["first run (unpack)"]["median_ms"] / res["cli rootfs"]["median_ms"]
        if a.json:
            print(json.dumps(res, indent=2))
        else:
            print(f"jailpy images bench: {res['who']}, kernel {res['kernel']}, Python {platform.python_version()}, "
                  f"{os.cpu_count()} CPUs; image: {len(layers)} layers, {files} tar members")
            print(f"{'row':<22} {'runs':>5} {'median':>9} {'p10':>9} {'p90':>9}")
            for k in ("first run (unpack)", "cli image", "cli rootfs", "api image", "api rootfs", "resolve", "import"):
                r = res[k]
                print(f"{k:<22} {r['runs']:>5} {r['median_ms']:>8.1f}ms {r['p10_ms']:>8.1f}ms {r['p90_ms']:>8.1f}ms")
            print(f"first run / --rootfs (CLI): {res['first_ratio']:.2f}x")
            print(f"cached --image / --rootfs: CLI {res['cli_ratio']:.3f}x ({cli_delta:+.2f} ms), "
                  f"API {res['api_ratio']:.3f}x ({api_delta:+.2f} ms)")
            print(f"target: cached run within +{TARGET_MS:.0f} ms of --rootfs (resolve + import: {extra:.2f} ms): "
                  f"{'PASS' if extra <= TARGET_MS else 'FAIL'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for s in stores:
            shutil.rmtree(s, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
