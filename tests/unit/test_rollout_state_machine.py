"""A stateful property test of the planner over a simulated cluster.

Random sequences of spec edits (a variant's model, add, remove, rename, weight,
replicas, policy, router), controls, pod readiness, alarm verdicts and operator
restarts. After every plan: each variant's asked shares sum to 100, no fleet is given
pods or weight it has no Ready pod for, and what the status says is served is what the
plan configures. Once inputs stop changing and pods turn Ready, every sequence converges
to the spec within a bounded number of plans.
"""

from __future__ import annotations

import datetime

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fleetshift_operator.alarms.base import AlarmResult
from fleetshift_operator.api import (
    Alarm,
    AutoRollback,
    BlueGreen,
    CapacitySize,
    DeploymentConfig,
    EndpointSpec,
    EndpointStatus,
    GatewayAPIRouting,
    ModelSource,
    ParentReference,
    Rolling,
    Shadow,
    TemplateAlarm,
    Traffic,
    TrafficRouting,
    Variant,
)
from fleetshift_operator.planning.names import calculate_revision
from support.sim_cluster import SimCluster

NAMES = ["main", "AllTraffic", "challenger", "shadow-1"]
POLICIES = ["all", "canary", "linear", "rolling"]
SETTLE_PLANS = 400


class RolloutMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cluster = SimCluster()
        self.variants: dict[str, tuple[int, int, int]] = {"main": (1, 2, 1)}
        """name -> (model version, replicas, weight)"""
        self.shadows: set[str] = set()
        """Variants that only see copies of the traffic."""
        self.policy = "canary"
        self.router = "Replicas"
        self.alarmed = False
        self.cluster.step(self.spec())

    def spec(self) -> EndpointSpec:
        variants = [
            Variant(
                name=name,
                model=ModelSource(uri=f"s3://m/{name}/v{model}"),
                replicas=replicas,
                weight=weight,
                shadow=Shadow(samplingPercent=10) if name in self.shadows else None,
            )
            for name, (model, replicas, weight) in self.variants.items()
        ]
        # Admission: a variant that is not a shadow takes the traffic.
        if all(v.shadow is not None for v in variants):
            variants[0] = variants[0].model_copy(update={"shadow": None})
        if not any(v.weight for v in variants if v.shadow is None):
            first = next(i for i, v in enumerate(variants) if v.shadow is None)
            variants[first] = variants[first].model_copy(update={"weight": 1})
        alarms = (
            AutoRollback(
                alarms=[Alarm(name="e", template=TemplateAlarm(kind="GreenErrorRate", threshold=5))]
            )
            if self.alarmed
            else None
        )
        if self.policy == "rolling":
            config = DeploymentConfig(
                rolling=Rolling(
                    maximumBatchSize=CapacitySize(type="CapacityPercent", value=50),
                    waitIntervalSeconds=3,
                ),
                autoRollback=alarms,
            )
        else:
            routing = {
                "all": TrafficRouting(waitIntervalSeconds=2),
                "canary": TrafficRouting(
                    type="Canary",
                    canarySize=CapacitySize(type="CapacityPercent", value=10),
                    waitIntervalSeconds=3,
                ),
                "linear": TrafficRouting(
                    type="Linear",
                    linearStepSize=CapacitySize(type="CapacityPercent", value=34),
                    waitIntervalSeconds=2,
                ),
            }[self.policy]
            config = DeploymentConfig(
                blueGreen=BlueGreen(trafficRouting=routing, terminationWaitSeconds=2),
                autoRollback=alarms,
            )
        traffic = (
            Traffic(
                router="GatewayAPI",
                gatewayAPI=GatewayAPIRouting(parentRefs=[ParentReference(name="gw")]),
            )
            if self.router == "GatewayAPI"
            else Traffic()
        )
        return EndpointSpec(variants=variants, deploymentConfig=config, traffic=traffic)

    def reconcile(self) -> None:
        self.cluster.step(self.spec())

    # -- spec edits ------------------------------------------------------------------------

    @rule(data=st.data())
    def change_a_model(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.variants)))
        model, replicas, weight = self.variants[name]
        self.variants[name] = (model + 1, replicas, weight)
        self.reconcile()

    @precondition(lambda self: len(self.variants) < len(NAMES))
    @rule(data=st.data(), replicas=st.integers(1, 4), weight=st.integers(0, 5))
    def add_a_variant(self, data: st.DataObject, replicas: int, weight: int) -> None:
        name = data.draw(st.sampled_from([n for n in NAMES if n not in self.variants]))
        self.variants[name] = (1, replicas, weight)
        self.reconcile()

    @precondition(lambda self: len(self.variants) > 1)
    @rule(data=st.data())
    def remove_a_variant(self, data: st.DataObject) -> None:
        del self.variants[data.draw(st.sampled_from(sorted(self.variants)))]
        self.reconcile()

    @precondition(lambda self: len(self.variants) < len(NAMES))
    @rule(data=st.data())
    def rename_a_variant(self, data: st.DataObject) -> None:
        old = data.draw(st.sampled_from(sorted(self.variants)))
        new = data.draw(st.sampled_from([n for n in NAMES if n not in self.variants]))
        self.variants = {(new if k == old else k): v for k, v in self.variants.items()}
        self.reconcile()

    @rule(data=st.data(), replicas=st.integers(1, 4), weight=st.integers(0, 5))
    def resize_or_reweigh(self, data: st.DataObject, replicas: int, weight: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.variants)))
        model, _, _ = self.variants[name]
        self.variants[name] = (model, replicas, weight)
        self.reconcile()

    @rule(data=st.data())
    def make_a_variant_a_shadow_or_not(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.variants)))
        self.shadows ^= {name}
        self.reconcile()

    @rule(policy=st.sampled_from(POLICIES), alarmed=st.booleans())
    def change_the_policy(self, policy: str, alarmed: bool) -> None:
        self.policy, self.alarmed = policy, alarmed
        self.reconcile()

    @rule(router=st.sampled_from(["Replicas", "GatewayAPI"]))
    def change_the_router(self, router: str) -> None:
        self.router = router
        self.reconcile()

    # -- the world -------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 7.0]))
    def time_passes(self, seconds: float) -> None:
        self.cluster.now += datetime.timedelta(seconds=seconds)
        self.reconcile()

    @rule(verdict=st.sampled_from(["Healthy", "Breaching", "Inconclusive"]))
    def alarms_say(self, verdict: str) -> None:
        result = (AlarmResult("e", verdict, 1.0, "injected"),)  # type: ignore[arg-type]
        self.cluster.alarms = {name: result for name in self.variants}
        self.reconcile()

    @rule(paused=st.booleans(), abort=st.booleans())
    def a_person_acts(self, paused: bool, abort: bool) -> None:
        controls = self.cluster.controls
        self.cluster.controls = type(controls)(
            paused=paused,
            abort=str(self.cluster.now.timestamp()) if abort else controls.abort,
        )
        self.reconcile()

    @rule(data=st.data(), crash=st.booleans())
    def pods_crash_or_turn_unready(self, data: st.DataObject, crash: bool) -> None:
        if not self.cluster.fleets:
            return
        key = data.draw(st.sampled_from(sorted(self.cluster.fleets)))
        if crash:
            self.cluster.fleets[key].failure = "CrashLoopBackOff in pod x"
        else:
            self.cluster.killed.add(key)
        self.reconcile()

    @rule()
    def the_operator_restarts(self) -> None:
        status = self.cluster.status
        if status is not None:
            self.cluster.status = EndpointStatus.model_validate_json(status.model_dump_json())
        self.reconcile()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def each_variants_shares_sum_to_100(self) -> None:
        plan = self.cluster.last
        assert plan is not None
        for name in {f.variant for f in plan.fleets}:
            assert sum(plan.traffic(name).values()) == 100

    @invariant()
    def a_shadow_serves_no_caller(self) -> None:
        plan = self.cluster.last
        assert plan is not None
        spec = self.spec()
        shadows = {v.name for v in spec.variants if v.shadow is not None}
        for fleet in plan.fleets:
            if fleet.variant in shadows:
                assert fleet.route_weight == 0
                if self.router == "Replicas":
                    assert fleet.serving_replicas == 0
        for variant in plan.status.variants:
            if variant.name in shadows:
                assert variant.trafficPercent == 0 and variant.requestedTrafficPercent == 0

    @invariant()
    def no_fleet_serves_without_ready_pods(self) -> None:
        plan = self.cluster.last
        assert plan is not None and self.cluster.status is not None
        observed = {(f.variant, f.revision) for f in plan.fleets}
        assert len(observed) == len(plan.fleets), "a fleet is planned twice"
        for fleet in plan.fleets:
            seen = self.cluster.fleets.get((fleet.variant, fleet.revision))
            ready_before = plan.status.fleets
            served = [
                s
                for s in ready_before.values()
                if s.variant == fleet.variant and s.revision == fleet.revision
            ]
            assert len(served) == 1
            if fleet.serving_replicas:
                assert served[0].readyReplicas >= fleet.serving_replicas
            if served[0].trafficPercent > 0 and self.router == "Replicas":
                assert served[0].readyReplicas > 0
            assert seen is not None

    @invariant()
    def status_says_what_is_configured(self) -> None:
        plan = self.cluster.last
        assert plan is not None
        for key, fleet in plan.status.fleets.items():
            assert key.endswith(fleet.role or "")
        for variant in plan.status.variants:
            mine = [f for f in plan.status.fleets.values() if f.variant == variant.name]
            if any(f.trafficPercent for f in mine):
                assert sum(f.trafficPercent for f in mine) in (99, 100, 101)
        total = sum(v.trafficPercent for v in plan.status.variants)
        assert total == 0 or 97 <= total <= 103

    @rule()
    def everything_settles(self) -> None:
        """Inputs stop changing, pods turn Ready, alarms say Healthy: the spec is reached."""
        self.cluster.killed.clear()
        self.cluster.waiting.clear()
        for fleet in self.cluster.fleets.values():
            fleet.failure = None  # a person mends crashing pods
        self.cluster.controls = type(self.cluster.controls)(abort=self.cluster.controls.abort)
        healthy = (AlarmResult("e", "Healthy", 0.0, "ok"),)
        self.cluster.alarms = {name: healthy for name in self.variants}
        spec = self.spec()
        for _ in range(SETTLE_PLANS):
            self.cluster.now += datetime.timedelta(seconds=1)
            plan = self.cluster.step(spec)
            if all(
                v.candidateRevision is None or v.phase == "Failed" for v in plan.status.variants
            ) and plan.status.phase in ("InService", "OutOfService", "Failed"):
                break
        status = self.cluster.status
        assert status is not None
        summary = [
            (v.name, v.phase, v.activeRevision, v.candidateRevision) for v in status.variants
        ]
        assert status.phase in ("InService", "OutOfService", "Failed"), summary
        failed = any(v.phase == "Failed" and v.activeRevision is None for v in status.variants)
        names = [v.name for v in status.variants]
        if failed:  # removed variants keep serving while their replacement cannot
            assert names[: len(spec.variants)] == [v.name for v in spec.variants], summary
        else:
            assert names == [v.name for v in spec.variants], summary
        for variant, state in zip(spec.variants, status.variants, strict=False):
            wanted = calculate_revision(variant)
            if state.phase == "Failed":  # a first deployment that crashed waits for a new spec
                assert state.lastDeployment is not None
                assert state.lastDeployment.outcome == "Failed"
                continue
            assert wanted in (state.activeRevision, state.rolledBackRevision), summary
            assert state.candidateRevision is None, summary
        planned = {(f.variant, f.revision) for f in self.cluster.last.fleets}  # type: ignore[union-attr]
        assert planned == set(self.cluster.fleets)
        assert len(planned) == len(status.variants)


RolloutMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_the_rollout_converges_from_any_sequence_of_edits = RolloutMachine.TestCase
