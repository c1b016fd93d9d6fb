"""The plug point between the runtime and the library that holds an XGBoost model.

- :class:`~.native.NativeBooster` (the default) talks to ``libxgboost`` through its C
  API and never imports the ``xgboost`` package: a faster start, less memory, and
  ~170 µs less per call (~50 µs instead of ~220 µs for one row).
- :class:`PythonBooster` goes through the ``xgboost`` package's ``Booster`` and
  ``inplace_predict``. It is used with ``FLEETSHIFT_FAST_PREDICT=false``, and when the
  shared library cannot be loaded directly.

:func:`open_booster` picks one. Both raise :class:`~.base.BoosterError` with XGBoost's message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .base import BoosterError, Predictions, Rows
from .native import LibraryUnavailableError, NativeBooster

if TYPE_CHECKING:
    import xgboost

log = logging.getLogger(__name__)


class Booster(Protocol):
    """A loaded XGBoost model, whichever library holds it."""

    @property
    def kind(self) -> str:
        """Which implementation predicts (shown in logs and model metadata)."""
        ...

    def num_features(self) -> int:
        """How many input columns the model was trained on."""
        ...

    def predict(self, rows: Rows) -> Predictions:
        """XGBoost's prediction for every row; raises :class:`~.base.BoosterError`."""
        ...

    def save_json(self) -> bytes:
        """The model as XGBoost's JSON document."""
        ...


class PythonBooster:
    """An ``xgboost.Booster`` that predicts with ``inplace_predict``."""

    kind = "inplace_predict"

    def __init__(self, booster: xgboost.Booster) -> None:
        self.booster = booster

    @classmethod
    def load(cls, raw: bytes, *, threads: int) -> PythonBooster:
        """Load ``raw`` with the ``xgboost`` package; raises :class:`~.base.BoosterError`."""
        import xgboost  # noqa: PLC0415 - imported only when this path is chosen

        booster = xgboost.Booster()
        try:
            booster.load_model(bytearray(raw))
        except xgboost.core.XGBoostError as error:
            raise BoosterError(str(error)) from error
        booster.set_param({"nthread": threads})
        return cls(booster)

    def num_features(self) -> int:
        return int(self.booster.num_features())

    def predict(self, rows: Rows) -> Predictions:
        import xgboost  # noqa: PLC0415 - already loaded by then; a dict lookup

        try:
            result = self.booster.inplace_predict(rows, validate_features=False)
        except xgboost.core.XGBoostError as error:
            raise BoosterError(str(error)) from error
        return np.asarray(result, dtype=np.float32)

    def save_json(self) -> bytes:
        return bytes(self.booster.save_raw("json"))


def open_booster(raw: bytes, *, threads: int, native: bool = True) -> Booster:
    """Load a JSON, UBJ or legacy binary model held in memory.

    With ``native`` (the default) the model goes straight to ``libxgboost``; if that
    library cannot be loaded, the ``xgboost`` package serves instead, and the log
    says why. Raises :class:`BoosterError` when XGBoost cannot read ``raw``.
    """
    if native:
        try:
            return NativeBooster.load(raw, threads=threads)
        except LibraryUnavailableError as error:
            log.warning("libxgboost not usable directly (%s); using the xgboost package", error)
    return PythonBooster.load(raw, threads=threads)
