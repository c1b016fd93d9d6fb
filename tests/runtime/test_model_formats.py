"""Every model format the runtime loads, and the pickle refusal."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import httpx
import numpy as np
import pytest

from fleetshift_runtime.models.xgboost_model import LEGACY_BINARY_LAST, xgboost_version
from support.runtime_kit import (
    StartRuntime,
    TrainedModel,
    csv_body,
    make_tarball,
    sagemaker_tarball,
)


def _predict(url: str, model: TrainedModel) -> np.ndarray:
    response = httpx.post(
        f"{url}/invocations", content=csv_body(model.rows), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    return np.array([float(v) for v in response.text.split()], dtype=np.float32)


LEGACY = Path(__file__).parent / "data" / "legacy-binary"
"""A legacy binary model saved by XGBoost 3.0.5, its input rows and 3.0.5's predictions."""
READS_LEGACY_BINARY = xgboost_version()[:2] <= LEGACY_BINARY_LAST
needs_legacy_writer = pytest.mark.skipif(
    not READS_LEGACY_BINARY, reason="XGBoost 3.1 and later neither write nor read it"
)


@pytest.mark.parametrize(
    "file_name",
    [
        "model.json",
        "model.ubj",
        pytest.param("model.deprecated", marks=needs_legacy_writer),
        "xgboost-model",  # legacy binary up to XGBoost 3.0, UBJ after
    ],
    ids=["json", "ubj", "legacy-binary", "sagemaker-named-legacy-binary"],
)
def test_model_file_format_is_detected_and_served(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path, file_name: str
) -> None:
    path = churn_model.save(tmp_path / file_name)
    server = start_runtime(MODEL_URI=str(path))
    np.testing.assert_allclose(_predict(server.url, churn_model), churn_model.expected(), atol=1e-6)


@needs_legacy_writer
def test_legacy_binary_file_really_is_the_old_format(
    churn_model: TrainedModel, tmp_path: Path
) -> None:
    head = churn_model.save(tmp_path / "xgboost-model").read_bytes()[:4]
    assert head == b"binf"


def test_kept_legacy_binary_file_is_served_or_refused_with_the_way_out(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    model_file = LEGACY / "xgboost-model"
    assert model_file.read_bytes()[:4] == b"binf"
    if READS_LEGACY_BINARY:
        server = start_runtime(MODEL_URI=str(model_file))
        response = httpx.post(
            f"{server.url}/invocations",
            content=csv_body(np.load(LEGACY / "rows.npy")),
            headers={"Content-Type": "text/csv"},
        )
        got = np.array([float(v) for v in response.text.split()], dtype=np.float32)
        np.testing.assert_allclose(got, np.load(LEGACY / "expected.npy"), atol=1e-6)
        return
    server = start_runtime(MODEL_URI=str(model_file), wait=False)
    assert server.wait_exit() == 1
    assert "removed in XGBoost 3.1" in server.log()
    assert "booster.save_model('model.ubj')" in server.log()


def test_sagemaker_model_tarball_is_unpacked_and_served(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    tarball = sagemaker_tarball(churn_model, tmp_path / "model.tar.gz")
    server = start_runtime(MODEL_URI=f"file://{tarball}")
    np.testing.assert_allclose(_predict(server.url, churn_model), churn_model.expected(), atol=1e-6)


def test_model_folder_like_a_pvc_mount_is_searched(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "mnt" / "models"
    churn_model.save(folder / "model.json")
    (folder / "README.txt").write_text("trained for the churn endpoint")
    server = start_runtime(MODEL_URI=str(folder))
    np.testing.assert_allclose(_predict(server.url, churn_model), churn_model.expected(), atol=1e-6)


def test_pickled_model_is_refused_by_default(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(churn_model.booster))
    server = start_runtime(MODEL_URI=str(path), wait=False)
    assert server.wait_exit() == 1
    assert "Unpickling runs arbitrary code" in server.log()
    assert "FLEETSHIFT_ALLOW_PICKLE" in server.log()


def test_pickled_model_inside_a_sagemaker_tarball_is_refused_too(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    tarball = make_tarball(
        tmp_path / "model.tar.gz", {"xgboost-model": pickle.dumps(churn_model.booster)}
    )
    server = start_runtime(MODEL_URI=str(tarball), wait=False)
    assert server.wait_exit() == 1
    assert "is a Python pickle file" in server.log()


def test_pickled_model_loads_when_explicitly_allowed(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    path = tmp_path / "xgboost-model"
    path.write_bytes(pickle.dumps(churn_model.booster))
    server = start_runtime(MODEL_URI=str(path), ALLOW_PICKLE="true")
    np.testing.assert_allclose(_predict(server.url, churn_model), churn_model.expected(), atol=1e-6)


def test_file_that_is_not_a_model_stops_the_server_with_a_reason(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "xgboost-model"
    path.write_bytes(b"this is not a model at all" * 10)
    server = start_runtime(MODEL_URI=str(path), wait=False)
    assert server.wait_exit() == 1
    assert "is not a loadable XGBoost model" in server.log()


def test_missing_model_path_stops_the_server_with_a_reason(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    server = start_runtime(MODEL_URI=str(tmp_path / "nothing-here"), wait=False)
    assert server.wait_exit() == 1
    assert "does not exist" in server.log()


def test_server_answers_liveness_but_not_readiness_while_loading(
    start_runtime: StartRuntime,
    churn_model: TrainedModel,
    artifact_server: object,
) -> None:
    """A slow download: live at once, ready only after load and warm-up."""
    from support.runtime_kit import ArtifactServer  # noqa: PLC0415

    assert isinstance(artifact_server, ArtifactServer)
    churn_model.save(artifact_server.root / "model.ubj")
    artifact_server.delay_seconds["/model.ubj"] = 1.5
    server = start_runtime(MODEL_URI=f"{artifact_server.url}/model.ubj", wait=False)

    from fleetshift_devcluster.wait import wait_for  # noqa: PLC0415

    def live() -> bool:
        try:
            return httpx.get(f"{server.url}/v2/health/live").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(live, timeout=30, interval=0.05, message="live")
    assert httpx.get(f"{server.url}/ping").status_code == 503
    not_ready = httpx.post(
        f"{server.url}/invocations",
        content=csv_body(churn_model.rows[:1]),
        headers={"Content-Type": "text/csv"},
    )
    assert not_ready.status_code == 503
    server.wait_ready()
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_a_model_saved_by_a_newer_xgboost_is_refused_not_misread(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path, suffix: str
) -> None:
    """XGBoost 3.0 reads a 3.2 model's base_score as another value and predicts other
    numbers without an error; a runtime refuses a model from a newer minor release."""
    raw = churn_model.save(tmp_path / f"model{suffix}").read_bytes()
    if suffix == ".json":
        document = json.loads(raw)
        assert document["version"][:2] == list(xgboost_version()[:2])
        document["version"] = [99, 1, 0]
        newer = json.dumps(document).encode()
    else:
        at = raw.rfind(b"\x07version[") + len(b"\x07version[")
        header = raw[at:].split(b"i", 1)[0]  # the count, then the first int8 element
        first = at + len(header)
        assert raw[first : first + 2] == b"i" + bytes([xgboost_version()[0]])
        newer = raw[:first] + b"i\x63" + raw[first + 2 :]  # major 99
    path = tmp_path / "newer" / f"model{suffix}"
    path.parent.mkdir()
    path.write_bytes(newer)
    server = start_runtime(MODEL_URI=str(path), wait=False)
    assert server.wait_exit() == 1
    assert "was saved by XGBoost 99." in server.log()
    assert "newer than this runtime's XGBoost" in server.log()
