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

from fleetshift_runtime.codecs import decode_in_pieces, parse_csv, parse_json, parse_jsonlines
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


def _max_size_body(line: bytes) -> bytes:
    if line.startswith(b"{"):  # one JSON document: {"instances": [row, row, ...]}
        row = line[1:]
        return b'{"instances": [' + b",".join([row] * (LIMIT // (len(row) + 1) - 20)) + b"]}"
    return line * (LIMIT // len(line))


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


@pytest.mark.parametrize(
    ("content_type", "line"),
    [
        ("application/jsonlines", (json.dumps([0.123456] * 20) + "\n").encode()),
        ("text/csv", (",".join(["0.123456"] * 20) + "\n").encode()),
        ("application/json", b"{" + json.dumps([0.123456] * 20).encode()),
    ],
    ids=["jsonlines", "csv", "json"],
)
def test_probes_answer_within_100_ms_while_8_clients_send_max_size_bodies(
    default_server: RuntimeProcess, tmp_path: Path, content_type: str, line: bytes
) -> None:
    body_file = tmp_path / "body"
    body_file.write_bytes(_max_size_body(line))
    clients = subprocess.Popen(
        [sys.executable, str(HEAVY_CLIENTS), default_server.url, "8", str(body_file), content_type],
        stdout=subprocess.PIPE,
        text=True,
    )
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
    for path, samples in latencies.items():
        p99 = float(np.percentile(samples, 99))
        assert p99 < 100, f"{path} p99 {p99:.1f} ms over {len(samples)} probes"


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
