"""The alarm plug point: one Protocol, one implementation per kind of alarm."""

from __future__ import annotations

import dataclasses
import datetime
import string
from typing import Protocol

from fleetshift_operator.alarms.semantics import Verdict


@dataclasses.dataclass(frozen=True)
class AlarmContext:
    """The values of the ``${...}`` variables alarms may use, for one variant.

    Alarms select fleets by revision: a revision names one variant's pods for good,
    while a role (blue or green) changes when a deployment ends.
    """

    namespace: str
    endpoint: str
    variant: str
    revision: str
    """The green (candidate) revision."""
    blue_revision: str
    """The blue (active) revision of the same variant."""
    since: datetime.datetime | None = None
    """When the variant's deployment began: comparisons count traffic from here."""

    def render(self, text: str) -> str:
        """``text`` with its variables filled; unknown ``$names`` are left as they are.

        >>> AlarmContext("ml", "churn", "main", "abc", "def").render('x{revision="${revision}"}')
        'x{revision="abc"}'
        """
        return string.Template(text).safe_substitute(
            namespace=self.namespace,
            endpoint=self.endpoint,
            variant=self.variant,
            revision=self.revision,
            greenRevision=self.revision,
            blueRevision=self.blue_revision,
        )


@dataclasses.dataclass(frozen=True)
class AlarmResult:
    """One alarm's verdict at one moment."""

    name: str
    verdict: Verdict
    value: float | None = None
    reason: str = ""
    fatal: bool = False
    """True when the alarm itself is wrong (invalid PromQL, unknown rule): a deployment
    watched by it cannot be judged and rolls back at once."""


class AlarmSource(Protocol):
    """Evaluates one alarm against one context."""

    name: str

    def validate(self) -> AlarmResult | None:
        """None when the alarm can be evaluated; else a fatal or inconclusive result."""
        ...

    def evaluate(self, previous: Verdict | None, now: datetime.datetime) -> AlarmResult:
        """The alarm's verdict now. Never raises: failures are Error or Inconclusive."""
        ...
