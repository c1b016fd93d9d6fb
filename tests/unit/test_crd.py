"""The committed CRD is exactly what the pydantic models generate."""

from __future__ import annotations

from pathlib import Path

import yaml

from fleetshift_operator import api
from fleetshift_operator.crd import CRD_FILE, build_crd, render_crd

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_matches_the_models() -> None:
    committed = (ROOT / "crds" / CRD_FILE).read_text()
    assert committed == render_crd(), "crds/ is stale: run `make crds` and commit the result"


def _walk(node: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_schema_is_structural() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    nodes = _walk(schema)
    for forbidden in ("$ref", "oneOf", "allOf", "title", "$defs", "const"):
        assert not [n for n in nodes if forbidden in n], f"{forbidden} left in the schema"
    any_of = [n for n in nodes if "anyOf" in n]
    assert all(n.get("x-kubernetes-int-or-string") for n in any_of), "anyOf beyond int-or-string"


def test_names_avoid_the_core_endpoints_resource() -> None:
    names = build_crd()["spec"]["names"]
    assert names["shortNames"] == ["fsep"]
    assert "fleetshift" in names["categories"]
    assert build_crd()["metadata"]["name"] == f"endpoints.{api.GROUP}"


def test_status_is_a_subresource_with_printer_columns() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Active"] == ".status.activeRevision"
    assert columns["Green%"] == ".status.greenTrafficPercent"
    assert columns["Step"] == ".status.step.index"
    assert "Age" in columns


def test_every_cel_rule_has_a_message() -> None:
    crd = yaml.safe_load(render_crd())
    rules = [
        rule
        for node in _walk(crd)
        for rule in node.get("x-kubernetes-validations", [])  # type: ignore[attr-defined]
    ]
    assert len(rules) >= 15
    assert all(rule.get("message") for rule in rules)
