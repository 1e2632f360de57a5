"""The cgroup v2 backend: one unified hierarchy, the sandbox's cgroup made once; rootless it uses
a delegated subtree (the caller's own cgroup, moving itself into the leaf ``jailpy-supervisor``
when needed).

Kernel documentation: Documentation/admin-guide/cgroup-v2.rst (Core Interface Files:
cgroup.procs, cgroup.controllers, cgroup.subtree_control, cgroup.events, cgroup.freeze,
cgroup.kill; Memory: memory.max, memory.swap.max, memory.peak, memory.events, memory.oom.group;
PID: pids.max, pids.peak, pids.events; CPU: cpu.max, cpu.stat; Cpuset: cpuset.cpus,
cpuset.cpus.effective; "Delegation", "Delegation Containment" and "No Internal Process
Constraint"); cgroups(7).
"""

from __future__ import annotations

import errno
import os
import time

from ..errors import HostError
from . import io
from .base import CFS_PERIOD_US, DEFAULT_PARENT, WAIT, Cgroup, CgroupPlan, Limits, _check_cpuset, _quota_us
from .fs import readonly_fix, _Hierarchy, _host_has_swap, _keyed, _nosocket, _own_cgroups, _pids_in, _read, _user, _write

SUPERVISOR_LEAF = "jailpy-supervisor"
"""Rootless cgroup v2: the leaf this process moves into so its own (delegated) cgroup can have
controllers enabled for children (cgroup-v2.rst, "No Internal Process Constraint")."""

_V2_NAME = {"memory": "memory", "pids": "pids", "cpu": "cpu", "cpuset": "cpuset", "cpuacct": None, "freezer": None,
            "blkio": "io"}
"""v1 controller -> the v2 controller that must be enabled (None: built into every v2 cgroup:
cpu.stat usage, cgroup.freeze)."""

_SYSTEMD_FIX = "run inside: systemd-run --user --scope -p Delegate=yes jailpy exec ..."


def controllers(ctrls: list[str]) -> set[str]:
    """The v2 controllers to enable for ``ctrls`` (v1 names, as jailpy.cgroups._needs gives them)."""
    return {_V2_NAME[c] for c in ctrls} - {None}


# ----------------------------------------------------------------------------- plan ----

def prepare(limits: Limits, parent: str | None, h: _Hierarchy, need: list[str], want: list[str],
            root_avail: set[str]) -> CgroupPlan2:
    """The v2 half of :func:`jailpy.cgroups.prepare`: ``h`` is the unified hierarchy and
    ``root_avail`` its root's cgroup.controllers; ``need``/``want`` (v1 names): the controllers
    the limits need and those used for accounting when they can be.  Raises HostError with the
    fix, PolicyError for the cpuset."""
    need2 = sorted(controllers(need))
    want2 = sorted(controllers(want) & root_avail)
    euid = os.geteuid()
    try:
        own = _own_cgroups().get("0")
    except OSError:
        own = None
    own_dir = h.path(own) if own is not None else None
    if own_dir is not None and os.path.basename(own_dir) == SUPERVISOR_LEAF:
        own_dir = os.path.dirname(own_dir)  # moved there by an earlier prepare()
    if parent is not None:
        d = os.path.normpath(h.mount + parent)
        name = parent
        if not os.path.isdir(d):
            raise HostError(f"cgroup: {d} does not exist (cgroup v2, --cgroup-parent {parent}): ask root for: "
                            f"mkdir {d} && chown {_user()} {d} {d}/cgroup.procs {d}/cgroup.subtree_control "
                            f"{d}/cgroup.threads, with {' '.join(need2) or 'the controllers'} enabled in "
                            f"{os.path.dirname(d)}/cgroup.subtree_control")
    elif euid == 0:
        d = os.path.normpath(h.mount + DEFAULT_PARENT)
        name = DEFAULT_PARENT
        try:
            _enable(h.mount, need2 + want2, need2)
        except OSError as e:
            raise HostError(f"cgroup: cannot enable controllers {' '.join(need2)} in "
                            f"{h.mount}/cgroup.subtree_control (cgroup v2): {e.strerror}{readonly_fix(e)}") from None
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise HostError(f"cgroup: cannot create {d} (cgroup v2): {e.strerror}{readonly_fix(e)}") from None
    else:
        if own_dir is None:
            raise HostError(f"cgroup: this process's cgroup v2 path is not visible under {h.mount}, so the "
                            f"{' and '.join(need2) or 'needed'} controller cannot be used: {_SYSTEMD_FIX}")
        d = own_dir
        rel = os.path.relpath(d, h.mount)
        name = "/" + ("" if rel == "." else rel)
        if os.stat(d).st_uid != euid or not os.access(os.path.join(d, "cgroup.procs"), os.W_OK) \
                or not os.access(os.path.join(d, "cgroup.subtree_control"), os.W_OK):
            raise HostError(f"cgroup: {d} (this process's cgroup, cgroup v2) is not delegated to uid {euid} "
                            f"(owned by uid {os.stat(d).st_uid}), so the {' and '.join(need2) or 'needed'} "
                            f"controller cannot be used there; {_SYSTEMD_FIX}, "
                            "or set JAILPY_CGROUP_PARENT (jailpy exec: --cgroup-parent) to a subtree root delegated to you")
    try:
        avail = set(_read(os.path.join(d, "cgroup.controllers")).split())
    except OSError as e:
        raise HostError(f"cgroup: cannot read {d}/cgroup.controllers: {e.strerror}") from None
    missing = [c for c in need2 if c not in avail]
    if missing:
        raise HostError(f"cgroup: controller {' '.join(missing)} is not delegated to {d} (cgroup v2: not in its "
                        f"cgroup.controllers): ask root for: echo +{' +'.join(missing)} > "
                        f"{os.path.dirname(d)}/cgroup.subtree_control" + ("" if parent else f"; or {_SYSTEMD_FIX}"))
    want2 = [c for c in want2 if c in avail]
    # jailpy's own process must stay outside the sandbox cgroups, and joining one needs write
    # access to cgroup.procs of the common ancestor of where we are and where we go ("Delegation
    # Containment"): check it now rather than fail in the set-up process
    if own_dir is not None and euid != 0:
        common = os.path.commonpath([own_dir, d])
        if not os.access(os.path.join(common, "cgroup.procs"), os.W_OK):
            raise HostError(f"cgroup: {' and '.join(need2) or 'a'} controller(s) cannot be used here: "
                            f"joining {d} needs write access to {common}/cgroup.procs (the common ancestor "
                            f"with this process's cgroup {own_dir}; cgroup v2 delegation containment): run jailpy "
                            f"inside {d} (e.g. its own leaf), or {_SYSTEMD_FIX}")
    enabled = _enable_here(d, need2, want2)
    swap = None
    if limits.memory is not None:
        if _nosocket():  # fail closed: socket buffers would be charged to no cgroup
            raise HostError("cgroup: this kernel was booted with cgroup.memory=nosocket (/proc/cmdline), so cgroup "
                            "v2 does not charge socket buffers to memory.current and --memory could not bound "
                            "them: remove that kernel parameter")
        swap = "memory.swap.max=0"
        if not _host_has_swap():
            swap = "memory.swap.max=0 (the host has no swap)"
    if limits.cpuset is not None:
        _check_cpuset(limits.cpuset, d, "cpuset.cpus.effective", None)
    dirs = {c: d for c in need + want if _V2_NAME[c] is None or _V2_NAME[c] in enabled}
    if limits.io is not None and limits.io.weight is not None:
        io.check_weight(limits.io.devices, any(os.path.exists(os.path.join(d, f)) for f in ("io.weight", "io.bfq.weight")),
                        d)
    plan = CgroupPlan2(name, limits, dirs, swap, controllers=sorted(enabled & (set(need2) | set(want2))))
    if limits.io is not None and limits.io.any():
        plan.description["io"] = ("io.max per disk: holds direct and synchronous IO at once and buffered writes at "
                                  "writeback (charged to the cgroup that dirtied the pages)")
    if limits.memory is not None:  # cgroup-v2.rst, Memory: "sock" in memory.stat
        plan.description["socket_memory"] = "charged to memory.current with the rest (memory.stat sock)"
    return plan


def _enable(d: str, ctrls: list[str], need: list[str]) -> set[str]:
    """Enable ``ctrls`` in ``d``/cgroup.subtree_control (one write each: the kernel refuses a whole
    write when one is unavailable) and return what is enabled there now.  Raises OSError for
    those in ``need``, and EBUSY for any ("no internal process" rule: ``d`` holds processes)."""
    path = os.path.join(d, "cgroup.subtree_control")
    have = set(_read(path).split())
    for c in ctrls:
        if c in have:
            continue
        try:
            _write(path, "+" + c)
        except OSError as e:
            if c in need or e.errno == errno.EBUSY:
                raise
    return set(_read(path).split())


def _enable_here(d: str, need2: list[str], want2: list[str]) -> set[str]:
    """Enable the controllers for the children of ``d`` and return those enabled; when ``d`` still
    holds processes (the "no internal process" rule makes that fail with EBUSY) and the only one
    is this process, move it into the leaf ``d/jailpy-supervisor`` first; otherwise HostError
    with the fix."""
    try:
        return _enable(d, need2 + want2, need2)
    except OSError as e:
        if e.errno != errno.EBUSY:
            c = need2[0] if need2 else "?"
            raise HostError(f"cgroup: cannot enable controller {c} in {d}/cgroup.subtree_control (cgroup v2): "
                            f"{e.strerror}; {_SYSTEMD_FIX}") from None
    procs = _pids_in(os.path.join(d, "cgroup.procs"))
    if procs != {os.getpid()}:
        others = sorted(procs - {os.getpid()})
        raise HostError(f"cgroup: {d} (cgroup v2) holds other processes ({', '.join(map(str, others[:5]))}), so "
                        f"controllers {' '.join(need2)} cannot be enabled for its children: {_SYSTEMD_FIX}, or set "
                        "JAILPY_CGROUP_PARENT (jailpy exec: --cgroup-parent) to an empty delegated cgroup")
    leaf = os.path.join(d, SUPERVISOR_LEAF)
    try:
        os.makedirs(leaf, exist_ok=True)
        _write(os.path.join(leaf, "cgroup.procs"), os.getpid())
        return _enable(d, need2 + want2, need2)
    except OSError as e:
        raise HostError(f"cgroup: cannot move this process into {leaf} to enable controllers in {d} "
                        f"(cgroup v2): {e.strerror}; {_SYSTEMD_FIX}") from None


# --------------------------------------------------------------------------- cgroup ----

class Cgroup2(Cgroup):
    """A run's cgroup on v2: one directory (``paths[0]``) for every controller."""

    version = 2
    _CPU_UNIT = 1e6  # cpu.stat: microseconds
    _MEMORY_CURRENT = "memory.current"
    _PROBE = {"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max", "cpuset": "cpuset.cpus",
              "cpuacct": "cpu.stat", "freezer": "cgroup.freeze", "blkio": "io.stat"}

    _IO_STAT = ("io.stat", io.v2_bytes)

    def _cpu_raw(self) -> tuple[int, int, int] | None:
        p = os.path.join(self.paths[0], "cpu.stat")
        s = _keyed(p)
        return s.get("usage_usec", 0), s.get("user_usec", 0), s.get("system_usec", 0)

    def _cpu_total(self) -> int:
        for line in _read(os.path.join(self.paths[0], "cpu.stat")).splitlines():
            if line.startswith("usage_usec "):
                return int(line[11:])
        raise HostError(f"cgroup: {self.paths[0]}/cpu.stat has no usage_usec")

    def _split_cpu(self, total: int, u: int, s: int) -> tuple[int, int]:
        return u, s  # cpu.stat splits the total itself

    def poll(self) -> None:
        super().poll()
        if self._dirs.get("memory") and not os.path.exists(self._f("memory", "memory.peak")):
            m = self._memory_current()
            if m is not None:
                self._peak_mem = max(self._peak_mem, m)

    def _memory_stats(self) -> tuple[int, int]:
        mem_peak = self._kernel_peak("memory", "memory.peak")
        if mem_peak is None:
            mem_peak = self._peak_mem
        oom = _keyed(self._f("memory", "memory.events")).get("oom_kill", 0)
        return mem_peak, oom

    def _set_memory_limit(self, value: int) -> None:
        _write(self._f("memory", "memory.max"), value)

    def _has_freezer(self) -> bool:
        return True  # cgroup.freeze (Linux 5.2+; kill() goes on without freezing when it fails)

    def _set_frozen(self, frozen: bool) -> None:
        _write(os.path.join(self.paths[0], "cgroup.freeze"), 1 if frozen else 0)

    def _refreeze_if_thawed(self) -> None:
        pass

    def frozen(self) -> bool:
        return _keyed(os.path.join(self.paths[0], "cgroup.events")).get("frozen") == 1

    def kill(self) -> None:
        if os.path.exists(os.path.join(self.paths[0], "cgroup.kill")):
            _write(os.path.join(self.paths[0], "cgroup.kill"), 1)
            end = time.monotonic() + WAIT
            while self.pids():
                if time.monotonic() > end:
                    raise HostError(f"cgroup: processes {self.pids()[:5]} in {self.paths[0]} survived cgroup.kill")
                time.sleep(0.002)
            return
        super().kill()  # before Linux 5.14: freeze, SIGKILL each process, thaw


class CgroupPlan2(CgroupPlan):
    """A plan on v2: every controller in use maps to the one parent directory."""

    version = 2
    _CGROUP = Cgroup2
    _EFFECTIVE_CPUS = "cpuset.cpus.effective"

    def fs_mounts(self) -> list[tuple[str, str, str]]:
        return [("", "cgroup2", "")]

    def _write_limits(self, put, dirs: dict[str, str]) -> None:
        lim = self.limits
        if lim.memory is not None:
            put("memory", "memory.max", lim.memory, lim.memory)
            if os.path.exists(os.path.join(dirs["memory"], "memory.swap.max")):
                put("memory", "memory.swap.max", 0)
            elif _host_has_swap():
                raise HostError(f"cgroup: {dirs['memory']}/memory.swap.max is missing (swap accounting is off) "
                                "and the host has swap, so --memory could be exceeded through swap: boot with "
                                "swapaccount=1, or swapoff -a")
            if os.path.exists(os.path.join(dirs["memory"], "memory.oom.group")):
                put("memory", "memory.oom.group", 0)
        if lim.pids is not None:
            put("pids", "pids.max", lim.pids, lim.pids)
        if lim.cpus is not None:
            put("cpu", "cpu.max", f"{_quota_us(lim.cpus)} {CFS_PERIOD_US}", lim.cpus)
        if lim.cpu_weight is not None:
            put("cpu", "cpu.weight", lim.cpu_weight, lim.cpu_weight)
        if lim.io is not None:
            throttles = lim.io.throttles()
            for dev in lim.io.devices if throttles else ():
                put("blkio", "io.max", dev + "".join(f" {k}={v}" for k, _, v in throttles), "the limits")
            if lim.io.weight is not None:
                f = "io.weight" if os.path.exists(os.path.join(dirs["blkio"], "io.weight")) else "io.bfq.weight"
                put("blkio", f, f"default {lim.io.weight}", lim.io.weight)
        if lim.cpuset is not None:
            put("cpuset", "cpuset.cpus", lim.cpuset, lim.cpuset)
