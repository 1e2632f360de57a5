"""The probe table of ``jailpy audit``: one :class:`Probe` per escape technique.

Each probe names the program that runs inside the sandbox (a function in
jailpy/audit/programs/<category>.py, by id), the host fixtures it needs (jailpy/audit/host.py),
the policy changes it runs under (limits for the resource probes) and the judge that decides
its verdict (jailpy/audit/judge.py).  CVE numbers are given where a probe re-expresses the idea
of a known container escape; no probe reuses exploit code, and every one is harmless when the
defence it tests is missing (SECURITY.md, safety rules for escape tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import judge as j

CATEGORIES = ("filesystem", "process", "ipc", "network", "kernel", "resources", "terminal", "info-leak")
PROGRAMS = {"filesystem": "filesystem", "process": "process", "ipc": "ipc", "network": "network", "kernel": "kernel",
            "resources": "resources", "terminal": "terminal", "info-leak": "info"}
"""Category -> program file (jailpy/audit/programs/NAME.py)."""

EXOTIC_FAMILIES = {
    "AF_BLUETOOTH": 31, "AF_VSOCK": 40, "AF_ALG": 38, "AF_XDP": 44, "AF_CAN": 29, "AF_TIPC": 30, "AF_RDS": 21,
    "AF_LLC": 26, "AF_IEEE802154": 36, "AF_PPPOX": 24, "AF_KEY": 15, "AF_X25": 9, "AF_AX25": 3, "AF_APPLETALK": 5,
    "AF_NFC": 39, "AF_SMC": 43, "AF_MCTP": 45, "AF_PHONET": 35, "AF_CAIF": 37, "AF_QIPCRTR": 42, "AF_ATMPVC": 8,
    "AF_NETROM": 6, "AF_ROSE": 11, "AF_DECnet": 12,
}
"""Socket families a sandbox never needs; each may autoload a kernel module (net-pf-N)."""

IP_PROTOCOLS = {
    "MPTCP": (2, 1, 262), "MPTCP over IPv6": (10, 1, 262), "UDP-Lite": (2, 2, 136), "UDP-Lite over IPv6": (10, 2, 136),
    "SCTP": (2, 1, 132), "SCTP as SOCK_SEQPACKET, protocol 0": (2, 5, 0), "DCCP as SOCK_DCCP, protocol 0": (2, 6, 0),
    "L2TP over IP": (2, 2, 115), "SMC over IPv4": (2, 1, 256), "SOCK_PACKET, which becomes AF_PACKET": (2, 10, 0x300),
}
"""IPv4/IPv6 sockets beyond TCP, UDP and ICMP, as (family, type, protocol); each may autoload a
kernel module (net-pf-F-proto-P-type-T).  The audit also tries socketpair() of the first one."""


@dataclass(frozen=True)
class Probe:
    """One escape technique.  ``id``: kebab-case, unique; ``category``: one of CATEGORIES;
    ``technique``: one line (CVE number if any); ``host``: Fixtures names; ``policy``: Policy
    changes (lists are appended to the policy's, limits never loosen it); ``params``: constant
    parameters for the program; ``needs_cgroup``: reported "skipped" when no cgroup can be had;
    ``runs``: how many runs of one Sandbox (sharing its user namespace); ``judge``: Evidence ->
    Verdict."""

    id: str
    category: str
    technique: str
    host: tuple[str, ...] = ()
    policy: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    needs_cgroup: bool = False
    runs: int = 1
    judge: Callable = j.by_attempts

    @property
    def program(self) -> str:
        """The program file (without .py) under jailpy/audit/programs/."""
        return PROGRAMS[self.category]


def _p(id: str, category: str, technique: str, **kw) -> Probe:
    return Probe(id, category, technique, **kw)


FS, PROC, IPC, NET, KERN, RES, TERM, INFO = CATEGORIES

PROBES: tuple[Probe, ...] = (
    # ---------------------------------------------------------------- filesystem
    _p("fs-host-canary-path", FS, "read and write a host canary directory by its absolute host path",
       host=("canary",)),
    _p("fs-dotdot-traversal", FS, "reach host files with ../ paths, /proc/self/root/.. and chdir('..') past /",
       host=("canary",)),
    _p("fs-rootfs-write", FS, "write into the host's directories through the sandbox's root (access W_OK; nothing "
       "is written)"),
    _p("fs-ro-bind-write", FS, "write, chmod, rename, unlink in a read-only bind of a host directory",
       host=("ro",)),
    _p("fs-remount-rw", FS, "remount a read-only bind read-write (mount MS_REMOUNT, mount_setattr), then write",
       host=("ro",)),
    _p("fs-umount-mask", FS, "unmount a mask (/proc/kallsyms, a hidden /home, /sys/firmware) to see beneath it"),
    _p("fs-new-mount-api", FS, "the new mount API: fsopen, open_tree(OPEN_TREE_CLONE), fspick"),
    _p("fs-proc-exe-overwrite", FS, "open /proc/self/exe, /proc/1/exe and jailpy's interpreter for writing "
       "(CVE-2019-5736)"),
    _p("fs-leaked-fd-cwd", FS, "an fd or working directory leaked from outside the root; chdir into PID 1's "
       "(CVE-2024-21626, CVE-2016-9962)"),
    _p("fs-bind-symlink-race", FS, "swap a bind destination with a symlink to a host path while the sandbox is "
       "built (CVE-2021-30465)", host=("race",), runs=8, judge=j.symlink_race),
    _p("fs-setuid-exec", FS, "run a setuid-root binary (su) as a non-root uid and watch its credentials",
       policy={"uid": 1000, "gid": 1000}),
    _p("fs-file-caps", FS, "set a file capability on its own file; run a binary with file capabilities"),
    _p("fs-mknod-device", FS, "mknod a disk block device and /dev/mem"),
    _p("fs-setid-bits", FS, "set S_ISUID/S_ISGID on its own file (chmod family, open/openat/creat/openat2, mknod): "
       "left in a writable bind, it runs as the sandbox's uid for any local user (tried in its own /tmp)"),
    _p("fs-open-by-handle", FS, "open_by_handle_at with a forged handle of the filesystem root ('shocker')"),
    _p("fs-proc-sys-write", FS, "open core_pattern, modprobe, binfmt_misc register, uevent_helper, sysrq-trigger for "
       "writing (open only, never written)"),
    _p("fs-proc-kernel-files", FS, "open /proc/kcore, /proc/kmsg, /dev/kmsg, /dev/mem, disks (open only)"),
    _p("fs-chroot-escape", FS, "the classic chroot escape: chroot into a subdirectory, chdir('..') out"),
    _p("fs-hidden-dirs", FS, "list the hidden host directories (/home, /root, /run...)"),
    _p("fs-fuse-overlay", FS, "/dev/fuse and an overlay mount, what CVE-2023-0386 needs"),
    _p("fs-cgroup-release-agent", FS, "reach a cgroup v1 release_agent: open it, mount a hierarchy (CVE-2022-0492)"),
    # ---------------------------------------------------------------- process
    _p("proc-ptrace-pid1", PROC, "ptrace jailpy's PID 1 (PTRACE_SEIZE), which writes the run's status"),
    _p("proc-ptrace-child", PROC, "ptrace at all, even its own child (kernel attack surface; CVE-2019-13272)"),
    _p("proc-process-vm-readv", PROC, "read PID 1's memory with process_vm_readv"),
    _p("proc-pidfd-getfd", PROC, "take a file descriptor of PID 1 with pidfd_getfd"),
    _p("proc-host-proc", PROC, "read a host process's /proc/PID/environ and root by its host pid",
       host=("hostproc",)),
    _p("proc-pid1-files", PROC, "read /proc/1/environ, mem, root, fd of jailpy's PID 1"),
    _p("proc-kill-host", PROC, "signal a host process and its group; signal 0 to the caller, its group, and -1",
       host=("hostproc",)),
    _p("proc-outlive-exit", PROC, "outlive the program's exit with setsid and a double fork", host=("marker",),
       judge=j.left_behind("exit")),
    _p("proc-outlive-wall", PROC, "outlive the wall-time limit with setsid and a double fork", host=("marker",),
       policy={"wall_time": 1.0}, judge=j.left_behind("wall")),
    _p("proc-nested-userns", PROC, "a nested user namespace to regain every capability"),
    _p("proc-setns", PROC, "setns into a namespace; open PID 1's namespaces"),
    _p("proc-caps-left", PROC, "capabilities left in any set, before and after execve as uid 0; no_new_privs"),
    _p("proc-reboot", PROC, "reboot(2) (bad magic)"),
    _p("proc-kexec", PROC, "kexec_load and kexec_file_load (invalid arguments)"),
    _p("proc-module-load", PROC, "init_module, finit_module, delete_module (invalid arguments)"),
    _p("proc-clock", PROC, "set the host's clock: adjtimex, clock_settime (invalid values)"),
    _p("proc-core-dump", PROC, "raise RLIMIT_CORE to run the host's core_pattern helper on a crash"),
    # ---------------------------------------------------------------- ipc
    _p("ipc-abstract-socket", IPC, "connect to a host abstract unix socket; list the host's (CVE-2020-15257)",
       host=("abstract", "hostinfo")),
    _p("ipc-path-socket", IPC, "connect to a host unix socket file: a canary, D-Bus, docker, X11, systemd",
       host=("sock",)),
    _p("ipc-sysv", IPC, "open the host's System V shared memory, message queue and semaphores", host=("sysv",)),
    _p("ipc-mqueue", IPC, "open the host's POSIX message queue", host=("mqueue",)),
    _p("ipc-dev-shm", IPC, "open a host file in /dev/shm", host=("devshm",)),
    _p("ipc-keyrings", IPC, "find a key in the host user's keyring (keyctl, request_key)", host=("keyring",)),
    _p("ipc-residue", IPC, "leave files, IPC objects and keys for the next run of the same Sandbox",
       host=("residue",), runs=2),
    # ---------------------------------------------------------------- network
    _p("net-egress", NET, "a route to the outside (UDP connect: no packet sent); interfaces other than lo"),
    _p("net-host-loopback", NET, "connect to a canary TCP server and send to a UDP one on the host's 127.0.0.1",
       host=("tcp",)),
    _p("net-raw-socket", NET, "raw IPv4 and IPv6 sockets"),
    _p("net-packet-socket", NET, "a packet socket (AF_PACKET)"),
    _p("net-netlink", NET, "a netlink route socket: which interfaces does it see?"),
    _p("net-exotic-families", NET, "exotic socket families (bluetooth, vsock, alg, xdp, can, tipc, rds...) and "
       "their module autoload", params={"families": EXOTIC_FAMILIES}),
    _p("net-ip-protocols", NET, "IPv4/IPv6 sockets beyond TCP, UDP and ICMP: MPTCP, UDP-Lite, SCTP, DCCP, L2TP, SMC, "
       "SOCK_PACKET, socketpair (module autoload)", params={"ip_protocols": IP_PROTOCOLS}),
    # ---------------------------------------------------------------- kernel surface
    _p("kernel-io-uring", KERN, "io_uring_setup"),
    _p("kernel-bpf", KERN, "bpf(2): map create, program load"),
    _p("kernel-perf-event", KERN, "perf_event_open"),
    _p("kernel-userfaultfd", KERN, "userfaultfd (user-mode only, which needs no privilege since Linux 5.11)"),
    _p("kernel-fsconfig-userns", KERN, "fsopen/fsconfig, directly and in a nested user namespace (CVE-2022-0185)"),
    _p("kernel-x32", KERN, "a system call through the x32 ABI (nr | 0x40000000)"),
    _p("kernel-int80", KERN, "a system call through int 0x80 (the i386 ABI)"),
    _p("kernel-ioctl-64bit", KERN, "TIOCSTI with bit 32 of the request set, to slip past a 64-bit comparison",
       host=("pty",)),
    _p("kernel-ldisc-autoload", KERN, "set an unregistered tty line discipline (module autoload, TIOCSETD)"),
    _p("kernel-personality", KERN, "personality(READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE): ASLR off"),
    _p("kernel-modify-ldt", KERN, "modify_ldt (16-bit segments)"),
    _p("kernel-ioport", KERN, "ioperm: direct access to an I/O port"),
    # ---------------------------------------------------------------- resources
    _p("res-fork-bomb", RES, "fork until it fails (pids limit 16)", policy={"pids": 16}, params={"bound": 300},
       needs_cgroup=True, judge=j.count_limited("processes", "pids")),
    _p("res-thread-bomb", RES, "start threads until it fails (pids limit 16)", policy={"pids": 16},
       params={"bound": 300}, needs_cgroup=True, judge=j.count_limited("threads", "pids")),
    _p("res-fd-exhaustion", RES, "open files until it fails (RLIMIT_NOFILE 64)", policy={"nofile": 64},
       params={"bound": 20000}, judge=j.count_limited("open files", "rlimit")),
    _p("res-memory-bomb", RES, "allocate and touch memory (memory limit 64M)", policy={"memory": "64M"},
       params={"bound": 256 << 20}, needs_cgroup=True, judge=j.memory_bomb),
    _p("res-tmpfs-fill", RES, "fill /tmp and /dev/shm (tmp_size 16M)", policy={"tmp_size": "16M"},
       params={"bound": 64 << 20}, judge=j.tmpfs_fill),
    _p("res-inode-fill", RES, "create empty files in /tmp until it fails (tmp_size 16M: 1024 inodes)",
       policy={"tmp_size": "16M"}, params={"bound": 20000}, judge=j.count_limited("files", "mount")),
    _p("res-output-flood", RES, "write 16 MiB to stdout (output limit 64K)", policy={"output_limit": "64K"},
       params={"bound": 16 << 20, "limit": 64 << 10}, judge=j.output_flood),
    _p("res-cpu-hog", RES, "spin two processes for 8 s (CPU time limit 1 s)", policy={"cpu_time": 1.0},
       params={"seconds": 8.0}, needs_cgroup=True, judge=j.cpu_hog),
    _p("res-sched-fifo", RES, "SCHED_FIFO and a negative nice value, to starve the host's CPUs"),
    _p("res-aio-events", RES, "io_setup: native AIO events come from fs.aio-max-nr, one count for the whole machine "
       "(one event, given back at once)"),
    _p("res-pipe-stall", RES, "keep stdout and stderr open in a left-over process to stall jailpy",
       host=("marker",), judge=j.left_behind("stall")),
    _p("res-cgroup-escape", RES, "move itself out of its cgroup (open cgroup.procs for writing; its cgroup path)",
       policy={"pids": 64}, needs_cgroup=True),
    # ---------------------------------------------------------------- terminal
    _p("term-tiocsti", TERM, "TIOCSTI into the caller's terminal (a pty the auditor owns; NULL character)",
       host=("pty",)),
    _p("term-tioclinux", TERM, "TIOCLINUX (console selection and paste); open /dev/tty0, /dev/console",
       host=("pty",)),
    _p("term-steal-ctty", TERM, "TIOCSCTTY: make the caller's terminal its controlling terminal, or steal it",
       host=("pty",)),
    _p("term-stop-output", TERM, "tcflow(TCOOFF) on the caller's terminal: whatever writes there next hangs (jailpy "
       "did); let flow again at once", host=("pty",)),
    _p("term-change-settings", TERM, "change the caller's terminal beyond the run: tcsetattr, TIOCSWINSZ (both with "
       "the values it has), tcflush, a break, exclusive mode", host=("pty",)),
    # ---------------------------------------------------------------- information leaks
    _p("info-env-secrets", INFO, "the caller's environment secrets", host=("secret_env",)),
    _p("info-mountinfo", INFO, "host paths in /proc/self/mountinfo", host=("hostinfo",)),
    _p("info-hostname", INFO, "the host's name", host=("hostinfo",)),
    _p("info-machine-id", INFO, "the host's machine id (/etc/machine-id, /var/lib/dbus/machine-id)",
       host=("hostinfo",)),
    _p("info-kallsyms", INFO, "kernel addresses in /proc/kallsyms (KASLR)"),
    _p("info-dmesg", INFO, "the kernel log: syslog(2), /dev/kmsg"),
    _p("info-proc-keys", INFO, "/proc/keys and /proc/key-users"),
    _p("info-host-processes", INFO, "host processes in /proc", host=("hostproc",)),
    _p("info-cgroup-path", INFO, "the host's cgroup paths in /proc/self/cgroup", host=("hostinfo",)),
)

BY_ID = {p.id: p for p in PROBES}
assert len(BY_ID) == len(PROBES), "probe ids must be unique"
