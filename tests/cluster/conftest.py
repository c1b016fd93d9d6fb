"""The cluster tier's shared fixtures.

``test_deadline.py`` waits out a real 600-second execution deadline. When it is collected,
its scenario starts with the first cluster test (:func:`_start_the_deadline_clock_early`) and
the test itself runs last (``tests/conftest.py`` moves ``slow`` tests to the end), so the wait
overlaps the rest of the suite instead of adding ten minutes to it.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from fleetshift_devcluster.cluster import UNREADY_IMAGE, LocalCluster
from fleetshift_devcluster.wait import wait_for
from support.operator_process import (
    OperatorProcess,
    endpoint_manifest,
    serving_by_revision,
    set_spec,
    status_of,
)
from support.specs import endpoint_spec

DEADLINE_SECONDS = 600


def deadline_spec(uri: str, image: str | None = None) -> dict[str, Any]:
    """Two replicas, all at once, and the shortest execution deadline admission allows."""
    return endpoint_spec(
        uri,
        replicas=2,
        image=image,
        routing={"type": "AllAtOnce", "waitIntervalSeconds": 5},
        timeout=DEADLINE_SECONDS,
    )


def parse_stamp(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


@dataclasses.dataclass
class DeadlineScenario:
    """Endpoint ``churn`` updated to a green that never turns Ready, and ``fresh``, whose
    first deployment never does, with an operator of their own running throughout."""

    namespace: str
    blue: str
    started: dict[str, Any]
    operator: OperatorProcess
    green_served: list[str] = dataclasses.field(default_factory=list)
    """What a watcher saw serving whenever it was not blue alone (it must stay empty)."""


def _watch_blue_alone(
    kubeconfig: str, scenario: DeadlineScenario, stopping: threading.Event
) -> None:
    """Every 5 s until the deadline's outcome, the serving pods are blue's two."""
    kube = Client(KubeConfig.from_file(kubeconfig))
    while not stopping.wait(5):
        serving = serving_by_revision(kube, scenario.namespace, "churn")
        if serving != {scenario.blue: 2}:
            scenario.green_served.append(repr(serving))
        if status_of(kube, "churn", scenario.namespace).get("phase") != "Updating":
            return


@pytest.fixture(scope="session")
def deadline_scenario(
    kube: Client,
    cluster: LocalCluster,
    endpoint_crd: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DeadlineScenario]:
    namespace = f"deadline-{uuid.uuid4().hex[:6]}"
    kube.create(
        Namespace(metadata=ObjectMeta(name=namespace, labels={"fleetshift.dev/test": "true"}))
    )
    operator = OperatorProcess(
        cluster.kubeconfig, namespace, tmp_path_factory.mktemp("deadline") / "operator.log"
    )
    operator.start()
    stopping = threading.Event()
    watcher: threading.Thread | None = None
    try:
        kube.create(endpoint_manifest("churn", namespace, deadline_spec("s3://models/churn/v1")))
        wait_for(
            lambda: status_of(kube, "churn", namespace).get("phase") == "InService",
            timeout=60,
            message="baseline InService",
        )
        blue = str(status_of(kube, "churn", namespace)["activeRevision"])
        set_spec(kube, "churn", namespace, deadline_spec("s3://models/churn/v2", UNREADY_IMAGE))
        kube.create(
            endpoint_manifest(
                "fresh", namespace, deadline_spec("s3://models/fresh/v1", UNREADY_IMAGE)
            )
        )
        wait_for(
            lambda: (
                status_of(kube, "churn", namespace).get("deadline")
                and status_of(kube, "churn", namespace).get("phase") == "Updating"
            ),
            timeout=30,
            message="deployment started with a deadline",
        )
        scenario = DeadlineScenario(namespace, blue, status_of(kube, "churn", namespace), operator)
        watcher = threading.Thread(
            target=_watch_blue_alone,
            args=(str(cluster.kubeconfig), scenario, stopping),
            daemon=True,
        )
        watcher.start()
        yield scenario
    finally:
        stopping.set()
        if watcher is not None:
            watcher.join(timeout=30)
        operator.stop()
        kube.delete(Namespace, namespace)


@pytest.fixture(scope="session", autouse=True)
def _start_the_deadline_clock_early(request: pytest.FixtureRequest) -> None:
    """Start the deadline scenario with the first cluster test when the slow test runs."""
    if any(item.get_closest_marker("slow") for item in request.session.items):
        request.getfixturevalue("deadline_scenario")
