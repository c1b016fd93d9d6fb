"""Build the alarm source for one alarm of the spec."""

from __future__ import annotations

from fleetshift_operator.alarms.base import AlarmContext, AlarmSource
from fleetshift_operator.alarms.comparison import ComparisonSource
from fleetshift_operator.alarms.prediction_drift import DriftSource
from fleetshift_operator.alarms.prometheus import Prometheus
from fleetshift_operator.alarms.sources import PrometheusRuleSource, QuerySource
from fleetshift_operator.alarms.templates import template_query
from fleetshift_operator.api import Alarm


def make_alarm_source(alarm: Alarm, context: AlarmContext, prometheus: Prometheus) -> AlarmSource:
    """The source for one alarm of the spec (exactly one kind is set, by admission)."""
    if alarm.prometheusRule is not None:
        return PrometheusRuleSource(alarm.name, alarm.prometheusRule, context, prometheus)
    if alarm.query is not None:
        return QuerySource(alarm.name, alarm.query, context, prometheus)
    if alarm.template is not None:
        return QuerySource(alarm.name, template_query(alarm.template), context, prometheus)
    if alarm.comparison is not None:
        return ComparisonSource(alarm.name, alarm.comparison, context, prometheus)
    if alarm.drift is not None:
        return DriftSource(alarm.name, alarm.drift, context, prometheus)
    raise ValueError(f"alarm {alarm.name!r} has no kind")
