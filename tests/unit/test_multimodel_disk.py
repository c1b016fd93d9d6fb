"""``model.multiModel.diskBudgetMiB``: its admission bounds, in the models and in the CRD,
and how it reaches the runtime without redeploying Endpoints written before it existed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from fleetshift_operator import manifests
from fleetshift_operator.api import ModelSource, MultiModel, Variant
from fleetshift_operator.crd import build_crd
from fleetshift_operator.planning.names import calculate_revision
from fleetshift_operator.planning.types import FleetPlan
from fleetshift_runtime.settings import RuntimeSettings

ENDPOINT = {"metadata": {"name": "houses", "namespace": "ml", "uid": "u1"}}
MIB = 1024 * 1024


def multi_model_variant(**multi: Any) -> Variant:
    return Variant.model_validate(
        {"name": "main", "model": {"uri": "s3://m/houses/", "multiModel": multi}}
    )


def runtime_env(variant: Variant) -> dict[str, str]:
    fleet = FleetPlan(variant.name, calculate_revision(variant), "green", 2, 0)
    deployment = manifests.get_deployment(ENDPOINT, variant, fleet, include_replicas=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.parametrize("value", [64, 4096, 1048576])
def test_a_disk_budget_within_bounds_is_accepted(value: int) -> None:
    assert MultiModel(diskBudgetMiB=value).diskBudgetMiB == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (63, "greater than or equal to 64"),
        (0, "greater than or equal to 64"),
        (1048577, "less than or equal to 1048576"),
    ],
)
def test_a_disk_budget_out_of_bounds_is_refused_with_the_bound(value: int, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MultiModel(diskBudgetMiB=value)


def test_the_crd_holds_the_same_bounds_and_says_what_the_budget_must_fit() -> None:
    crd = json.dumps(build_crd())
    schema = json.loads(crd)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    variant = schema["properties"]["spec"]["properties"]["variants"]["items"]
    field = variant["properties"]["model"]["properties"]["multiModel"]["properties"][
        "diskBudgetMiB"
    ]
    assert (field["minimum"], field["maximum"], field["type"]) == (64, 1048576, "integer")
    assert "ephemeral storage" in field["description"]


def test_the_budget_reaches_the_runtime_in_bytes_under_the_setting_it_reads() -> None:
    env = runtime_env(multi_model_variant(diskBudgetMiB=256))
    assert env["FLEETSHIFT_MODEL_DISK_BUDGET_BYTES"] == str(256 * MIB)
    settings = RuntimeSettings.model_validate(
        {"model_disk_budget_bytes": env["FLEETSHIFT_MODEL_DISK_BUDGET_BYTES"]}
    )
    assert settings.model_disk_budget_bytes == 256 * MIB


def test_unset_the_runtime_applies_its_default_of_4096_mib() -> None:
    env = runtime_env(multi_model_variant())
    assert "FLEETSHIFT_MODEL_DISK_BUDGET_BYTES" not in env
    assert RuntimeSettings().model_disk_budget_bytes == 4096 * MIB


def test_an_unset_budget_leaves_the_revision_as_it_was_and_setting_it_is_a_new_one() -> None:
    unset = multi_model_variant()
    before = Variant(name="multi", model=ModelSource(uri="s3://m/", multiModel=MultiModel()))
    assert calculate_revision(before) == "866b6651b2"  # as rendered before the field existed
    set_once = calculate_revision(multi_model_variant(diskBudgetMiB=4096))
    assert set_once != calculate_revision(unset)  # a guarded rollout, not a restart
    assert set_once != calculate_revision(multi_model_variant(diskBudgetMiB=8192))


def test_a_single_model_variant_has_no_disk_budget() -> None:
    variant = Variant.model_validate({"name": "main", "model": {"uri": "s3://m/1"}})
    assert "FLEETSHIFT_MODEL_DISK_BUDGET_BYTES" not in runtime_env(variant)
