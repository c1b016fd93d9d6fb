"""The planner's inputs and outputs: what routers, manifests, reconcile and the CLI import.

Observations come in (:class:`Observed`), a :class:`Plan` goes out. No decisions here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from fleetshift_operator.alarms.base import AlarmResult
from fleetshift_operator.api import EndpointStatus
from fleetshift_operator.webhooks.base import WebhookResult

Role = Literal["blue", "green"]

# -- observations ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FleetObservation:
    """One fleet (Deployment) as the cluster shows it."""

    variant: str
    """The variant it serves."""
    revision: str
    """The revision its pods run."""
    replicas: int
    """Desired replicas on the Deployment (the HPA may have changed them)."""
    ready: int
    """Ready replicas."""
    failure: str | None = None
    """Why its pods cannot run (e.g. ``CrashLoopBackOff``), if they cannot."""
    waiting: str | None = None
    """What its missing pods wait for (Unschedulable, a quota, an image pull), if
    anything: not fatal by itself, but shown at once and bounded by
    ``provisioningTimeoutSeconds``."""
    pending: int = 0
    """Its pods waiting to be placed or started (a subset of the missing ones)."""


@dataclasses.dataclass(frozen=True)
class CapacityObservation:
    """One variant's load and green's latency over the last rate window (Prometheus),
    for the capacity-aware cutover (``planning/capacity.py``). None is no data."""

    green_rps: float | None
    """Requests per second green answered."""
    blue_rps: float | None
    """Requests per second blue answered."""
    green_replicas: int
    """Green replicas that were serving (the traffic spread over them)."""
    latency_seconds: float | None = None
    """Green's latency quantile (``capacity.latencyQuantile``)."""
    cpu_cores: float | None = None
    """Green's CPU in cores, summed over its pods, when Prometheus has container CPU."""
    reason: str | None = None
    """Why there is no data, when there is none."""


@dataclasses.dataclass(frozen=True)
class Controls:
    """What a person asked for through annotations (see ``controls.py``)."""

    paused: bool = False
    """Hold the deployment at its current step."""
    abort: str | None = None
    """An abort request id; acted on once."""
    promote: str | None = None
    """A promote request id; acted on once."""
    retry: str | None = None
    """A retry request id; redeploys a rolled-back revision once."""


@dataclasses.dataclass(frozen=True)
class Observed:
    """Everything the planner knows about the world besides spec and status."""

    endpoint: str = "endpoint"
    """The Endpoint's name (child objects are named after it)."""
    generation: int = 1
    """The Endpoint's ``metadata.generation``."""
    fleets: tuple[FleetObservation, ...] = ()
    """Every fleet of this Endpoint that exists."""
    controls: Controls = Controls()
    alarms: Mapping[str, tuple[AlarmResult, ...]] | None = None
    """This reconcile's alarm verdicts per variant; a variant that is absent was not
    evaluated (no alarms, or no bake in progress)."""
    router: str = "Replicas"
    """``spec.traffic.router``: whole pods (Replicas) or exact weights (GatewayAPI)."""
    webhooks: Mapping[str, tuple[WebhookResult, ...]] | None = None
    """This reconcile's webhook answers per variant (``webhooks/base.py``); the calls
    were the ones the status said were due."""
    capacity: Mapping[str, CapacityObservation] | None = None
    """This reconcile's load observations per variant, while a canary step is sampled or
    the step to 100% is near (``planning/capacity.py``)."""

    def fleet(self, variant: str, revision: str | None) -> FleetObservation | None:
        for fleet in self.fleets:
            if fleet.variant == variant and fleet.revision == revision:
                return fleet
        return None

    def webhooks_of(self, variant: str) -> tuple[WebhookResult, ...]:
        """The answers of ``variant``'s webhooks called in this reconcile."""
        if self.webhooks is None:
            return ()
        return self.webhooks.get(variant, ())

    def capacity_of(self, variant: str) -> CapacityObservation | None:
        """``variant``'s load observation in this reconcile, if one was made."""
        if self.capacity is None:
            return None
        return self.capacity.get(variant)

    def alarms_of(self, variant: str) -> tuple[AlarmResult, ...] | None:
        """The verdicts of ``variant``'s alarms, or None when they were not evaluated."""
        if self.alarms is None:
            return None
        return self.alarms.get(variant)


# -- the plan ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AutoscalingPlan:
    """An HPA for one fleet."""

    min_replicas: int
    max_replicas: int
    target_cpu_percent: int | None
    target_invocations_per_replica: float | None
    scale_in_stabilization_seconds: int
    scale_out_stabilization_seconds: int


@dataclasses.dataclass(frozen=True)
class FleetPlan:
    """One fleet that must exist, its size, and its share of traffic."""

    variant: str
    revision: str
    role: Role
    replicas: int
    """Replicas to create it with; while ``autoscaling`` is set the HPA owns the count."""
    traffic_percent: int
    """The share of its variant's traffic the step asks for, 0-100."""
    autoscaling: AutoscalingPlan | None = None
    serving_replicas: int | None = None
    """How many of its pods the Replicas router puts in service; None means all of them
    when the fleet has traffic and none when it has not."""
    route_weight: int = 0
    """Its backend weight on a Gateway API route: the variant's weight times
    ``traffic_percent`` (0 while the variant cannot serve yet)."""
    spec_owned: bool = True
    """False for the fleet of a removed variant, kept while it drains: the spec no
    longer describes its pods, so it is never re-applied, only kept or deleted."""


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record on the Endpoint."""

    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to make true now. Fleets not listed are deleted, after traffic moves."""

    fleets: tuple[FleetPlan, ...]
    status: EndpointStatus
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    """Seconds until the planner must run again even if nothing changes."""

    def traffic(self, variant: str) -> dict[str, int]:
        """Traffic percent per revision for ``variant`` (what the step asks)."""
        return {f.revision: f.traffic_percent for f in self.fleets if f.variant == variant}
