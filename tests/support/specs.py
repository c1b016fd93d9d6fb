"""Endpoint specs for the cluster tests: one builder, and each test file names its own
defaults with ``functools.partial``.

>>> endpoint_spec(wait=3)["deploymentConfig"]["blueGreen"]["trafficRouting"]["canarySize"]
{'type': 'CapacityPercent', 'value': 25}
>>> "terminationWaitSeconds" in endpoint_spec()["deploymentConfig"]["blueGreen"]
False
"""

from __future__ import annotations

from typing import Any

V1 = "s3://models/churn/v1"


def green_5xx_alarm(evaluation_periods: int = 3, datapoints_to_alarm: int = 2) -> dict[str, Any]:
    """The alarm ``green-5xx``: green's 5xx share at 5% or more in ``datapoints_to_alarm``
    of ``evaluation_periods`` two-second periods.

    >>> green_5xx_alarm(2, 1)["template"]["datapointsToAlarm"]
    1
    """
    return {
        "name": "green-5xx",
        "template": {
            "kind": "GreenErrorRate",
            "threshold": 5,
            "periodSeconds": 2,
            "evaluationPeriods": evaluation_periods,
            "datapointsToAlarm": datapoints_to_alarm,
        },
    }


def canary_routing(wait: int, percent: int = 25) -> dict[str, Any]:
    """A ``percent`` canary that bakes ``wait`` seconds per step."""
    return {
        "type": "Canary",
        "canarySize": {"type": "CapacityPercent", "value": percent},
        "waitIntervalSeconds": wait,
    }


def endpoint_spec(
    model: str = V1,
    *,
    replicas: int = 4,
    image: str | None = None,
    routing: dict[str, Any] | None = None,
    wait: int = 4,
    termination: int | None = None,
    timeout: int | None = None,
    auto_rollback: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One variant serving ``model``. The routing defaults to a 25% canary that bakes
    ``wait`` seconds; a field left ``None`` is left out, so the API's default applies."""
    variant: dict[str, Any] = {"name": "main", "model": {"uri": model}, "replicas": replicas}
    if image:
        variant["image"] = image
    blue_green: dict[str, Any] = {"trafficRouting": routing or canary_routing(wait)}
    if termination is not None:
        blue_green["terminationWaitSeconds"] = termination
    if timeout is not None:
        blue_green["maximumExecutionTimeoutSeconds"] = timeout
    config: dict[str, Any] = {"blueGreen": blue_green}
    if auto_rollback is not None:
        config["autoRollback"] = auto_rollback
    return {"variants": [variant], "deploymentConfig": config}
