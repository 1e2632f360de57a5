"""Host-side set-up and checks of the audit probes: canaries a probe tries to reach from inside
the sandbox, and what the host observes afterwards.

Every fixture is the auditor's own: files in a temporary directory it created, servers on
127.0.0.1, helper processes it started (and ends, by pid), System V and POSIX IPC objects and a
keyring key under names with a random token, a pseudo-terminal it opened.  :class:`Fixtures`
builds those a probe names, hands the probe program their coordinates (``params``) and the
policy changes they need, and reports what changed on the host (:meth:`Fixtures.check`).
Everything is removed on exit, also after errors.

Man pages: unix(7) (abstract sockets), sysvipc(7), mq_overview(7), keyrings(7) and add_key(2),
pty(7), tty_ioctl(4) and credentials(7) (controlling terminals), rename(2) (RENAME_EXCHANGE).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

WELL_KNOWN_SOCKETS = (
    "/run/dbus/system_bus_socket", "/var/run/dbus/system_bus_socket", "/var/run/docker.sock", "/run/docker.sock",
    "/run/containerd/containerd.sock", "/run/systemd/private", "/run/systemd/journal/socket",
    "/run/systemd/notify", "/tmp/.X11-unix/X0", "/run/podman/podman.sock",
)
"""Host unix sockets a sandboxed program would like to reach (those that exist are probed)."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_IPC_CREAT, _IPC_RMID = 0o1000, 0
_KEY_SPEC_USER_KEYRING, _KEYCTL_INVALIDATE = -4, 21
_NR_ADD_KEY, _NR_KEYCTL = 248, 250
_RENAME_EXCHANGE = 2


def token() -> str:
    """A random token naming this audit's canaries (hex, 16 characters)."""
    return secrets.token_hex(8)


def snapshot(root: Path) -> dict[str, tuple]:
    """{relative path: (type, mode, size, sha256 of a file's content or a symlink's target)} of
    everything under ``root``: what a probe must leave unchanged."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if os.path.islink(p):
                out[rel] = ("link", 0, 0, os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", st.st_mode & 0o7777, 0, "")
            else:
                try:
                    digest = hashlib.sha256(Path(p).read_bytes()).hexdigest() if os.path.isfile(p) else ""
                except OSError:
                    digest = "?"
                out[rel] = ("file", st.st_mode & 0o7777, st.st_size, digest)
    return out


def diff(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """What changed between two :func:`snapshot`\\ s, as short lines ("new w/x", "changed t")."""
    lines = [f"new {k}" for k in sorted(after.keys() - before.keys())]
    lines += [f"gone {k}" for k in sorted(before.keys() - after.keys())]
    lines += [f"changed {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return lines


def marker_pids(marker: str) -> list[int]:
    """Host pids whose argv holds ``marker`` as a whole argument (processes a probe tried to leave
    behind).  Reads /proc/PID/cmdline; processes that vanish meanwhile are skipped."""
    want = marker.encode()
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if want in f.read().split(b"\0"):
                        found.append(int(d))
            except OSError:
                pass
    return found


def unique_marker() -> str:
    """A ``sleep`` duration no other process has: e.g. ``987.123456789`` (seconds; never reached)."""
    return f"{secrets.randbelow(900) + 100}.{secrets.randbelow(10**9):09d}"


def host_facts() -> dict:
    """What information-leak probes compare with: host name, sha256 of machine-id and boot_id,
    the auditor's cgroup paths, host abstract socket names (a sample)."""
    def sha(path: str) -> str | None:
        try:
            return hashlib.sha256(Path(path).read_bytes().strip()).hexdigest()
        except OSError:
            return None

    cgroups = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            path = line.split(":", 2)[2]
            if path not in ("", "/"):
                cgroups.append(path)
    except OSError:
        pass
    abstract = []
    try:
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith("@"):
                abstract.append(parts[7])
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "machine_id": sha("/etc/machine-id") or sha("/var/lib/dbus/machine-id"),
            "boot_id": sha("/proc/sys/kernel/random/boot_id"), "cgroups": sorted(set(cgroups)),
            "abstract": sorted(set(abstract))[:200]}


_TIOCGEXCL = 0x80045440  # _IOR('T', 0x40, int), Linux 3.8


def _tty_state(fd: int) -> tuple:
    """(termios attributes, window size, exclusive mode) of the terminal ``fd`` (tty_ioctl(4))."""
    excl = ctypes.c_int(0)
    try:
        fcntl.ioctl(fd, _TIOCGEXCL, excl)
    except OSError:
        pass
    return termios.tcgetattr(fd), fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8), excl.value


def _tty_output_stopped(slave: int, master: int) -> bool:
    """Whether the pty's output is stopped (tcflow TCOOFF): a write to the slave would block.
    One byte is written without blocking and read back from the master."""
    flags = fcntl.fcntl(slave, fcntl.F_GETFL)
    fcntl.fcntl(slave, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        os.write(slave, b".")
        stopped = False
    except BlockingIOError:
        stopped = True
    finally:
        fcntl.fcntl(slave, fcntl.F_SETFL, flags)
    for _ in range(64):
        r, _, _ = select.select([master], [], [], 0.05)
        if not r:
            break
        try:
            os.read(master, 4096)
        except (BlockingIOError, OSError):
            break
    return stopped


class Fixtures:
    """The host side of one probe: ``with Fixtures(names, root, tok) as fx:`` builds the fixtures
    ``names`` asks for under the directory ``root`` (created by the auditor), fills
    :attr:`params` (passed to the probe program), :attr:`policy` (changes the probe's policy
    needs: binds of canary directories) and :attr:`stdin` (an fd for the program, or None);
    :meth:`check` returns what changed on the host.  Raises OSError when a fixture cannot be
    made (the probe is then an error, not a pass)."""

    def __init__(self, names: tuple[str, ...], root: Path, tok: str) -> None:
        self.names, self.root, self.tok = names, root, tok
        self.params: dict = {}
        self.policy: dict = {}
        self.stdin: int | None = None
        self._cleanup: list = []
        self._checks: list = []

    def __enter__(self) -> "Fixtures":
        try:
            for name in self.names:
                getattr(self, "_" + name)()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for fn in reversed(self._cleanup):
            try:
                fn()
            except Exception:  # noqa: BLE001 - clean up all the rest
                pass
        self._cleanup.clear()

    def check(self) -> dict:
        """Host observations after the run: {"changes": [lines], ...} (empty lists: nothing changed)."""
        out: dict = {"changes": []}
        for fn in self._checks:
            fn(out)
        return out

    # ------------------------------------------------------------------ fixtures ----

    def _dir(self, name: str, mode: int) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
        return d

    def _canary(self) -> None:
        """A directory the sandbox's ids could write to (0777, a 0666 file) if it could reach it:
        only the sandbox's own layers stand between a probe and these files."""
        d = self._dir("canary", 0o755)
        (d / "secret.txt").write_text(f"jailpy-audit-secret-{self.tok}\n")
        os.chmod(d / "secret.txt", 0o644)
        (d / "target.txt").write_text("canary\n")
        os.chmod(d / "target.txt", 0o666)
        self._dir("canary/w", 0o777)
        self.params.update(canary=str(d), secret=f"jailpy-audit-secret-{self.tok}")
        self._watch(d)

    def _ro(self) -> None:
        """A writable-by-all canary directory bound READ-ONLY into the sandbox at the same path."""
        d = self._dir("ro", 0o777)
        (d / "target.txt").write_text("canary\n")
        os.chmod(d / "target.txt", 0o666)
        self.params["ro"] = str(d)
        self.policy.setdefault("ro_bind", []).append(str(d))
        self._watch(d)

    def _watch(self, d: Path) -> None:
        before = snapshot(d)
        self._checks.append(lambda out: out["changes"].extend(f"{d.name}/{c}" for c in diff(before, snapshot(d))))

    def _tcp(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        self._cleanup.append(s.close)
        self.params["tcp_port"] = s.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        u.setblocking(False)
        self._cleanup.append(u.close)
        self.params["udp_port"] = u.getsockname()[1]

        def check(out: dict) -> None:
            if select.select([s], [], [], 0)[0]:
                out["changes"].append(f"a connection reached the host's 127.0.0.1:{self.params['tcp_port']}")
            if select.select([u], [], [], 0)[0]:
                out["changes"].append(f"a datagram reached the host's 127.0.0.1:{self.params['udp_port']}")
        self._checks.append(check)

    def _abstract(self) -> None:
        name = f"jailpy-audit-{self.tok}"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind("\0" + name)
        s.listen(8)
        s.setblocking(False)
        self._cleanup.append(s.close)
        self.params["abstract"] = name
        self._checks.append(lambda out: select.select([s], [], [], 0)[0] and out["changes"].append(
            f"a connection reached the host's abstract socket @{name}"))

    def _sock(self) -> None:
        d = self._dir("sock", 0o755)
        path = str(d / "canary.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        os.chmod(path, 0o777)
        s.listen(8)
        s.setblocking(False)
        self._cleanup.append(s.close)
        self.params["sock"] = path
        self.params["well_known"] = [p for p in WELL_KNOWN_SOCKETS if os.path.exists(p)]
        self._checks.append(lambda out: select.select([s], [], [], 0)[0] and out["changes"].append(
            f"a connection reached the host socket {path}"))

    def _hostproc(self) -> None:
        """A helper process on the host, in its own session, with a secret in its environment and
        a marker in its argv; it records every signal it receives on a pipe."""
        r, w = os.pipe()
        marker = unique_marker()
        code = ("import os, signal, sys, time\n"
                "w = int(sys.argv[1])\n"
                "def h(s, f): os.write(w, bytes([s]))\n"
                "for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n"
                "    signal.signal(s, h)\n"
                "os.write(w, b'R')\n"
                "end = time.monotonic() + 120\n"
                "while time.monotonic() < end: time.sleep(0.2)\n")
        secret = f"jailpy-audit-env-{self.tok}"
        p = subprocess.Popen([sys.executable, "-S", "-c", code, str(w), marker], pass_fds=(w,), start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "JAILPY_AUDIT_SECRET": secret})
        os.close(w)
        self._cleanup.append(lambda: (p.kill(), p.wait(10), os.close(r)))
        if select.select([r], [], [], 10)[0] and os.read(r, 1) == b"R":
            pass
        os.set_blocking(r, False)
        self.params.update(host_pid=p.pid, host_pgid=p.pid, host_marker=marker, env_secret=secret,
                           caller_pid=os.getpid(), caller_pgid=os.getpgrp())

        def check(out: dict) -> None:
            try:
                got = os.read(r, 64)
            except BlockingIOError:
                got = b""
            if got:
                out["changes"].append("the host helper process received signal(s) " + ", ".join(
                    signal.Signals(b).name for b in got))
        self._checks.append(check)

    def _pty(self) -> None:
        """A pseudo-terminal the auditor owns, made the controlling terminal of a helper's session
        (as the caller's terminal is); its slave is the sandbox's stdin."""
        master, slave = os.openpty()
        self._cleanup.append(lambda: (os.close(master), os.close(slave)))
        name = os.ttyname(slave)
        r, w = os.pipe()
        code = ("import os, sys, time\n"
                "fd = os.open(sys.argv[1], os.O_RDWR)\n"  # a session leader's first tty: its controlling one
                "os.write(int(sys.argv[2]), b'R')\n"
                "end = time.monotonic() + 120\n"
                "while time.monotonic() < end: time.sleep(0.2)\n")
        p = subprocess.Popen([sys.executable, "-S", "-c", code, name, str(w)], pass_fds=(w,), start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        self._cleanup.append(lambda: (p.kill(), p.wait(10), os.close(r)))
        select.select([r], [], [], 10)
        os.set_blocking(master, False)
        self.stdin = slave
        self.params["tty"] = name

        settings = _tty_state(slave)

        def check(out: dict) -> None:
            try:
                got = os.read(master, 4096)
            except (BlockingIOError, OSError):
                got = b""
            if got:
                out["changes"].append(f"bytes appeared on the host's terminal: {got[:40]!r}")
            now = _tty_state(slave)
            if now != settings:
                out["changes"].append("the host's terminal settings changed (termios, window size or exclusive "
                                      "mode)")
            if _tty_output_stopped(slave, master):
                out["changes"].append("the host's terminal output was stopped (tcflow TCOOFF)")
            # whatever the program did, the auditor's own pty is put back for its next user
            termios.tcflow(slave, termios.TCOON)
            fcntl.ioctl(slave, termios.TIOCNXCL)
            if now[0] != settings[0]:
                termios.tcsetattr(slave, termios.TCSANOW, settings[0])
        self._checks.append(check)

    def _sysv(self) -> None:
        key = secrets.randbelow(1 << 30) + 1
        ids = []
        for fn, args, rm in ((_libc.shmget, (4096,), _libc.shmctl), (_libc.msgget, (), _libc.msgctl),
                             (_libc.semget, (1,), _libc.semctl)):
            i = fn(key, *args, _IPC_CREAT | 0o666)
            if i < 0:
                raise OSError(ctypes.get_errno(), f"System V IPC canary: {os.strerror(ctypes.get_errno())}")
            ids.append((rm, i))
        for rm, i in ids:
            self._cleanup.append(lambda rm=rm, i=i: rm(i, 0, _IPC_RMID, None) if rm is _libc.semctl
                                 else rm(i, _IPC_RMID, None))
        self.params["sysv_key"] = key

    def _mqueue(self) -> None:
        name = f"/jailpy-audit-{self.tok}".encode()
        fd = _libc.mq_open(name, os.O_CREAT | os.O_RDWR, ctypes.c_int(0o666), None)
        if fd < 0:
            e = ctypes.get_errno()
            if e in (errno.ENOSYS, errno.EPERM, errno.EACCES):
                self.params["mqueue"] = None  # no POSIX message queues here: nothing to share
                return
            raise OSError(e, f"POSIX message queue canary: {os.strerror(e)}")
        _libc.mq_close(fd)
        self._cleanup.append(lambda: _libc.mq_unlink(name))
        self.params["mqueue"] = name.decode()

    def _devshm(self) -> None:
        path = Path(f"/dev/shm/jailpy-audit-{self.tok}")
        path.write_text(self.tok)
        os.chmod(path, 0o666)
        self._cleanup.append(lambda: path.unlink(missing_ok=True))
        self.params["devshm"] = path.name

    def _keyring(self) -> None:
        desc = f"jailpy-audit-{self.tok}".encode()
        serial = _libc.syscall(ctypes.c_long(_NR_ADD_KEY), b"user", desc, b"canary", ctypes.c_long(6),
                               ctypes.c_long(_KEY_SPEC_USER_KEYRING))
        if serial < 0:
            self.params["key_desc"] = None  # the host itself has no keyrings for us (a container's seccomp)
            return
        self._cleanup.append(lambda: _libc.syscall(ctypes.c_long(_NR_KEYCTL), ctypes.c_long(_KEYCTL_INVALIDATE),
                                                   ctypes.c_long(serial)))
        self.params["key_desc"] = desc.decode()

    def _residue(self) -> None:
        """Nothing to set up: the probe's first run leaves objects for its second.  Should they have
        landed in the host's namespaces after all, they are removed from there afterwards."""
        key = int(self.tok[:7], 16) + 1  # as jailpy/audit/programs/ipc.py derives it
        mq = f"/jailpy-residue-{self.tok}".encode()
        shm = Path(f"/dev/shm/jailpy-residue-{self.tok}")

        def cleanup() -> None:
            i = _libc.shmget(key, 0, 0)
            if i >= 0:
                _libc.shmctl(i, _IPC_RMID, None)
            _libc.mq_unlink(mq)
            shm.unlink(missing_ok=True)

        def check(out: dict) -> None:
            if _libc.shmget(key, 0, 0) >= 0 or shm.exists():
                out["changes"].append("the probe's IPC objects appeared in the host's namespaces")
        self._cleanup.append(cleanup)
        self._checks.append(check)

    def _marker(self) -> None:
        marker = unique_marker()
        self.params["marker"] = marker

        def check(out: dict) -> None:
            left: list[int] = []
            end = time.monotonic() + 3.0  # the sandbox's processes die with its pid namespace
            while time.monotonic() < end:
                left = marker_pids(marker)
                if not left:
                    break
                time.sleep(0.02)
            for pid in left:  # a descendant of our own sandbox that got out: end it, by pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if left:
                out["changes"].append(f"process(es) {left} ('sleep {marker}') still ran on the host after the run")
        self._checks.append(check)

    def _secret_env(self) -> None:
        """A secret in the auditor's own environment (the sandbox's must start clean)."""
        key = "JAILPY_AUDIT_SECRET_TOKEN"
        old = os.environ.get(key)
        value = f"jailpy-audit-env-{self.tok}"
        os.environ[key] = value

        def restore() -> None:
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        self._cleanup.append(restore)
        self.params["env_secret"] = value

    def _hostinfo(self) -> None:
        self.params["host"] = host_facts()
        home = os.path.realpath(os.path.expanduser("~"))
        cwd = os.path.realpath(os.getcwd())
        secret_paths = [str(self.root)]
        if home not in ("/", "") and not (cwd == home or cwd.startswith(home + "/")):
            secret_paths.append(home)
        self.params["secret_paths"] = secret_paths

    def _race(self) -> None:
        """CVE-2021-30465 shape: a bind destination inside a directory the program owns (a --bind
        of a previous run) is swapped, again and again, with a symlink to a host path while the
        sandbox is built.  The host-side canary ``outside`` must stay untouched."""
        outside = self._dir("race-outside", 0o777)
        src = self._dir("race-src", 0o755)
        (src / "payload").write_text(self.tok)
        race = self._dir("race", 0o777)
        (race / "dst").mkdir()
        os.chmod(race / "dst", 0o777)
        # during set-up jailpy's scaffolding has the host's root at /oldroot: a destination resolved
        # naively (not inside the new root) would lead there and create a directory on the host
        os.symlink(f"/oldroot{outside}/made-by-jailpy", race / "dst.lnk")
        self.policy.setdefault("bind", []).append(str(race))
        self.policy.setdefault("ro_bind", []).append(f"{src}:{race}/dst")
        self.params.update(race=str(race), outside=str(outside), payload=self.tok)
        stop = threading.Event()
        a, b = os.fsencode(race / "dst"), os.fsencode(race / "dst.lnk")

        def flip() -> None:
            n = 0
            while not stop.is_set() and n < 600_000:  # bounded: at most a minute
                _libc.renameat2(-100, a, -100, b, _RENAME_EXCHANGE)
                n += 1
                time.sleep(0.0001)  # after every swap, so both states last
        t = threading.Thread(target=flip, daemon=True)
        t.start()

        def end() -> None:
            stop.set()
            t.join(5)
        self._cleanup.append(end)
        self._watch(outside)

        def check(out: dict) -> None:
            extra = set(os.listdir(race)) - {"dst", "dst.lnk"}
            if extra:
                out["changes"].append(f"new entries in the raced directory: {sorted(extra)}")
        self._checks.append(check)
