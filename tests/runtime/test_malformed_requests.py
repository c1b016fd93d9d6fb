# ruff: noqa: E501 - the table of cases reads best one case per line
"""Bad input is a 4xx with a precise reason, never a 5xx: the guardrails alarm on 5xx.

The server under test takes 20 features and bodies up to 64 KiB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
import pytest

from support.runtime_kit import RuntimeProcess

ROW = ",".join(["0.5"] * 20)
ROW_LIST = [0.5] * 20
TARGET = "X-Amzn-SageMaker-Target-Model"


@dataclass(frozen=True)
class Malformed:
    """One bad request and the answer it must get."""

    name: str
    status: int
    reason: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/invocations"
    method: str = "POST"


def csv(body: bytes | str) -> dict[str, str]:
    """Headers of a CSV request (body unused; keeps the table readable)."""
    del body
    return {"Content-Type": "text/csv"}


JSON = {"Content-Type": "application/json"}
JSONL = {"Content-Type": "application/jsonlines"}
OIP = "/v2/models/model/infer"


def oip(document: object) -> bytes:
    """A JSON body for the OIP route."""
    return json.dumps(document).encode()


def tensor(**overrides: object) -> dict[str, object]:
    """A valid OIP input tensor with some fields replaced."""
    base: dict[str, object] = {"name": "input-0", "shape": [1, 20], "datatype": "FP32"}
    base["data"] = ROW_LIST
    base.update(overrides)
    return base


CASES = [
    # --- SageMaker CSV ---------------------------------------------------------------
    Malformed("csv-empty-body", 400, "empty body", b"", csv("")),
    Malformed("csv-only-newlines", 400, "empty body", b"\n\n", csv("")),
    Malformed("csv-too-few-features", 400, "row 1 has 19 values", ",".join(["1"] * 19).encode(), csv("")),
    Malformed("csv-too-many-features", 400, "row 1 has 21 values", ",".join(["1"] * 21).encode(), csv("")),
    Malformed("csv-second-row-short", 400, "row 2 has 3 values", f"{ROW}\n1,2,3".encode(), csv("")),
    Malformed("csv-blank-line-between-rows", 400, "line 2 is empty", f"{ROW}\n\n{ROW}".encode(), csv("")),
    Malformed("csv-non-numeric-cell", 400, "row 1, column 3: 'abc' is not a number", ("1,2,abc," + ",".join(["1"] * 17)).encode(), csv("")),
    Malformed("csv-header-row", 400, "header row", (",".join(f"f{i}" for i in range(20)) + f"\n{ROW}").encode(), csv("")),
    Malformed("csv-not-utf8", 400, "not UTF-8", b"\xff\xfe," + b",".join([b"1"] * 19), csv("")),
    Malformed("csv-beyond-fp32", 400, "row 1, column 1: 1e+39 is beyond FP32", ("1e39," + ",".join(["1"] * 19)).encode(), csv("")),
    Malformed("json-beyond-fp32", 400, "instance 1, column 2: 1e+39 is beyond FP32", json.dumps({"instances": [[1, 1e39, *[1] * 18]]}).encode(), JSON),
    Malformed("jsonlines-beyond-fp32", 400, "line 1, column 1: -1e+39 is beyond FP32", json.dumps([-1e39, *[1] * 19]).encode(), JSONL),
    Malformed("csv-trailing-comma", 400, "row 1 has 21 values", (ROW + ",").encode(), csv("")),
    # --- content negotiation and size ---------------------------------------------------
    Malformed("missing-content-type", 415, "missing Content-Type", ROW.encode()),
    Malformed("unsupported-content-type", 415, "unsupported Content-Type 'text/plain'", ROW.encode(), {"Content-Type": "text/plain"}),
    Malformed("protobuf-content-type", 415, "application/x-protobuf", ROW.encode(), {"Content-Type": "application/x-protobuf"}),
    Malformed("unsupported-accept", 406, "Accept one of", ROW.encode(), {"Content-Type": "text/csv", "Accept": "application/xml"}),
    Malformed("body-over-limit", 413, "limit", (ROW + "\n") .encode() * 4000, csv("")),
    # --- SageMaker JSON and JSON Lines --------------------------------------------------
    Malformed("json-empty-body", 400, "empty body", b"", JSON),
    Malformed("json-invalid", 400, "invalid JSON", b"{instances: [1,2]}", JSON),
    Malformed("json-object-without-instances", 400, 'needs an "instances" list', b'{"rows": [[1]]}', JSON),
    Malformed("json-instances-not-a-list", 400, "expected a list of rows", b'{"instances": 5}', JSON),
    Malformed("json-no-instances", 400, "no instances", b'{"instances": []}', JSON),
    Malformed("json-string-value", 400, "column 2: \"x\" is not a number", json.dumps({"instances": [[1, "x", *[1] * 18]]}).encode(), JSON),
    Malformed("json-boolean-value", 400, "column 1: true is not a number", json.dumps({"instances": [[True, *[1] * 19]]}).encode(), JSON),
    Malformed("json-wrong-width", 400, "row 1 has 3 values", b'{"instances": [[1, 2, 3]]}', JSON),
    Malformed("json-ragged-rows", 400, "row 2 has 2 values", json.dumps({"instances": [ROW_LIST, [1, 2]]}).encode(), JSON),
    Malformed("json-three-dimensional", 400, "got a 3-D array", json.dumps({"instances": [[ROW_LIST]]}).encode(), JSON),
    Malformed("json-row-is-a-number", 400, "instance 2 is not a list of numbers", json.dumps({"instances": [ROW_LIST, 7]}).encode(), JSON),
    Malformed("jsonlines-bad-line", 400, "line 2: invalid JSON", f"{json.dumps(ROW_LIST)}\nnot json".encode(), JSONL),
    Malformed("jsonlines-wrong-width", 400, "line 1 has", b"[1, 2]", JSONL),
    Malformed("jsonlines-empty", 400, "empty body", b"\n", JSONL),
    # --- routes -------------------------------------------------------------------------
    Malformed("get-invocations", 405, "use POST", method="GET"),
    Malformed("unknown-path", 404, "no route POST /predict", path="/predict"),
    Malformed("unknown-v2-path", 404, "no route GET /v2/nothing", path="/v2/nothing", method="GET"),
    Malformed("post-ping", 405, "use GET, HEAD", path="/ping"),
    Malformed("put-health-ready", 405, "use GET, HEAD", path="/v2/health/ready", method="PUT"),
    Malformed("delete-health-live", 405, "use GET, HEAD", path="/v2/health/live", method="DELETE"),
    Malformed("post-server-metadata", 405, "method POST not allowed on /v2; use GET", path="/v2"),
    Malformed("get-repository-index", 405, "use POST", path="/v2/repository/index", method="GET"),
    # --- Open Inference Protocol ----------------------------------------------------------
    Malformed("oip-empty-body", 400, "empty body", b"", path=OIP),
    Malformed("oip-invalid-json", 400, "invalid JSON", b"{", path=OIP),
    Malformed("oip-missing-inputs", 400, '"inputs" must be a non-empty list', oip({"id": "1"}), path=OIP),
    Malformed("oip-two-inputs", 400, "one input tensor", oip({"inputs": [tensor(), tensor()]}), path=OIP),
    Malformed("oip-bytes-datatype", 400, "datatype 'BYTES' is not supported", oip({"inputs": [tensor(datatype="BYTES")]}), path=OIP),
    Malformed("oip-shape-data-mismatch", 400, "needs 40 values; data has 20", oip({"inputs": [tensor(shape=[2, 20])]}), path=OIP),
    Malformed("oip-wrong-feature-count", 400, "has 10 features per row", oip({"inputs": [tensor(shape=[2, 10])]}), path=OIP),
    Malformed("oip-negative-shape", 400, "non-negative integers", oip({"inputs": [tensor(shape=[-1, 20])]}), path=OIP),
    Malformed("oip-string-data", 400, "must hold only numbers", oip({"inputs": [tensor(data=["a"] * 20)]}), path=OIP),
    Malformed("oip-unknown-output", 400, "unknown output 'proba'", oip({"inputs": [tensor()], "outputs": [{"name": "proba"}]}), path=OIP),
    Malformed("oip-unknown-model", 404, "model 'fraud' not found", oip({"inputs": [tensor()]}), path="/v2/models/fraud/infer"),
    Malformed("oip-int8-value-out-of-range", 400, "INT8 holds -128 to 127; got 300", oip({"inputs": [tensor(datatype="INT8", data=[300] + [1] * 19)]}), path=OIP),
    Malformed("oip-uint8-negative-value", 400, "UINT8 holds 0 to 255; got -1", oip({"inputs": [tensor(datatype="UINT8", data=[-1] + [1] * 19)]}), path=OIP),
    Malformed("oip-int32-fraction", 400, "INT32 data must be whole numbers; got 1.5", oip({"inputs": [tensor(datatype="INT32", data=[1.5] + [1] * 19)]}), path=OIP),
    Malformed("oip-fp16-overflow", 400, "FP16 holds magnitudes up to 65504; got 1000000.0", oip({"inputs": [tensor(datatype="FP16", data=[1e6] + [1] * 19)]}), path=OIP),
    Malformed("oip-fp64-beyond-fp32", 400, "FP32, in which the model computes, holds magnitudes up to", oip({"inputs": [tensor(datatype="FP64", data=[1e39] + [1] * 19)]}), path=OIP),
    Malformed("oip-unknown-input-name", 400, "unknown input name 'features'; this model's input is 'input-0'", oip({"inputs": [tensor(name="features")]}), path=OIP),
    Malformed("oip-missing-input-name", 400, "unknown input name a NoneType", oip({"inputs": [{k: v for k, v in tensor().items() if k != "name"}]}), path=OIP),
    Malformed("oip-data-nested-against-the-shape", 400, "data is nested as [20, 2] but shape is [2, 20]", oip({"inputs": [tensor(shape=[2, 20], data=[[0.5, 0.5]] * 20)]}), path=OIP),
    Malformed("oip-bad-binary-header-length", 400, "Inference-Header-Content-Length", oip({"inputs": [tensor()]}), {"Inference-Header-Content-Length": "99999"}, path=OIP),
]  # fmt: skip


def test_there_are_at_least_25_malformed_cases() -> None:
    assert len(CASES) >= 25
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_request_gets_a_precise_4xx(
    churn_server: RuntimeProcess, case: Malformed
) -> None:
    response = httpx.request(
        case.method, churn_server.url + case.path, content=case.body, headers=case.headers
    )
    assert response.status_code == case.status, response.text
    assert set(response.json()) <= {"error", "request_id"}, response.text
    detail = response.json()["error"]
    assert case.reason in detail, detail
    assert response.headers.get("x-request-id")


def test_chunked_body_over_the_limit_is_413(churn_server: RuntimeProcess) -> None:
    """No Content-Length to check up front: the limit holds while streaming."""

    def chunks() -> object:
        for _ in range(200):
            yield (ROW + "\n").encode() * 20

    response = httpx.post(
        f"{churn_server.url}/invocations",
        content=chunks(),  # type: ignore[arg-type]
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 413
    assert "over the limit" in response.json()["error"]


def test_malformed_requests_count_as_4xx_and_never_as_5xx(churn_server: RuntimeProcess) -> None:
    labels = {"endpoint": "churn", "revision": "3"}
    before_4xx = churn_server.metric("fleetshift_invocation_4xx_errors_total", **labels)
    before_5xx = churn_server.metric("fleetshift_invocation_5xx_errors_total", **labels)
    for case in CASES:
        if case.path in ("/invocations", OIP) and case.method == "POST":
            httpx.post(churn_server.url + case.path, content=case.body, headers=case.headers)
    counted = sum(
        1 for case in CASES if case.path in ("/invocations", OIP) and case.method == "POST"
    )
    assert (
        churn_server.metric("fleetshift_invocation_4xx_errors_total", **labels) - before_4xx
        == counted
    )
    assert churn_server.metric("fleetshift_invocation_5xx_errors_total", **labels) == before_5xx


def test_server_still_serves_after_every_malformed_request(churn_server: RuntimeProcess) -> None:
    for case in CASES:
        httpx.request(
            case.method, churn_server.url + case.path, content=case.body, headers=case.headers
        )
    response = httpx.post(
        f"{churn_server.url}/invocations",
        content=ROW.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200
