"""Runtime settings, read from ``FLEETSHIFT_*`` environment variables.

Every field's docstring is its documentation; ``runtime/README.md`` lists them.

>>> s = RuntimeSettings(model_uri="/models/churn")
>>> (s.port, s.metrics_port, s.multi_model)
(8080, 9090, False)
>>> s.metric_labels()
{'namespace': '', 'endpoint': '', 'variant': '', 'revision': ''}
"""

from __future__ import annotations

import math
import os
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


def parse_buckets(text: str) -> tuple[float, ...] | None:
    """Histogram bounds from ``0,10,100``; None for an empty text; a ValueError that says
    what is wrong otherwise.

    >>> parse_buckets("0, 10,100")
    (0.0, 10.0, 100.0)
    >>> parse_buckets("1,0")
    Traceback (most recent call last):
    ...
    ValueError: output buckets '1,0': expected finite bounds in increasing order
    """
    if not text.strip():
        return None
    try:
        bounds = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"output buckets {text!r}: expected numbers separated by commas") from None
    if list(bounds) != sorted(set(bounds)) or not all(map(math.isfinite, bounds)):
        raise ValueError(f"output buckets {text!r}: expected finite bounds in increasing order")
    return bounds


def _default_predict_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


class RuntimeSettings(BaseSettings):
    """All knobs of the runtime. Env prefix ``FLEETSHIFT_``, e.g. ``FLEETSHIFT_PORT``."""

    model_config = SettingsConfigDict(
        env_prefix="FLEETSHIFT_", extra="ignore", use_attribute_docstrings=True
    )

    model_uri: str = ""
    """Where the model is: a path, ``file://``, ``http(s)://`` or ``s3://bucket/key``.
    In multi-model mode, the prefix under which ``TargetModel`` names are resolved."""

    model_name: str = "model"
    """Name of the single model in the Open Inference Protocol (``/v2/models/{name}``)."""

    model_sha256: str = ""
    """Optional hex sha256 of the artifact file (single-model mode), checked on every
    load, cached or not; a mismatch fails the load."""

    multi_model: bool = False
    """Serve many models under ``model_uri``, picked per request by the
    ``X-Amzn-SageMaker-Target-Model`` header (SageMaker's ``TargetModel``)."""

    host: str = "0.0.0.0"  # noqa: S104 - the conventional bind address inside a container
    """Address to bind. Inside a container ``0.0.0.0``; tests pass ``127.0.0.1``."""

    port: int = Field(default=8080, ge=1, le=65535)
    """Port of the inference API (SageMaker and Open Inference Protocol)."""

    grpc_port: int = Field(default=0, ge=0, le=65535)
    """Port of the Open Inference Protocol over gRPC (``inference.GRPCInferenceService``),
    bound on ``host`` beside the REST port; 0 (the default) leaves gRPC off."""

    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Port of the Prometheus ``/metrics`` endpoint; 0 disables it."""

    workers: int = Field(default=1, ge=1, le=64)
    """Number of server processes sharing the port. Each loads its own copy of the model."""

    predict_threads: int = Field(default_factory=_default_predict_threads, ge=1)
    """OpenMP threads per worker for one prediction call. Defaults to the CPUs this
    process may run on, divided by ``workers``."""

    namespace: str = ""
    """Kubernetes namespace of the pod; a label on every metric."""

    endpoint: str = ""
    """Name of the Fleetshift Endpoint; a label on every metric."""

    variant: str = ""
    """Production variant name; a label on every metric."""

    revision: str = ""
    """Revision of the Endpoint spec this pod serves; a label on every metric."""

    num_features: int | None = Field(default=None, ge=1)
    """The endpoint's declared input width. Requests are validated against it (a
    different width is a 400). When unset, the model's own feature count is the
    contract. A model that cannot serve the declared width fails invocations with 5xx
    (see README: the incompatible-model mechanism)."""

    max_request_bytes: int = Field(default=6 * MIB, ge=1)
    """Largest accepted request body; larger bodies get 413. SageMaker's limit is 6 MB."""

    max_batch_rows: int = Field(default=8192, ge=1)
    """Upper bound on rows predicted together when concurrent requests are coalesced."""

    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest accepted request line and headers; larger ones get 431 and the connection
    is closed."""

    header_timeout_seconds: float = Field(default=10.0, gt=0)
    """Time a client has to send a request's headers, from its connection (or the end
    of the previous response); then 408 and the connection is closed."""

    body_timeout_seconds: float = Field(default=60.0, gt=0)
    """Time a client has to send a request's body after its headers; then 408 and the
    connection is closed."""

    max_connections: int = Field(default=0, ge=0)
    """Most open connections per worker process; 0 means 1000, or fewer when the
    open-file limit would leave less than 64 descriptors free. Beyond it, a new
    connection closes the one that has waited longest for its request headers (a slow
    client), or gets a 503 when every connection is busy."""

    max_connection_age_seconds: float = Field(default=30.0, ge=0)
    """How long a keep-alive connection is reused. The first response after it has been
    open this long carries ``Connection: close`` and the connection ends after it; the
    client reconnects and kube-proxy picks a backend again, so a client that keeps its
    connections open follows a traffic shift (a canary's share, a rollback) within this
    time instead of staying on the pod it first reached. 0: reuse for ever."""

    inline_body_bytes: int = Field(default=64 * 1024, ge=0)
    """Bodies up to this size are parsed, predicted and encoded on the event loop (the
    fast path: a 100-row request is ~20 KB); larger ones in a worker thread, so the
    health probes keep answering while they are worked on."""

    inline_rows: int = Field(default=8192, ge=1)
    """Coalesced predictions of more rows than this run in a worker thread, not on the
    event loop."""

    worker_threads: int = Field(default=2, ge=1)
    """Threads per worker process for large bodies and large predictions."""

    fast_predict: bool = True
    """Load and predict through ``libxgboost``'s C API directly, without importing the
    ``xgboost`` Python package: a faster start, less memory and ~170 µs less per call,
    with the same answers. False loads the model with the package and predicts with
    ``inplace_predict``."""

    compiled_predict: bool = True
    """After loading, compile the trees to C with the system compiler (``cc``) in the
    background and switch to them once they match XGBoost's prediction within 1e-6 on a
    validation set. Without a compiler, or for an unsupported model, XGBoost serves."""

    trees_library: str = ""
    """A prebuilt forest library (``python -m fleetshift_runtime.models.compiled OUT.so``,
    as the image's build stage runs). When set, the compiled trees walk the model's
    tables with it instead of building C for the model, so no compiler is needed at run
    time. The same 1e-6 validation applies; the file and its folder must belong to root
    or the server's user and be writable by no one else."""

    allow_pickle: bool = False
    """Allow loading pickle/joblib model files. Off: unpickling runs arbitrary code."""

    max_unpacked_bytes: int = Field(default=2048 * MIB, ge=1)
    """Size limit for everything extracted from a ``model.tar.gz``."""

    max_archive_members: int = Field(default=1000, ge=1)
    """Limit on the number of entries in a ``model.tar.gz``."""

    max_download_bytes: int = Field(default=4096 * MIB, ge=1)
    """Size limit of one downloaded artifact."""

    download_retries: int = Field(default=4, ge=0)
    """How many times a failed download is retried (connection errors, 5xx, 429, a
    sha256 mismatch), with exponential backoff."""

    download_backoff_seconds: float = Field(default=0.5, ge=0)
    """First backoff delay between download attempts; doubles every retry."""

    download_timeout_seconds: float = Field(default=60.0, gt=0)
    """Connect/read timeout of one download attempt."""

    cache_dir: str = ""
    """Where downloaded and unpacked models are kept. Default: a folder under the
    system temp dir (the only writable place on a read-only root filesystem)."""

    s3_endpoint_url: str = ""
    """S3-compatible endpoint, e.g. ``http://minio.storage:9000``. Falls back to
    ``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``, then AWS itself."""

    s3_region: str = ""
    """Region for request signing. Falls back to ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
    then ``us-east-1``."""

    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """``path`` (``endpoint/bucket/key``) or ``virtual`` (``bucket.endpoint/key``);
    ``auto`` uses path style for a custom endpoint and virtual style for AWS."""

    ca_bundle: str = ""
    """PEM file of extra CA certificates for https model sources (private CAs)."""

    max_loaded_models: int = Field(default=32, ge=1)
    """Multi-model mode: most models kept in memory; the least recently used is evicted."""

    max_model_labels: int = Field(default=100, ge=1)
    """Multi-model mode: most distinct values of the metrics' ``model`` label; requests
    to further models are counted under ``model="_other"``."""

    model_memory_budget_bytes: int = Field(default=1024 * MIB, ge=1)
    """Multi-model mode: budget for loaded models, estimated by their file size; the
    least recently used models are evicted to stay within it."""

    model_disk_budget_bytes: int = Field(default=4096 * MIB, ge=1)
    """Multi-model mode: budget for downloaded and unpacked models in ``cache_dir``; the
    least recently used are deleted to stay within it (and downloaded again on their
    next load). A model bigger than it is refused with a 413."""

    output_buckets: str = ""
    """Bounds of the prediction histogram (``fleetshift_prediction``), comma-separated and
    increasing, e.g. ``0,10,100,1000`` for a regression; empty: twelve buckets for
    probabilities, from 0.05 to 1."""

    @field_validator("output_buckets")
    @classmethod
    def _check_output_buckets(cls, text: str) -> str:
        parse_buckets(text)
        return text

    def prediction_buckets(self) -> tuple[float, ...] | None:
        """``output_buckets`` as numbers (None: the default)."""
        return parse_buckets(self.output_buckets)

    capture_destination: str = ""
    """Data capture: where sampled request and response pairs go, as JSON lines, an
    ``s3://bucket/prefix`` or a folder (a PVC mount). Empty: nothing is captured."""

    capture_sampling_percent: int = Field(default=100, ge=0, le=100)
    """The share of requests answered 200 that are captured."""

    capture_request: bool = True
    """Capture the request's body."""

    capture_response: bool = True
    """Capture the response's body."""

    capture_content_types: str = ""
    """Capture only requests of these media types, comma-separated (e.g.
    ``text/csv,application/json``); empty: every type."""

    capture_max_records: int = Field(default=1000, ge=1)
    """Records waiting to be written; past this a record is dropped and counted."""

    capture_flush_seconds: float = Field(default=5.0, gt=0)
    """A batch is written at least this often."""

    capture_max_object_bytes: int = Field(default=4 * MIB, ge=1024)
    """A batch is written as soon as its bodies reach this size."""

    mirror_file: str = ""
    """Shadow variants (Replicas router): a JSON file naming the shadows to copy sampled
    requests to, written by the operator into a ConfigMap mounted in the pod, read again
    when it changes. Empty: nothing is copied."""

    mirror_queue: int = Field(default=64, ge=1)
    """Copies waiting for a shadow; past this a copy is dropped and counted, never
    waited for."""

    mirror_queue_bytes: int = Field(default=32 * MIB, ge=1024)
    """Request bodies waiting for a shadow, in bytes; past this a copy is dropped and
    counted (one larger copy alone still waits when none other does)."""

    mirror_timeout_seconds: float = Field(default=2.0, gt=0)
    """How long a shadow has to answer a copy before it counts as a timeout."""

    mirror_connections: int = Field(default=2, ge=1, le=64)
    """Copies in flight at once to each shadow (one keep-alive connection each)."""

    forward_timeout_seconds: float = Field(default=60.0, gt=0)
    """How long a request that names another variant (``X-Amzn-SageMaker-Target-Variant``,
    Replicas router) may take at that variant before the caller gets a 504."""

    mirror_threshold: float = 0.5
    """A one-score prediction's class boundary when a shadow's answers are compared with
    production's (a multi-output row's class is its arg-max)."""

    pipeline: str = ""
    """A serial inference pipeline (SageMaker's inference pipeline): the steps of this pod,
    in order, as JSON, e.g. ``[{"name": "scale", "port": 8081}, {"name": "model"}]``. A step
    with a ``port`` is a container of the pod serving ``/ping`` and ``/invocations`` on
    ``127.0.0.1:<port>``; the one step without is this runtime's model. A step may declare
    the ``contentType`` it is sent and the ``accept`` it is asked for. ``/invocations``
    sends each step's answer to the next and returns the last; ``/ping`` is 200 only when
    every step's is. Written by the operator from ``variants[].pipeline``; empty: no
    pipeline (docs/pipelines.md)."""

    @field_validator("pipeline")
    @classmethod
    def _check_pipeline(cls, text: str) -> str:
        from .pipeline import parse_pipeline  # noqa: PLC0415 - settings stay light

        parse_pipeline(text)
        return text

    pipeline_step_timeout_seconds: float = Field(default=60.0, gt=0)
    """How long one pipeline step may take to answer before the caller gets a 504 naming
    it."""

    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """Event loop implementation: ``uvloop`` (faster) or the standard ``asyncio`` loop.
    Either way the runtime sets TCP_NODELAY on every connection (see README)."""

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """Log level of the runtime and of uvicorn."""

    def metric_labels(self) -> dict[str, str]:
        """The four labels every metric carries, from the pod's environment. There is no
        blue/green label: a pod's role changes when a deployment ends, its revision never
        does, so alarms select fleets by revision."""
        return {
            "namespace": self.namespace,
            "endpoint": self.endpoint,
            "variant": self.variant,
            "revision": self.revision,
        }

    def threads_per_worker(self) -> int:
        """OpenMP threads for one prediction call in one worker process."""
        if "predict_threads" in self.model_fields_set:
            return self.predict_threads
        return max(1, self.predict_threads // self.workers)
