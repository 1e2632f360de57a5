"""jailpy.lsm.landlock against the running kernel: the ABI table, rulesets sized and masked by
ABI, rules derived from the mount plan, and what a restricted process can still do.

Every restriction is made in a forked child of the test (landlock_restrict_self(2) cannot be
undone), which reports over a pipe and exits; it only uses modules imported before it was
restricted (reading a new .py file would be refused too).  Sockets are on 127.0.0.1 and in the
abstract namespace under random names; signals go to the test's own processes, with signal 0.
The VM lane (an older Debian kernel, ABI 2 or none) runs the tests marked ``vm``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import socket

import pytest

from jailpy import Policy, mounts
from jailpy.lsm import landlock as ll

VM = pytest.mark.vm

KERNEL_ABI, WHY = ll.abi_or_reason()
NEEDS_LANDLOCK = pytest.mark.skipif(not KERNEL_ABI, reason=f"no Landlock here: {WHY}")
ABIS = list(range(1, min(KERNEL_ABI, ll.KNOWN_ABI) + 1))


def in_child(fn) -> object:
    """Run ``fn()`` in a forked child and return its repr()-able result (or the OSError it raised
    as ``("OSError", errno name)``)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                out = fn()
            except OSError as e:
                out = ("OSError", errno.errorcode.get(e.errno, e.errno), str(e))
            os.write(w, repr(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with open(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    assert data, "the child reported nothing"
    return eval(data)  # noqa: S307 - our own child's repr() of plain data


def attempt(fn) -> str:
    """'ok' or the errno name ``fn()`` raised."""
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def plan_for(abi: int, rules: tuple, ports: tuple = (), net: bool = False) -> ll.Plan:
    fs, netbits, scoped = ll.rights_for(abi)
    return ll.Plan(abi, ll.ruleset_attr(abi, fs, netbits if net else 0, scoped),
                   tuple(ll.Rule(r.path, r.access & fs, r.kind, r.mount, r.optional, r.is_dir) for r in rules), ports)


# ---------------------------------------------------------------- the ABI table ----

def test_rights_and_attribute_size_follow_the_abi():
    sizes = {1: 8, 2: 8, 3: 8, 4: 16, 5: 16, 6: 24, 7: 24}
    for abi, size in sizes.items():
        fs, net, scoped = ll.rights_for(abi)
        assert len(ll.ruleset_attr(abi, fs, net, scoped)) == size
        assert bool(fs & ll.FS["refer"][0]) == (abi >= 2)
        assert bool(fs & ll.FS["truncate"][0]) == (abi >= 3)
        assert bool(fs & ll.FS["ioctl_dev"][0]) == (abi >= 5)
        assert bool(net) == (abi >= 4)
        assert bool(scoped) == (abi >= 6)
    assert ll.rights_for(1)[0] == (1 << 13) - 1


def test_a_newer_kernel_is_used_at_the_newest_known_abi():
    plan, desc = ll.prepare("auto", mounts.prepare(Policy(cwd=False)))
    if not KERNEL_ABI:
        assert plan is None and desc["applied"] is False and desc["reason"]
        return
    assert plan.abi == min(KERNEL_ABI, ll.KNOWN_ABI) and desc["kernel_abi"] == KERNEL_ABI


@NEEDS_LANDLOCK
@VM
def test_a_stale_errno_is_not_an_error():
    # the PyPI package's bug: it checked errno instead of the return value
    ll._syscall(ctypes.c_long(3), ctypes.c_int(-1))  # close(-1): EBADF in ctypes' errno
    assert ctypes.get_errno() == errno.EBADF
    assert ll.kernel_abi() == KERNEL_ABI


# ---------------------------------------------------------------- rules from the mount plan ----

def test_rules_follow_the_mount_plan(tmp_path):
    (tmp_path / "rw").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "file").write_text("x")
    plan = mounts.prepare(Policy(cwd=False, bind=[f"{tmp_path}/rw:/data", f"{tmp_path}/file:/etc/one"],
                                 ro_bind=[f"{tmp_path}/ro:/ref", f"{tmp_path}/ro:/tmp/ref"], tmpfs=["/scratch"]))
    rules = {r.path: r for r in ll.rules_from(plan)}
    assert rules["/"].access == ll.FS["read_dir"][0]  # listing only: hidden directories list empty
    for top, kind, _ in plan.top:
        if kind == "hidden" or kind == "symlink":
            assert f"/{top}" not in rules  # nothing to read or run in a hidden directory
        else:
            assert rules[f"/{top}"].access == (ll.READ_EXECUTE if kind != "file" else ll.READ_EXECUTE & ll.FILE_RIGHTS)
    for path in ("/tmp", "/dev/shm", "/scratch", "/data"):
        assert rules[path].access == ll.FS_ALL and rules[path].mount
    assert rules["/etc/one"].access == ll.FILE_RIGHTS and not rules["/etc/one"].is_dir  # a file: file rights only
    assert rules["/ref"].access == ll.READ_EXECUTE and rules["/ref"].mount
    assert rules["/proc"].access == rules["/sys"].access == ll.READ_EXECUTE
    assert rules["/dev"].access == ll.DEVICES
    assert not any(r.access & ll.FS["write_file"][0] for p, r in rules.items()
                   if p not in ("/tmp", "/dev/shm", "/scratch", "/data", "/etc/one", "/dev", "/dev/mqueue"))
    # what Landlock cannot add to: a read-only bind inside the writable /tmp, a hidden /var/tmp
    text = " ".join(ll.not_covered(plan))
    assert "/tmp/ref" in text and ("/var/tmp" in text) == ("/var/tmp" in plan.hidden_nested)


@NEEDS_LANDLOCK
def test_description_says_what_is_handled():
    plan, desc = ll.prepare("on", mounts.prepare(Policy(cwd=False)))
    assert desc["applied"] and desc["abi"] == plan.abi
    assert desc["fs"]["all_rights"] == ["/dev/shm", "/tmp"] and desc["fs"]["read_dir"] == ["/"]
    assert ("refer" in desc["fs"]["handled"]) == (plan.abi >= 2)
    assert desc["scoped"] == (["abstract_unix_socket", "signal"] if plan.abi >= 6 else [])
    assert desc["net"]["handled"] == [] and "no allowlist" in desc["net"]["note"]
    assert plan.ports == ()


def test_off_applies_nothing():
    plan, desc = ll.prepare("off", mounts.prepare(Policy(cwd=False)))
    assert plan is None and desc == {"applied": False, "mode": "off", "reason": "--landlock off"}


@VM
def test_tcp_rules_need_abi_4():
    """The hook for a network policy: bind denied, connect only to its ports.  Where the kernel has
    no network rules (the VM lane's 6.1: ABI 2), ``on`` fails closed and ``auto`` says so."""
    mp = mounts.prepare(Policy(cwd=False))
    tcp = ll.TcpRules(connect=(443, 80))
    if KERNEL_ABI >= 4:
        plan, desc = ll.prepare("on", mp, tcp)
        assert plan.ports == ((80, ll.NET["connect_tcp"][0]), (443, ll.NET["connect_tcp"][0]))
        assert desc["net"] == {"handled": ["bind_tcp", "connect_tcp"], "tcp_connect": [80, 443], "tcp_bind": []}
    elif KERNEL_ABI:
        with pytest.raises(ll.Unavailable, match="ABI 4"):
            ll.prepare("on", mp, tcp)
        plan, desc = ll.prepare("auto", mp, tcp)
        assert plan.ports == () and "no network rules" in desc["net"]["note"]
    else:
        with pytest.raises(ll.Unavailable, match="Landlock"):
            ll.prepare("on", mp, tcp)


# ---------------------------------------------------------------- the kernel enforces it ----

@NEEDS_LANDLOCK
@VM
@pytest.mark.parametrize("abi", ABIS)
def test_each_abi_confines_files(abi, tmp_path):
    rw, rw2, ro = tmp_path / "rw", tmp_path / "rw2", tmp_path / "ro"
    for d in (rw, rw2, ro):
        d.mkdir()
    (ro / "f").write_text("data")
    (tmp_path / "outside").write_text("x")
    (tmp_path / "one").write_text("one")
    plan = plan_for(abi, (ll.Rule(str(rw), ll.FS_ALL, "all_rights"), ll.Rule(str(rw2), ll.FS_ALL, "all_rights"),
                          ll.Rule(str(ro), ll.READ_EXECUTE, "read_execute"),
                          ll.Rule(str(tmp_path / "one"), ll.READ_EXECUTE & ll.FILE_RIGHTS, "read_execute",
                                  is_dir=False)))

    def child():
        before = attempt(lambda: os.close(os.open(tmp_path / "outside", os.O_RDONLY)))
        ll.apply(plan)
        return {
            "before": before,
            "write rw": attempt(lambda: os.close(os.open(rw / "new", os.O_CREAT | os.O_WRONLY, 0o600))),
            "mkdir rw": attempt(lambda: os.mkdir(rw / "d")),
            "read ro": attempt(lambda: os.close(os.open(ro / "f", os.O_RDONLY))),
            "write ro": attempt(lambda: os.close(os.open(ro / "f", os.O_WRONLY))),
            "create ro": attempt(lambda: os.close(os.open(ro / "g", os.O_CREAT | os.O_WRONLY, 0o600))),
            "read outside": attempt(lambda: os.close(os.open(tmp_path / "outside", os.O_RDONLY))),
            "read a file rule": attempt(lambda: os.close(os.open(tmp_path / "one", os.O_RDONLY))),
            "rename rw to ro": attempt(lambda: os.rename(rw / "new", ro / "moved")),
            # across directories: REFER (ABI 2); ABI 1 refuses every such rename
            "rename rw to rw2": attempt(lambda: os.rename(rw / "new", rw2 / "moved")),
            "access W_OK ro": os.access(ro / "f", os.W_OK),  # access(2) does not consult Landlock
        }
    got = in_child(child)
    assert got == {"before": "ok", "write rw": "ok", "mkdir rw": "ok", "read ro": "ok", "write ro": "EACCES",
                   "create ro": "EACCES", "read outside": "EACCES", "read a file rule": "ok",
                   "rename rw to ro": "EACCES", "rename rw to rw2": "ok" if abi >= 2 else "EXDEV",
                   "access W_OK ro": True}, got


@NEEDS_LANDLOCK
@pytest.mark.parametrize("abi", ABIS)
def test_scoping_of_signals_and_abstract_sockets(abi):
    name = f"\0jailpy-test-{secrets.token_hex(8)}".encode()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(name)
    srv.listen(4)
    parent = os.getpid()
    plan = plan_for(abi, ())

    def child():
        ll.apply(plan)
        out = {"kill parent": attempt(lambda: os.kill(parent, 0)), "kill self": attempt(lambda: os.kill(os.getpid(), 0))}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            out["connect outside"] = attempt(lambda: c.connect(name))
        inner = f"\0jailpy-test-{secrets.token_hex(8)}".encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, socket.socket(socket.AF_UNIX) as c:
            s.bind(inner)
            s.listen(1)
            out["connect inside"] = attempt(lambda: c.connect(inner))
        return out
    try:
        got = in_child(child)
    finally:
        srv.close()
    scoped = abi >= 6
    assert got == {"kill parent": "EPERM" if scoped else "ok", "kill self": "ok",
                   "connect outside": "EPERM" if scoped else "ok", "connect inside": "ok"}, got


@pytest.mark.skipif(KERNEL_ABI < 4, reason="TCP rules need Landlock ABI 4 (Linux 6.7)")
def test_tcp_connect_only_to_allowed_ports_and_no_bind():
    servers = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        servers.append(s)
    allowed, other = (s.getsockname()[1] for s in servers)
    abi = min(KERNEL_ABI, ll.KNOWN_ABI)
    plan = plan_for(abi, (), ports=((allowed, ll.NET["connect_tcp"][0]),), net=True)

    def child():
        ll.apply(plan)
        out = {}
        for what, port in (("allowed", allowed), ("other", other)):
            with socket.socket() as c:
                out[what] = attempt(lambda: c.connect(("127.0.0.1", port)))
        with socket.socket() as b:
            out["bind"] = attempt(lambda: b.bind(("127.0.0.1", 0)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            out["udp (not Landlock's)"] = attempt(lambda: u.bind(("127.0.0.1", 0)))
        return out
    try:
        got = in_child(child)
    finally:
        for s in servers:
            s.close()
    assert got == {"allowed": "ok", "other": "EACCES", "bind": "EACCES", "udp (not Landlock's)": "ok"}, got


@NEEDS_LANDLOCK
@VM
def test_no_mount_once_restricted(tmp_path):
    """Landlock forbids changes to the mount topology once a domain is in force (EPERM): why
    jailpy applies it after pivot_root."""
    target = tmp_path / "mnt"
    target.mkdir()
    plan = plan_for(min(KERNEL_ABI, ll.KNOWN_ABI), ())
    from jailpy import _syscalls as sc

    def child(restrict: bool):
        def go():
            try:
                sc.unshare(sc.CLONE_NEWNS | (0 if os.getuid() == 0 else sc.CLONE_NEWUSER))
            except OSError as e:
                return ("skip", f"unshare: {e.strerror}")
            if restrict:
                ll.apply(plan)
            return attempt(lambda: sc.mount("tmpfs", str(target), "tmpfs", 0, "size=1m"))
        return go
    baseline = in_child(child(False))
    if isinstance(baseline, tuple):
        pytest.skip(baseline[1])
    assert baseline == "ok"
    assert in_child(child(True)) == "EPERM"


@NEEDS_LANDLOCK
def test_a_missing_rule_path_is_named(tmp_path):
    plan = plan_for(min(KERNEL_ABI, ll.KNOWN_ABI), (ll.Rule(str(tmp_path / "gone"), ll.READ_EXECUTE, "read_execute"),
                                                    ll.Rule(str(tmp_path / "maybe"), ll.READ_EXECUTE, "read_execute",
                                                            optional=True)))
    got = in_child(lambda: ll.apply(plan))
    assert got[:2] == ("OSError", "ENOENT") and "gone" in got[2] and "maybe" not in got[2]


@NEEDS_LANDLOCK
def test_a_mount_rule_must_land_on_a_mount_root(tmp_path):
    (tmp_path / "d").mkdir()
    plan = plan_for(min(KERNEL_ABI, ll.KNOWN_ABI), (ll.Rule(str(tmp_path / "d"), ll.FS_ALL, "all_rights", mount=True),))
    got = in_child(lambda: ll.apply(plan))
    assert got[:2] == ("OSError", "EXDEV") and "not the mount the plan made" in got[2]

