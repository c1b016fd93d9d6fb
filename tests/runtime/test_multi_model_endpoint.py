"""A multi-model Endpoint, from the spec to the answers: the runtime started with exactly
the environment the operator writes into the Deployment serves every model under the
prefix, picked by SageMaker's TargetModel header, within the spec's model count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fleetshift_operator.api import Variant
from fleetshift_operator.manifests import get_deployment
from fleetshift_operator.planning.names import calculate_revision
from fleetshift_operator.planning.types import FleetPlan
from support.runtime_kit import StartRuntime, csv_body, sagemaker_tarball, train_model

TARGET = "X-Amzn-SageMaker-Target-Model"
# The Deployment's own ports and identity are the pod's; the test's runtime takes free
# loopback ports instead.
POD_ONLY = {"FLEETSHIFT_PORT", "FLEETSHIFT_METRICS_PORT"}


def deployment_env(variant: dict[str, Any]) -> dict[str, str]:
    """The runtime container's environment in the Deployment the operator would apply."""
    spec = Variant.model_validate(variant)
    endpoint = {"metadata": {"name": "houses", "namespace": "ml", "uid": "u"}}
    fleet = FleetPlan(spec.name, calculate_revision(spec), "blue", 1, 100)
    deployment = get_deployment(endpoint, spec, fleet, include_replicas=True)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if e["name"] not in POD_ONLY}


def test_a_multi_model_endpoint_serves_each_model_under_its_prefix(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    prefix = tmp_path / "houses"
    models = {city: train_model(seed=seed) for seed, city in enumerate(["Austin", "Boston"])}
    for city, model in models.items():
        sagemaker_tarball(model, prefix / city / "model.tar.gz")
    env = deployment_env(
        {
            "name": "AllTraffic",
            "model": {"uri": str(prefix), "multiModel": {"maxLoadedModels": 1}},
        }
    )
    assert env["FLEETSHIFT_MULTI_MODEL"] == "true"

    server = start_runtime(**env)
    for _ in range(2):  # with one model kept, each request for the other reloads it
        for city, model in models.items():
            answer = httpx.post(
                f"{server.url}/invocations",
                content=csv_body(model.rows[:4]),
                headers={"Content-Type": "text/csv", TARGET: f"{city}/model.tar.gz"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            scores = np.array([float(v) for v in answer.text.split()], dtype=np.float32)
            np.testing.assert_allclose(scores, model.expected(model.rows[:4]), rtol=1e-5)
    assert server.metric("fleetshift_loaded_models") == 1
    assert server.metric("fleetshift_model_evictions_total") == 3


def test_without_a_target_model_a_multi_model_endpoint_says_what_is_missing(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    env = deployment_env(
        {"name": "main", "model": {"uri": str(tmp_path / "empty"), "multiModel": {}}}
    )
    server = start_runtime(**env)
    answer = httpx.post(
        f"{server.url}/invocations",
        content=b"1,2,3",
        headers={"Content-Type": "text/csv"},
        timeout=30,
    )
    assert answer.status_code == 400
    assert "Target-Model" in answer.text or "TargetModel" in answer.text
