"""XGBoost through its C API (``c_api.h``), without importing the ``xgboost`` package.

``import xgboost`` costs 0.3 to 0.6 s on this machine kind, most of it SciPy, which the
package's ``core`` and ``sklearn`` modules import, and ~30 MB of memory per worker. The
runtime needs six C functions: create, load from a buffer, set a parameter, the feature
count, the dense prediction and the JSON dump. Loading ``libxgboost`` itself takes
~4 ms, so a server that talks to it directly reaches its first prediction that much
sooner.

The library is the one the installed ``xgboost`` wheel ships: its folder is found with
``importlib.util.find_spec``, which does not run the package. A build that keeps the
library elsewhere (a conda-style install) is looked up with the package's own
``find_lib_path``, which does import it.

The prediction is the same call ``Booster.inplace_predict`` makes for a C-contiguous
float32 matrix, with the same arguments, so the answers are XGBoost's own; the tests
compare them with ``inplace_predict`` bit for bit, for several objectives.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import sys
import threading
from pathlib import Path

import numpy as np

from .base import BoosterError, Predictions, Rows

log = logging.getLogger(__name__)

MIN_VERSION = (2, 0)
"""``XGBoosterPredictFromDense`` takes this JSON configuration since 2.0."""

_ulong = ctypes.c_uint64  # xgboost's bst_ulong
_handle = ctypes.c_void_p
_PREDICT_CONFIG = json.dumps(
    {
        "type": 0,  # the transformed prediction, as inplace_predict gives by default
        "training": False,
        "iteration_begin": 0,
        "iteration_end": 0,  # every tree
        "missing": float("nan"),
        "strict_shape": False,
        "cache_id": 0,
    }
).encode()
_JSON_DUMP_CONFIG = b'{"format": "json"}'
_LIBRARY_NAMES = {"linux": "libxgboost.so", "darwin": "libxgboost.dylib", "win32": "xgboost.dll"}


class LibraryUnavailableError(Exception):
    """No usable ``libxgboost`` could be loaded (the reason says why)."""


def library_path() -> Path:
    """Where the installed ``xgboost`` wheel keeps its shared library.

    Raises :class:`LibraryUnavailableError` when ``xgboost`` is not installed; falls back
    to the package's own lookup (which imports it) when the file is not beside it.
    """
    spec = importlib.util.find_spec("xgboost")
    if spec is None or not spec.submodule_search_locations:
        raise LibraryUnavailableError("the xgboost package is not installed")
    name = _LIBRARY_NAMES.get(sys.platform, "libxgboost.so")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "lib" / name
        if candidate.is_file():
            return candidate
    from xgboost.libpath import find_lib_path  # noqa: PLC0415 - slow, only when needed

    found = find_lib_path()
    if not found:
        raise LibraryUnavailableError("the xgboost package has no shared library")
    return Path(found[0])


class _Library:
    """The loaded ``libxgboost`` with the argument types of the functions used."""

    def __init__(self, path: Path) -> None:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as error:
            raise LibraryUnavailableError(f"{path} could not be loaded: {error}") from error
        lib.XGBGetLastError.restype = ctypes.c_char_p
        lib.XGBGetLastError.argtypes = []
        lib.XGBoostVersion.restype = None
        lib.XGBoostVersion.argtypes = [ctypes.POINTER(ctypes.c_int)] * 3
        signatures: dict[str, list[type[ctypes._CData]]] = {  # all return int status
            "XGBoosterCreate": [ctypes.c_void_p, _ulong, ctypes.POINTER(_handle)],
            "XGBoosterFree": [_handle],
            "XGBoosterLoadModelFromBuffer": [_handle, ctypes.c_void_p, _ulong],
            "XGBoosterSetParam": [_handle, ctypes.c_char_p, ctypes.c_char_p],
            "XGBoosterGetNumFeature": [_handle, ctypes.POINTER(_ulong)],
            "XGBoosterSaveModelToBuffer": [
                _handle,
                ctypes.c_char_p,
                ctypes.POINTER(_ulong),
                ctypes.POINTER(ctypes.POINTER(ctypes.c_char)),
            ],
            "XGBoosterPredictFromDense": [
                _handle,
                ctypes.c_char_p,
                ctypes.c_char_p,
                _handle,
                ctypes.POINTER(ctypes.POINTER(_ulong)),
                ctypes.POINTER(_ulong),
                ctypes.POINTER(ctypes.POINTER(ctypes.c_float)),
            ],
        }
        for function, argtypes in signatures.items():
            entry = getattr(lib, function)
            entry.restype = ctypes.c_int
            entry.argtypes = argtypes
        self.lib = lib
        self.path = path
        self.version = self._version()
        if self.version[:2] < MIN_VERSION:
            raise LibraryUnavailableError(
                f"{path} is XGBoost {'.'.join(map(str, self.version))}; "
                f"{'.'.join(map(str, MIN_VERSION))} or newer is needed"
            )

    def _version(self) -> tuple[int, int, int]:
        parts = [ctypes.c_int() for _ in range(3)]
        self.lib.XGBoostVersion(*(ctypes.byref(part) for part in parts))
        return parts[0].value, parts[1].value, parts[2].value

    def check(self, status: int) -> None:
        """Raise :class:`BoosterError` with XGBoost's message when ``status`` is not 0."""
        if status != 0:
            message: bytes | None = self.lib.XGBGetLastError()
            raise BoosterError((message or b"unknown XGBoost error").decode(errors="replace"))


_library: _Library | None = None
_library_lock = threading.Lock()


def library() -> _Library:
    """The process's ``libxgboost``, loaded once; raises :class:`LibraryUnavailableError`."""
    global _library  # noqa: PLW0603 - one shared library per process
    with _library_lock:
        if _library is None:
            _library = _Library(library_path())
        return _library


class NativeBooster:
    """One XGBoost model held by ``libxgboost``: load, predict, dump.
    ``NativeBooster.load(raw, threads=1)`` gives one; it is freed with the object."""

    kind = "direct C predictor"

    def __init__(self, lib: _Library, handle: ctypes.c_void_p) -> None:
        self._lib = lib
        self._handle = handle
        self._predict = lib.lib.XGBoosterPredictFromDense
        self._no_proxy = _handle()

    @classmethod
    def load(cls, raw: bytes, *, threads: int) -> NativeBooster:
        """A booster from a JSON, UBJ or legacy binary model held in memory.

        Raises :class:`BoosterError` when XGBoost cannot read ``raw``.
        """
        lib = library()
        handle = _handle()
        lib.check(lib.lib.XGBoosterCreate(None, 0, ctypes.byref(handle)))
        booster = cls(lib, handle)
        lib.check(lib.lib.XGBoosterLoadModelFromBuffer(handle, raw, len(raw)))
        lib.check(lib.lib.XGBoosterSetParam(handle, b"nthread", str(threads).encode()))
        return booster

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), _handle()
        if handle:
            self._lib.lib.XGBoosterFree(handle)

    def num_features(self) -> int:
        """How many input columns the model was trained on."""
        features = _ulong()
        self._lib.check(self._lib.lib.XGBoosterGetNumFeature(self._handle, ctypes.byref(features)))
        return int(features.value)

    def save_json(self) -> bytes:
        """The model as XGBoost's JSON document."""
        length = _ulong()
        data = ctypes.POINTER(ctypes.c_char)()
        self._lib.check(
            self._lib.lib.XGBoosterSaveModelToBuffer(
                self._handle, _JSON_DUMP_CONFIG, ctypes.byref(length), ctypes.byref(data)
            )
        )
        return ctypes.string_at(data, length.value)

    def predict(self, rows: Rows) -> Predictions:
        """XGBoost's prediction for every row; raises :class:`BoosterError` like XGBoost
        (for example for a matrix wider than the model)."""
        if rows.dtype != np.float32 or not rows.flags.c_contiguous:
            rows = np.ascontiguousarray(rows, dtype=np.float32)
        interface = (
            b'{"data":[%d,true],"shape":[%d,%d],"strides":null,"typestr":"<f4","version":3}'
            % (rows.ctypes.data, rows.shape[0], rows.shape[1])
        )
        shape = ctypes.POINTER(_ulong)()
        dims = _ulong()
        output = ctypes.POINTER(ctypes.c_float)()
        status = self._predict(
            self._handle,
            interface,
            _PREDICT_CONFIG,
            self._no_proxy,
            ctypes.byref(shape),
            ctypes.byref(dims),
            ctypes.byref(output),
        )
        if status != 0:
            self._lib.check(status)
        dimensions = tuple(int(shape[i]) for i in range(dims.value))
        # The buffer belongs to the booster and is reused by the next call: copy it.
        result = np.ctypeslib.as_array(output, shape=dimensions).copy()
        if result.ndim == 2 and result.shape[1] == 1:
            result = result.reshape(-1)
        return result
