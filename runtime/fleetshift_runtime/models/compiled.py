"""A compiled tree predictor: the booster's trees as C, built with the system compiler.

XGBoost's CPU predictor costs ~10 µs per row for the benchmark model (200 trees, depth
6), plus a ~50 µs fixed cost per call even through the direct C entry point. Here the
trees become static C tables of complete trees, walked without branches eight rows at
a time (~2.5 µs per row, ~10 µs for a one-row call). Trees too deep for tables become
nested ``if``s instead.

- The C source is generated here from the booster's own JSON dump: numbers and feature
  indexes only, formatted by this module, so no text from the artifact reaches the
  compiler. It needs a C compiler (``cc``) at run time; without one, or for a model
  shape it does not cover (categorical splits, DART, multi-output, an objective it does
  not know), XGBoost keeps serving.
- The build (~0.5 s, at low priority) runs in a background thread after the model
  already serves with XGBoost. The shared library is cached under the model cache dir,
  keyed by the hash of its source, so a restart or a second worker reuses it.
- It is switched on only after it matched XGBoost's own prediction within 1e-6 on a
  validation set that includes missing values and values exactly on split thresholds.
- Where there is no compiler at run time (the slim image), a *prebuilt forest library*
  does the same walk with the tables passed in at run time (``forest.c``, built once by
  ``python -m fleetshift_runtime.models.compiled OUTPUT.so`` where a compiler exists,
  and named by ``FLEETSHIFT_TREES_LIBRARY``). It is validated the same way.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import importlib.resources
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .base import Predictions, Rows

if TYPE_CHECKING:
    from .booster import Booster

log = logging.getLogger(__name__)

TOLERANCE = 1e-6
MAX_NODES = 300_000
"""Larger ensembles are not compiled: the build time grows faster than the gain."""
MAX_TABLE_DEPTH = 12
MAX_TABLE_LEAVES = 1 << 19
"""Padded complete trees above this size use nested ``if``s instead of tables."""
COMPILE_TIMEOUT_SECONDS = 180.0
CFLAGS = ("-O3", "-shared", "-fPIC", "-fno-fast-math")
_LOGISTIC = ("binary:logistic", "reg:logistic")
_IDENTITY = (
    "reg:squarederror",
    "reg:absoluteerror",
    "reg:pseudohubererror",
    "reg:quantileerror",
    "binary:logitraw",
)
_EXP = ("count:poisson", "reg:gamma", "reg:tweedie")
FOREST_ABI = 1
"""The ``fs_forest`` layout this module passes to a prebuilt library (``forest.c``)."""
_compile_lock = threading.Lock()
"""One build at a time per process (a multi-model cache may load many models)."""


class Transform(enum.IntEnum):
    """What turns the summed leaves into the prediction; the values are ``forest.c``'s.

    >>> Transform.LOGISTIC.c("s")
    '1.0f / (1.0f + expf(-s))'
    """

    IDENTITY = 0
    LOGISTIC = 1
    EXP = 2

    def c(self, total: str) -> str:
        """The C expression of the prediction, given the sum's variable name."""
        if self is Transform.LOGISTIC:
            return f"1.0f / (1.0f + expf(-{total}))"
        if self is Transform.EXP:
            return f"expf({total})"
        return total


class UnsupportedModelError(Exception):
    """The booster has a shape the generator does not cover; XGBoost keeps serving it."""


def _f32(value: float) -> float:
    """``value`` rounded to float32; a non-finite number makes the model unsupported."""
    as_f32 = float(np.float32(value))
    if math.isnan(as_f32) or math.isinf(as_f32):
        raise UnsupportedModelError(f"non-finite number {value!r} in the trees")
    return as_f32


def _float(value: float) -> str:
    """A C float literal that parses back to exactly the same float32."""
    return f"{_f32(value):.9e}f"


def _base_margin(learner: dict[str, Any], objective: str) -> float:
    raw = str(learner["learner_model_param"]["base_score"]).strip("[]")
    if "," in raw:
        raise UnsupportedModelError("vector base_score")
    base = float(raw)
    if objective in _LOGISTIC:
        if not 0 < base < 1:
            raise UnsupportedModelError(f"base_score {base} outside (0, 1)")
        return math.log(base / (1 - base))
    if objective in _EXP:
        if base <= 0:
            raise UnsupportedModelError(f"base_score {base} not positive")
        return math.log(base)
    return base


def _check_tree(tree: dict[str, Any]) -> None:
    if int(tree["tree_param"].get("size_leaf_vector", "1") or 1) > 1:
        raise UnsupportedModelError("vector leaves")
    if any(int(kind) != 0 for kind in tree.get("split_type", [])):
        raise UnsupportedModelError("categorical splits")


def _depth(tree: dict[str, Any]) -> int:
    left, right = tree["left_children"], tree["right_children"]
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, depth = stack.pop()
        if left[node] == -1:
            deepest = max(deepest, depth)
        else:
            stack += [(int(left[node]), depth + 1), (int(right[node]), depth + 1)]
    return deepest


def _padded(
    tree: dict[str, Any], depth: int
) -> tuple[list[int], list[float], list[int], list[float]]:
    """A tree as complete-tree tables: features, thresholds, default-left flags (inner
    nodes) and leaf values.

    >>> stump = {"left_children": [1, -1, -1], "right_children": [2, -1, -1],
    ...          "split_indices": [3, 0, 0], "split_conditions": [0.5, -1.0, 2.0],
    ...          "default_left": [0, 0, 0]}
    >>> _padded(stump, 2)
    ([3, 0, 0], [0.5, 0.0, 0.0], [0, 1, 1], [-1.0, -1.0, 2.0, 2.0])
    """
    inner = (1 << depth) - 1
    left, right = tree["left_children"], tree["right_children"]
    feat, thr, dflt = [0] * inner, [0.0] * inner, [1] * inner
    leaf = [0.0] * (inner + 1)
    stack = [(0, 0, 0)]  # (node, position in the complete tree, level)
    while stack:
        node, pos, level = stack.pop()
        if left[node] == -1:
            span = 1 << (depth - level)
            first = (pos + 1) * span - 1 - inner  # the leftmost leaf under pos
            leaf[first : first + span] = [_f32(tree["split_conditions"][node])] * span
            continue
        feat[pos] = int(tree["split_indices"][node])
        thr[pos] = _f32(tree["split_conditions"][node])
        dflt[pos] = 1 if tree["default_left"][node] else 0
        stack.append((int(left[node]), 2 * pos + 1, level + 1))
        stack.append((int(right[node]), 2 * pos + 2, level + 1))
    return feat, thr, dflt, leaf


def _table_kernel(
    trees: list[dict[str, Any]], width: int, margin: float, transform: Transform, depth: int
) -> str:
    """Every tree padded to a complete tree of ``depth`` levels, walked without branches.

    Node ``i``'s children are ``2i+1`` and ``2i+2``; a leaf above the last level is
    padded with a subtree whose leaves all repeat its value, so either way is right.
    Eight rows are walked together: their independent chains of loads overlap, where
    nested ``if``s stall on every mispredicted branch. ``x >= t`` is false for NaN, so
    a missing value goes right only when the node's default is right, as in XGBoost.
    """
    inner = (1 << depth) - 1
    features: list[str] = []
    thresholds: list[str] = []
    defaults: list[str] = []
    leaves: list[str] = []
    for tree in trees:
        feat, thr, dflt, leaf = _padded(tree, depth)
        features += map(str, feat)
        thresholds += map(_float, thr)
        defaults += map(str, dflt)
        leaves += map(_float, leaf)

    def table(kind: str, name: str, values: list[str]) -> str:
        return f"static const {kind} {name}[{len(values)}] = {{{','.join(values)}}};"

    block = """
static void block_{B}(const float* rows, float* out, int64_t m) {{
  float sum[{B}];
  uint32_t idx[{B}];
  for (int r = 0; r < {B}; ++r) sum[r] = MARGIN;
  for (int t = 0; t < TREES; ++t) {{
    const int32_t* f = FEAT + t * INNER;
    const float* th = THR + t * INNER;
    const uint8_t* dl = DLEFT + t * INNER;
    for (int r = 0; r < {B}; ++r) idx[r] = 0;
    for (int d = 0; d < DEPTH; ++d) {{
      for (int r = 0; r < {B}; ++r) {{
        uint32_t i = idx[r];
        float x = rows[r * WIDTH + f[i]];
        uint32_t right = (uint32_t)(x >= th[i]) | ((uint32_t)(x != x) & (uint32_t)(dl[i] ^ 1));
        idx[r] = 2 * i + 1 + right;
      }}
    }}
    for (int r = 0; r < {B}; ++r) sum[r] += LEAF[t * (INNER + 1) + idx[r] - INNER];
  }}
  for (int64_t r = 0; r < m; ++r) {{ float s = sum[r]; out[r] = {transform}; }}
}}
"""
    return "\n".join(
        [
            "#include <math.h>",
            "#include <stdint.h>",
            "#include <string.h>",
            f"#define TREES {len(trees)}",
            f"#define DEPTH {depth}",
            f"#define INNER {inner}",
            f"#define WIDTH {width}",
            f"#define MARGIN {_float(margin)}",
            table("int32_t", "FEAT", features),
            table("float", "THR", thresholds),
            table("uint8_t", "DLEFT", defaults),
            table("float", "LEAF", leaves),
            block.format(B=1, transform=transform.c("s")),
            block.format(B=8, transform=transform.c("s")),
            f"""
int32_t fs_num_features(void) {{ return {width}; }}

void fs_predict(const float* rows, int64_t n, float* out) {{
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) block_8(rows + i * WIDTH, out + i, 8);
  for (; i < n; ++i) block_1(rows + i * WIDTH, out + i, 1);
}}
""",
        ]
    )


def _tree_function(index: int, tree: dict[str, Any]) -> str:
    left, right = tree["left_children"], tree["right_children"]
    features, conditions = tree["split_indices"], tree["split_conditions"]
    default_left = tree["default_left"]
    lines = [f"static inline float tree_{index}(const float* x) {{"]

    def emit(node: int, depth: int) -> None:
        pad = "  " * depth
        if left[node] == -1:
            lines.append(f"{pad}return {_float(conditions[node])};")
            return
        feature = int(features[node])
        test = f"x[{feature}] < {_float(conditions[node])}"
        if default_left[node]:  # a NaN compares false: send it left explicitly
            test = f"{test} || isnan(x[{feature}])"
        lines.append(f"{pad}if ({test}) {{")
        emit(int(left[node]), depth + 1)
        lines.append(f"{pad}}} else {{")
        emit(int(right[node]), depth + 1)
        lines.append(f"{pad}}}")

    emit(0, 1)
    lines.append("}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Ensemble:
    """What the generators need from a booster, after every check passed (:func:`parse`)."""

    trees: list[dict[str, Any]]
    width: int
    margin: float
    transform: Transform
    depth: int

    @property
    def fits_tables(self) -> bool:
        """Small enough to pad every tree to a complete tree of ``depth`` levels."""
        return self.depth <= MAX_TABLE_DEPTH and len(self.trees) << self.depth <= MAX_TABLE_LEAVES


def parse(booster: Booster) -> Ensemble:
    """The booster's trees and output transform; raises for what is not covered."""
    document = json.loads(booster.save_json())
    learner = document["learner"]
    objective = learner["objective"]["name"]
    if objective not in (*_LOGISTIC, *_IDENTITY, *_EXP):
        raise UnsupportedModelError(f"objective {objective}")
    params = learner["learner_model_param"]
    if int(params.get("num_class", "0") or 0) > 1 or int(params.get("num_target", "1") or 1) > 1:
        raise UnsupportedModelError("several outputs")
    booster_json = learner["gradient_booster"]
    if booster_json.get("name") != "gbtree":
        raise UnsupportedModelError(f"booster {booster_json.get('name')}")
    model = booster_json["model"]
    trees = model["trees"]
    if any(int(group) != 0 for group in model.get("tree_info", [])):
        raise UnsupportedModelError("several tree groups")
    if not trees:
        raise UnsupportedModelError("no trees")
    if sum(len(tree["left_children"]) for tree in trees) > MAX_NODES:
        raise UnsupportedModelError(f"more than {MAX_NODES} nodes")
    width = int(params["num_feature"])
    if width <= 0 or any(int(f) >= width for tree in trees for f in tree["split_indices"]):
        raise UnsupportedModelError("split on a feature outside the model's width")
    margin = _base_margin(learner, objective)
    if objective in _LOGISTIC:
        transform = Transform.LOGISTIC
    elif objective in _EXP:
        transform = Transform.EXP
    else:
        transform = Transform.IDENTITY
    for tree in trees:
        _check_tree(tree)
    depth = max(1, *(_depth(tree) for tree in trees))
    return Ensemble(trees, width, margin, transform, depth)


def generate_c(ensemble: Ensemble) -> tuple[str, int]:
    """The C source of ``fs_predict(rows, n, out)`` and the model's feature count."""
    trees, width, margin, transform = (
        ensemble.trees,
        ensemble.width,
        ensemble.margin,
        ensemble.transform,
    )
    if ensemble.fits_tables:
        return _table_kernel(trees, width, margin, transform, ensemble.depth), width
    parts = ["#include <math.h>", "#include <stdint.h>", ""]
    parts.extend(_tree_function(i, tree) for i, tree in enumerate(trees))
    total = " ".join(f"sum += tree_{i}(x);" for i in range(len(trees)))
    parts.append(
        f"""
int32_t fs_num_features(void) {{ return {width}; }}

void fs_predict(const float* rows, int64_t n, float* out) {{
  for (int64_t i = 0; i < n; ++i) {{
    const float* x = rows + i * {width};
    float sum = {_float(margin)};
    {total}
    out[i] = {transform.c("sum")};
  }}
}}
"""
    )
    return "\n".join(parts), width


class _ForestStruct(ctypes.Structure):
    """``fs_forest`` in ``forest.c``."""

    _fields_ = [
        ("trees", ctypes.c_int32),
        ("depth", ctypes.c_int32),
        ("width", ctypes.c_int32),
        ("transform", ctypes.c_int32),
        ("margin", ctypes.c_float),
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
    margin: float
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
    padded = [_padded(tree, ensemble.depth) for tree in ensemble.trees]
    return ForestTables(
        trees=len(ensemble.trees),
        depth=ensemble.depth,
        width=ensemble.width,
        transform=int(ensemble.transform),
        margin=_f32(ensemble.margin),
        feat=np.array([f for p in padded for f in p[0]], dtype=np.int32),
        thr=np.array([t for p in padded for t in p[1]], dtype=np.float32),
        dleft=np.array([d for p in padded for d in p[2]], dtype=np.uint8),
        leaf=np.array([v for p in padded for v in p[3]], dtype=np.float32),
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


class ModelLibrary:
    """A library built for one model: ``fs_predict(rows, n, out)``."""

    kind = "built for this model"

    def __init__(self, library: Path, width: int) -> None:
        self._library = ctypes.CDLL(str(library))
        self.width = width
        self._predict = self._library.fs_predict
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        self._predict.restype = None
        if int(self._library.fs_num_features()) != width:
            raise UnsupportedModelError("library built for another width")

    def __call__(self, rows: Rows) -> Predictions:
        rows = _float32_rows(rows)
        out = np.empty(rows.shape[0], dtype=np.float32)
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
                forest.margin,
                forest.feat.ctypes.data,
                forest.thr.ctypes.data,
                forest.dleft.ctypes.data,
                forest.leaf.ctypes.data,
            )
        )

    def __call__(self, rows: Rows) -> Predictions:
        rows = _float32_rows(rows)
        out = np.empty(rows.shape[0], dtype=np.float32)
        self._predict(self._struct, rows.ctypes.data, rows.shape[0], out.ctypes.data)
        return out


def compiler() -> str | None:
    """The C compiler on PATH (``FLEETSHIFT_CC`` may name another one)."""
    named = os.environ.get("FLEETSHIFT_CC") or "cc"
    return shutil.which(named) or shutil.which("gcc")


def _check_trusted(path: Path) -> None:
    """A prebuilt library (and its folder) must belong to root or this user, and no one
    else may write to it: the server loads code from it."""
    for item in (path, path.parent):
        info = item.stat()
        if info.st_uid not in (0, os.getuid()) or info.st_mode & 0o022:
            raise UnsupportedModelError(f"{item} may be written by another user; not loading code")


def _check_private(path: Path) -> None:
    """Refuse to load code from a place another user could have written to (the name
    of a cached library is predictable from the model)."""
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise UnsupportedModelError(f"{path} is not private to this user; not loading code")


def _compile(source: str, output: Path, *, nice: bool) -> Path:
    """Compile C ``source`` into the shared library ``output``, atomically (a concurrent
    reader sees all or nothing); ``nice`` builds at low priority."""
    cc = compiler()
    if cc is None:
        raise UnsupportedModelError("no C compiler on PATH (set FLEETSHIFT_CC)")
    with tempfile.TemporaryDirectory(prefix="fleetshift-cc-", dir=output.parent) as work:
        c_file = Path(work) / "source.c"
        c_file.write_text(source)
        built = Path(work) / output.name
        command = [cc, *CFLAGS, "-o", str(built), str(c_file), "-lm"]
        low = shutil.which("nice") if nice else None
        result = subprocess.run(
            [low, "-n", "10", *command] if low else command,
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            raise UnsupportedModelError(f"compiler failed: {result.stderr.strip()[:300]}")
        os.replace(built, output)
    return output


def build(source: str, cache_dir: Path) -> Path:
    """Compile ``source`` into a cached shared library; reuse it if already built."""
    if compiler() is None:
        raise UnsupportedModelError("no C compiler on PATH")
    key = hashlib.sha256(("\0".join(CFLAGS) + "\0" + source).encode()).hexdigest()[:32]
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(cache_dir)
    library = cache_dir / f"trees-{key}.so"
    if library.exists():
        _check_private(library)
        return library
    # Low priority: the build must not slow the requests being served meanwhile.
    return _compile(source, library, nice=True)


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
        _check_trusted(forest_library)
        predictor: CompiledPredictor = ForestLibrary(forest_library, forest_tables(ensemble))
    else:
        source, width = generate_c(ensemble)
        with _compile_lock:
            library = build(source, cache_dir)
        predictor = ModelLibrary(library, width)
    rows = validation_rows(ensemble)
    expected = booster.predict(rows).reshape(-1)
    for batch, want in ((rows[:1], expected[:1]), (rows, expected)):
        got = predictor(batch)
        if got.shape != want.shape:
            raise UnsupportedModelError(f"shape {got.shape} instead of {want.shape}")
        worst = float(np.max(np.abs(got.astype(np.float64) - want)))
        if not worst <= TOLERANCE:
            raise UnsupportedModelError(f"differs from XGBoost by {worst:.3g}")
    return predictor


def build_forest_library(output: Path) -> Path:
    """Compile ``forest.c`` into ``output`` (atomically, mode 0755) with the C compiler."""
    source = importlib.resources.files(__package__).joinpath("forest.c").read_text()
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    library = _compile(source, output, nice=False)
    library.chmod(0o755)
    return library


def main(argv: list[str]) -> int:
    """``python -m fleetshift_runtime.models.compiled OUTPUT.so``: build the prebuilt
    forest library (the image's build stage runs this)."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print(
            "usage: python -m fleetshift_runtime.models.compiled OUTPUT.so\n"
            "Builds the prebuilt tree walker; point FLEETSHIFT_TREES_LIBRARY at it.",
            file=sys.stderr,
        )
        return 2
    try:
        library = build_forest_library(Path(argv[0]))
    except (UnsupportedModelError, OSError, subprocess.TimeoutExpired) as error:
        print(f"could not build the forest library: {error}", file=sys.stderr)
        return 1
    print(f"built {library} (forest ABI {FOREST_ABI})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
