"""The capacity-aware cutover: the fit and the decision as tables that mirror the
docstrings of ``planning/capacity.py``, properties of the fit, and the planner holding
the step to 100% until green has the replicas the fit asks for."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetshift_operator.api import (
    Autoscaling,
    BlueGreen,
    CapacityPolicy,
    CapacitySample,
    CapacitySize,
    DeploymentConfig,
    EndpointSpec,
    ModelSource,
    TrafficRouting,
    Variant,
)
from fleetshift_operator.planning.capacity import (
    Need,
    calculate_limit,
    calculate_replicas_needed,
    plan_capacity,
)
from fleetshift_operator.planning.types import CapacityObservation, Event, Observed, Plan
from support.sim_cluster import T0, SimCluster, revision

T = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def sample(load: float, latency: float | None, replicas: int = 1) -> CapacitySample:
    return CapacitySample(at=T, loadPerReplica=load, replicas=replicas, latencySeconds=latency)


# -- the fit, as the docstring's worked examples -------------------------------------------


@pytest.mark.parametrize(
    ("samples", "load", "options", "replicas", "estimated", "capped"),
    [
        ([sample(30, 0.035)], 120, {"floor": 2}, 4, False, False),
        ([sample(30, 0.035)], 120, {"floor": 2, "headroom_percent": 20}, 5, False, False),
        ([sample(30, 0.035)], 121, {"floor": 2}, 4, False, False),
        ([sample(30, 0.035)], 240, {"floor": 2, "max_replicas": 6}, 6, False, True),
        ([sample(30, 0.035)], 30, {"floor": 4}, 4, False, False),
        (
            [sample(20, 0.02), sample(40, 0.09), sample(30, 0.03)],
            120,
            {"floor": 1},
            4,
            False,
            False,
        ),
        ([], 120, {"floor": 4}, 4, True, False),
        ([sample(30, None)], 120, {"floor": 4}, 4, True, False),
        ([sample(30, 0.035)], None, {"floor": 4}, 4, True, False),
        ([sample(30, 0.035)], 120, {"floor": 4, "max_latency_seconds": 0.01}, 4, True, False),
    ],
    ids=[
        "120 req/s at 30 per replica needs 4",
        "20% headroom needs 5",
        "a twentieth of a replica is rate noise",
        "capped at maxReplicas 6 and says so",
        "never fewer than blue's size",
        "the most load carried within the median latency",
        "no sample: blue's size, an estimate",
        "no latency: an estimate",
        "no load: an estimate",
        "never within the stated latency: an estimate",
    ],
)
def test_the_replicas_needed_follow_the_worked_examples(
    samples: list[CapacitySample],
    load: float | None,
    options: dict[str, float],
    replicas: int,
    estimated: bool,
    capped: bool,
) -> None:
    need = calculate_replicas_needed(samples, load, **options)  # type: ignore[arg-type]
    assert (need.replicas, need.estimated, need.capped) == (replicas, estimated, capped)


@pytest.mark.parametrize(
    ("ready", "pending", "waiting", "allowed", "verdict", "decision", "tail"),
    [
        (
            2,
            2,
            "Unschedulable: 0/3 nodes have enough cpu",
            False,
            "Inconclusive",
            "Holding",
            "2 of 4 Ready, 2 Pending (Unschedulable: 0/3 nodes have enough cpu)",
        ),
        (3, 0, None, False, "Inconclusive", "PreScaling", "3 of 4 Ready, scaling up"),
        (4, 0, None, True, "Healthy", "Ready", "4 of 4 Ready"),
        (5, 0, None, True, "Healthy", "Ready", "5 of 4 Ready"),
    ],
)
def test_the_step_to_100_holds_until_the_needed_replicas_are_ready(
    ready: int,
    pending: int,
    waiting: str | None,
    allowed: bool,
    verdict: str,
    decision: str,
    tail: str,
) -> None:
    need = Need(4, 120.0, 30.0, 0.035, estimated=False, capped=False)
    decided = plan_capacity(need, ready, pending, waiting, quantile=0.95, max_replicas=10)
    assert (decided.allowed, decided.verdict, decided.decision) == (allowed, verdict, decision)
    assert decided.reason == (
        f"green needs 4 replicas for 120 req/s at ≤ 35 ms p95 (30 req/s per replica seen); {tail}"
    )


def test_an_estimate_lets_the_step_go_on_blues_size_but_is_never_healthy() -> None:
    need = calculate_replicas_needed([], 120, floor=4)
    decided = plan_capacity(need, 4, 0, None, quantile=0.95, max_replicas=10)
    assert decided.allowed and decided.verdict == "Inconclusive"
    assert decided.reason == (
        "no load sample yet: green needs blue's 4 replicas (an estimate); 4 of 4 Ready"
    )


# -- properties of the fit -----------------------------------------------------------------

samples_st = st.lists(
    st.builds(
        sample,
        st.floats(0.1, 1000, allow_nan=False),
        st.one_of(st.none(), st.floats(0.001, 2, allow_nan=False)),
        st.integers(1, 10),
    ),
    max_size=8,
)


@given(
    samples_st,
    st.floats(0, 10_000, allow_nan=False),
    st.floats(0, 10_000, allow_nan=False),
    st.integers(1, 50),
    st.integers(1, 100),
    st.integers(0, 100),
)
def test_more_load_never_needs_fewer_replicas(
    samples: list[CapacitySample],
    load: float,
    more: float,
    floor: int,
    maximum: int,
    headroom: int,
) -> None:
    def need(x: float) -> Need:
        return calculate_replicas_needed(
            samples, x, floor=floor, max_replicas=maximum, headroom_percent=headroom
        )

    assert need(load + more).replicas >= need(load).replicas


@given(
    samples_st,
    st.one_of(st.none(), st.floats(0, 10_000, allow_nan=False)),
    st.integers(1, 50),
    st.integers(1, 100),
)
def test_never_fewer_than_blue_and_never_over_max_unless_blue_already_is(
    samples: list[CapacitySample], load: float | None, floor: int, maximum: int
) -> None:
    need = calculate_replicas_needed(samples, load, floor=floor, max_replicas=maximum)
    assert need.replicas >= floor
    assert need.replicas <= max(floor, maximum)
    if need.capped:
        assert need.replicas == max(floor, maximum)
        assert need.load is not None and need.per_replica is not None
        assert need.load / need.per_replica > maximum


@given(samples_st, st.one_of(st.none(), st.floats(0, 10_000)), st.integers(1, 50))
def test_an_unknown_fit_is_never_healthy(
    samples: list[CapacitySample], load: float | None, floor: int
) -> None:
    need = calculate_replicas_needed(samples, load, floor=floor)
    decided = plan_capacity(need, 10_000, 0, None, quantile=0.95, max_replicas=1000)
    if need.estimated:
        assert need.replicas == floor and decided.verdict == "Inconclusive"
    if load is None or not any(s.latencySeconds is not None for s in samples):
        assert need.estimated


# -- the planner: sample, pre-scale, hold, go ---------------------------------------------


def canary_spec(
    model: str,
    *,
    capacity: CapacityPolicy | None = None,
    autoscaling: Autoscaling | None = None,
    routing: str = "Canary",
) -> EndpointSpec:
    traffic = (
        TrafficRouting(
            type="Canary",
            canarySize=CapacitySize(type="CapacityPercent", value=50),
            waitIntervalSeconds=60,
        )
        if routing == "Canary"
        else TrafficRouting(type="AllAtOnce", waitIntervalSeconds=60)
    )
    return EndpointSpec(
        variants=[
            Variant(
                name="main",
                model=ModelSource(uri=model),
                replicas=2,
                autoscaling=autoscaling,
            )
        ],
        deploymentConfig=DeploymentConfig(
            blueGreen=BlueGreen(trafficRouting=traffic, terminationWaitSeconds=30),
            capacity=capacity,
        ),
    )


@dataclasses.dataclass
class LoadedCluster(SimCluster):
    """The simulated cluster, plus 200 req/s spread over the serving pods, and a
    limit on how many green pods the cluster can place."""

    rps: float = 200.0
    green_latency: float | None = 0.004
    placeable: int | None = None
    metrics: bool = True
    events: list[Event] = dataclasses.field(default_factory=list)

    def step(self, spec: EndpointSpec) -> Plan:
        plan = super().step(spec)
        self.events.extend(plan.events)
        return plan

    def observe(self, spec: EndpointSpec) -> Observed:
        seen = super().observe(spec)
        fleets = []
        for fleet in seen.fleets:
            if self.placeable is not None and fleet.replicas > self.placeable:
                fleets.append(
                    dataclasses.replace(
                        fleet,
                        ready=min(fleet.ready, self.placeable),
                        pending=fleet.replicas - self.placeable,
                        waiting="Unschedulable: 0/3 nodes have enough cpu",
                    )
                )
            else:
                fleets.append(fleet)
        capacity = None
        variant = self.variant("main") if self.status is not None else None
        if variant is not None and variant.candidateRevision is not None:
            green = self.status.fleets.get("green") if self.status else None
            serving = green.servingReplicas or 0 if green is not None else 0
            blue = self.status.fleets.get("blue") if self.status else None
            blue_serving = blue.servingReplicas or blue.readyReplicas if blue else 0
            total = serving + blue_serving
            if self.metrics and total:
                capacity = {
                    "main": CapacityObservation(
                        green_rps=self.rps * serving / total,
                        blue_rps=self.rps * blue_serving / total,
                        green_replicas=serving,
                        latency_seconds=self.green_latency,
                    )
                }
            elif not self.metrics:
                capacity = {"main": CapacityObservation(None, None, 0, reason="no Prometheus")}
        return dataclasses.replace(seen, fleets=tuple(fleets), capacity=capacity)


def deploy(cluster: LoadedCluster, base: EndpointSpec, update: EndpointSpec) -> None:
    cluster.run(base, 5)
    assert cluster.variant("main").phase == "InService"
    cluster.step(update)


def green_plan(cluster: LoadedCluster, spec: EndpointSpec) -> tuple[int, int | None]:
    assert cluster.last is not None
    green = next(
        f for f in cluster.last.fleets if f.revision == revision(spec, "main") and f.role == "green"
    )
    return green.replicas, green.autoscaling.min_replicas if green.autoscaling else None


def test_a_canary_records_the_fit_and_pre_scales_green_before_the_step_to_100() -> None:
    policy = CapacityPolicy(windowSeconds=10)
    base = canary_spec("s3://m/v1", capacity=policy)
    update = canary_spec("s3://m/v2", capacity=policy)
    cluster = LoadedCluster(now=T0)
    deploy(cluster, base, update)
    cluster.run(update, 30)
    variant = cluster.variant("main")
    assert variant.step is not None and variant.step.greenPercent == 50
    record = variant.capacity
    assert record is not None and record.decision == "Measuring"
    assert record.samples, "a step that carried its share for a window is sampled"
    # 50% of 2 + 2 Ready pods: all four serve, 50 req/s each.
    assert record.samples[-1].loadPerReplica == pytest.approx(50)
    assert record.load == pytest.approx(200)

    cluster.run(update, 33)  # the bake ends: green alone needs 200 / 50 = 4 replicas
    record = cluster.variant("main").capacity
    assert record is not None and record.neededReplicas == 4
    assert green_plan(cluster, update)[0] == 4, "green is planned with the replicas it needs"
    cluster.run(update, 3)
    variant = cluster.variant("main")
    assert variant.step is not None and variant.step.greenPercent == 100
    assert variant.capacity is not None and variant.capacity.decision == "Ready"
    assert variant.capacity.verdict == "Healthy"
    assert variant.capacity.reason == (
        "green needs 4 replicas for 200 req/s at ≤ 4 ms p95 (50 req/s per replica seen); "
        "4 of 4 Ready"
    )
    assert green_plan(cluster, update)[0] == 4, "green keeps them through the last bake"

    cluster.run(update, 100)
    variant = cluster.variant("main")
    assert variant.phase == "InService" and variant.activeRevision == revision(update, "main")
    cluster.step(update)
    assert cluster.last is not None
    assert [f.replicas for f in cluster.last.fleets] == [2], "the spec's size is back"


def test_pods_that_cannot_be_placed_hold_the_step_and_say_why_until_capacity_appears() -> None:
    policy = CapacityPolicy(windowSeconds=10)
    base = canary_spec("s3://m/v1", capacity=policy)
    update = canary_spec("s3://m/v2", capacity=policy)
    cluster = LoadedCluster(now=T0, placeable=2)
    deploy(cluster, base, update)
    cluster.run(update, 120)
    variant = cluster.variant("main")
    assert variant.step is not None and variant.step.greenPercent == 50, "the step holds"
    record = variant.capacity
    assert record is not None and record.decision == "Holding"
    assert record.reason.endswith(
        "2 of 4 Ready, 2 Pending (Unschedulable: 0/3 nodes have enough cpu)"
    )
    assert record.holdingSince is not None
    held_since = record.holdingSince
    assert cluster.status is not None
    progressing = next(c for c in cluster.status.conditions if c.type == "Progressing")
    assert "waiting for capacity" in progressing.message
    assert [e.reason for e in cluster.events if e.reason.startswith("Capacity")] == [
        "CapacityPreScaling",
        "CapacityHeld",
    ]

    cluster.placeable = None  # a node joins
    cluster.run(update, 2)
    variant = cluster.variant("main")
    assert variant.step is not None and variant.step.greenPercent == 100
    assert variant.capacity is not None and variant.capacity.decision == "Ready"
    assert variant.capacity.holdingSince == held_since, "kept: the hold's start"
    assert variant.capacity.decidedAt is not None and variant.capacity.decidedAt > held_since


def test_with_an_hpa_the_minimum_is_raised_then_given_back_to_the_spec() -> None:
    policy = CapacityPolicy(windowSeconds=10)
    scaling = Autoscaling(minReplicas=2, maxReplicas=10, targetInvocationsPerReplica=100)
    base = canary_spec("s3://m/v1", capacity=policy, autoscaling=scaling)
    update = canary_spec("s3://m/v2", capacity=policy, autoscaling=scaling)
    cluster = LoadedCluster(now=T0)
    deploy(cluster, base, update)
    cluster.run(update, 30)
    assert green_plan(cluster, update)[1] == 2
    cluster.run(update, 33)
    assert green_plan(cluster, update) == (4, 4), "the HPA minimum is raised to 4"
    cluster.run(update, 140)
    assert cluster.variant("main").phase == "InService"
    assert cluster.last is not None
    (fleet,) = cluster.last.fleets
    assert fleet.autoscaling is not None and fleet.autoscaling.min_replicas == 2


@pytest.mark.parametrize(
    ("scaling", "cap"),
    [
        (Autoscaling(minReplicas=2, maxReplicas=4, targetInvocationsPerReplica=100), "maxReplicas"),
        (None, "maxScalePercent 200 of blue's 2"),
    ],
    ids=["hpa-max", "twice-blue-without-hpa"],
)
def test_a_limit_below_the_need_caps_green_and_says_which(
    scaling: Autoscaling | None, cap: str
) -> None:
    policy = CapacityPolicy(headroomPercent=300, windowSeconds=10)
    base = canary_spec("s3://m/v1", capacity=policy, autoscaling=scaling)
    update = canary_spec("s3://m/v2", capacity=policy, autoscaling=scaling)
    cluster = LoadedCluster(now=T0)
    deploy(cluster, base, update)
    cluster.run(update, 64)
    record = cluster.variant("main").capacity
    assert record is not None and record.capped and record.neededReplicas == 4
    assert "green needs 16 replicas for 800 req/s" in record.reason
    assert f"capped at 4 ({cap})" in record.reason
    assert any(e.reason == "CapacityCapped" for e in cluster.events)


@pytest.mark.parametrize(
    ("hpa_max", "blue", "percent", "limit"),
    [(10, 4, 200, (8, "maxScalePercent 200 of blue's 4")), (6, 4, 200, (6, "maxReplicas"))],
)
def test_the_limit_is_the_lower_of_max_replicas_and_the_scale_percent(
    hpa_max: int, blue: int, percent: int, limit: tuple[int, str]
) -> None:
    assert calculate_limit(hpa_max, blue, percent) == limit


def test_without_metrics_the_fit_is_an_estimate_and_green_keeps_blues_size() -> None:
    base = canary_spec("s3://m/v1")
    update = canary_spec("s3://m/v2")
    cluster = LoadedCluster(now=T0, metrics=False)
    deploy(cluster, base, update)
    cluster.run(update, 62)
    variant = cluster.variant("main")
    assert variant.step is not None and variant.step.greenPercent == 100
    record = variant.capacity
    assert record is not None and record.estimated and record.verdict == "Inconclusive"
    assert record.neededReplicas == 2 and not record.samples
    assert green_plan(cluster, update)[0] == 2


def test_all_at_once_and_an_opt_out_leave_the_cutover_as_it_was() -> None:
    for update in (
        canary_spec("s3://m/v2", routing="AllAtOnce"),
        canary_spec("s3://m/v2", capacity=CapacityPolicy(enabled=False)),
    ):
        base = update.model_copy(deep=True)
        base.variants[0].model = ModelSource(uri="s3://m/v1")
        cluster = LoadedCluster(now=T0)
        deploy(cluster, base, update)
        cluster.run(update, 200)
        variant = cluster.variant("main")
        assert variant.activeRevision == revision(update, "main")
        assert variant.capacity is None
