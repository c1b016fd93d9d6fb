"""The comparison alarm: green against blue on the same traffic, read from Prometheus.

Counts come from the runtime's counters (``docs/runtime-metrics.md``) over the window
since the variant's deployment began, for both revisions in one query each; the
decision is :func:`~fleetshift_operator.alarms.sequential.compare_rates`. No data is
zero traffic, which is Inconclusive: the step holds, it is never promoted on nothing.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from fleetshift_operator.alarms.base import AlarmContext, AlarmResult
from fleetshift_operator.alarms.prometheus import Prometheus, PrometheusError
from fleetshift_operator.alarms.semantics import Verdict
from fleetshift_operator.alarms.sequential import Counts, Evidence, compare_rates
from fleetshift_operator.alarms.sources import DeploymentWindowSource, failure_result
from fleetshift_operator.api import ComparisonAlarm

_SELECTOR = (
    'namespace="${namespace}",endpoint="${endpoint}",revision=~"${revision}|${blueRevision}"'
)


@dataclass(frozen=True)
class ComparisonQueries:
    """The PromQL of the counts by revision: ``trials`` and ``counted``, which are the
    failures themselves (``ErrorRate``: 5xx) or the successes (``SlowRequests``: requests
    within the threshold), subtracted from the trials in Python so that Prometheus never
    computes the trials twice."""

    trials: str
    counted: str
    counted_are_failures: bool

    def failures(self, trials: float, counted: float) -> float:
        return counted if self.counted_are_failures else trials - counted


def comparison_queries(alarm: ComparisonAlarm, window_seconds: int) -> ComparisonQueries:
    """The queries of one alarm over the last ``window_seconds``.

    >>> queries = comparison_queries(ComparisonAlarm(), 90)
    >>> print(queries.counted.replace(_SELECTOR, "..."))
    sum by (revision) (increase(fleetshift_invocation_5xx_errors_total{...}[90s]))
    >>> queries.failures(trials=200, counted=3)
    3
    >>> slow = ComparisonAlarm(metric="SlowRequests", latencyThresholdSeconds=0.1)
    >>> queries = comparison_queries(slow, 90)
    >>> "_count{" in queries.trials, 'le="0.1"' in queries.counted
    (True, True)
    >>> queries.failures(trials=200, counted=190)
    10
    """
    window = f"[{window_seconds}s]"

    def counted(metric: str, extra: str = "") -> str:
        return f"sum by (revision) (increase({metric}{{{_SELECTOR}{extra}}}{window}))"

    if alarm.metric == "ErrorRate":
        return ComparisonQueries(
            trials=counted("fleetshift_invocations_total"),
            counted=counted("fleetshift_invocation_5xx_errors_total"),
            counted_are_failures=True,
        )
    histogram = "fleetshift_model_latency_seconds"
    # prometheus_client writes a bucket bound as Python's repr of the float ("0.1", "1.0").
    bound = float(alarm.latencyThresholdSeconds or 0)
    return ComparisonQueries(
        trials=counted(f"{histogram}_count"),
        counted=counted(f"{histogram}_bucket", f',le="{bound!r}"'),
        counted_are_failures=False,
    )


def describe(evidence: Evidence, green: Counts, blue: Counts, margin_percent: float) -> str:
    """The evidence in one line, for status and ``kubectl fleetshift watch``.

    >>> e = Evidence("Healthy", 0.002, 0.002, -0.0051, 0.0095)
    >>> print(describe(e, Counts(2000, 4), Counts(8000, 16), 1.0))  # doctest: +ELLIPSIS
    green 0.20% of 2000, blue 0.20% of 8000: green - blue in [-0.51, +0.95] points, margin 1: ...
    """
    verdicts = {"Healthy": "not worse", "Breaching": "worse", "Inconclusive": "too little traffic"}
    return (
        f"green {100 * evidence.green_rate:.2f}% of {green.trials}, "
        f"blue {100 * evidence.blue_rate:.2f}% of {blue.trials}: green - blue in "
        f"[{100 * evidence.low:+.2f}, {100 * evidence.high:+.2f}] points, "
        f"margin {margin_percent:g}: {verdicts[evidence.verdict]}"
    )


class ComparisonSource(DeploymentWindowSource):
    """Green against blue, every poll (see the module docstring)."""

    def __init__(
        self, name: str, alarm: ComparisonAlarm, context: AlarmContext, prometheus: Prometheus
    ) -> None:
        super().__init__(name, context, prometheus)
        self.alarm = alarm

    def validate(self) -> AlarmResult | None:
        queries = comparison_queries(self.alarm, 60)
        return self.check_queries(queries.trials, queries.counted)

    def _counts(self, window_seconds: int) -> dict[str, Counts]:
        queries = comparison_queries(self.alarm, window_seconds)
        trials = self._by_revision(queries.trials)
        counted = self._by_revision(queries.counted)
        counts = {}
        for revision in (self.context.revision, self.context.blue_revision):
            # increase() extrapolates: round, and never more failures than trials.
            total = max(0, round(trials.get(revision, 0.0)))
            failures = queries.failures(total, counted.get(revision, 0.0))
            counts[revision] = Counts(total, min(total, max(0, round(failures))))
        return counts

    def _by_revision(self, query: str) -> dict[str, float]:
        values = {}
        for series in self.prometheus.instant(self.context.render(query)):
            value = float(series["value"][1])
            if not math.isnan(value):
                values[series["metric"].get("revision", "")] = value
        return values

    def evaluate(self, previous: Verdict | None, now: datetime.datetime) -> AlarmResult:
        try:
            counts = self._counts(self.window_seconds(now))
        except PrometheusError as error:
            return failure_result(self.name, error)
        green, blue = counts[self.context.revision], counts[self.context.blue_revision]
        evidence = compare_rates(
            green, blue, self.alarm.marginPercent / 100, self.alarm.confidencePercent / 100
        )
        return AlarmResult(
            self.name,
            evidence.verdict,
            round(100 * evidence.high, 2),
            describe(evidence, green, blue, self.alarm.marginPercent),
        )
