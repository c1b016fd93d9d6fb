"""Shadow variants without a mesh: copies of sampled requests, and both answers compared.

With the Replicas router nothing in the network can copy a request, so the runtime that
serves production does it. The operator writes the shadows of an Endpoint into a file in
the pod (``FLEETSHIFT_MIRROR_FILE``, a mounted ConfigMap):
``{"shadows": [{"variant", "revision", "url", "samplingPercent"}]}``. For each answered
request a sampler picks the share to copy; a copy is queued (never awaited) with the
production predictions, and background tasks send it to the shadow, read its answer and
compare the two answers to the same rows:

- the absolute difference of each row's prediction (a histogram),
- whether the predicted class differs (a score on either side of the threshold, or a
  different arg-max for multi-class outputs),
- the shadow's latency and the copies' outcomes.

A copy can never reach or slow the caller: the caller's answer is sent before the copy
is offered; a full queue drops the copy and counts it; a shadow that is slow, down or
failing only changes the counts. The file is read again when it changes (a ConfigMap
volume is updated in place), so adding or removing a shadow redeploys nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import orjson

from .upstream import PeerConnection

log = logging.getLogger(__name__)

OUTCOMES = ("answered", "failed", "timeout", "unreachable", "dropped", "uncomparable")
"""What became of a copy: ``answered`` (a 2xx that was compared), ``failed`` (the shadow
answered with an error status), ``timeout``, ``unreachable`` (no connection), ``dropped``
(the queue was full), ``uncomparable`` (a 2xx whose predictions have another shape)."""

RELOAD_SECONDS = 5.0
"""How often the mirror file is checked for a change."""

LARGE_ANSWER_BYTES = 64 * 1024
"""A shadow's answer larger than this is parsed and compared in a worker thread."""


@dataclass(frozen=True)
class ShadowTarget:
    """One shadow variant to copy requests to."""

    variant: str
    revision: str
    url: str
    """``http://host:port`` of the shadow's Service (no path)."""
    sampling_percent: int


@dataclass(frozen=True)
class PeersFile:
    """What the operator's file says: the shadows to copy requests to and, for an
    Endpoint of several variants, each variant's Service (``TargetVariant`` requests for
    another variant are forwarded there)."""

    shadows: tuple[ShadowTarget, ...] = ()
    variants: tuple[tuple[str, str], ...] = ()
    """(variant, ``http://host:port``) of every variant that serves callers."""


def parse_mirror_file(text: bytes) -> PeersFile:
    """The operator's file; one that is empty or malformed names nothing (and the log
    says why).

    >>> parse_mirror_file(b'{"shadows": [{"variant": "challenger", "revision": "7",'
    ...     b' "url": "http://churn-challenger-7.shop.svc:80", "samplingPercent": 10}],'
    ...     b' "variants": {"main": "http://churn-main-serving.shop.svc:80"}}')
    ... # doctest: +NORMALIZE_WHITESPACE
    PeersFile(shadows=(ShadowTarget(variant='challenger', revision='7',
                       url='http://churn-challenger-7.shop.svc:80', sampling_percent=10),),
              variants=(('main', 'http://churn-main-serving.shop.svc:80'),))
    >>> parse_mirror_file(b"")
    PeersFile(shadows=(), variants=())
    """
    if not text.strip():
        return PeersFile()
    try:
        document = orjson.loads(text)
        targets = tuple(
            ShadowTarget(
                variant=str(s["variant"]),
                revision=str(s["revision"]),
                url=_checked_url(str(s["url"])),
                sampling_percent=max(0, min(100, int(s.get("samplingPercent", 100)))),
            )
            for s in document.get("shadows", [])
        )
        variants = tuple(
            (str(name), _checked_url(str(url)))
            for name, url in sorted(document.get("variants", {}).items())
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        log.error("mirror file ignored (no requests are copied or forwarded): %s", error)
        return PeersFile()
    return PeersFile(targets, variants)


def _checked_url(url: str) -> str:
    """``url`` when it is ``http://host[:port]``, else ValueError (a port out of range too,
    which ``urlsplit`` only notices when the port is read, long after the file was read).

    >>> _checked_url("http://churn-main-serving.shop.svc:80")
    'http://churn-main-serving.shop.svc:80'
    >>> _checked_url("http://churn:99999")
    Traceback (most recent call last):
    ...
    ValueError: Port out of range 0-65535
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"shadow url {url!r}: expected http://host[:port]")
    if parts.port == 0:
        raise ValueError(f"shadow url {url!r}: port 0")
    return url


class Sampler:
    """Picks exactly ``percent`` of the requests, spread evenly, with no randomness.

    >>> sampler = Sampler(25)
    >>> [sampler.take() for _ in range(8)]
    [False, False, False, True, False, False, False, True]
    >>> seven = Sampler(7)
    >>> sum(seven.take() for _ in range(1000))
    70
    """

    __slots__ = ("_credit", "percent")

    def __init__(self, percent: int) -> None:
        self.percent = percent
        self._credit = 0

    def take(self) -> bool:
        self._credit += self.percent
        if self._credit >= 100:
            self._credit -= 100
            return True
        return False


@dataclass(frozen=True)
class PairedComparison:
    """Two answers to the same rows, compared row by row."""

    differences: npt.NDArray[np.float64]
    """Each row's absolute difference (the largest over its outputs)."""
    disagreements: int
    """Rows whose predicted class differs."""

    @property
    def rows(self) -> int:
        return int(self.differences.size)


def compare_answers(
    production: npt.ArrayLike, shadow: npt.ArrayLike, threshold: float = 0.5
) -> PairedComparison | None:
    """The paired comparison, or None when the answers do not have the same shape.

    A row of one score is a class by the threshold; a row of several, by its arg-max.

    >>> c = compare_answers([0.2, 0.6, 0.9], [0.25, 0.4, 0.9])
    >>> c.differences.round(3).tolist(), c.disagreements
    ([0.05, 0.2, 0.0], 1)
    >>> c = compare_answers([[0.7, 0.2, 0.1]], [[0.3, 0.5, 0.2]])
    >>> c.differences.round(3).tolist(), c.disagreements
    ([0.4], 1)
    >>> compare_answers([0.1, 0.2], [0.1]) is None
    True
    """
    ours = np.asarray(production, dtype=np.float64)
    theirs = np.asarray(shadow, dtype=np.float64)
    if ours.shape != theirs.shape or ours.ndim not in (1, 2) or ours.size == 0:
        return None
    if ours.ndim == 1 or ours.shape[1] == 1:
        ours, theirs = ours.reshape(-1), theirs.reshape(-1)
        differences = np.abs(ours - theirs)
        disagreements = int(np.count_nonzero((ours > threshold) != (theirs > threshold)))
    else:
        differences = np.abs(ours - theirs).max(axis=1)
        disagreements = int(np.count_nonzero(ours.argmax(axis=1) != theirs.argmax(axis=1)))
    return PairedComparison(differences, disagreements)


def parse_csv_answer(body: bytes) -> npt.NDArray[np.float64] | None:
    """The predictions of a ``text/csv`` answer (one row per line), or None.

    >>> parse_csv_answer(b"0.25\\n0.5\\n").tolist()
    [0.25, 0.5]
    >>> parse_csv_answer(b"0.1,0.9\\n0.8,0.2\\n").tolist()
    [[0.1, 0.9], [0.8, 0.2]]
    >>> parse_csv_answer(b"oops") is None
    True
    """
    text = body.strip()
    try:
        rows = orjson.loads(b"[[" + text.replace(b"\n", b"],[") + b"]]")
        values = np.array(rows, dtype=np.float64)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    if values.ndim != 2:
        return None
    return values[:, 0] if values.shape[1] == 1 else values


def parse_oip_answer(body: bytes) -> npt.NDArray[np.float64] | None:
    """The first output of an OIP JSON answer, in its shape, or None.

    >>> parse_oip_answer(b'{"outputs": [{"shape": [2], "data": [0.1, 0.9]}]}').tolist()
    [0.1, 0.9]
    """
    try:
        output = orjson.loads(body)["outputs"][0]
        return np.array(output["data"], dtype=np.float64).reshape(output["shape"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Copy:
    """One request to copy to the shadows, with the answer production gave."""

    path: bytes
    content_type: bytes
    body: bytes
    predictions: npt.NDArray[Any]
    target_model: bytes | None
    """``X-Amzn-SageMaker-Target-Model`` of a multi-model request, forwarded."""

    @property
    def oip(self) -> bool:
        return self.path != b"/invocations"


class CopyQueue:
    """The copies waiting for one shadow: at most ``size`` of them and ``max_bytes`` of
    their request bodies, which stay in memory until sent. A copy past either bound is
    refused; one larger than ``max_bytes`` alone is still queued when nothing waits.

    >>> def copy(n): return Copy(b"/invocations", b"text/csv", b"1" * n, np.zeros(1), None)
    >>> q = CopyQueue(size=8, max_bytes=100)
    >>> [q.offer(copy(60)), q.offer(copy(60)), q.offer(copy(40))], q.waiting_bytes
    ([True, False, True], 100)
    >>> empty = CopyQueue(size=8, max_bytes=100)
    >>> empty.offer(copy(500)), empty.offer(copy(1))
    (True, False)
    """

    def __init__(self, size: int, max_bytes: int) -> None:
        self._queue: asyncio.Queue[Copy] = asyncio.Queue(size)
        self.max_bytes = max_bytes
        self.waiting_bytes = 0

    def offer(self, copy: Copy) -> bool:
        """Queue ``copy`` if it fits; never waits."""
        size = len(copy.body)
        if not self._queue.empty() and self.waiting_bytes + size > self.max_bytes:
            return False
        try:
            self._queue.put_nowait(copy)
        except asyncio.QueueFull:
            return False
        self.waiting_bytes += size
        return True

    async def take(self) -> Copy:
        """The oldest copy, once there is one."""
        copy = await self._queue.get()
        self.waiting_bytes -= len(copy.body)
        return copy


class Mirror:
    """The copies of one runtime process (see the module docstring)."""

    def __init__(
        self,
        file: Path,
        metrics: Any,
        *,
        queue_size: int,
        queue_bytes: int,
        timeout_seconds: float,
        connections: int,
        threshold: float,
        variant: str = "",
        executor: Executor | None = None,
    ) -> None:
        self.file = file
        self.metrics = metrics
        self.timeout_seconds = timeout_seconds
        self.connections = connections
        self.threshold = threshold
        self.variant = variant
        """This pod's variant: a shadow's own pods (it is in the file too) copy nothing."""
        self.targets: tuple[ShadowTarget, ...] = ()
        self.variants: dict[str, str] = {}
        """Each serving variant's Service, for ``TargetVariant`` requests."""
        self._idle: dict[str, list[PeerConnection]] = {}
        self._samplers: list[Sampler] = []
        self._queues: list[CopyQueue] = []
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._text: bytes | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = executor
        """Where a large answer is parsed and compared, off the event loop."""

    # --- the hot path ------------------------------------------------------------------

    def offer(self, copy: Copy) -> None:
        """Queue ``copy`` for each shadow whose sampler picks it; never waits."""
        for sampler, queue, target in zip(self._samplers, self._queues, self.targets, strict=True):
            if not sampler.take():
                continue
            if not queue.offer(copy):
                self.metrics.shadow_copy(target, "dropped")

    # --- background ----------------------------------------------------------------------

    async def run(self) -> None:
        """Read the file now and whenever it changes; keep one set of senders per shadow."""
        try:
            while True:
                self._reload()
                await asyncio.sleep(RELOAD_SECONDS)
        finally:
            self._stop_senders()
            self._close_idle()

    def _reload(self) -> None:
        try:
            text = self.file.read_bytes()
        except OSError:
            text = b""  # an optional ConfigMap that does not exist yet: no shadows
        if text == self._text:
            return
        self._text = text
        peers = parse_mirror_file(text)
        if dict(peers.variants) != self.variants:
            self.variants = dict(peers.variants)
            self._close_idle()
            log.info("TargetVariant forwards to %s", ", ".join(self.variants) or "none")
        targets = peers.shadows
        if any(t.variant == self.variant for t in targets):
            log.info("variant %s is a shadow: its pods copy no requests", self.variant)
            targets = ()
        if targets == self.targets:
            return
        self._stop_senders()
        self.targets = targets
        self._samplers = [Sampler(t.sampling_percent) for t in targets]
        self._queues = [CopyQueue(self._queue_size, self._queue_bytes) for _ in targets]
        for target, queue in zip(targets, self._queues, strict=True):
            for _ in range(self.connections):
                self._tasks.append(asyncio.create_task(self._send(target, queue)))
        log.info(
            "copying requests to %s",
            ", ".join(f"{t.variant} ({t.sampling_percent}%, {t.url})" for t in targets) or "none",
        )

    # --- TargetVariant ---------------------------------------------------------------

    def forward_url(self, variant: str) -> str | None:
        """Where a request that names ``variant`` goes: None to serve it here (this pod's
        own variant, or no variant map: one variant, or a router that routes the header
        itself), ``""`` for a variant the Endpoint does not have, else its Service."""
        if variant == self.variant or not self.variants:
            return None
        return self.variants.get(variant, "")

    async def forward(
        self, url: str, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send a request to another variant's Service on a pooled keep-alive connection
        and return its answer (``asyncio.wait_for`` it: a timeout closes the connection)."""
        idle = self._idle.setdefault(url, [])
        connection = idle.pop() if idle else PeerConnection(url)
        try:
            answer = await connection.post(path, headers, body)
        except BaseException:
            connection.close()
            raise
        idle.append(connection)
        return answer

    def _close_idle(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle = {}

    def _stop_senders(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self._samplers, self._queues, self.targets = [], [], ()

    async def _send(self, target: ShadowTarget, queue: CopyQueue) -> None:
        connection = PeerConnection(target.url)
        loop = asyncio.get_running_loop()
        try:
            while True:
                copy = await queue.take()
                started = loop.time()
                try:
                    status, _, answer = await asyncio.wait_for(
                        connection.post(copy.path, _headers(copy), copy.body), self.timeout_seconds
                    )
                except TimeoutError:
                    connection.close()
                    self.metrics.shadow_copy(target, "timeout")
                    continue
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    connection.close()
                    self.metrics.shadow_copy(target, "unreachable")
                    continue
                self.metrics.shadow_latency(target, loop.time() - started)
                if not 200 <= status < 300:
                    self.metrics.shadow_copy(target, "failed")
                    continue
                await self._compare(target, copy, answer)
        finally:
            connection.close()

    async def _compare(self, target: ShadowTarget, copy: Copy, answer: bytes) -> None:
        work = _comparison_of(copy, answer, self.threshold)
        if self._executor is not None and len(answer) > LARGE_ANSWER_BYTES:
            comparison = await asyncio.get_running_loop().run_in_executor(self._executor, work)
        else:
            comparison = work()
        if comparison is None:
            self.metrics.shadow_copy(target, "uncomparable")
            return
        self.metrics.shadow_copy(target, "answered")
        self.metrics.shadow_compared(target, comparison)


def _headers(copy: Copy) -> list[tuple[bytes, bytes]]:
    accept = b"application/json" if copy.oip else b"text/csv"
    headers = [(b"Content-Type", copy.content_type), (b"Accept", accept)]
    if copy.target_model is not None:
        headers.append((b"X-Amzn-SageMaker-Target-Model", copy.target_model))
    return headers


def _comparison_of(copy: Copy, answer: bytes, threshold: float) -> Callable[[], Any]:
    def compare() -> PairedComparison | None:
        theirs = parse_oip_answer(answer) if copy.oip else parse_csv_answer(answer)
        if theirs is None:
            return None
        ours = np.asarray(copy.predictions)
        if ours.ndim == 2 and ours.shape[1] == 1:
            ours = ours[:, 0]
        return compare_answers(ours, theirs, threshold)

    return compare
