"""Fetch, load and warm up a model from a URI (blocking: run it in a thread)."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path

from ..disk_budget import DiskBudget, DiskSession
from ..settings import RuntimeSettings
from ..sources import fetch_model_file, source_options
from .base import Model
from .registry import ModelOptions, load_file

log = logging.getLogger(__name__)


def model_options(settings: RuntimeSettings, name: str) -> ModelOptions:
    """The model part of the settings."""
    return ModelOptions(
        name=name,
        allow_pickle=settings.allow_pickle,
        threads=settings.threads_per_worker(),
        fast_predict=settings.fast_predict,
        compiled_predict=settings.compiled_predict,
        compiled_cache=source_options(settings).cache_dir / "compiled",
        trees_library=Path(settings.trees_library) if settings.trees_library else None,
    )


def load_model(
    uri: str,
    *,
    name: str,
    settings: RuntimeSettings,
    sha256: str = "",
    within: Path | None = None,
    budget: DiskBudget | None = None,
) -> Model:
    """Fetch ``uri``, load the model with its format's loader and warm it up
    (``within``: see :func:`~fleetshift_runtime.sources.fetch_model_file`). With a disk
    ``budget``, the cache entries the model is read from stay pinned until it is in
    memory; the model keeps no file after that."""
    started = time.perf_counter()
    session: DiskSession | None
    with budget.session() if budget is not None else nullcontext() as session:
        path = fetch_model_file(
            uri, source_options(settings), sha256=sha256, within=within, session=session
        )
        model = load_file(path, model_options(settings, name))
    declared = settings.num_features
    if declared is not None and declared != model.num_features:
        log.warning(
            "model %r was trained on %d features but the endpoint declares %d "
            "(FLEETSHIFT_NUM_FEATURES): requests valid for the endpoint will fail with 5xx",
            name,
            model.num_features,
            declared,
        )
    log.info(
        "loaded model %r (%d features, %s) from %s in %.3fs",
        name,
        model.num_features,
        model.predictor_name,
        path,
        time.perf_counter() - started,
    )
    return model
