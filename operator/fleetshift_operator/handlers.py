"""The only module that imports kopf: it wires cluster events to ``reconcile``.

One kopf *daemon* per Endpoint runs the loop observe -> plan -> apply ->
status, one reconcile at a time. It sleeps until the plan's next due moment
(a bake ending, a deadline), the poll interval while a deployment is in
flight, or until an event wakes it: a change to the Endpoint, or to one of its
pods or Deployments. Nothing is decided here and nothing sleeps in a handler;
the daemon waits on an event with a timeout, as kopf's daemons are meant to.

No silent loops: a reconcile that fails is logged with the Endpoint's namespace
and name, written to a ``Degraded`` condition and a Warning Event, and retried
with back-off (``calculate_retry_delay``). While the API server does not answer,
the loop and kopf's watches retry at least every ``FLEETSHIFT_RECONNECT_SECONDS``,
so a rollout resumes within about that long of its return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import httpx2
import kopf
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError

from fleetshift_operator import api, metrics
from fleetshift_operator.kube import (
    FIELD_MANAGER,
    DeploymentView,
    Kube,
    PodView,
    deployment_view_of,
    pod_view_of,
)
from fleetshift_operator.logs import LOGGER
from fleetshift_operator.manifests import LABEL_ENDPOINT
from fleetshift_operator.observe import IndexedObserver, Key
from fleetshift_operator.reconcile import Outcome, calculate_next_wake, reconcile_endpoint
from fleetshift_operator.settings import OperatorSettings

_SETTINGS = OperatorSettings()
_WAKE: dict[tuple[str, str], asyncio.Event] = {}
log = logging.getLogger(LOGGER)

_UNAVAILABLE = frozenset({429, 500, 502, 503, 504})
"""Answers of an API server that is starting, overloaded or behind a failing proxy."""


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
    # kopf's default request retries wait 1, 1, 2, 3, 5, 8, 13 and 21 s: a watch that lost
    # the API server for 20 s reconnected up to 13 s after its return. Never wait longer
    # than ``reconnect_seconds`` between attempts, for about as long in all.
    settings.networking.error_backoffs = calculate_request_backoffs(_SETTINGS.reconnect_seconds)
    settings.networking.connect_timeout = 10.0
    settings.networking.request_timeout = 60.0
    config = KubeConfig.from_env()
    memo["kube"] = Kube(AsyncClient(config, field_manager=FIELD_MANAGER))
    metrics.serve(_SETTINGS.metrics_host, _SETTINGS.metrics_port)
    current = config.get()
    log.info("API server %s", current.cluster.server if current else "(in-cluster)")


def calculate_request_backoffs(longest: float, total: float = 60.0) -> tuple[float, ...]:
    """kopf's waits between attempts of one API request: from half a second, doubling,
    at most ``longest`` apart, about ``total`` seconds in all. A watch starts over when
    they run out, so it keeps trying every ``longest`` seconds for as long as it takes.

    >>> calculate_request_backoffs(2, total=10)
    (0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0)
    """
    waits: list[float] = []
    wait = 0.5
    while sum(waits) < total:
        waits.append(min(wait, float(longest)))
        wait *= 2
    return tuple(waits)


def calculate_retry_delay(
    failures: int, *, unreachable: bool, longest: float, reconnect: float
) -> float:
    """Seconds before the next reconcile after ``failures`` failed ones in a row.

    A reconcile the API server refused (a conflict, a quota, an invalid object) backs
    off from 1 s, doubling, to ``longest``; one that did not reach the API server
    retries from half a second to ``reconnect`` at most, so work resumes soon after
    it returns. An event on the Endpoint, its pods or Deployments cuts any wait short.

    >>> def delays(unreachable): return [
    ...     calculate_retry_delay(n, unreachable=unreachable, longest=60, reconnect=2)
    ...     for n in (1, 2, 3, 7, 9)
    ... ]
    >>> delays(unreachable=False)
    [1.0, 2.0, 4.0, 60.0, 60.0]
    >>> delays(unreachable=True)
    [0.5, 1.0, 2.0, 2.0, 2.0]
    """
    exponent = min(max(failures, 1) - 1, 30)
    if unreachable:
        return min(float(reconnect), 0.5 * 2.0**exponent)
    return min(float(longest), 1.0 * 2.0**exponent)


def is_unreachable(error: BaseException) -> bool:
    """True when ``error`` says the API server did not answer (down, starting,
    overloaded), rather than that it refused what was asked.

    >>> is_unreachable(httpx2.ConnectError("connection refused"))
    True
    >>> is_unreachable(ValueError("a bug"))
    False
    """
    if isinstance(error, ApiError):
        return error.status.code in _UNAVAILABLE
    return isinstance(error, httpx2.TransportError | OSError | TimeoutError)


# cancellation_backoff: a second to finish the reconcile in hand and exit before kopf
# cancels the daemon (and warns that it did) when the operator stops.
@kopf.daemon(
    api.GROUP, api.VERSION, api.PLURAL, cancellation_backoff=1.0, cancellation_timeout=10.0
)
async def run_endpoint(
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **kwargs: Any,
) -> None:
    """Reconcile one Endpoint until it is deleted or the operator stops.

    Its children are observed from the watch-fed indexes below, which kopf passes by
    name (it starts no handler before they hold the first listing). The Endpoint itself
    is read from the apiserver after a reconcile that wrote its status (so the next one
    starts from what was written), and otherwise taken from kopf's live ``body``, which
    its watch keeps current: an Endpoint at rest costs no request per resync.
    """
    kube: Kube = memo["kube"]
    observer = IndexedObserver(
        kwargs["fleet_deployments"],
        kwargs["fleet_pods"],
        {
            "Service": kwargs["fleet_services"],
            "HorizontalPodAutoscaler": kwargs["fleet_hpas"],
            "PodDisruptionBudget": kwargs["fleet_disruption_budgets"],
            "ConfigMap": kwargs["fleet_config_maps"],
        },
    )
    live: kopf.Body | None = kwargs.get("body")
    fresh_read_needed = True
    assert namespace is not None, "Endpoints are namespaced"
    wake = _wake(namespace, name)
    streak = _Streak(kube, namespace, name)
    while not stopped:
        wake.clear()
        endpoint: dict[str, Any] | None = None
        try:
            if fresh_read_needed or live is None:
                endpoint = await kube.get_endpoint(namespace, name)
            else:
                endpoint = json.loads(json.dumps(dict(live)))
            fresh_read_needed = True
            if endpoint is None:
                # Deleted (kopf stops this daemon next), or an API server that has just
                # started and serves no custom resources yet: look again soon.
                log.debug("not found; looking again", extra=streak.about)
                await _sleep(wake, stopped, _SETTINGS.reconnect_seconds)
                continue
            if endpoint["metadata"].get("deletionTimestamp"):
                return
            with metrics.RECONCILE_SECONDS.time():
                outcome = await reconcile_endpoint(
                    kube,
                    endpoint,
                    now=datetime.datetime.now(datetime.UTC),
                    settings=_SETTINGS,
                    observer=observer,
                )
        except Exception as error:  # every failure is reported and retried
            metrics.RECONCILES.labels("error").inc()
            delay = await streak.failed(error, endpoint)
        else:
            metrics.RECONCILES.labels("ok").inc()
            fresh_read_needed = outcome.wrote_status
            streak.succeeded()
            _report(endpoint, outcome)
            _log_phase(outcome, streak.about)
            delay = calculate_next_wake(
                outcome.plan, _SETTINGS.poll_interval_seconds, _SETTINGS.resync_seconds
            )
        await _sleep(wake, stopped, delay)


_clock = time.monotonic
UNREACHABLE_REMINDER_SECONDS = 60.0
"""While the API server stays away, each Endpoint says so again this often."""


@dataclasses.dataclass
class _Streak:
    """The failed reconciles of one Endpoint in a row, and what has been said of them."""

    kube: Kube
    namespace: str
    name: str
    failures: int = 0
    since: float = 0.0
    said_unreachable: float | None = None
    reported: str | None = None

    @property
    def about(self) -> dict[str, str]:
        return {"namespace": self.namespace, "endpoint": self.name}

    async def failed(self, error: Exception, endpoint: dict[str, Any] | None) -> float:
        """Log ``error``; event it and write it to ``Degraded`` unless the API server is
        away or it says what was said already. Returns the seconds until the retry."""
        self.failures += 1
        now = _clock()
        if self.failures == 1:
            self.since = now
        unreachable = is_unreachable(error)
        delay = calculate_retry_delay(
            self.failures,
            unreachable=unreachable,
            longest=_SETTINGS.retry_max_seconds,
            reconnect=_SETTINGS.reconnect_seconds,
        )
        details = {**self.about, "attempt": self.failures, "retry_in": delay}
        message = _describe(error)
        if not unreachable:
            self.said_unreachable = None
            log.error("reconcile failed: %s", message, exc_info=error, extra=details)
            if message != self.reported:
                self.reported = await _report_failure(
                    self.kube, self.namespace, self.name, endpoint, message
                )
        elif self.said_unreachable is None:
            # Nothing can be written while the API server is away: say so, in the log only.
            self.said_unreachable = now
            log.warning("API server unreachable: %s", message, extra=details)
        elif now - self.said_unreachable >= UNREACHABLE_REMINDER_SECONDS:
            self.said_unreachable = now
            log.warning(
                "API server still unreachable after %.0f s: %s",
                now - self.since,
                message,
                extra=details,
            )
        else:
            log.debug("API server unreachable: %s", message, extra=details)
        return delay

    def succeeded(self) -> None:
        if self.failures:
            log.info(
                "reconcile succeeded after %d failed attempts in %.1f s",
                self.failures,
                _clock() - self.since,
                extra=self.about,
            )
        self.failures, self.said_unreachable, self.reported = 0, None, None


def _describe(error: BaseException) -> str:
    """One line for a person: the error's type when its text alone would not say much."""
    text = str(error).strip() or type(error).__name__
    return text if isinstance(error, ApiError) else f"{type(error).__name__}: {text}"


async def _report_failure(
    kube: Kube, namespace: str, name: str, endpoint: dict[str, Any] | None, message: str
) -> str | None:
    """A Warning Event and ``Degraded=True`` (reason ``ReconcileError``) on the Endpoint.

    Returns ``message`` once both are written, None if the condition could not be (the
    next failure tries again).
    """
    message = message[:1000]
    body = endpoint or {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": api.KIND,
        "metadata": {"namespace": namespace, "name": name},
    }
    # kopf.event, not kopf.warn: warn obeys settings.posting.level, set to ERROR above to
    # keep kopf's own log records from becoming Events.
    kopf.event(_body(body), type="Warning", reason="ReconcileError", message=message)
    condition = api.Condition(
        type="Degraded",
        status="True",
        reason="ReconcileError",
        message=message,
        lastTransitionTime=datetime.datetime.now(datetime.UTC).replace(microsecond=0),
        observedGeneration=(endpoint or {}).get("metadata", {}).get("generation"),
    )
    try:
        await kube.merge_condition(
            namespace, name, condition.model_dump(mode="json", exclude_none=True)
        )
    except Exception as error:  # the failure itself is already logged
        log.warning(
            "could not write the Degraded condition: %s",
            _describe(error),
            extra={"namespace": namespace, "endpoint": name},
        )
        return None
    return message


def _log_phase(outcome: Outcome, about: dict[str, str]) -> None:
    """One line per phase change, with the step and revisions it came with."""
    before, after = outcome.previous_status.phase, outcome.plan.status.phase
    if before == after:
        return
    status = outcome.plan.status
    log.info(
        "phase %s -> %s",
        before or "(none)",
        after,
        extra={
            **about,
            "phase": after,
            "previous_phase": before,
            "active_revision": status.activeRevision,
            "candidate_revision": status.candidateRevision,
        },
    )


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


@kopf.on.event("", "v1", "services", labels={LABEL_ENDPOINT: kopf.PRESENT})
async def service_changed(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    """A Service of an Endpoint changed or went: its Endpoint reconciles now."""
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


# -- watch-fed indexes of every Endpoint's children, keyed by (namespace, endpoint) ---------


def _key(namespace: str | None, labels: Mapping[str, str]) -> Key:
    return (namespace or "", labels.get(LABEL_ENDPOINT, ""))


@kopf.index("apps", "v1", "deployments", labels={LABEL_ENDPOINT: kopf.PRESENT})
async def fleet_deployments(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Key, DeploymentView]:
    """Each Endpoint's fleet Deployments, as the planner needs them."""
    return {_key(namespace, labels): deployment_view_of(body)}


@kopf.index("", "v1", "pods", labels={LABEL_ENDPOINT: kopf.PRESENT})
async def fleet_pods(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Key, PodView]:
    """Each Endpoint's pods: readiness, serving label, failures."""
    return {_key(namespace, labels): pod_view_of(body)}


@kopf.index("", "v1", "services", labels={LABEL_ENDPOINT: kopf.PRESENT})
async def fleet_services(
    namespace: str | None, name: str | None, labels: Mapping[str, str], **_: Any
) -> dict[Key, str]:
    """Each Endpoint's Services (the GatewayAPI router retires those of gone fleets)."""
    return {_key(namespace, labels): name or ""}


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers", labels={LABEL_ENDPOINT: kopf.PRESENT})
async def fleet_hpas(
    namespace: str | None, name: str | None, labels: Mapping[str, str], **_: Any
) -> dict[Key, str]:
    """Each Endpoint's HPAs (those of fleets no longer autoscaled are deleted)."""
    return {_key(namespace, labels): name or ""}


@kopf.index("", "v1", "configmaps", labels={LABEL_ENDPOINT: kopf.PRESENT})
async def fleet_config_maps(
    namespace: str | None, name: str | None, labels: Mapping[str, str], **_: Any
) -> dict[Key, str]:
    """Each Endpoint's shadows ConfigMap (the Replicas router keeps it current)."""
    return {_key(namespace, labels): name or ""}


@kopf.index("policy", "v1", "poddisruptionbudgets", labels={LABEL_ENDPOINT: kopf.PRESENT})
async def fleet_disruption_budgets(
    namespace: str | None, name: str | None, labels: Mapping[str, str], **_: Any
) -> dict[Key, str]:
    """Each Endpoint's PodDisruptionBudgets (those of gone fleets are deleted)."""
    return {_key(namespace, labels): name or ""}
