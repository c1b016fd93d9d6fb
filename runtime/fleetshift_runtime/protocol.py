"""uvicorn's httptools protocol with TCP_NODELAY set on every accepted connection.

uvloop sets TCP_NODELAY itself, but the asyncio loop does not on sockets inherited from
uvicorn's multi-worker supervisor. Without it, Nagle's algorithm holds back the
response body written after the headers until the client's delayed ACK arrives:
every keep-alive request then takes ~40 ms (measured: 22 req/s instead of 1,800 with
two workers at concurrency 1). Setting it here makes both loops safe.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that disables Nagle's algorithm on TCP connections."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Set TCP_NODELAY, then let uvicorn take the connection."""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
