"""The capacity-aware cutover on the real control plane with a real Prometheus: green is
pre-scaled before the step to 100% from the load per replica it carried in the canary,
and a green the cluster cannot place holds the step, says why, and goes once a node
joins.

The load comes from the traffic simulator (``support.traffic``): 200 requests per
second spread over the Service's Ready endpoints, exported under the runtime's metric
names, so each fleet's rate is its share of the real routing.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError

from fleetshift_devcluster.cluster import LocalCluster, fake_node
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.cli.view import parse_timestamp
from support.operator_process import (
    deployments_of,
    endpoint_manifest,
    in_service,
    revision_of,
    serving_by_revision,
    set_spec,
    status_of,
)
from support.rig import Rig, rig_fixture
from support.specs import endpoint_spec

NAME = "churn"
REQUESTS_PER_SECOND = 200
HALF = {"type": "Canary", "canarySize": {"type": "CapacityPercent", "value": 50}}


rig = rig_fixture("rig", NAME, requests_per_second=REQUESTS_PER_SECOND)


def spec(model: str, **variant: Any) -> dict[str, Any]:
    """Two replicas, a 50% canary baked 15 s, sampled over 5 s windows."""
    built = endpoint_spec(
        model, replicas=2, routing={**HALF, "waitIntervalSeconds": 15}, termination=0, timeout=1800
    )
    # Room above twice blue's size: rate noise may ask for a fifth replica, not a cap.
    built["deploymentConfig"]["capacity"] = {"windowSeconds": 5, "maxScalePercent": 400}
    built["variants"][0].update(variant)
    return built


def capacity_of(kube: Client, namespace: str) -> dict[str, Any]:
    return dict(status_of(kube, NAME, namespace).get("capacity") or {})


def test_green_is_pre_scaled_from_its_canary_fit_before_it_takes_all_the_traffic(
    kube: Client, namespace: str, rig: Rig
) -> None:
    base, update = spec("s3://models/churn/v1"), spec("s3://models/churn/v2")
    blue, green = revision_of(base), revision_of(update)
    kube.create(endpoint_manifest(NAME, namespace, base))
    wait_for(lambda: in_service(kube, NAME, namespace, blue), timeout=60, message="baseline")

    set_spec(kube, NAME, namespace, update)
    # Each poll notes green's size and share; the cutover must never give green all of
    # the traffic before the replicas the fit asked for are Ready.
    seen: list[tuple[int, int, int]] = []

    def cut_over() -> dict[str, Any] | None:
        status = status_of(kube, NAME, namespace)
        step = status.get("step") or {}
        green_fleet = (status.get("fleets") or {}).get("green") or {}
        seen.append(
            (
                int(step.get("greenPercent", 0)),
                int(green_fleet.get("readyReplicas", 0)),
                int((status.get("capacity") or {}).get("neededReplicas") or 0),
            )
        )
        return status if step.get("greenPercent") == 100 else None

    status = wait_for(cut_over, timeout=120, interval=0.5, message="green at 100%")
    record = status["capacity"]
    needed = record["neededReplicas"]
    assert record["decision"] == "Ready" and record["verdict"] == "Healthy", record
    assert not record["estimated"]
    # 50% of 2 + 2 pods: all four serve, about 50 req/s each; green alone needs about 4.
    assert needed > 2, f"green is pre-scaled above blue's 2 replicas: {record}"
    assert record["readyReplicas"] >= needed
    assert len(record["samples"]) >= 2, record
    for one in record["samples"]:
        assert 25 <= one["loadPerReplica"] <= 100, one
        assert 0 < one["latencySeconds"] <= 0.005, one
    assert 150 <= record["load"] <= 250, record
    assert record["reason"].startswith(f"green needs {needed} replicas for ")
    assert "ms p95" in record["reason"]
    assert deployments_of(kube, namespace, NAME)[green] == needed
    assert all(ready >= need for percent, ready, need in seen if percent == 100), seen

    wait_for(lambda: in_service(kube, NAME, namespace, green), timeout=60, message="green shipped")
    wait_for(
        lambda: deployments_of(kube, namespace, NAME) == {green: 2},
        timeout=60,
        message="the spec's 2 replicas back once the deployment ended",
    )
    assert capacity_of(kube, namespace)["revision"] == green, "the fit stays, for the record"
    print(f"capacity pre-scale: needed {needed} (blue 2), Ready {record['readyReplicas']}")


@pytest.fixture
def small_node(cluster: LocalCluster, namespace: str) -> Iterator[Callable[[str], None]]:
    """Adds kwok nodes of 2 CPUs that only this test's pods tolerate; removes them after."""
    added: list[str] = []

    def add(name: str) -> None:
        node = fake_node(name)
        metadata: dict[str, Any] = node["metadata"]  # type: ignore[assignment]
        metadata["labels"]["fleetshift.dev/capacity-test"] = namespace
        node["spec"] = {
            "taints": [
                {"key": "fleetshift.dev/capacity-test", "value": namespace, "effect": "NoSchedule"}
            ]
        }
        for field in ("allocatable", "capacity"):
            node["status"][field]["cpu"] = "2"  # type: ignore[index]
        cluster.request("POST", "/api/v1/nodes", node)
        added.append(name)

    yield add
    for name in added:
        with contextlib.suppress(urllib.error.HTTPError):
            cluster.request("DELETE", f"/api/v1/nodes/{name}")


def test_unplaceable_green_pods_hold_the_cutover_across_a_restart_until_a_node_joins(
    kube: Client, namespace: str, rig: Rig, small_node: Callable[[str], None]
) -> None:
    small_node(f"{namespace}-a")
    placed = {
        "nodeSelector": {"fleetshift.dev/capacity-test": namespace},
        "tolerations": [
            {
                "key": "fleetshift.dev/capacity-test",
                "operator": "Equal",
                "value": namespace,
                "effect": "NoSchedule",
            }
        ],
        # Four pods fill a 2-CPU node: blue's two and green's two, no more.
        "resources": {"requests": {"cpu": "500m"}},
    }
    base = spec("s3://models/churn/v1", **placed)
    update = spec("s3://models/churn/v2", **placed)
    blue, green = revision_of(base), revision_of(update)
    kube.create(endpoint_manifest(NAME, namespace, base))
    wait_for(lambda: in_service(kube, NAME, namespace, blue), timeout=60, message="baseline")

    set_spec(kube, NAME, namespace, update)
    held = wait_for(
        lambda: (c := capacity_of(kube, namespace)).get("decision") == "Holding" and c,
        timeout=120,
        interval=0.5,
        message="the cutover held for pods that cannot be placed",
    )
    assert held["readyReplicas"] == 2 and held["pendingReplicas"] >= 1, held
    assert "Pending (Unschedulable:" in held["reason"], held
    assert "Insufficient cpu" in held["reason"], held
    # Holding, for a while: the traffic does not move.
    started = time.monotonic()
    while time.monotonic() - started < 5:
        status = status_of(kube, NAME, namespace)
        assert status["step"]["greenPercent"] == 50, status["step"]
        assert status["capacity"]["decision"] == "Holding"
        time.sleep(0.5)
    progressing = next(
        c for c in status_of(kube, NAME, namespace)["conditions"] if c["type"] == "Progressing"
    )
    assert "waiting for capacity" in progressing["message"]
    assert serving_by_revision(kube, namespace, NAME).get(green, 0) <= 2

    # A killed operator resumes the hold from status: same start, same fit.
    before = capacity_of(kube, namespace)
    rig.operator.kill()
    rig.operator.start()
    wait_for(
        lambda: (c := capacity_of(kube, namespace)).get("decidedAt") != before["decidedAt"] and c,
        timeout=60,
        interval=0.5,
        message="the restarted operator deciding again",
    )
    after = capacity_of(kube, namespace)
    assert after["decision"] == "Holding" and after["holdingSince"] == before["holdingSince"]
    assert after["samples"][: len(before["samples"])] == before["samples"]
    assert status_of(kube, NAME, namespace)["step"]["greenPercent"] == 50

    small_node(f"{namespace}-b")  # capacity appears
    status = wait_for(
        lambda: (s := status_of(kube, NAME, namespace))["step"]["greenPercent"] == 100 and s,
        timeout=120,
        interval=0.5,
        message="green at 100% once a node joined",
    )
    record = status["capacity"]
    assert record["decision"] == "Ready" and record["readyReplicas"] >= record["neededReplicas"]
    assert record["holdingSince"] is not None
    decided, holding = parse_timestamp(record["decidedAt"]), parse_timestamp(record["holdingSince"])
    assert decided is not None and holding is not None
    held_seconds = (decided - holding).total_seconds()
    assert held_seconds >= 5, record
    print(
        f"capacity hold: needed {record['neededReplicas']}, Ready {record['readyReplicas']},"
        f" held {held_seconds:.0f}s"
    )
    wait_for(lambda: in_service(kube, NAME, namespace, green), timeout=60, message="green shipped")


@pytest.mark.parametrize(
    ("capacity", "rolling", "expected"),
    [
        (
            {"enabled": True},
            True,
            "capacity applies to blueGreen canary and linear steps; a rolling deployment",
        ),
        ({"headroomPercent": 500}, False, "should be less than or equal to 400"),
        ({"latencyQuantile": 0.3}, False, "should be greater than or equal to 0.5"),
        ({"windowSeconds": 1}, False, "should be greater than or equal to 5"),
        ({"maxLatencySeconds": 0}, False, "should be greater than 0"),
    ],
    ids=["with-rolling", "headroom-over-400", "quantile-below-median", "window-1s", "latency-0"],
)
def test_the_apiserver_refuses_a_capacity_block_it_cannot_honour(
    kube: Client,
    namespace: str,
    endpoint_crd: str,
    capacity: dict[str, Any],
    rolling: bool,
    expected: str,
) -> None:
    built = spec("s3://models/churn/v1")
    built["deploymentConfig"]["capacity"] = capacity
    if rolling:
        built["deploymentConfig"] = {
            "rolling": {"maximumBatchSize": {"type": "InstanceCount", "value": 1}},
            "capacity": capacity,
        }
    with pytest.raises(ApiError) as refused:
        kube.create(endpoint_manifest(NAME, namespace, built))
    assert refused.value.status.code == 422
    assert expected in (refused.value.status.message or ""), refused.value.status.message
