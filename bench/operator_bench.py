"""Operator benchmarks on the local control plane. Prints numbers; asserts nothing.

    .venv/bin/python bench/operator_bench.py overhead --runs 10
    .venv/bin/python bench/operator_bench.py scale --endpoints 200 1000

``overhead``: from a spec change to the first traffic shift, minus the configured
waits (a canary has none before its first shift), i.e. what the operator and the
control plane add: creating the green fleet, seeing it Ready, moving traffic.
Measured where traffic is decided, in the stable Service's EndpointSlices.

``scale``: how many Endpoints (one replica each, pods on kwok) one operator holds,
with its CPU and resident memory once everything is InService, and while idle.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml
from lightkube import Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Pod
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from fleetshift_devcluster.cluster import LocalCluster, running_cluster
from fleetshift_devcluster.processes import ManagedProcess, stop_processes
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator import api
from fleetshift_operator.crd import CRD_FILE

ROOT = Path(__file__).resolve().parents[1]
Endpoint = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)


def spec(model: str, replicas: int) -> dict[str, Any]:
    return {
        "variants": [{"name": "main", "model": {"uri": model}, "replicas": replicas}],
        "deploymentConfig": {
            "blueGreen": {
                "trafficRouting": {
                    "type": "Canary",
                    "canarySize": {"type": "CapacityPercent", "value": 25},
                    "waitIntervalSeconds": 600,
                },
                "maximumExecutionTimeoutSeconds": 1800,
            }
        },
    }


def install_crd(kube: Client) -> None:
    document = yaml.safe_load((ROOT / "crds" / CRD_FILE).read_text())
    kube.apply(CustomResourceDefinition.from_dict(document), force=True)  # type: ignore[call-overload]
    wait_for(lambda: _established(kube, document["metadata"]["name"]), timeout=30)


def _established(kube: Client, name: str) -> bool:
    crd = kube.get(CustomResourceDefinition, name)
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def start_operator(kubeconfig: Path, namespace: str, folder: Path) -> ManagedProcess:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "FLEETSHIFT_NAMESPACES": json.dumps([namespace]),
        "FLEETSHIFT_METRICS_PORT": "0",
    }
    return ManagedProcess.spawn(
        "operator",
        [sys.executable, "-m", "fleetshift_operator"],
        folder / "operator.log",
        cwd=folder,
        env=env,
    )


def green_serving(kube: Client, namespace: str, name: str, green: str) -> bool:
    ips = {
        p.status.podIP
        for p in kube.list(Pod, namespace=namespace, labels={"fleetshift.dev/endpoint": name})
        if p.status
        and p.metadata
        and (p.metadata.labels or {}).get("fleetshift.dev/revision") == green
    }
    for endpoint_slice in kube.list(
        EndpointSlice, namespace=namespace, labels={"kubernetes.io/service-name": name}
    ):
        for endpoint in endpoint_slice.endpoints or []:
            ready = endpoint.conditions and endpoint.conditions.ready
            if ready and set(endpoint.addresses) & ips:
                return True
    return False


def status(kube: Client, namespace: str, name: str) -> dict[str, Any]:
    body = kube.get(Endpoint, name, namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
    found: dict[str, Any] = body.get("status") or {}
    return found


def _one_overhead_run(kube: Client, run: int) -> tuple[float, float, float]:
    """One spec change; seconds until (deployment started, step 1 decided, green serving)."""
    from fleetshift_operator.api import EndpointSpec  # noqa: PLC0415
    from fleetshift_operator.planning.names import calculate_revision  # noqa: PLC0415

    update = spec(f"s3://m/v{run}", 4)
    green = calculate_revision(EndpointSpec.model_validate(update).variants[0])
    start = time.monotonic()
    kube.patch(Endpoint, "churn", {"spec": update}, namespace="bench", patch_type=PatchType.MERGE)

    def current() -> dict[str, Any]:
        return status(kube, "bench", "churn")

    wait_for(lambda: current().get("candidateRevision") == green, timeout=60, interval=0.02)
    created = time.monotonic() - start
    wait_for(lambda: (current().get("step") or {}).get("index") == 1, timeout=60, interval=0.02)
    decided = time.monotonic() - start
    wait_for(lambda: green_serving(kube, "bench", "churn", green), timeout=60, interval=0.02)
    shifted = time.monotonic() - start
    # promote, so the next run starts from InService on this revision
    annotations = {"metadata": {"annotations": {"fleetshift.dev/promote": f"r{run}"}}}
    kube.patch(Endpoint, "churn", annotations, namespace="bench", patch_type=PatchType.MERGE)
    wait_for(
        lambda: current().get("activeRevision") == green and current().get("phase") == "InService",
        timeout=60,
    )
    return created, decided, shifted


def overhead(runs: int) -> None:
    with tempfile.TemporaryDirectory() as scratch, running_cluster(Path(scratch) / "c") as cluster:
        kube = Client(KubeConfig.from_file(cluster.kubeconfig), field_manager="bench")
        install_crd(kube)
        kube.create(Namespace(metadata=ObjectMeta(name="bench")))
        wait_for(lambda: _sa(kube, "bench"), timeout=30)
        operator = start_operator(cluster.kubeconfig, "bench", Path(scratch))
        try:
            first = Endpoint(
                metadata=ObjectMeta(name="churn", namespace="bench"), spec=spec("s3://m/v0", 4)
            )
            kube.create(first)
            wait_for(lambda: status(kube, "bench", "churn").get("phase") == "InService", timeout=60)
            decided_all, shifted_all = [], []
            for run in range(1, runs + 1):
                created, decided, shifted = _one_overhead_run(kube, run)
                decided_all.append(decided)
                shifted_all.append(shifted)
                print(
                    f"run {run:2d}: deployment started {created:.2f}s, step 1 decided "
                    f"{decided:.2f}s, green serving in the EndpointSlice {shifted:.2f}s",
                    flush=True,
                )
            print(
                "overhead from spec change to first traffic shift (no wait is configured "
                f"before it): median {statistics.median(shifted_all):.2f}s, "
                f"max {max(shifted_all):.2f}s over {runs} runs; green Ready and step decided: "
                f"median {statistics.median(decided_all):.2f}s"
            )
        finally:
            stop_processes([operator])


def _sa(kube: Client, namespace: str) -> bool:
    from lightkube.resources.core_v1 import ServiceAccount  # noqa: PLC0415

    try:
        kube.get(ServiceAccount, "default", namespace=namespace)
    except Exception:
        return False
    return True


def _in_service_count(kube: Client) -> int:
    done = 0
    for endpoint in kube.list(Endpoint, namespace="bench"):
        body = endpoint.to_dict()  # type: ignore[no-untyped-call]
        done += (body.get("status") or {}).get("phase") == "InService"
    return done


def _requests_by_verb(cluster: LocalCluster) -> dict[str, float]:
    """The apiserver's own count of the requests it served, by verb (all clients)."""
    request = urllib.request.Request(f"{cluster.server}/metrics")
    with urllib.request.urlopen(request, context=cluster._ssl_context(), timeout=30) as answer:
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels, value = line.rsplit(" ", 1)
            verb = labels.split('verb="', 1)[1].split('"', 1)[0]
            counts[verb] = counts.get(verb, 0.0) + float(value)
    return counts


def _per_second(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    rates = {verb: (after.get(verb, 0.0) - before.get(verb, 0.0)) / seconds for verb in after}
    shown = {verb: rate for verb, rate in sorted(rates.items()) if rate >= 0.05}
    return ", ".join(f"{verb} {rate:.1f}/s" for verb, rate in shown.items()) or "none"


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


CREATORS = 8
"""Endpoints created at once by the bench."""
IDLE_SECONDS = 120
"""Two resyncs (60 s each): long enough to see the steady cost of Endpoints at rest."""


def scale(counts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as scratch, running_cluster(Path(scratch) / "c") as cluster:
        kube = Client(KubeConfig.from_file(cluster.kubeconfig), field_manager="bench")
        install_crd(kube)
        kube.create(Namespace(metadata=ObjectMeta(name="bench")))
        wait_for(lambda: _sa(kube, "bench"), timeout=30)
        operator = start_operator(cluster.kubeconfig, "bench", Path(scratch))
        watched = psutil.Process(operator.pid)
        try:
            made = 0
            for target in counts:
                began = time.monotonic()
                cpu_before = _cpu_seconds(watched)

                def create(index: int) -> None:
                    meta = ObjectMeta(name=f"ep-{index:04d}", namespace="bench")
                    kube.create(Endpoint(metadata=meta, spec=spec(f"s3://m/{index}", 1)))

                # Eight at a time, as kubectl apply -f of a folder or a GitOps sync would,
                # so the client's own pace does not hide the operator's.
                with concurrent.futures.ThreadPoolExecutor(CREATORS) as pool:
                    list(pool.map(create, range(made, target)))
                made = target
                created = time.monotonic() - began
                while (done := _in_service_count(kube)) < target:
                    print(f"  {done}/{target} InService after {time.monotonic() - began:.0f}s")
                    if time.monotonic() - began > 1800:
                        raise SystemExit(f"only {done}/{target} InService after 30 minutes")
                    time.sleep(10)
                converge = time.monotonic() - began
                busy = _cpu_seconds(watched) - cpu_before
                idle_start = _cpu_seconds(watched)
                requests_before = _requests_by_verb(cluster)
                time.sleep(IDLE_SECONDS)
                idle = (_cpu_seconds(watched) - idle_start) / IDLE_SECONDS
                requests = _per_second(requests_before, _requests_by_verb(cluster), IDLE_SECONDS)
                rss = watched.memory_info().rss / 2**20
                print(
                    f"{target} endpoints: created in {created:.0f}s by this client, "
                    f"all InService {converge:.0f}s after the first (operator CPU "
                    f"{busy:.0f}s, {100 * busy / converge:.0f}% of a core); idle CPU "
                    f"{100 * idle:.1f}% of a core over {IDLE_SECONDS}s; RSS {rss:.0f} MiB; "
                    f"apiserver requests while idle (every client): {requests}",
                    flush=True,
                )
        finally:
            stop_processes([operator])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("overhead").add_argument("--runs", type=int, default=10)
    sub.add_parser("scale").add_argument("--endpoints", type=int, nargs="+", default=[200, 1000])
    args = parser.parse_args()
    if args.command == "overhead":
        overhead(args.runs)
    else:
        scale(args.endpoints)


if __name__ == "__main__":
    main()
