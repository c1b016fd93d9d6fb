"""The chart installed for real: ``helm install`` with the images built here, the operator in
a pod under the chart's ServiceAccount (so the apiserver, not a test's token, proves the
RBAC), reaching the apiserver through ``kubernetes.default.svc`` as on any cluster.

Its Endpoint's runtime pods read their model from an S3 gateway with keys from a Secret,
callers reach them through kube-proxy, and a Prometheus built from its Go module finds them
by Kubernetes service discovery. On that stack: a canary to a model that fails every
request is rolled back by its alarm, and an operator pod force-deleted in the middle of a
rollout is replaced by one that finishes it.

This module sorts before ``test_real_node.py``, whose last test stops the session's cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetshift_devcluster import binaries, images
from fleetshift_devcluster.realnode import NODE_NAME
from fleetshift_devcluster.wait import wait_for
from realnode.conftest import RealNode
from realnode.kit import KeepAliveLoad, Load, PodPrometheus, S3Gateway, in_netns, ready_pods
from support.runtime_kit import FEATURES, csv_body, train_model
from support.specs import green_5xx_alarm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fleetshift"
ENDPOINT = "churn"
SELECTOR = f"fleetshift.dev/endpoint={ENDPOINT}"
OPERATOR_SELECTOR = "app.kubernetes.io/name=fleetshift"
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
REPLICAS = 3
CANARY_BAKE_SECONDS = 20


@dataclass
class ChartStack:
    """The chart's operator watching ``namespace``, and what its Endpoints use."""

    node: RealNode
    namespace: str
    """Where the Endpoint lives (restricted Pod Security)."""
    operator_namespace: str
    """Where the chart is installed (restricted Pod Security too)."""
    s3: S3Gateway
    prometheus: PodPrometheus
    models: dict[str, str]
    """``s3://`` URIs: ``v1`` and ``v2`` (valid), ``incompatible`` (5xx on every request)."""
    rows: Any

    def endpoint(self, model: str, bake: int = CANARY_BAKE_SECONDS) -> dict[str, Any]:
        return {
            "apiVersion": "fleetshift.dev/v1alpha1",
            "kind": "Endpoint",
            "metadata": {"name": ENDPOINT, "namespace": self.namespace},
            "spec": {
                "variants": [
                    {
                        "name": "main",
                        "model": {"uri": self.models[model]},
                        "image": images.RUNTIME.tag,
                        "replicas": REPLICAS,
                        "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
                        "env": [
                            # The endpoint's input contract: the incompatible model expects
                            # one column fewer, loads, turns Ready, and fails every request.
                            {"name": "FLEETSHIFT_NUM_FEATURES", "value": str(FEATURES)},
                            *self.s3.variant_env("model-store"),
                            # Keep-alive connections end after 1 s (30 s by default), so
                            # the keep-alive test sees many of kube-proxy's picks quickly.
                            {"name": "FLEETSHIFT_MAX_CONNECTION_AGE_SECONDS", "value": "1"},
                        ],
                        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
                    }
                ],
                "deploymentConfig": {
                    "blueGreen": {
                        "trafficRouting": {
                            "type": "Canary",
                            "canarySize": {"type": "InstanceCount", "value": 1},
                            "waitIntervalSeconds": bake,
                        },
                        "terminationWaitSeconds": 2,
                        "maximumExecutionTimeoutSeconds": 600,
                    },
                    "autoRollback": {"pollIntervalSeconds": 1, "alarms": [green_5xx_alarm()]},
                },
            },
        }

    def status(self) -> dict[str, Any]:
        return self.node.get("fsep", ENDPOINT, self.namespace).get("status") or {}

    def operator_pods(self) -> list[dict[str, Any]]:
        return ready_pods(self.node, self.operator_namespace, OPERATOR_SELECTOR)

    def service_url(self) -> str:
        ip = self.node.get("service", ENDPOINT, self.namespace)["spec"]["clusterIP"]
        return f"http://{ip}/invocations"

    def serving_revisions(self) -> dict[str, int]:
        """Ready pods behind the Endpoint's Service, by revision."""
        counted: dict[str, int] = {}
        for pod in ready_pods(self.node, self.namespace, f"{SELECTOR},fleetshift.dev/serving=true"):
            revision = pod["metadata"]["labels"]["fleetshift.dev/revision"]
            counted[revision] = counted.get(revision, 0) + 1
        return counted


def helm(node: RealNode, *args: str) -> str:
    """The pinned helm, run inside the namespace (the apiserver listens only there)."""
    import subprocess  # noqa: PLC0415

    tool = binaries.ensure((binaries.HELM,))[binaries.HELM.name]
    done = subprocess.run(
        node.cluster.run_inside([str(tool), f"--kubeconfig={node.cluster.kubeconfig}", *args]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def stack(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartStack]:
    """The chart installed with the built images, an S3 gateway holding three models, and
    Prometheus discovering the fleet's pods."""
    for image in (images.OPERATOR, images.RUNTIME):
        tarball = images.tarball_path(image)
        if not tarball.exists():
            pytest.skip(f"no image tarball at {tarball}: `make images` builds it")
        real_node.cluster.import_image(tarball)
    folder = tmp_path_factory.mktemp("chart-stack")
    suffix = folder.name.rsplit("-", 1)[-1][-5:].lower().replace("_", "")
    namespace, operator_namespace = f"rn-chart-{suffix}", f"rn-fleetshift-{suffix}"
    for name in (namespace, operator_namespace):
        real_node.kubectl("create", "namespace", name)
        real_node.kubectl("label", "namespace", name, RESTRICTED)

    s3 = S3Gateway(real_node, folder / "s3")
    prometheus: PodPrometheus | None = None
    installed = False
    try:
        baseline = train_model(seed=7)
        models = {
            "v1": s3.put("models", "churn/v1/model.ubj", _model_bytes(baseline, folder)),
            "v2": s3.put(
                "models", "churn/v2/model.ubj", _model_bytes(train_model(seed=11), folder)
            ),
            "incompatible": s3.put(
                "models",
                "churn/incompatible/model.ubj",
                _model_bytes(train_model(features=FEATURES - 1), folder),
            ),
        }
        real_node.apply(
            {
                **s3.credentials_secret("model-store"),
                "metadata": {"name": "model-store", "namespace": namespace},
            }
        )
        prometheus = PodPrometheus(real_node, folder / "prometheus", [namespace])
        values = {
            "image": {
                "repository": images.OPERATOR.tag.split(":")[0],
                "tag": images.OPERATOR.tag.split(":")[1],
                "pullPolicy": "Never",
            },
            "watch": {"namespaces": [namespace]},
            "operator": {"pollIntervalSeconds": 1},
            "prometheus": {"url": prometheus.url},
            "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
        }
        values_file = folder / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        helm(
            real_node,
            "install",
            "fleetshift",
            str(CHART),
            f"--namespace={operator_namespace}",
            f"--values={values_file}",
            "--wait",
            "--timeout=180s",
        )
        installed = True
        yield ChartStack(
            real_node, namespace, operator_namespace, s3, prometheus, models, baseline.rows
        )
    finally:
        if installed:
            real_node.kubectl(
                "delete",
                "fsep",
                "--all",
                "-n",
                namespace,
                "--wait=true",
                "--timeout=60s",
                check=False,
            )
            helm(
                real_node, "uninstall", "fleetshift", f"--namespace={operator_namespace}", "--wait"
            )
        if prometheus is not None:
            prometheus.stop()
        s3.stop()
        for name in (namespace, operator_namespace):
            real_node.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _model_bytes(model: Any, folder: Path) -> bytes:
    path = model.save(folder / f"model-{time.monotonic_ns()}.ubj")
    data: bytes = path.read_bytes()
    return data


def _in_service(stack: ChartStack, revision_count: int = 1) -> dict[str, Any] | None:
    status = stack.status()
    if status.get("phase") != "InService" or status.get("candidateRevision"):
        return None
    serving = stack.serving_revisions()
    if len(serving) != revision_count or sum(serving.values()) != REPLICAS:
        return None
    return status


def test_the_charts_operator_pod_serves_an_endpoint_from_s3_through_kube_proxy(
    stack: ChartStack,
) -> None:
    operator = stack.operator_pods()
    assert len(operator) == 1
    pod_spec = operator[0]["spec"]
    assert pod_spec["serviceAccountName"] == "fleetshift"
    assert pod_spec["nodeName"] == NODE_NAME, "the operator runs on the real node"

    stack.node.apply(stack.endpoint("v1"))
    status = wait_for(
        lambda: _in_service(stack), timeout=180, interval=1, message="churn InService"
    )
    assert status["activeRevision"]
    answers = in_netns(stack.node.cluster.netns, lambda: _post(stack.service_url(), stack.rows))
    expected = train_model(seed=7).expected()
    assert [round(float(v), 5) for v in answers] == [round(float(v), 5) for v in expected]


def _post(url: str, rows: Any) -> list[str]:
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(
        url, data=csv_body(rows), headers={"Content-Type": "text/csv"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        text: str = reply.read().decode()
    return text.split()


def test_a_canary_to_a_failing_model_is_rolled_back_by_its_alarm_on_real_pods(
    stack: ChartStack,
) -> None:
    before = wait_for(lambda: _in_service(stack), timeout=180, interval=1, message="InService")
    blue = before["activeRevision"]
    load = Load(stack.node.cluster.netns, stack.service_url(), csv_body(stack.rows[:5]), 3)
    try:
        stack.node.apply(stack.endpoint("incompatible"))

        def rolled_back() -> dict[str, Any] | None:
            last = stack.status().get("lastDeployment") or {}
            return last if last.get("outcome") == "RolledBack" else None

        record = wait_for(rolled_back, timeout=240, interval=1, message="the canary rolled back")
        failed_during_canary = load.failed
        after = wait_for(
            lambda: _in_service(stack), timeout=120, interval=1, message="blue alone again"
        )
        # kube-proxy applies the Service's new endpoints within its sync period (1 s): a
        # caller may still meet green in that window, and never after it.
        in_service_at = load.counts()
        settled = _after_answers(load, in_service_at, SYNC_WINDOW_ANSWERS, "kube-proxy's sync")
        _after_answers(load, settled, CHECKED_ANSWERS, "answers after it")
        final = load.counts()
    finally:
        load.stop()
    assert after["activeRevision"] == blue
    assert record["fromRevision"] == blue and record["revision"] != blue
    assert "green-5xx" in record["reason"], record
    assert failed_during_canary > 0, "callers did meet the failing canary (it took traffic)"
    in_window = _failures(in_service_at, settled)
    assert _failures(settled, final) == 0, f"errors after the rollback: {final} vs {settled}"
    print(f"{in_window} errors in the {SYNC_WINDOW_ANSWERS} answers after InService")
    # Prometheus found the green pods by Kubernetes discovery and saw their 5xx.
    errors = stack.prometheus.query(
        f'sum(fleetshift_invocation_5xx_errors_total{{revision="{record["revision"]}"}})'
    )
    assert errors and float(errors[0]["value"][1]) > 0, errors


SYNC_WINDOW_ANSWERS = 1000
"""About 2-3 s of the three clients' answers: kube-proxy's minimum sync period is 1 s."""
CHECKED_ANSWERS = 500


def _failures(before: dict[int, int], after: dict[int, int]) -> int:
    return sum(n - before.get(code, 0) for code, n in after.items() if not 200 <= code < 300)


def _after_answers(load: Load, since: dict[int, int], count: int, what: str) -> dict[int, int]:
    """Wait until ``count`` more requests were answered; the counts then."""
    base = sum(since.values())

    def counted() -> dict[int, int] | None:
        now = load.counts()
        return now if sum(now.values()) - base >= count else None

    return wait_for(counted, timeout=60, interval=0.2, message=f"{count} {what}")


def test_an_operator_pod_force_deleted_mid_rollout_is_replaced_and_its_successor_finishes(
    stack: ChartStack,
) -> None:
    wait_for(lambda: _in_service(stack), timeout=180, interval=1, message="InService")
    old_operator = stack.operator_pods()[0]["metadata"]["name"]
    # Traffic throughout: without it the alarm has no data, is Inconclusive, and holds the
    # canary at its step (unknown is never Healthy).
    load = Load(stack.node.cluster.netns, stack.service_url(), csv_body(stack.rows[:5]), 2)
    try:
        _force_delete_mid_rollout(stack, old_operator)
    finally:
        load.stop()
    assert load.answered > 0 and load.failed == 0, load.counts()


def _force_delete_mid_rollout(stack: ChartStack, old_operator: str) -> None:
    stack.node.apply(stack.endpoint("v2"))

    def baking() -> dict[str, Any] | None:
        status = stack.status()
        step = status.get("step") or {}
        if status.get("candidateRevision") and status.get("greenTrafficPercent", 0) > 0 and step:
            return status
        return None

    mid = wait_for(baking, timeout=180, interval=0.5, message="the canary baking")
    green = mid["candidateRevision"]
    started = mid["deploymentStartedAt"]
    stack.node.kubectl(
        "delete",
        "pod",
        old_operator,
        "-n",
        stack.operator_namespace,
        "--grace-period=0",
        "--force",
    )

    def successor() -> str | None:
        names = [p["metadata"]["name"] for p in stack.operator_pods()]
        fresh = [n for n in names if n != old_operator]
        return fresh[0] if fresh else None

    new_operator = wait_for(successor, timeout=120, interval=1, message="a new operator pod")
    replaced = time.monotonic()
    try:
        final = wait_for(
            lambda: (s := _in_service(stack)) and s.get("activeRevision") == green and s,
            timeout=240,
            interval=1,
            message="the successor finishing the rollout",
        )
    except AssertionError:
        logs = stack.node.kubectl("logs", new_operator, "-n", stack.operator_namespace)
        raise AssertionError(
            f"status: {stack.status()}\nserving: {stack.serving_revisions()}\n"
            f"operator log:\n{logs[-6000:]}"
        ) from None
    print(
        f"the successor finished the rollout {time.monotonic() - replaced:.0f}s after it was Ready"
    )
    record = final["lastDeployment"]
    assert record["outcome"] == "Succeeded", record
    assert record["revision"] == green
    # The same deployment resumed from status, not a new one started over.
    assert record["startedAt"] == started, (record, started)
    assert new_operator != old_operator
    logs = stack.node.kubectl("logs", new_operator, "-n", stack.operator_namespace)
    assert ENDPOINT in logs, logs[-2000:]


KEEP_ALIVE_CLIENTS = 4
KEEP_ALIVE_SECONDS = 12


def test_keep_alive_clients_follow_the_canary_share_through_kube_proxy(
    stack: ChartStack,
) -> None:
    """kube-proxy picks a backend per connection. Clients that keep their connection open
    still see the canary's share, because the runtime ends each connection after its age
    (1 s in every revision here; 30 s by default) and every reconnection is a new pick."""
    before = wait_for(lambda: _in_service(stack), timeout=180, interval=1, message="InService")
    # A bake longer than the measurement: the share stays the canary's throughout.
    current = stack.node.get("fsep", ENDPOINT, stack.namespace)["spec"]["variants"][0]
    other = "v1" if current["model"]["uri"] != stack.models["v1"] else "v2"
    stack.node.apply(stack.endpoint(other, bake=120))

    def canary_serving() -> dict[str, Any] | None:
        status = stack.status()
        green = status.get("candidateRevision")
        if green and stack.serving_revisions().get(green) == 1:
            return status
        return None

    status = wait_for(canary_serving, timeout=180, interval=0.5, message="the canary serving")
    green, blue = status["candidateRevision"], before["activeRevision"]
    assert stack.serving_revisions() == {blue: REPLICAS - 1, green: 1}
    host = stack.node.get("service", ENDPOINT, stack.namespace)["spec"]["clusterIP"]
    load = KeepAliveLoad(
        stack.node.cluster.netns, host, csv_body(stack.rows[:5]), KEEP_ALIVE_CLIENTS
    )
    try:
        wait_for(
            lambda: load.connections >= KEEP_ALIVE_CLIENTS * (KEEP_ALIVE_SECONDS - 2),
            timeout=KEEP_ALIVE_SECONDS * 3,
            interval=0.5,
            message="the clients reconnecting as their connections age",
        )
        assert stack.status().get("candidateRevision") == green, "still in the canary step"
    finally:
        load.stop()
    counts = load.counts()
    total = sum(counts.values())
    share = counts.get(green, 0) / total
    # One green pod of three: a third of the connections, each about a second of requests.
    # Over ~40 connections the share is 1/3 +- 0.075 (one standard deviation); without the
    # age each client would sit on one pod, and the share would be a multiple of 1/4.
    assert 0.1 < share < 0.6, (counts, load.connections)
    assert set(counts) == {blue, green}, counts
    assert load.failed == 0, (load.failed, counts)
