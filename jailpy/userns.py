"""User namespace id maps (user_namespaces(7)).

Host side: :func:`prepare` decides the maps, :func:`write_maps` writes them for the child
after it called unshare(CLONE_NEWUSER).  Child side: :func:`become` switches to the
sandbox's ids while keeping the capabilities the new namespace granted.

Rules this module relies on (user_namespaces(7), "Defining user and group ID mappings"):
an unprivileged writer may map only its own id, and for gid_map must first write
``deny`` to /proc/PID/setgroups; more than that needs newuidmap(1)/newgidmap(1) and a
range in /etc/subuid, /etc/subgid (subuid(5)).  Host root is never mapped: as root the
sandbox's ids map to a range reserved in /etc/subuid for the user ``jailpy``, else to
65534 (nobody), so a sandboxed "root" owns no host root file.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
from dataclasses import dataclass

from . import _syscalls as sc
from .errors import HostError, PolicyError

NOBODY = 65534


@dataclass(frozen=True)
class IdPlan:
    """The id maps of one sandbox.

    ``uid_map``/``gid_map`` are ``(inside, outside, count)`` triples; ``uid``/``gid`` the ids the
    program runs as inside; ``helper`` is True when newuidmap/newgidmap must write the maps;
    ``setgroups`` is False when /proc/PID/setgroups must be ``deny`` (then supplementary groups
    cannot be dropped, as with ``unshare -r``)."""

    uid_map: tuple[tuple[int, int, int], ...]
    gid_map: tuple[tuple[int, int, int], ...]
    uid: int
    gid: int
    helper: bool
    setgroups: bool
    description: str


def _subid_range(path: str, user: str, uid: int) -> tuple[int, int] | None:
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (user, str(uid)) and parts[1].isdigit() and parts[2].isdigit():
                    if int(parts[2]) > 0:
                        return int(parts[1]), int(parts[2])
    except OSError:
        return None
    return None


def prepare(uid: int | None, gid: int | None, mode: str) -> IdPlan:
    """Decide the maps for the caller (host side).  ``uid``/``gid`` are the ids wanted inside
    (None: 0); ``mode`` is ``auto``, ``single`` or ``range`` (policy field ``id_map``).

    Raises HostError when ``range`` is asked and no subuid/subgid range or newuidmap exists,
    PolicyError when the wanted id lies outside the mapped range."""
    host_uid, host_gid = os.getuid(), os.getgid()
    in_uid = 0 if uid is None else uid
    in_gid = (in_uid if uid is not None else 0) if gid is None else gid
    if host_uid == 0:
        user = "jailpy"
        subu, subg = _subid_range("/etc/subuid", user, -1), _subid_range("/etc/subgid", user, -1)
        if mode == "single" or not (subu and subg):
            if mode == "range":
                raise HostError(
                    "id_map=range: no subuid/subgid range for user 'jailpy'; add one with "
                    "'useradd -r jailpy && usermod --add-subuids 200000-265535 --add-subgids 200000-265535 jailpy'"
                )
            return IdPlan(((in_uid, NOBODY, 1),), ((in_gid, NOBODY, 1),), in_uid, in_gid, False, True,
                          f"single id: uid {in_uid} inside = host uid {NOBODY} (nobody)")
        return _range_plan(subu, subg, in_uid, in_gid, helper=False, who="jailpy")
    try:
        user = pwd.getpwuid(host_uid).pw_name
    except KeyError:
        user = str(host_uid)
    subu, subg = _subid_range("/etc/subuid", user, host_uid), _subid_range("/etc/subgid", user, host_uid)
    helpers = shutil.which("newuidmap") and shutil.which("newgidmap")
    if mode == "range" or (mode == "auto" and subu and subg and helpers):
        if not (subu and subg):
            raise HostError(
                f"id_map=range: user {user} has no range in /etc/subuid and /etc/subgid; as root run "
                f"'usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}', or use --id-map single"
            )
        if not helpers:
            raise HostError("id_map=range needs newuidmap and newgidmap: install them with 'apt-get install uidmap'")
        return _range_plan(subu, subg, in_uid, in_gid, helper=True, who=user)
    return IdPlan(((in_uid, host_uid, 1),), ((in_gid, host_gid, 1),), in_uid, in_gid, False, False,
                  f"single id: uid {in_uid} inside = host uid {host_uid} (the caller)")


def _range_plan(subu: tuple[int, int], subg: tuple[int, int], in_uid: int, in_gid: int, helper: bool, who: str) -> IdPlan:
    ucount, gcount = subu[1], subg[1]
    if in_uid >= ucount or in_gid >= gcount:
        raise PolicyError(f"uid/gid {in_uid}/{in_gid} is outside the {ucount}-id range mapped for {who}")
    return IdPlan(((0, subu[0], ucount),), ((0, subg[0], gcount),), in_uid, in_gid, helper, True,
                  f"subuid range: uid {in_uid} inside = host uid {subu[0] + in_uid} ({who}'s range "
                  f"{subu[0]}-{subu[0] + ucount - 1})")


def write_maps(plan: IdPlan, pid: int) -> None:
    """Write /proc/PID/{uid_map,setgroups,gid_map} for a child that has unshared its user
    namespace (host side).  Raises HostError if the kernel or newuidmap refuses."""
    def fmt(m: tuple[tuple[int, int, int], ...]) -> str:
        return "".join(f"{a} {b} {c}\n" for a, b, c in m)

    try:
        if plan.helper:
            import subprocess

            # both setuid helpers at once: each costs a process start (~1.5 ms here)
            procs = [(tool, subprocess.Popen([tool, str(pid)] + [str(x) for t in m for x in t],
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE))
                     for tool, m in (("newuidmap", plan.uid_map), ("newgidmap", plan.gid_map))]
            errs = [(tool, p.communicate()[1].decode(errors="replace").strip(), p.returncode) for tool, p in procs]
            failed = [(tool, err or f"exit {rc}") for tool, err, rc in errs if rc != 0]
            if failed:
                tool, err = failed[0]
                raise HostError(f"{tool} failed: {err} (check /etc/subuid and /etc/subgid)")
            return
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(fmt(plan.uid_map))
        if not plan.setgroups:
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("deny")
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(fmt(plan.gid_map))
    except OSError as e:
        raise HostError(f"cannot write the user namespace id map of pid {pid}: {e.strerror}") from None


def become(plan: IdPlan) -> None:
    """Child side, right after the maps are written: switch to ``plan.uid``/``plan.gid`` and drop
    supplementary groups where the kernel allows it, keeping all capabilities of the new user
    namespace (PR_SET_KEEPCAPS, then capset) so the rest of the set-up can mount."""
    os.setresgid(plan.gid, plan.gid, plan.gid)
    if plan.setgroups:
        os.setgroups([])
    if plan.uid != 0:
        sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    os.setresuid(plan.uid, plan.uid, plan.uid)
    if plan.uid != 0:
        full = (1 << (sc.cap_last_cap() + 1)) - 1
        sc.capset(full, full, 0)


def create(plan: IdPlan) -> int:
    """Host side: make a user namespace with ``plan``'s maps and return an fd for it
    (/proc/PID/ns/user, close-on-exec).  An open fd keeps a namespace alive with no process in it
    (namespaces(7)); the set-up process of each run joins it with setns(2) -- its creator's uid
    owns it, so the caller may (user_namespaces(7)) -- instead of paying for a new one and for
    newuidmap/newgidmap every time.  Raises HostError."""
    from . import _syscalls as sc

    r, w = os.pipe2(os.O_CLOEXEC)
    r2, w2 = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w2)
            try:
                sc.unshare(sc.CLONE_NEWUSER)
                os.write(w, b"u")
            except OSError as e:
                os.write(w, b"e%d" % e.errno)
            os.read(r2, 1)
        finally:
            os._exit(0)
    os.close(w)
    os.close(r2)
    try:
        msg = os.read(r, 16)
        if msg != b"u":
            err = int(msg[1:] or b"0")
            raise HostError(f"cannot create a user namespace: {unshare_hint(OSError(err, os.strerror(err)))}")
        write_maps(plan, pid)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(r)
        os.close(w2)
        os.waitpid(pid, 0)


def unshare_hint(e: OSError) -> str:
    """One line saying why unshare(CLONE_NEWUSER) failed with ``e`` and how to fix it."""
    if e.errno in (errno.EPERM, errno.EACCES):
        return ("user namespaces are not allowed for this user here: enable them with "
                "'sysctl kernel.unprivileged_userns_clone=1' (Debian) or "
                "'sysctl kernel.apparmor_restrict_unprivileged_userns=0' (Ubuntu), or run inside a container "
                "that permits unshare(CLONE_NEWUSER)")
    if e.errno == errno.ENOSPC:
        return "the user namespace limit is reached: raise it with 'sysctl user.max_user_namespaces=15000'"
    if e.errno == errno.EINVAL:
        return "this kernel lacks a namespace type jailpy needs (user, mnt, pid, uts, ipc, net, cgroup)"
    return e.strerror or str(e)
