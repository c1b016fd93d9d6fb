"""Prometheus-backed alarm sources: named alerting rules and PromQL queries."""

from __future__ import annotations

import datetime
import math

from fleetshift_operator.alarms.base import AlarmContext, AlarmResult
from fleetshift_operator.alarms.prometheus import Prometheus, PrometheusError
from fleetshift_operator.alarms.semantics import Verdict, evaluate
from fleetshift_operator.api import PrometheusRuleAlarm, QueryAlarm


def failure_result(name: str, error: PrometheusError) -> AlarmResult:
    if error.kind == "invalid":
        return AlarmResult(name, "Error", None, f"invalid query: {error}", fatal=True)
    if error.kind == "unreachable":
        return AlarmResult(name, "Inconclusive", None, f"Prometheus unreachable: {error}")
    return AlarmResult(name, "Error", None, f"Prometheus error: {error}")


class DeploymentWindowSource:
    """What the alarms that read green and blue over the whole deployment so far (the
    comparison, the drift of predictions) share: their name, context and Prometheus, the
    window that grows from the deployment's start, and the check of their queries."""

    def __init__(self, name: str, context: AlarmContext, prometheus: Prometheus) -> None:
        self.name = name
        self.context = context
        self.prometheus = prometheus

    def window_seconds(self, now: datetime.datetime) -> int:
        """Seconds since the deployment began (at least 1).

        >>> ctx = AlarmContext("ns", "ep", "main", "g", "b",
        ...                    since=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
        >>> s = DeploymentWindowSource("x", ctx, None)  # type: ignore[arg-type]
        >>> s.window_seconds(datetime.datetime(2026, 1, 1, 0, 1, 0, 300, tzinfo=datetime.UTC))
        61
        """
        since = self.context.since or now
        return max(1, math.ceil((now - since).total_seconds()))

    def check_queries(self, *queries: str) -> AlarmResult | None:
        """None when Prometheus runs every query; else the failure's result (an invalid
        query is fatal: the deployment fails before traffic moves)."""
        try:
            for query in queries:
                self.prometheus.instant(self.context.render(query))
        except PrometheusError as error:
            return failure_result(self.name, error)
        return None


class QuerySource:
    """A PromQL expression judged N of M, CloudWatch-style."""

    def __init__(
        self, name: str, alarm: QueryAlarm, context: AlarmContext, prometheus: Prometheus
    ) -> None:
        self.name = name
        self.alarm = alarm
        self.query = context.render(alarm.query)
        self.prometheus = prometheus

    def validate(self) -> AlarmResult | None:
        try:
            self.prometheus.instant(self.query)
        except PrometheusError as error:
            return failure_result(self.name, error)
        return None

    def evaluate(self, previous: Verdict | None, now: datetime.datetime) -> AlarmResult:
        alarm = self.alarm
        try:
            slots = self.prometheus.slots(
                self.query,
                now,
                alarm.periodSeconds,
                alarm.evaluationPeriods,
                worst_is_max=alarm.comparison in (">=", ">"),
            )
        except PrometheusError as error:
            return failure_result(self.name, error)
        judged = evaluate(
            slots,
            alarm.threshold,
            alarm.comparison,
            alarm.datapointsToAlarm or alarm.evaluationPeriods,
            alarm.treatMissingData,
            previous,
        )
        return AlarmResult(self.name, judged.verdict, judged.value, judged.reason)


class PrometheusRuleSource:
    """A named alerting rule: Breaching while it fires for this Endpoint."""

    def __init__(
        self, name: str, alarm: PrometheusRuleAlarm, context: AlarmContext, prometheus: Prometheus
    ) -> None:
        self.name = name
        self.alert = alarm.alertName
        self.matchers = {label: context.render(value) for label, value in alarm.matchers.items()}
        self.prometheus = prometheus

    def validate(self) -> AlarmResult | None:
        try:
            known = self.prometheus.alert_rule_exists(self.alert)
        except PrometheusError as error:
            return failure_result(self.name, error)
        if not known:
            return AlarmResult(
                self.name,
                "Error",
                None,
                f"Prometheus has no alerting rule named {self.alert!r}",
                fatal=True,
            )
        return None

    def evaluate(self, previous: Verdict | None, now: datetime.datetime) -> AlarmResult:
        problem = self.validate()
        if problem is not None:
            return problem
        try:
            firing = self.prometheus.firing(self.alert, self.matchers)
        except PrometheusError as error:
            return failure_result(self.name, error)
        if firing:
            return AlarmResult(
                self.name,
                "Breaching",
                float(len(firing)),
                f"alert {self.alert} firing ({len(firing)} series)",
            )
        return AlarmResult(self.name, "Healthy", 0.0, f"alert {self.alert} not firing")
