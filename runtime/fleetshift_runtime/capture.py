"""Data capture: sampled request and response pairs, written as JSON lines in batches.

``FLEETSHIFT_CAPTURE_DESTINATION`` (an ``s3://bucket/prefix`` or a folder, e.g. a PVC
mount) turns it on. Of the requests answered 200, ``FLEETSHIFT_CAPTURE_SAMPLING_PERCENT``
are kept (a counter, no randomness), each as one JSON line with the variant, revision,
model, time and request id, and the request and response bodies (as text when they are
UTF-8, else base64) where ``captureRequest`` / ``captureResponse`` ask for them. Lines are
batched into one object per ``FLEETSHIFT_CAPTURE_FLUSH_SECONDS`` or per
``FLEETSHIFT_CAPTURE_MAX_OBJECT_BYTES``, whichever comes first, named
``<prefix>/<endpoint>/<variant>/<YYYY>/<MM>/<DD>/<HH>/<time>-<pod>-<sequence>.jsonl``.

Capture never slows or fails a request: the request path only appends a reference to a
bounded buffer (``FLEETSHIFT_CAPTURE_MAX_RECORDS``); a full buffer drops the record and
counts it; encoding and writing run in a worker thread; a destination that is slow or
down loses that batch, counted by reason, and the next batch tries again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
import os
import secrets
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from .mirror import Sampler
from .s3 import S3Credentials, S3Location, resolve_endpoint, resolve_region, signed_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Captured:
    """One sampled request and its answer, as the request path leaves it (not encoded)."""

    at: float
    """Seconds since the epoch."""
    request_id: bytes
    model: str
    content_type: bytes
    body: bytes
    answer_type: bytes
    answer: bytes


def media_type(content_type: bytes) -> bytes:
    """``text/csv; charset=utf-8`` -> ``text/csv``.

    >>> media_type(b"Text/CSV; charset=utf-8")
    b'text/csv'
    """
    return content_type.split(b";", 1)[0].strip().lower()


def _text_or_base64(data: bytes) -> dict[str, str]:
    try:
        return {"data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode(), "encoding": "base64"}


def encode_records(
    records: list[Captured],
    labels: dict[str, str],
    *,
    capture_request: bool,
    capture_response: bool,
) -> bytes:
    """JSON lines, one per record.

    >>> record = Captured(0.0, b"r-1", "model", b"text/csv", b"1,2", b"text/csv", b"0.5\\n")
    >>> line = encode_records([record], {"variant": "main", "revision": "abc"},
    ...                       capture_request=True, capture_response=False)
    >>> orjson.loads(line)  # doctest: +NORMALIZE_WHITESPACE
    {'time': '1970-01-01T00:00:00.000000Z', 'requestId': 'r-1', 'variant': 'main',
     'revision': 'abc', 'model': 'model', 'request': {'contentType': 'text/csv', 'data': '1,2'}}
    """
    lines = []
    for record in records:
        moment = datetime.datetime.fromtimestamp(record.at, datetime.UTC)
        line: dict[str, Any] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "requestId": record.request_id.decode("latin-1"),
            "variant": labels.get("variant", ""),
            "revision": labels.get("revision", ""),
            "model": record.model,
        }
        if capture_request:
            line["request"] = {
                "contentType": record.content_type.decode("latin-1"),
                **_text_or_base64(record.body),
            }
        if capture_response:
            line["response"] = {
                "contentType": record.answer_type.decode("latin-1"),
                **_text_or_base64(record.answer),
            }
        lines.append(orjson.dumps(line))
    return b"\n".join(lines) + b"\n"


def object_name(labels: dict[str, str], at: float, pod: str, sequence: int) -> str:
    """Where one batch goes, under the destination.

    >>> object_name({"endpoint": "churn", "variant": "main"}, 0.0, "a1b2", 7)
    'churn/main/1970/01/01/00/19700101T000000Z-a1b2-000007.jsonl'
    """
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    folder = f"{labels.get('endpoint') or 'endpoint'}/{labels.get('variant') or 'variant'}"
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    return f"{folder}/{moment:%Y/%m/%d/%H}/{stamp}-{pod}-{sequence:06d}.jsonl"


class Destination(Protocol):
    """Where batches are written (blocking: called in a worker thread)."""

    def write(self, name: str, data: bytes) -> None: ...


class FolderDestination:
    """A folder (a PVC mount): each batch is written to a temporary name and renamed, so
    a reader never sees half an object."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, name: str, data: bytes) -> None:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)


class S3Destination:
    """An ``s3://bucket/prefix``: each batch is one signed PUT."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str,
        region: str,
        addressing_style: str,
        timeout_seconds: float,
    ) -> None:
        self.location = S3Location.parse(uri if uri.endswith("/") else uri + "/")
        self.endpoint = resolve_endpoint(endpoint_url)
        self.region = resolve_region(region)
        self.addressing_style = addressing_style
        self.timeout_seconds = timeout_seconds

    def write(self, name: str, data: bytes) -> None:
        import httpx  # noqa: PLC0415 - only a pod that captures to S3 needs it

        location = S3Location(self.location.bucket, self.location.key + name)
        url, headers = signed_request(
            "PUT",
            location,
            endpoint=self.endpoint,
            region=self.region,
            credentials=S3Credentials.from_env(),
            addressing_style=self.addressing_style,
            payload=data,
        )
        headers["Content-Type"] = "application/jsonlines"
        answer = httpx.put(url, content=data, headers=headers, timeout=self.timeout_seconds)
        if answer.status_code >= 300:
            raise OSError(f"PUT {name}: HTTP {answer.status_code} {answer.text[:200]}")


class DataCapture:
    """The capture of one runtime process (see the module docstring)."""

    def __init__(
        self,
        destination: Destination,
        metrics: Any,
        labels: dict[str, str],
        *,
        sampling_percent: int,
        capture_request: bool,
        capture_response: bool,
        max_records: int,
        flush_seconds: float,
        max_object_bytes: int,
        content_types: frozenset[bytes] = frozenset(),
        executor: Executor | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.destination = destination
        self.metrics = metrics
        self.labels = labels
        self.capture_request = capture_request
        self.capture_response = capture_response
        self.max_records = max_records
        self.flush_seconds = flush_seconds
        self.max_object_bytes = max_object_bytes
        self.max_buffered_bytes = 2 * max_object_bytes
        """Bodies waiting to be written; past this a record is dropped and counted."""
        self.content_types = content_types
        """Media types captured (empty: all)."""
        self._sampler = Sampler(sampling_percent)
        self._buffer: list[Captured] = []
        self._buffered_bytes = 0
        self._full = asyncio.Event()
        self._executor = executor
        self._pod = secrets.token_hex(3)
        self._sequence = 0
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC).timestamp())

    @property
    def waiting(self) -> tuple[int, int]:
        """Records waiting to be written, and the bytes of their bodies."""
        return len(self._buffer), self._buffered_bytes

    # --- the request path ----------------------------------------------------------------

    def offer(self, content_type: bytes, make: Callable[[], Captured]) -> None:
        """Keep a sampled answer (``make`` builds it only when sampled); never waits."""
        if self.content_types and media_type(content_type) not in self.content_types:
            return
        if not self._sampler.take():
            return
        if len(self._buffer) >= self.max_records:
            self.metrics.capture_dropped("buffer_full", 1)
            return
        record = make()
        size = len(record.body) + len(record.answer)
        # The bodies stay in memory until written: at most two objects' worth wait, so a
        # slow destination and large requests cannot grow the process without bound. A
        # record larger than that alone is still kept when nothing else waits.
        if self._buffer and self._buffered_bytes + size > self.max_buffered_bytes:
            self.metrics.capture_dropped("buffer_full", 1)
            self._full.set()
            return
        self._buffer.append(record)
        self._buffered_bytes += size
        if self._buffered_bytes >= self.max_object_bytes:
            self._full.set()

    # --- background ------------------------------------------------------------------------

    async def run(self) -> None:
        """Write a batch every ``flush_seconds``, or sooner when one is full; the last
        batch when stopped."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):  # a full buffer wakes it sooner
                    await asyncio.wait_for(self._full.wait(), self.flush_seconds)
                await self.flush()
        finally:
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered as one object (off the event loop)."""
        self._full.clear()
        if not self._buffer:
            return
        records, self._buffer, self._buffered_bytes = self._buffer, [], 0
        self._sequence += 1
        name = object_name(self.labels, self._clock(), self._pod, self._sequence)
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._write, name, records
            )
        except Exception as error:
            log.warning("data capture: %d records lost, %s", len(records), error)
            self.metrics.capture_dropped("destination", len(records))
            return
        self.metrics.capture_written(len(records))

    def _write(self, name: str, records: list[Captured]) -> None:
        data = encode_records(
            records,
            self.labels,
            capture_request=self.capture_request,
            capture_response=self.capture_response,
        )
        self.destination.write(name, data)


def make_capture(settings: Any, metrics: Any, executor: Executor | None) -> DataCapture | None:
    """The capture the settings ask for, or None (no destination)."""
    where = settings.capture_destination
    if not where:
        return None
    destination: Destination
    if where.startswith("s3://"):
        destination = S3Destination(
            where,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            addressing_style=settings.s3_addressing_style,
            timeout_seconds=settings.download_timeout_seconds,
        )
    else:
        destination = FolderDestination(Path(where))
    return DataCapture(
        destination,
        metrics,
        settings.metric_labels(),
        sampling_percent=settings.capture_sampling_percent,
        capture_request=settings.capture_request,
        capture_response=settings.capture_response,
        max_records=settings.capture_max_records,
        flush_seconds=settings.capture_flush_seconds,
        max_object_bytes=settings.capture_max_object_bytes,
        content_types=frozenset(
            media_type(part.encode())
            for part in settings.capture_content_types.split(",")
            if part.strip()
        ),
        executor=executor,
    )
