"""Live terminal progress: the rollout as the operator reports it, plus the traffic.

On a terminal the frame of ``kubectl fleetshift watch`` (steps, a bar through the
wait, traffic per fleet, alarm verdicts, events) is redrawn in place twice a second,
with the load generator's counters under it. In a log (CI, a pipe) one line is
printed whenever the rollout's state changes, and the counters every ten seconds.
"""

from __future__ import annotations

import datetime
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from fleetshift_devcluster.demo.loadgen import Answer
from fleetshift_devcluster.demo.timeline import ScenarioSummary, parse_time
from fleetshift_operator.cli.view import render_watch

BAR_WIDTH = 24


def render_bar(done: float, total: float, width: int = BAR_WIDTH) -> str:
    """A progress bar through a wait.

    >>> render_bar(15, 30, width=10)
    '[#####.....]'
    >>> render_bar(40, 30, width=4)
    '[####]'
    """
    filled = 0 if total <= 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render_traffic(answers: Sequence[Answer], now: float, names: dict[str, str]) -> str:
    """Request counters per revision, and the rate over the last 5 seconds.

    >>> a = [Answer(9.5, "e", "r1", 200, 0.01), Answer(9.6, "e", "r2", 500, 0.01)]
    >>> render_traffic(a, 10.0, {"r2": "incompatible"})
    'requests 2 (0.4/s) | r1: 1 ok 0 err | incompatible: 0 ok 1 err'
    """
    recent = sum(1 for a in answers if a.sent_at >= now - 5)
    by_revision: dict[str, list[int]] = {}
    for answer in answers:
        counts = by_revision.setdefault(answer.revision, [0, 0])
        counts[1 if answer.error else 0] += 1
    parts = [
        f"{names.get(revision, revision)}: {ok} ok {bad} err"
        for revision, (ok, bad) in by_revision.items()
    ]
    return " | ".join([f"requests {len(answers)} ({recent / 5:.1f}/s)", *parts])


def render_status(status: dict[str, Any], now: float, names: dict[str, str]) -> list[str]:
    """The rollout: phase, step, a bar through the current wait, traffic per fleet,
    and each alarm's last verdict.

    >>> lines = render_status({"phase": "Updating", "greenTrafficPercent": 25,
    ...     "step": {"stage": "Baking", "index": 1, "total": 2,
    ...              "startedAt": "2026-01-01T00:00:00Z", "bakeUntil": "2026-01-01T00:00:30Z"},
    ...     "activeRevision": "a", "candidateRevision": "b",
    ...     "alarms": [{"name": "green-5xx", "verdict": "Breaching", "value": 100.0,
    ...                 "evaluatedAt": "x"}]}, 1767225615.0, {"a": "baseline"})
    >>> print("\\n".join(lines))
    phase Updating | step 1/2 Baking | 15/30 s [############............]
    traffic: baseline 75% -> b 25%
    alarms: green-5xx Breaching (100)
    """
    step = status.get("step") or {}
    head = f"phase {status.get('phase', 'Pending')}"
    if step:
        head += f" | step {step.get('index', 0)}/{step.get('total', 0)} {step.get('stage', '')}"
        started, until = parse_time(step.get("startedAt")), parse_time(step.get("bakeUntil"))
        if started is not None and until is not None and until > started:
            total = until - started
            done = max(0.0, min(total, now - started))
            head += f" | {done:.0f}/{total:.0f} s {render_bar(done, total)}"
    if status.get("paused"):
        head += " | PAUSED"
    active = status.get("activeRevision") or "-"
    green = int(status.get("greenTrafficPercent") or 0)
    traffic = f"traffic: {names.get(active, active)} {100 - green}%"
    candidate = status.get("candidateRevision")
    if candidate:
        traffic += f" -> {names.get(candidate, candidate)} {green}%"
    lines = [head, traffic]
    alarms = status.get("alarms") or []
    if alarms:
        verdicts = [
            f"{a['name']} {a['verdict']}"
            + ("" if a.get("value") is None else f" ({float(a['value']):.3g})")
            for a in alarms
        ]
        lines.append("alarms: " + ", ".join(verdicts))
    return lines


class Progress:
    """Prints the demo's progress to ``stream``."""

    def __init__(self, stream: TextIO = sys.stdout, live: bool | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.names: dict[str, str] = {}
        self._drawn = 0
        self._last_key: tuple[object, ...] | None = None
        self._last_counters = 0.0
        self._last_draw = 0.0
        self._started = time.monotonic()

    def say(self, message: str) -> None:
        self._clear()
        elapsed = time.monotonic() - self._started
        print(f"[demo {elapsed:6.1f}s] {message}", file=self.stream, flush=True)

    def begin(self, scenario: Any) -> None:
        what = {
            "baseline": "create it with the baseline model",
            "incompatible": "update it to the incompatible model",
            "valid": "update it to the valid model",
            "disagreeing": "give its shadow the model that disagrees with production",
            "shifted": "update it to the shifted model (every answer a 200, the numbers moved)",
        }[scenario.model]
        if scenario.policy == "Shadow" and scenario.model == "baseline":
            what = "create it: production and a shadow, both the baseline model"
        self.say(f"== {scenario.name}: {scenario.endpoint}: {what} ({scenario.policy})")
        self._last_key = None

    def frame(
        self,
        endpoint: dict[str, Any],
        events: Sequence[dict[str, Any]],
        answers: Sequence[Answer],
    ) -> None:
        """Show the rollout now: on a terminal, the frame ``kubectl fleetshift watch``
        draws plus the request counters; in a log, one line per change."""
        now = time.time()
        status = dict(endpoint.get("status") or {})
        counters = render_traffic(answers, now, self.names)
        if self.live:
            if time.monotonic() - self._last_draw < 0.5:
                return
            self._last_draw = time.monotonic()
            frame = render_watch(
                endpoint,
                now=datetime.datetime.now(datetime.UTC),
                events=events,
                width=shutil.get_terminal_size().columns - 1,
                color=True,
            )
            lines = [*frame.rstrip("\n").split("\n"), "", counters]
            self._clear()
            for line in lines:
                print(line, file=self.stream)
            self.stream.flush()
            self._drawn = len(lines)
            return
        lines = render_status(status, now, self.names)
        step = status.get("step") or {}
        verdicts = tuple((a["name"], a["verdict"]) for a in status.get("alarms") or [])
        key = (
            status.get("phase"),
            step.get("stage"),
            step.get("index"),
            status.get("greenTrafficPercent"),
            verdicts,
        )
        if key != self._last_key:
            self._last_key = key
            stamp = datetime.datetime.now().strftime("%H:%M:%S")
            print(f"  {stamp} " + " || ".join(lines), file=self.stream, flush=True)
        if time.monotonic() - self._last_counters >= 10:
            self._last_counters = time.monotonic()
            print(f"           {counters}", file=self.stream, flush=True)

    def done(self, summary: ScenarioSummary) -> None:
        result = "as expected" if summary.as_expected else f"EXPECTED {summary.expected}"
        detail = f"{summary.outcome} ({result}) in {summary.total_seconds:.0f} s"
        if summary.green_requests:
            detail += (
                f"; green served {summary.green_requests} requests,"
                f" {summary.green_errors} failed (bound {summary.blast_radius_bound})"
            )
        if summary.detection_to_rollback_seconds is not None:
            detail += f"; detection to rollback {summary.detection_to_rollback_seconds:.1f} s"
        if summary.caught_by:
            detail += f"; rolled back by {summary.caught_by}"
        if summary.held_for_approval_seconds is not None:
            detail += f"; promotion held {summary.held_for_approval_seconds:.1f} s for approval"
        self.say(f"   {summary.name}: {detail}")

    def _clear(self) -> None:
        if self.live and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self.stream.flush()
        self._drawn = 0
