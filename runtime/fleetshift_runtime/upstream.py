"""The runtime's own small HTTP/1.1 client on asyncio streams, for the servers it calls.

Two kinds of caller use it:

- a serial inference pipeline's steps (``pipeline.py``): :class:`PooledClient`, keep-alive
  connections to one server, pooled, reading ``Content-Length``, chunked and read-to-close
  answers up to a size cap, so any server a step image runs will do; acknowledging at once
  (``TCP_QUICKACK``), so a server that writes its headers and body apart does not wait
  ~40 ms for a delayed ACK (docs/pipelines.md, "Measured");
- shadow copies and ``TargetVariant`` forwards to another variant's Service
  (``mirror.py``): :class:`PeerConnection`, one keep-alive connection that reads the
  runtime's own answers (``Content-Length``).

Both write requests with :func:`request_bytes` and read an answer's head with
:func:`read_head`.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

HEAD_LIMIT_BYTES = 64 * 1024
"""The stream buffer's limit, so the most an answer's status line and headers may take."""

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class BadAnswerError(Exception):
    """A server answered something that is not an HTTP answer the runtime can read."""


class Connection:
    """One open TCP connection to a server: its asyncio streams and its socket."""

    __slots__ = ("reader", "socket", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.socket = writer.get_extra_info("socket")
        if self.socket is not None:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        """A new connection to ``host:port`` (raises ``OSError`` when none can be made)."""
        reader, writer = await asyncio.open_connection(host, port, limit=HEAD_LIMIT_BYTES)
        return cls(reader, writer)

    def quick_ack(self) -> None:
        """Acknowledge the server's segments at once (Linux ``TCP_QUICKACK``, which the
        kernel turns off again when we send, so it is set after each request is written).
        A server that writes its headers and its body in two sends with Nagle's algorithm
        on (as Python's ``http.server`` does) otherwise waits for our delayed ACK, ~40 ms,
        before sending the body."""
        if self.socket is not None and _QUICKACK is not None:
            self.socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def close(self) -> None:
        """Close the connection (without waiting for it to be closed)."""
        self.writer.close()


def request_bytes(
    method: bytes,
    path: bytes,
    host_header: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None,
) -> bytes:
    """An HTTP/1.1 request as sent: a body (even an empty one) gets its ``Content-Length``,
    None sends none.

    >>> request_bytes(b"POST", b"/x", b"h:81", [(b"Accept", b"text/csv")], b"1")
    b'POST /x HTTP/1.1\\r\\nHost: h:81\\r\\nAccept: text/csv\\r\\nContent-Length: 1\\r\\n\\r\\n1'
    >>> request_bytes(b"GET", b"/ping", b"h:81", [(b"Connection", b"close")], None)
    b'GET /ping HTTP/1.1\\r\\nHost: h:81\\r\\nConnection: close\\r\\n\\r\\n'
    """
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: " + host_header]
    lines += [name + b": " + value for name, value in headers]
    if body is None:
        return b"\r\n".join(lines) + b"\r\n\r\n"
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes]]:
    """An answer's status line, unchecked, and its headers (lower-case names); raises
    ``asyncio.LimitOverrunError`` for a head over the reader's limit and
    ``asyncio.IncompleteReadError`` when the connection ends before the head does."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status_line, headers


async def read_answer(
    reader: asyncio.StreamReader, max_bytes: int
) -> tuple[int, dict[bytes, bytes], bytes, bool]:
    """Status, headers (lower-case names), body, and whether the connection may be reused,
    however the body is framed; :class:`BadAnswerError` for what is not HTTP or a body over
    ``max_bytes``."""
    try:
        status_line, headers = await read_head(reader)
    except asyncio.LimitOverrunError:
        raise BadAnswerError("headers over 64 KiB") from None
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise BadAnswerError(f"not an HTTP answer: {status_line[:80]!r}")
    version, status = parts[0], int(parts[1])
    connection = headers.get(b"connection", b"").lower()
    keep = connection != b"close" and (version != b"HTTP/1.0" or connection == b"keep-alive")
    if status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", keep
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return status, headers, await read_chunked(reader, max_bytes), keep
    length = headers.get(b"content-length")
    if length is not None:
        if not length.isdigit() or int(length) > max_bytes:
            raise BadAnswerError(f"Content-Length {length[:20]!r}")
        return status, headers, await reader.readexactly(int(length)), keep
    body = await reader.read(max_bytes + 1)
    while body and len(body) <= max_bytes:
        more = await reader.read(max_bytes + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > max_bytes:
        raise BadAnswerError(f"an answer over {max_bytes} bytes")
    return status, headers, body, False


async def read_chunked(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    """A chunked body (its trailers read and dropped); :class:`BadAnswerError` for a chunk
    size that is not hex or a body over ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            length = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadAnswerError(f"a chunk size {line[:20]!r}") from None
        if length == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        size += length
        if size > max_bytes:
            raise BadAnswerError(f"an answer over {max_bytes} bytes")
        chunks.append(await reader.readexactly(length))
        await reader.readexactly(2)


class PooledClient:
    """Keep-alive connections to one server, pooled; answers framed any way, up to
    ``max_answer_bytes``."""

    def __init__(self, host: str, port: int, max_answer_bytes: int) -> None:
        self.host = host
        self.port = port
        self.max_answer_bytes = max_answer_bytes
        self._idle: list[Connection] = []
        self._host_header = f"{host}:{port}".encode()

    async def post(
        self, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send one request and read its answer. A kept-alive connection the server closed
        meanwhile is retried once on a new one (inference is a pure function)."""
        request = request_bytes(b"POST", path, self._host_header, headers, body)
        while True:
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else await self._connect()
            try:
                connection.writer.write(request)
                connection.quick_ack()
                status, answer_headers, answer, keep = await read_answer(
                    connection.reader, self.max_answer_bytes
                )
            except (ConnectionError, asyncio.IncompleteReadError):
                connection.close()
                if reused:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            if keep:
                self._idle.append(connection)
            else:
                connection.close()
            return status, answer_headers, answer

    async def get(self, path: bytes) -> int:
        """The status of ``GET path`` on a connection of its own (closed after)."""
        connection = await self._connect()
        try:
            connection.writer.write(
                request_bytes(b"GET", path, self._host_header, [(b"Connection", b"close")], None)
            )
            status, _, _, _ = await read_answer(connection.reader, self.max_answer_bytes)
            return status
        finally:
            connection.close()

    async def _connect(self) -> Connection:
        """A new connection to the server."""
        return await Connection.open(self.host, self.port)

    def close(self) -> None:
        """Close the idle connections (one in use is closed when its answer is read)."""
        for connection in self._idle:
            connection.close()
        self._idle = []


class PeerConnection:
    """One keep-alive HTTP/1.1 connection to another variant's Service (a shadow, or the
    variant a request targets), opened on first use and again after any failure. Enough
    HTTP for the runtime's own answers (Content-Length)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or 80
        self._host_header = parts.netloc.encode()
        self._connection: Connection | None = None

    async def post(
        self, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        """Status, headers (lower-case names) and body (raises ``OSError`` when no
        connection can be made)."""
        if self._connection is None:
            self._connection = await Connection.open(self.host, self.port)
        reader, writer = self._connection.reader, self._connection.writer
        writer.write(request_bytes(b"POST", path, self._host_header, headers, body))
        status_line, answer_headers = await read_head(reader)
        status = int(status_line.split(b" ", 2)[1])
        if b"content-length" not in answer_headers:
            raise ConnectionError("the answer has no Content-Length")
        answer = await reader.readexactly(int(answer_headers[b"content-length"]))
        if answer_headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, answer_headers, answer

    def close(self) -> None:
        """Close the connection; the next request opens a new one."""
        if self._connection is not None:
            self._connection.close()
        self._connection = None
