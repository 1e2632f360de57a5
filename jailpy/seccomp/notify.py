"""The kernel side of a filter: :func:`install` (seccomp(2), in the sandbox's PID 1) and the
supervisor's side of user notification (seccomp_unotify(2)): :func:`receive`, :func:`respond`
and :func:`answer`.

The sandbox's side of the fork imports this module (jailpy.child, jailpy.forkserver), so it
depends on nothing but the syscall wrappers: no policy language, loaders or compiler.  What a
notification means is decided by :meth:`.bpf.Filter.decide`; how it is reported, by :mod:`.report`.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import _syscalls as sc

if TYPE_CHECKING:
    from .bpf import Decision


def install(bpf: bytes, listener: bool) -> int | None:
    """Install ``bpf`` on the calling thread (seccomp(2) SECCOMP_SET_MODE_FILTER); the caller must
    have set no_new_privs (prctl(2) PR_SET_NO_NEW_PRIVS).  With ``listener``, asks for a
    notification listener (SECCOMP_FILTER_FLAG_NEW_LISTENER, with WAIT_KILLABLE_RECV where the
    kernel has it, Linux 5.19) and returns its fd (close-on-exec); else returns None.  Filters are
    inherited by children and kept across execve.  Raises OSError (EACCES: no no_new_privs;
    EINVAL: bad program; EBUSY: a listener already exists in this thread's filters)."""
    if not listener:
        sc.seccomp_set_mode_filter(bpf, 0)
        return None
    try:
        return sc.seccomp_set_mode_filter(
            bpf, sc.SECCOMP_FILTER_FLAG_NEW_LISTENER | sc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
    except OSError as e:
        if e.errno != _errno.EINVAL:
            raise
    return sc.seccomp_set_mode_filter(bpf, sc.SECCOMP_FILTER_FLAG_NEW_LISTENER)


@dataclass(frozen=True)
class Notification:
    """A seccomp notification (struct seccomp_notif): ``id`` (for :func:`respond`), ``pid`` (in the
    listener's pid namespace; 0 when not visible there), syscall ``nr``, ``arch`` (AUDIT_ARCH_*),
    ``ip`` (instruction pointer) and the 6 raw 64-bit ``args``."""

    id: int
    pid: int
    nr: int
    arch: int
    ip: int
    args: tuple[int, ...]


def receive(listener_fd: int) -> Notification | None:
    """Read one notification (ioctl SECCOMP_IOCTL_NOTIF_RECV, seccomp_unotify(2)).  Blocks: poll
    the fd for POLLIN first (POLLHUP: no task uses the filter any more).  Returns None when the
    notifying task died or was interrupted first (ENOENT) or on EINTR; raises OSError otherwise."""
    try:
        n = sc.seccomp_notif_recv(listener_fd)
    except OSError as e:
        if e.errno in (_errno.ENOENT, _errno.EINTR):
            return None
        raise
    d = n.data
    return Notification(n.id, n.pid, d.nr, d.arch, d.instruction_pointer, tuple(int(a) for a in d.args))


def respond(listener_fd: int, notif_id: int, *, error: int = 0, cont: bool = False) -> None:
    """Answer a notification (ioctl SECCOMP_IOCTL_NOTIF_SEND): the syscall fails with ``error``
    (a positive errno, e.g. errno.EPERM) or, with ``cont``, runs as if unfiltered
    (SECCOMP_USER_NOTIF_FLAG_CONTINUE; safe here because jailpy decides on register values only,
    never on memory the task could change).  ENOENT (the task died or was interrupted) is not an
    error.  Raises ValueError for neither or both of error and cont; OSError otherwise."""
    if bool(error) == bool(cont):
        raise ValueError("respond: give exactly one of error=ERRNO or cont=True")
    try:
        if cont:
            sc.seccomp_notif_send(listener_fd, notif_id, flags=sc.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        else:
            sc.seccomp_notif_send(listener_fd, notif_id, error=-abs(error))
    except OSError as e:
        if e.errno != _errno.ENOENT:
            raise


def answer(listener_fd: int, notif: Notification, decision: Decision) -> bool:
    """Answer ``notif`` as ``decision`` says: errno -> the errno, log -> CONTINUE.  Returns True
    when the caller must kill the sandbox instead (a kill rule; no answer is sent, so the
    syscall never runs)."""
    if decision.action == "kill":
        return True
    if decision.action in ("log", "allow"):
        respond(listener_fd, notif.id, cont=True)
    else:
        respond(listener_fd, notif.id, error=decision.errno or _errno.EPERM)
    return False

