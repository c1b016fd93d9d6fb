"""A kubelet for the demo: one real runtime process for every serving pod.

kwok gives the control plane nodes and pods without containers. For the demo the
pods must serve for real, so this launcher plays the kubelet's part for pods
annotated ``kwok.x-k8s.io/status: custom`` (kwok leaves their status alone):

- a pod scheduled to a node gets a runtime process (``python -m fleetshift_runtime``)
  with the pod's own container environment, on its own loopback ports, and the pod
  status says Running with a (bookkeeping) pod IP;
- the pod is Ready only while its process answers ``GET /ping`` (the readiness
  probe the operator's Deployment declares), so the EndpointSlice controller, the
  operator and the load generator all see the process's real readiness;
- a process that exits is restarted with a growing back-off, and the pod shows
  ``CrashLoopBackOff`` with its restart count, as a kubelet would report it;
- a pod being deleted turns unready at once and its process is stopped shortly
  after (a short drain, like a preStop hook);
- Prometheus finds the processes through file-based service discovery: the
  launcher keeps ``targets.json`` listing each live process's loopback metrics
  address with its pod's name and labels. (Debian's Prometheus is built without
  Kubernetes service discovery, and pod IPs are bookkeeping only.) Each pod also
  carries its addresses as annotations, for a person looking at it.

``routes()`` is the pod-to-port map the load generator uses.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lightkube import Client, KubeConfig, operators
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from fleetshift_devcluster.cluster import CUSTOM_STATUS, free_port
from fleetshift_devcluster.processes import ManagedProcess, stop_processes

KWOK_STATUS = "kwok.x-k8s.io/status"
METRICS_ADDRESS = "demo.fleetshift.dev/metrics-address"
HTTP_ADDRESS = "demo.fleetshift.dev/address"
ENDPOINT_LABEL = "fleetshift.dev/endpoint"
REVISION_LABEL = "fleetshift.dev/revision"
DRAIN_SECONDS = 1.5
_FIRST_POD_IP = ipaddress.IPv4Address("10.250.0.10")
# The environment a runtime process inherits from the demo; the rest comes from the pod.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Route:
    """Where one pod's runtime answers, and what it serves."""

    pod: str
    port: int
    revision: str
    ready: bool
    host: str = "127.0.0.1"
    """Where to connect: the runtime process on loopback, or a Service's ClusterIP."""


@dataclasses.dataclass
class PodRuntime:
    """The runtime process standing in for one pod's container."""

    pod: str
    revision: str
    container: str
    image: str
    pod_ip: str
    port: int
    metrics_port: int
    env: dict[str, str]
    started_at: str
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    process: ManagedProcess | None = None
    ready: bool = False
    restarts: int = 0
    last_exit: int | None = None
    restart_at: float | None = None
    draining_since: float | None = None
    failed_probes: int = 0


def pod_environment(pod: dict[str, Any]) -> dict[str, str]:
    """The literal ``env`` values of the pod's first container (``valueFrom`` entries
    cannot be resolved without a kubelet and are skipped).

    >>> pod_environment({"spec": {"containers": [{"env": [
    ...     {"name": "A", "value": "1"}, {"name": "B", "valueFrom": {}}]}]}})
    {'A': '1'}
    """
    container = pod["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def runtime_environment(pod_env: dict[str, str], port: int, metrics_port: int) -> dict[str, str]:
    """The process environment: the pod's, bound to loopback on the given ports.

    >>> env = runtime_environment({"FLEETSHIFT_PORT": "8080", "X": "y"}, 4100, 4101)
    >>> env["FLEETSHIFT_PORT"], env["FLEETSHIFT_METRICS_PORT"], env["FLEETSHIFT_HOST"], env["X"]
    ('4100', '4101', '127.0.0.1', 'y')
    """
    inherited = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    return {
        **inherited,
        **pod_env,
        "FLEETSHIFT_HOST": "127.0.0.1",
        "FLEETSHIFT_PORT": str(port),
        "FLEETSHIFT_METRICS_PORT": str(metrics_port),
        "FLEETSHIFT_WORKERS": "1",
        "FLEETSHIFT_PREDICT_THREADS": "1",
        "FLEETSHIFT_LOG_LEVEL": "warning",
    }


def restart_backoff(restarts: int) -> float:
    """Seconds before restart number ``restarts`` (a kubelet doubles from 10 s; the
    demo from 1 s, capped at 20 s).

    >>> [restart_backoff(n) for n in (1, 2, 3, 6, 9)]
    [1.0, 2.0, 4.0, 20.0, 20.0]
    """
    return float(min(20, 2 ** (restarts - 1)))


class PodLauncher:
    """Runs a runtime process per pod of the watched namespace, in a thread."""

    def __init__(self, kubeconfig: Path, namespace: str, folder: Path) -> None:
        self.kube = Client(KubeConfig.from_file(kubeconfig))
        self.namespace = namespace
        self.folder = folder
        self.runtimes: dict[str, PodRuntime] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="launcher", daemon=True)
        self._next_ip = _FIRST_POD_IP
        self._targets_written: str | None = None
        self.errors: list[str] = []

    # -- public ---------------------------------------------------------------------------

    @property
    def targets_file(self) -> Path:
        """Prometheus's file-based service discovery reads this."""
        return self.folder / "targets.json"

    def start(self) -> None:
        self._write_targets()
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and every runtime process."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with self._lock:
            processes = [r.process for r in self.runtimes.values() if r.process is not None]
            self.runtimes.clear()
        stop_processes(processes, grace=5)

    def routes(self) -> dict[str, Route]:
        """The pod-to-port map: every pod with a live process, by pod name."""
        with self._lock:
            return {
                r.pod: Route(r.pod, r.port, r.revision, r.ready)
                for r in self.runtimes.values()
                if r.process is not None and r.draining_since is None
            }

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as error:
                self.errors.append(f"{type(error).__name__}: {error}")
                del self.errors[:-20]
            self._stop.wait(0.25)

    def sync_once(self) -> None:
        """One pass: adopt new pods, probe readiness, restart or stop processes."""
        pods = {
            p.metadata.name: p
            for p in self.kube.list(
                Pod, namespace=self.namespace, labels={ENDPOINT_LABEL: operators.exists()}
            )
            if p.metadata is not None and p.metadata.name
        }
        for name, pod in pods.items():
            raw = pod.to_dict()
            annotations = raw["metadata"].get("annotations") or {}
            if annotations.get(KWOK_STATUS) != CUSTOM_STATUS:
                continue
            known = self.runtimes.get(name)
            if raw["metadata"].get("deletionTimestamp"):
                if known is not None:
                    self._drain(known)
                continue
            if known is None and raw["spec"].get("nodeName"):
                self._adopt(raw)
        for name, runtime in list(self.runtimes.items()):
            if name not in pods or (
                runtime.draining_since is not None
                and time.monotonic() - runtime.draining_since > DRAIN_SECONDS
            ):
                self._forget(runtime)
                continue
            if runtime.draining_since is None:
                self._supervise(runtime)
        self._write_targets()

    def _write_targets(self) -> None:
        """Rewrite ``targets.json`` when the set of scrape targets changed (atomically:
        Prometheus never reads half a file)."""
        with self._lock:
            runtimes = [r for r in self.runtimes.values() if r.process is not None]
        content = json.dumps(scrape_targets(self.namespace, runtimes), indent=1, sort_keys=True)
        if content == self._targets_written:
            return
        staging = self.targets_file.with_suffix(".tmp")
        staging.write_text(content)
        staging.replace(self.targets_file)
        self._targets_written = content

    # -- pod life cycle ----------------------------------------------------------------------

    def _adopt(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        runtime = PodRuntime(
            pod=name,
            revision=(pod["metadata"].get("labels") or {}).get(REVISION_LABEL, ""),
            container=container["name"],
            image=container.get("image", ""),
            pod_ip=str(self._allocate_ip()),
            port=free_port(),
            metrics_port=free_port(),
            env=pod_environment(pod),
            started_at=_now(),
            labels=dict(pod["metadata"].get("labels") or {}),
        )
        self._spawn(runtime)
        with self._lock:
            self.runtimes[name] = runtime
        self._patch_metadata(
            runtime,
            {
                METRICS_ADDRESS: f"127.0.0.1:{runtime.metrics_port}",
                HTTP_ADDRESS: f"127.0.0.1:{runtime.port}",
            },
        )
        self._write_status(runtime)

    def _spawn(self, runtime: PodRuntime) -> None:
        runtime.process = ManagedProcess.spawn(
            f"runtime-{runtime.pod}",
            [sys.executable, "-m", "fleetshift_runtime"],
            self.folder / "runtimes" / f"{runtime.pod}.log",
            cwd=self.folder,
            env=runtime_environment(runtime.env, runtime.port, runtime.metrics_port),
        )
        runtime.started_at = _now()
        runtime.restart_at = None
        runtime.failed_probes = 0

    def _supervise(self, runtime: PodRuntime) -> None:
        process = runtime.process
        if process is None:
            if runtime.restart_at is not None and time.monotonic() >= runtime.restart_at:
                self._spawn(runtime)
                self._write_status(runtime)
            return
        if not process.running():
            runtime.process = None
            runtime.ready = False
            runtime.restarts += 1
            runtime.last_exit = 1
            runtime.restart_at = time.monotonic() + restart_backoff(runtime.restarts)
            self._write_status(runtime)
            return
        ready = _answers_ping(runtime.port)
        if ready:
            runtime.failed_probes = 0
        else:
            runtime.failed_probes += 1
        # Like a readiness probe with failureThreshold 2: one miss does not unready a pod.
        now_ready = ready or (runtime.ready and runtime.failed_probes < 2)
        if now_ready != runtime.ready:
            runtime.ready = now_ready
            self._write_status(runtime)

    def _drain(self, runtime: PodRuntime) -> None:
        if runtime.draining_since is None:
            runtime.draining_since = time.monotonic()
            runtime.ready = False

    def _forget(self, runtime: PodRuntime) -> None:
        with self._lock:
            self.runtimes.pop(runtime.pod, None)
        if runtime.process is not None:
            stop_processes([runtime.process], grace=5)

    # -- API writes ------------------------------------------------------------------------

    def _allocate_ip(self) -> ipaddress.IPv4Address:
        address = self._next_ip
        self._next_ip += 1
        return address

    def _patch_metadata(self, runtime: PodRuntime, annotations: dict[str, str]) -> None:
        try:
            self.kube.patch(
                Pod,
                runtime.pod,
                {"metadata": {"annotations": annotations}},
                namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            if error.status.code != 404:
                raise

    def _write_status(self, runtime: PodRuntime) -> None:
        try:
            self.kube.patch(
                Pod.Status,
                runtime.pod,
                {"status": pod_status(runtime, now=_now())},
                namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            if error.status.code != 404:  # a pod deleted meanwhile needs no status
                raise


def pod_status(runtime: PodRuntime, *, now: str) -> dict[str, Any]:
    """The pod status a kubelet would report for ``runtime``.

    >>> r = PodRuntime("p", "abc", "runtime", "img", "10.250.0.10", 1, 2, {}, "T0")
    >>> s = pod_status(r, now="T1")
    >>> s["phase"], s["podIP"], [c["status"] for c in s["conditions"]]
    ('Running', '10.250.0.10', ['True', 'True', 'False', 'False'])
    >>> r.process, r.restarts, r.last_exit = None, 2, 1
    >>> pod_status(r, now="T2")["containerStatuses"][0]["state"]["waiting"]["reason"]
    'CrashLoopBackOff'
    """
    ready = "True" if runtime.ready else "False"
    state: dict[str, Any]
    if runtime.process is not None:
        state = {"running": {"startedAt": runtime.started_at}}
    else:
        state = {"waiting": {"reason": "CrashLoopBackOff", "message": "the runtime exited"}}
    container: dict[str, Any] = {
        "name": runtime.container,
        "image": runtime.image,
        "imageID": "",
        "ready": runtime.ready,
        "started": runtime.process is not None,
        "restartCount": runtime.restarts,
        "state": state,
    }
    if runtime.last_exit is not None:
        container["lastState"] = {
            "terminated": {"exitCode": runtime.last_exit, "reason": "Error", "finishedAt": now}
        }
    return {
        "phase": "Running",
        "podIP": runtime.pod_ip,
        "podIPs": [{"ip": runtime.pod_ip}],
        "startTime": runtime.started_at,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": runtime.started_at},
            {"type": "Initialized", "status": "True", "lastTransitionTime": runtime.started_at},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
            {"type": "Ready", "status": ready, "lastTransitionTime": now},
        ],
        "containerStatuses": [container],
    }


def scrape_targets(namespace: str, runtimes: list[PodRuntime]) -> list[dict[str, Any]]:
    """Prometheus file-based service discovery entries, one per runtime process, with
    the pod's name and its fleet labels (``serving`` is left out: it changes while a
    pod lives, and a changing label would split the pod's series).

    >>> r = PodRuntime("p1", "abc", "runtime", "img", "10.250.0.10", 4100, 4101, {}, "T",
    ...                labels={"fleetshift.dev/revision": "abc", "fleetshift.dev/serving": "true"})
    >>> scrape_targets("demo", [r])  # doctest: +NORMALIZE_WHITESPACE
    [{'targets': ['127.0.0.1:4101'],
      'labels': {'namespace': 'demo', 'pod': 'p1', 'revision': 'abc'}}]
    """
    entries = []
    for runtime in sorted(runtimes, key=lambda r: r.pod):
        labels = {"namespace": namespace, "pod": runtime.pod}
        for key, value in runtime.labels.items():
            prefix, _, name = key.partition("/")
            if prefix == "fleetshift.dev" and name in ("endpoint", "variant", "revision"):
                labels[name] = value
        entries.append({"targets": [f"127.0.0.1:{runtime.metrics_port}"], "labels": labels})
    return entries


def _answers_ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False
