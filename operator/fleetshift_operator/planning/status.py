"""The endpoint-wide status: phase, conditions, history and the summary fields, all
derived from the variants' own status. Pure."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Literal

from fleetshift_operator.api import (
    GATE_TYPES,
    HISTORY_LIMIT,
    CapacityStatus,
    Condition,
    DeploymentRecord,
    EndpointStatus,
    Phase,
    Rollout,
    VariantStatus,
    WebhookStatus,
)
from fleetshift_operator.planning.times import whole_second

IN_FLIGHT: tuple[Phase, ...] = ("Creating", "Updating", "RollingBack", "UpdateRollbackFailed")
"""Phases in which a deployment (or its rollback) is still moving: the operator polls."""

SERVING: tuple[Phase, ...] = ("InService", "Updating", "RollingBack", "UpdateRollbackFailed")
"""Phases in which the endpoint serves traffic."""

SPLIT_TOLERANCE_POINTS = 5
"""How far the served split may be from the asked one before a condition says so."""

# The endpoint's phase is its most pressing variant's, in this order.
_URGENCY: tuple[Phase, ...] = (
    "UpdateRollbackFailed",
    "RollingBack",
    "Updating",
    "Creating",
    "Failed",
    "OutOfService",
    "InService",
)


def calculate_phase(variants: Sequence[VariantStatus]) -> Phase | None:
    """The endpoint's phase from its variants'.

    A variant being created beside variants that already serve makes the endpoint
    ``Updating`` (it serves throughout); ``Creating`` and ``Failed`` are the endpoint's
    only while no variant has served yet.

    >>> V = VariantStatus
    >>> calculate_phase([V(name="a", phase="InService", activeRevision="r"),
    ...                  V(name="b", phase="Creating")])
    'Updating'
    >>> calculate_phase([V(name="a", phase="InService", activeRevision="r"),
    ...                  V(name="b", phase="Failed")])
    'InService'
    >>> calculate_phase([V(name="a", phase="OutOfService", activeRevision="r")])
    'OutOfService'
    >>> calculate_phase([V(name="a", phase="Creating"), V(name="b", phase="Failed")])
    'Creating'
    """
    phases = {v.phase for v in variants if v.phase is not None}
    served = any(v.activeRevision is not None for v in variants)
    if served:
        phases = {"Updating" if p == "Creating" else p for p in phases}
        if phases != {"Failed"}:
            phases.discard("Failed")
    for phase in _URGENCY:
        if phase in phases:
            return phase
    return None


def focus_variant(variants: Sequence[VariantStatus]) -> VariantStatus | None:
    """The variant the top-level rollout fields describe: the first with a deployment
    in flight, else the first.

    >>> V = VariantStatus
    >>> focus_variant([V(name="a"), V(name="b", candidateRevision="r")]).name
    'b'
    """
    for variant in variants:
        if variant.candidateRevision is not None:
            return variant
    return variants[0] if variants else None


ROLLOUT_FIELDS = tuple(Rollout.model_fields)
"""The rollout fields a variant has and the endpoint's top level repeats."""


def summary_fields(variants: Sequence[VariantStatus]) -> dict[str, Any]:
    """The top-level fields that repeat the focus variant's rollout.

    >>> V = VariantStatus
    >>> fields = summary_fields([V(name="a", activeRevision="r1"), V(name="b")])
    >>> fields["variant"], fields["activeRevision"], fields["alarms"]
    ('a', 'r1', [])
    """
    focus = focus_variant(variants)
    fields: dict[str, Any] = {"variant": focus.name if focus else None}
    for field in ROLLOUT_FIELDS:
        value = getattr(focus, field) if focus is not None else None
        if value is None and field in ("greenTrafficPercent", "inconclusiveStreak"):
            value = 0
        if value is None and field == "alarms":
            value = []
        fields[field] = value
    return fields


def append_history(
    history: Sequence[DeploymentRecord], records: Sequence[DeploymentRecord]
) -> list[DeploymentRecord]:
    """The last ten finished deployments of every variant, newest last."""
    return [*history, *records][-HISTORY_LIMIT:]


def set_condition(  # noqa: PLR0917 - a condition is these seven things
    conditions: list[Condition],
    kind: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int,
) -> list[Condition]:
    """``conditions`` with ``kind`` set; its transition time moves only when its status does."""
    previous = next((c for c in conditions if c.type == kind), None)
    changed = previous is None or previous.status != status
    stamp = whole_second(now) if changed or previous is None else previous.lastTransitionTime
    updated = Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=stamp,
        observedGeneration=generation,
    )
    return [c for c in conditions if c.type != kind] + [updated]


def held_by(webhooks: list[WebhookStatus], revision: str | None) -> str | None:
    """What holds a deployment of ``revision``, in words, if a gate does.

    >>> import datetime
    >>> at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    >>> r = WebhookStatus(name="approve", type="ConfirmPromotion", revision="r2",
    ...                   requestedAt=at, verdict="Inconclusive", reason="HTTP 503: not 2xx")
    >>> held_by([r], "r2")
    'waiting for webhook approve (ConfirmPromotion): HTTP 503: not 2xx'
    >>> held_by([r], "r3") is None
    True
    """
    for record in webhooks:
        if record.type in GATE_TYPES and record.state == "Pending" and record.revision == revision:
            why = record.reason or "called"
            return f"waiting for webhook {record.name} ({record.type}): {why}"
    return None


def held_for_capacity(record: CapacityStatus | None, revision: str | None) -> str | None:
    """What the capacity-aware cutover holds a deployment of ``revision`` for, if it does.

    >>> r = CapacityStatus(revision="r2", decision="Holding", reason="2 of 4 Ready")
    >>> held_for_capacity(r, "r2")
    'waiting for capacity: 2 of 4 Ready'
    >>> held_for_capacity(r, "r3") is None
    True
    """
    if record is None or record.revision != revision:
        return None
    if record.decision in ("PreScaling", "Holding"):
        return f"waiting for capacity: {record.reason}"
    return None


def _named(variant: VariantStatus, many: bool, text: str) -> str:
    return f"variant {variant.name}: {text}" if many else text


def _degradation(
    variant: VariantStatus, spec_revision: str | None, many: bool
) -> tuple[int, str, str] | None:
    """(rank, reason, message) when ``variant`` degrades the endpoint; lower ranks first."""
    last = variant.lastDeployment
    if variant.phase == "UpdateRollbackFailed":
        why = variant.rollbackReason or (last.reason if last else "rollback")
        return (
            0,
            "UpdateRollbackFailed",
            _named(
                variant,
                many,
                f"rolling back {variant.candidateRevision} ({why}), but its blue fleet cannot "
                "take the traffic yet; green keeps serving",
            ),
        )
    if variant.phase == "Failed":
        why = last.reason if last else "Failed"
        return 1, "Failed", _named(variant, many, why)
    if variant.phase == "OutOfService":
        return (
            2,
            "OutOfService",
            _named(
                variant,
                many,
                f"no Ready replica in the active fleet (revision {variant.activeRevision})",
            ),
        )
    if variant.waitingFor:
        revision = variant.candidateRevision or variant.activeRevision
        return (
            3,
            "PodsNotReady",
            _named(variant, many, f"pods of revision {revision} wait: {variant.waitingFor}"),
        )
    if (
        variant.rolledBackRevision is not None
        and variant.rolledBackRevision == spec_revision
        and last is not None
    ):
        return (
            4,
            last.outcome,
            _named(
                variant,
                many,
                f"revision {spec_revision} was {last.outcome.lower()}: {last.reason}; change "
                "the spec or request a retry",
            ),
        )
    return None


def calculate_conditions(
    status: EndpointStatus,
    spec_revisions: dict[str, str],
    split_gaps: Sequence[str],
    now: datetime.datetime,
    generation: int,
) -> list[Condition]:
    """Ready, Progressing, Degraded and TrafficSplit, from the variants' status
    (``status.conditions`` are the previous ones: a time moves only on a change)."""
    phase = status.phase
    many = len(spec_revisions) > 1
    conditions = status.conditions
    out = [v for v in status.variants if v.phase == "OutOfService" and v.weight > 0]
    if phase in SERVING and not out:
        every = "every variant serving" if many else f"revision {status.activeRevision} serving"
        conditions = set_condition(conditions, "Ready", "True", phase, every, now, generation)
    elif out:
        why = "; ".join(
            _named(v, many, f"no Ready replica of revision {v.activeRevision}") for v in out
        )
        conditions = set_condition(
            conditions, "Ready", "False", "OutOfService", why, now, generation
        )
    else:
        conditions = set_condition(
            conditions,
            "Ready",
            "False",
            phase or "Unknown",
            "no fleet is serving yet",
            now,
            generation,
        )

    progressing = phase in ("Creating", "Updating", "RollingBack")
    step = status.step
    if step and progressing:
        where = f"step {step.index}/{step.total}, green {status.greenTrafficPercent}%"
        focus = next((v for v in status.variants if v.name == status.variant), None)
        held = held_by(focus.webhooks, focus.candidateRevision) if focus else None
        if focus is not None and held is None:
            held = held_for_capacity(focus.capacity, focus.candidateRevision)
        if held:
            where = f"{where}; {held}"
        message = f"variant {status.variant}: {where}" if many else where
    else:
        message = "no deployment in progress"
    conditions = set_condition(
        conditions,
        "Progressing",
        "True" if progressing else "False",
        (step.stage if step and progressing else phase) or "Unknown",
        message,
        now,
        generation,
    )

    found = sorted(
        (d, i)
        for i, v in enumerate(status.variants)
        if (d := _degradation(v, spec_revisions.get(v.name), many)) is not None
    )
    if found:
        reason = found[0][0][1]
        message = "; ".join(d[2] for d, _ in found)
        conditions = set_condition(conditions, "Degraded", "True", reason, message, now, generation)
    else:
        conditions = set_condition(
            conditions,
            "Degraded",
            "False",
            "Healthy",
            "the desired revision is serving or on its way",
            now,
            generation,
        )

    if split_gaps:
        conditions = set_condition(
            conditions,
            "TrafficSplit",
            "False",
            "WholePods",
            "; ".join(split_gaps),
            now,
            generation,
        )
    else:
        conditions = set_condition(
            conditions,
            "TrafficSplit",
            "True",
            "AsRequested",
            f"every fleet serves within {SPLIT_TOLERANCE_POINTS} points of its asked share",
            now,
            generation,
        )
    return conditions
