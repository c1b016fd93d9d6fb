"""Model loaders by file format: the one place that says which implementation loads what.

A loader takes the local model file and the model's own options (:class:`ModelOptions`,
apart from the server's settings, as MLServer keeps ``ModelSettings`` apart from
``Settings``) and returns a warmed-up :class:`~.base.Model`. The format is detected from
the file's first bytes (:func:`~.formats.detect_format`). Every format the runtime
detects today is XGBoost's; another library plugs in by adding its formats here.

>>> sorted(LOADERS)
['binary', 'joblib', 'json', 'pickle', 'ubj']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from ..errors import NotAModelError
from .base import Model
from .formats import ModelFormat, detect_format


@dataclass(frozen=True)
class ModelOptions:
    """What loading one model needs, apart from the server's settings."""

    name: str
    allow_pickle: bool
    threads: int
    fast_predict: bool
    compiled_predict: bool
    compiled_cache: Path
    trees_library: Path | None


Loader = Callable[[Path, ModelFormat, ModelOptions], Model]


def _xgboost(path: Path, fmt: ModelFormat, options: ModelOptions) -> Model:
    from .xgboost_model import load_xgboost_model  # noqa: PLC0415 - loaded on first use

    return load_xgboost_model(path, fmt, options)


LOADERS: dict[ModelFormat, Loader] = dict.fromkeys(get_args(ModelFormat), _xgboost)
"""Format -> loader."""


def load_file(path: Path, options: ModelOptions) -> Model:
    """Load a local model file with the loader of its format."""
    with path.open("rb") as handle:
        fmt = detect_format(handle.read(16))
    loader = LOADERS.get(fmt)
    if loader is None:  # pragma: no cover - every detected format has a loader
        raise NotAModelError(f"{path}: no loader for {fmt}", public=f"{fmt} models are not served")
    return loader(path, fmt, options)
