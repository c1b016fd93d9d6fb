"""Multi-model mode: the TargetModel header picks a model under the URI prefix; models load
on first use (once, however many requests wait), and an LRU evicts under a budget."""

from __future__ import annotations

import concurrent.futures
import functools
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.multi_model import TARGET, assert_scores, invoke_target
from support.runtime_kit import (
    ArtifactServer,
    S3Server,
    StartRuntime,
    TrainedModel,
    csv_body,
    sagemaker_tarball,
    train_model,
)


@pytest.fixture(scope="module")
def city_models() -> dict[str, TrainedModel]:
    """Three different models, like the seed's per-city house-price models."""
    return {
        "Chicago_IL": train_model(seed=1, objective="reg:squarederror"),
        "Houston_TX": train_model(seed=2, objective="reg:squarederror"),
        "NewYork_NY": train_model(seed=3, objective="reg:squarederror"),
    }


def _publish(models: dict[str, TrainedModel], root: Path) -> dict[str, str]:
    """Lay models out as SageMaker MME does: ``<city>/<city>.tar.gz``; return targets."""
    targets = {}
    for city, model in models.items():
        sagemaker_tarball(model, root / city / f"{city}.tar.gz")
        targets[city] = f"{city}/{city}.tar.gz"
    return targets


_invoke = functools.partial(invoke_target, timeout=30)


def test_target_model_loads_on_first_use_then_hits_the_cache(
    start_runtime: StartRuntime, city_models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    targets = _publish(city_models, tmp_path / "mme")
    server = start_runtime(MODEL_URI=str(tmp_path / "mme"), MULTI_MODEL="true")
    assert server.metric("fleetshift_loaded_models") == 0

    for city, model in city_models.items():
        assert_scores(_invoke(server, targets[city], model), model)
    assert_scores(
        _invoke(server, targets["Chicago_IL"], city_models["Chicago_IL"]), city_models["Chicago_IL"]
    )

    assert server.metric("fleetshift_model_cache_misses_total") == 3
    assert server.metric("fleetshift_model_cache_hits_total") == 1
    assert server.metric("fleetshift_loaded_models") == 3
    assert server.metric("fleetshift_model_loading_wait_seconds_count") == 3
    assert server.metric("fleetshift_model_load_seconds_count", model=targets["Chicago_IL"]) == 1
    assert server.metric("fleetshift_invocations_total", model=targets["Chicago_IL"]) == 2


def test_least_recently_used_model_is_evicted_over_the_count_budget(
    start_runtime: StartRuntime, city_models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    targets = _publish(city_models, tmp_path / "mme")
    server = start_runtime(
        MODEL_URI=str(tmp_path / "mme"), MULTI_MODEL="true", MAX_LOADED_MODELS="2"
    )
    chicago, houston, new_york = (
        city_models[c] for c in ("Chicago_IL", "Houston_TX", "NewYork_NY")
    )
    assert_scores(_invoke(server, targets["Chicago_IL"], chicago), chicago)
    assert_scores(_invoke(server, targets["Houston_TX"], houston), houston)
    assert_scores(_invoke(server, targets["Chicago_IL"], chicago), chicago)  # Chicago is fresher
    assert_scores(_invoke(server, targets["NewYork_NY"], new_york), new_york)  # evicts Houston

    assert server.metric("fleetshift_loaded_models") == 2
    assert server.metric("fleetshift_model_evictions_total") == 1
    hits_before = server.metric("fleetshift_model_cache_hits_total")
    assert_scores(_invoke(server, targets["Chicago_IL"], chicago), chicago)
    assert server.metric("fleetshift_model_cache_hits_total") == hits_before + 1
    assert_scores(_invoke(server, targets["Houston_TX"], houston), houston)  # reloaded
    assert server.metric("fleetshift_model_load_seconds_count", model=targets["Houston_TX"]) == 2


def test_memory_budget_keeps_only_what_fits(
    start_runtime: StartRuntime, city_models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    targets = _publish(city_models, tmp_path / "mme")
    one_model = max(p.stat().st_size for p in (tmp_path / "mme").rglob("xgboost-model"))
    server = start_runtime(
        MODEL_URI=str(tmp_path / "mme"),
        MULTI_MODEL="true",
        MODEL_MEMORY_BUDGET_BYTES=str(int(one_model * 1.5)),
    )
    for city, model in city_models.items():
        assert_scores(_invoke(server, targets[city], model), model)
    assert server.metric("fleetshift_loaded_models") == 1
    assert server.metric("fleetshift_model_evictions_total") == 2


def test_concurrent_first_requests_share_a_single_load(
    start_runtime: StartRuntime,
    city_models: dict[str, TrainedModel],
    artifact_server: ArtifactServer,
) -> None:
    targets = _publish(city_models, artifact_server.root)
    path = "/" + targets["Houston_TX"]
    artifact_server.delay_seconds[path] = 1.0  # a slow object store
    server = start_runtime(MODEL_URI=artifact_server.url, MULTI_MODEL="true")
    houston = city_models["Houston_TX"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(lambda _: _invoke(server, targets["Houston_TX"], houston), range(16))
        )
    for response in responses:
        assert_scores(response, houston)

    assert artifact_server.requests.count(path) == 1
    assert server.metric("fleetshift_model_load_seconds_count", model=targets["Houston_TX"]) == 1
    assert server.metric("fleetshift_model_cache_misses_total") == 16
    assert server.metric("fleetshift_model_loading_wait_seconds_count") == 16
    assert server.metric("fleetshift_model_loading_wait_seconds_sum") >= 16 * 0.5


def test_target_model_errors_are_4xx(
    start_runtime: StartRuntime, city_models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    _publish(city_models, tmp_path / "mme")
    server = start_runtime(MODEL_URI=str(tmp_path / "mme"), MULTI_MODEL="true")
    row = csv_body(city_models["Chicago_IL"].rows[:1])

    missing = httpx.post(
        f"{server.url}/invocations", content=row, headers={"Content-Type": "text/csv"}
    )
    assert missing.status_code == 400
    assert "X-Amzn-SageMaker-Target-Model" in missing.json()["error"]

    for bad in ("../etc/passwd", "/abs/model.ubj", "a//b", "a/../../b"):
        response = httpx.post(
            f"{server.url}/invocations",
            content=row,
            headers={"Content-Type": "text/csv", TARGET: bad},
        )
        assert response.status_code == 400, bad
        assert "relative path" in response.json()["error"]

    unknown = httpx.post(
        f"{server.url}/invocations",
        content=row,
        headers={"Content-Type": "text/csv", TARGET: "Boston_MA/Boston_MA.tar.gz"},
    )
    assert unknown.status_code == 404
    assert server.metric("fleetshift_invocation_5xx_errors_total") == 0
    assert server.metric("fleetshift_invocation_4xx_errors_total", model="") == 6


def test_broken_target_model_is_a_404_and_others_keep_serving(
    start_runtime: StartRuntime, city_models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    targets = _publish(city_models, tmp_path / "mme")
    (tmp_path / "mme" / "broken").mkdir()
    (tmp_path / "mme" / "broken" / "model.ubj").write_bytes(b"not a model")
    server = start_runtime(MODEL_URI=str(tmp_path / "mme"), MULTI_MODEL="true")
    chicago = city_models["Chicago_IL"]
    broken = _invoke(server, "broken/model.ubj", chicago)
    assert broken.status_code == 404
    assert "is not a model: it is not a model XGBoost can load" in broken.json()["error"]
    assert server.metric("fleetshift_invocation_5xx_errors_total") == 0
    assert_scores(_invoke(server, targets["Chicago_IL"], chicago), chicago)


def test_open_inference_protocol_addresses_target_models_by_path(
    start_runtime: StartRuntime, city_models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    targets = _publish(city_models, tmp_path / "mme")
    server = start_runtime(MODEL_URI=str(tmp_path / "mme"), MULTI_MODEL="true")
    model = city_models["NewYork_NY"]
    rows = model.rows[:3]
    name = targets["NewYork_NY"]
    assert httpx.get(f"{server.url}/v2/models/{name}/ready").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/{name}").json()["name"] == name
    response = httpx.post(
        f"{server.url}/v2/models/{name}/infer",
        json={
            "inputs": [
                {"name": "input-0", "shape": [3, 20], "datatype": "FP32", "data": rows.tolist()}
            ]
        },
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], model.expected(rows), rtol=1e-5, atol=1e-5
    )


def test_multi_model_prefix_on_s3(
    start_runtime: StartRuntime,
    city_models: dict[str, TrainedModel],
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    targets = _publish(city_models, tmp_path / "mme")
    for target in targets.values():
        s3_server.put("mme", f"houses/{target}", (tmp_path / "mme" / target).read_bytes())
    server = start_runtime(MODEL_URI="s3://mme/houses/", MULTI_MODEL="true", **s3_server.env())
    for city, model in city_models.items():
        assert_scores(_invoke(server, targets[city], model), model)
