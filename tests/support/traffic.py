"""Plays the runtime's invocation metrics for each fleet, following the EndpointSlice.

The demo's end-to-end test (tests/demo) runs real runtime processes behind kwok pods
and shows a real 5xx fault rolled back. The alarm tests need what real models cannot
give on demand: an exact error fraction (3% vs a 5% threshold), a chosen latency, a
fleet that goes quiet. This small exporter plays those: it sends a steady request rate, spreads it
over the fleets in proportion to their Ready endpoints in the Service's
EndpointSlices (as kube-proxy would), and counts invocations, 5xx and model latency
per revision with the runtime's metric names and labels. Each revision's error
fraction and latency are set by the test.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Pod
from lightkube.resources.discovery_v1 import EndpointSlice
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from fleetshift_devcluster.cluster import free_port

LABELS = ["namespace", "endpoint", "variant", "revision"]


@dataclasses.dataclass
class Behaviour:
    """How one revision answers."""

    error_fraction: float = 0.0
    latency_seconds: float = 0.004


class TrafficSimulator:
    """A load generator and the metrics of the fleets it reaches."""

    def __init__(
        self, kubeconfig: Path, namespace: str, endpoint: str, requests_per_second: float = 50
    ) -> None:
        self.kube = Client(KubeConfig.from_file(kubeconfig))
        self.namespace, self.endpoint = namespace, endpoint
        self.rate = requests_per_second
        self.behaviour: dict[str, Behaviour] = {}
        self.served: dict[str, int] = {}
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "fleetshift_invocations", "Invocations", LABELS, registry=self.registry
        )
        self.errors = Counter(
            "fleetshift_invocation_5xx_errors", "5xx answers", LABELS, registry=self.registry
        )
        self.latency = Histogram(
            "fleetshift_model_latency_seconds",
            "Time in the model",
            LABELS,
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.port = free_port()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server, self._server_thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.shutdown()

    def set(self, revision: str, behaviour: Behaviour) -> None:
        self.behaviour[revision] = behaviour

    def serving(self) -> dict[str, int]:
        """Ready endpoints of the Service per revision."""
        revisions = {
            p.status.podIP: (p.metadata.labels or {}).get("fleetshift.dev/revision", "")
            for p in self.kube.list(
                Pod, namespace=self.namespace, labels={"fleetshift.dev/endpoint": self.endpoint}
            )
            if p.status and p.status.podIP and p.metadata
        }
        counts: dict[str, int] = {}
        for endpoint_slice in self.kube.list(
            EndpointSlice,
            namespace=self.namespace,
            labels={"kubernetes.io/service-name": self.endpoint},
        ):
            for endpoint in endpoint_slice.endpoints or []:
                if endpoint.conditions and endpoint.conditions.ready:
                    for address in endpoint.addresses:
                        revision = revisions.get(address)
                        if revision:
                            counts[revision] = counts.get(revision, 0) + 1
        return counts

    def _run(self) -> None:
        tick = 0.2
        carry: dict[str, float] = {}
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                counts = self.serving()
            except Exception:
                counts = {}
            # The requests of the time that passed, not of a nominal tick: on a loaded machine
            # listing the endpoints takes longer than a tick, and the rate must still hold.
            now = time.monotonic()
            elapsed, last = now - last, now
            total = sum(counts.values())
            for revision, count in counts.items():
                labels = (self.namespace, self.endpoint, "main", revision)
                self.errors.labels(*labels)  # the series exists before the first error
                share = self.rate * elapsed * count / total + carry.get(revision, 0.0)
                requests = int(share)
                carry[revision] = share - requests
                behaviour = self.behaviour.get(revision, Behaviour())
                failed = round(requests * behaviour.error_fraction)
                self.invocations.labels(*labels).inc(requests)
                if failed:
                    self.errors.labels(*labels).inc(failed)
                for _ in range(requests):
                    self.latency.labels(*labels).observe(behaviour.latency_seconds)
                self.served[revision] = self.served.get(revision, 0) + requests
            self._stop.wait(tick)
