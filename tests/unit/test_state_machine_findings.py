"""Planner bugs the stateful property test (``test_rollout_state_machine.py``) found,
each pinned by its minimal example."""

from __future__ import annotations

from fleetshift_operator.alarms.base import AlarmResult
from fleetshift_operator.api import (
    Alarm,
    AutoRollback,
    BlueGreen,
    CapacitySize,
    DeploymentConfig,
    EndpointSpec,
    ModelSource,
    Rolling,
    TemplateAlarm,
    TrafficRouting,
    Variant,
    Webhook,
)
from fleetshift_operator.planning.steps import calculate_split, split_error
from support.sim_cluster import SimCluster, revision


def _rolling_spec(model: int, batch_percent: int = 50, replicas: int = 1) -> EndpointSpec:
    return EndpointSpec(
        variants=[
            Variant(name="main", model=ModelSource(uri=f"s3://m/v{model}"), replicas=replicas)
        ],
        deploymentConfig=DeploymentConfig(
            rolling=Rolling(
                maximumBatchSize=CapacitySize(type="CapacityPercent", value=batch_percent),
                waitIntervalSeconds=3,
            ),
            webhooks=[Webhook(name="approve", type="ConfirmPromotion", url="http://hooks.ml/a")],
        ),
    )


def test_a_rolling_deployment_in_one_batch_asks_confirm_promotion() -> None:
    """Minimal example: a rolling deployment whose only batch is also its last (1 replica,
    or a batch of 100%) gave green all of the traffic without calling its
    ConfirmPromotion gate. That batch now waits for the gate, after PreRollout, as
    AllAtOnce does in blue/green."""
    for replicas, batch in ((1, 50), (3, 100)):
        cluster = SimCluster()
        cluster.run(_rolling_spec(1, batch, replicas), 5)
        cluster.answers["approve"] = "no"
        plan = cluster.run(_rolling_spec(2, batch, replicas), 30)
        main = cluster.variant("main")
        assert main.phase == "Updating" and main.step is not None
        assert main.step.greenPercent == 0, "green served before the gate said yes"
        assert plan.traffic("main")[main.candidateRevision or ""] == 0
        [record] = main.webhooks
        assert (record.name, record.state, record.statusCode) == ("approve", "Pending", 503)

        cluster.answers["approve"] = "yes"
        cluster.run(_rolling_spec(2, batch, replicas), 10)
        main = cluster.variant("main")
        assert main.phase == "InService" and main.candidateRevision is None
        assert [(r.name, r.state) for r in main.webhooks] == [("approve", "Passed")]


def _canary_spec(model: int) -> EndpointSpec:
    return EndpointSpec(
        variants=[Variant(name="main", model=ModelSource(uri=f"s3://m/v{model}"), replicas=2)],
        deploymentConfig=DeploymentConfig(
            blueGreen=BlueGreen(
                trafficRouting=TrafficRouting(
                    type="Canary",
                    canarySize=CapacitySize(type="CapacityPercent", value=10),
                    waitIntervalSeconds=3,
                )
            ),
            autoRollback=AutoRollback(
                alarms=[Alarm(name="e", template=TemplateAlarm(kind="GreenErrorRate", threshold=5))]
            ),
        ),
    )


def test_a_new_revision_is_not_rolled_back_by_the_alarms_of_the_one_it_supersedes() -> None:
    """Minimal example: v2 is deploying and its alarm breaches; in that same reconcile the
    spec asks for v3. The verdicts were evaluated for v2 (``${revision}`` is the status's
    candidate), yet v3 was rolled back at once with v2's reason ("alarm e: ...") and
    marked rolled back, so it would not be tried again without a retry. Now v2 is
    superseded and v3 starts deploying; its own alarms judge it from the next reconcile."""
    cluster = SimCluster()
    cluster.run(_canary_spec(1), 3)
    cluster.run(_canary_spec(2), 0)
    assert cluster.variant("main").phase == "Updating"
    v2 = cluster.variant("main").candidateRevision
    cluster.alarms = {"main": (AlarmResult("e", "Breaching", 9.0, "v2 answers 500s"),)}
    cluster.run(_canary_spec(3), 0)
    assert cluster.judged == {"main": v2}, "the verdicts were v2's"
    main = cluster.variant("main")
    assert main.lastDeployment is not None
    assert (main.lastDeployment.revision, main.lastDeployment.outcome) == (v2, "Superseded")
    assert main.phase == "Updating" and main.rolledBackRevision is None
    assert main.candidateRevision == revision(_canary_spec(3), "main")

    cluster.run(_canary_spec(3), 1)  # v3's own alarms breach too: now it rolls back
    main = cluster.variant("main")
    assert main.lastDeployment is not None and main.lastDeployment.outcome == "RolledBack"
    assert main.rolledBackRevision == revision(_canary_spec(3), "main")


def _config(routing: str, hooks: list[Webhook]) -> DeploymentConfig:
    if routing == "rolling":
        return DeploymentConfig(
            rolling=Rolling(
                maximumBatchSize=CapacitySize(type="CapacityPercent", value=50),
                waitIntervalSeconds=3,
            ),
            webhooks=hooks,
        )
    kind, size = {"canary": ("Canary", "canarySize"), "linear": ("Linear", "linearStepSize")}[
        routing
    ]
    percent = 10 if routing == "canary" else 34
    traffic = TrafficRouting.model_validate(
        {
            "type": kind,
            size: {"type": "CapacityPercent", "value": percent},
            "waitIntervalSeconds": 5,
        }
    )
    return DeploymentConfig(blueGreen=BlueGreen(trafficRouting=traffic), webhooks=hooks)


def _spec(model: int, routing: str, replicas: int = 1) -> EndpointSpec:
    hooks = [Webhook(name="approve", type="ConfirmPromotion", url="http://hooks.ml/a")]
    return EndpointSpec(
        variants=[
            Variant(name="main", model=ModelSource(uri=f"s3://m/v{model}"), replicas=replicas)
        ],
        deploymentConfig=_config(routing, hooks),
    )


def test_a_deployment_whose_steps_change_mid_way_skips_no_gate_and_does_not_crash() -> None:
    """Minimal examples: the deployment's steps change under it (blueGreen becomes
    rolling, or a linear routing becomes a canary). The new strategy read the step index
    the old one wrote: with a linear step 2 of 3 and a rolling deployment of one batch,
    ``targets[index - 1]`` raised IndexError (every reconcile of the Endpoint failed
    until the bake ended); a canary step 1 of 2 read as "batch 1 of 1 done" retired blue,
    and a linear step 2 of 3 read as "past the last of 2 canary steps" went to the
    termination wait: green got all of the traffic without its ConfirmPromotion gate.
    Each now resumes from the share green has."""
    for before, after, held_at in (
        ("linear", "rolling", 0),
        ("canary", "rolling", 0),
        ("linear", "canary", 68),
    ):
        cluster = SimCluster()
        cluster.answers["approve"] = "no"
        cluster.run(_spec(1, before), 3)
        cluster.run(_spec(2, before), 9 if before == "linear" else 3)
        step = cluster.variant("main").step
        assert step is not None and step.stage == "Baking"
        assert (step.index, step.greenPercent) == ((2, 68) if before == "linear" else (1, 10))
        cluster.run(_spec(2, after), 20)
        main = cluster.variant("main")
        assert main.phase == "Updating", (before, after, main.lastDeployment)
        assert main.step is not None and main.step.greenPercent == held_at, (before, after)
        assert [(r.name, r.state) for r in main.webhooks] == [("approve", "Pending")]
        cluster.answers["approve"] = "yes"
        cluster.run(_spec(2, after), 30)
        main = cluster.variant("main")
        assert main.phase == "InService" and main.activeRevision == revision(
            _spec(2, after), "main"
        )


def test_the_split_gives_one_backend_several_of_the_pods_left_to_place() -> None:
    """Found by ``test_split.py``'s property test while these were hunted (not by the
    state machine). Weights 1/24/24/36 over 2/1/1/4 Ready pods: for 7 serving pods the
    largest-remainder fill gave one pod to each of the two backends furthest below their
    ideal in one pass, 2/1/1/3 (27 points off for the first), so the split chosen,
    1/1/1/3, was 15.5 points off where 1/1/1/4 is 14.8: more than the half point
    (``SPLIT_SLACK_POINTS``) the split promises. Pods now go one at a time to the
    backend furthest below its ideal."""
    weights, ready = [1, 24, 24, 36], [2, 1, 1, 4]
    counts = calculate_split(weights, ready)
    assert counts == [1, 1, 1, 4]
    assert split_error(counts, [w / sum(weights) for w in weights]) < 14.8
