"""Fixtures shared by every test: the local control plane, clients, namespaces.

The control plane is real (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) and starts once per test session. Set
``FLEETSHIFT_TEST_CLUSTER_DIR`` to the folder of a cluster started with
``make cluster`` to reuse it instead (faster while editing).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from fleetshift_devcluster import binaries
from fleetshift_devcluster.cluster import LocalCluster, running_cluster
from fleetshift_devcluster.crds import install_crds
from fleetshift_devcluster.prometheus import LocalPrometheus
from fleetshift_operator.crd import CRD_FILE

pytest_plugins = ["support.operator_process"]

FIELD_MANAGER = "fleetshift-tests"
ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the control plane, so `-m "not cluster"` skips them, and
    run the ``slow`` ones last: their real waits started with their fixtures, earlier
    (``tests/cluster/conftest.py``), and pass while the others run."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
    items[:] = [i for i in items if not i.get_closest_marker("slow")] + [
        i for i in items if i.get_closest_marker("slow")
    ]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The session's control plane: started here, or reused from `make cluster`."""
    reuse = os.environ.get("FLEETSHIFT_TEST_CLUSTER_DIR")
    if reuse:
        existing = LocalCluster.load(Path(reuse))
        assert existing.alive(), f"the cluster in {reuse} is not running"
        yield existing
        return
    with running_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture(scope="session")
def kubeconfig(cluster: LocalCluster) -> Path:
    """Path of the admin kubeconfig."""
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def kube(kubeconfig: Path) -> Client:
    """A synchronous lightkube client with the tests' field manager."""
    return Client(KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER)


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"{stem}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(kube: Client, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = _namespace_name(request.node.name)
    kube.create(Namespace(metadata=ObjectMeta(name=name, labels={"fleetshift.dev/test": "true"})))
    yield name
    try:
        kube.delete(Namespace, name)
    except ApiError as error:
        if error.status.code != 404:
            raise


@pytest.fixture(scope="session")
def endpoint_crd(kube: Client) -> str:
    """Install the committed Endpoint CRD (as `kubectl apply -f crds/` would) and wait for it."""
    document = yaml.safe_load((ROOT / "crds" / CRD_FILE).read_text())
    return install_crds(kube, [document], what="the Endpoint CRD", timeout=30)[0]


@pytest.fixture(scope="session")
def gateway_api_crds(kube: Client) -> list[str]:
    """The standard Gateway API CRDs, from the pinned ``sigs.k8s.io/gateway-api`` module."""
    documents = [
        document
        for path in binaries.gateway_api_crds()
        for document in yaml.safe_load_all(path.read_text())
    ]
    return install_crds(kube, documents, what="Gateway API CRDs")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, object]], LocalPrometheus]]:
    """Start real Prometheus servers with given configs; all are stopped after the test."""
    started: list[LocalPrometheus] = []

    def start(config: dict[str, object]) -> LocalPrometheus:
        server = LocalPrometheus(folder=tmp_path / f"prometheus-{len(started)}")
        started.append(server)
        server.start(config)
        return server

    yield start
    for server in started:
        server.stop()
