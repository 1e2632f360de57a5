"""SELinux (selinux(8)) for the program: an SELinux type with per-run MCS categories.

``--selinux-label LABEL|auto|off``: the program's execve(2) moves it into the context LABEL
(``USER:ROLE:TYPE``, or with a level ``USER:ROLE:TYPE:LEVEL``), set by PID 1 through
/proc/thread-self/attr/exec (libselinux's setexeccon(3); crun and buildah do the same).  Without a
level each run gets ``s0:cA,cB``, two random categories (A < B, as container runtimes do), so two
sandboxes cannot touch each other's files even under the same type: a file a run creates carries
its categories, and a type in ``mcs_constrained_type`` may only reach objects its own categories
dominate.  ``auto``: ``container_t`` where the policy has it (Fedora, RHEL: container-selinux),
else ``jailpy_t`` from jailpy's own module (profiles/selinux/jailpy.cil, installed by
``sudo jailpy selinux install``; Debian's refpolicy has no container type), with the caller's
SELinux user and role where the policy allows them for that type, else ``system_u:system_r``.

Fail closed: SELinux disabled, permissive (the label would not be enforced), or a context the
policy does not know (checked by writing it to /sys/fs/selinux/context) stops the run before the
sandbox is built.  jailpy sets no_new_privs before the program's execve, so the policy must allow
the caller ``process2 { nnp_transition }`` into the type (jailpy.cil does).  Host files a
writable bind exposes must carry a type the program may write (``chcon -R -t jailpy_file_t DIR``);
jailpy never relabels host files.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import HostError, PolicyError

SELINUXFS = "/sys/fs/selinux"
TYPES = ("container_t", "jailpy_t")
"""The types ``auto`` tries, in order."""
MODULE = "jailpy.cil"
MODULE_DIRS = (Path(__file__).resolve().parent.parent / "profiles" / "selinux",
               Path(__file__).resolve().parent.parent.parent / "profiles" / "selinux")


def enabled() -> bool:
    """Whether SELinux is on in this kernel (its filesystem at SELINUXFS has ``enforce``)."""
    return os.path.exists(os.path.join(SELINUXFS, "enforce"))


def enforcing() -> bool:
    try:
        with open(os.path.join(SELINUXFS, "enforce")) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def valid(context: str) -> bool:
    """Whether the loaded policy knows ``context`` (a full context, with a level): written to
    SELINUXFS/context, which answers EINVAL for one it does not (selinuxfs; security_check_context(3))."""
    try:
        fd = os.open(os.path.join(SELINUXFS, "context"), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, context.encode() + b"\0")
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def current() -> str | None:
    """This process's context (/proc/self/attr/current), None without SELinux."""
    for p in ("/proc/thread-self/attr/selinux/current", "/proc/thread-self/attr/current"):
        try:
            with open(p) as f:
                return f.read().strip().rstrip("\0")
        except OSError:
            continue
    return None


def prepare(value: str) -> tuple[str | None, dict | None]:
    """Host side: the context PID 1 gives the program (None for ``off``; without a level PID 1 adds
    ``s0:cA,cB``, two random categories per run) and what Result.protections.lsm says.  Raises
    HostError (fail closed) when SELinux is off or permissive, or the policy lacks the type, with
    the fix; PolicyError for a malformed label."""
    if value == "off":
        return None, None
    if not enabled():
        raise HostError(f"--selinux-label {value}: SELinux is not enabled on this host (boot with selinux=1 "
                        f"security=selinux and a policy); use --selinux-label off")
    if not enforcing():
        raise HostError(f"--selinux-label {value}: SELinux is permissive here, so the label would not be enforced: "
                        f"setenforce 1 (or enforcing=1 at boot), or use --selinux-label off")
    if value == "auto":
        cur = (current() or "system_u:system_r:unconfined_t:s0").split(":")
        tried = []
        for t in TYPES:
            for ur in ((cur[0], cur[1]), ("system_u", "system_r")):
                base = f"{ur[0]}:{ur[1]}:{t}"
                tried.append(base)
                if valid(base + ":s0"):
                    return base, _describe(base, t, per_run=True)
        raise HostError(f"--selinux-label auto: the policy has neither container_t nor jailpy_t (tried "
                        f"{', '.join(tried)}): install jailpy's module with sudo jailpy selinux install")
    parts = value.split(":")
    if len(parts) < 3 or not all(parts[:3]) or any(c.isspace() or c == "\0" for c in value):
        raise PolicyError(f"--selinux-label: expected USER:ROLE:TYPE[:LEVEL], auto or off, got {value!r}")
    per_run = len(parts) == 3
    if not valid(value + (":s0" if per_run else "")):
        raise HostError(f"--selinux-label {value}: not a valid context in the loaded policy (a type it lacks, or a "
                        f"role or user not allowed for it); for jailpy_t: sudo jailpy selinux install")
    return value, _describe(value, parts[2], per_run)


def _describe(base: str, type_: str, per_run: bool) -> dict:
    return {"lsm": "selinux", "type": type_, "context": base,
            "categories": "two random MCS categories per run (s0:cA,cB)" if per_run else "as given",
            "how": "the context of the program's execve (attr/exec, set by PID 1)"}


def with_categories(base: str) -> str:
    """Sandbox side: ``base`` with a level ``s0:cA,cB`` of two random categories (0-1023, A < B)
    unless it has one."""
    if base.count(":") >= 3:
        return base
    raw = int.from_bytes(os.urandom(4), "little")
    a, b = raw % 1024, (raw >> 10) % 1023
    b = b if b < a else b + 1  # distinct from a, uniform over the other 1023
    lo, hi = min(a, b), max(a, b)
    return f"{base}:s0:c{lo},c{hi}"


# ---------------------------------------------------------------- install (root) ----

def module_path() -> Path:
    """profiles/selinux/jailpy.cil, as installed with jailpy or in a source tree."""
    for d in MODULE_DIRS:
        if (d / MODULE).is_file():
            return d / MODULE
    raise HostError(f"{MODULE} is not where jailpy keeps it ({', '.join(str(d) for d in MODULE_DIRS)})")


def install(no_reload: bool = False) -> str:
    """As root: install jailpy's module (semodule -i profiles/selinux/jailpy.cil; with
    ``no_reload``: -n, into the policy store only, as on a host where SELinux is off; without it
    SELinux must be enabled, as ``jailpy apparmor install`` wants AppArmor, so that a module that
    could not take effect is never reported installed).  Returns what was done.  Raises HostError
    (not root, SELinux off without ``no_reload``, no semodule, a refusal)."""
    import shutil
    import subprocess

    if os.geteuid() != 0:
        raise HostError("jailpy selinux install changes the SELinux policy: run it as root (sudo)")
    if not no_reload and not enabled():
        raise HostError("SELinux is not enabled on this host (boot with selinux=1 security=selinux and a "
                        "policy), so the module cannot be loaded; to put it into the policy store only, for a "
                        "later boot with SELinux, run: jailpy selinux install --no-reload")
    semodule = shutil.which("semodule") or next((p for p in ("/usr/sbin/semodule", "/sbin/semodule")
                                                if os.access(p, os.X_OK)), None)
    if semodule is None:
        raise HostError("semodule is not installed: sudo apt-get install semodule-utils policycoreutils")
    path = module_path()
    p = subprocess.run([semodule, *(["-n"] if no_reload else []), "-i", str(path)], capture_output=True,
                       timeout=900)
    if p.returncode != 0:
        raise HostError(f"semodule -i {path}: {p.stderr.decode(errors='replace').strip()[-500:]}")
    return f"installed {path} (module jailpy: types jailpy_t, jailpy_file_t)" + (
        "; not loaded (-n)" if no_reload else "")
