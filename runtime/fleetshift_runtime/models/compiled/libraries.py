"""The compiled trees behind one ctypes call: a library built for one model, or the
prebuilt forest library walking a model's tables (``forest.c``)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..base import Predictions, Rows
from .ensemble import Ensemble, UnsupportedModelError, f32, padded

FOREST_ABI = 2
"""The ``fs_forest`` layout passed to a prebuilt library (``forest.c``)."""


class _ForestStruct(ctypes.Structure):
    """``fs_forest`` in ``forest.c``."""

    _fields_ = [
        ("trees", ctypes.c_int32),
        ("depth", ctypes.c_int32),
        ("width", ctypes.c_int32),
        ("transform", ctypes.c_int32),
        ("classes", ctypes.c_int32),
        ("outputs", ctypes.c_int32),
        ("margins", ctypes.c_void_p),
        ("tree_class", ctypes.c_void_p),
        ("feat", ctypes.c_void_p),
        ("thr", ctypes.c_void_p),
        ("dleft", ctypes.c_void_p),
        ("leaf", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class ForestTables:
    """A booster as the complete-tree tables a prebuilt forest library walks."""

    trees: int
    depth: int
    width: int
    transform: int
    classes: int
    outputs: int
    margins: np.ndarray
    tree_class: np.ndarray
    feat: np.ndarray
    thr: np.ndarray
    dleft: np.ndarray
    leaf: np.ndarray


def forest_tables(ensemble: Ensemble) -> ForestTables:
    """The tables of ``ensemble``; raises :class:`UnsupportedModelError` when it is too
    deep for tables (only the per-model build has nested ``if``s)."""
    if not ensemble.fits_tables:
        raise UnsupportedModelError(
            f"trees of depth {ensemble.depth} are too deep for the prebuilt forest library"
        )
    tables = [padded(tree, ensemble.depth) for tree in ensemble.trees]
    return ForestTables(
        trees=len(ensemble.trees),
        depth=ensemble.depth,
        width=ensemble.width,
        transform=int(ensemble.transform),
        classes=ensemble.classes,
        outputs=ensemble.outputs,
        margins=np.array([f32(m) for m in ensemble.margins], dtype=np.float32),
        tree_class=np.array(ensemble.tree_class, dtype=np.int32),
        feat=np.array([f for p in tables for f in p[0]], dtype=np.int32),
        thr=np.array([t for p in tables for t in p[1]], dtype=np.float32),
        dleft=np.array([d for p in tables for d in p[2]], dtype=np.uint8),
        leaf=np.array([v for p in tables for v in p[3]], dtype=np.float32),
    )


class CompiledPredictor(Protocol):
    """Compiled trees behind one call (ctypes releases the GIL while they run)."""

    @property
    def width(self) -> int:
        """The number of columns every matrix passed in must have."""
        ...

    @property
    def kind(self) -> str:
        """Which library answers (for logs and model metadata)."""
        ...

    def __call__(self, rows: Rows) -> Predictions:
        """Predict a matrix of exactly ``width`` columns."""
        ...


def _float32_rows(rows: Rows) -> Rows:
    if rows.dtype != np.float32 or not rows.flags.c_contiguous:
        return np.ascontiguousarray(rows, dtype=np.float32)
    return rows


def _output(rows: Rows, outputs: int) -> Predictions:
    """The array the library writes into: ``(rows,)``, or ``(rows, outputs)``."""
    shape = (rows.shape[0],) if outputs == 1 else (rows.shape[0], outputs)
    return np.empty(shape, dtype=np.float32)


class ModelLibrary:
    """A library built for one model: ``fs_predict(rows, n, out)``, writing
    ``fs_num_outputs()`` predictions per row (one per class for ``multi:softprob``)."""

    kind = "built for this model"

    def __init__(self, library: Path, width: int, outputs: int = 1) -> None:
        self._library = ctypes.CDLL(str(library))
        self.width = width
        self.outputs = outputs
        self._predict = self._library.fs_predict
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        self._predict.restype = None
        if int(self._library.fs_num_features()) != width:
            raise UnsupportedModelError("library built for another width")
        if int(self._library.fs_num_outputs()) != outputs:
            raise UnsupportedModelError("library built for another number of outputs")

    def __call__(self, rows: Rows) -> Predictions:
        rows = _float32_rows(rows)
        out = _output(rows, self.outputs)
        self._predict(rows.ctypes.data, rows.shape[0], out.ctypes.data)
        return out


class ForestLibrary:
    """The prebuilt forest library walking one model's tables:
    ``fs_forest_predict(forest, rows, n, out)``."""

    kind = "prebuilt forest library"

    def __init__(self, library: Path, forest: ForestTables) -> None:
        self._library = ctypes.CDLL(str(library))
        abi = getattr(self._library, "fs_forest_abi", None)
        if abi is None or int(abi()) != FOREST_ABI:
            raise UnsupportedModelError(f"{library} is not a forest library of ABI {FOREST_ABI}")
        self.width = forest.width
        self.forest = forest
        """The tables the library walks (kept alive here: the struct points into them)."""
        self._predict = self._library.fs_forest_predict
        self._predict.argtypes = [
            ctypes.POINTER(_ForestStruct),
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_void_p,
        ]
        self._predict.restype = None
        self._struct = ctypes.pointer(  # the pointer keeps the struct alive
            _ForestStruct(
                forest.trees,
                forest.depth,
                forest.width,
                forest.transform,
                forest.classes,
                forest.outputs,
                forest.margins.ctypes.data,
                forest.tree_class.ctypes.data,
                forest.feat.ctypes.data,
                forest.thr.ctypes.data,
                forest.dleft.ctypes.data,
                forest.leaf.ctypes.data,
            )
        )

    def __call__(self, rows: Rows) -> Predictions:
        rows = _float32_rows(rows)
        out = _output(rows, self.forest.outputs)
        self._predict(self._struct, rows.ctypes.data, rows.shape[0], out.ctypes.data)
        return out
