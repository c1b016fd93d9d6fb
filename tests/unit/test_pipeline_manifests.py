"""Serial inference pipelines in the API and the pod template: one pod, one revision.

A variant without a pipeline renders exactly as before pipelines existed (same revision,
same bytes), so no running fleet is redeployed by an operator upgrade.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fleetshift_operator import api, manifests
from fleetshift_operator.api import PipelineStep, Variant
from fleetshift_operator.crd import build_crd
from fleetshift_operator.planning.names import calculate_revision
from fleetshift_operator.planning.types import FleetPlan
from fleetshift_runtime.pipeline import parse_pipeline

ENDPOINT = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}}

WITHOUT_PIPELINE: dict[str, dict[str, Any]] = {
    "plain": {"name": "main", "model": {"uri": "s3://m/1"}, "replicas": 3},
    "everything": {
        "name": "AllTraffic",
        "model": {"uri": "s3://m/1", "sha256": "a" * 64},
        "image": "r:1",
        "env": [{"name": "X", "value": "1"}],
        "resources": {"requests": {"cpu": "100m"}},
        "dataCapture": {"destination": "pvc://cap/x"},
        "podAnnotations": {"a": "b"},
        "nodeSelector": {"k": "v"},
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "spread": {"enabled": False},
    },
    "multi-model": {"name": "multi", "model": {"uri": "s3://m/", "multiModel": {}}},
}

PINNED_DEPLOYMENTS = {
    ("plain", 1): "987ce0cf6f789ac0",
    ("plain", 2): "27a85c9c204e52ca",
    ("plain", 3): "ac702e45ab6f3d29",
    ("plain", 4): "09db1cd5aa9bf975",
    ("everything", 1): "e7fbe6dc40c7ade6",
    ("everything", 2): "478814b991eddc7a",
    ("everything", 3): "4344ee16ae0d8ea8",
    ("everything", 4): "1ca7a0c03059b09e",
    ("multi-model", 1): "fb60e7014d616fb5",
    ("multi-model", 2): "4e3ef33e1bab8263",
    ("multi-model", 3): "1aa9cc83b618ad64",
    ("multi-model", 4): "1ad4c8e879992cbc",
}
"""sha256 of each Deployment's JSON, rendered by the operator before pipelines existed.
A change here restarts running pods: it must come with a new pod template (or revision)."""

PINNED_REVISIONS = {"plain": "827f538525", "everything": "1613532bce", "multi-model": "866b6651b2"}


def deployment(variant: Variant, pod_template: int = manifests.POD_TEMPLATE) -> dict[str, Any]:
    fleet = FleetPlan(variant.name, "abc", "green", 3, 0)
    return manifests.get_deployment(
        ENDPOINT, variant, fleet, include_replicas=True, pod_template=pod_template
    )


def with_pipeline(**extra: Any) -> Variant:
    return Variant.model_validate(
        {
            "name": "main",
            "model": {"uri": "s3://m/1"},
            "pipeline": [
                {"name": "scale", "image": "fleetshift/example-scaler:dev", "port": 8081,
                 "contentType": "text/csv", "env": [{"name": "SCALER_STD", "value": "4"}],
                 "resources": {"requests": {"cpu": "50m"}}},
                {"name": "model"},
                {"name": "label", "image": "labels:1", "port": 8082, "accept": "text/csv"},
            ],
            **extra,
        }
    )  # fmt: skip


@pytest.mark.parametrize(("name", "pod_template"), sorted(PINNED_DEPLOYMENTS))
def test_a_variant_without_a_pipeline_renders_byte_for_byte_as_before(
    name: str, pod_template: int
) -> None:
    rendered = json.dumps(deployment(Variant.model_validate(WITHOUT_PIPELINE[name]), pod_template))
    digest = hashlib.sha256(rendered.encode()).hexdigest()[:16]
    assert digest == PINNED_DEPLOYMENTS[(name, pod_template)]


@pytest.mark.parametrize("name", sorted(PINNED_REVISIONS))
def test_a_variant_without_a_pipeline_keeps_its_revision(name: str) -> None:
    variant = Variant.model_validate(WITHOUT_PIPELINE[name])
    assert calculate_revision(variant) == PINNED_REVISIONS[name]


def test_a_pipeline_and_each_change_to_it_is_a_new_revision_of_the_whole_pod() -> None:
    plain = Variant.model_validate(WITHOUT_PIPELINE["plain"])
    piped = with_pipeline()
    assert calculate_revision(piped) != calculate_revision(plain)
    steps = [s.model_copy() for s in piped.pipeline or []]
    steps[0] = steps[0].model_copy(update={"image": "fleetshift/example-scaler:v2"})
    new_image = piped.model_copy(update={"pipeline": steps})
    assert calculate_revision(new_image) != calculate_revision(piped)
    assert calculate_revision(piped.model_copy(update={"replicas": 9})) == calculate_revision(piped)


def test_each_step_with_an_image_is_a_hardened_container_told_its_port() -> None:
    pod = deployment(with_pipeline())["spec"]["template"]["spec"]
    runtime, scale, label = pod["containers"]
    assert [runtime["name"], scale["name"], label["name"]] == ["runtime", "scale", "label"]
    for step in (scale, label):
        assert step["securityContext"] == runtime["securityContext"]
        assert step["securityContext"]["readOnlyRootFilesystem"] is True
        assert step["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert step["lifecycle"] == runtime["lifecycle"], "steps drain as long as the runtime"
        mount = step["volumeMounts"][0]
        assert mount["mountPath"] == "/tmp"
        assert {"name": mount["name"], "emptyDir": {}} in pod["volumes"]
        assert "readinessProbe" not in step, "readiness is the runtime's /ping, over all steps"
    assert scale["env"] == [
        {"name": "SAGEMAKER_BIND_TO_PORT", "value": "8081"},
        {"name": "SCALER_STD", "value": "4"},
    ]
    assert scale["resources"] == {"requests": {"cpu": "50m"}}
    assert label["env"] == [{"name": "SAGEMAKER_BIND_TO_PORT", "value": "8082"}]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/ping"


def test_the_runtime_is_told_the_steps_in_order_as_the_runtime_reads_them() -> None:
    runtime = deployment(with_pipeline())["spec"]["template"]["spec"]["containers"][0]
    value = next(e["value"] for e in runtime["env"] if e["name"] == "FLEETSHIFT_PIPELINE")
    steps = parse_pipeline(value)
    assert [(s.name, s.port, s.content_type, s.accept) for s in steps] == [
        ("scale", 8081, "text/csv", ""),
        ("model", None, "", ""),
        ("label", 8082, "", "text/csv"),
    ]


def test_the_reserved_ports_are_the_runtime_containers_ports() -> None:
    assert api.RUNTIME_PORTS == (manifests.HTTP_PORT, manifests.METRICS_PORT)
    assert api.MAX_PIPELINE_STEPS == 5
    assert api.MIN_PIPELINE_STEPS == 2


def test_the_crd_carries_the_pipeline_rules_with_their_messages() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    variant = spec["properties"]["variants"]["items"]
    pipeline = variant["properties"]["pipeline"]
    assert (pipeline["minItems"], pipeline["maxItems"]) == (2, 5)
    messages = [rule["message"] for rule in variant["x-kubernetes-validations"]]
    assert any(m.startswith("a pipeline has 2 to 5 steps") for m in messages)
    assert "pipeline step names must be unique" in messages
    step = pipeline["items"]
    step_messages = [rule["message"] for rule in step["x-kubernetes-validations"]]
    assert any("ports 8080 and 9090 are the runtime's" in m for m in step_messages)
    assert step["properties"]["port"]["minimum"] == 1024


def test_the_models_refuse_a_one_step_pipeline_a_privileged_port_and_a_bad_name() -> None:
    one_step = {"name": "m", "model": {"uri": "s3://m/1"}, "pipeline": [{"name": "model"}]}
    with pytest.raises(ValidationError, match="at least 2 items"):
        Variant.model_validate(one_step)
    with pytest.raises(ValidationError, match="greater than or equal to 1024"):
        PipelineStep(name="scale", image="s:1", port=80)
    with pytest.raises(ValidationError, match="should match pattern"):
        PipelineStep(name="Scale_Step", image="s:1", port=8081)


STEP_NAMES = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True).filter(lambda n: n != "runtime")


@st.composite
def pipelines(draw: st.DrawFn) -> list[PipelineStep]:
    size = draw(st.integers(2, 5))
    names = draw(st.lists(STEP_NAMES, min_size=size, max_size=size, unique=True))
    ports = draw(
        st.lists(
            st.integers(1024, 65535).filter(lambda p: p not in api.RUNTIME_PORTS),
            min_size=size - 1,
            max_size=size - 1,
            unique=True,
        )
    )
    model_at = draw(st.integers(0, size - 1))
    media = st.sampled_from([None, "text/csv", "application/json", "application/jsonlines"])
    steps = []
    for index, name in enumerate(names):
        common = {"contentType": draw(media), "accept": draw(media)}
        if index == model_at:
            steps.append(PipelineStep(name=name, **common))
        else:
            steps.append(PipelineStep(name=name, image=f"{name}:1", port=ports.pop(), **common))
    return steps


@settings(max_examples=60, deadline=None)
@given(pipelines())
def test_any_valid_pipeline_renders_one_container_per_image_step_and_the_runtime_reads_it(
    steps: list[PipelineStep],
) -> None:
    variant = Variant(name="main", model=api.ModelSource(uri="s3://m/1"), pipeline=steps)
    pod = deployment(variant)["spec"]["template"]["spec"]
    containers = pod["containers"]
    assert [c["name"] for c in containers] == ["runtime"] + [s.name for s in steps if s.image]
    volumes = [v["name"] for v in pod["volumes"]]
    assert len(volumes) == len(set(volumes)), "volume names are unique"
    env = {e["name"]: e["value"] for e in containers[0]["env"] if "value" in e}
    read = parse_pipeline(env["FLEETSHIFT_PIPELINE"])
    assert [(s.name, s.port) for s in read] == [(s.name, s.port) for s in steps]
    assert [s.content_type or None for s in read] == [s.contentType for s in steps]
    assert [s.accept or None for s in read] == [s.accept for s in steps]
