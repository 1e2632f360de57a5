"""Running inside another sandbox: a container (Docker, Podman, Kubernetes, crun/runc), a CI
runner, ``unshare -U``, bubblewrap, or jailpy itself; and letting a sandbox run one
(``allow_nesting``).

jailpy needs, wherever it runs, what any user namespace sandbox needs: unshare(2) of a user
namespace (and in it mount, pid, net, uts, ipc, cgroup namespaces), mount(2) and pivot_root(2) in
them, and a fresh proc for its pid namespace.  An enclosing layer can take each away:

* its **seccomp filter** refuses unshare, mount or pivot_root (Docker's and Podman's default
  profiles do, for a container without CAP_SYS_ADMIN; jailpy's own unless ``allow_nesting``);
* its **AppArmor profile** refuses mount (docker-default);
* its **masked /proc** (mounts over /proc/kcore, /proc/sys...: Docker's maskedPaths and
  readonlyPaths, bubblewrap's covers of /proc/sys, irq, bus) makes the kernel refuse a new proc
  in a user namespace: fs/namespace.c mount_too_revealing mounts one only where a proc is
  already *fully visible* in the mount namespace (no locked mount over anything but an empty
  directory), so the sandbox cannot have a /proc of its own pid namespace;
* its **user namespace** maps only some ids (``unshare -r``: one), so a sandbox can map only
  those (:mod:`jailpy.userns` then falls back to the caller's own id);
* its cgroup mount is read-only (no **cgroup delegation**), so no limit can be enforced.

jailpy does not weaken itself to fit: what it cannot do, it refuses with the setting to change
(:func:`hint`); what it does with less (a single id, no seccomp notifications, no cgroup) the
Result's ``protections.nested`` lists (:func:`describe`).  Host side only.

A jailpy sandbox with ``allow_nesting`` gives its program what a nested jailpy needs (the
sandbox side is in :mod:`jailpy.rootfs`, :mod:`jailpy.seccomp.nesting`, :mod:`jailpy.ucounts`):
its seccomp filter allows the namespace and mount calls, ``user.max_user_namespaces`` is
``NESTED_USER_NAMESPACES`` unless the policy sets another, and below the sandbox's /proc lies a
second, fully visible proc, covered (unreachable), which lets the kernel mount new ones.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

NESTED_USER_NAMESPACES = 64
"""``user.max_user_namespaces`` of a sandbox with ``allow_nesting`` when the policy leaves
``max_user_namespaces`` at 0: a nested jailpy takes one per sandbox (two with writable binds)."""
NESTED_UID = 1000
"""The uid (and gid) the program of a sandbox with ``allow_nesting`` runs as unless the policy
sets ``uid``: see :func:`program_ids`."""
HIDDEN_PROC = ".jailpy-nesting"
"""The directory below the sandbox's /proc mount point where ``allow_nesting`` mounts the covered proc."""

DOCKER_FIX = ("docker/podman run --security-opt seccomp=unconfined (or a profile that allows unshare, setns, "
              "mount, umount2, pivot_root, open_tree, move_mount and mount_setattr); Kubernetes: "
              "securityContext.seccompProfile.type: Unconfined")
APPARMOR_FIX = ("docker/podman run --security-opt apparmor=unconfined (Kubernetes: "
                "securityContext.appArmorProfile.type: Unconfined)")
PROC_FIX = {
    "docker": "docker run --security-opt systempaths=unconfined",
    "podman": "podman run --security-opt unmask=ALL",
    "kubernetes": "securityContext.procMount: Unmasked (with hostUsers: false)",
    "bubblewrap": "give bwrap a fully visible proc, covered: add --bind /proc /tmp/.proc/proc --tmpfs /tmp/.proc "
                  "after its --tmpfs /tmp (bwrap covers /proc/sys, irq and bus of each proc it mounts itself)",
    "jailpy": "run the enclosing jailpy with --allow-nesting",
    "oci": "remove the /proc entries from linux.maskedPaths and linux.readonlyPaths of the container's OCI config "
           "(Docker: --security-opt systempaths=unconfined; Podman: --security-opt unmask=ALL; Kubernetes: "
           "procMount: Unmasked)",
}


@dataclass(frozen=True)
class Enclosure:
    """What encloses this process, from /proc/self and a few marker files: ``runtime`` (docker,
    podman, kubernetes, bubblewrap, jailpy, container, or None), ``userns`` (uids mapped when in a
    user namespace other than the initial one, else None), ``seccomp_filters`` (stacked filters
    on this process: /proc/self/status Seccomp_filters), ``no_new_privs``, ``apparmor`` (the
    profile when confined), ``proc_masks`` (mount points below /proc), ``cgroup_readonly``
    (the cgroup filesystems are mounted read-only)."""

    runtime: str | None = None
    userns: int | None = None
    seccomp_filters: int = 0
    no_new_privs: bool = False
    apparmor: str | None = None
    proc_masks: tuple[str, ...] = ()
    cgroup_readonly: bool = False
    layers: tuple[str, ...] = field(default=())

    @property
    def nested(self) -> bool:
        return bool(self.layers)


def program_ids(uid: int | None, gid: int | None, allow_nesting: bool) -> tuple[int | None, int | None]:
    """The ``uid``/``gid`` the program runs as: the policy's; with ``allow_nesting`` and no uid,
    NESTED_UID.  A nested sandbox maps its own ids from its caller's, and writing a map whose
    outside id is 0 needs CAP_SETFCAP over the parent namespace (kernel/user_namespace.c
    verify_root_map), which no program in a jailpy sandbox has: as uid 0 there, the program could
    make no user namespace with an id in it."""
    if allow_nesting and uid is None:
        return NESTED_UID, NESTED_UID if gid is None else gid
    return uid, gid


def _read(path: str, limit: int = 1 << 16) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def _status() -> dict[bytes, bytes]:
    out = {}
    for line in _read("/proc/self/status").splitlines():
        k, _, v = line.partition(b":")
        out[k] = v.strip()
    return out


def apparmor_profile() -> str | None:
    """This process's AppArmor label when it is confined (/proc/self/attr/apparmor/current, or
    attr/current on older kernels), else None."""
    for p in ("/proc/self/attr/apparmor/current", "/proc/self/attr/current"):
        label = _read(p, 4096).rstrip(b"\0\n").decode(errors="replace").strip()
        if label:
            return None if label == "unconfined" or label.startswith("unconfined") else label
    return None


def runtime() -> str | None:
    """The enclosing sandbox or container runtime, guessed from what each leaves behind: PID 1
    ``jailpy-init`` (jailpy), PID 1 ``bwrap`` (bubblewrap), /.dockerenv (Docker), /run/.containerenv
    (Podman), $KUBERNETES_SERVICE_HOST (a Kubernetes pod), $container (systemd-nspawn, LXC, others).
    None when none is seen."""
    init = _read("/proc/1/cmdline", 256).split(b"\0")[0]
    if init == b"jailpy-init":
        return "jailpy"
    if os.path.basename(init) == b"bwrap" or _read("/proc/1/comm", 64).strip() == b"bwrap":
        return "bubblewrap"
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if os.environ.get("container"):
        return "container"
    return None


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, per-mount options) from /proc/self/mountinfo."""
    out = []
    for line in _read("/proc/self/mountinfo", 1 << 22).decode(errors="replace").splitlines():
        left, _, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if len(a) >= 6 and b:
            point = a[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
            out.append((point, b[0], a[5]))
    return out


def _cgroup_readonly(points: list[str]) -> bool:
    """Whether the cgroup filesystems this process sees are all read-only (statvfs ST_RDONLY of the
    mount now visible at each point: mountinfo also lists mounts covered by others)."""
    seen = []
    for p in dict.fromkeys(points):
        try:
            seen.append(bool(os.statvfs(p).f_flag & os.ST_RDONLY))
        except OSError:
            continue
    return bool(seen) and all(seen)


def proc_masks() -> tuple[str, ...]:
    """Mount points strictly below /proc: what masks this mount namespace's /proc.  (Those on
    directories the kernel keeps empty, such as /proc/sys/fs/binfmt_misc, do not stop a new proc;
    they are listed too.)"""
    return tuple(sorted({p for p, _, _ in _mounts() if p.startswith("/proc/")}))


def detect() -> Enclosure:
    """What encloses this process (see :class:`Enclosure`); a few small reads of /proc/self."""
    from . import userns

    st = _status()
    filters = int(st.get(b"Seccomp_filters", b"0") or 0) if st.get(b"Seccomp") == b"2" else 0
    nnp = st.get(b"NoNewPrivs") == b"1"
    rows = userns.id_map("uid")
    count = None if rows == [(0, 0, 0xFFFFFFFF)] else sum(n for _, _, n in rows)
    mounts = _mounts()
    masks = tuple(sorted({p for p, _, _ in mounts if p.startswith("/proc/") and "binfmt_misc" not in p}))
    cg_ro = _cgroup_readonly([p for p, fstype, _ in mounts if fstype in ("cgroup", "cgroup2")])
    aa = apparmor_profile()
    layers = []  # only what the kernel shows: a marker file alone (a VM image built from a container) is no layer
    if count is not None:
        layers.append(f"a user namespace mapping {count} uid{'s' if count != 1 else ''}")
    if filters:
        layers.append(f"{filters} seccomp filter{'s' if filters != 1 else ''}")
    if aa:
        layers.append(f"AppArmor profile {aa}")
    if masks:
        layers.append(f"a masked /proc ({len(masks)} mount{'s' if len(masks) != 1 else ''} below it)")
    if cg_ro:
        layers.append("read-only cgroup filesystems")
    rt = runtime() if layers else None
    if rt:
        seen = {"jailpy": "PID 1 is jailpy-init", "bubblewrap": "PID 1 is bwrap", "docker": "/.dockerenv",
                "podman": "/run/.containerenv", "kubernetes": "$KUBERNETES_SERVICE_HOST",
                "container": "$container"}[rt]
        what = {"jailpy": "a jailpy sandbox", "bubblewrap": "bubblewrap"}.get(rt, f"a container ({rt})")
        layers.insert(0, f"{what} (by {seen})")
    return Enclosure(rt, count, filters, nnp, aa, masks, cg_ro, tuple(layers))


def listener_possible() -> bool:
    """Whether a seccomp filter installed in this process's children can have a notification
    listener: not when a filter already on this process has one (seccomp(2): EBUSY, one listener
    per filter chain; kernel/seccomp.c has_duplicate_listener).  Asked of the kernel in a forked
    child that installs an allow-all filter with SECCOMP_FILTER_FLAG_NEW_LISTENER; only called
    when this process is under a filter already (otherwise True at no cost)."""
    from . import _syscalls as sc

    if _status().get(b"Seccomp") != b"2":
        return True
    allow = (0x06, 0, 0, sc.SECCOMP_RET_ALLOW)  # BPF_RET|BPF_K
    import struct

    bpf = struct.pack("HBBI", *allow)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
            os.close(sc.seccomp_set_mode_filter(bpf, sc.SECCOMP_FILTER_FLAG_NEW_LISTENER))
            code = 0
        except BaseException:  # noqa: BLE001 - only the exit code matters
            pass
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def hint(err: int, what: str = "") -> str:
    """The enclosing layer's setting that explains ``err`` (an errno from unshare, mount or
    pivot_root; ``what``: "proc" for the mount of the sandbox's /proc), as a clause to append to
    the error, or "" when nothing here explains it."""
    if err not in (errno.EPERM, errno.EACCES, errno.ENOSPC):
        return ""
    rt = runtime()
    if err == errno.ENOSPC:
        return "; inside jailpy: " + PROC_FIX["jailpy"] if rt == "jailpy" else ""
    st = _status()
    if what == "proc":
        masks = [m for m in proc_masks() if "binfmt_misc" not in m]
        shown = ", ".join(masks[:6]) + (" ..." if len(masks) > 6 else "")
        fix = PROC_FIX["oci"] if rt in (None, "oci", "container") else f"{PROC_FIX[rt]}; or {PROC_FIX['oci']}"
        return (f": this environment's /proc is masked ({shown or 'mounts below it'}), and the kernel mounts a new "
                f"proc in a user namespace only where one is fully visible (mount_too_revealing): {fix}")
    if rt == "jailpy":
        return ": the enclosing jailpy sandbox refuses it: " + PROC_FIX["jailpy"]
    if st.get(b"Seccomp") == b"2":
        return (f": a seccomp filter of the enclosing container or sandbox refuses it (Seccomp: 2 in "
                f"/proc/self/status): {DOCKER_FIX}")
    aa = apparmor_profile()
    if aa:
        return f": the AppArmor profile {aa} refuses it: {APPARMOR_FIX}"
    return ""


def describe(enc: Enclosure, ids_single: bool, setgroups_denied: bool, cgroup_used: bool,
             listener: bool) -> dict | None:
    """Result.protections["nested"]: None when nothing encloses this process; else what does
    (``inside``) and what this run has less of because of it (``weaker``: ids, groups, cgroup,
    seccomp reporting), so a judge can refuse a weaker run."""
    if not enc.nested:
        return None
    weaker = {}
    if ids_single and enc.userns is not None:
        weaker["ids"] = (f"the caller's own id: the enclosing user namespace maps {enc.userns} "
                         f"uid{'s' if enc.userns != 1 else ''}, not a range to give each sandbox its own")
    if setgroups_denied:
        weaker["groups"] = ("supplementary groups kept: setgroups is denied in the enclosing user namespace "
                            "(/proc/self/setgroups)")
    if not cgroup_used and enc.cgroup_readonly:
        weaker["cgroup"] = "no cgroup delegation: /sys/fs/cgroup is mounted read-only here, so no limit can be set"
    if not listener:
        weaker["seccomp_report"] = ("denied calls are answered by the kernel and not reported: an enclosing "
                                    "seccomp filter already has the one notification listener allowed")
    return {"inside": list(enc.layers), "weaker": weaker}


def mount_covered(base: str) -> None:
    """SANDBOX SIDE, ``allow_nesting`` (jailpy.rootfs): a proc and a sysfs at ``base``/proc/HIDDEN_PROC and ``base``/sys/HIDDEN_PROC,
    directories of the new root's tmpfs that the sandbox's own /proc and /sys are then mounted over.
    The kernel mounts a new proc (sysfs) in a user namespace only where one is already *fully
    visible* in the mount namespace (fs/namespace.c mount_too_revealing, mnt_already_visible: no
    locked mount over anything but an empty directory), and the sandbox's own have masks over
    them; these have none, and are covered from their parent's side, so the program cannot reach
    them (uncovering needs CAP_SYS_ADMIN here, and in a nested user namespace the cover is
    locked).  Their flags are those of the sandbox's own (nosuid, nodev, noexec; sysfs read-only),
    so a nested sandbox mounts its proc and sysfs as jailpy does.  A sysfs the kernel refuses here
    is left out (the nested one then binds this sandbox's)."""
    from . import _syscalls as sc

    for d, fstype, flags in (("proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC),
                             ("sys", "sysfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)):
        target = f"{base}/{d}/{HIDDEN_PROC}"
        os.mkdir(target, 0o555)
        try:
            sc.mount(fstype, target, fstype, flags)
        except OSError as e:
            if fstype == "proc":
                raise OSError(e.errno, f"mount a covered proc for nesting: {e.strerror}") from None
