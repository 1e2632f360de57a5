"""``--network user`` (rootless): user-mode networking by slirp4netns (preferred: 6 ms to start,
``--exit-fd`` ends it with jailpy) or pasta (package passt), attached from outside to the
sandbox's namespaces (joined through the fds PID 1 sent: ``/proc/self/fd/N`` in the helper).

The sandbox gets ``tap0`` with 10.0.2.100/24, a default route via 10.0.2.2 and a resolver at
10.0.2.3 (/etc/resolv.conf); the helper makes its connections as the caller.  Safe flags only:
no port forwarding (--publish goes through jailpy's own relay), the host's loopback unreachable
(slirp4netns ``--disable-host-loopback``; pasta ``-t/-u/-T/-U none --no-map-gw``), and the host's
own other addresses blackholed in the sandbox (routes PID 1 adds before it drops its
capabilities: :func:`host_addresses`).  Choose with ``JAILPY_USERNET=slirp4netns|pasta``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from ..errors import HostError

READY_WAIT = 10.0
"""Seconds to wait for the helper to configure the sandbox's interface."""
ADDRESS = "10.0.2.100"
RESOLV = "# jailpy --network user: the user-mode stack's resolver\nnameserver 10.0.2.3\n"


def _which() -> tuple[str, str] | None:
    want = os.environ.get("JAILPY_USERNET", "")
    order = [want] if want in ("slirp4netns", "pasta") else ["slirp4netns", "pasta"]
    for name in order:
        path = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)),
                                          None)
        if path:
            return name, path
    return None


def check(plan) -> None:
    """Raise HostError when neither slirp4netns nor pasta is installed."""
    if _which() is None:
        raise HostError("--network user needs slirp4netns or pasta: apt-get install slirp4netns (or passt)"
                        + (f" (JAILPY_USERNET={os.environ['JAILPY_USERNET']})" if os.environ.get("JAILPY_USERNET") else ""))
    if os.geteuid() != 0 and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        raise HostError(f"--network user needs /dev/net/tun, which uid {os.geteuid()} may not open here: an "
                        f"administrator can give it its usual mode with chmod 0666 /dev/net/tun (the device only "
                        f"makes interfaces in namespaces one owns)")


def host_addresses() -> list[str]:
    """This network namespace's own IPv4 addresses but loopback (/proc/net/fib_trie: the ``/32
    host LOCAL`` entries): what the sandbox must not reach through the helper."""
    out: list[str] = []
    last = None
    try:
        with open("/proc/net/fib_trie") as f:
            for line in f:
                s = line.strip()
                if s.startswith("|--"):
                    last = s[3:].strip()
                elif "/32 host LOCAL" in s and last and not last.startswith("127.") and last not in out:
                    out.append(last)
    except OSError:
        pass
    return out


def _unshare() -> str:
    path = shutil.which("unshare") or "/usr/bin/unshare"
    if not os.path.exists(path):
        raise HostError("--network user as root needs unshare (util-linux) to contain slirp4netns's mounts")
    return path


class UserNet:
    """Starts the helper for each run and ends it when the run ends."""

    def __init__(self, plan) -> None:
        found = _which()
        if found is None:
            check(plan)
        self.kind, self.exe = found
        from . import leases

        self.resolv_file = os.path.join(leases.state_dir(), "user-resolv.conf")
        if not os.path.exists(self.resolv_file):
            with open(self.resolv_file, "w") as f:
                f.write(RESOLV)

    def binds(self) -> list[tuple[str, str]]:
        return [] if os.path.islink("/etc/resolv.conf") else [(self.resolv_file, "/etc/resolv.conf")]

    def attach(self, netns_fd: int, userns_fd: int) -> dict:
        """Start the helper on the sandbox of ``netns_fd``/``userns_fd``.  Raises HostError."""
        if self.kind == "slirp4netns":
            return self._slirp(netns_fd, userns_fd)
        return self._pasta(netns_fd, userns_fd)

    def _slirp(self, netns_fd: int, userns_fd: int) -> dict:
        ready_r, ready_w = os.pipe()
        exit_r, exit_w = os.pipe()
        os.set_inheritable(exit_w, False)
        try:
            # --enable-sandbox (its own mount namespace, capabilities dropped) works as root only, and
            # only in a mount namespace of its own whose mounts are all private: slirp4netns 1.2.0
            # makes only / private before it detaches the old root, and the unmount of every shared
            # submount then propagates to the host (seen: /run/netns/* of `ip netns` vanished)
            wrap = [_unshare(), "--mount", "--propagation", "private"] if os.geteuid() == 0 else []
            sandbox = ["--enable-sandbox"] if wrap else []
            cmd = [*wrap, self.exe, "--configure", "--mtu=65520", "--disable-host-loopback", *sandbox,
                   "--enable-seccomp", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}",
                   f"--userns-path=/proc/self/fd/{userns_fd}", "--netns-type=path", f"/proc/self/fd/{netns_fd}",
                   "tap0"]
            proc = subprocess.Popen(cmd, pass_fds=(ready_w, exit_r, netns_fd, userns_fd), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True)
        except BaseException:
            for fd in (ready_r, ready_w, exit_r, exit_w):
                os.close(fd)
            raise
        os.close(ready_w)
        os.close(exit_r)
        try:
            import select

            p = select.poll()  # not select(2): the caller may hold fds above 1023
            p.register(ready_r, select.POLLIN)
            ok = bool(p.poll(int(READY_WAIT * 1000))) and os.read(ready_r, 1) == b"1"
        finally:
            os.close(ready_r)
        if not ok:
            os.close(exit_w)
            proc.kill()
            err = proc.communicate(timeout=5)[1].decode(errors="replace").strip()
            raise HostError(f"--network user: slirp4netns did not start: {err.splitlines()[-1] if err else 'no word'}")
        proc.stderr.close()
        return {"address": ADDRESS, "proc": proc, "exit_w": exit_w, "blackhole": host_addresses()}

    def _pasta(self, netns_fd: int, userns_fd: int) -> dict:
        from . import leases

        pidfile = os.path.join(leases.state_dir(), f"pasta.{os.getpid()}.{time.monotonic_ns()}.pid")
        cmd = [self.exe, "--config-net", "-q", "-4", "-I", "tap0", "-a", ADDRESS, "-n", "24", "-g", "10.0.2.2",
               "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--no-map-gw", "-P", pidfile,
               "--userns", f"/proc/self/fd/{userns_fd}", "--netns", f"/proc/self/fd/{netns_fd}"]
        if os.geteuid() == 0:  # as root pasta becomes nobody, who may not join the sandbox's user namespace
            cmd[1:1] = ["--runas", "0"]
        p = subprocess.run(cmd, pass_fds=(netns_fd, userns_fd), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=READY_WAIT)
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
            os.unlink(pidfile)
        except (OSError, ValueError):
            pid = None
        if p.returncode != 0 or pid is None:
            err = (p.stderr or p.stdout).decode(errors="replace").strip()
            raise HostError(f"--network user: pasta did not start: {err.splitlines()[-1] if err else p.returncode}")
        return {"address": ADDRESS, "pid": pid, "pidfd": os.pidfd_open(pid), "blackhole": host_addresses()}

    def detach(self, attached: dict) -> None:
        """End the run's helper (bounded waits)."""
        if "proc" in attached:
            os.close(attached["exit_w"])  # slirp4netns exits when this closes (--exit-fd)
            try:
                attached["proc"].wait(5)
            except subprocess.TimeoutExpired:
                attached["proc"].kill()
                attached["proc"].wait(5)
        elif "pidfd" in attached:
            import signal

            try:
                signal.pidfd_send_signal(attached["pidfd"], signal.SIGTERM)
            except ProcessLookupError:
                pass
            os.close(attached["pidfd"])

    def close(self) -> None:
        pass
