"""Rootless named networks: a "pod" per network, a user and a network namespace of the caller's
holding the network's bridge, kept by a small process (the holder) until ``jailpy network rm``.

Why the sandboxes' user namespaces nest in the pod's (user_namespaces(7), rtnetlink(7)):
putting a veth end into a sandbox's network namespace needs CAP_NET_ADMIN over the user
namespace owning it, and creating the other end on the pod's bridge needs it over the pod's
(net/core/rtnetlink.c rtnl_link_get_net_capable: for the netlink socket's opener and for the
caller alike).  A sandbox's own user namespace made beside the pod's (both children of the
caller's) is out of the pod's reach.  Made inside it instead (the set-up process joins the pod's
user namespace with setns(2) before it unshares its own: :func:`jailpy.child.setup`), every
capability of the pod's reaches it, and:

* the caller, in the parent namespace and the pod's owner, has every capability in the pod and
  so in the sandboxes (kernel/capability.c cap_capable): jailpy keeps configuring from outside,
  with a netlink socket the holder made in the pod's network namespace (:meth:`Pod.rtnl`);
* a sandbox gains nothing over the pod, the host or its siblings: a capability reaches only a
  namespace's descendants, and a sandbox's program has none even in its own;
* the sandbox's id maps must be written from the pod's namespace (user_namespaces(7): the
  writer must be in the target's namespace or its parent), so the holder writes them
  (:meth:`Pod.write_maps`), translating the sandbox's host ids (its slot of the caller's
  subuid range, or the caller's own id) into the pod's, which maps the caller's uid as 0 and
  the caller's whole subuid range after it.
  The sandbox keeps the host ids it would have without the pod.

Joining a network namespace the pod made for the sandbox instead would not avoid the nesting
(setns(2) into it needs CAP_SYS_ADMIN in its owner, the pod's namespace, *and* in one's own, so
the set-up process would have to join the pod's user namespace first anyway) and would leave the
sandbox's PID 1 without CAP_NET_ADMIN in its own network namespace (no loopback, no routes).

The holder (``python -I -S``, :func:`holder_main`) made the namespaces with unshare(2), brought
up loopback and the bridge with the network's first address, turned forwarding off, and serves a
unix(7) SOCK_SEQPACKET socket ``NAME.sock`` in the caller's network state directory
(:func:`jailpy.net.leases.state_dir`, 0700), to peers with the caller's uid in the pod's parent
user namespace only: a connection's first request comes with an fd of that namespace
(:func:`_peer_ok`).  A client makes a connection per request (:func:`request`):

    b"F"                  ->  b"F" + JSON {protocol, uid_map, gid_map, setgroups, pid}, [netlink socket in the
                              pod's network namespace, the pod's user namespace, its network namespace]
    b"M" + JSON {pid, uid_map, gid_map, setgroups}  ->  b"K" or b"E" + why (write a sandbox's id maps;
                              host ids in, the pod's ids written)
    b"Q"                  ->  b"K", then the holder exits (the namespaces, bridge and veths go with it)

The holder exits too when its socket file is removed or replaced (it looks every CHECK_EVERY
seconds).  Nothing of a pod survives a reboot (or a logout that empties /run/user/UID): create it
again.  The pod's network namespace has loopback, the bridge and the sandboxes' veths, nothing
else: no route out of it, forwarding off, nothing listening; sandboxes reach each other and
nothing else (egress only through jailpy's proxy, with --allow-host/--allow-net)."""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import time

PROTOCOL = 1
"""The holder's protocol (in its answer to b"F"): a pod made by another jailpy version is refused."""
READY_WAIT = 30.0
"""Seconds ``jailpy network create`` waits for each step of the holder's start."""
CHECK_EVERY = 30.0
"""Seconds between the holder's checks that its socket file is still its own."""
MAX_PEERS = 256
"""Connections the holder serves at once (one per Sandbox using the network)."""
REQUEST_WAIT = 10.0
"""Seconds a client waits for the holder's answer."""


def _sock_name(name: str) -> str:
    return f"{name}.sock"


def _dir_path(dfd: int, name: str) -> str:
    # through the directory's fd: a unix socket's path may have 107 bytes at most (unix(7)), a
    # state directory under a long home directory more
    return f"/proc/self/fd/{dfd}/{name}"


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


# ---- the caller's side
def _pod_ids():
    """The pod's id maps: the caller as 0 and, with a subuid/subgid range and newuidmap(1), the
    whole range from 1 (so sandboxes keep their slots of it, :mod:`jailpy.idlease`); else the
    caller alone."""
    from .. import userns
    from ..errors import HostError

    uid, gid = os.getuid(), os.getgid()
    try:
        rng = userns.choose("auto")
    except HostError:
        rng = None
    if rng is not None and rng.helper:
        return userns.IdPlan(((0, uid, 1), (1, rng.uid, rng.count)), ((0, gid, 1), (1, rng.gid, rng.count)), 0, 0,
                             True, True, "pod")
    return userns.IdPlan(((0, uid, 1),), ((0, gid, 1),), 0, 0, False, False, "pod",
                         self_write=userns.in_nested_userns())


def _python() -> str:
    import sys

    from ..errors import HostError

    exe = sys.executable
    if not exe or "python" not in os.path.basename(exe):
        raise HostError("jailpy network create needs a Python interpreter to run the network's holder "
                        "(sys.executable is not one)")
    return exe


def _read_line(fd: int, timeout: float) -> bytes:
    """One ``\\n``-ended message from the holder's pipe (b"" at its end or after ``timeout`` s)."""
    out = b""
    end = time.monotonic() + timeout
    p = select.poll()
    p.register(fd, select.POLLIN)
    while not out.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or not p.poll(int(left * 1000)):
            return b""
        chunk = os.read(fd, 512)
        if not chunk:
            return b""
        out += chunk
    return out[:-1]


def start(rec: dict) -> dict:
    """Start the holder of network ``rec`` (a record of :func:`jailpy.net.leases.create`) and wait
    until it serves.  Returns ``{"pid", "start"}`` of the holder.  Raises HostError (why it could
    not start: no user namespaces, newuidmap refused...); nothing is left running then."""
    import ipaddress
    import signal
    import subprocess

    from .. import userns
    from ..errors import HostError
    from . import leases

    plan = _pod_ids()
    net = ipaddress.ip_network(rec["subnet"])
    args = {"name": rec["name"], "bridge": rec["bridge"], "gateway": str(next(net.hosts())),
            "prefixlen": net.prefixlen, "dir": leases.state_dir(),
            "self_maps": [plan.uid_map, plan.gid_map] if plan.self_write else None}
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); from jailpy.net import pod; "
            "pod.holder_main(json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))")
    up_r, up_w = os.pipe2(os.O_CLOEXEC)  # holder -> us
    go_r, go_w = os.pipe2(os.O_CLOEXEC)  # us -> holder
    try:
        proc = subprocess.Popen([_python(), "-I", "-S", "-c", code, top, json.dumps(args), str(up_w), str(go_r)],
                                pass_fds=(up_w, go_r), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd="/", start_new_session=True,
                                env={"PATH": "/usr/bin:/bin"})
    except BaseException:
        for fd in (up_r, up_w, go_r, go_w):
            os.close(fd)
        raise
    os.close(up_w)
    os.close(go_r)
    pidfd = None
    try:
        msg = _read_line(up_r, READY_WAIT)
        if not msg.startswith(b"u"):
            raise HostError(f"network {rec['name']}: its holder did not start: "
                            f"{msg[1:].decode(errors='replace') or 'no word'}")
        pid = int(msg[1:])
        pidfd = os.pidfd_open(pid)
        userns.write_maps(plan, pid)
        os.write(go_w, b"g")
        msg = _read_line(up_r, READY_WAIT)
        if not msg.startswith(b"r"):
            raise HostError(f"network {rec['name']}: cannot set up its namespace: "
                            f"{msg[1:].decode(errors='replace') or 'the holder ended without a word'}")
        holder = int(msg[1:])
        return {"pid": holder, "start": leases._start_time(holder)}
    except BaseException:
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
        os.close(go_w)
        os.close(up_r)
        proc.wait(READY_WAIT)  # the first holder process: it exits once the daemon is forked


def alive(pod: dict | None) -> bool:
    """Whether the holder recorded in ``pod`` (``{"pid", "start"}``) still runs."""
    from . import leases

    return bool(pod) and leases._start_time(int(pod["pid"])) == pod.get("start")


def stop(name: str, pod: dict | None) -> None:
    """End the holder of network ``name``: ask it (b"Q"), else SIGKILL the recorded process when it
    is still that one (start time)."""
    import signal

    try:
        request(name, b"Q")
    except Exception:  # noqa: BLE001 - down already, or not answering: the signal below
        pass
    if not pod:
        return
    try:
        pidfd = os.pidfd_open(int(pod["pid"]))
    except OSError:
        return
    try:
        if alive(pod):
            p = select.poll()
            p.register(pidfd, select.POLLIN)
            if not p.poll(5000):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def request(name: str, msg: bytes, nfds: int = 0) -> tuple[bytes, list[int]]:
    """Send ``msg`` to the holder of network ``name`` on a connection of its own, with the proof
    :func:`_peer_ok` wants, and return its answer and the fds that came with it (up to
    ``nfds``).  Raises HostError when the pod is not running or does not answer."""
    from ..errors import HostError
    from . import leases

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    with sock:
        sock.settimeout(REQUEST_WAIT)
        dfd = _open_dir(leases.state_dir())
        try:
            sock.connect(_dir_path(dfd, _sock_name(name)))
        except (FileNotFoundError, ConnectionRefusedError):
            raise HostError(f"network {name!r} is not running (its holder ended: a reboot, a logout or a kill): "
                            f"jailpy network rm {name}, then jailpy network create {name}") from None
        except OSError as e:
            raise HostError(f"network {name!r}: cannot reach its holder: {e.strerror}") from None
        finally:
            os.close(dfd)
        try:
            mine = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            try:
                socket.send_fds(sock, [msg], [mine])
            finally:
                os.close(mine)
            reply, fds, _, _ = socket.recv_fds(sock, 1 << 16, nfds)
        except OSError as e:
            raise HostError(f"network {name!r}: its holder did not answer ({e}); jailpy network rm {name}") from None
    if not reply:
        raise HostError(f"network {name!r}: refused by its holder (only its creator, from the user namespace it "
                        f"was created in, may use it)")
    return reply, fds


class Pod:
    """The running pod of network ``name``, for the caller: its user namespace (``fd``, which the
    sandboxes' set-up processes join), a netlink socket in its network namespace (:meth:`rtnl`),
    and the writer of the sandboxes' id maps (:meth:`write_maps`).  Each request to the holder
    is a connection of its own (a Sandbox holds none between runs).  Raises HostError when the
    pod is not running."""

    def __init__(self, name: str) -> None:
        from ..errors import HostError

        self.name = name
        self.fd = self.netns_fd = self.nl_fd = -1
        msg, fds = request(name, b"F", 3)
        if msg[:1] != b"F" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            raise HostError(f"network {name!r}: its holder answered {msg[:200]!r}")
        self.nl_fd, self.fd, self.netns_fd = fds
        self.info = json.loads(msg[1:])
        if self.info.get("protocol") != PROTOCOL:
            self.close()
            raise HostError(f"network {name!r} was made by another version of jailpy: jailpy network rm {name}, "
                            f"then jailpy network create {name}")

    def __enter__(self) -> "Pod":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def rtnl(self):
        """A :class:`jailpy.net.rtnl.Rtnl` on the pod's network namespace (a copy of the holder's
        socket: usable from this process, which owns the pod, without joining it)."""
        from .rtnl import Rtnl

        return Rtnl(os.dup(self.nl_fd))

    def check(self, plan) -> None:
        """Raise HostError when the host ids of ``plan`` (a :class:`jailpy.userns.IdPlan`) do not
        exist in the pod (a pod made before the caller had a subuid range)."""
        from ..errors import HostError

        try:
            translate(plan.uid_map, self.info["uid_map"])
            translate(plan.gid_map, self.info["gid_map"])
        except ValueError as e:
            raise HostError(f"network {self.name!r}: {e}: it was made without them (jailpy network rm "
                            f"{self.name}, then create it again), or use --id-map single") from None

    def write_maps(self, plan, pid: int) -> None:
        """Have the holder write the id maps of ``plan`` for the process ``pid`` (one that has
        unshared its user namespace inside the pod's, and waits).  Raises HostError."""
        from ..errors import HostError

        req = {"pid": pid, "uid_map": plan.uid_map, "gid_map": plan.gid_map, "setgroups": plan.setgroups}
        reply, _ = request(self.name, b"M" + json.dumps(req).encode())
        if reply[:1] != b"K":
            raise HostError(f"network {self.name!r}: cannot write the sandbox's id maps: "
                            f"{reply[1:].decode(errors='replace')[:300]}")

    def close(self) -> None:
        for fd in (self.nl_fd, self.fd, self.netns_fd):
            if fd >= 0:
                os.close(fd)
        self.nl_fd = self.fd = self.netns_fd = -1


def translate(rows, own) -> list[tuple[int, int, int]]:
    """The rows ``(inside, host id, count)`` of a sandbox's map with the host ids turned into the
    pod's, by the pod's own map ``own`` (rows ``(pod id, host id, count)``).  Raises ValueError
    naming a host id the pod does not map."""
    out = []
    for inside, host, count in rows:
        for pin, pout, pcount in own:
            if pout <= host and host + count <= pout + pcount:
                out.append((inside, pin + host - pout, count))
                break
        else:
            raise ValueError(f"host id {host} of the sandbox is not in the network's user namespace")
    return out


# ---- the holder
def _write_maps(req: dict) -> None:
    pid = int(req["pid"])
    from ..userns import id_map

    umap = translate(req["uid_map"], id_map("uid"))
    gmap = translate(req["gid_map"], id_map("gid"))
    steps = [("uid_map", umap)] + ([] if req["setgroups"] else [("setgroups", None)]) + [("gid_map", gmap)]
    for name, rows in steps:
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"deny" if rows is None else "".join(f"{a} {b} {c}\n" for a, b, c in rows).encode())
        finally:
            os.close(fd)


def _peer_ok(conn: socket.socket, fds: list[int], parent: tuple[int, int]) -> bool:
    """The peer runs as our uid (the caller's: SO_PEERCRED, unix(7)) and holds an fd of the user
    namespace the pod was made from, which it sent with its first request: a process confined in
    another user namespace (a sandbox) cannot open one (ioctl_ns(2) NS_GET_PARENT refuses a
    namespace outside its own; its /proc shows none).  (The peer's /proc/PID/ns/user cannot be
    read from here: ptrace(2) access across user namespaces needs CAP_SYS_PTRACE in the peer's.)"""
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid != os.getuid() or len(fds) != 1:
        return False
    st = os.fstat(fds[0])
    return (st.st_dev, st.st_ino) == parent and os.readlink(f"/proc/self/fd/{fds[0]}").startswith("user:")


def _serve(listener: socket.socket, dfd: int, sock_name: str, sock_id: tuple[int, int],
           parent: tuple[int, int]) -> None:
    """The holder's loop: answer its peers' requests (see the module docstring); exit when the
    socket file ``sock_name`` in ``dfd`` is no longer ``sock_id``."""
    from ..userns import id_map

    with open("/proc/self/setgroups") as f:
        setgroups = f.read().strip()
    info = json.dumps({"protocol": PROTOCOL, "uid_map": id_map("uid"), "gid_map": id_map("gid"),
                       "pid": os.getpid(), "setgroups": setgroups}).encode()
    userns_fd = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    netns_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    peers: dict[int, socket.socket] = {}
    trusted: set[int] = set()  # peers that passed _peer_ok with their first request
    poll = select.poll()
    poll.register(listener, select.POLLIN)
    next_check = time.monotonic() + CHECK_EVERY
    while True:
        for fd, _ in poll.poll(int(CHECK_EVERY * 1000)):
            if fd == listener.fileno():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                if len(peers) >= MAX_PEERS:
                    conn.close()
                    continue
                peers[conn.fileno()] = conn
                poll.register(conn, select.POLLIN)
                continue
            conn = peers[fd]
            try:
                msg, got, _, _ = socket.recv_fds(conn, 1 << 16, 1)
            except OSError:
                msg, got = b"", []
            try:
                ok = fd in trusted or _peer_ok(conn, got, parent)
            except OSError:
                ok = False
            for f in got:
                os.close(f)
            if not msg or not ok:
                poll.unregister(fd)
                del peers[fd]
                trusted.discard(fd)
                conn.close()
                continue
            trusted.add(fd)
            try:
                if msg[:1] == b"F":
                    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
                    try:
                        socket.send_fds(conn, [b"F" + info], [nl.fileno(), userns_fd, netns_fd])
                    finally:
                        nl.close()
                elif msg[:1] == b"M":
                    try:
                        _write_maps(json.loads(msg[1:]))
                        conn.send(b"K")
                    except (OSError, ValueError, KeyError, TypeError) as e:
                        conn.send(b"E" + str(e).encode(errors="replace")[:1000])
                elif msg[:1] == b"Q":
                    conn.send(b"K")
                    os._exit(0)
                else:
                    conn.send(b"E unknown request")
            except OSError:
                pass
        now = time.monotonic()
        if now >= next_check:
            next_check = now + CHECK_EVERY
            try:
                st = os.stat(sock_name, dir_fd=dfd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) != sock_id:
                    os._exit(0)
            except OSError:
                os._exit(0)  # our socket file is gone (jailpy network rm, a logout): so is the network


def holder_main(args: dict, up_fd: int, go_fd: int) -> None:
    """The holder (see the module docstring), started by :func:`start` with its pipes at ``up_fd``
    and ``go_fd``.  Never returns."""
    from .. import _syscalls as sc

    def say(msg: bytes) -> None:
        try:
            os.write(up_fd, msg + b"\n")
        except OSError:
            pass

    step = "unshare the user and network namespaces"
    try:
        st = os.stat("/proc/self/ns/user")
        parent = (st.st_dev, st.st_ino)
        sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNET)
        if args.get("self_maps"):
            from ..userns import IdPlan, write_own_maps

            umap, gmap = args["self_maps"]
            write_own_maps(IdPlan(tuple(map(tuple, umap)), tuple(map(tuple, gmap)), 0, 0, False, False, "pod",
                                  self_write=True))
        say(b"u%d" % os.getpid())
        if os.read(go_fd, 1) != b"g":
            os._exit(1)  # the creator gave up (or died)
        step = "bring up loopback"
        from .inside import loopback_up
        from .rtnl import Rtnl

        loopback_up()
        step = "turn forwarding off"
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:  # this network namespace's own
            f.write("0")
        step = f"make the bridge {args['bridge']}"
        with Rtnl() as rt:
            idx = rt.add_bridge(args["bridge"])
            rt.add_address(idx, args["gateway"], int(args["prefixlen"]))
            rt.set_up(idx)
        step = "listen on the network's socket"
        sock_name = _sock_name(args["name"])
        dfd = _open_dir(args["dir"])
        try:
            os.unlink(sock_name, dir_fd=dfd)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        os.umask(0o077)
        listener.bind(_dir_path(dfd, sock_name))
        listener.listen(64)
        st = os.stat(sock_name, dir_fd=dfd, follow_symlinks=False)
        sock_id = (st.st_dev, st.st_ino)
        step = "detach"
        if os.fork():
            os._exit(0)  # the first process: its creator reaps it
    except BaseException as e:  # noqa: BLE001 - reported to the creator
        say(b"e" + f"{step}: {getattr(e, 'strerror', None) or e}".encode(errors="replace")[:1000])
        os._exit(1)
    say(b"r%d" % os.getpid())
    for fd in (up_fd, go_fd):
        os.close(fd)
    try:
        sc.prctl(sc.PR_SET_NAME, _name_ptr(b"jailpy-pod"))
    except OSError:
        pass
    try:
        _serve(listener, dfd, sock_name, sock_id, parent)
    finally:
        os._exit(0)


def _name_ptr(name: bytes) -> int:
    import ctypes

    global _NAME_BUF
    _NAME_BUF = ctypes.create_string_buffer(name)
    return ctypes.addressof(_NAME_BUF)


_NAME_BUF = None
