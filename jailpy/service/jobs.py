"""Jobs on Redis: the state and result of each job, keyed by job id, and the messages that carry
them to ``jailpy worker`` processes (Dramatiq's Redis broker, queue ``jailpy``).

A job is a hash ``jailpy:job:ID``: ``state`` (queued, running, done, failed), ``kind`` (run or
judge), ``request`` (JSON), ``result`` (JSON, once done), ``error`` (once failed), ``attempts``
(how many times a worker started it), ``writes`` (how many times a result was stored: 1),
``worker``, ``created`` and ``updated`` (UNIX seconds).  Delivery is at least once (Dramatiq acks
a message after its actor returned; a dead worker's messages are requeued once its heartbeat is
older than ``heartbeat_timeout``), so a job may run twice: the result is written by one Lua script
that stores it only when the job is not done yet (:data:`_FINISH`), so it is stored exactly once
and the first finished run wins.  Results are kept ``RESULT_TTL`` seconds.

For results to survive a restart of Redis, run it with an append-only file synced on each write
(``appendonly yes``, ``appendfsync always``): a result is then on disk before its message is
acknowledged (docs/deploy.md).
"""

from __future__ import annotations

import json
import time
import uuid

from ..errors import PolicyError

QUEUE = "jailpy"
ACTOR = "jailpy_run_job"
PREFIX = "jailpy:job:"
WORKERS = "jailpy:workers"
RESULT_TTL = 7 * 86400

_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == false or state == 'done' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], ARGV[2], ARGV[3], 'updated', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'writes', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
"""Store a job's end (done + result, or failed + error) unless it is done already (a second run
of a redelivered job); KEYS[1] the job, ARGV: state, field, value, now, ttl.  A failed job may
still be done by a later run."""

_START = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == false or state == 'done' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1], 'updated', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 1
"""


def check_broker_url(url: str) -> None:
    """Raise PolicyError unless ``url`` is a redis:// (or rediss://, unix://) URL."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise PolicyError(f"--broker: expected redis://HOST:PORT/DB, got {url!r}")


def make_broker(url: str, heartbeat_timeout_ms: int = 15000):
    """Dramatiq's Redis broker for ``url``, looking for dead workers on every fetch (maintenance
    on each command: a dead worker's messages are requeued ``heartbeat_timeout_ms`` after its
    last heartbeat)."""
    from dramatiq.brokers.redis import RedisBroker

    check_broker_url(url)
    return RedisBroker(url=url, heartbeat_timeout=heartbeat_timeout_ms, maintenance_chance=1_000_000)


class JobStore:
    """Submit jobs and read them (the server and :func:`jailpy.service.submit`), and record their
    ends (the worker)."""

    def __init__(self, url: str, broker=None) -> None:
        import redis

        check_broker_url(url)
        self.url = url
        self.redis = redis.Redis.from_url(url)
        self._broker = broker
        self._finish = self.redis.register_script(_FINISH)
        self._start = self.redis.register_script(_START)

    @property
    def broker(self):
        if self._broker is None:
            self._broker = make_broker(self.url)
        return self._broker

    def submit(self, request: dict, kind: str = "run") -> str:
        """Check and enqueue a ``/v1/run`` request (kind ``run``) or a ``/v1/judge`` one
        (``judge``); returns the job id.  Raises BadRequest for a malformed request."""
        import dramatiq

        from .schema import BadRequest, JudgeRequest, parse_run

        if kind == "run":
            parse_run(request)
        elif kind == "judge":
            import msgspec

            try:
                msgspec.convert(request, JudgeRequest)
            except msgspec.ValidationError as e:
                raise BadRequest("body", str(e)) from None
        else:
            raise BadRequest("kind", f"run or judge, got {kind!r}")
        jid = uuid.uuid4().hex
        now = time.time()
        self.redis.hset(PREFIX + jid, mapping={"state": "queued", "kind": kind, "request": json.dumps(request),
                                               "attempts": 0, "writes": 0, "created": now, "updated": now})
        self.redis.expire(PREFIX + jid, RESULT_TTL)
        self.broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name=ACTOR, args=(jid,), kwargs={},
                                             options={}))
        return jid

    def raw(self, jid: str) -> dict | None:
        """The job's hash with str keys and values, or None."""
        h = self.redis.hgetall(PREFIX + jid)
        return {k.decode(): v.decode() for k, v in h.items()} if h else None

    def status(self, jid: str, wait: float = 0.0) -> dict | None:
        """``{"state", "result", "error", "attempts"}`` (None: no such job), waiting up to ``wait``
        seconds for it to be done or failed."""
        if not isinstance(jid, str) or len(jid) > 64:
            return None
        end = time.monotonic() + wait
        while True:
            h = self.raw(jid)
            if h is None:
                return None
            if h["state"] in ("done", "failed") or time.monotonic() >= end:
                break
            time.sleep(0.05)
        out = {"id": jid, "state": h["state"], "result": json.loads(h["result"]) if "result" in h else None,
               "attempts": int(h.get("attempts", 0))}
        if h["state"] == "failed":
            out["error"] = h.get("error")
        return out

    # ---- the worker's side
    def start(self, jid: str, worker: str) -> dict | None:
        """Mark the job running (unless it is done: None then); returns its hash."""
        if not self._start(keys=[PREFIX + jid], args=[worker, time.time()]):
            return None
        return self.raw(jid)

    def finish(self, jid: str, result: dict | None, error: str | None = None) -> bool:
        """Store the job's result (or error); False when it was done already (not written)."""
        if error is None:
            args = ["done", "result", json.dumps(result)]
        else:
            args = ["failed", "error", error]
        return bool(self._finish(keys=[PREFIX + jid], args=[*args, time.time(), RESULT_TTL]))

    def advertise(self, worker: str, info: dict, ttl: int = 30) -> None:
        """Publish a worker's slots and cgroup mode (``jailpy:workers`` hash, field per worker)."""
        self.redis.hset(WORKERS, worker, json.dumps(dict(info, seen=time.time())))
        self.redis.expire(WORKERS, ttl * 10)

    def workers(self) -> dict:
        return {k.decode(): json.loads(v) for k, v in self.redis.hgetall(WORKERS).items()}
