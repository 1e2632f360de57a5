"""Kernel isolation: new namespaces, no host processes, hostname, network, capabilities, /proc masks."""

from __future__ import annotations

import json
import os
import socket

import pytest

from conftest import NAMESPACES, PROCS, jail, jail_py


# ------------------------------------------------------------------ namespaces ----

def test_every_namespace_is_new():
    code = ("import os, json; print(json.dumps({n: [os.stat('/proc/self/ns/' + n).st_ino, "
            "os.readlink('/proc/self/ns/' + n)] for n in %r}))" % (NAMESPACES,))
    p = jail_py(code)
    assert p.returncode == 0, p.stderr
    inside = json.loads(p.stdout)
    for ns in NAMESPACES:
        host_ino = os.stat(f"/proc/self/ns/{ns}").st_ino
        ino, link = inside[ns]
        assert link == f"{ns}:[{ino}]"
        assert ino != host_ino, f"the sandbox shares the host's {ns} namespace"


# ------------------------------------------------------------------- processes ----

def test_proc_shows_only_the_sandbox_pids(host_sleep):
    _, marker = host_sleep
    p = jail_py(PROCS)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["pids"] == sorted({1, r["me"]}), "other processes are visible in the sandbox's /proc"
    assert r["me"] <= 5
    assert r["ppid"] == 1, "the program's parent is not the sandbox's PID 1"
    assert "jailpy" in r["init"], f"PID 1 is not jailpy's init: {r['init']!r}"
    assert not any(marker in c for c in r["cmds"]), "a host process is visible inside"


def test_host_pid_is_not_reachable(host_sleep):
    proc, _ = host_sleep
    code = (
        "import os, sys\n"
        "pid = int(sys.argv[1])\n"
        "try:\n"
        "    os.kill(pid, 0); print('reachable')\n"
        "except ProcessLookupError: print('ESRCH')\n"
        "except PermissionError: print('EPERM')\n"
    )
    p = jail_py(code, argv=(str(proc.pid),))
    assert p.returncode == 0, p.stderr
    if proc.pid > 3:  # pids 1..3 exist inside too; larger ones must be unknown there
        assert p.stdout == b"ESRCH\n"
    assert proc.poll() is None, "the host process was disturbed"


# -------------------------------------------------------------------- hostname ----

def test_default_hostname_is_jailpy():
    host_before = socket.gethostname()
    p = jail_py("import socket, os; print(socket.gethostname(), os.uname().nodename)")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"jailpy jailpy\n"
    assert socket.gethostname() == host_before


def test_hostname_flag():
    p = jail("--hostname", "foo", "--", "hostname")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"foo\n"


def test_writing_proc_sys_hostname_fails_read_only():
    code = (
        "import errno\n"
        "try:\n"
        "    open('/proc/sys/kernel/hostname', 'w').write('pwned')\n"
        "    print('written')\n"
        "except OSError as e: print(errno.errorcode[e.errno])\n"
        "print(open('/proc/sys/kernel/hostname').read().strip())\n"
    )
    p = jail_py(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"EROFS\njailpy\n"


# --------------------------------------------------------------------- network ----

def test_only_loopback_interface():
    # if_nameindex asks over netlink, which the default seccomp policy denies (tested in test_seccomp.py)
    p = jail_py("import socket, json; print(json.dumps(socket.if_nameindex()))", "--seccomp", "none")
    assert p.returncode == 0, p.stderr
    assert [name for _, name in json.loads(p.stdout)] == ["lo"]


def test_loopback_is_up_inside():
    code = (
        "import socket\n"
        "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n"
        "c = socket.create_connection(srv.getsockname(), timeout=5)\n"
        "conn, _ = srv.accept(); c.sendall(b'ping'); print(conn.recv(4).decode())\n"
    )
    p = jail_py(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"ping\n"


def test_host_loopback_server_is_unreachable(host_tcp_server):
    srv, port = host_tcp_server
    code = (
        "import socket, sys, errno\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print('connected')\n"
        "except OSError as e: print(errno.errorcode.get(e.errno, e))\n"
    )
    p = jail_py(code, argv=(str(port),))
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"ECONNREFUSED\n"
    with pytest.raises(BlockingIOError):  # nothing reached the host's server either
        srv.accept()


def test_no_route_out():
    # the main routing table of the sandbox's network namespace is empty (the host's is not
    # necessarily, so this is checked inside only); no packet is sent
    p = jail("--", "cat", "/proc/net/route")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert lines[0].split()[0] == "Iface" and lines[1:] == []


def test_host_abstract_unix_socket_is_unreachable():
    # abstract unix sockets belong to the network namespace (an X11 or D-Bus escape otherwise)
    name = f"\0jailpy-test-{os.getpid()}-{os.urandom(4).hex()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(name)
    srv.listen(1)
    srv.setblocking(False)
    try:
        code = (
            "import socket, sys, errno\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "try:\n"
            "    s.connect(sys.argv[1].replace('@', '\\0', 1)); print('connected')\n"
            "except OSError as e: print(errno.errorcode.get(e.errno, e))\n"
        )
        p = jail_py(code, argv=("@" + name[1:],))
        assert p.returncode == 0, p.stderr
        assert p.stdout == b"ECONNREFUSED\n"
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()


def test_host_sysv_shared_memory_is_invisible():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    key = int.from_bytes(os.urandom(3), "big") | 0x4A000000
    shmid = libc.shmget(key, 4096, 0o1000 | 0o600)  # IPC_CREAT, private to us
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    try:
        with open("/proc/sysvipc/shm") as f:
            assert any(line.split()[0] == str(key) for line in f.readlines()[1:])  # the control: we see it
        p = jail("--", "cat", "/proc/sysvipc/shm")
        assert p.returncode == 0, p.stderr
        keys = [line.split()[0] for line in p.stdout.decode().splitlines()[1:]]
        assert str(key) not in keys
        assert keys == []
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


def test_cgroup_namespace_root():
    p = jail("--", "cat", "/proc/self/cgroup")
    assert p.returncode == 0, p.stderr
    assert all(line.endswith(":/") for line in p.stdout.decode().splitlines())


# ---------------------------------------------------------------- capabilities ----

def test_no_capabilities_and_no_new_privs():
    p = jail("--", "cat", "/proc/self/status")
    assert p.returncode == 0, p.stderr
    fields = dict(line.split(":", 1) for line in p.stdout.decode().splitlines() if ":" in line)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap].strip(), 16) == 0, f"{cap} = {fields[cap].strip()}"
    assert fields["NoNewPrivs"].strip() == "1"


def test_privileged_operations_fail_inside():
    # uid 0 inside, but without capabilities: mount(2) and sethostname(2), which the
    # namespaces' owner could do with CAP_SYS_ADMIN, are refused
    code = (
        "import errno, ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out = []\n"
        "r = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None); out.append(errno.errorcode.get(ctypes.get_errno()) if r else 'mounted')\n"
        "r = libc.sethostname(b'x', 1); out.append(errno.errorcode.get(ctypes.get_errno()) if r else 'renamed')\n"
        "print(' '.join(out))\n"
    )
    p = jail_py(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"EPERM EPERM\n"


# ----------------------------------------------------------------- /proc masks ----

MASKED = ["kcore", "kallsyms", "keys", "sysrq-trigger", "kmsg", "timer_list", "key-users", "vmallocinfo"]


@pytest.mark.parametrize("name", MASKED)
def test_proc_sensitive_file_is_masked(name):
    path = f"/proc/{name}"
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist on this host")
    code = (
        "import os, stat, sys, json\n"
        "p = sys.argv[1]; st = os.stat(p); out = {'chr': stat.S_ISCHR(st.st_mode), 'rdev': st.st_rdev,\n"
        "  'null': os.stat('/dev/null').st_rdev}\n"
        "try:\n"
        "    out['data'] = open(p, 'rb').read(4096).hex()\n"
        "except OSError as e: out['error'] = e.errno\n"
        "print(json.dumps(out))\n"
    )
    p = jail_py(code, argv=(path,))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    # masked: /dev/null is bound over it (the host's is a regular proc file)
    assert r["chr"] and r["rdev"] == r["null"], f"{path} is not masked: {r}"
    assert r.get("data", "") == "", f"{path} gave content inside"


def test_proc_sys_is_read_only_mount():
    p = jail_py("import os; print(os.statvfs('/proc/sys').f_flag & os.ST_RDONLY)")
    assert p.returncode == 0, p.stderr
    assert int(p.stdout) == os.ST_RDONLY
