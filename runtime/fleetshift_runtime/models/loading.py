"""Fetch, load and warm up a model from a URI (blocking: run it in a thread)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..settings import RuntimeSettings
from ..sources import fetch_model_file, source_options
from .xgboost_model import XGBoostModel, load_xgboost, warm_up

log = logging.getLogger(__name__)


def load_model(
    uri: str,
    *,
    name: str,
    settings: RuntimeSettings,
    sha256: str = "",
    within: Path | None = None,
) -> XGBoostModel:
    """Fetch ``uri``, load the model and run one warm-up prediction (``within``: see
    :func:`~fleetshift_runtime.sources.fetch_model_file`)."""
    started = time.perf_counter()
    path = fetch_model_file(uri, source_options(settings), sha256=sha256, within=within)
    model = load_xgboost(
        path,
        name=name,
        allow_pickle=settings.allow_pickle,
        threads=settings.threads_per_worker(),
        fast_predict=settings.fast_predict,
    )
    warm_up(model)
    model.load_seconds = time.perf_counter() - started
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
        "loaded model %r (%s, %d features, %s) from %s in %.3fs",
        name,
        model.source_format,
        model.num_features,
        model.predictor_name,
        path,
        model.load_seconds,
    )
    if settings.compiled_predict:
        model.compile_in_background(
            source_options(settings).cache_dir / "compiled",
            forest_library=Path(settings.trees_library) if settings.trees_library else None,
        )
    else:
        log.info("model %r: compiled trees off (FLEETSHIFT_COMPILED_PREDICT=false)", name)
    return model
