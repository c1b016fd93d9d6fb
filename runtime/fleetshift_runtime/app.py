"""The ASGI application: SageMaker and Open Inference Protocol v2 on one port.

The hot routes (``POST /invocations``, ``POST /v2/models/{name}/infer`` and the health
probes) are plain ASGI handlers that read the raw body: no request object, no
validation layer, no middleware, which roughly halves the per-request cost compared
with a FastAPI route. Everything else (metadata, OpenAPI docs) is a FastAPI app behind
them. ``create_app()`` is the factory uvicorn runs.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .batching import Batcher
from .capture import Captured, DataCapture, make_capture
from .codecs import (
    DECODERS,
    ENCODERS,
    OipRequest,
    decode_in_pieces,
    encode_oip,
    oip_model_name,
    parse_oip,
    parse_oip_in_pieces,
    request_format,
    response_format,
)
from .disk_budget import DiskBudget, ModelTooLargeError
from .errors import (
    ModelFaultError,
    ModelLoadError,
    ModelNotFoundError,
    NotAModelError,
    NotReadyError,
    RequestError,
)
from .metrics import OUTPUT_BUCKETS, PUSH_INTERVAL_SECONDS, RuntimeMetrics, multiprocess_dir
from .mirror import Copy, Mirror
from .models.base import Model, Predictions, Rows
from .models.loading import load_model
from .models.multi import ModelCache, check_target_model
from .pipeline import Pipeline, StepError, error_body, parse_pipeline
from .settings import RuntimeSettings
from .sources import is_remote, join_uri, local_path, source_options

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("fleetshift_runtime")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TARGET_MODEL_HEADER = b"x-amzn-sagemaker-target-model"
TARGET_VARIANT_HEADER = b"x-amzn-sagemaker-target-variant"
_FORWARDED_HEADERS = (
    b"content-type",
    b"accept",
    b"x-request-id",
    TARGET_MODEL_HEADER,
    TARGET_VARIANT_HEADER,
    b"inference-header-content-length",
)
_JSON = b"application/json"
_WANTED_HEADERS = frozenset(
    {
        b"content-type",
        b"content-length",
        b"accept",
        b"x-request-id",
        TARGET_MODEL_HEADER,
        TARGET_VARIANT_HEADER,
        b"inference-header-content-length",
        b"expect",
    }
)
_MAX_REQUEST_ID = 128
_HEALTH_ROUTES = frozenset({"/ping", "/v2/health/ready", "/v2/health/live"})
GIL_SWITCH_SECONDS = 0.001

exit_code = 0
"""Set to 1 when the model fails to load; ``__main__`` exits with it."""


@dataclass
class SingleModelState:
    """Where the one model of single-model mode is in its life."""

    status: Literal["loading", "ready", "failed"] = "loading"
    model: Model | None = None
    reason: str = "the model is loading"


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class _ClientGoneError(Exception):
    """The client disconnected before sending its whole body."""


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k: v for k, v in scope["headers"] if k in _WANTED_HEADERS}


async def _send(  # noqa: PLR0917 - the hot path avoids keyword-argument overhead
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    request_id: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id),
    ]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error_body(reason: str, request_id: bytes) -> bytes:
    return orjson.dumps({"error": reason, "request_id": request_id.decode()})


class Runtime:
    """The ASGI callable: hot routes here, the rest in a FastAPI app."""

    def __init__(self, settings: RuntimeSettings, metrics: RuntimeMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or RuntimeMetrics(
            settings.metric_labels(),
            max_model_labels=settings.max_model_labels,
            output_buckets=settings.prediction_buckets() or OUTPUT_BUCKETS,
        )
        self.pool = ThreadPoolExecutor(
            settings.worker_threads, thread_name_prefix="fleetshift", initializer=_yield_to_the_loop
        )
        """Large bodies and large predictions run here, off the event loop."""
        self.batcher = Batcher(
            settings.max_batch_rows, inline_rows=settings.inline_rows, executor=self.pool
        )
        self._inline_bytes = settings.inline_body_bytes
        self.single = SingleModelState()
        self.cache: ModelCache | None = None
        self.disk_budget: DiskBudget | None = None
        """Multi-model mode: the source cache's disk LRU (``disk_budget.py``)."""
        if settings.multi_model:
            self.cache = ModelCache(
                self._load_target,
                max_models=settings.max_loaded_models,
                max_bytes=settings.model_memory_budget_bytes,
                metrics=self.metrics,
            )
            self.disk_budget = DiskBudget(
                source_options(settings).cache_dir,
                settings.model_disk_budget_bytes,
                on_evict=lambda _path, _size: self.metrics.model_disk_evictions_child.inc(),
                on_usage=self.metrics.model_disk_bytes_child.set,
            )
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()
        self._fastapi: FastAPI | None = None
        self.capture: DataCapture | None = make_capture(settings, self.metrics, self.pool)
        """Sampled request and response pairs (``FLEETSHIFT_CAPTURE_DESTINATION``)."""
        self.mirror: Mirror | None = None
        """Copies of sampled requests to shadow variants (``FLEETSHIFT_MIRROR_FILE``)."""
        if settings.mirror_file:
            self.mirror = Mirror(
                Path(settings.mirror_file),
                self.metrics,
                queue_size=settings.mirror_queue,
                queue_bytes=settings.mirror_queue_bytes,
                timeout_seconds=settings.mirror_timeout_seconds,
                connections=settings.mirror_connections,
                threshold=settings.mirror_threshold,
                variant=settings.variant,
                executor=self.pool,
            )
        self.pipeline: Pipeline | None = None
        """The steps of a serial inference pipeline (``FLEETSHIFT_PIPELINE``)."""
        if settings.pipeline:
            self.pipeline = Pipeline(
                parse_pipeline(settings.pipeline),
                self.metrics,
                settings.pipeline_step_timeout_seconds,
            )
        self.grpc_server: Any = None
        """The Open Inference Protocol's gRPC server (``FLEETSHIFT_GRPC_PORT``), once
        started."""
        self.answered_by: list[tuple[bytes, bytes]] = [
            (name, value.encode())
            for name, value in (
                (b"x-amzn-invoked-production-variant", settings.variant),
                (b"x-fleetshift-revision", settings.revision),
            )
            if value
        ]
        """Response headers of ``/invocations`` naming who answered: SageMaker's variant
        header, and the revision (a caller behind kube-proxy cannot otherwise tell which
        fleet served it)."""
        self.on_fatal: Callable[[], None] = _terminate_self
        """Called when the model cannot load: stops the server (``__main__`` sets it)."""

    # --- ASGI entry ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path == "/invocations":
                if scope["method"] == "POST":
                    await self.invocations(scope, receive, send)
                else:
                    await self._not_allowed(send, "POST")
                return
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                if scope["method"] == "POST":
                    await self.oip_infer(scope, receive, send, path)
                else:
                    await self._not_allowed(send, "POST")
                return
            if path in _HEALTH_ROUTES:
                if scope["method"] not in ("GET", "HEAD"):
                    await self._not_allowed(send, "GET, HEAD")
                elif path == "/v2/health/live":
                    await _send(send, 200, b'{"live":true}', _JSON, self._request_id(scope))
                else:
                    await self._readiness(send)
                return
            await self._cold_route(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # pragma: no cover - websockets are not served
            await self.fastapi(scope, receive, send)

    async def _cold_route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a FastAPI route, adding the request id header to its response."""
        request_id = self._request_id(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        await self.fastapi(scope, receive, send_with_id)

    @property
    def fastapi(self) -> FastAPI:
        """The FastAPI app of the cold routes, built on first use: importing FastAPI
        takes a third of the start-up time, and predictions never need it."""
        if self._fastapi is None:
            from .metadata import metadata_app  # noqa: PLC0415 - deferred on purpose

            self._fastapi = metadata_app(self)
        return self._fastapi

    async def _not_allowed(self, send: Send, allowed: str) -> None:
        rid = self._new_id()
        body = _error_body(f"method not allowed; use {allowed}", rid)
        await _send(send, 405, body, _JSON, rid, [(b"allow", allowed.encode())])

    def _new_id(self) -> bytes:
        return f"{self._id_prefix}-{next(self._ids):x}".encode()

    def _request_id(self, scope: Scope, given: bytes | None = None) -> bytes:
        if given is None:
            for key, value in scope["headers"]:
                if key == b"x-request-id":
                    given = value
                    break
        if (
            given
            and len(given) <= _MAX_REQUEST_ID
            and given.isascii()
            and given.decode().isprintable()
        ):
            return given
        return self._new_id()

    # --- lifespan and loading -------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # A thread parsing a large body holds the GIL for up to this long before
                # the event loop gets it back: 1 ms instead of 5 keeps the probes prompt.
                sys.setswitchinterval(GIL_SWITCH_SECONDS)
                self.start_loading()
                if multiprocess_dir():
                    self._in_background(self._push_metrics_periodically())
                if self.mirror is not None:
                    self._in_background(self.mirror.run())
                if self.capture is not None:
                    self._in_background(self.capture.run())
                if self.settings.grpc_port:
                    from .oip_grpc.server import start_grpc  # noqa: PLC0415 - only when on

                    self.grpc_server = await start_grpc(self)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.grpc_server is not None:
                    from .oip_grpc.server import STOP_GRACE_SECONDS  # noqa: PLC0415

                    await self.grpc_server.stop(STOP_GRACE_SECONDS)
                if self.capture is not None:
                    await self.capture.flush()  # what is buffered is not lost on a stop
                for task in self._background:
                    task.cancel()
                if self.pipeline is not None:
                    self.pipeline.close()
                self.metrics.tally.push()
                self.pool.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start_loading(self) -> None:
        """Single-model mode: load in the background; multi-model mode: nothing to do."""
        if self.cache is not None:
            self.single.status = "ready"
            self.single.reason = ""
            _freeze_what_is_loaded()
            return
        self._in_background(self._load_single())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _push_metrics_periodically(self) -> None:
        """A worker of several: the parent serves ``/metrics`` from the workers' files,
        so the tally is pushed into them on a clock (a single process pushes on scrape)."""
        while True:
            await asyncio.sleep(PUSH_INTERVAL_SECONDS)
            self.metrics.tally.push()

    async def _load_single(self) -> None:
        settings = self.settings
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(
                load_model,
                settings.model_uri,
                name=settings.model_name,
                settings=settings,
                sha256=settings.model_sha256,
            )
        except Exception as error:
            self.single.status = "failed"
            self.single.reason = f"model failed to load: {error}"
            log.error("%s", self.single.reason)
            global exit_code  # noqa: PLW0603 - read by __main__ after the server stops
            exit_code = 1
            self.on_fatal()
            return
        self.metrics.model_load.labels(**self.metrics.labels, model=settings.model_name).observe(
            time.perf_counter() - started
        )
        self.metrics.loaded_models_child.set(1)
        self.single.model = model
        self.single.status = "ready"
        self.single.reason = ""
        _freeze_what_is_loaded()

    def _load_target(self, name: str) -> Model:
        prefix = self.settings.model_uri
        return load_model(
            join_uri(prefix, name),
            name=name,
            settings=self.settings,
            within=None if is_remote(prefix) else local_path(prefix),
            budget=self.disk_budget,
        )

    async def _readiness(self, send: Send) -> None:
        rid = self._new_id()
        if self.single.status == "ready" and self.pipeline is not None:
            reason = await self.pipeline.unready()
            if reason is not None:
                body = orjson.dumps({"ready": False, "error": reason})
                await _send(send, 503, body, _JSON, rid)
                return
        if self.single.status == "ready":
            await _send(send, 200, b'{"ready":true}', _JSON, rid)
        else:
            body = orjson.dumps({"ready": False, "error": self.single.reason})
            await _send(send, 503, body, _JSON, rid)

    async def resolve_model(self, name: str | None) -> Model:
        """The model a request addresses, loading it in multi-model mode."""
        if self.cache is None:
            if name is not None and name != self.settings.model_name:
                raise RequestError(
                    404,
                    f"model {name[:100]!r} not found; this server serves "
                    f"{self.settings.model_name!r}",
                )
            model = self.single.model
            if model is None:
                raise NotReadyError(self.single.reason)
            return model
        if name is None:
            raise RequestError(
                400,
                "multi-model endpoint: name the model in the X-Amzn-SageMaker-Target-Model "
                "header (e.g. 'churn/v3/model.tar.gz')",
            )
        check_target_model(name)
        try:
            model, _ = await self.cache.get(name)
        except ModelNotFoundError:
            raise RequestError(404, f"target model {name!r} not found under the prefix") from None
        except ModelTooLargeError as error:
            log.warning("target model %r does not fit the disk budget: %s", name, error)
            raise RequestError(
                413,
                f"target model {name!r} does not fit: {error.public} "
                "(model.multiModel.diskBudgetMiB, FLEETSHIFT_MODEL_DISK_BUDGET_BYTES)",
            ) from None
        except NotAModelError as error:
            log.info("target model %r is not a model: %s", name, error)
            raise RequestError(
                404, f"target model {name!r} is not a model: {error.public}"
            ) from None
        except ModelLoadError as error:
            log.error("target model %r could not be loaded: %s", name, error)
            raise ModelFaultError(
                f"target model {name!r} could not be loaded; the server log says why"
            ) from None
        return model

    def width_for(self, model: Model) -> int:
        """The endpoint's input contract: ``FLEETSHIFT_NUM_FEATURES``, else the model's."""
        return self.settings.num_features or model.num_features

    # --- SageMaker ------------------------------------------------------------------

    async def invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /invocations``: CSV, JSON or JSON Lines in; ``Accept`` picks the output."""
        started = time.perf_counter()
        headers = _headers(scope)
        rid = self._request_id(scope, headers.get(b"x-request-id"))
        if (
            self.mirror is not None
            and TARGET_VARIANT_HEADER in headers
            and await self._forwarded(b"/invocations", headers, receive, send, rid)
        ):
            return
        if self.pipeline is not None:
            await self._pipeline_invocations(self.pipeline, receive, send, headers, rid, started)
            return
        self.metrics.tally.started()
        model_seconds: float | None = None
        label = ""
        target = headers.get(TARGET_MODEL_HEADER)
        try:
            body = await _read_body(receive, headers, self.settings.max_request_bytes)
            in_format = request_format(headers.get(b"content-type", b"").decode("latin-1"))
            out_format = response_format(headers.get(b"accept", b"").decode("latin-1"), in_format)
            name = target.decode("latin-1") if target is not None else None
            model = await self.resolve_model(name)
            label = model.name
            decode, encode = DECODERS[in_format], ENCODERS[out_format]
            if len(body) <= self._inline_bytes:
                rows = decode(body, self.width_for(model))
                predictions, model_seconds = await self.batcher.submit(model, rows)
                payload = encode(predictions)
            else:
                (
                    payload,
                    model_seconds,
                    predictions,
                ) = await asyncio.get_running_loop().run_in_executor(
                    self.pool,
                    _decode_predict_encode,
                    decode,
                    encode,
                    body,
                    self.width_for(model),
                    model,
                )
            status, content_type = 200, out_format
        except _ClientGoneError:
            self.metrics.tally.gone()
            return
        except Exception as error:
            status, reason = status_for(error, rid)
            payload, content_type = _error_body(reason, rid), "application/json"
        await _send(send, status, payload, content_type.encode(), rid, self.answered_by)
        self._record(label, status, started, model_seconds)
        if status == 200:
            self.metrics.tally.predicted(predictions)
            if self.capture is not None:
                request_type = headers.get(b"content-type", b"")
                self.capture.offer(
                    request_type,
                    lambda: Captured(
                        time.time(), rid, label, request_type, body, content_type.encode(), payload
                    ),
                )
        if self.mirror is not None and status == 200:
            self.mirror.offer(
                Copy(b"/invocations", headers.get(b"content-type", b""), body, predictions, target)
            )

    # --- serial inference pipelines ---------------------------------------------------

    async def _pipeline_invocations(  # noqa: PLR0917 - one caller, the hot route
        self,
        pipeline: Pipeline,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        rid: bytes,
        started: float,
    ) -> None:
        """``POST /invocations`` through every step of the pipeline (``pipeline.py``)."""
        self.metrics.tally.started()
        model_seconds: float | None = None
        label = ""
        target = headers.get(TARGET_MODEL_HEADER)
        try:
            body = await _read_body(receive, headers, self.settings.max_request_bytes)
            model = await self.resolve_model(
                target.decode("latin-1") if target is not None else None
            )
            label = model.name
            answer = await pipeline.run(
                body,
                headers.get(b"content-type", b"").decode("latin-1"),
                headers.get(b"accept", b"").decode("latin-1"),
                rid,
                functools.partial(self._model_step, model),
            )
            payload = answer.body
            content_type = (answer.content_type or "application/octet-stream").encode("latin-1")
            predictions, model_seconds = answer.predictions, answer.model_seconds
            status = 200
        except _ClientGoneError:
            self.metrics.tally.gone()
            return
        except StepError as error:
            if error.status is None and error.cause is not None:
                status, reason = status_for(error.cause, rid)
                reason = f"step {error.step!r}: {reason}"
            else:
                status, reason = error.status or 502, error.reason
            payload, content_type = error_body(error, reason, rid), _JSON
        except Exception as error:
            status, reason = status_for(error, rid)
            payload, content_type = _error_body(reason, rid), _JSON
        await _send(send, status, payload, content_type, rid, self.answered_by)
        self._record(label, status, started, model_seconds)
        if status != 200:
            return
        self.metrics.tally.predicted(predictions)
        request_type = headers.get(b"content-type", b"")
        if self.capture is not None:
            self.capture.offer(
                request_type,
                lambda: Captured(
                    time.time(), rid, label, request_type, body, content_type, payload
                ),
            )
        if self.mirror is not None:
            self.mirror.offer(Copy(b"/invocations", request_type, body, predictions, target))

    async def _model_step(
        self, model: Model, body: bytes, content_type: str, accept: str
    ) -> tuple[bytes, str, Predictions, float]:
        """The runtime's model as one step of a pipeline: ``/invocations``' decoding,
        prediction and encoding, with the content types the pipeline gives."""
        in_format = request_format(content_type)
        out_format = response_format(accept, in_format)
        decode, encode = DECODERS[in_format], ENCODERS[out_format]
        if len(body) <= self._inline_bytes:
            rows = decode(body, self.width_for(model))
            predictions, model_seconds = await self.batcher.submit(model, rows)
            return encode(predictions), out_format, predictions, model_seconds
        payload, model_seconds, predictions = await asyncio.get_running_loop().run_in_executor(
            self.pool, _decode_predict_encode, decode, encode, body, self.width_for(model), model
        )
        return payload, out_format, predictions, model_seconds

    def _record(self, label: str, status: int, started: float, model_seconds: float | None) -> None:
        overhead = time.perf_counter() - started
        if model_seconds is not None:
            overhead -= model_seconds
        self.metrics.tally.answered(
            label, status, model_seconds=model_seconds, overhead_seconds=max(overhead, 0.0)
        )

    # --- TargetVariant ----------------------------------------------------------------

    async def _forwarded(
        self,
        path: bytes,
        headers: dict[bytes, bytes],
        receive: Receive,
        send: Send,
        rid: bytes,
    ) -> bool:
        """Answer a request that names another variant by sending it there (Replicas
        router: the stable Service spreads requests over every variant's pods). False:
        the request is for this pod's variant, serve it here."""
        assert self.mirror is not None
        variant = headers[TARGET_VARIANT_HEADER].decode("latin-1")
        url = self.mirror.forward_url(variant)
        if url is None:
            return False
        extra: list[tuple[bytes, bytes]] = []
        content_type = _JSON
        try:
            if not url:
                known = ", ".join(sorted(self.mirror.variants))
                raise RequestError(400, f"this endpoint has no variant {variant!r}; it has {known}")
            body = await _read_body(receive, headers, self.settings.max_request_bytes)
            forwarded = [(name, headers[name]) for name in _FORWARDED_HEADERS if name in headers]
            status, answer_headers, payload = await asyncio.wait_for(
                self.mirror.forward(url, path, forwarded, body),
                self.settings.forward_timeout_seconds,
            )
            content_type = answer_headers.get(b"content-type", _JSON)
            if b"inference-header-content-length" in answer_headers:
                extra.append(
                    (
                        b"inference-header-content-length",
                        answer_headers[b"inference-header-content-length"],
                    )
                )
            outcome = "answered"
        except _ClientGoneError:
            return True
        except RequestError as error:
            status, payload, outcome = error.status, _error_body(error.reason, rid), "refused"
        except TimeoutError:
            reason = f"variant {variant!r} did not answer within the forward timeout"
            status, payload, outcome = 504, _error_body(reason, rid), "timeout"
        except (OSError, ConnectionError, ValueError, IndexError, asyncio.IncompleteReadError):
            reason = f"variant {variant!r} could not be reached"
            status, payload, outcome = 502, _error_body(reason, rid), "unreachable"
        await _send(send, status, payload, content_type, rid, extra)
        self.metrics.forwarded.labels(
            **self.metrics.labels,
            target_variant=variant if url else "",
            outcome=outcome,
        ).inc()
        return True

    # --- Open Inference Protocol ------------------------------------------------------

    async def oip_infer(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """``POST /v2/models/{name}[/versions/{v}]/infer``."""
        started = time.perf_counter()
        headers = _headers(scope)
        rid = self._request_id(scope, headers.get(b"x-request-id"))
        if (
            self.mirror is not None
            and TARGET_VARIANT_HEADER in headers
            and await self._forwarded(path.encode(), headers, receive, send, rid)
        ):
            return
        self.metrics.tally.started()
        model_seconds: float | None = None
        label = ""
        extra: list[tuple[bytes, bytes]] = []
        name = oip_model_name(path)
        try:
            body = await _read_body(receive, headers, self.settings.max_request_bytes)
            if self.pipeline is not None:
                raise self.pipeline.bypassed()
            model = await self.resolve_model(name)
            label = model.name
            header = headers.get(b"inference-header-content-length", b"").decode("latin-1")
            if len(body) <= self._inline_bytes:
                request = parse_oip(body, header, self.width_for(model))
                predictions, model_seconds = await self.batcher.submit(model, request.rows)
                payload, header_length = _encode_oip_answer(predictions, model, request)
            else:
                (
                    payload,
                    header_length,
                    model_seconds,
                    predictions,
                ) = await asyncio.get_running_loop().run_in_executor(
                    self.pool, _oip_off_the_loop, body, header, self.width_for(model), model
                )
            status, content_type = 200, b"application/json"
            if header_length:
                content_type = b"application/octet-stream"
                extra.append((b"inference-header-content-length", str(header_length).encode()))
        except _ClientGoneError:
            self.metrics.tally.gone()
            return
        except Exception as error:
            status, reason = status_for(error, rid)
            payload, content_type = orjson.dumps({"error": reason}), b"application/json"
        await _send(send, status, payload, content_type, rid, extra)
        self._record(label, status, started, model_seconds)
        if status == 200:
            self.metrics.tally.predicted(predictions)
            if self.capture is not None:
                self.capture.offer(
                    b"application/json",
                    lambda: Captured(
                        time.time(), rid, label, b"application/json", body, content_type, payload
                    ),
                )
        if self.mirror is not None and status == 200 and not header:
            self.mirror.offer(Copy(path.encode(), b"application/json", body, predictions, None))


def _freeze_what_is_loaded() -> None:
    """Move every object alive now (modules, the model, the server) out of the garbage
    collector's reach: they live as long as the process. A full collection then walks only
    what requests allocated since, not the few hundred thousand objects of the libraries.

    Measured on gRPC, whose calls allocate enough to set off full collections: an empty
    ``ModelInfer`` handler in the runtime answered ~2,000 calls/s at c=8 without this and
    ~4,800 with it, as in a bare ``grpc.aio`` server."""
    gc.freeze()


WORKER_THREAD_NICENESS = 10
"""How much lower the worker threads' CPU priority is than the event loop's."""


def _yield_to_the_loop() -> None:
    """Lower this worker thread's CPU priority (Linux schedules threads one by one).

    On a full machine the event loop then gets a core as soon as a probe arrives, instead
    of waiting for a thread that parses a large body to use up its time slice.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_THREAD_NICENESS)
    except OSError:  # pragma: no cover - not permitted: keep the default priority
        log.debug("could not lower the worker threads' priority", exc_info=True)


def _decode_predict_encode(
    decode: Callable[[bytes, int], Rows],
    encode: Callable[[Predictions], bytes],
    body: bytes,
    width: int,
    model: Model,
) -> tuple[bytes, float, Predictions]:
    """A large SageMaker request, in a worker thread: the response body, model seconds,
    the predictions."""
    rows = decode_in_pieces(decode, body, width)
    started = time.perf_counter()
    predictions = model.predict(rows)
    elapsed = time.perf_counter() - started
    return encode(predictions), elapsed, predictions


def _encode_oip_answer(
    predictions: Predictions, model: Model, request: OipRequest
) -> tuple[bytes, int]:
    return encode_oip(
        predictions,
        model_name=model.name,
        request_id=request.request_id,
        binary_output=request.binary_output,
    )


def _oip_off_the_loop(
    body: bytes, header: str, width: int, model: Model
) -> tuple[bytes, int, float, Predictions]:
    """A large OIP request, in a worker thread: body, JSON header length, model seconds,
    the predictions."""
    request = parse_oip_in_pieces(body, header, width)
    started = time.perf_counter()
    predictions = model.predict(request.rows)
    elapsed = time.perf_counter() - started
    payload, header_length = _encode_oip_answer(predictions, model, request)
    return payload, header_length, elapsed, predictions


def status_for(error: Exception, request_id: bytes) -> tuple[int, str]:
    """The HTTP status and reason of a failed request (the gRPC service maps it too)."""
    if isinstance(error, RequestError):
        return error.status, error.reason
    if isinstance(error, NotReadyError):
        return 503, f"not ready: {error}"
    if isinstance(error, ModelFaultError):
        log.error("request %s: %s", request_id.decode(), error)
        return 500, str(error)
    if isinstance(error, ModelLoadError):
        log.error("request %s: %s", request_id.decode(), error)
        return 500, f"model could not be loaded: {error}"
    log.exception("request %s failed", request_id.decode(), exc_info=error)
    return 500, f"internal error ({type(error).__name__}); request id {request_id.decode()}"


DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
"""An oversized body up to this size is read and dropped before its 413 is sent."""


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The whole body, or a 413 once it is over ``limit``.

    A client such as Python's ``urllib`` sends the whole body before it reads anything:
    closing the connection on it while it sends makes it see a reset, not the 413. So
    the rest of an oversized body is read and dropped first (up to
    ``DRAIN_LIMIT_BYTES``), unless the client asked ``Expect: 100-continue`` and is
    waiting for our word before sending it.
    """
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= DRAIN_LIMIT_BYTES and not _expects_continue(headers):
            await _drain(receive)
        raise RequestError(
            413,
            f"body is {int(declared)} bytes; the limit is {limit} (FLEETSHIFT_MAX_REQUEST_BYTES)",
        )
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _ClientGoneError
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await _drain(receive, DRAIN_LIMIT_BYTES - size)
            raise RequestError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _expects_continue(headers: dict[bytes, bytes]) -> bool:
    return headers.get(b"expect", b"").lower() == b"100-continue"


async def _drain(receive: Receive, budget: int = DRAIN_LIMIT_BYTES) -> None:
    """Read and drop the rest of a body, at most ``budget`` bytes of it."""
    while budget > 0:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def create_app(settings: RuntimeSettings | None = None) -> Runtime:
    """The uvicorn factory: settings from the environment unless given."""
    resolved = settings or RuntimeSettings()
    logging.basicConfig(
        level=resolved.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if multiprocess_dir():
        log.debug("prometheus multiprocess mode in %s", multiprocess_dir())
    return Runtime(resolved)
