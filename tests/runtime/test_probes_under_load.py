"""Large bodies are worked on off the event loop: the probes keep answering, and the answers
are the same as on the fast path."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

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
    ],
    ids=["jsonlines", "csv"],
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
