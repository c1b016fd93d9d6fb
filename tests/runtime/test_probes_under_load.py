"""Large bodies are worked on off the event loop: the probes keep answering, and the answers
are the same as on the fast path."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fleetshift_runtime.codecs import (
    decode_in_pieces,
    parse_csv,
    parse_json,
    parse_jsonlines,
    parse_oip,
    parse_oip_in_pieces,
)
from fleetshift_runtime.errors import RequestError
from support.runtime_kit import RuntimeProcess, TrainedModel, csv_body, runtime_env

HEAVY_CLIENTS = Path(__file__).with_name("heavy_clients.py")
LIMIT = 6 * 1024 * 1024  # FLEETSHIFT_MAX_REQUEST_BYTES's default, SageMaker's limit


@pytest.fixture(scope="module")
def default_server(
    tmp_path_factory: pytest.TempPathFactory, churn_model: TrainedModel
) -> Iterator[RuntimeProcess]:
    """The churn model with the default settings (6 MiB bodies)."""
    folder = tmp_path_factory.mktemp("probes")
    path = churn_model.save(folder / "model.ubj")
    server = RuntimeProcess(
        runtime_env(MODEL_URI=str(path), CACHE_DIR=str(folder / "cache")), folder / "log"
    )
    server.start().wait_ready()
    yield server
    server.stop()


_LINE = json.dumps([0.123456] * 20).encode()
_BODIES = {
    # kind: (path, content type)
    "jsonlines": ("/invocations", "application/jsonlines"),
    "csv": ("/invocations", "text/csv"),
    "json": ("/invocations", "application/json"),
    "oip-json": ("/v2/models/model/infer", "application/json"),
}


def _max_size_body(kind: str) -> bytes:
    """A body of 20-feature rows just under the 6 MiB limit."""
    if kind == "csv":
        line = _LINE[1:-1].replace(b" ", b"") + b"\n"
        return line * (LIMIT // len(line))
    if kind == "jsonlines":
        return (_LINE + b"\n") * (LIMIT // (len(_LINE) + 1))
    rows = LIMIT // (len(_LINE) + 1) - 20
    data = b"[" + b",".join([_LINE] * rows) + b"]"
    if kind == "json":
        return b'{"instances": ' + data + b"}"
    tensor = {"name": "input-0", "shape": [rows, 20], "datatype": "FP32", "data": []}
    head, tail = json.dumps({"inputs": [tensor]}).encode().split(b"[]")
    return head + data + tail


def _probe_latencies_ms(server: RuntimeProcess, seconds: float) -> dict[str, list[float]]:
    """Each probe, in turn, on one keep-alive connection, for ``seconds``."""
    latencies: dict[str, list[float]] = {"/ping": [], "/v2/health/ready": [], "/v2/health/live": []}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for path, samples in latencies.items():
                started = time.perf_counter()
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status == 200, path
                time.sleep(0.01)  # pacing: a kubelet probes now and then, not in a loop
    finally:
        connection.close()
    return latencies


@pytest.mark.parametrize("kind", list(_BODIES))
def test_probes_answer_within_100_ms_while_8_clients_send_max_size_bodies(
    default_server: RuntimeProcess, tmp_path: Path, kind: str
) -> None:
    body_file = tmp_path / "body"
    body_file.write_bytes(_max_size_body(kind))
    path, content_type = _BODIES[kind]
    command = [sys.executable, str(HEAVY_CLIENTS), default_server.url, "8", str(body_file)]
    clients = subprocess.Popen([*command, content_type, path], stdout=subprocess.PIPE, text=True)
    try:
        assert clients.stdout is not None
        assert clients.stdout.readline().strip() == "started"
        latencies = _probe_latencies_ms(default_server, seconds=6.0)
    finally:
        clients.terminate()
        output, _ = clients.communicate(timeout=60)
    statuses = json.loads(output.strip().splitlines()[-1])
    assert set(statuses) == {"200"}, statuses
    assert statuses["200"] >= 8, "the heavy clients were answered while the probes ran"
    every = [ms for samples in latencies.values() for ms in samples]
    p99 = float(np.percentile(every, 99))
    worst = {path: round(max(samples), 1) for path, samples in latencies.items()}
    assert p99 < 100, f"probe p99 {p99:.1f} ms over {len(every)} probes; worst {worst}"


def _scores(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text[:300]
    if response.headers["content-type"] == "text/csv":
        return np.array(response.text.split(), dtype=np.float32)
    return np.array([p["score"] for p in response.json()["predictions"]], dtype=np.float32)


@pytest.mark.parametrize("content_type", ["text/csv", "application/jsonlines", "application/json"])
def test_a_large_body_gets_the_same_answers_as_small_ones(
    default_server: RuntimeProcess, churn_model: TrainedModel, content_type: str
) -> None:
    rows = np.tile(churn_model.rows, (40, 1))  # ~2,000 rows: off the loop, in pieces
    if content_type == "text/csv":
        body = csv_body(rows)
    elif content_type == "application/jsonlines":
        body = b"\n".join(json.dumps(row.tolist()).encode() for row in rows)
    else:
        body = json.dumps({"instances": rows.tolist()}).encode()
    assert len(body) > 256 * 1024
    response = httpx.post(
        f"{default_server.url}/invocations",
        content=body,
        headers={"Content-Type": content_type, "Accept": "text/csv"},
        timeout=60,
    )
    np.testing.assert_allclose(_scores(response), churn_model.expected(rows), atol=1e-6)


def test_a_large_oip_body_gets_the_same_answers_as_small_ones(
    default_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    rows = np.tile(churn_model.rows, (40, 1))
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32"}
    document = {"inputs": [{**tensor, "data": rows.tolist()}]}
    response = httpx.post(f"{default_server.url}/v2/models/model/infer", json=document, timeout=60)
    assert response.status_code == 200, response.text[:300]
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], churn_model.expected(rows), atol=1e-6
    )


@pytest.mark.parametrize(
    ("content_type", "bad_body", "reason"),
    [
        ("text/csv", b"1,x," + b"1," * 17 + b"1", "row 1601, column 2: 'x' is not a number"),
        ("application/jsonlines", b"[1, 2]", "line 1601 has 2 values"),
    ],
    ids=["csv", "jsonlines"],
)
def test_a_bad_row_deep_in_a_large_body_is_named_by_its_true_number(
    default_server: RuntimeProcess,
    churn_model: TrainedModel,
    content_type: str,
    bad_body: bytes,
    reason: str,
) -> None:
    rows = np.tile(churn_model.rows, (32, 1))  # 1,600 good rows, then the bad one
    if content_type == "text/csv":
        good = csv_body(rows)
    else:
        good = b"\n".join(json.dumps(row.tolist()).encode() for row in rows)
    response = httpx.post(
        f"{default_server.url}/invocations",
        content=good + b"\n" + bad_body,
        headers={"Content-Type": content_type},
        timeout=60,
    )
    assert response.status_code == 400
    assert reason in response.json()["error"]


def _both(decode: Callable[[bytes, int], np.ndarray], body: bytes, width: int) -> tuple[Any, Any]:
    answers = []
    for parse in (decode, lambda b, w: decode_in_pieces(decode, b, w)):
        try:
            answers.append(parse(body, width).tolist())
        except RequestError as error:
            answers.append(error.reason)
    return answers[0], answers[1]


_ROW = [0.25, -1.5, 3]
_MANY = [_ROW] * 40_000


_DATA_FIRST = json.dumps(
    {"inputs": [{"data": _MANY, "name": "input-0", "shape": [40_000, 3], "datatype": "FP64"}]}
).encode()


def _oip(data: object, **tensor: object) -> bytes:
    fields = {"name": "input-0", "shape": [40_000, 3], "datatype": "FP32", **tensor, "data": data}
    return json.dumps({"id": "x", "inputs": [fields], "parameters": {"a": 1}}).encode()


@pytest.mark.parametrize(
    "body",
    [
        _oip(_MANY),
        _oip([v for row in _MANY for v in row]),
        _oip([[1, 2, 3]] * 40_000, datatype="INT32"),
        _oip([[1, 2, 300]] * 40_000, datatype="INT8"),
        _oip([[1, None, 3], *_MANY[1:]]),
        _oip([[1.0] * 6] * 20_000),
        _oip([[1] * 3] * 20_000 + [[1.5] * 3] * 20_000),
        _DATA_FIRST,
        _oip(_MANY, parameters={"data": [1]}),
        _oip([[True, 1, 2], *_MANY[1:]]),
    ],
    ids=[
        "nested",
        "flat",
        "int32",
        "int8-out-of-range",
        "null",
        "nested-against-the-shape",
        "ints-then-floats",
        "data-first",
        "a-second-data-key",
        "boolean",
    ],
)
def test_an_oip_tensor_parsed_in_pieces_means_what_it_means_at_once(body: bytes) -> None:
    assert len(body) > 256 * 1024
    answers: list[Any] = []
    for parse in (parse_oip, parse_oip_in_pieces):
        try:
            answers.append(parse(body, "", 3).rows)
        except RequestError as error:
            answers.append(error.reason)
    at_once, in_pieces = answers
    if isinstance(at_once, str):
        assert in_pieces == at_once
    else:
        np.testing.assert_array_equal(in_pieces, at_once)


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (parse_json, json.dumps({"instances": _MANY}).encode()),
        (parse_json, json.dumps(_MANY, indent=2).encode()),
        (parse_json, json.dumps({"instances": [*_MANY, [1, None, 2]]}).encode()),
        (parse_json, json.dumps({"instances": [*_MANY, [1, 2]]}).encode()),
        (parse_json, json.dumps({"instances": [[_ROW, _ROW]] * 20_000}).encode()),
        (parse_json, json.dumps({"instances": _MANY, "x": "y"}).encode()),
        (parse_json, json.dumps({"instances": [*_MANY, [True, 1, 2]]}).encode()),
        (parse_csv, b"\r\n".join([b"0.25,-1.5,3"] * 40_000) + b"\r\n\r\n"),
        (parse_csv, b"\n".join([b"0.25,-1.5,3"] * 40_000 + [b"1, ,3"])),
        (parse_jsonlines, b"\n".join([b"[0.25, -1.5, 3]"] * 40_000 + [b'{"features": [1, 2, 3]}'])),
        (parse_jsonlines, b"\n".join([b"[0.25, -1.5, 3]"] * 40_000 + [b"[1, 2]"])),
    ],
    ids=[
        "json-instances",
        "json-indented-bare-list",
        "json-null",
        "json-short-row",
        "json-3d",
        "json-other-key",
        "json-boolean",
        "csv-crlf",
        "csv-blank-cell",
        "jsonlines-features",
        "jsonlines-short-row",
    ],
)
def test_a_body_parsed_in_pieces_means_what_it_means_at_once(
    decode: Callable[[bytes, int], np.ndarray], body: bytes
) -> None:
    assert len(body) > 256 * 1024
    at_once, in_pieces = _both(decode, body, 3)
    if isinstance(at_once, str):
        assert in_pieces == at_once
    else:
        np.testing.assert_array_equal(np.array(in_pieces), np.array(at_once))  # NaN == NaN
