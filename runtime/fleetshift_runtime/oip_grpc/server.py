"""``inference.GRPCInferenceService`` on ``FLEETSHIFT_GRPC_PORT``: the Open Inference
Protocol v2 over gRPC, with REST's decoding, limits, errors and metrics.

**One event loop.** The service is a ``grpc.aio`` server started on the runtime's own
event loop (in the ASGI lifespan), not a thread of its own. A gRPC ``ModelInfer`` then
goes through the REST path: the same decoding, the same models, the same worker threads
for large requests, and the same :class:`RequestTally`, which is counted by the event
loop's thread alone and would need a lock with a second thread. (A small request is
predicted at once rather than through the batcher a loop turn later: ``grpc.aio`` hands
the loop one call per turn, so there is nothing to coalesce, and the extra turn cost
~10% of a 1-row call.) With several workers (``FLEETSHIFT_WORKERS``) every worker binds
the port with ``SO_REUSEPORT`` (gRPC's default on Linux), and the kernel spreads
connections over them, as it does for the REST port.

*Why not a thread of its own:* its calls would then reach the model, the batcher and the
tally from another thread, each hand-over a ``call_soon_threadsafe`` and a wake-up of the
loop; ``grpc.aio`` already polls gRPC's completion queue in a thread and wakes the loop
once per batch of events.

**Messages.** ``ModelInfer`` takes the request's raw bytes (no deserializer in the method
handler), so a request over ``FLEETSHIFT_MAX_REQUEST_BYTES`` is refused by the runtime,
with REST's reason, and counted like REST's 413; gRPC's own receive limit is set above it
(:func:`receive_limit`). The other methods are small and use the generated classes.

**Errors.** A failed call ends with the status REST would answer, mapped to the gRPC code
(:data:`GRPC_CODES`), and REST's reason as its details:

>>> [GRPC_CODES[status].name for status in (400, 404, 413, 500, 503)]
['INVALID_ARGUMENT', 'NOT_FOUND', 'RESOURCE_EXHAUSTED', 'INTERNAL', 'UNAVAILABLE']

**Metrics.** ``ModelInfer`` counts in the invocation counters and latencies, under the
HTTP status its code stands for (an ``INVALID_ARGUMENT`` is a 4xx, an ``UNAVAILABLE`` a
5xx), so the alarms see gRPC traffic with no new query. Every call is also counted in
``fleetshift_grpc_requests_total{method, code}``.

Data capture and shadow mirroring see REST requests only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc  # type: ignore[import-untyped]
import numpy as np

from .. import __version__
from ..app import Runtime, status_for
from ..codecs import INPUT_NAME, OIP_DATATYPES, OUTPUT_NAME, decode_oip_tensor
from ..errors import NotReadyError, RequestError
from ..models.base import Model, Predictions, Rows
from ..protocol import default_max_connections
from . import grpc_predict_v2_pb2 as pb

log = logging.getLogger("fleetshift_runtime")

SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "fleetshift-runtime"
STOP_GRACE_SECONDS = 2.0
"""How long calls in flight may finish when the server stops."""

GRPC_CODES: dict[int, Any] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.INVALID_ARGUMENT,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""The gRPC code of each HTTP status the runtime answers."""

CONTENTS_FIELDS = {
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "INT8": ("int_contents", np.int64),
    "INT16": ("int_contents", np.int64),
    "INT32": ("int_contents", np.int64),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint64),
    "UINT16": ("uint_contents", np.uint64),
    "UINT32": ("uint_contents", np.uint64),
    "UINT64": ("uint64_contents", np.uint64),
}
"""Where ``InferTensorContents`` holds each datatype's values (the protocol's table);
FP16 has no field and comes in ``raw_input_contents``."""


def receive_limit(max_request_bytes: int) -> int:
    """gRPC's own message limit: above ``FLEETSHIFT_MAX_REQUEST_BYTES``, so that the
    runtime refuses a request up to twice the limit itself (REST's reason, counted), and
    gRPC refuses larger ones before reading them (``RESOURCE_EXHAUSTED`` either way).

    >>> receive_limit(6 * 1024 * 1024) == 12 * 1024 * 1024
    True
    >>> receive_limit(10)
    1048586
    """
    return min(max(2 * max_request_bytes, max_request_bytes + 1024 * 1024), 2**31 - 1)


def decode_infer_request(request: Any, width: int) -> Rows:
    """A ``ModelInferRequest``'s rows, checked as ``/infer`` checks a JSON request."""
    inputs = request.inputs
    if not inputs:
        raise RequestError(400, "the request has no inputs; send one tensor named 'input-0'")
    if len(inputs) != 1:
        raise RequestError(
            400, f"this model takes one input tensor of shape [rows, {width}]; got {len(inputs)}"
        )
    for output in request.outputs:
        if output.name != OUTPUT_NAME:
            raise RequestError(
                400, f"unknown output {output.name[:100]!r}; this model has {OUTPUT_NAME!r}"
            )
    tensor = inputs[0]
    document: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }
    raw = request.raw_input_contents
    if raw:
        if len(raw) != 1:
            raise RequestError(
                400, f"raw_input_contents has {len(raw)} entries; send one per input (1)"
            )
        if tensor.HasField("contents"):
            raise RequestError(
                400, f"input {INPUT_NAME!r} has both contents and raw_input_contents; send one"
            )
        document["parameters"] = {"binary_data_size": len(raw[0])}
        return decode_oip_tensor(document, raw[0], width)
    document["data"] = _contents(tensor)
    return decode_oip_tensor(document, b"", width)


def _contents(tensor: Any) -> Any:
    """The values of ``tensor.contents`` in the field its datatype names, as numpy."""
    present = [field.name for field, _ in tensor.contents.ListFields()]
    datatype = tensor.datatype
    found = CONTENTS_FIELDS.get(datatype)
    if found is None:
        if datatype in OIP_DATATYPES and present:  # FP16: no contents field in the protocol
            raise RequestError(400, f"{datatype} data must be sent in raw_input_contents")
        return []  # an unsupported datatype: decode_oip_tensor names it
    name, dtype = found
    others = [field for field in present if field != name]
    if others:
        raise RequestError(
            400, f"{datatype} data goes in contents.{name}; got contents.{', '.join(others)}"
        )
    return np.array(getattr(tensor.contents, name), dtype=dtype)


def encode_infer_response(predictions: Predictions, model: Model, request_id: str) -> bytes:
    """A serialized ``ModelInferResponse``: ``predict`` in FP32, as raw bytes (as Triton
    answers, and what ``InferResult.as_numpy`` reads)."""
    response = pb.ModelInferResponse(model_name=model.name, id=request_id)
    output = response.outputs.add()
    output.name = OUTPUT_NAME
    output.datatype = "FP32"
    output.shape.extend(predictions.shape)
    response.raw_output_contents.append(
        np.ascontiguousarray(predictions, dtype=np.float32).tobytes()
    )
    return response.SerializeToString()  # type: ignore[no-any-return]


def _infer_off_the_loop(request: Any, width: int, model: Model) -> tuple[bytes, float, Predictions]:
    """A large request, in a worker thread: the response, model seconds, predictions."""
    rows = decode_infer_request(request, width)
    started = time.perf_counter()
    predictions = model.predict(rows)
    elapsed = time.perf_counter() - started
    return encode_infer_response(predictions, model, request.id), elapsed, predictions


def _parse(raw: bytes) -> Any:
    try:
        return pb.ModelInferRequest.FromString(raw)
    except Exception:  # protobuf's DecodeError, whichever backend raises it
        raise RequestError(400, "the request is not a valid ModelInferRequest message") from None


class GrpcService:
    """The service's methods, on the runtime's event loop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self._limit = settings.max_request_bytes
        self._inline_bytes = settings.inline_body_bytes
        self._inline_rows = settings.inline_rows
        metrics = runtime.metrics
        self._counter = metrics.grpc_requests
        self._labels = metrics.labels
        self._children: dict[tuple[str, str], Any] = {}
        self._id_prefix = f"grpc-{secrets.token_hex(4)}"
        self._ids = itertools.count(1)

    def _count(self, method: str, code: Any) -> None:
        key = (method, code.name)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._counter.labels(
                **self._labels, method=method, code=code.name
            )
        child.inc()

    async def _fail(self, context: Any, method: str, status: int, reason: str) -> NoReturn:
        code = GRPC_CODES.get(status, grpc.StatusCode.UNKNOWN)
        self._count(method, code)
        await context.abort(code, reason)
        raise AssertionError("context.abort raises")  # pragma: no cover

    # --- ModelInfer: the hot path ---------------------------------------------------

    async def model_infer(self, raw: bytes, context: Any) -> bytes:
        """``ModelInfer``: REST's ``/infer`` path, from the message's raw bytes."""
        runtime = self.runtime
        started = time.perf_counter()
        runtime.metrics.tally.started()
        model_seconds: float | None = None
        label = ""
        try:
            if len(raw) > self._limit:
                raise RequestError(
                    413,
                    f"request is {len(raw)} bytes; the limit is {self._limit} "
                    "(FLEETSHIFT_MAX_REQUEST_BYTES)",
                )
            if runtime.pipeline is not None:
                raise runtime.pipeline.bypassed()
            if len(raw) <= self._inline_bytes:
                request = _parse(raw)
                model = await runtime.resolve_model(request.model_name)
                label = model.name
                rows = decode_infer_request(request, runtime.width_for(model))
                if rows.shape[0] <= self._inline_rows:
                    # On the loop, now: what the batcher would do a loop turn later, and
                    # gRPC calls arrive one per turn, so there is no company to wait for.
                    model_started = time.perf_counter()
                    predictions = model.predict(rows)
                    model_seconds = time.perf_counter() - model_started
                else:
                    predictions, model_seconds = await runtime.batcher.submit(model, rows)
                payload = encode_infer_response(predictions, model, request.id)
            else:  # parsed, decoded, predicted and encoded in a worker thread
                loop = asyncio.get_running_loop()
                request = await loop.run_in_executor(runtime.pool, _parse, raw)
                model = await runtime.resolve_model(request.model_name)
                label = model.name
                payload, model_seconds, predictions = await loop.run_in_executor(
                    runtime.pool, _infer_off_the_loop, request, runtime.width_for(model), model
                )
            status = 200
        except asyncio.CancelledError:  # the client left or its deadline passed: no answer
            runtime.metrics.tally.gone()
            self._count("ModelInfer", grpc.StatusCode.CANCELLED)
            raise
        except Exception as error:
            status, reason = status_for(error, f"{self._id_prefix}-{next(self._ids):x}".encode())
        runtime._record(label, status, started, model_seconds)
        if status != 200:
            await self._fail(context, "ModelInfer", status, reason)
        runtime.metrics.tally.predicted(predictions)
        self._count("ModelInfer", grpc.StatusCode.OK)
        return payload

    # --- the small methods ----------------------------------------------------------

    async def server_live(self, request: Any, context: Any) -> Any:
        """``ServerLive``: the process serves gRPC."""
        self._count("ServerLive", grpc.StatusCode.OK)
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        """``ServerReady``: as ``/v2/health/ready``."""
        self._count("ServerReady", grpc.StatusCode.OK)
        return pb.ServerReadyResponse(ready=self.runtime.single.status == "ready")

    async def model_ready(self, request: Any, context: Any) -> Any:
        """``ModelReady``: false while the model loads; NOT_FOUND for another name."""
        try:
            await self.runtime.resolve_model(request.name)
        except NotReadyError:
            ready = False
        except Exception as error:
            await self._model_error(context, "ModelReady", error)
        else:
            ready = True
        self._count("ModelReady", grpc.StatusCode.OK)
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        """``ServerMetadata``: name and version (the REST-only binary extension is not
        listed)."""
        self._count("ServerMetadata", grpc.StatusCode.OK)
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__)

    async def model_metadata(self, request: Any, context: Any) -> Any:
        """``ModelMetadata``: the tensors of ``GET /v2/models/{name}``."""
        try:
            model = await self.runtime.resolve_model(request.name)
        except Exception as error:
            await self._model_error(context, "ModelMetadata", error)
        width = self.runtime.width_for(model)
        response = pb.ModelMetadataResponse(name=model.name, platform=model.platform)
        response.inputs.add(name=INPUT_NAME, datatype="FP32", shape=[-1, width])
        response.outputs.add(name=OUTPUT_NAME, datatype="FP32", shape=[-1, *model.output_shape])
        self._count("ModelMetadata", grpc.StatusCode.OK)
        return response

    async def _model_error(self, context: Any, method: str, error: Exception) -> NoReturn:
        status, reason = status_for(error, f"{self._id_prefix}-{next(self._ids):x}".encode())
        await self._fail(context, method, status, reason)

    def handler(self) -> Any:
        """The generic handler of the service's six methods."""

        def unary(method: Callable[[Any, Any], Awaitable[Any]], request_class: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request_class.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ModelInfer": grpc.unary_unary_rpc_method_handler(self.model_infer),
                "ServerLive": unary(self.server_live, pb.ServerLiveRequest),
                "ServerReady": unary(self.server_ready, pb.ServerReadyRequest),
                "ModelReady": unary(self.model_ready, pb.ModelReadyRequest),
                "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest),
                "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest),
            },
        )


async def start_grpc(runtime: Runtime) -> Any:
    """Start the gRPC server on ``FLEETSHIFT_HOST:FLEETSHIFT_GRPC_PORT``, on this loop;
    returns it (``await server.stop(grace)`` stops it)."""
    settings = runtime.settings
    limit = receive_limit(settings.max_request_bytes)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1),
        ],
        maximum_concurrent_rpcs=settings.max_connections or default_max_connections(),
    )
    server.add_generic_rpc_handlers([GrpcService(runtime).handler()])
    address = f"{settings.host}:{settings.grpc_port}"
    if ":" in settings.host:
        address = f"[{settings.host}]:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s", address)
    return server
