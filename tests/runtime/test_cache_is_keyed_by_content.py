"""The model cache never vouches for itself: digests are checked on every load, and an
artifact replaced in place is served after the next load, not the old copy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.runtime_kit import (
    ArtifactServer,
    S3Server,
    StartRuntime,
    TrainedModel,
    csv_body,
    sagemaker_tarball,
    train_model,
)

TARGET = "X-Amzn-SageMaker-Target-Model"


@pytest.fixture(scope="module")
def other_model() -> TrainedModel:
    """A second model whose answers differ from the churn model's on the same rows."""
    return train_model(seed=11, trees=7)


def _scores(url: str, rows: np.ndarray, target: str | None = None) -> np.ndarray:
    headers = {"Content-Type": "text/csv"}
    if target is not None:
        headers[TARGET] = target
    response = httpx.post(f"{url}/invocations", content=csv_body(rows), headers=headers)
    assert response.status_code == 200, response.text
    return np.array([float(v) for v in response.text.split()], dtype=np.float32)


def _serves(url: str, model: TrainedModel, rows: np.ndarray, target: str | None = None) -> bool:
    return bool(np.allclose(_scores(url, rows, target), model.expected(rows), atol=1e-6))


def test_the_two_models_answer_differently(
    churn_model: TrainedModel, other_model: TrainedModel
) -> None:
    assert not np.allclose(churn_model.expected(), other_model.expected(churn_model.rows))


def test_a_wrong_sha256_stops_the_server_even_when_the_artifact_is_cached(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    artifact_server: ArtifactServer,
    tmp_path: Path,
) -> None:
    tarball = sagemaker_tarball(churn_model, artifact_server.root / "model.tar.gz")
    right = hashlib.sha256(tarball.read_bytes()).hexdigest()
    cache = str(tmp_path / "shared-cache")
    uri = f"{artifact_server.url}/model.tar.gz"
    first = start_runtime(MODEL_URI=uri, MODEL_SHA256=right, CACHE_DIR=cache)
    assert _serves(first.url, churn_model, churn_model.rows)
    first.stop()

    wrong = start_runtime(
        MODEL_URI=uri,
        MODEL_SHA256="0" * 64,
        CACHE_DIR=cache,
        DOWNLOAD_RETRIES="0",
        wait=False,
    )
    assert wrong.wait_exit() == 1
    assert "sha256" in wrong.log()


def test_a_corrupted_cached_copy_is_downloaded_again_not_served(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    other_model: TrainedModel,
    artifact_server: ArtifactServer,
    tmp_path: Path,
) -> None:
    churn_model.save(artifact_server.root / "model.ubj")
    digest = hashlib.sha256((artifact_server.root / "model.ubj").read_bytes()).hexdigest()
    cache = tmp_path / "shared-cache"
    uri = f"{artifact_server.url}/model.ubj"
    start_runtime(MODEL_URI=uri, MODEL_SHA256=digest, CACHE_DIR=str(cache)).stop()
    (cached,) = cache.rglob("model.ubj")
    other_model.save(cached)  # someone wrote over the cache

    again = start_runtime(MODEL_URI=uri, MODEL_SHA256=digest, CACHE_DIR=str(cache))
    assert _serves(again.url, churn_model, churn_model.rows)
    assert artifact_server.requests.count("/model.ubj") == 2


def test_a_tarball_replaced_in_place_is_served_after_a_restart(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    other_model: TrainedModel,
    tmp_path: Path,
) -> None:
    tarball = sagemaker_tarball(churn_model, tmp_path / "pvc" / "model.tar.gz")
    cache = str(tmp_path / "shared-cache")
    first = start_runtime(MODEL_URI=str(tarball), CACHE_DIR=cache)
    assert _serves(first.url, churn_model, churn_model.rows)
    first.stop()

    sagemaker_tarball(other_model, tarball)
    second = start_runtime(MODEL_URI=str(tarball), CACHE_DIR=cache)
    assert _serves(second.url, other_model, churn_model.rows)


def test_a_remote_artifact_replaced_in_place_is_served_after_a_restart(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    other_model: TrainedModel,
    artifact_server: ArtifactServer,
    tmp_path: Path,
) -> None:
    tarball = sagemaker_tarball(churn_model, artifact_server.root / "model.tar.gz")
    cache = str(tmp_path / "shared-cache")
    uri = f"{artifact_server.url}/model.tar.gz"
    first = start_runtime(MODEL_URI=uri, CACHE_DIR=cache)
    assert _serves(first.url, churn_model, churn_model.rows)
    first.stop()

    sagemaker_tarball(other_model, tarball)
    second = start_runtime(MODEL_URI=uri, CACHE_DIR=cache)
    assert _serves(second.url, other_model, churn_model.rows)


def test_an_s3_object_replaced_in_place_is_served_after_a_restart(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    other_model: TrainedModel,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    first_tarball = sagemaker_tarball(churn_model, tmp_path / "v1" / "model.tar.gz")
    uri = s3_server.put("replaced", "churn/model.tar.gz", first_tarball.read_bytes())
    cache = str(tmp_path / "shared-cache")
    env = {**s3_server.env(), "MODEL_URI": uri, "CACHE_DIR": cache}
    first = start_runtime(**env)
    assert _serves(first.url, churn_model, churn_model.rows)
    first.stop()

    second_tarball = sagemaker_tarball(other_model, tmp_path / "v2" / "model.tar.gz")
    s3_server.put("replaced", "churn/model.tar.gz", second_tarball.read_bytes())
    second = start_runtime(**env)
    assert _serves(second.url, other_model, churn_model.rows)


def test_a_multi_model_tarball_replaced_in_place_is_served_after_eviction(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    other_model: TrainedModel,
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "mme"
    tarball = sagemaker_tarball(churn_model, prefix / "a" / "model.tar.gz")
    sagemaker_tarball(other_model, prefix / "b" / "model.tar.gz")
    server = start_runtime(MODEL_URI=str(prefix), MULTI_MODEL="true", MAX_LOADED_MODELS="1")
    rows = churn_model.rows
    assert _serves(server.url, churn_model, rows, "a/model.tar.gz")

    sagemaker_tarball(other_model, tarball)
    assert _serves(server.url, other_model, rows, "b/model.tar.gz")  # evicts a
    assert _serves(server.url, other_model, rows, "a/model.tar.gz")
