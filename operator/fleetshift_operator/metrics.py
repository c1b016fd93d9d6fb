"""The operator's own Prometheus metrics, served on their own port.

Names (a documented contract, see the README):

- ``fleetshift_operator_reconciles_total{result}`` - reconciles, ``ok`` or ``error``;
- ``fleetshift_operator_reconcile_seconds`` - how long one reconcile took;
- ``fleetshift_operator_rollouts_total{outcome}`` - finished deployments by outcome;
- ``fleetshift_operator_rollout_step{namespace,endpoint}`` - the current traffic step;
- ``fleetshift_operator_green_traffic_percent{namespace,endpoint}`` - green's share;
- ``fleetshift_operator_endpoint_phase{namespace,endpoint,phase}`` - 1 for the Endpoint's
  current phase, 0 for every other phase (so a dashboard can mark phase changes).
"""

from __future__ import annotations

import contextlib
import typing

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from fleetshift_operator.api import Phase

RECONCILES = Counter("fleetshift_operator_reconciles_total", "Endpoint reconciles", ["result"])
RECONCILE_SECONDS = Histogram(
    "fleetshift_operator_reconcile_seconds",
    "Duration of one Endpoint reconcile",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROLLOUTS = Counter(
    "fleetshift_operator_rollouts_total", "Finished deployments by outcome", ["outcome"]
)
STEP = Gauge("fleetshift_operator_rollout_step", "Current traffic step", ["namespace", "endpoint"])
GREEN_PERCENT = Gauge(
    "fleetshift_operator_green_traffic_percent",
    "Share of traffic on the green fleet",
    ["namespace", "endpoint"],
)

PHASE = Gauge(
    "fleetshift_operator_endpoint_phase",
    "1 for the Endpoint's current phase, 0 for the others",
    ["namespace", "endpoint", "phase"],
)
PHASES: tuple[str, ...] = typing.get_args(Phase)


def set_phase(namespace: str, endpoint: str, phase: str | None) -> None:
    """Export ``phase`` as the current one (every known phase gets a series)."""
    for known in PHASES:
        PHASE.labels(namespace, endpoint, known).set(1 if known == phase else 0)


def serve(host: str, port: int) -> None:
    """Start the metrics server (no-op for port 0)."""
    if port:
        start_http_server(port, addr=host)


def forget(namespace: str, endpoint: str) -> None:
    """Drop the per-endpoint series of a deleted Endpoint."""
    for gauge in (STEP, GREEN_PERCENT):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, endpoint)
    for known in PHASES:
        with contextlib.suppress(KeyError):
            PHASE.remove(namespace, endpoint, known)
