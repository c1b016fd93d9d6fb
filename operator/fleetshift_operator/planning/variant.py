"""One variant's rollout: create, serve, deploy a new revision, roll back. Pure.

The rules, in order of precedence
---------------------------------
1. **First deployment.** No active revision: the fleet is created at ``replicas``
   (phase ``Creating``); once all its replicas are Ready it is ``InService``. Not
   Ready within ``provisioningTimeoutSeconds``, or crash-looping: ``Failed``.
2. **A new revision** of this variant (its model, image, resources, env, placement)
   starts a deployment (``Updating``) with the strategy the spec names (blue/green or
   rolling). Other variants are not touched.
3. **Provisioning.** Traffic moves only once the new capacity is Ready. Pods that
   wait (Unschedulable, a quota, an image pull) show in ``waitingFor`` at once;
   past ``provisioningTimeoutSeconds`` the deployment rolls back.
4. **Steps and bakes** (the strategy): a step is promoted only when its bake is over,
   green has the Ready replicas its next share needs, and the variant's alarms say
   Healthy.
5. **Rollback** (alarm breach, deadline, provisioning timeout, crash-looping green, an
   abort): the traffic goes back to blue and green is deleted. The rolled-back
   revision is not tried again until the variant changes or a retry is requested.
6. **Superseded.** A different revision mid-deployment: blue takes all the traffic,
   the old green is deleted, and the new revision starts over.
7. **At rest** the variant is ``InService``, or ``OutOfService`` while its active fleet
   has no Ready replica.
"""

from __future__ import annotations

from fleetshift_operator.api import AlarmStatus, StepStatus
from fleetshift_operator.planning.context import VariantDraft
from fleetshift_operator.planning.gates import (
    close_gates,
    forget_gates,
    notify,
    record_webhook_results,
)
from fleetshift_operator.planning.status import held_by
from fleetshift_operator.planning.steps import calculate_required_ready
from fleetshift_operator.planning.strategy import DeploymentStrategy
from fleetshift_operator.planning.times import after, whole_second
from fleetshift_operator.planning.transitions import clear_deployment, serve_blue

ROLLBACK_RETRY_SECONDS = 5


def plan_variant(draft: VariantDraft, strategy: DeploymentStrategy, retry: bool) -> None:
    """Decide the next step of one variant's rollout (see the module docstring)."""
    revision = draft.revision
    record_webhook_results(draft)
    if retry and draft.status.rolledBackRevision == revision:
        draft.update(rolledBackRevision=None)
        draft.emit("RetryRequested", f"retrying revision {revision}")

    if draft.status.activeRevision is None:
        _plan_first_deployment(draft, strategy)
        return
    if draft.status.candidateRevision is not None:
        _plan_deployment(draft, strategy)
        if draft.status.candidateRevision is not None:
            return
        if revision in (draft.status.activeRevision, draft.status.rolledBackRevision):
            return  # the deployment ended in this plan; blue is planned
    status = draft.status
    if revision not in (status.activeRevision, status.rolledBackRevision):
        draft.fleets.clear()
        _start_deployment(draft, strategy)
        _plan_deployment(draft, strategy)
        return
    _plan_steady(draft)


# -- first deployment and rest -----------------------------------------------------------


def _plan_first_deployment(draft: VariantDraft, strategy: DeploymentStrategy) -> None:
    revision, now = draft.revision, draft.now
    if draft.status.candidateRevision != revision:
        if draft.status.candidateRevision is not None:
            draft.emit(
                "Superseded", f"revision {draft.status.candidateRevision} replaced by {revision}"
            )
        draft.update(
            candidateRevision=revision,
            deploymentStartedAt=whole_second(now),
            deadline=after(now, strategy.execution_timeout_seconds),
            step=StepStatus(stage="Provisioning", startedAt=whole_second(now)),
            waitingFor=None,
        )
        draft.set_phase("Creating")
    fleet = draft.fleet(revision)
    draft.plan_fleet(revision, "blue", draft.variant.replicas, 100, draft.autoscaling())
    if draft.status.phase == "Failed":
        return
    status = draft.update(waitingFor=fleet.waiting if fleet is not None else None)
    if fleet is not None and fleet.ready >= draft.variant.replicas:
        draft.record(revision, "Succeeded", "variant created" if draft.many else "endpoint created")
        draft.update(activeRevision=revision)
        clear_deployment(draft)
        draft.set_phase("InService")
        draft.emit("InService", f"revision {revision} is serving")
        return
    deadline = status.deadline
    started = (status.step.startedAt if status.step else None) or now
    provisioning_over = _provisioning_bounded(strategy) and (
        (now - started).total_seconds() >= strategy.provisioning_timeout_seconds
    )
    failure = fleet.failure if fleet is not None else None
    if not draft.paused and (provisioning_over or (deadline is not None and now >= deadline)):
        failure = failure or _not_ready_reason(draft, strategy, revision)
    if failure:
        draft.record(revision, "Failed", failure)
        draft.set_phase("Failed")
        draft.emit("CreateFailed", failure, warning=True)
        return
    if not draft.paused:
        draft.wake_at(deadline)
        left = strategy.provisioning_timeout_seconds - (now - started).total_seconds()
        if _provisioning_bounded(strategy) and left > 0:
            draft.wake_in(left)


def _provisioning_bounded(strategy: DeploymentStrategy) -> bool:
    """A provisioning timeout as long as the execution timeout leaves it to the deadline,
    which then names itself."""
    return strategy.provisioning_timeout_seconds < strategy.execution_timeout_seconds


def _not_ready_reason(draft: VariantDraft, strategy: DeploymentStrategy, revision: str) -> str:
    fleet = draft.fleet(revision)
    ready = f"{fleet.ready}/{fleet.replicas} Ready" if fleet is not None else "no fleet"
    waiting = f"; pods waiting: {fleet.waiting}" if fleet is not None and fleet.waiting else ""
    return (
        f"fleet {revision} was not Ready within provisioningTimeoutSeconds "
        f"({strategy.provisioning_timeout_seconds}s): {ready}{waiting}"
    )


def _plan_steady(draft: VariantDraft) -> None:
    status = draft.status
    assert status.activeRevision is not None
    serve_blue(draft, spec_size=True)
    fleet = draft.fleet(status.activeRevision)
    if fleet is not None and fleet.ready > 0:
        draft.set_phase("InService")
        return
    if status.phase != "OutOfService":
        draft.emit(
            "OutOfService", f"no Ready replica of revision {status.activeRevision}", warning=True
        )
    draft.set_phase("OutOfService")


# -- deployments -------------------------------------------------------------------------


def _start_deployment(draft: VariantDraft, strategy: DeploymentStrategy) -> None:
    now, revision = draft.now, draft.revision
    active = draft.status.activeRevision
    draft.update(
        candidateRevision=revision,
        deploymentStartedAt=whole_second(now),
        deadline=after(now, strategy.execution_timeout_seconds),
        inconclusiveStreak=0,
        alarms=[],
        rollbackCause=None,
        waitingFor=None,
        capacity=None,
        step=StepStatus(
            stage="Provisioning",
            index=0,
            total=0,
            greenPercent=0,
            fleetSize=draft.fleet_size(active),
            startedAt=whole_second(now),
        ),
    )
    forget_gates(draft)
    draft.set_phase("Updating")
    draft.emit(
        "DeploymentStarted",
        f"deploying revision {revision} over {active}: green fleet provisioning",
    )


def _plan_deployment(draft: VariantDraft, strategy: DeploymentStrategy) -> None:
    """A deployment in flight: finish a rollback, or supersede, judge and advance."""
    status = draft.status
    assert status.candidateRevision is not None
    if status.phase == "UpdateRollbackFailed":
        _rollback(draft, strategy, status.rollbackReason or "rollback retried")
        return
    if status.phase == "RollingBack":
        if strategy.roll_back(draft):
            _finish_rollback(draft)
        return
    superseded = draft.revision != status.candidateRevision
    if superseded and not _supersede(draft, strategy):
        return
    # This reconcile's alarm verdicts were evaluated for the superseded revision: they
    # say nothing of the one that starts now.
    why = _reason_to_roll_back(draft, strategy, judge_alarms=not superseded)
    if why is not None:
        reason, warning = why
        _rollback(draft, strategy, reason, warning=warning)
        return
    strategy.advance(draft)
    if not draft.paused:
        draft.wake_at(draft.status.deadline)


def _supersede(draft: VariantDraft, strategy: DeploymentStrategy) -> bool:
    """A new revision mid-deployment: blue takes everything back and the old green goes.
    True when the new revision starts deploying now."""
    revision = draft.revision
    candidate = draft.status.candidateRevision
    assert candidate is not None
    draft.record(candidate, "Superseded", f"replaced by revision {revision}")
    draft.emit("Superseded", f"revision {candidate} superseded by {revision}")
    close_gates(draft)
    clear_deployment(draft)
    if revision in (draft.status.activeRevision, draft.status.rolledBackRevision):
        _plan_steady(draft)
        return False
    _start_deployment(draft, strategy)
    return True


def _reason_to_roll_back(
    draft: VariantDraft, strategy: DeploymentStrategy, *, judge_alarms: bool = True
) -> tuple[str, bool] | None:
    """Why the deployment must roll back now (and whether that is a warning), if it must:
    an abort, an alarm, a green fleet that cannot run, the deadline, or green capacity
    that did not become Ready within ``provisioningTimeoutSeconds``."""
    now = draft.now
    if draft.actions.take("abort"):
        return "aborted on request", False
    cause = _judge_alarms(draft) if judge_alarms else None
    if cause is not None:
        draft.update(rollbackCause=cause)
        return f"alarm {cause.name}: {cause.reason}", True
    policy = draft.spec.deploymentConfig.autoRollback
    if policy is not None:
        draft.wake_in(policy.pollIntervalSeconds)
    green = draft.fleet(draft.status.candidateRevision)
    if green is not None and green.failure:
        return f"green fleet cannot run ({green.failure})", True
    status = draft.update(waitingFor=green.waiting if green is not None else None)
    deadline = status.deadline
    # A webhook gate is asked only once green's capacity is Ready: while one holds, the
    # provisioning timeout is over and only the deadline bounds the wait.
    gate = held_by(status.webhooks, status.candidateRevision)
    if deadline is not None and now >= deadline and not draft.paused:
        why = "the deployment did not finish before maximumExecutionTimeoutSeconds"
        return (f"{why}; {gate}" if gate else why), True
    step = status.step
    if (
        step is not None
        and step.stage == "Provisioning"
        and gate is None
        and _provisioning_bounded(strategy)
        and not draft.paused
    ):
        started = step.startedAt or now
        left = strategy.provisioning_timeout_seconds - (now - started).total_seconds()
        if left <= 0:
            assert status.candidateRevision is not None
            return _not_ready_reason(draft, strategy, status.candidateRevision), True
        draft.wake_in(left)
    return None


def _rollback(
    draft: VariantDraft, strategy: DeploymentStrategy, reason: str, *, warning: bool = True
) -> None:
    """Traffic back to blue (the strategy says how fast); green goes once blue is whole.
    A blue fleet that cannot take the traffic keeps green serving, and the rollback is
    retried (``UpdateRollbackFailed``)."""
    status = draft.update(rollbackReason=reason)
    candidate = status.candidateRevision
    rolling = draft.spec.deploymentConfig.rolling is not None
    blue = draft.fleet(status.activeRevision)
    if blue is None or (blue.ready == 0 and not rolling):
        _keep_current(draft)
        if status.phase != "UpdateRollbackFailed":
            draft.set_phase("UpdateRollbackFailed")
            draft.emit(
                "RollbackBlocked",
                f"cannot roll back {candidate}: blue fleet of {draft.name} not Ready",
                warning=True,
            )
        draft.wake_in(ROLLBACK_RETRY_SECONDS)
        return
    if status.phase != "RollingBack":
        draft.set_phase("RollingBack")
        draft.emit("RollbackStarted", f"rolling back {candidate}: {reason}", warning=warning)
        draft.update(rolledBackRevision=candidate)
        draft.record(candidate or "", "RolledBack", reason)
        close_gates(draft)
        notify(draft, "OnRollback", f"RolledBack: {reason}")
    if strategy.roll_back(draft):
        draft.fleets.clear()
        serve_blue(draft)
        if draft.status.step is not None:
            draft.update_step(greenPercent=0)


def _keep_current(draft: VariantDraft) -> None:
    """Both fleets at their current shares (used while blue cannot take traffic)."""
    status = draft.status
    green_percent = status.step.greenPercent if status.step else 0
    size = draft.fleet_size(status.activeRevision)
    if status.activeRevision is not None:
        draft.plan_fleet(
            status.activeRevision, "blue", size, 100 - green_percent, draft.autoscaling()
        )
    if status.candidateRevision is not None:
        draft.plan_fleet(
            status.candidateRevision,
            "green",
            size,
            green_percent,
            draft.autoscaling(calculate_required_ready(size, green_percent)),
        )


def _finish_rollback(draft: VariantDraft) -> None:
    """Blue is whole: plan it alone; once no green fleet is left, the variant is back
    in service on blue."""
    candidate, active = draft.status.candidateRevision, draft.status.activeRevision
    draft.fleets.clear()
    serve_blue(draft)
    if draft.fleet(candidate) is not None:
        return
    clear_deployment(draft)
    draft.set_phase("InService")
    draft.emit("RolledBack", f"revision {candidate} rolled back; {active} serving")


def _judge_alarms(draft: VariantDraft) -> AlarmStatus | None:
    """Record this reconcile's alarm verdicts; return the cause if they demand a rollback.

    Any Breaching alarm, or an alarm that cannot work at all (invalid PromQL, unknown
    rule), rolls back. Inconclusive and Error hold the step; with ``onInconclusive:
    RollBack`` enough of them in a row roll back too, and the cause says so.
    """
    results = draft.observed.alarms_of(draft.name)
    if results is None:
        return None
    stamp = whole_second(draft.now)
    recorded = [
        AlarmStatus(
            name=r.name, verdict=r.verdict, value=r.value, reason=r.reason, evaluatedAt=stamp
        )
        for r in results
    ]
    by_name = {a.name: a for a in recorded}
    decisive = [r for r in results if r.fatal] or [r for r in results if r.verdict == "Breaching"]
    if decisive:
        draft.alarm_verdict = decisive[0].verdict
        draft.update(alarms=recorded, inconclusiveStreak=0)
        return by_name[decisive[0].name]
    unclear = [r for r in results if r.verdict in ("Inconclusive", "Error")]
    if not unclear:
        draft.alarm_verdict = "Healthy"
        draft.update(alarms=recorded, inconclusiveStreak=0)
        return None
    draft.alarm_verdict = "Inconclusive"
    status = draft.update(alarms=recorded, inconclusiveStreak=draft.status.inconclusiveStreak + 1)
    policy = draft.spec.deploymentConfig.autoRollback
    if (
        policy is not None
        and policy.onInconclusive.action == "RollBack"
        and status.inconclusiveStreak >= policy.onInconclusive.consecutiveEvaluations
    ):
        first = by_name[unclear[0].name]
        return first.model_copy(
            update={
                "reason": f"inconclusive {status.inconclusiveStreak} evaluations in a row "
                f"(onInconclusive: RollBack): {first.reason}"
            }
        )
    return None
