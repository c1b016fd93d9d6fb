"""The pure parts of the image build: which inputs count, and what the build borrows from pip's
configuration. No podman here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleetshift_devcluster import images

SPEC = images.ImageSpec("demo", "pkg/Dockerfile", ("pyproject.toml", "README.md", "pkg"))


def make_repository(root: Path) -> Path:
    for name, text in {
        "pyproject.toml": "[project]\n",
        "README.md": "readme\n",
        "pkg/Dockerfile": "FROM ${BASE_IMAGE}\n",
        "pkg/app/__init__.py": "VALUE = 1\n",
        "other/ignored_by_this_image.py": "x = 1\n",
        ".gitignore": "__pycache__/\n*.pyc\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    return root


def test_inputs_are_the_copied_files_and_not_caches_or_other_packages(tmp_path: Path) -> None:
    root = make_repository(tmp_path)
    (root / "pkg/app/__pycache__").mkdir()
    (root / "pkg/app/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    (root / "pkg/app/new_module.py").write_text("untracked but not ignored\n")

    assert images.input_files(SPEC, root) == [
        "README.md",
        "pkg/Dockerfile",
        "pkg/app/__init__.py",
        "pkg/app/new_module.py",
        "pyproject.toml",
    ]


def test_the_digest_changes_with_a_source_the_base_or_the_dockerfile_only(tmp_path: Path) -> None:
    root = make_repository(tmp_path)
    first = images.inputs_digest(SPEC, "base:1", root)
    (root / "other/ignored_by_this_image.py").write_text("x = 2\n")
    (root / "pkg/app/__pycache__").mkdir()
    (root / "pkg/app/__pycache__/x.cpython-311.pyc").write_bytes(b"\1")
    assert images.inputs_digest(SPEC, "base:1", root) == first
    assert images.inputs_digest(SPEC, "base:2", root) != first
    (root / "pkg/app/__init__.py").write_text("VALUE = 2\n")
    second = images.inputs_digest(SPEC, "base:1", root)
    assert second != first
    (root / "pkg/Dockerfile").write_text("FROM ${BASE_IMAGE}\nUSER 65532\n")
    assert images.inputs_digest(SPEC, "base:1", root) not in {first, second}


def test_pip_options_merge_files_in_order_then_the_environment(tmp_path: Path) -> None:
    system = tmp_path / "pip.conf"
    system.write_text("[global]\nindex_url = https://mirror.example/simple\ncert = /a.pem\n")
    user = tmp_path / "user.conf"
    user.write_text("[global]\ncert = /b.pem\n[install]\nno-binary = :none:\n")

    merged = images.merged_pip_config(
        [system, user], {"PIP_CERT": "/c.pem", "PIP_FIND_LINKS": "/w", "PIP_CONFIG_FILE": "/x"}
    )

    assert merged == {
        "index-url": "https://mirror.example/simple",
        "cert": "/c.pem",
        "no-binary": ":none:",
        "find-links": "/w",
    }


def test_only_existing_local_find_links_are_mounted(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    value = f"{wheels} file://{wheels} https://example.org/wheels {tmp_path / 'missing'}"
    assert images._local_paths(value) == [wheels, wheels]


def test_a_changed_base_recipe_makes_a_new_base_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    before = images.base_tag()
    assert before.startswith("localhost/fleetshift/base:")
    monkeypatch.setattr(images, "BASE_PACKAGES", (*images.BASE_PACKAGES, "gcc"))
    assert "--include=python3,python3-venv,python-is-python3,ca-certificates,gcc" in (
        images.base_recipe()
    )
    assert images.base_tag() != before
