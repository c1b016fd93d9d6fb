"""Prometheus metrics: the contract the operator's default alarms depend on.

``docs/runtime-metrics.md`` documents every name, type and label. Every metric carries
``namespace``, ``endpoint``, ``variant`` and ``revision``; the invocation
counters and the model load histogram add ``model``. Label children are bound once, so
the hot path costs a few attribute lookups.

With several workers, ``prometheus_client``'s multiprocess mode aggregates the workers'
values and the parent process serves ``/metrics``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client import multiprocess as prometheus_multiprocess

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only add noise for rate() queries

LABELS = ("namespace", "endpoint", "variant", "revision")
MODEL_LABELS = (*LABELS, "model")

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
    0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75,
    1.0, 1.5, 2.5, 5.0,
)  # fmt: skip
"""Seconds: dense from 0.1 ms to 5 s so p50 and p99 are readable at any load."""

OTHER_MODELS = "_other"
"""The ``model`` label of the models past ``RuntimeMetrics.max_model_labels``."""

LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds: model fetch + load + warm-up times."""


def multiprocess_dir() -> str:
    """The folder of ``prometheus_client``'s multiprocess mode, or ``""`` when off."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


@dataclass
class RuntimeMetrics:
    """All metric families, created on one registry."""

    labels: dict[str, str]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    max_model_labels: int = 100
    """Most distinct values of the ``model`` label; later models count as ``_other``."""

    def __post_init__(self) -> None:
        r = self.registry
        self.invocations = Counter(
            "fleetshift_invocations",
            "Inference requests received on /invocations and /v2/models/*/infer.",
            MODEL_LABELS,
            registry=r,
        )
        self.errors_4xx = Counter(
            "fleetshift_invocation_4xx_errors",
            "Inference requests answered with a 4xx (the client's fault).",
            MODEL_LABELS,
            registry=r,
        )
        self.errors_5xx = Counter(
            "fleetshift_invocation_5xx_errors",
            "Inference requests answered with a 5xx (a server or model fault).",
            MODEL_LABELS,
            registry=r,
        )
        self.model_latency = Histogram(
            "fleetshift_model_latency_seconds",
            "Time spent in the model's predict call for a request (SageMaker ModelLatency).",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead_latency = Histogram(
            "fleetshift_overhead_latency_seconds",
            "Request time outside the model: parsing, queuing, encoding (SageMaker "
            "OverheadLatency).",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "fleetshift_inflight_requests",
            "Inference requests being served right now.",
            LABELS,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_load = Histogram(
            "fleetshift_model_load_seconds",
            "Time to fetch, unpack, load and warm up a model.",
            MODEL_LABELS,
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.loaded_models = Gauge(
            "fleetshift_loaded_models",
            "Models held in memory (SageMaker LoadedModelCount).",
            LABELS,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_hits = Counter(
            "fleetshift_model_cache_hits",
            "Multi-model requests whose model was already loaded (SageMaker ModelCacheHit).",
            LABELS,
            registry=r,
        )
        self.cache_misses = Counter(
            "fleetshift_model_cache_misses",
            "Multi-model requests that had to wait for their model to load.",
            LABELS,
            registry=r,
        )
        self.model_loading_wait = Histogram(
            "fleetshift_model_loading_wait_seconds",
            "How long a multi-model request waited for its model to be loaded "
            "(SageMaker ModelLoadingWaitTime).",
            LABELS,
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.model_evictions = Counter(
            "fleetshift_model_evictions",
            "Models unloaded by the multi-model LRU to stay within its budget.",
            LABELS,
            registry=r,
        )
        base = self.labels
        self.model_latency_child = self.model_latency.labels(**base)
        self.overhead_latency_child = self.overhead_latency.labels(**base)
        self.inflight_child = self.inflight.labels(**base)
        self.loaded_models_child = self.loaded_models.labels(**base)
        self.cache_hits_child = self.cache_hits.labels(**base)
        self.cache_misses_child = self.cache_misses.labels(**base)
        self.model_loading_wait_child = self.model_loading_wait.labels(**base)
        self.model_evictions_child = self.model_evictions.labels(**base)
        self._by_model: dict[str, tuple[Any, Any, Any]] = {}
        self._model_labels: set[str] = set()

    def model_label(self, model: str) -> str:
        """``model`` itself while fewer than ``max_model_labels`` models have a label,
        else ``_other``: however many models a multi-model pod loads, the series stay
        bounded."""
        if model in self._model_labels:
            return model
        if len(self._model_labels) < self.max_model_labels:
            self._model_labels.add(model)
            return model
        return OTHER_MODELS

    def for_model(self, model: str) -> tuple[Any, Any, Any]:
        """The (invocations, 4xx, 5xx) counter children of one model, bound once."""
        found = self._by_model.get(model)
        if found is None:
            model = self.model_label(model)
            found = self._by_model.get(model)
            if found is not None:
                return found
            labels = {**self.labels, "model": model}
            found = (
                self.invocations.labels(**labels),
                self.errors_4xx.labels(**labels),
                self.errors_5xx.labels(**labels),
            )
            self._by_model[model] = found
        return found

    @contextmanager
    def inflight_request(self) -> Iterator[None]:
        """Count a request as in flight for the duration of the block."""
        self.inflight_child.inc()
        try:
            yield
        finally:
            self.inflight_child.dec()


_serving_lock = threading.Lock()


def serve_metrics(host: str, port: int, registry: CollectorRegistry | None) -> None:
    """Serve ``/metrics`` on its own port from a daemon thread.

    ``registry`` None means multiprocess mode: a fresh registry aggregating all
    workers' files.
    """
    if port == 0:
        return
    if registry is None:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    with _serving_lock:
        start_http_server(port, addr=host, registry=registry)
