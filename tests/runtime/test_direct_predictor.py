"""The direct C predictor (``libxgboost`` without the ``xgboost`` package) gives exactly
what ``inplace_predict`` gives; the package serves when the library cannot be loaded."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from fleetshift_runtime.models import native
from fleetshift_runtime.models.xgboost_model import load_xgboost
from support.runtime_kit import StartRuntime, TrainedModel, csv_body, train_model


@pytest.mark.parametrize(
    ("objective", "num_class"),
    [("binary:logistic", 0), ("reg:squarederror", 0), ("multi:softprob", 4), ("reg:logistic", 0)],
)
def test_direct_predictor_matches_inplace_predict(
    tmp_path: Path, objective: str, num_class: int
) -> None:
    model = train_model(objective=objective, num_class=num_class, features=12, trees=30)
    loaded = load_xgboost(
        model.save(tmp_path / "model.ubj"), name="m", allow_pickle=False, threads=1
    )
    assert loaded.predictor_name == "direct C predictor"
    rng = np.random.default_rng(5)
    rows = rng.normal(scale=2, size=(300, 12)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.2] = np.nan
    for batch in (rows[:1], rows[:7], rows):
        np.testing.assert_array_equal(loaded.predict(batch), model.expected(batch))


def test_direct_predictor_reports_a_width_mismatch_like_xgboost(tmp_path: Path) -> None:
    from fleetshift_runtime.errors import ModelFaultError  # noqa: PLC0415

    model = train_model(features=19)
    loaded = load_xgboost(
        model.save(tmp_path / "model.ubj"), name="m", allow_pickle=False, threads=1
    )
    with pytest.raises(ModelFaultError, match=r"trained on 19 features.*\(20 vs\. 19\)"):
        loaded.predict(np.zeros((2, 20), dtype=np.float32))


def test_server_without_the_direct_predictor_gives_the_same_answers(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    path = churn_model.save(tmp_path / "model.ubj")
    server = start_runtime(MODEL_URI=str(path), FAST_PREDICT="false")
    assert "inplace_predict" in server.log()
    response = httpx.post(
        f"{server.url}/invocations",
        content=csv_body(churn_model.rows),
        headers={"Content-Type": "text/csv"},
    )
    scores = np.array([float(v) for v in response.text.split()], dtype=np.float32)
    np.testing.assert_allclose(scores, churn_model.expected(), atol=1e-6)


def test_the_json_dump_is_xgboost_s_own(churn_model: TrainedModel) -> None:
    dumped = json.loads(churn_model.native().save_json())
    assert dumped == json.loads(bytes(churn_model.booster.save_raw("json")))


def test_a_pickled_booster_is_served_by_the_direct_predictor(
    churn_model: TrainedModel, tmp_path: Path
) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(churn_model.booster))
    loaded = load_xgboost(path, name="m", allow_pickle=True, threads=1)
    assert (loaded.source_format, loaded.predictor_name) == ("pickle", "direct C predictor")
    np.testing.assert_array_equal(loaded.predict(churn_model.rows), churn_model.expected())


def test_serving_never_imports_the_xgboost_package(
    churn_model: TrainedModel, tmp_path: Path
) -> None:
    """The package and the SciPy it pulls in cost 0.3 to 0.6 s of every cold start."""
    path = churn_model.save(tmp_path / "model.ubj")
    script = f"""
import sys
import numpy as np
import fleetshift_runtime.__main__, fleetshift_runtime.app
from fleetshift_runtime.models.loading import load_model
from fleetshift_runtime.settings import RuntimeSettings
model = load_model({str(path)!r}, name="m", settings=RuntimeSettings(compiled_predict=False))
model.predict(np.zeros((3, {churn_model.features}), dtype=np.float32))
print(model.predictor_name, sorted(m for m in ("xgboost", "scipy") if m in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "direct C predictor []"


def test_the_xgboost_package_serves_when_libxgboost_cannot_be_loaded_directly(
    churn_model: TrainedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    not_a_library = tmp_path / "libxgboost.so"
    not_a_library.write_text("not a shared library")
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "library_path", lambda: not_a_library)
    with caplog.at_level(logging.WARNING):
        loaded = load_xgboost(
            churn_model.save(tmp_path / "model.ubj"), name="m", allow_pickle=False, threads=1
        )
    assert loaded.predictor_name == "inplace_predict"
    assert f"{not_a_library} could not be loaded" in caplog.text
    np.testing.assert_array_equal(loaded.predict(churn_model.rows), churn_model.expected())


def test_a_libxgboost_older_than_2_0_is_not_called_directly(
    churn_model: TrainedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native._Library, "_version", lambda self: (1, 7, 6))
    with caplog.at_level(logging.WARNING):
        loaded = load_xgboost(
            churn_model.save(tmp_path / "model.ubj"), name="m", allow_pickle=False, threads=1
        )
    assert loaded.predictor_name == "inplace_predict"
    assert "is XGBoost 1.7.6; 2.0 or newer is needed" in caplog.text
    np.testing.assert_array_equal(loaded.predict(churn_model.rows), churn_model.expected())
