"""Names derived from the spec: revisions and Kubernetes object names. Pure."""

from __future__ import annotations

import hashlib
import json

from fleetshift_operator.api import Spread, Variant

_POD_FIELDS = (
    "name",
    "model",
    "image",
    "resources",
    "env",
    "nodeSelector",
    "tolerations",
    "podAnnotations",
    "spread",
    "dataCapture",
    "pipeline",
)

MAX_NAME = 63


def calculate_revision(variant: Variant) -> str:
    """A short hash of everything in one variant that changes its pods; replicas, weight
    and autoscaling do not count. Each variant has its own revision, so changing one
    variant's model deploys that variant alone.

    >>> from fleetshift_operator.api import ModelSource
    >>> one = Variant(name="a", model=ModelSource(uri="s3://m/1"))
    >>> calculate_revision(one) == calculate_revision(one.model_copy(update={"replicas": 5}))
    True
    >>> calculate_revision(one) == calculate_revision(one.model_copy(update={"weight": 9}))
    True
    >>> len(calculate_revision(one))
    10

    Pinned, so that a field added to the API without care shows here:

    >>> calculate_revision(Variant(name="main", model=ModelSource(uri="s3://m/1"), replicas=3))
    '827f538525'
    """
    pod = variant.model_dump(mode="json", include=set(_POD_FIELDS))
    # Fields added later leave revisions as they were while unset: an operator upgrade
    # must not redeploy every Endpoint.
    if not pod.get("podAnnotations"):
        pod.pop("podAnnotations", None)
    multi_model = pod["model"].get("multiModel")
    if multi_model is None:
        pod["model"].pop("multiModel", None)
    elif multi_model.get("diskBudgetMiB") is None:
        multi_model.pop("diskBudgetMiB", None)
    if pod.get("spread") == Spread().model_dump(mode="json"):
        pod.pop("spread", None)
    if pod.get("dataCapture") is None:
        pod.pop("dataCapture", None)
    if pod.get("pipeline") is None:
        pod.pop("pipeline", None)
    digest = hashlib.sha256(json.dumps([pod], sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _tag(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def fleet_name(endpoint: str, variant: str, revision: str) -> str:
    """The Deployment (and Service) name of a fleet: ``<endpoint>-<variant>-<revision>``
    in lower case, at most 63 characters. When that is too long, the endpoint and variant
    part is cut and tagged with a short hash of the whole, so names stay distinct.

    >>> fleet_name("churn", "main", "0123456789")
    'churn-main-0123456789'
    >>> fleet_name("churn", "AllTraffic", "0123456789")
    'churn-alltraffic-0123456789'
    >>> len(fleet_name("a" * 80, "main", "0123456789"))
    63
    >>> long = fleet_name("churn", "v" * 63, "0123456789")
    >>> len(long), long.endswith("-0123456789")
    (63, True)
    >>> fleet_name("churn", "v" * 63, "r") != fleet_name("churn", "v" * 62, "r")
    True
    """
    suffix = f"-{variant.lower()}-{revision}"
    if len(endpoint) + len(suffix) <= MAX_NAME:
        return endpoint + suffix
    if len(suffix) + 8 <= MAX_NAME:  # a long endpoint name: cut it and tag it
        keep = MAX_NAME - len(suffix) - 7
        return f"{endpoint[:keep]}-{_tag(endpoint)}{suffix}"
    head, tail = f"{endpoint}-{variant.lower()}", f"-{revision}"
    keep = MAX_NAME - len(tail) - 7
    return f"{head[:keep].rstrip('-')}-{_tag(endpoint + '/' + variant)}{tail}"
