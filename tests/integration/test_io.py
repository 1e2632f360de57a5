"""Disk IO limits and accounting (issue 16, item 3), on a real disk: an ext4 filesystem on a loop
device the test makes (a sparse file under its tmp dir, losetup, mkfs.ext4, mounted under the tmp
dir; all undone at the end), bound writable into the sandbox.  Root only: a loop device needs it.

What holds (measured here on cgroup v1, Linux 6.18; the VM lane runs the marked test on v2):
direct (O_DIRECT) and synchronous writes (fsync) are held to --io-write-bps on both versions and
counted exactly; buffered writes without fsync are neither throttled nor counted on v1 (the
flusher writes them back outside the sandbox's cgroup), while v2 charges writeback to the cgroup
that dirtied the pages and throttles it there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import IS_ROOT, JAILPY, REPO, TIMEOUT
from limits_helpers import TIME_FACTOR

MiB = 1 << 20
pytestmark = pytest.mark.skipif(not IS_ROOT or not shutil.which("losetup") or not shutil.which("mkfs.ext4"),
                                reason="a loop device needs root, losetup and mkfs.ext4")

# MODE (direct | fsync | buffered) and MIB: write MIB MiB to /data/f in 1 MiB writes, print the
# seconds the writes (and the fsync) took; with direct, read the file back with O_DIRECT too
WRITER = """
import mmap, os, sys, time
mode, mib = sys.argv[1], int(sys.argv[2])
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if mode == "direct" else 0)
fd = os.open("/data/f", flags, 0o644)
buf = mmap.mmap(-1, 1 << 20)
buf.write(b"x" * (1 << 20))
t0 = time.monotonic()
for _ in range(mib):
    os.write(fd, buf)
if mode == "fsync":
    os.fsync(fd)
t1 = time.monotonic()
os.close(fd)
if mode == "direct":
    fd = os.open("/data/f", os.O_RDONLY | os.O_DIRECT)
    while os.readv(fd, [buf]) > 0:
        pass
    os.close(fd)
print(f"{t1 - t0:.3f}")
"""


class Disk:
    """An ext4 filesystem on a loop device, mounted only in the mount namespaces of the commands
    :meth:`run` starts (so no other process's new mount namespace can keep it mounted)."""

    def __init__(self, dev: str, mnt) -> None:
        self.dev, self.mnt = dev, mnt
        self.st_dev = os.stat(dev).st_rdev

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        script = 'mount "$0" "$1" && chmod 777 "$1" && shift && exec "$@"'
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, self.dev,
                               str(self.mnt), *argv], stdin=subprocess.DEVNULL, capture_output=True, cwd=REPO, **kw)


@pytest.fixture
def disk(tmp_path):
    """A :class:`Disk` (128 MiB, sparse, under the test's tmp dir); detached afterwards."""
    back, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    with open(back, "wb") as f:
        f.truncate(128 * MiB)
    mnt.mkdir()
    p = subprocess.run(["losetup", "--find", "--show", str(back)], capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        pytest.skip(f"no loop device: {p.stderr.strip()}")
    dev = p.stdout.strip()
    try:
        subprocess.run(["mkfs.ext4", "-q", dev], check=True, capture_output=True, timeout=TIMEOUT)
        yield Disk(dev, mnt)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=TIMEOUT)


def _write(disk, tmp_path, mode: str, mib: int, *flags: str) -> tuple[float, dict]:
    report = tmp_path / f"report-{mode}.json"
    p = disk.run([*JAILPY, "--report", str(report), "--bind", f"{disk.mnt}:/data", *flags, "--",
                  "python3", "-c", WRITER, mode, str(mib)], timeout=TIMEOUT + 60 * TIME_FACTOR)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-1500:]
    return float(p.stdout.split()[-1]), json.loads(report.read_text())


@pytest.mark.cgroup_v2  # also run in the cgroup v2 VM lane (tests/vm)
def test_write_bps_holds_and_the_tree_is_accounted(disk, tmp_path):
    """16 MiB of O_DIRECT writes under --io-write-bps 4M take 4 s (the rate within 10% of the
    limit), and the Result counts the bytes written and read back within 5%."""
    limit = 4 * MiB
    seconds, rep = _write(disk, tmp_path, "direct", 16, "--io-write-bps", "4M")
    rate = 16 * MiB / seconds
    assert 0.9 * limit <= rate <= 1.1 * limit, f"{rate / MiB:.2f} MiB/s under a 4 MiB/s limit ({seconds} s)"
    assert abs(rep["io_write_bytes"] - 16 * MiB) <= 0.05 * 16 * MiB, rep["io_write_bytes"]
    assert abs(rep["io_read_bytes"] - 16 * MiB) <= 0.05 * 16 * MiB, rep["io_read_bytes"]
    limits = rep["protections"]["cgroup"]["limits"]["io"]
    assert limits["write_bps"] == limit and limits["devices"] == [f"{os.major(disk.st_dev)}:{os.minor(disk.st_dev)}"]


def test_fsync_writes_are_held_and_counted(disk, tmp_path):
    seconds, rep = _write(disk, tmp_path, "fsync", 8, "--io-write-bps", "4M")
    assert 8 * MiB / seconds <= 1.1 * 4 * MiB, seconds
    assert abs(rep["io_write_bytes"] - 8 * MiB) <= 0.05 * 8 * MiB, rep["io_write_bytes"]


def test_buffered_writes_on_v1_are_not_held(disk, tmp_path):
    """What the README says of v1: buffered writes without fsync pass the limit (the flusher writes
    them back later, in no sandbox's cgroup) and are not counted."""
    seconds, rep = _write(disk, tmp_path, "buffered", 8, "--io-write-bps", "1M")
    if rep["protections"]["cgroup"]["version"] != 1:
        pytest.skip("cgroup v2 throttles buffered writes at writeback")
    assert seconds < 4, seconds  # 8 s if they were held to 1 MiB/s
    assert rep["io_write_bytes"] < MiB and "buffered writes are neither" in rep["protections"]["cgroup"]["io"]


def test_io_limits_need_a_writable_disk():
    """No writable bind on a disk (/tmp is tmpfs: memory): refused, naming what to do."""
    p = subprocess.run([*JAILPY, "--io-write-bps", "1M", "--", "true"], capture_output=True, timeout=TIMEOUT, cwd=REPO)
    assert p.returncode == 125 and b"none is on a disk" in p.stderr and p.stderr.count(b"\n") == 1, p.stderr


def test_io_weight_without_a_weighing_scheduler_is_refused(disk):
    sched = open(f"/sys/dev/block/{os.major(disk.st_dev)}:{os.minor(disk.st_dev)}/queue/scheduler").read()
    if "[bfq]" in sched:
        pytest.skip("the loop device uses BFQ here")
    p = disk.run([*JAILPY, "--bind", f"{disk.mnt}:/data", "--io-weight", "200", "--", "true"], timeout=TIMEOUT)
    assert p.returncode == 125 and b"--io-weight" in p.stderr and (b"bfq" in p.stderr or b"BFQ" in p.stderr), p.stderr
