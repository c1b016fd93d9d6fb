"""The runtime's predictor in process: :func:`load` a model the way the server does, then
:meth:`LoadedModel.predict` a numpy array, with no server and no HTTP.

Worked example: train a small model, save it, load it and compare with XGBoost itself.

>>> import numpy as np, tempfile, xgboost
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(256, 4)).astype(np.float32)
>>> booster = xgboost.train({"objective": "binary:logistic", "max_depth": 3},
...                         xgboost.DMatrix(x, label=x[:, 0] > 0), num_boost_round=10)
>>> path = tempfile.mkdtemp() + "/model.ubj"
>>> booster.save_model(path)
>>> import fleetshift_runtime
>>> model = fleetshift_runtime.load(path, compiled_predict=False)
>>> model.num_features, model.predictor_name, model.output_shape
(4, 'direct C predictor', ())
>>> rows = x[:3].copy()
>>> rows[0, 1] = np.nan  # a missing value takes the tree's default branch
>>> got = model.predict(rows)
>>> got.shape, got.dtype == np.float32
((3,), True)
>>> bool(np.allclose(got, booster.inplace_predict(rows), atol=1e-6))
True
>>> model.predict(x[0]).shape  # one row may be given as a vector
(1,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ModelFaultError
from .models.base import Model
from .models.loading import load_model, model_options
from .settings import RuntimeSettings

__all__ = ["LoadedModel", "ModelFaultError", "load"]


@dataclass(eq=False)
class LoadedModel:
    """A model loaded by :func:`load`: the server's own predictor behind one method.

    ``predict`` answers in the calling thread; the compiled trees and the direct C path
    release the GIL while they run, so several threads may predict at once.
    """

    model: Model
    """The runtime's own model object (the one the HTTP layer would call)."""
    compiled_error: str | None = None
    """Why the compiled trees are not used, when :func:`load` waited for them and they
    were not (an objective they do not cover, no compiler, ...); ``None`` otherwise."""

    @property
    def name(self) -> str:
        """The model's name (``model_name`` option, ``model`` by default)."""
        return self.model.name

    @property
    def num_features(self) -> int:
        """How many input columns the model was trained on."""
        return self.model.num_features

    @property
    def predictor_name(self) -> str:
        """Which implementation answers now: ``compiled trees (built for this model)``,
        ``compiled trees (prebuilt forest library)``, ``direct C predictor`` (libxgboost's
        C API) or ``inplace_predict`` (the ``xgboost`` package)."""
        return self.model.predictor_name

    @property
    def output_shape(self) -> tuple[int, ...]:
        """One row's prediction shape: ``()`` for one score, ``(3,)`` for three classes."""
        return self.model.output_shape

    def predict(self, rows: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """XGBoost's transformed prediction for every row (probabilities for
        ``binary:logistic`` and ``multi:softprob``), as float32.

        ``rows`` is a ``(rows, num_features)`` matrix, or one row as a vector; NaN is a
        missing value. A C-contiguous float32 matrix is used as is; anything else is
        copied to one first. The result has shape ``(rows,)`` for one output per row and
        ``(rows, outputs)`` for several. Raises
        :class:`~fleetshift_runtime.errors.ModelFaultError` when the model cannot
        predict the input (for example a matrix wider than the model).
        """
        if (
            type(rows) is not np.ndarray
            or rows.dtype != np.float32
            or rows.ndim != 2
            or not rows.flags.c_contiguous
        ):
            rows = np.ascontiguousarray(rows, dtype=np.float32)
            if rows.ndim == 1:
                rows = rows.reshape(1, -1)
            elif rows.ndim != 2:
                raise ValueError(f"expected a 2-D matrix of rows, got shape {rows.shape}")
        return self.model.predict(rows)


def load(uri: str, *, wait: bool = True, **options: Any) -> LoadedModel:
    """Load the model at ``uri`` exactly as the server loads ``FLEETSHIFT_MODEL_URI``.

    ``uri`` is a path, ``file://``, ``http(s)://`` or ``s3://`` URI of a model file, a
    folder or a ``model.tar.gz``. ``options`` are the server's settings by their field
    names (:class:`~fleetshift_runtime.settings.RuntimeSettings`, documented in
    ``runtime/README.md``), for example:

    - ``compiled_predict=False``: no compiled trees; the direct C path serves;
    - ``fast_predict=False``: the ``xgboost`` package's ``inplace_predict`` serves
      (together with ``compiled_predict=False``);
    - ``trees_library="/path/libfleetshift_forest.so"``: the prebuilt forest library
      walks the model's tables instead of a library built for the model;
    - ``predict_threads=1``, ``model_sha256=...``, ``allow_pickle=True``,
      ``cache_dir=...``, ``s3_endpoint_url=...``.

    As in the server, ``FLEETSHIFT_*`` environment variables give the defaults; the
    keyword options win. An unknown option raises :class:`TypeError`.

    With ``wait`` (the default), the compiled trees are built and validated before this
    returns, so :attr:`LoadedModel.predictor_name` is final. With ``wait=False`` they are
    built in the background as the server does, and XGBoost answers until then.
    """
    unknown = sorted(set(options) - set(RuntimeSettings.model_fields))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}: see RuntimeSettings")
    settings = RuntimeSettings(**{**options, "model_uri": uri})
    compile_now = wait and settings.compiled_predict
    if compile_now:
        settings = settings.model_copy(update={"compiled_predict": False})
    model = load_model(
        uri, name=settings.model_name, settings=settings, sha256=settings.model_sha256
    )
    loaded = LoadedModel(model)
    compile_method = getattr(model, "compile", None)
    if compile_now and callable(compile_method):
        opts = model_options(settings, settings.model_name)
        loaded.compiled_error = compile_method(
            opts.compiled_cache, forest_library=opts.trees_library
        )
    return loaded
