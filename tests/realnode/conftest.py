"""The real node (containerd, runc, kubelet, kube-proxy, CoreDNS) in its network namespace.

These tests need root and the real node's binaries (``make realnode-binaries``; see
docs/real-node.md). They run when ``FLEETSHIFT_REALNODE=1`` is set, as ``make test`` does:

    FLEETSHIFT_REALNODE=1 .venv/bin/python -m pytest -m realnode tests/realnode

Only one real node can run on a machine at a time (the kubelet's ``kubepods`` cgroups).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fleetshift_devcluster import images, netns
from fleetshift_devcluster.processes import ManagedProcess, stop_processes
from fleetshift_devcluster.realnode import RealNodeCluster
from fleetshift_operator.crd import CRD_FILE
from support.runtime_kit import train_model

if TYPE_CHECKING:
    from realnode.kit import ModelServer

ROOT = Path(__file__).resolve().parents[2]

ENABLE = "FLEETSHIFT_REALNODE"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of this folder ``realnode``; skip them unless asked for, with why."""
    here = Path(__file__).parent
    reason = None
    if os.environ.get(ENABLE) != "1":
        reason = (
            f"the real-node tier runs only with {ENABLE}=1 (`make test` sets it): it needs root "
            "and the real node's binaries (`make realnode-binaries`, ~10 min once); "
            "see docs/real-node.md"
        )
    elif os.geteuid() != 0:
        reason = "the real node needs root (network and mount namespaces, cgroups)"
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.realnode)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def host_network_state() -> dict[str, str]:
    """What the real node must leave as it found it on the host."""

    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    return {
        "iptables": _without_counters(run("iptables-save")),
        "ip6tables": _without_counters(run("ip6tables-save")),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "links": run("ip", "-o", "link", "show"),
        "routes": run("ip", "route", "show", "table", "all"),
        "addresses": run("ip", "-o", "addr", "show"),
    }


def _without_counters(saved: str) -> str:
    lines = [line for line in saved.splitlines() if not line.startswith("#")]
    return "\n".join(line.split(" [", 1)[0] if line.startswith(":") else line for line in lines)


class RealNode:
    """The session's real-node cluster and the host state before it started."""

    def __init__(self, cluster: RealNodeCluster, host_before: dict[str, str]) -> None:
        self.cluster = cluster
        self.host_before = host_before

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        done = subprocess.run(
            self.cluster.kubectl(*args),
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, document: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(document))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(
            self.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        )
        return answer


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A real-node cluster (and one kwok node beside it), stopped at the end of the session."""
    before = host_network_state()
    cluster = RealNodeCluster(folder=tmp_path_factory.mktemp("realnode"), nodes=1)
    try:
        cluster.start(timeout=240)
        yield RealNode(cluster, before)
    finally:
        cluster.stop()
        # containerd's store holds the imported images (over 1 GB with the runtime's); pytest
        # keeps its last three temporary folders. Only when nothing is mounted under it.
        if not netns.mounts_under(cluster.folder):
            shutil.rmtree(cluster.node_dir, ignore_errors=True)


@pytest.fixture
def node_namespace(real_node: RealNode, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own on the real-node cluster."""
    name = f"rn-{request.node.name[:30].lower().replace('_', '-')}-{uuid.uuid4().hex[:5]}"
    real_node.kubectl("create", "namespace", name)
    yield name
    real_node.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator_in_netns(
    real_node: RealNode, node_namespace: str, tmp_path: Path
) -> Iterator[ManagedProcess]:
    """The operator (``python -m fleetshift_operator``) for the test's namespace, inside the
    cluster's network namespace (the apiserver listens on the node IP there only)."""
    real_node.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / CRD_FILE))
    real_node.kubectl(
        "wait", "--for=condition=Established", "crd/endpoints.fleetshift.dev", "--timeout=30s"
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(real_node.cluster.kubeconfig),
        "FLEETSHIFT_NAMESPACES": json.dumps([node_namespace]),
        "FLEETSHIFT_METRICS_PORT": "0",
        "FLEETSHIFT_POLL_INTERVAL_SECONDS": "1",
    }
    process = ManagedProcess.spawn(
        "operator",
        netns.in_netns(real_node.cluster.netns, [sys.executable, "-m", "fleetshift_operator"]),
        tmp_path / "operator.log",
        cwd=tmp_path,
        env=env,
    )
    yield process
    stop_processes([process], grace=10)


@pytest.fixture
def models(
    real_node: RealNode, node_namespace: str, tmp_path: Path
) -> Iterator[tuple[ModelServer, Any]]:
    """The runtime image in the node, the namespace restricted, and a model on a file server
    in the network namespace: the server and the model's rows."""
    from realnode.kit import ModelServer  # noqa: PLC0415 - kit imports this module's RealNode

    tarball = images.tarball_path(images.RUNTIME)
    if not tarball.exists():
        pytest.skip(f"no runtime image tarball at {tarball}: `make images` builds it")
    real_node.cluster.import_image(tarball)
    # The operator's pods are restricted ones; the namespace enforces it.
    real_node.kubectl(
        "label", "namespace", node_namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    model = train_model()
    model.save(tmp_path / "models" / "model.ubj")
    server = ModelServer(real_node.cluster.netns, tmp_path / "models")
    yield server, model.rows
    server.close()
