"""Promoting a shadow: its model becomes a production variant's next revision.

The operator never writes ``spec``, so a promotion is a change of the spec, made by the
user: ``kubectl fleetshift promote-shadow`` prints it (to commit to Git, where Git owns the
Endpoint) or, with ``--apply``, writes it. The production variant then deploys the new
revision with its own deployment policy and alarms, like any model change.

What moves is what decides the answers: the shadow's ``model``, and its ``image`` and
``env`` where it sets them. What stays is the production variant's capacity and policy:
replicas, weight, autoscaling, resources, spread, disruption budget.
"""

from __future__ import annotations

import copy
from typing import Any

MOVED_FIELDS = ("model", "image", "env")
"""The shadow's fields that become the production variant's."""


class PromotionError(ValueError):
    """A promotion that cannot be made, with the reason."""


def promoted_spec(
    spec: dict[str, Any], shadow: str, into: str | None = None, keep_shadow: bool = False
) -> dict[str, Any]:
    """The spec after promoting ``shadow`` into the production variant ``into`` (by
    default the only variant that is not a shadow); the shadow is removed unless
    ``keep_shadow``. ``spec`` is left as it was.

    >>> spec = {"variants": [
    ...     {"name": "main", "model": {"uri": "s3://m/v1"}, "replicas": 4},
    ...     {"name": "next", "model": {"uri": "s3://m/v2"}, "image": "rt:2", "replicas": 1,
    ...      "shadow": {"samplingPercent": 10}}]}
    >>> promoted_spec(spec, "next")["variants"]
    [{'name': 'main', 'model': {'uri': 's3://m/v2'}, 'replicas': 4, 'image': 'rt:2'}]
    >>> [v["name"] for v in promoted_spec(spec, "next", keep_shadow=True)["variants"]]
    ['main', 'next']
    >>> promoted_spec(spec, "main")
    Traceback (most recent call last):
    ...
    fleetshift_operator.cli.promotion.PromotionError: variant 'main' is not a shadow
    """
    variants = spec.get("variants") or []
    by_name = {v.get("name"): v for v in variants}
    if shadow not in by_name:
        raise PromotionError(f"no variant {shadow!r}; the Endpoint has {_names(variants)}")
    source = by_name[shadow]
    if source.get("shadow") is None:
        raise PromotionError(f"variant {shadow!r} is not a shadow")
    production = [v for v in variants if v.get("shadow") is None]
    if into is None:
        if len(production) != 1:
            raise PromotionError(
                f"the Endpoint has {len(production)} production variants "
                f"({_names(production)}); say which one with --into"
            )
        into = production[0]["name"]
    target = by_name.get(into)
    if target is None or target.get("shadow") is not None:
        raise PromotionError(f"{into!r} is not a production variant; they are {_names(production)}")
    promoted = copy.deepcopy(spec)
    result = []
    for variant in promoted["variants"]:
        if variant["name"] == shadow and not keep_shadow:
            continue
        if variant["name"] == into:
            for field in MOVED_FIELDS:
                if field in source:
                    variant[field] = copy.deepcopy(source[field])
                elif field != "model":
                    variant.pop(field, None)
        result.append(variant)
    promoted["variants"] = result
    return promoted


def _names(variants: list[dict[str, Any]]) -> str:
    return ", ".join(str(v.get("name")) for v in variants) or "none"
