"""The rollout planner, as tables that mirror its docstring and as properties.

A small in-memory ``World`` plays the cluster: it creates the fleets a plan
lists (Ready after a delay, or never, or crash-looping), deletes the ones it
drops, and feeds observations back, while the test moves the clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetshift_operator.alarms.base import AlarmResult
from fleetshift_operator.api import (
    Alarm,
    AutoRollback,
    BlueGreen,
    CapacitySize,
    DeploymentConfig,
    EndpointSpec,
    EndpointStatus,
    InconclusivePolicy,
    ModelSource,
    Rolling,
    TemplateAlarm,
    TrafficRouting,
    Variant,
)
from fleetshift_operator.planning.names import calculate_revision as variant_revision
from fleetshift_operator.planning.plan import plan_endpoint
from fleetshift_operator.planning.steps import (
    calculate_required_ready,
    calculate_serving,
    calculate_steps,
)
from fleetshift_operator.planning.types import Controls, FleetObservation, Observed, Plan

T0 = datetime.datetime(2026, 11, 1, 12, 0, 0, tzinfo=datetime.UTC)


def calculate_revision(spec: EndpointSpec) -> str:
    """The revision of the one variant these specs have."""
    return variant_revision(spec.variants[0])


def make_spec(
    *,
    model: str = "s3://models/churn/v1",
    replicas: int = 4,
    routing: TrafficRouting | None = None,
    wait: int = 60,
    termination: int = 120,
    timeout: int = 1800,
    rolling: Rolling | None = None,
) -> EndpointSpec:
    routing = routing or TrafficRouting(
        type="Canary", canarySize=CapacitySize(type="CapacityPercent", value=25)
    )
    routing = routing.model_copy(update={"waitIntervalSeconds": wait})
    if rolling is not None:
        return EndpointSpec(
            variants=[Variant(name="main", model=ModelSource(uri=model), replicas=replicas)],
            deploymentConfig=DeploymentConfig(rolling=rolling),
        )
    return EndpointSpec(
        variants=[Variant(name="main", model=ModelSource(uri=model), replicas=replicas)],
        deploymentConfig=DeploymentConfig(
            blueGreen=BlueGreen(
                trafficRouting=routing,
                terminationWaitSeconds=termination,
                maximumExecutionTimeoutSeconds=timeout,
            )
        ),
    )


def canary(percent: int) -> TrafficRouting:
    return TrafficRouting(
        type="Canary", canarySize=CapacitySize(type="CapacityPercent", value=percent)
    )


def linear(percent: int) -> TrafficRouting:
    return TrafficRouting(
        type="Linear", linearStepSize=CapacitySize(type="CapacityPercent", value=percent)
    )


@dataclasses.dataclass
class Fleet:
    revision: str
    replicas: int
    created: datetime.datetime
    ready_after: float | None  # seconds; None = never Ready
    failure: str | None = None
    ready_before_resize: int = 0

    def ready(self, now: datetime.datetime) -> int:
        if self.failure or self.ready_after is None:
            return 0
        if (now - self.created).total_seconds() >= self.ready_after:
            return self.replicas
        return min(self.ready_before_resize, self.replicas)

    def resize(self, replicas: int, now: datetime.datetime) -> None:
        if replicas != self.replicas:
            self.ready_before_resize = self.ready(now)
            self.replicas = replicas
            self.created = now


@dataclasses.dataclass
class World:
    """The cluster, as far as the planner can see it."""

    now: datetime.datetime = T0
    fleets: dict[str, Fleet] = dataclasses.field(default_factory=dict)
    status: EndpointStatus | None = None
    controls: Controls = dataclasses.field(default_factory=Controls)
    alarms: tuple[AlarmResult, ...] | None = None
    ready_after: dict[str, float | None] = dataclasses.field(default_factory=dict)
    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    plans: list[Plan] = dataclasses.field(default_factory=list)

    def observe(self) -> Observed:
        observations = []
        for fleet in self.fleets.values():
            observations.append(
                FleetObservation(
                    variant="main",
                    revision=fleet.revision,
                    replicas=fleet.replicas,
                    ready=fleet.ready(self.now),
                    failure=fleet.failure,
                )
            )
        return Observed(
            endpoint="churn",
            fleets=tuple(observations),
            controls=self.controls,
            alarms=None if self.alarms is None else {"main": self.alarms},
        )

    def step(self, spec: EndpointSpec) -> Plan:
        plan = plan_endpoint(spec, self.status, self.observe(), self.now)
        self.plans.append(plan)
        self.status = plan.status
        wanted = {f.revision: f for f in plan.fleets}
        for revision, fleet_plan in wanted.items():
            if revision in self.fleets:
                self.fleets[revision].resize(fleet_plan.replicas, self.now)
            else:
                self.fleets[revision] = Fleet(
                    revision=revision,
                    replicas=fleet_plan.replicas,
                    created=self.now,
                    ready_after=self.ready_after.get(revision, 5.0),
                    failure=self.failures.get(revision),
                )
        for revision in list(self.fleets):
            if revision not in wanted:
                del self.fleets[revision]
        return plan

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)

    def run_until(self, spec: EndpointSpec, seconds: float, tick: float = 1.0) -> Plan:
        end = self.now + datetime.timedelta(seconds=seconds)
        plan = self.step(spec)
        while self.now < end:
            self.advance(tick)
            plan = self.step(spec)
        return plan


def in_service(world: World, spec: EndpointSpec) -> World:
    world.run_until(spec, 10)
    assert world.status is not None
    assert world.status.phase == "InService"
    return world


def green_share(plan: Plan) -> int:
    return sum(f.traffic_percent for f in plan.fleets if f.role == "green")


# -- calculations mirror their docstrings -----------------------------------------------------


@pytest.mark.parametrize(
    ("routing", "fleet_size", "expected"),
    [
        (TrafficRouting(type="AllAtOnce"), 4, [100]),
        (canary(10), 4, [10, 100]),
        (
            TrafficRouting(type="Canary", canarySize=CapacitySize(type="InstanceCount", value=1)),
            4,
            [25, 100],
        ),
        (linear(30), 4, [30, 60, 90, 100]),
        (linear(50), 4, [50, 100]),
        (linear(10), 10, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]),
        (
            TrafficRouting(
                type="Linear", linearStepSize=CapacitySize(type="InstanceCount", value=2)
            ),
            6,
            [34, 67, 100],
        ),
    ],
)
def test_calculate_steps(routing: TrafficRouting, fleet_size: int, expected: list[int]) -> None:
    assert calculate_steps(routing, fleet_size) == expected


@pytest.mark.parametrize(
    ("fleet_size", "green_percent", "expected"),
    [(4, 25, (3, 1)), (3, 10, (2, 1)), (10, 0, (10, 0)), (10, 100, (0, 10)), (1, 50, (1, 1))],
)
def test_calculate_serving(fleet_size: int, green_percent: int, expected: tuple[int, int]) -> None:
    assert calculate_serving(fleet_size, green_percent) == expected


def test_revision_ignores_replicas_but_not_the_model() -> None:
    base = make_spec()
    assert calculate_revision(base) == calculate_revision(make_spec(replicas=9))
    assert calculate_revision(base) != calculate_revision(make_spec(model="s3://models/churn/v2"))


def test_revision_changes_with_pod_annotations_and_not_without_them() -> None:
    base = make_spec()
    annotated = base.variants[0].model_copy(update={"podAnnotations": {"team": "churn"}})
    changed = base.model_copy(update={"variants": [annotated]})
    assert calculate_revision(changed) != calculate_revision(base)
    # Endpoints written before the field existed keep their revision.
    assert calculate_revision(base) == "415dff7020"


# -- the worked example of the module docstring -------------------------------------------------


def test_canary_worked_example_timeline() -> None:
    world = in_service(World(), make_spec())
    spec = make_spec(model="s3://models/churn/v2")
    revision = calculate_revision(spec)

    plan = world.step(spec)  # t=0: the spec changes
    assert plan.status.phase == "Updating"
    assert plan.status.step is not None and plan.status.step.stage == "Provisioning"
    assert green_share(plan) == 0
    assert {f.revision: f.replicas for f in plan.fleets}[revision] == 4

    world.advance(5)  # t=5: green 4/4 Ready
    plan = world.step(spec)
    assert plan.status.step is not None
    assert (plan.status.step.index, plan.status.step.total) == (1, 2)
    assert green_share(plan) == 25
    bake_until = plan.status.step.bakeUntil
    assert bake_until == world.now + datetime.timedelta(seconds=60)

    world.advance(59)  # one second before the bake ends: nothing moves
    assert green_share(world.step(spec)) == 25

    world.advance(1)  # t=65
    plan = world.step(spec)
    assert plan.status.step is not None and plan.status.step.index == 2
    assert green_share(plan) == 100

    world.advance(60)  # t=125
    plan = world.step(spec)
    assert plan.status.step is not None and plan.status.step.stage == "TerminationWait"
    assert plan.status.activeRevision != revision
    assert len(world.fleets) == 2, "blue is kept through the termination wait"

    world.advance(120)  # t=245
    plan = world.step(spec)
    assert plan.status.phase == "InService"
    assert plan.status.activeRevision == revision
    assert [f.revision for f in plan.fleets] == [revision]
    assert plan.status.lastDeployment is not None
    assert plan.status.lastDeployment.outcome == "Succeeded"


def test_canary_rolls_back_when_alarm_breaches_during_bake() -> None:
    world = in_service(World(), make_spec())
    old = world.status.activeRevision if world.status else None
    spec = make_spec(model="s3://models/churn/v2")
    world.run_until(spec, 30)
    assert green_share(world.plans[-1]) == 25

    world.alarms = (AlarmResult("errors", "Breaching", 12.0, "green 5xx rate 12% >= 5%"),)
    plan = world.step(spec)

    assert plan.status.phase == "RollingBack"
    assert green_share(plan) == 0
    assert [f.revision for f in plan.fleets] == [old]
    assert plan.status.lastDeployment is not None
    assert plan.status.lastDeployment.outcome == "RolledBack"
    assert "green 5xx rate" in plan.status.lastDeployment.reason

    world.alarms = None
    world.advance(1)
    plan = world.step(spec)
    assert plan.status.phase == "InService"
    assert plan.status.activeRevision == old
    degraded = {c.type: c for c in plan.status.conditions}["Degraded"]
    assert degraded.status == "True"

    world.advance(600)  # the rolled-back revision is not retried by itself
    plan = world.step(spec)
    assert plan.status.phase == "InService"
    assert plan.status.candidateRevision is None


def test_rolled_back_revision_is_retried_on_request() -> None:
    world = in_service(World(), make_spec())
    spec = make_spec(model="s3://models/churn/v2")
    world.run_until(spec, 10)
    world.controls = Controls(abort="abort-1")
    world.run_until(spec, 5)
    assert world.status is not None and world.status.phase == "InService"

    world.controls = Controls(abort="abort-1", retry="retry-1")
    plan = world.step(spec)

    assert plan.status.phase == "Updating"
    assert plan.status.candidateRevision == calculate_revision(spec)


def test_breach_during_termination_wait_still_rolls_back() -> None:
    world = in_service(World(), make_spec())
    spec = make_spec(model="s3://models/churn/v2")
    world.run_until(spec, 130)
    assert world.status is not None and world.status.step is not None
    assert world.status.step.stage == "TerminationWait"

    world.alarms = (AlarmResult("errors", "Breaching", 12.0, "p99 latency 900ms >= 500ms"),)
    plan = world.step(spec)

    assert plan.status.phase == "RollingBack"
    assert green_share(plan) == 0


def test_step_is_not_promoted_while_alarms_are_inconclusive() -> None:
    world = in_service(World(), make_spec())
    spec = make_spec(model="s3://models/churn/v2")
    world.alarms = (AlarmResult("errors", "Inconclusive", None, "no samples for green 5xx rate"),)
    plan = world.run_until(spec, 300)

    assert plan.status.phase == "Updating"
    assert green_share(plan) == 25
    assert plan.status.step is not None and plan.status.step.index == 1

    world.alarms = (AlarmResult("errors", "Healthy"),)
    plan = world.step(spec)
    assert green_share(plan) == 100


def test_green_that_never_becomes_ready_rolls_back_at_the_deadline() -> None:
    world = in_service(World(), make_spec(timeout=600))
    spec = make_spec(model="s3://models/churn/v2", timeout=600)
    world.ready_after[calculate_revision(spec)] = None

    plan = world.run_until(spec, 599)
    assert plan.status.phase == "Updating"
    assert green_share(plan) == 0

    world.advance(1)
    plan = world.step(spec)
    assert plan.status.phase == "RollingBack"
    assert plan.status.lastDeployment is not None
    assert "maximumExecutionTimeoutSeconds" in plan.status.lastDeployment.reason


def test_crash_looping_green_rolls_back_without_waiting_for_the_deadline() -> None:
    world = in_service(World(), make_spec())
    spec = make_spec(model="s3://models/churn/v2")
    world.failures[calculate_revision(spec)] = "CrashLoopBackOff"

    world.step(spec)
    world.advance(1)
    plan = world.step(spec)

    assert plan.status.phase == "RollingBack"
    assert plan.status.lastDeployment is not None
    assert "CrashLoopBackOff" in plan.status.lastDeployment.reason


def test_linear_moves_in_steps_and_respects_every_wait() -> None:
    world = in_service(World(), make_spec(routing=linear(30)))
    spec = make_spec(model="s3://models/churn/v2", routing=linear(30), wait=30, termination=0)

    shares = []
    for _ in range(200):
        plan = world.step(spec)
        shares.append(green_share(plan))
        world.advance(1)
    distinct = [s for i, s in enumerate(shares) if i == 0 or s != shares[i - 1]]
    assert distinct[:5] == [0, 30, 60, 90, 100]
    assert world.status is not None and world.status.phase == "InService"
    # each step held for its 30 s bake
    changes = [i for i in range(1, len(shares)) if shares[i] != shares[i - 1]]
    assert all(b - a >= 30 for a, b in itertools.pairwise(changes[:4]))


def test_all_at_once_bakes_then_waits_then_retires_blue() -> None:
    routing = TrafficRouting(type="AllAtOnce")
    world = in_service(World(), make_spec(routing=routing))
    spec = make_spec(model="s3://models/churn/v2", routing=routing, wait=20, termination=40)

    world.run_until(spec, 6)
    assert green_share(world.plans[-1]) == 100
    world.run_until(spec, 20)
    assert world.status is not None and world.status.step is not None
    assert world.status.step.stage == "TerminationWait"
    assert len(world.fleets) == 2
    world.run_until(spec, 40)
    assert world.status.phase == "InService"
    assert len(world.fleets) == 1


def test_blocked_rollback_says_why_in_the_degraded_condition() -> None:
    world = in_service(World(), make_spec())
    blue = world.status.activeRevision if world.status else None
    spec = make_spec(model="s3://models/churn/v2", wait=300)
    world.run_until(spec, 10)
    del world.fleets[str(blue)]  # someone deletes the blue Deployment by hand
    world.controls = Controls(abort="a1")
    plan = world.step(spec)
    assert plan.status.phase == "UpdateRollbackFailed"
    degraded = {c.type: c for c in plan.status.conditions}["Degraded"]
    assert degraded.status == "True"
    assert degraded.reason == "UpdateRollbackFailed"
    assert "blue fleet cannot take the traffic" in degraded.message
    assert "aborted" in degraded.message


def test_abort_rolls_back_immediately() -> None:
    world = in_service(World(), make_spec())
    spec = make_spec(model="s3://models/churn/v2")
    world.run_until(spec, 10)
    world.controls = Controls(abort="a1")

    plan = world.step(spec)

    assert plan.status.phase == "RollingBack"
    assert plan.status.handledActions["abort"] == "a1"
    assert plan.status.lastDeployment is not None
    assert plan.status.lastDeployment.reason == "aborted on request"


def test_promote_skips_remaining_waits() -> None:
    world = in_service(World(), make_spec())
    spec = make_spec(model="s3://models/churn/v2", wait=600, termination=600, timeout=3600)
    world.run_until(spec, 10)
    world.controls = Controls(promote="p1")

    plan = world.step(spec)

    assert plan.status.phase == "InService"
    assert plan.status.activeRevision == calculate_revision(spec)
    assert [f.role for f in plan.fleets] == ["blue"]


def test_pause_holds_the_step_and_resume_extends_the_wait() -> None:
    world = in_service(World(), make_spec())
    spec = make_spec(model="s3://models/churn/v2")
    world.run_until(spec, 10)  # step 1 baking until t0+5+60
    assert world.status is not None and world.status.step is not None
    bake_before = world.status.step.bakeUntil
    world.controls = Controls(paused=True)
    plan = world.run_until(spec, 300)
    assert plan.status.paused
    assert green_share(plan) == 25

    world.controls = Controls(paused=False)
    plan = world.step(spec)

    assert not plan.status.paused
    assert plan.status.step is not None
    bake_after = plan.status.step.bakeUntil
    assert bake_before is not None and bake_after is not None
    assert (bake_after - bake_before).total_seconds() >= 300
    assert green_share(plan) == 25


def test_new_spec_mid_rollout_supersedes_green_and_blue_keeps_serving() -> None:
    world = in_service(World(), make_spec())
    blue = world.status.activeRevision if world.status else None
    second = make_spec(model="s3://models/churn/v2")
    world.run_until(second, 10)
    third = make_spec(model="s3://models/churn/v3")

    plan = world.step(third)

    assert plan.status.phase == "Updating"
    assert plan.status.candidateRevision == calculate_revision(third)
    assert plan.traffic("main") == {blue: 100, calculate_revision(third): 0}
    assert calculate_revision(second) not in plan.traffic("main")
    assert plan.status.lastDeployment is not None
    assert plan.status.lastDeployment.outcome == "Superseded"


def test_first_deployment_creates_then_serves() -> None:
    world = World()
    spec = make_spec()
    plan = world.step(spec)
    assert plan.status.phase == "Creating"
    world.advance(5)
    plan = world.step(spec)
    assert plan.status.phase == "InService"
    assert plan.status.activeRevision == calculate_revision(spec)
    ready = {c.type: c.status for c in plan.status.conditions}
    assert ready == {
        "Ready": "True",
        "Progressing": "False",
        "Degraded": "False",
        "TrafficSplit": "True",
    }


def test_first_deployment_that_never_becomes_ready_fails_at_the_deadline() -> None:
    world = World()
    spec = make_spec(timeout=600)
    world.ready_after[calculate_revision(spec)] = None

    plan = world.run_until(spec, 600, tick=10)

    assert plan.status.phase == "Failed"


def test_status_survives_a_round_trip_through_json() -> None:
    world = in_service(World(), make_spec())
    spec = make_spec(model="s3://models/churn/v2")
    plan = world.run_until(spec, 30)
    stored: dict[str, Any] = plan.status.model_dump(mode="json", exclude_none=True)

    again = plan_endpoint(spec, EndpointStatus.model_validate(stored), world.observe(), world.now)

    assert again.fleets == plan_endpoint(spec, plan.status, world.observe(), world.now).fleets


# -- properties ---------------------------------------------------------------------------------

routings = st.one_of(
    st.just(TrafficRouting(type="AllAtOnce")),
    st.integers(1, 50).map(canary),
    st.integers(10, 50).map(linear),
)


@settings(max_examples=60, deadline=None)
@given(
    routing=routings,
    replicas=st.integers(1, 12),
    wait=st.integers(0, 120),
    termination=st.integers(0, 120),
    ready_after=st.one_of(st.none(), st.floats(0, 200)),
    breach_at=st.one_of(st.none(), st.integers(0, 800)),
    tick=st.sampled_from([1.0, 7.0, 31.0]),
)
def test_rollout_invariants(
    routing: TrafficRouting,
    replicas: int,
    wait: int,
    termination: int,
    ready_after: float | None,
    breach_at: int | None,
    tick: float,
) -> None:
    base = make_spec(routing=routing, replicas=replicas, wait=wait, termination=termination)
    world = in_service(World(), base)
    blue = world.status.activeRevision if world.status else None
    spec = make_spec(
        model="s3://models/churn/v2",
        routing=routing,
        replicas=replicas,
        wait=wait,
        termination=termination,
        timeout=1200,
    )
    green = calculate_revision(spec)
    world.ready_after[green] = ready_after
    started = world.now
    previous_step = (0, "Provisioning")
    previous_bake: datetime.datetime | None = None

    for _ in range(4000):
        elapsed = (world.now - started).total_seconds()
        if breach_at is not None and elapsed >= breach_at:
            world.alarms = (AlarmResult("errors", "Breaching", 12.0, "injected"),)
        observed = world.observe()
        plan = world.step(spec)
        status = plan.status

        # traffic always sums to 100 per variant
        assert sum(plan.traffic("main").values()) == 100
        # traffic never goes to a fleet short of the Ready replicas its share needs
        for fleet in plan.fleets:
            if fleet.role == "green" and fleet.traffic_percent > 0:
                seen = observed.fleet("main", fleet.revision)
                needed = calculate_required_ready(replicas, fleet.traffic_percent)
                assert seen is not None and seen.ready >= needed
        # every wait is respected: a step only advances once its bake is over
        current = (status.step.index, status.step.stage) if status.step else (0, "Provisioning")
        if current != previous_step and previous_bake is not None and status.step is not None:
            assert world.now >= previous_bake
        previous_step = current
        previous_bake = status.step.bakeUntil if status.step else None

        if status.phase == "InService" and status.candidateRevision is None:
            break
        world.advance(tick)

    # the planner always ends InService, on green (success) or blue (rollback)
    assert world.status is not None
    assert world.status.phase == "InService"
    assert world.status.activeRevision in (blue, green)
    if world.status.activeRevision == green:
        assert breach_at is None or breach_at > 0
    else:
        assert world.status.lastDeployment is not None
        assert world.status.lastDeployment.outcome == "RolledBack"
    assert len(world.fleets) == 1


# -- rolling ------------------------------------------------------------------------------------


def rolling(batch: int, *, wait: int = 10, rollback_batch: int | None = None) -> Rolling:
    return Rolling(
        maximumBatchSize=CapacitySize(type="InstanceCount", value=batch),
        waitIntervalSeconds=wait,
        rollbackMaximumBatchSize=(
            CapacitySize(type="InstanceCount", value=rollback_batch) if rollback_batch else None
        ),
    )


def sizes(plan: Plan) -> tuple[int, int]:
    """(green replicas, blue replicas) the plan asks for."""
    green = sum(f.replicas for f in plan.fleets if f.role == "green")
    blue = sum(f.replicas for f in plan.fleets if f.role == "blue")
    return green, blue


def test_rolling_replaces_capacity_in_batches_and_bakes_each() -> None:
    world = in_service(World(), make_spec(rolling=rolling(2)))
    spec = make_spec(model="s3://models/churn/v2", rolling=rolling(2))

    seen = []
    for _ in range(60):
        plan = world.step(spec)
        seen.append((sizes(plan), green_share(plan)))
        world.advance(1)
    distinct = [x for i, x in enumerate(seen) if i == 0 or x != seen[i - 1]]

    assert distinct == [
        ((2, 4), 0),  # first batch starting, blue whole
        ((2, 2), 50),  # batch Ready: its share moves, blue shrinks
        ((4, 2), 50),  # second batch starting
        ((4, 0), 100),  # second batch Ready
        ((0, 4), 0),  # green is the new active fleet (planned as role blue)
    ]
    assert world.status is not None and world.status.phase == "InService"


def test_rolling_rollback_restores_blue_in_batches() -> None:
    world = in_service(World(), make_spec(replicas=6, rolling=rolling(2, rollback_batch=1)))
    old = world.status.activeRevision if world.status else None
    spec = make_spec(model="s3://models/churn/v2", replicas=6, rolling=rolling(2, rollback_batch=1))
    world.run_until(spec, 25)  # mid-way: blue shrunk to 4 or 2
    assert sizes(world.plans[-1])[1] in (2, 4)

    world.alarms = (AlarmResult("errors", "Breaching", 12.0, "5xx"),)
    blue_targets = []
    for _ in range(80):
        plan = world.step(spec)
        blue_targets.append(sizes(plan)[1])
        assert sum(plan.traffic("main").values()) == 100
        if plan.status.phase == "InService":
            break
        world.advance(1)

    assert world.status is not None and world.status.phase == "InService"
    assert world.status.activeRevision == old
    increases = sorted(set(blue_targets))
    assert increases == list(range(min(increases), 7)), "blue grows one replica per batch"
    assert list(world.fleets) == [old]


def test_rolling_rollback_defaults_to_all_at_once() -> None:
    world = in_service(World(), make_spec(replicas=6, rolling=rolling(2)))
    spec = make_spec(model="s3://models/churn/v2", replicas=6, rolling=rolling(2))
    world.run_until(spec, 20)
    world.alarms = (AlarmResult("errors", "Breaching", 12.0, "5xx"),)

    plan = world.step(spec)

    assert plan.status.phase == "RollingBack"
    assert sizes(plan)[1] == 6


@settings(max_examples=40, deadline=None)
@given(
    replicas=st.integers(1, 10),
    batch=st.integers(1, 5),
    rollback_batch=st.one_of(st.none(), st.integers(1, 5)),
    wait=st.integers(0, 60),
    ready_after=st.floats(0, 30),
    breach_at=st.one_of(st.none(), st.integers(0, 400)),
)
def test_rolling_invariants(
    replicas: int,
    batch: int,
    rollback_batch: int | None,
    wait: int,
    ready_after: float,
    breach_at: int | None,
) -> None:
    policy = rolling(min(batch, replicas), wait=wait, rollback_batch=rollback_batch)
    world = in_service(World(), make_spec(replicas=replicas, rolling=policy))
    blue = world.status.activeRevision if world.status else None
    spec = make_spec(model="s3://models/churn/v2", replicas=replicas, rolling=policy)
    green = calculate_revision(spec)
    world.ready_after[green] = ready_after
    started = world.now
    for _ in range(3000):
        if breach_at is not None and (world.now - started).total_seconds() >= breach_at:
            world.alarms = (AlarmResult("errors", "Breaching", 12.0, "injected"),)
        observed = world.observe()
        plan = world.step(spec)
        assert sum(plan.traffic("main").values()) == 100
        for fleet in plan.fleets:
            seen = observed.fleet("main", fleet.revision)
            if fleet.role == "green" and fleet.serving_replicas:
                assert seen is not None and seen.ready >= fleet.serving_replicas
        if plan.status.phase == "InService" and plan.status.candidateRevision is None:
            break
        world.advance(1)
    assert world.status is not None and world.status.phase == "InService"
    assert world.status.activeRevision in (blue, green)
    assert len(world.fleets) == 1
    assert next(iter(world.fleets.values())).replicas == replicas


# -- alarms -------------------------------------------------------------------------------------


def with_alarms(spec: EndpointSpec, *, action: str = "Hold", after: int = 3) -> EndpointSpec:
    policy = AutoRollback(
        alarms=[Alarm(name="errors", template=TemplateAlarm(kind="GreenErrorRate", threshold=5))],
        pollIntervalSeconds=2,
        onInconclusive=InconclusivePolicy(action=action, consecutiveEvaluations=after),
    )
    config = spec.deploymentConfig.model_copy(update={"autoRollback": policy})
    return spec.model_copy(update={"deploymentConfig": config})


def test_an_invalid_alarm_stops_the_deployment_before_traffic_moves() -> None:
    world = in_service(World(), with_alarms(make_spec()))
    spec = with_alarms(make_spec(model="s3://models/churn/v2"))
    world.alarms = (AlarmResult("errors", "Error", None, "invalid query: parse error", fatal=True),)

    plan = world.step(spec)

    assert plan.status.phase == "RollingBack"
    assert green_share(plan) == 0
    assert plan.status.rollbackCause is not None
    assert "invalid query" in plan.status.rollbackCause.reason


def test_inconclusive_holds_by_default_and_never_promotes() -> None:
    world = in_service(World(), with_alarms(make_spec()))
    spec = with_alarms(make_spec(model="s3://models/churn/v2"))
    world.alarms = (AlarmResult("errors", "Inconclusive", None, "Prometheus unreachable"),)

    plan = world.run_until(spec, 600, tick=5)

    assert plan.status.phase == "Updating"
    assert green_share(plan) == 25
    assert plan.status.alarms[0].verdict == "Inconclusive"
    assert "unreachable" in plan.status.alarms[0].reason
    assert plan.status.inconclusiveStreak > 100


def test_inconclusive_rolls_back_after_n_in_a_row_when_asked_and_says_so() -> None:
    world = in_service(World(), with_alarms(make_spec(), action="RollBack", after=3))
    spec = with_alarms(make_spec(model="s3://models/churn/v2"), action="RollBack", after=3)
    world.run_until(spec, 10)
    world.alarms = (AlarmResult("errors", "Inconclusive", None, "too few datapoints"),)

    phases = []
    for _ in range(3):
        plan = world.step(spec)
        phases.append(plan.status.phase)
        world.advance(1)

    assert phases == ["Updating", "Updating", "RollingBack"]
    assert plan.status.lastDeployment is not None
    assert "inconclusive 3 evaluations in a row" in plan.status.lastDeployment.reason


def test_a_healthy_evaluation_resets_the_inconclusive_streak() -> None:
    world = in_service(World(), with_alarms(make_spec(), action="RollBack", after=3))
    spec = with_alarms(make_spec(model="s3://models/churn/v2"), action="RollBack", after=3)
    world.run_until(spec, 10)
    sequence = ["Inconclusive", "Inconclusive", "Healthy", "Inconclusive", "Inconclusive"]
    for verdict in sequence:
        world.alarms = (AlarmResult("errors", verdict),)  # type: ignore[arg-type]
        plan = world.step(spec)
        world.advance(1)
    assert plan.status.phase == "Updating"
    assert plan.status.inconclusiveStreak == 2


def test_breach_names_the_alarm_and_value_in_status() -> None:
    world = in_service(World(), with_alarms(make_spec()))
    spec = with_alarms(make_spec(model="s3://models/churn/v2"))
    world.run_until(spec, 10)
    world.alarms = (
        AlarmResult("latency", "Healthy", 80.0, "fine"),
        AlarmResult("errors", "Breaching", 37.5, "1 of 1 periods >= 5 (worst 37.5)"),
    )

    plan = world.step(spec)

    assert plan.status.rollbackCause is not None
    assert (plan.status.rollbackCause.name, plan.status.rollbackCause.value) == ("errors", 37.5)
    assert {a.name: a.verdict for a in plan.status.alarms} == {
        "latency": "Healthy",
        "errors": "Breaching",
    }
    assert any(e.reason == "RollbackStarted" and "errors" in e.message for e in plan.events)
