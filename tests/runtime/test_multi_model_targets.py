"""Multi-model targets a hostile client picks: aliases, things that are not models, links
out of the prefix. Each is a 4xx that names the target and says why, without a server
path, and none loads a copy or counts as a 5xx."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.runtime_kit import (
    RuntimeProcess,
    StartRuntime,
    TrainedModel,
    csv_body,
    sagemaker_tarball,
)

TARGET = "X-Amzn-SageMaker-Target-Model"


@pytest.fixture
def prefix(tmp_path: Path, churn_model: TrainedModel) -> Path:
    """A model prefix with models, and things beside them that are not models."""
    root = tmp_path / "mme"
    churn_model.save(root / "bin20" / "model.ubj")
    sagemaker_tarball(churn_model, root / "churn" / "churn.tar.gz")
    sagemaker_tarball(churn_model, tmp_path / "only-tarball-src" / "model.tar.gz")
    (root / "tarball-only").mkdir()
    (tmp_path / "only-tarball-src" / "model.tar.gz").rename(root / "tarball-only" / "model.tar.gz")
    (root / "notes.txt").write_text("not a model\n")
    (root / "empty-folder").mkdir()
    (root / "two-files").mkdir()
    (root / "two-files" / "a.txt").write_text("a")
    (root / "two-files" / "b.txt").write_text("b")
    outside = tmp_path / "outside"
    churn_model.save(outside / "secret-model.ubj")
    os.symlink(outside / "secret-model.ubj", root / "escape.ubj")
    os.symlink(outside, root / "escape-folder")
    os.symlink(root / "bin20" / "model.ubj", root / "inside-link.ubj")
    return root


@pytest.fixture
def server(start_runtime: StartRuntime, prefix: Path) -> RuntimeProcess:
    """A multi-model server on the prefix."""
    return start_runtime(MODEL_URI=str(prefix), MULTI_MODEL="true")


def _invoke(server: RuntimeProcess, target: str, model: TrainedModel) -> httpx.Response:
    return httpx.post(
        f"{server.url}/invocations",
        content=csv_body(model.rows[:3]),
        headers={"Content-Type": "text/csv", TARGET: target},
        timeout=30,
    )


def _no_server_path(text: str, prefix: Path) -> None:
    assert str(prefix.parent) not in text, text
    assert "/src/" not in text and ".cc" not in text, text  # XGBoost's source locations


@pytest.mark.parametrize(
    "alias", ["bin20/./model.ubj", "./bin20/model.ubj", "bin20/model.ubj/", "bin20/"]
)
def test_an_alias_of_a_model_is_a_400_not_another_copy(
    server: RuntimeProcess, churn_model: TrainedModel, alias: str
) -> None:
    assert _invoke(server, "bin20/model.ubj", churn_model).status_code == 200
    response = _invoke(server, alias, churn_model)
    assert response.status_code == 400
    assert "'.' or '..' segments" in response.json()["error"]
    assert server.metric("fleetshift_loaded_models") == 1


def test_six_hundred_aliases_leave_metrics_and_memory_flat(
    server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    assert _invoke(server, "bin20/model.ubj", churn_model).status_code == 200
    size_before = len(httpx.get(server.metrics_url).content)
    for depth in range(1, 601):
        _invoke(server, "bin20/" + "./" * depth + "model.ubj", churn_model)
    assert server.metric("fleetshift_loaded_models") == 1
    assert len(httpx.get(server.metrics_url).content) < size_before * 1.2


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("notes.txt", "is not a model XGBoost can load"),
        ("empty-folder", "is a folder without a model file"),
        ("two-files", "is a folder without a model file"),
        ("escape.ubj", "is a link out of the model prefix"),
        ("escape-folder", "is a link out of the model prefix"),
        ("escape-folder/secret-model.ubj", "is a link out of the model prefix"),
    ],
)
def test_a_target_that_is_not_a_model_is_a_404_that_says_why(
    server: RuntimeProcess, prefix: Path, churn_model: TrainedModel, target: str, why: str
) -> None:
    response = _invoke(server, target, churn_model)
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert f"target model {target!r} is not a model: it {why}" in error
    _no_server_path(response.text, prefix)
    assert server.metric("fleetshift_invocation_5xx_errors_total") == 0


def test_a_missing_target_names_no_server_path(
    server: RuntimeProcess, prefix: Path, churn_model: TrainedModel
) -> None:
    response = _invoke(server, "Boston_MA/Boston_MA.tar.gz", churn_model)
    assert response.status_code == 404
    assert "target model 'Boston_MA/Boston_MA.tar.gz' not found" in response.json()["error"]
    _no_server_path(response.text, prefix)


def test_a_folder_holding_only_a_model_tarball_serves_it(
    server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    response = _invoke(server, "tarball-only", churn_model)
    assert response.status_code == 200, response.text
    scores = np.array(response.text.split(), dtype=np.float32)
    np.testing.assert_allclose(scores, churn_model.expected(churn_model.rows[:3]), atol=1e-6)


def test_a_link_within_the_prefix_is_followed(
    server: RuntimeProcess, churn_model: TrainedModel
) -> None:
    assert _invoke(server, "inside-link.ubj", churn_model).status_code == 200


def test_model_metadata_of_a_non_model_target_is_a_404_without_paths(
    server: RuntimeProcess, prefix: Path
) -> None:
    response = httpx.get(f"{server.url}/v2/models/notes.txt")
    assert response.status_code == 404
    assert "is not a model" in response.json()["error"]
    _no_server_path(response.text, prefix)


def test_the_model_label_is_bounded(
    start_runtime: StartRuntime, prefix: Path, churn_model: TrainedModel
) -> None:
    for index in range(4):
        churn_model.save(prefix / f"many-{index}" / "model.ubj")
    server = start_runtime(MODEL_URI=str(prefix), MULTI_MODEL="true", MAX_MODEL_LABELS="2")
    for index in range(4):
        assert _invoke(server, f"many-{index}/model.ubj", churn_model).status_code == 200
    labelled = {
        dict(labels).get("model")
        for name, labels in server.metrics()
        if name == "fleetshift_invocations_total"
    }
    assert labelled == {"many-0/model.ubj", "many-1/model.ubj", "_other"}
    assert server.metric("fleetshift_invocations_total", model="_other") == 2
