"""A real Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok with fake nodes.

Every process listens on 127.0.0.1 only. Pod IPs and ClusterIPs that kwok and
the apiserver hand out are bookkeeping: nothing here connects to them.

The cluster's state (PIDs, ports, paths) is written to ``<folder>/cluster.json``
so that another process (``make cluster-down``) can stop exactly the processes
that were started, by PID, and nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import signal
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from fleetshift_devcluster import binaries, pki
from fleetshift_devcluster.processes import ManagedProcess, port_is_free, stop_processes

STATE_FILE = "cluster.json"
SERVICE_CIDR = "10.96.0.0/16"
"""ClusterIPs are bookkeeping only: no process ever connects to them."""
POD_CIDR = "10.244.0.1/16"
"""kwok's fake pod IPs: bookkeeping only, like ClusterIPs."""
DEFAULT_NODES = 3
CONTROLLER_MANAGER_QPS = 100
"""Requests per second each controller of the controller-manager may make."""
CUSTOM_STATUS = "custom"
"""Pods annotated ``kwok.x-k8s.io/status: custom`` keep the status someone else sets."""
CRASHLOOP_IMAGE = "fleetshift.dev/kwok:crashloop"
"""kwok plays a container that keeps crashing (CrashLoopBackOff) for this image."""
UNREADY_IMAGE = "fleetshift.dev/kwok:unready"
"""kwok plays a container that runs but never passes its readiness probe for this image."""
SLOW_IMAGE = "fleetshift.dev/kwok:slow"
"""kwok plays a container that takes ``SLOW_START_SECONDS`` to become Ready."""
SLOW_START_SECONDS = 4

_FAILING_STATUS = """\
phase: Running
conditions:
- type: Initialized
  status: "True"
- type: Ready
  status: "False"
  reason: ContainersNotReady
- type: ContainersReady
  status: "False"
  reason: ContainersNotReady
- type: PodScheduled
  status: "True"
containerStatuses:
{{{{ range .spec.containers }}}}
- name: {{{{ .name | Quote }}}}
  image: {{{{ .image | Quote }}}}
  ready: false
  restartCount: {restarts}
  state:
{state}
{{{{ end }}}}
{{{{ $ips := PodIPsWith .spec.nodeName false .metadata.uid .metadata.name .metadata.namespace }}}}
podIP: {{{{ index $ips 0 | Quote }}}}
podIPs:
{{{{ range $ips }}}}
- ip: {{{{ . | Quote }}}}
{{{{ end }}}}
startTime: {{{{ Now | Quote }}}}
"""


def _slow_ready_stage(pod_ready: dict[str, Any]) -> dict[str, Any]:
    """kwok's pod-ready stage, for ``SLOW_IMAGE`` only and after a delay."""
    stage = copy.deepcopy(pod_ready)
    stage["metadata"]["name"] = "fleetshift-slow-ready"
    expressions = stage["spec"]["selector"]["matchExpressions"]
    expressions[:] = [e for e in expressions if e["key"] != ".spec.containers.[0].image"]
    expressions.append(
        {"key": ".spec.containers.[0].image", "operator": "In", "values": [SLOW_IMAGE]}
    )
    stage["spec"]["delay"] = {"durationMilliseconds": SLOW_START_SECONDS * 1000}
    return stage


def _failing_pod_stage(name: str, image: str, *, crash: bool) -> dict[str, object]:
    """A kwok Stage that plays a failing container for pods running ``image``."""
    if crash:
        state = (
            "    waiting: {reason: CrashLoopBackOff, message: back-off restarting failed container}"
        )
    else:
        state = "    running: {startedAt: {{ Now | Quote }}}"
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                    {"key": ".spec.containers.[0].image", "operator": "In", "values": [image]},
                ]
            },
            "next": {
                "statusTemplate": _FAILING_STATUS.format(restarts=5 if crash else 0, state=state)
            },
        },
    }


class ClusterError(RuntimeError):
    """The local control plane could not start or be found."""


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _progress(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def kubeconfig_for(
    *, server: str, ca: Path, cert: Path, key: Path, user: str, namespace: str = "default"
) -> dict[str, object]:
    """A kubeconfig document for one client certificate."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "fleetshift-local",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [
            {
                "name": "fleetshift-local",
                "context": {"cluster": "fleetshift-local", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "fleetshift-local",
    }


def fake_node(name: str) -> dict[str, object]:
    """A Node object that kwok manages (by annotation) as if a kubelet ran it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
                "topology.kubernetes.io/zone": f"zone-{name[-1]}",
            },
        },
        # Every kubelet reports ephemeral-storage; without it a pod that requests some (the
        # chart's operator pod does) is unschedulable.
        "status": {
            "allocatable": {
                "cpu": "32",
                "memory": "256Gi",
                "ephemeral-storage": "100Gi",
                "pods": "1000",
            },
            "capacity": {
                "cpu": "32",
                "memory": "256Gi",
                "ephemeral-storage": "100Gi",
                "pods": "1000",
            },
        },
    }


@dataclasses.dataclass
class LocalCluster:
    """A running (or stopped) local control plane rooted in ``folder``."""

    folder: Path
    ports: dict[str, int] = dataclasses.field(default_factory=dict)
    processes: list[ManagedProcess] = dataclasses.field(default_factory=list)
    nodes: int = DEFAULT_NODES

    def __post_init__(self) -> None:
        # Every process runs with the folder as its working directory: paths must not
        # be relative to where the command was started.
        self.folder = self.folder.resolve()

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group ``system:masters``)."""
        return self.folder / "admin.kubeconfig"

    api_host = "127.0.0.1"
    """Where the apiserver listens (the real node's cluster: its node IP)."""
    node_kind = "kwok"
    """What plays the nodes: ``kwok``, or ``real`` (see :mod:`fleetshift_devcluster.realnode`)."""

    @property
    def server(self) -> str:
        return f"https://{self.api_host}:{self.ports['apiserver']}"

    @property
    def keys(self) -> pki.Pki:
        return pki.Pki(self.folder / "pki")

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    # -- state -------------------------------------------------------------------------

    def save(self) -> None:
        state = {
            "folder": str(self.folder),
            "node": self.node_kind,
            "ports": self.ports,
            "nodes": self.nodes,
            "processes": [dataclasses.asdict(p) for p in self.processes],
        }
        (self.folder / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, folder: Path) -> LocalCluster:
        """The cluster whose state lives in ``folder``."""
        path = folder / STATE_FILE
        if not path.exists():
            raise ClusterError(f"no cluster state in {folder} (expected {STATE_FILE})")
        state = json.loads(path.read_text())
        if state.get("node", "kwok") == "real" and cls is LocalCluster:
            from fleetshift_devcluster.realnode import RealNodeCluster  # noqa: PLC0415

            return RealNodeCluster.load(folder)
        return cls(
            folder=Path(state["folder"]),
            ports={k: int(v) for k, v in state["ports"].items()},
            nodes=int(state["nodes"]),
            processes=[ManagedProcess(**p) for p in state["processes"]],
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start every process, register fake nodes, and wait until pods can run."""
        started = time.monotonic()
        paths = binaries.ensure(self._binaries())
        self.folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"):
            self.ports[name] = free_port()
        keys = self._write_pki()
        self._write_kubeconfigs(keys)
        deadline = started + timeout
        try:
            self._prepare()
            self._start_etcd(paths["etcd"])
            self._wait_http(f"http://127.0.0.1:{self.ports['etcd']}/health", deadline, "etcd")
            self._start_apiserver(paths["kube-apiserver"], keys)
            self._wait_http(f"{self.server}/readyz", deadline, "kube-apiserver")
            self._start_controller_manager(paths["kube-controller-manager"], keys)
            self._start_scheduler(paths["kube-scheduler"])
            self._start_kwok(paths["kwok"])
            self._register_nodes()
            self._wait_nodes_ready(deadline)
            self._wait_default_service_account(deadline)
            self._start_node(paths, deadline)
        except BaseException:
            self.stop()
            raise
        _progress(f"ready in {time.monotonic() - started:.1f}s: {self.server}")

    def stop(self) -> None:
        """Stop the processes this cluster started, by PID, newest first."""
        stop_processes(list(reversed(self.processes)))
        self.processes = []
        if self.folder.exists():
            self.save()

    def alive(self) -> bool:
        """True when every started process is still running."""
        return bool(self.processes) and all(p.running() for p in self.processes)

    def kill_apiserver(self) -> None:
        """SIGKILL the kube-apiserver, as a crash would; etcd and the rest keep running.

        Start it again with :meth:`start_apiserver`.
        """
        for process in [p for p in self.processes if p.name == "kube-apiserver"]:
            process.signal(signal.SIGKILL)
            stop_processes([process], grace=5)
            self.processes.remove(process)
        self.save()

    def start_apiserver(self, timeout: float = 60.0, *, wait: bool = True) -> None:
        """Start the kube-apiserver again on its port; with ``wait``, until ``/readyz``
        answers (it serves some requests before that)."""
        paths = binaries.ensure((binaries.KUBE_APISERVER,))
        self._start_apiserver(paths["kube-apiserver"], self.keys)
        if wait:
            self._wait_http(f"{self.server}/readyz", time.monotonic() + timeout, "kube-apiserver")

    def open_ports(self) -> list[int]:
        """Ports of this cluster that something still listens on."""
        return [port for port in self.ports.values() if not port_is_free(port)]

    # -- what a real node changes (see realnode.RealNodeCluster) ---------------------------

    def _binaries(self) -> tuple[binaries.Binary, ...]:
        return binaries.CONTROL_PLANE

    def _clients(self) -> tuple[pki.ClientIdentity, ...]:
        return pki.CLIENTS

    def _write_pki(self) -> pki.Pki:
        return pki.write_pki(self.folder / "pki")

    def _prepare(self) -> None:
        """Before the first process starts."""

    def _start_node(self, paths: dict[str, Path], deadline: float) -> None:
        """After the control plane and kwok are up."""

    # -- helpers -----------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        process = ManagedProcess.spawn(name, argv, self.logs / f"{name}.log", cwd=self.folder)
        self.processes.append(process)
        self.save()

    def _write_kubeconfigs(self, keys: pki.Pki) -> None:
        for identity in self._clients():
            document = kubeconfig_for(
                server=self.server,
                ca=keys.ca_cert,
                cert=keys.client_cert(identity),
                key=keys.client_key(identity),
                user=identity.user,
            )
            stem = identity.file_stem
            (self.folder / f"{stem}.kubeconfig").write_text(yaml.safe_dump(document))

    def _start_etcd(self, etcd: Path) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                str(etcd),
                f"--data-dir={self.folder / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, apiserver: Path, keys: pki.Pki) -> None:
        self._spawn("kube-apiserver", self._apiserver_args(apiserver, keys))

    def _apiserver_args(self, apiserver: Path, keys: pki.Pki) -> list[str]:
        return [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={keys.serving_cert}",
            f"--tls-private-key-file={keys.serving_key}",
            f"--client-ca-file={keys.ca_cert}",
            f"--service-account-key-file={keys.service_account_pub}",
            f"--service-account-signing-key-file={keys.service_account_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            "--storage-media-type=application/vnd.kubernetes.protobuf",
            "--v=1",
        ]

    def _start_controller_manager(self, binary: Path, keys: pki.Pki) -> None:
        kubeconfig = self.folder / f"{pki.CONTROLLER_MANAGER.file_stem}.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={keys.service_account_key}",
                f"--root-ca-file={keys.ca_cert}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--node-monitor-grace-period=60s",
                # The default 20 requests/s (burst 30) per controller, not the operator,
                # bounds how fast 1,000 new Deployments get their pods; production
                # control planes raise it too.
                f"--kube-api-qps={CONTROLLER_MANAGER_QPS}",
                f"--kube-api-burst={2 * CONTROLLER_MANAGER_QPS}",
                "--v=1",
            ],
        )

    def _start_scheduler(self, binary: Path) -> None:
        kubeconfig = self.folder / f"{pki.SCHEDULER.file_stem}.kubeconfig"
        self._spawn(
            "kube-scheduler",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    def _start_kwok(self, binary: Path) -> None:
        kubeconfig = self.folder / f"{pki.KWOK.file_stem}.kubeconfig"
        self._spawn(
            "kwok",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--manage-nodes-with-label-selector=",
                f"--config={self._write_kwok_config()}",
                f"--server-address=127.0.0.1:{self.ports['kwok']}",
                f"--cidr={POD_CIDR}",
                "--node-ip=10.244.255.254",
                "--node-lease-duration-seconds=40",
            ],
        )

    def _write_kwok_config(self) -> Path:
        """kwok's own fast node and pod stages, with one change: pods annotated
        ``kwok.x-k8s.io/status: custom`` are never made Ready by kwok, so a test
        or the demo's launcher can drive their readiness itself."""
        documents: list[dict[str, object]] = []
        for path in binaries.kwok_stage_files():
            for stage in yaml.safe_load_all(path.read_text()):
                if stage and stage.get("metadata", {}).get("name") == "pod-ready":
                    stage["spec"]["selector"]["matchExpressions"] += [
                        {
                            "key": '.metadata.annotations["kwok.x-k8s.io/status"]',
                            "operator": "NotIn",
                            "values": [CUSTOM_STATUS],
                        },
                        {
                            "key": ".spec.containers.[0].image",
                            "operator": "NotIn",
                            "values": [CRASHLOOP_IMAGE, UNREADY_IMAGE, SLOW_IMAGE],
                        },
                    ]
                    documents.append(_slow_ready_stage(stage))
                if stage:
                    documents.append(stage)
        documents.append(_failing_pod_stage("fleetshift-crashloop", CRASHLOOP_IMAGE, crash=True))
        documents.append(_failing_pod_stage("fleetshift-unready", UNREADY_IMAGE, crash=False))
        config = self.folder / "kwok.yaml"
        config.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        return config

    def _ssl_context(self) -> ssl.SSLContext:
        keys = self.keys
        context = ssl.create_default_context(cafile=str(keys.ca_cert))
        context.load_cert_chain(keys.client_cert(pki.ADMIN), keys.client_key(pki.ADMIN))
        return context

    def request(self, method: str, path: str, body: object | None = None) -> object:
        """One admin request to the apiserver, JSON in and out (for start-up only)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        request = urllib.request.Request(  # noqa: S310 - https on loopback only
            f"{self.server}{path}", data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(request, context=self._ssl_context(), timeout=10) as answer:  # noqa: S310
            return json.loads(answer.read() or b"null")

    def _wait_http(self, url: str, deadline: float, what: str) -> None:
        context = self._ssl_context() if url.startswith("https") else None
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            self._check_processes(what)
            try:
                with urllib.request.urlopen(url, context=context, timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last_error = str(error)
            time.sleep(0.2)
        raise ClusterError(f"{what} did not become healthy at {url}: {last_error}")

    def _check_processes(self, waiting_for: str) -> None:
        for process in self.processes:
            if not process.running():
                tail = process.log_tail()
                raise ClusterError(
                    f"{process.name} exited while waiting for {waiting_for}; "
                    f"last log lines:\n{tail}"
                )

    def _register_nodes(self) -> None:
        for index in range(self.nodes):
            with contextlib.suppress(urllib.error.HTTPError):
                self.request("POST", "/api/v1/nodes", fake_node(f"kwok-node-{index}"))

    def _wait_nodes_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_processes("nodes to be Ready")
            listed = self.request("GET", "/api/v1/nodes")
            assert isinstance(listed, dict)
            ready = [
                item
                for item in listed.get("items", [])
                if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in item.get("status", {}).get("conditions", [])
                )
            ]
            if len(ready) >= self.nodes:
                return
            time.sleep(0.2)
        raise ClusterError("kwok nodes did not become Ready")

    def _wait_default_service_account(self, deadline: float) -> None:
        """Pods are admitted only once the namespace's ``default`` account exists."""
        while time.monotonic() < deadline:
            self._check_processes("the default service account")
            try:
                self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
                return
            except urllib.error.HTTPError:
                time.sleep(0.2)
        raise ClusterError("the controller-manager did not create the default service account")


@contextlib.contextmanager
def running_cluster(folder: Path, nodes: int = DEFAULT_NODES) -> Iterator[LocalCluster]:
    """Start a cluster in ``folder`` and stop it on exit, whatever happens."""
    cluster = LocalCluster(folder=folder, nodes=nodes)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def default_folder() -> Path:
    """Where ``make cluster`` keeps its cluster: a fixed temp folder per user."""
    base = os.environ.get("FLEETSHIFT_CLUSTER_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"fleetshift-cluster-{os.getuid()}"
