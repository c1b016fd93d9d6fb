"""Prometheus metrics: the contract the operator's default alarms depend on.

``docs/runtime-metrics.md`` documents every name, type and label. Every metric carries
``namespace``, ``endpoint``, ``variant`` and ``revision``; the invocation
counters and the model load histogram add ``model``.

A request's own metrics (invocations, errors, the two latencies, in flight) are counted
in plain Python by a :class:`RequestTally` and pushed into ``prometheus_client`` in bulk:
before every collection of the registry (a scrape sees every request answered before it),
and every ``push_interval`` seconds in a worker of several. Five ``prometheus_client``
calls cost ~2.5 µs a request (a histogram's ``observe`` walks its 27 buckets one by one
under a lock); the tally costs ~0.4 µs, about 3% of a 1-row request.

With several workers, ``prometheus_client``'s multiprocess mode aggregates the workers'
values and the parent process serves ``/metrics``.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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

DIFFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
"""Paired absolute differences of a shadow's predictions from production's: fine near 0,
where two versions of a model differ, up to 1 for probabilities (regression differences
past 1 fall in +Inf)."""

OUTPUT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
"""Default bounds of the prediction histogram, for probabilities (the drift alarm compares
green's shares over them with blue's); ``FLEETSHIFT_OUTPUT_BUCKETS`` sets others, for
regression."""

SHADOW_LABELS = (*LABELS, "shadow", "shadow_revision")

LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds: model fetch + load + warm-up times."""


def multiprocess_dir() -> str:
    """The folder of ``prometheus_client``'s multiprocess mode, or ``""`` when off."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


PUSH_INTERVAL_SECONDS = 1.0
"""How often a worker of several pushes its tally into the shared files; a scrape of the
parent sees a worker's requests at most this late (a single process pushes on scrape)."""


def _histogram_values(child: Any, bounds: tuple[float, ...]) -> tuple[Any, list[Any]]:
    """The ``_sum`` and bucket values of a ``prometheus_client`` histogram child, which
    takes no bulk observation: checked here once, so a library that changed their shape
    fails at start-up and not with wrong numbers."""
    total, buckets = getattr(child, "_sum", None), getattr(child, "_buckets", None)
    upper = list(getattr(child, "_upper_bounds", ()))
    if total is None or buckets is None or upper != [*bounds, float("inf")]:
        raise RuntimeError(
            "prometheus_client's Histogram no longer keeps _sum, _buckets and _upper_bounds; "
            "RequestTally needs them to push observations in bulk"
        )
    return total, buckets


class HistogramTally:
    """One histogram child's observations, counted in plain Python and pushed in bulk.

    Only the event loop's thread observes; :meth:`push` may run on any thread (callers
    hold :class:`RequestTally`'s lock). Counts are cumulative and never reset: a push
    adds what was counted since the last one, so a push that races an observation
    leaves it for the next.

    A value goes to the first bucket whose bound it does not exceed, as
    ``Histogram.observe`` does:

    >>> from prometheus_client import CollectorRegistry, Histogram
    >>> child = Histogram("h", "h", buckets=(0.1, 1.0), registry=CollectorRegistry())
    >>> tally = HistogramTally(child, (0.1, 1.0))
    >>> for seconds in (0.05, 0.1, 0.5, 3.0):
    ...     tally.observe(seconds)
    >>> tally.push()
    >>> [bucket.get() for bucket in child._buckets], round(child._sum.get(), 6)
    ([2.0, 1.0, 1.0], 3.65)
    """

    __slots__ = ("_bounds", "_buckets", "_pushed", "_pushed_total", "_sum", "counts", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        self._sum, self._buckets = _histogram_values(child, bounds)
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self._pushed = [0] * (len(bounds) + 1)
        self._pushed_total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` (the hot path: a binary search and two additions)."""
        self.counts[bisect_left(self._bounds, value)] += 1
        self.total += value

    def observe_many(self, values: Any) -> None:
        """Count a numpy array of values at once (a batch's predictions)."""
        finite = values[np.isfinite(values)]
        found = np.bincount(
            np.searchsorted(self._bounds, finite, side="left"), minlength=len(self.counts)
        ).tolist()
        counts = self.counts
        for index, count in enumerate(found):
            if count:
                counts[index] += count
        self.total += float(finite.sum())

    def push(self) -> None:
        counts, total = list(self.counts), self.total
        for bucket, count, pushed in zip(self._buckets, counts, self._pushed, strict=True):
            if count != pushed:
                bucket.inc(count - pushed)
        if total != self._pushed_total:
            self._sum.inc(total - self._pushed_total)
        self._pushed, self._pushed_total = counts, total


class ModelCounts:
    """Invocations and errors of one ``model`` label, counted in plain Python."""

    __slots__ = ("_children", "_pushed", "errors_4xx", "errors_5xx", "invocations")

    def __init__(self, children: tuple[Any, Any, Any]) -> None:
        self._children = children
        self.invocations = self.errors_4xx = self.errors_5xx = 0
        self._pushed = (0, 0, 0)

    def push(self) -> None:
        counts = (self.invocations, self.errors_4xx, self.errors_5xx)
        for child, count, pushed in zip(self._children, counts, self._pushed, strict=True):
            if count != pushed:
                child.inc(count - pushed)
        self._pushed = counts


class RequestTally:
    """A request's metrics in plain Python, pushed into ``prometheus_client`` in bulk.

    The event loop's thread alone counts (:meth:`started`, :meth:`answered`);
    :meth:`push` runs before every collection of the registry and, in a worker of several,
    every :data:`PUSH_INTERVAL_SECONDS`.

    >>> pod = {"namespace": "n", "endpoint": "e", "variant": "v", "revision": "1"}
    >>> metrics = RuntimeMetrics(pod)
    >>> metrics.tally.started()
    >>> metrics.tally.answered("m", 200, model_seconds=0.0004, overhead_seconds=0.0002)
    >>> metrics.tally.started()
    >>> metrics.tally.answered("m", 400, model_seconds=None, overhead_seconds=0.0001)
    >>> metrics.tally.started()
    >>> read = metrics.registry.get_sample_value  # a collection: the tally is pushed first
    >>> read("fleetshift_invocations_total", {**pod, "model": "m"})
    2.0
    >>> read("fleetshift_invocation_4xx_errors_total", {**pod, "model": "m"})
    1.0
    >>> read("fleetshift_model_latency_seconds_count", pod)
    1.0
    >>> read("fleetshift_overhead_latency_seconds_bucket", {**pod, "le": "0.00025"})
    2.0
    >>> read("fleetshift_inflight_requests", pod)
    1.0
    """

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._inflight = metrics.inflight_child
        self._models: dict[str, ModelCounts] = {}
        self.model_latency = HistogramTally(metrics.model_latency_child, LATENCY_BUCKETS)
        self.overhead_latency = HistogramTally(metrics.overhead_latency_child, LATENCY_BUCKETS)
        self.requests_started = 0
        self.requests_finished = 0
        self.predictions = HistogramTally(
            metrics.predictions.labels(**metrics.labels), metrics.output_buckets
        )

    def started(self) -> None:
        """A request is in flight."""
        self.requests_started += 1

    def gone(self) -> None:
        """A request in flight ended without an answer (its client left)."""
        self.requests_finished += 1

    def answered(
        self, model: str, status: int, *, model_seconds: float | None, overhead_seconds: float
    ) -> None:
        """A request in flight was answered with ``status``."""
        counts = self._models.get(model) or self._counts(model)
        counts.invocations += 1
        if status >= 400:
            if status >= 500:
                counts.errors_5xx += 1
            else:
                counts.errors_4xx += 1
        if model_seconds is not None:
            self.model_latency.observe(model_seconds)
        self.overhead_latency.observe(overhead_seconds)
        self.requests_finished += 1

    def predicted(self, predictions: Any) -> None:
        """Count an answer's predictions (a numpy array: one score per row, or rows of
        scores, counted by their top score)."""
        if predictions.size == 1:  # ndarray.item: ~0.2 µs, against ~0.5 for float(a.flat[0])
            self.predictions.observe(predictions.item(0))
        elif predictions.size:
            scores = predictions if predictions.ndim == 1 else predictions.max(axis=1)
            self.predictions.observe_many(scores)

    def _counts(self, model: str) -> ModelCounts:
        """The counts of ``model``'s label, made on its first request (past
        ``max_model_labels`` models, the shared ``_other`` label's)."""
        label = self._metrics.model_label(model)
        counts = self._models.get(label)
        if counts is None:
            counts = ModelCounts(self._metrics.for_model(label))
            self._models[label] = counts  # under its label: ``_other`` models share one
        return counts

    def push(self) -> None:
        """Add everything counted since the last push to the ``prometheus_client`` values."""
        with self._lock:
            for counts in list(self._models.values()):
                counts.push()
            self.model_latency.push()
            self.overhead_latency.push()
            self.predictions.push()
            self._inflight.set(self.requests_started - self.requests_finished)


class _PushBeforeCollect:
    """A collector with no metrics of its own that pushes the tally first, so a scrape
    (or ``generate_latest``) sees every request answered before it."""

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Any]:
        return ()

    def collect(self) -> Iterable[Any]:
        tally = getattr(self._metrics, "tally", None)
        if tally is not None:
            tally.push()
        return ()


@dataclass
class RuntimeMetrics:
    """All metric families, created on one registry."""

    labels: dict[str, str]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    max_model_labels: int = 100
    """Most distinct values of the ``model`` label; later models count as ``_other``."""
    output_buckets: tuple[float, ...] = OUTPUT_BUCKETS
    """Bounds of ``fleetshift_prediction``'s buckets."""

    def __post_init__(self) -> None:
        r = self.registry
        r.register(_PushBeforeCollect(self))  # first, so it is collected first
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
        self.grpc_requests = Counter(
            "fleetshift_grpc_requests",
            "Open Inference Protocol gRPC calls answered, by method and gRPC status code.",
            (*LABELS, "method", "code"),
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
        self.model_disk_bytes = Gauge(
            "fleetshift_model_disk_bytes",
            "Bytes of downloaded and unpacked models in the cache folder, counted against "
            "the multi-model disk budget.",
            LABELS,
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.model_disk_evictions = Counter(
            "fleetshift_model_disk_evictions",
            "Cache entries (a downloaded or unpacked model) deleted by the multi-model "
            "disk LRU to stay within its budget.",
            LABELS,
            registry=r,
        )
        self.predictions = Histogram(
            "fleetshift_prediction",
            "The predictions answered, one observation per row: the score of a one-score "
            "model, the top score of a multi-output one (the drift alarm's signal).",
            LABELS,
            buckets=self.output_buckets,
            registry=r,
        )
        self.captured = Counter(
            "fleetshift_capture_records",
            "Request and response pairs written by data capture.",
            LABELS,
            registry=r,
        )
        self.capture_lost = Counter(
            "fleetshift_capture_dropped_records",
            "Sampled pairs data capture did not write, by reason: buffer_full (the "
            "destination could not keep up) or destination (a write failed).",
            (*LABELS, "reason"),
            registry=r,
        )
        self.shadow_copies = Counter(
            "fleetshift_shadow_copies",
            "Copies of production requests for a shadow variant, by what became of them "
            "(answered, failed, timeout, unreachable, dropped, uncomparable).",
            (*SHADOW_LABELS, "outcome"),
            registry=r,
        )
        self.shadow_latency_seconds = Histogram(
            "fleetshift_shadow_latency_seconds",
            "Time for a shadow variant to answer a copied request.",
            SHADOW_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_difference = Histogram(
            "fleetshift_shadow_abs_difference",
            "Per row, the absolute difference of the shadow's prediction from production's "
            "for the same request (the largest over a row's outputs).",
            SHADOW_LABELS,
            buckets=DIFFERENCE_BUCKETS,
            registry=r,
        )
        self.shadow_rows = Counter(
            "fleetshift_shadow_compared_rows",
            "Rows answered by both production and a shadow, and compared.",
            SHADOW_LABELS,
            registry=r,
        )
        self.shadow_disagreements = Counter(
            "fleetshift_shadow_disagreements",
            "Compared rows whose predicted class differs (a score on either side of the "
            "threshold, or another arg-max).",
            SHADOW_LABELS,
            registry=r,
        )
        self.forwarded = Counter(
            "fleetshift_forwarded_requests",
            "Requests naming another variant (TargetVariant) sent on to it, by outcome "
            "(answered, refused, timeout, unreachable); the target counts the invocation.",
            (*LABELS, "target_variant", "outcome"),
            registry=r,
        )
        self.pipeline_step_latency = Histogram(
            "fleetshift_pipeline_step_latency_seconds",
            "Time one step of a serial inference pipeline took for a request, by step "
            "(the runtime's model step: decoding, predicting and encoding).",
            (*LABELS, "step"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pipeline_step_errors = Counter(
            "fleetshift_pipeline_step_errors",
            "Requests a serial inference pipeline step failed, by step and reason (4xx, "
            "5xx, timeout, unreachable, bad_answer).",
            (*LABELS, "step", "reason"),
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
        self.model_disk_bytes_child = self.model_disk_bytes.labels(**base)
        self.model_disk_evictions_child = self.model_disk_evictions.labels(**base)
        self._by_model: dict[str, tuple[Any, Any, Any]] = {}
        self._model_labels: set[str] = set()
        self.tally = RequestTally(self)
        """The per-request metrics, counted in plain Python (the hot path's)."""

    def capture_written(self, records: int) -> None:
        self.captured.labels(**self.labels).inc(records)

    def capture_dropped(self, reason: str, records: int) -> None:
        self.capture_lost.labels(**self.labels, reason=reason).inc(records)

    def pipeline_step(self, step: str) -> Any:
        """The latency histogram child of one pipeline step, bound once."""
        return self.pipeline_step_latency.labels(**self.labels, step=step)

    def pipeline_step_error(self, step: str, reason: str) -> None:
        self.pipeline_step_errors.labels(**self.labels, step=step, reason=reason).inc()

    def _shadow(self, target: Any) -> dict[str, str]:
        return {**self.labels, "shadow": target.variant, "shadow_revision": target.revision}

    def shadow_copy(self, target: Any, outcome: str) -> None:
        """Count a copy for the shadow ``target`` (a ``mirror.ShadowTarget``)."""
        self.shadow_copies.labels(**self._shadow(target), outcome=outcome).inc()

    def shadow_latency(self, target: Any, seconds: float) -> None:
        self.shadow_latency_seconds.labels(**self._shadow(target)).observe(seconds)

    def shadow_compared(self, target: Any, comparison: Any) -> None:
        """Add a ``mirror.PairedComparison``: its rows' differences in bulk."""
        labels = self._shadow(target)
        differences = comparison.differences[np.isfinite(comparison.differences)]
        total, buckets = _histogram_values(
            self.shadow_difference.labels(**labels), DIFFERENCE_BUCKETS
        )
        counts = np.bincount(
            np.searchsorted(DIFFERENCE_BUCKETS, differences, side="left"),
            minlength=len(buckets),
        )
        for bucket, count in zip(buckets, counts.tolist(), strict=True):
            if count:
                bucket.inc(count)
        total.inc(float(differences.sum()))
        self.shadow_rows.labels(**labels).inc(comparison.rows)
        # Incremented by 0 too: a shadow that always agrees exports 0, not nothing, so
        # its ShadowDisagreement alarm reads 0% and not "no data".
        self.shadow_disagreements.labels(**labels).inc(comparison.disagreements)

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
