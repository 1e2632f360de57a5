"""Disk IO limits and accounting: which block devices a sandbox's limits apply to, the limits as
the backends write them, and the bytes the tree read and wrote.

Host side.  :func:`devices` finds the block devices under the paths the sandbox can write (its
writable binds): the st_dev of each, looked up in /proc/self/mountinfo and /sys/dev/block, a
partition replaced by its whole disk (the kernel takes throttling limits only for whole disks:
block/blk-cgroup.c blkg_conf_open_bdev, ENODEV for a partition).  A path on tmpfs is memory, not
IO (README, "Limits and verdicts"): it has no device, and counts against ``--memory``.

Limits (Documentation/admin-guide/cgroup-v2.rst "IO"; cgroup-v1/blkio-controller.rst):

* bandwidth and IOPS per device: v2 ``io.max`` (``MAJ:MIN rbps= wbps= riops= wiops=``), v1
  ``blkio.throttle.{read,write}_{bps,iops}_device``.  They throttle bios when submitted: direct IO
  and synchronous writes (O_DIRECT, O_SYNC, fsync) are held to them; buffered writes reach the
  device later, at writeback, which v2 charges to the cgroup that dirtied the pages (cgroup
  writeback: ext4, xfs, btrfs) and v1 does not (the flusher threads write them, in no sandbox's
  cgroup), so on v1 a buffered write is not throttled at all, and is not counted;
* proportional weight: v2 ``io.weight`` (blk-iocost, or ``io.bfq.weight`` with the BFQ
  scheduler), v1 ``blkio.bfq.weight``: only where the device's scheduler or cost model honours it,
  else refused (fail closed).

Accounting: v2 ``io.stat`` (rbytes, wbytes), v1 ``blkio.throttle.io_service_bytes_recursive``
(Read, Write): bytes the tree's bios moved, summed over every device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import HostError, PolicyError

WEIGHT_RANGE = (1, 10000)
"""v2 io.weight (and io.bfq.weight): 1-10000, default 100; v1 blkio.bfq.weight takes the same range."""
MEMORY_FS = ("tmpfs", "ramfs")


@dataclass(frozen=True)
class IoLimits:
    """Disk IO limits for ``devices`` (``"MAJ:MIN"`` of whole disks): bytes per second and IOs
    per second for reads and writes (None: not limited) and a proportional ``weight``."""

    devices: tuple[str, ...] = ()
    read_bps: int | None = None
    write_bps: int | None = None
    read_iops: int | None = None
    write_iops: int | None = None
    weight: int | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.read_bps, self.write_bps, self.read_iops, self.write_iops,
                                          self.weight))

    def throttles(self) -> list[tuple[str, str, int]]:
        """(v2 io.max key, v1 blkio.throttle file, value) for each limit set."""
        out = []
        for key, f, v in (("rbps", "read_bps_device", self.read_bps), ("wbps", "write_bps_device", self.write_bps),
                          ("riops", "read_iops_device", self.read_iops),
                          ("wiops", "write_iops_device", self.write_iops)):
            if v is not None:
                out.append((key, f"blkio.throttle.{f}", v))
        return out

    def describe(self) -> dict:
        d = {k: getattr(self, k) for k in ("read_bps", "write_bps", "read_iops", "write_iops", "weight")
             if getattr(self, k) is not None}
        return dict(d, devices=list(self.devices))


def _mounts_by_dev() -> dict[str, tuple[str, str, str]]:
    """``"MAJ:MIN"`` of each mount's filesystem -> (fstype, source, mount point), /proc/self/mountinfo."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            a, b = left.split(), right.split()
            if len(a) >= 5 and len(b) >= 2:
                out.setdefault(a[2], (b[0], b[1], a[4]))
    return out


def whole_disk(dev: str) -> str | None:
    """The whole disk of block device ``dev`` (``"MAJ:MIN"``): itself, or for a partition its disk
    (/sys/dev/block/MAJ:MIN/partition, the parent directory's ``dev``); None when the kernel has no
    block device of that number (an anonymous device: tmpfs, overlayfs, btrfs subvolumes...)."""
    link = f"/sys/dev/block/{dev}"
    if not os.path.exists(link):
        return None
    if os.path.exists(os.path.join(link, "partition")):
        with open(os.path.join(os.path.realpath(link), "..", "dev")) as f:
            return f.read().strip()
    return dev


def devices(paths: list[str]) -> tuple[str, ...]:
    """The whole disks (``"MAJ:MIN"``) under ``paths`` (the sandbox's writable bind sources), in
    order, without repeats; paths on tmpfs or ramfs (memory) are left out.  Raises PolicyError when
    none is on a disk, HostError for a filesystem whose device cannot be named (btrfs, overlayfs,
    network filesystems): its IO could not be limited."""
    mounts = _mounts_by_dev()
    found: list[str] = []
    for p in paths:
        st = os.stat(p)
        dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        fstype, source, point = mounts.get(dev, ("?", "?", "?"))
        if fstype in MEMORY_FS:
            continue
        disk = whole_disk(dev)
        if disk is None:
            raise HostError(f"io limits: {p} is on {fstype} ({source} at {point}), which has no block device jailpy "
                            f"can name, so its disk IO cannot be limited: bind a directory of a disk filesystem "
                            f"(ext4, xfs) instead")
        if disk not in found:
            found.append(disk)
    if not found:
        raise PolicyError("io limits apply to the disks of the paths the sandbox can write (--bind), and none is on "
                          "a disk: /tmp and --tmpfs are memory (bounded by --memory); bind a directory of a disk "
                          "with --bind SRC:DST")
    return tuple(found)


def check_weight(devs: tuple[str, ...], weight_file_exists: bool, where: str) -> None:
    """Fail closed for ``--io-weight`` unless each device's IO scheduler honours cgroup weights
    (BFQ: /sys/dev/block/MAJ:MIN/queue/scheduler shows ``[bfq]``) or, on v2, blk-iocost is enabled
    for it (``enable=1`` in the root's io.cost.qos).  Raises HostError naming the device and the fix."""
    if not weight_file_exists:
        raise HostError(f"--io-weight: {where} has no IO weight file (blkio.bfq.weight / io.weight): this kernel "
                        f"has neither the BFQ scheduler nor blk-iocost for cgroups")
    qos = ""
    try:
        with open("/sys/fs/cgroup/io.cost.qos") as f:
            qos = f.read()
    except OSError:
        pass
    for dev in devs:
        try:
            with open(f"/sys/dev/block/{dev}/queue/scheduler") as f:
                sched = f.read()
        except OSError:
            sched = ""
        if "[bfq]" in sched or any(line.startswith(dev + " ") and "enable=1" in line for line in qos.splitlines()):
            continue
        name = os.path.basename(os.path.realpath(f"/sys/dev/block/{dev}"))
        raise HostError(f"--io-weight: device {name} ({dev}) uses the {sched.strip() or 'unknown'} scheduler, which "
                        f"ignores cgroup weights: as root, echo bfq > /sys/block/{name}/queue/scheduler (or enable "
                        f"blk-iocost in /sys/fs/cgroup/io.cost.qos on cgroup v2)")


def v1_bytes(text: str) -> tuple[int, int]:
    """(read, write) bytes summed over devices from blkio.throttle.io_service_bytes(_recursive)."""
    r = w = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                r += int(parts[2])
            elif parts[1] == "Write":
                w += int(parts[2])
    return r, w


def v2_bytes(text: str) -> tuple[int, int]:
    """(read, write) bytes summed over devices from io.stat (``MAJ:MIN rbytes=N wbytes=N ...``)."""
    r = w = 0
    for line in text.splitlines():
        for kv in line.split()[1:]:
            k, _, v = kv.partition("=")
            if v.isdigit():
                if k == "rbytes":
                    r += int(v)
                elif k == "wbytes":
                    w += int(v)
    return r, w
