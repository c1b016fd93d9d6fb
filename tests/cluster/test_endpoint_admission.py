"""The real apiserver rejects invalid Endpoints with messages a person understands.

Each case starts from a valid spec, breaks one thing, and expects the
apiserver's answer to contain a specific message: a CEL rule's message, or the
schema's own wording for bounds and types.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta

from fleetshift_operator import api

EndpointResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)

Spec = dict[str, Any]


def valid_spec() -> Spec:
    return {
        "variants": [
            {"name": "main", "model": {"uri": "s3://models/churn/v1.tar.gz"}, "replicas": 4}
        ],
        "deploymentConfig": {
            "blueGreen": {
                "trafficRouting": {
                    "type": "Canary",
                    "canarySize": {"type": "CapacityPercent", "value": 25},
                    "waitIntervalSeconds": 60,
                },
                "terminationWaitSeconds": 120,
                "maximumExecutionTimeoutSeconds": 1200,
            }
        },
    }


def routing(spec: Spec) -> Spec:
    result: Spec = spec["deploymentConfig"]["blueGreen"]["trafficRouting"]
    return result


def blue_green(spec: Spec) -> Spec:
    result: Spec = spec["deploymentConfig"]["blueGreen"]
    return result


def variant(spec: Spec) -> Spec:
    result: Spec = spec["variants"][0]
    return result


def linear(step: Spec, wait: int = 10) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        routing(spec).clear()
        routing(spec).update(
            {"type": "Linear", "linearStepSize": step, "waitIntervalSeconds": wait}
        )

    return change


def rolling(batch: Spec) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        spec["deploymentConfig"] = {"rolling": {"maximumBatchSize": batch}}

    return change


def set_in(getter: Callable[[Spec], Spec], key: str, value: object) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        getter(spec)[key] = value

    return change


def autoscaling(**fields: object) -> Callable[[Spec], None]:
    base: dict[str, object] = {
        "minReplicas": 2,
        "maxReplicas": 8,
        "targetCPUUtilizationPercent": 60,
    }
    base.update(fields)
    present = {k: v for k, v in base.items() if v is not None}
    return set_in(variant, "autoscaling", present)


def pct(value: int) -> Spec:
    return {"type": "CapacityPercent", "value": value}


def count(value: int) -> Spec:
    return {"type": "InstanceCount", "value": value}


def all_at_once_with_waits_equal_to_timeout(spec: Spec) -> None:
    blue_green(spec)["trafficRouting"] = {"type": "AllAtOnce", "waitIntervalSeconds": 300}
    blue_green(spec).update(terminationWaitSeconds=300, maximumExecutionTimeoutSeconds=600)


CANARY_HALF = "canarySize must be at most 50% of the fleet"
LINEAR_RANGE = "linearStepSize must be between 10% and 50% of the fleet"
TIMEOUT = "maximumExecutionTimeoutSeconds must exceed the sum of the waits"

INVALID: list[tuple[str, Callable[[Spec], object], str]] = [
    ("canary 60 percent", set_in(routing, "canarySize", pct(60)), CANARY_HALF),
    ("canary 51 percent", set_in(routing, "canarySize", pct(51)), CANARY_HALF),
    ("canary 3 of 4 instances", set_in(routing, "canarySize", count(3)), CANARY_HALF),
    ("canary without size", lambda s: routing(s).pop("canarySize"), "needs canarySize"),
    ("canary percent over 100", set_in(routing, "canarySize", pct(150)), "between 1 and 100"),
    ("linear 5 percent", linear(pct(5)), LINEAR_RANGE),
    ("linear 60 percent", linear(pct(60)), LINEAR_RANGE),
    ("linear 3 of 4 instances", linear(count(3)), LINEAR_RANGE),
    (
        "linear 1 of 20 instances",
        lambda s: (linear(count(1))(s), variant(s).update(replicas=20)),
        LINEAR_RANGE,
    ),
    (
        "linear without step",
        lambda s: (routing(s).pop("canarySize"), routing(s).update(type="Linear")),
        "needs linearStepSize",
    ),
    (
        "canary size on all-at-once",
        set_in(routing, "type", "AllAtOnce"),
        "canarySize applies only to type Canary",
    ),
    (
        "linear step on a canary",
        set_in(routing, "linearStepSize", pct(20)),
        "linearStepSize applies only to type Linear",
    ),
    ("unknown routing type", set_in(routing, "type", "BlueGreen"), "Unsupported value"),
    (
        "timeout below canary waits",
        lambda s: (
            routing(s).update(waitIntervalSeconds=300),
            blue_green(s).update(terminationWaitSeconds=100, maximumExecutionTimeoutSeconds=700),
        ),
        TIMEOUT,
    ),
    (
        "timeout equal to all-at-once waits",
        all_at_once_with_waits_equal_to_timeout,
        TIMEOUT,
    ),
    (
        "timeout below ten linear waits",
        lambda s: (
            linear(pct(10), wait=60)(s),
            blue_green(s).update(terminationWaitSeconds=0, maximumExecutionTimeoutSeconds=600),
        ),
        TIMEOUT,
    ),
    (
        "timeout below 600",
        set_in(blue_green, "maximumExecutionTimeoutSeconds", 599),
        "greater than or equal to 600",
    ),
    (
        "timeout above 28800",
        set_in(blue_green, "maximumExecutionTimeoutSeconds", 30000),
        "less than or equal to 28800",
    ),
    ("negative wait", set_in(routing, "waitIntervalSeconds", -1), "greater than or equal to 0"),
    (
        "wait over an hour",
        set_in(routing, "waitIntervalSeconds", 3601),
        "less than or equal to 3600",
    ),
    (
        "termination wait over an hour",
        set_in(blue_green, "terminationWaitSeconds", 4000),
        "less than or equal to 3600",
    ),
    (
        "negative termination wait",
        set_in(blue_green, "terminationWaitSeconds", -5),
        "greater than or equal to 0",
    ),
    (
        "blue/green and rolling together",
        lambda s: s["deploymentConfig"].update(rolling={"maximumBatchSize": pct(25)}),
        "set either blueGreen or rolling, not both",
    ),
    ("rolling batch 60 percent", rolling(pct(60)), "maximumBatchSize must be between 5% and 50%"),
    ("rolling batch 3 percent", rolling(pct(3)), "maximumBatchSize must be between 5% and 50%"),
    (
        "rolling batch 3 of 4",
        rolling(count(3)),
        "maximumBatchSize must be at most 50% of the fleet",
    ),
    (
        "rolling without batch size",
        lambda s: s.update(deploymentConfig={"rolling": {"waitIntervalSeconds": 10}}),
        "Required value",
    ),
    ("zero replicas", set_in(variant, "replicas", 0), "greater than or equal to 1"),
    ("negative replicas", set_in(variant, "replicas", -3), "greater than or equal to 1"),
    ("absurd replicas", set_in(variant, "replicas", 5000), "less than or equal to 1000"),
    ("no variants", lambda s: s.update(variants=[]), "should have at least 1 items"),
    (
        "eleven variants",
        lambda s: s.update(variants=[{**variant(s), "name": f"v{i}"} for i in range(11)]),
        "must have at most 10 items",
    ),
    (
        "duplicate variant names",
        lambda s: s.update(variants=[variant(s), copy.deepcopy(variant(s))]),
        "variant names must be unique",
    ),
    ("variant name with a leading dash", set_in(variant, "name", "-main"), "should match"),
    ("variant name with an underscore", set_in(variant, "name", "all_traffic"), "should match"),
    ("variant name too long", set_in(variant, "name", "a" * 64), "may not be more than 63"),
    (
        "variant names differing only in case",
        lambda s: s.update(
            variants=[{**variant(s), "name": n} for n in ("AllTraffic", "alltraffic")]
        ),
        "variant names must differ in more than letter case",
    ),
    (
        "every weight zero",
        lambda s: s.update(variants=[{**variant(s), "name": n, "weight": 0} for n in ("a", "b")]),
        "at least one variant needs a weight above 0",
    ),
    (
        "provisioning timeout past the execution timeout",
        set_in(blue_green, "provisioningTimeoutSeconds", 1300),
        "provisioningTimeoutSeconds must not exceed maximumExecutionTimeoutSeconds",
    ),
    ("model without uri", set_in(variant, "model", {"format": "xgboost"}), "Required value"),
    (
        "model uri with unknown scheme",
        set_in(variant, "model", {"uri": "ftp://models/churn"}),
        "model.uri must start with s3://, http://, https://, file:// or /",
    ),
    (
        "model checksum not sha256",
        set_in(variant, "model", {"uri": "s3://m/x", "sha256": "abc"}),
        "should match",
    ),
    (
        "unknown model format",
        set_in(variant, "model", {"uri": "s3://m/x", "format": "pickle"}),
        "Unsupported value",
    ),
    (
        "gateway router without settings",
        lambda s: s.update(traffic={"router": "GatewayAPI"}),
        "router GatewayAPI needs gatewayAPI.parentRefs",
    ),
    (
        "gateway settings on replicas router",
        lambda s: s.update(
            traffic={"router": "Replicas", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
        ),
        "gatewayAPI applies only to router GatewayAPI",
    ),
    (
        "gateway without parents",
        lambda s: s.update(traffic={"router": "GatewayAPI", "gatewayAPI": {"parentRefs": []}}),
        "should have at least 1 items",
    ),
    ("unknown router", lambda s: s.update(traffic={"router": "Istio"}), "Unsupported value"),
    (
        "autoscaling min above max",
        autoscaling(minReplicas=9, maxReplicas=3),
        "autoscaling.minReplicas must not exceed maxReplicas",
    ),
    (
        "autoscaling without a target",
        autoscaling(targetCPUUtilizationPercent=None),
        "needs targetCPUUtilizationPercent and/or targetInvocationsPerReplica",
    ),
    (
        "autoscaling cpu over 100",
        autoscaling(targetCPUUtilizationPercent=150),
        "less than or equal to 100",
    ),
    (
        "autoscaling zero invocations target",
        autoscaling(targetInvocationsPerReplica=0),
        "greater than 0",
    ),
    ("size value zero", set_in(routing, "canarySize", pct(0)), "greater than or equal to 1"),
    (
        "unknown size type",
        set_in(routing, "canarySize", {"type": "Percent", "value": 10}),
        "Unsupported value",
    ),
    ("negative weight", set_in(variant, "weight", -1), "greater than or equal to 0"),
    (
        "resource quantity that is not one",
        set_in(variant, "resources", {"requests": {"cpu": "lots"}}),
        "should match",
    ),
    (
        "toleration with unknown effect",
        set_in(variant, "tolerations", [{"key": "gpu", "effect": "Sometimes"}]),
        "Unsupported value",
    ),
]


def alarms(*entries: dict[str, Any], **policy: Any) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        spec["deploymentConfig"]["autoRollback"] = {"alarms": list(entries), **policy}

    return change


ERRORS = {"name": "errors", "template": {"kind": "GreenErrorRate", "threshold": 5}}

INVALID += [
    ("alarm list empty", alarms(), "should have at least 1 items"),
    (
        "eleven alarms",
        alarms(*[{**ERRORS, "name": f"a{i}"} for i in range(11)]),
        "must have at most 10 items",
    ),
    ("duplicate alarm names", alarms(ERRORS, ERRORS), "alarm names must be unique"),
    (
        "alarm of two kinds",
        alarms({**ERRORS, "prometheusRule": {"alertName": "X"}}),
        "an alarm needs exactly one of prometheusRule, query, template, comparison or drift",
    ),
    (
        "alarm of no kind",
        alarms({"name": "empty"}),
        "an alarm needs exactly one of prometheusRule, query, template, comparison or drift",
    ),
    (
        "a disruption budget that is neither a count nor a percentage",
        set_in(variant, "disruptionBudget", {"maxUnavailable": "lots"}),
        "should match",
    ),
    (
        "a negative disruption budget",
        set_in(variant, "disruptionBudget", {"maxUnavailable": -1}),
        "greater than or equal to 0",
    ),
    (
        "only shadow variants",
        set_in(variant, "shadow", {"samplingPercent": 50}),
        "at least one variant that is not a shadow must take the traffic",
    ),
    (
        "a shadow sampling nothing",
        set_in(variant, "shadow", {"samplingPercent": 0}),
        "greater than or equal to 1",
    ),
    (
        "a checksum on a multi-model prefix",
        set_in(
            variant,
            "model",
            {"uri": "s3://models/houses/", "sha256": "a" * 64, "multiModel": {}},
        ),
        "a multiModel prefix holds many, so it takes none",
    ),
    (
        "a multi-model budget under 16 MiB",
        set_in(
            variant, "model", {"uri": "s3://models/houses/", "multiModel": {"memoryBudgetMiB": 1}}
        ),
        "greater than or equal to 16",
    ),
    (
        "slow-request comparison without a threshold",
        alarms({"name": "slow", "comparison": {"metric": "SlowRequests"}}),
        "SlowRequests needs latencyThresholdSeconds",
    ),
    (
        "latency threshold between the runtime's buckets",
        alarms(
            {
                "name": "slow",
                "comparison": {"metric": "SlowRequests", "latencyThresholdSeconds": 0.12},
            }
        ),
        "latencyThresholdSeconds must be one of the runtime's latency buckets",
    ),
    (
        "comparison with no margin",
        alarms({"name": "worse", "comparison": {"marginPercent": 0}}),
        "greater than 0",
    ),
    (
        "data capture to an http address",
        set_in(variant, "dataCapture", {"destination": "http://bucket/x"}),
        "should match",
    ),
    (
        "data capture of nothing",
        set_in(
            variant,
            "dataCapture",
            {
                "destination": "s3://captures/churn",
                "captureRequest": False,
                "captureResponse": False,
            },
        ),
        "data capture needs captureRequest or captureResponse",
    ),
    (
        "drift with no threshold",
        alarms({"name": "moved", "drift": {"threshold": 0}}),
        "greater than 0",
    ),
    (
        "drift judged on no predictions",
        alarms({"name": "moved", "drift": {"minSamples": 0}}),
        "greater than or equal to 1",
    ),
    (
        "more datapoints than periods",
        alarms(
            {
                "name": "q",
                "query": {
                    "query": "up",
                    "threshold": 1,
                    "evaluationPeriods": 2,
                    "datapointsToAlarm": 3,
                },
            }
        ),
        "datapointsToAlarm must not exceed evaluationPeriods",
    ),
    (
        "unknown comparison",
        alarms({"name": "q", "query": {"query": "up", "threshold": 1, "comparison": "=="}}),
        "Unsupported value",
    ),
    (
        "unknown missing-data treatment",
        alarms({"name": "q", "query": {"query": "up", "threshold": 1, "treatMissingData": "zero"}}),
        "Unsupported value",
    ),
    (
        "query without threshold",
        alarms({"name": "q", "query": {"query": "up"}}),
        "Required value",
    ),
    (
        "unknown template",
        alarms({"name": "t", "template": {"kind": "GreenSadness", "threshold": 1}}),
        "Unsupported value",
    ),
    (
        "zero template threshold",
        alarms({"name": "t", "template": {"kind": "GreenErrorRate", "threshold": 0}}),
        "greater than 0",
    ),
    (
        "poll interval over a minute",
        alarms(ERRORS, pollIntervalSeconds=120),
        "less than or equal to 60",
    ),
    (
        "basic auth without a password",
        alarms(
            ERRORS,
            prometheus={
                "url": "https://prometheus.example:9090",
                "basicAuthUsernameSecret": {"name": "prom", "key": "user"},
            },
        ),
        "basic auth needs both basicAuthUsernameSecret and basicAuthPasswordSecret",
    ),
    (
        "prometheus url not http",
        alarms(ERRORS, prometheus={"url": "ftp://prometheus"}),
        "should match",
    ),
    (
        "unknown inconclusive action",
        alarms(ERRORS, onInconclusive={"action": "Shrug"}),
        "Unsupported value",
    ),
]


def submit(kube: Client, namespace: str, spec: Spec) -> None:
    name = f"ep-{uuid.uuid4().hex[:8]}"
    kube.create(EndpointResource(metadata=ObjectMeta(name=name, namespace=namespace), spec=spec))


def test_there_are_at_least_forty_invalid_cases() -> None:
    assert len(INVALID) >= 55


def test_a_valid_endpoint_is_accepted(kube: Client, namespace: str, endpoint_crd: str) -> None:
    submit(kube, namespace, valid_spec())

    listed = list(kube.list(EndpointResource, namespace=namespace))
    assert len(listed) == 1


def test_env_from_secrets_config_maps_and_fields_is_kept_as_written(
    kube: Client, namespace: str, endpoint_crd: str
) -> None:
    env = [
        {"name": "PLAIN", "value": "1"},
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "store", "key": "id"}}},
        {
            "name": "MODE",
            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode", "optional": True}},
        },
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    spec = valid_spec()
    variant(spec)["env"] = env
    name = f"ep-{uuid.uuid4().hex[:8]}"
    kube.create(EndpointResource(metadata=ObjectMeta(name=name, namespace=namespace), spec=spec))

    stored = kube.get(EndpointResource, name, namespace=namespace)
    assert stored.spec["variants"][0]["env"] == env


SMALLEST: Spec = {"variants": [{"name": "AllTraffic", "model": {"uri": "s3://models/m.tar.gz"}}]}
"""A variant name and a model URI, nothing else (SageMaker's usual variant name)."""

OPTIONAL_BLOCKS: list[tuple[str, Spec]] = [
    ("the smallest spec", {}),
    ("an empty deploymentConfig", {"deploymentConfig": {}}),
    ("an empty blueGreen", {"deploymentConfig": {"blueGreen": {}}}),
    (
        "blueGreen with an empty trafficRouting",
        {"deploymentConfig": {"blueGreen": {"trafficRouting": {}}}},
    ),
    (
        "a canary alone",
        {
            "deploymentConfig": {
                "blueGreen": {
                    "trafficRouting": {
                        "type": "Canary",
                        "canarySize": {"type": "CapacityPercent", "value": 10},
                    }
                }
            }
        },
    ),
    (
        "a termination wait alone",
        {"deploymentConfig": {"blueGreen": {"terminationWaitSeconds": 60}}},
    ),
    (
        "rolling alone",
        {
            "deploymentConfig": {
                "rolling": {"maximumBatchSize": {"type": "CapacityPercent", "value": 50}}
            }
        },
    ),
    ("autoRollback alone", {"deploymentConfig": {"autoRollback": {"alarms": [ERRORS]}}}),
    (
        "a comparison alarm with its defaults",
        {"deploymentConfig": {"autoRollback": {"alarms": [{"name": "w", "comparison": {}}]}}},
    ),
    (
        "data capture to a claim, CSV only",
        {
            "variants": [
                {
                    "name": "main",
                    "model": {"uri": "s3://models/churn/v1"},
                    "dataCapture": {
                        "destination": "pvc://captures/churn",
                        "samplingPercent": 5,
                        "contentTypes": ["text/csv"],
                    },
                }
            ]
        },
    ),
    (
        "a drift alarm with its defaults",
        {"deploymentConfig": {"autoRollback": {"alarms": [{"name": "d", "drift": {}}]}}},
    ),
    (
        "a slow-request comparison",
        {
            "deploymentConfig": {
                "autoRollback": {
                    "alarms": [
                        {
                            "name": "slow",
                            "comparison": {
                                "metric": "SlowRequests",
                                "latencyThresholdSeconds": 0.1,
                            },
                        }
                    ]
                }
            }
        },
    ),
    (
        "a disruption budget as a percentage",
        {
            "variants": [
                {
                    "name": "AllTraffic",
                    "model": {"uri": "s3://m/1"},
                    "disruptionBudget": {"maxUnavailable": "25%"},
                }
            ]
        },
    ),
    (
        "a multi-model prefix",
        {"variants": [{"name": "AllTraffic", "model": {"uri": "s3://m/", "multiModel": {}}}]},
    ),
    ("an empty traffic block", {"traffic": {}}),
    ("the Replicas router named", {"traffic": {"router": "Replicas"}}),
    (
        "the GatewayAPI router",
        {"traffic": {"router": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}},
    ),
]


@pytest.mark.parametrize("extra", [pytest.param(extra, id=case) for case, extra in OPTIONAL_BLOCKS])
def test_the_smallest_endpoint_and_each_optional_block_alone_are_accepted(
    kube: Client, namespace: str, endpoint_crd: str, extra: Spec
) -> None:
    submit(kube, namespace, {**copy.deepcopy(SMALLEST), **copy.deepcopy(extra)})

    assert len(list(kube.list(EndpointResource, namespace=namespace))) == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [pytest.param(change, expected, id=case) for case, change, expected in INVALID],
)
def test_invalid_endpoint_is_rejected_with_a_clear_message(
    kube: Client,
    namespace: str,
    endpoint_crd: str,
    change: Callable[[Spec], object],
    expected: str,
) -> None:
    spec = valid_spec()
    change(spec)

    with pytest.raises(ApiError) as rejected:
        submit(kube, namespace, spec)

    assert rejected.value.status.code == 422
    assert expected in (rejected.value.status.message or ""), rejected.value.status.message
