"""The runtime's modules keep their layers: the cold routes do not import the hot ones,
and model loading goes through one registry keyed by format."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import fleetshift_runtime

PACKAGE = Path(fleetshift_runtime.__file__).parent


def _imported(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / module).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_metadata_routes_do_not_import_the_app_that_imports_them() -> None:
    assert ".app" not in _imported("metadata.py")
    assert "fleetshift_runtime.app" not in _imported("metadata.py")
    assert ".metadata" in _imported("app.py")  # the one direction left


def test_every_detected_format_has_a_loader() -> None:
    from typing import get_args  # noqa: PLC0415

    from fleetshift_runtime.models.formats import ModelFormat  # noqa: PLC0415
    from fleetshift_runtime.models.registry import LOADERS  # noqa: PLC0415

    assert set(LOADERS) == set(get_args(ModelFormat))


def test_a_loader_plugged_into_the_registry_loads_its_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetshift_runtime.models import registry  # noqa: PLC0415
    from fleetshift_runtime.models.loading import load_model  # noqa: PLC0415
    from fleetshift_runtime.settings import RuntimeSettings  # noqa: PLC0415

    seen: list[tuple[Path, str, str]] = []

    def loader(path: Path, fmt: str, options: registry.ModelOptions) -> Any:
        seen.append((path, fmt, options.name))
        return SimpleNamespace(num_features=3, predictor_name="stub")

    monkeypatch.setitem(registry.LOADERS, "json", loader)
    (tmp_path / "model.json").write_text('{"learner": {}}')
    model = load_model(
        str(tmp_path / "model.json"),
        name="m",
        settings=RuntimeSettings(cache_dir=str(tmp_path / "cache")),
    )
    assert model.predictor_name == "stub"
    assert seen == [(tmp_path / "model.json", "json", "m")]


def test_the_compiled_trees_keep_one_concern_per_module() -> None:
    folder = PACKAGE / "models" / "compiled"
    assert not (PACKAGE / "models" / "compiled.py").exists()
    modules = {path.name: len(path.read_text().splitlines()) for path in folder.glob("*.py")}
    assert set(modules) == {
        "__init__.py",  # the validation against XGBoost
        "__main__.py",  # the CLI that builds the prebuilt forest library
        "ensemble.py",  # the booster's JSON dump, checked
        "codegen.py",  # C for one model
        "libraries.py",  # the ctypes interface
        "build.py",  # compiling and the trust checks
    }
    assert max(modules.values()) < 250, modules
