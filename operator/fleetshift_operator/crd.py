"""Generate the ``Endpoint`` CRD from the pydantic models in ``api.py``.

    python -m fleetshift_operator.crd > crds/fleetshift.dev_endpoints.yaml

pydantic emits JSON Schema (2020-12) with ``$ref`` and ``anyOf`` for optional
fields; Kubernetes wants a *structural* OpenAPI v3 schema. ``structural``
rewrites one into the other:

- ``$ref`` is inlined, ``title`` is dropped;
- ``X | None`` becomes plain ``X`` (an absent field is how Kubernetes says "none");
- ``int | str`` becomes ``x-kubernetes-int-or-string`` (the one ``anyOf`` allowed);
- ``exclusiveMinimum: n`` becomes ``minimum: n, exclusiveMinimum: true``;
- a single-value ``const`` becomes an ``enum``.

>>> structural({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
...             "default": None, "title": "X"}, {})
{'type': 'integer', 'minimum': 1}
>>> structural({"type": "number", "exclusiveMinimum": 0}, {})
{'type': 'number', 'minimum': 0, 'exclusiveMinimum': True}
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from fleetshift_operator import api

CRD_FILE = "fleetshift.dev_endpoints.yaml"

_KEEP = {
    "type",
    "properties",
    "required",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "additionalProperties",
    "description",
    "default",
    "format",
}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in schema:
        return schema
    target = defs[schema["$ref"].rsplit("/", 1)[-1]]
    merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return _resolve(merged, defs)


def _structural_any_of(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` as ``X``, and ``int | str`` as an int-or-string."""
    options = [_resolve(o, defs) for o in schema["anyOf"] if o.get("type") != "null"]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if rest.get("default", 0) is None:
        rest.pop("default")
    if len(options) == 1:
        return structural({**options[0], **rest}, defs)
    types = {o.get("type") for o in options}
    if types == {"integer", "string"}:
        # The one anyOf a structural schema allows: int-or-string, as for quantities.
        extra = {
            k: v
            for k, v in rest.items()
            if k.startswith("x-") or k in ("description", "pattern", "minimum")
        }
        return {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            **extra,
        }
    raise ValueError(f"cannot express anyOf {options} in a structural schema")


def _structural_key(key: str, value: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """One key of a schema node, as structural OpenAPI keys (none when it is dropped)."""
    rewritten: dict[str, Any] = {}
    if key == "properties":
        rewritten[key] = {name: structural(sub, defs) for name, sub in value.items()}
    elif key == "items":
        rewritten[key] = structural(value, defs)
    elif key == "additionalProperties":
        extra = structural(value, defs) if isinstance(value, dict) else value
        if extra is not False:
            rewritten[key] = extra
    elif key in ("exclusiveMinimum", "exclusiveMaximum"):
        bound = "minimum" if key == "exclusiveMinimum" else "maximum"
        rewritten.update({bound: value, key: True})
    elif key == "const":
        rewritten["enum"] = [value]
    elif key in _KEEP or key.startswith("x-kubernetes-"):
        rewritten[key] = value
    return rewritten


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON Schema node as a structural OpenAPI v3 node."""
    schema = _resolve(schema, defs)
    if "anyOf" in schema:
        return _structural_any_of(schema, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        out.update(_structural_key(key, value, defs))
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("type", "object")
        # `additionalProperties: true` (pydantic's `dict[str, Any]`) would give every value an
        # empty schema, and the apiserver would prune the fields inside each value: an env
        # var's `valueFrom.secretKeyRef.name` would vanish. Preserving is the whole subtree.
        if out.get("additionalProperties") is True:
            del out["additionalProperties"]
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("default", 0) is None:
        del out["default"]
    return out


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(mode="serialization", ref_template="#/$defs/{model}")
    return structural(raw, raw.get("$defs", {}))


def printer_columns() -> list[dict[str, Any]]:
    """The columns ``kubectl get fsep`` shows."""
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Active", "type": "string", "jsonPath": ".status.activeRevision"},
        {
            "name": "Candidate",
            "type": "string",
            "jsonPath": ".status.candidateRevision",
            "priority": 1,
        },
        {"name": "Green%", "type": "integer", "jsonPath": ".status.greenTrafficPercent"},
        {"name": "Step", "type": "integer", "jsonPath": ".status.step.index"},
        {"name": "Steps", "type": "integer", "jsonPath": ".status.step.total", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def build_crd() -> dict[str, Any]:
    """The CRD as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "annotations": {"fleetshift.dev/generated-by": "python -m fleetshift_operator.crd"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": api.CATEGORIES,
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An ML model endpoint with deployment guardrails.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _schema_of(api.EndpointSpec),
                                "status": _schema_of(api.EndpointStatus),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as the YAML committed in ``crds/``."""
    header = "# Generated from operator/fleetshift_operator/api.py: do not edit; run `make crds`.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_crd())
