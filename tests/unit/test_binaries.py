"""Finding pinned binaries: lookup order and version checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetshift_devcluster import binaries

FAKE = binaries.Binary("fake-tool", "fake", "v1.2.3", ("--version",))


def write_tool(folder: Path, prints: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / FAKE.name
    tool.write_text(f"#!/bin/sh\necho '{prints}'\n")
    tool.chmod(0o755)
    return tool


def test_kubebuilder_assets_win_over_path_and_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = write_tool(tmp_path / "assets", "fake-tool version v1.2.3")
    write_tool(tmp_path / "path", "fake-tool version v1.2.3")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'path'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FLEETSHIFT_CACHE", str(tmp_path / "cache"))

    assert binaries.find(FAKE) == assets


def test_a_binary_at_another_version_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tool(tmp_path / "path", "fake-tool version v1.2.30")
    cached = write_tool(tmp_path / "cache" / "fake-v1.2.3", "Version: 1.2.3")
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'path'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FLEETSHIFT_CACHE", str(tmp_path / "cache"))

    assert binaries.find(FAKE) == cached


def test_nothing_found_returns_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("FLEETSHIFT_CACHE", str(tmp_path / "cache"))

    assert binaries.find(FAKE) is None


def test_cache_folder_is_named_by_component_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETSHIFT_CACHE", str(tmp_path))

    assert binaries.cache_dir(binaries.KUBE_APISERVER) == tmp_path / "k8s-v1.35.4"
