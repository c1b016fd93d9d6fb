"""Keep-alive clients follow a traffic shift: a connection older than
``FLEETSHIFT_MAX_CONNECTION_AGE_SECONDS`` is answered with ``Connection: close`` and ends, so
the client reconnects and kube-proxy picks a backend again. And every answer names the
variant and revision that gave it (SageMaker's ``X-Amzn-Invoked-Production-Variant``)."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from support.runtime_kit import RuntimeProcess, StartRuntime, TrainedModel, csv_body


def _post(connection: http.client.HTTPConnection, body: bytes) -> http.client.HTTPResponse:
    connection.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
    response = connection.getresponse()
    response.read()
    return response


def _start(
    start_runtime: StartRuntime, model: TrainedModel, folder: Path, age: str
) -> RuntimeProcess:
    return start_runtime(
        MODEL_URI=str(model.save(folder / "model.ubj")),
        MAX_CONNECTION_AGE_SECONDS=age,
        VARIANT="AllTraffic",
        REVISION="5f3c1a9e7b",
    )


def test_a_keep_alive_connection_past_its_age_is_answered_then_closed(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    server = _start(start_runtime, churn_model, tmp_path, "1")
    body = csv_body(churn_model.rows[:3])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    first = _post(connection, body)
    assert first.status == 200 and first.getheader("connection") is None
    socket_before = connection.sock
    assert socket_before is not None, "kept alive while young"
    opened = time.monotonic()
    served_on_it = [first]
    while True:  # poll: every request on the same socket until the server says close
        response = _post(connection, body)  # a silent close would raise here
        served_on_it.append(response)
        if response.getheader("connection") == "close":
            break
        assert connection.sock is socket_before
        assert time.monotonic() - opened < 5, "no Connection: close 5 s into a 1 s age"
    age = time.monotonic() - opened
    assert age > 0.8, f"closed {age:.2f} s after the first answer; the age is 1 s"
    assert all(r.status == 200 for r in served_on_it), "the closing answer is a full answer"
    assert connection.sock is None, "http.client dropped the connection the server closed"
    again = _post(connection, body)  # a new connection, served like the first
    assert again.status == 200 and connection.sock is not socket_before


def test_with_age_zero_a_connection_is_reused_for_ever(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    server = _start(start_runtime, churn_model, tmp_path, "0")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = csv_body(churn_model.rows[:1])
    _post(connection, body)
    first_socket = connection.sock
    until = time.monotonic() + 1.5
    answers = 0
    while time.monotonic() < until:  # longer than the age of the other test
        response = _post(connection, body)
        assert response.status == 200 and response.getheader("connection") is None
        answers += 1
    assert connection.sock is first_socket and answers > 10


def test_answers_name_the_variant_and_revision_that_gave_them(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    server = _start(start_runtime, churn_model, tmp_path, "30")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    served = _post(connection, csv_body(churn_model.rows[:2]))
    refused = _post(connection, b"not,a,row\n")
    for response in (served, refused):
        assert response.getheader("x-amzn-invoked-production-variant") == "AllTraffic"
        assert response.getheader("x-fleetshift-revision") == "5f3c1a9e7b"
    assert (served.status, refused.status) == (200, 400)
