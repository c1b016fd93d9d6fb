"""Time at the edge: ``datetime`` inside the planner, RFC 3339 strings only in status."""

from __future__ import annotations

import datetime


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, to the second.

    >>> format_time(datetime.datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=datetime.UTC))
    '2026-01-02T03:04:05Z'
    """
    return moment.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    """The inverse of :func:`format_time` (None stays None).

    >>> parse_time("2026-01-02T03:04:05Z").isoformat()
    '2026-01-02T03:04:05+00:00'
    >>> parse_time(None) is None
    True
    """
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def ceil_second(moment: datetime.datetime) -> datetime.datetime:
    """Round up to a whole second, so a stored time is never earlier than meant.

    >>> ceil_second(datetime.datetime(2026, 1, 1, 0, 0, 1, 5)).second
    2
    """
    if moment.microsecond:
        return moment.replace(microsecond=0) + datetime.timedelta(seconds=1)
    return moment


def stamp_after(now: datetime.datetime, seconds: float) -> str:
    """The status string of ``now`` plus ``seconds``, rounded up to a whole second.

    >>> stamp_after(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), 1.5)
    '2026-01-01T00:00:02Z'
    """
    return format_time(ceil_second(now + datetime.timedelta(seconds=seconds)))
