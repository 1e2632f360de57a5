"""seccomp: syscall policies as data, compiled to classic BPF, and the host side of user notification.

A policy is a TOML file under ``policies/seccomp/`` (or an OCI/Docker-format JSON profile under
``profiles/seccomp/``): a default action, per-syscall rules with optional argument conditions,
and ``known_max_nr``, the highest syscall number the policy was written against.  :func:`load`
reads and checks one (:class:`SeccompError` names the file and the key); :func:`prepare` compiles
it with libseccomp (pyseccomp, seccomp_rule_add(3), seccomp_export_bpf(3)) and caches the BPF in
memory and on disk, so a run does no libseccomp work; :func:`install` loads the bytes with
seccomp(2) in the sandbox's PID 1; :func:`receive` / :func:`respond` answer the kernel's
notifications on the host (seccomp_unotify(2)).  What the BPF does, in order, is in :mod:`.bpf`.

Actions of a rule (and of the default):

``allow``  the syscall runs.
``deny``   a deliberate denial: SECCOMP_RET_USER_NOTIF; the supervisor reads the notification,
           names the syscall in the Result and answers ``errno`` (EPERM unless the rule says).
``kill``   SECCOMP_RET_USER_NOTIF; the supervisor kills the sandbox (verdict SV).
``log``    SECCOMP_RET_USER_NOTIF; the supervisor records it and lets it run (CONTINUE).
``errno``  SECCOMP_RET_ERRNO with ``errno``, in BPF, unreported (ENOSYS for clone3 and friends).

A policy with ``report = false`` compiles deny/kill/log to plain ERRNO / KILL_PROCESS / LOG and
needs no listener.  ``prepare(..., log=True)`` turns every deny and kill into a notification the
supervisor answers with CONTINUE (a permissive run that lists what would have been denied).

What lives where (everything below is re-exported here; import from ``jailpy.seccomp``):

``language``  the policy language: :class:`SeccompError`, syscall names and numbers
              (:func:`syscall_nr`, :func:`syscall_name`), the constant tables of ``when``
              conditions (:data:`SYMBOLS`, ``CLONE_FLAGS``, ``ADDRESS_FAMILIES``, ...),
              :func:`parse_condition` and its overlap checks, :class:`Rule`, :class:`Block`,
              :class:`SeccompPolicy`.
``loaders``   :func:`find`, :func:`known_names`, :func:`load`: the TOML loader (with
              ``include``) and the OCI/Docker JSON loader; ``POLICY_DIRS``, ``PROFILE_DIRS``.
``bpf``       :func:`compile_bpf` (libseccomp, plus the ENOSYS stub), :func:`run_bpf` (a
              classic-BPF interpreter), the action encoding, and what it decodes to:
              :class:`Filter` and :class:`Decision`.
``cache``     :func:`prepare` (a name or path -> :class:`Filter`) and the on-disk BPF cache in
              :func:`cache_dir`.
``notify``    the kernel side: :func:`install`, :class:`Notification`, :func:`receive`,
              :func:`respond`, :func:`answer`.
``report``    :func:`describe` (one call as text) and :func:`blocked_record` (the Result's entry).

Only ``notify`` is imported with this package: the sandbox's side of the fork (jailpy.child,
jailpy.forkserver) installs filters and must not load the loaders or the compiler.  The rest
is imported on first use (PEP 562).
"""

from __future__ import annotations

from .notify import Notification, answer, install, receive, respond

_EXPORTS = {
    "language": (
        "COMPILER_VERSION", "MAX64", "SeccompError", "CLONE_FLAGS", "UNSHARE_FLAGS", "ADDRESS_FAMILIES", "SOCK_TYPES",
        "SOCK_FLAGS", "PTRACE_REQUESTS", "IOCTL_REQUESTS", "PERSONALITIES", "PRCTL_OPTIONS", "CLOCKS",
        "NS_FLAGS_CLONE", "NS_FLAGS_UNSHARE", "SYMBOLS", "syscall_nr", "syscall_name", "Cmp", "Alt",
        "parse_condition", "Rule", "Block", "SeccompPolicy",
    ),
    "loaders": ("POLICY_DIRS", "PROFILE_DIRS", "find", "known_names", "load"),
    "bpf": ("compile_bpf", "run_bpf", "Decision", "Filter"),
    "cache": ("cache_dir", "prepare"),
    "notify": ("install", "Notification", "receive", "respond", "answer"),
    "report": ("describe", "blocked_record"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Import the submodule that holds ``name`` on first use (PEP 562)."""
    import importlib

    if name in _EXPORTS:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE) | set(_EXPORTS))
