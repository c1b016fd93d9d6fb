"""The compiled trees match ``inplace_predict`` within 1e-6, or XGBoost keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from fleetshift_runtime.models import compiled
from fleetshift_runtime.models.compiled import UnsupportedModelError, compile_validated, ensemble
from fleetshift_runtime.models.xgboost_model import load_xgboost
from support.runtime_kit import (
    RuntimeProcess,
    StartRuntime,
    TrainedModel,
    csv_body,
    train_model,
)

needs_cc = pytest.mark.skipif(compiled.compiler() is None, reason="no C compiler on PATH")


@pytest.fixture(scope="module")
def forest_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prebuilt tree walker, built by the command the image's build stage runs."""
    if compiled.compiler() is None:
        pytest.skip("no C compiler on PATH")
    output = tmp_path_factory.mktemp("forest") / "lib" / "libfleetshift_forest.so"
    built = subprocess.run(
        [sys.executable, "-m", "fleetshift_runtime.models.compiled", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert f"built {output}" in built.stdout
    output.parent.chmod(0o755)
    return output


def _rows(features: int, count: int = 400) -> np.ndarray:
    rng = np.random.default_rng(11)
    rows = rng.normal(scale=2, size=(count, features)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.2] = np.nan
    rows[:5, :] = np.nan  # a row of only missing values follows every default branch
    return rows


@needs_cc
@pytest.mark.parametrize(
    "objective",
    ["binary:logistic", "reg:squarederror", "reg:logistic", "binary:logitraw", "reg:absoluteerror"],
)
def test_compiled_trees_match_inplace_predict(tmp_path: Path, objective: str) -> None:
    model = train_model(objective=objective, features=12, trees=40, depth=5)
    predictor = compile_validated(model.native(), tmp_path)
    rows = _rows(12)
    for batch in (rows[:1], rows[:7], rows[:8], rows[:9], rows[:16], rows):
        np.testing.assert_allclose(predictor(batch), model.expected(batch), rtol=0, atol=1e-6)


@needs_cc
def test_deep_trees_use_nested_ifs_and_match_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ensemble, "MAX_TABLE_DEPTH", 2)
    model = train_model(features=12, trees=30, depth=6)
    source, _ = compiled.generate_c(compiled.parse(model.native()))
    assert "static inline float tree_0" in source
    predictor = compile_validated(model.native(), tmp_path)
    rows = _rows(12)
    np.testing.assert_allclose(predictor(rows), model.expected(rows), rtol=0, atol=1e-6)


@needs_cc
def test_values_exactly_on_a_threshold_go_right_like_xgboost(tmp_path: Path) -> None:
    model = train_model(features=6, trees=10, depth=3)
    predictor = compile_validated(model.native(), tmp_path)
    document = json.loads(bytes(model.booster.save_raw("json")))
    splits = [
        (feature, threshold)
        for tree in document["learner"]["gradient_booster"]["model"]["trees"]
        for feature, threshold, left in zip(
            tree["split_indices"], tree["split_conditions"], tree["left_children"], strict=True
        )
        if left != -1
    ]
    rows = np.zeros((len(splits), 6), dtype=np.float32)
    for i, (feature, threshold) in enumerate(splits):
        rows[i, feature] = threshold
    np.testing.assert_allclose(predictor(rows), model.expected(rows), rtol=0, atol=1e-6)


@needs_cc
def test_the_library_is_cached_by_source(tmp_path: Path) -> None:
    model = train_model(features=8)
    compile_validated(model.native(), tmp_path)
    libraries = list(tmp_path.glob("trees-*.so"))
    assert len(libraries) == 1
    built_at = libraries[0].stat().st_mtime_ns
    compile_validated(model.native(), tmp_path)
    assert libraries[0].stat().st_mtime_ns == built_at


@needs_cc
def test_a_cache_dir_others_can_write_to_is_refused(tmp_path: Path) -> None:
    model = train_model(features=8)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsupportedModelError, match="not private"):
        compile_validated(model.native(), shared)


def test_models_it_does_not_cover_are_refused() -> None:
    hinge = train_model(objective="binary:hinge", features=5)
    with pytest.raises(UnsupportedModelError, match="objective binary:hinge"):
        compiled.parse(hinge.native())


@needs_cc
def test_a_library_that_disagrees_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = train_model(features=10)
    real = compiled.generate_c

    def wrong(ensemble: compiled.Ensemble) -> tuple[str, int]:
        source, width = real(ensemble)
        wrong_source = source.replace("1.0f / (1.0f + expf(-sum))", "sum")
        return wrong_source.replace("1.0f / (1.0f + expf(-s))", "s"), width  # the margin

    monkeypatch.setattr(compiled, "generate_c", wrong)
    with pytest.raises(UnsupportedModelError, match="differs from XGBoost"):
        compile_validated(model.native(), tmp_path)
    loaded = load_xgboost(
        model.save(tmp_path / "model.ubj"), name="m", allow_pickle=False, threads=1
    )
    loaded.compile_in_background(tmp_path / "other").join(timeout=120)
    assert loaded.compiled is None
    assert loaded.predictor_name == "direct C predictor"
    np.testing.assert_array_equal(loaded.predict(model.rows), model.expected())


def test_without_a_compiler_xgboost_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("FLEETSHIFT_CC", raising=False)
    model = train_model(features=10)
    with pytest.raises(UnsupportedModelError, match="no C compiler"):
        compile_validated(model.native(), tmp_path)


@needs_cc
def test_a_wrong_width_request_still_gets_xgboost_s_error(tmp_path: Path) -> None:
    from fleetshift_runtime.errors import ModelFaultError  # noqa: PLC0415

    model = train_model(features=19)
    loaded = load_xgboost(
        model.save(tmp_path / "model.ubj"), name="m", allow_pickle=False, threads=1
    )
    loaded.compile_in_background(tmp_path / "cache").join(timeout=120)
    assert loaded.compiled is not None
    with pytest.raises(ModelFaultError, match="trained on 19 features"):
        loaded.predict(np.zeros((2, 20), dtype=np.float32))


def _wait_for_log(server_log: object, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server_log():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{server_log()}")  # type: ignore[operator]


def _assert_answers_like_xgboost(server: RuntimeProcess, model: TrainedModel) -> None:
    response = httpx.post(
        f"{server.url}/invocations",
        content=csv_body(model.rows),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200
    scores = np.array([float(v) for v in response.text.split()], dtype=np.float32)
    np.testing.assert_allclose(scores, model.expected(), rtol=0, atol=1e-6)


@needs_cc
def test_server_switches_to_the_compiled_trees_with_the_same_answers(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    server = start_runtime(MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")))
    _wait_for_log(server.log, "compiled trees validated within 1e-6 and in use")
    metadata = httpx.get(f"{server.url}/v2/models/model").json()
    assert metadata["parameters"]["predictor"] == "compiled trees (built for this model)"
    _assert_answers_like_xgboost(server, churn_model)


@pytest.mark.parametrize(
    "objective", ["binary:logistic", "reg:squarederror", "binary:logitraw", "reg:logistic"]
)
def test_prebuilt_forest_library_matches_inplace_predict_without_a_compiler(
    tmp_path: Path, forest_library: Path, objective: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # as in the slim image
    monkeypatch.delenv("FLEETSHIFT_CC", raising=False)
    model = train_model(objective=objective, features=12, trees=40, depth=5)
    predictor = compile_validated(model.native(), tmp_path / "cache", forest_library=forest_library)
    assert predictor.kind == "prebuilt forest library"
    rows = _rows(12)
    for batch in (rows[:1], rows[:7], rows[:8], rows[:9], rows):
        np.testing.assert_allclose(predictor(batch), model.expected(batch), rtol=0, atol=1e-6)
    assert not (tmp_path / "cache").exists(), "nothing is built for the model"


def test_prebuilt_forest_library_refuses_trees_too_deep_for_tables(
    forest_library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ensemble, "MAX_TABLE_DEPTH", 2)
    model = train_model(features=12, trees=30, depth=6)
    with pytest.raises(UnsupportedModelError, match="too deep for the prebuilt forest library"):
        compile_validated(model.native(), Path("/unused"), forest_library=forest_library)


def test_a_forest_library_others_can_write_to_is_refused(
    tmp_path: Path, forest_library: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    copy = shared / forest_library.name
    copy.write_bytes(forest_library.read_bytes())
    copy.chmod(0o777)
    model = train_model(features=8)
    with pytest.raises(UnsupportedModelError, match="may be written by another user"):
        compile_validated(model.native(), tmp_path, forest_library=copy)
    with pytest.raises(UnsupportedModelError, match="does not exist"):
        compile_validated(model.native(), tmp_path, forest_library=shared / "missing.so")


def test_a_library_that_is_not_a_forest_library_is_refused(tmp_path: Path) -> None:
    if compiled.compiler() is None:
        pytest.skip("no C compiler on PATH")
    model = train_model(features=8)
    source, _ = compiled.generate_c(compiled.parse(model.native()))
    baked = compiled.build(source, tmp_path / "cache")  # a per-model library: no fs_forest_abi
    with pytest.raises(UnsupportedModelError, match="not a forest library"):
        compile_validated(model.native(), tmp_path, forest_library=baked)


def test_forest_library_command_explains_its_usage_and_a_missing_compiler(
    tmp_path: Path,
) -> None:
    command = [sys.executable, "-m", "fleetshift_runtime.models.compiled"]
    usage = subprocess.run(command, capture_output=True, text=True, check=False)
    assert usage.returncode == 2
    assert "usage: python -m fleetshift_runtime.models.compiled OUTPUT.so" in usage.stderr
    env = {"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path)}
    no_cc = subprocess.run(
        [*command, str(tmp_path / "out.so")], capture_output=True, text=True, check=False, env=env
    )
    assert no_cc.returncode == 1
    assert "could not build the forest library: no C compiler on PATH" in no_cc.stderr
    assert not (tmp_path / "out.so").exists()


def test_server_serves_with_the_prebuilt_forest_library(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path, forest_library: Path
) -> None:
    server = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        TREES_LIBRARY=str(forest_library),
        CACHE_DIR=str(tmp_path / "cache"),
    )
    _wait_for_log(server.log, "in use after")
    assert "(prebuilt forest library)" in server.log()
    metadata = httpx.get(f"{server.url}/v2/models/model").json()
    assert metadata["parameters"]["predictor"] == "compiled trees (prebuilt forest library)"
    _assert_answers_like_xgboost(server, churn_model)
    assert not list((tmp_path / "cache").rglob("trees-*.so")), "no per-model build"


def test_server_with_compiled_predict_off_never_compiles(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    server = start_runtime(
        MODEL_URI=str(churn_model.save(tmp_path / "model.ubj")),
        COMPILED_PREDICT="false",
        CACHE_DIR=str(tmp_path / "cache"),
    )
    response = httpx.post(
        f"{server.url}/invocations",
        content=csv_body(churn_model.rows[:3]),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200
    _wait_for_log(server.log, "compiled trees off (FLEETSHIFT_COMPILED_PREDICT=false)")
    assert "in use after" not in server.log()
    assert not (tmp_path / "cache" / "compiled").exists()
