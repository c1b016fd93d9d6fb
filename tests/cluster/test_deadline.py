"""The execution deadline: a green fleet that never becomes Ready rolls back when
``maximumExecutionTimeoutSeconds`` (600 s at the least, as in SageMaker) runs out,
and a first deployment that never becomes Ready fails.

This test waits out the real 600-second deadline; it is marked ``slow``.
"""

from __future__ import annotations

import datetime
import functools

import pytest
from lightkube import Client

from fleetshift_devcluster.cluster import UNREADY_IMAGE
from fleetshift_devcluster.wait import wait_for
from support.operator_process import (
    OperatorProcess,
    deployments_of,
    endpoint_manifest,
    serving_by_revision,
    set_spec,
    status_of,
)
from support.specs import endpoint_spec

TIMEOUT = 600


make_spec = functools.partial(
    endpoint_spec,
    replicas=2,
    routing={"type": "AllAtOnce", "waitIntervalSeconds": 5},
    timeout=TIMEOUT,
)


def parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT + 300)
def test_green_never_ready_rolls_back_at_the_deadline_and_a_first_deployment_fails(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    kube.create(endpoint_manifest("churn", namespace, make_spec("s3://models/churn/v1")))
    wait_for(
        lambda: status_of(kube, "churn", namespace).get("phase") == "InService",
        timeout=60,
        message="baseline InService",
    )
    blue = status_of(kube, "churn", namespace)["activeRevision"]
    set_spec(kube, "churn", namespace, make_spec("s3://models/churn/v2", image=UNREADY_IMAGE))
    kube.create(
        endpoint_manifest(
            "fresh", namespace, make_spec("s3://models/fresh/v1", image=UNREADY_IMAGE)
        )
    )
    wait_for(
        lambda: (
            status_of(kube, "churn", namespace).get("deadline")
            and status_of(kube, "churn", namespace).get("phase") == "Updating"
        ),
        timeout=30,
        message="deployment started with a deadline",
    )
    started = status_of(kube, "churn", namespace)
    deadline = parse(started["deadline"])
    allowed = deadline - parse(started["deploymentStartedAt"])
    # stamps are whole seconds: the start rounds down, the deadline up
    assert datetime.timedelta(seconds=TIMEOUT) <= allowed <= datetime.timedelta(seconds=TIMEOUT + 1)

    def waiting_safely() -> bool:
        status = status_of(kube, "churn", namespace)
        assert serving_by_revision(kube, namespace, "churn") == {blue: 2}, "green got traffic"
        return datetime.datetime.now(datetime.UTC) >= deadline or status.get("phase") != "Updating"

    wait_for(waiting_safely, timeout=TIMEOUT + 30, interval=5, message="deadline reached")
    wait_for(
        lambda: (
            status_of(kube, "churn", namespace).get("phase") == "InService"
            and set(deployments_of(kube, namespace, "churn")) == {blue}
        ),
        timeout=30,
        message="rolled back to blue",
    )
    finished = status_of(kube, "churn", namespace)["lastDeployment"]
    assert finished["outcome"] == "RolledBack"
    assert "maximumExecutionTimeoutSeconds" in finished["reason"]
    assert parse(finished["finishedAt"]) - deadline < datetime.timedelta(seconds=10)

    wait_for(
        lambda: status_of(kube, "fresh", namespace).get("phase") == "Failed",
        timeout=30,
        message="first deployment failed",
    )
    degraded = {c["type"]: c for c in status_of(kube, "fresh", namespace)["conditions"]}
    assert degraded["Degraded"]["status"] == "True"
