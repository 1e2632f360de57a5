"""User namespace id maps (user_namespaces(7)) and where a sandbox's host ids come from.

Host side: :func:`choose` finds the range the sandbox's host ids are taken from, :func:`slot_plan`
/ :func:`own_plan` make the maps (a slot of the range is leased by :mod:`jailpy.idlease`),
:func:`write_maps` writes them for the child after it called unshare(CLONE_NEWUSER).  Child side:
:func:`become` switches to the sandbox's ids while keeping the capabilities the new namespace
granted.

Rules this module relies on (user_namespaces(7), "Defining user and group ID mappings"): an
unprivileged writer may map only its own id, and for gid_map must first write ``deny`` to
/proc/PID/setgroups; more than that needs newuidmap(1)/newgidmap(1) and a range in /etc/subuid,
/etc/subgid (subuid(5)).  Host root is never mapped.

**Every running sandbox has host ids of its own** (as isolate's box ids and systemd's
DynamicUser): a slot of ``SLOT_IDS`` consecutive uids and as many gids, ``slot*SLOT_IDS`` ids
into the range.  A slot's first id is the sandbox's uid/gid 0, the second its ``--uid``/``--gid``
(when given and not 0): those are the only ids the sandbox maps (it has no capability to switch
to another, so 65536 ids per sandbox, as containers get, would buy nothing and cost 32768 times
fewer concurrent sandboxes).  The range is:

* as root (the first found): the environment variable ``JAILPY_ID_RANGE``; the file
  ``/etc/jailpy/id-range``; the ranges of the user ``jailpy`` in /etc/subuid and /etc/subgid;
  else ``DEFAULT_ROOT_RANGE``.  ``JAILPY_ID_RANGE`` and the file hold ``FIRST:COUNT``, as
  subuid(5) does, for uids and gids alike (``#`` starts a comment in the file).  All jailpy
  processes of a host must use the same range (lease files are named by host uid, so ranges that
  overlap only exclude each other when their slots line up).
* rootless: the caller's own range in /etc/subuid and /etc/subgid (with newuidmap and
  newgidmap installed).  Without one (or with ``id_map = "single"``) the sandbox is the caller's
  own uid and gid: then every sandbox of the caller shares that uid -- with the caller itself --
  and with it the per-uid quotas (pipe buffers, RLIMIT_NPROC) and the power to signal each other.
  That is the documented residual risk of a user with no subuid range.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
from dataclasses import dataclass

from . import _syscalls as sc
from .errors import HostError, PolicyError, fd_exhausted

NOBODY = 65534
SLOT_IDS = 2
"""Host uids (and gids) per slot: the sandbox's 0 and its ``--uid``/``--gid``."""
DEFAULT_ROOT_RANGE = (0x70000000, 65536)
"""Root's range when nothing configures one: 1879048192-1879113727, 32768 slots.  systemd's
UIDS-GIDS.md lists 1879048192-2147483647 as unused: it lies above regular users (1000-60000),
systemd's DynamicUser (61184-65519), nobody (65534) and 16-bit -1 (65535), above the container
ranges of systemd-nspawn and nsresourced (524288-1879048191) and the usual /etc/subuid ranges
useradd hands out (100000 up, 65536 per user), below systemd's foreign range (0x7FFE0000) and
below 2^31, where ids confuse signed-int code.  Its first id has the low 16 bits zero, as that
document asks of container ranges."""
ID_RANGE_ENV = "JAILPY_ID_RANGE"
ID_RANGE_FILE = "/etc/jailpy/id-range"
_FORBIDDEN = (0, NOBODY, 65535, 0xFFFFFFFF)


@dataclass(frozen=True)
class IdPlan:
    """The id maps of one sandbox.

    ``uid_map``/``gid_map`` are ``(inside, outside, count)`` triples; ``uid``/``gid`` the ids the
    program runs as inside; ``helper`` is True when newuidmap/newgidmap must write the maps;
    ``setgroups`` is False when /proc/PID/setgroups must be ``deny`` (then supplementary groups
    cannot be dropped, as with ``unshare -r``).  ``host_uids``/``host_gids``: the host ids the
    maps use (what files the sandbox leaves in a writable bind are owned by)."""

    uid_map: tuple[tuple[int, int, int], ...]
    gid_map: tuple[tuple[int, int, int], ...]
    uid: int
    gid: int
    helper: bool
    setgroups: bool
    description: str
    host_uids: tuple[int, ...] = ()
    host_gids: tuple[int, ...] = ()
    self_write: bool = False
    """The child writes its own maps (:func:`write_own_maps`) instead of the supervisor: the
    single-id map inside an enclosing sandbox, where the kernel refused the parent's write (measured
    under a jailpy sandbox whose capability bounding set is empty) but takes a process's own."""


@dataclass(frozen=True)
class IdRange:
    """Where slots come from: ``count`` host uids from ``uid`` and as many gids from ``gid``;
    ``source`` says who set it; ``helper``: newuidmap/newgidmap write the maps (rootless)."""

    uid: int
    gid: int
    count: int
    source: str
    helper: bool

    @property
    def slots(self) -> int:
        return self.count // SLOT_IDS


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


def _parse_range(text: str, where: str) -> tuple[int, int]:
    first, sep, count = text.strip().partition(":")
    if not (sep and first.isdigit() and count.isdigit()):
        raise HostError(f"{where}: expected FIRST:COUNT (e.g. {DEFAULT_ROOT_RANGE[0]}:{DEFAULT_ROOT_RANGE[1]}), "
                        f"got {text.strip()!r}")
    lo, n = int(first), int(count)
    if n < SLOT_IDS or lo + n - 1 >= 0xFFFFFFFF:
        raise HostError(f"{where}: {lo}:{n} must hold at least {SLOT_IDS} ids and end below 4294967295")
    bad = [x for x in _FORBIDDEN if lo <= x < lo + n]
    if bad:
        raise HostError(f"{where}: {lo}:{n} includes uid {bad[0]} (root, nobody or -1): choose a range without it")
    return lo, n


def _configured_range() -> tuple[int, int, str] | None:
    """Root's configured range, from the environment or /etc/jailpy/id-range (None: neither)."""
    env = os.environ.get(ID_RANGE_ENV, "").strip()
    if env:
        return (*_parse_range(env, ID_RANGE_ENV), ID_RANGE_ENV)
    try:
        with open(ID_RANGE_FILE) as f:
            lines = [ln.split("#", 1)[0].strip() for ln in f]
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"cannot read {ID_RANGE_FILE}: {e.strerror}") from None
    lines = [ln for ln in lines if ln]
    if len(lines) != 1:
        raise HostError(f"{ID_RANGE_FILE}: expected one line FIRST:COUNT, found {len(lines)}")
    return (*_parse_range(lines[0], ID_RANGE_FILE), ID_RANGE_FILE)


def id_map(kind: str) -> list[tuple[int, int, int]]:
    """This process's own ``kind`` ("uid" or "gid") map, /proc/self/uid_map or gid_map
    (user_namespaces(7)): ``(first id here, first id in the parent namespace, count)`` rows.  The
    initial user namespace shows ``0 0 4294967295``; inside a container or ``unshare -U`` only the
    ids that exist here.  Without a readable /proc: the initial namespace's map."""
    try:
        with open(f"/proc/self/{kind}_map") as f:
            return [tuple(int(x) for x in line.split()) for line in f if line.strip()]  # type: ignore[misc]
    except (OSError, ValueError):
        return [(0, 0, 0xFFFFFFFF)]


def in_nested_userns() -> bool:
    """Whether this process runs in a user namespace other than the initial one (its uid map is
    not the whole ``0 0 4294967295``): inside a container with a user namespace, ``unshare -U``,
    bubblewrap, or a jailpy sandbox."""
    return id_map("uid") != [(0, 0, 0xFFFFFFFF)]


def _mapped_here(kind: str, lo: int, n: int) -> bool:
    """Whether ids ``lo``..``lo+n-1`` exist in this process's own user namespace (root in a
    container may have only 65536 ids, ``unshare -r`` one): /proc/self/uid_map or gid_map."""
    return any(inside <= lo and lo + n <= inside + count for inside, _, count in id_map(kind))


def setgroups_denied() -> bool:
    """Whether /proc/self/setgroups says ``deny`` (``unshare -r``, bubblewrap, a sandbox with a
    single-id map): a user namespace made here inherits it, so its gid map must be written without
    setgroups and supplementary groups cannot be dropped (user_namespaces(7))."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def root_range(strict: bool = True) -> IdRange | None:
    """Root's range (see the module docstring).  Raises HostError for a malformed setting or a
    configured range (``JAILPY_ID_RANGE``, the file) this user namespace does not have.  The
    user jailpy's range and the default are skipped when this user namespace lacks them (root
    inside a container or ``unshare -r``): then, with ``strict``, HostError naming the setting;
    else None (the caller falls back to its own ids, :func:`own_plan`)."""
    conf = _configured_range()
    candidates: list[IdRange] = []
    if conf is not None:
        lo, n, source = conf
        candidates.append(IdRange(lo, lo, n, source, False))
    else:
        subu, subg = _subid_range("/etc/subuid", "jailpy", -1), _subid_range("/etc/subgid", "jailpy", -1)
        if subu and subg:
            candidates.append(IdRange(subu[0], subg[0], min(subu[1], subg[1]),
                                      "the range of user jailpy in /etc/subuid", False))
        lo, n = DEFAULT_ROOT_RANGE
        candidates.append(IdRange(lo, lo, n, "jailpy's default range", False))
    for rng in candidates:
        if rng.count < SLOT_IDS:
            raise HostError(f"{rng.source}: fewer than {SLOT_IDS} ids; give the user jailpy at least {SLOT_IDS}")
        missing = [(kind, lo) for kind, lo in (("uid", rng.uid), ("gid", rng.gid))
                   if not _mapped_here(kind, lo, rng.count)]
        if not missing:
            return rng
        if conf is None and (rng is not candidates[-1] or not strict):
            continue  # not configured: the next candidate, or the caller's own ids
        kind, lo = missing[0]
        raise HostError(f"host {kind}s {lo}-{lo + rng.count - 1} ({rng.source}) do not exist in this user "
                        f"namespace (see /proc/self/{kind}_map): set {ID_RANGE_ENV}=FIRST:COUNT or write "
                        f"{ID_RANGE_FILE} with a range that does"
                        + ("" if conf else ", or use --id-map single (the caller's own id)"))
    return None


def choose(mode: str) -> IdRange | None:
    """The range the sandbox's host ids come from, for the caller and ``mode`` (policy field
    ``id_map``: ``auto``, ``single``, ``range``); None: the caller's own uid and gid (rootless,
    no range or ``single``).  As root ``single`` maps one id of a slot, never root or nobody.

    Raises HostError when ``range`` is asked and no subuid/subgid range or newuidmap exists, or
    for a bad root range (:func:`root_range`)."""
    host_uid = os.getuid()
    if host_uid == 0:
        return root_range(strict=mode == "range")
    try:
        user = pwd.getpwuid(host_uid).pw_name
    except KeyError:
        user = str(host_uid)
    subu, subg = _subid_range("/etc/subuid", user, host_uid), _subid_range("/etc/subgid", user, host_uid)
    helpers = shutil.which("newuidmap") and shutil.which("newgidmap") and not no_new_privs()
    if subu and subg and not (_mapped_here("uid", subu[0], subu[1]) and _mapped_here("gid", subg[0], subg[1])):
        if mode == "range":
            raise HostError(f"id_map=range: {user}'s range in /etc/subuid ({subu[0]}-{subu[0] + subu[1] - 1}) does "
                            f"not exist in this user namespace (see /proc/self/uid_map): use --id-map single")
        subu = subg = None  # a container's /etc/subuid, or an enclosing unshare -U: not ours to give
    if mode == "range" or (mode == "auto" and subu and subg and helpers):
        if not (subu and subg):
            raise HostError(
                f"id_map=range: user {user} has no range in /etc/subuid and /etc/subgid; as root run "
                f"'usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}', or use --id-map single"
            )
        if not helpers:
            if no_new_privs():
                raise HostError("id_map=range: newuidmap and newgidmap are setuid programs, which grant nothing "
                                "under no_new_privs (NoNewPrivs: 1 in /proc/self/status, set by an enclosing "
                                "sandbox): use --id-map single")
            raise HostError("id_map=range needs newuidmap and newgidmap: install them with 'apt-get install uidmap'")
        rng = IdRange(subu[0], subg[0], min(subu[1], subg[1]), f"{user}'s range in /etc/subuid", True)
        if rng.slots == 0:
            raise HostError(f"id_map=range: {user}'s range in /etc/subuid and /etc/subgid has fewer than {SLOT_IDS} ids")
        return rng
    return None


def inside_ids(uid: int | None, gid: int | None) -> tuple[int, int]:
    """The ids the program runs as inside: ``uid`` (None: 0), ``gid`` (None: the uid when one was
    given, else 0)."""
    in_uid = 0 if uid is None else uid
    return in_uid, (in_uid if uid is not None else 0) if gid is None else gid


def slot_plan(rng: IdRange, slot: int, in_uid: int, in_gid: int, single: bool) -> IdPlan:
    """The maps of slot ``slot`` of ``rng``: inside 0 -> the slot's first host id and, when
    ``in_uid``/``in_gid`` is not 0, that id -> the slot's second; with ``single`` only the
    program's id, to the slot's first.  Raises PolicyError for an id the kernel cannot map."""
    if not 0 <= slot < rng.slots:
        raise ValueError(f"slot {slot} outside 0..{rng.slots - 1}")
    for name, v in (("uid", in_uid), ("gid", in_gid)):
        if not 0 <= v < 0xFFFFFFFF:
            raise PolicyError(f"{name} {v} cannot be mapped: between 0 and 4294967294")
    hu, hg = rng.uid + slot * SLOT_IDS, rng.gid + slot * SLOT_IDS

    def rows(inside: int, host: int) -> tuple[tuple[int, int, int], ...]:
        if single:
            return ((inside, host, 1),)
        return ((0, host, 1),) + (((inside, host + 1, 1),) if inside else ())

    umap, gmap = rows(in_uid, hu), rows(in_gid, hg)
    pairs = ", ".join(f"uid {a} inside = host uid {b}" for a, b, _ in umap)
    gpairs = ", ".join(f"gid {a} = host gid {b}" for a, b, _ in gmap)
    desc = (f"own host ids: {pairs}, {gpairs} (slot {slot} of {rng.slots} in {rng.source} "
            f"{rng.uid}-{rng.uid + rng.count - 1}; no other running sandbox has them)")
    return IdPlan(umap, gmap, in_uid, in_gid, rng.helper, not setgroups_denied(), desc,
                  tuple(b for _, b, _ in umap), tuple(b for _, b, _ in gmap))


def own_plan(in_uid: int, in_gid: int) -> IdPlan:
    """The single-id map: ``in_uid``/``in_gid`` inside = the caller's own ids (a rootless caller
    without a range, ``--id-map single``, or root in a user namespace that lacks jailpy's range:
    :func:`root_range`).  In a user namespace that is not the initial one the description says
    which id that is in the parent namespace (/proc/self/uid_map)."""
    host_uid, host_gid = os.getuid(), os.getgid()
    if in_nested_userns():
        rows = id_map("uid")
        outer = next((o + host_uid - i for i, o, n in rows if i <= host_uid < i + n), None)
        count = sum(n for _, _, n in rows)
        desc = (f"single id: uid {in_uid} inside = uid {host_uid} of the enclosing user namespace (uid {outer} "
                f"of its parent; the caller: every sandbox of this caller shares it; that namespace maps "
                f"{count} uid{'s' if count != 1 else ''}, not jailpy's range: see README, running inside a "
                f"container)")
    else:
        desc = (f"single id: uid {in_uid} inside = host uid {host_uid} (the caller; every sandbox of this "
                f"caller shares it)")
    return IdPlan(((in_uid, host_uid, 1),), ((in_gid, host_gid, 1),), in_uid, in_gid, False, False,
                  desc, (host_uid,), (host_gid,), self_write=in_nested_userns())


def no_new_privs() -> bool:
    """Whether this process has no_new_privs (/proc/self/status NoNewPrivs: 1; prctl(2)): set by
    an enclosing sandbox (bubblewrap, jailpy, Docker's no-new-privileges), under which setuid
    programs such as newuidmap gain nothing."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"NoNewPrivs:"):
                    return line.split()[1] == b"1"
    except OSError:
        pass
    return False


def strip_plan(host_uids: tuple[int, ...], host_gids: tuple[int, ...], caller: bool = True) -> IdPlan:
    """Rootless: the maps of a user namespace in which the caller may chmod what a sandbox with
    ``host_uids``/``host_gids`` left (:mod:`jailpy.setid`): those ids and, with ``caller``, the
    caller's own, so the caller's capabilities there cover files of a slot's uid in a directory of
    the caller's group too (newuidmap lets a user map its own id: newuidmap(1)).  ``host_uids[i]``
    is uid ``i`` there (and the caller's uid the next one), gids alike."""
    uids = tuple(dict.fromkeys(host_uids + ((os.getuid(),) if caller else ())))
    gids = tuple(dict.fromkeys(host_gids + ((os.getgid(),) if caller else ())))
    return IdPlan(tuple((i, h, 1) for i, h in enumerate(uids)), tuple((i, h, 1) for i, h in enumerate(gids)),
                  0, 0, True, True, "strip", uids, gids)


def write_own_maps(plan: IdPlan) -> None:
    """CHILD SIDE, right after unshare(CLONE_NEWUSER), for a plan with ``self_write``: write this
    process's own /proc/self/{uid_map,setgroups,gid_map} (user_namespaces(7): a process may map
    its own effective ids in the parent namespace, with setgroups denied).  Raises OSError."""
    for name, data in (("uid_map", plan.uid_map), ("setgroups", None), ("gid_map", plan.gid_map)):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"deny" if data is None else "".join(f"{a} {b} {c}\n" for a, b, c in data).encode())
        except OSError as e:
            raise OSError(e.errno, f"write /proc/self/{name}: {e.strerror}{map_hint(e, plan)}") from None
        finally:
            os.close(fd)


def write_maps(plan: IdPlan, pid: int, parent=None) -> None:
    """Write /proc/PID/{uid_map,setgroups,gid_map} for a child that has unshared its user
    namespace (host side; nothing for a plan with ``self_write``, whose child wrote them).
    ``parent``: the namespace the child's nests in (a rootless network's pod, :mod:`jailpy.net.pod`),
    whose holder writes them (proc(5): only a process in the parent namespace may).
    Raises HostError if the kernel or newuidmap refuses."""
    if parent is not None:
        parent.write_maps(plan, pid)
        return
    if plan.self_write:
        return
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
        if e.errno in (errno.EMFILE, errno.ENFILE):
            raise HostError(f"cannot write the user namespace id map: {fd_exhausted(e)}") from None
        hint = ""
        if e.errno == errno.EPERM and os.path.exists("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"):
            hint = (f" (AppArmor restricts unprivileged user namespaces here: 'sudo jailpy apparmor install', then run "
                    f"jailpy through {_LAUNCHER}; jailpy doctor says more)")
        raise HostError(f"cannot write the user namespace id map of pid {pid}: {e.strerror}{hint}") from None


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


def create_strip_namespace(host_uids: tuple[int, ...], host_gids: tuple[int, ...]) -> int:
    """:func:`create` for :func:`strip_plan`: with the caller's ids, else (a newuidmap that will
    not map them) the slot's alone.  Raises HostError."""
    try:
        return create(strip_plan(host_uids, host_gids))
    except HostError:
        return create(strip_plan(host_uids, host_gids, caller=False))


def create(plan: IdPlan, parent=None) -> int:
    """Host side: make a user namespace with ``plan``'s maps and return an fd for it
    (/proc/PID/ns/user, close-on-exec).  An open fd keeps a namespace alive with no process in it
    (namespaces(7)); the set-up process of each run joins it with setns(2) -- its creator's uid
    owns it, so the caller may (user_namespaces(7)) -- instead of paying for a new one and for
    newuidmap/newgidmap every time.  ``parent``: made inside that namespace instead of this
    process's (see :func:`write_maps`).  Raises HostError."""
    from . import _syscalls as sc

    r, w = os.pipe2(os.O_CLOEXEC)
    r2, w2 = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            # only our own pipe ends: a helper forked at the same time by another thread holds
            # copies of everything open then, and must not keep this one's pipe alive (or we its)
            keep = sorted((r, w, r2) + ((parent.fd,) if parent is not None else ()))
            lo = 3
            for fd in keep:
                if fd > lo:
                    sc.close_range(lo, fd - 1)
                lo = fd + 1
            sc.close_range(lo, 0xFFFFFFFF)
            try:
                if parent is not None:
                    sc.setns(parent.fd, sc.CLONE_NEWUSER)
                sc.unshare(sc.CLONE_NEWUSER)
                if plan.self_write and parent is None:
                    write_own_maps(plan)
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
        write_maps(plan, pid, parent)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(r)
        os.close(w2)
        os.waitpid(pid, 0)


_LAUNCHER = "/usr/lib/jailpy/jailpy-launcher"  # jailpy.lsm.apparmor.LAUNCHER_PATH (not imported here: the sandbox's side)


def unshare_hint(e: OSError) -> str:
    """One line saying why unshare(CLONE_NEWUSER) failed with ``e`` and how to fix it: the
    setting of an enclosing container or sandbox when one explains it (jailpy.nesting.hint),
    else the host's sysctl."""
    from .nesting import hint

    where = hint(e.errno)
    if e.errno in (errno.EPERM, errno.EACCES):
        if where:
            return f"user namespaces are refused here{where}"
        return ("user namespaces are not allowed for this user here: enable them with "
                "'sysctl kernel.unprivileged_userns_clone=1' (Debian); on Ubuntu 23.10+ run "
                f"'sudo jailpy apparmor install' and jailpy through {_LAUNCHER} (jailpy doctor says more); "
                "or run inside a container that permits unshare(CLONE_NEWUSER)")
    if e.errno == errno.ENOSPC:
        return ("the user namespace limit is reached: raise it with 'sysctl user.max_user_namespaces=15000'"
                + where)
    if e.errno == errno.EINVAL:
        return "this kernel lacks a namespace type jailpy needs (user, mnt, pid, uts, ipc, net, cgroup)"
    return e.strerror or str(e)


def map_hint(e: OSError, plan: IdPlan) -> str:
    """Why writing an id map of the caller's own id failed, for an EPERM: mapping uid 0 of the
    parent namespace needs CAP_SETFCAP there (kernel/user_namespace.c verify_root_map), which a
    program in a sandbox that dropped its capabilities lacks."""
    if e.errno == errno.EPERM and any(outside == 0 for _, outside, _ in plan.uid_map):
        return (": mapping uid 0 of the enclosing user namespace needs CAP_SETFCAP there, which this process "
                "lacks: run it as another uid in the enclosing sandbox (jailpy: --allow-nesting without --uid 0 "
                "runs it as uid 1000)")
    return ""
