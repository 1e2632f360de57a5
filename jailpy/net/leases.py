"""Named networks and address leases, kept in files that outlive a SIGKILLed jailpy.

State lives per network namespace (the bridges do): ``/run/jailpy/net/<the namespace's cookie>/``
as root (a tmpfs: gone after a reboot, like the bridges), else ``/run/user/UID/jailpy/net/...``
or ``~/.cache/jailpy/net/...`` (:func:`state_dir`), every part checked.  There:

* ``NAME.json``: a network (``jailpy network create``): its subnet, bridge and owner, and for a
  rootless one the holder of its pod (``"pod": {"pid", "start"}``, :mod:`jailpy.net.pod`);
* ``NAME.sock``: a rootless network's socket, served by its holder;
* ``NAME.leases``: ``{address: {"pid", "start", "veth", "hostname"}}`` of the sandboxes on it,
  read and written under ``flock(2)`` of ``NAME.lock``.  A lease whose process is gone (pid
  dead, or reused: another start time, proc(5) /proc/PID/stat field 22) is stale: it is swept,
  with its veth and nft elements, by the next :func:`take` or ``jailpy network ls``.

The network ``default`` (``--network bridge``) is made on first use with DEFAULT_SUBNET unless
``jailpy network create default --subnet CIDR`` made it first."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import time
from contextlib import contextmanager

from ..errors import HostError, PolicyError

DEFAULT_SUBNET = "10.213.0.0/24"
"""The default network's subnet: clear of docker's 172.17.0.0/16 and podman's 10.88.0.0/16."""
DEFAULT_BRIDGE = "jailpy0"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,10}$")


def state_dir(create: bool = True) -> str:
    """This network namespace's state directory (see the module docstring; made when missing,
    whatever ``create`` says: an empty one costs nothing), each part checked
    (a real directory of the caller's, writable by nobody else: :func:`jailpy.hostfiles.private_dir`).
    Rootless it does not depend on the environment (as the id leases': every jailpy process of a
    user must find the same networks): ``/run/user/UID`` when that is the caller's, else
    ``.cache`` in the home directory of the password database.  Raises HostError when a check fails."""
    from ..hostfiles import private_dir

    try:  # checked once per process and network namespace: a run takes and gives back a lease
        key = (os.getpid(), os.geteuid(), os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        key = None
    if key is not None and key == _CHECKED[0]:
        return _CHECKED[1]
    cookie = netns_id()
    uid = os.geteuid()
    parts = ("jailpy", "net", cookie)
    if uid == 0:
        base = "/run"
    else:
        base = f"/run/user/{uid}"
        try:
            ok = os.stat(base).st_uid == uid
        except OSError:
            ok = False
        if not ok:
            import pwd

            try:
                home = pwd.getpwuid(uid).pw_dir
            except KeyError:
                home = os.path.expanduser("~")
            base = os.path.join(home, ".cache")
            try:
                os.makedirs(base, 0o700, exist_ok=True)
            except OSError as e:
                raise HostError(f"jailpy's network state directory: {base}: {e.strerror}") from None
    try:
        path = private_dir(base, parts, create=True)
    except OSError as e:
        raise HostError(f"jailpy's network state directory: {e.strerror or e}") from None
    _CHECKED[:] = [key, path]
    return path


_CHECKED: list = [None, None]
"""(process, euid, network namespace) -> the directory :func:`state_dir` checked last."""


def netns_id() -> str:
    """This network namespace's cookie (socket(7) SO_NETNS_COOKIE, Linux 5.14: never reused, unlike
    the namespace's inode number), else ``ino-`` and its inode number."""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            return str(int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 71, 8), "little"))
    except OSError:
        return f"ino-{os.stat('/proc/self/ns/net').st_ino}"


def bridge_name(name: str) -> str:
    return DEFAULT_BRIDGE if name == "default" else f"jp-{name}"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise PolicyError(f"network name: up to 11 of a-z 0-9 - (not starting with -), got {name!r}")
    return name


@contextmanager
def locked(name: str):
    """flock(2) of the network's lock file, for reading and writing its files."""
    fd = os.open(os.path.join(state_dir(), f"{name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: str, data: object) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)


CURSOR = "_last"
"""The leases file's key for the address leased last (round robin)."""


def _read(path: str, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise HostError(f"{path}: unreadable ({e}); remove it") from None


def host_routes() -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations of this network namespace's routes (/proc/net/route), but the default
    route and those of jailpy's own bridges (left from an earlier run)."""
    out = []
    try:
        with open("/proc/net/route") as f:
            next(f)
            for line in f:
                parts = line.split()
                dst, mask = int(parts[1], 16), int(parts[7], 16)
                if mask and parts[0] != DEFAULT_BRIDGE and not parts[0].startswith("jp-"):  # not jailpy's own
                    out.append(ipaddress.IPv4Network((ipaddress.IPv4Address(dst.to_bytes(4, "little")),
                                                      bin(mask).count("1"))))
    except (OSError, StopIteration, ValueError):
        pass
    return out


def create(name: str, subnet: str | None = None, ephemeral: bool = False) -> dict:
    """Record network ``name`` with ``subnet`` (default: DEFAULT_SUBNET for ``default``, else the
    first free 10.214.N.0/24).  Raises PolicyError (bad name or subnet, exists, overlaps a network
    of jailpy's or a route of this host)."""
    check_name(name)
    with locked("_networks"):
        d = state_dir()
        path = os.path.join(d, f"{name}.json")
        if os.path.exists(path):
            raise PolicyError(f"network {name!r} exists already (jailpy network rm {name})")
        others = [n for n in networks() if n["name"] != name]
        taken = [ipaddress.ip_network(n["subnet"]) for n in others]
        routes = host_routes()
        if subnet is None:
            cands = [DEFAULT_SUBNET] if name == "default" else [f"10.214.{i}.0/24" for i in range(256)]
            subnet = next((c for c in cands if not any(ipaddress.ip_network(c).overlaps(t) for t in taken + routes)),
                          None)
            if subnet is None:
                raise PolicyError(f"no free subnet for network {name!r}: give one with --subnet CIDR")
        try:
            net = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            raise PolicyError(f"--subnet: not a network like 10.214.0.0/24: {subnet!r}") from None
        if str(net) != subnet and "/" in subnet:
            raise PolicyError(f"--subnet {subnet}: host bits are set; the network is {net}")
        if net.version != 4 or not 16 <= net.prefixlen <= 29:
            raise PolicyError(f"--subnet: an IPv4 network of /16 to /29 is needed, got {subnet}")
        for t, n in zip(taken, others):
            if net.overlaps(t):
                raise PolicyError(f"--subnet {net} overlaps network {n['name']!r} ({t})")
        for r in routes:
            if net.overlaps(r):
                raise PolicyError(f"--subnet {net} overlaps this host's route to {r}: pick another subnet")
        rec = {"name": name, "subnet": str(net), "bridge": bridge_name(name), "owner": os.geteuid(),
               "created": time.time(), "isolated": name == "default"}
        _write(path, rec)
        return rec


def networks() -> list[dict]:
    """Every network recorded in this network namespace."""
    d = state_dir()
    out = []
    for f in sorted(os.listdir(d)):
        if f.endswith(".json"):
            rec = _read(os.path.join(d, f), None)
            if rec:
                out.append(rec)
    return out


def get(name: str, create_default: bool = True) -> dict:
    """Network ``name``; ``default`` is created on first use.  Raises PolicyError when there is none."""
    rec = _read(os.path.join(state_dir(), f"{name}.json"), None)
    if rec is None:
        if name == "default" and create_default:
            try:
                return create("default")
            except PolicyError:
                rec = _read(os.path.join(state_dir(), "default.json"), None)
                if rec is None:
                    raise
                return rec
        raise PolicyError(f"no network named {name!r} (jailpy network create {name})")
    return rec


def update(name: str, **fields) -> dict:
    """Add ``fields`` to the record of network ``name``; returns it."""
    with locked("_networks"):
        path = os.path.join(state_dir(), f"{name}.json")
        rec = _read(path, None)
        if rec is None:
            raise PolicyError(f"no network named {name!r}")
        rec.update(fields)
        _write(path, rec)
        return rec


def remove(name: str, before=None) -> None:
    """Forget network ``name`` (its record, leases and hosts file); raises PolicyError while a
    sandbox holds a lease on it.  ``before()`` runs first, under the network's lock (ending its
    pod: no sandbox can take a lease meanwhile)."""
    with locked(name):
        live = live_leases(name)
        if live:
            raise PolicyError(f"network {name!r} is in use by {len(live)} sandbox(es)")
        if before is not None:
            before()
        for ext in (".json", ".leases", ".hosts", ".sock"):
            try:
                os.unlink(os.path.join(state_dir(), name + ext))
            except FileNotFoundError:
                pass


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(lease: dict) -> bool:
    return _start_time(lease["pid"]) == lease["start"]


def live_leases(name: str) -> dict:
    """The leases of network ``name`` whose process is alive (call under :func:`locked`)."""
    leases = _read(os.path.join(state_dir(), f"{name}.leases"), {})
    return {a: v for a, v in leases.items() if a != CURSOR and _alive(v)}


def take(name: str, subnet: str, veth: str, hostname: str, sweep, changed=None) -> tuple[str, list[dict]]:
    """Lease the next free address of ``subnet`` after the last one leased (round robin, so an
    address comes back only after the others: a finished sandbox's veth, which the kernel removes
    with its namespace, is long gone by then; the first address is the bridge's) to this process;
    stale leases are dropped and passed to ``sweep(lease)`` first; ``changed(live leases)`` runs
    last, under the lock (the network's hosts file).  Returns (address, the live leases of the
    others).  Raises HostError when the subnet is full."""
    with locked(name):
        if not os.path.exists(os.path.join(state_dir(), f"{name}.json")):
            raise HostError(f"network {name!r} was removed (jailpy network rm)")
        path = os.path.join(state_dir(), f"{name}.leases")
        leases = _read(path, {})
        cursor = leases.pop(CURSOR, None)
        for addr, lease in list(leases.items()):
            if not _alive(lease):
                sweep(dict(lease, address=addr))
                del leases[addr]
        addr = _next_free(subnet, leases, cursor)
        if addr is None:
            raise HostError(f"network {name!r} ({subnet}) has no free address: {len(leases)} sandboxes on it")
        others = [dict(v, address=a) for a, v in leases.items()]
        leases[addr] = {"pid": os.getpid(), "start": _own_start(), "veth": veth, "hostname": hostname}
        _write(path, dict(leases, **{CURSOR: addr}))
        if changed is not None:
            changed(leases)
        return addr, others


def _own_start() -> int | None:
    pid = os.getpid()
    if _OWN[0] != pid:
        _OWN[:] = [pid, _start_time(pid)]
    return _OWN[1]


_OWN: list = [None, None]


def _next_free(subnet: str, taken, cursor: str | None) -> str | None:
    """The first address of ``subnet`` after ``cursor`` (round robin) not in ``taken``, leaving out
    the network's first host address (the bridge's) and its broadcast address; None when full."""
    net = ipaddress.IPv4Network(subnet)
    first, last = int(net.network_address) + 2, int(net.broadcast_address) - 1
    count = last - first + 1
    used = set()
    for a in taken:
        try:
            used.add(int(ipaddress.IPv4Address(a)))
        except ValueError:
            pass
    try:
        start = int(ipaddress.IPv4Address(cursor)) + 1 if cursor else first
    except ValueError:
        start = first
    if not first <= start <= last:
        start = first
    for k in range(count):
        cand = first + (start - first + k) % count
        if cand not in used:
            return str(ipaddress.IPv4Address(cand))
    return None


def release(name: str, addr: str, changed=None) -> None:
    """Give back ``addr`` (a lease of this process); ``changed(live leases)`` runs after, under the lock."""
    with locked(name):
        path = os.path.join(state_dir(), f"{name}.leases")
        leases = _read(path, {})
        if addr != CURSOR and leases.get(addr, {}).get("pid") == os.getpid():
            del leases[addr]
            _write(path, leases)
        if changed is not None:
            changed({a: v for a, v in leases.items() if a != CURSOR and _alive(v)})


def sweep(name: str, sweeper) -> int:
    """Drop the stale leases of ``name`` (passing each to ``sweeper``); returns how many."""
    with locked(name):
        path = os.path.join(state_dir(), f"{name}.leases")
        leases = _read(path, {})
        stale = [a for a, v in leases.items() if a != CURSOR and not _alive(v)]
        for a in stale:
            sweeper(dict(leases.pop(a), address=a))
        if stale:
            _write(path, leases)
        return len(stale)
