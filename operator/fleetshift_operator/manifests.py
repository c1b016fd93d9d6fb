"""Pure builders of the objects an Endpoint owns. No I/O: dicts in, dicts out.

Names and labels (a contract with the routers, dashboards and alarms):

- fleet Deployment ``<endpoint>-<variant>-<revision>`` (see ``planning.names.fleet_name``),
  labelled ``fleetshift.dev/endpoint``, ``/variant``, ``/revision``;
- the stable Service ``<endpoint>`` selects pods of *every* fleet of the endpoint
  that carry ``fleetshift.dev/serving: "true"`` (the Replicas router sets it);
- per-fleet Services ``<fleet>`` (the GatewayAPI router's backends, and the Replicas
  router's shadow targets);
- an HPA per fleet with autoscaling, named like its Deployment;
- the ConfigMap ``<endpoint>-shadows`` naming the shadows production pods copy requests
  to (Replicas router), mounted in every pod of template 3 and later.
"""

from __future__ import annotations

import json
from typing import Any

from fleetshift_operator.api import DataCapture, MultiModel, PipelineStep, Variant
from fleetshift_operator.planning.names import fleet_name
from fleetshift_operator.planning.types import AutoscalingPlan, FleetPlan

Manifest = dict[str, Any]

LABEL_ENDPOINT = "fleetshift.dev/endpoint"
LABEL_VARIANT = "fleetshift.dev/variant"
LABEL_REVISION = "fleetshift.dev/revision"
LABEL_SERVING = "fleetshift.dev/serving"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_POD_TEMPLATE = "fleetshift.dev/pod-template"
DRAIN_SECONDS = 5
"""How long a deleted pod keeps serving before it is asked to stop (its preStop sleep): the
time for its removal from the EndpointSlices to reach every kube-proxy."""
POD_TEMPLATE = 4
"""The generation of the pod template this operator writes. 2: restricted pods (non-root,
read-only root with an emptyDir at /tmp, no capabilities, no privilege escalation, seccomp
RuntimeDefault) spread over nodes and zones. 3: the Endpoint's shadows ConfigMap mounted
(optional) and named in ``FLEETSHIFT_MIRROR_FILE``, so the runtime copies requests to
shadow variants without a mesh. 4: a preStop sleep of :data:`DRAIN_SECONDS`, so a pod
being deleted keeps serving while kube-proxy learns it is gone (measured on the real node:
without it, a rollback that deletes green reset a few connections kube-proxy still sent
there). A fleet created with an older template keeps
it: changing it in place would restart the pods outside any guardrail, so the new template
arrives with the variant's next revision, through its deployment policy."""
MANAGER = "fleetshift"
DEFAULT_IMAGE = "ghcr.io/fleetshift/runtime:0.1.0"
HTTP_PORT = 8080
METRICS_PORT = 9090
MIRROR_FOLDER = "/etc/fleetshift/shadows"
CAPTURE_FOLDER = "/var/fleetshift/capture"
MIRROR_KEY = "mirror.json"


def owner_reference(endpoint: Manifest) -> dict[str, Any]:
    """An owner reference to the Endpoint, so garbage collection follows it."""
    metadata = endpoint["metadata"]
    return {
        "apiVersion": endpoint.get("apiVersion", "fleetshift.dev/v1alpha1"),
        "kind": "Endpoint",
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def fleet_labels(endpoint: str, variant: str, revision: str) -> dict[str, str]:
    """The labels that identify one fleet (and select its pods)."""
    return {LABEL_ENDPOINT: endpoint, LABEL_VARIANT: variant, LABEL_REVISION: revision}


def _metadata(name: str, namespace: str, labels: dict[str, str], owner: dict[str, Any]) -> Manifest:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {**labels, LABEL_MANAGED_BY: MANAGER},
        "ownerReferences": [owner],
    }


def get_deployment(
    endpoint: Manifest,
    variant: Variant,
    fleet: FleetPlan,
    *,
    include_replicas: bool,
    pod_template: int = POD_TEMPLATE,
) -> Manifest:
    """The Deployment of one fleet. ``include_replicas`` is False once an HPA owns
    the count, so server-side apply leaves it to the HPA. ``pod_template`` is the
    generation of the pod template (:data:`POD_TEMPLATE`, or an existing fleet's own).

    >>> from fleetshift_operator.api import ModelSource
    >>> from fleetshift_operator.planning.types import FleetPlan
    >>> ep = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}}
    >>> v = Variant(name="main", model=ModelSource(uri="s3://m/1"), replicas=3)
    >>> d = get_deployment(ep, v, FleetPlan("main", "abc", "green", 3, 0), include_replicas=True)
    >>> d["metadata"]["name"], d["spec"]["replicas"]
    ('churn-main-abc', 3)
    >>> d["spec"]["selector"]["matchLabels"]["fleetshift.dev/revision"]
    'abc'
    >>> pod = d["spec"]["template"]["spec"]
    >>> pod["securityContext"]["seccompProfile"]
    {'type': 'RuntimeDefault'}
    >>> pod["containers"][0]["securityContext"]["capabilities"]
    {'drop': ['ALL']}
    >>> [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    ['kubernetes.io/hostname', 'topology.kubernetes.io/zone']
    >>> pod["volumes"][1]
    {'name': 'shadows', 'configMap': {'name': 'churn-shadows', 'optional': True}}
    >>> pod["containers"][0]["lifecycle"]
    {'preStop': {'sleep': {'seconds': 5}}}
    >>> old = get_deployment(ep, v, FleetPlan("main", "abc", "green", 3, 0),
    ...                      include_replicas=True, pod_template=1)["spec"]["template"]["spec"]
    >>> sorted(old)
    ['containers']
    """
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    labels = fleet_labels(name, variant.name, fleet.revision)
    env = [
        {"name": "FLEETSHIFT_MODEL_URI", "value": variant.model.uri},
        {"name": "FLEETSHIFT_PORT", "value": str(HTTP_PORT)},
        {"name": "FLEETSHIFT_METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "FLEETSHIFT_NAMESPACE", "value": namespace},
        {"name": "FLEETSHIFT_ENDPOINT", "value": name},
        {"name": "FLEETSHIFT_VARIANT", "value": variant.name},
        {"name": "FLEETSHIFT_REVISION", "value": fleet.revision},
    ]
    if variant.model.sha256:
        env.append({"name": "FLEETSHIFT_MODEL_SHA256", "value": variant.model.sha256})
    env += _multi_model_env(variant.model.multiModel)
    env += _capture_env(variant.dataCapture)
    env += _pipeline_env(variant.pipeline)
    env += [e.model_dump(exclude_none=True) for e in variant.env]
    container: Manifest = {
        "name": "runtime",
        "image": variant.image or DEFAULT_IMAGE,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/ping", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
    }
    if variant.resources is not None:
        container["resources"] = variant.resources.model_dump(exclude_none=True)
    pod_spec: Manifest = {"containers": [container]}
    if pod_template >= 2:
        _restrict(pod_spec, container)
    capture = variant.dataCapture
    if capture is not None and capture.destination.startswith("pvc://"):
        claim = capture.destination.removeprefix("pvc://").split("/", 1)[0]
        pod_spec.setdefault("volumes", []).append(
            {"name": "capture", "persistentVolumeClaim": {"claimName": claim}}
        )
        container.setdefault("volumeMounts", []).append(
            {"name": "capture", "mountPath": CAPTURE_FOLDER}
        )
    if pod_template >= 3:
        pod_spec["volumes"].append(
            {
                "name": "shadows",
                "configMap": {"name": mirror_config_name(name), "optional": True},
            }
        )
        container["volumeMounts"].append(
            {"name": "shadows", "mountPath": MIRROR_FOLDER, "readOnly": True}
        )
        env.append({"name": "FLEETSHIFT_MIRROR_FILE", "value": f"{MIRROR_FOLDER}/{MIRROR_KEY}"})
    if pod_template >= 2:
        spread = variant.spread
        if spread.enabled:
            pod_spec["topologySpreadConstraints"] = [
                {
                    "maxSkew": 1,
                    "topologyKey": key,
                    "whenUnsatisfiable": spread.whenUnsatisfiable,
                    "labelSelector": {"matchLabels": labels},
                }
                for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
            ]
    if pod_template >= 4:
        # Kubernetes' own sleep action: nothing to run in the image (1.30+).
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}
    _add_pipeline_steps(pod_spec, container, variant.pipeline or [])
    if variant.nodeSelector:
        pod_spec["nodeSelector"] = dict(variant.nodeSelector)
    if variant.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in variant.tolerations]
    spec: Manifest = {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(METRICS_PORT),
                    **variant.podAnnotations,
                },
            },
            "spec": pod_spec,
        },
    }
    if include_replicas:
        spec["replicas"] = fleet.replicas
    deployment_metadata = _metadata(
        fleet_name(name, variant.name, fleet.revision), namespace, labels, owner_reference(endpoint)
    )
    if pod_template >= 2:
        deployment_metadata["annotations"] = {ANNOTATION_POD_TEMPLATE: str(pod_template)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": deployment_metadata,
        "spec": spec,
    }


def _restrict(pod_spec: Manifest, container: Manifest) -> None:
    """The Kubernetes ``restricted`` Pod Security Standard, and a writable ``/tmp`` (the
    runtime's model cache and metrics files) on a read-only root."""
    pod_spec["securityContext"] = {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod_spec["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]


def _pipeline_env(steps: list[PipelineStep] | None) -> list[Manifest]:
    """The runtime's ``FLEETSHIFT_PIPELINE``: the steps in order, the one without a port
    being the runtime's model (none without a pipeline).

    >>> from fleetshift_operator.api import PipelineStep as S
    >>> _pipeline_env([S(name="scale", image="scaler:1", port=8081, contentType="text/csv"),
    ...                S(name="model")])[0]["value"]
    '[{"name":"scale","port":8081,"contentType":"text/csv"},{"name":"model"}]'
    """
    if not steps:
        return []
    described = []
    for step in steps:
        entry: dict[str, Any] = {"name": step.name}
        if step.image is not None:
            entry["port"] = step.port
        if step.contentType:
            entry["contentType"] = step.contentType
        if step.accept:
            entry["accept"] = step.accept
        described.append(entry)
    return [{"name": "FLEETSHIFT_PIPELINE", "value": json.dumps(described, separators=(",", ":"))}]


def _add_pipeline_steps(pod_spec: Manifest, runtime: Manifest, steps: list[PipelineStep]) -> None:
    """A container per pipeline step with an image, hardened as the runtime's is (the same
    securityContext, a writable ``/tmp`` of its own on a read-only root, the same preStop
    drain, so a step serves as long as the runtime that calls it), told its port in
    ``SAGEMAKER_BIND_TO_PORT``. Readiness is the runtime's: its ``/ping`` asks every
    step's.

    >>> from fleetshift_operator.api import ModelSource, PipelineStep as S
    >>> from fleetshift_operator.planning.types import FleetPlan
    >>> ep = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}}
    >>> v = Variant(name="main", model=ModelSource(uri="s3://m/1"),
    ...             pipeline=[S(name="scale", image="scaler:1", port=8081), S(name="model")])
    >>> pod = get_deployment(ep, v, FleetPlan("main", "abc", "green", 1, 0),
    ...                      include_replicas=True)["spec"]["template"]["spec"]
    >>> [c["name"] for c in pod["containers"]]
    ['runtime', 'scale']
    >>> pod["containers"][1]["env"]
    [{'name': 'SAGEMAKER_BIND_TO_PORT', 'value': '8081'}]
    >>> pod["containers"][1]["volumeMounts"], pod["volumes"][-1]
    ([{'name': 'step-1-tmp', 'mountPath': '/tmp'}], {'name': 'step-1-tmp', 'emptyDir': {}})
    """
    for index, step in enumerate(steps, 1):
        if step.image is None:
            continue
        volume = f"step-{index}-tmp"
        container: Manifest = {
            "name": step.name,
            "image": step.image,
            "env": [
                {"name": "SAGEMAKER_BIND_TO_PORT", "value": str(step.port)},
                *(e.model_dump(exclude_none=True) for e in step.env or []),
            ],
        }
        if step.resources is not None:
            container["resources"] = step.resources.model_dump(exclude_none=True)
        if "securityContext" in runtime:
            container["securityContext"] = dict(runtime["securityContext"])
            pod_spec.setdefault("volumes", []).append({"name": volume, "emptyDir": {}})
            container["volumeMounts"] = [{"name": volume, "mountPath": "/tmp"}]
        if "lifecycle" in runtime:
            container["lifecycle"] = runtime["lifecycle"]
        pod_spec["containers"].append(container)


def mirror_config_name(endpoint: str) -> str:
    """The ConfigMap naming an Endpoint's shadows (see :func:`get_mirror_config`)."""
    return f"{endpoint}-shadows"


def calculate_mirror_targets(endpoint: Manifest, fleets: list[FleetPlan]) -> list[FleetPlan]:
    """The fleet of each shadow variant that copies go to: its green fleet while it has
    one (a shadow's deployment is judged on the copies its new revision answers; no caller
    is at risk), else its fleet with the larger share.

    >>> from fleetshift_operator.planning.types import FleetPlan
    >>> ep = {"spec": {"variants": [{"name": "a"}, {"name": "s", "shadow": {}}]}}
    >>> plan = [FleetPlan("a", "r1", "blue", 2, 100), FleetPlan("s", "r2", "blue", 1, 75),
    ...         FleetPlan("s", "r3", "green", 1, 25)]
    >>> [f.revision for f in calculate_mirror_targets(ep, plan)]
    ['r3']
    >>> [f.revision for f in calculate_mirror_targets(ep, plan[:2])]
    ['r2']
    """
    shadows = [
        v["name"]
        for v in endpoint.get("spec", {}).get("variants", [])
        if v.get("shadow") is not None
    ]
    targets = []
    for shadow in shadows:
        mine = [f for f in fleets if f.variant == shadow]
        if mine:
            targets.append(max(mine, key=lambda f: (f.role == "green", f.traffic_percent)))
    return targets


def calculate_pinnable_variants(endpoint: Manifest, fleets: list[FleetPlan]) -> list[str]:
    """The variants a ``TargetVariant`` request may name, when there is a choice: those
    that serve callers (not shadows) and have a fleet, if there are two or more.

    >>> from fleetshift_operator.planning.types import FleetPlan
    >>> ep = {"spec": {"variants": [{"name": "a"}, {"name": "b"}, {"name": "s", "shadow": {}}]}}
    >>> plan = [FleetPlan("a", "r1", "blue", 2, 100), FleetPlan("b", "r2", "blue", 1, 100),
    ...         FleetPlan("s", "r3", "blue", 1, 100)]
    >>> calculate_pinnable_variants(ep, plan), calculate_pinnable_variants(ep, plan[:1])
    (['a', 'b'], [])
    """
    serving = [
        v["name"]
        for v in endpoint.get("spec", {}).get("variants", [])
        if v.get("shadow") is None and any(f.variant == v["name"] for f in fleets)
    ]
    return serving if len(serving) > 1 else []


def variant_service_name(endpoint: str, variant: str) -> str:
    """The Service over one variant's serving pods (``<endpoint>-<variant>-serving``:
    ``serving`` is never a revision, which is hexadecimal)."""
    return fleet_name(endpoint, variant, "serving")


def get_variant_service(endpoint: Manifest, variant: str) -> Manifest:
    """A Service over one variant's pods that serve (the Replicas router's serving label),
    so a ``TargetVariant`` request reaches the variant split as its current step splits it.

    >>> ep = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}}
    >>> service = get_variant_service(ep, "Challenger")
    >>> service["metadata"]["name"], service["spec"]["selector"][LABEL_SERVING]
    ('churn-challenger-serving', 'true')
    """
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    labels = {LABEL_ENDPOINT: name, LABEL_VARIANT: variant}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            variant_service_name(name, variant), namespace, labels, owner_reference(endpoint)
        ),
        "spec": {
            "selector": {**labels, LABEL_SERVING: "true"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def get_mirror_config(
    endpoint: Manifest, targets: list[FleetPlan], pinnable: list[str] | None = None
) -> Manifest:
    """The ConfigMap the runtime reads its peers from (``FLEETSHIFT_MIRROR_FILE``): each
    shadow's target fleet Service with its variant's ``samplingPercent``, and each
    ``pinnable`` variant's Service (a request naming another variant is forwarded there).
    Mounted as a volume, it reaches running pods without a restart (the kubelet updates it
    within about a minute).

    >>> import json
    >>> from fleetshift_operator.planning.types import FleetPlan
    >>> ep = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"},
    ...       "spec": {"variants": [{"name": "s", "shadow": {"samplingPercent": 20}}]}}
    >>> cm = get_mirror_config(ep, [FleetPlan("s", "r2", "blue", 1, 100)])
    >>> cm["metadata"]["name"], json.loads(cm["data"]["mirror.json"])["shadows"]
    ... # doctest: +NORMALIZE_WHITESPACE
    ('churn-shadows', [{'revision': 'r2', 'samplingPercent': 20,
                        'url': 'http://churn-s-r2.ml.svc:80', 'variant': 's'}])
    """
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    sampling = {
        v["name"]: (v.get("shadow") or {}).get("samplingPercent", 100)
        for v in endpoint.get("spec", {}).get("variants", [])
    }
    shadows = [
        {
            "variant": fleet.variant,
            "revision": fleet.revision,
            "url": f"http://{fleet_name(name, fleet.variant, fleet.revision)}.{namespace}.svc:80",
            "samplingPercent": sampling.get(fleet.variant, 100),
        }
        for fleet in targets
    ]
    variants = {
        v: f"http://{variant_service_name(name, v)}.{namespace}.svc:80" for v in pinnable or []
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            mirror_config_name(name), namespace, {LABEL_ENDPOINT: name}, owner_reference(endpoint)
        ),
        "data": {
            MIRROR_KEY: json.dumps({"shadows": shadows, "variants": variants}, sort_keys=True)
        },
    }


def get_disruption_budget(endpoint: Manifest, variant: Variant, fleet: FleetPlan) -> Manifest:
    """The PodDisruptionBudget of one fleet, named like its Deployment: a node drain takes
    at most ``maxUnavailable`` of its pods at a time. Unhealthy pods may always be
    evicted, so a fleet that cannot become Ready never blocks a drain.

    >>> from fleetshift_operator.api import ModelSource
    >>> from fleetshift_operator.planning.types import FleetPlan
    >>> ep = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}}
    >>> v = Variant(name="main", model=ModelSource(uri="s3://m/1"))
    >>> pdb = get_disruption_budget(ep, v, FleetPlan("main", "abc", "blue", 3, 100))
    >>> pdb["metadata"]["name"], pdb["spec"]["maxUnavailable"]
    ('churn-main-abc', 1)
    >>> pdb["spec"]["selector"]["matchLabels"]["fleetshift.dev/revision"]
    'abc'
    """
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    labels = fleet_labels(name, variant.name, fleet.revision)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
            fleet_name(name, variant.name, fleet.revision),
            namespace,
            labels,
            owner_reference(endpoint),
        ),
        "spec": {
            "maxUnavailable": variant.disruptionBudget.maxUnavailable,
            "selector": {"matchLabels": labels},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def get_stable_service(endpoint: Manifest) -> Manifest:
    """The Service clients call: every serving pod of every fleet of the endpoint."""
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    selector = {LABEL_ENDPOINT: name, LABEL_SERVING: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, {LABEL_ENDPOINT: name}, owner_reference(endpoint)),
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def get_fleet_service(endpoint: Manifest, fleet: FleetPlan) -> Manifest:
    """A Service over one fleet's pods (a Gateway API backend)."""
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    labels = fleet_labels(name, fleet.variant, fleet.revision)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            fleet_name(name, fleet.variant, fleet.revision),
            namespace,
            labels,
            owner_reference(endpoint),
        ),
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def get_hpa(endpoint: Manifest, fleet: FleetPlan, scaling: AutoscalingPlan) -> Manifest:
    """An autoscaling/v2 HPA for one fleet: CPU and/or invocations per replica.

    >>> from fleetshift_operator.planning.types import AutoscalingPlan, FleetPlan
    >>> ep = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}}
    >>> plan = AutoscalingPlan(3, 10, 60, 50.0, 300, 0)
    >>> hpa = get_hpa(ep, FleetPlan("main", "abc", "green", 4, 100), plan)
    >>> hpa["spec"]["minReplicas"], [m["type"] for m in hpa["spec"]["metrics"]]
    (3, ['Resource', 'Pods'])
    """
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    target = fleet_name(name, fleet.variant, fleet.revision)
    metrics: list[Manifest] = []
    if scaling.target_cpu_percent is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": scaling.target_cpu_percent,
                    },
                },
            }
        )
    if scaling.target_invocations_per_replica is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "fleetshift_invocations_per_second"},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": _quantity(scaling.target_invocations_per_replica),
                    },
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(
            target,
            namespace,
            fleet_labels(name, fleet.variant, fleet.revision),
            owner_reference(endpoint),
        ),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": scaling.scale_in_stabilization_seconds},
                "scaleUp": {"stabilizationWindowSeconds": scaling.scale_out_stabilization_seconds},
            },
        },
    }


def _capture_env(capture: DataCapture | None) -> list[Manifest]:
    """The runtime's data capture settings (a PVC destination is the folder it is
    mounted at).

    >>> env = _capture_env(DataCapture(destination="pvc://captures/churn", samplingPercent=5))
    >>> {e["name"].removeprefix("FLEETSHIFT_CAPTURE_"): e["value"] for e in env}
    ... # doctest: +NORMALIZE_WHITESPACE
    {'DESTINATION': '/var/fleetshift/capture/churn', 'SAMPLING_PERCENT': '5',
     'REQUEST': 'true', 'RESPONSE': 'true', 'CONTENT_TYPES': ''}
    """
    if capture is None:
        return []
    destination = capture.destination
    if destination.startswith("pvc://"):
        path = destination.removeprefix("pvc://").partition("/")[2].strip("/")
        destination = f"{CAPTURE_FOLDER}/{path}" if path else CAPTURE_FOLDER
    values = {
        "DESTINATION": destination,
        "SAMPLING_PERCENT": str(capture.samplingPercent),
        "REQUEST": str(capture.captureRequest).lower(),
        "RESPONSE": str(capture.captureResponse).lower(),
        "CONTENT_TYPES": ",".join(capture.contentTypes),
    }
    return [{"name": f"FLEETSHIFT_CAPTURE_{key}", "value": value} for key, value in values.items()]


def _multi_model_env(multi: MultiModel | None) -> list[Manifest]:
    """The runtime's settings for a multi-model prefix (none for one model).

    >>> [e["value"] for e in _multi_model_env(MultiModel(maxLoadedModels=5))]
    ['true', '5', '1073741824']
    >>> _multi_model_env(MultiModel(diskBudgetMiB=256))[-1]["value"]
    '268435456'

    ``FLEETSHIFT_MODEL_DISK_BUDGET_BYTES`` only when ``diskBudgetMiB`` is set: a pod of
    an Endpoint written before it existed renders as it did.
    """
    if multi is None:
        return []
    disk = []
    if multi.diskBudgetMiB is not None:
        disk = [
            {
                "name": "FLEETSHIFT_MODEL_DISK_BUDGET_BYTES",
                "value": str(multi.diskBudgetMiB * 1024 * 1024),
            }
        ]
    return [
        {"name": "FLEETSHIFT_MULTI_MODEL", "value": "true"},
        {"name": "FLEETSHIFT_MAX_LOADED_MODELS", "value": str(multi.maxLoadedModels)},
        {
            "name": "FLEETSHIFT_MODEL_MEMORY_BUDGET_BYTES",
            "value": str(multi.memoryBudgetMiB * 1024 * 1024),
        },
        *disk,
    ]


def _quantity(value: float) -> str:
    """A Kubernetes quantity for a rate: whole numbers stay whole, else milli-units.

    >>> _quantity(50.0), _quantity(2.5)
    ('50', '2500m')
    """
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


TARGET_VARIANT_HEADER = "X-Amzn-SageMaker-Target-Variant"
"""SageMaker's ``TargetVariant``: a request with it goes to that variant alone."""


def get_http_route(
    endpoint: Manifest, fleets: list[FleetPlan], routing: dict[str, Any]
) -> Manifest:
    """An ``HTTPRoute`` whose backends are the fleets' Services, with exact weights: each
    fleet's ``route_weight`` (its variant's weight times its share of the variant). Then
    one rule per variant for requests that name it in ``X-Amzn-SageMaker-Target-Variant``
    (SageMaker's ``TargetVariant``): that variant's fleets only, split as its current step
    splits them, whatever its weight. A header match is more specific than none, so
    these rules win for the requests they match. A shadow variant takes no share and no
    rule of its own: the default rule mirrors ``samplingPercent`` of the requests to its
    fleet with the larger share (a ``RequestMirror`` filter; answers are discarded), unless
    ``routing`` says ``mirroring: Runtime`` (production pods copy them instead).

    >>> from fleetshift_operator.planning.types import FleetPlan
    >>> ep = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}}
    >>> plan = [FleetPlan("a", "r1", "blue", 2, 75, route_weight=60),
    ...         FleetPlan("a", "r2", "green", 2, 25, route_weight=20),
    ...         FleetPlan("b", "r3", "blue", 1, 100, route_weight=0)]
    >>> rules = get_http_route(ep, plan, {})["spec"]["rules"]
    >>> [b["weight"] for b in rules[0]["backendRefs"]]
    [60, 20, 0]
    >>> rules[2]["matches"][0]["headers"]
    [{'type': 'Exact', 'name': 'X-Amzn-SageMaker-Target-Variant', 'value': 'b'}]
    >>> [(b["name"], b["weight"]) for b in rules[2]["backendRefs"]]
    [('churn-b-r3', 100)]
    >>> ep["spec"] = {"variants": [{"name": "b", "shadow": {"samplingPercent": 10}}]}
    >>> rules = get_http_route(ep, plan, {})["spec"]["rules"]
    >>> len(rules), rules[0]["filters"][0]["requestMirror"]
    (2, {'backendRef': {'name': 'churn-b-r3', 'port': 80}, 'percent': 10})
    >>> "filters" in get_http_route(ep, plan, {"mirroring": "Runtime"})["spec"]["rules"][0]
    False
    """
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]

    def backend(fleet: FleetPlan, weight: int) -> Manifest:
        return {
            "name": fleet_name(name, fleet.variant, fleet.revision),
            "port": 80,
            "weight": weight,
        }

    sampling = {
        v["name"]: (v["shadow"] or {}).get("samplingPercent", 100)
        for v in endpoint.get("spec", {}).get("variants", [])
        if "shadow" in v and v["shadow"] is not None
    }
    serving = [f for f in fleets if f.variant not in sampling]
    default: Manifest = {"backendRefs": [backend(f, f.route_weight) for f in serving]}
    mirrors = []
    gateway_mirrors = routing.get("mirroring", "Gateway") == "Gateway"
    for target in calculate_mirror_targets(endpoint, fleets) if gateway_mirrors else []:
        ref = {"name": fleet_name(name, target.variant, target.revision), "port": 80}
        percent = sampling[target.variant]
        mirrors.append(
            {"type": "RequestMirror", "requestMirror": {"backendRef": ref, "percent": percent}}
        )
    if mirrors:
        default["filters"] = mirrors
    rules: list[Manifest] = [default]
    for variant in dict.fromkeys(f.variant for f in serving):
        header = {"type": "Exact", "name": TARGET_VARIANT_HEADER, "value": variant}
        rules.append(
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}, "headers": [header]}],
                "backendRefs": [
                    backend(f, f.traffic_percent) for f in serving if f.variant == variant
                ],
            }
        )
    spec: Manifest = {"parentRefs": routing.get("parentRefs", []), "rules": rules}
    if routing.get("hostnames"):
        spec["hostnames"] = routing["hostnames"]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _metadata(name, namespace, {LABEL_ENDPOINT: name}, owner_reference(endpoint)),
        "spec": spec,
    }
