"""The one plug point for model implementations."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.float32]
"""A 2-D float32 matrix, one request row per line."""

Predictions = npt.NDArray[np.float32]
"""Model output: shape ``(rows,)`` or ``(rows, outputs)``."""


class BoosterError(Exception):
    """XGBoost refused a model or an input; the message is XGBoost's own."""


class Model(Protocol):
    """A loaded model: what the HTTP layer needs from it."""

    @property
    def name(self) -> str:
        """Name in URLs and metrics."""
        ...

    @property
    def num_features(self) -> int:
        """How many input columns the model itself was trained on."""
        ...

    @property
    def platform(self) -> str:
        """Open Inference Protocol ``platform`` string, e.g. ``xgboost``."""
        ...

    @property
    def predictor_name(self) -> str:
        """Which implementation answers now, e.g. ``inplace_predict`` (model metadata)."""
        ...

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of one row's prediction: ``()`` for one score, ``(3,)`` for three
        class probabilities (model metadata)."""
        ...

    @property
    def size_bytes(self) -> int:
        """Estimated memory footprint (used by the multi-model LRU budget)."""
        ...

    def predict(self, rows: Rows) -> Predictions:
        """Predict every row. Raises :class:`~fleetshift_runtime.errors.ModelFaultError`."""
        ...
