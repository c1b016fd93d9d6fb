"""Guardrails that bite: alarms on a real Prometheus roll deployments back by themselves.

Prometheus (Debian's) scrapes invocation metrics labelled as the runtime's are; they
come from a traffic simulator that follows the Service's EndpointSlices (see
``support.traffic``), so the green fleet's numbers are its share of real routing.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from fleetshift_devcluster.cluster import LocalCluster
from fleetshift_devcluster.prometheus import LocalPrometheus
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.alarms.base import AlarmContext
from fleetshift_operator.alarms.templates import template_query
from fleetshift_operator.api import TemplateAlarm
from support.operator_process import (
    OperatorProcess,
    deployments_of,
    endpoint_manifest,
    revision_of,
    rolled_back_to,
    serving_by_revision,
    set_spec,
    status_of,
)
from support.rig import Rig, rig_fixture, scrape_config
from support.runtime_kit import make_tls_files
from support.specs import endpoint_spec
from support.traffic import Behaviour, TrafficSimulator

NAME = "churn"
POLL = 2
ERROR_RATE = {"kind": "GreenErrorRate", "threshold": 5, "periodSeconds": 2, "evaluationPeriods": 1}
RULES = {
    "groups": [
        {
            "name": "fleetshift",
            "rules": [
                {
                    "alert": "FleetshiftRevision5xx",
                    "expr": "sum by (namespace, endpoint, revision) "
                    "(rate(fleetshift_invocation_5xx_errors_total[5s])) > 0",
                }
            ],
        }
    ]
}


stack = rig_fixture("stack", NAME, rules=RULES)


def make_spec(
    model: str,
    alarms: list[dict[str, Any]],
    *,
    routing: dict[str, Any] | None = None,
    termination: int = 0,
    on_inconclusive: dict[str, Any] | None = None,
) -> dict[str, Any]:
    auto: dict[str, Any] = {"alarms": alarms, "pollIntervalSeconds": POLL}
    if on_inconclusive:
        auto["onInconclusive"] = on_inconclusive
    return endpoint_spec(
        model,
        routing=routing,
        wait=60,
        termination=termination,
        timeout=1800,
        auto_rollback=auto,
    )


def start(kube: Client, namespace: str, alarms: list[dict[str, Any]], **options: Any) -> str:
    base = make_spec("s3://models/churn/v1", alarms, **options)
    kube.create(endpoint_manifest(NAME, namespace, base))
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
        timeout=60,
        message="baseline InService",
    )
    return revision_of(base)


def outcome(kube: Client, namespace: str) -> dict[str, Any]:
    return status_of(kube, NAME, namespace).get("lastDeployment") or {}


def test_canary_rolls_back_when_5xx_alarm_fires(kube: Client, namespace: str, stack: Rig) -> None:
    alarms = [{"name": "green-5xx", "template": ERROR_RATE}]
    blue = start(kube, namespace, alarms)
    update = make_spec("s3://models/churn/v2", alarms)
    green = revision_of(update)
    stack.traffic.set(green, Behaviour(error_fraction=1.0))
    set_spec(kube, NAME, namespace, update)
    query = AlarmContext(namespace, NAME, "main", green, blue).render(
        template_query(TemplateAlarm.model_validate(ERROR_RATE)).query
    )

    def breach_visible() -> float | None:
        value = stack.query(query)
        return time.monotonic() if value is not None and value >= 5 else None

    visible_at = wait_for(breach_visible, timeout=60, interval=0.1, message="breach in Prometheus")
    back_at = wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {blue: 4} and time.monotonic(),
        timeout=30,
        interval=0.1,
        message="traffic back on blue",
    )

    assert back_at - visible_at <= POLL + 2, f"took {back_at - visible_at:.1f}s"
    wait_for(lambda: rolled_back_to(kube, NAME, namespace, blue), timeout=30, message="rolled back")
    finished = outcome(kube, namespace)
    assert finished["outcome"] == "RolledBack"
    assert "green-5xx" in finished["reason"]
    cause = status_of(kube, NAME, namespace)["rollbackCause"]
    assert cause["name"] == "green-5xx" and cause["verdict"] == "Breaching"
    assert cause["value"] >= 5
    assert stack.traffic.served.get(green, 0) > 0


def test_latency_alarm_breaches_and_rolls_back(kube: Client, namespace: str, stack: Rig) -> None:
    latency = {
        "kind": "GreenLatencyP99",
        "threshold": 200,
        "periodSeconds": 2,
        "evaluationPeriods": 2,
    }
    alarms = [{"name": "green-p99", "template": latency}]
    blue = start(kube, namespace, alarms)
    update = make_spec("s3://models/churn/v2", alarms)
    stack.traffic.set(revision_of(update), Behaviour(latency_seconds=0.6))

    set_spec(kube, NAME, namespace, update)

    wait_for(lambda: rolled_back_to(kube, NAME, namespace, blue), timeout=60, message="rolled back")
    assert "green-p99" in outcome(kube, namespace)["reason"]
    assert status_of(kube, NAME, namespace)["rollbackCause"]["value"] >= 200


def test_named_alerting_rule_firing_rolls_back(kube: Client, namespace: str, stack: Rig) -> None:
    rule = {
        "alertName": "FleetshiftRevision5xx",
        "matchers": {
            "namespace": "${namespace}",
            "endpoint": "${endpoint}",
            "revision": "${revision}",
        },
    }
    alarms = [{"name": "rule", "prometheusRule": rule}]
    blue = start(kube, namespace, alarms)
    update = make_spec("s3://models/churn/v2", alarms)
    stack.traffic.set(revision_of(update), Behaviour(error_fraction=0.5))

    set_spec(kube, NAME, namespace, update)

    wait_for(lambda: rolled_back_to(kube, NAME, namespace, blue), timeout=60, message="rolled back")
    assert "FleetshiftRevision5xx firing" in outcome(kube, namespace)["reason"]


def test_healthy_linear_rollout_promotes_step_by_step(
    kube: Client, namespace: str, stack: Rig
) -> None:
    alarms = [
        {"name": "green-5xx", "template": ERROR_RATE},
        {"name": "worse-than-blue", "template": {**ERROR_RATE, "kind": "GreenWorseThanBlue"}},
    ]
    routing = {
        "type": "Linear",
        "linearStepSize": {"type": "CapacityPercent", "value": 50},
        "waitIntervalSeconds": 6,
    }
    blue = start(kube, namespace, alarms, routing=routing)
    update = make_spec("s3://models/churn/v2", alarms, routing=routing, termination=4)
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {blue: 4, green: 4},
        timeout=60,
        message="first step",
    )
    wait_for(
        lambda: (
            [a["verdict"] for a in status_of(kube, NAME, namespace).get("alarms", [])]
            == ["Healthy", "Healthy"]
        ),
        timeout=30,
        message="alarms Healthy",
    )
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("activeRevision") == green,
        timeout=90,
        message="promoted",
    )
    assert outcome(kube, namespace)["outcome"] == "Succeeded"


def test_prometheus_down_mid_bake_holds_then_the_rollout_continues(
    kube: Client, namespace: str, stack: Rig
) -> None:
    alarms = [{"name": "green-5xx", "template": ERROR_RATE}]
    routing = {
        "type": "Canary",
        "canarySize": {"type": "CapacityPercent", "value": 25},
        "waitIntervalSeconds": 6,
    }
    start(kube, namespace, alarms, routing=routing)
    update = make_spec("s3://models/churn/v2", alarms, routing=routing)
    green = revision_of(update)
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: (status_of(kube, NAME, namespace).get("step") or {}).get("index") == 1,
        timeout=60,
        message="canary step",
    )

    stack.prometheus.stop()

    def says_why() -> bool:
        alarms_now = status_of(kube, NAME, namespace).get("alarms", [])
        return bool(alarms_now) and "unreachable" in alarms_now[0]["reason"]

    wait_for(says_why, timeout=30, message="status says Prometheus is unreachable")
    held_until = time.monotonic() + 12
    while time.monotonic() < held_until:
        status = status_of(kube, NAME, namespace)
        assert status["step"]["index"] == 1, "promoted without a Healthy evaluation"
        assert status["alarms"][0]["verdict"] == "Inconclusive"
        time.sleep(1)

    stack.prometheus.restart()

    wait_for(
        lambda: status_of(kube, NAME, namespace).get("activeRevision") == green,
        timeout=90,
        message="continued to success",
    )


def test_breach_during_termination_wait_rolls_back(
    kube: Client, namespace: str, stack: Rig
) -> None:
    alarms = [{"name": "green-5xx", "template": ERROR_RATE}]
    routing = {"type": "AllAtOnce", "waitIntervalSeconds": 4}
    blue = start(kube, namespace, alarms, routing=routing, termination=120)
    update = make_spec("s3://models/churn/v2", alarms, routing=routing, termination=120)
    green = revision_of(update)
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: (
            (status_of(kube, NAME, namespace).get("step") or {}).get("stage") == "TerminationWait"
        ),
        timeout=60,
        message="termination wait",
    )

    stack.traffic.set(green, Behaviour(error_fraction=0.3))

    wait_for(lambda: rolled_back_to(kube, NAME, namespace, blue), timeout=60, message="rolled back")
    assert "green-5xx" in outcome(kube, namespace)["reason"]


@pytest.mark.parametrize(
    ("alarm", "expected"),
    [
        ({"query": {"query": "sum(rate(x[1m]", "threshold": 1}}, "invalid query"),
        ({"prometheusRule": {"alertName": "NoSuchAlert"}}, "no alerting rule named 'NoSuchAlert'"),
    ],
    ids=["invalid-promql", "unknown-rule"],
)
def test_a_broken_alarm_fails_the_rollout_before_traffic_moves(
    kube: Client, namespace: str, stack: Rig, alarm: dict[str, Any], expected: str
) -> None:
    alarms = [{"name": "broken", **alarm}]
    blue = start(kube, namespace, alarms)
    update = make_spec("s3://models/churn/v2", alarms)
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    wait_for(lambda: rolled_back_to(kube, NAME, namespace, blue), timeout=60, message="rolled back")
    assert expected in outcome(kube, namespace)["reason"]
    assert stack.traffic.served.get(green, 0) == 0, "green never got traffic"


def test_endpoint_prometheus_over_tls_with_basic_auth_from_secrets(
    kube: Client, namespace: str, cluster: LocalCluster, endpoint_crd: str, tmp_path: Path
) -> None:
    """An Endpoint names its own Prometheus: HTTPS with a private CA and basic auth, all
    three read from a Secret. The operator has no Prometheus of its own, so only the
    Endpoint's connection can make the alarm breach."""
    tls = make_tls_files(tmp_path)
    password = "correct horse battery staple"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    traffic = TrafficSimulator(cluster.kubeconfig, namespace, NAME)
    traffic.start()
    prometheus = LocalPrometheus(
        folder=tmp_path / "prometheus",
        web_config={
            "tls_server_config": {"cert_file": str(tls.cert_pem), "key_file": str(tls.key_pem)},
            "basic_auth_users": {"alarms": hashed},
        },
        ca_file=tls.ca_pem,
        basic_auth=("alarms", password),
    )
    prometheus.start(scrape_config(traffic.target))
    operator = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator.log")
    try:
        operator.start()
        credentials = {"username": "alarms", "password": password, "ca.crt": tls.ca_pem.read_text()}
        kube.create(
            Secret(
                metadata=ObjectMeta(name="prometheus-auth", namespace=namespace),
                stringData=credentials,
            )
        )
        alarms = [{"name": "green-5xx", "template": ERROR_RATE}]
        connection = {
            "url": prometheus.url,
            "basicAuthUsernameSecret": {"name": "prometheus-auth", "key": "username"},
            "basicAuthPasswordSecret": {"name": "prometheus-auth", "key": "password"},
            "caBundleSecret": {"name": "prometheus-auth", "key": "ca.crt"},
        }
        base = make_spec("s3://models/churn/v1", alarms)
        base["deploymentConfig"]["autoRollback"]["prometheus"] = connection
        kube.create(endpoint_manifest(NAME, namespace, base))
        wait_for(
            lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
            timeout=60,
            message="baseline InService",
        )
        blue = revision_of(base)
        update = make_spec("s3://models/churn/v2", alarms)
        update["deploymentConfig"]["autoRollback"]["prometheus"] = connection
        traffic.set(revision_of(update), Behaviour(error_fraction=1.0))
        set_spec(kube, NAME, namespace, update)
        wait_for(
            lambda: rolled_back_to(kube, NAME, namespace, blue), timeout=90, message="rolled back"
        )
        cause = status_of(kube, NAME, namespace)["rollbackCause"]
        assert cause["name"] == "green-5xx" and cause["verdict"] == "Breaching"

        # A wrong password is an Error verdict that says so, never a Healthy one.
        wrong = {"stringData": {"password": "not the password"}}
        kube.patch(Secret, "prometheus-auth", wrong, namespace=namespace)
        retry = make_spec("s3://models/churn/v3", alarms)
        retry["deploymentConfig"]["autoRollback"]["prometheus"] = connection
        since = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        set_spec(kube, NAME, namespace, retry)

        def verdict() -> dict[str, Any] | None:
            """The first verdict of the retry's deployment (the rolled-back one's last
            verdict may carry the same second as ``since``)."""
            status = status_of(kube, NAME, namespace)
            deploying = {
                status.get("candidateRevision"),
                (status.get("lastDeployment") or {}).get("revision"),
            }
            if revision_of(retry) not in deploying:
                return None
            for alarm in status.get("alarms") or []:
                evaluated = datetime.datetime.fromisoformat(alarm["evaluatedAt"])
                if evaluated > since and alarm["verdict"] != "Healthy":
                    return dict(alarm)
            return None

        failing = wait_for(verdict, timeout=60, message="an alarm verdict on the wrong password")
        assert failing["verdict"] in ("Error", "Inconclusive")
        assert "401" in failing["reason"] or "nauthorized" in failing["reason"]
    finally:
        operator.stop()
        traffic.stop()
        prometheus.stop()


def test_each_variant_is_judged_by_its_own_alarms(kube: Client, namespace: str, stack: Rig) -> None:
    alarms = [{"name": "green-5xx", "template": ERROR_RATE}]
    routing = {"type": "AllAtOnce", "waitIntervalSeconds": 6}

    def two_variants(model_a: str, model_b: str) -> dict[str, Any]:
        spec = make_spec(model_a, alarms, routing=routing)
        spec["variants"] = [
            {"name": "a", "model": {"uri": model_a}, "replicas": 2},
            {"name": "b", "model": {"uri": model_b}, "replicas": 2},
        ]
        return spec

    before = two_variants("s3://models/a/v1", "s3://models/b/v1")
    kube.create(endpoint_manifest(NAME, namespace, before))
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
        timeout=60,
        message="both variants InService",
    )
    after = two_variants("s3://models/a/v2", "s3://models/b/v2")
    a_old, b_old = (revision_of({"variants": [v]}) for v in before["variants"])
    a_new, b_new = (revision_of({"variants": [v]}) for v in after["variants"])
    stack.traffic.set(b_new, Behaviour(error_fraction=1.0))

    set_spec(kube, NAME, namespace, after)

    def settled() -> dict[str, dict[str, Any]] | None:
        status = status_of(kube, NAME, namespace)
        variants = {v["name"]: v for v in status.get("variants", [])}
        done = (
            status.get("observedGeneration") == 2
            and status.get("phase") == "InService"
            and all(v.get("candidateRevision") is None for v in variants.values())
            and all(
                v.get("lastDeployment", {}).get("revision") in (a_new, b_new)
                for v in variants.values()
            )
        )
        return variants if done and len(variants) == 2 else None

    variants = wait_for(settled, timeout=90, message="both deployments ended")
    assert variants["a"]["activeRevision"] == a_new
    assert variants["a"]["lastDeployment"]["outcome"] == "Succeeded"
    assert variants["b"]["activeRevision"] == b_old
    assert variants["b"]["rolledBackRevision"] == b_new
    assert variants["b"]["rollbackCause"]["name"] == "green-5xx"
    assert set(deployments_of(kube, namespace, NAME)) == {a_new, b_old}
    assert a_old != a_new
