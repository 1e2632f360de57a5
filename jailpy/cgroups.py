"""The cgroup facility: one cgroup per sandbox run, behind one interface with a v2 and a v1 backend.

Host side (the supervisor): :func:`prepare` checks the host once and returns a :class:`CgroupPlan`
(fail closed: a limit that cannot be enforced raises HostError); :meth:`CgroupPlan.create` makes a
new cgroup per run with the limits set before any process joins; the returned :class:`Cgroup`
reads the accounting (:meth:`~Cgroup.cpu_seconds`, :meth:`~Cgroup.stats`), freezes, kills and
removes.  Child side: :func:`join` (the set-up process moves itself in, before it unshares the
cgroup namespace, so that the sandbox's cgroup is the namespace's root: cgroup_namespaces(7)).

Names: ``<parent>/jailpy-<supervisor pid>-<n>`` in every hierarchy used (v1) or once (v2).

Kernel documentation this relies on (Documentation/admin-guide/ in the kernel tree):
cgroup-v2.rst (Core Interface Files: cgroup.procs, cgroup.controllers, cgroup.subtree_control,
cgroup.events, cgroup.freeze, cgroup.kill; Memory: memory.max, memory.swap.max, memory.peak,
memory.events, memory.oom.group; PID: pids.max, pids.peak, pids.events; CPU: cpu.max, cpu.stat;
Cpuset: cpuset.cpus, cpuset.cpus.effective; "Delegation" and "No Internal Process Constraint"),
cgroup-v1/memory.rst (memory.limit_in_bytes, memory.memsw.limit_in_bytes, memory.max_usage_in_bytes,
memory.oom_control, memory.swappiness; charges are not moved with a task unless
move_charge_at_immigrate), cgroup-v1/pids.rst, cgroup-v1/cpuacct.rst, cgroup-v1/cpusets.rst,
cgroup-v1/freezer-subsystem.rst, scheduler/sched-bwc.rst (cfs_quota_us/cfs_period_us), and the
man pages cgroups(7) and cgroup_namespaces(7).
"""

from __future__ import annotations

import errno
import itertools
import os
import pwd
import re
import signal
import threading
import time
from dataclasses import dataclass

from .errors import HostError, PolicyError

V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "cpuset", "freezer")
"""The v1 controllers jailpy uses (cgroups(7)); cpu and cpuacct may share one "cpu,cpuacct" mount."""
CFS_PERIOD_US = 100_000
"""The CPU bandwidth period, microseconds (sched-bwc.rst: the kernel default)."""
MIN_QUOTA_US = 1_000
"""The smallest quota the kernel accepts, microseconds (sched-bwc.rst)."""
DEFAULT_PARENT = "/jailpy"
SUPERVISOR_LEAF = "jailpy-supervisor"
"""Rootless cgroup v2: the leaf this process moves into so its own (delegated) cgroup can have
controllers enabled for children (cgroup-v2.rst, "No Internal Process Constraint")."""
WAIT = 5.0
"""Seconds freeze() waits for the freezer to report FROZEN, and kill() for the cgroup to empty."""
_NAME_RE = re.compile(r"^jailpy-(\d+)-(\d+)$")
_CPULIST_RE = re.compile(r"^\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*$")
_FLAGS = {"memory": "--memory", "pids": "--pids", "cpu": "--cpus", "cpuset": "--cpuset"}

_counter = itertools.count(1)
_counter_lock = threading.Lock()


# --------------------------------------------------------------------------- values ----

def parse_cpulist(text: str) -> frozenset[int]:
    """Parse a kernel CPU list (``"0"``, ``"0-1,3"``; cpusets.rst "cpus" format) into CPU numbers.
    An empty string is the empty set.  Raises PolicyError (naming --cpuset) for anything else."""
    text = text.strip()
    if not text:
        return frozenset()
    if not _CPULIST_RE.match(text):
        raise PolicyError(f"--cpuset: expected a CPU list like 0 or 0-1,3, got {text!r}")
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise PolicyError(f"--cpuset: range {part!r} runs backwards")
        cpus.update(range(a, b + 1))
    return frozenset(cpus)


@dataclass(frozen=True)
class Limits:
    """What the sandbox's cgroup enforces.  ``memory``: bytes for the whole tree, no swap;
    ``pids``: processes + threads at once; ``cpus``: CPU bandwidth in CPUs (0.5 = half a CPU);
    ``cpuset``: a CPU list like ``"0-1"``.  None = not limited.  Raises PolicyError (naming the
    flag) for values that can never be valid."""

    memory: int | None = None
    pids: int | None = None
    cpus: float | None = None
    cpuset: str | None = None

    def __post_init__(self) -> None:
        if self.memory is not None and (isinstance(self.memory, bool) or not isinstance(self.memory, int)
                                        or self.memory <= 0):
            raise PolicyError(f"--memory: expected a positive number of bytes, got {self.memory!r}")
        if self.pids is not None and (isinstance(self.pids, bool) or not isinstance(self.pids, int) or self.pids < 1):
            raise PolicyError(f"--pids: expected a number of processes of at least 1, got {self.pids!r}")
        if self.cpus is not None and (isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float))
                                      or not 0 < self.cpus <= 1 << 20):
            raise PolicyError(f"--cpus: expected a positive number of CPUs, got {self.cpus!r}")
        if self.cpuset is not None and not parse_cpulist(self.cpuset):
            raise PolicyError(f"--cpuset: expected a CPU list like 0 or 0-1,3, got {self.cpuset!r}")

    def any(self) -> bool:
        """True when at least one limit is set."""
        return any(v is not None for v in (self.memory, self.pids, self.cpus, self.cpuset))


@dataclass(frozen=True)
class Stats:
    """The cgroup's accounting at the end of a run.  None where this host's cgroups keep no such
    number (a controller not in use).

    ``cpu_user_s``/``cpu_sys_s``: seconds since :meth:`Cgroup.baseline` (v2 cpu.stat user_usec,
    system_usec; v1 cpuacct.usage split in the ratio of cpuacct.usage_user/usage_sys);
    ``memory_peak_bytes``: v2 memory.peak (else the highest memory.current polled), v1
    memory.max_usage_in_bytes; ``pids_peak``: pids.peak, else the limit when it was hit, else the
    highest pids.current polled; ``oom_kills``: processes the OOM killer ended in the cgroup (v2
    memory.events oom_kill, v1 memory.oom_control oom_kill); ``pids_max_hits``: forks refused by
    pids.max (pids.events max); ``memory_base_bytes``: memory charged when baseline() ran (the
    set-up process and PID 1, see the module notes in :meth:`Cgroup.baseline`)."""

    cpu_user_s: float | None
    cpu_sys_s: float | None
    memory_peak_bytes: int | None
    pids_peak: int | None
    oom_kills: int | None
    pids_max_hits: int | None
    memory_base_bytes: int | None = None


# --------------------------------------------------------------------- host probing ----

@dataclass(frozen=True)
class _Hierarchy:
    """A mounted cgroup hierarchy: ``version`` 1 or 2, its controllers (v1), the mount point and
    the cgroup path of the mount's root (proc(5) mountinfo fields 5 and 4)."""

    version: int
    controllers: frozenset[str]
    mount: str
    root: str

    def path(self, cgroup: str) -> str | None:
        """The directory of ``cgroup`` (a path as in /proc/self/cgroup), or None when this mount
        does not show it."""
        if self.root == "/":
            rel = cgroup
        elif cgroup == self.root or cgroup.startswith(self.root + "/"):
            rel = cgroup[len(self.root):] or "/"
        else:
            return None
        return os.path.normpath(self.mount + "/" + rel.lstrip("/"))


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[_Hierarchy]:
    """The cgroup hierarchies mounted in this mount namespace, one per superblock (the mount
    showing the most of it); no assumption about where they are mounted (proc(5), cgroups(7))."""
    best: dict[str, _Hierarchy] = {}
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            a, b = left.split(), right.split()
            if len(a) < 5 or len(b) < 3 or b[0] not in ("cgroup", "cgroup2"):
                continue
            if b[0] == "cgroup2":
                h = _Hierarchy(2, frozenset(), _unescape(a[4]), _unescape(a[3]))
            else:
                ctrls = frozenset(b[2].split(",")) & set(V1_CONTROLLERS)
                if not ctrls:
                    continue  # name=systemd and controllers jailpy does not use
                h = _Hierarchy(1, ctrls, _unescape(a[4]), _unescape(a[3]))
            old = best.get(a[2])
            if old is None or len(h.root) < len(old.root):
                best[a[2]] = h
    return list(best.values())


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per hierarchy key (``"0"`` for v2, else the v1 controller list),
    from /proc/self/cgroup (cgroups(7))."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            out["0" if hid == "0" else ctrls] = path
    return out


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str | int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _keyed(path: str) -> dict[str, int]:
    """A flat keyed file (``key value`` lines: cpu.stat, memory.events, pids.events, oom_control)."""
    out = {}
    for line in _read(path).splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def _host_has_swap() -> bool:
    """True when swap space is active on the host (proc(5) /proc/swaps: a header and one line per area)."""
    try:
        return len(_read("/proc/swaps").strip().splitlines()) > 1
    except OSError:
        return False


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _check_parent_path(parent: str) -> str:
    if not isinstance(parent, str) or not parent.startswith("/"):
        raise PolicyError(f"--cgroup-parent: expected an absolute cgroup path like /judge, got {parent!r}")
    parts = [p for p in parent.split("/") if p]
    if any(p in (".", "..") for p in parts) or "\0" in parent:
        raise PolicyError(f"--cgroup-parent: '.' and '..' are not allowed, got {parent!r}")
    return "/" + "/".join(parts)


def _writable_dir(path: str) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


# ----------------------------------------------------------------------------- plan ----

def prepare(limits: Limits, *, parent: str | None, required: bool, cpu_accounting: bool = False) -> "CgroupPlan | None":
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
    if limits.cpus is not None:
        need.append("cpu")
    if cpu_accounting:
        need.append("cpuacct")
    if limits.cpuset is not None:
        need.append("cpuset")
    want = [c for c in ("memory", "pids", "cpuacct", "freezer") if c not in need]
    return need, want


_V2_NAME = {"memory": "memory", "pids": "pids", "cpu": "cpu", "cpuset": "cpuset", "cpuacct": None, "freezer": None}
"""v1 controller -> the v2 controller that must be enabled (None: built into every v2 cgroup:
cpu.stat usage, cgroup.freeze)."""


def _prepare(limits: Limits, parent: str | None, cpu_accounting: bool) -> "CgroupPlan":
    need, want = _needs(limits, cpu_accounting)
    try:
        hiers = _hierarchies()
    except OSError as e:
        raise HostError(f"cgroup: cannot read /proc/self/mountinfo: {e.strerror}") from None
    v2 = next((h for h in hiers if h.version == 2), None)
    v1 = {c: h for h in hiers if h.version == 1 for c in h.controllers}
    if v2 is not None:
        try:
            avail = set(_read(os.path.join(v2.mount, "cgroup.controllers")).split())
        except OSError:
            avail = set()
        need2 = {_V2_NAME[c] for c in need} - {None}
        want2 = {_V2_NAME[c] for c in want} - {None}
        pure = not any(c in v1 for c in need + want)
        if need2 <= avail and (pure or want2 <= avail):
            return _prepare_v2(limits, parent, v2, need, want, avail)
    missing = [c for c in need if c not in v1]
    if missing:
        where = f"not in {os.path.join(v2.mount, 'cgroup.controllers')} (cgroup v2)" if v2 is not None else ""
        raise HostError(f"cgroup: controller {', '.join(missing)} is not available: no cgroup v1 hierarchy for it in "
                        f"/proc/self/mountinfo{', and ' + where if where else ''}: mount it (e.g. mount -t cgroup -o "
                        f"{missing[0]} cgroup /sys/fs/cgroup/{missing[0]}) or enable it in the kernel")
    if not v1:
        raise HostError("cgroup: no cgroup hierarchy is mounted (none in /proc/self/mountinfo): "
                        "mount cgroup2 on /sys/fs/cgroup")
    return _prepare_v1(limits, parent, v1, need, want)


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
            f"done{cpuset}; then pass --cgroup-parent {parent} (or set JAILPY_CGROUP_PARENT={parent})")


def _prepare_v1(limits: Limits, parent: str | None, v1: dict[str, _Hierarchy],
                need: list[str], want: list[str]) -> "CgroupPlan":
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
                    raise HostError(f"cgroup: cannot create {d} (controller {c}, cgroup v1): {e.strerror}") from None
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
    if limits.cpuset is not None:
        _check_cpuset(limits.cpuset, dirs["cpuset"], "cpuset.effective_cpus", "cpuset.mems")
    return CgroupPlan(1, name, limits, dirs, swap)


def _inherit_cpuset(d: str) -> None:
    """A new v1 cpuset has empty cpus and mems, and no process can join it until both are set
    (cpusets.rst 1.3); fill them from the parent when empty."""
    up = os.path.dirname(d)
    for f in ("cpuset.cpus", "cpuset.mems"):
        if not _read(os.path.join(d, f)).strip():
            _write(os.path.join(d, f), _read(os.path.join(up, f)).strip())


def _check_cpuset(want: str, d: str, eff_file: str, mems_file: str | None) -> None:
    cpus = parse_cpulist(want)
    try:
        have = parse_cpulist(_read(os.path.join(d, eff_file)))
    except OSError as e:
        raise HostError(f"cgroup: cannot read {os.path.join(d, eff_file)}: {e.strerror}") from None
    if not cpus <= have:
        raise PolicyError(f"--cpuset {want}: CPU {','.join(map(str, sorted(cpus - have)))} is not available "
                          f"(the cgroup parent {d} has CPUs {_fmt_cpus(have) or 'none'})")
    if mems_file and not _read(os.path.join(d, mems_file)).strip():
        raise HostError(f"cgroup: {os.path.join(d, mems_file)} is empty, so no process can join a cpuset below it: "
                        f"ask root for: cp {os.path.dirname(d)}/cpuset.mems {d}/cpuset.mems")


def _fmt_cpus(cpus: frozenset[int]) -> str:
    out, run = [], []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


_SYSTEMD_FIX = "run inside: systemd-run --user --scope -p Delegate=yes jailpy exec ..."


def _prepare_v2(limits: Limits, parent: str | None, h: _Hierarchy, need: list[str], want: list[str],
                root_avail: set[str]) -> "CgroupPlan":
    need2 = sorted({_V2_NAME[c] for c in need} - {None})
    want2 = sorted(({_V2_NAME[c] for c in want} - {None}) & root_avail)
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
                            f"{h.mount}/cgroup.subtree_control (cgroup v2): {e.strerror}") from None
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise HostError(f"cgroup: cannot create {d} (cgroup v2): {e.strerror}") from None
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
                            "or pass --cgroup-parent with a subtree root delegated to you")
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
        swap = "memory.swap.max=0"
        if not _host_has_swap():
            swap = "memory.swap.max=0 (the host has no swap)"
    if limits.cpuset is not None:
        _check_cpuset(limits.cpuset, d, "cpuset.cpus.effective", None)
    dirs = {c: d for c in need + want if _V2_NAME[c] is None or _V2_NAME[c] in enabled}
    return CgroupPlan(2, name, limits, dirs, swap, controllers=sorted(enabled & (set(need2) | set(want2))))


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
                        f"controllers {' '.join(need2)} cannot be enabled for its children: {_SYSTEMD_FIX}, or pass "
                        "--cgroup-parent with an empty delegated cgroup")
    leaf = os.path.join(d, SUPERVISOR_LEAF)
    try:
        os.makedirs(leaf, exist_ok=True)
        _write(os.path.join(leaf, "cgroup.procs"), os.getpid())
        return _enable(d, need2 + want2, need2)
    except OSError as e:
        raise HostError(f"cgroup: cannot move this process into {leaf} to enable controllers in {d} "
                        f"(cgroup v2): {e.strerror}; {_SYSTEMD_FIX}") from None


def _pids_in(procs_file: str) -> set[int]:
    try:
        return {int(x) for x in _read(procs_file).split()}
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENODEV):  # removed (ENODEV: between open and read)
            return set()
        raise


class CgroupPlan:
    """What :func:`prepare` found: the backend ``version`` (1 or 2), the parent, the limits and
    which controllers are in use.  ``description`` is for Result.protections["cgroup"]."""

    def __init__(self, version: int, parent: str, limits: Limits, dirs: dict[str, str], swap: str | None,
                 controllers: list[str] | None = None) -> None:
        self.version = version
        self.parent = parent
        self.limits = limits
        self._dirs = dict(dirs)  # v1 controller name -> parent directory (v2: all the same directory)
        self._swap = swap
        ctrls = controllers if controllers is not None else sorted(dirs)
        lim = {k: getattr(limits, k) for k in ("memory", "pids", "cpus", "cpuset") if getattr(limits, k) is not None}
        self.description: dict = {"version": version, "parent": parent, "limits": lim, "controllers": ctrls}
        if swap is not None:
            self.description["swap"] = swap

    @property
    def parent_dirs(self) -> tuple[str, ...]:
        """The parent directory in each hierarchy used (one on v2)."""
        return tuple(dict.fromkeys(self._dirs.values()))

    def fs_mounts(self) -> list[tuple[str, str, str]]:
        """The cgroup filesystems to mount read-only inside the sandbox, at /sys/fs/cgroup/NAME:
        ``(NAME, fstype, options)``; NAME is "" for v2 (the whole of /sys/fs/cgroup).  Mounted in
        the sandbox's cgroup namespace they show its own cgroup as their root
        (cgroup_namespaces(7)), so a runtime can read its limits (a JVM sizes its heap from them).
        v1 options must name exactly the controllers the host hierarchy has ("cpu,cpuacct")."""
        if self.version == 2:
            return [("", "cgroup2", "")]
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

    def sweep(self) -> None:
        """Remove ``jailpy-<pid>-<n>`` cgroups under the parent whose supervisor ``pid`` is dead (in
        this pid namespace) and which hold no process (cgroup.procs empty), with any empty
        cgroups nested in them.  Nothing else is touched; a busy one is left alone."""
        for d in self.parent_dirs:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                m = _NAME_RE.match(n)
                if not m or _alive(int(m.group(1))):
                    continue
                _rmtree(os.path.join(d, n))

    def create(self) -> "Cgroup":
        """Make this run's cgroup ``<parent>/jailpy-<pid>-<n>`` in every hierarchy (v1) or once (v2)
        and set the limits before any process joins.  Sweeps stale siblings first.

        Memory: v1 memory.limit_in_bytes and memory.memsw.limit_in_bytes (same value: no swap),
        or memory.swappiness=0 without swap accounting; v2 memory.max, memory.swap.max=0,
        memory.oom.group=0 (the OOM killer takes one process, not the tree with PID 1).
        pids.max; CPU v1 cpu.cfs_period_us/cpu.cfs_quota_us, v2 cpu.max ("quota period", µs);
        cpuset v1 cpuset.cpus + cpuset.mems (copied from the parent), v2 cpuset.cpus, then checks
        the effective CPUs are exactly those asked for.
        Raises PolicyError (naming the flag) for a value the kernel refuses and HostError for a
        directory or file it cannot write; nothing is left behind then."""
        self.sweep()
        made: list[str] = []
        try:
            while True:
                with _counter_lock:
                    n = next(_counter)
                name = f"jailpy-{os.getpid()}-{n}"
                try:
                    for d in self.parent_dirs:
                        p = os.path.join(d, name)
                        os.mkdir(p)
                        made.append(p)
                    break
                except FileExistsError:  # left by an earlier process with our pid: try the next number
                    _undo(made)
                    made.clear()
            dirs = {c: os.path.join(d, name) for c, d in self._dirs.items()}
            cg = Cgroup(self.version, dirs, self.limits)
            self._set_limits(dirs)
            return cg
        except OSError as e:
            _undo(made)
            raise HostError(f"cgroup: cannot create the sandbox's cgroup: {e.filename or self.parent_dirs[0]}: "
                            f"{e.strerror}") from None
        except BaseException:
            _undo(made)
            raise

    def _set_limits(self, dirs: dict[str, str]) -> None:
        lim = self.limits

        def put(ctrl: str, f: str, value: str | int, flag_value: object | None = None) -> None:
            p = os.path.join(dirs[ctrl], f)
            try:
                _write(p, value)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ERANGE, errno.EBUSY, errno.ENOSPC) and flag_value is not None:
                    raise PolicyError(f"{_FLAGS[ctrl]} {flag_value}: the kernel refused {value!r} for {p}: "
                                      f"{e.strerror}") from None
                raise OSError(e.errno, e.strerror, p) from None

        if self.version == 1:
            if lim.memory is not None:
                put("memory", "memory.limit_in_bytes", lim.memory, lim.memory)
                put("memory", "memory.oom_control", 0)  # the OOM killer on (a parent's oom_kill_disable is inherited)
                if self._swap == "memsw":
                    put("memory", "memory.memsw.limit_in_bytes", lim.memory, lim.memory)
                elif self._swap and self._swap.startswith("swappiness"):
                    put("memory", "memory.swappiness", 0)
            if lim.pids is not None:
                put("pids", "pids.max", lim.pids, lim.pids)
            if lim.cpus is not None:
                put("cpu", "cpu.cfs_period_us", CFS_PERIOD_US)
                put("cpu", "cpu.cfs_quota_us", max(MIN_QUOTA_US, round(lim.cpus * CFS_PERIOD_US)), lim.cpus)
            if "cpuset" in dirs:  # both must be set before a process can join (cpusets.rst 1.3)
                up = os.path.dirname(dirs["cpuset"])
                put("cpuset", "cpuset.mems", _read(os.path.join(up, "cpuset.mems")).strip())
                put("cpuset", "cpuset.cpus", lim.cpuset or _read(os.path.join(up, "cpuset.cpus")).strip(), lim.cpuset)
        else:
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
                put("cpu", "cpu.max", f"{max(MIN_QUOTA_US, round(lim.cpus * CFS_PERIOD_US))} {CFS_PERIOD_US}", lim.cpus)
            if lim.cpuset is not None:
                put("cpuset", "cpuset.cpus", lim.cpuset, lim.cpuset)
        if lim.cpuset is not None:  # v2 silently narrows to the parent's CPUs: check what we got
            eff = "cpuset.effective_cpus" if self.version == 1 else "cpuset.cpus.effective"
            got = parse_cpulist(_read(os.path.join(dirs["cpuset"], eff)))
            if got != parse_cpulist(lim.cpuset):
                raise PolicyError(f"--cpuset {lim.cpuset}: the kernel gives CPUs {_fmt_cpus(got) or 'none'} "
                                  f"({os.path.join(dirs['cpuset'], eff)})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rmdir(p: str) -> bool:
    """rmdir a cgroup; True when it is gone, False when busy (processes still in it or exiting)."""
    try:
        os.rmdir(p)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


def _undo(made: list[str]) -> None:
    for p in reversed(made):
        try:
            _rmdir(p)
        except OSError:
            pass


def _rmtree(top: str) -> bool:
    """Remove the cgroup ``top`` and the cgroups nested in it, deepest first, when none holds a
    process (cgroup.procs empty); True when all of it is gone."""
    ok = True
    for d, subdirs, _ in os.walk(top, topdown=False):
        if _pids_in(os.path.join(d, "cgroup.procs")):
            ok = False
            continue
        try:
            ok = _rmdir(d) and ok
        except OSError:
            ok = False
    return ok


# --------------------------------------------------------------------------- cgroup ----

def join(procs: tuple[str, ...] | list[str]) -> None:
    """CHILD SIDE: move the calling process into the sandbox's cgroup by writing "0" to each
    cgroup.procs file (cgroup-v2.rst / cgroups(7): "0" is the writer itself).  Call it before
    unsharing the cgroup namespace.  Raises OSError whose message names the file."""
    for p in procs:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(e.errno, f"{p}: {e.strerror}") from None


_V1_PROBE = {"memory": "memory.limit_in_bytes", "pids": "pids.max", "cpu": "cpu.cfs_quota_us",
             "cpuacct": "cpuacct.usage", "cpuset": "cpuset.cpus", "freezer": "freezer.state"}
_V2_PROBE = {"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max", "cpuset": "cpuset.cpus",
             "cpuacct": "cpu.stat", "freezer": "cgroup.freeze"}


class Cgroup:
    """One sandbox run's cgroup.  ``paths``: its directory in each hierarchy (v1) or the one (v2);
    ``procs``: the cgroup.procs files to :func:`join`."""

    join = staticmethod(join)

    def __init__(self, version: int, dirs: dict[str, str], limits: Limits | None = None) -> None:
        self.version = version
        self._dirs = dict(dirs)  # v1 controller name -> directory
        self.limits = limits or Limits()
        self.paths: tuple[str, ...] = tuple(dict.fromkeys(dirs.values()))
        self.procs: tuple[str, ...] = tuple(os.path.join(p, "cgroup.procs") for p in self.paths)
        self._base_cpu = (0, 0, 0)  # (total, user, sys) in the file's unit
        self._base_mem: int | None = None
        self._peak_pids = 0
        self._peak_mem = 0

    @classmethod
    def from_paths(cls, paths: list[str] | tuple[str, ...]) -> "Cgroup":
        """Reopen a cgroup from its directories (e.g. from the registry) for freeze/thaw/kill/stats
        in another process; the controllers are recognised by their files.  Raises HostError when a
        directory is gone or is not a cgroup."""
        dirs: dict[str, str] = {}
        version = 0
        for p in paths:
            if not os.path.isfile(os.path.join(p, "cgroup.procs")):
                raise HostError(f"cgroup: {p} is not a cgroup (gone?)")
            v = 2 if os.path.exists(os.path.join(p, "cgroup.controllers")) else 1
            version = version or v
            for c, f in (_V2_PROBE if v == 2 else _V1_PROBE).items():
                if os.path.exists(os.path.join(p, f)):
                    dirs.setdefault(c, p)
        if not dirs and paths:
            dirs["?"] = paths[0]
        cg = cls(version or 1, dirs)
        cg.paths = tuple(paths)
        cg.procs = tuple(os.path.join(p, "cgroup.procs") for p in paths)
        return cg

    # ---- reading
    def _f(self, ctrl: str, name: str) -> str | None:
        d = self._dirs.get(ctrl)
        return os.path.join(d, name) if d else None

    def _cpu_raw(self) -> tuple[int, int, int] | None:
        """(total, user, system) CPU of the tree: v2 microseconds, v1 nanoseconds."""
        if self.version == 2:
            p = os.path.join(self.paths[0], "cpu.stat")
            s = _keyed(p)
            return s.get("usage_usec", 0), s.get("user_usec", 0), s.get("system_usec", 0)
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

    def baseline(self) -> int | None:
        """Record the CPU and memory used so far (call it when the program starts): cpu_seconds()
        and the CPU of stats() count from here; the memory charged now (the set-up process and PID
        1: jailpy Python processes forked from the supervisor, whose copy-on-write pages are charged
        to this cgroup once touched; memory.rst: charges are not moved with a task) is reported as
        Stats.memory_base_bytes, and returned (bytes; None without the memory controller)."""
        raw = self._cpu_raw()
        if raw is not None:
            self._base_cpu = raw
        self._base_mem = self._memory_current()
        self.poll()
        return self._base_mem

    def raise_memory_limit(self, extra: int) -> None:
        """Add ``extra`` bytes to the memory limit set by :meth:`CgroupPlan.create` (no-op without
        one): the supervisor gives back what jailpy's own processes hold when the program starts,
        so the program gets the whole limit asked for.  v1 raises memory.memsw.limit_in_bytes
        first (it may never be below memory.limit_in_bytes: memory.rst 2.4), v2 memory.max."""
        if self.limits.memory is None or extra <= 0:
            return
        value = self.limits.memory + extra
        if self.version == 2:
            _write(self._f("memory", "memory.max"), value)
            return
        memsw = self._f("memory", "memory.memsw.limit_in_bytes")
        if memsw and os.path.exists(memsw):
            _write(memsw, value)
        _write(self._f("memory", "memory.limit_in_bytes"), value)

    def set_pids_max(self, n: int) -> None:
        """Set pids.max to ``n`` processes (no-op when :meth:`CgroupPlan.create` set no pids limit):
        the supervisor's account of jailpy's own processes in the cgroup, which depends on how
        the sandbox was started (cgroup-v2.rst "PID", v1 pids.rst)."""
        if self.limits.pids is not None:
            _write(self._f("pids", "pids.max"), n)

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) of every process that was in the cgroup, since baseline():
        the --cpu-time check.  One read of v1 cpuacct.usage (ns) or v2 cpu.stat usage_usec.
        Raises HostError when this cgroup has no CPU accounting."""
        if self.version == 2:
            for line in _read(os.path.join(self.paths[0], "cpu.stat")).splitlines():
                if line.startswith("usage_usec "):
                    return (int(line[11:]) - self._base_cpu[0]) / 1e6
            raise HostError(f"cgroup: {self.paths[0]}/cpu.stat has no usage_usec")
        d = self._dirs.get("cpuacct")
        if d is None:
            raise HostError("cgroup: no cpuacct hierarchy in use: CPU time cannot be measured")
        return (int(_read(os.path.join(d, "cpuacct.usage"))) - self._base_cpu[0]) / 1e9

    def _memory_current(self) -> int | None:
        if self.version == 2:
            p = self._f("memory", "memory.current")
        else:
            p = self._f("memory", "memory.usage_in_bytes")
        try:
            return int(_read(p)) if p else None
        except OSError:
            return None

    def poll(self) -> None:
        """Sample pids.current and (v2 without memory.peak) memory.current for the peaks the
        kernel does not keep itself.  Cheap; the supervisor calls it every ~0.1 s."""
        p = self._f("pids", "pids.current")
        if p and not os.path.exists(self._f("pids", "pids.peak")):
            try:
                self._peak_pids = max(self._peak_pids, int(_read(p)))
            except OSError:
                pass
        if self.version == 2 and self._dirs.get("memory") and not os.path.exists(self._f("memory", "memory.peak")):
            m = self._memory_current()
            if m is not None:
                self._peak_mem = max(self._peak_mem, m)

    def stats(self) -> Stats:
        """The accounting now (see :class:`Stats`); reads a few small files.  Raises OSError
        (ENOENT) once the cgroup has been removed."""
        user = sys_ = None
        raw = self._cpu_raw()
        if raw is not None:
            total, u, s = (raw[i] - self._base_cpu[i] for i in range(3))
            unit = 1e6 if self.version == 2 else 1e9
            if self.version == 1:
                # cpuacct.usage is exact (the scheduler's runtime); usage_user/usage_sys are tick
                # samples: split the exact total in their ratio, as v2's cpu.stat does
                # (cputime_adjust in kernel/sched/cputime.c)
                u, s = (total * u // (u + s), total - total * u // (u + s)) if u + s > 0 else (total, 0)
            user, sys_ = max(0, u) / unit, max(0, s) / unit
        mem_peak = oom = None
        if self._dirs.get("memory"):
            if self.version == 2:
                pk = self._f("memory", "memory.peak")
                if os.path.exists(pk):
                    mem_peak = int(_read(pk))
                else:
                    self.poll()
                    mem_peak = self._peak_mem
                oom = _keyed(self._f("memory", "memory.events")).get("oom_kill", 0)
            else:
                mem_peak = int(_read(self._f("memory", "memory.max_usage_in_bytes")))
                oom = _keyed(self._f("memory", "memory.oom_control")).get("oom_kill", 0)
        pids_peak = hits = None
        if self._dirs.get("pids"):
            hits = _keyed(self._f("pids", "pids.events")).get("max", 0)
            pk = self._f("pids", "pids.peak")
            if os.path.exists(pk):
                pids_peak = int(_read(pk))
            else:
                self.poll()
                pids_peak = self._peak_pids
                if hits:
                    mx = _read(self._f("pids", "pids.max")).strip()
                    pids_peak = int(mx) if mx.isdigit() else pids_peak
        return Stats(user, sys_, mem_peak, pids_peak, oom, hits, self._base_mem)

    def live(self) -> dict:
        """What the cgroup uses now, for ``jailpy ps``: ``{"state": "running"|"frozen", "cpu_s": CPU
        seconds since it was made, "memory_bytes": memory charged now, "pids": processes now}``
        (keys missing where the controller is not in use)."""
        out: dict = {"state": "frozen" if self.frozen() else "running"}
        raw = self._cpu_raw()
        if raw is not None:
            out["cpu_s"] = raw[0] / (1e6 if self.version == 2 else 1e9)
        mem = self._memory_current()
        if mem is not None:
            out["memory_bytes"] = mem
        p = self._f("pids", "pids.current")
        if p:
            out["pids"] = int(_read(p))
        return out

    def pids(self) -> list[int]:
        """The processes in the cgroup (union over the hierarchies), sorted."""
        out: set[int] = set()
        for p in self.procs:
            out |= _pids_in(p)
        return sorted(out)

    # ---- control
    def _need_freezer(self) -> str:
        d = self._dirs.get("freezer")
        if d is None:
            raise HostError("cgroup: no freezer hierarchy in use (cgroup v1): the sandbox cannot be paused; "
                            "mount it: mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer")
        return d

    def freeze(self) -> None:
        """Stop every process in the cgroup and wait (up to WAIT seconds) until the kernel says they
        are: v1 freezer.state FROZEN (freezer-subsystem.rst), v2 cgroup.freeze 1 and cgroup.events
        "frozen 1".  Raises HostError without a freezer or when it does not complete."""
        def request() -> None:
            if self.version == 2:
                _write(os.path.join(self.paths[0], "cgroup.freeze"), 1)
            else:
                _write(os.path.join(self._need_freezer(), "freezer.state"), "FROZEN")

        request()
        end = time.monotonic() + WAIT
        while not self.frozen():
            if not self.pids():
                return  # nothing left to freeze (all exited)
            if time.monotonic() > end:
                raise HostError(f"cgroup: {self.paths[0]} did not freeze within {WAIT:g} s")
            if self.version == 1 and _read(os.path.join(self._need_freezer(), "freezer.state")).strip() == "THAWED":
                request()  # another process (jailpy resume, or kill's thaw) thawed it meanwhile: ask again
            time.sleep(0.001)

    def thaw(self) -> None:
        """Let the processes run again (v1 freezer.state THAWED, v2 cgroup.freeze 0)."""
        if self.version == 2:
            _write(os.path.join(self.paths[0], "cgroup.freeze"), 0)
        else:
            _write(os.path.join(self._need_freezer(), "freezer.state"), "THAWED")

    def frozen(self) -> bool:
        """True when every process is frozen (v1 freezer.state FROZEN; v2 cgroup.events frozen 1)."""
        if self.version == 2:
            return _keyed(os.path.join(self.paths[0], "cgroup.events")).get("frozen") == 1
        d = self._dirs.get("freezer")
        return d is not None and _read(os.path.join(d, "freezer.state")).strip() == "FROZEN"

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, forks in flight included, and wait (up to WAIT
        seconds) until it is empty.  v2: cgroup.kill; v1: freeze, SIGKILL each pid in
        cgroup.procs, thaw (a frozen task dies when thawed), repeated until empty.  Raises
        HostError when processes remain."""
        if self.version == 2 and os.path.exists(os.path.join(self.paths[0], "cgroup.kill")):
            _write(os.path.join(self.paths[0], "cgroup.kill"), 1)
            end = time.monotonic() + WAIT
            while self.pids():
                if time.monotonic() > end:
                    raise HostError(f"cgroup: processes {self.pids()[:5]} in {self.paths[0]} survived cgroup.kill")
                time.sleep(0.002)
            return
        can_freeze = self.version == 2 or "freezer" in self._dirs
        denied = None
        end = time.monotonic() + WAIT
        while True:
            pids = self.pids()
            if not pids:
                return
            if time.monotonic() > end:
                why = f" (no permission to signal pid {denied})" if denied else ""
                raise HostError(f"cgroup: processes {pids[:5]} in {self.paths[0]} survive SIGKILL{why}")
            frozen = False
            if can_freeze:
                try:
                    self.freeze()
                    frozen = True
                    pids = self.pids()
                except (HostError, OSError):
                    pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                except PermissionError:
                    denied = pid
            if frozen:
                try:
                    self.thaw()
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.ENODEV):
                        return  # removed meanwhile, which needs it empty: nothing is left to kill
                    raise
            time.sleep(0.002)

    def remove(self) -> bool:
        """rmdir the cgroup in every hierarchy (nested empty cgroups first).  False when some
        directory is still busy (processes exiting): it is left for a later sweep."""
        ok = True
        for p in self.paths:
            ok = _rmtree(p) and ok
        return ok

    def __repr__(self) -> str:
        return f"Cgroup(v{self.version}, {list(self.paths)})"


__all__ = ["Limits", "Stats", "CgroupPlan", "Cgroup", "prepare", "join", "parse_cpulist"]
