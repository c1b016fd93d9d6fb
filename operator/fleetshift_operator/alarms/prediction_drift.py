"""The drift alarm: green's predictions against blue's, read from Prometheus.

The runtime counts every prediction it answers into ``fleetshift_prediction`` (a
histogram per revision, ``docs/runtime-metrics.md``). Over the window since the variant's
deployment began, both revisions' bucket counts come back in one query; the decision is
:func:`~fleetshift_operator.alarms.drift.drift_verdict`. No data is no predictions, which
is Inconclusive: the step holds, it is never promoted on nothing.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from typing import Any

from fleetshift_operator.alarms.base import AlarmContext, AlarmResult
from fleetshift_operator.alarms.drift import DriftEvidence, bucket_counts, drift_verdict
from fleetshift_operator.alarms.prometheus import Prometheus, PrometheusError
from fleetshift_operator.alarms.semantics import Verdict
from fleetshift_operator.alarms.sources import DeploymentWindowSource, failure_result
from fleetshift_operator.api import DriftAlarm

_SELECTOR = (
    'namespace="${namespace}",endpoint="${endpoint}",revision=~"${revision}|${blueRevision}"'
)


def drift_query(window_seconds: int) -> str:
    """Both revisions' prediction counts per bucket over the last ``window_seconds``.

    >>> print(drift_query(90).replace(_SELECTOR, "..."))
    sum by (revision, le) (increase(fleetshift_prediction_bucket{...}[90s]))
    """
    return (
        f"sum by (revision, le) (increase(fleetshift_prediction_bucket{{{_SELECTOR}}}"
        f"[{window_seconds}s]))"
    )


def histograms(series: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    """Per revision, the bucket counts (not cumulative) in order of ``le``.

    >>> rows = [{"metric": {"revision": "g", "le": le}, "value": [0, v]}
    ...         for le, v in (("+Inf", "100"), ("0.5", "30"), ("0.1", "10"))]
    >>> histograms(rows)
    {'g': [10, 20, 70]}
    """
    cumulative: dict[str, list[tuple[float, float]]] = {}
    for item in series:
        labels = item["metric"]
        value = float(item["value"][1])
        if math.isnan(value):
            continue
        bound = math.inf if labels.get("le") == "+Inf" else float(labels.get("le", "nan"))
        cumulative.setdefault(labels.get("revision", ""), []).append((bound, value))
    return {
        revision: bucket_counts([value for _, value in sorted(points)])
        for revision, points in cumulative.items()
    }


def describe(evidence: DriftEvidence, threshold: float) -> str:
    """The evidence in one line, for status and ``kubectl fleetshift watch``.

    >>> print(describe(DriftEvidence("Breaching", 0.61, 400, 900), 0.2))
    predictions of green (400) against blue (900): PSI 0.61, over 0.2: drifted
    """
    if evidence.verdict == "Inconclusive":
        return (
            f"predictions of green ({evidence.green_samples}) against blue "
            f"({evidence.blue_samples}): too few to compare"
        )
    word = "drifted" if evidence.verdict == "Breaching" else "not drifted"
    relation = "over" if evidence.verdict == "Breaching" else "at most"
    return (
        f"predictions of green ({evidence.green_samples}) against blue "
        f"({evidence.blue_samples}): PSI {evidence.index:g}, {relation} {threshold:g}: {word}"
    )


class DriftSource(DeploymentWindowSource):
    """Green's predictions against blue's, every poll (see the module docstring)."""

    def __init__(
        self, name: str, alarm: DriftAlarm, context: AlarmContext, prometheus: Prometheus
    ) -> None:
        super().__init__(name, context, prometheus)
        self.alarm = alarm

    def validate(self) -> AlarmResult | None:
        return self.check_queries(drift_query(60))

    def evaluate(self, previous: Verdict | None, now: datetime.datetime) -> AlarmResult:
        del previous  # each poll reads the whole window since the deployment began
        window_seconds = self.window_seconds(now)
        try:
            series = self.prometheus.instant(self.context.render(drift_query(window_seconds)))
        except PrometheusError as error:
            return failure_result(self.name, error)
        found = histograms(series)
        green = found.get(self.context.revision, [])
        blue = found.get(self.context.blue_revision, [])
        if not green or not blue or len(green) != len(blue):
            evidence = DriftEvidence("Inconclusive", math.nan, round(sum(green)), round(sum(blue)))
        else:
            evidence = drift_verdict(green, blue, self.alarm.threshold, self.alarm.minSamples)
        value = None if math.isnan(evidence.index) else evidence.index
        return AlarmResult(
            self.name, evidence.verdict, value, describe(evidence, self.alarm.threshold)
        )
