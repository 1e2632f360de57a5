# Resource probes (run inside the sandbox after _lib.py).  Each runs under limits the probe's
# policy sets (--pids 16, --memory 64M, ...) and is bounded by itself, so that without the limit
# it stops at a fixed, harmless size (a few hundred processes or MiB, a few seconds).
import os
import resource
import sys
import threading
import time

SCHED_FIFO = 1


def res_fork_bomb(p):
    kids, err = [], None
    for _ in range(p["bound"]):
        try:
            pid = os.fork()
        except OSError as e:
            err = ename(e.errno)
            break
        if pid == 0:
            time.sleep(20)
            os._exit(0)
        kids.append(pid)
    for pid in kids:  # ours: end and reap them
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return {"made": len(kids), "errno": err}


def res_thread_bomb(p):
    stop = threading.Event()
    made, err = 0, None
    threads = []
    for _ in range(p["bound"]):
        t = threading.Thread(target=stop.wait, args=(20,), daemon=True)
        try:
            t.start()
        except RuntimeError as e:
            err = str(e)
            break
        threads.append(t)
        made += 1
    stop.set()
    for t in threads:
        t.join(5)
    return {"made": made, "errno": err}


def res_fd_exhaustion(p):
    fds, err = [], None
    for _ in range(p["bound"]):
        try:
            fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as e:
            err = ename(e.errno)
            break
    for fd in fds:
        os.close(fd)
    return {"made": len(fds), "errno": err, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)}


def res_memory_bomb(p):
    chunks, total = [], 0
    chunk = 8 << 20
    try:
        while total < p["bound"]:
            chunks.append(bytearray(chunk))  # zero-filled: every page touched
            total += chunk
            sys.stderr.write(f"{total >> 20} MiB\n")
            sys.stderr.flush()
    except MemoryError:
        return {"made": total, "errno": "ENOMEM"}
    return {"made": total, "errno": None}


def _fill(path, bound):
    written, err = 0, None
    block = b"\0" * (1 << 20)
    try:
        with open(path, "wb") as f:
            while written < bound:
                f.write(block)
                f.flush()
                written += len(block)
    except OSError as e:
        err = ename(e.errno)
    try:
        os.unlink(path)
    except OSError:
        pass
    return written, err


def res_tmpfs_fill(p):
    out = {}
    for d in ("/tmp", "/dev/shm"):
        out[d] = _fill(d + "/jailpy-audit-fill", p["bound"])
    return {"fills": out}


def res_inode_fill(p):
    os.makedirs("/tmp/inodes", exist_ok=True)
    made, err = 0, None
    for i in range(p["bound"]):
        try:
            os.close(os.open(f"/tmp/inodes/{i}", os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as e:
            err = ename(e.errno)
            break
        made += 1
    return {"made": made, "errno": err}


def res_output_flood(p):
    block = b"x" * 65536
    for _ in range(p["bound"] // len(block)):
        os.write(1, block)
    return {"made": p["bound"]}


def res_cpu_hog(p):
    end = time.monotonic() + p["seconds"]
    pid = os.fork()  # two processes spinning: the limit is on their sum
    while time.monotonic() < end:
        pass
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return {"spun": p["seconds"]}


def res_sched_fifo(p):
    att = []
    param = ctypes.c_int(1)
    a = sysc("sched_setscheduler(0, SCHED_FIFO, 1) (a real-time CPU hog)", "sched_setscheduler", 0, SCHED_FIFO,
             ctypes.byref(param))
    if a["ret"] == 0:  # never spin real-time: back to normal at once
        zero = ctypes.c_int(0)
        raw("sched_setscheduler", 0, 0, ctypes.byref(zero))
    rt = resource.getrlimit(resource.RLIMIT_RTPRIO)
    if a["errno"] == "EPERM":
        a.update(layer="rlimit" if rt[1] == 0 else "capability",
                 detail=f"RLIMIT_RTPRIO {rt[0]}/{rt[1]}, no CAP_SYS_NICE")
    att.append(a)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        att.append(attempt("setpriority(-10) (a higher priority than other users' processes)", "setpriority", 0, None,
                           through=True))
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError as e:
        nice = resource.getrlimit(resource.RLIMIT_NICE)
        att.append(attempt("setpriority(-10) (a higher priority than other users' processes)", "setpriority", -1,
                           ename(e.errno), layer="rlimit" if nice[1] == 0 else "capability",
                           detail=f"RLIMIT_NICE {nice[0]}/{nice[1]}", nr=141))
    return {"attempts": att}


def res_aio_events(p):
    # fs.aio-max-nr is one count for the whole machine: a context of one event, given back at once
    ctx = ctypes.c_ulong(0)
    a = sysc("io_setup(1, &ctx) (events from the machine-wide fs.aio-max-nr)", "io_setup", 1, ctypes.byref(ctx))
    if a["ret"] == 0:
        raw("io_destroy", ctx.value)
        used = (read_text("/proc/sys/fs/aio-nr") or "").strip()
        a["detail"] = f"took an AIO context (given back at once); fs.aio-nr {used}"
    b = sysc("io_submit(0, 0, NULL) (an invalid context: EINVAL if it runs)", "io_submit", 0, 0, 0)
    return {"attempts": [a, b]}


def res_pipe_stall(p):
    # a grandchild in its own session keeps stdout and stderr open and sleeps; the program exits
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", p["marker"]])
        os._exit(0)
    os.waitpid(pid, 0)
    return {"left": "sleep " + p["marker"]}


def res_cgroup_escape(p):
    att = []
    text = read_text("/proc/self/cgroup") or ""
    paths = sorted({line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2})
    for dirpath, dirnames, filenames in os.walk("/sys/fs/cgroup"):
        for name in ("cgroup.procs", "tasks"):
            if name in filenames:
                path = os.path.join(dirpath, name)
                ok, err, _ = open_only(path, os.O_WRONLY)  # never written
                att.append(attempt(f"open {path} for writing (move itself to another cgroup)", "openat",
                                   0 if ok else -1, err, through=ok,
                                   layer="mount" if err == "EROFS" else "permissions" if err == "EACCES" else None))
        if len(att) >= 6:
            break
    att.append(attempt("a cgroup path above its own in /proc/self/cgroup", "openat",
                       -1 if paths == ["/"] else 0, "ENOENT" if paths == ["/"] else None, through=paths != ["/"],
                       layer="namespace", detail=f"sees {paths}"))
    return {"attempts": att}


PROBES = {
    "res-fork-bomb": res_fork_bomb, "res-thread-bomb": res_thread_bomb, "res-fd-exhaustion": res_fd_exhaustion,
    "res-memory-bomb": res_memory_bomb, "res-tmpfs-fill": res_tmpfs_fill, "res-inode-fill": res_inode_fill,
    "res-output-flood": res_output_flood, "res-cpu-hog": res_cpu_hog, "res-sched-fifo": res_sched_fifo,
    "res-aio-events": res_aio_events, "res-pipe-stall": res_pipe_stall, "res-cgroup-escape": res_cgroup_escape,
}
