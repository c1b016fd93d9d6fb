"""Blue/green rollouts end to end: the real operator on the real local control plane.

Traffic is checked where kube-proxy would read it: the Ready addresses in the
stable Service's EndpointSlices, counted per fleet revision.
"""

from __future__ import annotations

import copy
import functools
import json
import urllib.request
from typing import Any

import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Pod, Service

from fleetshift_devcluster.cluster import SLOW_IMAGE, free_port
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.kube import HTTPRoute
from support.operator_process import (
    OperatorProcess,
    annotate,
    create_serving,
    deployments_of,
    endpoint_manifest,
    revision_of,
    serving_by_revision,
    set_spec,
    settled_on,
    status_of,
)
from support.specs import canary_routing, endpoint_spec

NAME = "churn"


spec_with = functools.partial(endpoint_spec, termination=2, timeout=1800)


def create_in_service(kube: Client, namespace: str, spec: dict[str, Any]) -> str:
    """Create ``NAME`` from ``spec``; its revision, once InService with every replica serving."""
    return create_serving(kube, NAME, namespace, spec)


def in_termination_wait(kube: Client, namespace: str) -> bool:
    """The deployment's step is the termination wait: green serves all, blue is kept."""
    return (status_of(kube, NAME, namespace).get("step") or {}).get("stage") == "TerminationWait"


def pod_names(kube: Client, namespace: str, revision: str) -> set[str]:
    pods = kube.list(Pod, namespace=namespace, labels={"fleetshift.dev/revision": revision})
    return {p.metadata.name for p in pods if p.metadata and p.metadata.name}


def test_create_reaches_in_service_with_ready_pods_on_kwok_nodes(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    revision = create_in_service(kube, namespace, spec_with(replicas=3))

    status = status_of(kube, NAME, namespace)
    assert status["activeRevision"] == revision
    assert status["observedGeneration"] == 1
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "Ready": "True",
        "Progressing": "False",
        "Degraded": "False",
        "TrafficSplit": "True",
    }
    pods = kube.list(Pod, namespace=namespace, labels={"fleetshift.dev/revision": revision})
    assert all(p.spec and (p.spec.nodeName or "").startswith("kwok-node-") for p in pods)
    deployment = kube.get(Deployment, f"{NAME}-main-{revision}", namespace=namespace)
    owners = deployment.metadata.ownerReferences if deployment.metadata else None
    assert owners and owners[0].kind == "Endpoint" and owners[0].controller


def test_canary_success_shifts_a_quarter_then_all_and_retires_blue(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    blue = create_in_service(kube, namespace, spec_with())
    blue_pods = pod_names(kube, namespace, blue)
    update = spec_with("s3://models/churn/v2", termination=6)
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {blue: 3, green: 1},
        timeout=30,
        message="canary: 3 blue + 1 green serving",
    )
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("greenTrafficPercent") == 25,
        timeout=10,
        message="status written after the traffic moved",
    )
    assert pod_names(kube, namespace, blue) == blue_pods, "blue pods must not be replaced"
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {green: 4},
        timeout=30,
        message="all traffic on green",
    )
    assert deployments_of(kube, namespace, NAME).keys() == {blue, green}, "blue kept while waiting"
    # Blue is deleted first and the status is written after, so wait for both.
    wait_for(
        lambda: settled_on(kube, NAME, namespace, green),
        timeout=30,
        message="blue retired, InService on green",
    )
    status = status_of(kube, NAME, namespace)
    assert status["activeRevision"] == green
    assert status["lastDeployment"]["outcome"] == "Succeeded"
    assert [h["revision"] for h in status["history"]][-1] == green


def test_linear_success_moves_in_three_steps(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    routing = {
        "type": "Linear",
        "linearStepSize": {"type": "InstanceCount", "value": 1},
        "waitIntervalSeconds": 3,
    }
    blue = create_in_service(kube, namespace, spec_with(replicas=3, routing=routing))
    update = spec_with("s3://models/churn/v2", replicas=3, routing=routing)
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    for expected in ({blue: 2, green: 1}, {blue: 1, green: 2}, {green: 3}):

        def serving_as_expected(expected: dict[str, int] = expected) -> bool:
            return serving_by_revision(kube, namespace, NAME) == expected

        wait_for(serving_as_expected, timeout=30, message=f"linear step serving {expected}")
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("activeRevision") == green,
        timeout=30,
        message="green active",
    )
    assert status_of(kube, NAME, namespace)["lastDeployment"]["outcome"] == "Succeeded"


def test_all_at_once_bakes_then_keeps_blue_through_termination_wait(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    routing = {"type": "AllAtOnce", "waitIntervalSeconds": 4}
    blue = create_in_service(kube, namespace, spec_with(replicas=2, routing=routing))
    update = spec_with("s3://models/churn/v2", replicas=2, routing=routing, termination=4)
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {green: 2},
        timeout=30,
        message="all at once",
    )
    wait_for(lambda: in_termination_wait(kube, namespace), timeout=30, message="termination wait")
    assert blue in deployments_of(kube, namespace, NAME)
    wait_for(
        lambda: deployments_of(kube, namespace, NAME).keys() == {green},
        timeout=30,
        message="blue retired after the termination wait",
    )


def test_crash_looping_green_rolls_back(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    blue = create_in_service(kube, namespace, spec_with())
    update = spec_with("s3://models/churn/v2", image="fleetshift.dev/kwok:crashloop")
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    wait_for(
        lambda: (
            (status_of(kube, NAME, namespace).get("lastDeployment") or {}).get("outcome")
            == "RolledBack"
        ),
        timeout=60,
        message="rolled back",
    )
    wait_for(
        lambda: settled_on(kube, NAME, namespace, blue),
        timeout=30,
        message="green deleted, InService on blue",
    )
    status = status_of(kube, NAME, namespace)
    assert status["activeRevision"] == blue
    assert "CrashLoopBackOff" in status["lastDeployment"]["reason"]
    assert status["rolledBackRevision"] == green
    assert serving_by_revision(kube, namespace, NAME) == {blue: 4}
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["status"] == "True"


def test_abort_rolls_back_and_retry_redeploys(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    slow = canary_routing(wait=300)
    blue = create_in_service(kube, namespace, spec_with(routing=slow))
    update = spec_with("s3://models/churn/v2", routing=slow)
    green = revision_of(update)
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {blue: 3, green: 1},
        timeout=30,
        message="canary serving",
    )

    annotate(kube, NAME, namespace, {"fleetshift.dev/abort": "req-1"})

    wait_for(
        lambda: settled_on(kube, NAME, namespace, blue),
        timeout=30,
        message="aborted back to blue",
    )
    assert status_of(kube, NAME, namespace)["lastDeployment"]["reason"] == "aborted on request"

    annotate(kube, NAME, namespace, {"fleetshift.dev/retry": "req-2"})

    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {blue: 3, green: 1},
        timeout=30,
        message="retried canary serving",
    )


def test_pause_holds_and_promote_skips_the_waits(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    routing = canary_routing(wait=3)
    blue = create_in_service(kube, namespace, spec_with(routing=routing))
    annotate(kube, NAME, namespace, {"fleetshift.dev/paused": "true"})
    update = spec_with("s3://models/churn/v2", routing=routing, termination=600)
    green = revision_of(update)
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("paused") is True,
        timeout=30,
        message="paused",
    )
    wait_for(
        lambda: deployments_of(kube, namespace, NAME).get(green) == 4,
        timeout=30,
        message="green fleet Ready",
    )
    held = copy.deepcopy(serving_by_revision(kube, namespace, NAME))
    assert held == {blue: 4}, "a paused deployment does not shift traffic"

    annotate(kube, NAME, namespace, {"fleetshift.dev/paused": None})
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {green: 4},
        timeout=30,
        message="resumed to full green",
    )
    wait_for(lambda: in_termination_wait(kube, namespace), timeout=30, message="termination wait")

    annotate(kube, NAME, namespace, {"fleetshift.dev/promote": "now"})

    wait_for(
        lambda: (
            deployments_of(kube, namespace, NAME).keys() == {green}
            and status_of(kube, NAME, namespace).get("activeRevision") == green
        ),
        timeout=30,
        message="promoted past the 600 s termination wait",
    )


def test_new_spec_mid_rollout_supersedes_green_while_blue_serves(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    slow = canary_routing(wait=300)
    blue = create_in_service(kube, namespace, spec_with(routing=slow))
    second = spec_with("s3://models/churn/v2", routing=slow)
    set_spec(kube, NAME, namespace, second)
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {blue: 3, revision_of(second): 1},
        timeout=30,
        message="first canary",
    )
    third = spec_with("s3://models/churn/v3", routing=slow)

    set_spec(kube, NAME, namespace, third)

    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {blue: 3, revision_of(third): 1},
        timeout=30,
        message="the new canary replaces the old one",
    )
    assert revision_of(second) not in deployments_of(kube, namespace, NAME)
    history = status_of(kube, NAME, namespace)["history"]
    assert any(
        h["outcome"] == "Superseded" and h["revision"] == revision_of(second) for h in history
    )


def route_weights(kube: Client, namespace: str) -> dict[str, int]:
    route = kube.get(HTTPRoute, NAME, namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
    backends = route["spec"]["rules"][0]["backendRefs"]
    return {b["name"].removeprefix(f"{NAME}-main-"): b["weight"] for b in backends}


def test_gateway_api_router_weights_follow_each_step(
    kube: Client,
    namespace: str,
    gateway_api_crds: list[str],
    operator_process: OperatorProcess,
) -> None:
    gateway = {
        "router": "GatewayAPI",
        "gatewayAPI": {"parentRefs": [{"name": "public"}], "hostnames": ["churn.example.com"]},
    }
    base = {**spec_with(), "traffic": gateway}
    kube.create(endpoint_manifest(NAME, namespace, base))
    blue = revision_of(base)
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
        timeout=60,
        message="InService",
    )
    wait_for(lambda: route_weights(kube, namespace) == {blue: 100}, timeout=30, message="route")
    # A slow-starting green keeps the provisioning step (green at weight 0) observable.
    update = {**spec_with("s3://models/churn/v2", image=SLOW_IMAGE), "traffic": gateway}
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    for expected in (
        {blue: 100, green: 0},
        {blue: 75, green: 25},
        {blue: 0, green: 100},
        {green: 100},
    ):

        def weights_are(expected: dict[str, int] = expected) -> bool:
            return route_weights(kube, namespace) == expected

        wait_for(weights_are, timeout=30, message=f"route weights {expected}")
    route = kube.get(HTTPRoute, NAME, namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
    assert [ref["name"] for ref in route["spec"]["parentRefs"]] == ["public"]
    assert route["spec"]["hostnames"] == ["churn.example.com"]

    def services() -> set[str | None]:
        return {s.metadata.name for s in kube.list(Service, namespace=namespace) if s.metadata}

    wait_for(
        lambda: services() == {f"{NAME}-main-{green}"},
        timeout=30,
        message="the retired fleet's Service is removed",
    )


def test_ab_variants_share_traffic_by_their_weights(
    kube: Client,
    namespace: str,
    gateway_api_crds: list[str],
    operator_process: OperatorProcess,
) -> None:
    spec = spec_with()
    current = {**spec["variants"][0], "name": "current", "weight": 80}
    challenger = {
        "name": "challenger",
        "model": {"uri": "s3://models/churn/v2"},
        "replicas": 2,
        "weight": 20,
    }
    gateway = {"router": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "public"}]}}
    ab = {**spec, "variants": [current, challenger], "traffic": gateway}
    kube.create(endpoint_manifest(NAME, namespace, ab))
    current_revision = revision_of({"variants": [current]})
    challenger_revision = revision_of({"variants": [challenger]})

    def weights() -> dict[str, int]:
        route = kube.get(HTTPRoute, NAME, namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
        return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}

    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
        timeout=60,
        message="InService",
    )
    expected = {
        f"{NAME}-current-{current_revision}": 8000,
        f"{NAME}-challenger-{challenger_revision}": 2000,
    }
    wait_for(lambda: weights() == expected, timeout=30, message=f"route weights {expected}")

    # SageMaker's TargetVariant: a request naming a variant goes to that variant alone.
    route = kube.get(HTTPRoute, NAME, namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
    pinned = {
        rule["matches"][0]["headers"][0]["value"]: [b["name"] for b in rule["backendRefs"]]
        for rule in route["spec"]["rules"][1:]
    }
    assert pinned == {
        "current": [f"{NAME}-current-{current_revision}"],
        "challenger": [f"{NAME}-challenger-{challenger_revision}"],
    }
    assert {
        h["name"] for rule in route["spec"]["rules"][1:] for h in rule["matches"][0]["headers"]
    } == {"X-Amzn-SageMaker-Target-Variant"}


@pytest.mark.parametrize("router", ["Replicas", "GatewayAPI"])
def test_a_shadow_variant_is_deployed_but_serves_no_caller(
    kube: Client,
    namespace: str,
    gateway_api_crds: list[str],
    operator_process: OperatorProcess,
    router: str,
) -> None:
    spec = spec_with()
    main = spec["variants"][0]
    shadow = {
        "name": "shadow",
        "model": {"uri": "s3://models/churn/v2"},
        "replicas": 2,
        "shadow": {"samplingPercent": 20},
    }
    traffic: dict[str, Any] = {"router": router}
    if router == "GatewayAPI":
        traffic["gatewayAPI"] = {"parentRefs": [{"name": "public"}]}
    kube.create(
        endpoint_manifest(NAME, namespace, {**spec, "variants": [main, shadow], "traffic": traffic})
    )
    main_revision = revision_of({"variants": [main]})
    shadow_revision = revision_of({"variants": [shadow]})
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
        timeout=60,
        message="InService with its shadow",
    )
    assert set(deployments_of(kube, namespace, NAME)) == {main_revision, shadow_revision}
    shares = {v["name"]: v["trafficPercent"] for v in status_of(kube, NAME, namespace)["variants"]}
    assert shares == {"main": 100, "shadow": 0}
    if router == "Replicas":
        assert serving_by_revision(kube, namespace, NAME) == {main_revision: 4}
        _assert_production_pods_copy_to(kube, namespace, main_revision, shadow_revision)
        return
    route = kube.get(HTTPRoute, NAME, namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
    default = route["spec"]["rules"][0]
    assert [b["name"] for b in default["backendRefs"]] == [f"{NAME}-main-{main_revision}"]
    (mirror,) = default["filters"]
    assert mirror["type"] == "RequestMirror"
    assert mirror["requestMirror"]["percent"] == 20
    target = mirror["requestMirror"]["backendRef"]
    assert (target["kind"], target["name"], target["port"]) == (
        "Service",
        f"{NAME}-shadow-{shadow_revision}",
        80,
    )
    pinned = [r["matches"][0]["headers"][0]["value"] for r in route["spec"]["rules"][1:]]
    assert pinned == ["main"], "a shadow cannot be targeted"


def service_names(kube: Client, namespace: str) -> set[str]:
    return {
        s.metadata.name
        for s in kube.list(Service, namespace=namespace)
        if s.metadata and s.metadata.name
    }


def mirror_file_of(kube: Client, namespace: str) -> dict[str, Any] | None:
    """The shadows the production pods read (the ConfigMap the Replicas router writes)."""
    try:
        config = kube.get(ConfigMap, f"{NAME}-shadows", namespace=namespace)
    except ApiError:
        return None
    return dict(json.loads((config.data or {})["mirror.json"]))


def _assert_production_pods_copy_to(
    kube: Client, namespace: str, main_revision: str, shadow_revision: str
) -> None:
    target = f"{NAME}-shadow-{shadow_revision}"
    assert mirror_file_of(kube, namespace) == {
        "variants": {},  # one variant serves callers: nothing to pin
        "shadows": [
            {
                "variant": "shadow",
                "revision": shadow_revision,
                "url": f"http://{target}.{namespace}.svc:80",
                "samplingPercent": 20,
            }
        ],
    }
    service = kube.get(Service, target, namespace=namespace)
    assert service.spec is not None and service.spec.selector == {
        "fleetshift.dev/endpoint": NAME,
        "fleetshift.dev/variant": "shadow",
        "fleetshift.dev/revision": shadow_revision,
    }
    pod = kube.get(Deployment, f"{NAME}-main-{main_revision}", namespace=namespace).to_dict()
    template = pod["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in template["volumes"]}
    assert volumes["shadows"]["configMap"]["name"] == f"{NAME}-shadows"
    assert volumes["shadows"]["configMap"]["optional"] is True
    env = {e["name"]: e.get("value") for e in template["containers"][0]["env"]}
    assert env["FLEETSHIFT_MIRROR_FILE"] == "/etc/fleetshift/shadows/mirror.json"


def test_removing_a_shadow_stops_the_copies_and_its_service_without_redeploying_production(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    spec = spec_with()
    main = spec["variants"][0]
    shadow = {
        "name": "shadow",
        "model": {"uri": "s3://models/churn/v2"},
        "replicas": 1,
        "shadow": {"samplingPercent": 20},
    }
    kube.create(endpoint_manifest(NAME, namespace, {**spec, "variants": [main, shadow]}))
    main_revision = revision_of({"variants": [main]})
    shadow_revision = revision_of({"variants": [shadow]})
    wait_for(
        lambda: (
            mirror_file_of(kube, namespace) is not None
            and status_of(kube, NAME, namespace).get("phase") == "InService"
        ),
        timeout=60,
        message="InService, copying to its shadow",
    )
    _assert_production_pods_copy_to(kube, namespace, main_revision, shadow_revision)
    production_pods = pod_names(kube, namespace, main_revision)
    set_spec(kube, NAME, namespace, {"variants": [main]})
    wait_for(
        lambda: mirror_file_of(kube, namespace) == {"shadows": [], "variants": {}},
        timeout=60,
        message="the shadow gone from the mirror file",
    )

    def shadow_service_gone() -> bool:
        return f"{NAME}-shadow-{shadow_revision}" not in service_names(kube, namespace)

    wait_for(shadow_service_gone, timeout=60, message="the shadow's Service deleted")
    assert pod_names(kube, namespace, main_revision) == production_pods


def test_with_the_replicas_router_a_request_naming_a_variant_can_reach_its_serving_pods(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    spec = spec_with()
    current = {**spec["variants"][0], "name": "Current", "weight": 80}
    challenger = {"name": "challenger", "model": {"uri": "s3://models/churn/v2"}, "replicas": 1}
    kube.create(endpoint_manifest(NAME, namespace, {**spec, "variants": [current, challenger]}))
    wait_for(
        lambda: (
            status_of(kube, NAME, namespace).get("phase") == "InService"
            and mirror_file_of(kube, namespace) is not None
        ),
        timeout=60,
        message="InService with a variant map",
    )
    services = {
        v: f"{NAME}-{v.lower()}-serving" for v in ("Current", "challenger")
    }  # pods reach them by these names
    assert mirror_file_of(kube, namespace) == {
        "shadows": [],
        "variants": {v: f"http://{s}.{namespace}.svc:80" for v, s in services.items()},
    }
    for variant, service_name in services.items():
        service = kube.get(Service, service_name, namespace=namespace)
        assert service.spec is not None and service.spec.selector == {
            "fleetshift.dev/endpoint": NAME,
            "fleetshift.dev/variant": variant,
            "fleetshift.dev/serving": "true",
        }
    # Down to one variant: nothing left to pin, the map and the Services go.
    set_spec(kube, NAME, namespace, {"variants": [current]})
    wait_for(
        lambda: mirror_file_of(kube, namespace) == {"shadows": [], "variants": {}},
        timeout=60,
        message="an empty variant map",
    )

    def variant_services_gone() -> bool:
        return not service_names(kube, namespace) & set(services.values())

    wait_for(variant_services_gone, timeout=60, message="the variant Services deleted")


def hpa_minimums(kube: Client, namespace: str) -> dict[str, int]:
    return {
        (h.metadata.name or "").removeprefix(f"{NAME}-main-"): h.spec.minReplicas or 0
        for h in kube.list(HorizontalPodAutoscaler, namespace=namespace)
        if h.metadata and h.spec
    }


def test_hpas_follow_the_fleets_and_green_carries_its_capacity_at_cutover(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    autoscaling = {"minReplicas": 2, "maxReplicas": 8, "targetCPUUtilizationPercent": 60}
    routing = canary_routing(wait=4)
    base = spec_with(routing=routing, termination=4)
    base["variants"][0]["autoscaling"] = autoscaling
    blue = create_in_service(kube, namespace, base)
    wait_for(lambda: hpa_minimums(kube, namespace) == {blue: 2}, timeout=30, message="blue HPA")
    hpa = kube.get(HorizontalPodAutoscaler, f"{NAME}-main-{blue}", namespace=namespace)
    assert hpa.spec is not None and hpa.spec.maxReplicas == 8
    assert hpa.spec.scaleTargetRef.name == f"{NAME}-main-{blue}"
    update = spec_with("s3://models/churn/v2", routing=routing, termination=4)
    update["variants"][0]["autoscaling"] = autoscaling
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    wait_for(
        lambda: hpa_minimums(kube, namespace) == {blue: 2, green: 2},
        timeout=30,
        message="green gets its own HPA",
    )
    wait_for(
        lambda: hpa_minimums(kube, namespace) == {blue: 2, green: 4},
        timeout=30,
        message="at 100% green's HPA floor is blue's whole capacity",
    )
    wait_for(
        lambda: hpa_minimums(kube, namespace) == {green: 2},
        timeout=30,
        message="blue's HPA goes with blue; green relaxes to the spec minimum",
    )
    deployment = kube.get(Deployment, f"{NAME}-main-{green}", namespace=namespace)
    assert deployment.spec is not None and deployment.spec.replicas == 4


def test_rolling_replaces_capacity_in_batches(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    policy = {
        "rolling": {
            "maximumBatchSize": {"type": "InstanceCount", "value": 2},
            "waitIntervalSeconds": 3,
        }
    }
    base = {**spec_with(), "deploymentConfig": policy}
    blue = create_in_service(kube, namespace, base)
    update = {**spec_with("s3://models/churn/v2"), "deploymentConfig": policy}
    green = revision_of(update)

    set_spec(kube, NAME, namespace, update)

    wait_for(
        lambda: (
            serving_by_revision(kube, namespace, NAME) == {blue: 2, green: 2}
            and deployments_of(kube, namespace, NAME) == {blue: 2, green: 2}
        ),
        timeout=30,
        message="first batch: 2 green serving, blue shrunk to 2",
    )
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {green: 4},
        timeout=30,
        message="second batch: all green",
    )
    wait_for(
        lambda: (
            deployments_of(kube, namespace, NAME) == {green: 4}
            and status_of(kube, NAME, namespace).get("activeRevision") == green
        ),
        timeout=30,
        message="blue removed",
    )
    assert status_of(kube, NAME, namespace)["lastDeployment"]["outcome"] == "Succeeded"


def test_operator_serves_its_metrics_on_its_own_port(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    operator_process.stop()
    port = free_port()
    operator_process.extra_env = {"FLEETSHIFT_METRICS_PORT": str(port)}
    operator_process.start()
    blue = create_in_service(kube, namespace, spec_with(replicas=2))
    update = spec_with("s3://models/churn/v2", replicas=2)
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("activeRevision") == revision_of(update),
        timeout=60,
        message="deployed",
    )
    assert blue != revision_of(update)

    def scraped() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text: str = answer.read().decode()
        return text if 'fleetshift_operator_rollouts_total{outcome="Succeeded"}' in text else None

    text = wait_for(scraped, timeout=30, message="operator metrics")
    assert 'fleetshift_operator_reconciles_total{result="ok"}' in text
    assert "fleetshift_operator_reconcile_seconds_bucket" in text
    assert (
        f'fleetshift_operator_green_traffic_percent{{endpoint="{NAME}",namespace="{namespace}"}}'
        in text
    )
    assert f'fleetshift_operator_rollout_step{{endpoint="{NAME}",namespace="{namespace}"}}' in text
    series = f'endpoint="{NAME}",namespace="{namespace}"'
    assert f'fleetshift_operator_endpoint_phase{{{series},phase="InService"}} 1.0' in text
    assert f'fleetshift_operator_endpoint_phase{{{series},phase="Updating"}} 0.0' in text


def test_a_variant_made_a_shadow_and_back_stops_and_resumes_serving_without_touching_the_other(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    spec = spec_with()
    main = {**spec["variants"][0], "weight": 80}
    other = {"name": "other", "model": {"uri": "s3://models/churn/v2"}, "replicas": 1, "weight": 20}
    kube.create(endpoint_manifest(NAME, namespace, {**spec, "variants": [main, other]}))
    main_revision = revision_of({"variants": [main]})

    def shares() -> dict[str, int]:
        variants = status_of(kube, NAME, namespace).get("variants") or []
        return {v["name"]: v.get("trafficPercent", 0) for v in variants}

    wait_for(lambda: shares() == {"main": 80, "other": 20}, timeout=60, message="both serve")
    main_pods = pod_names(kube, namespace, main_revision)
    shadowed = {**other, "shadow": {"samplingPercent": 50}}
    set_spec(kube, NAME, namespace, {"variants": [main, shadowed]})
    wait_for(
        lambda: (
            shares() == {"main": 100, "other": 0}
            and [s["variant"] for s in (mirror_file_of(kube, namespace) or {}).get("shadows", [])]
            == ["other"]
        ),
        timeout=60,
        message="other made a shadow: no share, copied to",
    )
    assert (mirror_file_of(kube, namespace) or {})["variants"] == {}  # one serves: nothing to pin
    set_spec(kube, NAME, namespace, {"variants": [main, other]})
    wait_for(
        lambda: (
            shares() == {"main": 80, "other": 20}
            and (mirror_file_of(kube, namespace) or {}).get("shadows") == []
        ),
        timeout=60,
        message="other serving again, no longer copied to",
    )
    assert pod_names(kube, namespace, main_revision) == main_pods, "main was never redeployed"
