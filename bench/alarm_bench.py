"""Detection-to-rollback latency and blast radius of a failing canary. Prints numbers.

    .venv/bin/python bench/alarm_bench.py --runs 10 --poll 5

Each run deploys a new revision whose green fleet answers every request with a 5xx
(a canary of 25% behind a ``GreenErrorRate >= 5%`` alarm over one 2-second period).
*Detection* is the moment Prometheus first shows the alarm's query at or above the
threshold; *rollback* is the moment the stable Service's EndpointSlice holds only blue
pods again. The blast radius is how many requests the green fleet served in between
and before. Traffic comes from the same EndpointSlice-following simulator the tests
use, at 50 requests per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lightkube import Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType
from prometheus_api_client import PrometheusConnect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from fleetshift_devcluster.cluster import running_cluster  # noqa: E402
from fleetshift_devcluster.processes import ManagedProcess, stop_processes  # noqa: E402
from fleetshift_devcluster.prometheus import LocalPrometheus  # noqa: E402
from fleetshift_devcluster.wait import wait_for  # noqa: E402
from fleetshift_operator import api  # noqa: E402
from fleetshift_operator.alarms.base import AlarmContext  # noqa: E402
from fleetshift_operator.alarms.templates import template_query  # noqa: E402
from fleetshift_operator.api import EndpointSpec, TemplateAlarm  # noqa: E402
from fleetshift_operator.planning.names import calculate_revision  # noqa: E402
from operator_bench import _sa, install_crd, status  # noqa: E402
from support.traffic import Behaviour, TrafficSimulator  # noqa: E402

Endpoint = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)
ALARM = {"kind": "GreenErrorRate", "threshold": 5, "periodSeconds": 2, "evaluationPeriods": 1}


def spec(model: str, poll: int) -> dict[str, Any]:
    return {
        "variants": [{"name": "main", "model": {"uri": model}, "replicas": 4}],
        "deploymentConfig": {
            "blueGreen": {
                "trafficRouting": {
                    "type": "Canary",
                    "canarySize": {"type": "CapacityPercent", "value": 25},
                    "waitIntervalSeconds": 300,
                },
                "maximumExecutionTimeoutSeconds": 1800,
            },
            "autoRollback": {
                "alarms": [{"name": "green-5xx", "template": ALARM}],
                "pollIntervalSeconds": poll,
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--poll", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, running_cluster(Path(scratch) / "c") as cluster:
        kube = Client(KubeConfig.from_file(cluster.kubeconfig), field_manager="bench")
        install_crd(kube)
        kube.create(Namespace(metadata=ObjectMeta(name="bench")))
        wait_for(lambda: _sa(kube, "bench"), timeout=30)
        traffic = TrafficSimulator(cluster.kubeconfig, "bench", "churn")
        traffic.start()
        prometheus = LocalPrometheus(folder=Path(scratch) / "prometheus")
        prometheus.start(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "fleetshift", "static_configs": [{"targets": [traffic.target]}]}
                ],
            }
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "FLEETSHIFT_NAMESPACES": json.dumps(["bench"]),
            "FLEETSHIFT_METRICS_PORT": "0",
            "FLEETSHIFT_PROMETHEUS_URL": prometheus.url,
        }
        operator = ManagedProcess.spawn(
            "operator",
            [sys.executable, "-m", "fleetshift_operator"],
            Path(scratch) / "operator.log",
            cwd=Path(scratch),
            env=env,
        )
        client = PrometheusConnect(url=prometheus.url, disable_ssl=True)
        try:
            base = spec("s3://m/v0", args.poll)
            blue = calculate_revision(EndpointSpec.model_validate(base).variants[0])
            kube.create(Endpoint(metadata=ObjectMeta(name="churn", namespace="bench"), spec=base))
            wait_for(lambda: status(kube, "bench", "churn").get("phase") == "InService", timeout=60)
            latencies, blast = [], []
            for run in range(1, args.runs + 1):
                update = spec(f"s3://m/v{run}", args.poll)
                green = calculate_revision(EndpointSpec.model_validate(update).variants[0])
                traffic.set(green, Behaviour(error_fraction=1.0))
                query = AlarmContext("bench", "churn", "main", green, blue).render(
                    template_query(TemplateAlarm.model_validate(ALARM)).query
                )
                kube.patch(
                    Endpoint,
                    "churn",
                    {"spec": update},
                    namespace="bench",
                    patch_type=PatchType.MERGE,
                )

                def visible(query: str = query) -> float | None:
                    result = client.custom_query(query)
                    value = float(result[0]["value"][1]) if result else None
                    return time.monotonic() if value is not None and value >= 5 else None

                detected = wait_for(visible, timeout=120, interval=0.05)

                def back(green: str = green) -> float | None:
                    counts = traffic.serving()
                    return time.monotonic() if counts and green not in counts else None

                restored = wait_for(back, timeout=60, interval=0.05)
                wait_for(
                    lambda: (
                        status(kube, "bench", "churn").get("phase") == "InService"
                        and status(kube, "bench", "churn").get("candidateRevision") is None
                    ),
                    timeout=60,
                )
                latencies.append(restored - detected)
                blast.append(traffic.served.get(green, 0))
                print(
                    f"run {run:2d}: detection -> rollback {latencies[-1]:.2f}s, "
                    f"requests served by the bad fleet {blast[-1]}",
                    flush=True,
                )
            total = sum(traffic.served.values())
            print(
                f"detection-to-rollback (poll {args.poll}s): median "
                f"{statistics.median(latencies):.2f}s, max {max(latencies):.2f}s over {args.runs} "
                f"runs; bad-fleet requests median {statistics.median(blast):.0f}, max {max(blast)} "
                f"({total} requests in all at 50/s)"
            )
        finally:
            stop_processes([operator])
            prometheus.stop()
            traffic.stop()


if __name__ == "__main__":
    main()
