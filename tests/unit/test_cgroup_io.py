"""jailpy.cgroups.io: the accounting files as the kernel writes them, the disks under paths, and
what the limits write (cgroup-v2.rst "IO", cgroup-v1/blkio-controller.rst)."""

from __future__ import annotations

import os

import pytest

from jailpy.cgroups import io
from jailpy.errors import PolicyError


def test_v2_io_stat_is_summed_over_devices():
    text = ("7:0 rbytes=16781312 wbytes=16777216 rios=4097 wios=16 dbytes=0 dios=0\n"
            "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    assert io.v2_bytes(text) == (16785408, 16777216)


def test_v1_io_service_bytes_is_summed_over_devices():
    text = ("7:0 Read 16781312\n7:0 Write 16777216\n7:0 Sync 16777216\n7:0 Async 4096\n7:0 Discard 0\n"
            "7:0 Total 33558528\n8:0 Read 4096\n8:0 Write 0\nTotal 33562624\n")
    assert io.v1_bytes(text) == (16785408, 16777216)


def test_limits_as_the_backends_write_them():
    lim = io.IoLimits(("7:0",), write_bps=4 << 20, read_iops=100)
    assert lim.any() and lim.throttles() == [("wbps", "blkio.throttle.write_bps_device", 4 << 20),
                                             ("riops", "blkio.throttle.read_iops_device", 100)]
    assert lim.describe() == {"write_bps": 4 << 20, "read_iops": 100, "devices": ["7:0"]}
    assert not io.IoLimits(("7:0",)).any()


def test_tmpfs_is_memory_not_a_disk(tmp_path):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    with pytest.raises(PolicyError, match="none is on a disk"):
        io.devices(["/dev/shm"])


def test_a_partition_is_limited_on_its_whole_disk():
    parts = [d for d in os.listdir("/sys/class/block") if os.path.exists(f"/sys/class/block/{d}/partition")]
    if not parts:
        pytest.skip("no partitioned disk on this machine")
    dev = open(f"/sys/class/block/{parts[0]}/dev").read().strip()
    disk = open(os.path.join(os.path.realpath(f"/sys/class/block/{parts[0]}"), "..", "dev")).read().strip()
    assert io.whole_disk(dev) == disk != dev
    assert io.whole_disk("0:1234567") is None  # an anonymous device: no block device of that number
