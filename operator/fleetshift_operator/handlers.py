"""The only module that imports kopf: it wires cluster events to ``reconcile``.

One kopf *daemon* per Endpoint runs the loop observe -> plan -> apply ->
status, one reconcile at a time. It sleeps until the plan's next due moment
(a bake ending, a deadline), the poll interval while a deployment is in
flight, or until an event wakes it: a change to the Endpoint, or to one of its
pods or Deployments. Nothing is decided here and nothing sleeps in a handler;
the daemon waits on an event with a timeout, as kopf's daemons are meant to.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf
from lightkube import AsyncClient, KubeConfig

from fleetshift_operator import api, metrics
from fleetshift_operator.kube import FIELD_MANAGER, Kube
from fleetshift_operator.manifests import LABEL_ENDPOINT
from fleetshift_operator.reconcile import Outcome, calculate_next_wake, reconcile_endpoint
from fleetshift_operator.settings import OperatorSettings

_SETTINGS = OperatorSettings()
_WAKE: dict[tuple[str, str], asyncio.Event] = {}


def configure(settings: OperatorSettings) -> None:
    """Use ``settings`` for this process (called by ``__main__`` before kopf starts)."""
    global _SETTINGS  # noqa: PLW0603 - one process, one configuration
    _SETTINGS = settings


def _wake(namespace: str, name: str) -> asyncio.Event:
    return _WAKE.setdefault((namespace, name), asyncio.Event())


def _poke(namespace: str | None, name: str | None) -> None:
    if namespace and name:
        _wake(namespace, name).set()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Keep kopf's own bookkeeping under our prefix, and connect to the API server."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.posting.level = logging.ERROR
    settings.watching.server_timeout = 300
    memo["kube"] = Kube(AsyncClient(KubeConfig.from_env(), field_manager=FIELD_MANAGER))
    metrics.serve(_SETTINGS.metrics_host, _SETTINGS.metrics_port)


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=10.0)
async def run_endpoint(
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    memo: Any,
    logger: Any,
    **_: Any,
) -> None:
    """Reconcile one Endpoint until it is deleted or the operator stops."""
    kube: Kube = memo["kube"]
    assert namespace is not None, "Endpoints are namespaced"
    wake = _wake(namespace, name)
    while not stopped:
        wake.clear()
        delay = 5.0
        endpoint = await kube.get_endpoint(namespace, name)
        if endpoint is None or endpoint["metadata"].get("deletionTimestamp"):
            return
        try:
            with metrics.RECONCILE_SECONDS.time():
                outcome = await reconcile_endpoint(
                    kube, endpoint, now=datetime.datetime.now(datetime.UTC), settings=_SETTINGS
                )
        except Exception as error:
            metrics.RECONCILES.labels("error").inc()
            logger.exception("reconcile failed")
            kopf.warn(_body(endpoint), reason="ReconcileError", message=str(error)[:1000])
        else:
            metrics.RECONCILES.labels("ok").inc()
            _report(endpoint, outcome)
            delay = calculate_next_wake(
                outcome.plan, _SETTINGS.poll_interval_seconds, _SETTINGS.resync_seconds
            )
        await _sleep(wake, stopped, delay)


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Wait until woken, stopped, or ``seconds`` have passed."""
    woken = asyncio.ensure_future(wake.wait())
    halted = asyncio.ensure_future(stopped.wait())
    _, pending = await asyncio.wait(
        {woken, halted}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        task.cancel()


def _body(endpoint: dict[str, Any]) -> kopf.Body:
    """kopf posts events for any mapping with apiVersion, kind and metadata."""
    return cast(kopf.Body, endpoint)


def _report(endpoint: dict[str, Any], outcome: Outcome) -> None:
    """Events for every transition, and the per-endpoint metrics."""
    namespace, name = endpoint["metadata"]["namespace"], endpoint["metadata"]["name"]
    for event in outcome.plan.events:
        kopf.event(_body(endpoint), type=event.type, reason=event.reason, message=event.message)
    status = outcome.plan.status
    metrics.STEP.labels(namespace, name).set(status.step.index if status.step else 0)
    metrics.GREEN_PERCENT.labels(namespace, name).set(status.greenTrafficPercent)
    metrics.set_phase(namespace, name, status.phase)
    finished = status.lastDeployment
    if finished is not None and finished != outcome.previous_status.lastDeployment:
        metrics.ROLLOUTS.labels(finished.outcome).inc()


_SEEN: dict[tuple[str, str], tuple[object, ...]] = {}


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def endpoint_changed(
    namespace: str | None, name: str | None, body: kopf.Body, **_: Any
) -> None:
    """A spec or control change: reconcile now. The operator's own status writes do
    not count, or every reconcile would wake the next one at once."""
    if not namespace or not name:
        return
    metadata = body.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    essence = (
        metadata.get("generation"),
        metadata.get("deletionTimestamp"),
        tuple(sorted((k, v) for k, v in annotations.items() if k.startswith(f"{api.GROUP}/"))),
    )
    if _SEEN.get((namespace, name)) != essence:
        _SEEN[(namespace, name)] = essence
        _poke(namespace, name)


@kopf.on.event("", "v1", "pods", labels={LABEL_ENDPOINT: kopf.PRESENT})
async def pod_changed(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    """A serving pod changed (Ready, gone, failing): its Endpoint reconciles now."""
    _poke(namespace, labels.get(LABEL_ENDPOINT))


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_ENDPOINT: kopf.PRESENT})
async def deployment_changed(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    """A fleet changed (scaled, Ready count): its Endpoint reconciles now."""
    _poke(namespace, labels.get(LABEL_ENDPOINT))


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL)
async def endpoint_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Say Deleting; owner references let garbage collection remove every child."""
    kube: Kube = memo["kube"]
    assert namespace is not None, "Endpoints are namespaced"
    await kube.set_phase(namespace, name, "Deleting")
    metrics.forget(namespace, name)
    _WAKE.pop((namespace, name), None)
    _SEEN.pop((namespace, name), None)
