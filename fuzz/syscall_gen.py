"""The in-sandbox half of the syscall fuzzer (fuzz/syscall_fuzz.py starts it; do not run it yourself).

It runs as the program of a locked ``jailpy`` sandbox, under ``/usr/bin/python3 -I -S`` with the
standard library only, and issues random x86_64 system calls with random arguments through
``ctypes`` (``syscall(2)``).  It refuses to run unless it is inside a sandbox (see
:func:`inside_sandbox`): it must never target the host.

Two processes, both inside the sandbox:

driver  reads the JSON config, ignores every signal it can (SIGKILL and SIGSTOP never reach it:
        see below), and forks workers one after the
        other; it watches their progress through a shared anonymous mapping (MAP_SHARED, see
        mmap(2)) and, when a worker hangs for ``watchdog`` seconds, SIGKILLs it.  When a worker
        dies (a random call killed it: rt_sigreturn with a garbage frame, uretprobe outside a
        uprobe trampoline, an x32 number the seccomp filter kills, a signal from a timer it set...),
        the next worker starts at the call after the fatal one.  At the
        end it prints one JSON document (the summary) on stdout.
worker  issues calls ``start`` .. ``count - 1``: the numbers and arguments of call ``i`` depend
        only on (seed, i) (:func:`plan`), so a run is reproducible call by call.  Arguments are
        small ints, 0, -1, small negatives, powers of two, page multiples, random 32/64-bit
        values and pointers into a scratch buffer (guarded by PROT_NONE pages) holding random
        bytes, a few valid structures (timespec, iovec, sockaddr, ...) and a pool of path strings
        (the canary directories, /tmp, /proc/self, the host path of the hidden canary).

Bounds: every call is interrupted by a SIGALRM from an interval timer (setitimer(2),
``call_timeout`` seconds; the handler is installed without SA_RESTART, so a blocking call fails
with EINTR), and the driver's watchdog ends a worker that blocked the timer.  Calls that are
never issued: reboot, kexec_load, kexec_file_load, init_module, finit_module, delete_module,
exit, exit_group (until the end) and vfork (its child would run on the parent's stack).
Calls whose arguments are tamed so the worker survives them: clone (no CLONE_VM, CLONE_VFORK,
CLONE_THREAD, CLONE_SIGHAND, CLONE_SETTLS, CLONE_PARENT; a fork child _exits at once), clone3
(a NULL struct), the kill family (never SIGKILL or SIGSTOP, nor jailpy's KILL_ALL to PID 1),
mmap with MAP_FIXED and munmap/mprotect/madvise/mremap/mlock/mseal (only inside the scratch
buffer), brk (only queries and huge values: never shrinks the heap).  Any argument equal to the
driver's pid is replaced by the worker's.  Everything else, including what crashes the worker,
is issued as generated.

Each result is checked against the seccomp policy the host passed (``expect``: per syscall
number, what the filter does whatever the arguments); for syscalls whose rule has conditions
(clone, socket, ioctl...) the call and its result are sampled and the host checks them with
jailpy's own filter (:meth:`jailpy.seccomp.Filter.decide`).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import mmap
import os
import random
import select
import signal
import struct
import sys
import time

MAX64 = (1 << 64) - 1
X32_BIT = 0x40000000
PAGE = 4096
SCRATCH_PAGES = 16  # 64 KiB of scratch between two PROT_NONE guard pages
POOL_OFF = 0x400  # path strings start here, one per 128-byte slot
STRUCT_OFF = {  # valid structures planted at fixed offsets (filled by Worker._plant)
    "timespec_1us": 0x00, "timespec_0": 0x10, "itimerspec_0": 0x20, "iovec": 0x40, "sockaddr_in": 0x80,
    "sockaddr_un": 0xA0, "sockaddr_in6": 0x120, "msghdr": 0x160, "pollfd": 0x1A0, "sigset_0": 0x1C0,
    "sigset_1": 0x1C8, "int_0": 0x1D0, "int_1": 0x1D8, "rlimit_small": 0x1E0,
}
RANDOM_OFF = 0x1000  # random bytes from here to the end of the scratch buffer

NEVER = ("reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "exit",
         "exit_group", "vfork")
FORKS = ("fork", "clone")
KILLS = {"kill": 1, "tkill": 1, "tgkill": 2, "rt_sigqueueinfo": 1, "rt_tgsigqueueinfo": 2, "pidfd_send_signal": 1}
MEM_RANGE = ("munmap", "mprotect", "pkey_mprotect", "madvise", "mlock", "mlock2", "munlock", "mseal",
             "remap_file_pages", "mbind", "set_mempolicy_home_node", "mremap")
CLONE_CLEAR = 0x100 | 0x4000 | 0x10000 | 0x800 | 0x80000 | 0x8000  # VM VFORK THREAD SIGHAND SETTLS PARENT
MAP_FIXED, MAP_FIXED_NOREPLACE = 0x10, 0x100000
MREMAP_FIXED = 2
KILL_ALL = 34 + 2  # jailpy's PID 1 kills the whole sandbox on SIGRTMIN+2 (jailpy/child.py)
WAIT_ALL = 0x40000000  # __WALL: wait for clone children whatever their exit signal

# header of the shared mapping: u64 fields
H_MAGIC, H_INDEX, H_STATE, H_NR, H_ARGS = 0, 1, 2, 3, 4  # H_ARGS .. H_ARGS+5
H_DONE, H_CALLS, H_TAINT, H_NSAMPLES, H_NMISMATCH, H_NOTIFY_OK, H_NOTIFY_EINTR, H_SAMPLE_LOST = range(10, 18)
H_WORKER_PID, H_SCRATCH = 18, 19
HEADER = 32 * 8
HIST_OFF = HEADER  # u64 per errno 0..4095 (0: success)
NR_OFF = HIST_OFF + 4096 * 8  # u64 calls per syscall number 0..1023, slot 1023: everything else
SAMPLE_OFF = NR_OFF + 1024 * 8
SAMPLE = struct.Struct("<QQ6QqQ")  # index, nr, args, ret (-errno), reserved
MAX_SAMPLES = 4096
MISMATCH_OFF = SAMPLE_OFF + MAX_SAMPLES * SAMPLE.size
MISMATCH = struct.Struct("<QQ6QqQ")  # index, nr, args, ret, expected errno
MAX_MISMATCH = 256
ERROR_OFF = MISMATCH_OFF + MAX_MISMATCH * MISMATCH.size  # the worker's last Python exception, as text
ERROR_SIZE = 1024
SHM_SIZE = ERROR_OFF + ERROR_SIZE
MAGIC = 0x6A61696C70794675
STATE_IDLE, STATE_IN_CALL = 0, 1
DONE_COUNT, DONE_TIME = 1, 2


# ------------------------------------------------------------------ the plan (pure) ----

def _pick(r: random.Random) -> tuple:
    """One argument as a symbolic spec: ("v", int) for a plain value, ("s", offset) for a pointer
    into scratch, ("p", slot) for a pool string, ("t", name) for a planted structure, ("self",)
    for the worker's own pid."""
    k = r.random()
    if k < 0.10:
        return ("v", 0)
    if k < 0.25:
        return ("v", r.randint(1, 16))
    if k < 0.31:
        return ("v", MAX64)
    if k < 0.34:
        return ("v", (-r.randint(2, 4096)) & MAX64)
    if k < 0.49:
        return ("s", r.randrange(0, SCRATCH_PAGES * PAGE, 8 if r.random() < 0.8 else 1))
    if k < 0.59:
        return ("p", r.randrange(64))  # wrapped to the pool size when materialized
    if k < 0.64:
        return ("t", r.choice(sorted(STRUCT_OFF)))
    if k < 0.69:
        return ("v", PAGE * r.randint(1, 64))
    if k < 0.75:
        return ("v", 1 << r.randrange(64))
    if k < 0.83:
        return ("v", r.getrandbits(32))
    if k < 0.88:
        return ("v", r.getrandbits(64))
    if k < 0.95:
        return ("v", r.choice((0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 63, (1 << 63) - 1, 1 << 32, 0xFFFF)))
    return ("self",)


def plan(seed: int, i: int, numbers: list[int], high: int) -> tuple[int, list[tuple]]:
    """Call ``i`` of the run with ``seed``: (syscall number, 6 argument specs).  ``numbers``: the
    x86_64 numbers to choose from (the host's table without the NEVER calls); ``high``: the first
    number above the table.  About 1% of calls use a number above the table (the filter's ENOSYS
    stub) and 1% an x32 number (bit 0x40000000: the filter kills the process)."""
    r = random.Random((seed << 32) ^ i)
    k = r.random()
    if k < 0.01:
        nr = r.randrange(high, high + 64)
    elif k < 0.02:
        nr = X32_BIT | r.choice(numbers)
    else:
        nr = r.choice(numbers)
    return nr, [_pick(r) for _ in range(6)]


def plan_text(nr: int, specs: list[tuple], names: dict[int, str]) -> str:
    """A call as text with symbolic pointers: ``openat(-100, pool[3], 0x241, 0x1b6, 0, 0)``."""
    def one(s: tuple) -> str:
        if s[0] == "v":
            v = s[1]
            return str(v - (1 << 64)) if v >> 63 else (hex(v) if v > 4096 else str(v))
        if s[0] == "s":
            return f"scratch+{s[1]:#x}"
        if s[0] == "p":
            return f"pool[{s[1]}]"
        if s[0] == "t":
            return f"&{s[1]}"
        return "own_pid"
    name = names.get(nr & ~X32_BIT, f"syscall_{nr & ~X32_BIT}")
    return f"{'x32:' if nr & X32_BIT else ''}{name}({', '.join(one(s) for s in specs)})"


def plan_digest(seed: int, first: int, n: int, numbers: list[int], high: int) -> str:
    """sha256 of calls ``first`` .. ``first + n - 1`` (numbers and symbolic arguments)."""
    h = hashlib.sha256()
    for i in range(first, first + n):
        nr, specs = plan(seed, i, numbers, high)
        h.update(repr((nr, specs)).encode())
    return h.hexdigest()


# ------------------------------------------------------------------ sandbox check ----

def inside_sandbox(want_seccomp: bool) -> str | None:
    """None when this process looks like a jailpy sandbox's program (no capabilities,
    no_new_privs, not the host's id mapping, a seccomp filter when ``want_seccomp``; see
    proc(5) /proc/self/status and user_namespaces(7)), else the reason it does not."""
    try:
        with open("/proc/self/status") as f:
            st = dict(line.split(":", 1) for line in f if ":" in line)
        with open("/proc/self/uid_map") as f:
            uid_map = f.read().split()
    except OSError as e:
        return f"cannot read /proc/self: {e}"
    if int(st.get("CapEff", "1").strip(), 16) != 0 or int(st.get("CapBnd", "1").strip(), 16) != 0:
        return "this process has capabilities"
    if st.get("NoNewPrivs", "0").strip() != "1":
        return "no_new_privs is not set"
    if uid_map[:3] == ["0", "0", "4294967295"]:
        return "this is the host's user namespace"
    if want_seccomp and st.get("Seccomp", "0").strip() != "2":
        return "no seccomp filter"
    return None


# ------------------------------------------------------------------ the worker ----

class Shared:
    """The driver/worker shared mapping (u64 fields, histograms, samples, mismatches)."""

    def __init__(self) -> None:
        self.m = mmap.mmap(-1, SHM_SIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.put(H_MAGIC, MAGIC)

    def get(self, field: int) -> int:
        return struct.unpack_from("<Q", self.m, field * 8)[0]

    def put(self, field: int, value: int) -> None:
        struct.pack_into("<Q", self.m, field * 8, value & MAX64)

    def bump(self, off: int) -> None:
        struct.pack_into("<Q", self.m, off, struct.unpack_from("<Q", self.m, off)[0] + 1)


def _signed(v: int) -> int:
    v &= MAX64
    return v - (1 << 64) if v >> 63 else v


class Worker:
    """Issues calls ``start`` .. ``end - 1`` (see the module docstring); runs in a forked child."""

    def __init__(self, cfg: dict, shm: Shared, driver_pid: int) -> None:
        self.cfg, self.shm, self.driver_pid = cfg, shm, driver_pid
        self.names = {int(k): v for k, v in cfg["names"].items()}
        self.nr_of = {v: k for k, v in self.names.items()}
        self.expect = {int(k): tuple(v) for k, v in cfg["expect"].items()}
        self.cond = set(cfg["conditional"])
        self.above = tuple(cfg["above_max"])  # [kind, errno] for numbers above known_max_nr
        self.known_max = cfg["known_max_nr"]
        self.pid = os.getpid()
        self.pool = [p.encode() for p in cfg["pool"]]

    def setup(self) -> None:
        os.setpgid(0, 0)  # kill(0, sig) reaches this worker's group, not the driver
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 65536)
        lim = self.cfg["limits"]
        import resource

        for name, value in (("RLIMIT_AS", lim["as"]), ("RLIMIT_FSIZE", lim["fsize"]),
                            ("RLIMIT_NOFILE", lim["nofile"]), ("RLIMIT_CORE", 0)):
            res = getattr(resource, name)
            hard = resource.getrlimit(res)[1]
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(res, (value, value))  # hard too: no way back up
        self.libc = libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        total = (SCRATCH_PAGES + 2) * PAGE
        base = libc.mmap(None, total, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap scratch")
        libc.mprotect(base, PAGE, 0)
        libc.mprotect(base + (SCRATCH_PAGES + 1) * PAGE, PAGE, 0)
        self.scratch = base + PAGE
        self.shm.put(H_SCRATCH, self.scratch)
        self._plant()
        self.sys = libc.syscall
        self.sys.restype = ctypes.c_long
        self.sys.argtypes = (ctypes.c_long,) * 7
        self.arm()
        self.shm.put(H_WORKER_PID, self.pid)  # set-up done (the driver tells set-up failures from crashes)

    def arm(self) -> None:
        """SIGALRM every ``call_timeout`` seconds (setitimer(2)), caught without SA_RESTART and
        unblocked, so a call that blocks fails with EINTR."""
        signal.signal(signal.SIGALRM, lambda *_: None)
        signal.siginterrupt(signal.SIGALRM, True)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        t = self.cfg["call_timeout"]
        signal.setitimer(signal.ITIMER_REAL, t, t)

    def _plant(self) -> None:
        s = self.scratch
        buf = bytearray(random.Random(self.cfg["seed"]).randbytes(SCRATCH_PAGES * PAGE))
        o = STRUCT_OFF
        struct.pack_into("<qq", buf, o["timespec_1us"], 0, 1000)
        struct.pack_into("<qq", buf, o["timespec_0"], 0, 0)
        struct.pack_into("<qqqq", buf, o["itimerspec_0"], 0, 0, 0, 0)
        for j in range(4):
            struct.pack_into("<QQ", buf, o["iovec"] + 16 * j, s + RANDOM_OFF + 256 * j, 64)
        struct.pack_into("<HH4s8x", buf, o["sockaddr_in"], 2, 0x5000, bytes((127, 0, 0, 1)))
        path = b"/tmp/fuzz.sock"
        struct.pack_into(f"<H{len(path) + 1}s", buf, o["sockaddr_un"], 1, path + b"\0")
        struct.pack_into("<HHI16sI", buf, o["sockaddr_in6"], 10, 0x5000, 0, b"\0" * 15 + b"\1", 0)
        struct.pack_into("<QI4xQQQQi4x", buf, o["msghdr"], 0, 0, s + o["iovec"], 4, 0, 0, 0)
        struct.pack_into("<ihh", buf, o["pollfd"], 0, 1, 0)
        struct.pack_into("<Q", buf, o["sigset_0"], 0)
        struct.pack_into("<Q", buf, o["sigset_1"], MAX64)
        struct.pack_into("<q", buf, o["int_0"], 0)
        struct.pack_into("<q", buf, o["int_1"], 1)
        struct.pack_into("<QQ", buf, o["rlimit_small"], 64, 64)
        for j, p in enumerate(self.pool):
            buf[POOL_OFF + 128 * j: POOL_OFF + 128 * j + len(p) + 1] = p[:127] + b"\0"
        ctypes.memmove(s, bytes(buf), len(buf))

    def value(self, spec: tuple) -> int:
        kind = spec[0]
        if kind == "v":
            return spec[1]
        if kind == "s":
            return self.scratch + spec[1]
        if kind == "p":
            return self.scratch + POOL_OFF + 128 * (spec[1] % len(self.pool))
        if kind == "t":
            return self.scratch + STRUCT_OFF[spec[1]]
        return self.pid

    def tame(self, nr: int, a: list[int]) -> list[int]:
        """Apply the argument rules of the module docstring (so the worker survives the call)."""
        drv = self.driver_pid
        a = [self.pid if v in (drv, (-drv) & MAX64) else v for v in a]
        name = self.names.get(nr)
        if name is None:
            return a
        if name == "clone":
            a[0] &= ~CLONE_CLEAR
            if a[0] & 0xFF in (signal.SIGKILL, signal.SIGSTOP):  # the exit signal the worker would get
                a[0] = a[0] & ~0xFF | signal.SIGCHLD
            a[1] = 0  # no new stack: the child runs on its copy of ours and _exits at once
        elif name == "clone3":
            a[0] = 0
        elif name in KILLS:
            j = KILLS[name]
            sig = a[j] & 0xFFFFFFFF
            if sig in (signal.SIGKILL, signal.SIGSTOP) or (sig == KILL_ALL and a[0] in (1, MAX64)):
                a[j] = 0
        elif name == "mmap" and a[3] & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            a[0] = self.scratch + (a[0] % SCRATCH_PAGES) * PAGE
            a[1] = min(a[1], self.scratch + SCRATCH_PAGES * PAGE - a[0])
        elif name in MEM_RANGE:
            a[0] = self.scratch + (a[0] % SCRATCH_PAGES) * PAGE
            room = self.scratch + SCRATCH_PAGES * PAGE - a[0]
            a[1] = a[1] % (room + 1)
            if name == "mremap":
                a[2] = a[2] % (room + 1)
                a[3] &= ~MREMAP_FIXED
        elif name == "brk" and a[0] < 1 << 47:
            a[0] = 0
        elif name == "shmat" and a[1]:
            a[1] = self.scratch
        return a

    def check(self, i: int, nr: int, args: list[int], ret: int, err: int) -> None:
        """Compare the result with what the seccomp policy says (see the module docstring)."""
        shm = self.shm
        if shm.get(H_TAINT):
            return
        if nr & X32_BIT:
            exp = tuple(self.cfg["x32"]) if self.cfg["x32"] else None
        elif nr > self.known_max:
            exp = self.above
        else:
            exp = self.expect.get(nr)
        if exp is None:
            if nr in self.cond:
                n = shm.get(H_NSAMPLES)
                if n < MAX_SAMPLES:
                    SAMPLE.pack_into(shm.m, SAMPLE_OFF + n * SAMPLE.size, i, nr, *args, -err if ret == -1 else ret, 0)
                    shm.put(H_NSAMPLES, n + 1)
                else:
                    shm.put(H_SAMPLE_LOST, shm.get(H_SAMPLE_LOST) + 1)
            return
        kind, want = exp
        if kind == "notify" and ret == -1 and err == errno.EINTR:
            shm.put(H_NOTIFY_EINTR, shm.get(H_NOTIFY_EINTR) + 1)
            return
        if kind in ("notify", "errno") and ret == -1 and err == want:
            if kind == "notify":
                shm.put(H_NOTIFY_OK, shm.get(H_NOTIFY_OK) + 1)
            return
        n = shm.get(H_NMISMATCH)
        if n < MAX_MISMATCH:
            MISMATCH.pack_into(shm.m, MISMATCH_OFF + n * MISMATCH.size, i, nr, *args, -err if ret == -1 else ret, want)
        shm.put(H_NMISMATCH, n + 1)

    def run(self, start: int, end: int, deadline: float) -> None:
        cfg, shm, names = self.cfg, self.shm, self.names
        numbers, high, seed = cfg["numbers"], cfg["high"], cfg["seed"]
        seccomp_nr = {self.nr_of.get("seccomp"), self.nr_of.get("prctl")}
        fork_nrs = {self.nr_of[n] for n in FORKS if n in self.nr_of}
        call = self.sys
        for i in range(start, end):
            if i % 16 == 0:
                if time.monotonic() >= deadline:
                    shm.put(H_DONE, DONE_TIME)
                    return
                self.arm()  # undo what earlier calls did to SIGALRM (mask, handler, timer)
            nr, specs = plan(seed, i, numbers, high)
            args = self.tame(nr, [self.value(s) & MAX64 for s in specs])
            struct.pack_into("<QQQ6Q", shm.m, H_INDEX * 8, i, STATE_IN_CALL, nr, *args)
            ctypes.set_errno(0)
            ret = call(nr, *(_signed(v) for v in args))
            err = ctypes.get_errno() if ret == -1 else 0
            if nr in fork_nrs and ret == 0 and os.getpid() != self.pid:
                os._exit(0)  # a fork child: leave at once
            shm.put(H_STATE, STATE_IDLE)
            shm.put(H_CALLS, shm.get(H_CALLS) + 1)
            shm.bump(HIST_OFF + 8 * (min(err, 4095) if ret == -1 else 0))
            shm.bump(NR_OFF + 8 * (nr if nr < 1023 else 1023))
            if nr in seccomp_nr and ret == 0 and (names.get(nr) == "seccomp" or args[0] == 22):
                shm.put(H_TAINT, 1)  # it installed a filter of its own: results no longer say what ours does
            if nr in fork_nrs and ret > 0:
                try:
                    os.waitpid(ret, WAIT_ALL)
                except ChildProcessError:
                    pass
            self.check(i, nr, args, ret, err)
        shm.put(H_DONE, DONE_COUNT)


# ------------------------------------------------------------------ the driver ----

def _crash_record(shm: Shared, names: dict[int, str], status: int, how: str) -> dict:
    nr = shm.get(H_NR)
    args = [shm.get(H_ARGS + j) for j in range(6)]
    scratch = shm.get(H_SCRATCH)
    shown = [f"scratch+{v - scratch:#x}" if scratch <= v < scratch + SCRATCH_PAGES * PAGE else
             (str(_signed(v)) if v >> 63 else hex(v)) for v in args]
    name = names.get(nr & ~X32_BIT, f"syscall_{nr & ~X32_BIT}")
    return {"index": shm.get(H_INDEX), "nr": nr, "name": ("x32:" if nr & X32_BIT else "") + name, "args": args,
            "text": f"{('x32:' if nr & X32_BIT else '')}{name}({', '.join(shown)})", "how": how,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "in_call": shm.get(H_STATE) == STATE_IN_CALL,
            "error": bytes(shm.m[ERROR_OFF:ERROR_OFF + ERROR_SIZE]).rstrip(b"\0").decode(errors="replace") or None}


def ignore_all_signals() -> None:
    """SIG_IGN for every signal but SIGKILL, SIGSTOP and SIGCHLD, with rt_sigaction(2) itself:
    glibc's sigaction() refuses 32 and 33 (its own), which a worker's kill(-1, 32) would send."""
    libc = ctypes.CDLL(None, use_errno=True)
    act = struct.pack("<QQQQ", 1, 0, 0, 0)  # struct kernel_sigaction: handler SIG_IGN, flags, restorer, mask
    buf = ctypes.create_string_buffer(act, len(act))
    for s in range(1, 65):
        if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            libc.syscall(ctypes.c_long(13), ctypes.c_long(s), buf, ctypes.c_void_p(0), ctypes.c_long(8))  # rt_sigaction


def drive(cfg: dict) -> dict:
    """Run workers over calls ``start`` .. ``start + count - 1`` until done or ``seconds`` pass;
    return the summary (see the module docstring)."""
    ignore_all_signals()
    names = {int(k): v for k, v in cfg["names"].items()}
    shm = Shared()
    t0 = time.monotonic()
    deadline = t0 + cfg["seconds"]
    start, end = cfg["start"], cfg["start"] + cfg["count"]
    me = os.getpid()
    crashes: list[dict] = []
    n_crashes = n_hangs = workers = idle_deaths = 0
    error = None
    nxt = start
    if cfg.get("inject") == "ro-writable":  # the self-test of the canary check (fuzz/syscall_fuzz.py --inject)
        with open("/fuzz/canary/ro/a", "ab") as f:
            f.write(b"injected by --inject ro-writable\n")
    while nxt < end and time.monotonic() < deadline:
        shm.put(H_INDEX, nxt)
        shm.put(H_STATE, STATE_IDLE)
        shm.put(H_DONE, 0)
        shm.m[ERROR_OFF:ERROR_OFF + ERROR_SIZE] = bytes(ERROR_SIZE)
        workers += 1
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                w = Worker(cfg, shm, me)
                w.setup()
                w.run(nxt, end, deadline)
                code = 0
            except BaseException as e:  # noqa: BLE001 - recorded for the driver, then exit 3
                text = f"{type(e).__name__}: {e}".encode(errors="replace")[:ERROR_SIZE - 1]
                shm.m[ERROR_OFF:ERROR_OFF + ERROR_SIZE] = text.ljust(ERROR_SIZE, b"\0")
            finally:
                os._exit(code)
        last, since, status, how = -1, time.monotonic(), None, "died"
        pidfd = os.pidfd_open(pid)  # readable when the worker exits (pidfd_open(2))
        try:
            while status is None:
                select.select([pidfd], [], [], 0.1)
                while True:  # also reaps what a worker's children left to us
                    try:
                        got, st = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if got == 0:
                        break
                    if got == pid:
                        status = st
                if status is not None:
                    break
                cur = (shm.get(H_INDEX), shm.get(H_CALLS))
                now = time.monotonic()
                if cur != last:
                    last, since = cur, now
                elif now - since > cfg["watchdog"]:
                    how = "hung"
                    os.kill(pid, signal.SIGKILL)
                    since = now + 3600
        finally:
            os.close(pidfd)
        try:
            os.killpg(pid, signal.SIGKILL)  # whatever the worker started in its group
        except OSError:
            pass
        done = shm.get(H_DONE)
        if done and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            break
        if shm.get(H_INDEX) == nxt and shm.get(H_STATE) == STATE_IDLE and shm.get(H_WORKER_PID) != pid:
            idle_deaths += 1  # died before its first call: set-up failed
            if idle_deaths >= 3:
                error = f"3 workers in a row died before their first call (last: wait status {status:#x})"
                break
            continue
        idle_deaths = 0
        n_hangs += how == "hung"
        n_crashes += how != "hung"
        if len(crashes) < 200:
            crashes.append(_crash_record(shm, names, status, how))
        nxt = shm.get(H_INDEX) + 1
    while True:  # reap the rest
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    hist = {}
    for e in range(4096):
        n = struct.unpack_from("<Q", shm.m, HIST_OFF + 8 * e)[0]
        if n:
            hist["OK" if e == 0 else errno.errorcode.get(e, str(e))] = n
    per_nr = {}
    for nr in range(1024):
        n = struct.unpack_from("<Q", shm.m, NR_OFF + 8 * nr)[0]
        if n:
            per_nr[nr] = n
    samples = [list(SAMPLE.unpack_from(shm.m, SAMPLE_OFF + j * SAMPLE.size))[:9]
               for j in range(shm.get(H_NSAMPLES))]
    mism = [list(MISMATCH.unpack_from(shm.m, MISMATCH_OFF + j * MISMATCH.size))
            for j in range(min(shm.get(H_NMISMATCH), MAX_MISMATCH))]
    done = shm.get(H_DONE)
    stopped = "error" if error else "count" if done == DONE_COUNT or nxt >= end else "time"
    return {
        "seed": cfg["seed"], "start": start, "count": cfg["count"], "error": error,
        "next": None if stopped == "count" else nxt, "calls": shm.get(H_CALLS), "stopped": stopped,
        "seconds": round(time.monotonic() - t0, 3), "workers": workers, "crashes": n_crashes, "hangs": n_hangs,
        "crash_list": crashes, "errno": hist, "per_nr": per_nr, "tainted": bool(shm.get(H_TAINT)),
        "notify_ok": shm.get(H_NOTIFY_OK), "notify_eintr": shm.get(H_NOTIFY_EINTR),
        "samples": samples, "samples_lost": shm.get(H_SAMPLE_LOST),
        "mismatches": mism, "mismatch_count": shm.get(H_NMISMATCH),
        "plan_digest": plan_digest(cfg["seed"], start, min(cfg["count"], 1000), cfg["numbers"], cfg["high"]),
    }


def main(argv: list[str]) -> int:
    """``syscall_gen.py CONFIG.json MARKER``: fuzz as the config says, print the summary JSON.
    Exit 3 (doing nothing) when not inside a sandbox."""
    if len(argv) != 3:
        print("usage: syscall_gen.py CONFIG.json MARKER (started by fuzz/syscall_fuzz.py)", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        cfg = json.load(f)
    why = inside_sandbox(cfg["require_seccomp"])
    if why is not None:
        print(f"syscall_gen: refusing to run outside a sandbox: {why}", file=sys.stderr)
        return 3
    out = os.dup(1)
    summary = drive(cfg)
    os.write(out, json.dumps(summary).encode() + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
