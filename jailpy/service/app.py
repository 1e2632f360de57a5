"""``jailpy serve``: the judge machine's HTTP API, a Starlette app (docs/api.md).

Routes: ``POST /v1/run``, ``POST /run`` (go-judge's shapes), ``POST /v1/judge``, ``/v1/files``
(``POST`` a body, ``GET``/``DELETE /v1/files/{id}``, ``GET /v1/files``), ``GET /v1/health``,
``GET /metrics`` (Prometheus text), and with a broker ``POST /v1/jobs`` and ``GET /v1/jobs/{id}``.

Back-pressure: a request takes one permit per command (two for a judging) from ``slots``
permits, without waiting; when there are not enough it gets 429 with ``Retry-After`` (no queue
in this process).  Sandbox runs happen in worker threads.  A malformed request gets 400 with
``{"error", "field"}``; anything unexpected 500 with one line, never a traceback.  With a token
(``--token-file``) every route wants ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import threading
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import JailpyError
from ..slots import Busy, SlotPool
from . import gojudge, metrics
from .files import FileStore, FileTooLarge
from .runner import run_request
from .schema import BadRequest, JudgeRequest, decode, parse_run

log = logging.getLogger("jailpy.service")
MAX_BODY = 64 << 20
"""Bytes a request body may have (413 beyond)."""


class Permits:
    """``n`` permits taken without waiting (the 429 rule)."""

    def __init__(self, n: int) -> None:
        self.n, self.free = n, n
        self._lock = threading.Lock()

    def take(self, k: int) -> bool:
        with self._lock:
            if k > self.free:
                return False
            self.free -= k
            return True

    def give(self, k: int) -> None:
        with self._lock:
            self.free += k


def _error(status: int, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    body = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers or None)


def cgroup_mode() -> str | None:
    """v1, v2 or None (no cgroup file system) as mounted at /sys/fs/cgroup."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    if os.path.isdir("/sys/fs/cgroup/memory"):
        return "v1"
    return None


def create_app(*, slots: int = 0, problems: str | None = None, token: str | None = None, broker: str | None = None,
               max_body: int = MAX_BODY, files: FileStore | None = None, run_timeout: float = 30.0,
               body_budget: int | None = None) -> Starlette:
    """The Starlette app.  ``slots``: sandboxes at once (default: the CPU count); ``problems``: a
    directory of problem directories for /v1/judge; ``token``: the bearer token every request
    must carry (None: no authentication); ``broker``: a redis:// URL for /v1/jobs;
    ``body_budget``: bytes of request bodies held at once, all requests together (default four
    ``max_body``; a request whose body would pass it gets 429), since ``max_body`` bounds one
    request and up to 1024 connections are served at once."""
    from starlette.concurrency import run_in_threadpool

    slots = slots or os.cpu_count() or 1
    pool = SlotPool(size=max(2, slots))
    permits = Permits(slots)
    store = files or FileStore()
    m = metrics.Metrics(pool, permits)
    problem_dir = Path(problems).resolve() if problems else None
    judges: dict[str, object] = {}
    judges_lock = threading.Lock()
    jobs = None
    if broker:
        from .jobs import JobStore

        jobs = JobStore(broker)

    budget = Permits(body_budget if body_budget is not None else 4 * max_body)

    async def body_of(request: Request) -> bytes:
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > max_body):
            raise BadRequest("body", f"at most {max_body} bytes")
        data = bytearray()
        async for chunk in request.stream():
            if not budget.take(len(chunk)):
                m.rejected.inc()
                raise Busy("the server holds as many request bodies as it may: try again")
            request.state.body_bytes = getattr(request.state, "body_bytes", 0) + len(chunk)
            data += chunk
            if len(data) > max_body:
                raise BadRequest("body", f"at most {max_body} bytes")
        return bytes(data)

    async def guarded(request: Request, handler) -> Response:
        if token is not None:
            auth = request.headers.get("authorization", "")
            if not (auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode())):
                return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except BadRequest as e:
            status = 413 if e.field == "body" and e.message.startswith("at most") else 400
            return _error(status, e.message, e.field)
        except Busy as e:
            return _error(429, str(e), **{"Retry-After": "1"})
        except JailpyError as e:
            return _error(503, f"jailpy: {e}")
        except Exception as e:  # noqa: BLE001 - one line, never a traceback
            log.exception("internal error")
            return _error(500, f"internal error: {type(e).__name__}")
        finally:
            budget.give(getattr(request.state, "body_bytes", 0))

    def route(path: str, methods: list[str]):
        def wrap(fn):
            async def endpoint(request: Request) -> Response:
                return await guarded(request, fn)
            return Route(path, endpoint, methods=methods)
        return wrap

    async def run_with_permits(k: int, fn, *args):
        if not permits.take(k):
            m.rejected.inc()
            raise Busy(f"all {permits.n} sandbox slots are busy")
        m.in_flight.inc()
        try:
            return await run_in_threadpool(fn, *args)
        finally:
            m.in_flight.dec()
            permits.give(k)

    def timed_run(req):
        t0 = time.monotonic()
        resp = run_request(req, pool, store, timeout=run_timeout)
        m.observe(resp["results"], time.monotonic() - t0)
        return resp

    async def parse_json(request: Request):
        raw = await body_of(request)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest("body", f"not valid JSON: {e}") from None
        except RecursionError:
            raise BadRequest("body", "JSON nested too deeply") from None

    def at_once(req) -> int:
        """Sandboxes ``req`` runs at once (runner.run_request: the piped commands together, the
        others one after another beside them); 400 when this server can never run that many."""
        piped = {p.from_cmd for p in req.pipes} | {p.to_cmd for p in req.pipes}
        k = len(piped) + (1 if len(piped) < len(req.cmd) else 0)
        if k > permits.n:
            raise BadRequest("pipes" if piped else "cmd",
                             f"runs {k} sandboxes at once; this server runs at most {permits.n} (--slots)")
        return k

    @route("/v1/run", ["POST"])
    async def v1_run(request: Request) -> Response:
        req = parse_run(await body_of(request))
        return JSONResponse(await run_with_permits(at_once(req), timed_run, req))

    @route("/run", ["POST"])
    async def gj_run(request: Request) -> Response:
        body = await parse_json(request)
        req, collect = gojudge.to_run_request(body)
        resp = await run_with_permits(at_once(req), timed_run, req)
        return JSONResponse(gojudge.to_results(resp, collect))

    def get_judge(name: str):
        from ..judge import Judge

        if problem_dir is None:
            raise BadRequest("problem", "this server was started without --problems")
        try:
            found = not ("/" in name or "\0" in name or name in ("", ".", "..") or len(name.encode()) > 255) \
                and (problem_dir / name / "problem.toml").is_file()
        except (OSError, ValueError, UnicodeEncodeError):  # (is_file raises for a name the kernel refuses)
            found = False
        if not found:
            raise BadRequest("problem", f"no problem {name[:60]!r}")
        with judges_lock:
            if name not in judges:
                judges[name] = Judge(problem_dir / name, pool=pool)
            return judges[name]

    @route("/v1/judge", ["POST"])
    async def v1_judge(request: Request) -> Response:
        req = decode(await body_of(request), JudgeRequest)
        j = get_judge(req.problem)

        def go():
            try:
                return j.judge(req.source.encode(), req.lang, source_name=req.source_name or "",
                               stop_on_first_failure=req.stop_on_first_failure)
            except JailpyError as e:
                if type(e).__name__ == "PolicyError":
                    raise BadRequest("lang" if "language" in str(e) else "source", str(e)) from None
                raise
        report = await run_with_permits(min(2, permits.n), go)  # (--slots 1: it would never have two)
        m.judged.labels(verdict=report.verdict).inc()
        return JSONResponse(report.to_dict())

    @route("/v1/files", ["POST", "GET"])
    async def v1_files(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(store.list())
        data = await body_of(request)
        try:
            fid = store.add(data, request.query_params.get("name", ""))
        except FileTooLarge as e:
            raise BadRequest("body", str(e)) from None
        return JSONResponse({"id": fid}, status_code=201)

    @route("/v1/files/{fid}", ["GET", "DELETE"])
    async def v1_file(request: Request) -> Response:
        fid = request.path_params["fid"]
        if request.method == "DELETE":
            return Response(status_code=204) if store.delete(fid) else _error(404, f"no file {fid[:40]!r}")
        data = store.get(fid)
        return Response(data, media_type="application/octet-stream") if data is not None else \
            _error(404, f"no file {fid[:40]!r}")

    @route("/v1/health", ["GET"])
    async def v1_health(request: Request) -> Response:
        st = pool.stats()
        return JSONResponse({
            "status": "ok", "version": __version__, "cgroup": cgroup_mode(),
            "slots": {"total": permits.n, "free": permits.free, "pool": {k: st[k] for k in (
                "total", "busy", "idle", "cleaning", "created", "reused")}},
            "verifications": st["verifications"], "verification_failures": st["verification_failures"],
            "destroyed": st["destroyed"], "last_failed_verification": st["last_failure"],
            "files": store.stats(), "broker": bool(jobs)})

    @route("/metrics", ["GET"])
    async def prom(request: Request) -> Response:
        body, ctype = m.render()
        return Response(body, media_type=ctype)

    routes = [v1_run, gj_run, v1_judge, v1_files, v1_file, v1_health, prom]

    if jobs is not None:
        @route("/v1/jobs", ["POST"])
        async def v1_jobs(request: Request) -> Response:
            raw = await body_of(request)
            parse_run(raw)  # 400 now rather than a failed job later
            jid = await run_in_threadpool(jobs.submit, json.loads(raw))
            return JSONResponse({"id": jid}, status_code=202)

        @route("/v1/jobs/{jid}", ["GET"])
        async def v1_job(request: Request) -> Response:
            st = await run_in_threadpool(jobs.status, request.path_params["jid"])
            return JSONResponse(st) if st is not None else _error(404, "no such job")

        routes += [v1_jobs, v1_job]

    async def not_found(request: Request, exc) -> Response:
        code = getattr(exc, "status_code", 404)
        return _error(code, "not found" if code == 404 else "method not allowed" if code == 405 else "error")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        with judges_lock:
            for j in judges.values():
                j.close()
        pool.close()

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan)
    app.state.pool, app.state.permits, app.state.files = pool, permits, store
    return app
