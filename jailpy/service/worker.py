"""``jailpy worker``: Dramatiq actors on a Redis broker that run jobs (see :mod:`jailpy.service.jobs`).

A worker process runs ``slots`` jobs at once (Dramatiq worker threads) from a warm
:class:`jailpy.slots.SlotPool`, and fetches at most one message per slot (prefetch 1 per slot),
so a busy worker holds no job another could start.  Each job runs :func:`run_job`: the same
:func:`jailpy.service.runner.run_request` the HTTP server calls (kind ``run``), or the judge
(kind ``judge``, with ``--problems``).  The message is acknowledged after the job's result is
stored; a worker that dies mid-job leaves its message unacknowledged and Dramatiq's Redis broker
requeues it once the worker's heartbeat is ``heartbeat_timeout`` old.

Before it takes any job the worker checks its host can give what jobs ask: one sandbox run with
a memory, CPU time and process limit (a delegated cgroup, user namespaces, seccomp).  If that
fails it refuses to start (exit 125, the reason in one line), and it advertises its slots and
cgroup mode in Redis (``jailpy:workers``) while it runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

from ..errors import HostError, JailpyError
from .jobs import ACTOR, QUEUE, JobStore, make_broker

ACTOR_TIME_LIMIT_MS = 30 * 60 * 1000


def self_check() -> None:
    """Refuse a host that cannot run jobs: ``jailpy doctor``'s essentials (its checks the default
    policy needs: user namespaces, id ranges, cgroups, seccomp, a real run), then ``/bin/true``
    with the limits jobs use (memory, cpu_time, pids).  Raises HostError, one line naming the
    failed checks and their fixes."""
    from .. import doctor
    from ..policy import load
    from ..sandbox import Sandbox

    _, checks = doctor.run_all()
    failed = [c for c in checks if c.needed and c.status == doctor.FAIL]
    if failed:
        raise HostError("this host cannot run jobs: jailpy doctor: " + "; ".join(
            f"{c.name}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else "") for c in failed))
    try:
        pol = load("default").replace(cwd=False, memory="64M", cpu_time=1.0, pids=8, wall_time=10.0)
        with Sandbox(pol, reuse_userns=False) as sb:
            r = sb.run(["/bin/true"])
    except JailpyError as e:
        raise HostError(f"this host cannot run jobs: {e}") from None
    if r.verdict.value != "OK":
        raise HostError(f"this host cannot run jobs: a trial run of /bin/true ended {r.verdict.value} ({r.error})")


class Worker:
    """One ``jailpy worker`` process (see the module docstring)."""

    def __init__(self, broker_url: str, *, slots: int = 1, problems: str | None = None,
                 heartbeat_timeout_ms: int = 15000) -> None:
        import dramatiq

        from ..slots import SlotPool

        self.url = broker_url
        self.slots = slots
        self.problems = problems
        self.broker = make_broker(broker_url, heartbeat_timeout_ms)
        self.store = JobStore(broker_url, self.broker)
        self.pool = SlotPool(size=max(2, 2 * slots))
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._judges: dict = {}
        self._lock = threading.Lock()
        dramatiq.actor(self.run_job, broker=self.broker, actor_name=ACTOR, queue_name=QUEUE, max_retries=0,
                       time_limit=ACTOR_TIME_LIMIT_MS)

    def run_job(self, jid: str) -> None:
        """The actor: start the job (unless it is done), run it, store its end."""
        h = self.store.start(jid, self.name)
        if h is None:
            return  # done already (a redelivered message of a finished job): nothing to run again
        try:
            result = self._execute(h["kind"], json.loads(h["request"]))
        except JailpyError as e:
            self.store.finish(jid, None, f"{type(e).__name__}: {e}")
            return
        except Exception as e:  # noqa: BLE001 - the job failed; the worker goes on
            self.store.finish(jid, None, f"{type(e).__name__}: {e}")
            return
        self.store.finish(jid, result)

    def _execute(self, kind: str, request: dict) -> dict:
        from .runner import run_request
        from .schema import BadRequest, parse_run

        if kind == "run":
            try:
                req = parse_run(request)
                return run_request(req, self.pool, None, timeout=None)
            except BadRequest as e:
                raise JailpyError(f"bad request: {e}") from None
        if kind == "judge":
            if not self.problems:
                raise JailpyError("this worker has no --problems")
            from ..judge import Judge

            name = request["problem"]
            path = os.path.join(self.problems, name)
            if "/" in name or not os.path.isfile(os.path.join(path, "problem.toml")):
                raise JailpyError(f"no problem {name!r}")
            with self._lock:
                j = self._judges.get(name) or self._judges.setdefault(name, Judge(path, pool=self.pool))
            return j.judge(request["source"].encode(), request.get("lang"), source_name=request.get("source_name") or "",
                           stop_on_first_failure=bool(request.get("stop_on_first_failure"))).to_dict()
        raise JailpyError(f"unknown job kind {kind!r}")

    def info(self) -> dict:
        from .app import cgroup_mode

        return {"slots": self.slots, "cgroup": cgroup_mode(), "pid": os.getpid(), "host": socket.gethostname()}

    def serve(self, stop: threading.Event | None = None) -> None:
        """Consume jobs until SIGTERM or SIGINT (or ``stop``)."""
        from dramatiq import Worker as DramatiqWorker

        stop = stop or threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        w = DramatiqWorker(self.broker, queues={QUEUE}, worker_threads=self.slots, worker_timeout=200)
        w.queue_prefetch = self.slots  # one message per slot: a busy worker hoards none
        w.start()
        try:
            while not stop.wait(5.0):
                self.store.advertise(self.name, self.info())
        finally:
            w.stop(timeout=10_000)
            self.store.redis.hdel("jailpy:workers", self.name)
            self.pool.close()
            self.broker.close()


def main_loop(broker_url: str, slots: int, problems: str | None, heartbeat_timeout_ms: int) -> None:
    """What ``jailpy worker`` runs (after its arguments were checked)."""
    self_check()
    w = Worker(broker_url, slots=slots, problems=problems, heartbeat_timeout_ms=heartbeat_timeout_ms)
    try:
        w.store.redis.ping()
    except Exception as e:  # noqa: BLE001 - redis-py's connection errors
        raise HostError(f"--broker {broker_url}: cannot reach Redis: {e}") from None
    w.store.advertise(w.name, w.info())
    print(f"jailpy: worker {w.name} ready, {slots} slot(s), broker {broker_url}", flush=True)
    t0 = time.monotonic()
    w.serve()
    print(f"jailpy: worker {w.name} stopped after {time.monotonic() - t0:.0f} s", flush=True)
