"""Host side: the program's stdin, stdout and stderr as the supervisor sees them.

:func:`open_stdio` turns the caller's wishes (inherit, an fd, ``DEVNULL``, ``PIPE``, bytes to
feed) into the three fds the sandbox's PID 1 receives, plus the supervisor's own ends: pipes it
feeds (stdin bytes) and pipes it reads (captured output, or output copied to the caller's fd
and counted when an output limit must hold for files and terminals too).
"""

from __future__ import annotations

import collections
import fcntl
import os
import select
import stat
import subprocess
import threading

from .errors import PolicyError

DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE

StdSpec = int | bytes | None


def high_fd(fd: int) -> int:
    """Move ``fd`` to a number >= 3 (close-on-exec), so the child's dup2 onto 0-2 cannot clobber it."""
    if fd >= 3:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return new


def devnull() -> int:
    """/dev/null, read-write, close-on-exec, at an fd >= 3."""
    return high_fd(os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC))


def pipe() -> tuple[int, int]:
    """A close-on-exec pipe (pipe2(2)) whose ends are both >= 3."""
    r, w = os.pipe2(os.O_CLOEXEC)
    return high_fd(r), high_fd(w)


class Output:
    """One of the program's output streams as the supervisor sees it: captured (``target`` None)
    or copied to the caller's fd ``target`` through a :class:`Sink` (when an output limit must
    be enforced), counting bytes."""

    def __init__(self, name: str, target: int | None) -> None:
        self.name, self.target = name, target
        self.data = bytearray()
        self.count = 0
        self.truncated = False
        self.sink: Sink | None = None


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the caller's ``fd`` (which may be non-blocking); give up quietly if
    the reader went away (EPIPE): the program's output then goes nowhere, as it would without jailpy."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            p = select.poll()  # not select(2): the fd may be above 1023 (FD_SETSIZE)
            p.register(fd, select.POLLOUT)
            p.poll(1000)
        except OSError:
            return


SINK_MAX = 1 << 20
"""Bytes a :class:`Sink` holds for a caller's fd that does not take them; beyond that the
supervisor stops reading the program's pipe, so the program waits on its own writes."""


class Sink:
    """Copies output to one of the caller's fds from a thread of its own, so that an fd which
    does not drain (a terminal whose output was stopped, a reader that stopped reading) never
    stalls the supervisor's loop: it holds at most about SINK_MAX bytes (:meth:`full`) and
    writes a byte to ``wake_fd`` whenever it went from full to half empty, or emptied, so the
    loop can read the program's pipe again or finish.  A reader that went away (EPIPE) drops
    the rest, as it would without jailpy."""

    def __init__(self, fd: int, wake_fd: int) -> None:
        # its own descriptor of the caller's open file: the caller may close ``fd`` (and the number
        # be reused) while the sink still writes, after run() returned with wait_output=False
        self.fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        self.wake_fd: int | None = wake_fd
        self._chunks: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._was_full = False
        self._thread = threading.Thread(target=self._run, name=f"jailpy-sink-{fd}", daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(data)
            self.queued += len(data)
            self._was_full = self._was_full or self.queued >= SINK_MAX
            self._cond.notify()

    def full(self) -> bool:
        return self.queued >= SINK_MAX

    def empty(self) -> bool:
        return self.queued == 0

    def close(self) -> None:
        """No more data: the thread ends once it has written what it holds."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def detach(self) -> None:
        """The loop is gone (its wake-up pipe closed): no more wake-ups."""
        with self._cond:
            self.wake_fd = None

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: no limit) for the sink to have written all it was
        given (after :meth:`close`); True when it has.  The descriptor is closed then."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _wake(self) -> None:
        with self._cond:
            if self.wake_fd is None:
                return
            try:
                os.write(self.wake_fd, b".")
            except OSError:
                pass  # the pipe is full (the loop has a wake-up to read already)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks and not self._closed:
                    self._cond.wait()
                if not self._chunks:
                    os.close(self.fd)
                    return
                data = self._chunks.popleft()
            write_all(self.fd, data)
            with self._cond:
                self.queued -= len(data)
                wake = self.queued == 0 or (self._was_full and self.queued <= SINK_MAX // 2)
                if wake:
                    self._was_full = False
            if wake:
                self._wake()


class Stdio:
    """The fds of one run: ``fds`` the three the program gets (closed here once sent), ``feeds``
    our write ends of stdin pipes with the bytes still to write, ``outputs`` our read ends of
    output pipes (stdout's first)."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.opened: list[int] = []  # the program's ends we made, to close once sent
        self.feeds: dict[int, bytes] = {}
        self.outputs: dict[int, Output] = {}

    def close_sent(self) -> None:
        """Close the ends handed to the sandbox (it holds its own copies now)."""
        for fd in self.opened:
            os.close(fd)
        self.opened = []

    def close(self) -> None:
        """Close every fd still open here; safe to call twice."""
        self.close_sent()
        for fd in (*self.feeds, *self.outputs):
            try:
                os.close(fd)
            except OSError:
                pass
        self.feeds.clear()
        self.outputs.clear()


def read_only(fd: int, st: os.stat_result, io: Stdio) -> int:
    """``fd`` as the program's stdin when its output is limited: a terminal (opened read-write
    by the shell) or a file opened for writing would let it write around the limit, so such an
    fd is opened again read-only through /proc/self/fd (a new open file description: proc(5));
    a regular file keeps its offset.  A socket cannot be opened again: PolicyError."""
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
        return fd
    if stat.S_ISSOCK(st.st_mode):
        raise PolicyError("stdin is a socket the program could also write to, around --output-limit: give stdin as "
                          "a pipe, a file or /dev/null")
    new = high_fd(os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC))
    io.opened.append(new)
    if stat.S_ISREG(st.st_mode):
        os.lseek(new, os.lseek(fd, 0, os.SEEK_CUR), os.SEEK_SET)
    return new


def open_stdio(stdin: StdSpec, stdout: StdSpec, stderr: StdSpec, output_limit: int | None) -> Stdio:
    """The three stdio fds of a run (see the module docstring).  ``stdin``: None (inherit fd 0),
    an fd, ``DEVNULL`` or bytes; ``stdout``/``stderr``: None (inherit), an fd, ``DEVNULL`` or
    ``PIPE``.  A closed inherited fd becomes /dev/null.  With ``output_limit``, stdin is made
    read-only (:func:`read_only`).  Raises PolicyError for an fd that is not open, a directory,
    or an unsupported value; nothing is left open then."""
    io = Stdio()

    def std(spec: StdSpec, i: int) -> int | None:
        what = ("stdin", "stdout", "stderr")[i]
        if spec is None:
            fd = i
            try:
                st = os.fstat(fd)
            except OSError:
                return None
        elif spec == DEVNULL:
            fd = devnull()
            io.opened.append(fd)
            return fd
        elif spec == PIPE or isinstance(spec, bytes):
            r, w = pipe()
            mine, theirs = (w, r) if i == 0 else (r, w)
            io.opened.append(theirs)
            if i == 0:
                io.feeds[mine] = bytes(spec) if isinstance(spec, bytes) else b""
            else:
                io.outputs[mine] = Output(what, None)
            return theirs
        elif isinstance(spec, int) and not isinstance(spec, bool) and spec >= 0:
            fd = spec
            try:
                st = os.fstat(fd)
            except (OSError, OverflowError):
                raise PolicyError(f"{what}: fd {fd} is not open") from None
        else:
            raise PolicyError(f"{what}: unsupported value {spec!r}")
        if stat.S_ISDIR(st.st_mode):
            raise PolicyError(f"{what} is a directory; give a file, a pipe or /dev/null")
        if i > 0 and output_limit is not None:
            r, w = pipe()  # counted on the way: the limit holds for files and terminals too
            io.opened.append(w)
            io.outputs[r] = Output(what, fd)
            return w
        if i == 0 and output_limit is not None:
            return read_only(fd, st, io)
        return fd

    try:
        io.fds = [std(stdin, 0), std(stdout, 1), std(stderr, 2)]
        for i, fd in enumerate(io.fds):
            if fd is None:  # the caller has it closed: the program gets /dev/null there
                io.fds[i] = devnull()
                io.opened.append(io.fds[i])
    except BaseException:
        io.close()
        raise
    return io
