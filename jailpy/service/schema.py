"""The ``/v1/run`` request and result (docs/api.md), parsed and checked with one line per error
that names the field (``cmd[0].cpu_time_ms``): :func:`parse_run`.  Units are in the names:
``_ms`` milliseconds, ``_bytes`` bytes.  Standard library and msgspec only: the worker and the
client use it too.
"""

from __future__ import annotations

import posixpath
import re

import msgspec

SCHEMA_VERSION = 1
MAX_CMDS = 8
MAX_FILES = 64
MAX_ARGS = 256
MAX_ARG_BYTES = 64 << 10
MAX_CPU_MS = 60_000
MAX_WALL_MS = 120_000
MAX_MEMORY = 4 << 30
MIN_MEMORY = 16 << 20
MAX_OUTPUT = 64 << 20
DEFAULT_OUTPUT = 1 << 20
MAX_PROCESSES = 1024
WORKDIR = "/w"
"""The command's working directory inside the sandbox: where ``files`` are written."""
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class BadRequest(Exception):
    """A malformed request: ``field`` (a path like ``cmd[0].args``) and a one-line message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message = field, message


class FileRef(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A file's content given inline (``content``, text) or by ``file_id`` (from ``/v1/files``)."""

    content: str | None = None
    file_id: str | None = None


class Pipe(msgspec.Struct, forbid_unknown_fields=True):
    """Command ``from_cmd``'s stdout is command ``to_cmd``'s stdin."""

    from_cmd: int
    to_cmd: int


class Cmd(msgspec.Struct, forbid_unknown_fields=True):
    args: list[str]
    env: list[str] = []
    stdin: str | FileRef | None = None
    files: dict[str, str | FileRef] = {}
    cpu_time_ms: int = 1000
    wall_time_ms: int | None = None
    memory_bytes: int = 256 << 20
    max_processes: int = 16
    output_bytes: int = DEFAULT_OUTPUT
    """The cap on stdout and on stderr, each (more: verdict OLE; what came before is returned)."""
    copy_out: list[str] = []
    copy_out_cached: list[str] = []
    copy_out_max_bytes: int = DEFAULT_OUTPUT
    seccomp: str = "default"


class RunRequest(msgspec.Struct, forbid_unknown_fields=True):
    cmd: list[Cmd]
    pipes: list[Pipe] = []
    request_id: str | None = None


class JudgeRequest(msgspec.Struct, forbid_unknown_fields=True):
    problem: str
    source: str
    lang: str | None = None
    source_name: str | None = None
    stop_on_first_failure: bool = False


def _decode_error(e: msgspec.ValidationError | msgspec.DecodeError) -> BadRequest:
    if not isinstance(e, msgspec.ValidationError):  # (a ValidationError is a DecodeError too)
        return BadRequest("body", f"not valid JSON: {e}")
    from ..judge.problem import field_error

    field, what = field_error(str(e))
    return BadRequest(field or "body", "unknown field" if what == "unknown key" else what)


def decode(body: bytes, kind: type):
    """Decode a JSON body into ``kind``; raises BadRequest naming the field."""
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise _decode_error(e) from None


def _name_ok(name: str) -> bool:
    if not name or "\0" in name or name.startswith("/") or len(name.encode()) > 255 * 4:
        return False
    norm = posixpath.normpath(name)
    return not (norm == "." or norm.startswith("../") or norm == "..")


def _box_name_ok(name: str) -> bool:
    """A name ``files`` may write: relative, in normal form (no ``.``, ``..`` or empty part, no
    trailing slash), so that two names cannot be one file or a file and a directory by another
    spelling."""
    return _name_ok(name) and posixpath.normpath(name) == name


def check_run(req: RunRequest) -> RunRequest:
    """Check the values a type cannot express; raises BadRequest naming the field."""
    if not req.cmd:
        raise BadRequest("cmd", "at least one command")
    if len(req.cmd) > MAX_CMDS:
        raise BadRequest("cmd", f"at most {MAX_CMDS} commands, got {len(req.cmd)}")
    for i, c in enumerate(req.cmd):
        f = f"cmd[{i}]"
        if not c.args:
            raise BadRequest(f"{f}.args", "at least the program")
        if len(c.args) > MAX_ARGS or sum(len(a) for a in c.args) > MAX_ARG_BYTES:
            raise BadRequest(f"{f}.args", f"at most {MAX_ARGS} arguments and {MAX_ARG_BYTES} bytes")
        if any("\0" in a for a in c.args) or not c.args[0]:
            raise BadRequest(f"{f}.args", "arguments must be non-empty strings without NUL bytes")
        for j, kv in enumerate(c.env):
            if not _ENV_RE.match(kv) or "\0" in kv:
                raise BadRequest(f"{f}.env[{j}]", f"expected NAME=VALUE, got {kv[:40]!r}")
        for key, lo, hi in (("cpu_time_ms", 1, MAX_CPU_MS), ("memory_bytes", MIN_MEMORY, MAX_MEMORY),
                            ("max_processes", 1, MAX_PROCESSES), ("output_bytes", 1, MAX_OUTPUT),
                            ("copy_out_max_bytes", 1, MAX_OUTPUT)):
            v = getattr(c, key)
            if not lo <= v <= hi:
                raise BadRequest(f"{f}.{key}", f"must be between {lo} and {hi}, got {v}")
        if c.wall_time_ms is not None and not 1 <= c.wall_time_ms <= MAX_WALL_MS:
            raise BadRequest(f"{f}.wall_time_ms", f"must be between 1 and {MAX_WALL_MS}, got {c.wall_time_ms}")
        if len(c.files) > MAX_FILES:
            raise BadRequest(f"{f}.files", f"at most {MAX_FILES} files")
        dirs = {posixpath.dirname(n) for n in c.files}
        for name, ref in c.files.items():
            if not _box_name_ok(name):
                raise BadRequest(f"{f}.files", f"bad file name {name[:60]!r}: a relative path inside the working directory")
            if name in dirs or any(d.startswith(name + "/") for d in dirs):
                raise BadRequest(f"{f}.files", f"{name[:60]!r} is both a file and a directory")
            if isinstance(ref, FileRef) and (ref.content is None) == (ref.file_id is None):
                raise BadRequest(f"{f}.files.{name}", "give content or file_id, one of them")
        if isinstance(c.stdin, FileRef) and (c.stdin.content is None) == (c.stdin.file_id is None):
            raise BadRequest(f"{f}.stdin", "give content or file_id, one of them")
        if len(c.copy_out) + len(c.copy_out_cached) > MAX_FILES:
            raise BadRequest(f"{f}.copy_out", f"at most {MAX_FILES} names in copy_out and copy_out_cached together")
        for key in ("copy_out", "copy_out_cached"):
            for j, name in enumerate(getattr(c, key)):
                if not _name_ok(name.rstrip("?")):
                    raise BadRequest(f"{f}.{key}[{j}]", f"bad file name {name[:60]!r}")
        if c.seccomp not in ("default", "strict"):
            raise BadRequest(f"{f}.seccomp", f"expected default or strict, got {c.seccomp[:40]!r}")
    seen_in, seen_out = set(), set()
    for j, p in enumerate(req.pipes):
        for key in ("from_cmd", "to_cmd"):
            v = getattr(p, key)
            if not 0 <= v < len(req.cmd):
                raise BadRequest(f"pipes[{j}].{key}", f"no command {v}")
        if p.from_cmd == p.to_cmd:
            raise BadRequest(f"pipes[{j}]", "a command cannot be piped into itself")
        if p.from_cmd in seen_out or p.to_cmd in seen_in:
            raise BadRequest(f"pipes[{j}]", "each stdout and stdin may be in one pipe")
        if req.cmd[p.to_cmd].stdin is not None:
            raise BadRequest(f"cmd[{p.to_cmd}].stdin", "this command's stdin is a pipe")
        seen_out.add(p.from_cmd)
        seen_in.add(p.to_cmd)
    return req


def parse_run(body: bytes | dict) -> RunRequest:
    """A checked RunRequest from a JSON body (bytes) or decoded JSON (a dict); raises BadRequest."""
    if isinstance(body, dict):
        try:
            req = msgspec.convert(body, RunRequest)
        except msgspec.ValidationError as e:
            raise _decode_error(e) from None
    else:
        req = decode(body, RunRequest)
    return check_run(req)
