#!/usr/bin/env python3
"""A hostile-looking program: it tries what malware would try, and reports what worked.

    jailpy exec -- python3 examples/untrusted.py     # inside the sandbox: mostly BLOCKED
    python3 examples/untrusted.py                    # outside: mostly ALLOWED

Every attempt is harmless, so the script is safe to run outside the sandbox too:
it never prints file contents or variable values (names only), the only file it
creates (/etc/jailpy-was-here, empty) is removed at once, the network test only
asks the kernel for a route (connect() on a UDP socket sends no packet), and the
fork test starts at most 50 children that sleep 0.2 s and are all reaped.

ALLOWED means the attempt got something; BLOCKED means it got nothing.  Exits 0.
Python 3.11 standard library only.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import sys
import time

# the fixed inode numbers of the host's (initial) namespaces, include/linux/proc_ns.h
PROC_UTS_INIT_INO = 0xEFFFFFFE
PROC_PID_INIT_INO = 0xEFFFFFFC

MAX_FORKS = 50
CANARY = "/etc/jailpy-was-here"
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")

rows: list[tuple[str, bool, str, list[str]]] = []  # (attempt, allowed, detail, extra lines)


def report(attempt: str, allowed: bool, detail: str, extra: list[str] | None = None) -> None:
    rows.append((attempt, allowed, detail, extra or []))


def why(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, str(e))


# ---------------------------------------------------------------- attempts ----

def try_ssh() -> None:
    """List ~/.ssh of every home we can name and try to read the private keys in them."""
    homes: list[str] = []
    if os.environ.get("HOME"):
        homes.append(os.environ["HOME"])
    try:
        homes.append(pwd.getpwuid(os.getuid()).pw_dir)  # the home /etc/passwd gives our uid
    except KeyError:
        pass
    homes.append("/root")
    try:  # and, being hostile, every human user's home listed in /etc/passwd
        homes += [p.pw_dir for p in pwd.getpwall() if 1000 <= p.pw_uid < 60000][:20]
    except OSError:
        pass
    seen: set[str] = set()
    notes: list[str] = []
    listed = keys = 0
    for home in homes:
        d = os.path.join(home, ".ssh")
        if d in seen:
            continue
        seen.add(d)
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            notes.append(f"{d}: {why(e)}")
            continue
        listed += 1
        readable = []
        for n in names:
            p = os.path.join(d, n)
            if n.endswith(".pub") or not os.path.isfile(p):
                continue
            try:
                with open(p, "rb") as f:
                    head = f.read(64)  # enough to recognise a key; never printed
            except OSError:
                continue
            if n.startswith("id_") or b"PRIVATE KEY" in head:
                readable.append(n)
        keys += len(readable)
        notes.append(f"{d}: listed, {len(names)} entries, private keys readable: {', '.join(readable) or 'none'}")
    detail = (f"{listed} .ssh dir(s) listed, {keys} private key(s) readable" if listed
              else f"no .ssh dir could be listed ({len(seen)} tried)")
    report("read ~/.ssh", listed > 0, detail, notes)


def try_write_etc() -> None:
    """Create an empty /etc/jailpy-was-here; if that works, remove it at once."""
    try:
        fd = os.open(CANARY, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:  # not ours: leave it alone, ask the kernel instead
        ok = os.access("/etc", os.W_OK)
        report("write into /etc", ok, f"{CANARY} already exists (not ours, left alone); /etc writable: {ok}")
        return
    except OSError as e:
        report("write into /etc", False, f"create {CANARY}: {why(e)}")
        return
    os.close(fd)
    os.unlink(CANARY)
    report("write into /etc", True, f"created {CANARY} (and removed it again)")


def try_shadow() -> None:
    try:
        with open("/etc/shadow", "rb") as f:
            n = len(f.read(4096))  # never printed
    except OSError as e:
        report("read /etc/shadow", False, why(e))
        return
    report("read /etc/shadow", True, f"read {n} bytes (not shown)")


def try_network() -> None:
    """Is there an interface other than lo, and a route out?  No packet is sent."""
    try:
        with open("/proc/net/dev") as f:  # (socket.if_nameindex() asks over netlink, which seccomp denies)
            ifaces = [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]
    except OSError as e:
        ifaces = [f"? ({why(e)})"]
    others = [i for i in ifaces if i != "lo"]
    routes = []
    for family, addr in ((socket.AF_INET, ("192.0.2.1", 9)), (socket.AF_INET6, ("2001:db8::1", 9))):
        try:  # TEST-NET-1 / documentation addresses; connect() on UDP only picks a route
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect(addr)
            routes.append(f"{addr[0]}: route exists")
        except OSError as e:
            routes.append(f"{addr[0]}: no route ({why(e)})")
    allowed = bool(others) or any("route exists" in r for r in routes)
    report("use the network", allowed, f"interfaces: {', '.join(ifaces) or 'none'}; " + "; ".join(routes))


def _ancestors_and_self() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])  # field 4, ppid
        except (OSError, ValueError, IndexError):
            break
    return pids


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(200)
    except OSError as e:
        return f"({why(e)})"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "(kernel thread)"


def try_processes() -> None:
    pids = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())
    mine = _ancestors_and_self()
    others = [p for p in pids if p not in mine]
    extra = [f"pid {p}: {_cmdline(p)[:100]}" for p in pids[:5]]
    report("see other processes", bool(others),
           f"{len(pids)} pids in /proc, {len(others)} not ours or our parents'", extra)
    try:
        ino = os.stat("/proc/self/ns/pid").st_ino
    except OSError as e:
        report("PID 1 is the host's init", False, f"cannot tell: /proc/self/ns/pid: {why(e)}")
        return
    host = ino == PROC_PID_INIT_INO
    report("PID 1 is the host's init", host,
           ("host pid namespace" if host else "own pid namespace") + f"; pid 1 = {_cmdline(1)[:60]}")


def try_fork() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    children, failure = [], ""
    for _ in range(MAX_FORKS):
        try:
            pid = os.fork()
        except OSError as e:
            failure = f"; fork #{len(children) + 1}: {why(e)}"
            break
        if pid == 0:
            try:
                time.sleep(0.2)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
    n = len(children)
    report("fork many children", n == MAX_FORKS, f"{n}/{MAX_FORKS} forks succeeded, all reaped{failure}")


def try_env() -> None:
    names = sorted(k for k in os.environ if any(w in k.upper() for w in SECRET_WORDS))
    if names:
        report("read secrets from env", True, f"found {', '.join(names)} (values not shown)")
    else:
        allv = sorted(os.environ)
        shown = ", ".join(allv[:8]) + (", ..." if len(allv) > 8 else "")
        report("read secrets from env", False, f"no *KEY*/*TOKEN*/*SECRET*/*PASSWORD* variable; {len(allv)} vars: {shown}")


def try_caps() -> None:
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    eff = int(status.get("CapEff", "0"), 16)
    uid, outside = os.getuid(), "host uid ?"
    try:
        with open("/proc/self/uid_map") as f:
            for line in f:
                inside, host, count = (int(x) for x in line.split())
                if inside <= uid < inside + count:
                    outside = f"host uid {host + uid - inside}"
    except (OSError, ValueError):
        pass
    report("keep capabilities", eff != 0,
           f"CapEff={status.get('CapEff', '?')} ({bin(eff).count('1')} caps), uid {uid} "
           f"({outside}), NoNewPrivs={status.get('NoNewPrivs', '?')}")


def try_hostname() -> None:
    name = socket.gethostname()
    try:
        host = os.stat("/proc/self/ns/uts").st_ino == PROC_UTS_INIT_INO
    except OSError:
        host = True
    report("learn the host name", host, f"hostname {name!r} ({'host' if host else 'own'} UTS namespace)")


def main() -> int:
    print(f"untrusted.py: pid {os.getpid()}, uid {os.getuid()}, cwd {os.getcwd()}")
    for attempt in (try_ssh, try_write_etc, try_shadow, try_network, try_processes, try_fork, try_env,
                    try_caps, try_hostname):
        try:
            attempt()
        except Exception as e:  # noqa: BLE001 - an attempt that crashed got nothing
            report(attempt.__name__[4:], False, f"failed: {type(e).__name__}: {e}")
    width = max(len(r[0]) for r in rows)
    print(f"{'ATTEMPT':<{width}}  RESULT   DETAIL")
    for attempt, allowed, detail, extra in rows:
        print(f"{attempt:<{width}}  {'ALLOWED' if allowed else 'BLOCKED'}  {detail}")
        for line in extra:
            print(f"{'':<{width}}           {line}")
    n = sum(r[1] for r in rows)
    print(f"{n} of {len(rows)} attempts ALLOWED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
