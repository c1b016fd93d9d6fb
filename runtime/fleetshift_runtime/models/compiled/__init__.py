"""A compiled tree predictor: the booster's trees as C, built with the system compiler.

XGBoost's CPU predictor costs ~10 µs per row for the benchmark model (200 trees, depth
6), plus a ~50 µs fixed cost per call even through the direct C entry point. Here the
trees become static C tables of complete trees, walked without branches eight rows at
a time, or for a single row eight trees at a time (~2.5 µs per row, ~5 µs for a one-row
call). Each tree is padded only to the depth of its group of trees of equal depth. Trees
too deep for tables become nested ``if``s instead.

- The C source is generated here from the booster's own JSON dump: numbers and feature
  indexes only, formatted by this module, so no text from the artifact reaches the
  compiler. It needs a C compiler (``cc``) at run time; without one, or for a model
  shape it does not cover (categorical splits, DART, vector leaves, several targets, an
  objective it does not know), XGBoost keeps serving. Multi-class models
  (``multi:softprob``, ``multi:softmax``) are summed per class, each tree into the class
  XGBoost's ``tree_info`` gives it, then turned into probabilities (or the class index).
- The build (~0.5 s, at low priority) runs in a background thread after the model
  already serves with XGBoost. The shared library is cached under the model cache dir,
  keyed by the hash of its source, so a restart or a second worker reuses it.
- It is switched on only after it matched XGBoost's own prediction within 1e-6 on a
  validation set that includes missing values and values exactly on split thresholds.
- Where there is no compiler at run time (the slim image), a *prebuilt forest library*
  does the same walk with the tables passed in at run time (``forest.c``, built once by
  ``python -m fleetshift_runtime.models.compiled OUTPUT.so`` where a compiler exists,
  and named by ``FLEETSHIFT_TREES_LIBRARY``). It is validated the same way.

Modules, one concern each: ``ensemble`` (the booster's JSON dump, checked),
``codegen`` (C for one model), ``libraries`` (the ctypes interface), ``build`` (the
compiler and the trust checks), and here the validation against XGBoost;
``__main__`` builds the prebuilt forest library.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..base import Rows
from .build import build, build_forest_library, check_trusted, compiler
from .codegen import generate_c
from .ensemble import Ensemble, Transform, UnsupportedModelError, parse
from .libraries import (
    FOREST_ABI,
    CompiledPredictor,
    ForestLibrary,
    ForestTables,
    ModelLibrary,
    forest_tables,
)

if TYPE_CHECKING:
    from ..booster import Booster

__all__ = [
    "FOREST_ABI",
    "TOLERANCE",
    "CompiledPredictor",
    "Ensemble",
    "ForestLibrary",
    "ForestTables",
    "ModelLibrary",
    "Transform",
    "UnsupportedModelError",
    "build",
    "build_forest_library",
    "compile_validated",
    "compiler",
    "forest_tables",
    "generate_c",
    "parse",
    "validation_rows",
]

log = logging.getLogger(__name__)

TOLERANCE = 1e-6
_compile_lock = threading.Lock()
"""One build at a time per process (a multi-model cache may load many models)."""


def validation_rows(ensemble: Ensemble) -> Rows:
    """Random rows with missing values, plus rows sitting exactly on split thresholds."""
    rng = np.random.default_rng(7)
    rows = rng.normal(scale=3.0, size=(512, ensemble.width)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.1] = np.nan
    trees = ensemble.trees
    on_edge = rows[:256].copy()
    for tree in trees[:64]:
        for node, child in enumerate(tree["left_children"]):
            if child != -1:
                row = rng.integers(0, on_edge.shape[0])
                on_edge[row, int(tree["split_indices"][node])] = tree["split_conditions"][node]
    return np.ascontiguousarray(np.concatenate([rows, on_edge]))


def compile_validated(
    booster: Booster, cache_dir: Path, *, forest_library: Path | None = None
) -> CompiledPredictor:
    """Build (or, with ``forest_library``, load the prebuilt library), then validate;
    raises :class:`UnsupportedModelError` when unusable."""
    ensemble = parse(booster)
    if forest_library is not None:
        if not forest_library.is_file():
            raise UnsupportedModelError(f"forest library {forest_library} does not exist")
        check_trusted(forest_library)
        predictor: CompiledPredictor = ForestLibrary(forest_library, forest_tables(ensemble))
    else:
        source, width = generate_c(ensemble)
        with _compile_lock:
            library = build(source, cache_dir)
        predictor = ModelLibrary(library, width, ensemble.outputs)
    rows = validation_rows(ensemble)
    expected = booster.predict(rows)
    cuts = (1, 7, 8, 9, len(rows))  # one row, the last rows of a batch, full blocks
    for batch, want in ((rows[:cut], expected[:cut]) for cut in cuts):
        got = predictor(batch)
        if got.shape != want.shape:
            raise UnsupportedModelError(f"shape {got.shape} instead of {want.shape}")
        worst = float(np.max(np.abs(got.astype(np.float64) - want)))
        if not worst <= TOLERANCE:
            raise UnsupportedModelError(f"differs from XGBoost by {worst:.3g}")
    return predictor
