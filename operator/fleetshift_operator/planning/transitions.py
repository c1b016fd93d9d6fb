"""Transitions every strategy shares: serve blue alone, retire blue, end a deployment."""

from __future__ import annotations

from fleetshift_operator.planning.context import VariantDraft
from fleetshift_operator.planning.gates import close_gates, notify

NO_DEPLOYMENT = {
    "rollbackReason": None,
    "candidateRevision": None,
    "step": None,
    "deploymentStartedAt": None,
    "deadline": None,
    "waitingFor": None,
}
"""The fields of a deployment in hand, as they read when there is none."""


def clear_deployment(draft: VariantDraft) -> None:
    """Forget the deployment in hand (its record is already written)."""
    draft.update(**NO_DEPLOYMENT)


def serve_blue(draft: VariantDraft, *, spec_size: bool = False) -> None:
    """Plan the variant's active fleet alone with all its traffic, at its current size
    (the HPA may have resized it) or, with ``spec_size``, at the spec's replicas."""
    active = draft.status.activeRevision
    assert active is not None
    size = draft.variant.replicas if spec_size else draft.fleet_size(active)
    draft.plan_fleet(active, "blue", size, 100, draft.autoscaling())


def retire_blue(draft: VariantDraft) -> None:
    """Green becomes the active fleet at its current size; blue is dropped (deleted)."""
    status = draft.status
    candidate, old = status.candidateRevision, status.activeRevision
    assert candidate is not None
    draft.fleets.clear()
    green = draft.fleet(candidate)
    size = green.replicas if green is not None and green.replicas else draft.variant.replicas
    draft.plan_fleet(candidate, "blue", size, 100, draft.autoscaling())
    draft.record(candidate, "Succeeded", f"all traffic on {candidate}; {old} retired")
    close_gates(draft)
    notify(draft, "PostRollout", f"Succeeded: all traffic on {candidate}; {old} retired")
    draft.update(activeRevision=candidate, rolledBackRevision=None, **NO_DEPLOYMENT)
    draft.set_phase("InService")
    draft.emit("DeploymentSucceeded", f"revision {candidate} is serving; {old} retired")
