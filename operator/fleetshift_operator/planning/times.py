"""Time in the planner: ``datetime`` throughout, whole seconds in status.

Status fields are :data:`~fleetshift_operator.api.Timestamp` (a ``datetime``); the
string form exists only when the status is written (``model_dump(mode="json")``) and
in messages. A stored moment is a whole second, so a status read back from the
apiserver equals the one planned: a start is rounded down, a wait's end up.
"""

from __future__ import annotations

import datetime

from fleetshift_operator.api import format_timestamp

format_time = format_timestamp
"""How a moment reads in an event message (RFC 3339, UTC, to the second)."""


def whole_second(moment: datetime.datetime) -> datetime.datetime:
    """Round down to a whole second: when something started.

    >>> whole_second(datetime.datetime(2026, 1, 1, 0, 0, 1, 999_999)).second
    1
    """
    return moment.replace(microsecond=0)


def ceil_second(moment: datetime.datetime) -> datetime.datetime:
    """Round up to a whole second, so a stored end is never earlier than meant.

    >>> ceil_second(datetime.datetime(2026, 1, 1, 0, 0, 1, 5)).second
    2
    """
    if moment.microsecond:
        return moment.replace(microsecond=0) + datetime.timedelta(seconds=1)
    return moment


def after(now: datetime.datetime, seconds: float) -> datetime.datetime:
    """``now`` plus ``seconds``, rounded up to a whole second: when a wait ends.

    >>> format_time(after(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), 1.5))
    '2026-01-01T00:00:02Z'
    """
    return ceil_second(now + datetime.timedelta(seconds=seconds))
