"""The runtime's modules keep their layers: the cold routes do not import the hot ones."""

from __future__ import annotations

import ast
from pathlib import Path

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
