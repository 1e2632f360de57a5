"""The cgroup facility: one cgroup per sandbox run, behind one interface with a v2 and a v1 backend.

Host side (the supervisor): :func:`prepare` checks the host once and returns a :class:`CgroupPlan`
(fail closed: a limit that cannot be enforced raises HostError); :meth:`CgroupPlan.create` makes a
new cgroup per run with the limits set before any process joins; the returned :class:`Cgroup`
reads the accounting (:meth:`~Cgroup.cpu_seconds`, :meth:`~Cgroup.stats`), freezes, kills and
removes.  Child side: :func:`join` (the set-up process moves itself in, before it unshares the
cgroup namespace, so that the sandbox's cgroup is the namespace's root: cgroup_namespaces(7)).

Names: ``<parent>/jailpy-<supervisor pid>-<n>`` in every hierarchy used (v1) or once (v2).

Modules: ``base`` (Limits, Stats, CgroupPlan and Cgroup: what both backends share), ``fs`` (the
cgroup filesystem: mountinfo, control files, join, removal), ``v1`` and ``v2`` (the backends:
CgroupPlan1/Cgroup1, CgroupPlan2/Cgroup2); :func:`prepare`, here, picks the backend.

Kernel documentation this relies on (Documentation/admin-guide/ in the kernel tree), per backend:
- v2: cgroup-v2.rst (Core Interface Files: cgroup.procs, cgroup.controllers,
  cgroup.subtree_control, cgroup.events, cgroup.freeze, cgroup.kill; Memory: memory.max,
  memory.swap.max, memory.peak, memory.events, memory.oom.group; PID: pids.max, pids.peak,
  pids.events; CPU: cpu.max, cpu.stat; Cpuset: cpuset.cpus, cpuset.cpus.effective; "Delegation"
  and "No Internal Process Constraint");
- v1: cgroup-v1/memory.rst (memory.limit_in_bytes, memory.memsw.limit_in_bytes,
  memory.max_usage_in_bytes, memory.oom_control, memory.swappiness,
  memory.kmem.tcp.limit_in_bytes; charges are not moved with a task unless
  move_charge_at_immigrate), cgroup-v1/pids.rst, cgroup-v1/cpuacct.rst,
  cgroup-v1/cpusets.rst, cgroup-v1/freezer-subsystem.rst, scheduler/sched-bwc.rst
  (cfs_quota_us/cfs_period_us);
- both: the man pages cgroups(7) and cgroup_namespaces(7).
"""

from __future__ import annotations

import os

from ..errors import HostError, PolicyError
from . import v1, v2
# the interface, re-exported; the private helpers for tests/unit/test_cgroups.py
from .base import CFS_PERIOD_US, DEFAULT_PARENT, MIN_QUOTA_US, WAIT, Cgroup, CgroupPlan, Limits, Stats  # noqa: F401
from .base import CPU_WEIGHT_RANGE, LIMIT_KEYS, _fmt_cpus, parse_cpulist, shares_of_weight  # noqa: F401
from .fs import V1_CONTROLLERS, _hierarchies, _keyed, _own_cgroups, _pids_in, _read, _rmtree, _write, join  # noqa: F401
from .v2 import SUPERVISOR_LEAF  # noqa: F401
from .io import IoLimits  # noqa: F401


def _check_parent_path(parent: str) -> str:
    if not isinstance(parent, str) or not parent.startswith("/"):
        raise PolicyError(f"--cgroup-parent: expected an absolute cgroup path like /judge, got {parent!r}")
    parts = [p for p in parent.split("/") if p]
    if any(p in (".", "..") for p in parts) or "\0" in parent:
        raise PolicyError(f"--cgroup-parent: '.' and '..' are not allowed, got {parent!r}")
    return "/" + "/".join(parts)


def prepare(limits: Limits, *, parent: str | None, required: bool, cpu_accounting: bool = False) -> CgroupPlan | None:
    """Check the host once and return a :class:`CgroupPlan`, or None when no cgroup is needed or
    none can be had without extra set-up.

    ``parent``: a cgroup path like ``/judge`` (relative to the mount of each hierarchy, that is
    what is seen under /sys/fs/cgroup/<controller>/ or /sys/fs/cgroup/) that an administrator
    delegated; None: ``/jailpy`` as root (created, v2 controllers enabled on the way), rootless on
    v2 the caller's own cgroup when it is delegated (cgroup-v2.rst "Delegation"; this process then
    moves into a leaf ``<own>/jailpy-supervisor`` when it is the only process there), rootless on v1
    nothing.  ``required``: raise HostError (one line: the cgroup path, the missing controller or
    permission, and the fix) instead of returning None; it is implied when ``limits.any()``.
    ``cpu_accounting``: the tree's CPU time must be readable (for --cpu-time).

    Backend: v2 when the unified hierarchy offers the needed controllers (cgroup.controllers),
    else the v1 hierarchies found in /proc/self/mountinfo.  Raises PolicyError for a bad ``parent``
    or a cpuset the parent cannot give."""
    required = required or limits.any() or parent is not None or cpu_accounting
    if parent is not None:
        parent = _check_parent_path(parent)
    try:
        return _prepare(limits, parent, cpu_accounting)
    except HostError:
        if required:
            raise
        return None


def _needs(limits: Limits, cpu_accounting: bool) -> tuple[list[str], list[str]]:
    """(controllers the limits need, controllers used for accounting when available), v1 names."""
    need = []
    if limits.memory is not None:
        need.append("memory")
    if limits.pids is not None:
        need.append("pids")
    if limits.cpus is not None or limits.cpu_weight is not None:
        need.append("cpu")
    if cpu_accounting:
        need.append("cpuacct")
    if limits.cpuset is not None:
        need.append("cpuset")
    if limits.io is not None and limits.io.any():
        need.append("blkio")
    want = [c for c in ("memory", "pids", "cpuacct", "freezer", "blkio") if c not in need]
    return need, want


def _prepare(limits: Limits, parent: str | None, cpu_accounting: bool) -> CgroupPlan:
    need, want = _needs(limits, cpu_accounting)
    try:
        hiers = _hierarchies()
    except OSError as e:
        raise HostError(f"cgroup: cannot read /proc/self/mountinfo: {e.strerror}") from None
    unified = next((h for h in hiers if h.version == 2), None)
    by_ctrl = {c: h for h in hiers if h.version == 1 for c in h.controllers}  # v1 controller -> hierarchy
    if unified is not None:
        try:
            avail = set(_read(os.path.join(unified.mount, "cgroup.controllers")).split())
        except OSError:
            avail = set()
        need2 = v2.controllers(need)
        want2 = v2.controllers(want)
        pure = not any(c in by_ctrl for c in need + want)
        if need2 <= avail and (pure or want2 <= avail):
            return v2.prepare(limits, parent, unified, need, want, avail)
    missing = [c for c in need if c not in by_ctrl]
    if missing:
        where = f"not in {os.path.join(unified.mount, 'cgroup.controllers')} (cgroup v2)" if unified is not None else ""
        raise HostError(f"cgroup: controller {', '.join(missing)} is not available: no cgroup v1 hierarchy for it in "
                        f"/proc/self/mountinfo{', and ' + where if where else ''}: mount it (e.g. mount -t cgroup -o "
                        f"{missing[0]} cgroup /sys/fs/cgroup/{missing[0]}) or enable it in the kernel")
    if not by_ctrl:
        raise HostError("cgroup: no cgroup hierarchy is mounted (none in /proc/self/mountinfo): "
                        "mount cgroup2 on /sys/fs/cgroup")
    return v1.prepare(limits, parent, by_ctrl, need, want)


__all__ = ["Limits", "IoLimits", "Stats", "CgroupPlan", "Cgroup", "prepare", "join", "parse_cpulist"]
