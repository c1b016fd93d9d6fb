"""Open Inference Protocol v2 over REST, including a third-party client (tritonclient)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.runtime_kit import RuntimeProcess, StartRuntime, TrainedModel, train_model


def test_health_endpoints(churn_server: RuntimeProcess) -> None:
    assert httpx.get(f"{churn_server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{churn_server.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{churn_server.url}/v2/models/model/ready").status_code == 200
    assert httpx.get(f"{churn_server.url}/v2/models/other/ready").status_code == 404


def test_server_metadata_names_the_binary_extension(churn_server: RuntimeProcess) -> None:
    metadata = httpx.get(f"{churn_server.url}/v2").json()
    assert metadata["name"] == "fleetshift-runtime"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_describes_the_input_tensor(churn_server: RuntimeProcess) -> None:
    metadata = httpx.get(f"{churn_server.url}/v2/models/model").json()
    assert metadata["platform"] == "xgboost"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 20]}]
    assert metadata["outputs"][0]["name"] == "predict"


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32", "INT64"])
def test_infer_accepts_float_and_int_tensors(
    churn_server: RuntimeProcess, churn_model: TrainedModel, datatype: str
) -> None:
    rows = churn_model.rows[:4]
    if datatype.startswith("INT"):
        rows = np.round(rows * 3).astype(np.float32)
    data = rows.astype(float).tolist() if datatype.startswith("FP") else rows.astype(int).tolist()
    response = httpx.post(
        f"{churn_server.url}/v2/models/model/infer",
        json={
            "id": "req-7",
            "inputs": [{"name": "input-0", "shape": [4, 20], "datatype": datatype, "data": data}],
        },
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "req-7"
    assert answer["model_name"] == "model"
    output = answer["outputs"][0]
    assert (output["name"], output["datatype"], output["shape"]) == ("predict", "FP32", [4])
    np.testing.assert_allclose(output["data"], churn_model.expected(rows), atol=1e-6)


def test_infer_with_versioned_path_and_flat_data(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    rows = churn_model.rows[:2]
    response = httpx.post(
        f"{churn_server.url}/v2/models/model/versions/1/infer",
        json={
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [2, 20],
                    "datatype": "FP32",
                    "data": rows.reshape(-1).astype(float).tolist(),
                }
            ]
        },
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], churn_model.expected(rows), atol=1e-6
    )


def test_infer_with_the_binary_tensor_extension(
    churn_server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    rows = np.ascontiguousarray(churn_model.rows[:5], dtype=np.float32)
    raw = rows.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [5, 20],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = httpx.post(
        f"{churn_server.url}/v2/models/model/infer",
        content=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 20
    scores = np.frombuffer(response.content[length:], dtype=np.float32)
    np.testing.assert_allclose(scores, churn_model.expected(rows), atol=1e-6)


@pytest.mark.parametrize("binary", [False, True], ids=["json-tensors", "binary-tensors"])
def test_tritonclient_talks_to_the_runtime(
    churn_server: RuntimeProcess, churn_model: TrainedModel, binary: bool
) -> None:
    """A third-party Open Inference Protocol client from PyPI, used as its docs show."""
    import tritonclient.http as triton  # type: ignore[import-untyped]  # noqa: PLC0415

    client = triton.InferenceServerClient(url=churn_server.url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("model")
        metadata = client.get_model_metadata("model")
        assert metadata["inputs"][0]["shape"] == [-1, 20]
        rows = np.ascontiguousarray(churn_model.rows[:8], dtype=np.float32)
        tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        wanted = triton.InferRequestedOutput("predict", binary_data=binary)
        result = client.infer("model", inputs=[tensor], outputs=[wanted], request_id="t-1")
        np.testing.assert_allclose(
            result.as_numpy("predict"), churn_model.expected(rows), atol=1e-6
        )
        assert result.get_response()["id"] == "t-1"
    finally:
        client.close()


def test_openapi_docs_describe_the_metadata_routes(churn_server: RuntimeProcess) -> None:
    assert httpx.get(f"{churn_server.url}/docs").status_code == 200
    paths = httpx.get(f"{churn_server.url}/openapi.json").json()["paths"]
    assert "/v2/models/{name}" in paths
    assert "/v2" in paths


def test_multi_class_model_metadata_gives_the_output_shape_infer_returns(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    model = train_model(objective="multi:softprob", num_class=3, features=6)
    server = start_runtime(MODEL_URI=str(model.save(tmp_path / "model.ubj")))
    metadata = httpx.get(f"{server.url}/v2/models/model").json()
    assert metadata["outputs"] == [{"name": "predict", "datatype": "FP32", "shape": [-1, 3]}]
    rows = model.rows[:2]
    response = httpx.post(
        f"{server.url}/v2/models/model/infer",
        json={
            "inputs": [
                {"name": "input-0", "shape": [2, 6], "datatype": "FP32", "data": rows.tolist()}
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [2, 3]


def test_single_score_model_metadata_gives_one_score_per_row(churn_server: RuntimeProcess) -> None:
    metadata = httpx.get(f"{churn_server.url}/v2/models/model").json()
    assert metadata["outputs"] == [{"name": "predict", "datatype": "FP32", "shape": [-1]}]


@pytest.mark.parametrize("path", ["/ping", "/v2/health/ready", "/v2/health/live"])
def test_health_routes_answer_head_without_a_body(churn_server: RuntimeProcess, path: str) -> None:
    response = httpx.head(f"{churn_server.url}{path}")
    assert response.status_code == 200
    assert response.content == b""


def test_tritonclient_lists_the_model_repository(churn_server: RuntimeProcess) -> None:
    import tritonclient.http as triton  # noqa: PLC0415

    client = triton.InferenceServerClient(url=churn_server.url.removeprefix("http://"))
    try:
        assert client.get_model_repository_index() == [{"name": "model", "state": "READY"}]
    finally:
        client.close()


def test_tritonclient_reads_the_runtimes_errors(churn_server: RuntimeProcess) -> None:
    """tritonclient looks for "error" in a failed answer; a {"detail"} body was a KeyError."""
    import tritonclient.http as triton  # noqa: PLC0415
    from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]  # noqa: PLC0415

    client = triton.InferenceServerClient(url=churn_server.url.removeprefix("http://"))
    try:
        with pytest.raises(InferenceServerException, match="not found"):
            client.get_model_metadata("fraud")
        with pytest.raises(InferenceServerException, match="no route POST /v2/repository/models"):
            client.load_model("model")  # the runtime has no model control
    finally:
        client.close()
