"""``--network bridge[:NAME]``: a veth pair per sandbox, the host end on the network's bridge, the
sandbox end created directly in the sandbox's network namespace as ``eth0`` (rtnetlink(7)
RTM_NEWLINK with IFLA_NET_NS_FD: no name clash with the host's eth0), an address leased from
:mod:`jailpy.net.leases`, a default route via the bridge's address.

As root the bridge is in the caller's network namespace (made when missing, with jailpy's
nftables table: :mod:`jailpy.net.nft`).  Rootless it is in the network's pod
(:mod:`jailpy.net.pod`), and the netlink socket is one the pod's holder made there: jailpy uses
it from outside, as the pod's owner, without joining the pod.  Netlink is spoken by
:mod:`jailpy.net.rtnl` (pyroute2 cost 200 ms to import).

When the run ends the lease goes; the veth goes with the sandbox's network namespace (the
kernel deletes a veth pair when one end's namespace ends), also after a SIGKILLed jailpy, whose
stale lease is swept later."""

from __future__ import annotations

import ipaddress
import os
import secrets
import threading

from ..errors import HostError
from . import leases, nft
from .rtnl import Rtnl

HEADER = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
RESOLV = "# jailpy: the sandbox's own resolver (names allowed by --allow-host)\nnameserver 127.0.0.1\n"


class Bridge:
    """One network's bridge, and the veths of its sandboxes.  ``pod``: the network's
    :class:`jailpy.net.pod.Pod` (rootless), None: the bridge is in this network namespace (root).
    Raises HostError (PolicyError for a network that does not exist)."""

    def __init__(self, name: str, hostname: str, pod=None) -> None:
        if pod is None and os.geteuid() != 0:
            raise HostError("--network bridge needs root (rootless: jailpy network create NAME, then "
                            "--network bridge:NAME)")
        self.name = name
        self.hostname = hostname
        self.pod = pod
        self.rec = leases.get(name, create_default=pod is None)
        self.net = ipaddress.ip_network(self.rec["subnet"])
        self.gateway = str(next(self.net.hosts()))
        self.lock = threading.Lock()
        self.rt = pod.rtnl() if pod is not None else Rtnl()
        d = leases.state_dir()
        self.hosts_file = os.path.join(d, f"{name}.hosts")
        if not os.path.exists(self.hosts_file):
            self._write_hosts([])
        self.resolv_file = os.path.join(d, "resolv.conf")
        if not os.path.exists(self.resolv_file):
            _write_new(self.resolv_file, RESOLV)
        try:
            self.ensure()
        except BaseException:
            self.close()
            raise

    def ensure(self) -> None:
        """The bridge up with its address; as root made when missing, with the nft table.  Raises HostError."""
        br = self.rec["bridge"]
        with self.lock:
            try:
                idx = self.rt.link_index(br)
                if self.pod is not None:
                    if idx is None:
                        raise HostError(f"network {self.name!r}: its bridge {br} is gone from its pod "
                                        f"(jailpy network rm {self.name}, then create it again)")
                    self.bridge_index = idx
                    return
                if idx is None:
                    try:
                        idx = self.rt.add_bridge(br)
                    except FileExistsError:  # another jailpy made it meanwhile
                        idx = self.rt.link_index(br)
                if self.gateway not in self.rt.addresses(idx):
                    try:
                        self.rt.add_address(idx, self.gateway, self.net.prefixlen)
                    except FileExistsError:
                        pass
                self.rt.set_up(idx)
                self.bridge_index = idx
            except OSError as e:
                raise HostError(f"--network bridge: cannot set up bridge {br}: {e.strerror or e}") from None
        nft.ensure(br)

    def _sweep(self, lease: dict) -> None:
        try:
            with self.lock:
                self.rt.delete_name(lease["veth"])
        except OSError:  # gone already
            pass

    def _write_hosts(self, entries: list[tuple[str, str]]) -> None:
        text = HEADER + "".join(f"{a}\t{h}\n" for a, h in entries)
        fd = os.open(self.hosts_file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:  # in place: the sandboxes' binds keep this inode
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
        finally:
            os.close(fd)

    def _hosts_changed(self, live: dict) -> None:
        """The network's hosts file for the leases ``live`` (called under the leases' lock)."""
        self._write_hosts(sorted((a, v["hostname"]) for a, v in live.items()))

    @property
    def _changed(self):
        return None if self.rec.get("isolated") else self._hosts_changed

    def attach(self, netns_fd: int) -> dict:
        """Give the sandbox of ``netns_fd`` its veth, address and route.  Returns what :meth:`detach`
        needs.  Raises HostError."""
        veth = "jpv" + secrets.token_hex(5)
        addr, _ = leases.take(self.name, self.rec["subnet"], veth, self.hostname, self._sweep, self._changed)
        try:
            with self.lock:
                br = self.rt.link_index(self.rec["bridge"])
                if br is None:
                    raise HostError(f"bridge {self.rec['bridge']} is gone (jailpy network rm?)")
                self.rt.add_veth(veth, "eth0", netns_fd, br)
                if self.rec.get("isolated"):
                    idx = self.rt.link_index(veth)
                    if idx is None:
                        raise HostError(f"veth {veth} vanished")
                    self.rt.set_isolated(idx)
        except BaseException as e:
            self._sweep({"veth": veth})
            leases.release(self.name, addr, self._changed)
            if isinstance(e, HostError):
                raise
            why = getattr(e, "strerror", None) or e
            raise HostError(f"--network bridge: cannot set up the sandbox's veth: {why}") from None
        # eth0's address, eth0 up and the default route are set by the sandbox's PID 1 itself
        # (jailpy.net.inside.wait_host: it has CAP_NET_ADMIN there until it drops it)
        return {"address": addr, "veth": veth,
                "configure": {"dev": "eth0", "address": addr, "prefixlen": self.net.prefixlen,
                              "gateway": self.gateway}}

    def detach(self, attached: dict) -> None:
        """The run is over: its lease goes.  Its veth goes with the sandbox's network namespace
        (the kernel deletes a veth pair when either end's namespace ends, in its batched cleanup,
        without holding up the next run; deleting it here took 20-30 ms of the kernel's
        rtnl_lock, which the next run's veth waited for); a leftover is swept with a stale lease."""
        leases.release(self.name, attached["address"], self._changed)

    def binds(self) -> list[tuple[str, str]]:
        """The network's hosts file at /etc/hosts (peers by --hostname; localhost only on the default
        network, whose sandboxes are isolated from each other) and a resolv.conf naming
        the sandbox's own stub, unless the root filesystem has a symlink there."""
        out = []
        hosts = self.hosts_file
        if self.rec.get("isolated"):  # the default network: its sandboxes do not see each other
            hosts = os.path.join(leases.state_dir(), "isolated.hosts")
            if not os.path.exists(hosts):
                _write_new(hosts, HEADER)
        for src, dst in ((hosts, "/etc/hosts"), (self.resolv_file, "/etc/resolv.conf")):
            if not os.path.islink(dst):
                out.append((src, dst))
        return out

    def close(self) -> None:
        self.rt.close()
        if self.pod is not None:
            self.pod.close()


def _write_new(path: str, text: str) -> None:
    """Write a state file that does not change (resolv.conf, the isolated hosts file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def sweeper(rec: dict):
    """A function deleting a stale lease's veth (``jailpy network ls/rm``): in this network
    namespace as root; in a running pod rootless (the veth went with its sandbox's namespace
    anyway, unless something still holds that namespace)."""
    def sweep(lease: dict) -> None:
        if not lease.get("veth"):
            return
        try:
            if rec.get("pod"):
                from .pod import Pod

                with Pod(rec["name"]) as p, p.rtnl() as rt:
                    rt.delete_name(lease["veth"])
            else:
                with Rtnl() as rt:
                    rt.delete_name(lease["veth"])
        except (OSError, HostError):
            pass
    return sweep
