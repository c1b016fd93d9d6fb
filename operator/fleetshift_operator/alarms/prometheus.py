"""The Prometheus HTTP API, through ``prometheus-api-client`` (synchronous: callers run
it off the event loop). Errors are sorted into *unreachable* and *invalid query*."""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping
from typing import Any, Literal

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

ErrorKind = Literal["unreachable", "invalid", "error"]


class PrometheusError(Exception):
    """A query that did not produce an answer."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class PrometheusAuth:
    """How to authenticate and verify the server."""

    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    """A PEM bundle; None uses the system's trust store."""


def _classify(error: Exception) -> PrometheusError:
    text = str(error)
    if isinstance(error, PrometheusApiClientException) and (
        "bad_data" in text or "parse error" in text or "400" in text
    ):
        return PrometheusError("invalid", text)
    if isinstance(error, requests.exceptions.RequestException):
        return PrometheusError("unreachable", text)
    return PrometheusError("error", text)


class Prometheus:
    """One Prometheus server."""

    def __init__(self, url: str, auth: PrometheusAuth | None = None, timeout: float = 3.0) -> None:
        auth = auth or PrometheusAuth()
        self.url = url.rstrip("/")
        self.timeout = timeout
        session = requests.Session()
        if auth.bearer_token:
            session.headers["Authorization"] = f"Bearer {auth.bearer_token}"
        if auth.username is not None and auth.password is not None:
            session.auth = (auth.username, auth.password)
        if auth.ca_file:
            session.verify = auth.ca_file
        self.session = session
        self.client = PrometheusConnect(
            url=self.url, session=session, retry=Retry(total=0), timeout=math.ceil(timeout)
        )

    def instant(self, query: str) -> list[dict[str, Any]]:
        """The series an instant query returns."""
        try:
            result: list[dict[str, Any]] = self.client.custom_query(query)
        except Exception as error:
            raise _classify(error) from error
        return result

    def slots(
        self,
        query: str,
        end: datetime.datetime,
        period_seconds: int,
        count: int,
        *,
        worst_is_max: bool,
    ) -> list[float | None]:
        """One value per period for the last ``count`` periods ending at ``end``,
        oldest first: the worst of all series at that moment, or None without data."""
        start = end - datetime.timedelta(seconds=period_seconds * (count - 1))
        try:
            series = self.client.custom_query_range(
                query, start_time=start, end_time=end, step=f"{period_seconds}s"
            )
        except Exception as error:
            raise _classify(error) from error
        moments = [start.timestamp() + i * period_seconds for i in range(count)]
        values: list[list[float]] = [[] for _ in moments]
        for one in series:
            for stamp, text in one.get("values", []):
                index = round((float(stamp) - moments[0]) / period_seconds)
                if 0 <= index < count:
                    values[index].append(float(text))
        pick = max if worst_is_max else min
        return [pick(v) if v and not all(math.isnan(x) for x in v) else None for v in values]

    def alert_rule_exists(self, name: str) -> bool:
        """True when an alerting rule called ``name`` is loaded."""
        try:
            answer = self.session.get(
                f"{self.url}/api/v1/rules", params={"type": "alert"}, timeout=self.timeout
            )
            answer.raise_for_status()
        except requests.exceptions.RequestException as error:
            raise _classify(error) from error
        groups = answer.json().get("data", {}).get("groups", [])
        return any(rule.get("name") == name for group in groups for rule in group.get("rules", []))

    def firing(self, name: str, matchers: Mapping[str, str]) -> list[dict[str, Any]]:
        """Series of ``ALERTS`` firing for ``name`` that match every matcher."""
        selectors = [f'alertname="{_escape(name)}"', 'alertstate="firing"']
        selectors += [f'{label}="{_escape(value)}"' for label, value in sorted(matchers.items())]
        return self.instant("ALERTS{" + ",".join(selectors) + "}")


def _escape(value: str) -> str:
    r"""A PromQL string literal's content: backslashes and quotes escaped.

    >>> print(_escape('say "hi"'))
    say \"hi\"
    """
    return value.replace("\\", "\\\\").replace('"', '\\"')
