"""jailpy as a service: ``jailpy serve`` (a Starlette app: :mod:`jailpy.service.app`) and
``jailpy worker`` (Dramatiq actors on Redis: :mod:`jailpy.service.worker`); :func:`submit` and
:func:`result` enqueue a job and read it back (:mod:`jailpy.service.jobs`).

Needs the ``service`` extra (``pip install 'jailpy[service]'``): starlette, uvicorn, httpx,
dramatiq[redis], redis, prometheus-client.  ``jailpy exec`` never imports this package.
"""

from __future__ import annotations


def submit(request: dict, broker: str, kind: str = "run") -> str:
    """Enqueue a ``/v1/run`` request (a dict; ``kind="judge"``: a ``/v1/judge`` one) on the Redis
    ``broker`` (``redis://HOST:PORT/DB``); returns the job id.  Raises BadRequest for a malformed
    request.  ``jailpy worker`` processes run it; :func:`result` reads it."""
    from .jobs import JobStore

    return JobStore(broker).submit(request, kind)


def result(job_id: str, broker: str, wait: float = 0.0) -> dict | None:
    """``{"state": "queued|running|done|failed", "result": ...}`` of a job (None: unknown id),
    waiting up to ``wait`` seconds for it to be done."""
    from .jobs import JobStore

    return JobStore(broker).status(job_id, wait=wait)
