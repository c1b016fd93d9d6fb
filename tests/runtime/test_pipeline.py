"""Serial inference pipelines: the runtime sends each request through its steps in order,
over loopback, and its own model is one of them.

Every server is real: the runtime process, the example scaler (``examples/pipeline/
scale-features/scale.py``) as its own process, and small HTTP servers on loopback for a
post-processing step, a failing step, a slow step and a step that comes up late.
"""

from __future__ import annotations

import http.server
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from fleetshift_devcluster.wait import wait_for
from support.runtime_kit import RuntimeProcess, StartRuntime, TrainedModel, csv_body, free_port

ROOT = Path(__file__).resolve().parents[2]
SCALER = ROOT / "examples" / "pipeline" / "scale-features" / "scale.py"
MEAN, STD = 10.0, 4.0
"""The scaler's parameters: a power of two, so ``x * 4 + 10`` and back is exact."""


def pipeline(*steps: dict[str, Any]) -> str:
    return json.dumps(list(steps))


Handle = Callable[[bytes, dict[str, str]], tuple[int, str, bytes]]


@dataclass
class StepServer:
    """An HTTP server on loopback, answering ``/invocations`` with ``handle(body, headers)``
    (status, content type, body); ``/ping`` with ``ping_status``. Records what it got."""

    handle: Handle
    http11: bool = True
    chunked: bool = False
    ping_status: int = 200
    port: int = field(default_factory=free_port)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> StepServer:
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if state.http11 else "HTTP/1.0"

            def do_GET(self) -> None:
                self._answer(state.ping_status, "text/plain", b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                state.received.append((headers, body))
                self._answer(*state.handle(body, headers))

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if state.chunked and self.protocol_version == "HTTP/1.1":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(body), 7):
                        piece = body[start : start + 7]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if self.protocol_version == "HTTP/1.1":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def step_servers() -> Iterator[Callable[..., StepServer]]:
    made: list[StepServer] = []

    def make(handle: Handle, **kw: Any) -> StepServer:
        server = StepServer(handle, **kw)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def scaler(tmp_path: Path) -> Iterator[int]:
    """The example scaler, as its own process, on a free loopback port."""
    port = free_port()
    log = (tmp_path / "scaler.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(SCALER)],
        env={"SAGEMAKER_BIND_TO_PORT": str(port), "SCALER_MEAN": str(MEAN), "SCALER_STD": str(STD)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def pings() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(pings, timeout=20, interval=0.05, message="the example scaler's /ping")
    yield port
    process.terminate()
    process.wait(timeout=10)
    log.close()


def unscaled(rows: np.ndarray) -> bytes:
    """What a caller sends so that the scaler hands the model ``rows`` exactly."""
    scaled = rows.astype(np.float64) * STD + MEAN  # exact in float64, not in float32
    return "\n".join(",".join(repr(float(v)) for v in row) for row in scaled).encode()


def invoke(server: RuntimeProcess, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/invocations",
        content=body,
        headers={"Content-Type": "text/csv", **headers},
        timeout=30,
    )


def predictions(answer: httpx.Response) -> np.ndarray:
    return np.array([float(line) for line in answer.text.split()], dtype=np.float32)


def test_a_request_goes_through_the_scaler_then_the_model_and_gets_the_models_answer(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path, scaler: int
) -> None:
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(
        MODEL_URI=str(path), PIPELINE=pipeline({"name": "scale", "port": scaler}, {"name": "model"})
    )

    answer = invoke(server, unscaled(churn_model.rows))

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv"
    np.testing.assert_allclose(predictions(answer), churn_model.expected(), atol=1e-6)
    refused = invoke(server, b"1,2\nx,y\n")
    assert refused.status_code == 400
    assert refused.json()["step"] == "scale"
    assert refused.json()["error"] == (
        "step 'scale' answered 400: row 2 is not numbers separated by commas"
    )
    # Without the scaler the same body is far from the model's training data:
    direct = start_runtime(MODEL_URI=str(path))
    unscaled_answer = invoke(direct, unscaled(churn_model.rows))
    assert not np.allclose(predictions(unscaled_answer), churn_model.expected(), atol=1e-3)


def test_a_post_processing_step_gets_the_models_answer_in_the_type_it_declares(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    step_servers: Callable[..., StepServer],
) -> None:
    def label(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        scores = json.loads(body)["predictions"]
        labels = ["churn" if s["score"] > 0.5 else "stay" for s in scores]
        return 200, "application/json", json.dumps({"labels": labels}).encode()

    post = step_servers(label, chunked=True)
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(
        MODEL_URI=str(path),
        PIPELINE=pipeline(
            {"name": "model", "accept": "application/json"}, {"name": "label", "port": post.port}
        ),
    )

    answer = invoke(server, csv_body(churn_model.rows[:5]), Accept="application/json")

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    expected = ["churn" if s > 0.5 else "stay" for s in churn_model.expected()[:5]]
    assert answer.json() == {"labels": expected}
    headers, _ = post.received[0]
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"  # the caller's, to the last step
    assert headers["x-request-id"] == answer.headers["x-request-id"]


def test_three_steps_pass_each_answer_on_over_kept_alive_and_closed_connections(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    scaler: int,
    step_servers: Callable[..., StepServer],
) -> None:
    def upper(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        return 200, "text/plain", body.replace(b"\n", b";")

    post = step_servers(upper, http11=False)  # HTTP/1.0: no length, closed after each
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(
        MODEL_URI=str(path),
        PIPELINE=pipeline(
            {"name": "scale", "port": scaler},
            {"name": "model"},
            {"name": "join", "port": post.port},
        ),
    )
    for _ in range(3):
        answer = invoke(server, unscaled(churn_model.rows[:4]))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "text/plain"
        joined = np.array(answer.text.strip(";").split(";"), dtype=np.float32)
        np.testing.assert_allclose(joined, churn_model.expected()[:4], atol=1e-6)
    assert len(post.received) == 3
    assert post.received[0][0]["content-type"] == "text/csv"


@pytest.mark.parametrize(
    ("step_status", "caller_status"), [(500, 502), (503, 502), (400, 400), (422, 422)]
)
def test_a_failing_step_is_named_in_the_error_and_counted(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    step_servers: Callable[..., StepServer],
    step_status: int,
    caller_status: int,
) -> None:
    failing = step_servers(lambda body, headers: (step_status, "text/plain", b"cannot scale"))
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(
        MODEL_URI=str(path),
        PIPELINE=pipeline({"name": "scale", "port": failing.port}, {"name": "model"}),
    )

    answer = invoke(server, csv_body(churn_model.rows[:2]))

    assert answer.status_code == caller_status
    assert answer.json()["step"] == "scale"
    assert answer.json()["error"] == f"step 'scale' answered {step_status}: cannot scale"
    reason = "4xx" if step_status < 500 else "5xx"
    assert server.metric("fleetshift_pipeline_step_errors_total", step="scale", reason=reason) == 1
    errors = "4xx" if caller_status < 500 else "5xx"
    assert server.metric(f"fleetshift_invocation_{errors}_errors_total") == 1


def test_the_model_step_failing_on_what_the_step_before_sent_names_the_model_step(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    step_servers: Callable[..., StepServer],
) -> None:
    garbage = step_servers(lambda body, headers: (200, "text/csv", b"not,numbers\n"))
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(
        MODEL_URI=str(path),
        PIPELINE=pipeline({"name": "prep", "port": garbage.port}, {"name": "xgb"}),
    )

    answer = invoke(server, csv_body(churn_model.rows[:2]))

    assert answer.status_code == 400
    assert answer.json()["step"] == "xgb"
    assert answer.json()["error"].startswith("step 'xgb': ")


def test_a_step_slower_than_its_timeout_gives_a_504_naming_it_and_later_requests_pass(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    step_servers: Callable[..., StepServer],
) -> None:
    slow_for = {"seconds": 3.0}

    def slow_echo(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        time.sleep(slow_for["seconds"])
        return 200, "text/csv", body

    slow = step_servers(slow_echo)
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(
        MODEL_URI=str(path),
        PIPELINE=pipeline({"name": "slow", "port": slow.port}, {"name": "model"}),
        PIPELINE_STEP_TIMEOUT_SECONDS="0.5",
    )

    started = time.perf_counter()
    answer = invoke(server, csv_body(churn_model.rows[:2]))
    elapsed = time.perf_counter() - started

    assert answer.status_code == 504
    assert answer.json()["step"] == "slow"
    assert "did not answer within 0.5 s" in answer.json()["error"]
    assert elapsed < 2.5, "the caller is answered at the timeout, not when the step is done"
    assert server.metric("fleetshift_pipeline_step_errors_total", step="slow", reason="timeout")
    slow_for["seconds"] = 0.0
    again = invoke(server, csv_body(churn_model.rows[:2]))
    assert again.status_code == 200, again.text
    np.testing.assert_allclose(predictions(again), churn_model.expected()[:2], atol=1e-6)


def test_ping_is_503_naming_a_step_that_is_down_and_200_once_it_answers(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    step_servers: Callable[..., StepServer],
) -> None:
    port = free_port()
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(
        wait=False,
        MODEL_URI=str(path),
        PIPELINE=pipeline({"name": "model"}, {"name": "post", "port": port}),
    )

    def ping() -> httpx.Response | None:
        try:
            answer = httpx.get(f"{server.url}/ping", timeout=5)
        except httpx.TransportError:
            return None
        return answer if "step 'post'" in answer.text else None

    down = wait_for(ping, timeout=30, interval=0.1, message="/ping naming the step that is down")
    assert down.status_code == 503
    assert down.json()["ready"] is False
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200, "alive all the same"
    answer = invoke(server, csv_body(churn_model.rows[:1]))
    assert (answer.status_code, answer.json()["step"]) == (502, "post")
    assert "could not be reached at 127.0.0.1" in answer.json()["error"]

    step_servers(lambda body, headers: (200, "text/csv", body), port=port)
    server.wait_ready(timeout=10)
    assert invoke(server, csv_body(churn_model.rows[:1])).status_code == 200


def test_a_step_whose_ping_fails_keeps_the_pod_unready(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    step_servers: Callable[..., StepServer],
) -> None:
    sick = step_servers(lambda body, headers: (200, "text/csv", body), ping_status=500)
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(
        wait=False,
        MODEL_URI=str(path),
        PIPELINE=pipeline({"name": "sick", "port": sick.port}, {"name": "model"}),
    )

    def answered() -> httpx.Response | None:
        try:
            answer = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
        except httpx.TransportError:
            return None
        return answer if "sick" in answer.text else None

    answer = wait_for(answered, timeout=30, interval=0.1, message="readiness naming the step")
    assert answer.status_code == 503
    assert answer.json()["error"] == "step 'sick': /ping answered 500"


def test_every_steps_latency_is_observed_and_a_step_costs_no_delayed_ack(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path, scaler: int
) -> None:
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(
        MODEL_URI=str(path),
        VARIANT="AllTraffic",
        PIPELINE=pipeline({"name": "scale", "port": scaler}, {"name": "model"}),
    )
    durations = []
    with httpx.Client() as client:
        for _ in range(15):
            started = time.perf_counter()
            answer = client.post(
                f"{server.url}/invocations",
                content=unscaled(churn_model.rows[:3]),
                headers={"Content-Type": "text/csv"},
            )
            durations.append(time.perf_counter() - started)
            assert answer.status_code == 200

    for step in ("scale", "model"):
        count = server.metric(
            "fleetshift_pipeline_step_latency_seconds_count", step=step, variant="AllTraffic"
        )
        assert count == 15, step
        assert server.metric("fleetshift_pipeline_step_latency_seconds_sum", step=step) > 0
    assert server.metric("fleetshift_invocations_total") == 15
    assert server.metric("fleetshift_model_latency_seconds_count") == 15
    # The scaler (http.server) sends its headers and its body apart with Nagle's algorithm
    # on: without TCP_QUICKACK on the runtime's side each step waited ~40 ms for an ACK.
    assert statistics.median(durations) < 0.02, durations


def test_the_open_inference_protocol_over_rest_and_grpc_is_refused_saying_where_to_go(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path, scaler: int
) -> None:
    path = churn_model.save(tmp_path / "model.ubj")
    grpc_port = free_port()
    server = start_runtime(
        MODEL_URI=str(path),
        GRPC_PORT=str(grpc_port),
        PIPELINE=pipeline({"name": "scale", "port": scaler}, {"name": "model"}),
    )
    rows = churn_model.rows[:1]
    request = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP32",
                           "data": rows.tolist()}]}  # fmt: skip

    answer = httpx.post(f"{server.url}/v2/models/model/infer", json=request)

    assert answer.status_code == 400
    assert "serial inference pipeline (scale -> model)" in answer.json()["error"]
    assert "POST /invocations" in answer.json()["error"]
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
        tensor = triton_grpc.InferInput("input-0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("model", [tensor])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "serial inference pipeline (scale -> model)" in refused.value.message()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('[{"name": "model"}]', "1 steps; a pipeline has 2 to 5"),
        ('[{"name": "a", "port": 8081}, {"name": "a"}]', "step names must be unique"),
        ('[{"name": "m"}, {"name": "n"}]', "exactly one step must have no port"),
        ('[{"name": "a", "port": 70000}, {"name": "m"}]', "port must be 1-65535"),
    ],
)
def test_a_wrong_pipeline_setting_stops_the_runtime_saying_what_is_allowed(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    tmp_path: Path,
    setting: str,
    message: str,
) -> None:
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(wait=False, MODEL_URI=str(path), PIPELINE=setting)
    assert server.wait_exit(timeout=30) != 0
    assert message in server.log()
