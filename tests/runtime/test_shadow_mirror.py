"""Variants without a mesh: the runtime copies sampled requests to the shadows named in its
mirror file and compares the two answers to the same rows; it forwards a request that
names another variant (``TargetVariant``) to that variant's Service.

Every server here is a real process or socket on loopback: the production runtime, shadow
runtimes with their own models, a shadow that answers 500 to everything, one that accepts
connections and never answers, and a port where nothing listens.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from fleetshift_devcluster.wait import wait_for
from support.runtime_kit import (
    RuntimeProcess,
    StartRuntime,
    TrainedModel,
    csv_body,
    free_port,
    train_model,
)

POD = {"namespace": "shop", "endpoint": "churn", "variant": "AllTraffic", "revision": "3"}


def mirror_file(
    path: Path, shadows: list[tuple[str, str, int]], variants: dict[str, str] | None = None
) -> Path:
    """Write the operator's mirror file: (variant, url, samplingPercent) per shadow, and
    each serving variant's Service."""
    path.write_text(
        json.dumps(
            {
                "shadows": [
                    {"variant": name, "revision": "1", "url": url, "samplingPercent": percent}
                    for name, url, percent in shadows
                ],
                "variants": variants or {},
            }
        )
    )
    return path


def oip_request(rows: np.ndarray) -> dict[str, object]:
    """An Open Inference Protocol JSON request for ``rows``."""
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": rows.tolist()}]}


def copies(server: RuntimeProcess, shadow: str, outcome: str) -> float:
    return server.metric("fleetshift_shadow_copies_total", shadow=shadow, outcome=outcome)


@pytest.fixture
def failing_shadow() -> Iterator[str]:
    """A shadow that answers every request with a 500."""

    class Failing(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = b'{"error": "this shadow fails every request"}'
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_shadow() -> Iterator[str]:
    """A shadow that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_shadow_that_fails_times_out_or_is_down_changes_nothing_for_callers(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    failing_shadow: str,
    silent_shadow: str,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    shadows = [("failing", failing_shadow, 100), ("silent", silent_shadow, 100)]
    shadows.append(("down", nowhere, 100))
    production = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        MIRROR_FILE=str(mirror_file(tmp_path / "mirror.json", shadows)),
        MIRROR_TIMEOUT_SECONDS="60",
        **POD,
    )
    wait_for(
        lambda: "copying requests to failing" in production.log(),
        timeout=30,
        message="the mirror file read",
    )
    rows = churn_model.rows[:4]
    slowest = 0.0
    with httpx.Client(base_url=production.url, timeout=30) as client:
        for _ in range(200):
            started = time.perf_counter()
            answer = client.post(
                "/invocations", content=csv_body(rows), headers={"Content-Type": "text/csv"}
            )
            slowest = max(slowest, time.perf_counter() - started)
            assert answer.status_code == 200
            scores = np.array(answer.text.split(), dtype=np.float32)
            np.testing.assert_allclose(scores, churn_model.expected(rows), atol=1e-6)
    # A caller that waited for the silent shadow would have waited its 60 s timeout.
    assert slowest < 10, f"a request took {slowest:.1f} s"

    def counted(shadow: str) -> float:  # each copy once, whatever became of it
        return production.metric("fleetshift_shadow_copies_total", shadow=shadow)

    wait_for(
        lambda: counted("failing") == 200 and copies(production, "down", "unreachable") == 200,
        timeout=30,
        message="every copy to the failing shadows counted",
    )
    assert copies(production, "failing", "failed") > 0
    assert copies(production, "failing", "answered") == 0
    # The silent shadow holds 2 copies (one per connection) and the queue holds 64 more:
    # the rest were dropped, not waited for.
    assert copies(production, "silent", "dropped") == 200 - 64 - 2
    assert production.metric("fleetshift_invocation_5xx_errors_total") == 0


def test_each_shadow_sees_its_share_and_both_answers_are_compared_row_by_row(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    challenger = train_model(trees=5, depth=2, seed=11)  # the same features, other answers
    twin = start_runtime(MODEL_URI=str(churn_model.save(tmp_path / "twin" / "model.ubj")))
    other = start_runtime(MODEL_URI=str(challenger.save(tmp_path / "other" / "model.ubj")))
    shadows = [("twin", twin.url, 100), ("challenger", other.url, 100)]
    shadows.append(("tenth", twin.url, 10))
    production = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        MIRROR_FILE=str(mirror_file(tmp_path / "mirror.json", shadows)),
        **POD,
    )
    wait_for(lambda: "copying requests to twin" in production.log(), timeout=30)
    requests = [churn_model.rows[i : i + 5] for i in range(0, 50, 5)] * 3  # 30, 150 rows
    with httpx.Client(base_url=production.url, timeout=30) as client:
        for number, rows in enumerate(requests):
            if number % 2:
                answer = client.post(
                    "/invocations", content=csv_body(rows), headers={"Content-Type": "text/csv"}
                )
            else:
                answer = client.post(
                    "/v2/models/model/infer",
                    json=oip_request(rows),
                )
            assert answer.status_code == 200

    def compared(shadow: str) -> float:
        return production.metric("fleetshift_shadow_compared_rows_total", shadow=shadow)

    wait_for(
        lambda: compared("twin") == 150 and compared("challenger") == 150,
        timeout=30,
        message="150 rows compared with each full shadow",
    )
    ours = churn_model.expected(np.concatenate(requests))
    theirs = challenger.expected(np.concatenate(requests))
    expected_disagreements = int(np.count_nonzero((ours > 0.5) != (theirs > 0.5)))
    assert expected_disagreements > 0  # the test is only as good as a model that differs

    def disagreements(shadow: str) -> float:
        return production.metric("fleetshift_shadow_disagreements_total", shadow=shadow)

    assert disagreements("challenger") == expected_disagreements
    assert disagreements("twin") == 0
    within = production.metric("fleetshift_shadow_abs_difference_bucket", shadow="twin", le="0.001")
    assert within == 150
    differences = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    summed = production.metric("fleetshift_shadow_abs_difference_sum", shadow="challenger")
    assert summed == pytest.approx(float(differences.sum()), rel=1e-5)
    # The 10% shadow saw exactly 3 of the 30 requests (the sampler counts; it does not draw).
    assert copies(production, "tenth", "answered") == 3
    assert copies(production, "twin", "answered") == 30
    assert production.metric("fleetshift_shadow_latency_seconds_count", shadow="twin") == 30


def test_a_shadows_own_pods_copy_nothing(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    twin = start_runtime(MODEL_URI=str(churn_model.save(tmp_path / "twin" / "model.ubj")))
    file = mirror_file(tmp_path / "mirror.json", [("challenger", twin.url, 100)])
    shadow_pod = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        MIRROR_FILE=str(file),
        **{**POD, "variant": "challenger"},
    )
    wait_for(lambda: "challenger is a shadow" in shadow_pod.log(), timeout=30)
    body, csv = csv_body(churn_model.rows[:1]), {"Content-Type": "text/csv"}
    assert httpx.post(f"{shadow_pod.url}/invocations", content=body, headers=csv).is_success
    assert shadow_pod.metric("fleetshift_shadow_copies_total") == 0
    assert twin.metric("fleetshift_invocations_total") == 0


def test_a_shadow_added_to_or_removed_from_the_file_is_followed_without_a_restart(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    shadow = start_runtime(MODEL_URI=str(churn_model.save(tmp_path / "shadow" / "model.ubj")))
    file = tmp_path / "mirror.json"  # absent at start, as an optional ConfigMap can be
    production = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")), MIRROR_FILE=str(file), **POD
    )
    body, csv = csv_body(churn_model.rows[:1]), {"Content-Type": "text/csv"}
    with httpx.Client(base_url=production.url, timeout=30) as client:
        assert client.post("/invocations", content=body, headers=csv).status_code == 200
        mirror_file(file, [("challenger", shadow.url, 100)])

        def copied_after_a_request() -> bool:
            assert client.post("/invocations", content=body, headers=csv).status_code == 200
            return copies(production, "challenger", "answered") > 0

        wait_for(copied_after_a_request, timeout=30, interval=0.5, message="copies begin")
        file.write_text('{"shadows": []}')
        wait_for(
            lambda: "copying requests to none" in production.log(),
            timeout=30,
            message="the shadow removed",
        )
        counted = copies(production, "challenger", "answered")
        for _ in range(5):
            assert client.post("/invocations", content=body, headers=csv).status_code == 200
    assert copies(production, "challenger", "answered") == counted


def test_a_request_naming_another_variant_is_answered_by_that_variant(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    challenger_model = train_model(trees=5, depth=2, seed=11)
    challenger = start_runtime(
        MODEL_URI=str(challenger_model.save(tmp_path / "challenger" / "model.ubj")),
        **{**POD, "variant": "challenger"},
    )
    gone = f"http://127.0.0.1:{free_port()}"
    variants = {"main": "http://127.0.0.1:1", "challenger": challenger.url, "retired": gone}
    main = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        MIRROR_FILE=str(mirror_file(tmp_path / "mirror.json", [], variants)),
        **{**POD, "variant": "main"},
    )
    wait_for(lambda: "TargetVariant forwards to" in main.log(), timeout=30)
    rows = churn_model.rows[:3]
    with httpx.Client(base_url=main.url, timeout=30) as client:

        def ask(variant: str) -> httpx.Response:
            return client.post(
                "/invocations",
                content=csv_body(rows),
                headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Variant": variant},
            )

        pinned = ask("challenger")
        assert pinned.status_code == 200
        np.testing.assert_allclose(
            np.array(pinned.text.split(), dtype=np.float32),
            challenger_model.expected(rows),
            atol=1e-6,
        )
        mine = ask("main")  # its own variant: served here, never sent to the map's address
        np.testing.assert_allclose(
            np.array(mine.text.split(), dtype=np.float32), churn_model.expected(rows), atol=1e-6
        )
        unknown = ask("Main")
        assert unknown.status_code == 400
        assert "no variant 'Main'; it has challenger, main, retired" in unknown.json()["error"]
        down = ask("retired")
        assert down.status_code == 502
        assert "could not be reached" in down.json()["error"]
        oip = client.post(
            "/v2/models/model/infer",
            headers={"X-Amzn-SageMaker-Target-Variant": "challenger"},
            json=oip_request(rows),
        )
        assert oip.status_code == 200
        np.testing.assert_allclose(
            oip.json()["outputs"][0]["data"], challenger_model.expected(rows), atol=1e-6
        )
    # Each request is counted once, by the variant that answered it.
    assert challenger.metric("fleetshift_invocations_total") == 2
    assert main.metric("fleetshift_invocations_total") == 1
    assert main.metric("fleetshift_forwarded_requests_total", outcome="answered") == 2
    assert main.metric("fleetshift_forwarded_requests_total", outcome="unreachable") == 1
    assert main.metric("fleetshift_forwarded_requests_total", outcome="refused") == 1
