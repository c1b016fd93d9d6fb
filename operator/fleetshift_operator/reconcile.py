"""One reconcile of one Endpoint: observe -> plan -> apply -> write status once.

No kopf here (``handlers.py`` wires this to events) and no decisions (the
planner makes them). The apply order keeps traffic safe when the operator is
killed between any two calls:

1. fleets the plan lists are created or resized (a new green fleet first
   appears with no traffic);
2. the router moves traffic to the planned shares;
3. fleets the plan no longer lists lose their router objects and are deleted,
   so no traffic ever points at a deleted fleet;
4. the status is written last, so a restart redoes the same idempotent plan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import math
import tempfile
from pathlib import Path
from typing import Any

from lightkube.core.exceptions import ApiError

from fleetshift_operator.alarms.base import AlarmContext, AlarmResult
from fleetshift_operator.alarms.factory import make_alarm_source
from fleetshift_operator.alarms.prometheus import Prometheus, PrometheusAuth, PrometheusError
from fleetshift_operator.api import (
    CapacityPolicy,
    EndpointSpec,
    EndpointStatus,
    SecretKeyRef,
    VariantStatus,
)
from fleetshift_operator.controls import read_controls
from fleetshift_operator.kube import DeploymentView, Kube, PodView
from fleetshift_operator.manifests import (
    POD_TEMPLATE,
    Manifest,
    get_deployment,
    get_disruption_budget,
    get_hpa,
)
from fleetshift_operator.observe import Observer
from fleetshift_operator.planning.capacity import capacity_policy_of
from fleetshift_operator.planning.names import calculate_revision, fleet_name
from fleetshift_operator.planning.plan import plan_endpoint
from fleetshift_operator.planning.status import IN_FLIGHT
from fleetshift_operator.planning.types import (
    CapacityObservation,
    FleetObservation,
    Observed,
    Plan,
)
from fleetshift_operator.settings import OperatorSettings
from fleetshift_operator.traffic import make_router
from fleetshift_operator.webhooks.base import WebhookCall, WebhookResult, due_calls
from fleetshift_operator.webhooks.factory import make_webhook_sender
from fleetshift_operator.webhooks.inflight import WebhookCalls

WEBHOOK_CALLS = WebhookCalls()
"""The webhook calls in flight in this process (``webhooks/inflight.py``)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one reconcile did: the plan, for events, metrics and the wait until the next."""

    plan: Plan
    previous_status: EndpointStatus
    wrote_status: bool = True
    """False when the status was already what the plan says (nothing was written)."""


def observe_fleets(
    deployments: list[DeploymentView], pods: list[PodView]
) -> tuple[FleetObservation, ...]:
    """Fleets as the planner sees them: Deployment counts plus pod failures, and what
    their missing pods wait for.

    >>> d = DeploymentView("ep-main-abc", "main", "abc", 3, 1)
    >>> p = PodView("ep-main-abc-1", "main", "abc", False, False, "", False, "CrashLoopBackOff")
    >>> observe_fleets([d], [p])[0].failure
    'CrashLoopBackOff'
    >>> q = PodView("ep-main-abc-2", "main", "abc", False, False, "", False, None,
    ...             "Unschedulable: 0/3 nodes are available")
    >>> observe_fleets([d], [q])[0].waiting
    'Unschedulable: 0/3 nodes are available (pod ep-main-abc-2)'
    >>> observe_fleets([d], [q])[0].pending
    1
    """
    fleets = []
    for deployment in deployments:
        members = [
            p for p in pods if p.revision == deployment.revision and p.variant == deployment.variant
        ]
        failures = [p.failure for p in members if p.failure]
        pending = [p for p in members if p.waiting and not p.deleting]
        waiting = deployment.waiting or next(
            (f"{p.waiting} (pod {p.name})" for p in members if p.waiting and not p.deleting),
            None,
        )
        fleets.append(
            FleetObservation(
                variant=deployment.variant,
                revision=deployment.revision,
                replicas=deployment.replicas,
                ready=deployment.ready,
                failure=failures[0] if failures else None,
                waiting=waiting,
                pending=len(pending),
            )
        )
    return tuple(fleets)


class FleetLostError(RuntimeError):
    """A fleet of an older revision is missing and cannot be rebuilt from the spec."""


def calculate_next_wake(plan: Plan, poll_seconds: float, resync_seconds: float) -> float:
    """Seconds until the next reconcile if no event comes first.

    While a deployment is in flight the Endpoint is polled (alarms and readiness
    change without events on the Endpoint); at rest it resyncs slowly. A plan
    due sooner (a bake ending) wins, but never below a fifth of a second.

    >>> from fleetshift_operator.api import EndpointStatus
    >>> def plan(phase, due=None): return Plan((), EndpointStatus(phase=phase), (), due)
    >>> calculate_next_wake(plan("InService"), 5, 60)
    60
    >>> calculate_next_wake(plan("Updating"), 5, 60)
    5
    >>> calculate_next_wake(plan("Updating", 1.5), 5, 60)
    1.5
    >>> calculate_next_wake(plan("Updating", 0), 5, 60)
    0.2
    """
    limit = poll_seconds if plan.status.phase in IN_FLIGHT else resync_seconds
    if plan.requeue_after is None:
        return limit
    return max(0.2, min(limit, plan.requeue_after))


async def reconcile_endpoint(
    kube: Kube,
    endpoint: Manifest,
    now: datetime.datetime,
    settings: OperatorSettings | None = None,
    observer: Observer | None = None,
) -> Outcome:
    """Run one observe -> plan -> apply -> status cycle for ``endpoint``.

    Children are read through ``observer`` (the operator's watch-fed indexes; default:
    the apiserver). The status is written only when it changed, so an Endpoint at rest
    costs no write, and no watch event, per resync.
    """
    observer = observer or kube
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    spec = EndpointSpec.model_validate(endpoint["spec"])
    raw_status: dict[str, Any] = endpoint.get("status") or {}
    status = EndpointStatus.model_validate(raw_status) if raw_status.get("phase") else None

    deployments = await observer.deployments(namespace, name)
    pods = await observer.pods(namespace, name)
    # Alarms and webhooks are observed side by side: a slow webhook does not delay the
    # alarms' verdicts by its own time.
    alarms, webhooks, capacity = await asyncio.gather(
        observe_alarms(kube, spec, status, namespace, name, now, settings),
        observe_webhooks(kube, spec, status, namespace, name, now),
        observe_capacity(kube, spec, status, namespace, name, settings),
    )
    observed = Observed(
        endpoint=name,
        generation=int(metadata.get("generation", 1)),
        fleets=observe_fleets(deployments, pods),
        controls=read_controls(metadata.get("annotations") or {}),
        alarms=alarms,
        router=spec.traffic.router,
        webhooks=webhooks,
        capacity=capacity,
    )
    plan = plan_endpoint(spec, status, observed, now)
    await apply_plan(kube, endpoint, spec, plan, deployments, pods, observer)
    written = plan.status.model_dump(mode="json", exclude_none=True)
    changed = written != raw_status
    if changed:
        await kube.replace_status(namespace, name, written)
    return Outcome(plan=plan, previous_status=status or EndpointStatus(), wrote_status=changed)


def _ca_file(bundle: str) -> str:
    """A file holding ``bundle``, named by its content, written once per bundle."""
    digest = hashlib.sha256(bundle.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"fleetshift-prometheus-ca-{digest}.pem"
    if not path.exists():
        path.write_text(bundle)
    return str(path)


async def prometheus_for(
    kube: Kube, spec: EndpointSpec, namespace: str, settings: OperatorSettings
) -> Prometheus | None:
    """The Prometheus this Endpoint's alarms use: its own, else the operator's."""
    policy = spec.deploymentConfig.autoRollback
    own = policy.prometheus if policy is not None else None
    if own is None:
        if not settings.prometheus_url:
            return None
        return Prometheus(
            settings.prometheus_url,
            PrometheusAuth(
                bearer_token=settings.prometheus_bearer_token,
                username=settings.prometheus_username,
                password=settings.prometheus_password,
                ca_file=settings.prometheus_ca_file,
            ),
        )

    async def secret(ref: SecretKeyRef | None) -> str | None:
        return await kube.read_secret(namespace, ref.name, ref.key) if ref else None

    bundle = await secret(own.caBundleSecret)
    ca_file = _ca_file(bundle) if bundle else None
    return Prometheus(
        own.url,
        PrometheusAuth(
            bearer_token=await secret(own.bearerTokenSecret),
            username=await secret(own.basicAuthUsernameSecret),
            password=await secret(own.basicAuthPasswordSecret),
            ca_file=ca_file,
        ),
    )


async def observe_alarms(  # noqa: PLR0917 - what one evaluation needs
    kube: Kube,
    spec: EndpointSpec,
    status: EndpointStatus | None,
    namespace: str,
    name: str,
    now: datetime.datetime,
    settings: OperatorSettings | None,
) -> dict[str, tuple[AlarmResult, ...]] | None:
    """Evaluate each deploying variant's alarms while its green fleet is watched, and
    validate them while it starts; a variant at rest is not evaluated.

    Each variant is judged on its own: ``${variant}``, ``${revision}`` and
    ``${blueRevision}`` are that variant's. While a green fleet is provisioning, each
    alarm is checked once per reconcile so that invalid PromQL or an unknown rule stops
    the deployment before any traffic moves.
    """
    policy = spec.deploymentConfig.autoRollback
    if policy is None or status is None:
        return None
    deploying = [
        v
        for v in status.variants
        if v.candidateRevision is not None
        and v.activeRevision is not None
        and v.step is not None
        and v.phase == "Updating"
    ]
    if not deploying:
        return None
    settings = settings or OperatorSettings()
    try:
        prometheus = await prometheus_for(kube, spec, namespace, settings)
    except (ApiError, KeyError) as error:
        reason = f"cannot read the Prometheus credentials: {error}"
        failed = tuple(AlarmResult(a.name, "Error", None, reason) for a in policy.alarms)
        return {v.name: failed for v in deploying}
    if prometheus is None:
        reason = "no Prometheus: set FLEETSHIFT_PROMETHEUS_URL or autoRollback.prometheus.url"
        unknown = tuple(AlarmResult(a.name, "Inconclusive", None, reason) for a in policy.alarms)
        return {v.name: unknown for v in deploying}
    client = prometheus

    def run() -> dict[str, tuple[AlarmResult, ...]]:
        results: dict[str, tuple[AlarmResult, ...]] = {}
        for variant in deploying:
            assert variant.candidateRevision is not None and variant.activeRevision is not None
            context = AlarmContext(
                namespace=namespace,
                endpoint=name,
                variant=variant.name,
                revision=variant.candidateRevision,
                blue_revision=variant.activeRevision,
                since=variant.deploymentStartedAt,
            )
            previous = {a.name: a.verdict for a in variant.alarms}
            sources = [make_alarm_source(alarm, context, client) for alarm in policy.alarms]
            if variant.step is not None and variant.step.stage == "Provisioning":
                checked = tuple(r for s in sources if (r := s.validate()) is not None)
                if checked:
                    results[variant.name] = checked
                continue
            results[variant.name] = tuple(s.evaluate(previous.get(s.name), now) for s in sources)
        return results

    return await asyncio.to_thread(run)


def capacity_queries(
    policy: CapacityPolicy, namespace: str, name: str, variant: VariantStatus, deployment: str
) -> dict[str, str]:
    """The PromQL of one capacity observation (``docs/runtime-metrics.md``): each
    revision's request rate, green's latency quantile and green's container CPU.

    >>> v = VariantStatus(name="main", candidateRevision="g", activeRevision="b")
    >>> queries = capacity_queries(CapacityPolicy(), "ml", "churn", v, "churn-main-g")
    >>> print(queries["rate"].replace(",", ", "))
    sum by (revision) (rate(fleetshift_invocations_total{namespace="ml", endpoint="churn",
    variant="main", revision=~"g|b"}[30s]))
    >>> queries["latency"].startswith("histogram_quantile(0.95, sum by (le) (rate(")
    True
    """
    window = f"[{policy.windowSeconds}s]"
    fleet = f'namespace="{namespace}",endpoint="{name}",variant="{variant.name}"'
    both = f'{fleet},revision=~"{variant.candidateRevision}|{variant.activeRevision}"'
    green = f'{fleet},revision="{variant.candidateRevision}"'
    return {
        "rate": f"sum by (revision) (rate(fleetshift_invocations_total{{{both}}}{window}))",
        "latency": (
            f"histogram_quantile({policy.latencyQuantile}, sum by (le) "
            f"(rate(fleetshift_model_latency_seconds_bucket{{{green}}}{window})))"
        ),
        "cpu": (
            f'sum(rate(container_cpu_usage_seconds_total{{namespace="{namespace}",'
            f'pod=~"{deployment}-.*",container!="",container!="POD"}}{window}))'
        ),
    }


def _green_serving(status: EndpointStatus, variant: VariantStatus) -> int:
    """Green replicas that served during the last reconcile (the traffic spread over
    them): its serving pods with the Replicas router, its Ready pods with Gateway API."""
    for fleet in status.fleets.values():
        if fleet.revision == variant.candidateRevision and fleet.role == "green":
            return (
                fleet.servingReplicas
                if fleet.servingReplicas is not None
                else (fleet.readyReplicas)
            )
    return 0


def _first_value(series: list[dict[str, Any]]) -> float | None:
    for one in series:
        value = float(one["value"][1])
        if math.isfinite(value):
            return value
    return None


async def observe_capacity(  # noqa: PLR0917 - what one observation needs
    kube: Kube,
    spec: EndpointSpec,
    status: EndpointStatus | None,
    namespace: str,
    name: str,
    settings: OperatorSettings | None,
) -> dict[str, CapacityObservation] | None:
    """Each deploying variant's load and green's latency while a canary step carries
    traffic (``planning/capacity.py`` records them as samples and sizes green for the
    step to 100%). No Prometheus, or no data, is an observation without numbers: the
    planner then falls back to blue's size and never calls the fit Healthy."""
    policy = capacity_policy_of(spec)
    if policy is None or status is None:
        return None
    sampled = [
        v
        for v in status.variants
        if v.phase == "Updating"
        and v.candidateRevision is not None
        and v.activeRevision is not None
        and v.step is not None
        and v.step.stage == "Baking"
        and 0 < v.step.greenPercent < 100
    ]
    if not sampled:
        return None
    try:
        prometheus = await prometheus_for(kube, spec, namespace, settings or OperatorSettings())
    except (ApiError, KeyError) as error:
        prometheus, missing = None, f"cannot read the Prometheus credentials: {error}"
    else:
        missing = "no Prometheus: set FLEETSHIFT_PROMETHEUS_URL or autoRollback.prometheus.url"
    if prometheus is None:
        return {v.name: CapacityObservation(None, None, 0, reason=missing) for v in sampled}
    client = prometheus

    def observe(variant: VariantStatus) -> CapacityObservation:
        assert variant.candidateRevision is not None
        deployment = fleet_name(name, variant.name, variant.candidateRevision)
        queries = capacity_queries(policy, namespace, name, variant, deployment)
        replicas = _green_serving(status, variant)
        try:
            rates = {
                one["metric"].get("revision", ""): float(one["value"][1])
                for one in client.instant(queries["rate"])
            }
            latency = _first_value(client.instant(queries["latency"]))
        except PrometheusError as error:
            return CapacityObservation(None, None, replicas, reason=f"Prometheus: {error}")
        try:
            cpu = _first_value(client.instant(queries["cpu"]))
        except PrometheusError:
            cpu = None  # container CPU is optional (cAdvisor may not be scraped)
        green = rates.get(variant.candidateRevision)
        blue = rates.get(variant.activeRevision or "", 0.0 if green is not None else None)
        return CapacityObservation(
            green_rps=green,
            blue_rps=blue,
            green_replicas=replicas,
            latency_seconds=latency,
            cpu_cores=cpu,
            reason=None if green is not None else "no requests counted for green yet",
        )

    answers = await asyncio.gather(*(asyncio.to_thread(observe, v) for v in sampled))
    return {v.name: answer for v, answer in zip(sampled, answers, strict=True)}


async def observe_webhooks(  # noqa: PLR0917 - what one round of calls needs
    kube: Kube,
    spec: EndpointSpec,
    status: EndpointStatus | None,
    namespace: str,
    name: str,
    now: datetime.datetime,
) -> dict[str, tuple[WebhookResult, ...]] | None:
    """Call the webhooks the status says are due (``webhooks.base.due_calls``): gates
    the planner is waiting on, notifications it queued. Their answers are observations,
    recorded in status by the planner. A signing Secret that cannot be read is an Error
    result: the webhook is not called unsigned. Calls run in their own threads and a
    reconcile waits for them at most ``webhooks.inflight.WAIT_SECONDS``: a slow receiver
    is answered for by a later reconcile, and never delays the rest of this one (a
    breach's rollback above all)."""
    calls = due_calls(spec, status, namespace, name, now)
    if not calls:
        return None
    keys: dict[str, bytes | None] = {}
    failed: dict[str, str] = {}
    for call in calls:
        ref = call.hook.secretRef
        if ref is None or call.hook.name in keys or call.hook.name in failed:
            continue
        try:
            keys[call.hook.name] = (await kube.read_secret(namespace, ref.name, ref.key)).encode()
        except (ApiError, KeyError) as error:
            failed[call.hook.name] = f"cannot read the signing key {ref.name}/{ref.key}: {error}"
    sender = make_webhook_sender()

    def send(call: WebhookCall) -> WebhookResult:
        reason = failed.get(call.hook.name)
        if reason is not None:
            return WebhookResult(call.hook.name, call.revision, "Error", None, reason, 0)
        return sender.send(call, keys.get(call.hook.name), now)

    answered = await WEBHOOK_CALLS.collect(namespace, name, calls, send)
    results: dict[str, tuple[WebhookResult, ...]] = {}
    for call, answer in answered:
        results[call.variant] = (*results.get(call.variant, ()), answer)
    return results or None


async def apply_plan(  # noqa: PLR0917 - the observed state it acts on
    kube: Kube,
    endpoint: Manifest,
    spec: EndpointSpec,
    plan: Plan,
    deployments: list[DeploymentView],
    pods: list[PodView],
    observer: Observer | None = None,
) -> None:
    """Make the cluster match ``plan`` in the safe order described above."""
    observer = observer or kube
    metadata = endpoint["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    variants = {v.name: v for v in spec.variants}
    wanted: set[str] = set()
    autoscaled: set[str] = set()
    existing = {d.name: d for d in deployments}
    hpas = set(await observer.names("HorizontalPodAutoscaler", namespace, name))
    budgets = set(await observer.names("PodDisruptionBudget", namespace, name))
    budgeted: set[str] = set()
    for fleet in plan.fleets:
        deployment_name = fleet_name(name, fleet.variant, fleet.revision)
        wanted.add(deployment_name)
        current = existing.get(deployment_name)
        variant = variants.get(fleet.variant)
        revision = calculate_revision(variant) if variant is not None else None
        if fleet.spec_owned and variant is not None and fleet.revision == revision:
            include_replicas = fleet.autoscaling is None or current is None
            template = current.pod_template if current is not None else POD_TEMPLATE
            await kube.apply(
                get_deployment(
                    endpoint,
                    variant,
                    fleet,
                    include_replicas=include_replicas,
                    pod_template=template,
                ),
                exists=current is not None,
            )
            if fleet.autoscaling is not None and current is None:
                await kube.hand_over_replicas(namespace, deployment_name, fleet.replicas)
        elif current is None:
            # The spec now describes another revision of this variant (or no longer has
            # the variant); the pods of this one cannot be rebuilt from it.
            raise FleetLostError(
                f"fleet {deployment_name} (revision {fleet.revision}) is gone and the spec "
                f"now describes revision {revision} of variant {fleet.variant}; it cannot be "
                "recreated"
            )
        elif fleet.autoscaling is None and current.replicas != fleet.replicas:
            # An older fleet keeps its own pod template: only its size changes.
            await kube.scale(namespace, deployment_name, fleet.replicas)
        if variant is not None and variant.disruptionBudget.enabled:
            budgeted.add(deployment_name)
            await kube.apply(
                get_disruption_budget(endpoint, variant, fleet),
                exists=deployment_name in budgets,
            )
        if fleet.autoscaling is not None:
            autoscaled.add(deployment_name)
            await kube.apply(
                get_hpa(endpoint, fleet, fleet.autoscaling), exists=deployment_name in hpas
            )

    router = make_router(spec.traffic.router, kube, observer)
    await router.route(endpoint, plan.fleets, pods)
    await router.retire(endpoint, plan.fleets)

    for hpa in hpas:
        if hpa not in autoscaled:
            await kube.delete("HorizontalPodAutoscaler", hpa, namespace)
    for budget in budgets - budgeted:
        await kube.delete("PodDisruptionBudget", budget, namespace)
    for deployment in deployments:
        if deployment.name not in wanted:
            await kube.delete("Deployment", deployment.name, namespace)
