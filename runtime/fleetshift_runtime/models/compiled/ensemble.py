"""The booster's JSON dump read into an :class:`Ensemble`: trees, width, margin and output
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


def f32(value: float) -> float:
    """``value`` rounded to float32; a non-finite number makes the model unsupported."""
    as_f32 = float(np.float32(value))
    if math.isnan(as_f32) or math.isinf(as_f32):
        raise UnsupportedModelError(f"non-finite number {value!r} in the trees")
    return as_f32


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
