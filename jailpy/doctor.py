"""``jailpy doctor``: check this host for what jailpy needs and what spoils it, with the exact fix.

Each check returns a :class:`Check`: ``ok``, ``warn`` (jailpy works, something is weaker or
slower than it could be), ``fail`` (something jailpy would use is missing) or ``info``; with the
fix as a command where there is one.  ``needed``: the default policy (``jailpy exec -- CMD``)
cannot run without it: :func:`run_all` is "ok" (exit 0) when every needed check passes.

What is checked (as isolate's check-environment does for judge timing, and what a rootless
sandbox needs): the kernel; user namespaces (``user.max_user_namespaces``, Debian's
``kernel.unprivileged_userns_clone``, Ubuntu's AppArmor restriction, detected by trying:
unshare(2), the id maps, a tmpfs mount, and the AppArmor label before and after); subuid/subgid
ranges and newuidmap; the cgroup version and which controllers the caller may use; Landlock's
ABI; AppArmor and SELinux and whether jailpy's profiles are loaded; seccomp and its user
notification; pasta/slirp4netns; TIOCSTI (``dev.tty.legacy_tiocsti``); swap that makes memory
limits soft; CPU frequency scaling, turbo and SMT, which spoil timing; whether this runs inside a
container; and finally a real run of ``true`` under the default policy.

Nothing here changes the host, apart from what a jailpy run with a memory limit does anyway (a
cgroup of the caller's, made and removed).  Man pages and kernel docs: user_namespaces(7),
proc(5) /proc/sys/user, subuid(5), newuidmap(1), cgroups(7) and cgroup-v2.rst "Delegation",
landlock(7), apparmor(7), selinux(8), seccomp(2) SECCOMP_GET_NOTIF_SIZES, tty_ioctl(4) TIOCSTI,
Documentation/admin-guide/hw-vuln/core-scheduling.rst (SMT), cpufreq/cpu-drivers.rst.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import platform
import pwd
import shutil
from dataclasses import asdict, dataclass

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
MIN_KERNEL = (5, 12)
"""The oldest kernel jailpy runs on (mount_setattr(2))."""


@dataclass
class Check:
    """One line of the report: ``status`` ok/warn/fail/info, ``detail`` what was found, ``fix``
    the command or step that fixes it ("" when nothing is to be done), ``needed``: the default
    policy cannot run without it."""

    name: str
    status: str
    detail: str
    fix: str = ""
    needed: bool = False


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


# ---------------------------------------------------------------- kernel and namespaces ----

def kernel() -> Check:
    rel = platform.release()
    try:
        ver = tuple(int(x) for x in rel.split("-")[0].split(".")[:2])
    except ValueError:
        ver = (0, 0)
    machine = platform.machine()
    if machine != "x86_64":
        return Check("kernel", FAIL, f"{rel} on {machine}: jailpy supports x86_64 only", needed=True)
    if ver < MIN_KERNEL:
        return Check("kernel", FAIL, f"Linux {rel}: jailpy needs {MIN_KERNEL[0]}.{MIN_KERNEL[1]} or newer",
                     "upgrade the kernel", needed=True)
    lsm = _read("/sys/kernel/security/lsm")
    return Check("kernel", OK, f"Linux {rel}, {machine}" + (f"; security modules: {lsm}" if lsm else ""))


def _try_userns() -> dict:
    """In a forked child: unshare a user and a mount namespace, map the caller's ids, mount a
    tmpfs (what every sandbox does first), reading the AppArmor label before and after.  Returns
    ``{"step": failed step or "", "errno": name, "label_before", "label_after"}``."""
    from . import _syscalls as sc

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        out = {"step": "", "errno": "", "label_before": _label(), "label_after": None}
        step = "unshare(CLONE_NEWUSER)"
        try:
            uid, gid = os.getuid(), os.getgid()
            sc.unshare(sc.CLONE_NEWUSER)
            out["label_after"] = _label()
            step = "unshare(CLONE_NEWNS)"
            sc.unshare(sc.CLONE_NEWNS)
            step = "write /proc/self/uid_map"
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"0 {uid} 1")
            step = "write /proc/self/gid_map"
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"0 {gid} 1")
            step = "mount a tmpfs"
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            sc.mount("tmpfs", "/tmp", "tmpfs", 0, "size=64k")
        except OSError as e:
            out["step"], out["errno"] = step, errno.errorcode.get(e.errno, str(e.errno))
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with open(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data or b'{"step": "fork", "errno": "?"}')


def _label() -> str | None:
    """This task's AppArmor label (/proc/self/attr/apparmor/current, else attr/current), None
    without one."""
    for p in ("/proc/thread-self/attr/apparmor/current", "/proc/thread-self/attr/current"):
        v = _read(p)
        if v is not None:
            return v.replace("\0", "")
    return None


def user_namespaces() -> list[Check]:
    """The sysctls that allow or forbid user namespaces, and a real try (see :func:`_try_userns`)."""
    out = []
    maxns = _read("/proc/sys/user/max_user_namespaces")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    restrict = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    got = _try_userns()
    facts = [f"user.max_user_namespaces={maxns}"]
    if clone is not None:
        facts.append(f"kernel.unprivileged_userns_clone={clone}")
    if restrict is not None:
        facts.append(f"kernel.apparmor_restrict_unprivileged_userns={restrict}")
    if not got["step"]:
        out.append(Check("user namespaces", OK, f"{'; '.join(facts)}; a user namespace with id maps and a tmpfs "
                                                f"mount works", needed=True))
    else:
        how = f"{got['step']} failed ({got['errno']}); {'; '.join(facts)}"
        if maxns == "0":
            fix = "sudo sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d/ to keep it)"
        elif clone == "0":
            fix = "sudo sysctl -w kernel.unprivileged_userns_clone=1 (and in /etc/sysctl.d/ to keep it)"
        elif restrict == "1" or (got.get("label_after") or "").startswith("unprivileged_userns"):
            fix = ("sudo jailpy apparmor install (a profile that allows user namespaces to jailpy's own launcher, "
                   "/usr/lib/jailpy/jailpy-launcher, only), then run jailpy through that launcher; or run as root")
        else:
            fix = "run inside a container or VM that permits unshare(CLONE_NEWUSER), or as root"
        out.append(Check("user namespaces", FAIL, how, fix, needed=True))
    if restrict is not None:
        label = got.get("label_after")
        if restrict == "0":
            out.append(Check("AppArmor userns restriction", WARN, "kernel.apparmor_restrict_unprivileged_userns=0: "
                             "every program may create user namespaces (Ubuntu's default is 1)",
                             "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=1, then "
                             "sudo jailpy apparmor install"))
        elif not got["step"]:
            out.append(Check("AppArmor userns restriction", OK, f"on; this process may create user namespaces "
                             f"(label after unshare: {label})"))
        else:
            out.append(Check("AppArmor userns restriction", FAIL, f"on; label before {got.get('label_before')}, "
                             f"after unshare {label}: the namespace has no capabilities",
                             "sudo jailpy apparmor install", needed=True))
    else:
        out.append(Check("AppArmor userns restriction", INFO, "this kernel has no "
                         "kernel.apparmor_restrict_unprivileged_userns (an Ubuntu patch): nothing to do"))
    return out


def id_ranges() -> Check:
    from . import userns
    from .errors import JailpyError

    if os.getuid() == 0:
        try:
            rng = userns.root_range()
        except JailpyError as e:
            return Check("id ranges", FAIL, str(e), f"set {userns.ID_RANGE_ENV}=FIRST:COUNT or write "
                                                    f"{userns.ID_RANGE_FILE}")
        return Check("id ranges", OK, f"as root: sandboxes get ids from {rng.source} ({rng.uid}-"
                                      f"{rng.uid + rng.count - 1}), a pair of their own each")
    user = _user()
    subu = userns._subid_range("/etc/subuid", user, os.getuid())
    subg = userns._subid_range("/etc/subgid", user, os.getuid())
    helpers = [h for h in ("newuidmap", "newgidmap") if not shutil.which(h)]
    if subu and subg and not helpers:
        return Check("id ranges", OK, f"{user} has {subu[1]} subuids from {subu[0]} and {subg[1]} subgids; newuidmap "
                                      f"and newgidmap are installed: each sandbox gets ids of its own")
    missing = ([] if subu and subg else [f"no range for {user} in /etc/subuid and /etc/subgid"]) + \
        ([f"{' and '.join(helpers)} not installed"] if helpers else [])
    fix = []
    if not (subu and subg):
        fix.append(f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}")
    if helpers:
        fix.append("sudo apt-get install uidmap")
    return Check("id ranges", WARN, "; ".join(missing) + ": sandboxes run as your own uid (--id-map single), so "
                                                       "a program owns your files in writable binds", "; ".join(fix))


# ---------------------------------------------------------------- cgroups ----

def cgroup() -> list[Check]:
    """The cgroup version, and whether memory, pids, cpu and CPU-time limits can be had (as
    jailpy exec --memory would: jailpy.cgroups.prepare)."""
    from . import cgroups
    from .errors import JailpyError

    hiers = cgroups._hierarchies()
    v2 = [h for h in hiers if h.version == 2]
    v1 = sorted({c for h in hiers if h.version == 1 for c in h.controllers})
    if v2 and not v1:
        version = "cgroup v2"
    elif v1 and v2:
        version = f"hybrid: cgroup v1 ({', '.join(v1)}) and an empty cgroup2"
    elif v1:
        version = f"cgroup v1 ({', '.join(v1)})"
    else:
        return [Check("cgroup", WARN, "no cgroup hierarchy is mounted: no memory, pids or CPU limits",
                      "mount cgroup2 on /sys/fs/cgroup")]
    parent = os.environ.get("JAILPY_CGROUP_PARENT") or None
    try:
        plan = cgroups.prepare(cgroups.Limits(memory=64 << 20, pids=64, cpus=1.0), parent=parent, required=True,
                               cpu_accounting=True)
    except JailpyError as e:
        msg = str(e)
        at = next((i for key in ("ask root for", "run inside", "mount ", "remove ") if (i := msg.find(key)) >= 0), -1)
        fix = msg[at:] if at >= 0 else msg
        cause = msg[:at].rstrip(" ;:,") if at > 0 else msg  # the fix is printed once, on its own line
        return [Check("cgroup", WARN, f"{version}; limits (--memory, --pids, --cpus, --cpu-time) cannot be used: "
                                      f"{cause}", fix)]
    out = [Check("cgroup", OK, f"{version}; --memory, --pids, --cpus and --cpu-time work under {plan.parent}")]
    swap = [line.split()[0] for line in (_read("/proc/swaps") or "").splitlines()[1:] if line.strip()]
    if swap and plan.swap is None:
        out.append(Check("swap", WARN, f"swap is on ({', '.join(swap)}) and this cgroup cannot limit it: a program "
                                       f"under --memory can swap instead of being stopped (MLE)",
                         "sudo swapoff -a, or boot with swapaccount=1 (cgroup v1) or use cgroup v2"))
    elif swap:
        out.append(Check("swap", OK, f"swap is on ({', '.join(swap)}); jailpy limits it ({plan.swap})"))
    else:
        out.append(Check("swap", OK, "no swap: memory limits are hard"))
    return out


# ---------------------------------------------------------------- security modules ----

def landlock() -> Check:
    from .lsm import landlock as ll

    try:
        abi = ll.kernel_abi()
    except ll.Unavailable as e:
        return Check("Landlock", WARN, f"{e}: jailpy runs without this second wall (--landlock auto)",
                     "boot a kernel with Landlock (lsm=landlock,...)")
    missing = [f"{n} (ABI {since})" for t in (ll.FS, ll.NET, ll.SCOPE) for n, (_, since) in t.items() if since > abi]
    if missing:
        return Check("Landlock", WARN, f"ABI {abi}: applied, without {', '.join(missing)}",
                     "a newer kernel (Linux 6.12 for ABI 6)")
    return Check("Landlock", OK, f"ABI {abi}: every right jailpy uses (files, TCP ports, signal and socket scoping)")


def apparmor() -> Check:
    from .lsm import apparmor as aa

    enabled = _read("/sys/module/apparmor/parameters/enabled")
    if not aa.enabled():
        return Check("AppArmor", INFO, "not in this kernel" if enabled is None else "built in, not enabled "
                     "(apparmor=1 security=apparmor on the kernel command line)")
    try:
        names = os.listdir(os.path.join(aa.SECURITYFS, "policy", "profiles"))
    except OSError:
        names = []
    ours = sorted({n.rpartition(".")[0] for n in names if n.startswith("jailpy-")})
    detail = f"enabled; jailpy's profiles loaded: {', '.join(ours) or 'none'}"
    fix = "" if ours else "sudo jailpy apparmor install (for --apparmor generate)"
    if aa.userns_mediated():
        has = aa.LAUNCHER_PROFILE in ours and os.path.exists(aa.LAUNCHER_PATH)
        detail += f"; this kernel lets AppArmor restrict user namespaces: the launcher {aa.LAUNCHER_PATH} " + \
            ("and its profile are installed" if has else "is not installed")
        if not has:
            fix = "sudo jailpy apparmor install"
    return Check("AppArmor", OK if ours else INFO, detail, fix)


def selinux() -> Check:
    enforce = _read("/sys/fs/selinux/enforce")
    if enforce is None:
        return Check("SELinux", INFO, "not enabled")
    mode = {"1": "enforcing", "0": "permissive"}.get(enforce, enforce)
    policy = _read("/etc/selinux/config") or ""
    name = next((ln.split("=", 1)[1] for ln in policy.splitlines() if ln.startswith("SELINUXTYPE=")), "?")
    try:
        fd = os.open("/sys/fs/selinux/context", os.O_RDWR)
        try:
            os.write(fd, b"system_u:system_r:jailpy_t:s0\0")
            ours = True
        finally:
            os.close(fd)
    except OSError:
        ours = False
    return Check("SELinux", OK if ours and mode == "enforcing" else INFO,
                 f"{mode}, policy {name}; jailpy_t {'is' if ours else 'is not'} in the policy",
                 "" if ours else "sudo jailpy selinux install (for --selinux-label)")


def seccomp() -> Check:
    status = _read("/proc/self/status") or ""
    if "Seccomp:" not in status:
        return Check("seccomp", FAIL, "this kernel has no seccomp (CONFIG_SECCOMP_FILTER)", "a kernel with seccomp",
                     needed=True)
    libc = ctypes.CDLL(None, use_errno=True)
    sizes = (ctypes.c_uint16 * 3)()
    rc = libc.syscall(ctypes.c_long(317), ctypes.c_uint(3), ctypes.c_uint(0), sizes)  # SECCOMP_GET_NOTIF_SIZES
    if rc != 0:
        return Check("seccomp", FAIL, f"seccomp filters work, user notification does not "
                                      f"({os.strerror(ctypes.get_errno())}; Linux 5.0+)", "a newer kernel", needed=True)
    return Check("seccomp", OK, "filters and user notification (the report of the first denied call)", needed=True)


# ---------------------------------------------------------------- the rest ----

def user_mode_net() -> Check:
    found = [t for t in ("pasta", "slirp4netns") if shutil.which(t)]
    if found:
        return Check("user-mode networking", OK, f"{', '.join(found)} installed (for a network other than none)")
    return Check("user-mode networking", INFO, "neither pasta nor slirp4netns is installed: only needed for a "
                                               "network other than none", "sudo apt-get install passt")


def tiocsti() -> Check:
    v = _read("/proc/sys/dev/tty/legacy_tiocsti")
    if v == "0":
        return Check("TIOCSTI", OK, "dev.tty.legacy_tiocsti=0: no process can push input into a terminal")
    what = "dev.tty.legacy_tiocsti=1" if v is not None else "this kernel (before 6.2) always allows it"
    return Check("TIOCSTI", WARN, f"{what}: a program sharing your terminal could type into it (jailpy gives the "
                                  f"program a new session and its seccomp policies deny TIOCSTI)",
                 "sudo sysctl -w dev.tty.legacy_tiocsti=0" if v is not None else "Linux 6.2 or newer")


def timing() -> list[Check]:
    """What spoils judge timing: frequency scaling, turbo boost, SMT (isolate's check-environment)."""
    out = []
    govs = sorted({g for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")
                   if (g := _read(p))})
    if not govs:
        out.append(Check("CPU frequency", INFO, "no cpufreq here (a VM or a fixed clock): nothing to set"))
    elif govs != ["performance"]:
        out.append(Check("CPU frequency", WARN, f"scaling governor {', '.join(govs)}: CPU time of a run varies with "
                                                f"the clock", "sudo cpupower frequency-set -g performance"))
    else:
        out.append(Check("CPU frequency", OK, "governor performance"))
    turbo = _read("/sys/devices/system/cpu/intel_pstate/no_turbo")
    boost = _read("/sys/devices/system/cpu/cpufreq/boost")
    if turbo == "0" or boost == "1":
        out.append(Check("turbo boost", WARN, "on: the clock depends on load and temperature",
                         "echo 1 | sudo tee /sys/devices/system/cpu/intel_pstate/no_turbo" if turbo == "0"
                         else "echo 0 | sudo tee /sys/devices/system/cpu/cpufreq/boost"))
    smt = _read("/sys/devices/system/cpu/smt/control")
    if smt == "on":
        out.append(Check("SMT", WARN, "on: two programs on sibling threads slow each other down",
                         "echo off | sudo tee /sys/devices/system/cpu/smt/control (or boot with nosmt)"))
    elif smt is not None:
        out.append(Check("SMT", OK, f"{smt}"))
    return out


def container() -> Check:
    """Whether this runs in a container, and what that means for jailpy."""
    kind = None
    if os.path.exists("/.dockerenv"):
        kind = "docker"
    elif os.path.exists("/run/.containerenv"):
        kind = "podman"
    else:
        env = _read("/proc/1/environ") or ""
        for item in env.split("\0"):
            if item.startswith("container="):
                kind = item.split("=", 1)[1]
    if kind is None:
        return Check("container", INFO, "not in a container (as far as /.dockerenv, /run/.containerenv and PID 1's "
                                        "environment tell)")
    return Check("container", INFO, f"inside a {kind} container: jailpy works here when the container allows "
                                    f"unshare(CLONE_NEWUSER) and mounting a fresh proc (docker: --security-opt "
                                    f"seccomp=unconfined --security-opt systempaths=unconfined, podman: "
                                    f"unmask=ALL instead of systempaths, plus apparmor=unconfined where AppArmor is "
                                    f"on; no capability is needed, see docs/nesting.md); its cgroups are the "
                                    f"container's, delegated only if the runtime does (cgroupns); AppArmor and "
                                    f"SELinux labels are the host's to give")


def end_to_end() -> Check:
    """A real run of ``true`` under the default policy (what ``jailpy exec -- true`` does)."""
    import time

    from . import policy, sandbox
    from .errors import JailpyError

    t0 = time.monotonic()
    try:
        r = sandbox.run(["true"], policy.load("default"), stdin=sandbox.DEVNULL, stdout=sandbox.DEVNULL,
                        stderr=sandbox.DEVNULL)
    except JailpyError as e:
        return Check("default policy", FAIL, f"jailpy exec -- true: {e}", "see the failed checks above", needed=True)
    ms = (time.monotonic() - t0) * 1000
    if r.exit_code != 0:
        return Check("default policy", FAIL, f"jailpy exec -- true exited {r.exit_code}: {r.error or r.verdict.value}",
                     needed=True)
    ll = (r.protections.get("landlock") or {})
    return Check("default policy", OK, f"jailpy exec -- true ran in {ms:.0f} ms (seccomp "
                                       f"{r.protections['seccomp']['policy']}, Landlock "
                                       f"{'ABI ' + str(ll['abi']) if ll.get('applied') else 'off'})", needed=True)


def run_all() -> tuple[bool, list[Check]]:
    """Every check, in report order; ``ok``: every needed one passed."""
    checks = [kernel(), *user_namespaces(), id_ranges(), *cgroup(), landlock(), apparmor(), selinux(), seccomp(),
              user_mode_net(), tiocsti(), *timing(), container(), end_to_end()]
    return all(c.status != FAIL for c in checks if c.needed), checks


def report_json(ok: bool, checks: list[Check]) -> str:
    """The ``--json`` document."""
    return json.dumps({"ok": ok, "user": _user(), "uid": os.getuid(), "kernel": platform.release(),
                       "checks": [asdict(c) for c in checks]}, indent=2)


def report_text(ok: bool, checks: list[Check]) -> str:
    """The report for a person: one line per check, the fix under it."""
    import textwrap

    width = shutil.get_terminal_size((100, 24)).columns
    lines = [f"jailpy doctor: Linux {platform.release()} ({platform.machine()}), as {_user()} (uid {os.getuid()})"]
    name_w = max(len(c.name) for c in checks)
    for c in checks:
        head = f"{c.status.upper():<5} {c.name:<{name_w}}  "
        body = textwrap.wrap(c.detail, max(30, width - len(head)), break_on_hyphens=False) or [""]
        lines.append(head + body[0])
        lines += [" " * len(head) + b for b in body[1:]]
        if c.fix and c.status in (FAIL, WARN, INFO):
            lines += textwrap.wrap("fix: " + c.fix, max(30, width - len(head)) + len(head), initial_indent=" " * len(head),
                                   subsequent_indent=" " * (len(head) + 5), break_on_hyphens=False)
    bad = [c.name for c in checks if c.needed and c.status == FAIL]
    lines.append("jailpy doctor: " + ("everything the default policy needs is here" if ok else
                                      f"the default policy cannot run: {', '.join(bad)}"))
    return "\n".join(lines)
