"""Clients that send too much, too slowly or too many times: each meets a limit that is a
setting, and well-behaved clients keep being served."""

from __future__ import annotations

import json
import re
import resource
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from support.runtime_kit import RuntimeProcess, StartRuntime, TrainedModel

ROW = ",".join(["0.5"] * 20).encode()


def _connect(server: RuntimeProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def _status(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:100]
    return int(raw.split(b" ", 2)[1])


def _error(raw: bytes) -> str:
    return str(json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"])


def test_an_oversized_body_gets_a_413_that_urllib_can_read(churn_server: RuntimeProcess) -> None:
    """urllib sends the whole body before reading: it must see the 413, not a reset."""
    body = (ROW + b"\n") * 20_000  # ~1 MiB against a 64 KiB limit
    for _ in range(5):
        request = urllib.request.Request(
            f"{churn_server.url}/invocations",
            data=body,
            headers={"Content-Type": "text/csv"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == 413
        assert "FLEETSHIFT_MAX_REQUEST_BYTES" in json.loads(caught.value.read())["error"]


def test_an_oversized_body_sent_after_100_continue_is_refused_before_it_is_sent(
    churn_server: RuntimeProcess,
) -> None:
    with _connect(churn_server) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n"
        )
        sock.settimeout(10)
        answer = sock.recv(65536)
    assert _status(answer) == 413


def test_request_headers_over_the_limit_get_a_431(churn_server: RuntimeProcess) -> None:
    with _connect(churn_server) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(50):  # up to 5 MB, far over the 64 KiB default
                sock.sendall(b"a" * 100_000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_until_closed(sock, timeout=10)
    assert _status(answer) == 431
    assert "FLEETSHIFT_MAX_HEADER_BYTES" in _error(answer)
    assert httpx.get(f"{churn_server.url}/ping").status_code == 200


def test_request_headers_under_the_limit_are_served(churn_server: RuntimeProcess) -> None:
    response = httpx.get(f"{churn_server.url}/ping", headers={"X-Big": "a" * 40_000})
    assert response.status_code == 200


def test_the_header_limit_is_a_setting(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: pytest.TempPathFactory
) -> None:
    path = churn_model.save(tmp_path / "model.ubj")  # type: ignore[operator]
    server = start_runtime(MODEL_URI=str(path), MAX_HEADER_BYTES="4096")
    assert httpx.get(f"{server.url}/ping", headers={"X-A": "a" * 1000}).status_code == 200
    with _connect(server) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000)
        answer = _read_until_closed(sock, timeout=10)
    assert _status(answer) == 431


@pytest.fixture
def impatient_server(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: pytest.TempPathFactory
) -> RuntimeProcess:
    """A server that gives clients one second for headers and one for a body."""
    path = churn_model.save(tmp_path / "model.ubj")  # type: ignore[operator]
    return start_runtime(MODEL_URI=str(path), HEADER_TIMEOUT_SECONDS="1", BODY_TIMEOUT_SECONDS="1")


def test_a_client_that_never_finishes_its_headers_is_cut_off(
    impatient_server: RuntimeProcess,
) -> None:
    with _connect(impatient_server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        answer = _read_until_closed(sock, timeout=10)
        waited = time.monotonic() - started
    assert _status(answer) == 408
    assert "FLEETSHIFT_HEADER_TIMEOUT_SECONDS" in _error(answer)
    assert waited < 5


def test_a_client_that_never_finishes_its_body_is_cut_off(
    impatient_server: RuntimeProcess,
) -> None:
    with _connect(impatient_server) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Content-Length: 1000\r\n\r\n0.5,0.5"
        )
        answer = _read_until_closed(sock, timeout=10)
        waited = time.monotonic() - started
    assert _status(answer) == 408
    assert "FLEETSHIFT_BODY_TIMEOUT_SECONDS" in _error(answer)
    assert waited < 5


def test_a_slow_client_with_keep_alive_still_gets_its_answers(
    impatient_server: RuntimeProcess,
) -> None:
    """The clocks run only while a request is being received, not while it is served."""
    with httpx.Client(base_url=impatient_server.url) as client:
        for _ in range(3):
            response = client.post(
                "/invocations", content=ROW, headers={"Content-Type": "text/csv"}
            )
            assert response.status_code == 200


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    churn_server: RuntimeProcess,
) -> None:
    """uvicorn's 5 s keep-alive timeout holds, kept by the sweep instead of a timer per
    response, and the connection closes without a word (the header timeout is 10 s)."""
    with _connect(churn_server) as sock:
        request = (
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(ROW), ROW)
        )
        sock.sendall(request)
        answer = sock.recv(65536)
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, body = answer.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += sock.recv(65536)
        assert _status(answer) == 200
        started = time.monotonic()
        after = _read_until_closed(sock, timeout=10)
        waited = time.monotonic() - started
    assert after == b""
    assert 4.5 < waited < 7.5


@contextmanager
def _open_file_limit(limit: int) -> Iterator[None]:
    """Children started inside get this soft limit on open files; this process keeps its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_slow_clients_cannot_use_up_the_file_descriptors(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: pytest.TempPathFactory
) -> None:
    """600 connections holding partial headers against a 256-descriptor limit: the
    connection cap closes the oldest of them, and a real client is served."""
    path = churn_model.save(tmp_path / "model.ubj")  # type: ignore[operator]
    with _open_file_limit(256):
        server = start_runtime(MODEL_URI=str(path), wait=False)
    server.wait_ready()
    slow: list[socket.socket] = []
    try:
        for _ in range(600):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        for _ in range(5):
            response = httpx.get(f"{server.url}/ping", timeout=5)
            assert response.status_code == 200
        response = httpx.post(
            f"{server.url}/invocations", content=ROW, headers={"Content-Type": "text/csv"}
        )
        assert response.status_code == 200
    finally:
        for sock in slow:
            sock.close()


def test_the_limits_hold_in_every_worker_of_several(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: pytest.TempPathFactory
) -> None:
    path = churn_model.save(tmp_path / "model.ubj")  # type: ignore[operator]
    server = start_runtime(
        MODEL_URI=str(path), WORKERS="2", MAX_HEADER_BYTES="4096", HEADER_TIMEOUT_SECONDS="1"
    )
    for _ in range(6):  # connections land on either worker
        with _connect(server) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000)
            assert _status(_read_until_closed(sock, timeout=10)) == 431
        with _connect(server) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
            assert _status(_read_until_closed(sock, timeout=10)) == 408
