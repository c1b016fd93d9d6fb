"""XGBoost models: JSON, UBJ, legacy binary and (opt-in) pickle/joblib files.

The format is detected from the file's first bytes (see :mod:`.formats`), not its name,
because SageMaker names every artifact ``xgboost-model`` whatever its format.
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import pickle
import re
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import ModelFaultError, ModelLoadError, NotAModelError
from .base import BoosterError, Predictions, Rows
from .booster import Booster, open_booster
from .compiled import CompiledPredictor, UnsupportedModelError, compile_validated
from .formats import ModelFormat, detect_format
from .native import LibraryUnavailableError, library

if TYPE_CHECKING:
    from .registry import ModelOptions

log = logging.getLogger(__name__)

COMPILE_DELAY_SECONDS = 1.0
"""How long after the load the compiled trees start building."""


def _model_from_pickle(raw: bytes, fmt: ModelFormat) -> bytes:
    """The UBJ bytes of the booster a pickle or joblib file holds (imports xgboost)."""
    import xgboost  # noqa: PLC0415 - the pickle refers to its classes anyway

    if fmt == "joblib":
        try:
            import joblib  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: PLC0415
        except ImportError as error:
            raise ModelLoadError(
                "the model is a joblib file but joblib is not installed"
            ) from error
        loaded: Any = joblib.load(io.BytesIO(raw))
    else:
        loaded = pickle.loads(raw)  # noqa: S301 - explicitly allowed by FLEETSHIFT_ALLOW_PICKLE
    get_booster = getattr(loaded, "get_booster", None)
    booster = get_booster() if callable(get_booster) else loaded
    if isinstance(booster, xgboost.Booster):
        return bytes(booster.save_raw("ubj"))
    raise ModelLoadError(f"the pickle holds a {type(loaded).__name__}, not an XGBoost model")


@dataclass
class XGBoostModel:
    """A loaded XGBoost model: its booster predicts until compiled trees take over."""

    name: str
    booster: Booster
    num_features: int
    size_bytes: int
    source_format: ModelFormat
    load_seconds: float
    platform: str = "xgboost"
    output_shape: tuple[int, ...] = ()
    """One row's prediction shape, learnt from the warm-up prediction."""
    compiled: CompiledPredictor | None = None
    """Set by :meth:`compile_in_background` once the compiled trees are validated."""

    @property
    def predictor_name(self) -> str:
        """Which implementation answers now (logged, and shown in model metadata)."""
        if self.compiled is not None:
            return f"compiled trees ({self.compiled.kind})"
        return self.booster.kind

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
            self.compile(cache_dir, forest_library=forest_library)

        thread = threading.Thread(target=work, name=f"compile-{self.name}", daemon=True)
        thread.start()
        return thread

    def compile(self, cache_dir: Path, *, forest_library: Path | None = None) -> str | None:
        """Build the compiled predictor now and switch to it once validated; XGBoost keeps
        serving if the build is impossible or the result does not validate. Returns why
        the compiled trees are not used, or ``None`` when they are."""
        started = time.perf_counter()
        try:
            compiled = compile_validated(self.booster, cache_dir, forest_library=forest_library)
        except UnsupportedModelError as error:
            log.info("model %r: compiled trees not used (%s)", self.name, error)
            return str(error)
        except Exception as error:  # never let an optimisation take the model down
            log.warning("model %r: compiled trees not used", self.name, exc_info=True)
            return f"{type(error).__name__}: {error}"
        self.compiled = compiled
        log.info(
            "model %r: compiled trees validated within 1e-6 and in use after %.2fs (%s)",
            self.name,
            time.perf_counter() - started,
            compiled.kind,
        )
        return None

    def predict(self, rows: Rows) -> Predictions:
        """Predict all rows at once; xgboost errors become :class:`ModelFaultError`."""
        compiled = self.compiled
        if compiled is not None and rows.ndim == 2 and rows.shape[1] == compiled.width:
            return compiled(rows)
        try:
            return self.booster.predict(rows)
        except BoosterError as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            reason = first_line.split(": ", 1)[-1] if ": " in first_line else first_line
            raise ModelFaultError(
                f"model {self.name!r} failed on a {rows.shape[0]}x{rows.shape[1]} input "
                f"(it was trained on {self.num_features} features): {reason}"
            ) from error


LEGACY_BINARY_LAST = (3, 0)
"""The last XGBoost release that reads the legacy binary format (3.1 removed it)."""


def xgboost_version(*, native: bool = True) -> tuple[int, ...]:
    """The version of the XGBoost that loads models: the library the direct C path uses,
    or the ``xgboost`` package's (read from its metadata, without importing it)."""
    if native:
        try:
            return library().version
        except LibraryUnavailableError:
            pass
    for distribution in ("xgboost-cpu", "xgboost"):
        try:
            text = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        return tuple(int(part) for part in re.findall(r"\d+", text)[:3])
    return (0, 0, 0)


_UBJ_INTEGERS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}
"""UBJSON's integer markers and their struct codes (big-endian)."""


def saved_by(raw: bytes, fmt: str) -> tuple[int, ...] | None:
    r"""The XGBoost version that saved a JSON or UBJ model (its top-level ``version``), or
    None when the file does not say.

    >>> saved_by(b'{"learner": {}, "version": [3, 2, 0]}', "json")
    (3, 2, 0)
    >>> saved_by(b"{" + b"\x07version[#L" + bytes(7) + b"\x03i\x03i\x02i\x00}", "ubj")
    (3, 2, 0)
    >>> saved_by(b"{" + b"\x07version[$U#U\x03\x02\x01\x00}", "ubj")
    (2, 1, 0)
    >>> saved_by(b"{}", "json") is None
    True
    """
    try:
        if fmt == "json":
            version = orjson.loads(raw).get("version")
            return tuple(int(part) for part in version[:3]) if version else None
        if fmt == "ubj":
            return _ubj_version(raw)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    except struct.error:
        return None
    return None


def _ubj_version(raw: bytes) -> tuple[int, ...] | None:
    """The ``version`` array of a UBJ model: ``[`` then an optional ``$`` type, a ``#``
    count, and integers (each with its marker unless the array is typed)."""
    key = b"\x07version["
    at = raw.rfind(key)
    if at < 0:
        return None
    at += len(key)

    def integer(marker: bytes) -> int:
        nonlocal at
        code = _UBJ_INTEGERS[marker]
        size = struct.calcsize(code)
        (value,) = struct.unpack(code, raw[at : at + size])
        at += size
        return int(value)

    typed: bytes | None = None
    if raw[at : at + 1] == b"$":
        typed, at = raw[at + 1 : at + 2], at + 2
    if raw[at : at + 1] != b"#":
        return None
    count_marker, at = raw[at + 1 : at + 2], at + 2
    count = integer(count_marker)
    parts = []
    for _ in range(min(count, 3)):
        marker = typed
        if marker is None:
            marker, at = raw[at : at + 1], at + 1
        parts.append(integer(marker))
    return tuple(parts)


def _refuse_a_newer_format(path: Path, raw: bytes, fmt: str, runtime: tuple[int, ...]) -> None:
    """Refuse a model saved by a newer XGBoost release than the one that would load it:
    an older XGBoost may read it without an error and predict other numbers (3.1 changed
    how ``base_score`` is stored; 3.0 reads the new form as another value)."""
    saver = saved_by(raw, fmt)
    if saver is None or runtime == (0, 0, 0) or saver[:2] <= runtime[:2]:
        return
    theirs, ours = ".".join(map(str, saver)), ".".join(map(str, runtime))
    raise NotAModelError(
        f"{path} was saved by XGBoost {theirs}, newer than this runtime's XGBoost {ours}, "
        "which may read it without an error and predict other numbers. Serve it with a "
        f"runtime on XGBoost {saver[0]}.{saver[1]} or later, or re-save it with XGBoost {ours}.",
        public=f"it was saved by XGBoost {theirs}, newer than this runtime's {ours}",
    )


def load_xgboost(
    path: Path, *, name: str, allow_pickle: bool, threads: int, fast_predict: bool = True
) -> XGBoostModel:
    """Load a model file in any supported format and check it can predict."""
    started = time.perf_counter()
    raw = path.read_bytes()
    if not raw:
        raise NotAModelError(f"model file {path} is empty", public="it is an empty file")
    fmt = detect_format(raw[:16])
    if fmt in ("pickle", "joblib"):
        if not allow_pickle:
            raise NotAModelError(
                f"model file {path} is a Python {fmt} file. Unpickling runs arbitrary code "
                "from the artifact, so it is refused. Re-save the model with "
                "booster.save_model('model.ubj'), or set FLEETSHIFT_ALLOW_PICKLE=true if "
                "you trust the artifact's source.",
                public=f"it is a Python {fmt} file, refused (FLEETSHIFT_ALLOW_PICKLE)",
            )
        raw = _model_from_pickle(raw, fmt)
    _refuse_a_newer_format(path, raw, fmt, xgboost_version(native=fast_predict))
    try:
        booster = open_booster(raw, threads=threads, native=fast_predict)
    except BoosterError as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        version = xgboost_version(native=fast_predict)
        if fmt == "binary" and version[:2] > LEGACY_BINARY_LAST:
            shown = ".".join(map(str, version))
            raise NotAModelError(
                f"{path} is not a loadable XGBoost model (binary format detected): if it "
                f"is in XGBoost's legacy binary format (SageMaker's XGBoost 1.x "
                f"containers), XGBoost {shown} cannot read it: that format was removed in "
                "XGBoost 3.1. Load it once with XGBoost 3.0 and re-save it with "
                "booster.save_model('model.ubj'). XGBoost said: " + detail,
                public=(
                    "it is not a model XGBoost can load (binary format detected; XGBoost "
                    f"{shown} does not read the legacy binary format, 3.0 and older do)"
                ),
            ) from error
        raise NotAModelError(
            f"{path} is not a loadable XGBoost model ({fmt} format detected): {detail}",
            public=f"it is not a model XGBoost can load ({fmt} format detected)",
        ) from error
    num_features = booster.num_features()
    model = XGBoostModel(
        name=name,
        booster=booster,
        num_features=num_features,
        size_bytes=len(raw),
        source_format=fmt,
        load_seconds=0.0,
    )
    model.load_seconds = time.perf_counter() - started
    return model


def load_xgboost_model(path: Path, fmt: ModelFormat, options: ModelOptions) -> XGBoostModel:
    """The registry's loader for XGBoost's formats: load, warm up, and start building
    the compiled trees in the background when they are on."""
    del fmt  # load_xgboost reads the format from the bytes it reads anyway
    model = load_xgboost(
        path,
        name=options.name,
        allow_pickle=options.allow_pickle,
        threads=options.threads,
        fast_predict=options.fast_predict,
    )
    warm_up(model)
    if options.compiled_predict:
        model.compile_in_background(options.compiled_cache, forest_library=options.trees_library)
    else:
        log.info("model %r: compiled trees off (FLEETSHIFT_COMPILED_PREDICT=false)", model.name)
    return model


def warm_up(model: XGBoostModel) -> None:
    """One prediction on a zero row of the model's own width; readiness waits for it."""
    output = model.predict(np.zeros((1, model.num_features), dtype=np.float32))
    if output.shape[0] != 1:
        raise ModelLoadError(f"warm-up prediction returned shape {output.shape}, expected 1 row")
    model.output_shape = tuple(int(d) for d in output.shape[1:])
