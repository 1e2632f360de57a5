"""``--network bridge[:NAME]`` (root): a veth pair per sandbox, the host end on the network's
bridge, the sandbox end created directly in the sandbox's network namespace as ``eth0``
(rtnetlink(7) RTM_NEWLINK with IFLA_NET_NS_FD: no name clash with the host's eth0), an address
leased from :mod:`jailpy.net.leases`, a default route via the bridge's address.

pyroute2 (imported here only: about 200 ms) talks netlink.  The sandbox's side is configured
from a netlink socket opened after setns(2) on the calling thread (a socket stays in the
namespace it was made in), not with ``IPRoute(netns=...)``, which forks a helper per socket.
When the run ends the host's veth is deleted (its peer goes with it); after a SIGKILLed jailpy
the kernel removes both with the sandbox's namespace, and the stale lease is swept later."""

from __future__ import annotations

import ipaddress
import os
import secrets
import threading

from ..errors import HostError
from . import leases, nft


def _iproute():
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise HostError("--network bridge needs pyroute2: pip install 'jailpy[net]'") from None
    return IPRoute


class Bridge:
    """One network's bridge in this network namespace, and the veths of its sandboxes."""

    def __init__(self, name: str, hostname: str) -> None:
        if os.geteuid() != 0:
            raise HostError("--network bridge needs root (rootless: --network user, or --network none with "
                            "--allow-host for egress)")
        self.name = name
        self.hostname = hostname
        self.rec = leases.get(name)
        self.net = ipaddress.ip_network(self.rec["subnet"])
        self.gateway = str(next(self.net.hosts()))
        self.lock = threading.Lock()
        self.IPRoute = _iproute()
        self.ipr = self.IPRoute()
        self.hosts_file = os.path.join(leases.state_dir(), f"{name}.hosts")
        if not os.path.exists(self.hosts_file):
            self._write_hosts([])
        self.resolv_file = os.path.join(leases.state_dir(), "resolv.conf")
        if not os.path.exists(self.resolv_file):
            with open(self.resolv_file, "w") as f:
                f.write("# jailpy: the sandbox's own resolver (names allowed by --allow-host)\nnameserver 127.0.0.1\n")
        self.ensure()

    def ensure(self) -> None:
        """The bridge up with its address, and the nft table; made when missing.  Raises HostError."""
        br = self.rec["bridge"]
        with self.lock:
            try:
                if not self.ipr.link_lookup(ifname=br):
                    self.ipr.link("add", ifname=br, kind="bridge")
                idx = self.ipr.link_lookup(ifname=br)[0]
                have = {a.get_attr("IFA_ADDRESS") for a in self.ipr.get_addr(index=idx, family=2)}
                if self.gateway not in have:
                    self.ipr.addr("add", index=idx, address=self.gateway, prefixlen=self.net.prefixlen)
                self.ipr.link("set", index=idx, state="up")
            except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError and friends
                raise HostError(f"--network bridge: cannot set up bridge {br}: {e}") from None
        nft.ensure(br)

    def _sweep(self, lease: dict) -> None:
        try:
            with self.lock:
                idx = self.ipr.link_lookup(ifname=lease["veth"])
                if idx:
                    self.ipr.link("del", index=idx[0])
        except Exception:  # noqa: BLE001 - gone already
            pass

    def _write_hosts(self, entries: list[tuple[str, str]]) -> None:
        text = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n" + "".join(f"{a}\t{h}\n" for a, h in entries)
        fd = os.open(self.hosts_file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:  # in place: the sandboxes' bind mounts keep this inode
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
        finally:
            os.close(fd)

    def _update_hosts(self) -> None:
        with leases.locked(self.name):
            live = leases.live_leases(self.name)
        self._write_hosts(sorted((a, v["hostname"]) for a, v in live.items()))

    def attach(self, netns_fd: int) -> dict:
        """Give the sandbox of ``netns_fd`` its veth, address and route.  Returns what :meth:`detach`
        needs.  Raises HostError."""
        veth = "jpv" + secrets.token_hex(5)
        addr, _ = leases.take(self.name, self.rec["subnet"], veth, self.hostname, self._sweep)
        try:
            with self.lock:
                br_idx = self.ipr.link_lookup(ifname=self.rec["bridge"])
                if not br_idx:
                    raise HostError(f"bridge {self.rec['bridge']} is gone (jailpy network rm?)")
                self.ipr.link("add", ifname=veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": netns_fd},
                              master=br_idx[0], state="up")
                if self.rec.get("isolated"):
                    self.ipr.brport("set", index=self.ipr.link_lookup(ifname=veth)[0], isolated=1)
        except BaseException as e:
            self._sweep({"veth": veth})
            leases.release(self.name, addr)
            if isinstance(e, HostError):
                raise
            raise HostError(f"--network bridge: cannot set up the sandbox's veth: {e}") from None
        if not self.rec.get("isolated"):
            self._update_hosts()
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
        leases.release(self.name, attached["address"])
        if not self.rec.get("isolated"):
            self._update_hosts()

    def binds(self) -> list[tuple[str, str]]:
        """The network's hosts file at /etc/hosts (peers by --hostname; localhost only on the default
        network, whose sandboxes are isolated from each other) and a resolv.conf naming
        the sandbox's own stub, unless the root filesystem has a symlink there."""
        out = []
        hosts = self.hosts_file
        if self.rec.get("isolated"):  # the default network: its sandboxes do not see each other
            hosts = os.path.join(leases.state_dir(), "isolated.hosts")
            if not os.path.exists(hosts):
                with open(hosts, "w") as f:
                    f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
        for src, dst in ((hosts, "/etc/hosts"), (self.resolv_file, "/etc/resolv.conf")):
            if not os.path.islink(dst):
                out.append((src, dst))
        return out

    def close(self) -> None:
        try:
            self.ipr.close()
        except Exception:  # noqa: BLE001
            pass
