"""Steady traffic to an Endpoint's Service, spread as kube-proxy spreads it.

Every quarter second the generator reads the Service's EndpointSlices and keeps the
endpoints that are Ready. Requests go round-robin over them (kube-proxy's IPVS
mode), each to the runtime process standing in for the endpoint's pod (the
launcher's pod-to-port map). The operator's replica-ratio router decides which pods
the Service selects, so the split between the fleets is the operator's, for real.

Each request is one CSV row (``text/csv``, SageMaker's ``POST /invocations``). Every
answer is recorded with its time, the revision that served it, its status code and
its latency; a connection failure is recorded with status 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from lightkube import Client, KubeConfig
from lightkube.resources.discovery_v1 import EndpointSlice

from fleetshift_devcluster.demo.launcher import Route

REFRESH_SECONDS = 0.25


@dataclasses.dataclass(frozen=True)
class Answer:
    """One request: when it was sent (epoch seconds), who served it, how it went."""

    sent_at: float
    endpoint: str
    revision: str
    status: int
    latency: float

    @property
    def error(self) -> bool:
        return self.status == 0 or self.status >= 500


def ready_pods(slices: list[EndpointSlice]) -> list[str]:
    """Names of the pods behind the Ready endpoints of a Service's EndpointSlices,
    in a stable order.

    >>> from lightkube.models.discovery_v1 import Endpoint, EndpointConditions
    >>> from lightkube.models.core_v1 import ObjectReference
    >>> def ep(pod, ready):
    ...     ref = ObjectReference(kind="Pod", name=pod)
    ...     return Endpoint(addresses=["10.0.0.1"], conditions=EndpointConditions(ready=ready),
    ...                     targetRef=ref)
    >>> ready_pods([EndpointSlice(addressType="IPv4", endpoints=[ep("b", True), ep("a", True),
    ...                                                           ep("c", False)])])
    ['a', 'b']
    """
    names = set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.endpoints or []:
            ready = endpoint.conditions is not None and endpoint.conditions.ready
            if ready and endpoint.targetRef is not None and endpoint.targetRef.name:
                names.add(endpoint.targetRef.name)
    return sorted(names)


class LoadGenerator:
    """Sends ``rate`` requests a second to one Endpoint's Service, in a thread."""

    keepalive_connections = 32
    """Connections kept open between requests (0: a new connection per request)."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        routes: Callable[[], dict[str, Route]],
        rows: list[str],
        rate: float,
    ) -> None:
        self.kube = Client(KubeConfig.from_file(kubeconfig))
        self.namespace = namespace
        self.routes = routes
        self.rows = rows
        self.rate = rate
        self.endpoint: str | None = None
        self.answers: list[Answer] = []
        self._targets: list[Route] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="loadgen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def aim(self, endpoint: str | None) -> None:
        """Send traffic to ``endpoint``'s Service from now on (None: pause)."""
        with self._lock:
            if endpoint != self.endpoint:
                self.endpoint = endpoint
                self._targets = []

    def answers_since(self, since: float, endpoint: str | None = None) -> list[Answer]:
        with self._lock:
            return [
                a
                for a in self.answers
                if a.sent_at >= since and (endpoint is None or a.endpoint == endpoint)
            ]

    # -- the loop ---------------------------------------------------------------------------

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        limits = httpx.Limits(
            max_connections=64, max_keepalive_connections=self.keepalive_connections
        )
        async with httpx.AsyncClient(timeout=2.0, limits=limits) as client:
            refresher = asyncio.create_task(self._refresh_loop())
            rows = itertools.cycle(self.rows)
            turn = itertools.count()
            pending: set[asyncio.Task[None]] = set()
            interval = 1.0 / self.rate
            next_send = time.monotonic()
            while not self._stop.is_set():
                with self._lock:
                    targets, endpoint = list(self._targets), self.endpoint
                if targets and endpoint:
                    target = targets[next(turn) % len(targets)]
                    task = asyncio.create_task(self._send(client, endpoint, target, next(rows)))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                next_send += interval
                delay = next_send - time.monotonic()
                if delay < -1.0:  # fell behind (a busy machine): do not burst to catch up
                    next_send = time.monotonic()
                await asyncio.sleep(max(0.0, delay))
            refresher.cancel()
            if pending:
                await asyncio.wait(pending, timeout=3)

    async def _refresh_loop(self) -> None:
        while True:
            with self._lock:
                endpoint = self.endpoint
            if endpoint:
                try:
                    targets = await asyncio.to_thread(self._targets_of, endpoint)
                except Exception:
                    targets = None
                if targets is not None:
                    with self._lock:
                        if self.endpoint == endpoint:
                            self._targets = targets
            await asyncio.sleep(REFRESH_SECONDS)

    def _targets_of(self, endpoint: str) -> list[Route]:
        routes = self.routes()
        return [routes[pod] for pod in self._ready_pods(endpoint) if pod in routes]

    def _ready_pods(self, endpoint: str) -> list[str]:
        """The pods behind the Ready endpoints of ``endpoint``'s Service."""
        slices = list(
            self.kube.list(
                EndpointSlice,
                namespace=self.namespace,
                labels={"kubernetes.io/service-name": endpoint},
            )
        )
        return ready_pods(slices)

    async def _send(
        self, client: httpx.AsyncClient, endpoint: str, target: Route, row: str
    ) -> None:
        sent_at = time.time()
        started = time.perf_counter()
        try:
            answer = await client.post(
                f"http://{target.host}:{target.port}/invocations",
                content=row.encode(),
                headers={"Content-Type": "text/csv", "Accept": "text/csv"},
            )
            status = answer.status_code
            # Behind a Service only the answer can say which fleet gave it.
            revision = answer.headers.get("x-fleetshift-revision", target.revision)
        except httpx.HTTPError:
            status, revision = 0, target.revision
        latency = time.perf_counter() - started
        with self._lock:
            self.answers.append(Answer(sent_at, endpoint, revision, status, latency))
