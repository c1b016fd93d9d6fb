"""The rollout planner: ``(spec, status, observed, now) -> Plan``. Pure: no I/O, no clock.

Every decision the operator makes about an Endpoint is made here; handlers
observe the cluster, call :func:`plan_endpoint`, apply the plan and write the
status it returns. Because all rollout state lives in ``status`` (with
timestamps), a restarted operator calls the planner with the same inputs and
gets the same plan: it resumes exactly where it was.

The rules, in order of precedence
---------------------------------
1. **First deployment.** No active revision: the fleet is created at
   ``replicas`` (phase ``Creating``); once all its replicas are Ready it takes
   100% of the traffic and the endpoint is ``InService``. Not Ready by the
   deadline: ``Failed``.
2. **A new revision** (a change to what the pods run: model, image, resources,
   env, placement) starts a blue/green deployment (phase ``Updating``). The
   green fleet is created at blue's current replica count, so capacity is
   there before any traffic moves.
3. **Provisioning.** Traffic moves only once every green replica is Ready.
4. **Traffic steps** (:func:`calculate_steps`): after each shift the step bakes
   for ``waitIntervalSeconds``. It is promoted only when the bake is over, the
   green fleet has the Ready replicas its next share needs, and the alarms (if
   any) say Healthy.
5. **Termination wait.** After the last step (100% green) blue is kept for
   ``terminationWaitSeconds``; a breach still rolls back. Then blue is retired
   and green becomes the active fleet.
6. **Rollback** (alarm breach, deadline, crash-looping green, or an abort):
   100% of the traffic goes back to blue in the same plan and green is deleted.
   Once green is gone the endpoint is ``InService`` on blue and ``Degraded``
   names the rolled-back revision, which is not tried again until the spec
   changes or a retry is requested.
7. **Superseded.** A different revision mid-deployment: blue takes all the
   traffic, the old green is deleted, and the new revision starts over.
8. **Controls** (annotations, see ``controls.py``): *pause* holds the current
   step (alarms still roll back; waits and the deadline are extended by the
   pause), *resume* lifts it, *promote* skips every remaining wait once green
   is fully Ready, *abort* rolls back, *retry* deploys a rolled-back revision
   again.

Worked example (canary 25%, 4 replicas, wait 60 s, termination wait 120 s)::

    t=0    spec changes to revision r2     Updating, Provisioning, green r2 x4 created
    t=5    green 4/4 Ready                 step 1/2: green 25% (1 of 4 serving), bake to t=65
    t=65   bake over, alarms Healthy       step 2/2: green 100%, bake to t=125
    t=125  bake over, alarms Healthy       TerminationWait until t=245, blue kept
    t=245  wait over                       InService on r2, blue r1 deleted

Had an alarm breached at t=100, the plan at t=100 would put 100% on blue and
drop green; at the next observation without green the phase is InService on r1.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
from typing import Literal

from fleetshift_operator.alarms.base import AlarmResult
from fleetshift_operator.alarms.semantics import Verdict
from fleetshift_operator.api import (
    HISTORY_LIMIT,
    AlarmStatus,
    BlueGreen,
    Condition,
    DeploymentRecord,
    EndpointSpec,
    EndpointStatus,
    FleetStatus,
    Phase,
    StepStatus,
    TrafficRouting,
    Variant,
)

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
    alarms: tuple[AlarmResult, ...] | None = None
    """This reconcile's alarm verdicts; None when the alarms were not evaluated
    (no alarms, or no bake in progress)."""

    def fleet(self, variant: str, revision: str | None) -> FleetObservation | None:
        for fleet in self.fleets:
            if fleet.variant == variant and fleet.revision == revision:
                return fleet
        return None


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
    """One fleet that must exist, its size, and its share of its variant's traffic."""

    variant: str
    revision: str
    role: Role
    replicas: int
    """Replicas to create it with; while ``autoscaling`` is set the HPA owns the count."""
    traffic_percent: int
    """Share of the variant's traffic, 0-100."""
    autoscaling: AutoscalingPlan | None = None
    serving_replicas: int | None = None
    """How many of its pods the replica-ratio router puts in service; None means
    all of them when the fleet has traffic and none when it has not."""


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
        """Traffic percent per revision for ``variant``."""
        return {f.revision: f.traffic_percent for f in self.fleets if f.variant == variant}


# -- pure calculations -------------------------------------------------------------------


_POD_FIELDS = (
    "name",
    "model",
    "image",
    "resources",
    "env",
    "nodeSelector",
    "tolerations",
    "podAnnotations",
)


def calculate_revision(spec: EndpointSpec) -> str:
    """A short hash of everything that changes the pods; replicas, weights and
    autoscaling do not count.

    >>> from fleetshift_operator.api import ModelSource
    >>> one = EndpointSpec(variants=[Variant(name="a", model=ModelSource(uri="s3://m/1"))])
    >>> bigger = one.variants[0].model_copy(update={"replicas": 5})
    >>> two = one.model_copy(update={"variants": [bigger]})
    >>> calculate_revision(one) == calculate_revision(two)
    True
    >>> len(calculate_revision(one))
    10
    """
    pods = [v.model_dump(mode="json", include=set(_POD_FIELDS)) for v in spec.variants]
    for pod in pods:  # a field added later leaves existing revisions as they were
        if not pod.get("podAnnotations"):
            pod.pop("podAnnotations", None)
    digest = hashlib.sha256(json.dumps(pods, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _size_to_percent(size_type: str, value: int, fleet_size: int) -> int:
    if size_type == "CapacityPercent":
        return min(100, value)
    return min(100, math.ceil(100 * value / max(1, fleet_size)))


def calculate_steps(routing: TrafficRouting, fleet_size: int) -> list[int]:
    """The green share after each traffic step, ending at 100.

    >>> from fleetshift_operator.api import CapacitySize as S
    >>> calculate_steps(TrafficRouting(type="AllAtOnce"), 4)
    [100]
    >>> R = TrafficRouting
    >>> def canary(kind, n): return R(type="Canary", canarySize=S(type=kind, value=n))
    >>> def linear(kind, n): return R(type="Linear", linearStepSize=S(type=kind, value=n))
    >>> calculate_steps(canary("CapacityPercent", 10), 4)
    [10, 100]
    >>> calculate_steps(canary("InstanceCount", 1), 4)
    [25, 100]
    >>> calculate_steps(linear("CapacityPercent", 30), 4)
    [30, 60, 90, 100]
    >>> calculate_steps(linear("InstanceCount", 2), 6)
    [34, 67, 100]
    """
    if routing.type == "Canary" and routing.canarySize is not None:
        size = routing.canarySize
        return [_size_to_percent(size.type, size.value, fleet_size), 100]
    if routing.type == "Linear" and routing.linearStepSize is not None:
        size = routing.linearStepSize
        step = _size_to_percent(size.type, size.value, fleet_size)
        if size.type == "InstanceCount":
            count = math.ceil(fleet_size / size.value)
            return [
                min(100, math.ceil(100 * k * size.value / fleet_size)) for k in range(1, count + 1)
            ]
        count = math.ceil(100 / step)
        return [min(100, k * step) for k in range(1, count + 1)]
    return [100]


def calculate_serving(fleet_size: int, green_percent: int) -> tuple[int, int]:
    """How many (blue, green) replicas serve so that green carries ``green_percent``
    of a fleet of ``fleet_size`` with the replica-ratio router. A non-zero share
    gets at least one replica; a share under 100 leaves blue at least one.

    >>> calculate_serving(4, 25)
    (3, 1)
    >>> calculate_serving(3, 10)
    (2, 1)
    >>> calculate_serving(10, 0), calculate_serving(10, 100)
    ((10, 0), (0, 10))
    >>> calculate_serving(1, 50)
    (1, 1)
    """
    if green_percent <= 0:
        return fleet_size, 0
    if green_percent >= 100:
        return 0, fleet_size
    green = max(1, round(fleet_size * green_percent / 100))
    blue = max(1, fleet_size - green)
    return blue, green


def calculate_required_ready(fleet_size: int, green_percent: int) -> int:
    """Ready green replicas needed before green may carry ``green_percent``.

    >>> [calculate_required_ready(4, percent) for percent in (0, 25, 100)]
    [0, 1, 4]
    """
    return calculate_serving(fleet_size, green_percent)[1]


def total_wait_seconds(policy: BlueGreen, fleet_size: int) -> int:
    """The sum of all waits of a deployment: a bake after every step, then the
    termination wait.

    >>> from fleetshift_operator.api import CapacitySize as S
    >>> routing = TrafficRouting(type="Canary", canarySize=S(type="CapacityPercent", value=10),
    ...                          waitIntervalSeconds=60)
    >>> total_wait_seconds(BlueGreen(trafficRouting=routing, terminationWaitSeconds=120), 4)
    240
    """
    steps = calculate_steps(policy.trafficRouting, fleet_size)
    return len(steps) * policy.trafficRouting.waitIntervalSeconds + policy.terminationWaitSeconds


# -- time helpers ------------------------------------------------------------------------


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, to the second.

    >>> format_time(datetime.datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=datetime.UTC))
    '2026-01-02T03:04:05Z'
    """
    return moment.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    """The inverse of :func:`format_time` (None stays None)."""
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _ceil_second(moment: datetime.datetime) -> datetime.datetime:
    """Round up to a whole second, so a stored time is never earlier than meant."""
    if moment.microsecond:
        return moment.replace(microsecond=0) + datetime.timedelta(seconds=1)
    return moment


# -- the planner ---------------------------------------------------------------------------


def _policy(spec: EndpointSpec) -> BlueGreen:
    return spec.deploymentConfig.blueGreen or BlueGreen()


def _autoscaling(variant: Variant, minimum: int | None = None) -> AutoscalingPlan | None:
    scaling = variant.autoscaling
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


def _fleet_size(variant: Variant, observed: Observed, revision: str | None) -> int:
    """Blue's current size: what the HPA made it, else the spec's replicas."""
    blue = observed.fleet(variant.name, revision)
    if blue is not None and blue.replicas > 0:
        return blue.replicas
    return variant.replicas


def _condition(  # noqa: PLR0917 - a condition is these seven things
    conditions: list[Condition],
    kind: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int,
) -> list[Condition]:
    previous = next((c for c in conditions if c.type == kind), None)
    changed = previous is None or previous.status != status
    stamp = format_time(now) if changed or previous is None else previous.lastTransitionTime
    updated = Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=stamp,
        observedGeneration=generation,
    )
    return [c for c in conditions if c.type != kind] + [updated]


@dataclasses.dataclass
class _Draft:
    """The plan being built: a mutable copy of status plus outputs."""

    spec: EndpointSpec
    observed: Observed
    now: datetime.datetime
    status: EndpointStatus
    events: list[Event] = dataclasses.field(default_factory=list)
    fleets: list[FleetPlan] = dataclasses.field(default_factory=list)
    requeue_after: float | None = None
    alarm_verdict: Verdict | None = None
    """The combined verdict of this reconcile's alarms (None: no alarms apply)."""

    def alarms_allow_promotion(self) -> bool:
        """A step is promoted only when no alarms are configured or they say Healthy."""
        if self.spec.deploymentConfig.autoRollback is None and self.observed.alarms is None:
            return True
        return self.alarm_verdict == "Healthy"

    def emit(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event(reason, message, "Warning" if warning else "Normal"))

    def wake_at(self, moment: datetime.datetime | None) -> None:
        if moment is None:
            return
        delay = max(0.0, (moment - self.now).total_seconds())
        if self.requeue_after is None or delay < self.requeue_after:
            self.requeue_after = delay

    def set_phase(self, phase: Phase) -> None:
        if self.status.phase != phase:
            self.emit("PhaseChanged", f"{self.status.phase or 'New'} -> {phase}")
        self.status.phase = phase


def plan_endpoint(
    spec: EndpointSpec, status: EndpointStatus | None, observed: Observed, now: datetime.datetime
) -> Plan:
    """Decide the next step of ``spec``'s rollout. See the module docstring for the rules."""
    draft = _Draft(
        spec=spec,
        observed=observed,
        now=now,
        status=(status or EndpointStatus()).model_copy(deep=True),
    )
    _handle_pause(draft)
    revision = calculate_revision(spec)
    current = draft.status
    retry = _take_action(draft, "retry")
    if retry and current.rolledBackRevision == revision:
        current.rolledBackRevision = None
        draft.emit("RetryRequested", f"retrying revision {revision}")

    if current.activeRevision is None:
        _plan_first_deployment(draft, revision)
    elif current.candidateRevision is not None:
        _plan_deployment(draft, revision)
    elif revision not in (current.activeRevision, current.rolledBackRevision):
        _start_deployment(draft, revision)
        _plan_deployment(draft, revision)
    else:
        _plan_steady(draft)
    _finish_status(draft, revision)
    return Plan(
        fleets=tuple(draft.fleets),
        status=draft.status,
        events=tuple(draft.events),
        requeue_after=draft.requeue_after,
    )


def _take_action(draft: _Draft, action: Literal["abort", "promote", "retry"]) -> bool:
    """True once per new request id of ``action``; the id is remembered in status."""
    request = getattr(draft.observed.controls, action)
    if not request or draft.status.handledActions.get(action) == request:
        return False
    draft.status.handledActions = {**draft.status.handledActions, action: request}
    return True


def _handle_pause(draft: _Draft) -> None:
    status, paused = draft.status, draft.observed.controls.paused
    if paused and not status.paused:
        status.paused, status.pausedAt = True, format_time(draft.now)
        draft.emit("Paused", "deployment paused: steps are held, alarms still roll back")
    elif not paused and status.paused:
        began = parse_time(status.pausedAt) or draft.now
        held = draft.now - began
        for field in ("deadline",):
            moment = parse_time(getattr(status, field))
            if moment is not None:
                setattr(status, field, format_time(_ceil_second(moment + held)))
        if status.step is not None and status.step.bakeUntil:
            bake = parse_time(status.step.bakeUntil)
            if bake is not None:
                status.step.bakeUntil = format_time(_ceil_second(bake + held))
        status.paused, status.pausedAt = False, None
        draft.emit("Resumed", f"deployment resumed after {int(held.total_seconds())}s")


def _record(
    draft: _Draft,
    revision: str,
    outcome: Literal["Succeeded", "RolledBack", "Superseded", "Failed"],
    reason: str,
) -> None:
    status = draft.status
    record = DeploymentRecord(
        revision=revision,
        fromRevision=status.activeRevision if status.activeRevision != revision else None,
        outcome=outcome,
        reason=reason,
        startedAt=status.deploymentStartedAt or format_time(draft.now),
        finishedAt=format_time(draft.now),
    )
    status.lastDeployment = record
    status.history = [*status.history, record][-HISTORY_LIMIT:]


def _clear_deployment(status: EndpointStatus) -> None:
    status.rollbackReason = None
    status.candidateRevision = None
    status.step = None
    status.deploymentStartedAt = None
    status.deadline = None


def _deadline(draft: _Draft) -> datetime.datetime:
    rolling = draft.spec.deploymentConfig.rolling
    timeout = (
        rolling.maximumExecutionTimeoutSeconds
        if rolling is not None
        else _policy(draft.spec).maximumExecutionTimeoutSeconds
    )
    return _ceil_second(draft.now + datetime.timedelta(seconds=timeout))


def _start_deployment(draft: _Draft, revision: str) -> None:
    status = draft.status
    status.candidateRevision = revision
    status.deploymentStartedAt = format_time(draft.now)
    status.deadline = format_time(_deadline(draft))
    status.inconclusiveStreak = 0
    status.alarms = []
    status.rollbackCause = None
    active = status.activeRevision
    size = max(_fleet_size(v, draft.observed, active) for v in draft.spec.variants)
    status.step = StepStatus(stage="Provisioning", index=0, total=0, greenPercent=0, fleetSize=size)
    draft.set_phase("Updating")
    draft.emit(
        "DeploymentStarted",
        f"deploying revision {revision} over {status.activeRevision}: green fleet provisioning",
    )


# -- first deployment ----------------------------------------------------------------------


def _plan_first_deployment(draft: _Draft, revision: str) -> None:
    status, spec, observed = draft.status, draft.spec, draft.observed
    if status.candidateRevision != revision:
        if status.candidateRevision is not None:
            draft.emit("Superseded", f"revision {status.candidateRevision} replaced by {revision}")
        status.candidateRevision = revision
        status.deploymentStartedAt = format_time(draft.now)
        status.deadline = format_time(_deadline(draft))
        status.step = StepStatus(stage="Provisioning")
        draft.set_phase("Creating")
    all_ready = True
    failure = None
    for variant in spec.variants:
        fleet = observed.fleet(variant.name, revision)
        ready = fleet is not None and fleet.ready >= variant.replicas
        all_ready = all_ready and ready
        failure = failure or (fleet.failure if fleet else None)
    _serve_all(draft, revision, observed_size=False)
    if status.phase == "Failed":
        return
    if all_ready:
        _record(draft, revision, "Succeeded", "endpoint created")
        status.activeRevision = revision
        _clear_deployment(status)
        draft.set_phase("InService")
        draft.emit("InService", f"revision {revision} is serving")
        return
    deadline = parse_time(status.deadline)
    if (deadline is not None and draft.now >= deadline and not status.paused) or failure:
        reason = failure or "the fleet was not Ready before the deadline"
        _record(draft, revision, "Failed", reason)
        draft.set_phase("Failed")
        draft.emit("CreateFailed", reason, warning=True)
        return
    draft.wake_at(deadline)


# -- steady state --------------------------------------------------------------------------


def _plan_steady(draft: _Draft) -> None:
    status = draft.status
    assert status.activeRevision is not None
    _serve_all(draft, status.activeRevision, observed_size=False)
    if status.phase not in ("InService",):
        draft.set_phase("InService")
    status.greenTrafficPercent = 0


# -- blue/green deployment -----------------------------------------------------------------


def _serve_all(draft: _Draft, revision: str, *, observed_size: bool) -> None:
    """Plan one fleet per variant at ``revision`` with all the traffic, sized as the
    spec says, or as it is now (``observed_size``: the HPA may have resized it)."""
    for variant in draft.spec.variants:
        size = _fleet_size(variant, draft.observed, revision) if observed_size else variant.replicas
        draft.fleets.append(
            FleetPlan(
                variant=variant.name,
                revision=revision,
                role="blue",
                replicas=size,
                traffic_percent=100,
                autoscaling=_autoscaling(variant),
            )
        )


def _blue_only(draft: _Draft) -> None:
    assert draft.status.activeRevision is not None
    _serve_all(draft, draft.status.activeRevision, observed_size=True)


def _rollback(draft: _Draft, reason: str, *, warning: bool = True) -> None:
    """All traffic back to blue. Blue/green: at once, green is dropped from the plan
    (and so deleted). Rolling: blue capacity is restored in batches first."""
    status = draft.status
    candidate = status.candidateRevision
    rolling = draft.spec.deploymentConfig.rolling is not None
    blue_missing = [
        v.name
        for v in draft.spec.variants
        if (fleet := draft.observed.fleet(v.name, status.activeRevision)) is None
        or (fleet.ready == 0 and not rolling)
    ]
    status.rollbackReason = reason
    if blue_missing:
        # Never send traffic to a fleet that cannot take it: keep green serving and
        # retry; the rollback completes once blue can take the traffic again.
        _keep_current(draft)
        if status.phase != "UpdateRollbackFailed":
            draft.set_phase("UpdateRollbackFailed")
            draft.emit(
                "RollbackBlocked",
                f"cannot roll back {candidate}: blue fleet of {', '.join(blue_missing)} not Ready",
                warning=True,
            )
        draft.wake_at(draft.now + datetime.timedelta(seconds=5))
        return
    if status.phase != "RollingBack":
        draft.set_phase("RollingBack")
        draft.emit("RollbackStarted", f"rolling back {candidate}: {reason}", warning=warning)
        status.rolledBackRevision = candidate
        _record(draft, candidate or "", "RolledBack", reason)
    if rolling and not _rolling_rollback(draft):
        return
    _blue_only(draft)
    status.greenTrafficPercent = 0
    if status.step is not None:
        status.step.greenPercent = 0


def _keep_current(draft: _Draft) -> None:
    """Plan both fleets at their current shares (used when blue cannot take traffic)."""
    status = draft.status
    green_percent = status.step.greenPercent if status.step else 0
    for variant in draft.spec.variants:
        size = _fleet_size(variant, draft.observed, status.activeRevision)
        if status.activeRevision is not None:
            draft.fleets.append(
                FleetPlan(
                    variant=variant.name,
                    revision=status.activeRevision,
                    role="blue",
                    replicas=size,
                    traffic_percent=100 - green_percent,
                    autoscaling=_autoscaling(variant),
                )
            )
        if status.candidateRevision is not None:
            draft.fleets.append(
                FleetPlan(
                    variant=variant.name,
                    revision=status.candidateRevision,
                    role="green",
                    replicas=size,
                    traffic_percent=green_percent,
                    autoscaling=_autoscaling(
                        variant, calculate_required_ready(size, green_percent)
                    ),
                )
            )


def _finish_rollback_if_done(draft: _Draft) -> bool:
    """In RollingBack: once no green fleet is observed, the endpoint is InService on blue."""
    status = draft.status
    candidate = status.candidateRevision
    leftovers = [f for f in draft.observed.fleets if f.revision == candidate]
    _blue_only(draft)
    status.greenTrafficPercent = 0
    if leftovers:
        return False
    _clear_deployment(status)
    draft.set_phase("InService")
    draft.emit("RolledBack", f"revision {candidate} rolled back; {status.activeRevision} serving")
    return True


def _plan_deployment(draft: _Draft, revision: str) -> None:
    status = draft.status
    candidate = status.candidateRevision
    assert candidate is not None

    if status.phase == "UpdateRollbackFailed":
        _rollback(draft, status.rollbackReason or "rollback retried")
        return

    if status.phase == "RollingBack":
        if draft.spec.deploymentConfig.rolling is not None and not _rolling_rollback(draft):
            return
        _finish_rollback_if_done(draft)
        if status.candidateRevision is None and revision not in (
            status.activeRevision,
            status.rolledBackRevision,
        ):
            draft.fleets.clear()
            _start_deployment(draft, revision)
            _plan_deployment(draft, revision)
        return

    if revision != candidate:
        # Superseded: blue takes everything back; the old green goes; start over.
        _record(draft, candidate, "Superseded", f"replaced by revision {revision}")
        draft.emit("Superseded", f"revision {candidate} superseded by {revision}")
        _clear_deployment(status)
        status.greenTrafficPercent = 0
        if revision in (status.activeRevision, status.rolledBackRevision):
            _plan_steady(draft)
            return
        _start_deployment(draft, revision)

    if _take_action(draft, "abort"):
        _rollback(draft, "aborted on request", warning=False)
        return

    cause = _judge_alarms(draft)
    if cause is not None:
        status.rollbackCause = cause
        _rollback(draft, f"alarm {cause.name}: {cause.reason}")
        return
    policy = draft.spec.deploymentConfig.autoRollback
    if policy is not None:
        draft.wake_at(draft.now + datetime.timedelta(seconds=policy.pollIntervalSeconds))

    failures = [
        f"{f.variant}: {f.failure}"
        for f in draft.observed.fleets
        if f.revision == status.candidateRevision and f.failure
    ]
    if failures:
        _rollback(draft, f"green fleet cannot run ({'; '.join(failures)})")
        return

    deadline = parse_time(status.deadline)
    if deadline is not None and draft.now >= deadline and not status.paused:
        _rollback(draft, "the deployment did not finish before maximumExecutionTimeoutSeconds")
        return

    if draft.spec.deploymentConfig.rolling is not None:
        _advance_rolling(draft)
    else:
        _advance(draft)
    if not status.paused:
        draft.wake_at(deadline)


def _judge_alarms(draft: _Draft) -> AlarmStatus | None:
    """Record this reconcile's alarm verdicts; return the cause if they demand a rollback.

    Any Breaching alarm, or an alarm that cannot work at all (invalid PromQL, unknown
    rule), rolls back. Inconclusive and Error hold the step; with ``onInconclusive:
    RollBack`` enough of them in a row roll back too, and the cause says so.
    """
    results = draft.observed.alarms
    status = draft.status
    if results is None:
        return None
    stamp = format_time(draft.now)
    recorded = [
        AlarmStatus(
            name=r.name, verdict=r.verdict, value=r.value, reason=r.reason, evaluatedAt=stamp
        )
        for r in results
    ]
    status.alarms = recorded
    by_name = {a.name: a for a in recorded}
    decisive = [r for r in results if r.fatal] or [r for r in results if r.verdict == "Breaching"]
    if decisive:
        draft.alarm_verdict = decisive[0].verdict
        status.inconclusiveStreak = 0
        return by_name[decisive[0].name]
    unclear = [r for r in results if r.verdict in ("Inconclusive", "Error")]
    if not unclear:
        draft.alarm_verdict = "Healthy"
        status.inconclusiveStreak = 0
        return None
    draft.alarm_verdict = "Inconclusive"
    status.inconclusiveStreak += 1
    policy = draft.spec.deploymentConfig.autoRollback
    if (
        policy is not None
        and policy.onInconclusive.action == "RollBack"
        and status.inconclusiveStreak >= policy.onInconclusive.consecutiveEvaluations
    ):
        first = by_name[unclear[0].name]
        return first.model_copy(
            update={
                "reason": f"inconclusive {status.inconclusiveStreak} evaluations in a row "
                f"(onInconclusive: RollBack): {first.reason}"
            }
        )
    return None


def _advance(draft: _Draft) -> None:
    """Provisioning -> steps -> termination wait -> retire blue."""
    status, spec, observed, now = draft.status, draft.spec, draft.observed, draft.now
    candidate, active = status.candidateRevision, status.activeRevision
    assert candidate is not None and active is not None
    step = status.step or StepStatus()
    status.step = step
    policy = _policy(spec)
    sizes = {v.name: _fleet_size(v, observed, active) for v in spec.variants}
    reference_size = max(sizes.values())
    steps = calculate_steps(policy.trafficRouting, reference_size)
    step.total = len(steps)
    promote = _take_action(draft, "promote")

    def green_ready_for(percent: int) -> bool:
        for variant in spec.variants:
            fleet = observed.fleet(variant.name, candidate)
            needed = calculate_required_ready(sizes[variant.name], percent)
            if fleet is None or fleet.ready < needed:
                return False
        return True

    def fully_ready() -> bool:
        return all(
            (fleet := observed.fleet(v.name, candidate)) is not None
            and fleet.ready >= sizes[v.name]
            for v in spec.variants
        )

    def bake_over() -> bool:
        until = parse_time(step.bakeUntil)
        return until is None or now >= until

    def alarms_allow() -> bool:
        return draft.alarms_allow_promotion()

    def enter_step(index: int) -> None:
        step.stage = "Baking"
        step.index = index
        step.greenPercent = steps[index - 1]
        step.startedAt = format_time(now)
        bake = now + datetime.timedelta(seconds=policy.trafficRouting.waitIntervalSeconds)
        step.bakeUntil = format_time(_ceil_second(bake))
        draft.emit(
            "TrafficShifted",
            f"step {index}/{len(steps)}: green {candidate} carries {step.greenPercent}%",
        )

    def enter_termination_wait() -> None:
        step.stage = "TerminationWait"
        step.startedAt = format_time(now)
        wait = now + datetime.timedelta(seconds=policy.terminationWaitSeconds)
        step.bakeUntil = format_time(_ceil_second(wait))
        draft.emit(
            "TerminationWait",
            f"green {candidate} has all traffic; blue {active} kept until {step.bakeUntil}",
        )

    if promote:
        if fully_ready():
            draft.emit("Promoted", f"remaining waits skipped for {candidate}")
            step.index, step.greenPercent = len(steps), 100
            _retire_blue(draft)
            return
        draft.emit("PromoteDeferred", "promote waits for every green replica to be Ready")

    if not status.paused:
        if step.stage == "Provisioning":
            if fully_ready():
                enter_step(1)
        elif step.stage == "Baking" and bake_over() and alarms_allow():
            if step.index < len(steps):
                if green_ready_for(steps[step.index]):
                    enter_step(step.index + 1)
            else:
                enter_termination_wait()
        if step.stage == "TerminationWait" and bake_over() and alarms_allow():
            _retire_blue(draft)
            return

    # Never give green a share it lacks the Ready replicas for.
    percent = step.greenPercent
    if step.stage != "Provisioning" and not green_ready_for(percent):
        percent = 0 if not green_ready_for(steps[0]) else percent
    status.greenTrafficPercent = percent
    for variant in spec.variants:
        size = sizes[variant.name]
        blue_serving, green_serving = calculate_serving(size, percent)
        draft.fleets.append(
            FleetPlan(
                variant=variant.name,
                revision=active,
                role="blue",
                replicas=size,
                traffic_percent=100 - percent,
                autoscaling=_autoscaling(variant),
                serving_replicas=None if percent == 0 else blue_serving,
            )
        )
        draft.fleets.append(
            FleetPlan(
                variant=variant.name,
                revision=candidate,
                role="green",
                replicas=size,
                traffic_percent=percent,
                autoscaling=_autoscaling(variant, calculate_required_ready(size, percent)),
                serving_replicas=None if percent == 100 else green_serving,
            )
        )
    if step.stage in ("Baking", "TerminationWait") and not status.paused:
        draft.wake_at(parse_time(step.bakeUntil))


# -- rolling deployment ----------------------------------------------------------------------


def calculate_batch(size_type: str, value: int, fleet_size: int) -> int:
    """Replicas per rolling batch: a count, or a percentage of the fleet, at least 1.

    >>> calculate_batch("InstanceCount", 2, 10), calculate_batch("CapacityPercent", 25, 10)
    (2, 3)
    >>> calculate_batch("CapacityPercent", 5, 4)
    1
    """
    if size_type == "InstanceCount":
        return max(1, min(value, fleet_size))
    return max(1, math.ceil(fleet_size * value / 100))


def calculate_rolling_targets(fleet_size: int, batch: int) -> list[int]:
    """Green replicas after each rolling batch.

    >>> calculate_rolling_targets(10, 3)
    [3, 6, 9, 10]
    >>> calculate_rolling_targets(4, 4)
    [4]
    """
    return [min(fleet_size, k * batch) for k in range(1, math.ceil(fleet_size / batch) + 1)]


def _rolling_pair(
    draft: _Draft,
    variant: Variant,
    *,
    green_replicas: int,
    blue_replicas: int,
    green_serving: int,
    size: int,
) -> None:
    status = draft.status
    assert status.activeRevision is not None and status.candidateRevision is not None
    percent = round(100 * green_serving / size) if size else 0
    draft.fleets.append(
        FleetPlan(
            variant=variant.name,
            revision=status.activeRevision,
            role="blue",
            replicas=blue_replicas,
            traffic_percent=100 - percent,
            serving_replicas=size - green_serving,
        )
    )
    draft.fleets.append(
        FleetPlan(
            variant=variant.name,
            revision=status.candidateRevision,
            role="green",
            replicas=green_replicas,
            traffic_percent=percent,
            serving_replicas=green_serving,
        )
    )
    status.greenTrafficPercent = percent


def _advance_rolling(draft: _Draft) -> None:
    """Replace capacity in batches: start a green batch, and once it is Ready move
    its share of traffic over, shrink blue by as much, and bake.

    Worked example (10 replicas, batch 30%, wait 60 s): green grows 3 -> 6 -> 9 -> 10
    while blue shrinks 7 -> 4 -> 1 -> 0, each batch baked 60 s; then blue is deleted.
    """
    status, spec, observed, now = draft.status, draft.spec, draft.observed, draft.now
    rolling = spec.deploymentConfig.rolling
    assert rolling is not None and status.candidateRevision is not None
    step = status.step or StepStatus()
    status.step = step
    size = step.fleetSize or max(v.replicas for v in spec.variants)
    step.fleetSize = size
    batch = calculate_batch(rolling.maximumBatchSize.type, rolling.maximumBatchSize.value, size)
    targets = calculate_rolling_targets(size, batch)
    step.total = len(targets)
    _take_action(draft, "promote")  # rolling batches are not skipped: capacity must move
    index = max(1, step.index)

    def green_ready(count: int) -> bool:
        return all(
            (fleet := observed.fleet(v.name, status.candidateRevision)) is not None
            and fleet.ready >= count
            for v in spec.variants
        )

    if not status.paused:
        if step.stage == "Provisioning" and green_ready(targets[index - 1]):
            step.stage, step.index = "Baking", index
            step.greenPercent = round(100 * targets[index - 1] / size)
            step.startedAt = format_time(now)
            bake = now + datetime.timedelta(seconds=rolling.waitIntervalSeconds)
            step.bakeUntil = format_time(_ceil_second(bake))
            draft.emit(
                "BatchShifted",
                f"batch {index}/{len(targets)}: {targets[index - 1]} of {size} replicas on "
                f"{status.candidateRevision}",
            )
        elif step.stage == "Baking":
            until = parse_time(step.bakeUntil)
            if (until is None or now >= until) and draft.alarms_allow_promotion():
                if index >= len(targets):
                    _retire_blue(draft)
                    return
                step.stage, step.index = "Provisioning", index + 1
                index += 1

    done = targets[index - 2] if step.stage == "Provisioning" and index >= 2 else 0
    if step.stage == "Baking":
        done = targets[index - 1]
    want = targets[index - 1]
    for variant in spec.variants:
        _rolling_pair(
            draft,
            variant,
            green_replicas=want,
            blue_replicas=size - done,
            green_serving=done,
            size=size,
        )
    if step.stage == "Baking" and not status.paused:
        draft.wake_at(parse_time(step.bakeUntil))


def _rolling_rollback(draft: _Draft) -> bool:
    """Restore blue to its original size in batches of ``rollbackMaximumBatchSize``
    (default: at once); green shrinks as blue becomes Ready. True once blue is whole
    and green has left the plan."""
    status, spec, observed = draft.status, draft.spec, draft.observed
    rolling = spec.deploymentConfig.rolling
    assert rolling is not None
    step = status.step or StepStatus()
    status.step = step
    size = step.fleetSize or max(v.replicas for v in spec.variants)
    rollback_size = rolling.rollbackMaximumBatchSize
    batch = (
        calculate_batch(rollback_size.type, rollback_size.value, size)
        if rollback_size is not None
        else size
    )
    blue_ready = min(
        (fleet.ready if (fleet := observed.fleet(v.name, status.activeRevision)) else 0)
        for v in spec.variants
    )
    if step.stage != "RollingBack":
        blue_now = min(
            (fleet.replicas if (fleet := observed.fleet(v.name, status.activeRevision)) else 0)
            for v in spec.variants
        )
        step.stage = "RollingBack"
        step.rollbackReplicas = min(size, blue_now + batch)
    target = step.rollbackReplicas or size
    if blue_ready >= target and target < size:
        target = min(size, target + batch)
        step.rollbackReplicas = target
    if blue_ready >= size:
        step.greenPercent = 0
        return True
    green_serving = max(0, size - blue_ready)
    for variant in spec.variants:
        _rolling_pair(
            draft,
            variant,
            green_replicas=green_serving,
            blue_replicas=target,
            green_serving=green_serving,
            size=size,
        )
    step.greenPercent = status.greenTrafficPercent
    return False


def _retire_blue(draft: _Draft) -> None:
    """Green becomes the active fleet at its current size; blue is dropped (deleted)."""
    status, spec, observed = draft.status, draft.spec, draft.observed
    candidate, old = status.candidateRevision, status.activeRevision
    assert candidate is not None
    for variant in spec.variants:
        green = observed.fleet(variant.name, candidate)
        size = green.replicas if green is not None and green.replicas else variant.replicas
        draft.fleets.append(
            FleetPlan(
                variant=variant.name,
                revision=candidate,
                role="blue",
                replicas=size,
                traffic_percent=100,
                autoscaling=_autoscaling(variant),
            )
        )
    _record(draft, candidate, "Succeeded", f"all traffic on {candidate}; {old} retired")
    status.activeRevision = candidate
    status.rolledBackRevision = None
    status.greenTrafficPercent = 0
    _clear_deployment(status)
    draft.set_phase("InService")
    draft.emit("DeploymentSucceeded", f"revision {candidate} is serving; {old} retired")


# -- status bookkeeping --------------------------------------------------------------------


def _finish_status(draft: _Draft, revision: str) -> None:
    status, observed, now = draft.status, draft.observed, draft.now
    status.observedGeneration = observed.generation
    fleets: dict[str, FleetStatus] = {}
    for plan in draft.fleets:
        seen = observed.fleet(plan.variant, plan.revision)
        fleets[plan.role if len(draft.spec.variants) == 1 else f"{plan.variant}/{plan.role}"] = (
            FleetStatus(
                revision=plan.revision,
                deployment=fleet_name(observed.endpoint, plan.variant, plan.revision),
                replicas=seen.replicas if seen else 0,
                readyReplicas=seen.ready if seen else 0,
                trafficPercent=plan.traffic_percent,
            )
        )
    status.fleets = fleets
    generation = observed.generation
    conditions = status.conditions
    phase = status.phase
    serving = phase in ("InService", "Updating", "RollingBack", "UpdateRollbackFailed")
    conditions = _condition(
        conditions,
        "Ready",
        "True" if serving else "False",
        phase or "Unknown",
        f"revision {status.activeRevision} serving" if serving else "no fleet is serving yet",
        now,
        generation,
    )
    progressing = phase in ("Creating", "Updating", "RollingBack")
    step = status.step
    conditions = _condition(
        conditions,
        "Progressing",
        "True" if progressing else "False",
        (step.stage if step and progressing else phase) or "Unknown",
        (
            f"step {step.index}/{step.total}, green {status.greenTrafficPercent}%"
            if step and progressing
            else "no deployment in progress"
        ),
        now,
        generation,
    )
    degraded = phase in ("Failed", "UpdateRollbackFailed") or (
        status.rolledBackRevision is not None and status.rolledBackRevision == revision
    )
    last = status.lastDeployment
    reason, message = "Healthy", "the desired revision is serving or on its way"
    if degraded and phase in ("Failed", "UpdateRollbackFailed"):
        # The deployment in hand is stuck: say why, not how the previous one ended.
        reason = phase
        why = status.rollbackReason or (last.reason if last else phase)
        message = (
            f"rolling back {status.candidateRevision} ({why}), but its blue fleet cannot "
            "take the traffic yet; green keeps serving"
            if phase == "UpdateRollbackFailed"
            else why
        )
    elif degraded and last:
        reason = last.outcome
        message = (
            f"revision {revision} was {last.outcome.lower()}: {last.reason}; change the spec or "
            "request a retry"
        )
    conditions = _condition(
        conditions, "Degraded", "True" if degraded else "False", reason, message, now, generation
    )
    status.conditions = conditions


def fleet_name(endpoint: str, variant: str, revision: str) -> str:
    """The Deployment name of a fleet: ``<endpoint>-<variant>-<revision>``, at most
    63 characters (a long endpoint name is cut and tagged with a short hash).

    >>> fleet_name("churn", "main", "0123456789")
    'churn-main-0123456789'
    >>> len(fleet_name("a" * 80, "main", "0123456789"))
    63
    """
    suffix = f"-{variant}-{revision}"
    if len(endpoint) + len(suffix) <= 63:
        return endpoint + suffix
    tag = hashlib.sha256(endpoint.encode()).hexdigest()[:6]
    keep = 63 - len(suffix) - len(tag) - 1
    return f"{endpoint[:keep]}-{tag}{suffix}"
