"""XGBoost models: JSON, UBJ, legacy binary and (opt-in) pickle/joblib files.

The format is detected from the file's first bytes (see :mod:`.formats`), not its name,
because SageMaker names every artifact ``xgboost-model`` whatever its format.
"""

from __future__ import annotations

import ctypes
import io
import json
import logging
import pickle
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost

from ..errors import ModelFaultError, ModelLoadError
from .base import Predictions, Rows
from .compiled import CompiledPredictor, UnsupportedModelError, compile_validated
from .formats import ModelFormat, detect_format

log = logging.getLogger(__name__)

COMPILE_DELAY_SECONDS = 1.0
"""How long after the load the compiled trees start building."""


def _booster_from_pickle(raw: bytes, fmt: ModelFormat) -> xgboost.Booster:
    if fmt == "joblib":
        try:
            import joblib  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
        except ImportError as error:
            raise ModelLoadError(
                "the model is a joblib file but joblib is not installed"
            ) from error
        loaded: Any = joblib.load(io.BytesIO(raw))
    else:
        loaded = pickle.loads(raw)  # noqa: S301 - explicitly allowed by FLEETSHIFT_ALLOW_PICKLE
    if isinstance(loaded, xgboost.Booster):
        return loaded
    get_booster = getattr(loaded, "get_booster", None)
    if callable(get_booster):
        booster = get_booster()
        if isinstance(booster, xgboost.Booster):
            return booster
    raise ModelLoadError(f"the pickle holds a {type(loaded).__name__}, not an XGBoost model")


class DensePredictor:
    """A direct call of XGBoost's C ``XGBoosterPredictFromDense`` for float32 matrices.

    ``Booster.inplace_predict`` spends ~170 of its ~220 µs per call in Python: probing
    the input for pandas, polars, arrow and cupy types (each probe looks for the module
    on ``sys.path`` again when it is not installed), building JSON arguments and wrapping
    the output. The runtime always passes a C-contiguous float32 matrix, so it can call
    the same C function with arguments prepared once: ~50 µs for one row of the
    benchmark model. :func:`load_xgboost` uses it only after it reproduced
    ``inplace_predict`` exactly on a validation set, and falls back otherwise.
    """

    def __init__(self, booster: xgboost.Booster) -> None:
        from xgboost.core import _LIB  # noqa: PLC0415 - private API, validated before use

        self._booster = booster
        self._predict = _LIB.XGBoosterPredictFromDense
        self._last_error = _LIB.XGBGetLastError
        self._ulong = ctypes.c_uint64  # xgboost's bst_ulong
        self._config = json.dumps(
            {
                "type": 0,
                "training": False,
                "iteration_begin": 0,
                "iteration_end": 0,
                "missing": float("nan"),
                "strict_shape": False,
                "cache_id": 0,
            }
        ).encode()
        self._no_proxy = ctypes.c_void_p()

    def __call__(self, rows: Rows) -> Predictions:
        """Predict a C-contiguous float32 matrix; raises ``XGBoostError`` like xgboost."""
        if rows.dtype != np.float32 or not rows.flags.c_contiguous:
            rows = np.ascontiguousarray(rows, dtype=np.float32)
        interface = (
            b'{"data":[%d,true],"shape":[%d,%d],"strides":null,"typestr":"<f4","version":3}'
            % (
                rows.ctypes.data,
                rows.shape[0],
                rows.shape[1],
            )
        )
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        output = ctypes.POINTER(ctypes.c_float)()
        status = self._predict(
            self._booster.handle,
            interface,
            self._config,
            self._no_proxy,
            ctypes.byref(shape),
            ctypes.byref(dims),
            ctypes.byref(output),
        )
        if status != 0:
            raise xgboost.core.XGBoostError(self._last_error().decode(errors="replace"))
        dimensions = tuple(int(shape[i]) for i in range(dims.value))
        result = np.ctypeslib.as_array(output, shape=dimensions).copy()
        if result.ndim == 2 and result.shape[1] == 1:
            result = result.reshape(-1)
        return result


def _validated_fast_path(booster: xgboost.Booster, num_features: int) -> DensePredictor | None:
    """The direct predictor if it matches ``inplace_predict`` within 1e-6, else None."""
    rng = np.random.default_rng(20)
    rows = rng.normal(scale=3.0, size=(64, num_features)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.1] = np.nan  # missing values take other branches
    try:
        fast = DensePredictor(booster)
        for batch in (rows[:1], rows):
            expected = np.asarray(booster.inplace_predict(batch), dtype=np.float32)
            got = fast(np.ascontiguousarray(batch))
            if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=1e-6):
                log.warning("direct XGBoost predictor disagrees with inplace_predict; not used")
                return None
    except Exception:  # any surprise in the private API means: use the public one
        log.warning("direct XGBoost predictor unavailable; using inplace_predict", exc_info=True)
        return None
    return fast


@dataclass
class XGBoostModel:
    """A loaded XGBoost booster that predicts with ``inplace_predict``."""

    name: str
    booster: xgboost.Booster
    num_features: int
    size_bytes: int
    source_format: ModelFormat
    load_seconds: float
    platform: str = "xgboost"
    fast_path: DensePredictor | None = None
    compiled: CompiledPredictor | None = None
    """Set by :meth:`compile_in_background` once the compiled trees are validated."""

    @property
    def predictor_name(self) -> str:
        """Which implementation answers now (logged, and shown in model metadata)."""
        if self.compiled is not None:
            return f"compiled trees ({self.compiled.kind})"
        return "direct C predictor" if self.fast_path is not None else "inplace_predict"

    def compile_in_background(
        self, cache_dir: Path, *, forest_library: Path | None = None
    ) -> threading.Thread:
        """Build the compiled predictor in a daemon thread; XGBoost serves meanwhile,
        and keeps serving if the build is impossible or the result does not validate.
        With ``forest_library``, the prebuilt library walks the model's tables instead."""

        def work() -> None:
            # Let the first requests through first: the time to the first prediction
            # must not pay for the code generation (Python, under the GIL) or the build.
            time.sleep(COMPILE_DELAY_SECONDS)
            started = time.perf_counter()
            try:
                compiled = compile_validated(self.booster, cache_dir, forest_library=forest_library)
            except UnsupportedModelError as error:
                log.info("model %r: compiled trees not used (%s)", self.name, error)
                return
            except Exception:  # never let an optimisation take the model down
                log.warning("model %r: compiled trees not used", self.name, exc_info=True)
                return
            self.compiled = compiled
            log.info(
                "model %r: compiled trees validated within 1e-6 and in use after %.2fs (%s)",
                self.name,
                time.perf_counter() - started,
                compiled.kind,
            )

        thread = threading.Thread(target=work, name=f"compile-{self.name}", daemon=True)
        thread.start()
        return thread

    def predict(self, rows: Rows) -> Predictions:
        """Predict all rows at once; xgboost errors become :class:`ModelFaultError`."""
        compiled = self.compiled
        if compiled is not None and rows.ndim == 2 and rows.shape[1] == compiled.width:
            return compiled(rows)
        try:
            if self.fast_path is not None:
                return self.fast_path(rows)
            result = self.booster.inplace_predict(rows, validate_features=False)
        except xgboost.core.XGBoostError as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            reason = first_line.split(": ", 1)[-1] if ": " in first_line else first_line
            raise ModelFaultError(
                f"model {self.name!r} failed on a {rows.shape[0]}x{rows.shape[1]} input "
                f"(it was trained on {self.num_features} features): {reason}"
            ) from error
        return np.asarray(result, dtype=np.float32)


def load_xgboost(
    path: Path, *, name: str, allow_pickle: bool, threads: int, fast_predict: bool = True
) -> XGBoostModel:
    """Load a model file in any supported format and check it can predict."""
    started = time.perf_counter()
    raw = path.read_bytes()
    if not raw:
        raise ModelLoadError(f"model file {path} is empty")
    fmt = detect_format(raw[:16])
    if fmt in ("pickle", "joblib"):
        if not allow_pickle:
            raise ModelLoadError(
                f"model file {path} is a Python {fmt} file. Unpickling runs arbitrary code "
                "from the artifact, so it is refused. Re-save the model with "
                "booster.save_model('model.ubj'), or set FLEETSHIFT_ALLOW_PICKLE=true if "
                "you trust the artifact's source."
            )
        booster = _booster_from_pickle(raw, fmt)
    else:
        booster = xgboost.Booster()
        try:
            booster.load_model(bytearray(raw))
        except xgboost.core.XGBoostError as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ModelLoadError(
                f"{path} is not a loadable XGBoost model ({fmt} format detected): {detail}"
            ) from error
    booster.set_param({"nthread": threads})
    num_features = int(booster.num_features())
    model = XGBoostModel(
        name=name,
        booster=booster,
        num_features=num_features,
        size_bytes=len(raw),
        source_format=fmt,
        load_seconds=0.0,
        fast_path=_validated_fast_path(booster, num_features) if fast_predict else None,
    )
    model.load_seconds = time.perf_counter() - started
    return model


def warm_up(model: XGBoostModel) -> None:
    """One prediction on a zero row of the model's own width; readiness waits for it."""
    output = model.predict(np.zeros((1, model.num_features), dtype=np.float32))
    if output.shape[0] != 1:
        raise ModelLoadError(f"warm-up prediction returned shape {output.shape}, expected 1 row")
