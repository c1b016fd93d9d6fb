"""Fixtures for the image tests: the images, built once or found up to date."""

from __future__ import annotations

import pytest

from fleetshift_devcluster import images


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is an image test (``-m images`` selects them)."""
    for item in items:
        if "tests/images/" in str(item.path):
            item.add_marker(pytest.mark.images)


@pytest.fixture(scope="session")
def built_images() -> dict[str, images.Built]:
    """The operator and runtime images, built now unless their inputs are unchanged."""
    return {built.spec.name: built for built in images.build_images()}
