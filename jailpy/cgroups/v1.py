"""The cgroup v1 backend: one hierarchy per controller (or a few sharing a mount, like
"cpu,cpuacct"), the sandbox's cgroup made in each; no delegation without an administrator.

Kernel documentation (Documentation/admin-guide/cgroup-v1/ in the kernel tree): memory.rst
(memory.limit_in_bytes, memory.memsw.limit_in_bytes, memory.max_usage_in_bytes,
memory.oom_control, memory.swappiness; charges are not moved with a task unless
move_charge_at_immigrate; 2.7.1 memory.kmem.tcp.limit_in_bytes), pids.rst, cpuacct.rst, cpusets.rst (a new cpuset needs cpus and mems
before a process can join), freezer-subsystem.rst; scheduler/sched-bwc.rst
(cpu.cfs_quota_us/cpu.cfs_period_us); cgroups(7).
"""

from __future__ import annotations

import os
import re

from ..errors import HostError
from . import io
from .base import CFS_PERIOD_US, DEFAULT_PARENT, Cgroup, CgroupPlan, Limits, _check_cpuset, _quota_us, shares_of_weight
from .fs import readonly_fix, _Hierarchy, _host_has_swap, _keyed, _read, _unescape, _user, _write

TCP_LIMIT = "memory.kmem.tcp.limit_in_bytes"
"""Socket buffer memory of the cgroup (memory.rst 2.7.1).  v1 charges socket buffers to no memory
cgroup until this is set; once it is (mm/memcontrol-v1.c, memcg1_update_tcp_max: the cgroup's
tcpmem becomes active), every socket made in the cgroup from then on -- TCP and, measured on
6.18, UDP too (sk_memcg is set in sk_alloc for all of them) -- is charged to a counter of its
own: past the limit the socket is under memory pressure (sends wait, datagrams are dropped),
nothing is killed.  That counter is not in memory.usage_in_bytes, so the tree may hold the
memory limit in pages plus the same again in socket buffers."""


# ----------------------------------------------------------------------------- plan ----

def _fix_v1(parent: str, need: list[str], want: list[str], v1: dict[str, _Hierarchy]) -> str:
    """The one-line fix for an unprivileged user on v1: the commands an administrator runs to
    delegate ``parent`` in every hierarchy jailpy uses (the needed ones and those for accounting)."""
    if parent == "/":
        parent = "/judge"
    mounts = list(dict.fromkeys(v1[c].mount for c in need + want if c in v1))
    base = os.path.commonpath(mounts) if len(mounts) > 1 else os.path.dirname(mounts[0])
    names = " ".join(os.path.relpath(m, base) for m in mounts)
    cpuset = ""
    if "cpuset" in need and "cpuset" in v1:
        m = v1["cpuset"].mount
        cpuset = f"; for f in cpus mems; do cat {m}/cpuset.$f > {m}{parent}/cpuset.$f; done"
    return (f"ask root for: for c in {names}; do mkdir -p {base}/$c{parent} && chown -R {_user()} {base}/$c{parent}; "
            f"done{cpuset}; then set JAILPY_CGROUP_PARENT={parent} (jailpy exec also takes --cgroup-parent {parent})")


def _writable_dir(path: str) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def prepare(limits: Limits, parent: str | None, v1: dict[str, _Hierarchy],
            need: list[str], want: list[str]) -> CgroupPlan1:
    """The v1 half of :func:`jailpy.cgroups.prepare`: ``v1`` maps each v1 controller mounted here
    to its hierarchy; ``need``/``want``: the controllers the limits need and those used for
    accounting when they can be.  Raises HostError with the fix, PolicyError for the cpuset."""
    root = os.geteuid() == 0
    if parent is None and not root:
        c = need[0] if need else "memory"
        path = (v1[c].mount if c in v1 else "/sys/fs/cgroup/" + c) + DEFAULT_PARENT
        raise HostError(f"cgroup: {path} (controller {c}, cgroup v1) cannot be used by uid {os.geteuid()}: "
                        "cgroup v1 has no delegation without an administrator; "
                        + _fix_v1("/judge", need, want, v1))
    name = parent or DEFAULT_PARENT
    dirs: dict[str, str] = {}  # v1 controller -> parent dir
    for c in need + want:
        h = v1.get(c)
        if h is None:
            continue  # only wanted ones can be missing here
        d = os.path.normpath(h.mount + name)
        if parent is None:
            try:
                os.makedirs(d, exist_ok=True)
                if c == "cpuset":
                    _inherit_cpuset(d)
            except OSError as e:
                if c in need:
                    raise HostError(f"cgroup: cannot create {d} (controller {c}, cgroup v1): {e.strerror}{readonly_fix(e)}") from None
                continue
        if not os.path.isdir(d):
            if c in need:
                raise HostError(f"cgroup: {d} does not exist (controller {c}, cgroup v1, --cgroup-parent {name}): "
                                + _fix_v1(name, need, want, v1))
            continue
        if not _writable_dir(d):
            if c in need:
                raise HostError(f"cgroup: {d} is not writable by uid {os.geteuid()} (controller {c}, cgroup v1): "
                                + _fix_v1(name, need, want, v1))
            continue
        dirs[c] = d
    if not dirs:
        raise HostError(f"cgroup: no cgroup v1 hierarchy can be used under {name} by uid {os.geteuid()}")
    swap = None
    if limits.memory is not None:
        swap = "memsw" if os.path.exists(os.path.join(dirs["memory"], "memory.memsw.limit_in_bytes")) \
            else ("swappiness=0 (no swap accounting: memory.memsw.* missing; the memory limit does not cover swap)"
                  if _host_has_swap() else "none (the host has no swap)")
    if limits.memory is not None and not os.path.exists(os.path.join(dirs["memory"], TCP_LIMIT)):
        # fail closed: without it socket buffers are charged to no memory cgroup on v1 (a sandbox
        # under --memory 64M held 1 GiB of them)
        raise HostError(f"cgroup: {os.path.join(dirs['memory'], TCP_LIMIT)} is missing (cgroup v1 without "
                        f"socket memory accounting), so --memory could not bound the program's socket buffers: "
                        f"use a kernel with CONFIG_MEMCG_V1 and kernel memory accounting, or cgroup v2")
    if limits.cpuset is not None:
        _check_cpuset(limits.cpuset, dirs["cpuset"], "cpuset.effective_cpus", "cpuset.mems")
    if limits.io is not None and limits.io.weight is not None:
        io.check_weight(limits.io.devices, os.path.exists(os.path.join(dirs["blkio"], "blkio.bfq.weight")),
                        dirs["blkio"])
    plan = CgroupPlan1(name, limits, dirs, swap)
    if limits.io is not None and limits.io.any():
        plan.description["io"] = ("blkio.throttle.*_device per disk: holds direct and synchronous IO (O_DIRECT, "
                                  "O_SYNC, fsync); buffered writes are neither throttled nor counted (cgroup v1 "
                                  "has no writeback attribution)")
    if limits.cpu_weight is not None:
        plan.description["cpu_shares"] = shares_of_weight(limits.cpu_weight)  # what cpu.shares holds
    if limits.memory is not None:
        plan.description["socket_memory"] = (f"{TCP_LIMIT} = the memory limit: TCP and UDP buffers, counted "
                                             "apart from the memory limit (so up to twice it in all)")
    return plan


def _inherit_cpuset(d: str) -> None:
    """A new v1 cpuset has empty cpus and mems, and no process can join it until both are set
    (cpusets.rst 1.3); fill them from the parent when empty."""
    up = os.path.dirname(d)
    for f in ("cpuset.cpus", "cpuset.mems"):
        if not _read(os.path.join(d, f)).strip():
            _write(os.path.join(d, f), _read(os.path.join(up, f)).strip())


# --------------------------------------------------------------------------- cgroup ----

class Cgroup1(Cgroup):
    """A run's cgroup on v1: a directory in each hierarchy used (``_dirs``: controller -> directory)."""

    version = 1
    _CPU_UNIT = 1e9  # cpuacct.usage: nanoseconds
    _MEMORY_CURRENT = "memory.usage_in_bytes"
    _PROBE = {"memory": "memory.limit_in_bytes", "pids": "pids.max", "cpu": "cpu.cfs_quota_us",
              "cpuacct": "cpuacct.usage", "cpuset": "cpuset.cpus", "freezer": "freezer.state",
              "blkio": "blkio.throttle.io_service_bytes"}

    _IO_STAT = ("blkio.throttle.io_service_bytes_recursive", io.v1_bytes)

    def _cpu_raw(self) -> tuple[int, int, int] | None:
        d = self._dirs.get("cpuacct")
        if d is None:
            return None
        total = int(_read(os.path.join(d, "cpuacct.usage")))
        try:
            user = int(_read(os.path.join(d, "cpuacct.usage_user")))
            sys_ = int(_read(os.path.join(d, "cpuacct.usage_sys")))
        except OSError:
            user, sys_ = total, 0
        return total, user, sys_

    def _cpu_total(self) -> int:
        d = self._dirs.get("cpuacct")
        if d is None:
            raise HostError("cgroup: no cpuacct hierarchy in use: CPU time cannot be measured")
        return int(_read(os.path.join(d, "cpuacct.usage")))

    def _split_cpu(self, total: int, u: int, s: int) -> tuple[int, int]:
        # cpuacct.usage is exact (the scheduler's runtime); usage_user/usage_sys are tick
        # samples: split the exact total in their ratio, as v2's cpu.stat does
        # (cputime_adjust in kernel/sched/cputime.c)
        return (total * u // (u + s), total - total * u // (u + s)) if u + s > 0 else (total, 0)

    def _memory_stats(self) -> tuple[int, int]:
        mem_peak = int(_read(self._f("memory", "memory.max_usage_in_bytes")))
        oom = _keyed(self._f("memory", "memory.oom_control")).get("oom_kill", 0)
        return mem_peak, oom

    def _set_memory_limit(self, value: int) -> None:
        memsw = self._f("memory", "memory.memsw.limit_in_bytes")
        if memsw and os.path.exists(memsw):
            _write(memsw, value)
        _write(self._f("memory", "memory.limit_in_bytes"), value)

    def _need_freezer(self) -> str:
        d = self._dirs.get("freezer")
        if d is None:
            raise HostError("cgroup: no freezer hierarchy in use (cgroup v1): the sandbox cannot be paused; "
                            "mount it: mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer")
        return d

    def _has_freezer(self) -> bool:
        return "freezer" in self._dirs

    def _set_frozen(self, frozen: bool) -> None:
        _write(os.path.join(self._need_freezer(), "freezer.state"), "FROZEN" if frozen else "THAWED")

    def _refreeze_if_thawed(self) -> None:
        if _read(os.path.join(self._need_freezer(), "freezer.state")).strip() == "THAWED":
            self._set_frozen(True)  # another process (jailpy resume, or kill's thaw) thawed it meanwhile: ask again

    def frozen(self) -> bool:
        d = self._dirs.get("freezer")
        return d is not None and _read(os.path.join(d, "freezer.state")).strip() == "FROZEN"


class CgroupPlan1(CgroupPlan):
    """A plan on v1: ``_dirs`` maps each controller in use to the parent directory in its hierarchy."""

    version = 1
    _CGROUP = Cgroup1
    _EFFECTIVE_CPUS = "cpuset.effective_cpus"

    def fs_mounts(self) -> list[tuple[str, str, str]]:
        out: dict[str, tuple[str, str, str]] = {}
        with open("/proc/self/mountinfo") as f:
            mounts = []
            for line in f:
                left, _, right = line.partition(" - ")
                a, b = left.split(), right.split()
                if len(a) >= 5 and len(b) >= 3 and b[0] == "cgroup":
                    mounts.append((_unescape(a[4]), b[2]))
        for d in self.parent_dirs:
            best = max((m for m in mounts if d == m[0] or d.startswith(m[0].rstrip("/") + "/")),
                       key=lambda m: len(m[0]), default=None)
            if best is None:
                continue
            opts = ",".join(o for o in best[1].split(",") if o not in ("rw", "ro"))
            name = os.path.basename(best[0].rstrip("/"))
            if re.fullmatch(r"[A-Za-z0-9_,.=-]+", name) and opts:
                out[name] = (name, "cgroup", opts)
        return sorted(out.values())

    def _write_limits(self, put, dirs: dict[str, str]) -> None:
        lim = self.limits
        if lim.memory is not None:
            put("memory", "memory.limit_in_bytes", lim.memory, lim.memory)
            put("memory", "memory.oom_control", 0)  # the OOM killer on (a parent's oom_kill_disable is inherited)
            if self._swap == "memsw":
                put("memory", "memory.memsw.limit_in_bytes", lim.memory, lim.memory)
            elif self._swap and self._swap.startswith("swappiness"):
                put("memory", "memory.swappiness", 0)
            put("memory", TCP_LIMIT, lim.memory, lim.memory)  # before any process joins: see TCP_LIMIT
        if lim.pids is not None:
            put("pids", "pids.max", lim.pids, lim.pids)
        if lim.cpus is not None:
            put("cpu", "cpu.cfs_period_us", CFS_PERIOD_US)
            put("cpu", "cpu.cfs_quota_us", _quota_us(lim.cpus), lim.cpus)
        if lim.cpu_weight is not None:
            put("cpu", "cpu.shares", shares_of_weight(lim.cpu_weight), lim.cpu_weight)
        if lim.io is not None:
            for dev in lim.io.devices:
                for _, f, v in lim.io.throttles():
                    put("blkio", f, f"{dev} {v}", v)
            if lim.io.weight is not None:
                put("blkio", "blkio.bfq.weight", lim.io.weight, lim.io.weight)
        if "cpuset" in dirs:  # both must be set before a process can join (cpusets.rst 1.3)
            up = os.path.dirname(dirs["cpuset"])
            put("cpuset", "cpuset.mems", _read(os.path.join(up, "cpuset.mems")).strip())
            put("cpuset", "cpuset.cpus", lim.cpuset or _read(os.path.join(up, "cpuset.cpus")).strip(), lim.cpuset)
