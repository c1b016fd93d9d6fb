"""The built images run as they will in a pod: non-root, read-only root, a writable /tmp.

The runtime serves a model mounted read-only and answers with XGBoost's own predictions; the
operator reaches the local control plane and brings an Endpoint InService.

Containers run with podman on the host network (no podman bridge: it would turn on
``ip_forward`` on the host), so every server in them is told to bind 127.0.0.1 on a free port.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import yaml
from lightkube import Client

from fleetshift_devcluster import images
from fleetshift_devcluster.cluster import LocalCluster
from fleetshift_devcluster.wait import wait_for
from support.operator_process import endpoint_manifest, status_of
from support.runtime_kit import csv_body, free_port, train_model
from support.specs import endpoint_spec


@dataclass
class Container:
    """One ``podman run -d`` container, removed by the fixture that made it."""

    name: str
    args: list[str]
    started: bool = field(default=False)

    def start(self) -> Container:
        images.podman("run", "--detach", "--name", self.name, *self.args)
        self.started = True
        return self

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside (as the image's user)."""
        return subprocess.run(
            ["podman", "exec", self.name, *command],
            env=images.podman_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def running(self) -> bool:
        state = images.podman("inspect", "--format", "{{.State.Status}}", self.name).strip()
        return state == "running"

    def logs(self) -> str:
        result = subprocess.run(
            ["podman", "logs", self.name],
            env=images.podman_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        return (result.stdout + result.stderr)[-4000:]

    def remove(self) -> None:
        if self.started:
            images.podman("rm", "--force", "--time", "5", self.name, check=False)


StartContainer = Callable[..., Container]


@pytest.fixture
def start_container() -> Iterator[StartContainer]:
    """``start_container(image, *run_args, env={...}, volumes=[...])``: read-only root, a
    tmpfs /tmp, host network, the image's own user; removed after the test."""
    made: list[Container] = []

    def start(
        image: str,
        *extra: str,
        env: dict[str, str] | None = None,
        volumes: list[str] | None = None,
    ) -> Container:
        args = ["--read-only", "--tmpfs", "/tmp", "--network", "host", "--pull=never"]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        for volume in volumes or []:
            args += ["--volume", volume]
        container = Container(f"fleetshift-test-{uuid.uuid4().hex[:10]}", [*args, image, *extra])
        made.append(container)
        return container.start()

    yield start
    for container in made:
        container.remove()


WHO_AND_WHERE = """
import errno, os
try:
    open("/opt/fleetshift/probe", "w")
    root = "writable"
except OSError as error:
    root = errno.errorcode[error.errno]
with open(os.path.join(os.environ["TMPDIR"], "probe"), "w") as tmp:
    tmp.write("ok")
print(os.getuid(), os.getgid(), root)
"""


def identity(container: Container) -> str:
    """``uid gid <what writing to the root gives>``, from inside the container."""
    result = container.exec("python", "-c", WHO_AND_WHERE)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def http_ok(container: Container, url: str) -> bool:
    """Whether ``url`` answers 200; fails at once, with the logs, if the container stopped."""
    if not container.running():
        raise AssertionError(f"container {container.name} stopped:\n{container.logs()}")
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def listening_addresses(ports: set[int]) -> set[str]:
    """Local addresses of the TCP listeners on ``ports``."""
    return {
        str(getattr(connection.laddr, "ip", ""))
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN
        and getattr(connection.laddr, "port", None) in ports
    }


def test_runtime_serves_xgboosts_predictions_as_non_root_on_a_read_only_root(
    built_images: dict[str, images.Built], start_container: StartContainer, tmp_path: Path
) -> None:
    model = train_model()
    models = tmp_path / "models"
    path = model.save(models / "model.ubj")
    models.chmod(0o755)
    path.chmod(0o644)
    port, metrics_port = free_port(), free_port()
    container = start_container(
        built_images["runtime"].spec.local,
        env={
            "FLEETSHIFT_HOST": "127.0.0.1",  # the host network: loopback only
            "FLEETSHIFT_PORT": str(port),
            "FLEETSHIFT_METRICS_PORT": str(metrics_port),
            "FLEETSHIFT_MODEL_URI": "/models/model.ubj",
        },
        volumes=[f"{models}:/models:ro"],
    )
    url = f"http://127.0.0.1:{port}"

    wait_for(lambda: http_ok(container, f"{url}/ping"), timeout=120, message="runtime /ping")

    assert identity(container) == "65532 65532 EROFS"
    assert listening_addresses({port, metrics_port}) == {"127.0.0.1"}
    response = httpx.post(
        f"{url}/invocations", content=csv_body(model.rows), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    scores = np.array([float(line) for line in response.text.split()], dtype=np.float32)
    np.testing.assert_allclose(scores, model.expected(), rtol=0, atol=1e-6)
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 200
    # the image's HEALTHCHECK survived the build (--format docker) and passes
    health = subprocess.run(
        ["podman", "healthcheck", "run", container.name],
        env=images.podman_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert health.returncode == 0, health.stdout + health.stderr


def self_contained_kubeconfig(cluster: LocalCluster, folder: Path) -> Path:
    """The admin kubeconfig with its files inlined, readable by the container's user."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        ca = entry["cluster"].pop("certificate-authority")
        entry["cluster"]["certificate-authority-data"] = _inline(ca)
    for entry in config["users"]:
        for key in ("client-certificate", "client-key"):
            entry["user"][f"{key}-data"] = _inline(entry["user"].pop(key))
    folder.mkdir(mode=0o755)
    path = folder / "config"
    path.write_text(yaml.safe_dump(config))
    os.chmod(folder, 0o755)
    path.chmod(0o644)
    return path


def _inline(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def test_operator_answers_its_probes_and_brings_an_endpoint_in_service(
    built_images: dict[str, images.Built],
    start_container: StartContainer,
    cluster: LocalCluster,
    kube: Client,
    namespace: str,
    endpoint_crd: str,
    tmp_path: Path,
) -> None:
    kubeconfig = self_contained_kubeconfig(cluster, tmp_path / "kube")
    health_port, metrics_port = free_port(), free_port()
    container = start_container(
        built_images["operator"].spec.local,
        env={
            "KUBECONFIG": "/kube/config",
            "FLEETSHIFT_NAMESPACES": json.dumps([namespace]),
            "FLEETSHIFT_HEALTH_HOST": "127.0.0.1",
            "FLEETSHIFT_HEALTH_PORT": str(health_port),
            "FLEETSHIFT_METRICS_HOST": "127.0.0.1",
            "FLEETSHIFT_METRICS_PORT": str(metrics_port),
            "FLEETSHIFT_POLL_INTERVAL_SECONDS": "1",
        },
        volumes=[f"{kubeconfig.parent}:/kube:ro"],
    )

    wait_for(
        lambda: http_ok(container, f"http://127.0.0.1:{health_port}/healthz"),
        timeout=120,
        message="operator /healthz",
    )

    assert identity(container) == "65532 65532 EROFS"
    assert listening_addresses({health_port, metrics_port}) == {"127.0.0.1"}
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 200
    kube.create(endpoint_manifest("churn", namespace, endpoint_spec(replicas=2)))
    wait_for(
        lambda: status_of(kube, "churn", namespace).get("phase") == "InService",
        timeout=90,
        message=f"Endpoint InService (operator log:\n{container.logs()})",
    )
