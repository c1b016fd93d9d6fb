"""Blue/green: a full green fleet beside blue, traffic shifted in steps, blue retired.

Worked example (canary 25%, 4 replicas, wait 60 s, termination wait 120 s)::

    t=0    the variant's model changes      Updating, Provisioning, green r2 x4 created
    t=5    green 4/4 Ready                  step 1/2: green 25% (1 of 4 serving), bake to t=65
    t=65   bake over, alarms Healthy        step 2/2: green 100%, bake to t=125
    t=125  bake over, alarms Healthy        TerminationWait until t=245, blue kept
    t=245  wait over                        InService on r2, blue r1 deleted
"""

from __future__ import annotations

from fleetshift_operator.api import BlueGreen
from fleetshift_operator.planning.capacity import (
    capacity_allows,
    capacity_floor,
    record_capacity_sample,
)
from fleetshift_operator.planning.context import VariantDraft
from fleetshift_operator.planning.gates import gate_allows
from fleetshift_operator.planning.steps import (
    calculate_required_ready,
    calculate_resumed_index,
    calculate_steps,
)
from fleetshift_operator.planning.times import after, format_time, whole_second
from fleetshift_operator.planning.transitions import retire_blue


class BlueGreenStrategy:
    """Provisioning -> traffic steps, each baked -> termination wait -> retire blue."""

    def __init__(self, policy: BlueGreen) -> None:
        self.policy = policy
        self.execution_timeout_seconds = policy.maximumExecutionTimeoutSeconds
        self.provisioning_timeout_seconds = policy.provisioningTimeoutSeconds

    def roll_back(self, draft: VariantDraft) -> bool:
        """All traffic back to blue at once; green leaves the plan (and is deleted)."""
        return True

    def advance(self, draft: VariantDraft) -> None:
        candidate, active = draft.status.candidateRevision, draft.status.activeRevision
        assert candidate is not None and active is not None
        size = draft.fleet_size(active)
        steps = calculate_steps(self.policy.trafficRouting, size)
        written = draft.update_step(total=len(steps))
        if written.stage in ("Baking", "TerminationWait"):
            # The steps may have changed under the deployment: resume from the share green
            # has, so that no step, gate or capacity check before 100% is skipped.
            resumed = calculate_resumed_index(steps, written.index, written.greenPercent)
            if resumed is not None:
                draft.update_step(index=resumed)
        green = draft.fleet(candidate)
        green_ready = green.ready if green is not None else 0
        record_capacity_sample(draft)

        if draft.actions.take("promote"):
            if green is not None and green_ready >= size:
                draft.emit("Promoted", f"remaining waits skipped for {candidate}")
                draft.update_step(index=len(steps), greenPercent=100)
                retire_blue(draft)
                return
            draft.emit("PromoteDeferred", "promote waits for every green replica to be Ready")
        if not draft.paused and self._move(draft, steps, size, green_ready):
            retire_blue(draft)
            return

        # Never give green a share it lacks the Ready replicas for.
        step = draft.status.step
        assert step is not None
        percent = step.greenPercent if step.stage != "Provisioning" else 0
        if percent and green_ready < calculate_required_ready(size, percent):
            first = calculate_required_ready(size, steps[0])
            percent = percent if green is not None and green_ready >= first else 0
        draft.plan_fleet(active, "blue", size, 100 - percent, draft.autoscaling())
        # The capacity-aware cutover may ask for more green replicas than blue has.
        floor = capacity_floor(draft)
        draft.plan_fleet(
            candidate,
            "green",
            max(size, floor),
            percent,
            draft.autoscaling(max(calculate_required_ready(size, percent), floor)),
        )
        # A bake that is over but held (alarms, a webhook gate) waits for the next poll.
        if (
            step.stage in ("Baking", "TerminationWait")
            and not draft.paused
            and step.bakeUntil is not None
            and step.bakeUntil > draft.now
        ):
            draft.wake_at(step.bakeUntil)

    def _move(self, draft: VariantDraft, steps: list[int], size: int, green_ready: int) -> bool:
        """Advance the step as far as it may go now; True once blue may retire."""
        now, step = draft.now, draft.status.step
        assert step is not None
        bake_over = step.bakeUntil is None or now >= step.bakeUntil
        if step.stage == "Provisioning":
            if green_ready >= size and self._gates_allow(draft, steps, 1):
                self._enter_step(draft, steps, 1)
        elif step.stage == "Baking" and bake_over and draft.alarms_allow_promotion():
            if step.index < len(steps):
                # Before the step to 100% the capacity-aware cutover sizes green (first:
                # it raises the replicas the next check counts on).
                capacity = steps[step.index] < 100 or capacity_allows(draft, size)
                if (
                    capacity
                    and green_ready >= calculate_required_ready(size, steps[step.index])
                    and self._gates_allow(draft, steps, step.index + 1)
                ):
                    self._enter_step(draft, steps, step.index + 1)
            else:
                wait = self.policy.terminationWaitSeconds
                step = draft.update_step(
                    stage="TerminationWait", startedAt=whole_second(now), bakeUntil=after(now, wait)
                )
                assert step.bakeUntil is not None
                draft.emit(
                    "TerminationWait",
                    f"green {draft.status.candidateRevision} has all traffic; blue "
                    f"{draft.status.activeRevision} kept until {format_time(step.bakeUntil)}",
                )
                bake_over = wait == 0
        return step.stage == "TerminationWait" and bake_over and draft.alarms_allow_promotion()

    @staticmethod
    def _gates_allow(draft: VariantDraft, steps: list[int], index: int) -> bool:
        """Webhook gates before step ``index``: PreRollout before the first traffic,
        ConfirmPromotion before the step that gives green all of it (both, in that order,
        for AllAtOnce)."""
        if index == 1 and not gate_allows(draft, "PreRollout"):
            return False
        return steps[index - 1] < 100 or gate_allows(draft, "ConfirmPromotion")

    def _enter_step(self, draft: VariantDraft, steps: list[int], index: int) -> None:
        now = draft.now
        step = draft.update_step(
            stage="Baking",
            index=index,
            greenPercent=steps[index - 1],
            startedAt=whole_second(now),
            bakeUntil=after(now, self.policy.trafficRouting.waitIntervalSeconds),
        )
        draft.emit(
            "TrafficShifted",
            f"step {index}/{len(steps)}: green {draft.status.candidateRevision} carries "
            f"{step.greenPercent}%",
        )
