"""What happened in one scenario, decided from recorded observations (pure).

The story records Endpoint status samples and every answer of the load generator.
From them this module derives the markers of the timeline (each traffic step, the
breach, the rollback, the end) and the summary row: the outcome, how fast the
breach was detected and acted on, and the blast radius (requests the bad fleet
served) against the bound the canary share implies.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Sequence
from typing import Any

from fleetshift_devcluster.demo.loadgen import Answer

# Round-robin spreading is exact per full turn; the slack covers target lists that
# change between turns while endpoints come and go.
BLAST_RADIUS_SLACK = 1.25
BLAST_RADIUS_ALLOWANCE = 5


def parse_time(value: str | None) -> float | None:
    """RFC 3339 (as the operator writes it) to epoch seconds.

    >>> parse_time("2026-01-01T00:00:01Z") - parse_time("2026-01-01T00:00:00Z")
    1.0
    >>> parse_time(None) is None
    True
    """
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass(frozen=True)
class StatusSample:
    """The parts of an Endpoint's status the timeline needs, at one moment."""

    at: float
    phase: str
    stage: str | None
    index: int
    total: int
    green_percent: int
    candidate: str | None
    active: str | None
    paused: bool
    alarms: tuple[tuple[str, str, float | None], ...]
    capacity_needed: int | None = None
    """The green replicas the capacity gate found the full load needs (None: no fit yet)."""
    capacity_ready: int = 0
    """Green's Ready replicas, as the capacity gate counted them."""

    @classmethod
    def of(cls, at: float, status: dict[str, Any]) -> StatusSample:
        step = status.get("step") or {}
        return cls(
            at=at,
            phase=status.get("phase") or "Pending",
            stage=step.get("stage"),
            index=int(step.get("index") or 0),
            total=int(step.get("total") or 0),
            green_percent=int(status.get("greenTrafficPercent") or 0),
            candidate=status.get("candidateRevision"),
            active=status.get("activeRevision"),
            paused=bool(status.get("paused")),
            alarms=tuple(
                (a["name"], a["verdict"], a.get("value")) for a in status.get("alarms") or []
            ),
            capacity_needed=(status.get("capacity") or {}).get("neededReplicas"),
            capacity_ready=int((status.get("capacity") or {}).get("readyReplicas") or 0),
        )


@dataclasses.dataclass(frozen=True)
class Marker:
    """A vertical line on the timeline."""

    at: float
    kind: str  # "update", "step", "breach", "rollback", "done"
    label: str


def calculate_markers(
    started: float,
    samples: Sequence[StatusSample],
    breach_at: float | None,
    finished_at: float | None,
) -> list[Marker]:
    """The update, every traffic step, the breach, the rollback and the end.

    >>> s = lambda t, phase, stage, i, g: StatusSample(t, phase, stage, i, 2, g, "b", "a",
    ...                                                  False, ())
    >>> ms = calculate_markers(0.0, [s(1, "Updating", "Provisioning", 0, 0),
    ...     s(3, "Updating", "Baking", 1, 25), s(9, "RollingBack", "RollingBack", 1, 0),
    ...     s(11, "InService", None, 0, 0)], breach_at=8.5, finished_at=11.0)
    >>> [(m.at, m.kind, m.label) for m in ms]  # doctest: +NORMALIZE_WHITESPACE
    [(0.0, 'update', 'update'), (3, 'step', 'step 1/2: 25%'), (8.5, 'breach', 'alarm'),
     (9, 'rollback', 'rollback'), (11.0, 'done', 'done')]
    """
    markers = [Marker(started, "update", "update")]
    seen_step: tuple[str | None, int] | None = None
    rolling_back = False
    for sample in samples:
        key = (sample.stage, sample.index)
        if sample.stage in ("Baking", "TerminationWait") and key != seen_step:
            label = (
                f"step {sample.index}/{sample.total}: {sample.green_percent}%"
                if sample.stage == "Baking"
                else "blue kept (termination wait)"
            )
            markers.append(Marker(sample.at, "step", label))
        seen_step = key
        if not rolling_back and (sample.phase == "RollingBack" or sample.stage == "RollingBack"):
            rolling_back = True
            markers.append(Marker(sample.at, "rollback", "rollback"))
    if breach_at is not None:
        markers.append(Marker(breach_at, "breach", "alarm"))
    if finished_at is not None:
        markers.append(Marker(finished_at, "done", "done"))
    return sorted(markers, key=lambda m: m.at)


@dataclasses.dataclass(frozen=True)
class ScenarioSummary:
    """One row of the summary table."""

    name: str
    expected: str
    outcome: str
    reason: str
    total_seconds: float
    green_requests: int
    green_errors: int
    blast_radius_bound: int
    detect_seconds: float | None
    detection_to_rollback_seconds: float | None
    green_server_errors: int = 0
    """Of ``green_errors``, the answers with a 5xx status (the rest went unanswered: a
    connection refused or reset, as when a stopped fleet still had a request in flight)."""
    caught_by: str = ""
    """The alarm whose breach rolled the deployment back (empty when none did)."""
    held_for_approval_seconds: float | None = None
    """How long the ``ConfirmPromotion`` gate held the last step (the gates story)."""
    capacity_needed: int | None = None
    """The green replicas the capacity gate's fit last asked for, for all of the traffic
    (None: no fit, as when the deployment ended before its step to 100%)."""
    verdicts: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Each alarm's verdicts through the deployment, in order, repeats dropped (see
    :func:`calculate_verdicts`)."""

    @property
    def as_expected(self) -> bool:
        return self.outcome == self.expected

    @property
    def within_bound(self) -> bool:
        return self.green_requests <= self.blast_radius_bound


def calculate_verdicts(samples: Sequence[StatusSample], candidate: str) -> dict[str, list[str]]:
    """Each alarm's verdicts from the deployment of ``candidate`` on (before it, status
    holds the verdicts of the deployment before), in order, repeats dropped.

    >>> s = lambda at, candidate, *alarms: StatusSample(at, "Updating", "Baking", 1, 2, 25,
    ...     candidate, "old", False, alarms)
    >>> held, good = ("drift", "Inconclusive", None), ("drift", "Healthy", 0.02)
    >>> calculate_verdicts([s(0, None, ("drift", "Breaching", 0.7)), s(1, "new", held),
    ...     s(2, "new", held), s(3, "new", good), s(4, None, good)], "new")
    {'drift': ['Inconclusive', 'Healthy']}
    """
    begun = next((i for i, s in enumerate(samples) if s.candidate == candidate), len(samples))
    verdicts: dict[str, list[str]] = {}
    for sample in samples[begun:]:
        for name, verdict, _ in sample.alarms:
            seen = verdicts.setdefault(name, [])
            if not seen or seen[-1] != verdict:
                seen.append(verdict)
    return verdicts


def calculate_blast_radius_bound(share_percent: int, requests_in_window: int) -> int:
    """The most requests the green fleet may serve while it holds ``share_percent``
    of ``requests_in_window``, with slack for endpoints coming and going.

    >>> calculate_blast_radius_bound(25, 400)
    130
    >>> calculate_blast_radius_bound(0, 400)
    5
    """
    expected = share_percent / 100 * requests_in_window
    return math.ceil(expected * BLAST_RADIUS_SLACK) + BLAST_RADIUS_ALLOWANCE


def summarize(
    *,
    name: str,
    expected: str,
    started: float,
    finished: float,
    outcome: str,
    reason: str,
    candidate: str,
    samples: Sequence[StatusSample],
    answers: Sequence[Answer],
    breach_at: float | None,
) -> ScenarioSummary:
    """The summary row of one scenario.

    - ``detect_seconds``: from the first failed answer of the green fleet to the
      alarm evaluation that found the breach (None when no answer failed before it: an
      alarm that does not wait for failures, such as the drift alarm);
    - ``detection_to_rollback_seconds``: from that evaluation to the last request
      the green fleet served (traffic is back on blue);
    - the blast radius is every request the green fleet served, and its bound is the
      largest share green held times the requests sent while green was served.

    >>> a = [Answer(float(t), "e", "new" if t % 4 == 0 else "old", 500 if t % 4 == 0 else 200,
    ...      0.01) for t in range(10, 30)]
    >>> s = summarize(name="x", expected="RolledBack", started=5.0, finished=35.0,
    ...     outcome="RolledBack", reason="r", candidate="new",
    ...     samples=[StatusSample(9, "Updating", "Baking", 1, 2, 25, "new", "old", False, ())],
    ...     answers=a, breach_at=21.0)
    >>> (s.green_requests, s.green_errors, s.detect_seconds, s.detection_to_rollback_seconds)
    (5, 5, 9.0, 7.0)
    >>> s.blast_radius_bound, s.within_bound, s.as_expected
    (11, True, True)

    A drift breach with every answer a 200 but one that went unanswered after it:

    >>> a = [Answer(float(t), "e", "new", 0 if t == 25 else 200, 0.01) for t in range(10, 26)]
    >>> s = summarize(name="x", expected="RolledBack", started=5.0, finished=35.0,
    ...     outcome="RolledBack", reason="r", candidate="new",
    ...     samples=[StatusSample(9, "Updating", "Baking", 1, 2, 25, "new", "old", False, ())],
    ...     answers=a, breach_at=24.0)
    >>> (s.green_errors, s.green_server_errors, s.detect_seconds)
    (1, 0, None)
    """
    green = [a for a in answers if a.revision == candidate]
    failed = [a for a in green if a.error]
    detect = None
    to_rollback = None
    failed_before = [a for a in failed if breach_at is not None and a.sent_at <= breach_at]
    if breach_at is not None and failed_before:
        detect = round(breach_at - failed_before[0].sent_at, 2)
    if breach_at is not None and green:
        to_rollback = round(max(0.0, green[-1].sent_at - breach_at), 2)
    share = max((s.green_percent for s in samples if s.phase != "InService"), default=0)
    if green:
        window = [a for a in answers if green[0].sent_at <= a.sent_at <= green[-1].sent_at]
        bound = calculate_blast_radius_bound(share, len(window))
    else:
        bound = calculate_blast_radius_bound(share, 0)
    return ScenarioSummary(
        name=name,
        expected=expected,
        outcome=outcome,
        reason=reason,
        total_seconds=round(finished - started, 1),
        green_requests=len(green),
        green_errors=len(failed),
        green_server_errors=sum(1 for a in failed if a.status >= 500),
        verdicts=calculate_verdicts(samples, candidate) if candidate else {},
        capacity_needed=next(
            (
                s.capacity_needed
                for s in reversed(samples)
                if s.candidate == candidate and s.capacity_needed is not None
            ),
            None,
        ),
        blast_radius_bound=bound,
        detect_seconds=detect,
        detection_to_rollback_seconds=to_rollback,
    )


def describe_gate(row: ScenarioSummary) -> str:
    """What stopped or held the deployment, for the summary's last column.

    >>> row = ScenarioSummary("x", "RolledBack", "RolledBack", "", 1, 0, 0, 5, None, None,
    ...                       caught_by="prediction-drift")
    >>> describe_gate(row)
    'rolled back by prediction-drift'
    >>> describe_gate(dataclasses.replace(row, caught_by="", held_for_approval_seconds=10.4))
    'held 10.4 s for approval'
    """
    parts = []
    if row.caught_by:
        parts.append(f"rolled back by {row.caught_by}")
    if row.held_for_approval_seconds is not None:
        parts.append(f"held {row.held_for_approval_seconds:.1f} s for approval")
    return "; ".join(parts) or "-"


def summary_table(rows: Sequence[ScenarioSummary]) -> str:
    """A Markdown table of the scenarios."""
    header = (
        "| scenario | outcome | detect (s) | detection to rollback (s) "
        "| served by green (errors) | bound | total (s) | gate |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        f"| {r.name} | {r.outcome}{'' if r.as_expected else ' (expected ' + r.expected + ')'} "
        f"| {seconds(r.detect_seconds)} | {seconds(r.detection_to_rollback_seconds)} "
        f"| {r.green_requests} ({r.green_errors}) "
        f"| {r.blast_radius_bound if r.expected == 'RolledBack' else '-'} "
        f"| {r.total_seconds:.1f} | {describe_gate(r)} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"
