"""Webhook gates and notifications in the planner: when a deployment needs a webhook,
and what its answers mean. Pure: the calls happen in ``reconcile.py``, from status.

The record of each webhook lives in the variant's status (``webhooks``), so a restarted
operator resumes exactly: a gate that answered 2xx is ``Passed`` and is not called
again for that revision; a notification is ``Pending`` until an answer is recorded, so
one whose answer was lost with the operator is sent again (at least once; receivers
dedupe on ``X-Fleetshift-Delivery``).

Worked example (canary 25% then 100%, a PreRollout ``smoke`` and a ConfirmPromotion
``approve``; reconciles every 5 s)::

    t=0   green provisioning             no webhook yet
    t=5   green Ready                    smoke Pending (requested), step held
    t=5.2 smoke called: 200              smoke Passed; step 1/2: green 25%, bake
    t=65  bake over, alarms Healthy      approve Pending (requested), step held
    t=65  approve called: 503            approve Pending, Inconclusive "HTTP 503", held
    t=70  approve called: 200            approve Passed; step 2/2: green 100%
    ...   deployment succeeds            each PostRollout Pending, then Delivered

A gate never rolls back by itself: a webhook that never says yes holds the deployment
until ``maximumExecutionTimeoutSeconds`` rolls it back (and OnRollback is told).
A manual promote (``kubectl fleetshift promote``) skips the waits and the gates, as it
skips the alarms: a person decided.
"""

from __future__ import annotations

from fleetshift_operator.api import (
    GATE_TYPES,
    MAX_WEBHOOKS,
    Webhook,
    WebhookStatus,
    WebhookType,
)
from fleetshift_operator.planning.context import VariantDraft
from fleetshift_operator.planning.times import whole_second


def _hooks(draft: VariantDraft, kind: WebhookType | None = None) -> list[Webhook]:
    return [h for h in draft.spec.deploymentConfig.webhooks if kind is None or h.type == kind]


def record_webhook_results(draft: VariantDraft) -> None:
    """Fold this reconcile's answers into the variant's webhook records, and drop the
    records of webhooks that left the spec."""
    known = {(h.name, h.type) for h in _hooks(draft)}
    results = {(r.name, r.revision): r for r in draft.observed.webhooks_of(draft.name)}
    stamp = whole_second(draft.now)
    records = []
    for record in draft.status.webhooks:
        if (record.name, record.type) not in known:
            continue
        result = results.get((record.name, record.revision))
        if result is None or record.state != "Pending":
            records.append(record)
            continue
        healthy = result.verdict == "Healthy"
        gate = record.type in GATE_TYPES
        state = (
            ("Passed" if gate else "Delivered") if healthy else ("Pending" if gate else "Failed")
        )
        updated = record.model_copy(
            update={
                "state": state,
                "verdict": result.verdict,
                "statusCode": result.status_code,
                "reason": result.reason,
                "calls": record.calls + 1,
                "calledAt": stamp,
            }
        )
        records.append(updated)
        what = f"webhook {record.name} ({record.type}) for {record.revision}"
        if state == "Passed":
            draft.emit("WebhookPassed", f"{what}: {result.reason}")
        elif state == "Delivered":
            draft.emit("WebhookDelivered", f"{what}: {result.reason}")
        elif state == "Failed":
            draft.emit("WebhookFailed", f"{what}: {result.reason}", warning=True)
        elif (record.verdict, record.statusCode) != (result.verdict, result.status_code):
            draft.emit("WebhookHeld", f"{what}: {result.reason}", warning=True)
    draft.update(webhooks=records)


def gate_allows(draft: VariantDraft, kind: WebhookType) -> bool:
    """True when every webhook of ``kind`` has passed for the revision being deployed.

    The first time a gate is needed its record is created ``Pending`` (the reconcile
    that follows calls it, at once); until it answers 2xx the step holds.
    """
    hooks = _hooks(draft, kind)
    if not hooks:
        return True
    status = draft.status
    revision = status.candidateRevision
    assert revision is not None
    records = list(status.webhooks)
    mine = {r.name: r for r in records if r.revision == revision and r.type == kind}
    allowed = True
    for hook in hooks:
        record = mine.get(hook.name)
        if record is not None and record.state == "Passed":
            continue
        allowed = False
        if record is None:
            records.append(
                WebhookStatus(
                    name=hook.name,
                    type=kind,
                    revision=revision,
                    fromRevision=status.activeRevision,
                    requestedAt=whole_second(draft.now),
                )
            )
            draft.emit("WebhookRequested", f"{kind} webhook {hook.name} called for {revision}")
            draft.wake_in(0)
    draft.update(webhooks=records[-2 * MAX_WEBHOOKS :])
    return allowed


def notify(draft: VariantDraft, kind: WebhookType, outcome: str) -> None:
    """Queue each webhook of ``kind`` (PostRollout or OnRollback) for the revision being
    deployed: the next reconcile sends it once."""
    hooks = _hooks(draft, kind)
    status = draft.status
    revision = status.candidateRevision
    if not hooks or revision is None:
        return
    names = {h.name for h in hooks}
    records = [r for r in status.webhooks if not (r.name in names and r.revision == revision)]
    for hook in hooks:
        records.append(
            WebhookStatus(
                name=hook.name,
                type=kind,
                revision=revision,
                fromRevision=status.activeRevision,
                outcome=outcome,
                requestedAt=whole_second(draft.now),
            )
        )
    draft.update(webhooks=records[-2 * MAX_WEBHOOKS :])
    draft.wake_in(0)


def close_gates(draft: VariantDraft) -> None:
    """The deployment ended (succeeded, promoted by hand, rolled back): gates still
    waiting are no longer asked, and their records go; passed ones stay, for the record."""
    kept = [r for r in draft.status.webhooks if r.type not in GATE_TYPES or r.state != "Pending"]
    draft.update(webhooks=kept)


def forget_gates(draft: VariantDraft) -> None:
    """A new deployment starts: earlier records go, except notifications still to send."""
    kept = [r for r in draft.status.webhooks if r.type not in GATE_TYPES and r.state == "Pending"]
    draft.update(webhooks=kept)
