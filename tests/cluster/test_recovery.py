"""The operator recovers: a failing reconcile is reported and retried, and a rollout
resumes promptly once a lost API server answers again.

The apiserver-restart test runs on its own control plane, so the session's cluster
that other tests share is never taken down.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client, KubeConfig
from lightkube.models.core_v1 import ResourceQuotaSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, ResourceQuota

from fleetshift_devcluster.cluster import LocalCluster, running_cluster
from fleetshift_devcluster.crds import install_crds
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.crd import CRD_FILE
from support.operator_process import (
    OperatorProcess,
    deployments_of,
    endpoint_manifest,
    revision_of,
    set_spec,
    status_of,
)
from support.specs import endpoint_spec

ROOT = Path(__file__).resolve().parents[2]
NAME = "churn"
V1, V2 = "s3://models/churn/v1", "s3://models/churn/v2"
BAKE_SECONDS = 15
APISERVER_DOWN_SECONDS = 20
RESUME_WITHIN_SECONDS = 5.0

make_spec = functools.partial(
    endpoint_spec, replicas=2, wait=BAKE_SECONDS, termination=2, timeout=900
)

Status = dict[str, Any]


def condition(status: Status, kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def step(status: Status) -> tuple[str, int]:
    current = status.get("step") or {}
    return str(current.get("stage", "")), int(current.get("index", 0))


def json_lines(log: Path) -> list[dict[str, Any]]:
    """The operator's log records (JSON lines; anything else in the file is skipped)."""
    records = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def test_a_failing_reconcile_is_logged_evented_and_marked_degraded(
    kube: Client, namespace: str, cluster: LocalCluster, endpoint_crd: str, tmp_path: Path
) -> None:
    # A quota of zero Deployments makes every apply of the Endpoint's fleet fail (403).
    kube.create(
        ResourceQuota(
            metadata=ObjectMeta(name="no-deployments", namespace=namespace),
            spec=ResourceQuotaSpec(hard={"count/deployments.apps": "0"}),
        )
    )
    wait_for(
        lambda: (
            (quota := kube.get(ResourceQuota, "no-deployments", namespace=namespace)).status
            and quota.status.hard
        ),
        message="the quota is counted",
    )
    log = tmp_path / "operator.log"
    operator = OperatorProcess(
        cluster.kubeconfig, namespace, log, extra_env={"FLEETSHIFT_LOG_FORMAT": "json"}
    )
    operator.start()
    try:
        kube.create(endpoint_manifest(NAME, namespace, make_spec(V1)))

        def failures() -> list[dict[str, Any]]:
            return [
                r
                for r in json_lines(log)
                if r.get("level") == "ERROR"
                and r.get("namespace") == namespace
                and r.get("endpoint") == NAME
                and "exceeded quota" in r.get("message", "")
            ]

        logged: list[dict[str, Any]] = wait_for(
            lambda: failures()[:3] if len(failures()) >= 3 else None, timeout=60
        )
        assert all("error" in r for r in logged), "each failure carries its traceback"
        delays = [float(r["retry_in"]) for r in logged]
        assert delays == sorted(delays) and delays[0] < delays[-1], f"no back-off: {delays}"

        degraded = wait_for(
            lambda: condition(status_of(kube, NAME, namespace), "Degraded"),
            message="a Degraded condition",
        )
        assert degraded["status"] == "True"
        assert degraded["reason"] == "ReconcileError"
        assert "exceeded quota" in degraded["message"]

        warnings = wait_for(
            lambda: [
                e
                for e in kube.list(Event, namespace=namespace)
                if e.type == "Warning"
                and e.reason == "ReconcileError"
                and e.involvedObject.name == NAME
            ],
            message="a Warning Event",
        )
        assert "exceeded quota" in (warnings[0].message or "")

        # Lift the cause: the next retry succeeds and the condition clears.
        kube.delete(ResourceQuota, "no-deployments", namespace=namespace)
        wait_for(
            lambda: (
                (s := status_of(kube, NAME, namespace)).get("phase") == "InService"
                and (condition(s, "Degraded") or {}).get("status") == "False"
            ),
            timeout=90,
            message="InService and no longer Degraded",
        )
        phases = [
            r
            for r in json_lines(log)
            if r.get("endpoint") == NAME and r.get("message", "").startswith("phase ")
        ]
        assert phases and phases[-1]["phase"] == "InService", phases
        assert any(r.get("message", "").startswith("operator starting") for r in json_lines(log))
    finally:
        operator.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A control plane for this test alone: its API server gets killed."""
    with running_cluster(tmp_path / "cluster", nodes=1) as started:
        yield started


@pytest.mark.cluster
def test_a_rollout_resumes_within_5_s_of_the_apiserver_returning(
    own_cluster: LocalCluster, tmp_path: Path
) -> None:
    kube = Client(KubeConfig.from_file(own_cluster.kubeconfig), field_manager="fleetshift-tests")
    install_crds(kube, [yaml.safe_load((ROOT / "crds" / CRD_FILE).read_text())], what="CRD")
    namespace = "recovery"
    kube.create(Namespace(metadata=ObjectMeta(name=namespace)))
    wait_for(lambda: kube.get(Namespace, namespace), message="namespace")
    operator = OperatorProcess(own_cluster.kubeconfig, namespace, tmp_path / "operator.log")
    operator.start()
    try:
        kube.create(endpoint_manifest(NAME, namespace, make_spec(V1)))
        wait_for(
            lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
            timeout=60,
            message="baseline InService",
        )
        set_spec(kube, NAME, namespace, make_spec(V2))
        wait_for(
            lambda: step(status_of(kube, NAME, namespace)) == ("Baking", 1),
            timeout=60,
            interval=0.1,
            message="the canary bake",
        )

        own_cluster.kill_apiserver()
        # The outage itself: longer than the whole bake, so the bake ends while it lasts.
        time.sleep(APISERVER_DOWN_SECONDS)
        own_cluster.start_apiserver(wait=False)
        # "Back" is the first moment the Endpoint can be read again, whatever /readyz says.
        wait_for(lambda: status_of(kube, NAME, namespace), timeout=60, interval=0.05)
        back = time.monotonic()

        wait_for(
            lambda: step(status_of(kube, NAME, namespace)) != ("Baking", 1),
            timeout=90,
            interval=0.1,
            message="the step after the canary bake",
        )
        gap = time.monotonic() - back
        print(f"next step {gap:.2f} s after the apiserver answered again")
        assert gap <= RESUME_WITHIN_SECONDS, (
            f"the rollout resumed {gap:.1f} s after the apiserver returned\n{operator.log_tail()}"
        )

        green = revision_of(make_spec(V2))
        wait_for(
            lambda: (
                (s := status_of(kube, NAME, namespace)).get("phase") == "InService"
                and s.get("activeRevision") == green
                and set(deployments_of(kube, namespace, NAME)) == {green}
            ),
            timeout=90,
            message="the rollout finished on the new revision",
        )
    finally:
        operator.stop()
