"""Text views of Endpoints: pure functions from API objects (plain mappings) to text.

Nothing here reads a clock or talks to a cluster; ``now`` is always passed in.
The objects are what the API server returns (``metadata``, ``spec``,
``status``), so a view never fails on a status that is partial or older than
this code: a missing field is shown as ``-`` or left out.

:func:`render_watch` is one frame of ``kubectl fleetshift watch``; a demo can
import it and print it as the rollout moves::

    frame = render_watch(endpoint, now=datetime.datetime.now(datetime.UTC), events=events)
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from fleetshift_operator.api import Rolling, TrafficRouting
from fleetshift_operator.planning.steps import (
    calculate_batch,
    calculate_rolling_targets,
    calculate_steps,
)

IN_FLIGHT_PHASES = ("Creating", "Updating", "RollingBack", "UpdateRollbackFailed")
"""Phases in which a deployment (or its rollback) is still moving."""

EVENTS_SHOWN = 6
"""How many of the most recent events a watch frame shows."""

_ANSI = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
}

_PHASE_STYLE = {
    "InService": "green",
    "Creating": "cyan",
    "Updating": "cyan",
    "RollingBack": "red",
    "Failed": "red",
    "UpdateRollbackFailed": "red",
    "Deleting": "yellow",
}

_VERDICT_STYLE = {
    "Healthy": "green",
    "Breaching": "red",
    "Inconclusive": "yellow",
    "Error": "red",
}

_OUTCOME_STYLE = {
    "Succeeded": "green",
    "RolledBack": "red",
    "Failed": "red",
    "Superseded": "yellow",
}


# -- small pure helpers --------------------------------------------------------------------


def parse_timestamp(text: object) -> datetime.datetime | None:
    """An RFC 3339 time from the API (``Z`` or an offset, with or without a fraction).

    >>> parse_timestamp("2026-01-02T03:04:05Z")
    datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    >>> parse_timestamp("2026-01-02T03:04:05.250000Z").microsecond
    250000
    >>> parse_timestamp(None) is None, parse_timestamp("soon") is None
    (True, True)
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


def format_duration(seconds: float) -> str:
    """A short human duration, rounded down to whole seconds, as kubectl prints ages.

    >>> [format_duration(s) for s in (0, 9.9, 75, 3600, 3725, 90000, -5)]
    ['0s', '9s', '1m15s', '1h', '1h2m', '1d1h', '0s']
    """
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def progress_bar(fraction: float, width: int) -> str:
    """``width`` cells, filled in proportion to ``fraction`` (clamped to 0..1).

    >>> progress_bar(0.4, 10)
    '████░░░░░░'
    >>> progress_bar(2, 4), progress_bar(-1, 4)
    ('████', '░░░░')
    """
    width = max(1, width)
    filled = math.floor(max(0.0, min(1.0, fraction)) * width + 0.5)
    return "█" * filled + "░" * (width - filled)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _short(revision: object) -> str:
    return revision if isinstance(revision, str) and revision else "-"


def _ago(moment: datetime.datetime | None, now: datetime.datetime) -> str:
    return "-" if moment is None else format_duration((now - moment).total_seconds())


# -- lines with optional colour, clipped to a width ----------------------------------------


@dataclasses.dataclass
class _Line:
    """A line made of (text, style) segments; clipped by visible width, then coloured."""

    segments: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)

    def add(self, text: str, style: str | None = None) -> _Line:
        self.segments.append((text, style))
        return self

    def render(self, width: int, color: bool) -> str:
        out: list[str] = []
        room = width
        for text, style in self.segments:
            if room <= 0:
                break
            piece = text
            if len(piece) > room:
                piece = piece[: max(0, room - 1)] + "…"
            room -= len(piece)
            if color and style:
                codes = ";".join(_ANSI[s] for s in style.split("+"))
                piece = f"\x1b[{codes}m{piece}\x1b[0m"
            out.append(piece)
        return "".join(out).rstrip()


def _lines(lines: Iterable[_Line | str], width: int, color: bool) -> str:
    rendered = [
        (line if isinstance(line, _Line) else _Line().add(line)).render(width, color)
        for line in lines
    ]
    return "\n".join(rendered) + "\n"


def _bar_width(width: int) -> int:
    return max(10, min(40, width - 70))


# -- reading an Endpoint ---------------------------------------------------------------------


def _status(endpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(endpoint.get("status"))


def _name(endpoint: Mapping[str, Any]) -> tuple[str, str]:
    metadata = _mapping(endpoint.get("metadata"))
    return str(metadata.get("namespace") or "default"), str(metadata.get("name") or "?")


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in _sequence(status.get("conditions")):
        if _mapping(condition).get("type") == kind:
            return _mapping(condition)
    return {}


def rollout_in_flight(endpoint: Mapping[str, Any]) -> bool:
    """True while the operator still has work to do on this Endpoint's rollout.

    In flight: the operator has not yet seen the latest spec (``observedGeneration``
    behind ``metadata.generation``), a deployment or rollback is moving
    (``candidateRevision`` is set or the phase is one of :data:`IN_FLIGHT_PHASES`;
    ``Failed`` is final until the spec changes), or a retry request is waiting.

    >>> at_rest = {"metadata": {"generation": 2}, "status": {"phase": "InService",
    ...     "observedGeneration": 2}}
    >>> rollout_in_flight(at_rest)
    False
    >>> rollout_in_flight({**at_rest, "metadata": {"generation": 3}})
    True
    >>> rollout_in_flight({"metadata": {}, "status": {}})
    True
    """
    metadata = _mapping(endpoint.get("metadata"))
    status = _status(endpoint)
    phase = status.get("phase")
    generation = _int(metadata.get("generation"), 0)
    if generation and _int(status.get("observedGeneration"), 0) < generation:
        return True
    if phase == "Failed":  # a failed first deployment waits for a new spec
        return False
    if phase is None or phase in IN_FLIGHT_PHASES or status.get("candidateRevision"):
        return True
    retry = _mapping(metadata.get("annotations")).get("fleetshift.dev/retry")
    handled = _mapping(status.get("handledActions")).get("retry")
    return bool(retry) and retry != handled


def watch_exit_code(endpoint: Mapping[str, Any]) -> int:
    """The exit code of ``watch`` once the rollout is no longer in flight.

    0: ``InService`` on the revision the spec asks for. 1: the rollout was rolled
    back (``Degraded`` names the rolled-back revision) or failed.

    >>> watch_exit_code({"status": {"phase": "InService", "conditions": [
    ...     {"type": "Degraded", "status": "False"}]}})
    0
    >>> watch_exit_code({"status": {"phase": "InService", "conditions": [
    ...     {"type": "Degraded", "status": "True"}]}})
    1
    >>> watch_exit_code({"status": {"phase": "Failed"}})
    1
    """
    status = _status(endpoint)
    degraded = _condition(status, "Degraded").get("status") == "True"
    return 0 if status.get("phase") == "InService" and not degraded else 1


def _traffic_steps(endpoint: Mapping[str, Any]) -> list[int] | None:
    """Green percent after each step, from the spec (None when it cannot be read)."""
    spec = _mapping(endpoint.get("spec"))
    config = _mapping(spec.get("deploymentConfig"))
    step = _mapping(_status(endpoint).get("step"))
    variants = _sequence(spec.get("variants"))
    replicas = max((_int(_mapping(v).get("replicas"), 1) for v in variants), default=1)
    size = _int(step.get("fleetSize"), 0) or replicas
    try:
        if config.get("rolling"):
            rolling = Rolling.model_validate(config["rolling"])
            batch = rolling.maximumBatchSize
            targets = calculate_rolling_targets(
                size, calculate_batch(batch.type, batch.value, size)
            )
            return [round(100 * t / size) for t in targets]
        routing = _mapping(_mapping(config.get("blueGreen")).get("trafficRouting"))
        return calculate_steps(TrafficRouting.model_validate(routing), size)
    except (ValidationError, TypeError, ValueError, ZeroDivisionError):
        return None


def _waits(endpoint: Mapping[str, Any]) -> tuple[int | None, int | None]:
    config = _mapping(_mapping(endpoint.get("spec")).get("deploymentConfig"))
    if config.get("rolling"):
        return _int(_mapping(config["rolling"]).get("waitIntervalSeconds"), 0), None
    blue_green = _mapping(config.get("blueGreen"))
    routing = _mapping(blue_green.get("trafficRouting"))
    return (
        _int(routing.get("waitIntervalSeconds"), 0),
        _int(blue_green.get("terminationWaitSeconds"), 0),
    )


def _policy_summary(endpoint: Mapping[str, Any]) -> str:
    config = _mapping(_mapping(endpoint.get("spec")).get("deploymentConfig"))
    steps = _traffic_steps(endpoint)
    shares = " → ".join(f"{p}%" for p in steps) if steps else "?"
    if config.get("rolling"):
        return f"Rolling batches {shares}"
    routing = _mapping(_mapping(config.get("blueGreen")).get("trafficRouting"))
    return f"{routing.get('type', 'AllAtOnce')} {shares}"


# -- sections ------------------------------------------------------------------------------------


def _header(endpoint: Mapping[str, Any], now: datetime.datetime) -> list[_Line]:
    namespace, name = _name(endpoint)
    status = _status(endpoint)
    phase = str(status.get("phase") or "Pending")
    active, candidate = status.get("activeRevision"), status.get("candidateRevision")
    first = _Line().add(name, "bold").add("  ").add(phase, _PHASE_STYLE.get(phase))
    if candidate and active:
        first.add(f"  deploying {candidate} over {active}")
    elif candidate:
        first.add(f"  creating {candidate}")
    elif active:
        first.add(f"  serving {active}")
    context = _Line().add(f"{_policy_summary(endpoint)} · namespace {namespace}", "dim")
    lines = [first, context]
    started = parse_timestamp(status.get("deploymentStartedAt"))
    if started is not None and candidate:
        timing = _Line().add(f"started {_ago(started, now)} ago")
        deadline = parse_timestamp(status.get("deadline"))
        if deadline is not None:
            left = (deadline - now).total_seconds()
            if left > 0:
                timing.add(f" · deadline in {format_duration(left)}")
            else:
                timing.add(" · deadline passed", "red")
        lines.append(timing)
    if status.get("paused"):
        since = parse_timestamp(status.get("pausedAt"))
        held = f" for {_ago(since, now)}" if since else ""
        lines.append(
            _Line()
            .add("PAUSED", "yellow+bold")
            .add(f"{held}: steps are held, alarms still roll back")
            .add(f"  (kubectl fleetshift resume {name})", "dim")
        )
    return lines


def _fleet_ready(status: Mapping[str, Any], role: str) -> tuple[int, int]:
    """Ready and desired replicas over the fleets of ``role`` (every variant)."""
    ready = desired = 0
    for key, fleet in _mapping(status.get("fleets")).items():
        if str(key).split("/")[-1] == role:
            ready += _int(_mapping(fleet).get("readyReplicas"))
            desired += _int(_mapping(fleet).get("replicas"))
    return ready, desired


def _steps_section(endpoint: Mapping[str, Any]) -> list[_Line]:
    status = _status(endpoint)
    phase = status.get("phase")
    step = _mapping(status.get("step"))
    stage = step.get("stage", "Provisioning")
    index, total = _int(step.get("index")), _int(step.get("total"))
    if not status.get("candidateRevision") or not step:
        return []
    lines = [_Line().add("Steps", "bold")]
    if phase in ("RollingBack", "UpdateRollbackFailed"):
        reason = status.get("rollbackReason") or "rolling back"
        blue = _short(status.get("activeRevision"))
        label = (
            f"Rolling back to {blue}: "
            if phase == "RollingBack"
            else f"Rollback to {blue} blocked until blue is Ready again: "
        )
        lines.append(_Line().add("  ↩ ", "red").add(label).add(str(reason), "red"))
        return lines
    if phase == "Creating":
        ready, desired = _fleet_ready(status, "blue")
        lines.append(
            _Line().add("  ▶ ", "cyan").add(f"{'Provisioning':<18}fleet {ready}/{desired} Ready")
        )
        lines.append(_Line().add("  · ", "dim").add("In service", "dim"))
        return lines
    rolling = bool(_mapping(_mapping(endpoint.get("spec")).get("deploymentConfig")).get("rolling"))
    shares = _traffic_steps(endpoint) or []
    total = total or len(shares)
    bake, termination = _waits(endpoint)
    green_ready, green_desired = _fleet_ready(status, "green")

    def mark(state: str) -> tuple[str, str]:
        return {"done": ("  ✓ ", "green"), "now": ("  ▶ ", "cyan"), "todo": ("  · ", "dim")}[state]

    if not rolling:
        state = "now" if stage == "Provisioning" else "done"
        glyph, style = mark(state)
        lines.append(
            _Line()
            .add(glyph, style)
            .add(f"{'Provisioning':<18}green {green_ready}/{green_desired} Ready")
        )
    for number in range(1, total + 1):
        share = shares[number - 1] if number <= len(shares) else None
        label = f"{'Batch' if rolling else 'Step'} {number}/{total}"
        if stage == "TerminationWait" or number < index:
            state = "done"
        elif number == index and stage in ("Baking", "Provisioning"):
            state = "now" if (stage == "Baking" or rolling) else "todo"
        else:
            state = "todo"
        glyph, style = mark(state)
        text = f"{label:<11}green {share}%" if share is not None else label
        line = _Line().add(glyph, style).add(f"{text:<29}", None if state != "todo" else "dim")
        if state == "now":
            line.add("provisioning" if stage == "Provisioning" else f"baking {bake or 0}s")
        elif state == "todo" and bake:
            line.add(f"bake {bake}s", "dim")
        lines.append(line)
    if not rolling:
        state = "now" if stage == "TerminationWait" else "todo"
        glyph, style = mark(state)
        lines.append(
            _Line()
            .add(glyph, style)
            .add(f"{'Termination wait':<29}", "dim" if state == "todo" else None)
            .add(f"blue kept {termination or 0}s", "dim" if state == "todo" else None)
        )
    return lines


def _held_gate(status: Mapping[str, Any]) -> str | None:
    """The webhook gate the focus variant's deployment waits on, if one holds it."""
    focus = next(
        (
            _mapping(v)
            for v in _sequence(status.get("variants"))
            if _mapping(v).get("name") == status.get("variant")
        ),
        {},
    )
    for hook in map(_mapping, _sequence(focus.get("webhooks"))):
        if (
            hook.get("type") in ("PreRollout", "ConfirmPromotion")
            and hook.get("state") == "Pending"
            and hook.get("revision") == status.get("candidateRevision")
        ):
            return f"held by webhook {hook.get('name')} ({hook.get('type')})"
    return None


def _wait_section(endpoint: Mapping[str, Any], now: datetime.datetime, width: int) -> list[_Line]:
    """The progress bar through the current wait (or through green's readiness)."""
    status = _status(endpoint)
    step = _mapping(status.get("step"))
    if not status.get("candidateRevision") or not step:
        return []
    if status.get("phase") not in ("Updating", "Creating"):
        return []
    stage = step.get("stage")
    bar = _bar_width(width)
    if stage == "Provisioning":
        role = "blue" if status.get("phase") == "Creating" else "green"
        ready, desired = _fleet_ready(status, role)
        fraction = ready / desired if desired else 0.0
        label = "Fleet Ready" if role == "blue" else "Green Ready"
        line = (
            _Line()
            .add(f"{label:<18}")
            .add(f"[{progress_bar(fraction, bar)}]", "cyan")
            .add(f" {ready}/{desired} replicas")
        )
        if (held := _held_gate(status)) is not None:
            line.add(f"; {held}", "yellow")
        return [line]
    if stage not in ("Baking", "TerminationWait"):
        return []
    started = parse_timestamp(step.get("startedAt"))
    until = parse_timestamp(step.get("bakeUntil"))
    if started is None or until is None:
        return []
    # A pause freezes the clock: resuming extends the wait by the pause's length.
    paused_at = parse_timestamp(status.get("pausedAt")) if status.get("paused") else None
    moment = min(now, paused_at) if paused_at is not None else now
    length = max(0.0, (until - started).total_seconds())
    elapsed = max(0.0, (moment - started).total_seconds())
    fraction = 1.0 if length == 0 else min(1.0, elapsed / length)
    if stage == "Baking":
        label = f"Bake step {_int(step.get('index'))}/{_int(step.get('total'))}"
    else:
        label = "Termination wait"
    line = (
        _Line()
        .add(f"{label:<18}")
        .add(f"[{progress_bar(fraction, bar)}]", "cyan")
        .add(f" {round(100 * fraction):>3}%")
    )
    if paused_at is not None:
        line.add(f"  {format_duration(min(elapsed, length))} of {format_duration(length)}, ")
        line.add("paused", "yellow")
    elif elapsed < length:
        line.add(
            f"  {format_duration(elapsed)} of {format_duration(length)},"
            f" {format_duration(length - elapsed)} left"
        )
    else:
        line.add(*_after_the_wait(status))
    return [line]


def _after_the_wait(status: Mapping[str, Any]) -> tuple[str, str | None]:
    """What a wait that is over waits on: the alarms, a webhook gate, or nothing."""
    unhealthy = [
        _mapping(a)
        for a in _sequence(status.get("alarms"))
        if _mapping(a).get("verdict") != "Healthy"
    ]
    if unhealthy:
        return "  wait over; held for a Healthy verdict", "yellow"
    held = _held_gate(status) or _held_capacity(status)
    if held is not None:
        return f"  wait over; {held}", "yellow"
    return "  wait over; moving on", None


def _held_capacity(status: Mapping[str, Any]) -> str | None:
    """The capacity-aware cutover's hold on the deployment, if it holds it.

    >>> held = {"candidateRevision": "r2", "capacity": {"revision": "r2",
    ...     "decision": "Holding", "neededReplicas": 4, "readyReplicas": 2,
    ...     "pendingReplicas": 2}}
    >>> _held_capacity(held)
    'held for capacity: 2 of 4 green replicas Ready, 2 Pending'
    >>> _held_capacity({**held, "capacity": {**held["capacity"], "decision": "Ready"}})
    """
    capacity = _mapping(status.get("capacity"))
    if capacity.get("revision") != status.get("candidateRevision"):
        return None
    if capacity.get("decision") not in ("PreScaling", "Holding"):
        return None
    pending = _int(capacity.get("pendingReplicas"))
    text = (
        f"held for capacity: {_int(capacity.get('readyReplicas'))} of "
        f"{_int(capacity.get('neededReplicas'))} green replicas Ready"
    )
    return text + (f", {pending} Pending" if pending else "")


_CAPACITY_STYLE = {"Ready": "green", "Holding": "red", "PreScaling": "yellow", "Measuring": None}


def _capacity_section(status: Mapping[str, Any], now: datetime.datetime) -> list[_Line]:
    """Each variant's capacity-aware cutover: the decision, the fit and what it waits
    for (the scheduler's words), and the last sample of load per replica against latency.

    >>> now = datetime.datetime(2026, 1, 1, 0, 10, tzinfo=datetime.UTC)
    >>> status = {"variants": [{"name": "main", "capacity": {"revision": "r2",
    ...     "samples": [{"at": "2026-01-01T00:09:50Z", "loadPerReplica": 100.0,
    ...                  "replicas": 1, "latencySeconds": 0.004}],
    ...     "neededReplicas": 3, "readyReplicas": 2, "pendingReplicas": 1,
    ...     "verdict": "Inconclusive", "decision": "Holding",
    ...     "reason": "green needs 3 replicas for 300 req/s; 2 of 3 Ready, 1 Pending (x)",
    ...     "decidedAt": "2026-01-01T00:09:58Z"}}]}
    >>> print(_lines(_capacity_section(status, now), 100, False), end="")
    Capacity
      main  Holding     Inconclusive  needs 3, 2 Ready, 1 Pending  2s ago
            green needs 3 replicas for 300 req/s
            2 of 3 Ready, 1 Pending (x)
            fit: 1 samples, last 100 req/s per replica at 4 ms (10s ago)
    """
    variants = [_mapping(v) for v in _sequence(status.get("variants"))]
    lines: list[_Line] = []
    for variant in variants:
        capacity = _mapping(variant.get("capacity"))
        if not capacity:
            continue
        decision = str(capacity.get("decision", "Measuring"))
        verdict = str(capacity.get("verdict") or "-")
        decided = parse_timestamp(capacity.get("decidedAt"))
        needed = capacity.get("neededReplicas")
        counts = (
            f"needs {needed}, {_int(capacity.get('readyReplicas'))} Ready, "
            f"{_int(capacity.get('pendingReplicas'))} Pending"
            if needed is not None
            else "measuring green"
        )
        lines.append(
            _Line()
            .add(f"  {variant.get('name')!s:<6}")
            .add(f"{decision:<12}", _CAPACITY_STYLE.get(decision))
            .add(f"{verdict:<14}", _VERDICT_STYLE.get(verdict))
            .add(counts)
            .add(f"  {_ago(decided, now)} ago" if decided else "", "dim")
        )
        for part in str(capacity.get("reason") or "").split("; "):
            if part:
                lines.append(_Line().add(f"        {part}", "dim"))
        samples = [_mapping(x) for x in _sequence(capacity.get("samples"))]
        if samples:
            last = samples[-1]
            latency = last.get("latencySeconds")
            at = f"{float(latency) * 1000:.0f} ms" if isinstance(latency, int | float) else "-"
            cpu = last.get("cpuCoresPerReplica")
            cpu_text = f", {float(cpu):.2f} cores" if isinstance(cpu, int | float) else ""
            taken = _ago(parse_timestamp(last.get("at")), now)
            lines.append(
                _Line().add(
                    f"        fit: {len(samples)} samples, last "
                    f"{float(last.get('loadPerReplica', 0)):.0f} req/s per replica at {at}"
                    f"{cpu_text} ({taken} ago)"
                )
            )
    return [_Line().add("Capacity", "bold"), *lines] if lines else []


def _traffic_section(status: Mapping[str, Any], width: int) -> list[_Line]:
    fleets = _mapping(status.get("fleets"))
    if not fleets:
        return []
    lines = [_Line().add("Traffic", "bold")]
    bar = _bar_width(width)
    order = {"blue": 0, "green": 1}
    for key in sorted(fleets, key=lambda k: (str(k)[:-5], order.get(str(k).split("/")[-1], 2))):
        fleet = _mapping(fleets[key])
        role = str(key).split("/")[-1]
        percent = _int(fleet.get("trafficPercent"))
        style = "blue" if role == "blue" else "green"
        lines.append(
            _Line()
            .add(f"  {key!s:<7}", style)
            .add(f"{_short(fleet.get('revision')):<11}")
            .add(f"[{progress_bar(percent / 100, bar)}]", style)
            .add(f" {percent:>3}%")
            .add(
                f"  {_int(fleet.get('readyReplicas'))}/{_int(fleet.get('replicas'))} Ready",
            )
            .add(f"  {fleet.get('deployment', '')}", "dim")
        )
    return lines


def _alarm_section(status: Mapping[str, Any], now: datetime.datetime) -> list[_Line]:
    alarms = [_mapping(a) for a in _sequence(status.get("alarms"))]
    cause = _mapping(status.get("rollbackCause"))
    if not alarms and not cause:
        return []
    lines = [_Line().add("Alarms", "bold")]
    for alarm in alarms:
        verdict = str(alarm.get("verdict", "?"))
        value = alarm.get("value")
        shown = f"{value:.4g}" if isinstance(value, int | float) else "-"
        evaluated = _ago(parse_timestamp(alarm.get("evaluatedAt")), now)
        lines.append(
            _Line()
            .add(f"  {alarm.get('name', '?')!s:<18}")
            .add(f"{verdict:<13}", _VERDICT_STYLE.get(verdict))
            .add(f"value {shown:<9}")
            .add(f"{evaluated + ' ago':<9}", "dim")
            .add(f"  {alarm.get('reason', '')}", "dim")
        )
    if cause:
        value = cause.get("value")
        shown = f" (value {value:.4g})" if isinstance(value, int | float) else ""
        lines.append(
            _Line()
            .add("  rollback cause: ", "red")
            .add(f"alarm {cause.get('name', '?')} {cause.get('verdict', '')}{shown}: ")
            .add(str(cause.get("reason", "")), "dim")
        )
    return lines


_WEBHOOK_STYLE = {"Passed": "green", "Delivered": "green", "Failed": "red", "Pending": "yellow"}


def _webhook_section(status: Mapping[str, Any], now: datetime.datetime) -> list[_Line]:
    """Each variant's webhook gates and notifications: state, last answer, when."""
    variants = [_mapping(v) for v in _sequence(status.get("variants"))]
    many = len(variants) > 1
    lines: list[_Line] = []
    for variant in variants:
        for hook in map(_mapping, _sequence(variant.get("webhooks"))):
            state = str(hook.get("state", "?"))
            verdict = str(hook.get("verdict") or "-")
            called = parse_timestamp(hook.get("calledAt"))
            when = f"{_ago(called, now)} ago" if called else "not called yet"
            name = f"{variant.get('name')}/{hook.get('name')}" if many else hook.get("name")
            lines.append(
                _Line()
                .add(f"  {name!s:<18}")
                .add(f"{hook.get('type', '?')!s:<17}")
                .add(f"{state:<10}", _WEBHOOK_STYLE.get(state))
                .add(f"{verdict:<13}", _VERDICT_STYLE.get(verdict))
                .add(f"{when:<14}", "dim")
                .add(f"  {hook.get('reason', '')}", "dim")
            )
    return [_Line().add("Webhooks", "bold"), *lines] if lines else []


def _outcome_section(endpoint: Mapping[str, Any], now: datetime.datetime) -> list[_Line]:
    """What the last deployment came to, once nothing is in flight."""
    status = _status(endpoint)
    if status.get("candidateRevision"):
        return []
    last = _mapping(status.get("lastDeployment"))
    if not last:
        return []
    outcome = str(last.get("outcome", "?"))
    finished = _ago(parse_timestamp(last.get("finishedAt")), now)
    glyph = "✓" if outcome == "Succeeded" else "✗"
    line = (
        _Line()
        .add(f"{glyph} {outcome}", _OUTCOME_STYLE.get(outcome, "bold") + "+bold")
        .add(f" {finished} ago: revision {_short(last.get('revision'))}")
        .add(f" — {last.get('reason', '')}")
    )
    lines = [line]
    degraded = _condition(status, "Degraded")
    if degraded.get("status") == "True" and degraded.get("message"):
        lines.append(_Line().add("  Degraded: ", "red").add(str(degraded["message"])))
    return lines


def _event_time(event: Mapping[str, Any]) -> datetime.datetime | None:
    """The latest of an Event's times (``eventTime`` carries microseconds)."""
    fields = ("lastTimestamp", "eventTime", "firstTimestamp")
    moments = [m for f in fields if (m := parse_timestamp(event.get(f))) is not None]
    if moments:
        return max(moments)
    return parse_timestamp(_mapping(event.get("metadata")).get("creationTimestamp"))


def _event_order(event: Mapping[str, Any]) -> tuple[datetime.datetime, int]:
    """Time, then the API server's write order for events stamped in the same instant."""
    epoch = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    version = str(_mapping(event.get("metadata")).get("resourceVersion", ""))
    return _event_time(event) or epoch, int(version) if version.isdigit() else 0


def _events_section(
    events: Sequence[Mapping[str, Any]], now: datetime.datetime, limit: int = EVENTS_SHOWN
) -> list[_Line]:
    if not events:
        return []
    ordered = sorted(events, key=_event_order)[-limit:]
    lines = [_Line().add("Events", "bold")]
    for event in ordered:
        warning = event.get("type") == "Warning"
        age = _ago(_event_time(event), now)
        lines.append(
            _Line()
            .add(f"  {age:>6}  ", "dim")
            .add(f"{event.get('reason', '')!s:<20}", "red" if warning else None)
            .add(f" {event.get('message') or event.get('note') or ''}")
        )
    return lines


def _join(*sections: list[_Line]) -> list[_Line]:
    lines: list[_Line] = []
    for section in sections:
        if section:
            if lines:
                lines.append(_Line())
            lines.extend(section)
    return lines


# -- the views -----------------------------------------------------------------------------------


def render_watch(
    endpoint: Mapping[str, Any],
    *,
    now: datetime.datetime,
    events: Sequence[Mapping[str, Any]] = (),
    width: int = 100,
    color: bool = False,
) -> str:
    """One frame of ``kubectl fleetshift watch``: the steps, a progress bar through
    the current wait, traffic per fleet, alarm verdicts and the latest events.

    ``endpoint`` is the Endpoint as the API server returns it; ``events`` are
    core/v1 Events about it (any order; the newest :data:`EVENTS_SHOWN` are
    shown). Every line fits in ``width`` columns; ``color`` adds ANSI colours.
    The bar is measured from ``status.step.startedAt`` to ``status.step.bakeUntil``
    and stops at ``status.pausedAt`` while the rollout is paused.
    """
    width = max(40, width)
    status = _status(endpoint)
    head = _header(endpoint, now)
    if status.get("candidateRevision"):
        head = [*head, *_wait_section(endpoint, now, width)]
    lines = _join(
        head,
        _steps_section(endpoint),
        _traffic_section(status, width),
        _alarm_section(status, now),
        _capacity_section(status, now),
        _webhook_section(status, now),
        _outcome_section(endpoint, now),
        _events_section(events, now),
    )
    return _lines(lines, width, color)


def _spec_section(endpoint: Mapping[str, Any]) -> list[_Line]:
    spec = _mapping(endpoint.get("spec"))
    lines = [_Line().add("Spec", "bold")]
    for variant in map(_mapping, _sequence(spec.get("variants"))):
        model = _mapping(variant.get("model"))
        autoscaling = _mapping(variant.get("autoscaling"))
        scaling = (
            f", autoscaling {autoscaling.get('minReplicas')}-{autoscaling.get('maxReplicas')}"
            if autoscaling
            else ""
        )
        lines.append(
            _Line().add(
                f"  variant {variant.get('name', '?')}: {model.get('uri', '?')}"
                f" x{_int(variant.get('replicas'), 1)}{scaling}"
                + (f", image {variant['image']}" if variant.get("image") else "")
            )
        )
    config = _mapping(spec.get("deploymentConfig"))
    bake, termination = _waits(endpoint)
    policy = f"  policy: {_policy_summary(endpoint)}, bake {bake}s"
    if termination is not None:
        policy += f", termination wait {termination}s"
    lines.append(_Line().add(policy))
    alarms = _sequence(_mapping(config.get("autoRollback")).get("alarms"))
    if alarms:
        names = ", ".join(str(_mapping(a).get("name")) for a in alarms)
        lines.append(_Line().add(f"  alarms: {names}"))
    router = _mapping(spec.get("traffic")).get("router", "Replicas")
    lines.append(_Line().add(f"  router: {router}"))
    return lines


def _conditions_section(status: Mapping[str, Any], now: datetime.datetime) -> list[_Line]:
    conditions = [_mapping(c) for c in _sequence(status.get("conditions"))]
    if not conditions:
        return []
    lines = [_Line().add("Conditions", "bold")]
    for condition in conditions:
        kind, value = str(condition.get("type", "?")), str(condition.get("status", "?"))
        bad = (kind == "Degraded") == (value == "True")
        since = _ago(parse_timestamp(condition.get("lastTransitionTime")), now)
        lines.append(
            _Line()
            .add(f"  {kind:<12}")
            .add(f"{value:<8}", "red" if bad and kind != "Progressing" else None)
            .add(f"{condition.get('reason', '')!s:<22}")
            .add(f"{since + ' ago':<10}", "dim")
            .add(f" {condition.get('message', '')}")
        )
    return lines


def _controls_section(endpoint: Mapping[str, Any]) -> list[_Line]:
    annotations = _mapping(_mapping(endpoint.get("metadata")).get("annotations"))
    handled = _mapping(_status(endpoint).get("handledActions"))
    lines = []
    for action in ("paused", "promote", "abort", "retry"):
        value = annotations.get(f"fleetshift.dev/{action}")
        if value is None:
            continue
        note = ""
        if action != "paused":
            note = " (handled)" if handled.get(action) == value else " (not handled yet)"
        lines.append(_Line().add(f"  fleetshift.dev/{action}={value}{note}"))
    return [_Line().add("Controls", "bold"), *lines] if lines else []


def render_status(
    endpoint: Mapping[str, Any],
    *,
    now: datetime.datetime,
    events: Sequence[Mapping[str, Any]] = (),
    width: int = 100,
    color: bool = False,
) -> str:
    """``kubectl fleetshift status NAME``: the watch frame plus the spec in brief,
    the conditions, the controls in effect and the last deployments."""
    width = max(40, width)
    status = _status(endpoint)
    metadata = _mapping(endpoint.get("metadata"))
    head = _header(endpoint, now)
    head.append(
        _Line().add(
            f"generation {metadata.get('generation', '-')}, observed"
            f" {status.get('observedGeneration', '-')} · created"
            f" {_ago(parse_timestamp(metadata.get('creationTimestamp')), now)} ago",
            "dim",
        )
    )
    if status.get("candidateRevision"):
        head.extend(_wait_section(endpoint, now, width))
    history = _sequence(status.get("history"))
    recent = [_Line().add("Recent deployments", "bold")] if history else []
    recent.extend(_history_lines(history[-3:], now))
    lines = _join(
        head,
        _spec_section(endpoint),
        _steps_section(endpoint),
        _traffic_section(status, width),
        _alarm_section(status, now),
        _capacity_section(status, now),
        _webhook_section(status, now),
        _conditions_section(status, now),
        _controls_section(endpoint),
        _outcome_section(endpoint, now),
        recent,
        _events_section(events, now, limit=10),
    )
    return _lines(lines, width, color)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return (
        "\n".join(
            "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
        )
        + "\n"
    )


def _step_cell(status: Mapping[str, Any]) -> str:
    step = _mapping(status.get("step"))
    if not status.get("candidateRevision") or not step:
        return "-"
    stage = str(step.get("stage", "?"))
    total = _int(step.get("total"))
    index = _int(step.get("index"))
    cell = f"{stage} {index}/{total}" if total and index else stage
    if _held_capacity(status) is not None:
        cell += " (capacity)"
    return cell + (" (paused)" if status.get("paused") else "")


def render_table(
    endpoints: Sequence[Mapping[str, Any]],
    *,
    now: datetime.datetime,
    all_namespaces: bool = False,
) -> str:
    """``kubectl fleetshift get``: one row per Endpoint.

    >>> now = datetime.datetime(2026, 1, 1, 0, 10, tzinfo=datetime.UTC)
    >>> churn = {"metadata": {"name": "churn", "creationTimestamp": "2026-01-01T00:00:00Z"},
    ...     "status": {"phase": "Updating", "activeRevision": "r1", "candidateRevision": "r2",
    ...     "greenTrafficPercent": 25, "step": {"stage": "Baking", "index": 1, "total": 2}}}
    >>> print(render_table([churn], now=now), end="")
    NAME    PHASE      REVISION   GREEN%   STEP          AGE   VARIANTS
    churn   Updating   r1 → r2    25       Baking 1/2    10m   -

    With several variants, VARIANTS gives each one's share of the traffic it actually
    serves, what its weight asked for when that differs, and a shadow's sampling:

    >>> churn["spec"] = {"variants": [{"name": "a"}, {"name": "b"},
    ...     {"name": "s", "shadow": {"samplingPercent": 10}}]}
    >>> churn["status"]["variants"] = [
    ...     {"name": "a", "trafficPercent": 75, "requestedTrafficPercent": 80},
    ...     {"name": "b", "trafficPercent": 25, "requestedTrafficPercent": 20},
    ...     {"name": "s", "trafficPercent": 0, "requestedTrafficPercent": 0}]
    >>> print(render_table([churn], now=now).splitlines()[1].split("   ")[-1])
    a 75% (asked 80%), b 25% (asked 20%), s shadow 10%
    """
    header = ["NAME", "PHASE", "REVISION", "GREEN%", "STEP", "AGE", "VARIANTS"]
    rows = [(["NAMESPACE"] if all_namespaces else []) + header]
    for endpoint in endpoints:
        namespace, name = _name(endpoint)
        status = _status(endpoint)
        active, candidate = status.get("activeRevision"), status.get("candidateRevision")
        revision = _short(active) + (f" → {candidate}" if candidate else "")
        if candidate and not active:
            revision = str(candidate)
        created = parse_timestamp(_mapping(endpoint.get("metadata")).get("creationTimestamp"))
        row = [
            name,
            str(status.get("phase") or "Pending"),
            revision,
            str(_int(status.get("greenTrafficPercent"))),
            _step_cell(status),
            _ago(created, now),
            _variants_cell(endpoint),
        ]
        rows.append(([namespace] if all_namespaces else []) + row)
    return _table(rows)


def _variants_cell(endpoint: Mapping[str, Any]) -> str:
    """Each variant's served share (and what its weight asked, when that differs)."""
    specs = {
        str(v.get("name")): _mapping(v)
        for v in _mapping(endpoint.get("spec")).get("variants") or []
        if isinstance(v, Mapping)
    }
    parts = []
    for variant in map(_mapping, _status(endpoint).get("variants") or []):
        name = str(variant.get("name"))
        shadow = _mapping(specs.get(name, {})).get("shadow")
        if isinstance(shadow, Mapping):
            parts.append(f"{name} shadow {_int(shadow.get('samplingPercent', 100))}%")
            continue
        served, asked = (
            _int(variant.get("trafficPercent")),
            _int(variant.get("requestedTrafficPercent")),
        )
        parts.append(f"{name} {served}%" + (f" (asked {asked}%)" if asked != served else ""))
    return ", ".join(parts) or "-"


def _history_lines(records: Sequence[Any], now: datetime.datetime) -> list[_Line]:
    lines = []
    for record in map(_mapping, records):
        outcome = str(record.get("outcome", "?"))
        lines.append(
            _Line()
            .add(f"  {_short(record.get('revision')):<11}")
            .add(f"{outcome:<11}", _OUTCOME_STYLE.get(outcome))
            .add(f"{_ago(parse_timestamp(record.get('finishedAt')), now) + ' ago':<10}")
            .add(f" {record.get('reason', '')}", "dim")
        )
    return lines


def render_history(endpoint: Mapping[str, Any]) -> str:
    """``kubectl fleetshift history NAME``: the finished deployments, oldest first.

    >>> churn = {"status": {"history": [{"revision": "r2", "fromRevision": "r1",
    ...     "outcome": "RolledBack", "reason": "aborted on request",
    ...     "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:01:05Z"}]}}
    >>> print(render_history(churn), end="")
    #   REVISION   FROM   OUTCOME      STARTED                DURATION   REASON
    1   r2         r1     RolledBack   2026-01-01T00:00:00Z   1m5s       aborted on request
    """
    history = [_mapping(h) for h in _sequence(_status(endpoint).get("history"))]
    if not history:
        return "no finished deployments yet\n"
    rows = [["#", "REVISION", "FROM", "OUTCOME", "STARTED", "DURATION", "REASON"]]
    for number, record in enumerate(history, start=1):
        started = parse_timestamp(record.get("startedAt"))
        finished = parse_timestamp(record.get("finishedAt"))
        took = (
            format_duration((finished - started).total_seconds())
            if started is not None and finished is not None
            else "-"
        )
        rows.append(
            [
                str(number),
                _short(record.get("revision")),
                _short(record.get("fromRevision")),
                str(record.get("outcome", "?")),
                str(record.get("startedAt", "-")),
                took,
                str(record.get("reason", "")),
            ]
        )
    return _table(rows)
