"""The repository layout rules that keep imports honest."""

from __future__ import annotations

import importlib
import operator
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("folder", ["operator", "runtime", "devcluster"])
def test_plain_folders_have_no_init_py(folder: str) -> None:
    assert (ROOT / folder).is_dir()
    assert not (ROOT / folder / "__init__.py").exists(), (
        f"{folder}/__init__.py would make '{folder}' a package that can shadow or confuse imports"
    )


def test_operator_name_is_the_standard_library_module() -> None:
    assert operator.__file__ is not None
    assert Path(operator.__file__).parent == Path(sys.modules["os"].__file__ or "").parent
    assert operator.add(2, 3) == 5


@pytest.mark.parametrize(
    "package", ["fleetshift_operator", "fleetshift_runtime", "fleetshift_devcluster"]
)
def test_packages_import_from_their_folders(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(ROOT)


@pytest.mark.parametrize("folder", ["crds", "charts", "tests", "bench", "examples"])
def test_top_level_folders_exist(folder: str) -> None:
    assert (ROOT / folder).is_dir()
