"""Serial inference pipelines (SageMaker's inference pipeline): 2-5 steps in one pod.

A variant may declare steps before and after its model: containers in the same pod that
speak SageMaker's ``GET /ping`` and ``POST /invocations`` on ``127.0.0.1:<port>``. The
runtime is the pod's front door: its ``/invocations`` sends the caller's body to the first
step, each step's answer becomes the next step's request, with the content type the step
answered with (or the one the step declares), and the last answer goes back to the caller.
The runtime's own model is one of the steps, called in-process.

``FLEETSHIFT_PIPELINE`` names the steps as JSON, in order; the step with no ``port`` is
the runtime's model::

    [{"name": "scale", "port": 8081, "contentType": "text/csv"}, {"name": "model"}]

- ``contentType``: the Content-Type the step is sent (default: the type of the message it
  receives: the caller's for the first step, else the previous step's answer's);
- ``accept``: the Accept the step is sent (default: the caller's for the last step, none
  for the others, which answer in their own default).

A step that fails names itself: its 4xx comes back as that 4xx, a 5xx as a 502, no answer
in time as a 504, no connection as a 502, each with ``{"error", "step", "request_id"}``.
``/ping`` is 200 only when every step's ``/ping`` is. Every step's time is observed in
``fleetshift_pipeline_step_latency_seconds{step}``; failures are counted in
``fleetshift_pipeline_step_errors_total{step, reason}``.

The connections to the steps are the runtime's own small HTTP/1.1 client on asyncio
streams (``upstream.py``, as for shadow copies in ``mirror.py``), kept alive and pooled per
step, reading ``Content-Length``, chunked and read-to-close answers, so any server a step
image runs will do; acknowledging at once (``TCP_QUICKACK``), so a server that writes its
headers and body apart does not wait ~40 ms for a delayed ACK (docs/pipelines.md,
"Measured").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import RequestError
from .upstream import BadAnswerError, PooledClient

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
"""Every step listens on the pod's loopback: steps share the pod's network namespace."""

MIN_STEPS, MAX_STEPS = 2, 5
"""SageMaker's bounds: a pipeline is 2 to 5 containers, the runtime's model one of them."""

MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""A step's answer larger than this is refused as a bad answer (502)."""

PING_TIMEOUT_SECONDS = 2.0
"""How long a step's ``/ping`` may take before the pod counts as not ready."""

ERROR_DETAIL_CHARS = 300
"""How much of a failing step's answer is quoted to the caller."""

ERROR_REASONS = ("4xx", "5xx", "timeout", "unreachable", "bad_answer")
"""Why a step failed: it answered 4xx or another non-2xx status, did not answer within
``FLEETSHIFT_PIPELINE_STEP_TIMEOUT_SECONDS``, could not be connected to, or answered
something that is not HTTP (or too large)."""


@dataclass(frozen=True)
class Step:
    """One step of a pipeline."""

    name: str
    port: int | None
    """``127.0.0.1:<port>`` of a container step; None for the runtime's own model."""
    content_type: str = ""
    """The Content-Type the step is sent; empty: the type of the message it receives."""
    accept: str = ""
    """The Accept the step is sent; empty: the caller's for the last step, else none."""

    @property
    def is_model(self) -> bool:
        return self.port is None


def parse_pipeline(text: str) -> tuple[Step, ...]:
    """The steps of ``FLEETSHIFT_PIPELINE`` (empty text: no pipeline), or a ValueError that
    says what is wrong and what is allowed.

    >>> [s.name for s in parse_pipeline('[{"name": "scale", "port": 8081}, {"name": "model"}]')]
    ['scale', 'model']
    >>> parse_pipeline("")
    ()
    >>> parse_pipeline('[{"name": "a", "port": 8081}, {"name": "b", "port": 8082}]')
    Traceback (most recent call last):
    ...
    ValueError: pipeline: exactly one step must have no port (the runtime's model); found 0
    """
    if not text.strip():
        return ()
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"pipeline: not JSON ({error})") from None
    if not isinstance(document, list) or not all(isinstance(s, dict) for s in document):
        raise ValueError("pipeline: expected a JSON list of steps ({name, port?, ...})")
    if not MIN_STEPS <= len(document) <= MAX_STEPS:
        raise ValueError(
            f"pipeline: {len(document)} steps; a pipeline has {MIN_STEPS} to {MAX_STEPS}"
        )
    steps = tuple(_step(raw) for raw in document)
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"pipeline: step names must be unique; got {names}")
    ports = [s.port for s in steps if s.port is not None]
    if len(set(ports)) != len(ports):
        raise ValueError(f"pipeline: step ports must be unique; got {ports}")
    models = sum(s.is_model for s in steps)
    if models != 1:
        raise ValueError(
            f"pipeline: exactly one step must have no port (the runtime's model); found {models}"
        )
    return steps


def _step(raw: dict[str, Any]) -> Step:
    unknown = set(raw) - {"name", "port", "contentType", "accept"}
    if unknown:
        raise ValueError(
            f"pipeline: unknown step fields {sorted(unknown)}; a step has name, port,"
            " contentType, accept"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("pipeline: every step needs a name")
    port = raw.get("port")
    if port is not None and (
        not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535
    ):
        raise ValueError(f"pipeline: step {name!r}: port must be 1-65535, got {port!r}")
    content_type, accept = raw.get("contentType", ""), raw.get("accept", "")
    if not isinstance(content_type, str) or not isinstance(accept, str):
        raise ValueError(f"pipeline: step {name!r}: contentType and accept are strings")
    return Step(name, port, content_type, accept)


class StepError(Exception):
    """A step failed: the caller's answer names it.

    ``status`` None: the runtime's model step raised ``cause``, mapped as any request's
    error is (the runtime's ``status_for``)."""

    def __init__(
        self, step: str, status: int | None, reason: str, cause: Exception | None = None
    ) -> None:
        super().__init__(reason)
        self.step = step
        self.status = status
        self.reason = reason
        self.cause = cause


@dataclass
class Answer:
    """What the last step answered, and what the model step gave on the way."""

    body: bytes
    content_type: str
    predictions: Any = None
    """The model step's predictions (for the prediction histogram and shadow copies)."""
    model_seconds: float | None = None
    """The model step's time in the model's predict call."""


ModelStep = Callable[[bytes, str, str], Awaitable[tuple[bytes, str, Any, float]]]
"""``(body, content type, accept) -> (answer, its content type, predictions, model
seconds)``: the runtime's own model as a step (raises as ``/invocations`` would)."""


# --- the steps' client ------------------------------------------------------------------------


class StepClient(PooledClient):
    """Keep-alive connections to one step on loopback, pooled (``upstream.py``); an answer
    over :data:`MAX_ANSWER_BYTES` is a bad answer."""

    def __init__(self, port: int) -> None:
        super().__init__(HOST, port, MAX_ANSWER_BYTES)


# --- the pipeline ------------------------------------------------------------------------------


class Pipeline:
    """The steps of one runtime process, their connections and their metrics."""

    def __init__(self, steps: tuple[Step, ...], metrics: Any, timeout_seconds: float) -> None:
        self.steps = steps
        self.timeout_seconds = timeout_seconds
        self.clients = {s.name: StepClient(s.port) for s in steps if s.port is not None}
        self._latency = {s.name: metrics.pipeline_step(s.name) for s in steps}
        self._metrics = metrics
        self.description = " -> ".join(s.name for s in steps)
        """The steps in order, for messages (``scale -> model``)."""

    async def run(
        self,
        body: bytes,
        content_type: str,
        accept: str,
        request_id: bytes,
        model_step: ModelStep,
    ) -> Answer:
        """The caller's request through every step, in order; raises :class:`StepError`
        naming the step that failed."""
        answer = Answer(body, content_type)
        last = len(self.steps) - 1
        for index, step in enumerate(self.steps):
            sent_type = step.content_type or answer.content_type
            wanted = step.accept or (accept if index == last else "")
            started = time.perf_counter()
            try:
                if step.port is None:
                    answer = await self._model(step, answer.body, sent_type, wanted, model_step)
                else:
                    answer.body, answer.content_type = await self._call(
                        step, answer.body, sent_type, wanted, request_id
                    )
            finally:
                self._latency[step.name].observe(time.perf_counter() - started)
        return answer

    async def _model(
        self, step: Step, body: bytes, content_type: str, accept: str, model_step: ModelStep
    ) -> Answer:
        try:
            payload, answered_type, predictions, seconds = await model_step(
                body, content_type, accept
            )
        except RequestError as error:
            self._failed(step, "4xx")
            reason = f"step {step.name!r}: {error.reason}"
            raise StepError(step.name, error.status, reason) from None
        except Exception as error:
            self._failed(step, "5xx")
            raise StepError(step.name, None, "", cause=error) from error
        return Answer(payload, answered_type, predictions, seconds)

    async def _call(
        self, step: Step, body: bytes, content_type: str, accept: str, request_id: bytes
    ) -> tuple[bytes, str]:
        client = self.clients[step.name]
        headers = []
        if content_type:
            headers.append((b"Content-Type", content_type.encode("latin-1")))
        if accept:
            headers.append((b"Accept", accept.encode("latin-1")))
        headers.append((b"X-Request-Id", request_id))
        where = f"{HOST}:{step.port}"
        try:
            status, answer_headers, answer = await asyncio.wait_for(
                client.post(b"/invocations", headers, body), self.timeout_seconds
            )
        except TimeoutError:
            self._failed(step, "timeout")
            raise StepError(
                step.name,
                504,
                f"step {step.name!r} did not answer within {self.timeout_seconds:g} s"
                " (FLEETSHIFT_PIPELINE_STEP_TIMEOUT_SECONDS)",
            ) from None
        except (BadAnswerError, ValueError, asyncio.IncompleteReadError) as error:
            self._failed(step, "bad_answer")
            raise StepError(
                step.name, 502, f"step {step.name!r} at {where} gave no readable answer: {error}"
            ) from None
        except OSError as error:
            self._failed(step, "unreachable")
            raise StepError(
                step.name,
                502,
                f"step {step.name!r} could not be reached at {where}: {error.strerror or error}",
            ) from None
        if 200 <= status < 300:
            answered_type = answer_headers.get(b"content-type", b"").decode("latin-1")
            return answer, answered_type or accept or content_type
        detail = answer[:ERROR_DETAIL_CHARS].decode("utf-8", "replace").strip()
        client_fault = 400 <= status < 500
        self._failed(step, "4xx" if client_fault else "5xx")
        return_status = status if client_fault else 502
        raise StepError(step.name, return_status, f"step {step.name!r} answered {status}: {detail}")

    def _failed(self, step: Step, reason: str) -> None:
        self._metrics.pipeline_step_error(step.name, reason)

    async def unready(self) -> str | None:
        """Why the pipeline cannot serve (a step's ``/ping`` is not 200), or None."""

        async def ping(name: str, client: StepClient) -> str | None:
            try:
                status = await asyncio.wait_for(client.get(b"/ping"), PING_TIMEOUT_SECONDS)
            except TimeoutError:
                return f"step {name!r}: /ping did not answer within {PING_TIMEOUT_SECONDS:g} s"
            except (OSError, BadAnswerError, ValueError, asyncio.IncompleteReadError) as error:
                return f"step {name!r}: /ping at {HOST}:{client.port} failed: {error}"
            if status != 200:
                return f"step {name!r}: /ping answered {status}"
            return None

        reasons = await asyncio.gather(*(ping(n, c) for n, c in self.clients.items()))
        found = [r for r in reasons if r]
        return "; ".join(found) if found else None

    def bypassed(self) -> RequestError:
        """The 400 of a route that would reach the model step alone (the Open Inference
        Protocol over REST or gRPC): the other steps' work would be skipped."""
        return RequestError(
            400,
            f"this variant is a serial inference pipeline ({self.description}): send"
            " requests to POST /invocations, which runs every step; the Open Inference"
            " Protocol would reach the model step alone",
        )

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def error_body(error: StepError, reason: str, request_id: bytes) -> bytes:
    """The caller's answer to a failed step.

    >>> error_body(StepError("scale", 502, ""), "step 'scale' answered 500: oops", b"r1")
    b'{"error":"step \\'scale\\' answered 500: oops","step":"scale","request_id":"r1"}'
    """
    return orjson.dumps({"error": reason, "step": error.step, "request_id": request_id.decode()})
