"""The walkthrough on real pods (``fleetshift-demo --node real``, ``make demo NODE=real``).

The same story as on kwok, with nothing standing in: the runtime image runs as pods in
containerd on the real node, the model tarballs are downloaded by those pods over HTTP from a
server on the node IP, callers reach the Endpoint's Service through kube-proxy (a new
connection per request, the answer's ``X-Fleetshift-Revision`` saying which fleet gave it),
the incompatible model's pods fail real requests, and Prometheus (built from its Go module)
finds the pods by Kubernetes service discovery.

The whole program runs inside the cluster's network namespace (``netns.entered``): the
apiserver, the pods and the Services have addresses only there.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from typing import Any

from lightkube.resources.core_v1 import Service

from fleetshift_devcluster import binaries, images
from fleetshift_devcluster.demo.launcher import Route
from fleetshift_devcluster.demo.loadgen import LoadGenerator
from fleetshift_devcluster.demo.progress import Progress
from fleetshift_devcluster.demo.stopping import StopRequest
from fleetshift_devcluster.demo.story import NAMESPACE, Demo, DemoError, DemoOptions, Scenario
from fleetshift_devcluster.prometheus import LocalPrometheus, kubernetes_pods_config
from fleetshift_devcluster.realnode import NODE_IP, NODE_NAME, RealNodeCluster


class ServiceLoadGenerator(LoadGenerator):
    """Sends to the Endpoint's Service ClusterIP, one new connection per request, so
    kube-proxy picks a pod for every request as the operator's serving labels say."""

    keepalive_connections = 0

    def __init__(self, kube_config: Path, namespace: str, rows: list[str], rate: float) -> None:
        super().__init__(kube_config, namespace, dict, rows, rate)

    def _targets_of(self, endpoint: str) -> list[Route]:
        """The Service's ClusterIP once it has a Ready endpoint (before that kube-proxy
        refuses the connection, and callers of a real service would not be sent yet)."""
        if not self._ready_pods(endpoint):
            return []
        service = self.kube.get(Service, endpoint, namespace=self.namespace)
        assert service.spec is not None and service.spec.clusterIP
        return [Route(f"service/{endpoint}", 80, "", True, host=service.spec.clusterIP)]


class RealNodeDemo(Demo):
    """:class:`Demo` with real pods (see the module's docstring)."""

    def __init__(
        self,
        options: DemoOptions,
        cluster: RealNodeCluster,
        progress: Progress,
        stop: StopRequest | None = None,
    ) -> None:
        super().__init__(options, cluster, progress, stop)
        self.real_node = cluster
        self.prometheus = LocalPrometheus(
            folder=self.work / "prometheus",
            host=NODE_IP,
            binary=binaries.ensure((binaries.PROMETHEUS,))[binaries.PROMETHEUS.name],
        )
        self.model_server: http.server.ThreadingHTTPServer | None = None

    def _start_pods(self) -> None:
        tarball = images.tarball_path(images.RUNTIME)
        if not tarball.exists():
            raise DemoError(
                f"no runtime image at {tarball}: `make images` builds it "
                "(`make demo NODE=real` does)"
            )
        self.progress.say(f"importing the runtime image into the node's containerd ({tarball})")
        self.real_node.import_image(tarball)
        assert self.models is not None
        root = self.models.requests_csv.parent
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.model_server = http.server.ThreadingHTTPServer((NODE_IP, 0), handler)
        threading.Thread(target=self.model_server.serve_forever, daemon=True).start()
        self.progress.say(
            f"serving the model tarballs at http://{NODE_IP}:{self.model_server.server_port}/"
        )
        self.progress.say("starting Prometheus (Kubernetes discovery of the pods, 1 s scrapes)")

    def _prometheus_config(self) -> dict[str, Any]:
        return kubernetes_pods_config(self.cluster.kubeconfig, [NAMESPACE])

    def _load_generator(self, rows: list[str]) -> LoadGenerator:
        return ServiceLoadGenerator(self.cluster.kubeconfig, NAMESPACE, rows, self.options.rate)

    def _manifest(self, scenario: Scenario) -> dict[str, Any]:
        manifest = super()._manifest(scenario)
        assert self.models is not None and self.model_server is not None
        root = self.models.requests_csv.parent.resolve()
        for variant in manifest["spec"]["variants"]:
            # The file:// URI of a model the demo trained, served over HTTP instead.
            path = Path(variant["model"]["uri"].removeprefix("file://"))
            relative = path.relative_to(root)
            variant["model"]["uri"] = (
                f"http://{NODE_IP}:{self.model_server.server_port}/{relative.as_posix()}"
            )
            variant.pop("podAnnotations", None)  # kwok's; the kubelet runs these pods
            variant["image"] = images.RUNTIME.tag
            variant["nodeSelector"] = {"kubernetes.io/hostname": NODE_NAME}
            variant["resources"] = {"requests": {"cpu": "50m", "memory": "128Mi"}}
        return manifest

    def _stop(self) -> None:
        try:
            super()._stop()
        finally:
            if self.model_server is not None:
                self.model_server.shutdown()
                self.model_server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return
