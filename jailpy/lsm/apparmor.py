"""AppArmor (apparmor(7)) for the program: a profile it runs under, derived from the policy.

``--apparmor PROFILE|generate|off``: the program's execve(2) moves it into PROFILE (a loaded
profile's name) or, with ``generate``, into the payload profile :func:`generate` derives from
the policy (``jailpy-payload-<hash>``).  Profiles are loaded by an administrator
(``sudo jailpy apparmor install``): loading needs root (apparmor_parser -r).

How: PID 1 writes ``exec NAME`` (when it is unconfined) or ``stack NAME`` (when jailpy itself runs
under a profile, e.g. the launcher's, so the program keeps that profile's limits too) to
/proc/thread-self/attr/apparmor/exec (attr/exec on older kernels): the kernel applies it at the
program's execve (aa_change_onexec(3); crun does the same).  A profile that is not loaded is an
error (ENOENT) before the program starts; a refused transition (no_new_privs and a confined
jailpy with ``exec``) fails the execve: fail closed, never unconfined.

The payload profile (:func:`generate`): file rules in the sandbox's own paths (AppArmor resolves
paths in the mount namespace's root, so after pivot_root these are the sandbox's; fds from
outside are "disconnected": ``attach_disconnected``): read, map and run what the mount plan shows,
write only where it makes writable (/tmp, /dev/shm, --tmpfs, writable binds, the /dev nodes); no
capabilities, no mount, pivot_root, ptrace or profile change; network families from the network
policy (none: unix and the sandbox's own loopback).  Its name carries a hash of its text, so a
changed policy needs the new profile installed.

Ubuntu 23.10+ (``kernel.apparmor_restrict_unprivileged_userns=1``) lets only confined programs
with a ``userns,`` rule create user namespaces: :func:`install` writes a root-owned launcher at
LAUNCHER_PATH and a profile that allows exactly that program (never python3) to, where the
kernel mediates user namespaces (features/namespaces/userns_create); the program is stacked
under it, so it gets no more than the payload profile allows.  The sysctl is never to be turned
off.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from typing import TYPE_CHECKING

from ..errors import HostError, PolicyError

if TYPE_CHECKING:
    from ..mounts import MountPlan
    from ..policy import Policy

SECURITYFS = "/sys/kernel/security/apparmor"
PROFILE_DIR = "/etc/apparmor.d"
PAYLOAD_PREFIX = "jailpy-payload-"
LAUNCHER_PROFILE = "jailpy-launcher"
LAUNCHER_PATH = "/usr/lib/jailpy/jailpy-launcher"
DEV_RW = ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts/*", "pts/ptmx")


def enabled() -> bool:
    """Whether AppArmor is enabled in this kernel (/sys/module/apparmor/parameters/enabled) and its
    filesystem is mounted (SECURITYFS)."""
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y" and os.path.isdir(SECURITYFS)
    except OSError:
        return False


def loaded(name: str) -> bool:
    """Whether profile ``name`` is loaded: a directory ``name.N`` in SECURITYFS/policy/profiles
    (readable by every user, unlike SECURITYFS/profiles)."""
    try:
        entries = os.listdir(os.path.join(SECURITYFS, "policy", "profiles"))
    except OSError:
        return False
    return any(e.rpartition(".")[0] == name for e in entries)


def userns_mediated() -> bool:
    """Whether this kernel lets AppArmor decide who may create user namespaces (Ubuntu's
    userns_create feature; Debian's kernel has none)."""
    return os.path.exists(os.path.join(SECURITYFS, "features", "namespaces", "userns_create"))


def _q(path: str, glob: str = "") -> str:
    """``path`` (its glob characters escaped) and then ``glob``, as an AppArmor file rule names
    it: quoted when it holds spaces."""
    out = "".join("\\" + c if c in '*?[]{}^"\\' else c for c in path) + glob
    return f'"{out}"' if any(c.isspace() for c in path) else out


def network_rules(policy: "Policy") -> list[str]:
    """The payload's network rules, from the policy's network.  ``none``: unix sockets and the
    sandbox's own loopback (TCP and UDP; programs run test servers there), netlink route
    (getifaddrs); no raw or packet sockets.  jailpy.net extends this when other modes exist."""
    rules = ["network unix,"]
    if policy.network == "none":
        rules += ["network inet stream,", "network inet dgram,", "network inet6 stream,", "network inet6 dgram,",
                  "network netlink raw,"]
    return rules


def generate(policy: "Policy", mounts: "MountPlan") -> tuple[str, str]:
    """The payload profile for ``policy`` and its mount plan: ``(name, text)``.  ``name`` is
    PAYLOAD_PREFIX and the first 12 hex digits of the sha256 of the text without its name, so
    the same policy gives the same profile on every run (the current directory, bound
    read-only, is not part of it)."""
    writable = ["/tmp", "/dev/shm"] + [dst for dst, _ in mounts.tmpfs] + [b.dst for b in mounts.binds if b.rw and b.is_dir]
    files = [b.dst for b in mounts.binds if b.rw and not b.is_dir]
    body = ["  # no capabilities (even inside its user namespace), mounts, ptrace or profile changes",
            "  deny capability,", "  deny mount,", "  deny umount,", "  deny pivot_root,", "  deny ptrace,",
            "  # signals: it may receive them (from jailpy's PID 1) and send them to its own processes",
            "  signal (receive),", f"  signal (send) peer={PAYLOAD_PREFIX}*,",
            "  unix,", "  # network: " + policy.network,
            *("  " + r for r in network_rules(policy)),
            "  # files: read, map and run what the mount plan shows; write where it makes writable",
            "  / r,", "  /** mrix,",
            *(f"  /dev/{n} rwm," for n in DEV_RW),
            "  /dev/mqueue/** rw,",
            *(f"  {_q(d, '/')} rw,\n  {_q(d, '/**')} rwlkmix," for d in writable),
            *(f"  {_q(f)} rwlkmix," for f in files),
            "  # kernel interfaces stay read-only even if a mount were wrong",
            "  deny /proc/sys/** w,", "  deny /proc/sysrq-trigger w,", "  deny /sys/** w,",
            "  deny /proc/*/attr/** w,"]
    text_body = "\n".join(body)
    name = PAYLOAD_PREFIX + hashlib.sha256(text_body.encode()).hexdigest()[:12]
    from .. import __version__

    text = (f"# jailpy {__version__}: the payload profile of a policy, derived from its mount plan (paths as the "
            f"sandbox sees them).\n# Installed by: sudo jailpy apparmor install; used by: jailpy exec --apparmor "
            f"generate (or --apparmor {name})\nabi <abi/3.0>,\n\nprofile {name} flags=(attach_disconnected,"
            f"mediate_deleted) {{\n{text_body}\n}}\n")
    return name, text


def prepare(value: str, policy: "Policy", mounts: "MountPlan") -> tuple[str | None, dict | None]:
    """Host side: the profile name PID 1 moves the program into (None for ``off``) and what
    Result.protections.lsm says.  Raises HostError (fail closed) when AppArmor is not enabled or
    the profile is not loaded, naming the fix; PolicyError for a bad name."""
    if value == "off":
        return None, None
    if not enabled():
        raise HostError(f"--apparmor {value}: AppArmor is not enabled on this host (its kernel lacks it, or it was "
                        f"booted without apparmor=1 security=apparmor); use --apparmor off")
    generated = value == "generate"
    name = generate(policy, mounts)[0] if generated else value
    if not name or any(c.isspace() or c in "\0/" for c in name) or name.startswith("-"):
        raise PolicyError(f"--apparmor: not a profile name: {value!r}")
    if not loaded(name):
        fix = (f"sudo jailpy apparmor install{' --policy POLICY' if generated else ''} (as root, in the directory "
               f"you run jailpy from)" if generated else f"load it: sudo apparmor_parser -r {PROFILE_DIR}/{name}")
        raise HostError(f"--apparmor {value}: profile {name} is not loaded; {fix}")
    return name, {"lsm": "apparmor", "profile": name, "generated": generated,
                  "how": "exec NAME at the program's execve, or stack NAME when jailpy runs confined"}


# ---------------------------------------------------------------- install (root) ----

def _parser() -> str:
    p = shutil.which("apparmor_parser") or next((c for c in ("/sbin/apparmor_parser", "/usr/sbin/apparmor_parser")
                                                 if os.access(c, os.X_OK)), None)
    if p is None:
        raise HostError("apparmor_parser is not installed: sudo apt-get install apparmor")
    return p


def check(text: str) -> None:
    """Compile ``text`` without loading it (apparmor_parser -Q -K: no root needed).  Raises
    PolicyError with the parser's message."""
    import subprocess

    p = subprocess.run([_parser(), "-Q", "-K"], input=text.encode(), capture_output=True, timeout=60)
    if p.returncode != 0:
        raise PolicyError(f"apparmor_parser refused the profile: {p.stderr.decode(errors='replace').strip()}")


def _load(path: str) -> None:
    import subprocess

    p = subprocess.run([_parser(), "-r", path], capture_output=True, timeout=120)
    if p.returncode != 0:
        raise HostError(f"apparmor_parser -r {path}: {p.stderr.decode(errors='replace').strip()}")


def _write_root_file(path: str, text: str, mode: int) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.jailpy-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _root_only(path: str) -> str | None:
    """None when ``path`` and every directory above it are owned by root and writable by no one
    else, else the first that is not (a launcher that ran code others can change would give them
    user namespaces)."""
    p = os.path.realpath(path)
    while True:
        st = os.stat(p)
        if st.st_uid != 0 or (st.st_mode & 0o022 and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX)):
            return p
        if p == "/":
            return None
        p = os.path.dirname(p)


def launcher_text(python: str) -> tuple[str, str]:
    """(the launcher script, its profile) for the interpreter ``python`` that has jailpy."""
    script = ("#!/bin/sh\n# jailpy's launcher, written by `jailpy apparmor install`: the AppArmor profile "
              f"{LAUNCHER_PROFILE} lets this program, and no other, create user namespaces (Ubuntu's\n"
              "# kernel.apparmor_restrict_unprivileged_userns=1). -I: no PYTHON* variables, no user site-packages.\n"
              f'exec {python} -I -m jailpy "$@"\n')
    profile = (f"# jailpy's launcher: user namespaces for {LAUNCHER_PATH} only (never for python3); the "
               f"sandboxed program is stacked under jailpy-payload-* profiles (--apparmor).\n"
               f"abi <abi/4.0>,\ninclude <tunables/global>\n\n"
               f"profile {LAUNCHER_PROFILE} {LAUNCHER_PATH} flags=(unconfined) {{\n  userns,\n\n"
               f"  include if exists <local/{LAUNCHER_PROFILE}>\n}}\n")
    return script, profile


def install(policies: list[tuple[str, "Policy"]], launcher: bool | None) -> list[str]:
    """As root: write and load the payload profile of each ``(label, policy)`` and, where the
    kernel mediates user namespaces (``launcher`` None: then; True: required), the launcher and its
    profile.  Returns one line per thing done.  Raises HostError (not root, AppArmor off, no
    parser, a launcher that would run code others can change)."""
    import sys

    from .. import mounts as mounts_mod

    if os.geteuid() != 0:
        raise HostError("jailpy apparmor install writes /etc/apparmor.d and loads profiles: run it as root (sudo)")
    if not enabled():
        raise HostError("AppArmor is not enabled on this host: nothing to install")
    _parser()
    done = []
    for label, pol in policies:
        name, text = generate(pol, mounts_mod.prepare(pol))
        path = os.path.join(PROFILE_DIR, name)
        _write_root_file(path, text, 0o644)
        _load(path)
        done.append(f"loaded {name} ({path}) for policy {label}")
    if launcher is None:
        launcher = userns_mediated()
        if not launcher:
            done.append("launcher: not needed (this kernel does not let AppArmor restrict user namespaces)")
    if launcher:
        python = os.path.realpath(sys.executable)
        import jailpy

        for what in (python, os.path.dirname(os.path.abspath(jailpy.__file__))):
            bad = _root_only(what)
            if bad is not None:
                raise HostError(f"the launcher would run {what}, but {bad} can be changed by a user other than root "
                                f"(they would get user namespaces): install jailpy system-wide as root "
                                f"(e.g. sudo pip install --prefix /usr/local jailpy) and run this again from there")
        script, profile = launcher_text(python)
        _write_root_file(LAUNCHER_PATH, script, 0o755)
        path = os.path.join(PROFILE_DIR, LAUNCHER_PROFILE)
        _write_root_file(path, profile, 0o644)
        _load(path)
        done.append(f"loaded {LAUNCHER_PROFILE} ({path}) for {LAUNCHER_PATH}: run jailpy as {LAUNCHER_PATH} "
                    f"(or link it as jailpy on your PATH)")
    return done
