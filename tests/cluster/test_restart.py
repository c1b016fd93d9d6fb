"""Killing the operator (SIGKILL) at any rollout state loses nothing.

Each case drives a rollout to a state, watching status, kills the operator
there, optionally changes something while it is down, starts it again and
checks the outcome: the right revision serving, no orphaned Deployment,
Service or HPA, and at no sampled moment traffic pointing at a fleet that no
longer exists.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from fleetshift_devcluster.cluster import SLOW_IMAGE
from fleetshift_devcluster.wait import wait_for
from support.operator_process import (
    OperatorProcess,
    annotate,
    deployments_of,
    endpoint_manifest,
    revision_of,
    set_spec,
    status_of,
)
from support.specs import endpoint_spec

NAME = "churn"
V1, V2, V3 = (f"s3://models/churn/v{n}" for n in (1, 2, 3))


make_spec = functools.partial(endpoint_spec, termination=4, timeout=900)


Status = dict[str, Any]


def stage(status: Status) -> str:
    return str((status.get("step") or {}).get("stage", ""))


def step_index(status: Status) -> int:
    return int((status.get("step") or {}).get("index", 0))


@dataclasses.dataclass(frozen=True)
class KillPoint:
    """Where to kill, what to change while down, and what must come out of it."""

    name: str
    update: dict[str, Any] | None
    """The spec change that starts the rollout (None: the kill happens during creation)."""
    kill_when: Callable[[Status], bool]
    while_down: Callable[[Client, str], None] | None = None
    after_restart: Callable[[Client, str], None] | None = None
    outcome: str = "green"
    """Which revision must serve at the end: ``green`` (the update), ``blue``, ``v2``, ``v3``."""


def _abort(kube: Client, namespace: str) -> None:
    annotate(kube, NAME, namespace, {"fleetshift.dev/abort": "while-down"})


def _supersede(kube: Client, namespace: str) -> None:
    set_spec(kube, NAME, namespace, make_spec(V3))


def _change(kube: Client, namespace: str) -> None:
    set_spec(kube, NAME, namespace, make_spec(V2))


def _pause(kube: Client, namespace: str) -> None:
    annotate(kube, NAME, namespace, {"fleetshift.dev/paused": "true"})


def _resume(kube: Client, namespace: str) -> None:
    wait_for(lambda: status_of(kube, NAME, namespace).get("paused") is True, timeout=30)
    annotate(kube, NAME, namespace, {"fleetshift.dev/paused": None})


KILL_POINTS = [
    KillPoint(
        "creating",
        None,
        lambda s: s.get("phase") == "Creating",
        outcome="blue",
    ),
    KillPoint(
        "provisioning-green",
        make_spec(V2, image=SLOW_IMAGE),
        lambda s: s.get("phase") == "Updating" and stage(s) == "Provisioning",
    ),
    KillPoint(
        "canary-bake",
        make_spec(V2),
        lambda s: stage(s) == "Baking" and step_index(s) == 1,
    ),
    KillPoint(
        "full-traffic-bake",
        make_spec(V2),
        lambda s: stage(s) == "Baking" and step_index(s) == 2,
    ),
    KillPoint(
        "termination-wait",
        make_spec(V2),
        lambda s: stage(s) == "TerminationWait",
    ),
    KillPoint(
        "abort-requested-while-down",
        make_spec(V2),
        lambda s: stage(s) == "Baking" and step_index(s) == 1,
        while_down=_abort,
        outcome="blue",
    ),
    KillPoint(
        "superseded-while-down",
        make_spec(V2),
        lambda s: stage(s) == "Baking" and step_index(s) == 1,
        while_down=_supersede,
        outcome="v3",
    ),
    KillPoint(
        "paused",
        make_spec(V2),
        lambda s: bool(s.get("paused")) and s.get("phase") == "Updating",
        after_restart=_resume,
    ),
    KillPoint(
        "in-service-then-spec-changed-while-down",
        make_spec(V1),
        lambda s: s.get("phase") == "InService",
        while_down=_change,
        outcome="v2",
    ),
]


def traffic_points_only_at_existing_fleets(kube: Client, namespace: str) -> bool:
    fleets = set(deployments_of(kube, namespace, NAME))
    pods = {
        p.status.podIP: (p.metadata.labels or {}).get("fleetshift.dev/revision")
        for p in kube.list(Pod, namespace=namespace)
        if p.status and p.status.podIP and p.metadata
    }
    for endpoint_slice in kube.list(
        EndpointSlice, namespace=namespace, labels={"kubernetes.io/service-name": NAME}
    ):
        for endpoint in endpoint_slice.endpoints or []:
            ready = endpoint.conditions and endpoint.conditions.ready
            if ready and any(pods.get(a) not in fleets for a in endpoint.addresses):
                return False
    return True


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.name for p in KILL_POINTS])
def test_operator_killed_mid_rollout_resumes_exactly(
    kube: Client, namespace: str, operator_process: OperatorProcess, point: KillPoint
) -> None:
    base = make_spec(V1, image=SLOW_IMAGE if point.update is None else None)
    kube.create(endpoint_manifest(NAME, namespace, base))
    if point.update is not None:
        wait_for(
            lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
            timeout=60,
            message="baseline InService",
        )
        if point.name == "paused":
            _pause(kube, namespace)
        if point.update != base:
            set_spec(kube, NAME, namespace, point.update)

    wait_for(
        lambda: point.kill_when(status_of(kube, NAME, namespace)),
        timeout=60,
        interval=0.05,
        message=f"state {point.name}",
    )
    operator_process.kill()
    frozen = status_of(kube, NAME, namespace)
    assert point.kill_when(frozen), f"killed outside {point.name}: {frozen.get('phase')}"
    if point.while_down is not None:
        point.while_down(kube, namespace)

    operator_process.start()
    if point.after_restart is not None:
        point.after_restart(kube, namespace)

    expected = {
        "blue": revision_of(base),
        "green": revision_of(point.update or base),
        "v2": revision_of(make_spec(V2)),
        "v3": revision_of(make_spec(V3)),
    }[point.outcome]

    def settled() -> bool:
        assert traffic_points_only_at_existing_fleets(kube, namespace), "traffic to a lost fleet"
        status = status_of(kube, NAME, namespace)
        return (
            status.get("phase") == "InService"
            and status.get("activeRevision") == expected
            and status.get("candidateRevision") is None
            and set(deployments_of(kube, namespace, NAME)) == {expected}
        )

    wait_for(settled, timeout=90, interval=0.2, message=f"settled on {expected}")
    services = {s.metadata.name for s in kube.list(Service, namespace=namespace) if s.metadata}
    assert services == {NAME}
    assert not list(kube.list(HorizontalPodAutoscaler, namespace=namespace))
    assert [d.metadata.name for d in kube.list(Deployment, namespace=namespace) if d.metadata] == [
        f"{NAME}-main-{expected}"
    ]
    history = status_of(kube, NAME, namespace).get("history", [])
    assert len({(h["revision"], h["outcome"], h["startedAt"]) for h in history}) == len(history), (
        "a transition was recorded twice"
    )
