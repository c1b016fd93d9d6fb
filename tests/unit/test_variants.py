"""Each variant has its own revision and rollout; weights and shares are served as asked,
and status says what is served. Table-like tests over a simulated cluster."""

from __future__ import annotations

import datetime

from fleetshift_operator.alarms.base import AlarmResult
from fleetshift_operator.api import (
    Alarm,
    AutoRollback,
    BlueGreen,
    CapacitySize,
    DeploymentConfig,
    EndpointSpec,
    EndpointStatus,
    ModelSource,
    TemplateAlarm,
    TrafficRouting,
    Variant,
)
from fleetshift_operator.planning.plan import plan_endpoint
from fleetshift_operator.planning.types import Plan
from support.sim_cluster import SimCluster, revision


def variant(name: str, model: str = "v1", replicas: int = 1, weight: int = 1) -> Variant:
    return Variant(
        name=name, model=ModelSource(uri=f"s3://m/{name}/{model}"), replicas=replicas, weight=weight
    )


def endpoint(
    *variants: Variant, routing: TrafficRouting | None = None, **policy: int
) -> EndpointSpec:
    blue_green = BlueGreen(trafficRouting=routing or TrafficRouting(), **policy)
    return EndpointSpec(
        variants=list(variants), deploymentConfig=DeploymentConfig(blueGreen=blue_green)
    )


def serving(plan: Plan) -> dict[str, int | None]:
    return {f"{f.variant}/{f.role}": f.serving_replicas for f in plan.fleets}


def conditions(plan: Plan) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in plan.status.conditions}


def in_service(spec: EndpointSpec) -> SimCluster:
    cluster = SimCluster()
    cluster.run(spec, 5)
    assert cluster.status is not None and cluster.status.phase == "InService"
    return cluster


def test_adding_a_variant_serves_it_without_redeploying_the_champion() -> None:
    one = endpoint(variant("champion", replicas=4, weight=80))
    cluster = in_service(one)
    champion = revision(one, "champion")
    two = endpoint(variant("champion", replicas=4, weight=80), variant("challenger", weight=20))

    plan = cluster.step(two)
    assert plan.status.phase == "Updating"
    assert cluster.variant("champion").phase == "InService"
    assert cluster.variant("challenger").phase == "Creating"
    assert [(f.variant, f.revision, f.role) for f in plan.fleets] == [
        ("champion", champion, "blue"),
        ("challenger", revision(two, "challenger"), "blue"),
    ]
    # not Ready yet: the champion keeps every request
    assert serving(plan) == {"champion/blue": None, "challenger/blue": 0}
    assert plan.status.observedGeneration == 1

    plan = cluster.run(two, 3)
    assert plan.status.phase == "InService"
    assert serving(plan) == {"champion/blue": 4, "challenger/blue": 1}
    shares = {v.name: (v.requestedTrafficPercent, v.trafficPercent) for v in plan.status.variants}
    assert shares == {"champion": (80, 80), "challenger": (20, 20)}
    assert cluster.fleets.keys() == {
        ("champion", champion),
        ("challenger", revision(two, "challenger")),
    }


def test_changing_the_challengers_model_deploys_only_the_challenger() -> None:
    spec = endpoint(variant("champion", replicas=2), variant("challenger", replicas=2))
    cluster = in_service(spec)
    champion = revision(spec, "champion")
    changed = endpoint(variant("champion", replicas=2), variant("challenger", "v2", replicas=2))

    plan = cluster.step(changed)
    assert cluster.variant("challenger").phase == "Updating"
    assert cluster.variant("challenger").candidateRevision == revision(changed, "challenger")
    assert cluster.variant("champion").phase == "InService"
    assert cluster.variant("champion").candidateRevision is None
    assert [f.revision for f in plan.fleets if f.variant == "champion"] == [champion]

    plan = cluster.run(changed, 10)
    assert plan.status.phase == "InService"
    assert cluster.variant("challenger").activeRevision == revision(changed, "challenger")
    assert cluster.variant("champion").activeRevision == champion
    assert cluster.variant("challenger").lastDeployment is not None
    assert cluster.variant("champion").lastDeployment.outcome == "Succeeded"  # type: ignore[union-attr]


def test_a_variant_with_weight_0_gets_no_traffic() -> None:
    spec = endpoint(variant("a", replicas=2, weight=1), variant("b", replicas=2, weight=0))
    cluster = in_service(spec)
    plan = cluster.step(spec)
    assert serving(plan) == {"a/blue": None, "b/blue": 0}
    assert [v.trafficPercent for v in plan.status.variants] == [100, 0]


def test_weights_are_served_as_closely_as_whole_pods_allow_and_the_gap_is_reported() -> None:
    spec = endpoint(variant("a", replicas=4, weight=50), variant("b", replicas=1, weight=50))
    cluster = in_service(spec)
    plan = cluster.step(spec)
    assert serving(plan) == {"a/blue": 1, "b/blue": 1}
    assert conditions(plan)["TrafficSplit"][0] == "True"

    uneven = endpoint(variant("a", replicas=2, weight=1), variant("b", replicas=2, weight=2))
    cluster = in_service(uneven)
    plan = cluster.step(uneven)
    assert serving(plan) == {"a/blue": 1, "b/blue": 2}


def test_a_10_percent_canary_on_3_replicas_reports_the_share_it_serves() -> None:
    routing = TrafficRouting(
        type="Canary",
        canarySize=CapacitySize(type="CapacityPercent", value=10),
        waitIntervalSeconds=60,
    )
    spec = endpoint(variant("main", replicas=3), routing=routing)
    cluster = in_service(spec)
    update = endpoint(variant("main", "v2", replicas=3), routing=routing)
    plan = cluster.run(update, 4)
    assert plan.status.step is not None and plan.status.step.stage == "Baking"
    assert plan.status.step.greenPercent == 10
    assert serving(plan) == {"main/blue": 3, "main/green": 1}
    assert plan.status.greenTrafficPercent == 25
    assert plan.status.fleets["green"].trafficPercent == 25
    assert plan.status.fleets["green"].requestedTrafficPercent == 10
    state, reason, message = conditions(plan)["TrafficSplit"]
    assert (state, reason) == ("False", "WholePods")
    assert "asked 10%, serves 25%" in message


def test_a_variant_whose_pods_are_all_unready_is_out_of_service_and_degraded() -> None:
    spec = endpoint(variant("AllTraffic", replicas=2))
    cluster = in_service(spec)
    cluster.killed.add(("AllTraffic", revision(spec, "AllTraffic")))
    plan = cluster.step(spec)
    assert plan.status.phase == "OutOfService"
    found = conditions(plan)
    assert found["Ready"][:2] == ("False", "OutOfService")
    assert found["Degraded"][:2] == ("True", "OutOfService")
    assert any(e.reason == "OutOfService" and e.type == "Warning" for e in plan.events)

    cluster.killed.clear()
    plan = cluster.step(spec)
    assert plan.status.phase == "InService"
    assert conditions(plan)["Ready"][0] == "True"


def test_waiting_green_pods_show_at_once_and_roll_back_at_the_provisioning_timeout() -> None:
    spec = endpoint(variant("main", replicas=2), provisioningTimeoutSeconds=30)
    cluster = in_service(spec)
    update = endpoint(variant("main", "v2", replicas=2), provisioningTimeoutSeconds=30)
    green = revision(update, "main")
    cluster.waiting[green] = "Unschedulable: 0/3 nodes are available"
    cluster.step(update)  # creates green
    cluster.fleets[("main", green)].waiting = cluster.waiting[green]
    plan = cluster.step(update)
    state, reason, message = conditions(plan)["Degraded"]
    assert (state, reason) == ("True", "PodsNotReady")
    assert "Unschedulable: 0/3 nodes are available" in message
    assert plan.requeue_after is not None and plan.requeue_after <= 30

    plan = cluster.run(update, 31)
    assert plan.status.phase == "InService"
    last = cluster.variant("main").lastDeployment
    assert last is not None and last.outcome == "RolledBack"
    assert "provisioningTimeoutSeconds (30s)" in last.reason
    assert "Unschedulable" in last.reason


def test_removing_a_variant_moves_its_traffic_then_deletes_its_fleet() -> None:
    two = endpoint(variant("a", replicas=2), variant("b", replicas=2))
    cluster = in_service(two)
    one = endpoint(variant("a", replicas=2))
    plan = cluster.step(one)
    assert [f.variant for f in plan.fleets] == ["a"]
    assert ("b", revision(two, "b")) not in cluster.fleets
    assert [v.name for v in plan.status.variants] == ["a"]
    assert any(e.reason == "VariantRemoved" for e in plan.events)


def test_renaming_the_only_variant_keeps_serving_until_the_new_one_is_ready() -> None:
    old = endpoint(variant("main", replicas=2))
    cluster = in_service(old)
    renamed = endpoint(variant("AllTraffic", replicas=2))
    plan = cluster.step(renamed)
    assert serving(plan) == {"AllTraffic/blue": 0, "main/blue": None}
    assert plan.status.phase == "Updating"
    plan = cluster.run(renamed, 3)
    assert [f.variant for f in plan.fleets] == ["AllTraffic"]
    assert plan.status.phase == "InService"
    assert [v.name for v in plan.status.variants] == ["AllTraffic"]


def test_alarms_judge_each_variant_alone() -> None:
    alarms = AutoRollback(
        alarms=[Alarm(name="errors", template=TemplateAlarm(kind="GreenErrorRate", threshold=5))]
    )

    def spec(model_a: str, model_b: str) -> EndpointSpec:
        base = endpoint(variant("a", model_a, replicas=2), variant("b", model_b, replicas=2))
        config = base.deploymentConfig.model_copy(update={"autoRollback": alarms})
        return base.model_copy(update={"deploymentConfig": config})

    cluster = in_service(spec("v1", "v1"))
    both = spec("v2", "v2")
    healthy = (AlarmResult("errors", "Healthy", 0.0, "ok"),)
    breach = (AlarmResult("errors", "Breaching", 12.0, "5xx"),)
    cluster.alarms = {"a": healthy, "b": breach}
    plan = cluster.run(both, 20)
    assert plan.status.phase == "InService"
    assert cluster.variant("a").activeRevision == revision(both, "a")
    assert cluster.variant("b").activeRevision == revision(spec("v1", "v1"), "b")
    assert cluster.variant("b").rolledBackRevision == revision(both, "b")
    cause = cluster.variant("b").rollbackCause
    assert cause is not None and cause.name == "errors"


def test_a_status_written_before_variants_had_their_own_rollout_is_adopted() -> None:
    spec = endpoint(variant("main", replicas=2))
    cluster = in_service(spec)
    assert cluster.status is not None
    old = cluster.status.model_dump(mode="json")
    del old["variants"]
    cluster.status = EndpointStatus.model_validate(old)
    plan = cluster.step(spec)
    assert plan.status.phase == "InService"
    assert [f.revision for f in plan.fleets] == [revision(spec, "main")]
    assert plan.status.variants[0].activeRevision == revision(spec, "main")


def test_the_plan_is_the_same_after_a_restart() -> None:
    spec = endpoint(variant("a", replicas=2), variant("b", replicas=3, weight=3))
    cluster = in_service(spec)
    update = endpoint(variant("a", "v2", replicas=2), variant("b", replicas=3, weight=3))
    cluster.run(update, 1)
    assert cluster.status is not None
    observed = cluster.observe(update)
    again = EndpointStatus.model_validate_json(cluster.status.model_dump_json())
    first = plan_endpoint(update, cluster.status, observed, cluster.now)
    second = plan_endpoint(update, again, observed, cluster.now)
    assert first.fleets == second.fleets
    assert first.status == second.status
    assert cluster.now > datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
