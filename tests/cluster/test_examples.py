"""Every manifest in examples/ is accepted by the real apiserver as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lightkube import Client
from lightkube.generic_resource import create_namespaced_resource

from fleetshift_operator import api

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
EndpointResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted_by_the_apiserver(
    kube: Client, namespace: str, endpoint_crd: str, path: Path
) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("kind") == api.KIND:
            document["metadata"]["namespace"] = namespace
            created = kube.create(EndpointResource.from_dict(document), dry_run=True)
            assert created.metadata.name == document["metadata"]["name"]
