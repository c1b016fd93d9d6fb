"""The GatewayAPI router executed by a real Gateway API implementation: Traefik, in the
cluster's network namespace, proxying to the runtime's pods on the real node.

Everything else tests the ``HTTPRoute`` the operator writes; here a data plane carries
requests by it and each answer says which variant and revision gave it
(``X-Amzn-Invoked-Production-Variant``, ``X-Fleetshift-Revision``), so the shares are
counted, not computed. This module sorts before ``test_real_node.py``, whose last test stops
the session's cluster. The operator and the model server are ``test_metrics_server.py``'s
fixtures.
"""

from __future__ import annotations

import collections
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetshift_devcluster import images
from fleetshift_devcluster.processes import ManagedProcess
from fleetshift_devcluster.realnode import NODE_NAME
from fleetshift_devcluster.wait import wait_for
from realnode import kit
from realnode.conftest import RealNode
from realnode.kit import ModelServer, TraefikGateway
from support.runtime_kit import csv_body

ENDPOINT = "routed"
REQUESTS = 2000
TOLERANCE_POINTS = 3
VARIANT_HEADER = "X-Amzn-Invoked-Production-Variant"
REVISION_HEADER = "X-Fleetshift-Revision"
TARGET_VARIANT_HEADER = "X-Amzn-SageMaker-Target-Variant"


@pytest.fixture
def gateway(real_node: RealNode, node_namespace: str, tmp_path: Path) -> Iterator[TraefikGateway]:
    gateway = TraefikGateway(real_node, tmp_path / "traefik", node_namespace)
    yield gateway
    gateway.stop()


def _endpoint(
    namespace: str, server: ModelServer, model_a: str, canary_bake_seconds: int
) -> dict[str, Any]:
    def variant(name: str, model: str, weight: int) -> dict[str, Any]:
        return {
            "name": name,
            "model": {"uri": f"{server.url}/{model}"},
            "image": images.RUNTIME.tag,
            "replicas": 1,
            "weight": weight,
            "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        }

    return {
        "apiVersion": "fleetshift.dev/v1alpha1",
        "kind": "Endpoint",
        "metadata": {"name": ENDPOINT, "namespace": namespace},
        "spec": {
            "variants": [variant("a", model_a, 3), variant("b", "model.ubj", 1)],
            "traffic": {
                "router": "GatewayAPI",
                "gatewayAPI": {"parentRefs": [{"name": "public", "sectionName": "web"}]},
            },
            "deploymentConfig": {
                "blueGreen": {
                    "trafficRouting": {
                        "type": "Canary",
                        "canarySize": {"type": "CapacityPercent", "value": 25},
                        "waitIntervalSeconds": canary_bake_seconds,
                    },
                    "maximumExecutionTimeoutSeconds": 3 * canary_bake_seconds,
                }
            },
        },
    }


def _count_answers(
    node: RealNode, url: str, body: bytes, requests: int, headers: dict[str, str] | None = None
) -> collections.Counter[tuple[str, str]]:
    """Post ``requests`` requests through the gateway (a new connection each) and count the
    answers by (variant, revision); a failed request counts as ("error", <status>)."""

    def run() -> collections.Counter[tuple[str, str]]:
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for _ in range(requests):
            request = urllib.request.Request(
                url,
                data=body,
                headers={"Content-Type": "text/csv", **(headers or {})},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    reply.read()
                    counts[(reply.headers[VARIANT_HEADER], reply.headers[REVISION_HEADER])] += 1
            except urllib.error.HTTPError as error:
                counts[("error", str(error.code))] += 1
            except (urllib.error.URLError, OSError) as error:
                counts[("error", type(error).__name__)] += 1
        return counts

    return kit.in_netns(node.cluster.netns, run)


def _route_accepted(node: RealNode, namespace: str) -> bool:
    route = node.get("httproute", ENDPOINT, namespace)
    parents = route.get("status", {}).get("parents", [])
    return any(
        p.get("controllerName") == kit.GATEWAY_CONTROLLER
        and any(c["type"] == "Accepted" and c["status"] == "True" for c in p.get("conditions", []))
        for p in parents
    )


def test_a_real_gateway_splits_by_the_routers_weights_and_pins_by_target_variant(
    real_node: RealNode,
    node_namespace: str,
    operator_in_netns: ManagedProcess,
    models: tuple[ModelServer, Any],
    gateway: TraefikGateway,
    tmp_path: Path,
) -> None:
    """Variants a and b weighted 3:1 (75/25), then a canary of a at 25% of a's share: at
    2,000 requests through Traefik each share is within 3 points of the route's weight, and
    a request naming a variant reaches only that variant."""
    server, rows = models
    body = csv_body(rows[:2])
    url = f"{gateway.url}/invocations"
    real_node.apply(_endpoint(node_namespace, server, "model.ubj", canary_bake_seconds=600))

    def in_service() -> bool:
        if not operator_in_netns.running():
            raise AssertionError(f"the operator exited:\n{operator_in_netns.log_tail(40)}")
        status = real_node.get("fsep", ENDPOINT, node_namespace).get("status") or {}
        return status.get("phase") == "InService" and _route_accepted(real_node, node_namespace)

    wait_for(in_service, timeout=120, interval=1, message="InService, the route Accepted")
    revisions = {
        v["name"]: v["activeRevision"]
        for v in real_node.get("fsep", ENDPOINT, node_namespace)["status"]["variants"]
    }

    # The route is Accepted a moment before Traefik serves it: wait for both variants.
    wait_for(
        lambda: {v for v, _ in _count_answers(real_node, url, body, 40)} == {"a", "b"},
        timeout=60,
        interval=1,
        message="both variants answering through the gateway",
    )
    counts = _count_answers(real_node, url, body, REQUESTS)
    assert sum(counts.values()) == REQUESTS
    assert set(counts) == {("a", revisions["a"]), ("b", revisions["b"])}, counts
    share_a = 100 * counts[("a", revisions["a"])] / REQUESTS
    assert abs(share_a - 75) <= TOLERANCE_POINTS, counts

    pinned = _count_answers(real_node, url, body, 50, {TARGET_VARIANT_HEADER: "b"})
    assert pinned == {("b", revisions["b"]): 50}, pinned

    # A canary of variant a: its green gets 25% of a's weight, 3 * 25% / 4 = 18.75% of all.
    shutil.copy(tmp_path / "models" / "model.ubj", tmp_path / "models" / "model-v2.ubj")
    real_node.apply(_endpoint(node_namespace, server, "model-v2.ubj", canary_bake_seconds=600))

    def canary_baking() -> str | None:
        status = real_node.get("fsep", ENDPOINT, node_namespace).get("status") or {}
        variant = next(v for v in status.get("variants", []) if v["name"] == "a")
        step = variant.get("step") or {}
        if step.get("stage") == "Baking" and variant.get("greenTrafficPercent") == 25:
            candidate: str = variant["candidateRevision"]
            return candidate
        return None

    green = wait_for(canary_baking, timeout=120, interval=1, message="a's canary baking at 25%")
    wait_for(
        lambda: ("a", green) in _count_answers(real_node, url, body, 40),
        timeout=60,
        interval=1,
        message="a's green answering through the gateway",
    )
    counts = _count_answers(real_node, url, body, REQUESTS)
    assert set(counts) == {("a", revisions["a"]), ("a", green), ("b", revisions["b"])}, counts
    shares = {key: 100 * n / REQUESTS for key, n in counts.items()}
    assert abs(shares[("a", green)] - 18.75) <= TOLERANCE_POINTS, shares
    assert abs(shares[("a", revisions["a"])] - 56.25) <= TOLERANCE_POINTS, shares
    assert abs(shares[("b", revisions["b"])] - 25) <= TOLERANCE_POINTS, shares
    print(f"through Traefik: {dict(counts)}")


def _metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples in a Prometheus text page whose labels include
    ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{key}="{wanted}"' in series for key, wanted in labels.items()):
            total += float(value)
    return total


def test_with_runtime_mirroring_a_shadow_behind_a_real_gateway_gets_copies_no_caller_sees(
    real_node: RealNode,
    node_namespace: str,
    operator_in_netns: ManagedProcess,
    models: tuple[ModelServer, Any],
    gateway: TraefikGateway,
    tmp_path: Path,
) -> None:
    """``gatewayAPI.mirroring: Runtime``, for a gateway without ``RequestMirror`` (Traefik):
    the route carries production's traffic only, production's pods copy every request to
    the shadow's fleet Service and compare the answers."""
    server, rows = models
    shutil.copy(tmp_path / "models" / "model.ubj", tmp_path / "models" / "shadow.ubj")
    production = {
        "name": "main",
        "model": {"uri": f"{server.url}/model.ubj"},
        "image": images.RUNTIME.tag,
        "replicas": 1,
        "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
    }
    shadow = {
        **production,
        "name": "candidate",
        "model": {"uri": f"{server.url}/shadow.ubj"},
        "shadow": {"samplingPercent": 100},
    }
    real_node.apply(
        {
            "apiVersion": "fleetshift.dev/v1alpha1",
            "kind": "Endpoint",
            "metadata": {"name": ENDPOINT, "namespace": node_namespace},
            "spec": {
                "variants": [production, shadow],
                "traffic": {
                    "router": "GatewayAPI",
                    "gatewayAPI": {
                        "parentRefs": [{"name": "public", "sectionName": "web"}],
                        "mirroring": "Runtime",
                    },
                },
            },
        }
    )

    def in_service() -> bool:
        if not operator_in_netns.running():
            raise AssertionError(f"the operator exited:\n{operator_in_netns.log_tail(40)}")
        status = real_node.get("fsep", ENDPOINT, node_namespace).get("status") or {}
        return status.get("phase") == "InService" and _route_accepted(real_node, node_namespace)

    wait_for(in_service, timeout=120, interval=1, message="InService, the route Accepted")
    route = real_node.get("httproute", ENDPOINT, node_namespace)
    assert all("filters" not in rule for rule in route["spec"]["rules"]), route["spec"]
    body = csv_body(rows[:2])
    url = f"{gateway.url}/invocations"
    production_pod = kit.ready_pods(
        real_node, node_namespace, f"fleetshift.dev/endpoint={ENDPOINT},fleetshift.dev/variant=main"
    )[0]
    metrics_url = f"http://{production_pod['status']['podIP']}:9090/metrics"

    def metrics() -> str:
        def get() -> str:
            with urllib.request.urlopen(metrics_url, timeout=5) as reply:
                text: str = reply.read().decode()
                return text

        return kit.in_netns(real_node.cluster.netns, get)

    # The kubelet brings the shadows ConfigMap into running pods on its next sync.
    def compared() -> float | None:
        counts = _count_answers(real_node, url, body, 20)
        assert {variant for variant, _ in counts} == {"main"}, counts
        rows_compared = _metric_total(metrics(), "fleetshift_shadow_compared_rows_total")
        return rows_compared or None

    wait_for(compared, timeout=150, interval=2, message="production comparing shadow answers")
    before = metrics()
    counts = _count_answers(real_node, url, body, 200)
    assert {variant for variant, _ in counts} == {"main"}, counts
    assert sum(counts.values()) == 200

    def copies_answered() -> float | None:
        answered = _metric_total(
            metrics(), "fleetshift_shadow_copies_total", shadow="candidate", outcome="answered"
        )
        start = _metric_total(
            before, "fleetshift_shadow_copies_total", shadow="candidate", outcome="answered"
        )
        return answered - start if answered - start >= 200 else None

    wait_for(copies_answered, timeout=30, interval=1, message="every request copied")
    page = metrics()
    assert _metric_total(page, "fleetshift_shadow_disagreements_total") == 0, "same model"
    for outcome in ("failed", "timeout", "unreachable"):
        assert _metric_total(page, "fleetshift_shadow_copies_total", outcome=outcome) == 0, page
