"""Capabilities (capabilities(7)) and no_new_privs (prctl(2) PR_SET_NO_NEW_PRIVS).

Child side only.  Inside a new user namespace the set-up process holds every capability
*in that namespace*; before execve all of them go, in every set: bounding (so an execve
as uid 0 cannot regain them: "Capabilities and execution of programs by root"),
ambient, inheritable, permitted and effective.
"""

from __future__ import annotations

from . import _syscalls as sc


def drop_bounding() -> None:
    """Empty the bounding set (PR_CAPBSET_DROP needs CAP_SETPCAP, so call this before
    :func:`drop_all`) and clear the ambient set.  Raises OSError."""
    for cap in range(sc.cap_last_cap() + 1):
        sc.prctl(sc.PR_CAPBSET_DROP, cap)
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)


def drop_all(keep: int = 0) -> None:
    """Set effective, permitted and inheritable to ``keep`` (a bit mask, 0 = nothing)."""
    sc.capset(keep, keep, 0)


def no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve can never grant privileges again (setuid bits and file
    capabilities are ignored); inherited by every descendant and irreversible."""
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
