"""Host side: one run's event loop, from the launch request to PID 1's report.

:class:`Watch` waits on PID 1's status pipe, its control socket (which brings the seccomp
notification listener), the seccomp listener, the program's output pipes, the stdin feeds and
a wake-up pipe, and on four clocks: the wall-time deadline, the grace after a kill, the next
check of the cgroup's CPU time and the next sample of its peaks.  Each event has a short
handler, and none of them blocks: output for the caller's fds goes through a
:class:`~jailpy.stdio.Sink` (its own thread, bounded), so a terminal or reader that stops
taking output never stalls the limits.  The loop ends when PID 1 has reported, the program's
pipes are at their end and the sinks are empty (or a signal says not to wait for them).
It returns the run's :class:`~jailpy.verdict.Facts`.

:class:`RunControl` is how other threads and signal handlers (Sandbox.kill, send_signal, the
CLI) reach the run: signals go to PID 1 through its pidfd (pidfd_send_signal(2)), or wait
until PID 1 is known; PID 1 holds them blocked until it can handle them (child.init).
"""

from __future__ import annotations

import errno
import json
import math
import os
import select
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import child, seccomp, userns
from . import _syscalls as sc
from .errors import HostError
from .stdio import Output, Sink, Stdio, pipe
from .verdict import Facts

if TYPE_CHECKING:
    from .pool import Prepared

KILL_GRACE = 2.0  # seconds PID 1 gets to report after Sandbox.kill() before it is SIGKILLed
SETUP_TIMEOUT = 60.0  # seconds the sandbox's set-up may take before the run is given up (SandboxSetupError)
POLL_INTERVAL = 0.1  # seconds between samples of the cgroup's pids and memory (for peaks the kernel keeps none of)


class RunControl:
    """Signals for a run, from any thread or signal handler (a reentrant lock: a handler may run
    in the middle of the run's own use).  ``pidfd``: PID 1's, once known; ``setup_pidfd``: the
    set-up process's (or PID 1's, from the fork server).  A signal sent before PID 1 is known
    waits in ``pending``; one sent between runs is dropped, unless :meth:`hold` asked to keep
    it for the next run (the CLI, whose handlers exist before the run does)."""

    def __init__(self) -> None:
        self.pidfd: int | None = None
        self.setup_pidfd: int | None = None
        self.pending: list[int] = []
        self.killed = False
        self.hard_kill_at: float | None = None
        self.running = False
        self.held = False
        self.wake_fd: int | None = None  # the watch's wake-up pipe: told of each signal
        self.signals = 0  # how many send_signal() calls this run had
        self.suspended_at: float | None = None  # suspend(): since when (time.monotonic)
        self.suspended_total = 0.0  # seconds this run was suspended, added to its deadline
        self._lock = threading.RLock()

    def hold(self) -> None:
        """Keep signals sent before the next run begins, for it."""
        with self._lock:
            self.held = True

    def begin(self) -> None:
        """A run begins: what was held is kept for it, anything else from before is dropped."""
        with self._lock:
            if not self.held:
                self.pending.clear()
                self.killed = False
            self.hard_kill_at = None
            self.signals = 0
            if not self.held:
                self.suspended_at = None
            self.suspended_total = 0.0
            self.running = True

    def end(self) -> None:
        """The run is over: nothing more reaches it."""
        with self._lock:
            self.running = self.held = False
            self.suspended_at = None
            self.pending.clear()
            self.killed = False
            self.pidfd = self.setup_pidfd = self.wake_fd = None

    def active(self) -> bool:
        return self.running

    def idle(self) -> bool:
        """Whether a signal now reaches no run: none is going, and none was asked to be held."""
        return not (self.running or self.held)

    def pid1_known(self, pidfd: int | None) -> None:
        """PID 1's pidfd is known now: deliver what waited for it."""
        with self._lock:
            self.pidfd = pidfd
            while self.pending:
                self.send_signal(self.pending.pop(0))
            if self.killed:
                self.kill()

    def send_signal(self, sig: int) -> None:
        """Forward ``sig`` to the program through PID 1 (see Sandbox.send_signal)."""
        with self._lock:
            if not (self.running or self.held):
                return
            self.signals += 1
            self._deliver(sig)

    def suspend(self) -> None:
        """Stop the sandbox's processes (child.STOP_ALL) and the wall-time clock (see Sandbox.suspend)."""
        with self._lock:
            if (self.running or self.held) and self.suspended_at is None:
                self.suspended_at = time.monotonic()
                self._deliver(child.STOP_ALL)

    def resume(self) -> None:
        """Continue what :meth:`suspend` stopped."""
        with self._lock:
            if self.suspended_at is not None:
                self.suspended_total += time.monotonic() - self.suspended_at
                self.suspended_at = None
                self._deliver(child.CONT_ALL)

    def _deliver(self, sig: int) -> None:
        with self._lock:
            if self.pidfd is not None:
                try:
                    signal.pidfd_send_signal(self.pidfd, sig)
                except OSError:
                    pass
            elif sig == signal.SIGKILL and self.setup_pidfd is not None:
                # PID 1 not known yet: its parent's death takes it (PDEATHSIG)
                try:
                    signal.pidfd_send_signal(self.setup_pidfd, signal.SIGKILL)
                except OSError:
                    pass
            else:
                self.pending.append(sig)
            self._wake()

    def kill(self) -> None:
        """End the run (see Sandbox.kill)."""
        with self._lock:
            if not (self.running or self.held):
                return
            self.killed = True
            if self.hard_kill_at is None:
                self.hard_kill_at = time.monotonic() + KILL_GRACE
            self.send_signal(signal.SIGKILL if self.pidfd is None else child.KILL_ALL)

    def _wake(self) -> None:
        if self.wake_fd is not None:
            try:
                os.write(self.wake_fd, b"!")
            except OSError:
                pass


@dataclass(frozen=True)
class Limits:
    """What the watch enforces: ``wall_time`` (seconds, from the program's start), ``output_limit``
    (bytes per stream, None: none), ``cpu_time`` (seconds of the cgroup, None: none), ``cpus``
    (how many CPU-seconds the tree can use per second, to pace the CPU checks)."""

    wall_time: float
    output_limit: int | None
    cpu_time: float | None
    cpus: float


class Watch:
    """One run's event loop (see the module docstring).  ``prep``: the sandbox, its program
    already sent; ``ids``: the id maps to write when the sandbox makes its own user namespace
    (``write_maps``); ``decide``: the seccomp filter's decision function (None: no filter)."""

    def __init__(self, prep: "Prepared", control: RunControl, limits: Limits, stdio: Stdio, t_start: float,
                 ids: userns.IdPlan, write_maps: bool, decide, wait_output: bool = True) -> None:
        self.prep, self.control, self.limits, self.io = prep, control, limits, stdio
        self.ids, self.write_maps, self.decide = ids, write_maps, decide
        self.wait_output = wait_output  # False: the run ends with output still on its way (Sandbox.wait_output)
        self.cg = prep.cgroup
        self.t_start = t_start
        self.msgs: dict = {}
        self.deadline = t_start + SETUP_TIMEOUT  # until the program has started: bounds a set-up that hangs
        self.next_cpu: float | None = None  # when to read the cgroup's CPU time next (once the program runs)
        self.next_poll: float | None = None
        self.limit_fired: str | None = None
        self.listener: int | None = None
        self.blocked: dict | None = None
        self.log: list[dict] = []
        self.seccomp_kill = False
        self.buf = bytearray()
        self.sel = selectors.DefaultSelector()
        self.reading: set[int] = set()  # output pipes not at their end yet
        self.paused: set[int] = set()  # of those, the ones whose sink is full
        self.sinks: dict[int, Sink] = {}  # the caller's fd -> its sink
        self.wake_r, self.wake_w = pipe()
        self.signals_at_end = 0
        self.status_eof = False

    # ---- the loop
    def start(self) -> None:
        """The run's first steps: PID 1 known at once when the fork server started it; the id maps
        written when the sandbox made its own user namespace.  Raises HostError (the maps): the
        caller then discards the sandbox."""
        prep = self.prep
        if prep.is_pid1:  # no set-up process to report it: PID 1 is known from the start
            self.control.pid1_known(os.dup(prep.pidfd))
        if self.write_maps and os.read(prep.sync_r, 1) == b"u":
            userns.write_maps(self.ids, prep.pid, prep.userns_parent)
            os.write(prep.go_w, b"g")

    def run(self) -> Facts:
        """Watch the run to its end (after :meth:`start`) and return its facts; the set-up
        process is retired (:meth:`Prepared.retire`) whatever happens."""
        prep, sel = self.prep, self.sel
        try:
            for fd in (prep.status_r, self.wake_r, self.wake_w):
                os.set_blocking(fd, False)
            self.control.wake_fd = self.wake_w
            sel.register(prep.status_r, selectors.EVENT_READ)
            sel.register(self.wake_r, selectors.EVENT_READ)
            sel.register(prep.ctl, selectors.EVENT_READ)  # PID 1 sends the seccomp listener over it, or closes it
            for fd, out in self.io.outputs.items():
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
                self.reading.add(fd)
                if out.target is not None:
                    if out.target not in self.sinks:
                        self.sinks[out.target] = Sink(out.target, self.wake_w)
                    out.sink = self.sinks[out.target]
            feeds = self.io.feeds
            for fd in list(feeds):  # what is closed here leaves io.feeds
                os.set_blocking(fd, False)
                if feeds[fd]:
                    sel.register(fd, selectors.EVENT_WRITE)
                else:
                    os.close(fd)
                    del feeds[fd]
            while not self._done():
                self._timers(time.monotonic())
                for key, _ in sel.select(self._timeout()):
                    self._dispatch(key.fd)
        finally:
            facts = self._finish()
        return facts

    def _done(self) -> bool:
        """PID 1 has reported (the program and all it started are dead and reaped) or is gone,
        what the output pipes held is read, and (with ``wait_output``) the sinks are empty; or a
        signal came after the end (the caller's fd may never take the rest: it is dropped)."""
        if not (self.status_eof or "status" in self.msgs):
            return False
        if self.control.signals > self.signals_at_end:
            return True
        self._drain()
        return not self.reading and (not self.wait_output or all(s.empty() for s in self.sinks.values()))

    def _drain(self) -> None:
        """After the end: read what each output pipe holds now, and stop reading it there.  Every
        process of the sandbox is dead, so that is all the program wrote; a process outside that
        holds the pipe (the program can pass it out over a unix socket) is not the program, and
        is never waited for.  Stdin feeds stop too.  A pipe whose sink is full waits for room."""
        for fd in list(self.reading):
            if fd in self.paused and self.wait_output:
                continue  # read when the sink has room
            self.paused.discard(fd)  # else all of it now: at most a pipe's capacity more
            while fd in self.reading and (fd not in self.paused or not self.wait_output):
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    data = b""
                if data:
                    self._on_output(fd, self.io.outputs[fd], data)
                else:
                    if fd in self.sel.get_map():
                        self.sel.unregister(fd)
                    self.reading.discard(fd)
        for fd in list(self.io.feeds):
            if fd in self.sel.get_map():
                self.sel.unregister(fd)
            os.close(fd)
            del self.io.feeds[fd]

    def _dispatch(self, fd: int) -> None:
        if fd in self.io.feeds:
            self._on_feed(fd)
        elif fd == self.prep.ctl.fileno():
            self._on_ctl()
        elif fd == self.listener:
            self._on_listener()
        elif fd == self.wake_r:
            self._on_wake()
        else:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if fd == self.prep.status_r:
                if data:
                    self._on_status(data)
                else:  # PID 1 and the set-up process are gone, reported or not
                    self.sel.unregister(fd)
                    self.status_eof = True
                    if "status" not in self.msgs:
                        self.signals_at_end = self.control.signals
            elif data:
                self._on_output(fd, self.io.outputs[fd], data)
            else:
                self.sel.unregister(fd)
                self.reading.discard(fd)

    def _deadline(self) -> float | None:
        """When the clock that ends the run is due: the set-up's bound until the program has
        started, then its wall time, moved on by the time the run was suspended; None while it
        is suspended (the program is stopped: its clock stops too)."""
        control = self.control
        if self.limit_fired is not None or control.suspended_at is not None:
            return None
        return self.deadline + (control.suspended_total if "started" in self.msgs else 0.0)

    def _timers(self, now: float) -> None:
        """Act on the clocks that are due.  A limit is acted on only after reading what PID 1's
        status pipe holds: after a stall of this process (SIGSTOP, a suspended laptop, an
        overloaded host) the clocks may say a limit is due while PID 1's report of the
        program's own end, which came first, waits in the pipe (and its "started" moves the
        deadline: it is looked at again after the read)."""
        control = self.control

        def due() -> tuple[bool, bool, bool]:
            deadline = self._deadline()
            return (control.hard_kill_at is not None and now >= control.hard_kill_at,
                    deadline is not None and now >= deadline,
                    self.next_cpu is not None and now >= self.next_cpu and control.suspended_at is None)

        if any(due()) and not self._reported():
            hard, wall, cpu = due()
            if hard:
                control.hard_kill_at = math.inf
                if self.cg is not None:
                    try:
                        self.cg.kill()  # frozen processes (jailpy pause) die only when thawed: this thaws them
                    except (OSError, HostError):
                        pass
                control.send_signal(signal.SIGKILL)
            if wall:
                self._fire("wall_time" if "started" in self.msgs else "setup")
            if cpu:
                used = self.cg.cpu_seconds()
                if used >= self.limits.cpu_time:
                    self._fire("cpu_time")
                    self.next_cpu = None
                else:  # the tree cannot use more than `cpus` CPU-seconds per second
                    self.next_cpu = now + min(0.5, max(0.005, (self.limits.cpu_time - used) / self.limits.cpus))
        if self.next_poll is not None and now >= self.next_poll:
            self.cg.poll()
            self.next_poll = now + POLL_INTERVAL

    def _reported(self) -> bool:
        """Whether PID 1 has reported the program's end, after reading what its pipe holds."""
        if "status" not in self.msgs and self.prep.status_r in self.sel.get_map():
            try:
                data = os.read(self.prep.status_r, 65536)
            except BlockingIOError:
                data = None
            if data:
                self._on_status(data)
        return "status" in self.msgs

    def _timeout(self) -> float | None:
        if "status" in self.msgs:
            return None  # the program is gone: only the pipes, the sinks or a signal can end the wait
        hard = self.control.hard_kill_at
        ends = [t for t in (self._deadline(), hard, self.next_cpu, self.next_poll) if t is not None and t != math.inf]
        # at most a day: poll(2) takes no more than 2**31 ms, and a wall_time may be a year
        return min(86400.0, max(0.0, min(ends) - time.monotonic())) if ends else None

    def _fire(self, what: str) -> None:
        if self.limit_fired is None:
            self.limit_fired = what
        if self.cg is not None:
            try:  # paused (jailpy pause)? PID 1 can end the run only when it runs
                self.cg.thaw()
            except (OSError, HostError):
                pass  # no freezer: nothing can be frozen
        self.control.kill()

    # ---- handlers
    def _on_feed(self, fd: int) -> None:
        feeds = self.io.feeds
        try:
            n = os.write(fd, feeds[fd])
            feeds[fd] = feeds[fd][n:]
        except BrokenPipeError:
            feeds[fd] = b""
        except BlockingIOError:
            return
        if not feeds[fd]:
            self.sel.unregister(fd)
            os.close(fd)
            del feeds[fd]

    def _on_ctl(self) -> None:
        self.sel.unregister(self.prep.ctl)
        try:
            _, fds, _, _ = socket.recv_fds(self.prep.ctl, 1, 1)
        except OSError:
            fds = []
        if fds:
            self.listener = fds[0]
            self.sel.register(self.listener, selectors.EVENT_READ)

    def _on_listener(self) -> None:
        state = self._notification()
        if state == "hup":
            self.sel.unregister(self.listener)
        elif state is not None:
            if self.blocked is None:
                self.blocked = state  # the first denial is reported, with how many there were
            else:
                self.blocked["count"] += 1

    def _on_wake(self) -> None:
        """A sink has room again (or is empty), or a signal came: read the pipes it paused."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        for fd in list(self.paused):
            if not self.io.outputs[fd].sink.full():
                self.paused.discard(fd)
                self.sel.register(fd, selectors.EVENT_READ)

    def _on_status(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, _, rest = self.buf.partition(b"\n")
            self.buf = bytearray(rest)
            msg = json.loads(line)
            if "pid1" in msg:
                try:
                    pidfd = os.pidfd_open(msg["pid1"])
                except OSError:
                    pidfd = None
                self.control.pid1_known(pidfd)
            if "started" in msg:
                self.deadline = time.monotonic() + self.limits.wall_time  # the program gets all of it
            if "ready" in msg and self.cg is not None:
                # PID 1 is about to start the program: what the cgroup holds now is
                # jailpy's own share, given back on top of the memory limit
                self.cg.raise_memory_limit(self.cg.baseline() or 0)
                try:
                    self.prep.ctl.sendall(b"G")
                except OSError:
                    pass  # PID 1 died: its status pipe says the rest
            if "status" in msg:
                self.signals_at_end = self.control.signals
            if "started" in msg and self.cg is not None:
                self.next_poll = time.monotonic() + POLL_INTERVAL
                if self.limits.cpu_time is not None:
                    self.next_cpu = time.monotonic() + min(0.5, self.limits.cpu_time / self.limits.cpus)
            self.msgs.update(msg)

    def _on_output(self, fd: int, out: Output, data: bytes) -> None:
        limit = self.limits.output_limit
        if limit is not None and out.count + len(data) > limit:
            data = data[:limit - out.count]
            out.truncated = True
            self._fire("output")
        out.count += len(data)
        if out.sink is None:
            out.data += data
        elif data:
            out.sink.put(data)
            if out.sink.full():  # the caller's fd is not taking it: the program waits on its pipe
                if fd in self.sel.get_map():
                    self.sel.unregister(fd)
                self.paused.add(fd)

    def _notification(self) -> dict | str | None:
        """Answer one seccomp notification (seccomp_unotify(2)): record it, then deny it with the
        rule's errno, kill the sandbox for a "kill" rule, or (log mode) let it run.  Returns the
        blocked_syscall record, "hup" when no process uses the filter any more, or None."""
        listener = self.listener
        p = select.poll()
        p.register(listener, select.POLLIN)
        ev = p.poll(0)
        if not ev or not ev[0][1] & select.POLLIN:
            return "hup" if ev and ev[0][1] & (select.POLLHUP | select.POLLERR) else None
        n = seccomp.receive(listener)  # only with POLLIN: the ioctl would block otherwise
        if n is None:
            return None
        d = self.decide(n.nr, n.args)
        rec = seccomp.blocked_record(n, d, 1)
        if d.action in ("log", "allow"):  # a log rule, or --seccomp-log (permissive): record, let it run
            for old in self.log:
                if old["name"] == rec["name"] and old["args"] == rec["args"]:
                    old["count"] += 1
                    break
            else:
                if len(self.log) < 1000:
                    self.log.append(rec)
            seccomp.respond(listener, n.id, cont=True)
            return None
        if d.action == "kill":
            # no answer: the call never runs.  The calling process dies first, then the sandbox
            try:
                pidfd = os.pidfd_open(n.pid)
                try:
                    if sc.seccomp_notif_id_valid(listener, n.id):  # the pid is still that task's
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                finally:
                    os.close(pidfd)
            except OSError:
                pass
            self.seccomp_kill = True
            self.control.kill()
            return rec
        seccomp.respond(listener, n.id, error=d.errno or errno.EPERM)
        return rec

    # ---- the end
    def _finish(self) -> Facts:
        prep, control = self.prep, self.control
        self.sel.close()
        for sink in self.sinks.values():
            sink.detach()
            sink.close()  # it writes what it holds, then ends (on its own: the caller's fd may never drain)
        with control._lock:
            control.wake_fd = None
            # done with PID 1 (no more signals for it): the set-up process may now reap it and exit
            control.pidfd, pidfd = None, control.pidfd
        for fd in (self.wake_r, self.wake_w, self.listener, pidfd):
            if fd is not None:
                os.close(fd)
        prep.close_go()
        try:
            stats = self.cg.stats() if self.cg is not None else None
        except OSError:
            stats = None
        ru = prep.retire(finished="status" in self.msgs)
        return Facts(msgs=self.msgs, wall=time.monotonic() - self.t_start, rusage=ru, limit_fired=self.limit_fired,
                     outputs=list(self.io.outputs.values()), stats=stats, blocked=self.blocked,
                     seccomp_log=self.log, killed=control.killed, seccomp_kill=self.seccomp_kill,
                     jailpy_pids=prep.jailpy_pids)
