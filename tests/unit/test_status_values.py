"""Status is a value: the planner derives new ones and never edits one in place."""

from __future__ import annotations

import datetime

import pytest
from pydantic import ValidationError

from fleetshift_operator.api import EndpointStatus, StepStatus, VariantStatus


def test_a_status_cannot_be_changed_in_place() -> None:
    status = VariantStatus(name="champion", step=StepStatus(stage="Baking"))
    with pytest.raises(ValidationError, match="frozen"):
        status.phase = "InService"  # type: ignore[misc]
    assert status.step is not None
    with pytest.raises(ValidationError, match="frozen"):
        status.step.greenPercent = 50  # type: ignore[misc]


def test_status_times_are_datetimes_inside_and_rfc3339_strings_in_the_object() -> None:
    status = EndpointStatus.model_validate(
        {"phase": "Updating", "deadline": "2026-01-02T03:04:05Z", "pausedAt": None}
    )
    assert status.deadline == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    written = status.model_dump(mode="json", exclude_none=True)
    assert written["deadline"] == "2026-01-02T03:04:05Z"


def test_a_time_written_with_an_offset_reads_as_the_same_moment_in_utc() -> None:
    status = EndpointStatus.model_validate({"deadline": "2026-01-02T05:04:05+02:00"})
    assert status.model_dump(mode="json", exclude_none=True)["deadline"] == "2026-01-02T03:04:05Z"


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        EndpointStatus.model_validate({"deadline": "2026-01-02T03:04:05"})
