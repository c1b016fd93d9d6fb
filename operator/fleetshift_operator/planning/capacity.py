"""Capacity-aware cutover: how many green replicas the step to 100% needs, and whether
green has them. Pure: the samples are observed in ``reconcile.py`` (``observe_capacity``)
and recorded here, in the variant's status (``capacity``), so a restarted operator
resumes with the same fit.

During each canary (or linear) step below 100%, once green has carried its share for
one and a half rate windows, each poll records a sample: green's requests per second per serving
replica, its latency quantile and, when Prometheus has it, its CPU per replica. Before
the step that gives green all of the traffic, :func:`calculate_replicas_needed` turns
the samples and the variant's load into a replica count, green is planned with that many
(its HPA's minimum is raised, or its Deployment's replicas without an HPA), and
:func:`plan_capacity` holds the step until they are Ready.

Worked example (canary 25% then 100%, 4 replicas, 120 req/s, green answers in 35 ms at
p95 with 30 req/s per serving replica, ``headroomPercent: 20``)::

    t=0    green r2 x4 Ready, step 1/2: green 25% (1 of 4 serving)    Measuring
    t=45   1.5 rate windows in: 30 req/s per replica at 35 ms p95     Measuring, 1 sample
    t=60   bake over, alarms Healthy: 120 x 1.2 / 30 = 4.8 -> 5      PreScaling, green x5
    t=62   the 5th pod cannot be placed (0/3 nodes have enough cpu)  Holding, step held
    t=90   a node joins; 5 of 5 Ready                                 Ready: step 2/2, 100%
    t=150  deployment succeeds                                        HPA minimum back to the spec's

No sample (no Prometheus, or a bake shorter than the rate window) is never Healthy: the
fit is an estimate, blue's current size (what the step rule already asks), and the
verdict says Inconclusive while the step proceeds on it; see ``docs/capacity.md``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import statistics
from collections.abc import Sequence

from fleetshift_operator.api import (
    MAX_REPLICAS,
    CapacityPolicy,
    CapacitySample,
    CapacityStatus,
    EndpointSpec,
)
from fleetshift_operator.planning.context import VariantDraft
from fleetshift_operator.planning.times import whole_second

MAX_SAMPLES = 20
"""Samples kept in status (the oldest go first)."""

SETTLE_WINDOWS = 1.5
"""A step is sampled once it has carried its share this many rate windows: the extra half
window covers the lag of the routing change and of the scrape, so that no sample's window
reaches back to before the split."""

ROUNDING_SLACK = 0.05
"""A twentieth of a replica is rate noise, not load: 4.03 replicas' worth needs 4."""


@dataclasses.dataclass(frozen=True)
class Need:
    """The replicas green needs for the full load, and how that was found."""

    replicas: int
    load: float | None
    """Requests per second planned for (the variant's load plus headroom)."""
    per_replica: float | None
    """Requests per second one replica was seen to carry within ``latency_bound``."""
    latency_bound: float | None
    estimated: bool
    """True when no usable sample exists: ``replicas`` is the floor (blue's size)."""
    capped: bool
    """True when ``max_replicas`` is below what the load needs."""
    why: str = ""
    """Why the fit is an estimate, when it is one."""


def calculate_replicas_needed(
    samples: Sequence[CapacitySample],
    load: float | None,
    *,
    floor: int,
    max_replicas: int = MAX_REPLICAS,
    headroom_percent: float = 0,
    max_latency_seconds: float | None = None,
) -> Need:
    """Green replicas to carry ``load`` req/s within the latency green showed.

    The latency bound is ``max_latency_seconds`` or else the median of the sampled
    quantiles; one replica's capacity is the most load per replica green carried in a
    sample within that bound (green is never asked to carry more per replica than it was
    seen to). Never fewer than ``floor`` (blue's size), never more than ``max_replicas``.

    >>> T = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    >>> def s(load, latency): return CapacitySample(at=T, loadPerReplica=load, replicas=1,
    ...                                             latencySeconds=latency)
    >>> need = calculate_replicas_needed([s(30, 0.035)], 120, floor=2)
    >>> need.replicas, need.per_replica, need.latency_bound, need.estimated
    (4, 30.0, 0.035, False)
    >>> calculate_replicas_needed([s(30, 0.035)], 120, floor=2, headroom_percent=20).replicas
    5
    >>> calculate_replicas_needed([s(30, 0.035)], 121, floor=2).replicas  # rate noise
    4
    >>> need = calculate_replicas_needed([s(30, 0.035)], 240, floor=2, max_replicas=6)
    >>> need.replicas, need.capped
    (6, True)
    >>> calculate_replicas_needed([s(30, 0.035)], 30, floor=4).replicas
    4
    >>> need = calculate_replicas_needed([s(20, 0.02), s(40, 0.09), s(30, 0.03)], 120,
    ...                                  floor=1)
    >>> need.replicas, need.per_replica, need.latency_bound
    (4, 30.0, 0.03)
    >>> need = calculate_replicas_needed([], 120, floor=4)
    >>> need.replicas, need.estimated, need.why
    (4, True, 'no load sample yet')
    >>> calculate_replicas_needed([s(30, None)], 120, floor=4).why
    'no latency in the samples'
    >>> calculate_replicas_needed([s(30, 0.035)], 120, floor=4, max_latency_seconds=0.01).why
    'green never answered within 10 ms in a sample'
    """
    floor = max(1, floor)
    ceiling = max(floor, max_replicas)

    def estimate(why: str) -> Need:
        return Need(floor, load, None, max_latency_seconds, estimated=True, capped=False, why=why)

    usable = [x for x in samples if x.loadPerReplica > 0 and x.replicas > 0]
    if not usable:
        return estimate("no load sample yet")
    timed = [x for x in usable if x.latencySeconds is not None]
    if not timed:
        return estimate("no latency in the samples")
    if load is None:
        return estimate("the variant's load is unknown")
    bound = max_latency_seconds
    if bound is None:
        bound = statistics.median(x.latencySeconds for x in timed if x.latencySeconds is not None)
    within = [x.loadPerReplica for x in timed if (x.latencySeconds or 0) <= bound]
    if not within:
        return estimate(f"green never answered within {format_latency(bound)} in a sample")
    per_replica = float(max(within))
    planned = load * (1 + headroom_percent / 100)
    exact = planned / per_replica
    wanted = max(floor, math.ceil(exact - ROUNDING_SLACK))
    return Need(
        replicas=min(wanted, ceiling),
        load=planned,
        per_replica=per_replica,
        latency_bound=bound,
        estimated=False,
        capped=wanted > ceiling,
    )


def format_latency(seconds: float) -> str:
    """>>> format_latency(0.0354), format_latency(1.5)
    ('35 ms', '1.5 s')
    """
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _quantile_name(quantile: float) -> str:
    """>>> _quantile_name(0.95), _quantile_name(0.999)
    ('p95', 'p99.9')
    """
    return f"p{quantile * 100:g}"


def describe_need(
    need: Need, quantile: float, max_replicas: int, cap_name: str = "maxReplicas"
) -> str:
    """The fit in words.

    >>> n = Need(4, 120.0, 30.0, 0.035, estimated=False, capped=False)
    >>> describe_need(n, 0.95, 10)
    'green needs 4 replicas for 120 req/s at ≤ 35 ms p95 (30 req/s per replica seen)'
    >>> describe_need(Need(4, None, None, None, True, False, "no load sample yet"), 0.95, 10)
    "no load sample yet: green needs blue's 4 replicas (an estimate)"
    >>> describe_need(Need(6, 240.0, 30.0, 0.035, False, True), 0.95, 6)
    'green needs 8 replicas for 240 req/s at ≤ 35 ms p95, capped at 6 (maxReplicas)'
    """
    if need.estimated:
        return f"{need.why}: green needs blue's {need.replicas} replicas (an estimate)"
    assert need.load is not None and need.per_replica and need.latency_bound is not None
    at = f"at ≤ {format_latency(need.latency_bound)} {_quantile_name(quantile)}"
    if need.capped:
        wanted = math.ceil(need.load / need.per_replica - ROUNDING_SLACK)
        return (
            f"green needs {wanted} replicas for {need.load:.0f} req/s {at}, "
            f"capped at {max_replicas} ({cap_name})"
        )
    return (
        f"green needs {need.replicas} replicas for {need.load:.0f} req/s {at} "
        f"({need.per_replica:.0f} req/s per replica seen)"
    )


@dataclasses.dataclass(frozen=True)
class CapacityDecision:
    """Whether the step to 100% may go, and the status that says so."""

    allowed: bool
    verdict: str
    decision: str
    reason: str


def plan_capacity(
    need: Need,
    ready: int,
    pending: int,
    waiting: str | None,
    *,
    quantile: float,
    max_replicas: int,
    cap_name: str = "maxReplicas",
) -> CapacityDecision:
    """The step to 100% goes once green has ``need.replicas`` Ready; it holds while they
    start (PreScaling) or cannot be placed (Holding). A measured fit with its replicas
    Ready is Healthy; an estimate is never Healthy, but its replicas Ready let the step
    go.

    >>> n = Need(4, 120.0, 30.0, 0.035, estimated=False, capped=False)
    >>> d = plan_capacity(n, 2, 2, "Unschedulable: 0/3 nodes have enough cpu",
    ...                   quantile=0.95, max_replicas=10)
    >>> d.allowed, d.verdict, d.decision
    (False, 'Inconclusive', 'Holding')
    >>> for part in d.reason.split("; "): print(part)
    green needs 4 replicas for 120 req/s at ≤ 35 ms p95 (30 req/s per replica seen)
    2 of 4 Ready, 2 Pending (Unschedulable: 0/3 nodes have enough cpu)
    >>> plan_capacity(n, 3, 0, None, quantile=0.95, max_replicas=10).decision
    'PreScaling'
    >>> d = plan_capacity(n, 4, 0, None, quantile=0.95, max_replicas=10)
    >>> d.allowed, d.verdict, d.decision
    (True, 'Healthy', 'Ready')
    >>> e = plan_capacity(Need(4, None, None, None, True, False, "no load sample yet"), 4, 0,
    ...                   None, quantile=0.95, max_replicas=10)
    >>> e.allowed, e.verdict
    (True, 'Inconclusive')
    """
    fit = describe_need(need, quantile, max_replicas, cap_name)
    counts = f"{ready} of {need.replicas} Ready"
    if ready >= need.replicas:
        verdict = "Inconclusive" if need.estimated else "Healthy"
        return CapacityDecision(True, verdict, "Ready", f"{fit}; {counts}")
    if pending > 0:
        where = f" ({waiting})" if waiting else ""
        return CapacityDecision(
            False, "Inconclusive", "Holding", f"{fit}; {counts}, {pending} Pending{where}"
        )
    return CapacityDecision(False, "Inconclusive", "PreScaling", f"{fit}; {counts}, scaling up")


# -- the planner's hooks -----------------------------------------------------------------


def capacity_policy(draft: VariantDraft) -> CapacityPolicy | None:
    """The capacity policy of this variant's deployment (see :func:`capacity_policy_of`)."""
    return capacity_policy_of(draft.spec)


def capacity_policy_of(spec: EndpointSpec) -> CapacityPolicy | None:
    """The capacity policy of a blue/green deployment in canary or linear steps, or None
    when it does not apply (rolling, AllAtOnce, ``enabled: false``).

    >>> from fleetshift_operator.api import BlueGreen, TrafficRouting
    >>> spec = EndpointSpec.model_validate({"variants": [{"name": "a", "model": {"uri": "m"}}]})
    >>> capacity_policy_of(spec) is None
    True
    >>> canary = spec.model_copy(deep=True)
    >>> canary.deploymentConfig.blueGreen = BlueGreen(trafficRouting=TrafficRouting(
    ...     type="Canary", canarySize={"type": "CapacityPercent", "value": 25}))
    >>> capacity_policy_of(canary).headroomPercent
    0
    """
    config = spec.deploymentConfig
    if config.rolling is not None:
        return None
    routing = config.blueGreen.trafficRouting.type if config.blueGreen is not None else None
    if routing in (None, "AllAtOnce"):
        return None
    policy = config.capacity or CapacityPolicy()
    return policy if policy.enabled else None


def _current(draft: VariantDraft) -> CapacityStatus:
    revision = draft.status.candidateRevision
    assert revision is not None
    record = draft.status.capacity
    if record is None or record.revision != revision:
        return CapacityStatus(revision=revision)
    return record


def record_capacity_sample(draft: VariantDraft) -> None:
    """Fold this reconcile's observation of green into the fit: the variant's load, and
    a sample once the step has carried its share for :data:`SETTLE_WINDOWS` windows (at
    most one per third of a window)."""
    policy = capacity_policy(draft)
    step = draft.status.step
    seen = draft.observed.capacity_of(draft.name)
    if policy is None or step is None or seen is None or draft.status.candidateRevision is None:
        return
    record = _current(draft)
    fields: dict[str, object] = {}
    if seen.green_rps is not None and seen.blue_rps is not None:
        fields["load"] = round(seen.green_rps + seen.blue_rps, 3)
    spacing = datetime.timedelta(seconds=policy.windowSeconds / 3)
    last = record.samples[-1].at if record.samples else None
    started = step.startedAt
    if (
        0 < step.greenPercent < 100
        and seen.green_rps is not None
        and seen.green_replicas > 0
        and started is not None
        and (draft.now - started).total_seconds() >= policy.windowSeconds * SETTLE_WINDOWS
        and (last is None or draft.now - last >= spacing)
    ):
        sample = CapacitySample(
            at=whole_second(draft.now),
            loadPerReplica=round(seen.green_rps / seen.green_replicas, 3),
            replicas=seen.green_replicas,
            latencySeconds=seen.latency_seconds,
            cpuCoresPerReplica=(
                round(seen.cpu_cores / seen.green_replicas, 4)
                if seen.cpu_cores is not None
                else None
            ),
        )
        fields["samples"] = [*record.samples, sample][-MAX_SAMPLES:]
    if fields or draft.status.capacity is not record:
        draft.update(capacity=record.model_copy(update=fields))


def calculate_limit(hpa_max: int | None, blue_size: int, max_scale_percent: int) -> tuple[int, str]:
    """The most replicas the fit may ask for, and the name of the limit: the HPA's
    ``maxReplicas``, or ``maxScalePercent`` of blue's size when that is lower.

    >>> calculate_limit(10, 4, 200)
    (8, "maxScalePercent 200 of blue's 4")
    >>> calculate_limit(6, 4, 200)
    (6, 'maxReplicas')
    >>> calculate_limit(None, 3, 150)
    (4, "maxScalePercent 150 of blue's 3")
    """
    scale = max(blue_size, blue_size * max_scale_percent // 100)
    if hpa_max is not None and hpa_max <= scale:
        return hpa_max, "maxReplicas"
    return min(scale, MAX_REPLICAS), f"maxScalePercent {max_scale_percent} of blue's {blue_size}"


def capacity_allows(draft: VariantDraft, size: int) -> bool:
    """Before the step that gives green all of the traffic: plan green with the replicas
    the fit asks for and say whether they are Ready (``size`` is blue's, the floor)."""
    policy = capacity_policy(draft)
    if policy is None:
        return True
    record = _current(draft)
    scaling = draft.variant.autoscaling
    limit, cap_name = calculate_limit(
        scaling.maxReplicas if scaling is not None else None, size, policy.maxScalePercent
    )
    need = calculate_replicas_needed(
        record.samples,
        record.load,
        floor=size,
        max_replicas=limit,
        headroom_percent=policy.headroomPercent,
        max_latency_seconds=policy.maxLatencySeconds,
    )
    green = draft.fleet(record.revision)
    ready = green.ready if green is not None else 0
    pending = green.pending if green is not None else 0
    waiting = green.waiting if green is not None else None
    decided = plan_capacity(
        need,
        ready,
        pending,
        waiting,
        quantile=policy.latencyQuantile,
        max_replicas=limit,
        cap_name=cap_name,
    )
    stamp = whole_second(draft.now)
    holding = record.holdingSince or (None if decided.allowed else stamp)
    if decided.decision != record.decision:
        message = f"capacity for {record.revision}: {decided.reason}"
        if decided.decision == "Holding":
            draft.emit("CapacityHeld", message, warning=True)
        elif decided.decision == "PreScaling":
            draft.emit("CapacityPreScaling", message)
        else:
            draft.emit("CapacityReady", message)
        if need.capped:
            draft.emit("CapacityCapped", message, warning=True)
    draft.update(
        capacity=record.model_copy(
            update={
                "latencyBoundSeconds": need.latency_bound,
                "perReplica": need.per_replica,
                "neededReplicas": need.replicas,
                "readyReplicas": ready,
                "pendingReplicas": pending,
                "estimated": need.estimated,
                "capped": need.capped,
                "verdict": decided.verdict,
                "decision": decided.decision,
                "reason": decided.reason,
                "holdingSince": holding,
                "decidedAt": stamp,
            }
        )
    )
    return decided.allowed


def capacity_floor(draft: VariantDraft) -> int:
    """Green replicas the cutover asked for in this deployment (0 before it asked): green
    keeps them through the last step and the termination wait; once the deployment ends
    the spec's size (or the HPA's minimum) is back in control."""
    record = draft.status.capacity
    if (
        record is None
        or record.revision != draft.status.candidateRevision
        or record.neededReplicas is None
        or capacity_policy(draft) is None
    ):
        return 0
    return record.neededReplicas
