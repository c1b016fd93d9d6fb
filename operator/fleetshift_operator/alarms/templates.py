"""Ready-made alarms over the runtime's metrics (names in docs/runtime-metrics.md).

Each template becomes an ordinary query alarm. ``${...}`` variables are filled
per evaluation (see ``render``), so the same text watches whichever fleet is green.
"""

from __future__ import annotations

from fleetshift_operator.api import QueryAlarm, TemplateAlarm

_GREEN = 'namespace="${namespace}",endpoint="${endpoint}",revision="${revision}"'
_BLUE = 'namespace="${namespace}",endpoint="${endpoint}",revision="${blueRevision}"'


def _rate(metric: str, labels: str, window: str) -> str:
    return f"sum(rate({metric}{{{labels}}}[{window}]))"


def template_query(template: TemplateAlarm) -> QueryAlarm:
    """The query alarm a template stands for.

    >>> from fleetshift_operator.api import TemplateAlarm
    >>> q = template_query(TemplateAlarm(kind="GreenErrorRate", threshold=5, periodSeconds=10))
    >>> q.comparison, q.threshold, q.treatMissingData
    ('>=', 5.0, 'missing')
    >>> "fleetshift_invocation_5xx_errors_total" in q.query and "[40s]" in q.query
    True
    >>> q = template_query(TemplateAlarm(kind="ShadowDisagreement", threshold=2))
    >>> print(q.query.replace('namespace="${namespace}",endpoint="${endpoint}",', ""))
    ... # doctest: +NORMALIZE_WHITESPACE
    100 * sum(rate(fleetshift_shadow_disagreements_total{shadow_revision="${revision}"}[40s]))
     / sum(rate(fleetshift_shadow_compared_rows_total{shadow_revision="${revision}"}[40s]))
    """
    window = f"{max(4 * template.periodSeconds, 10)}s"
    if template.kind == "GreenErrorRate":
        query = (
            f"100 * {_rate('fleetshift_invocation_5xx_errors_total', _GREEN, window)}"
            f" / {_rate('fleetshift_invocations_total', _GREEN, window)}"
        )
    elif template.kind == "ShadowDisagreement":
        shadow = 'namespace="${namespace}",endpoint="${endpoint}",shadow_revision="${revision}"'
        query = (
            f"100 * {_rate('fleetshift_shadow_disagreements_total', shadow, window)}"
            f" / {_rate('fleetshift_shadow_compared_rows_total', shadow, window)}"
        )
    elif template.kind == "GreenLatencyP99":
        query = (
            "1000 * histogram_quantile(0.99, sum by (le) "
            f"(rate(fleetshift_model_latency_seconds_bucket{{{_GREEN}}}[{window}])))"
        )
    else:
        # Blue with no traffic (green at 100%) counts as 0% errors, not as no data.
        blue = (
            f"100 * {_rate('fleetshift_invocation_5xx_errors_total', _BLUE, window)}"
            f" / clamp_min({_rate('fleetshift_invocations_total', _BLUE, window)}, 1e-9)"
        )
        green = (
            f"100 * {_rate('fleetshift_invocation_5xx_errors_total', _GREEN, window)}"
            f" / {_rate('fleetshift_invocations_total', _GREEN, window)}"
        )
        query = f"({green}) - on() ({blue} or vector(0))"
    return QueryAlarm(
        query=query,
        threshold=template.threshold,
        comparison=">=",
        periodSeconds=template.periodSeconds,
        evaluationPeriods=template.evaluationPeriods,
        datapointsToAlarm=template.datapointsToAlarm,
        treatMissingData="missing",
    )
