"""Multi-class models and trees grouped by depth in the compiled trees: equal to
``inplace_predict`` within 1e-6 (missing values, values on thresholds, every row count
around the 8-row blocks), or XGBoost keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost

import fleetshift_runtime
from fleetshift_runtime.models import compiled
from fleetshift_runtime.models.compiled import (
    Transform,
    UnsupportedModelError,
    codegen,
    compile_validated,
    ensemble,
)
from fleetshift_runtime.models.native import NativeBooster

FEATURES = 9
ROW_COUNTS = (1, 7, 8, 9, 100)
needs_cc = pytest.mark.skipif(compiled.compiler() is None, reason="no C compiler on PATH")


def _rows(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(scale=2, size=(count, FEATURES)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.15] = np.nan
    rows[:2] = np.nan  # rows of only missing values follow every default branch
    return rows


def _train(objective: str, classes: int = 0, rounds: int = 12, depth: int = 5) -> xgboost.Booster:
    """Noisy labels: the trees stop at different depths, so grouping by depth is used."""
    x = _rows(700, seed=21)
    rng = np.random.default_rng(22)
    signal = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) + rng.normal(size=len(x))
    if classes:
        label = np.clip(np.floor(signal + classes / 2), 0, classes - 1).astype(int)
    else:
        label = (signal > 0).astype(int)
    params: dict[str, Any] = {
        "objective": objective,
        "max_depth": depth,
        "nthread": 1,
        "seed": 3,
        "min_child_weight": 4,
    }
    if classes:
        params["num_class"] = classes
    return xgboost.train(params, xgboost.DMatrix(x, label=label), num_boost_round=rounds)


def _native(booster: xgboost.Booster) -> NativeBooster:
    return NativeBooster.load(bytes(booster.save_raw("ubj")), threads=1)


def _assert_like_xgboost(predictor: compiled.CompiledPredictor, booster: xgboost.Booster) -> None:
    rows = _rows(300, seed=23)
    for count in ROW_COUNTS:
        want = booster.inplace_predict(rows[:count])
        got = predictor(rows[:count])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.fixture(scope="module", params=[3, 5], ids=["3 classes", "5 classes"])
def softprob(request: pytest.FixtureRequest) -> xgboost.Booster:
    return _train("multi:softprob", classes=int(request.param))


@needs_cc
def test_softprob_gives_each_class_its_probability_like_xgboost(
    softprob: xgboost.Booster, tmp_path: Path
) -> None:
    parsed = compiled.parse(_native(softprob))
    classes = softprob.inplace_predict(_rows(1, seed=5)).shape[1]
    assert classes in (3, 5)
    assert parsed.transform is Transform.SOFTMAX
    assert parsed.classes == parsed.outputs == classes
    assert parsed.tree_class == [i % classes for i in range(len(parsed.trees))]
    predictor = compile_validated(_native(softprob), tmp_path)
    _assert_like_xgboost(predictor, softprob)
    assert predictor(_rows(9, seed=5)).shape == (9, classes)


@needs_cc
@pytest.mark.parametrize("classes", [3, 5])
def test_softmax_gives_the_class_index_like_xgboost(classes: int, tmp_path: Path) -> None:
    booster = _train("multi:softmax", classes=classes)
    parsed = compiled.parse(_native(booster))
    assert parsed.transform is Transform.ARGMAX
    assert (parsed.classes, parsed.outputs) == (classes, 1)
    predictor = compile_validated(_native(booster), tmp_path)
    _assert_like_xgboost(predictor, booster)


@needs_cc
def test_multiclass_values_exactly_on_thresholds_go_right_like_xgboost(
    softprob: xgboost.Booster, tmp_path: Path
) -> None:
    parsed = compiled.parse(_native(softprob))
    rows = _rows(len(parsed.trees), seed=9)
    for index, tree in enumerate(parsed.trees):  # every inner node's threshold, in turn
        for node, child in enumerate(tree["left_children"]):
            if child != -1:
                row = (index + node) % len(rows)
                rows[row, int(tree["split_indices"][node])] = tree["split_conditions"][node]
    predictor = compile_validated(_native(softprob), tmp_path)
    for count in (1, 7, 8, 9, len(rows)):
        want = softprob.inplace_predict(rows[:count])
        np.testing.assert_allclose(predictor(rows[:count]), want, rtol=0, atol=1e-6)


@needs_cc
def test_multiclass_trees_too_deep_for_tables_use_nested_ifs(
    softprob: xgboost.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ensemble, "MAX_TABLE_DEPTH", 2)
    source, _ = compiled.generate_c(compiled.parse(_native(softprob)))
    assert "static inline float tree_0" in source
    _assert_like_xgboost(compile_validated(_native(softprob), tmp_path), softprob)


@needs_cc
def test_trees_of_different_depths_are_padded_only_to_their_own_depth(tmp_path: Path) -> None:
    booster = _train("binary:logistic", rounds=40, depth=7)
    parsed = compiled.parse(_native(booster))
    assert len(set(parsed.depths)) > 1
    source, _ = compiled.generate_c(parsed)
    assert "ORIG_1" in source  # one table set per depth, each tree's place in the model
    _assert_like_xgboost(compile_validated(_native(booster), tmp_path), booster)


@needs_cc
def test_many_trees_are_padded_to_the_deepest_and_summed_as_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codegen, "MAX_GROUPED_TREES", 4)
    for booster in (_train("binary:logistic", rounds=40, depth=7), _train("multi:softprob", 3)):
        source, _ = compiled.generate_c(compiled.parse(_native(booster)))
        assert "ORIG_" not in source
        _assert_like_xgboost(compile_validated(_native(booster), tmp_path), booster)


@needs_cc
@pytest.mark.parametrize(("classes", "objective"), [(5, "multi:softprob"), (3, "multi:softmax")])
def test_public_load_serves_multiclass_with_the_compiled_trees(
    classes: int, objective: str, tmp_path: Path
) -> None:
    booster = _train(objective, classes=classes)
    booster.save_model(str(tmp_path / "m.ubj"))
    model = fleetshift_runtime.load(str(tmp_path / "m.ubj"), cache_dir=str(tmp_path / "c"))
    assert model.compiled_error is None
    assert model.predictor_name == "compiled trees (built for this model)"
    assert model.output_shape == ((classes,) if objective == "multi:softprob" else ())
    rows = _rows(100, seed=31)
    for count in ROW_COUNTS:
        got = model.predict(rows[:count])
        want = booster.inplace_predict(rows[:count])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


class _Dump:
    """A booster that only has a JSON dump (what :func:`compiled.parse` reads)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def save_json(self) -> bytes:
        return json.dumps(self.document).encode()


def _dump(booster: xgboost.Booster) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(bytes(booster.save_raw("json")))
    return document


def test_multiclass_shapes_it_does_not_cover_are_refused(softprob: xgboost.Booster) -> None:
    model = _dump(softprob)["learner"]["gradient_booster"]["model"]
    wrong_class = _dump(softprob)
    wrong_class["learner"]["gradient_booster"]["model"]["tree_info"] = [99] * len(model["trees"])
    short_info = _dump(softprob)
    short_info["learner"]["gradient_booster"]["model"]["tree_info"] = [0]
    targets = _dump(softprob)
    targets["learner"]["learner_model_param"]["num_target"] = "2"
    base = _dump(softprob)
    base["learner"]["learner_model_param"]["base_score"] = "[0.1,0.2]"
    for document, reason in (
        (wrong_class, "tree_info"),
        (short_info, "tree_info"),
        (targets, "several targets"),
        (base, "base scores"),
    ):
        with pytest.raises(UnsupportedModelError, match=reason):
            compiled.parse(_Dump(document))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def forest_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prebuilt tree walker, built by the command the image's build stage runs."""
    if compiled.compiler() is None:
        pytest.skip("no C compiler on PATH")
    output = tmp_path_factory.mktemp("forest") / "lib" / "libfleetshift_forest.so"
    subprocess.run(
        [sys.executable, "-m", "fleetshift_runtime.models.compiled", str(output)], check=True
    )
    output.parent.chmod(0o755)
    return output


@pytest.mark.parametrize(("classes", "objective"), [(3, "multi:softprob"), (5, "multi:softmax")])
def test_prebuilt_forest_library_serves_multiclass_like_xgboost(
    classes: int, objective: str, forest_library: Path, tmp_path: Path
) -> None:
    booster = _train(objective, classes=classes)
    tables = compiled.forest_tables(compiled.parse(_native(booster)))
    assert (tables.classes, tables.outputs) == (classes, 3 if objective == "multi:softprob" else 1)
    predictor = compile_validated(_native(booster), tmp_path, forest_library=forest_library)
    assert predictor.kind == "prebuilt forest library"
    _assert_like_xgboost(predictor, booster)
    booster.save_model(str(tmp_path / "m.ubj"))
    model = fleetshift_runtime.load(
        str(tmp_path / "m.ubj"), cache_dir=str(tmp_path / "c"), trees_library=str(forest_library)
    )
    assert model.predictor_name == "compiled trees (prebuilt forest library)"
    rows = _rows(20, seed=41)
    np.testing.assert_allclose(
        model.predict(rows), booster.inplace_predict(rows), rtol=0, atol=1e-6
    )
