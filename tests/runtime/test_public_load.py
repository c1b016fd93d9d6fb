"""``fleetshift_runtime.load``: the server's predictor in process, equal to XGBoost's own
``inplace_predict`` within 1e-6 on every path, missing values included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xgboost

import fleetshift_runtime
from fleetshift_runtime.errors import ModelFaultError
from fleetshift_runtime.models import compiled

FEATURES = 8
needs_cc = pytest.mark.skipif(compiled.compiler() is None, reason="no C compiler on PATH")


def _rows(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(scale=2, size=(count, FEATURES)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.15] = np.nan
    rows[:3] = np.nan  # rows of only missing values follow every default branch
    return rows


def _train(objective: str, classes: int = 0) -> xgboost.Booster:
    x = _rows(600, seed=3)
    rng = np.random.default_rng(4)
    if classes:
        label = rng.integers(0, classes, size=x.shape[0])
    else:
        label = (np.nan_to_num(x[:, 0]) + rng.normal(size=x.shape[0]) > 0).astype(int)
    params: dict[str, object] = {"objective": objective, "max_depth": 4, "nthread": 1}
    if classes:
        params["num_class"] = classes
    return xgboost.train(params, xgboost.DMatrix(x, label=label), num_boost_round=15)


@pytest.fixture(scope="module")
def binary_booster() -> xgboost.Booster:
    return _train("binary:logistic")


@pytest.fixture(scope="module")
def softprob_booster() -> xgboost.Booster:
    return _train("multi:softprob", classes=3)


@pytest.fixture(scope="module")
def forest_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if compiled.compiler() is None:
        pytest.skip("no C compiler on PATH")
    output = tmp_path_factory.mktemp("forest") / "lib" / "libfleetshift_forest.so"
    subprocess.run(
        [sys.executable, "-m", "fleetshift_runtime.models.compiled", str(output)],
        check=True,
        capture_output=True,
    )
    output.parent.chmod(0o755)
    return output


def _save(booster: xgboost.Booster, path: Path) -> str:
    booster.save_model(str(path))
    return str(path)


def _expected(booster: xgboost.Booster, rows: np.ndarray) -> np.ndarray:
    return np.asarray(booster.inplace_predict(rows), dtype=np.float32)


PATHS = {
    "direct C": ({"compiled_predict": False}, "direct C predictor"),
    "inplace_predict": ({"compiled_predict": False, "fast_predict": False}, "inplace_predict"),
}


@pytest.mark.parametrize("path_name", sorted(PATHS))
@pytest.mark.parametrize("suffix", ["ubj", "json"])
def test_binary_model_matches_inplace_predict(
    binary_booster: xgboost.Booster, tmp_path: Path, path_name: str, suffix: str
) -> None:
    options, predictor = PATHS[path_name]
    model = fleetshift_runtime.load(
        _save(binary_booster, tmp_path / f"model.{suffix}"), cache_dir=str(tmp_path), **options
    )
    rows = _rows(300, seed=9)
    got = model.predict(rows)
    assert (model.num_features, model.predictor_name, model.output_shape) == (
        FEATURES,
        predictor,
        (),
    )
    assert got.dtype == np.float32
    assert got.shape == (300,)
    np.testing.assert_allclose(got, _expected(binary_booster, rows), rtol=0, atol=1e-6)


@needs_cc
def test_by_default_the_compiled_trees_answer_once_load_returns(
    binary_booster: xgboost.Booster, tmp_path: Path
) -> None:
    model = fleetshift_runtime.load(
        _save(binary_booster, tmp_path / "m.ubj"), cache_dir=str(tmp_path)
    )
    assert model.predictor_name == "compiled trees (built for this model)"
    assert model.compiled_error is None
    for count in (1, 7, 8, 9, 300):  # the kernel works eight rows at a time
        rows = _rows(count, seed=count)
        np.testing.assert_allclose(
            model.predict(rows), _expected(binary_booster, rows), rtol=0, atol=1e-6
        )


def test_prebuilt_forest_library_is_selectable(
    binary_booster: xgboost.Booster, tmp_path: Path, forest_library: Path
) -> None:
    model = fleetshift_runtime.load(
        _save(binary_booster, tmp_path / "m.ubj"),
        cache_dir=str(tmp_path),
        trees_library=str(forest_library),
    )
    assert model.predictor_name == "compiled trees (prebuilt forest library)"
    rows = _rows(100, seed=5)
    np.testing.assert_allclose(
        model.predict(rows), _expected(binary_booster, rows), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("options", [{}, {"compiled_predict": False}, {"fast_predict": False}])
def test_softprob_model_gives_one_probability_per_class(
    softprob_booster: xgboost.Booster, tmp_path: Path, options: dict[str, bool]
) -> None:
    model = fleetshift_runtime.load(
        _save(softprob_booster, tmp_path / "m.ubj"), cache_dir=str(tmp_path), **options
    )
    rows = _rows(200, seed=8)
    got = model.predict(rows)
    assert got.shape == (200, 3)
    assert model.output_shape == (3,)
    np.testing.assert_allclose(got, _expected(softprob_booster, rows), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    if options == {} and compiled.compiler() is not None:  # summed per class, then softmax
        assert model.predictor_name == "compiled trees (built for this model)"
        assert model.compiled_error is None
        for count in (1, 7, 8, 9, 100):
            np.testing.assert_allclose(
                model.predict(rows[:count]),
                _expected(softprob_booster, rows[:count]),
                rtol=0,
                atol=1e-6,
            )


def test_other_inputs_are_converted(binary_booster: xgboost.Booster, tmp_path: Path) -> None:
    model = fleetshift_runtime.load(
        _save(binary_booster, tmp_path / "m.ubj"), cache_dir=str(tmp_path), compiled_predict=False
    )
    rows = _rows(20, seed=2)
    want = _expected(binary_booster, rows)
    np.testing.assert_allclose(model.predict(rows.astype(np.float64)), want, atol=1e-6)
    np.testing.assert_allclose(model.predict(np.asfortranarray(rows)), want, atol=1e-6)
    np.testing.assert_allclose(model.predict(rows.tolist()), want, atol=1e-6)
    np.testing.assert_allclose(model.predict(rows[4]), want[4:5], atol=1e-6)


def test_a_wider_matrix_is_a_model_fault(binary_booster: xgboost.Booster, tmp_path: Path) -> None:
    model = fleetshift_runtime.load(
        _save(binary_booster, tmp_path / "m.ubj"), cache_dir=str(tmp_path), compiled_predict=False
    )
    with pytest.raises(ModelFaultError, match=f"trained on {FEATURES} features"):
        model.predict(np.zeros((2, FEATURES + 3), dtype=np.float32))


def test_an_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="compile_predict"):
        fleetshift_runtime.load(str(tmp_path / "m.ubj"), compile_predict=False)


def test_importing_the_package_does_not_load_the_api() -> None:
    code = (
        "import sys, fleetshift_runtime; "
        "assert 'fleetshift_runtime.api' not in sys.modules; "
        "assert 'fleetshift_runtime.settings' not in sys.modules; "
        "assert callable(fleetshift_runtime.load)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
