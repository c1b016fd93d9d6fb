"""The Argo CD health check on the objects the real operator wrote, state by state.

A watch records every version of the Endpoint the API server stored, so a phase
the operator holds for one reconcile (``RollingBack``) is judged too. Each object
is evaluated by ``health.lua`` in a real Lua 5.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lightkube import Client

from cli.argocd_health import evaluate_health
from cli.helpers import (
    NAME,
    create_in_service,
    recorded_endpoints,
    spec_with,
    start_slow_canary,
    update_until_active,
)
from fleetshift_devcluster.cluster import CRASHLOOP_IMAGE
from fleetshift_devcluster.wait import wait_for
from support.operator_process import (
    OperatorProcess,
    annotate,
    endpoint_manifest,
    make_unready,
    read_endpoint,
    revision_of,
    set_spec,
    status_of,
)

pytestmark = pytest.mark.cluster


def health_when(seen: list[dict[str, Any]], phase: str, **status: Any) -> list[tuple[str, str]]:
    """(status, message) of every recorded version in ``phase`` with these status fields."""
    return [
        (h["status"], h["message"])
        for endpoint in list(seen)
        if (endpoint.get("status") or {}).get("phase") == phase
        and all((endpoint.get("status") or {}).get(k) == v for k, v in status.items())
        for h in [evaluate_health(endpoint)]
    ]


def test_a_canary_is_progressing_then_healthy(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    with recorded_endpoints(kubeconfig, namespace) as seen:
        blue = create_in_service(kube, namespace, spec_with())
        green = update_until_active(
            kube, namespace, spec_with("s3://models/churn/v2", wait=2, termination=1)
        )
        final = read_endpoint(kube, NAME, namespace)
        wait_for(lambda: seen[-1] == final, timeout=10, message="the watch caught up")

    creating = health_when(seen, "Creating")
    updating = health_when(seen, "Updating")
    assert creating and {s for s, _ in creating} == {"Progressing"}
    assert {s for s, _ in updating} == {"Progressing"}
    messages = {m for _, m in updating}
    assert f"Deploying {green} over {blue}: Baking step 1/2, green 25%" in messages
    assert f"Deploying {green} over {blue}: TerminationWait step 2/2, green 100%" in messages
    assert evaluate_health(final) == {"status": "Healthy", "message": f"Revision {green} serving"}


def test_a_paused_rollout_is_suspended_until_resumed(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    create_in_service(kube, namespace, spec_with())
    annotate(kube, NAME, namespace, {"fleetshift.dev/paused": "true"})
    update = spec_with("s3://models/churn/v2", wait=1, termination=1)
    set_spec(kube, NAME, namespace, update)

    paused = wait_for(
        lambda: (
            (e := read_endpoint(kube, NAME, namespace))["status"].get("paused")
            and e["status"].get("phase") == "Updating"
            and e
        ),
        timeout=30,
        message="paused mid-deployment",
    )

    health = evaluate_health(paused)
    assert health["status"] == "Suspended"
    assert health["message"].startswith(f"Rollout of {revision_of(update)} paused at ")
    annotate(kube, NAME, namespace, {"fleetshift.dev/paused": None})
    wait_for(
        lambda: evaluate_health(read_endpoint(kube, NAME, namespace))["status"] == "Healthy",
        timeout=60,
        message="Healthy after the resumed rollout",
    )


def test_an_abort_is_degraded_while_rolling_back_and_after(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    with recorded_endpoints(kubeconfig, namespace) as seen:
        blue = create_in_service(kube, namespace, spec_with())
        green = start_slow_canary(kube, namespace)
        annotate(kube, NAME, namespace, {"fleetshift.dev/abort": "argocd-test"})
        rolled_back = wait_for(
            lambda: (
                (e := read_endpoint(kube, NAME, namespace))["status"].get("phase") == "InService"
                and e["status"].get("rolledBackRevision") == green
                and e
            ),
            timeout=30,
            message="rolled back to blue",
        )
        wait_for(lambda: seen[-1] == rolled_back, timeout=10, message="the watch caught up")

    rolling_back = health_when(seen, "RollingBack")
    assert rolling_back, "the watch recorded the RollingBack status"
    assert set(rolling_back) == {
        ("Degraded", f"Rolling back {green} to {blue}: aborted on request")
    }
    assert evaluate_health(rolled_back) == {
        "status": "Degraded",
        "message": f"revision {green} was rolledback: aborted on request; change the spec or"
        " request a retry",
    }


def test_a_crash_looping_first_deployment_is_degraded(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    kube.create(endpoint_manifest(NAME, namespace, spec_with(image=CRASHLOOP_IMAGE)))

    failed = wait_for(
        lambda: (
            (e := read_endpoint(kube, NAME, namespace)).get("status", {}).get("phase") == "Failed"
            and e
        ),
        timeout=60,
        message="Failed",
    )

    health = evaluate_health(failed)
    assert health["status"] == "Degraded"
    assert "CrashLoopBackOff" in health["message"]


def test_a_blocked_rollback_is_degraded(
    kube: Client, kubeconfig: Path, namespace: str, operator_process: OperatorProcess
) -> None:
    blue = create_in_service(kube, namespace, spec_with())
    green = start_slow_canary(kube, namespace)
    make_unready(kube, namespace, blue)
    wait_for(
        lambda: status_of(kube, NAME, namespace)["fleets"]["blue"]["readyReplicas"] == 0,
        timeout=30,
        message="blue not Ready",
    )

    annotate(kube, NAME, namespace, {"fleetshift.dev/abort": "argocd-test"})

    blocked = wait_for(
        lambda: (
            (e := read_endpoint(kube, NAME, namespace))["status"].get("phase")
            == "UpdateRollbackFailed"
            and e
        ),
        timeout=30,
        message="UpdateRollbackFailed",
    )
    health = evaluate_health(blocked)
    assert health["status"] == "Degraded"
    assert health["message"] == (
        f"Rollback of {green} to {blue} is blocked until blue is Ready again: aborted on request"
    )
