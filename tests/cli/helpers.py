"""Running ``kubectl-fleetshift`` as a user would, and Endpoints to run it on."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightkube import Client, KubeConfig
from lightkube.types import OnErrorAction, OnErrorResult

from fleetshift_devcluster.wait import wait_for
from support.operator_process import (
    EndpointResource,
    endpoint_manifest,
    in_service,
    revision_of,
    set_spec,
    status_of,
)
from support.specs import endpoint_spec

NAME = "churn"
PLUGIN = Path(sys.executable).parent / "kubectl-fleetshift"


def plugin_env(kubeconfig: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return {**env, **extra}


def run_plugin(
    kubeconfig: Path | None, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """``kubectl-fleetshift ARGS`` with ``KUBECONFIG`` set; stdout is not a terminal."""
    return subprocess.run(
        [str(PLUGIN), *args],
        env=plugin_env(kubeconfig, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_plugin(kubeconfig: Path, *args: str) -> subprocess.Popen[str]:
    """The plugin in the background (for ``watch``); read it with ``communicate``."""
    return subprocess.Popen(
        [str(PLUGIN), *args],
        env=plugin_env(kubeconfig),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


spec_with = functools.partial(endpoint_spec, wait=3, termination=2)
"""A 25% canary that bakes 3 seconds per step (``wait=`` changes it)."""


def create_in_service(kube: Client, namespace: str, spec: dict[str, Any]) -> str:
    kube.create(endpoint_manifest(NAME, namespace, spec))
    revision = revision_of(spec)
    wait_for(lambda: in_service(kube, NAME, namespace, revision), timeout=60, message="InService")
    return revision


def update_until_active(kube: Client, namespace: str, update: dict[str, Any]) -> str:
    """Update the Endpoint to ``update`` and wait until its revision is the active one;
    that revision."""
    green = revision_of(update)
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("activeRevision") == green,
        timeout=60,
        message="green active",
    )
    return green


def start_slow_canary(kube: Client, namespace: str) -> str:
    """Update the Endpoint to model v2 with a 300-second bake and wait for its canary at 25%;
    green's revision."""
    update = spec_with("s3://models/churn/v2", wait=300)
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("greenTrafficPercent") == 25,
        timeout=60,
        message="canary at 25%",
    )
    return revision_of(update)


def step_of(kube: Client, namespace: str) -> dict[str, Any]:
    step: dict[str, Any] = status_of(kube, NAME, namespace).get("step") or {}
    return step


def retry_when_busy(error: Exception, count: int) -> OnErrorResult:
    """Resume a watch the API server turned away for now (429 while it starts up, a
    5xx, or a dropped connection), from the last version seen, as ``kubectl get -w``
    would. After 20 failures in a row the error is raised."""
    status = getattr(getattr(error, "response", None), "status_code", 0)
    if (status in (0, 429) or status >= 500) and count <= 20:
        return OnErrorResult(OnErrorAction.RETRY, sleep=0.5)
    return OnErrorResult(OnErrorAction.RAISE)


@contextmanager
def recorded_endpoints(kubeconfig: Path, namespace: str) -> Iterator[list[dict[str, Any]]]:
    """Every version of the Endpoints in ``namespace`` the API server stores, in order.

    A watch sees each write, so a phase the operator holds for a single reconcile
    (``RollingBack``) is recorded too. The watch ends with the first event after exit.
    """
    seen: list[dict[str, Any]] = []
    done = threading.Event()
    client = Client(KubeConfig.from_file(kubeconfig))

    def record() -> None:
        def on_error(error: Exception, count: int) -> OnErrorResult:
            if done.is_set():  # the cluster may be going away with the test
                return OnErrorResult(OnErrorAction.STOP)
            return retry_when_busy(error, count)

        watch = client.watch(EndpointResource, namespace=namespace, on_error=on_error)
        for _, endpoint in watch:
            seen.append(endpoint.to_dict())  # type: ignore[no-untyped-call]
            if done.is_set():
                return

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
