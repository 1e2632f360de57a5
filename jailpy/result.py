"""Result and Verdict: what happened to a sandboxed run, as a versioned JSON document.

``schema_version`` changes whenever a key changes meaning or disappears; new keys may be
added without a change.  Times are seconds (float), sizes bytes (int).
"""

from __future__ import annotations

import enum

import msgspec

SCHEMA_VERSION = 1


class Verdict(str, enum.Enum):
    """The outcome class a judge acts on."""

    OK = "OK"
    """The program exited with status 0."""
    RE = "RE"
    """Runtime error: the program exited with a non-zero status."""
    SIG = "SIG"
    """The program was killed by a signal jailpy did not send."""
    TLE = "TLE"
    """CPU time limit exceeded."""
    WLE = "WLE"
    """Wall-clock time limit exceeded; jailpy killed the sandbox."""
    MLE = "MLE"
    """Memory limit exceeded (an OOM kill in the sandbox's cgroup)."""
    OLE = "OLE"
    """Output limit exceeded."""
    SV = "SV"
    """Security violation: a seccomp rule killed the program."""
    XX = "XX"
    """jailpy failed; the program's fate is unknown."""


class Result(msgspec.Struct, kw_only=True):
    """One finished run.

    ``exit_code`` is what ``jailpy exec`` exits with: the program's status, 128+N for death by
    signal N, 126 (cannot execute), 127 (not found), 125 (jailpy's own error).
    ``stdout``/``stderr`` hold captured bytes when the API was asked to capture (never in JSON)."""

    schema_version: int = SCHEMA_VERSION
    verdict: Verdict
    exit_code: int
    signal: int | None = None
    wall_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    max_rss_bytes: int | None = None
    """ru_maxrss of the largest process in the tree (getrusage(2)); not a cgroup total."""
    memory_peak_bytes: int | None = None
    """Highest memory use of the sandbox's cgroup (None without a cgroup)."""
    pids_peak: int | None = None
    """Most processes and threads the sandbox's cgroup held at once (None without a cgroup)."""
    oom_killed: bool = False
    """The kernel's OOM killer ended a process in the sandbox's cgroup."""
    io_read_bytes: int | None = None
    """Bytes the whole tree read from disks (cgroup v2 io.stat rbytes, v1 blkio; None without a
    cgroup with the io controller).  Page-cache hits are no disk IO; tmpfs is memory."""
    io_write_bytes: int | None = None
    """Bytes the whole tree wrote to disks (io.stat wbytes; on v1 only direct and synchronous writes)."""
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    limit_fired: str | None = None
    """Which limit ended the run: "cpu_time", "wall_time", "memory", "output", "seccomp", or None."""
    blocked_syscall: dict | None = None
    """The first system call a seccomp rule denied: ``{"name", "nr", "args", "action", "errno", "text",
    "count"}`` (count: how many denials in all), or None."""
    seccomp_log: list[dict] | None = None
    """With seccomp_log (permissive mode): every distinct call the policy would have denied, same shape."""
    error: str | None = None
    """For verdict XX, and for 126/127: the one-line reason."""
    setid_strip: dict | None = None
    """With writable binds: what jailpy found after the run (jailpy.setid): ``cleared`` (host paths,
    up to 50, whose setuid/setgid bits it cleared: files of the sandbox's ids), ``cleared_count``
    (inodes), ``checked`` (names looked at), ``complete`` (False: the bound, an unreadable
    directory, a tree that changed or a stop request ended the check, see ``detail``; those ids
    then wait for a check that finishes, jailpy.idlease).  None without writable binds."""
    network: dict | None = None
    """With a network (egress rules, a bridge, user-mode networking): what it did (jailpy.net.proxy):
    ``connections_allowed``, ``connections_refused``, ``refused`` (up to 50 ``{"target", "port",
    "reason"}``), ``dns_refused`` (up to 50 names the sandbox's resolver refused), ``allowed`` (up
    to 50 ``{"target", "port", "address"}``), ``bytes_sent``, ``bytes_received``; and ``address``
    (bridge, user).  None with ``--network none`` and no rules."""
    protections: dict = {}
    jailpy_version: str = ""
    policy_hash: str = ""
    stdout: bytes | None = None
    stderr: bytes | None = None

    def to_json(self) -> bytes:
        """The JSON document (captured output bytes are left out; their sizes are in ``*_bytes``)."""
        d = msgspec.to_builtins(self)
        d.pop("stdout", None)
        d.pop("stderr", None)
        try:
            return msgspec.json.format(msgspec.json.encode(d), indent=2)
        except UnicodeEncodeError:  # a path or argument that is not UTF-8: its bytes as \xNN
            from .text import clean

            return msgspec.json.format(msgspec.json.encode(clean(d)), indent=2)
