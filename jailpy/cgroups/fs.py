"""The cgroup filesystem, the same for both backends: finding the mounted hierarchies
(/proc/self/mountinfo, proc(5)) and this process's cgroups (/proc/self/cgroup, cgroups(7)),
reading and writing control files, the processes in a cgroup (cgroup.procs), joining a cgroup
(:func:`join`, the one call the sandbox side makes) and removing cgroups (rmdir, deepest first).
"""

from __future__ import annotations

import errno
import os
import pwd
import re
from dataclasses import dataclass

V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "cpuset", "freezer", "blkio")
"""The v1 controllers jailpy uses (cgroups(7)); cpu and cpuacct may share one "cpu,cpuacct" mount."""


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


def _host_has_swap() -> bool:
    """True when swap space is active on the host (proc(5) /proc/swaps: a header and one line per area)."""
    try:
        return len(_read("/proc/swaps").strip().splitlines()) > 1
    except OSError:
        return False


def _nosocket() -> bool:
    """True when the kernel was booted with ``cgroup.memory=nosocket`` (kernel-parameters.txt):
    then cgroup v2 charges no socket buffer to memory.current (mm/memcontrol.c,
    cgroup_memory_nosocket).  Read from /proc/cmdline (proc(5)); False when unreadable."""
    try:
        words = _read("/proc/cmdline").split()
    except OSError:
        return False
    return any(w.startswith("cgroup.memory=") and "nosocket" in w.partition("=")[2].split(",") for w in words)


def readonly_fix(e: OSError) -> str:
    """For EROFS: the clause naming why (a container that mounts its cgroup filesystem read-only:
    no cgroup delegation) and the fix; else ""."""
    if e.errno != errno.EROFS:
        return ""
    return ("; the cgroup filesystem is mounted read-only here (a container without cgroup delegation): run jailpy "
            "with a writable cgroup (Docker/Podman: on cgroup v2 with --cgroupns=private and a delegated cgroup, e.g. "
            "podman run --systemd=always; Kubernetes does not delegate), or run without limits")


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


# ------------------------------------------------------------------- control files ----

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


def _pids_in(procs_file: str) -> set[int]:
    try:
        return {int(x) for x in _read(procs_file).split()}
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENODEV):  # removed (ENODEV: between open and read)
            return set()
        raise


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


# ------------------------------------------------------------------------- removal ----

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
