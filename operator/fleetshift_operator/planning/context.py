"""What one variant's planning works on: its status so far, and what it plans.

Statuses are values (frozen pydantic models): a transition derives a new one with
:meth:`VariantDraft.update`, never edits one in place. :class:`VariantDraft` is the
planner's one accumulator: it holds the variant's latest status and collects the
fleets, events and records planned for it. It is created fresh for each variant of
each plan and thrown away after; nothing outside the planner sees it.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from fleetshift_operator.alarms.semantics import Verdict
from fleetshift_operator.api import (
    HISTORY_LIMIT,
    DeploymentRecord,
    EndpointSpec,
    StepStatus,
    Variant,
    VariantPhase,
    VariantStatus,
)
from fleetshift_operator.planning.names import calculate_revision
from fleetshift_operator.planning.times import whole_second
from fleetshift_operator.planning.types import (
    AutoscalingPlan,
    Controls,
    Event,
    FleetObservation,
    FleetPlan,
    Observed,
)

Action = Literal["abort", "promote", "retry"]


@dataclasses.dataclass
class Actions:
    """Requests from annotations, each acted on once per new id.

    An id taken during one plan counts for every variant of that plan: an abort rolls
    back every variant that is deploying.

    >>> actions = Actions(Controls(abort="7"), {})
    >>> actions.take("abort"), actions.take("abort"), actions.handled
    (True, True, {'abort': '7'})
    >>> Actions(Controls(abort="7"), {"abort": "7"}).take("abort")
    False
    """

    controls: Controls
    handled: dict[str, str]
    taken: set[str] = dataclasses.field(default_factory=set)

    def take(self, action: Action) -> bool:
        request = getattr(self.controls, action)
        if not request:
            return False
        if action in self.taken:
            return True
        if self.handled.get(action) == request:
            return False
        self.handled[action] = request
        self.taken.add(action)
        return True


StatusModel = TypeVar("StatusModel", bound=BaseModel)


def replaced(status: StatusModel, fields: dict[str, Any]) -> StatusModel:
    """``status`` with ``fields`` replaced: ``model_copy(update=...)``, which checks
    nothing, after a check that every name is one of the model's fields (a misspelt field
    would otherwise vanish without a word).

    >>> replaced(StepStatus(), {"weigth": 10})
    Traceback (most recent call last):
    ...
    ValueError: StepStatus has no field 'weigth'
    """
    for name in fields:
        if name not in type(status).model_fields:
            raise ValueError(f"{type(status).__name__} has no field {name!r}")
    return status.model_copy(update=fields)


@dataclasses.dataclass
class VariantDraft:
    """One variant's plan being built."""

    spec: EndpointSpec
    variant: Variant
    observed: Observed
    now: datetime.datetime
    status: VariantStatus
    paused: bool
    actions: Actions
    events: list[Event] = dataclasses.field(default_factory=list)
    fleets: list[FleetPlan] = dataclasses.field(default_factory=list)
    records: list[DeploymentRecord] = dataclasses.field(default_factory=list)
    requeue_after: float | None = None
    alarm_verdict: Verdict | None = None
    """The combined verdict of this reconcile's alarms (None: no alarms apply)."""

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def revision(self) -> str:
        """The revision the spec asks of this variant."""
        return calculate_revision(self.variant)

    @property
    def many(self) -> bool:
        """True when the Endpoint has several variants (messages then name this one)."""
        return len(self.spec.variants) > 1

    def fleet(self, revision: str | None) -> FleetObservation | None:
        return self.observed.fleet(self.name, revision)

    def alarms_allow_promotion(self) -> bool:
        """A step is promoted only when no alarms are configured or they say Healthy."""
        if (
            self.spec.deploymentConfig.autoRollback is None
            and self.observed.alarms_of(self.name) is None
        ):
            return True
        return self.alarm_verdict == "Healthy"

    def emit(self, reason: str, message: str, warning: bool = False) -> None:
        prefix = f"variant {self.name}: " if self.many else ""
        self.events.append(Event(reason, prefix + message, "Warning" if warning else "Normal"))

    def wake_at(self, moment: datetime.datetime | None) -> None:
        if moment is None:
            return
        delay = max(0.0, (moment - self.now).total_seconds())
        if self.requeue_after is None or delay < self.requeue_after:
            self.requeue_after = delay

    def wake_in(self, seconds: float) -> None:
        self.wake_at(self.now + datetime.timedelta(seconds=seconds))

    def update(self, **fields: Any) -> VariantStatus:
        """The variant's status from now on: the current one with ``fields`` replaced."""
        self.status = replaced(self.status, fields)
        return self.status

    def update_step(self, **fields: Any) -> StepStatus:
        """The current step (a new one if there is none) with ``fields`` replaced."""
        step = replaced(self.status.step or StepStatus(), fields)
        self.update(step=step)
        return step

    def set_phase(self, phase: VariantPhase) -> None:
        if self.status.phase != phase:
            self.emit("PhaseChanged", f"{self.status.phase or 'New'} -> {phase}")
        self.update(phase=phase)

    def record(
        self,
        revision: str,
        outcome: Literal["Succeeded", "RolledBack", "Superseded", "Failed"],
        reason: str,
    ) -> None:
        status = self.status
        record = DeploymentRecord(
            variant=self.name,
            revision=revision,
            fromRevision=status.activeRevision if status.activeRevision != revision else None,
            outcome=outcome,
            reason=reason,
            startedAt=status.deploymentStartedAt or whole_second(self.now),
            finishedAt=whole_second(self.now),
        )
        self.update(lastDeployment=record)
        self.records = [*self.records, record][-HISTORY_LIMIT:]

    def fleet_size(self, revision: str | None) -> int:
        """A fleet's current size: what the HPA made it, else the spec's replicas."""
        fleet = self.fleet(revision)
        if fleet is not None and fleet.replicas > 0:
            return fleet.replicas
        return self.variant.replicas

    def autoscaling(self, minimum: int | None = None) -> AutoscalingPlan | None:
        """The HPA of one of this variant's fleets, never below ``minimum``."""
        scaling = self.variant.autoscaling
        if scaling is None:
            return None
        floor = max(scaling.minReplicas, minimum or 0)
        return AutoscalingPlan(
            min_replicas=min(floor, scaling.maxReplicas),
            max_replicas=max(scaling.maxReplicas, floor),
            target_cpu_percent=scaling.targetCPUUtilizationPercent,
            target_invocations_per_replica=scaling.targetInvocationsPerReplica,
            scale_in_stabilization_seconds=scaling.scaleInStabilizationSeconds,
            scale_out_stabilization_seconds=scaling.scaleOutStabilizationSeconds,
        )

    def plan_fleet(  # noqa: PLR0917 - a fleet plan is these things
        self,
        revision: str,
        role: Literal["blue", "green"],
        replicas: int,
        traffic_percent: int,
        autoscaling: AutoscalingPlan | None = None,
        serving_replicas: int | None = None,
    ) -> None:
        self.fleets.append(
            FleetPlan(
                variant=self.name,
                revision=revision,
                role=role,
                replicas=replicas,
                traffic_percent=traffic_percent,
                autoscaling=autoscaling,
                serving_replicas=serving_replicas,
            )
        )
