"""The cgroup interface both backends implement: the values (:class:`Limits`, :class:`Stats`),
:class:`CgroupPlan` (made by :func:`jailpy.cgroups.prepare`) and :class:`Cgroup` (one run's
cgroup), with everything in them that is the same on v1 and v2.  What differs is in the
backends' subclasses: :mod:`jailpy.cgroups.v1` (CgroupPlan1, Cgroup1) and
:mod:`jailpy.cgroups.v2` (CgroupPlan2, Cgroup2), which fill in the methods that raise
NotImplementedError here.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import signal
import threading
import time
from dataclasses import dataclass

from ..errors import HostError, PolicyError
from .fs import _alive, _keyed, _pids_in, _read, _rmtree, _undo, _write, join
from .io import IoLimits

CFS_PERIOD_US = 100_000
"""The CPU bandwidth period, microseconds (sched-bwc.rst: the kernel default)."""
MIN_QUOTA_US = 1_000
"""The smallest quota the kernel accepts, microseconds (sched-bwc.rst)."""
DEFAULT_PARENT = "/jailpy"
WAIT = 5.0
"""Seconds freeze() waits for the freezer to report FROZEN, and kill() for the cgroup to empty."""
_NAME_RE = re.compile(r"^jailpy-(\d+)-(\d+)$")
_CPULIST_RE = re.compile(r"^\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*$")
_FLAGS = {"memory": "--memory", "pids": "--pids", "cpu": "--cpus", "cpuset": "--cpuset"}
_FILE_FLAGS = {"cpu.weight": "--cpu-weight", "cpu.shares": "--cpu-weight", "io.max": "--io-*", "io.weight": "--io-weight",
               "io.bfq.weight": "--io-weight", "blkio.bfq.weight": "--io-weight",
               **{f"blkio.throttle.{d}_{k}_device": f"--io-{d}-{k}" for d in ("read", "write") for k in ("bps", "iops")}}
"""The flag to name when the kernel refuses a file's value, where it is not the controller's _FLAGS."""
CPU_WEIGHT_RANGE = (1, 10000)
"""cgroup v2 cpu.weight: 1-10000, default 100 (cgroup-v2.rst, CPU Interface Files)."""

LIMIT_KEYS = ("memory", "pids", "cpus", "cpuset", "cpu_weight")
"""The fields of :class:`Limits`, in the order the Result's protections.cgroup.limits lists them."""

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


def _quota_us(cpus: float) -> int:
    """The CPU quota per CFS_PERIOD_US for ``cpus`` CPUs, microseconds (at least MIN_QUOTA_US)."""
    return max(MIN_QUOTA_US, round(cpus * CFS_PERIOD_US))


def shares_of_weight(weight: int) -> int:
    """cgroup v1 cpu.shares for cgroup v2 cpu.weight ``weight`` (1-10000): the inverse of the
    conversion runc and crun apply to an OCI ``cpu.shares`` on a v2 host (runc
    libcontainer/cgroups ConvertCPUSharesToCgroupV2Value, crun's the same:
    ``weight = 1 + (shares - 2) * 9999 / 262142``, shares 2-262144 onto weights 1-10000), so a
    weight gives the same share of a contended CPU on v1 as on v2.  Rounded to the nearest integer;
    1 -> 2, 100 (v2's default) -> 2597, 10000 -> 262144."""
    return 2 + round((weight - 1) * 262142 / 9999)


@dataclass(frozen=True)
class Limits:
    """What the sandbox's cgroup enforces.  ``memory``: bytes for the whole tree, no swap;
    ``pids``: processes + threads at once; ``cpus``: CPU bandwidth in CPUs (0.5 = half a CPU);
    ``cpuset``: a CPU list like ``"0-1"``; ``cpu_weight``: its share of contended CPUs relative to
    its siblings, 1-10000 (v2 cpu.weight; v1 cpu.shares by :func:`shares_of_weight`); ``io``: disk
    IO limits (:class:`jailpy.cgroups.io.IoLimits`).  None = not limited.  Raises PolicyError (naming the
    flag) for values that can never be valid."""

    memory: int | None = None
    pids: int | None = None
    cpus: float | None = None
    cpuset: str | None = None
    cpu_weight: int | None = None
    io: "IoLimits | None" = None

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
        lo, hi = CPU_WEIGHT_RANGE
        if self.cpu_weight is not None and (isinstance(self.cpu_weight, bool) or not isinstance(self.cpu_weight, int)
                                            or not lo <= self.cpu_weight <= hi):
            raise PolicyError(f"--cpu-weight: expected a weight from {lo} to {hi}, got {self.cpu_weight!r}")

    def any(self) -> bool:
        """True when at least one limit is set."""
        return any(getattr(self, k) is not None for k in LIMIT_KEYS) or bool(self.io and self.io.any())


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
    set-up process and PID 1, see the module notes in :meth:`Cgroup.baseline`); ``io_read_bytes``/
    ``io_write_bytes``: bytes the tree's disk IO moved since baseline(), every device (v2 io.stat
    rbytes/wbytes, v1 blkio.throttle.io_service_bytes_recursive; jailpy.cgroups.io)."""

    cpu_user_s: float | None
    cpu_sys_s: float | None
    memory_peak_bytes: int | None
    pids_peak: int | None
    oom_kills: int | None
    pids_max_hits: int | None
    memory_base_bytes: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None


# ----------------------------------------------------------------------------- plan ----

class CgroupPlan:
    """What :func:`prepare` found: the backend ``version`` (1 or 2), the parent, the limits and
    which controllers are in use.  ``description`` is for Result.protections["cgroup"].  The
    backends subclass it (v1.CgroupPlan1, v2.CgroupPlan2)."""

    version = 0
    _CGROUP: type[Cgroup]
    """The backend's Cgroup class, which create() makes."""
    _EFFECTIVE_CPUS = ""
    """The file that shows the CPUs a cpuset really has."""

    def __init__(self, parent: str, limits: Limits, dirs: dict[str, str], swap: str | None,
                 controllers: list[str] | None = None) -> None:
        self.parent = parent
        self.limits = limits
        self._dirs = dict(dirs)  # v1 controller name -> parent directory (v2: all the same directory)
        self._swap = swap
        ctrls = controllers if controllers is not None else sorted(dirs)
        lim = {k: getattr(limits, k) for k in LIMIT_KEYS if getattr(limits, k) is not None}
        if limits.io is not None and limits.io.any():
            lim["io"] = limits.io.describe()
        self.description: dict = {"version": self.version, "parent": parent, "limits": lim, "controllers": ctrls}
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
        raise NotImplementedError

    def sweep(self) -> None:
        """Remove ``jailpy-<pid>-<n>`` cgroups under the parent whose supervisor ``pid`` is dead (in
        this pid namespace), with any cgroups nested in them.  Processes still in one are a dead
        jailpy's sandbox that outlived it, which happens only when it was frozen (``jailpy pause``:
        a frozen PID 1 cannot act on its parent-death signal): they are killed first (thawed,
        with the freezer, so they can die: :meth:`Cgroup.kill`).  Nothing else is touched."""
        stale: dict[str, list[str]] = {}
        for d in self.parent_dirs:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                m = _NAME_RE.match(n)
                if m and not _alive(int(m.group(1))):
                    stale.setdefault(n, []).append(os.path.join(d, n))
        for paths in stale.values():
            if any(_pids_in(os.path.join(p, "cgroup.procs")) for p in paths):
                try:
                    Cgroup.from_paths(paths).kill()
                except (OSError, HostError):
                    continue  # left for a later sweep
            for p in paths:
                _rmtree(p)

    def create(self) -> Cgroup:
        """Make this run's cgroup ``<parent>/jailpy-<pid>-<n>`` in every hierarchy (v1) or once (v2)
        and set the limits before any process joins.  Sweeps stale siblings first.

        Memory: v1 memory.limit_in_bytes and memory.memsw.limit_in_bytes (same value: no swap),
        or memory.swappiness=0 without swap accounting, and memory.kmem.tcp.limit_in_bytes (same
        value: socket buffers, see v1.TCP_LIMIT); v2 memory.max, memory.swap.max=0,
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
            cg = self._CGROUP(dirs, self.limits)
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
                    raise PolicyError(f"{_FILE_FLAGS.get(f, _FLAGS.get(ctrl, ctrl))} {flag_value}: the kernel refused "
                                      f"{value!r} for {p}: "
                                      f"{e.strerror}") from None
                raise OSError(e.errno, e.strerror, p) from None

        self._write_limits(put, dirs)
        if lim.cpuset is not None:  # v2 silently narrows to the parent's CPUs: check what we got
            eff = self._EFFECTIVE_CPUS
            got = parse_cpulist(_read(os.path.join(dirs["cpuset"], eff)))
            if got != parse_cpulist(lim.cpuset):
                raise PolicyError(f"--cpuset {lim.cpuset}: the kernel gives CPUs {_fmt_cpus(got) or 'none'} "
                                  f"({os.path.join(dirs['cpuset'], eff)})")

    def _write_limits(self, put, dirs: dict[str, str]) -> None:
        """Write the limits into the new cgroup's files with ``put(controller, file, value,
        flag_value)`` (see create() for which files)."""
        raise NotImplementedError


# --------------------------------------------------------------------------- cgroup ----

class Cgroup:
    """One sandbox run's cgroup.  ``paths``: its directory in each hierarchy (v1) or the one (v2);
    ``procs``: the cgroup.procs files to :func:`join`.  Made by :meth:`CgroupPlan.create` or
    :meth:`from_paths` as the backend's subclass (v1.Cgroup1, v2.Cgroup2)."""

    join = staticmethod(join)
    version = 0
    _CPU_UNIT = 1.0
    """What the backend's CPU counters count per second (v2 µs, v1 ns)."""
    _MEMORY_CURRENT = ""
    """The file with the memory charged now."""
    _PROBE: dict[str, str] = {}
    """v1 controller name -> a file that shows it is in use in a directory (for from_paths)."""

    def __init__(self, dirs: dict[str, str], limits: Limits | None = None) -> None:
        self._dirs = dict(dirs)  # v1 controller name -> directory
        self.limits = limits or Limits()
        self.paths: tuple[str, ...] = tuple(dict.fromkeys(dirs.values()))
        self.procs: tuple[str, ...] = tuple(os.path.join(p, "cgroup.procs") for p in self.paths)
        self._base_cpu = (0, 0, 0)  # (total, user, sys) in the file's unit
        self._base_io = (0, 0)  # (read, write) bytes
        self._base_mem: int | None = None
        self._peak_pids = 0
        self._peak_mem = 0

    @classmethod
    def from_paths(cls, paths: list[str] | tuple[str, ...]) -> Cgroup:
        """Reopen a cgroup from its directories (e.g. from the registry) for freeze/thaw/kill/stats
        in another process; the controllers are recognised by their files.  Raises HostError when a
        directory is gone or is not a cgroup."""
        from .v1 import Cgroup1  # the backends import this module
        from .v2 import Cgroup2
        dirs: dict[str, str] = {}
        backend: type[Cgroup] | None = None
        for p in paths:
            if not os.path.isfile(os.path.join(p, "cgroup.procs")):
                raise HostError(f"cgroup: {p} is not a cgroup (gone?)")
            b = Cgroup2 if os.path.exists(os.path.join(p, "cgroup.controllers")) else Cgroup1
            backend = backend or b
            for c, f in b._PROBE.items():
                if os.path.exists(os.path.join(p, f)):
                    dirs.setdefault(c, p)
        if not dirs and paths:
            dirs["?"] = paths[0]
        cg = (backend or Cgroup1)(dirs)
        cg.paths = tuple(paths)
        cg.procs = tuple(os.path.join(p, "cgroup.procs") for p in paths)
        return cg

    # ---- what the backends fill in
    def _cpu_raw(self) -> tuple[int, int, int] | None:
        """(total, user, system) CPU of the tree in _CPU_UNIT; None without CPU accounting."""
        raise NotImplementedError

    def _cpu_total(self) -> int:
        """The total CPU of the tree in _CPU_UNIT, in one read.  Raises HostError without CPU accounting."""
        raise NotImplementedError

    def _split_cpu(self, total: int, u: int, s: int) -> tuple[int, int]:
        """(user, system) since baseline() from the differences of _cpu_raw()."""
        raise NotImplementedError

    def _memory_stats(self) -> tuple[int, int]:
        """(peak memory in bytes, OOM kills) with the memory controller in use."""
        raise NotImplementedError

    _IO_STAT: tuple = ("", None)
    """The backend's IO accounting file and its parser (jailpy.cgroups.io.v1_bytes / v2_bytes)."""

    def _io_raw(self) -> tuple[int, int] | None:
        """(read, write) bytes of the tree's disk IO so far; None without the io/blkio controller."""
        d = self._dirs.get("blkio")
        if d is None:
            return None
        name, parse = self._IO_STAT
        try:
            return parse(_read(os.path.join(d, name)))
        except OSError:
            return None

    def _set_memory_limit(self, value: int) -> None:
        """Write ``value`` bytes as the memory limit (see raise_memory_limit())."""
        raise NotImplementedError

    def _set_frozen(self, frozen: bool) -> None:
        """Ask the kernel to freeze (True) or thaw (False) the cgroup; HostError without a freezer."""
        raise NotImplementedError

    def _refreeze_if_thawed(self) -> None:
        """Called while freeze() waits: ask again when another process thawed the cgroup meanwhile."""
        raise NotImplementedError

    def _has_freezer(self) -> bool:
        """True when kill() should freeze the cgroup before it signals the processes."""
        raise NotImplementedError

    # ---- reading
    def _f(self, ctrl: str, name: str) -> str | None:
        d = self._dirs.get(ctrl)
        return os.path.join(d, name) if d else None

    def baseline(self) -> int | None:
        """Record the CPU and memory used so far (call it when the program starts): cpu_seconds()
        and the CPU of stats() count from here; the memory charged now (the set-up process and PID
        1: jailpy Python processes forked from the supervisor, whose copy-on-write pages are charged
        to this cgroup once touched; memory.rst: charges are not moved with a task) is reported as
        Stats.memory_base_bytes, and returned (bytes; None without the memory controller)."""
        raw = self._cpu_raw()
        if raw is not None:
            self._base_cpu = raw
        self._base_io = self._io_raw() or (0, 0)
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
        self._set_memory_limit(self.limits.memory + extra)

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
        return (self._cpu_total() - self._base_cpu[0]) / self._CPU_UNIT

    def _memory_current(self) -> int | None:
        p = self._f("memory", self._MEMORY_CURRENT)
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

    def _kernel_peak(self, ctrl: str, name: str) -> int | None:
        """The peak the kernel keeps in ``name`` (pids.peak, memory.peak: newer kernels), else None
        after a last poll() (the caller then takes the highest value polled)."""
        pk = self._f(ctrl, name)
        if os.path.exists(pk):
            return int(_read(pk))
        self.poll()
        return None

    def stats(self) -> Stats:
        """The accounting now (see :class:`Stats`); reads a few small files.  Raises OSError
        (ENOENT) once the cgroup has been removed."""
        user = sys_ = None
        raw = self._cpu_raw()
        if raw is not None:
            total, u, s = (raw[i] - self._base_cpu[i] for i in range(3))
            u, s = self._split_cpu(total, u, s)
            user, sys_ = max(0, u) / self._CPU_UNIT, max(0, s) / self._CPU_UNIT
        mem_peak = oom = None
        if self._dirs.get("memory"):
            mem_peak, oom = self._memory_stats()
        pids_peak = hits = None
        if self._dirs.get("pids"):
            hits = _keyed(self._f("pids", "pids.events")).get("max", 0)
            pids_peak = self._kernel_peak("pids", "pids.peak")
            if pids_peak is None:
                pids_peak = self._peak_pids
                if hits:
                    mx = _read(self._f("pids", "pids.max")).strip()
                    pids_peak = int(mx) if mx.isdigit() else pids_peak
        io = self._io_raw()
        io_r, io_w = (None, None) if io is None else (max(0, io[0] - self._base_io[0]), max(0, io[1] - self._base_io[1]))
        return Stats(user, sys_, mem_peak, pids_peak, oom, hits, self._base_mem, io_r, io_w)

    def live(self) -> dict:
        """What the cgroup uses now, for ``jailpy ps``: ``{"state": "running"|"frozen", "cpu_s": CPU
        seconds since it was made, "memory_bytes": memory charged now, "pids": processes now}``
        (keys missing where the controller is not in use)."""
        out: dict = {"state": "frozen" if self.frozen() else "running"}
        raw = self._cpu_raw()
        if raw is not None:
            out["cpu_s"] = raw[0] / self._CPU_UNIT
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
    def freeze(self) -> None:
        """Stop every process in the cgroup and wait (up to WAIT seconds) until the kernel says they
        are: v1 freezer.state FROZEN (freezer-subsystem.rst), v2 cgroup.freeze 1 and cgroup.events
        "frozen 1".  Raises HostError without a freezer or when it does not complete."""
        self._set_frozen(True)
        end = time.monotonic() + WAIT
        while not self.frozen():
            if not self.pids():
                return  # nothing left to freeze (all exited)
            if time.monotonic() > end:
                raise HostError(f"cgroup: {self.paths[0]} did not freeze within {WAIT:g} s")
            self._refreeze_if_thawed()
            time.sleep(0.001)

    def thaw(self) -> None:
        """Let the processes run again (v1 freezer.state THAWED, v2 cgroup.freeze 0)."""
        self._set_frozen(False)

    def frozen(self) -> bool:
        """True when every process is frozen (v1 freezer.state FROZEN; v2 cgroup.events frozen 1)."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, forks in flight included, and wait (up to WAIT
        seconds) until it is empty.  v2: cgroup.kill; v1: freeze, SIGKILL each pid in
        cgroup.procs, thaw (a frozen task dies when thawed), repeated until empty.  Raises
        HostError when processes remain."""
        can_freeze = self._has_freezer()
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
