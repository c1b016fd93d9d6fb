"""Admission and planning never disagree: the apiserver's CEL rules accept a blue/green
policy exactly when the planner's own step arithmetic (planning/steps.py) says its waits
fit in the execution timeout, and step sizes are in range.

Hypothesis draws policies; the real apiserver judges each with a server-side dry run.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta

from fleetshift_operator import api
from fleetshift_operator.planning.steps import calculate_step_count, total_wait_seconds

EndpointResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)

routings = st.one_of(
    st.builds(lambda: {"type": "AllAtOnce"}),
    st.builds(
        lambda n: {"type": "Canary", "canarySize": {"type": "CapacityPercent", "value": n}},
        st.integers(1, 50),
    ),
    st.builds(
        lambda n: {"type": "Linear", "linearStepSize": {"type": "CapacityPercent", "value": n}},
        st.integers(10, 50),
    ),
    st.builds(
        lambda n: {"type": "Linear", "linearStepSize": {"type": "InstanceCount", "value": n}},
        st.integers(1, 3),
    ),
)


def admitted(kube: Client, namespace: str, spec: dict[str, Any]) -> bool:
    name = f"ep-{uuid.uuid4().hex[:8]}"
    try:
        kube.create(
            EndpointResource(metadata=ObjectMeta(name=name, namespace=namespace), spec=spec),
            dry_run=True,
        )
    except ApiError as error:
        if error.status.code != 422:
            raise
        return False
    return True


def test_the_timeout_rule_and_the_planner_count_the_same_steps(
    kube: Client, namespace: str, endpoint_crd: str
) -> None:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        routing=routings,
        replicas=st.integers(2, 6),
        wait=st.integers(0, 300),
        termination=st.integers(0, 300),
        timeout=st.integers(600, 2400),
    )
    def check(
        routing: dict[str, Any], replicas: int, wait: int, termination: int, timeout: int
    ) -> None:
        size = routing.get("linearStepSize", {})
        if size.get("type") == "InstanceCount" and not (
            size["value"] * 10 <= replicas * 5 and size["value"] * 10 >= replicas
        ):
            return  # out of range for this fleet: a different rule, tested elsewhere
        blue_green = {
            "trafficRouting": {**routing, "waitIntervalSeconds": wait},
            "terminationWaitSeconds": termination,
            "maximumExecutionTimeoutSeconds": timeout,
        }
        spec = {
            "variants": [{"name": "main", "model": {"uri": "/m"}, "replicas": replicas}],
            "deploymentConfig": {"blueGreen": blue_green},
        }
        policy = api.BlueGreen.model_validate(blue_green)
        waits = total_wait_seconds(policy, replicas)
        assert waits == (calculate_step_count(policy.trafficRouting, replicas) * wait + termination)
        assert admitted(kube, namespace, spec) == (timeout > waits), (routing, replicas, waits)

    check()
