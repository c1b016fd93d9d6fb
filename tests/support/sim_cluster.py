"""A simulated cluster for planner tests: fleets that turn Ready after a delay.

A fake, on purpose: it stands in for Deployments so that thousands of plans can run in
a second. The same rules run against the real control plane in tests/cluster.
"""

from __future__ import annotations

import dataclasses
import datetime

from fleetshift_operator.alarms.base import AlarmResult
from fleetshift_operator.api import EndpointSpec, EndpointStatus, VariantStatus
from fleetshift_operator.planning.names import calculate_revision
from fleetshift_operator.planning.plan import plan_endpoint
from fleetshift_operator.planning.types import Controls, FleetObservation, Observed, Plan

T0 = datetime.datetime(2026, 11, 1, 12, 0, 0, tzinfo=datetime.UTC)


@dataclasses.dataclass
class SimFleet:
    replicas: int
    created: datetime.datetime
    ready_after: float | None = 2.0
    """Seconds until every replica is Ready; None: never."""
    failure: str | None = None
    waiting: str | None = None

    def ready(self, now: datetime.datetime) -> int:
        if self.failure or self.ready_after is None:
            return 0
        return self.replicas if (now - self.created).total_seconds() >= self.ready_after else 0


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
    last: Plan | None = None

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
                    waiting=fleet.waiting,
                )
                for (variant, revision), fleet in self.fleets.items()
            ),
            controls=self.controls,
            alarms=self.alarms,
            router=spec.traffic.router,
        )

    def step(self, spec: EndpointSpec) -> Plan:
        """One reconcile: plan, then make the fleets what the plan says (as apply_plan).

        Every reconcile also checks two promises of the planner: the status it is given
        is left as it was, and the status it plans reads back from its JSON unchanged
        (times are whole seconds), so an operator that restarts resumes exactly."""
        given = self.status.model_dump() if self.status is not None else None
        plan = plan_endpoint(spec, self.status, self.observe(spec), self.now)
        after = self.status.model_dump() if self.status is not None else None
        assert after == given, "the planner changed the status it was given"
        self.apply(plan)
        written = EndpointStatus.model_validate(plan.status.model_dump(mode="json"))
        assert written == plan.status, "the status read back differs from the one planned"
        self.status = written
        self.last = plan
        return plan

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
                )
            elif fleet.replicas != fleet_plan.replicas:
                fleet.replicas = fleet_plan.replicas
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
