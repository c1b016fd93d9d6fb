"""Installing CustomResourceDefinitions the way ``kubectl apply`` does, and waiting for them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightkube import Client
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from fleetshift_devcluster.wait import wait_for


def install_crds(
    kube: Client,
    documents: Iterable[Mapping[str, Any] | None],
    *,
    what: str,
    field_manager: str | None = None,
    timeout: float = 60,
) -> list[str]:
    """Server-side apply every CustomResourceDefinition among ``documents`` (others are
    skipped) and return their names once all are Established."""
    names: list[str] = []
    for document in documents:
        if document and document.get("kind") == "CustomResourceDefinition":
            crd = CustomResourceDefinition.from_dict(dict(document))
            kube.apply(crd, field_manager=field_manager, force=True)  # type: ignore[call-overload]
            names.append(str(document["metadata"]["name"]))

    def established() -> bool:
        for name in names:
            crd = kube.get(CustomResourceDefinition, name)
            conditions = (crd.status.conditions if crd.status else None) or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    wait_for(established, timeout=timeout, message=f"{what} established")
    return names
