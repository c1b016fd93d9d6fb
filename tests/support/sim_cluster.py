"""A simulated cluster for planner tests: fleets that turn Ready after a delay.

A fake, on purpose: it stands in for Deployments so that thousands of plans can run in
a second. The same rules run against the real control plane in tests/cluster.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Literal

from fleetshift_operator.alarms.base import AlarmResult
from fleetshift_operator.api import EndpointSpec, EndpointStatus, VariantStatus
from fleetshift_operator.planning.capacity import capacity_policy_of
from fleetshift_operator.planning.names import calculate_revision
from fleetshift_operator.planning.plan import plan_endpoint
from fleetshift_operator.planning.types import (
    CapacityObservation,
    Controls,
    FleetObservation,
    Observed,
    Plan,
)
from fleetshift_operator.webhooks.base import WebhookResult, due_calls

Answer = Literal["yes", "no", "nothing"]
"""What a webhook receiver does: 2xx, a 503, or no answer at all (a timeout)."""
UNSCHEDULABLE = "Unschedulable: 0/3 nodes have enough cpu"

T0 = datetime.datetime(2026, 11, 1, 12, 0, 0, tzinfo=datetime.UTC)


@dataclasses.dataclass
class SimFleet:
    replicas: int
    created: datetime.datetime
    ready_after: float | None = 2.0
    """Seconds until every replica is Ready; None: never."""
    failure: str | None = None
    waiting: str | None = None
    placed: int | None = None
    """Pods the scheduler placed (None: all of them); the rest are Pending."""
    grown: datetime.datetime | None = None
    """When pods were last added (scaled up, or placed at last); they start then."""
    ready_before: int = 0
    """Ready pods when they were added."""

    @property
    def pending(self) -> int:
        return 0 if self.placed is None else max(0, self.replicas - self.placed)

    def ready(self, now: datetime.datetime) -> int:
        if self.failure or self.ready_after is None:
            return 0
        if (now - self.created).total_seconds() < self.ready_after:
            return 0
        running = self.replicas - self.pending
        if self.grown is not None and (now - self.grown).total_seconds() < self.ready_after:
            return min(self.ready_before, running)
        return running

    def grow(self, now: datetime.datetime, replicas: int, placed: int | None) -> None:
        """Resize to ``replicas`` with ``placed`` of them placed: pods added start now."""
        before = self.replicas - self.pending
        ready = self.ready(now)
        self.replicas, self.placed = replicas, placed
        if self.replicas - self.pending > before:
            self.grown, self.ready_before = now, ready


@dataclasses.dataclass
class SimCluster:
    """Fleets by (variant, revision), the Endpoint's status, and the clock."""

    now: datetime.datetime = T0
    fleets: dict[tuple[str, str], SimFleet] = dataclasses.field(default_factory=dict)
    status: EndpointStatus | None = None
    controls: Controls = dataclasses.field(default_factory=Controls)
    alarms: dict[str, tuple[AlarmResult, ...]] | None = None
    ready_after: dict[str, float | None] = dataclasses.field(default_factory=dict)
    """Per revision; 2 s when absent."""
    waiting: dict[str, str] = dataclasses.field(default_factory=dict)
    """Per revision: what its pods wait for (they never turn Ready)."""
    killed: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    """Fleets whose pods are all unready."""
    pod_room: int | None = None
    """A full cluster: each fleet can place at most this many pods (running pods stay
    where they are; new ones are Pending, Unschedulable). None: every pod is placed."""
    load_rps: float | None = None
    """Requests per second the variant being deployed carries, split by the serving pods;
    None: Prometheus has no data (an observation without numbers)."""
    rps_per_replica_at_p95: tuple[float, float] = (10.0, 0.03)
    """What one green pod carries, and green's latency at that load."""
    answers: dict[str, Answer] = dataclasses.field(default_factory=dict)
    """Per webhook name: what its receiver does when called ("yes" when absent)."""
    calls: list[tuple[str, str, str, str, WebhookResult]] = dataclasses.field(default_factory=list)
    """Every webhook call made: (variant, name, type, delivery id, result)."""
    judged: dict[str, str] = dataclasses.field(default_factory=dict)
    """Per variant: the revision its alarm verdicts of the last reconcile are about."""
    last: Plan | None = None
    previous: EndpointStatus | None = None
    """The status the last plan was given."""

    def observe(self, spec: EndpointSpec) -> Observed:
        return Observed(
            endpoint="churn",
            fleets=tuple(
                FleetObservation(
                    variant=variant,
                    revision=revision,
                    replicas=fleet.replicas,
                    ready=0 if (variant, revision) in self.killed else fleet.ready(self.now),
                    failure=fleet.failure,
                    waiting=fleet.waiting or (UNSCHEDULABLE if fleet.pending else None),
                    pending=fleet.pending,
                )
                for (variant, revision), fleet in self.fleets.items()
            ),
            controls=self.controls,
            alarms=self.evaluate_alarms(spec),
            router=spec.traffic.router,
            webhooks=self.call_webhooks(spec),
            capacity=self.observe_capacity(spec),
        )

    def evaluate_alarms(self, spec: EndpointSpec) -> dict[str, tuple[AlarmResult, ...]] | None:
        """``alarms``, for the variants whose green fleet is watched (as
        ``reconcile.observe_alarms``: deploying, from the status it was given); the
        revision each verdict was evaluated for is kept in ``judged``."""
        self.judged = {}
        if self.alarms is None or spec.deploymentConfig.autoRollback is None:
            return None
        if self.status is None:
            return None
        deploying = {
            v.name: v.candidateRevision
            for v in self.status.variants
            if v.candidateRevision is not None
            and v.activeRevision is not None
            and v.step is not None
            and v.phase == "Updating"
            and v.name in self.alarms
        }
        self.judged = {name: revision for name, revision in deploying.items() if revision}
        return {name: self.alarms[name] for name in deploying} or None

    def call_webhooks(self, spec: EndpointSpec) -> dict[str, tuple[WebhookResult, ...]] | None:
        """The calls the status says are due (as ``reconcile.observe_webhooks``), each
        answered as ``answers`` says."""
        results: dict[str, tuple[WebhookResult, ...]] = {}
        for call in due_calls(spec, self.status, "ml", "churn", self.now):
            answer = self.answers.get(call.hook.name, "yes")
            if answer == "yes":
                result = WebhookResult(call.hook.name, call.revision, "Healthy", 200, "HTTP 200")
            elif answer == "no":
                result = WebhookResult(
                    call.hook.name, call.revision, "Inconclusive", 503, "HTTP 503: not 2xx"
                )
            else:
                result = WebhookResult(
                    call.hook.name, call.revision, "Inconclusive", None, "no answer: timed out", 3
                )
            self.calls.append((call.variant, call.hook.name, call.hook.type, call.delivery, result))
            results[call.variant] = (*results.get(call.variant, ()), result)
        return results or None

    def observe_capacity(self, spec: EndpointSpec) -> dict[str, CapacityObservation] | None:
        """Each variant in a canary step's load and green's latency, as
        ``reconcile.observe_capacity`` measures them (from the status it was given)."""
        if capacity_policy_of(spec) is None or self.status is None:
            return None
        observed = {}
        for variant in self.status.variants:
            step = variant.step
            if not (
                variant.phase == "Updating"
                and variant.candidateRevision is not None
                and variant.activeRevision is not None
                and step is not None
                and step.stage == "Baking"
                and 0 < step.greenPercent < 100
            ):
                continue
            serving = next(
                (
                    (f.servingReplicas if f.servingReplicas is not None else f.readyReplicas)
                    for f in self.status.fleets.values()
                    if f.variant == variant.name
                    and f.revision == variant.candidateRevision
                    and f.role == "green"
                ),
                0,
            )
            if self.load_rps is None:
                observed[variant.name] = CapacityObservation(None, None, serving, reason="none")
                continue
            green = self.load_rps * step.greenPercent / 100
            per_replica, latency = self.rps_per_replica_at_p95
            # Past what its pods carry at p95, green's latency grows with its load.
            stretch = max(1.0, green / max(1, serving) / per_replica)
            observed[variant.name] = CapacityObservation(
                green_rps=green,
                blue_rps=self.load_rps - green,
                green_replicas=serving,
                latency_seconds=latency * stretch,
            )
        return observed or None

    def step(self, spec: EndpointSpec) -> Plan:
        """One reconcile: plan, then make the fleets what the plan says (as apply_plan).

        Every reconcile also checks two promises of the planner: the status it is given
        is left as it was, and the status it plans reads back from its JSON unchanged
        (times are whole seconds), so an operator that restarts resumes exactly."""
        given = self.status.model_dump() if self.status is not None else None
        self.place()
        plan = plan_endpoint(spec, self.status, self.observe(spec), self.now)
        after = self.status.model_dump() if self.status is not None else None
        assert after == given, "the planner changed the status it was given"
        self.apply(plan)
        written = EndpointStatus.model_validate(plan.status.model_dump(mode="json"))
        assert written == plan.status, "the status read back differs from the one planned"
        self.previous = self.status
        self.status = written
        self.last = plan
        self.place()
        return plan

    def place(self) -> None:
        """The scheduler: pods of each fleet are placed while there is room."""
        for fleet in self.fleets.values():
            placed = fleet.replicas if fleet.placed is None else fleet.placed
            if self.pod_room is not None:
                placed = min(fleet.replicas, max(placed, self.pod_room))
            fleet.grow(self.now, fleet.replicas, None if self.pod_room is None else placed)

    def apply(self, plan: Plan) -> None:
        wanted = {(f.variant, f.revision): f for f in plan.fleets}
        for key, fleet_plan in wanted.items():
            fleet = self.fleets.get(key)
            if fleet is None:
                revision = key[1]
                waiting = self.waiting.get(revision)
                self.fleets[key] = SimFleet(
                    replicas=fleet_plan.replicas,
                    created=self.now,
                    ready_after=None if waiting else self.ready_after.get(revision, 2.0),
                    waiting=waiting,
                    placed=None if self.pod_room is None else 0,
                )
            elif fleet.replicas != fleet_plan.replicas:
                placed = fleet.placed
                if placed is None and self.pod_room is not None:
                    placed = fleet.replicas  # running pods stay; new ones wait
                if placed is not None:
                    placed = min(placed, fleet_plan.replicas)
                fleet.grow(self.now, fleet_plan.replicas, placed)
        for key in list(self.fleets):
            if key not in wanted:
                del self.fleets[key]

    def run(self, spec: EndpointSpec, seconds: float, tick: float = 1.0) -> Plan:
        end = self.now + datetime.timedelta(seconds=seconds)
        plan = self.step(spec)
        while self.now < end:
            self.now += datetime.timedelta(seconds=tick)
            plan = self.step(spec)
        return plan

    def variant(self, name: str) -> VariantStatus:
        assert self.status is not None
        return next(v for v in self.status.variants if v.name == name)


def revision(spec: EndpointSpec, name: str) -> str:
    return calculate_revision(next(v for v in spec.variants if v.name == name))
