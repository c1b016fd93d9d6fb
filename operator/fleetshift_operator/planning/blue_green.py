"""Blue/green: a full green fleet beside blue, traffic shifted in steps, blue retired.

Worked example (canary 25%, 4 replicas, wait 60 s, termination wait 120 s)::

    t=0    the variant's model changes      Updating, Provisioning, green r2 x4 created
    t=5    green 4/4 Ready                  step 1/2: green 25% (1 of 4 serving), bake to t=65
    t=65   bake over, alarms Healthy        step 2/2: green 100%, bake to t=125
    t=125  bake over, alarms Healthy        TerminationWait until t=245, blue kept
    t=245  wait over                        InService on r2, blue r1 deleted
"""

from __future__ import annotations

from fleetshift_operator.api import BlueGreen, StepStatus
from fleetshift_operator.planning.context import VariantDraft
from fleetshift_operator.planning.steps import calculate_required_ready, calculate_steps
from fleetshift_operator.planning.times import format_time, parse_time, stamp_after
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
        status, now, policy = draft.status, draft.now, self.policy
        candidate, active = status.candidateRevision, status.activeRevision
        assert candidate is not None and active is not None
        step = status.step or StepStatus()
        status.step = step
        size = draft.fleet_size(active)
        steps = calculate_steps(policy.trafficRouting, size)
        step.total = len(steps)
        promote = draft.actions.take("promote")
        green = draft.fleet(candidate)
        green_ready = green.ready if green is not None else 0

        def ready_for(percent: int) -> bool:
            return green is not None and green_ready >= calculate_required_ready(size, percent)

        def bake_over() -> bool:
            until = parse_time(step.bakeUntil)
            return until is None or now >= until

        def enter_step(index: int) -> None:
            step.stage = "Baking"
            step.index = index
            step.greenPercent = steps[index - 1]
            step.startedAt = format_time(now)
            step.bakeUntil = stamp_after(now, policy.trafficRouting.waitIntervalSeconds)
            draft.emit(
                "TrafficShifted",
                f"step {index}/{len(steps)}: green {candidate} carries {step.greenPercent}%",
            )

        def enter_termination_wait() -> None:
            step.stage = "TerminationWait"
            step.startedAt = format_time(now)
            step.bakeUntil = stamp_after(now, policy.terminationWaitSeconds)
            draft.emit(
                "TerminationWait",
                f"green {candidate} has all traffic; blue {active} kept until {step.bakeUntil}",
            )

        fully_ready = green is not None and green_ready >= size
        if promote:
            if fully_ready:
                draft.emit("Promoted", f"remaining waits skipped for {candidate}")
                step.index, step.greenPercent = len(steps), 100
                retire_blue(draft)
                return
            draft.emit("PromoteDeferred", "promote waits for every green replica to be Ready")

        if not draft.paused:
            if step.stage == "Provisioning":
                if fully_ready:
                    enter_step(1)
            elif step.stage == "Baking" and bake_over() and draft.alarms_allow_promotion():
                if step.index < len(steps):
                    if ready_for(steps[step.index]):
                        enter_step(step.index + 1)
                else:
                    enter_termination_wait()
            if step.stage == "TerminationWait" and bake_over() and draft.alarms_allow_promotion():
                retire_blue(draft)
                return

        # Never give green a share it lacks the Ready replicas for.
        percent = step.greenPercent if step.stage != "Provisioning" else 0
        if percent and not ready_for(percent):
            percent = percent if ready_for(steps[0]) else 0
        draft.plan_fleet(active, "blue", size, 100 - percent, draft.autoscaling())
        draft.plan_fleet(
            candidate,
            "green",
            size,
            percent,
            draft.autoscaling(calculate_required_ready(size, percent)),
        )
        if step.stage in ("Baking", "TerminationWait") and not draft.paused:
            draft.wake_at(parse_time(step.bakeUntil))
