"""An incompatible model loads and reports Ready, yet every valid invocation is a 5xx.

The endpoint declares its input contract (``FLEETSHIFT_NUM_FEATURES=20``), as a
SageMaker endpoint's callers rely on. A model built for another contract (trained on 19
features) passes its own warm-up, so the pod turns Ready, but it cannot serve requests
that are valid for the endpoint: a server fault (5xx), which the guardrails' alarm
sees during the canary bake, as with SageMaker's mismatched-container walkthrough.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from support.runtime_kit import StartRuntime, csv_body, sagemaker_tarball, train_model


def test_model_trained_for_another_contract_is_ready_but_fails_with_5xx(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    endpoint_width = 20
    incompatible = train_model(features=19, seed=11)
    tarball = sagemaker_tarball(incompatible, tmp_path / "model.tar.gz")
    server = start_runtime(
        MODEL_URI=str(tarball), NUM_FEATURES=str(endpoint_width), ENDPOINT="churn"
    )
    assert httpx.get(f"{server.url}/ping").status_code == 200

    valid_for_endpoint = np.zeros((3, endpoint_width), dtype=np.float32)
    response = httpx.post(
        f"{server.url}/invocations",
        content=csv_body(valid_for_endpoint),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 500
    assert "trained on 19 features" in response.json()["error"]
    assert response.headers["x-request-id"]

    oip = httpx.post(
        f"{server.url}/v2/models/model/infer",
        json={
            "inputs": [
                {"name": "input-0", "shape": [1, 20], "datatype": "FP32", "data": [0.0] * 20}
            ]
        },
    )
    assert oip.status_code == 500

    assert server.metric("fleetshift_invocation_5xx_errors_total", endpoint="churn") == 2
    assert server.metric("fleetshift_invocation_4xx_errors_total", endpoint="churn") == 0
    assert "endpoint declares 20" in server.log()


def test_request_valid_for_the_model_but_not_the_endpoint_is_still_4xx(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    """The contract is the endpoint's: a 19-wide row is the caller's mistake."""
    incompatible = train_model(features=19, seed=11)
    path = incompatible.save(tmp_path / "model.ubj")
    server = start_runtime(MODEL_URI=str(path), NUM_FEATURES="20")
    response = httpx.post(
        f"{server.url}/invocations",
        content=csv_body(incompatible.rows[:1]),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 400
    assert "takes 20 features" in response.json()["error"]


def test_compatible_model_with_the_declared_contract_serves(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    model = train_model(features=20)
    path = model.save(tmp_path / "model.ubj")
    server = start_runtime(MODEL_URI=str(path), NUM_FEATURES="20")
    response = httpx.post(
        f"{server.url}/invocations",
        content=csv_body(model.rows[:2]),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200
    metadata = httpx.get(f"{server.url}/v2/models/model").json()
    parameters = metadata["parameters"]
    assert (parameters["model_num_features"], parameters["endpoint_num_features"]) == (20, 20)
    assert parameters["predictor"].startswith(("compiled trees", "direct C predictor"))
