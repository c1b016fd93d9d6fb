"""Data capture: sampled request and response pairs as JSON lines, in a folder or on S3.

Real processes: the runtime, and VersityGW (an S3-compatible gateway) that is stopped in
the middle of a run to show that capture never slows or fails a request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from pathlib import Path
from typing import cast

import httpx
import numpy as np

from fleetshift_devcluster.wait import wait_for
from support import runtime_kit
from support.runtime_kit import StartRuntime, TrainedModel, csv_body

POD = {"namespace": "shop", "endpoint": "churn", "variant": "main", "revision": "r7"}


def captured_lines(folder: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(folder.rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_a_sampled_share_of_answers_is_captured_with_both_bodies_as_json_lines(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "capture"
    server = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        CAPTURE_DESTINATION=str(folder),
        CAPTURE_SAMPLING_PERCENT="50",
        CAPTURE_CONTENT_TYPES="text/csv",
        CAPTURE_FLUSH_SECONDS="0.5",
        **POD,
    )
    sent: dict[str, tuple[str, str]] = {}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for number in range(20):
            body = csv_body(churn_model.rows[number : number + 2])
            answer = client.post(
                "/invocations",
                content=body,
                headers={"Content-Type": "text/csv", "X-Request-Id": f"req-{number}"},
            )
            assert answer.status_code == 200
            sent[f"req-{number}"] = (body.decode(), answer.text)
        refused = client.post("/invocations", content=b"1,2", headers={"Content-Type": "text/csv"})
        assert refused.status_code == 400  # a refused request is never captured
        for _ in range(4):  # nor a type the capture does not ask for
            as_json = client.post("/invocations", json=churn_model.rows[:1].tolist())
            assert as_json.status_code == 200

    wait_for(
        lambda: len(captured_lines(folder)) == 10, timeout=30, message="10 of 20 answers captured"
    )
    for line in captured_lines(folder):
        sent_body, sent_answer = sent[str(line["requestId"])]
        assert line["request"] == {"contentType": "text/csv", "data": sent_body}
        assert line["response"] == {"contentType": "text/csv", "data": sent_answer}
        assert (line["variant"], line["revision"], line["model"]) == ("main", "r7", "model")
        assert str(line["time"]).endswith("Z")
    objects = [p.relative_to(folder).parts[:2] for p in folder.rglob("*.jsonl")]
    assert set(objects) == {("churn", "main")}
    assert not list(folder.rglob("*.partial")), "no half-written object is left"
    assert server.metric("fleetshift_capture_records_total") == 10


def test_capture_to_s3_survives_the_store_going_away_without_slowing_a_request(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    (tmp_path / "s3").mkdir()
    gateway = cast(
        Generator[runtime_kit.S3Server, None, None], runtime_kit.s3_server(tmp_path / "s3")
    )
    s3 = next(gateway)
    s3.client.create_bucket(Bucket="capture")
    server = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        CAPTURE_DESTINATION="s3://capture/prod",
        CAPTURE_FLUSH_SECONDS="0.5",
        DOWNLOAD_TIMEOUT_SECONDS="2",
        **{**POD, **s3.env()},
    )
    body, csv = csv_body(churn_model.rows[:3]), {"Content-Type": "text/csv"}
    expected = churn_model.expected(churn_model.rows[:3])
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(10):
            assert client.post("/invocations", content=body, headers=csv).status_code == 200

        def stored() -> list[dict[str, object]]:
            listed = s3.client.list_objects_v2(Bucket="capture", Prefix="prod/").get("Contents")
            lines = []
            for item in listed or []:
                data = s3.client.get_object(Bucket="capture", Key=item["Key"])["Body"].read()
                lines += [json.loads(line) for line in data.decode().splitlines()]
            return lines

        wait_for(lambda: len(stored()) == 10, timeout=30, message="10 records on S3")
        gateway.close()  # the store goes away mid-run
        slowest = 0.0
        for _ in range(30):
            started = time.perf_counter()
            answer = client.post("/invocations", content=body, headers=csv)
            slowest = max(slowest, time.perf_counter() - started)
            assert answer.status_code == 200
            scores = np.array(answer.text.split(), dtype=np.float32)
            np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert slowest < 2, f"a request took {slowest:.2f} s while the store was down"
    wait_for(
        lambda: (
            server.metric("fleetshift_capture_dropped_records_total", reason="destination") == 30
        ),
        timeout=30,
        message="the 30 records the store could not take counted",
    )
    assert server.metric("fleetshift_invocation_5xx_errors_total") == 0


def test_a_graceful_stop_writes_the_records_still_buffered(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "capture"
    server = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        CAPTURE_DESTINATION=str(folder),
        CAPTURE_SAMPLING_PERCENT="100",
        CAPTURE_FLUSH_SECONDS="3600",  # no batch is due by time during the test
        **POD,
    )
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for number in range(6):
            answer = client.post(
                "/invocations",
                content=csv_body(churn_model.rows[number : number + 1]),
                headers={"Content-Type": "text/csv", "X-Request-Id": f"req-{number}"},
            )
            assert answer.status_code == 200
    assert captured_lines(folder) == [], "still buffered: the batch is not due"
    server.stop()  # SIGTERM, as a pod's deletion sends; uvicorn shuts down, then re-raises it
    assert sorted(str(line["requestId"]) for line in captured_lines(folder)) == [
        f"req-{number}" for number in range(6)
    ]
    assert not list(folder.rglob("*.partial")), "no half-written object is left"
