"""Serial inference pipelines on the local control plane: the apiserver admits a pipeline
or refuses it saying what is allowed; the operator renders every step into the fleet's
pods; a pipeline rolls out and rolls back as one revision.
"""

from __future__ import annotations

import copy
import functools
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment

from fleetshift_devcluster.wait import wait_for
from fleetshift_operator import api
from support.operator_process import (
    OperatorProcess,
    annotate,
    endpoint_manifest,
    revision_of,
    serving_by_revision,
    set_spec,
    settled_on,
    status_of,
)
from support.specs import canary_routing, endpoint_spec

ROOT = Path(__file__).resolve().parents[2]
NAME = "churn"
SCALER = "fleetshift/example-scaler:dev"

Spec = dict[str, Any]


def scale_step(**extra: Any) -> dict[str, Any]:
    return {"name": "scale", "image": SCALER, "port": 8081, "contentType": "text/csv", **extra}


def piped(steps: list[dict[str, Any]], **kwargs: Any) -> Spec:
    spec = endpoint_spec(termination=2, timeout=1800, **kwargs)
    spec["variants"][0]["pipeline"] = steps
    return spec


def valid() -> Spec:
    return piped([scale_step(), {"name": "model"}])


def steps_of(spec: Spec) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = spec["variants"][0]["pipeline"]
    return result


def changed(change: Callable[[list[dict[str, Any]]], object]) -> Callable[[Spec], None]:
    def apply(spec: Spec) -> None:
        change(steps_of(spec))

    return apply


def replace_steps(*steps: dict[str, Any]) -> Callable[[Spec], None]:
    def apply(spec: Spec) -> None:
        spec["variants"][0]["pipeline"] = list(steps)

    return apply


TWO_TO_FIVE = "a pipeline has 2 to 5 steps, exactly one of them without an image"
INVALID: list[tuple[str, Callable[[Spec], None], str]] = [
    ("one step", replace_steps({"name": "model"}), TWO_TO_FIVE),
    (
        "six steps",
        replace_steps(
            *(scale_step(name=f"s{i}", port=8081 + i) for i in range(5)), {"name": "model"}
        ),
        "must have at most 5 items",
    ),
    ("no runtime step", replace_steps(scale_step(), scale_step(name="b", port=8082)), TWO_TO_FIVE),
    (
        "two runtime steps",
        replace_steps(scale_step(), {"name": "model"}, {"name": "again"}),
        TWO_TO_FIVE,
    ),
    (
        "duplicate names",
        replace_steps(scale_step(), {"name": "model"}, scale_step(port=8082)),
        "pipeline step names must be unique",
    ),
    (
        "duplicate ports",
        replace_steps(scale_step(), {"name": "model"}, scale_step(name="post")),
        "pipeline step ports must be unique: the steps share the pod's network",
    ),
    (
        "the runtime's port",
        replace_steps(scale_step(port=8080), {"name": "model"}),
        "ports 8080 and 9090 are the runtime's (inference and metrics)",
    ),
    (
        "the metrics port",
        replace_steps(scale_step(port=9090), {"name": "model"}),
        "ports 8080 and 9090 are the runtime's (inference and metrics)",
    ),
    (
        "a privileged port",
        replace_steps(scale_step(port=80), {"name": "model"}),
        "should be greater than or equal to 1024",
    ),
    (
        "an image without a port",
        changed(lambda steps: steps[0].pop("port")),
        "a pipeline step with an image needs the port it serves /ping and /invocations on",
    ),
    (
        "the runtime step with a port",
        changed(lambda steps: steps[1].update(port=8082)),
        "the runtime's step (no image) takes no port",
    ),
    (
        "the runtime step with env",
        changed(lambda steps: steps[1].update(env=[{"name": "A", "value": "1"}])),
        "the runtime's step (no image) takes its env and resources from the variant's",
    ),
    (
        "a container step named runtime",
        changed(lambda steps: steps[0].update(name="runtime")),
        "the container 'runtime' is the Fleetshift runtime's; give this step another name",
    ),
    (
        "an upper-case step name",
        changed(lambda steps: steps[0].update(name="Scale")),
        "should match",
    ),
    (
        "a content type that is no media type",
        changed(lambda steps: steps[0].update(contentType="csv")),
        "should match",
    ),
]


def submit(kube: Client, namespace: str, spec: Spec) -> str:
    name = f"ep-{uuid.uuid4().hex[:8]}"
    kube.create(endpoint_manifest(name, namespace, spec))
    return name


def test_a_pipeline_of_two_to_five_steps_is_admitted(
    kube: Client, namespace: str, endpoint_crd: str
) -> None:
    post = {"name": "label", "image": "labels:1", "port": 8090, "accept": "application/json"}
    cases: list[list[dict[str, Any]]] = [
        [scale_step(), {"name": "model"}],
        [{"name": "model", "accept": "text/csv"}, post],
        [
            scale_step(env=[{"name": "SCALER_STD", "value": "4"}]),
            scale_step(name="clip", port=8082, resources={"limits": {"memory": "64Mi"}}),
            scale_step(name="impute", port=8083),
            {"name": "model"},
            post,
        ],
    ]
    for steps in cases:
        submit(kube, namespace, piped(copy.deepcopy(steps)))


def test_the_example_pipeline_endpoint_is_admitted_as_it_is(
    kube: Client, namespace: str, endpoint_crd: str
) -> None:
    document = yaml.safe_load((ROOT / "examples" / "pipeline" / "churn-pipeline.yaml").read_text())
    kube.create(endpoint_manifest(document["metadata"]["name"], namespace, document["spec"]))
    assert api.EndpointSpec.model_validate(document["spec"]).variants[0].pipeline


@pytest.mark.parametrize(
    ("change", "expected"),
    [pytest.param(change, expected, id=case) for case, change, expected in INVALID],
)
def test_a_wrong_pipeline_is_refused_saying_what_is_allowed(
    kube: Client,
    namespace: str,
    endpoint_crd: str,
    change: Callable[[Spec], None],
    expected: str,
) -> None:
    spec = valid()
    change(spec)

    with pytest.raises(ApiError) as refused:
        submit(kube, namespace, spec)

    assert refused.value.status.code == 422
    assert expected in (refused.value.status.message or ""), refused.value.status.message


spec_with = functools.partial(piped, [scale_step(), {"name": "model"}])


def containers(kube: Client, namespace: str, revision: str) -> list[dict[str, Any]]:
    deployment = kube.get(Deployment, f"{NAME}-main-{revision}", namespace=namespace)
    pod = deployment.to_dict()["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = pod["containers"]
    return found


def pipeline_env(container: dict[str, Any]) -> list[dict[str, Any]]:
    value = next(e["value"] for e in container["env"] if e["name"] == "FLEETSHIFT_PIPELINE")
    steps: list[dict[str, Any]] = json.loads(value)
    return steps


def create_serving_four(kube: Client, namespace: str, spec: Spec, message: str) -> str:
    """Create the Endpoint from ``spec``; its revision, once its four pods serve."""
    kube.create(endpoint_manifest(NAME, namespace, spec))
    revision = revision_of(spec)
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {revision: 4},
        timeout=60,
        message=message,
    )
    return revision


def canary_to(kube: Client, namespace: str, blue: str, update: Spec, message: str) -> str:
    """Update the Endpoint to ``update``, a new revision, and wait for its canary (three blue
    pods and one green serving); green's revision."""
    green = revision_of(update)
    assert green != blue
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {blue: 3, green: 1},
        timeout=30,
        message=message,
    )
    return green


def test_adding_a_pipeline_rolls_out_one_new_revision_whose_pods_hold_every_step(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    plain = endpoint_spec(termination=2, timeout=1800, replicas=4)
    blue = create_serving_four(kube, namespace, plain, "the plain variant serving")
    assert [c["name"] for c in containers(kube, namespace, blue)] == ["runtime"]
    update = spec_with(replicas=4)

    green = canary_to(
        kube, namespace, blue, update, "the pipeline's canary: one pod with every step"
    )
    wait_for(
        lambda: settled_on(kube, NAME, namespace, green),
        timeout=60,
        message="the pipeline InService, the plain fleet retired",
    )
    status = status_of(kube, NAME, namespace)
    assert status["lastDeployment"]["revision"] == green
    assert status["lastDeployment"]["outcome"] == "Succeeded"
    runtime, scale = containers(kube, namespace, green)
    assert (runtime["name"], scale["name"], scale["image"]) == ("runtime", "scale", SCALER)
    assert pipeline_env(runtime) == [
        {"name": "scale", "port": 8081, "contentType": "text/csv"},
        {"name": "model"},
    ]
    assert scale["securityContext"] == runtime["securityContext"]
    assert {"name": "SAGEMAKER_BIND_TO_PORT", "value": "8081"} in scale["env"]


def test_a_change_to_one_step_is_a_new_revision_of_the_pod_and_rolls_back_whole(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    slow = canary_routing(wait=300)
    blue = create_serving_four(
        kube, namespace, spec_with(replicas=4, routing=slow), "the pipeline serving"
    )
    update = piped(
        [scale_step(env=[{"name": "SCALER_STD", "value": "4"}]), {"name": "model"}],
        replicas=4,
        routing=slow,
    )
    green = canary_to(kube, namespace, blue, update, "the changed step's canary")
    assert {"name": "SCALER_STD", "value": "4"} in containers(kube, namespace, green)[1]["env"]
    assert status_of(kube, NAME, namespace)["candidateRevision"] == green

    annotate(kube, NAME, namespace, {"fleetshift.dev/abort": "req-1"})

    wait_for(
        lambda: settled_on(kube, NAME, namespace, blue),
        timeout=30,
        message="rolled back to the first pipeline, whole",
    )
    status = status_of(kube, NAME, namespace)
    assert status["activeRevision"] == blue
    assert status["lastDeployment"]["outcome"] == "RolledBack"
    assert serving_by_revision(kube, namespace, NAME) == {blue: 4}
    assert not any(e["name"] == "SCALER_STD" for e in containers(kube, namespace, blue)[1]["env"])
