"""kube-score, a static checker of Kubernetes objects, finds nothing CRITICAL in what
Fleetshift deploys: the objects the operator generates for a fleet, and the chart.

kube-score is built from its Go module at a pinned version (``binaries.KUBE_SCORE``, cached
under ``~/.cache/fleetshift``) on first use. Each CRITICAL finding it still reports is in an
allow-list below with the reason it stays; anything else fails the test.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.helm_kit import HA, MONITORING, Manifest, merge, namespaced, render, run
from fleetshift_devcluster import binaries
from fleetshift_operator import manifests
from fleetshift_operator.api import ModelSource, Resources, Variant
from fleetshift_operator.planning.types import FleetPlan

CRITICAL = 1
"""kube-score's grade of a CRITICAL finding (WARNING is 5, OK is 10)."""

Finding = tuple[str, str, str]
"""(object kind, check id, the finding's summary)."""

IMAGE_PULL_POLICY: dict[Finding, str] = {
    ("Deployment", "container-image-pull-policy", "ImagePullPolicy is not set to Always"): (
        "images are pinned by tag (the runtime's release tag, :dev when imported into the "
        "node without a registry); Always would break images imported that way"
    ),
}

OPERATOR_ALLOWED: dict[Finding, str] = {
    **IMAGE_PULL_POLICY,
    (
        "Deployment",
        "container-security-context-user-group-id",
        "The container is running with a low user ID",
    ): (
        "the runtime image runs as 65532 (runtime/Dockerfile USER), which kube-score cannot "
        "see; the pod enforces runAsNonRoot and an Endpoint's own image keeps its own user"
    ),
    (
        "Deployment",
        "container-security-context-user-group-id",
        "The container running with a low group ID",
    ): "as above: the image's USER 65532:65532 sets the group",
    ("Service", "service-targets-pod", "The services selector does not match any pods"): (
        "the stable Service selects fleetshift.dev/serving=true, a label the Replicas router "
        "puts on pods at run time, never on the pod template"
    ),
}

CHART_ALLOWED: dict[Finding, str] = {
    **IMAGE_PULL_POLICY,
    ("Deployment", "container-resources", "CPU limit is not set"): (
        "no CPU limit on purpose: throttling would stall kopf's watches and peering "
        "keep-alives (values.yaml; a user may set one)"
    ),
    (
        "NetworkPolicy",
        "networkpolicy-targets-pod",
        "The NetworkPolicys selector doesn't match any pods",
    ): (
        "the model pods' policy selects pods the operator creates at run time; "
        "test_operator_objects_for_a_fleet_... shows it matches them"
    ),
}

NO_NETWORK_POLICY: dict[Finding, str] = {
    ("Deployment", "pod-networkpolicy", "The pod does not have a matching NetworkPolicy"): (
        "NetworkPolicies are opt-in (networkPolicy.enabled), as they need a network plugin "
        "that enforces them"
    ),
}

NETWORK_POLICIES = {
    "networkPolicy": {
        "enabled": True,
        "modelPods": {"allowedNamespaces": [{"matchLabels": {"team": "web"}}]},
    }
}


@cache
def _kube_score() -> Path:
    try:
        return binaries.ensure((binaries.KUBE_SCORE,))[binaries.KUBE_SCORE.name]
    except binaries.BuildError as error:
        pytest.skip(f"kube-score {binaries.KUBE_SCORE_VERSION} could not be built: {error}")


def critical_findings(objects: list[Manifest], folder: Path) -> set[Finding]:
    """kube-score's CRITICAL findings on ``objects``."""
    path = folder / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    done = subprocess.run(
        [str(_kube_score()), "score", "--output-format", "json", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode in (0, 1), f"kube-score failed ({done.returncode}): {done.stderr}"
    findings: set[Finding] = set()
    for scored in json.loads(done.stdout):
        kind = scored["type_meta"]["kind"]
        for check in scored["checks"]:
            if check["skipped"] or check["grade"] != CRITICAL:
                continue
            for comment in check["comments"] or [{"summary": check["check"]["name"]}]:
                findings.add((kind, check["check"]["id"], comment["summary"]))
    return findings


def _unexplained(findings: set[Finding], allowed: dict[Finding, str]) -> list[str]:
    return sorted(" / ".join(finding) for finding in findings - allowed.keys())


def fleet_objects(variant: Variant) -> list[Manifest]:
    """What the operator applies for one fleet of ``variant`` in namespace ``ml``."""
    endpoint = {
        "apiVersion": "fleetshift.dev/v1alpha1",
        "kind": "Endpoint",
        "metadata": {"name": "churn", "namespace": "ml", "uid": "u1"},
    }
    fleet = FleetPlan(variant.name, "abc", "green", variant.replicas, 0)
    return [
        manifests.get_deployment(endpoint, variant, fleet, include_replicas=True),
        manifests.get_disruption_budget(endpoint, variant, fleet),
        manifests.get_fleet_service(endpoint, fleet),
        manifests.get_stable_service(endpoint),
    ]


# Requests and limits are the Endpoint author's (spec.variants[].resources); the operator
# copies them into the pod. kube-score sees them set, as an Endpoint should set them.
SIZED = Variant(
    name="main",
    model=ModelSource(uri="s3://models/churn/v1"),
    replicas=3,
    resources=Resources(
        requests={"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        limits={"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"},
    ),
)


def test_operator_objects_for_a_fleet_have_no_critical_findings_beside_the_charts_policy(
    tmp_path: Path,
) -> None:
    """The fleet's Deployment, PodDisruptionBudget and Services, beside the model pods'
    NetworkPolicy the chart puts in their namespace."""
    chart = render(merge(namespaced("ml"), NETWORK_POLICIES))
    policies = [d for d in chart if d["kind"] == "NetworkPolicy"]
    model_policy = [p for p in policies if p["metadata"]["namespace"] == "ml"]
    assert len(model_policy) == 1

    findings = critical_findings([*fleet_objects(SIZED), *model_policy], tmp_path)

    assert _unexplained(findings, OPERATOR_ALLOWED) == []


def test_without_the_charts_policy_kube_score_misses_only_the_network_policy(
    tmp_path: Path,
) -> None:
    findings = critical_findings(fleet_objects(SIZED), tmp_path)

    assert _unexplained(findings, OPERATOR_ALLOWED) == [
        "Deployment / pod-networkpolicy / The pod does not have a matching NetworkPolicy"
    ]


def test_an_endpoint_without_resources_is_flagged_for_its_author(tmp_path: Path) -> None:
    """The operator invents no requests or limits: kube-score names what the author left out."""
    bare = SIZED.model_copy(update={"resources": None})

    findings = critical_findings(fleet_objects(bare), tmp_path)

    assert {check for _, check, _ in findings - OPERATOR_ALLOWED.keys()} == {
        "container-resources",
        "container-ephemeral-storage-request-and-limit",
        "pod-networkpolicy",
    }


CHART_VALUES: dict[str, tuple[dict[str, Any], dict[Finding, str]]] = {
    "defaults": ({}, {**CHART_ALLOWED, **NO_NETWORK_POLICY}),
    "ha-monitoring": (merge(HA, MONITORING), {**CHART_ALLOWED, **NO_NETWORK_POLICY}),
    "network-policies": (merge(namespaced("ml", "prod"), NETWORK_POLICIES), CHART_ALLOWED),
}


@pytest.mark.parametrize(("values", "allowed"), CHART_VALUES.values(), ids=CHART_VALUES.keys())
def test_the_chart_has_no_critical_findings(
    values: dict[str, Any], allowed: dict[Finding, str], tmp_path: Path
) -> None:
    findings = critical_findings(render(values), tmp_path)

    assert _unexplained(findings, allowed) == []


def test_every_allowance_has_a_one_line_reason() -> None:
    for allowed in (OPERATOR_ALLOWED, CHART_ALLOWED, NO_NETWORK_POLICY):
        for finding, reason in allowed.items():
            assert reason.strip() and "\n" not in reason, finding


def test_kube_score_is_the_pinned_version() -> None:
    printed = run([str(_kube_score()), "version"])
    assert binaries.KUBE_SCORE_VERSION.removeprefix("v") in printed
