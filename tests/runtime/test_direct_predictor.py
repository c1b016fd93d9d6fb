"""The direct C predictor gives exactly what ``inplace_predict`` gives, or is not used."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

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
    assert loaded.fast_path is not None
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
