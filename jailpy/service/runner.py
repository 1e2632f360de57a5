"""Run a ``/v1/run`` request: each command in a warm slot with a writable box at ``/w``.

:func:`run_request` is what the HTTP server and the Dramatiq worker both call; it returns the
response as plain data (``{"results": [...]}``).  Commands joined by ``pipes`` run at once (each
from its own thread, the interactive judge's way: this process closes a side's pipe ends as soon
as its run is over); the others one after another.  A command whose input names a file id the
cache does not hold gets verdict ``XX`` with ``error``; nothing here raises for what a request
asks, except BadRequest for an unknown file id.
"""

from __future__ import annotations

import os
import threading

from .. import _syscalls as sc
from ..errors import JailpyError
from ..policy import Policy, load as load_policy
from ..judge.runner import judge_memory
from ..stdio import DEVNULL, PIPE
from .schema import MAX_OUTPUT, WORKDIR, BadRequest, Cmd, FileRef, RunRequest

_BASE: Policy | None = None


def base_policy() -> Policy:
    global _BASE
    if _BASE is None:
        _BASE = load_policy("default").replace(cwd=False, workdir=WORKDIR, hostname="judge")
    return _BASE


def policy_for(c: Cmd, piped_out: bool) -> Policy:
    """The sandbox policy of one command: its limits, environment and seccomp policy."""
    wall = c.wall_time_ms if c.wall_time_ms is not None else 2 * c.cpu_time_ms + 1000
    base = base_policy()
    return base.replace(cpu_time=c.cpu_time_ms / 1000, wall_time=wall / 1000, memory=c.memory_bytes,
                        pids=c.max_processes, output_limit=None if piped_out else c.output_bytes,
                        env=list(base.env) + ["HOME=/tmp"] + list(c.env), seccomp=c.seccomp, fsize=max(64 << 20, c.copy_out_max_bytes))


def _content(ref: str | FileRef, files, field: str) -> bytes:
    if isinstance(ref, str):
        return ref.encode()
    if ref.content is not None:
        return ref.content.encode()
    data = files.get(ref.file_id) if files is not None else None
    if data is None:
        raise BadRequest(field, f"no file with id {ref.file_id!r} (it may have been dropped from the cache)")
    return data


def result_dict(r, *, stdout: bytes | None, stderr: bytes | None) -> dict:
    """The /v1/run result of one command from a jailpy Result (docs/api.md)."""
    return {
        "verdict": r.verdict.value, "exit_code": r.exit_code, "signal": r.signal,
        "cpu_time_ms": int(round((r.cpu_user_s + r.cpu_sys_s) * 1000)), "wall_time_ms": int(round(r.wall_s * 1000)),
        "memory_peak_bytes": judge_memory(r), "cgroup_memory_peak_bytes": r.memory_peak_bytes,
        "stdout": None if stdout is None else stdout.decode("utf-8", "replace"),
        "stderr": None if stderr is None else stderr.decode("utf-8", "replace"),
        "stdout_truncated": r.stdout_truncated, "stderr_truncated": r.stderr_truncated,
        "limit_fired": r.limit_fired, "error": r.error, "files": {}, "file_ids": {}, "file_errors": [],
    }


MAX_COPY_OUT = MAX_OUTPUT
"""Bytes one command's copy_out and copy_out_cached files may have together."""
_BENEATH = sc.RESOLVE_BENEATH | sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_NO_MAGICLINKS


def _copy_out(res: dict, c: Cmd, box: str, files) -> None:
    """Read the files ``c`` names from the box into ``res``.  The program wrote the box, so every
    part of a name may be its symlink to a host path: each is opened with openat2(2)
    ``RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`` (no symlink in any component, ELOOP), never by path."""
    box_fd = os.open(box, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _copy_out_from(res, c, box_fd, files)
    finally:
        os.close(box_fd)


def _copy_out_from(res: dict, c: Cmd, box_fd: int, files) -> None:
    left = MAX_COPY_OUT  # bytes for all of this command's files: the program can hard-link one file under many names
    for key in ("copy_out", "copy_out_cached"):
        for name in getattr(c, key):
            optional = name.endswith("?")
            name = name.rstrip("?")
            try:
                fd = sc.openat2(box_fd, name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, _BENEATH)
            except OSError as e:
                if not optional:
                    res["file_errors"].append({"name": name, "type": "CopyOutOpen", "message": e.strerror})
                continue
            try:
                st = os.fstat(fd)
                if not (st.st_mode & 0o170000 == 0o100000):
                    res["file_errors"].append({"name": name, "type": "CopyOutNotRegularFile"})
                    continue
                if st.st_size > c.copy_out_max_bytes:
                    res["file_errors"].append({"name": name, "type": "CopyOutSizeExceeded",
                                               "message": f"{st.st_size} bytes, at most {c.copy_out_max_bytes}"})
                    continue
                if st.st_size > left:
                    res["file_errors"].append({"name": name, "type": "CopyOutSizeExceeded",
                                               "message": f"{st.st_size} bytes: the command's files may have {MAX_COPY_OUT} in all"})
                    continue
                data = os.read(fd, min(c.copy_out_max_bytes, left) + 1)[:min(c.copy_out_max_bytes, left)]
                left -= len(data)
            finally:
                os.close(fd)
            if key == "copy_out":
                res["files"][name] = data.decode("utf-8", "replace")
            elif files is not None:
                res["file_ids"][name] = files.add(data, name)


def _xx(message: str) -> dict:
    return {"verdict": "XX", "exit_code": 125, "signal": None, "cpu_time_ms": 0, "wall_time_ms": 0,
            "memory_peak_bytes": None, "cgroup_memory_peak_bytes": None, "stdout": None, "stderr": None,
            "stdout_truncated": False, "stderr_truncated": False, "limit_fired": None, "error": message,
            "files": {}, "file_ids": {}, "file_errors": []}


def run_request(req: RunRequest, pool, files=None, timeout: float | None = 60.0) -> dict:
    """Run every command of ``req`` (see the module docstring) with slots of ``pool`` (a
    :class:`jailpy.slots.SlotPool`) and the file cache ``files`` (a FileStore, or None).
    Raises BadRequest (an unknown file id) before anything runs, and jailpy.slots.Busy when no
    slot came free within ``timeout`` seconds."""
    n = len(req.cmd)
    inputs = []
    for i, c in enumerate(req.cmd):
        box_files = {name: _content(ref, files, f"cmd[{i}].files.{name}") for name, ref in c.files.items()}
        stdin = None if c.stdin is None else _content(c.stdin, files, f"cmd[{i}].stdin")
        inputs.append((box_files, stdin))
    fds: dict[tuple[int, str], int] = {}
    for p in req.pipes:
        r, w = os.pipe2(os.O_CLOEXEC)
        fds[(p.to_cmd, "in")] = r
        fds[(p.from_cmd, "out")] = w
    results: list[dict | None] = [None] * n
    lock = threading.Lock()

    def close(*keys) -> None:
        with lock:
            for k in keys:
                fd = fds.pop(k, None)
                if fd is not None:
                    os.close(fd)

    def one(i: int) -> None:
        c = req.cmd[i]
        box_files, stdin_data = inputs[i]
        stdin = fds.get((i, "in"), DEVNULL if stdin_data is None else stdin_data)
        stdout = fds.get((i, "out"), PIPE)
        try:
            with pool.slot(policy_for(c, (i, "out") in fds), box="rw", box_at=WORKDIR, timeout=timeout) as s:
                s.fill(None, box_files)
                for name in box_files:
                    os.chmod(os.path.join(s.box, name), 0o755)  # programs too (go-judge's copyIn)
                r = s.run(c.args, stdin=stdin, stdout=stdout, stderr=PIPE)
                res = result_dict(r, stdout=r.stdout if stdout == PIPE else None, stderr=r.stderr)
                _copy_out(res, c, s.box, files)
        except JailpyError as e:
            if type(e).__name__ == "Busy":
                raise
            res = _xx(str(e))
        finally:
            close((i, "in"), (i, "out"))
        results[i] = res

    piped = {p.from_cmd for p in req.pipes} | {p.to_cmd for p in req.pipes}
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            one(i)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,), name=f"jailpy-cmd-{i}") for i in sorted(piped)]
    for t in threads:
        t.start()
    try:
        for i in range(n):
            if i not in piped:
                guarded(i)
    finally:
        for t in threads:
            t.join()
        close(*list(fds))
    if errors:
        raise errors[0]
    return {"results": results} if req.request_id is None else {"request_id": req.request_id, "results": results}
