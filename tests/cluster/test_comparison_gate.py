"""The comparison alarm on a real Prometheus: a canary holds while its traffic is too thin
to judge, ships once the counts show green is not worse than blue, and rolls back a
green that fails more often or answers slower.

The counts come from the traffic simulator (``support.traffic``), which spreads its
requests over the Service's Ready endpoints and exports them under the runtime's metric
names, so each fleet's numbers are its share of the real routing.
"""

from __future__ import annotations

from typing import Any

import pytest
from lightkube import Client

from fleetshift_devcluster.wait import wait_for
from support.operator_process import (
    endpoint_manifest,
    revision_of,
    rolled_back_to,
    set_spec,
    status_of,
)
from support.rig import Rig, rig_fixture
from support.specs import endpoint_spec
from support.traffic import Behaviour

NAME = "churn"
REQUESTS_PER_SECOND = 400
HALF = {"type": "Canary", "canarySize": {"type": "CapacityPercent", "value": 50}}


gate = rig_fixture("gate", NAME, requests_per_second=REQUESTS_PER_SECOND)


def spec(model: str, comparison: dict[str, Any]) -> dict[str, Any]:
    alarms = [{"name": "not-worse", "comparison": comparison}]
    return endpoint_spec(
        model,
        routing={**HALF, "waitIntervalSeconds": 2},
        termination=0,
        timeout=1800,
        auto_rollback={"alarms": alarms, "pollIntervalSeconds": 1},
    )


def base_and_update(comparison: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The baseline's spec and its update's, both judged by ``comparison``."""
    return spec("s3://models/churn/v1", comparison), spec("s3://models/churn/v2", comparison)


def create_baseline(kube: Client, namespace: str, base: dict[str, Any]) -> None:
    """Create the Endpoint from ``base`` and wait for it InService."""
    kube.create(endpoint_manifest(NAME, namespace, base))
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
        timeout=60,
        message="baseline InService",
    )


def verdicts_seen(kube: Client, namespace: str, seen: list[tuple[str, str]]) -> dict[str, Any]:
    """The status, after noting the comparison's verdict and evidence in ``seen``."""
    status = status_of(kube, NAME, namespace)
    for alarm in status.get("alarms") or []:
        pair = (alarm["verdict"], alarm.get("reason", ""))
        if not seen or seen[-1] != pair:
            seen.append(pair)
    return status


def test_a_canary_holds_on_thin_traffic_then_ships_when_green_is_not_worse(
    kube: Client, namespace: str, gate: Rig
) -> None:
    errors = {"metric": "ErrorRate", "marginPercent": 5}
    base, update = base_and_update(errors)
    blue, green = revision_of(base), revision_of(update)
    gate.traffic.set(blue, Behaviour(error_fraction=0.05))
    gate.traffic.set(green, Behaviour(error_fraction=0.05))
    create_baseline(kube, namespace, base)

    set_spec(kube, NAME, namespace, update)
    seen: list[tuple[str, str]] = []
    wait_for(
        lambda: (
            (s := verdicts_seen(kube, namespace, seen)).get("phase") == "InService"
            and s.get("activeRevision") == green
        ),
        timeout=180,
        interval=0.5,
        message="green shipped",
    )

    verdicts = [verdict for verdict, _ in seen]
    assert "Inconclusive" in verdicts, seen
    assert verdicts.index("Inconclusive") < verdicts.index("Healthy"), seen
    assert "Breaching" not in verdicts, seen
    thin = next(reason for verdict, reason in seen if verdict == "Inconclusive")
    assert "too little traffic" in thin
    healthy = next(reason for verdict, reason in seen if verdict == "Healthy")
    assert "not worse" in healthy and "margin 5" in healthy
    assert status_of(kube, NAME, namespace)["lastDeployment"]["outcome"] == "Succeeded"


@pytest.mark.parametrize(
    ("comparison", "worse"),
    [
        ({"metric": "ErrorRate", "marginPercent": 2}, Behaviour(error_fraction=0.3)),
        (
            {"metric": "SlowRequests", "latencyThresholdSeconds": 0.1, "marginPercent": 2},
            Behaviour(latency_seconds=0.25),
        ),
    ],
    ids=["more-errors", "slower"],
)
def test_a_green_worse_than_blue_is_rolled_back_by_the_comparison(
    kube: Client, namespace: str, gate: Rig, comparison: dict[str, Any], worse: Behaviour
) -> None:
    base, update = base_and_update(comparison)
    blue, green = revision_of(base), revision_of(update)
    gate.traffic.set(green, worse)
    create_baseline(kube, namespace, base)

    set_spec(kube, NAME, namespace, update)

    wait_for(
        lambda: rolled_back_to(kube, NAME, namespace, blue),
        timeout=120,
        message="rolled back to blue",
    )
    cause = status_of(kube, NAME, namespace)["rollbackCause"]
    assert cause["name"] == "not-worse" and cause["verdict"] == "Breaching"
    assert cause["reason"].endswith(": worse")
    assert gate.traffic.served.get(green, 0) > 0


def test_an_operator_killed_mid_bake_resumes_the_comparison_from_the_deployments_start(
    kube: Client, namespace: str, gate: Rig
) -> None:
    comparison = {"metric": "ErrorRate", "marginPercent": 2}
    base, update = base_and_update(comparison)
    blue, green = revision_of(base), revision_of(update)
    gate.traffic.set(blue, Behaviour(error_fraction=0.02))
    gate.traffic.set(green, Behaviour(error_fraction=0.15))
    create_baseline(kube, namespace, base)
    set_spec(kube, NAME, namespace, update)
    baking = wait_for(
        lambda: (
            (s := status_of(kube, NAME, namespace)).get("step", {}).get("stage") == "Baking" and s
        ),
        timeout=60,
        interval=0.1,
        message="the first step baking",
    )
    gate.operator.kill()  # SIGKILL: no chance to write anything
    started = baking["deploymentStartedAt"]
    served_while_down = gate.traffic.served.get(green, 0)
    wait_for(
        lambda: gate.traffic.served.get(green, 0) > served_while_down + 50,
        timeout=60,
        message="green serving while the operator is down",
    )
    gate.operator.start()

    seen: list[tuple[str, str]] = []

    def rolled_back() -> bool:
        status = verdicts_seen(kube, namespace, seen)
        return (
            status.get("activeRevision") == blue
            and (status.get("lastDeployment") or {}).get("outcome") == "RolledBack"
        )

    wait_for(rolled_back, timeout=120, interval=0.5, message="rolled back after the restart")
    assert "Healthy" not in [verdict for verdict, _ in seen], seen
    last = status_of(kube, NAME, namespace)["lastDeployment"]
    assert last["startedAt"] == started, "the deployment resumed; it did not start over"
    cause = status_of(kube, NAME, namespace)["rollbackCause"]
    assert cause["name"] == "not-worse" and cause["verdict"] == "Breaching"
