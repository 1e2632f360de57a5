# Filesystem probes (run inside the sandbox after _lib.py; see its header for the protocol).
# Host files are only ever the auditor's canaries; kernel control files are opened, never written.
import ctypes
import os
import stat
import subprocess
import time

AT_FDCWD = -100
MS_REMOUNT, MS_BIND = 0x20, 0x1000
MNT_DETACH = 2
MOUNT_ATTR_RDONLY = 0x1
OPEN_TREE_CLONE = 1
S_IFCHR, S_IFBLK = 0o020000, 0o060000


def host_path_attempts(what, path, secret=None):
    """Read ``path`` (a host path the sandbox must not reach); through when it reads (and, with
    ``secret``, when the secret is in it)."""
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
        ok = secret is None or secret.encode() in data
        return attempt(what, "openat", 0, None, through=ok, layer=None if ok else "mount")
    except OSError as e:
        return attempt(what, "openat", -1, ename(e.errno), layer=_path_layer(e.errno, path, os.R_OK))


def _path_layer(err, path=None, mode=os.W_OK):
    """The layer an errno of a file operation on ``path`` points to.  EACCES where access(2) says
    the file permissions and mounts allow ``mode``: Landlock (or AppArmor), which access(2) does
    not consult (landlock(7); jailpy.audit.judge tells the two apart)."""
    if err == errno.EACCES and path is not None:
        try:
            if os.access(path, mode):
                return "landlock"
        except (OSError, ValueError):
            pass
    return {errno.ENOENT: "mount", errno.ENOTDIR: "mount", errno.EROFS: "mount", errno.EACCES: "permissions",
            errno.EPERM: "capability"}.get(err, "kernel")


def fs_call(what, fn, path, mode=os.W_OK, call="openat"):
    """Run ``fn()``, a change to ``path`` (a file, or the directory an entry is made or removed in);
    the attempt is ``through`` when it succeeded, else stopped by the layer of its errno."""
    try:
        fn()
        return attempt(what, call, 0, None, through=True)
    except OSError as e:
        return attempt(what, call, -1, ename(e.errno), layer=_path_layer(e.errno, path, mode))


def write_attempts(d, label):
    """Write into directory ``d``: append to target.txt, create a file and a directory in it."""
    def app():
        with open(os.path.join(d, "target.txt"), "ab") as f:
            f.write(b"jailpy-audit-was-here\n")
    sub = os.path.join(d, "w") if os.path.isdir(os.path.join(d, "w")) else d
    return [fs_call(f"append to {label}/target.txt", app, os.path.join(d, "target.txt")),
            fs_call(f"create {label}/{'w/' if sub != d else ''}new.txt",
                    lambda: open(os.path.join(sub, "new.txt"), "xb").close(), sub),
            fs_call(f"mkdir {label}/newdir", lambda: os.mkdir(os.path.join(d, "newdir")), d, call="mkdir")]


def fs_host_canary_path(p):
    c = p["canary"]
    att = [host_path_attempts(f"read the host canary {c}/secret.txt", c + "/secret.txt", p["secret"])]
    att += write_attempts(c, c)
    return {"attempts": att}


def fs_dotdot_traversal(p):
    c = p["canary"]
    att = []
    up = "../" * 40
    att.append(host_path_attempts("open ../../..(x40)" + c + "/secret.txt from the cwd",
                                  up + c.lstrip("/") + "/secret.txt", p["secret"]))
    att.append(host_path_attempts("open /proc/self/root/.." + c + "/secret.txt",
                                  "/proc/self/root/../../.." + c + "/secret.txt", p["secret"]))
    os.chdir("/")
    for _ in range(50):
        os.chdir("..")
    st = os.stat(".")
    host_root = tuple(p["host_root"])
    att.append(attempt("chdir('..') 50 times from /: where does it end?", "chdir", 0, None,
                       through=(st.st_dev, st.st_ino) == host_root, layer="mount",
                       detail="at the host's / " if (st.st_dev, st.st_ino) == host_root else "still the sandbox's /"))
    return {"attempts": att}


def fs_rootfs_write(p):
    att = []
    libc.access.argtypes = [ctypes.c_char_p, ctypes.c_int]
    for d in ("/", "/etc", "/usr", "/usr/bin", "/var", "/opt", "/boot", "/home", "/root", "/run", "/srv", "/mnt",
              "/var/tmp"):
        if not os.path.isdir(d):
            continue
        ctypes.set_errno(0)
        r = libc.access(d.encode(), 2)  # W_OK: nothing is written
        e = ename(ctypes.get_errno()) if r else None
        att.append(attempt(f"access({d}, W_OK)", "access", r, e, through=r == 0, layer=_path_layer(ctypes.get_errno())))
    return {"attempts": att}


def fs_ro_bind_write(p):
    d = p["ro"]
    att = write_attempts(d, d)
    for what, fn, call in ((f"chmod {d}/target.txt", lambda: os.chmod(d + "/target.txt", 0o600), "chmod"),
                           (f"rename {d}/target.txt", lambda: os.rename(d + "/target.txt", d + "/moved.txt"), "rename"),
                           (f"unlink {d}/target.txt", lambda: os.unlink(d + "/target.txt"), "unlink"),
                           (f"set the times of {d}/target.txt", lambda: os.utime(d + "/target.txt", (0, 0)), "utimensat")):
        att.append(fs_call(what, fn, d if call in ("rename", "unlink") else d + "/target.txt", call=call))
    return {"attempts": att}


def fs_remount_rw(p):
    d = p["ro"]
    att = [sysc(f"mount(NULL, {d}, NULL, MS_REMOUNT|MS_BIND) (drop its read-only flag)", "mount", 0, d.encode(), 0,
                MS_REMOUNT | MS_BIND, 0)]
    attr = (ctypes.c_uint64 * 4)(0, MOUNT_ATTR_RDONLY, 0, 0)  # struct mount_attr: set, clr, propagation, userns
    att.append(sysc(f"mount_setattr({d}, attr_clr=MOUNT_ATTR_RDONLY)", "mount_setattr", AT_FDCWD, d.encode(), 0,
                    ctypes.byref(attr), 32))
    att += write_attempts(d, d)
    return {"attempts": att}


def fs_umount_mask(p):
    att = []
    for path in ("/proc/kallsyms", "/home", "/sys/firmware"):
        if os.path.exists(path):
            a = sysc(f"umount2({path}, MNT_DETACH) to see what it hides", "umount2", path.encode(), MNT_DETACH)
            att.append(a)
    return {"attempts": att}


def fs_new_mount_api(p):
    att = [sysc('fsopen("tmpfs") (a new filesystem context)', "fsopen", b"tmpfs", 0),
           sysc("open_tree(/, OPEN_TREE_CLONE) (a copy of the root mount to attach elsewhere)", "open_tree", AT_FDCWD,
                b"/", OPEN_TREE_CLONE),
           sysc('fspick("/") (reconfigure the root filesystem)', "fspick", AT_FDCWD, b"/", 0)]
    return {"attempts": att}


def fs_proc_exe_overwrite(p):
    att = []
    for path, what in (("/proc/self/exe", "its own interpreter (/proc/self/exe)"),
                       ("/proc/1/exe", "the sandbox PID 1's interpreter (/proc/1/exe), jailpy's python"),
                       (p["host_python"], f"jailpy's interpreter by its host path {p['host_python']}")):
        ok, err, _ = open_only(path, os.O_WRONLY)  # opened for writing, closed at once: nothing written
        layer = {"EACCES": "capability" if path.startswith("/proc/1") else "permissions"}.get(err)
        if err == "EROFS" or (err == "ENOENT" and not path.startswith("/proc")):
            layer = "mount"
        if err == "ETXTBSY":
            layer = "kernel"
        att.append(attempt(f"open {what} for writing (CVE-2019-5736)", "openat", 0 if ok else -1, err, through=ok,
                           layer=layer))
    return {"attempts": att}


def fs_leaked_fd_cwd(p):
    att = []
    fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
    extra = []
    for fd in fds:
        if fd > 2:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # the directory listing's own fd, closed by now
            extra.append(f"{fd} -> {target}")
    att.append(attempt("file descriptors other than 0-2 inherited from jailpy (CVE-2024-21626)", "close_range", 0 if
                       extra else -1, None, through=bool(extra), layer="jailpy",
                       detail=", ".join(extra) or "none"))
    cwd = os.getcwd()
    try:
        same = os.stat(cwd) == os.stat(".")
    except OSError:
        same = False
    att.append(attempt(f"a working directory outside the root ({cwd})", "getcwd", 0 if not same else -1,
                       None, through=not same, layer="mount"))
    for path in ("/proc/1/cwd", "/proc/1/root", "/proc/1/fd/3", "/proc/1/fd/4"):
        try:
            os.chdir(path)
            st = os.stat(".")
            os.chdir("/")
            out = (st.st_dev, st.st_ino) == tuple(p["host_root"])
            att.append(attempt(f"chdir {path} (a directory of jailpy's PID 1)", "chdir", 0, None, through=out,
                               layer="mount"))
        except OSError as e:
            att.append(attempt(f"chdir {path} (a directory of jailpy's PID 1)", "chdir", -1, ename(e.errno),
                               layer="capability" if e.errno == errno.EACCES else "jailpy"))
    return {"attempts": att}


def fs_bind_symlink_race(p):
    race = p["race"]
    seen = []
    for path in (race + "/dst/payload", p["outside"] + "/made-by-jailpy/payload", "/payload"):
        try:
            with open(path) as f:
                if f.read() == p["payload"]:
                    seen.append(path)
        except OSError:
            pass
    return {"seen": seen}


def _watch_exec(argv, uid):
    """Start ``argv`` with stdin a pipe we hold (so it waits), watch its /proc status for 0.5 s:
    the highest effective uid change and capabilities it got; then end it (our child)."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(argv, stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        os.close(r)
    euids, caps = set(), set()
    end = time.monotonic() + 0.5
    while time.monotonic() < end and proc.poll() is None:
        for line in (read_text(f"/proc/{proc.pid}/status") or "").splitlines():
            if line.startswith("Uid:"):
                euids.add(line.split()[2])
            elif line.startswith("CapEff:"):
                caps.add(line.split()[1])
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    os.close(w)
    return euids, caps


def fs_setuid_exec(p):
    me = str(os.geteuid())
    att = []
    for path in ("/usr/bin/su", "/bin/su", "/usr/bin/passwd", "/usr/bin/chfn", "/usr/bin/newgrp", "/usr/bin/gpasswd"):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not st.st_mode & stat.S_ISUID:
            continue
        euids, caps = _watch_exec([path], me)
        got = sorted(euids - {me}) + sorted(c for c in caps if int(c, 16))
        mp, opts, _ = mount_of(path)
        layer = "mount" if "nosuid" in opts.split(",") else "no_new_privs" if status().get("NoNewPrivs") == "1" \
            else "namespace"
        att.append(attempt(f"run the setuid-root {path} as uid {me}", "execve", 0 if got else -1, None,
                           through=bool(got), layer=layer, detail=f"euid seen {sorted(euids)}, CapEff {sorted(caps)}; "
                           f"{mp} mounted {opts}"))
        break
    if not att:
        return {"skip": "no setuid-root binary in the sandbox's view to try"}
    return {"attempts": att}


def fs_file_caps(p):
    path = "/tmp/jailpy-audit-fcap"
    open(path, "wb").close()
    # struct vfs_cap_data, revision 2: CAP_SYS_ADMIN (21) permitted, effective bit set
    blob = (ctypes.c_uint32 * 5)(0x02000001, 1 << 21, 0, 0, 0)
    att = [sysc("setxattr security.capability (CAP_SYS_ADMIN) on its own file", "setxattr", path.encode(),
                b"security.capability", ctypes.byref(blob), 20, 0)]
    os.unlink(path)
    for cand in ("/usr/bin/ping", "/bin/ping", "/usr/bin/arping", "/usr/bin/mtr-packet", "/usr/bin/dumpcap",
                 "/usr/bin/newuidmap", "/usr/bin/gst-ptp-helper", "/usr/sbin/clockdiff"):
        try:
            os.getxattr(cand, "security.capability")
        except OSError:
            continue
        euids, caps = _watch_exec([cand, "-h"], str(os.geteuid()))
        got = [c for c in caps if int(c, 16)]
        att.append(attempt(f"run {cand}, which has file capabilities", "execve", 0 if got else -1,
                           None, through=bool(got), layer="mount" if "nosuid" in mount_of(cand)[1]
                           else "capability", detail=f"CapEff seen {sorted(caps)}"))
        break
    return {"attempts": att}


def fs_mknod_device(p):
    att = []
    for what, mode, dev in (("a block device (8:0, a disk)", S_IFBLK | 0o600, os.makedev(8, 0)),
                            ("a character device (1:1, /dev/mem)", S_IFCHR | 0o600, os.makedev(1, 1))):
        path = f"/tmp/jailpy-audit-node-{dev}"
        a = sysc(f"mknod {what} in /tmp", "mknodat", AT_FDCWD, path.encode(), mode, dev)
        if a["ret"] == 0:
            os.unlink(path)  # never opened
        att.append(a)
    a = sysc("mknod a character device in /dev", "mknodat", AT_FDCWD, b"/dev/jailpy-audit-mem", S_IFCHR | 0o600,
             os.makedev(1, 1))
    if a["errno"] == "EROFS":
        a["layer"] = "mount"
    att.append(a)
    return {"attempts": att, "tmp_mount": mount_of("/tmp")[1]}


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def fs_setid_bits(p):
    # A setuid/setgid file made in a writable bind outlives the run and runs as the sandbox's
    # host uid for anyone.  Tried on files in the sandbox's own /tmp (a tmpfs of this run, gone
    # with it, never visible to the host); each file is removed at once.
    d = "/tmp/jailpy-audit-setid"
    os.makedirs(d, exist_ok=True)
    f = d + "/file"
    with open(f, "wb"):
        pass
    os.chmod(f, 0o644)
    att = []

    def setid(a, path):
        """through when the call returned and left S_ISUID or S_ISGID on ``path``."""
        try:
            bits = os.lstat(path).st_mode & 0o6000
        except OSError:
            bits = 0
        if a["ret"] >= 0:
            a.update(through=bool(bits), layer=None if bits else "kernel",
                     detail=f"the file kept {'S_ISUID' if bits & 0o4000 else ''}{'|' if bits == 0o6000 else ''}"
                            f"{'S_ISGID' if bits & 0o2000 else ''}" if bits else "returned, but no setid bit stayed")
        return a

    for what, name, args in (("chmod(file, 04755)", "chmod", (f.encode(), 0o4755)),
                             ("chmod(file, 02755)", "chmod", (f.encode(), 0o2755)),
                             ("fchmodat(AT_FDCWD, file, 06755)", "fchmodat", (AT_FDCWD, f.encode(), 0o6755, 0)),
                             ("fchmodat2(AT_FDCWD, file, 04755, 0)", "fchmodat2", (AT_FDCWD, f.encode(), 0o4755, 0))):
        att.append(setid(sysc(what, name, *args), f))
        os.chmod(f, 0o644)
    fd = os.open(f, os.O_RDONLY)
    try:
        att.append(setid(sysc("fchmod(fd, 04755)", "fchmod", fd, 0o4755), f))
    finally:
        os.close(fd)
    creat = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
    how = _OpenHow(creat, 0o4755, 0)
    for name, what, args, shown in (
            ("open", "open(new, O_CREAT, 04755)", lambda n: (n, creat, 0o4755), None),
            ("openat", "openat(AT_FDCWD, new, O_CREAT, 02755)", lambda n: (AT_FDCWD, n, creat, 0o2755), None),
            ("creat", "creat(new, 04755)", lambda n: (n, 0o4755), None),
            ("mknod", "mknod(new, S_IFREG | 04755)", lambda n: (n, stat.S_IFREG | 0o4755, 0), None),
            ("openat2", "openat2(AT_FDCWD, new, {O_CREAT, 04755}) (its mode is in a struct)",
             lambda n: (AT_FDCWD, n, ctypes.byref(how), ctypes.sizeof(how)), [AT_FDCWD, 0, 0, ctypes.sizeof(how)])):
        new = f"{d}/new-{name}"
        a = sysc(what, name, *args(new.encode()))  # an fd it returns is closed by sysc
        if shown is not None:
            a["args"] = shown
        att.append(setid(a, new))
        if os.path.lexists(new):
            os.unlink(new)
    os.unlink(f)
    os.rmdir(d)
    return {"attempts": att}


def fs_open_by_handle(p):
    # "shocker": open a file of the underlying filesystem by handle, past the sandbox's mounts.
    # name_to_handle_at first (is it available at all?), then a forged handle for inode 2 (an
    # ext4 root directory) of a block-device filesystem; opened O_RDONLY and closed at once.
    att = []
    handle = ctypes.create_string_buffer(8 + 128)
    ctypes.c_uint32.from_buffer(handle, 0).value = 128
    mount_id = ctypes.c_int(0)
    a = sysc("name_to_handle_at(/)", "name_to_handle_at", AT_FDCWD, b"/", handle, ctypes.byref(mount_id), 0)
    if a["through"]:  # a handle of a file it can see anyway: harmless by itself
        a.update(through=False, layer=None, detail="a handle of a file it can already see")
    att.append(a)
    target = None
    for line in (read_text("/proc/self/mountinfo", 1 << 20) or "").splitlines():
        parts = line.split(" ")
        fstype = parts[parts.index("-") + 1]
        if fstype in ("ext4", "ext3", "ext2", "xfs", "btrfs") and os.path.isdir(parts[4]):
            target = parts[4]
            break
    if target is not None:
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        forged = (ctypes.c_uint32 * 4)(8, 1, 2, 0)  # handle_bytes 8, FILEID_INO32_GEN, inode 2, generation 0
        a = sysc(f"open_by_handle_at(fd of {target}, forged handle of the filesystem's root)", "open_by_handle_at", fd,
                 ctypes.byref(forged), os.O_RDONLY)
        os.close(fd)
        if a["errno"] == "EPERM":
            a["layer"] = "capability"
        att.append(a)
    else:
        att.append(attempt("find a block-device filesystem to forge a handle for", "openat", -1, None, through=False,
                           layer="mount", detail="none visible in the sandbox"))
    return {"attempts": att}


def _masked(st):
    """True when an opened /proc or /sys entry is one of jailpy's masks (a bind of /dev/null)."""
    return st is not None and stat.S_ISCHR(st[3]) and st[2] == os.makedev(1, 3)


def fs_proc_sys_write(p):
    att = []
    for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches",
                 "/proc/sys/fs/binfmt_misc/register", "/sys/kernel/uevent_helper", "/proc/sysrq-trigger",
                 "/proc/sys/kernel/hostname"):
        ok, err, st = open_only(path, os.O_WRONLY)  # never written
        if ok and _masked(st):
            att.append(attempt(f"open {path} for writing", "openat", 0, None, through=False, layer="mount",
                               detail="masked (/dev/null)"))
            continue
        layer = _path_layer(getattr(errno, err or "EIO", 0), path, os.W_OK)
        if err == "ENOENT" and path not in p["host_has"]:
            layer = "kernel"  # this kernel has no such file at all
        att.append(attempt(f"open {path} for writing (open only)", "openat", 0 if ok else -1, err, through=ok,
                           layer=layer))
    return {"attempts": att}


def fs_proc_kernel_files(p):
    att = []
    for path in ("/proc/kcore", "/proc/kmsg", "/dev/kmsg", "/dev/mem", "/dev/port", "/proc/kallsyms",
                 "/proc/sched_debug", "/proc/timer_list", "/dev/vda", "/dev/sda"):
        ok, err, st = open_only(path, os.O_RDONLY)  # never read (reading kmsg would consume the host's log)
        if ok and _masked(st):
            att.append(attempt(f"open {path}", "openat", 0, None, through=False, layer="mount",
                               detail="masked (/dev/null)"))
            continue
        if err == "ENOENT" and path not in p["host_has"]:
            continue  # neither here nor on the host: nothing to reach
        layer = _path_layer(getattr(errno, err or "EIO", 0), path, os.R_OK)
        att.append(attempt(f"open {path} for reading (open only)", "openat", 0 if ok else -1, err, through=ok,
                           layer=layer))
    return {"attempts": att}


def fs_chroot_escape(p):
    os.makedirs("/tmp/jail/a", exist_ok=True)
    att = [sysc("chroot(/tmp/jail) (first step of the classic chroot escape)", "chroot", b"/tmp/jail")]
    if att[0]["ret"] == 0:
        for _ in range(50):
            os.chdir("..")
        raw("chroot", b".")
        st = os.stat("/")
        att.append(attempt("chdir('..') out of the chroot, chroot('.')", "chroot", 0, None,
                           through=(st.st_dev, st.st_ino) == tuple(p["host_root"]), layer="mount"))
    return {"attempts": att}


def fs_hidden_dirs(p):
    att = []
    for d, host_names in sorted(p["hidden"].items()):
        try:
            names = set(os.listdir(d))
        except OSError as e:
            att.append(attempt(f"list {d}", "getdents64", -1, ename(e.errno), layer=_path_layer(e.errno)))
            continue
        leaked = sorted(names & set(host_names))
        att.append(attempt(f"list the hidden {d}", "getdents64", 0, None, through=bool(leaked),
                           layer="mount", detail=f"host entries visible: {leaked[:5]}" if leaked else
                           f"{len(names)} entries, none of the host's {len(host_names)}"))
    return {"attempts": att}


def fs_fuse_overlay(p):
    # CVE-2023-0386 needs a FUSE filesystem (and an overlay over it) mounted by the attacker
    ok, err, _ = open_only("/dev/fuse", os.O_RDWR)
    att = [attempt("open /dev/fuse (CVE-2023-0386 needs a FUSE mount)", "openat", 0 if ok else -1, err, through=ok,
                   layer="mount" if err == "ENOENT" else None)]
    a = sysc("mknod /tmp/fuse c 10 229", "mknodat", AT_FDCWD, b"/tmp/jailpy-audit-fuse", S_IFCHR | 0o666,
             os.makedev(10, 229))
    if a["ret"] == 0:
        os.unlink("/tmp/jailpy-audit-fuse")
    att.append(a)
    os.makedirs("/tmp/ov/l", exist_ok=True)
    att.append(sysc("mount an overlay filesystem", "mount", b"overlay", b"/tmp/ov", b"overlay", 0,
                    b"lowerdir=/tmp/ov/l:/tmp"))
    if att[-1]["ret"] == 0:
        raw("umount2", b"/tmp/ov", MNT_DETACH)
    return {"attempts": att}


def fs_cgroup_release_agent(p):
    # CVE-2022-0492: write a cgroup v1 release_agent (runs as root on the host).  Opened only.
    att = []
    base = "/sys/fs/cgroup"
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        if "release_agent" in filenames:
            found.append(os.path.join(dirpath, "release_agent"))
        if dirpath.count("/") > 5:
            dirnames[:] = []
    if not found:
        att.append(attempt("find a cgroup v1 release_agent under /sys/fs/cgroup", "openat", -1, None, through=False,
                           layer="mount", detail="none visible: only the sandbox's own cgroup, read-only, if any"))
    for path in found[:4]:
        ok, err, _ = open_only(path, os.O_WRONLY)
        att.append(attempt(f"open {path} for writing (open only)", "openat", 0 if ok else -1, err, through=ok,
                           layer=_path_layer(getattr(errno, err or "EIO", 0))))
    os.makedirs("/tmp/cg", exist_ok=True)
    a = sysc("mount a cgroup v1 hierarchy (rdma) to reach its release_agent", "mount", b"cgroup", b"/tmp/cg",
             b"cgroup", 0, b"rdma")
    if a["ret"] == 0:
        raw("umount2", b"/tmp/cg", MNT_DETACH)
    att.append(a)
    return {"attempts": att}


PROBES = {
    "fs-host-canary-path": fs_host_canary_path, "fs-dotdot-traversal": fs_dotdot_traversal,
    "fs-rootfs-write": fs_rootfs_write, "fs-ro-bind-write": fs_ro_bind_write, "fs-remount-rw": fs_remount_rw,
    "fs-umount-mask": fs_umount_mask, "fs-new-mount-api": fs_new_mount_api,
    "fs-proc-exe-overwrite": fs_proc_exe_overwrite, "fs-leaked-fd-cwd": fs_leaked_fd_cwd,
    "fs-bind-symlink-race": fs_bind_symlink_race, "fs-setuid-exec": fs_setuid_exec, "fs-file-caps": fs_file_caps,
    "fs-mknod-device": fs_mknod_device, "fs-setid-bits": fs_setid_bits, "fs-open-by-handle": fs_open_by_handle,
    "fs-proc-sys-write": fs_proc_sys_write, "fs-proc-kernel-files": fs_proc_kernel_files,
    "fs-chroot-escape": fs_chroot_escape, "fs-hidden-dirs": fs_hidden_dirs, "fs-fuse-overlay": fs_fuse_overlay,
    "fs-cgroup-release-agent": fs_cgroup_release_agent,
}
