"""The execution deadline: a green fleet that never becomes Ready rolls back when
``maximumExecutionTimeoutSeconds`` (600 s at the least, as in SageMaker) runs out,
and a first deployment that never becomes Ready fails.

This test waits out the real 600-second deadline; it is marked ``slow``. Its scenario starts
with the first cluster test and the test runs last (``tests/cluster/conftest.py``), so in a
whole run the deadline passes while the other tests run.
"""

from __future__ import annotations

import datetime

import pytest
from lightkube import Client

from cluster.conftest import DEADLINE_SECONDS, DeadlineScenario, parse_stamp
from fleetshift_devcluster.wait import wait_for
from support.operator_process import deployments_of, status_of


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_SECONDS + 300)
def test_green_never_ready_rolls_back_at_the_deadline_and_a_first_deployment_fails(
    kube: Client, deadline_scenario: DeadlineScenario
) -> None:
    namespace, blue, started = (
        deadline_scenario.namespace,
        deadline_scenario.blue,
        deadline_scenario.started,
    )
    deadline = parse_stamp(str(started["deadline"]))
    allowed = deadline - parse_stamp(str(started["deploymentStartedAt"]))
    # stamps are whole seconds: the start rounds down, the deadline up
    assert (
        datetime.timedelta(seconds=DEADLINE_SECONDS)
        <= allowed
        <= datetime.timedelta(seconds=DEADLINE_SECONDS + 1)
    )

    def past_the_deadline() -> bool:
        if (
            not deadline_scenario.operator.process
            or not deadline_scenario.operator.process.running()
        ):
            raise AssertionError(f"the operator exited:\n{deadline_scenario.operator.log_tail()}")
        status = status_of(kube, "churn", namespace)
        return datetime.datetime.now(datetime.UTC) >= deadline or status.get("phase") != "Updating"

    wait_for(past_the_deadline, timeout=DEADLINE_SECONDS + 30, interval=5, message="deadline")
    wait_for(
        lambda: (
            status_of(kube, "churn", namespace).get("phase") == "InService"
            and set(deployments_of(kube, namespace, "churn")) == {blue}
        ),
        timeout=30,
        message="rolled back to blue",
    )
    assert deadline_scenario.green_served == [], "green got traffic before the deadline"
    finished = status_of(kube, "churn", namespace)["lastDeployment"]
    assert finished["outcome"] == "RolledBack"
    assert "maximumExecutionTimeoutSeconds" in finished["reason"]
    assert parse_stamp(finished["finishedAt"]) - deadline < datetime.timedelta(seconds=10)

    wait_for(
        lambda: status_of(kube, "fresh", namespace).get("phase") == "Failed",
        timeout=30,
        message="first deployment failed",
    )
    degraded = {c["type"]: c for c in status_of(kube, "fresh", namespace)["conditions"]}
    assert degraded["Degraded"]["status"] == "True"
