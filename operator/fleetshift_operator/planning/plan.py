"""``plan_endpoint(spec, status, observed, now) -> Plan``: the planner's one entry.

A flat dispatch: endpoint-wide controls (pause, and requests acted on once), then each
variant's own rollout (``variant.py``, with the strategy ``strategy.py`` picks), then the
split of the endpoint's traffic over the fleets, then the status. Each variant has its
own revision, so changing one variant deploys that variant alone; a variant added to a
live Endpoint is created beside the others and takes its weight once Ready; a removed
variant keeps serving while a variant added with it is still being created, then its
traffic moves to the others and its fleet is deleted.

Worked example (champion 4 replicas weight 80 serving; challenger 1 replica weight 20
added)::

    t=0   challenger added            Updating; challenger Creating, fleet x1 created;
                                      champion untouched, 100% of the traffic
    t=3   challenger 1/1 Ready        InService; 4 champion and 1 challenger pods serve:
                                      80% and 20%, exactly the weights
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

from fleetshift_operator.api import (
    EndpointSpec,
    EndpointStatus,
    FleetStatus,
    VariantStatus,
)
from fleetshift_operator.planning.context import Actions, VariantDraft
from fleetshift_operator.planning.names import calculate_revision, fleet_name
from fleetshift_operator.planning.status import (
    ROLLOUT_FIELDS,
    SPLIT_TOLERANCE_POINTS,
    append_history,
    calculate_conditions,
    calculate_phase,
    summary_fields,
)
from fleetshift_operator.planning.steps import calculate_split, share_percent
from fleetshift_operator.planning.strategy import strategy_for
from fleetshift_operator.planning.times import after, whole_second
from fleetshift_operator.planning.types import Event, FleetPlan, Observed, Plan
from fleetshift_operator.planning.variant import plan_variant


def plan_endpoint(
    spec: EndpointSpec, status: EndpointStatus | None, observed: Observed, now: datetime.datetime
) -> Plan:
    """Decide the next step of every variant's rollout (see the module docstring).

    ``status`` is a value: the plan holds a new one, and ``status`` is left as it was.
    """
    previous = _adopt_endpoint_wide_status(status or EndpointStatus(), spec)
    events: list[Event] = []
    pause = _handle_pause(previous, observed.controls.paused, now, events)
    actions = Actions(observed.controls, dict(previous.handledActions))
    retry = actions.take("retry")
    strategy = strategy_for(spec)

    known = {v.name: v for v in pause.variants}
    drafts = []
    for variant in spec.variants:
        draft = VariantDraft(
            spec=spec,
            variant=variant,
            observed=observed,
            now=now,
            status=known.get(variant.name, VariantStatus(name=variant.name)),
            paused=pause.paused,
            actions=actions,
        )
        plan_variant(draft, strategy, retry)
        draft.update(weight=0 if variant.shadow is not None else variant.weight)
        drafts.append(draft)
        events += draft.events

    many = len(spec.variants) > 1
    draining = _draining(pause.variants, spec, observed, drafts, events)
    fleets = [f for d in drafts for f in d.fleets] + [f for _, f in draining]
    planned = [d.status for d in drafts] + [v for v, _ in draining]
    fleets, statuses, gaps = _split_traffic(fleets, planned, observed, many)
    phase = calculate_phase(statuses)
    if many and phase != previous.phase:
        events.append(Event("PhaseChanged", f"{previous.phase or 'New'} -> {phase}"))
    decided = previous.model_copy(
        update={
            "phase": phase,
            "observedGeneration": observed.generation,
            "variants": statuses,
            "fleets": _fleet_status(fleets, observed, single=len(statuses) == 1),
            "history": append_history(previous.history, [r for d in drafts for r in d.records]),
            "handledActions": actions.handled,
            "paused": pause.paused,
            "pausedAt": pause.paused_at,
            **summary_fields(statuses),
        }
    )
    revisions = {v.name: calculate_revision(v) for v in spec.variants}
    conditions = calculate_conditions(decided, revisions, gaps, now, observed.generation)
    delays = [d.requeue_after for d in drafts if d.requeue_after is not None]
    return Plan(
        fleets=tuple(fleets),
        status=decided.model_copy(update={"conditions": conditions}),
        events=tuple(events),
        requeue_after=min(delays) if delays else None,
    )


def _adopt_endpoint_wide_status(status: EndpointStatus, spec: EndpointSpec) -> EndpointStatus:
    """A status written before variants had their own rollout holds it at the top
    level: give it to each variant, so an upgraded operator resumes where it was."""
    if status.variants or status.phase in (None, "Deleting"):
        return status
    phase = status.phase
    variants = [
        VariantStatus(
            name=variant.name,
            phase=phase if phase != "Deleting" else None,
            **{field: getattr(status, field) for field in ROLLOUT_FIELDS},
        )
        for variant in spec.variants
    ]
    return status.model_copy(update={"variants": variants})


@dataclasses.dataclass(frozen=True)
class _Pause:
    """The pause after this plan, and the variants with their waits moved by its end."""

    paused: bool
    paused_at: datetime.datetime | None
    variants: list[VariantStatus]


def _handle_pause(
    status: EndpointStatus, paused: bool, now: datetime.datetime, events: list[Event]
) -> _Pause:
    if paused and not status.paused:
        events.append(Event("Paused", "deployment paused: steps are held, alarms still roll back"))
        return _Pause(True, whole_second(now), status.variants)
    if paused or not status.paused:
        return _Pause(status.paused, status.pausedAt, status.variants)
    seconds = (now - (status.pausedAt or now)).total_seconds()
    events.append(Event("Resumed", f"deployment resumed after {int(seconds)}s"))
    return _Pause(False, None, [_moved_by(v, seconds) for v in status.variants])


def _moved_by(variant: VariantStatus, seconds: float) -> VariantStatus:
    """``variant`` with its deadline, bake and provisioning start ``seconds`` later: a
    pause does not count against them."""
    step = variant.step
    if step is not None:
        step = step.model_copy(
            update={
                "bakeUntil": after(step.bakeUntil, seconds) if step.bakeUntil else None,
                "startedAt": (
                    after(step.startedAt, seconds)
                    if step.stage == "Provisioning" and step.startedAt
                    else step.startedAt
                ),
            }
        )
    deadline = after(variant.deadline, seconds) if variant.deadline else None
    return variant.model_copy(update={"deadline": deadline, "step": step})


def _draining(
    previous: Sequence[VariantStatus],
    spec: EndpointSpec,
    observed: Observed,
    drafts: Sequence[VariantDraft],
    events: list[Event],
) -> list[tuple[VariantStatus, FleetPlan]]:
    """Removed variants that keep serving while a variant added with them is created."""
    names = {v.name for v in spec.variants}
    creating = any(d.status.activeRevision is None for d in drafts)
    kept = []
    for variant in previous:
        if variant.name in names:
            continue
        fleet = observed.fleet(variant.name, variant.activeRevision)
        if creating and fleet is not None and variant.activeRevision is not None:
            # Its deployment, if one was in flight, ends: only its active fleet drains.
            drained = variant.model_copy(
                update={
                    "phase": "InService" if fleet.ready else "OutOfService",
                    "candidateRevision": None,
                    "step": None,
                    "deploymentStartedAt": None,
                    "deadline": None,
                    "rollbackReason": None,
                    "waitingFor": None,
                    "alarms": [],
                }
            )
            kept.append(
                (
                    drained,
                    FleetPlan(
                        variant=variant.name,
                        revision=variant.activeRevision,
                        role="blue",
                        replicas=fleet.replicas,
                        traffic_percent=100,
                        spec_owned=False,
                    ),
                )
            )
        else:
            events.append(
                Event("VariantRemoved", f"variant {variant.name} removed; its fleet is deleted")
            )
    return kept


def _split_traffic(
    fleets: list[FleetPlan],
    variants: Sequence[VariantStatus],
    observed: Observed,
    many: bool,
) -> tuple[list[FleetPlan], list[VariantStatus], list[str]]:
    """Serving pods (Replicas) or backend weights (GatewayAPI) for every fleet, the
    variants with the shares they give, and the gaps of more than 5 points from the asks."""
    by_name = {v.name: v for v in variants}
    # Variants without a share (weight 0, shadows) do not hold back one being created.
    serving_any = any(v.activeRevision is not None and v.weight > 0 for v in variants)

    def eligible(variant: VariantStatus) -> bool:
        return variant.activeRevision is not None or not serving_any

    weights = [
        by_name[f.variant].weight * f.traffic_percent if eligible(by_name[f.variant]) else 0
        for f in fleets
    ]
    ready = [(seen.ready if (seen := observed.fleet(f.variant, f.revision)) else 0) for f in fleets]
    if observed.router == "GatewayAPI":
        served = list(weights)
        fleets = [
            dataclasses.replace(f, route_weight=w, serving_replicas=None)
            for f, w in zip(fleets, weights, strict=True)
        ]
    else:
        counts = calculate_split(weights, ready)
        positive = [i for i, w in enumerate(weights) if w > 0]
        if len(positive) == 1:  # one fleet serves: all its pods, as they turn Ready
            served = [ready[i] if i in positive else 0 for i in range(len(fleets))]
            serving: list[int | None] = [None if i in positive else 0 for i in range(len(fleets))]
        else:
            served = counts
            serving = list(counts)
        fleets = [
            dataclasses.replace(f, serving_replicas=s, route_weight=w)
            for f, s, w in zip(fleets, serving, weights, strict=True)
        ]
    total_served, total_weight = sum(served), sum(weights)
    asked_weight = sum(v.weight for v in variants if eligible(v))
    gaps = []
    shared = []
    for variant in variants:
        mine = [i for i, f in enumerate(fleets) if f.variant == variant.name]
        variant_served = sum(served[i] for i in mine)
        greens = [i for i in mine if fleets[i].role == "green"]
        blue = next((fleets[i] for i in mine if fleets[i].role == "blue"), None)
        seen = observed.fleet(variant.name, blue.revision) if blue is not None else None
        shared.append(
            variant.model_copy(
                update={
                    "trafficPercent": share_percent(variant_served, total_served),
                    "requestedTrafficPercent": (
                        share_percent(variant.weight, asked_weight) if eligible(variant) else 0
                    ),
                    "greenTrafficPercent": share_percent(
                        sum(served[i] for i in greens), variant_served
                    ),
                    "readyReplicas": seen.ready if seen is not None else 0,
                }
            )
        )
        if total_served == 0 or total_weight == 0:
            continue
        asked = 100 * sum(weights[i] for i in mine) / total_weight
        got = 100 * variant_served / total_served
        if many and abs(asked - got) > SPLIT_TOLERANCE_POINTS:
            gaps.append(
                f"variant {variant.name}: asked {round(asked)}%, serves {round(got)}% "
                f"({variant_served} of {total_served} serving pods)"
            )
        for i in greens:
            asked_green = fleets[i].traffic_percent
            got_green = 100 * served[i] / variant_served if variant_served else 0
            if asked_green and abs(asked_green - got_green) > SPLIT_TOLERANCE_POINTS:
                who = f"variant {variant.name}, green" if many else "green"
                gaps.append(
                    f"{who} {fleets[i].revision}: asked {asked_green}%, serves "
                    f"{round(got_green)}% ({served[i]} of {variant_served} serving pods); "
                    "more replicas give a finer split"
                )
    return fleets, shared, gaps


def _fleet_status(
    fleets: Sequence[FleetPlan], observed: Observed, *, single: bool
) -> dict[str, FleetStatus]:
    by_variant: dict[str, int] = {}
    for fleet in fleets:
        by_variant[fleet.variant] = by_variant.get(fleet.variant, 0) + _served(fleet, observed)
    out: dict[str, FleetStatus] = {}
    for fleet in fleets:
        seen = observed.fleet(fleet.variant, fleet.revision)
        key = fleet.role if single else f"{fleet.variant}/{fleet.role}"
        out[key] = FleetStatus(
            revision=fleet.revision,
            deployment=fleet_name(observed.endpoint, fleet.variant, fleet.revision),
            variant=fleet.variant,
            role=fleet.role,
            replicas=seen.replicas if seen else 0,
            readyReplicas=seen.ready if seen else 0,
            trafficPercent=share_percent(_served(fleet, observed), by_variant[fleet.variant]),
            requestedTrafficPercent=fleet.traffic_percent,
            servingReplicas=(None if observed.router == "GatewayAPI" else _served(fleet, observed)),
        )
    return out


def _served(fleet: FleetPlan, observed: Observed) -> int:
    """What the data plane gives ``fleet``: its serving pods, or its route weight."""
    if observed.router == "GatewayAPI":
        return fleet.route_weight
    if fleet.serving_replicas is not None:
        return fleet.serving_replicas
    seen = observed.fleet(fleet.variant, fleet.revision)
    return (seen.ready if seen else 0) if fleet.route_weight > 0 else 0
