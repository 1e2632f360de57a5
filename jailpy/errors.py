"""Errors jailpy raises.  Every one of them means "jailpy refused or failed" and maps
to exit status 125 in the CLI (the convention of env(1), docker and podman)."""

from __future__ import annotations

import errno
import os
import resource  # here, not where it is used: with no fd left, even an import fails (EMFILE)

from .text import one_line


class JailpyError(Exception):
    """Base class: jailpy itself could not do what was asked.  ``str(err)`` is one line
    naming the cause and, where there is one, the fix."""

    exit_code = 125

    def __str__(self) -> str:
        # one line of valid text, always: control and format characters (a newline in a key or a
        # file name, U+202E) escaped as repr() would, bytes that are not UTF-8 as \xNN
        return one_line(super().__str__())


class PolicyError(JailpyError):
    """A policy file, a CLI flag or an API argument is invalid (bad key, bad value, missing path)."""


class HostError(JailpyError):
    """A requested protection cannot be applied on this host (fail closed): the message says
    what is missing and how to fix it."""


class SandboxSetupError(JailpyError):
    """Setting up the sandbox failed inside the child, before the program was started."""


def fd_exhausted(e: OSError) -> str:
    """One line for running out of file descriptors (``e``: EMFILE or ENFILE): which limit, and
    how to raise it (getrlimit(2) RLIMIT_NOFILE; proc(5) /proc/sys/fs/file-max)."""
    if e.errno == errno.ENFILE:
        return f"the system is out of file descriptors ({e.strerror}; fs.file-max): close some, or raise it"
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return (f"out of file descriptors ({e.strerror}): this process may open {soft} (ulimit -n) and a sandbox "
            f"needs about 16 more: raise the limit (ulimit -n 1024)")


def out_of_fds() -> str | None:
    """:func:`fd_exhausted`'s line when this process cannot open one more file now (a step that
    failed in another way because of it), else None."""
    try:
        os.close(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as e:
        return fd_exhausted(e) if e.errno in (errno.EMFILE, errno.ENFILE) else None
    return None
