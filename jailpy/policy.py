"""The typed Policy: what a sandbox may see and do.

A policy is a TOML file of flat keys, one per CLI flag (``--ro-bind`` is ``ro_bind``).
``policies/NAME.toml`` files are found by name; any other value is a path.
A file may start from another with ``include = ["NAME" or "PATH", ...]``; later files and
then CLI flags override earlier values (lists are replaced, not merged).
Unknown keys and bad values raise :class:`~jailpy.errors.PolicyError` naming the key and the file.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
import typing
from typing import Literal

import msgspec

from .errors import PolicyError

POLICY_DIRS = (Path(__file__).resolve().parent / "policies", Path(__file__).resolve().parent.parent / "policies")

DEFAULT_HIDE = ["/home", "/root", "/run", "/var/tmp", "/mnt", "/media", "/srv"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROFILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=:@-]{0,199}$")
"""An AppArmor profile name jailpy accepts (no spaces, slashes or globs: one written to attr/exec)."""
_CONTEXT_RE = re.compile(r"^[A-Za-z0-9_.]+:[A-Za-z0-9_.]+:[A-Za-z0-9_.]+(:[A-Za-z0-9_.,:-]+)?$")
"""An SELinux context: USER:ROLE:TYPE[:LEVEL] (a level like s0 or s0:c1,c2 or s0-s0:c0.c1023)."""
_NETWORK_RE = re.compile(r"^(none|user|bridge(:[a-z0-9][a-z0-9-]{0,10})?)$")
NETWORK_TABLE = {"mode": "network", "allow_host": "allow_host", "allow_net": "allow_net", "publish": "publish",
                 "resolver": "resolver"}
"""Keys of a policy file's ``[network]`` table and the flat keys they stand for."""
ROOTFS_TABLE = {"dir": "rootfs", "image": "image"}
"""Keys of a policy file's ``[rootfs]`` table (``rootfs.image``) and the flat keys they stand for."""
_TABLES = {"network": NETWORK_TABLE, "rootfs": ROOTFS_TABLE}
_CPUSET_RE = re.compile(r"^\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*$")

DEFAULT_WALL_TIME = 3600.0
"""Seconds of wall-clock time a run gets when the policy sets no wall_time: nothing runs forever by mistake."""
IO_KEYS = ("io_read_bps", "io_write_bps", "io_read_iops", "io_write_iops", "io_weight")
"""Disk IO limits (jailpy.cgroups.io)."""
CGROUP_KEYS = ("memory", "pids", "cpus", "cpuset", "cpu_time", "cpu_weight") + IO_KEYS
"""Policy fields enforced by a cgroup."""
MIN_SIZES = {"memory": 8 << 20, "stack": 64 << 10}
QUOTA_KEYS = ("max_inotify_instances", "max_inotify_watches", "max_fanotify_groups", "max_fanotify_marks",
              "max_user_namespaces", "sigpending", "pty_max")
"""Policy fields that are counts the kernel keeps (ints, 0 allowed)."""
INT_MAX = (1 << 31) - 1
"""The largest value of a ``user.max_*`` sysctl (an int: proc_dointvec_minmax in kernel/ucount.c)."""
PTY_MAX = 1 << 20
"""The largest devpts ``max=`` (NR_UNIX98_PTY_MAX in include/linux/tty.h)."""
MAX_SECONDS = 365 * 86400


MAX_SIZE = 1 << 60
"""The largest size accepted (1 EiB): far above any machine, and below where the kernel's own
interfaces overflow (a tmpfs ``size=`` of 2**64 bytes wraps to 0, which means no limit:
tmpfs(5); rlimits and cgroup limits are 64-bit)."""


def parse_size(value: str | int, what: str = "size") -> int:
    """Parse ``"64M"``, ``"1.5G"``, ``"512k"``, ``"1KiB"`` or an int into bytes (powers of 1024),
    exactly (no floating point).

    Raises PolicyError for anything else, for zero or negative sizes and above MAX_SIZE."""
    if isinstance(value, bool):
        raise PolicyError(f"{what}: expected a size like 64M, got {value!r}")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise PolicyError(f"{what}: expected a size like 64M or 1G, got {value!r}")
        whole, _, frac = m.group(1).partition(".")
        if len(whole.lstrip("0")) > 20:  # far beyond MAX_SIZE in any unit (and no huge int parsing)
            raise PolicyError(f"{what}: at most 1048576T (1 EiB), got {value!r}")
        unit = _UNITS[m.group(2).lower()]
        frac = frac[:30]  # finer than a byte in any unit
        n = int(whole) * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
    if n <= 0:
        raise PolicyError(f"{what}: must be more than 0 bytes, got {value!r}")
    if n > MAX_SIZE:
        raise PolicyError(f"{what}: at most 1048576T (1 EiB), got {value!r}")
    return n


BIND_OPTIONS = ("ro", "rw")
"""What may follow a bind's second ``:`` (docker's and podman's ``-v SRC:DST:OPTIONS``)."""


def parse_bind(spec: str, key: str = "bind") -> tuple[str, str, bool]:
    """Split a bind ``SRC[:DST[:OPTIONS]]`` into ``(src, dst, writable)``, as docker and podman
    read ``-v``: OPTIONS is ``ro`` or ``rw`` (a comma-separated list of those); ``SRC::ro`` keeps
    DST = SRC; an empty or missing DST means the same path as SRC (``dst`` is then "").
    ``key``: ``bind`` (writable unless ``ro``) or ``ro_bind`` (read-only: ``rw`` is refused).

    A path that holds ``:`` cannot be written in this form.  Raises PolicyError, without the
    key's name, for an unknown option, ``ro`` with ``rw``, ``rw`` in ``ro_bind``, an empty
    source or a relative destination."""
    parts = spec.split(":")
    if len(parts) > 3:
        raise PolicyError(f"expected SRC[:DST[:ro|rw]] (a path cannot hold ':'), got {spec!r}")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 else ""
    writable = key == "bind"
    if not src:
        raise PolicyError(f"source must be a path, got {spec!r}")
    if len(parts) == 3:
        opts = parts[2].split(",")
        unknown = [o for o in opts if o not in BIND_OPTIONS]
        if unknown:
            raise PolicyError(f"unknown bind option {unknown[0]!r} in {spec!r} (known: {', '.join(BIND_OPTIONS)})")
        if "ro" in opts and "rw" in opts:
            raise PolicyError(f"both ro and rw in {spec!r}")
        if "rw" in opts and key != "bind":
            raise PolicyError(f"a read-only bind cannot be rw (use --bind SRC:DST for a writable one), got {spec!r}")
        writable = writable and "ro" not in opts
    if dst and not os.path.isabs(dst):
        hint = (f" (to bind {src} at the same path {'read-only' if dst == 'ro' else 'writable'}, write {src}::{dst})"
                if dst in BIND_OPTIONS else "")
        raise PolicyError(f"destination must be an absolute path, got {spec!r}{hint}")
    return src, dst, writable


class Bind(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A bind mount of host path ``src`` at ``dst`` inside the sandbox (``dst`` defaults to ``src``)."""

    src: str
    dst: str = ""
    rw: bool = False


class Tmpfs(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An empty writable tmpfs at ``dst``, capped at ``size`` (``"64M"``; bytes if an int)."""

    dst: str
    size: str | int = "64M"


class Policy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything a sandbox is allowed.  Each field is one CLI flag of ``jailpy exec``.

    Sizes are strings like ``"64M"`` or ints in bytes; times are seconds (float).
    Build one with ``Policy()`` (the built-in defaults), :func:`load` or :meth:`replace`;
    check it with :meth:`validate`, which raises PolicyError."""

    # filesystem
    rootfs: str | None = None
    """Directory used as the read-only lower layer of the root; None means the host's ``/``."""
    image: str | None = None
    """An OCI image (``oci:DIR[:TAG]`` or ``docker-archive:FILE[:TAG]``) whose layers are the read-only
    root instead (jailpy.image; ``[rootfs] image = ...`` in a TOML file); its config gives Env,
    WorkingDir, User and the command run when none is given."""
    cwd: bool = True
    """Bind the current directory read-only at the same path and start there."""
    workdir: str | None = None
    """Directory, inside the sandbox, the program starts in (an absolute path; ``/`` when it does
    not exist there).  None: the current directory when ``cwd`` binds it, else ``/``."""
    bind: list[str] = []
    """``SRC[:DST[:ro|rw]]`` bind mounts, writable unless ``ro`` (see :func:`parse_bind`)."""
    ro_bind: list[str] = []
    """``SRC[:DST[:ro]]`` read-only bind mounts."""
    tmpfs: list[str] = []
    """``DST[:SIZE]`` extra empty tmpfs mounts."""
    tmp_size: str | int = "256M"
    """Size cap of the writable tmpfs at /tmp (and /dev/shm)."""
    hide: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_HIDE))
    """Host directories replaced by an empty read-only tmpfs (only with the host root)."""
    # process
    hostname: str = "jailpy"
    env: list[str] = []
    """``K=V`` variables added to the clean environment."""
    env_pass: list[str] = []
    """Names of the caller's variables passed through."""
    pass_fd: list[int] = []
    """File descriptors above 2 kept open in the sandbox."""
    uid: int | None = None
    """User id inside the sandbox (default 0, the namespace's root, which has no host privilege)."""
    gid: int | None = None
    id_map: Literal["auto", "single", "range"] = "auto"
    """auto: two ids of a subuid range via newuidmap when the caller has one (as root: of jailpy's
    range), else the caller's own id; single: one id; range: two ids of the range, or an error."""
    network: str = "none"
    """none: a new network namespace with only loopback; user: user-mode networking (pasta or
    slirp4netns, rootless); bridge: a veth on jailpy's bridge (root); bridge:NAME: on the named
    network NAME (``jailpy network create``).  A TOML file may instead hold a ``[network]`` table
    with ``mode`` (this key), ``allow_host``, ``allow_net``, ``publish`` and ``resolver``."""
    allow_host: list[str] = []
    """``NAME[:PORT]`` (``*.example.org`` for any name below it; ports 80 and 443 when none is
    given) the program may connect to over TCP, through jailpy's proxy; everything else is refused."""
    allow_net: list[str] = []
    """``CIDR[:PORT]`` addresses the program may connect to (through the proxy; the port is needed
    except with bridge); also what lets a name resolve to a private or loopback address."""
    publish: list[str] = []
    """``[HOSTIP:]HOSTPORT:PORT[/tcp|udp]``: the host's HOSTIP:HOSTPORT (127.0.0.1 by default)
    reaches the sandbox's 127.0.0.1:PORT (any mode; jailpy relays TCP connections, or UDP
    datagrams per client: :mod:`jailpy.net.udp`)."""
    resolver: str | None = None
    """``IP[:PORT]`` of the DNS server jailpy's proxy asks for allowed names; default: the host's
    resolver (getaddrinfo, /etc/resolv.conf)."""
    wall_time: float | None = None
    """Wall-clock limit in seconds; the whole sandbox is killed when it fires (verdict WLE).
    None: DEFAULT_WALL_TIME applies, and the Result's protections say so."""
    # limits (cgroup: the whole process tree; rlimit: each process)
    memory: str | int | None = None
    """Memory the whole tree may use (cgroup memory controller, no swap), e.g. ``"256M"``; verdict MLE."""
    pids: int | None = None
    """How many processes and threads the tree may have at once (cgroup pids controller)."""
    cpus: float | None = None
    """CPU bandwidth in CPUs, e.g. 0.5 (cgroup cpu controller quota)."""
    cpuset: str | None = None
    """CPUs the tree may run on, e.g. ``"0"`` or ``"0-1,3"`` (cgroup cpuset controller)."""
    cpu_weight: int | None = None
    """CPU priority, 1-10000 (100 is every cgroup's default): the tree's share of CPUs that others
    want too, relative to the other sandboxes (cgroup v2 cpu.weight; v1 cpu.shares, mapped as
    runc and crun map them)."""
    io_read_bps: str | int | None = None
    """Disk reads per second, e.g. ``"10M"``, on each disk under the paths the sandbox can write
    (its writable binds): cgroup v2 io.max rbps, v1 blkio.throttle.read_bps_device."""
    io_write_bps: str | int | None = None
    """Disk writes per second on those disks (io.max wbps, blkio.throttle.write_bps_device); see
    README for what holds buffered writes on v1 and v2."""
    io_read_iops: int | None = None
    """Read operations per second on those disks (io.max riops)."""
    io_write_iops: int | None = None
    """Write operations per second on those disks (io.max wiops)."""
    io_weight: int | None = None
    """Proportional disk IO weight, 1-10000 (io.weight / blkio.bfq.weight): only with the BFQ
    scheduler or blk-iocost on those disks, else refused."""
    cpu_time: float | None = None
    """CPU seconds (user + system) summed over the whole tree, from the cgroup; verdict TLE.
    RLIMIT_CPU is set per process as a backstop."""
    output_limit: str | int | None = None
    """Bytes each of stdout and stderr may carry; the sandbox is killed when one goes over (verdict OLE)."""
    fsize: str | int | None = None
    """Largest file a process may write (RLIMIT_FSIZE), e.g. ``"64M"``."""
    nofile: int | None = None
    """Open files per process (RLIMIT_NOFILE)."""
    stack: str | int | None = None
    """Stack size per process (RLIMIT_STACK), e.g. ``"8M"``."""
    # kernel quotas: counts the kernel keeps per user (charged, through the sandbox's user namespace,
    # to jailpy's caller too: kernel/ucount.c) or per machine; small by default (see ucounts.py)
    max_inotify_instances: int = 16
    """inotify instances (inotify_init) the program may hold at once: ``user.max_inotify_instances``
    in the sandbox's user namespace (inotify(7)); one more gets EMFILE."""
    max_inotify_watches: int = 4096
    """inotify watches (inotify_add_watch) at once: ``user.max_inotify_watches``; one more gets ENOSPC."""
    max_fanotify_groups: int = 8
    """fanotify groups (fanotify_init) at once: ``user.max_fanotify_groups`` (fanotify(7)); one more gets EMFILE."""
    max_fanotify_marks: int = 4096
    """fanotify marks at once: ``user.max_fanotify_marks``; one more gets ENOSPC."""
    max_user_namespaces: int = 0
    """User namespaces the program may create inside the sandbox: ``user.max_user_namespaces``.
    0 (the default): none (ENOSPC), so no nested namespace of any kind (the others need
    CAP_SYS_ADMIN in a user namespace the program would own), whatever the seccomp policy."""
    sigpending: int = 1024
    """Signals queued and not yet delivered, for the sandbox's user: RLIMIT_SIGPENDING (a count;
    sigqueue(3) of one more real-time signal gets EAGAIN).  Capped at jailpy's own hard limit."""
    msgqueue: str | int = "128K"
    """Bytes of POSIX message queues (mq_overview(7)) the sandbox's user may have: RLIMIT_MSGQUEUE
    (each queue costs about maxmsg * msgsize; mq_open past it gets EMFILE).  Capped at jailpy's own
    hard limit."""
    pty_max: int = 64
    """Pseudo-terminals the sandbox may have open at once: ``max=`` of its devpts instance
    (devpts.rst; opening /dev/ptmx once more gets ENOSPC).  Every non-initial devpts on the machine
    shares ``kernel.pty.max``; 0: no terminals."""
    cgroup_parent: str | None = None
    """A cgroup path (like ``/judge``, relative to each hierarchy's root) under which sandboxes get their
    cgroups: a subtree an administrator delegated (chowned) to the user.  Default: ``$JAILPY_CGROUP_PARENT``,
    else ``/jailpy`` as root, else the caller's own cgroup when it is delegated (cgroup v2)."""
    no_cgroup: bool = False
    """Run without a cgroup: no memory, pids, cpus, cpuset or cpu_time limits are possible then."""
    # seccomp
    seccomp: str = "default"
    """Seccomp policy: a name (``default``, ``strict``), a TOML or OCI JSON file, or ``none``."""
    seccomp_log: bool = False
    """Permissive mode: nothing is denied; every call the policy would deny is listed in the Result."""
    # a second wall (jailpy.lsm)
    landlock: Literal["auto", "on", "off"] = "auto"
    """Landlock (landlock(7)), rules derived from the mount plan: auto applies it where the kernel
    has it (Result.protections.landlock says what was applied); on fails closed where it cannot;
    off never applies it."""
    apparmor: str = "off"
    """AppArmor profile the program runs under (jailpy.lsm.apparmor): a loaded profile's name;
    ``generate``: the payload profile derived from this policy (``jailpy apparmor generate``,
    installed by ``sudo jailpy apparmor install``); ``off``.  Asked for and not loaded: an error."""
    selinux_label: str = "off"
    """SELinux context the program runs under (jailpy.lsm.selinux): ``USER:ROLE:TYPE`` (each run adds
    two random MCS categories) or with a level; ``auto``: container_t, else jailpy_t (``sudo jailpy
    selinux install``); ``off``.  SELinux off or permissive, or a type the policy lacks: an error."""
    allow_nesting: bool = False
    """Let the program set up a sandbox of its own (a nested jailpy, bubblewrap, a CI job's
    container): the seccomp filter allows the namespace and mount calls, ``user.max_user_namespaces``
    is 64 unless ``max_user_namespaces`` says otherwise, and a covered proc lets the kernel mount new
    ones (jailpy.nesting).  Off by default: it opens kernel code (mounts, namespaces) to the program."""

    def replace(self, **changes: object) -> "Policy":
        """A copy with ``changes`` applied and validated."""
        raw = msgspec.to_builtins(self)
        raw.update({k: v for k, v in changes.items()})
        return from_dict(raw, "command line")

    def checked(self, source: str = "policy") -> "Policy":
        """This policy with every field's type checked too (a Policy built in Python takes any
        value: ``Policy(cwd="no")`` would bind the current directory), then :meth:`validate`d.
        Raises PolicyError naming the key."""
        try:
            raw = msgspec.to_builtins(self)
        except (TypeError, ValueError, OverflowError) as e:
            raise PolicyError(f"{source}: {e}") from None
        return from_dict(raw, source)

    def validate(self, source: str = "policy") -> "Policy":
        """Check values a type cannot express; raises PolicyError naming ``source`` and the key."""
        def bad(key: str, msg: str) -> PolicyError:
            return PolicyError(f"{source}: {_key_name(key, source)}: {msg}")

        for key in self.__struct_fields__:  # no path, name or value can hold a NUL byte (execve(2), open(2))
            v = getattr(self, key)
            for item in (v if isinstance(v, list) else [v]):
                if isinstance(item, str) and "\0" in item:
                    raise bad(key, f"contains a NUL byte: {item!r}")
        if not _HOSTNAME_RE.match(self.hostname) or len(self.hostname) > 64:
            raise bad("hostname", f"not a valid host name: {self.hostname!r}")
        for key in ("bind", "ro_bind"):
            for spec in getattr(self, key):
                try:
                    parse_bind(spec, key)
                except PolicyError as e:
                    raise bad(key, str(e)) from None
        for spec in self.tmpfs:
            dst, _, size = spec.partition(":")
            if not os.path.isabs(dst):
                raise bad("tmpfs", f"destination must be an absolute path, got {spec!r}")
            top = os.path.normpath(dst).split("/")[1]
            if top in ("", "proc", "dev"):  # the sandbox's own /, /proc and /dev: as for binds
                raise bad("tmpfs", f"cannot mount a tmpfs over {os.path.normpath(dst)} (/, /proc and /dev are "
                                   f"the sandbox's own), got {spec!r}")
            if size:
                try:
                    parse_size(size)
                except PolicyError as e:
                    raise bad("tmpfs", str(e)) from None
        try:
            parse_size(self.tmp_size)
        except PolicyError as e:
            raise bad("tmp_size", str(e)) from None
        for h in self.hide:
            if not os.path.isabs(h) or os.path.normpath(h) == "/":
                raise bad("hide", f"must be an absolute path other than /, got {h!r}")
        for kv in self.env:
            k, eq, _ = kv.partition("=")
            if not eq or not _ENV_KEY_RE.match(k):
                raise bad("env", f"expected NAME=VALUE, got {kv!r}")
        for k in self.env_pass:
            if not _ENV_KEY_RE.match(k):
                raise bad("env_pass", f"not a variable name: {k!r}")
        for fd in self.pass_fd:
            if fd < 3:
                raise bad("pass_fd", f"expected a file descriptor above 2 (0, 1 and 2 are always passed), got {fd}")
            if fd >= 1 << 31:
                raise bad("pass_fd", f"not a file descriptor number: {fd}")
        for key in ("uid", "gid"):
            v = getattr(self, key)
            if v is not None and not 0 <= v < 65534:
                raise bad(key, f"must be between 0 and 65533, got {v}")
        if self.wall_time is not None and not 0 < self.wall_time <= MAX_SECONDS:
            raise bad("wall_time", f"must be more than 0 and at most {MAX_SECONDS} seconds (a year), got {self.wall_time}")
        for key in ("memory", "output_limit", "fsize", "stack"):
            v = getattr(self, key)
            if v is not None:
                try:
                    n = parse_size(v)
                except PolicyError as e:
                    raise bad(key, str(e).partition(": ")[2] or str(e)) from None
                if n < MIN_SIZES.get(key, 1):
                    raise bad(key, f"at least {_human(MIN_SIZES[key])} is needed to start a program, got {v!r}")
        if self.pids is not None and not 1 <= self.pids <= 4194304:
            raise bad("pids", f"must be between 1 and 4194304, got {self.pids}")
        if self.nofile is not None and not 16 <= self.nofile <= 1 << 20:
            raise bad("nofile", f"must be between 16 and 1048576, got {self.nofile}")
        for key in QUOTA_KEYS:
            v, top = getattr(self, key), PTY_MAX if key == "pty_max" else INT_MAX
            if not 0 <= v <= top:
                raise bad(key, f"must be between 0 and {top}, got {v}")
        try:
            parse_size(self.msgqueue)
        except PolicyError as e:
            raise bad("msgqueue", str(e).partition(": ")[2] or str(e)) from None
        if self.cpus is not None and not 0.01 <= self.cpus <= 1024:
            raise bad("cpus", f"must be between 0.01 and 1024 CPUs, got {self.cpus}")
        for key in ("io_read_bps", "io_write_bps"):
            v = getattr(self, key)
            if v is not None:
                try:
                    parse_size(v)
                except PolicyError as e:
                    raise bad(key, str(e).partition(": ")[2] or str(e)) from None
        for key in ("io_read_iops", "io_write_iops"):
            v = getattr(self, key)
            if v is not None and not 1 <= v <= 1 << 40:
                raise bad(key, f"must be between 1 and {1 << 40} operations per second, got {v}")
        if self.io_weight is not None and not 1 <= self.io_weight <= 10000:
            raise bad("io_weight", f"must be between 1 and 10000, got {self.io_weight}")
        if self.cpu_weight is not None and not 1 <= self.cpu_weight <= 10000:
            raise bad("cpu_weight", f"must be between 1 and 10000, got {self.cpu_weight}")
        if self.cpuset is not None and not _CPUSET_RE.match(self.cpuset):
            raise bad("cpuset", f"expected a CPU list like 0 or 0-1,3, got {self.cpuset!r}")
        if self.cpu_time is not None and not 0 < self.cpu_time <= MAX_SECONDS:
            raise bad("cpu_time", f"must be more than 0 and at most {MAX_SECONDS} seconds (a year), got {self.cpu_time}")
        if self.cgroup_parent is not None:
            parts = self.cgroup_parent.split("/")
            if not self.cgroup_parent.startswith("/") or ".." in parts or any(p in (".",) for p in parts):
                raise bad("cgroup_parent", f"expected a cgroup path like /judge, got {self.cgroup_parent!r}")
        if self.no_cgroup:
            for key in CGROUP_KEYS:
                if getattr(self, key) is not None:
                    raise bad(key, "needs a cgroup, but no_cgroup (--no-cgroup) is set")
        if not self.seccomp:
            raise bad("seccomp", "expected a policy name, a file, or none")
        if not _PROFILE_RE.match(self.apparmor):
            raise bad("apparmor", f"expected a profile name, generate or off, got {self.apparmor!r}")
        if self.selinux_label not in ("auto", "off") and not _CONTEXT_RE.match(self.selinux_label):
            raise bad("selinux_label", f"expected USER:ROLE:TYPE[:LEVEL], auto or off, got {self.selinux_label!r}")
        if self.seccomp_log and self.seccomp == "none":
            raise bad("seccomp_log", "needs a seccomp policy to compare with (not none)")
        if self.workdir is not None and not os.path.isabs(self.workdir):
            raise bad("workdir", f"must be an absolute path inside the sandbox, got {self.workdir!r}")
        if not _NETWORK_RE.match(self.network):
            raise bad("network", f"expected none, user, bridge or bridge:NAME (NAME: up to 11 of a-z 0-9 -), "
                                 f"got {self.network!r}")
        if self.allow_host or self.allow_net or self.publish or self.resolver is not None:
            from .net import rules

            for key, parse in (("allow_host", rules.parse_host), ("allow_net", rules.parse_net),
                               ("publish", rules.parse_publish)):
                for spec in getattr(self, key):
                    try:
                        parse(spec)
                    except rules.RuleError as e:
                        raise bad(key, str(e)) from None
            if self.resolver is not None:
                try:
                    rules.parse_resolver(self.resolver)
                except rules.RuleError as e:
                    raise bad("resolver", str(e)) from None
        if self.rootfs is not None and not os.path.isabs(self.rootfs) and not self.rootfs.startswith("."):
            raise bad("rootfs", f"must be a directory path, got {self.rootfs!r}")
        if self.image is not None and not self.image.startswith(("oci:", "docker-archive:")):
            raise bad("image", f"expected oci:DIR[:TAG] or docker-archive:FILE[:TAG], got {self.image!r}")
        if self.image is not None and self.rootfs is not None:
            raise bad("image", "give either an image or a rootfs directory, not both")
        return self

    def digest(self) -> str:
        """sha256 of the canonical JSON form: the ``policy_hash`` of a Result."""
        try:
            data = msgspec.json.encode(self, order="sorted")
        except UnicodeEncodeError:  # a path with bytes that are not UTF-8 (str with surrogateescape)
            data = msgspec.json.encode(_bytes_marked(msgspec.to_builtins(self)), order="sorted")
        return "sha256:" + hashlib.sha256(data).hexdigest()


def _bytes_marked(obj: object) -> object:
    """``obj`` with every string that is not UTF-8 (a path decoded with surrogateescape) replaced
    by ``"\\0bytes:" + hex of its bytes``: a digest input that no valid policy string can equal
    (validate refuses NUL bytes)."""
    if isinstance(obj, str):
        try:
            obj.encode()
            return obj
        except UnicodeEncodeError:
            return "\0bytes:" + obj.encode("utf-8", "surrogatepass").hex()
    if isinstance(obj, list):
        return [_bytes_marked(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _bytes_marked(v) for k, v in obj.items()}
    return obj


def _human(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _key_name(key: str, source: str) -> str:
    return "--" + key.replace("_", "-") if source == "command line" else key


def from_dict(raw: dict, source: str) -> Policy:
    """Build and validate a Policy from plain data; PolicyError names ``source`` and the key.
    A ``network`` table (``[network]`` in TOML: ``mode``, ``allow_host``...) is read as the flat
    keys it stands for (:data:`NETWORK_TABLE`)."""
    for name in _TABLES:
        if isinstance(raw, dict) and isinstance(raw.get(name), dict):
            raw = _flatten_network(raw, source, name)
    try:
        policy = msgspec.convert(raw, Policy, strict=True)
    except msgspec.ValidationError as e:
        msg = str(e)
        m = re.match(r"(.*?) - at `\$\.(\w+)", msg)
        if m:
            msg = f"{_key_name(m.group(2), source)}: {m.group(1)}"
            choices = typing.get_args(typing.get_type_hints(Policy).get(m.group(2), ""))
            if m.group(1).startswith("Invalid enum value") and choices:
                msg += f" (expected one of: {', '.join(map(str, choices))})"
        m = re.fullmatch(r"Object contains unknown field `(.*)`", msg, re.S)
        if m:
            key = m.group(1)
            msg = f"{key if re.fullmatch(r'[A-Za-z0-9_-]+', key) else repr(key)}: unknown key"
        raise PolicyError(f"{source}: {msg}") from None
    return policy.validate(source)


def _flatten_network(raw: dict, source: str, name: str = "network") -> dict:
    """``raw`` with its table ``name`` (``[network]``, ``[rootfs]``: :data:`_TABLES`) as flat keys."""
    table, keys = raw[name], _TABLES[name]
    out = {k: v for k, v in raw.items() if k != name}
    for k, v in table.items():
        flat = keys.get(k) if isinstance(k, str) else None
        if flat is None:
            shown = k if isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_-]+", k) else repr(k)
            raise PolicyError(f"{source}: {name}.{shown}: unknown key (known: {', '.join(keys)})")
        if flat in out:
            raise PolicyError(f"{source}: {name}.{k}: also given as {flat}; give it once")
        out[flat] = v
    return out


def _is_file(p: Path) -> bool:
    """Path.is_file(), False too for a name the kernel refuses (ENAMETOOLONG, ELOOP, a NUL byte)."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def _is_dir(p: Path) -> bool:
    """Path.is_dir(), False too for a name the kernel refuses."""
    try:
        return p.is_dir()
    except (OSError, ValueError):
        return False

def find(name_or_path: str) -> Path:
    """Resolve a policy name (``default``) or path to a file; PolicyError if there is none."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        p = Path(name_or_path)
        if _is_dir(p):
            raise PolicyError(f"{name_or_path} is a directory, not a policy file")
        if not _is_file(p):
            raise PolicyError(f"policy file not found: {name_or_path}")
        return p
    if not re.match(r"^[A-Za-z0-9_-]+$", name_or_path):
        raise PolicyError(f"bad policy name {name_or_path!r}: use a name from policies/ or a path")
    for d in POLICY_DIRS:
        p = d / f"{name_or_path}.toml"
        if _is_file(p):
            return p
    names = sorted({p.stem for d in POLICY_DIRS if d.is_dir() for p in d.glob("*.toml")})
    raise PolicyError(f"no policy named {name_or_path!r} (known: {', '.join(names) or 'none'})")


def read_toml(path: Path, error: type[PolicyError] = PolicyError) -> dict:
    """Parse the TOML file ``path`` (tomllib); every way it can be unreadable or invalid (not
    UTF-8, nested too deeply, an OSError) raises ``error`` with one line naming the file."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not valid TOML: not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise error(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None


MAX_INCLUDES = 64
"""Policy files one policy may consist of, and entries one ``include`` list may have."""


def _read(path: Path, seen: tuple[Path, ...], memo: dict | None = None) -> dict:
    """The keys of ``path`` with its includes merged in.  ``seen``: the files on the way here (an
    include loop is an error); ``memo``: the files read so far for this policy, each read once
    (a file included from many places, as in a diamond, costs one read)."""
    memo = {} if memo is None else memo
    real = path.resolve()
    if real in seen:
        raise PolicyError(f"{path}: include loop through {real}")
    if real in memo:
        return memo[real]
    if len(memo) >= MAX_INCLUDES:
        raise PolicyError(f"{path}: a policy may consist of at most {MAX_INCLUDES} files")
    data = read_toml(path)
    for name in _TABLES:
        if isinstance(data.get(name), dict):
            data = _flatten_network(data, str(path), name)
    includes = data.pop("include", [])  # names from policies/, or paths relative to this file
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise PolicyError(f"{path}: include: expected a list of policy names or paths")
    if len(includes) > MAX_INCLUDES:
        raise PolicyError(f"{path}: include: at most {MAX_INCLUDES} entries, got {len(includes)}")
    merged: dict = {}
    for inc in includes:
        is_path = "/" in inc or inc.endswith(".toml")
        try:
            target = (path.parent / inc) if is_path else find(inc)
        except PolicyError as e:
            raise PolicyError(f"{path}: include: {e}") from None
        if is_path and not _is_file(target):
            raise PolicyError(f"{path}: include: policy file not found: {target}")
        merged.update(_read(target, seen + (real,), memo))
    merged.update(data)
    memo[real] = merged
    return merged


def load(name_or_path: str = "default") -> Policy:
    """Load a policy by name or path, following includes; raises PolicyError."""
    path = find(name_or_path)
    return from_dict(_read(path, ()), str(path))
