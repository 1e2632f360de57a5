"""go-judge compatibility: its ``POST /run`` request and response shapes over :func:`run_request`.

go-judge (criyle/go-judge, README "REST API Interface") takes ``{"cmd": [...], "pipeMapping":
[...]}`` with limits in nanoseconds and bytes, ``files`` for fds 0-2 (``{"content"}`` or
``{"fileId"}`` for stdin; ``{"name": "stdout", "max": N}`` collectors for 1 and 2; ``null`` where
a pipe goes), ``copyIn`` (``{"content"}`` or ``{"fileId"}``), ``copyOut`` (``?`` suffix: optional)
and ``copyOutCached``; it answers a JSON array of results with ``status`` strings.  What differs
(docs/api.md): ``src`` (a path on the server) is refused, memory limits below 16 MiB are raised to
16 MiB (a sandbox needs it to start), ``cpuRateLimit``/``cpuSetLimit``/``tty``/streams are
refused, and ``time``/``runTime`` come from jailpy's accounting.
"""

from __future__ import annotations

import msgspec

from .schema import MAX_CMDS, MIN_MEMORY, BadRequest, Cmd, FileRef, Pipe, RunRequest, check_run

STATUS = {"OK": "Accepted", "RE": "Nonzero Exit Status", "SIG": "Signalled", "TLE": "Time Limit Exceeded",
          "WLE": "Time Limit Exceeded", "MLE": "Memory Limit Exceeded", "OLE": "Output Limit Exceeded",
          "SV": "Dangerous Syscall", "XX": "Internal Error"}
"""jailpy's Result verdict -> go-judge's Status (envexec/run_status.go)."""

_IGNORED = {"stackLimit", "strictMemoryLimit", "dataSegmentLimit", "addressSpaceLimit", "realCpuLimit", "cpuRate"}
_REFUSED = {"tty", "cpuRateLimit", "cpuSetLimit", "copyOutDir", "copyOutTruncate", "symlink"}
_KNOWN = {"args", "env", "files", "cpuLimit", "clockLimit", "memoryLimit", "procLimit", "copyIn", "copyOut",
          "copyOutCached", "copyOutMax"} | _IGNORED


def _int(cmd: dict, key: str, field: str, default: int) -> int:
    v = cmd.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 2**63:  # (NaN and inf too)
        raise BadRequest(field, f"expected a number of {'ns' if 'Limit' in key and 'memory' not in key else 'bytes'}")
    return int(v)


def _names(c: dict, key: str, field: str) -> list[str]:
    v = c.get(key) or []
    if not isinstance(v, list) or not all(isinstance(n, str) for n in v):
        raise BadRequest(field, "expected a list of file names")
    return v


def _file(v, field: str) -> FileRef | str:
    if not isinstance(v, dict):
        raise BadRequest(field, "expected {\"content\": ...} or {\"fileId\": ...}")
    if "src" in v:
        raise BadRequest(field + ".src", "files from the server's own disk are not served: use content or fileId")
    if "content" in v:
        if not isinstance(v["content"], str):
            raise BadRequest(field + ".content", "expected a string")
        return v["content"]
    if "fileId" in v:
        if not isinstance(v["fileId"], str):
            raise BadRequest(field + ".fileId", "expected a string")
        return FileRef(file_id=v["fileId"])
    raise BadRequest(field, "expected content or fileId")


def to_run_request(body: object) -> tuple[RunRequest, list[dict]]:
    """Translate a go-judge request; returns the RunRequest and, per command, what its fds 1 and 2
    collect (``{"stdout": (name, max) | None, "stderr": ...}``).  Raises BadRequest."""
    if not isinstance(body, dict) or not isinstance(body.get("cmd"), list):
        raise BadRequest("cmd", "expected a list of commands")
    if len(body["cmd"]) > MAX_CMDS:  # before translating each
        raise BadRequest("cmd", f"at most {MAX_CMDS} commands, got {len(body['cmd'])}")
    unknown = set(body) - {"cmd", "pipeMapping", "requestId"}
    if unknown:
        raise BadRequest(sorted(unknown)[0], "unknown field")
    cmds, collect = [], []
    piped_in = set()
    pipes = []
    mapping = body.get("pipeMapping") or []
    if not isinstance(mapping, list):
        raise BadRequest("pipeMapping", "expected a list")
    for j, p in enumerate(mapping):
        try:
            src, dst = p["in"], p["out"]
            if (src["fd"], dst["fd"]) != (1, 0):
                raise BadRequest(f"pipeMapping[{j}]", "only stdout (fd 1) to stdin (fd 0) pipes are supported")
            if p.get("proxy"):
                raise BadRequest(f"pipeMapping[{j}].proxy", "not supported")
            pipes.append(Pipe(from_cmd=int(src["index"]), to_cmd=int(dst["index"])))
            piped_in.add(int(dst["index"]))
        except (KeyError, TypeError, ValueError):
            raise BadRequest(f"pipeMapping[{j}]", "expected {\"in\": {\"index\", \"fd\"}, \"out\": {\"index\", \"fd\"}}") from None
    for i, c in enumerate(body["cmd"]):
        f = f"cmd[{i}]"
        if not isinstance(c, dict):
            raise BadRequest(f, "expected an object")
        for key in c:
            if key in _REFUSED:
                raise BadRequest(f"{f}.{key}", "not supported by jailpy")
            if key not in _KNOWN:
                raise BadRequest(f"{f}.{key}", "unknown field")
        args = c.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            raise BadRequest(f"{f}.args", "expected a non-empty list of strings")
        env = c.get("env") or []
        if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
            raise BadRequest(f"{f}.env", "expected a list of NAME=VALUE strings")
        fl = c.get("files") or []
        if not isinstance(fl, list) or len(fl) > 3:
            raise BadRequest(f"{f}.files", "expected at most 3 entries (fds 0, 1, 2)")
        fl = list(fl) + [None] * (3 - len(fl))
        stdin = None
        if fl[0] is not None:
            stdin = _file(fl[0], f"{f}.files[0]")
        elif i not in piped_in:
            stdin = ""
        col = {}
        for k, name in ((1, "stdout"), (2, "stderr")):
            v = fl[k]
            if v is None:
                col[name] = None
            elif isinstance(v, dict) and "name" in v:
                mx = v.get("max", 1 << 20)
                if not isinstance(mx, int) or isinstance(mx, bool) or mx < 1:
                    raise BadRequest(f"{f}.files[{k}].max", "expected a number of bytes")
                col[name] = (str(v["name"]), mx)
            else:
                raise BadRequest(f"{f}.files[{k}]", "expected a collector {\"name\": ..., \"max\": N} or null")
        collect.append(col)
        copy_in = c.get("copyIn") or {}
        if not isinstance(copy_in, dict):
            raise BadRequest(f"{f}.copyIn", "expected an object")
        files = {name: _file(v, f"{f}.copyIn.{name}") for name, v in copy_in.items()}
        args = list(args)
        if "/" not in args[0] and args[0] in files:
            args[0] = "./" + args[0]  # go-judge runs a copied-in program by its name
        cpu_ns = _int(c, "cpuLimit", f"{f}.cpuLimit", 10**10)
        clock_ns = _int(c, "clockLimit", f"{f}.clockLimit", 0)
        mem = _int(c, "memoryLimit", f"{f}.memoryLimit", 256 << 20)
        out_max = max([m for _, m in filter(None, col.values())] or [1 << 20])
        copy_out = [n for n in _names(c, "copyOut", f"{f}.copyOut") if n.rstrip("?") not in ("stdout", "stderr")]
        copy_out_cached = _names(c, "copyOutCached", f"{f}.copyOutCached")
        try:
            cmd = msgspec.convert({
                "args": args, "env": env, "stdin": stdin, "files": files,
                "cpu_time_ms": max(1, cpu_ns // 10**6), "wall_time_ms": max(1, clock_ns // 10**6) if clock_ns else None,
                "memory_bytes": max(MIN_MEMORY, mem), "max_processes": _int(c, "procLimit", f"{f}.procLimit", 16) or 16,
                "output_bytes": out_max, "copy_out": copy_out, "copy_out_cached": copy_out_cached,
                "copy_out_max_bytes": _int(c, "copyOutMax", f"{f}.copyOutMax", 64 << 20) or (64 << 20),
            }, Cmd)
        except msgspec.ValidationError as e:
            raise BadRequest(f, str(e)) from None
        cmds.append(cmd)
    req = RunRequest(cmd=cmds, pipes=pipes)
    try:
        check_run(req)
    except BadRequest as e:  # our names -> go-judge's, roughly
        raise BadRequest(e.field.replace("cpu_time_ms", "cpuLimit").replace("memory_bytes", "memoryLimit")
                         .replace("max_processes", "procLimit"), e.message) from None
    return req, collect


def to_results(resp: dict, collect: list[dict]) -> list[dict]:
    """go-judge's result array from a /v1/run response."""
    out = []
    for res, col in zip(resp["results"], collect):
        files = dict(res.get("files") or {})
        errors = list(res.get("file_errors") or [])
        for stream in ("stdout", "stderr"):
            c = col.get(stream)
            if c is None:
                continue
            name, mx = c
            data = res.get(stream) or ""
            files[name] = data[:mx]  # a collector's content comes back, as go-judge's examples show
            if res.get(f"{stream}_truncated") or len(data.encode()) > mx:
                errors.append({"name": name, "type": "CollectSizeExceeded"})
        status = STATUS.get(res["verdict"], "Internal Error")
        r = {"status": status, "exitStatus": res["signal"] if res["signal"] else res["exit_code"],
             "time": res["cpu_time_ms"] * 10**6, "memory": res.get("memory_peak_bytes") or 0,
             "runTime": res["wall_time_ms"] * 10**6, "files": files, "fileIds": res.get("file_ids") or {}}
        if errors:
            r["fileError"] = errors
            if status == "Accepted" and any(e["type"] != "CollectSizeExceeded" for e in errors):
                r["status"] = "File Error"
        if res.get("error") and status == "Internal Error":
            r["error"] = res["error"]
        out.append(r)
    return out
