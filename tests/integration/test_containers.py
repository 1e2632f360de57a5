"""jailpy inside a container run by crun (Debian's package), with an OCI config like Docker's
default for a container without CAP_SYS_ADMIN: Docker's default capabilities, its seccomp profile
(profiles/seccomp/docker-like.json: unshare, mount, pivot_root and namespace flags to clone are
refused), its masked and read-only /proc paths, read-only sysfs and cgroup filesystems.  Then
with the settings docs/nesting.md tells users to change.  Each case runs with full isolation or
fails closed with one line naming the setting.  crun runs containers without a user namespace
only as root: these tests are root's (the rootless cases are test_nesting.py's)."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import subprocess

import pytest

from conftest import IS_ROOT, JAILPY, REPO, TIMEOUT, last_json

pytestmark = [pytest.mark.skipif(not IS_ROOT, reason="crun runs a container without a user namespace only as root"),
              pytest.mark.skipif(not shutil.which("crun"), reason="crun not installed (tests/run.sh installs it)")]

# Docker's defaults (moby: oci/caps/defaults.go, daemon/oci_linux.go, oci/defaults.go)
DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
               "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
               "CAP_AUDIT_WRITE"]
DOCKER_MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                 "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"]
DOCKER_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
_ids = itertools.count()


def _profile() -> dict:
    """Docker's default seccomp profile for a container without CAP_SYS_ADMIN, as OCI config
    data (the includes/excludes of Docker's file resolved; capset, which Docker allows and the
    runtime itself needs, added)."""
    prof = json.loads((REPO / "profiles/seccomp/docker-like.json").read_text())
    for e in prof["syscalls"]:
        e.pop("includes", None)
        e.pop("excludes", None)
    prof["syscalls"][0]["names"].append("capset")
    return prof


def _config(rootfs: str, argv: list[str], seccomp: bool, masked: bool) -> dict:
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]},
        # the repo and its venv, also when the checkout is under /tmp (a CI clone, the rootless copy)
        {"destination": str(REPO), "type": "bind", "source": str(REPO), "options": ["rbind", "ro"]},
    ]
    linux: dict = {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
                   "maskedPaths": DOCKER_MASKED if masked else [], "readonlyPaths": DOCKER_READONLY if masked else []}
    if seccomp:
        linux["seccomp"] = _profile()
    return {"ociVersion": "1.0.2", "hostname": "ctr", "root": {"path": rootfs, "readonly": True}, "mounts": mounts,
            "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": argv, "cwd": str(REPO),
                        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"],
                        "capabilities": {k: DOCKER_CAPS for k in ("bounding", "effective", "permitted")},
                        "noNewPrivileges": False},
            "linux": linux}


def crun(tmp_path, argv: list[str], *, seccomp: bool, masked: bool) -> subprocess.CompletedProcess:
    """Run ``argv`` in a crun container whose root is the host's / (read-only) and return it.  crun
    runs in a mount namespace of its own, where the host's / is bound at the bundle's rootfs and
    (on a hybrid host) the v2 hierarchy is unmounted: crun 1.8 refuses hybrid hosts whose v2
    hierarchy holds a controller."""
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(_config(str(rootfs), argv, seccomp, masked)))
    cid = f"jailpy-test-{os.getpid()}-{next(_ids)}"
    script = (f"[ -d /sys/fs/cgroup/unified ] && umount -l /sys/fs/cgroup/unified; mount --rbind / {shlex.quote(str(rootfs))} "
              f"&& exec crun run --bundle {shlex.quote(str(bundle))} {cid}")
    try:
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT * 2)
    finally:
        subprocess.run(["crun", "delete", "-f", cid], capture_output=True, timeout=TIMEOUT)


PROBE = ["python3", "-c", "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), "
                          "open('/proc/1/cmdline','rb').read().split(b'\\0')[0].decode())"]


def _one_line(p: subprocess.CompletedProcess) -> str:
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 125, (p.returncode, err)
    assert err.startswith("jailpy: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_docker_default_fails_closed_naming_the_seccomp_setting(tmp_path):
    err = _one_line(crun(tmp_path, [*JAILPY, "--", "true"], seccomp=True, masked=True))
    assert "seccomp filter" in err and "--security-opt seccomp=unconfined" in err, err


def test_masked_proc_fails_closed_naming_the_proc_setting(tmp_path):
    err = _one_line(crun(tmp_path, [*JAILPY, "--", "true"], seccomp=False, masked=True))
    assert "mount /proc" in err and "maskedPaths" in err and "systempaths=unconfined" in err, err


def test_with_the_documented_settings_full_isolation(tmp_path):
    """seccomp unconfined and /proc unmasked (docs/nesting.md): every namespace, a /proc of its
    own pid namespace, host ids of its own (the container's root has all ids); the report names the
    container's read-only cgroup filesystem as what is missing."""
    p = crun(tmp_path, [*JAILPY, "--report", "-", "--", *PROBE], seccomp=False, masked=False)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    assert p.stdout.decode().split("\n")[0] == "[1, 2] jailpy-init"
    protections = last_json(p.stderr)[1]["protections"]
    assert protections["namespaces"] == ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"]
    assert protections["user"].startswith("own host ids")
    assert "read-only cgroup filesystems" in protections["nested"]["inside"]
    assert "no cgroup delegation" in protections["nested"]["weaker"]["cgroup"]


def test_limits_without_cgroup_delegation_fail_closed(tmp_path):
    err = _one_line(crun(tmp_path, [*JAILPY, "--memory", "64M", "--", "true"], seccomp=False, masked=False))
    assert "Read-only file system" in err and "cgroup delegation" in err, err
