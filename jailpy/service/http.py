"""uvicorn's h11 protocol with a deadline on reading each request (``jailpy serve``).

uvicorn has no timeout on a request's headers or body: its keep-alive timer is cancelled by any
byte received and is not armed at all before a connection's first request, so a client that
opens connections and sends half a header (or a Content-Length and part of the body) holds
each for as long as it likes; ``limit_concurrency`` of them answer every later request 503.
:class:`DeadlineH11Protocol` closes a connection whose request has not arrived whole (headers
and body) ``READ_TIMEOUT`` seconds after the server began waiting for it (the connection was
made, or the previous response was sent).  Running a request is not bounded here (the sandbox's
own limits do that).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

READ_TIMEOUT = 30.0
"""Seconds a client has to send one whole request (headers and body)."""


class DeadlineH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose request is not read whole in ``read_timeout`` s."""

    read_timeout = READ_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        # IDLE: not even the headers; SEND_BODY: the body is not all there.  DONE: being answered.
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()
