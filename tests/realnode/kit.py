"""What the real-node tests run inside the cluster's network namespace beside the node:
a model file server, an S3 gateway, a Prometheus that finds pods by Kubernetes service
discovery, and clients that load a Service through kube-proxy.

Everything here listens on the node IP inside the namespace (pods reach it through the
bridge; nothing on the host can), and is stopped by its test before the session's last
test checks that ``down`` leaves nothing behind.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fleetshift_devcluster import binaries, netns, pki
from fleetshift_devcluster.processes import ManagedProcess, stop_processes
from fleetshift_devcluster.prometheus import kubernetes_pods_config
from fleetshift_devcluster.realnode import NODE_IP
from fleetshift_devcluster.wait import wait_for
from realnode.conftest import RealNode
from support.runtime_kit import versitygw_binary

T = TypeVar("T")


def in_netns(netns_name: str, function: Callable[[], T]) -> T:
    """``function()`` on a thread inside the namespace (its sockets are the namespace's)."""
    caller = netns.NetnsCaller(netns_name)
    try:
        return caller.call(function)
    finally:
        caller.close()


def ready_pods(node: RealNode, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods matching ``selector`` whose Ready condition is True."""
    listed = json.loads(node.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json"))
    return [
        p
        for p in listed["items"]
        if p["metadata"].get("deletionTimestamp") is None
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    ]


class ModelServer:
    """A plain HTTP file server on the node IP, inside the namespace: where the operator's
    runtime pods download their model from (``model.uri``)."""

    def __init__(self, netns_name: str, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        # The socket belongs to the namespace it was made in, whichever thread serves it.
        self.server = in_netns(
            netns_name, lambda: http.server.ThreadingHTTPServer((NODE_IP, 0), handler)
        )
        self.url = f"http://{NODE_IP}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class Load:
    """Clients in the namespace posting ``body`` to ``url`` back to back, one connection
    per request (kube-proxy picks a backend per connection), until :meth:`stop`.

    ``answers`` counts replies by status (0: no reply at all), so a test can tell a
    rollback that callers noticed from one they did not.
    """

    def __init__(
        self,
        netns_name: str,
        url: str,
        body: bytes,
        threads: int,
        content_type: str = "text/csv",
    ) -> None:
        self.stopping = threading.Event()
        self.answers: dict[int, int] = {}
        self._lock = threading.Lock()
        self._callers = [netns.NetnsCaller(netns_name) for _ in range(threads)]
        self._threads = [
            threading.Thread(
                target=c.call, args=(functools.partial(self._loop, url, body, content_type),)
            )
            for c in self._callers
        ]
        for thread in self._threads:
            thread.start()

    @property
    def answered(self) -> int:
        """Requests answered 2xx."""
        with self._lock:
            return sum(n for code, n in self.answers.items() if 200 <= code < 300)

    @property
    def failed(self) -> int:
        """Requests answered with an error status, or not at all."""
        with self._lock:
            return sum(n for code, n in self.answers.items() if not 200 <= code < 300)

    def counts(self) -> dict[int, int]:
        with self._lock:
            return dict(self.answers)

    def _loop(self, url: str, body: bytes, content_type: str) -> None:
        while not self.stopping.is_set():
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": content_type}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    reply.read()
                    code = reply.status
            except urllib.error.HTTPError as error:
                code = error.code
            except (urllib.error.URLError, OSError):
                code = 0
            if not 200 <= code < 300:
                time.sleep(0.05)
            with self._lock:
                self.answers[code] = self.answers.get(code, 0) + 1

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)
        for caller in self._callers:
            caller.close()


class KeepAliveLoad:
    """Clients in the namespace that each keep one HTTP/1.1 connection open and reuse it
    for every request, reconnecting only when the server ends it, until :meth:`stop`.

    Counts answers by the revision that gave them (``X-Fleetshift-Revision``) and the
    connections each client opened."""

    def __init__(self, netns_name: str, host: str, body: bytes, clients: int) -> None:
        self.stopping = threading.Event()
        self.by_revision: dict[str, int] = {}
        self.failed = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._callers = [netns.NetnsCaller(netns_name) for _ in range(clients)]
        self._threads = [
            threading.Thread(target=c.call, args=(functools.partial(self._loop, host, body),))
            for c in self._callers
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, host: str, body: bytes) -> None:
        import http.client  # noqa: PLC0415

        connection = http.client.HTTPConnection(host, 80, timeout=10)
        while not self.stopping.is_set():
            fresh = connection.sock is None
            try:
                connection.request(
                    "POST", "/invocations", body=body, headers={"Content-Type": "text/csv"}
                )
                response = connection.getresponse()
                response.read()
            except (http.client.HTTPException, OSError):
                connection.close()
                with self._lock:
                    self.failed += 1
                time.sleep(0.05)
                continue
            revision = response.getheader("x-fleetshift-revision") or "?"
            with self._lock:
                self.connections += fresh
                if response.status == 200:
                    self.by_revision[revision] = self.by_revision.get(revision, 0) + 1
                else:
                    self.failed += 1
        connection.close()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.by_revision)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)
        for caller in self._callers:
            caller.close()


class S3Gateway:
    """VersityGW (a real S3 gateway) on the node IP inside the namespace, backed by a
    folder: the runtime pods read ``s3://`` models from it with credentials from a Secret."""

    port = 9000
    access_key = "fleetshift-realnode"
    secret_key = "fleetshift-realnode-secret-key"
    region = "us-east-1"

    def __init__(self, node: RealNode, folder: Path) -> None:
        self.netns = node.cluster.netns
        self.endpoint = f"http://{NODE_IP}:{self.port}"
        (folder / "data").mkdir(parents=True)
        (folder / "meta").mkdir()
        self.process = ManagedProcess.spawn(
            "versitygw",
            netns.in_netns(
                self.netns,
                [
                    str(versitygw_binary()),
                    "--access",
                    self.access_key,
                    "--secret",
                    self.secret_key,
                    "--port",
                    f"{NODE_IP}:{self.port}",
                    "posix",
                    "--sidecar",
                    str(folder / "meta"),
                    str(folder / "data"),
                ],
            ),
            folder / "versitygw.log",
            cwd=folder,
        )
        wait_for(self._answers, timeout=30, interval=0.2, message="versitygw listening")

    def _answers(self) -> bool:
        if not self.process.running():
            raise AssertionError(f"versitygw exited:\n{self.process.log_tail(20)}")

        def get() -> bool:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
            except urllib.error.HTTPError:
                return True  # an S3 error document: it listens
            except (urllib.error.URLError, OSError):
                return False
            return True

        return in_netns(self.netns, get)

    def put(self, bucket: str, key: str, content: bytes) -> str:
        """Upload an object (creating the bucket) and return its ``s3://`` URI."""
        import boto3  # type: ignore[import-untyped]  # noqa: PLC0415
        from botocore.config import Config  # type: ignore[import-untyped]  # noqa: PLC0415

        def upload() -> None:
            client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name=self.region,
                config=Config(s3={"addressing_style": "path"}),
            )
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key=key, Body=content)

        in_netns(self.netns, upload)
        return f"s3://{bucket}/{key}"

    def credentials_secret(self, name: str) -> dict[str, Any]:
        """A Secret holding the gateway's credentials, for the variant's ``env``."""
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
            },
        }

    def variant_env(self, secret: str) -> list[dict[str, Any]]:
        """What a variant declares to read models from this gateway: the endpoint in
        plain sight, the keys from the Secret."""
        return [
            {"name": "FLEETSHIFT_S3_ENDPOINT_URL", "value": self.endpoint},
            {"name": "AWS_REGION", "value": self.region},
            *(
                {
                    "name": key,
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
                }
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            ),
        ]

    def stop(self) -> None:
        stop_processes([self.process], grace=5)


class PodPrometheus:
    """Prometheus (built from its Go module: Debian's has no Kubernetes discovery) on the
    node IP inside the namespace, finding the fleet pods through the apiserver."""

    port = 9090

    def __init__(self, node: RealNode, folder: Path, namespaces: list[str]) -> None:
        self.netns = node.cluster.netns
        self.url = f"http://{NODE_IP}:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(kubernetes_pods_config(node.cluster.kubeconfig, namespaces))
        )
        prometheus = binaries.ensure((binaries.PROMETHEUS,))[binaries.PROMETHEUS.name]
        self.process = ManagedProcess.spawn(
            "prometheus",
            netns.in_netns(
                self.netns,
                [
                    str(prometheus),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address={NODE_IP}:{self.port}",
                ],
            ),
            folder / "prometheus.log",
            cwd=folder,
        )
        wait_for(self._ready, timeout=60, interval=0.5, message="Prometheus ready")

    def _ready(self) -> bool:
        if not self.process.running():
            raise AssertionError(f"Prometheus exited:\n{self.process.log_tail(30)}")

        def get() -> bool:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    return bool(reply.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        return in_netns(self.netns, get)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})

        def get() -> list[dict[str, Any]]:
            with urllib.request.urlopen(url, timeout=5) as reply:
                answer: list[dict[str, Any]] = json.load(reply)["data"]["result"]
                return answer

        return in_netns(self.netns, get)

    def stop(self) -> None:
        stop_processes([self.process], grace=10)


ADAPTER_PORT = 6443
CUSTOM_METRICS_API = "v1beta1.custom.metrics.k8s.io"


def adapter_config(window: str = "20s") -> dict[str, Any]:
    """The prometheus-adapter rule README.md gives for ``targetInvocationsPerReplica``:
    each pod's rate of ``fleetshift_invocations_total`` as ``fleetshift_invocations_per_second``.

    >>> rule = adapter_config()["rules"][0]
    >>> rule["name"]["as"], rule["resources"]["overrides"]["pod"]
    ('fleetshift_invocations_per_second', {'resource': 'pod'})
    """
    return {
        "rules": [
            {
                "seriesQuery": 'fleetshift_invocations_total{namespace!="",pod!=""}',
                "resources": {
                    "overrides": {
                        "namespace": {"resource": "namespace"},
                        "pod": {"resource": "pod"},
                    }
                },
                "name": {
                    "matches": "^fleetshift_invocations_total$",
                    "as": "fleetshift_invocations_per_second",
                },
                "metricsQuery": (
                    f"sum(rate(<<.Series>>{{<<.LabelMatchers>>}}[{window}])) by (<<.GroupBy>>)"
                ),
            }
        ]
    }


class PrometheusAdapter:
    """prometheus-adapter (built from its Go module) serving the custom metrics API from
    :class:`PodPrometheus`, registered with the aggregator as metrics-server is: an
    APIService, a Service without selector and Endpoints naming the process on the node IP.

    It authenticates to the apiserver with the admin kubeconfig (a development shortcut; a
    cluster gives it a ServiceAccount with the RBAC of its chart)."""

    def __init__(self, node: RealNode, folder: Path, prometheus_url: str) -> None:
        self.node = node
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "adapter.yaml"
        config.write_text(yaml.safe_dump(adapter_config()))
        keys = node.cluster.keys
        cert, key = pki.write_serving_cert(
            keys,
            "prometheus-adapter-serving",
            (
                "prometheus-adapter.kube-system.svc",
                "prometheus-adapter.kube-system.svc.cluster.local",
            ),
            (NODE_IP,),
        )
        for path, document in self._objects(keys.ca_cert.read_bytes()):
            node.cluster.request("POST", path, document)
        adapter = binaries.ensure((binaries.PROMETHEUS_ADAPTER,))[binaries.PROMETHEUS_ADAPTER.name]
        kubeconfig = node.cluster.kubeconfig
        self.process = ManagedProcess.spawn(
            "prometheus-adapter",
            netns.in_netns(
                node.cluster.netns,
                [
                    str(adapter),
                    f"--prometheus-url={prometheus_url}",
                    f"--config={config}",
                    "--metrics-relist-interval=5s",
                    f"--lister-kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    f"--bind-address={NODE_IP}",
                    f"--secure-port={ADAPTER_PORT}",
                    f"--tls-cert-file={cert}",
                    f"--tls-private-key-file={key}",
                    f"--requestheader-client-ca-file={keys.ca_cert}",
                    f"--requestheader-allowed-names={pki.FRONT_PROXY_CLIENT.user}",
                    "--v=1",
                ],
            ),
            folder / "adapter.log",
            cwd=folder,
        )

    @staticmethod
    def _objects(ca_bundle: bytes) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "/api/v1/namespaces/kube-system/services",
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "prometheus-adapter", "namespace": "kube-system"},
                    "spec": {"ports": [{"name": "https", "port": 443, "targetPort": ADAPTER_PORT}]},
                },
            ),
            (
                "/api/v1/namespaces/kube-system/endpoints",
                {
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": {"name": "prometheus-adapter", "namespace": "kube-system"},
                    "subsets": [
                        {
                            "addresses": [{"ip": NODE_IP}],
                            "ports": [{"name": "https", "port": ADAPTER_PORT}],
                        }
                    ],
                },
            ),
            (
                "/apis/apiregistration.k8s.io/v1/apiservices",
                {
                    "apiVersion": "apiregistration.k8s.io/v1",
                    "kind": "APIService",
                    "metadata": {"name": CUSTOM_METRICS_API},
                    "spec": {
                        "group": "custom.metrics.k8s.io",
                        "version": "v1beta1",
                        "service": {
                            "namespace": "kube-system",
                            "name": "prometheus-adapter",
                            "port": 443,
                        },
                        "caBundle": base64.b64encode(ca_bundle).decode(),
                        "groupPriorityMinimum": 100,
                        "versionPriority": 100,
                    },
                },
            ),
        ]

    def running(self) -> bool:
        return self.process.running()

    def stop(self) -> None:
        """Stop the process and unregister the API (an APIService without a server makes
        every discovery call of every client report it)."""
        stop_processes([self.process], grace=5)
        for path in (
            f"/apis/apiregistration.k8s.io/v1/apiservices/{CUSTOM_METRICS_API}",
            "/api/v1/namespaces/kube-system/services/prometheus-adapter",
            "/api/v1/namespaces/kube-system/endpoints/prometheus-adapter",
        ):
            with contextlib.suppress(urllib.error.HTTPError):
                self.node.cluster.request("DELETE", path)


GATEWAY_PORT = 8000
GATEWAY_CONTROLLER = "traefik.io/gateway-controller"


class TraefikGateway:
    """Traefik (built from its Go module) as the Gateway API data plane, on the node IP
    inside the namespace: it watches Gateways of its GatewayClass and the HTTPRoutes
    attached to them through the apiserver, and proxies to the pod IPs of their backend
    Services' EndpointSlices.

    It runs with the admin kubeconfig (a development shortcut; a cluster gives it a
    ServiceAccount with the RBAC of its chart). ``--global.*`` keep it from calling out."""

    def __init__(self, node: RealNode, folder: Path, namespace: str) -> None:
        self.netns = node.cluster.netns
        self.url = f"http://{NODE_IP}:{GATEWAY_PORT}"
        folder.mkdir(parents=True, exist_ok=True)
        for path in binaries.gateway_api_crds():
            node.kubectl("apply", "--server-side", "-f", str(path))
        node.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/gatewayclasses.gateway.networking.k8s.io",
            "crd/gateways.gateway.networking.k8s.io",
            "crd/httproutes.gateway.networking.k8s.io",
            "--timeout=30s",
        )
        node.apply(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": "traefik"},
                "spec": {"controllerName": GATEWAY_CONTROLLER},
            }
        )
        node.apply(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"name": "public", "namespace": namespace},
                "spec": {
                    "gatewayClassName": "traefik",
                    # A listener's port is one of Traefik's entry points.
                    "listeners": [{"name": "web", "protocol": "HTTP", "port": GATEWAY_PORT}],
                },
            }
        )
        traefik = binaries.ensure((binaries.TRAEFIK,))[binaries.TRAEFIK.name]
        self.process = ManagedProcess.spawn(
            "traefik",
            netns.in_netns(
                self.netns,
                [
                    str(traefik),
                    f"--entryPoints.web.address={NODE_IP}:{GATEWAY_PORT}",
                    "--providers.kubernetesgateway=true",
                    f"--providers.kubernetesgateway.namespaces={namespace}",
                    "--global.checknewversion=false",
                    "--global.sendanonymoususage=false",
                    "--log.level=INFO",
                ],
            ),
            folder / "traefik.log",
            cwd=folder,
            env={**os.environ, "KUBECONFIG": str(node.cluster.kubeconfig)},
        )

        def programmed() -> bool:
            if not self.process.running():
                raise AssertionError(f"Traefik exited:\n{self.process.log_tail(30)}")
            gateway = node.get("gateway", "public", namespace)
            return any(
                c["type"] == "Programmed" and c["status"] == "True"
                for c in gateway.get("status", {}).get("conditions", [])
            )

        wait_for(programmed, timeout=60, interval=0.5, message="the Gateway Programmed")

    def stop(self) -> None:
        stop_processes([self.process], grace=10)
