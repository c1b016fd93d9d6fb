"""The booster's JSON dump read into an :class:`Ensemble`: trees, width, margins and output
transform, after every check that the generators cover it (:func:`parse`)."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..booster import Booster

MAX_NODES = 300_000
"""Larger ensembles are not compiled: the build time grows faster than the gain."""
MAX_TABLE_DEPTH = 12
MAX_TABLE_LEAVES = 1 << 19
"""Padded complete trees above this size use nested ``if``s instead of tables."""
_LOGISTIC = ("binary:logistic", "reg:logistic")
_IDENTITY = (
    "reg:squarederror",
    "reg:absoluteerror",
    "reg:pseudohubererror",
    "reg:quantileerror",
    "binary:logitraw",
)
_EXP = ("count:poisson", "reg:gamma", "reg:tweedie")
_MULTI = ("multi:softprob", "multi:softmax")
MAX_CLASSES = 256
"""More classes are not compiled (the per-row sums live on the stack)."""


class Transform(enum.IntEnum):
    """What turns the summed leaves into the prediction; the values are ``forest.c``'s.

    ``SOFTMAX`` (``multi:softprob``) turns one sum per class into one probability per
    class; ``ARGMAX`` (``multi:softmax``) into the index of the largest sum, as a float.

    >>> Transform.LOGISTIC.c("s")
    '1.0f / (1.0f + expf(-s))'
    >>> Transform.SOFTMAX.outputs(3), Transform.ARGMAX.outputs(3), Transform.EXP.outputs(1)
    (3, 1, 1)
    """

    IDENTITY = 0
    LOGISTIC = 1
    EXP = 2
    SOFTMAX = 3
    ARGMAX = 4

    def outputs(self, classes: int) -> int:
        """Predictions per row, given the number of sums per row."""
        return classes if self is Transform.SOFTMAX else 1

    def c(self, total: str) -> str:
        """The C expression of one-sum transforms' prediction, given the sum's name."""
        if self is Transform.LOGISTIC:
            return f"1.0f / (1.0f + expf(-{total}))"
        if self is Transform.EXP:
            return f"expf({total})"
        return total


class UnsupportedModelError(Exception):
    """The booster has a shape the generator does not cover; XGBoost keeps serving it."""


def f32(value: float) -> float:
    """``value`` rounded to float32; a non-finite number makes the model unsupported."""
    as_f32 = float(np.float32(value))
    if math.isnan(as_f32) or math.isinf(as_f32):
        raise UnsupportedModelError(f"non-finite number {value!r} in the trees")
    return as_f32


def _base_margins(learner: dict[str, Any], objective: str, classes: int) -> list[float]:
    """The sum every row starts from, one per class. XGBoost >= 3.1 writes a vector of
    margins for multi-class models (one per class); older ones a single number used as
    every class's margin."""
    raw = str(learner["learner_model_param"]["base_score"]).strip("[]")
    if "," in raw:
        if objective not in _MULTI:
            raise UnsupportedModelError("vector base_score")
        margins = [float(part) for part in raw.split(",")]
        if len(margins) != classes:
            raise UnsupportedModelError(f"{len(margins)} base scores for {classes} classes")
        return margins
    return [_base_margin(float(raw), objective)] * classes


def _base_margin(base: float, objective: str) -> float:
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


def padded(
    tree: dict[str, Any], depth: int
) -> tuple[list[int], list[float], list[int], list[float]]:
    """A tree as complete-tree tables: features, thresholds, default-left flags (inner
    nodes) and leaf values.

    >>> stump = {"left_children": [1, -1, -1], "right_children": [2, -1, -1],
    ...          "split_indices": [3, 0, 0], "split_conditions": [0.5, -1.0, 2.0],
    ...          "default_left": [0, 0, 0]}
    >>> padded(stump, 2)
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
            leaf[first : first + span] = [f32(tree["split_conditions"][node])] * span
            continue
        feat[pos] = int(tree["split_indices"][node])
        thr[pos] = f32(tree["split_conditions"][node])
        dflt[pos] = 1 if tree["default_left"][node] else 0
        stack.append((int(left[node]), 2 * pos + 1, level + 1))
        stack.append((int(right[node]), 2 * pos + 2, level + 1))
    return feat, thr, dflt, leaf


@dataclass(frozen=True)
class Ensemble:
    """What the generators need from a booster, after every check passed (:func:`parse`).

    ``margins`` holds one starting sum per class (one for single-output models), and
    ``tree_class`` the class each tree's leaf adds to (XGBoost's ``tree_info``)."""

    trees: list[dict[str, Any]]
    width: int
    margins: list[float]
    transform: Transform
    depth: int
    tree_class: list[int]
    depths: list[int]
    """Each tree's deepest leaf (at least 1: a lone leaf is padded to one level);
    ``depth`` is the largest."""

    @property
    def classes(self) -> int:
        """Sums per row: the number of classes, or 1."""
        return len(self.margins)

    @property
    def outputs(self) -> int:
        """Predictions per row: one probability per class for ``multi:softprob``, else 1."""
        return self.transform.outputs(self.classes)

    @property
    def fits_tables(self) -> bool:
        """Small enough to pad every tree to a complete tree of ``depth`` levels."""
        return self.depth <= MAX_TABLE_DEPTH and len(self.trees) << self.depth <= MAX_TABLE_LEAVES


def parse(booster: Booster) -> Ensemble:
    """The booster's trees and output transform; raises for what is not covered."""
    document = json.loads(booster.save_json())
    learner = document["learner"]
    objective = learner["objective"]["name"]
    if objective not in (*_LOGISTIC, *_IDENTITY, *_EXP, *_MULTI):
        raise UnsupportedModelError(f"objective {objective}")
    params = learner["learner_model_param"]
    if int(params.get("num_target", "1") or 1) > 1:
        raise UnsupportedModelError("several targets")
    classes = max(1, int(params.get("num_class", "0") or 0))
    if (classes > 1) != (objective in _MULTI):
        raise UnsupportedModelError(f"{classes} classes for objective {objective}")
    if classes > MAX_CLASSES:
        raise UnsupportedModelError(f"more than {MAX_CLASSES} classes")
    booster_json = learner["gradient_booster"]
    if booster_json.get("name") != "gbtree":
        raise UnsupportedModelError(f"booster {booster_json.get('name')}")
    model = booster_json["model"]
    trees = model["trees"]
    tree_class = [int(group) for group in model.get("tree_info", [0] * len(trees))]
    if len(tree_class) != len(trees) or any(not 0 <= c < classes for c in tree_class):
        raise UnsupportedModelError("tree_info does not give each tree a class")
    if not trees:
        raise UnsupportedModelError("no trees")
    if sum(len(tree["left_children"]) for tree in trees) > MAX_NODES:
        raise UnsupportedModelError(f"more than {MAX_NODES} nodes")
    width = int(params["num_feature"])
    if width <= 0 or any(int(f) >= width for tree in trees for f in tree["split_indices"]):
        raise UnsupportedModelError("split on a feature outside the model's width")
    margins = _base_margins(learner, objective, classes)
    if objective == "multi:softprob":
        transform = Transform.SOFTMAX
    elif objective == "multi:softmax":
        transform = Transform.ARGMAX
    elif objective in _LOGISTIC:
        transform = Transform.LOGISTIC
    elif objective in _EXP:
        transform = Transform.EXP
    else:
        transform = Transform.IDENTITY
    for tree in trees:
        _check_tree(tree)
    depths = [max(1, _depth(tree)) for tree in trees]
    return Ensemble(
        trees, width, [f32(m) for m in margins], transform, max(depths), tree_class, depths
    )
