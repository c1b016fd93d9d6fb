"""A serial inference pipeline on real pods: the example scaler image, then the runtime
image, in one restricted pod on the real node, called through kube-proxy.

This module sorts before ``test_real_node.py``, whose last test stops the session's cluster.
The operator and the model server are ``test_metrics_server.py``'s fixtures.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from fleetshift_devcluster import images, netns
from fleetshift_devcluster.processes import ManagedProcess
from fleetshift_devcluster.realnode import NODE_NAME
from fleetshift_devcluster.wait import wait_for
from realnode import kit
from realnode.conftest import RealNode
from realnode.kit import ModelServer
from support.runtime_kit import train_model

ENDPOINT = "piped"
MEAN, STD = 10.0, 4.0
"""The scaler's parameters: the caller sends ``x * 4 + 10``, the model is given ``x``."""


def unscaled(rows: Any) -> bytes:
    scaled = np.asarray(rows, dtype=np.float64) * STD + MEAN  # exact in float64
    return "\n".join(",".join(repr(float(v)) for v in row) for row in scaled).encode()


def pipeline_endpoint(namespace: str, server: ModelServer) -> dict[str, Any]:
    return {
        "apiVersion": "fleetshift.dev/v1alpha1",
        "kind": "Endpoint",
        "metadata": {"name": ENDPOINT, "namespace": namespace},
        "spec": {
            "variants": [
                {
                    "name": "main",
                    "model": {"uri": f"{server.url}/model.ubj"},
                    "image": images.RUNTIME.tag,
                    "replicas": 1,
                    "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
                    "pipeline": [
                        {
                            "name": "scale",
                            "image": images.EXAMPLE_SCALER.tag,
                            "port": 8081,
                            "contentType": "text/csv",
                            "env": [
                                {"name": "SCALER_MEAN", "value": str(MEAN)},
                                {"name": "SCALER_STD", "value": str(STD)},
                            ],
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                        },
                        {"name": "model"},
                    ],
                }
            ]
        },
    }


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "text/csv"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_prediction_goes_through_the_example_scaler_then_the_runtime_on_a_real_pod(
    real_node: RealNode,
    node_namespace: str,
    operator_in_netns: ManagedProcess,
    models: tuple[ModelServer, Any],
) -> None:
    tarball = images.tarball_path(images.EXAMPLE_SCALER)
    if not tarball.exists():
        pytest.skip(f"no example scaler image tarball at {tarball}: `make images` builds it")
    real_node.cluster.import_image(tarball)
    server, rows = models
    started = time.monotonic()
    real_node.apply(pipeline_endpoint(node_namespace, server))

    def in_service() -> list[dict[str, Any]] | None:
        if not operator_in_netns.running():
            raise AssertionError(f"the operator exited:\n{operator_in_netns.log_tail(40)}")
        status = real_node.get("fsep", ENDPOINT, node_namespace).get("status") or {}
        pods = kit.ready_pods(real_node, node_namespace, f"fleetshift.dev/endpoint={ENDPOINT}")
        return pods if status.get("phase") == "InService" and pods else None

    pods = wait_for(in_service, timeout=180, interval=1, message="the pipeline InService")
    ready_seconds = time.monotonic() - started
    pod = pods[0]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["runtime", "scale"]
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])
    cluster_ip = real_node.get("service", ENDPOINT, node_namespace)["spec"]["clusterIP"]
    url = f"http://{cluster_ip}/invocations"
    expected = train_model().expected(rows)
    caller = netns.NetnsCaller(real_node.cluster.netns)
    try:
        # Ready is the probe's word; kube-proxy programs the Service a moment later.
        def predicted() -> bytes | None:
            status, answer = caller.call(lambda: post(url, unscaled(rows)))
            return answer if status == 200 else None

        answer = wait_for(
            predicted, timeout=90, interval=1, message="a prediction through kube-proxy"
        )
        served_seconds = time.monotonic() - started
        scores = np.array([float(line) for line in answer.split()], dtype=np.float32)
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)

        status, answer = caller.call(lambda: post(url, b"1,2,3\n1,x,3\n"))
        assert status == 400
        refused = json.loads(answer)
        assert refused["step"] == "scale"
        assert refused["error"] == (
            "step 'scale' answered 400: row 2 is not numbers separated by commas"
        )
        status, answer = caller.call(lambda: post(url, b"1,2,3\n"))
        assert status == 400
        refused = json.loads(answer)
        assert refused["step"] == "model"
        assert refused["error"].startswith("step 'model': ")

        timings = []
        for _ in range(20):
            begun = time.perf_counter()
            assert caller.call(lambda: post(url, unscaled(rows[:1])))[0] == 200
            timings.append(time.perf_counter() - begun)

        metrics_url = f"http://{pod['status']['podIP']}:9090/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(metrics_url, timeout=5) as reply:
                text: str = reply.read().decode()
                return text

        text = caller.call(scrape)
    finally:
        caller.close()
    for step in ("scale", "model"):
        count = [
            line
            for line in text.splitlines()
            if line.startswith("fleetshift_pipeline_step_latency_seconds_count")
            and f'step="{step}"' in line
        ]
        assert count and float(count[0].split()[-1]) >= 21, (step, count)
    assert "fleetshift_pipeline_step_errors_total{" in text
    print(
        f"\npipeline on the real node: Ready in {ready_seconds:.1f} s, first answer through"
        f" kube-proxy at {served_seconds:.1f} s; 1-row request median"
        f" {1000 * float(np.median(timings)):.1f} ms"
    )
