"""uvicorn's httptools protocol, with TCP_NODELAY and limits that hostile clients meet.

**TCP_NODELAY.** uvloop sets it itself, but the asyncio loop does not on sockets
inherited from uvicorn's multi-worker supervisor. Without it, Nagle's algorithm holds
back the response body written after the headers until the client's delayed ACK
arrives: every keep-alive request then takes ~40 ms (measured: 22 req/s instead of
1,800 with two workers at concurrency 1). Setting it here makes both loops safe.

**Limits** (each a setting, see :class:`ConnectionLimits`):

- request headers over ``max_header_bytes`` get a 431 and the connection is closed
  (httptools has no limit of its own: a 50 MB header was read into memory);
- a request whose headers do not arrive within ``header_timeout`` (counted from the
  connection, or from the end of the previous response) gets a 408, and one whose body
  does not arrive within ``body_timeout`` after its headers is cut off;
- at most ``max_connections`` connections per worker: a new connection beyond that
  closes the oldest connection still waiting for its request headers (a slow client),
  or, when every connection is busy with a request, is itself answered 503;
- a connection open longer than ``max_connection_age`` gets ``Connection: close`` on its
  next response and ends after it (uvicorn adds the header when a request's cycle is not
  kept alive): kube-proxy balances per connection, so this is what moves keep-alive
  clients onto a new traffic split.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from .settings import RuntimeSettings

log = logging.getLogger("fleetshift_runtime")

_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
RESERVED_FILES = 64
"""File descriptors kept free of connections: model files, logs, the metrics port."""


def default_max_connections() -> int:
    """1000, or fewer when the open-file limit would not leave ``RESERVED_FILES`` free."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1000
    return max(16, min(1000, soft - RESERVED_FILES))


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may take from the server."""

    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    max_connections: int
    max_connection_age: float = 0.0
    """Seconds; 0: no limit."""

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> ConnectionLimits:
        """The limits the ``FLEETSHIFT_*`` settings give."""
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            max_connections=settings.max_connections or default_max_connections(),
            max_connection_age=settings.max_connection_age_seconds,
        )


def _response(status: int, reason: str) -> bytes:
    body = orjson.dumps({"error": reason})
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


# uvicorn's handlers, called directly: no ``super()`` lookup in the calls of a request.
_data_received = HttpToolsProtocol.data_received
_headers_complete = HttpToolsProtocol.on_headers_complete
_message_complete = HttpToolsProtocol.on_message_complete


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that disables Nagle's algorithm and enforces the limits.

    The read timeouts cost a request nothing but two timestamps: one sweep per worker,
    a few times a second, closes the connections whose clock ran out. (A timer armed and
    cancelled per request cost ~10 µs of a 1-row request's ~90.) The same sweep closes a
    keep-alive connection left idle for uvicorn's ``timeout_keep_alive``, in place of
    the timer uvicorn arms after every response (~1-2 µs a request).
    """

    limits: ClassVar[ConnectionLimits | None] = None
    """Set by ``__main__``; a worker process of several reads its own settings."""

    _sweeping: ClassVar[asyncio.AbstractEventLoop | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = type(self).limits
        if limits is None:
            from .settings import RuntimeSettings  # noqa: PLC0415 - only without __main__

            limits = NoDelayHttpToolsProtocol.limits = ConnectionLimits.from_settings(
                RuntimeSettings()
            )
        self._limits = limits
        self._in_headers = True
        self._in_body = False
        self._header_bytes = 0
        self._request_ended = False
        self._since = self.loop.time()
        """When the current phase (waiting for headers, or for the body) began."""
        self._opened = self._since
        """When the connection was made (for ``max_connection_age``)."""

    # --- connection life ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Set TCP_NODELAY, make room under the connection cap, start the header clock."""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._since = self._opened = self.loop.time()
        if NoDelayHttpToolsProtocol._sweeping is not self.loop:
            NoDelayHttpToolsProtocol._sweeping = self.loop
            self._schedule_sweep()
        if len(self.connections) > self._limits.max_connections and not self._make_room():
            self._refuse(503, "the server is at its connection limit; retry shortly")

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for its request headers."""
        idle = [
            c
            for c in self.connections
            if isinstance(c, NoDelayHttpToolsProtocol) and c is not self and c._waiting()
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._since)
        oldest._refuse(503, "closed to make room for another connection; retry")
        return True

    def _waiting(self) -> bool:
        return self._in_headers and (self.cycle is None or self.cycle.response_complete)

    def _refuse(self, status: int, reason: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(_response(status, reason))
            self.transport.close()

    # --- clocks: one sweep per worker -----------------------------------------------

    def _schedule_sweep(self) -> None:
        limits = self._limits
        every = min(1.0, limits.header_timeout / 4, limits.body_timeout / 4)
        self.loop.call_later(every, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, NoDelayHttpToolsProtocol):
                connection._check_clock(now)
        self._schedule_sweep()

    def _check_clock(self, now: float) -> None:
        limits = self._limits
        if (
            self._header_bytes == 0
            and self.cycle is not None
            and self._waiting()
            and now - self._since > self.timeout_keep_alive
        ):
            if not self.transport.is_closing():
                self.transport.close()  # idle after a response: what uvicorn's timer did
        elif self._waiting() and now - self._since > limits.header_timeout:
            self._refuse(
                408,
                f"request headers did not arrive within {limits.header_timeout:g} s "
                "(FLEETSHIFT_HEADER_TIMEOUT_SECONDS)",
            )
        elif self._in_body and now - self._since > limits.body_timeout:
            if self.cycle is not None and self.cycle.response_complete:
                self.transport.close()  # answered already (a 413): stop reading the rest
            else:
                self._refuse(
                    408,
                    f"the request body did not arrive within {limits.body_timeout:g} s "
                    "(FLEETSHIFT_BODY_TIMEOUT_SECONDS)",
                )

    # --- parsing --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Feed the parser; refuse headers that grow past the limit.

        A chunk in which a request ended holds that request's body too, so it is not
        counted: the next request's headers may then exceed the limit by less than one
        chunk (pipelined requests only)."""
        self._request_ended = False
        _data_received(self, data)
        if self._in_headers and not self._request_ended and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self._limits.max_header_bytes:
                self._refuse(
                    431,
                    f"request headers are over {self._limits.max_header_bytes} bytes "
                    "(FLEETSHIFT_MAX_HEADER_BYTES)",
                )

    def on_headers_complete(self) -> None:
        """The headers are in: the body clock starts. A connection past its age answers
        this request and closes."""
        self._in_headers = False
        self._in_body = True
        self._since = now = self.loop.time()
        _headers_complete(self)
        age = self._limits.max_connection_age
        if age and now - self._opened >= age and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        """The body is in: no clock runs while the request is served."""
        self._in_body = False
        self._header_bytes = 0
        self._in_headers = True
        self._request_ended = True
        _message_complete(self)

    def on_response_complete(self) -> None:
        """The answer is out: the next request's headers have ``header_timeout``, and an
        idle connection is closed after ``timeout_keep_alive`` by the sweep.

        uvicorn's own handler, without the keep-alive timer it arms per response."""
        self._since = self.loop.time()
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # pipelined requests wait for the answer before them
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
