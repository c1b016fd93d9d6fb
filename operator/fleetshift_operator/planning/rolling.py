"""Rolling: replace capacity in batches, in place, instead of a full green fleet.

Worked example (10 replicas, batch 30%, wait 60 s): green grows 3 -> 6 -> 9 -> 10 while
blue shrinks 7 -> 4 -> 1 -> 0, each batch baked 60 s; then blue is deleted. A rollback
restores blue in batches of ``rollbackMaximumBatchSize`` (default: all at once) and
shrinks green as blue becomes Ready.
"""

from __future__ import annotations

from fleetshift_operator.api import Rolling, StepStatus
from fleetshift_operator.planning.context import VariantDraft
from fleetshift_operator.planning.gates import gate_allows
from fleetshift_operator.planning.steps import (
    calculate_batch,
    calculate_resumed_index,
    calculate_rolling_targets,
    share_percent,
)
from fleetshift_operator.planning.times import after, whole_second
from fleetshift_operator.planning.transitions import retire_blue


def _pair(draft: VariantDraft, *, green: int, blue: int, green_serving: int, size: int) -> None:
    """Blue and green of a rolling deployment; ``green_serving`` of ``size`` on green."""
    status = draft.status
    assert status.activeRevision is not None and status.candidateRevision is not None
    percent = share_percent(green_serving, size)
    draft.plan_fleet(status.activeRevision, "blue", blue, 100 - percent)
    draft.plan_fleet(status.candidateRevision, "green", green, percent)


def _resume(draft: VariantDraft, targets: list[int], size: int) -> StepStatus:
    """The step, its index counted in ``targets``. A step written for other steps (the
    spec went from blue/green to rolling, or changed its batch size, mid-deployment)
    resumes from the share green has: no batch or gate is skipped, and the index stays
    within ``targets``."""
    step = draft.update_step(fleetSize=size, total=len(targets))
    shares = [share_percent(target, size) for target in targets]
    if step.stage == "Provisioning" and step.index > len(targets):
        return draft.update_step(index=len(targets))
    resumed = (
        calculate_resumed_index(shares, step.index, step.greenPercent)
        if step.stage == "Baking"
        else None
    )
    if resumed == 0:
        return draft.update_step(stage="Provisioning", index=0, greenPercent=0)
    if resumed is not None:
        return draft.update_step(index=resumed)
    return step


class RollingStrategy:
    """Batches of green capacity, each baked, blue shrinking as green grows."""

    def __init__(self, policy: Rolling) -> None:
        self.policy = policy
        self.execution_timeout_seconds = policy.maximumExecutionTimeoutSeconds
        self.provisioning_timeout_seconds = policy.provisioningTimeoutSeconds

    def advance(self, draft: VariantDraft) -> None:
        now, rolling = draft.now, self.policy
        candidate = draft.status.candidateRevision
        assert candidate is not None
        current = draft.status.step
        size = (current.fleetSize if current else None) or draft.variant.replicas
        batch = calculate_batch(rolling.maximumBatchSize.type, rolling.maximumBatchSize.value, size)
        targets = calculate_rolling_targets(size, batch)
        step = _resume(draft, targets, size)
        draft.actions.take("promote")  # rolling batches are not skipped: capacity must move
        index = max(1, step.index)
        green = draft.fleet(candidate)
        green_ready = green.ready if green is not None else 0

        if not draft.paused:
            if (
                step.stage == "Provisioning"
                and green_ready >= targets[index - 1]
                and (step.index > 0 or gate_allows(draft, "PreRollout"))
                # One batch is also the last: it is confirmed too (after PreRollout).
                and (index < len(targets) or gate_allows(draft, "ConfirmPromotion"))
            ):
                step = draft.update_step(
                    stage="Baking",
                    index=index,
                    greenPercent=share_percent(targets[index - 1], size),
                    startedAt=whole_second(now),
                    bakeUntil=after(now, rolling.waitIntervalSeconds),
                )
                draft.emit(
                    "BatchShifted",
                    f"batch {index}/{len(targets)}: {targets[index - 1]} of {size} replicas on "
                    f"{candidate}",
                )
            elif step.stage == "Baking":
                until = step.bakeUntil
                if (until is None or now >= until) and draft.alarms_allow_promotion():
                    if index >= len(targets):
                        retire_blue(draft)
                        return
                    if index + 1 == len(targets) and not gate_allows(draft, "ConfirmPromotion"):
                        _pair(
                            draft,
                            green=targets[index - 1],
                            blue=size - targets[index - 1],
                            green_serving=targets[index - 1],
                            size=size,
                        )
                        return
                    index += 1
                    step = draft.update_step(
                        stage="Provisioning", index=index, startedAt=whole_second(now)
                    )

        done = targets[index - 2] if step.stage == "Provisioning" and index >= 2 else 0
        if step.stage == "Baking":
            done = targets[index - 1]
        _pair(draft, green=targets[index - 1], blue=size - done, green_serving=done, size=size)
        if step.stage == "Baking" and not draft.paused:
            draft.wake_at(step.bakeUntil)

    def roll_back(self, draft: VariantDraft) -> bool:
        step = draft.update_step()
        size = step.fleetSize or draft.variant.replicas
        rollback_size = self.policy.rollbackMaximumBatchSize
        batch = (
            calculate_batch(rollback_size.type, rollback_size.value, size)
            if rollback_size is not None
            else size
        )
        blue = draft.fleet(draft.status.activeRevision)
        blue_ready = blue.ready if blue is not None else 0
        if step.stage != "RollingBack":
            step = draft.update_step(
                stage="RollingBack",
                rollbackReplicas=min(size, (blue.replicas if blue else 0) + batch),
            )
        target = step.rollbackReplicas or size
        if blue_ready >= target and target < size:
            target = min(size, target + batch)
            draft.update_step(rollbackReplicas=target)
        if blue_ready >= size:
            draft.update_step(greenPercent=0)
            return True
        green_serving = max(0, size - blue_ready)
        _pair(draft, green=green_serving, blue=target, green_serving=green_serving, size=size)
        draft.update_step(greenPercent=share_percent(green_serving, size))
        return False
