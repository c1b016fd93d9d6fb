"""``model.tar.gz`` is unpacked safely: nothing escapes, links and devices are refused,
and size and entry-count limits hold before anything is written."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from fleetshift_runtime.errors import ModelLoadError
from fleetshift_runtime.sources import safe_unpack
from support.runtime_kit import StartRuntime, TrainedModel, make_tarball, sagemaker_tarball

LIMITS = {"max_bytes": 10_000, "max_members": 5}


def _link(name: str, target: str, kind: bytes) -> object:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        tar.addfile(info)

    return add


def _special(name: str, kind: bytes) -> object:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        tar.addfile(info)

    return add


@pytest.mark.parametrize(
    ("case", "members", "extra", "reason"),
    [
        ("path-traversal", {"../../etc/cron.d/evil": b"x"}, None, "climbs out with '..'"),
        ("nested-traversal", {"model/../../evil": b"x"}, None, "climbs out with '..'"),
        ("absolute-path", {"/etc/evil": b"x"}, None, "absolute path"),
        ("symlink", {}, _link("xgboost-model", "/etc/passwd", tarfile.SYMTYPE), "is a link"),
        ("hardlink", {}, _link("xgboost-model", "/etc/passwd", tarfile.LNKTYPE), "is a link"),
        ("fifo", {}, _special("pipe", tarfile.FIFOTYPE), "not a regular file"),
        ("char-device", {}, _special("dev", tarfile.CHRTYPE), "not a regular file"),
        ("too-big", {"xgboost-model": b"0" * 10_001}, None, "unpacks to more than 10000 bytes"),
        ("too-big-in-total", {f"part{i}": b"0" * 4000 for i in range(3)}, None, "more than 10000"),
        ("too-many-entries", {f"f{i}": b"" for i in range(6)}, None, "more than 5 entries"),
    ],
)
def test_unsafe_tarball_is_refused_before_anything_is_written(
    tmp_path: Path, case: str, members: dict[str, bytes], extra: object, reason: str
) -> None:
    archive = make_tarball(tmp_path / f"{case}.tar.gz", members, extra=extra)  # type: ignore[arg-type]
    destination = tmp_path / "out"
    with pytest.raises(ModelLoadError, match=reason.replace("(", r"\(")):
        safe_unpack(archive, destination, **LIMITS)
    assert not destination.exists() or not any(destination.iterdir())
    assert not (tmp_path.parent / "evil").exists()


def test_gzip_bomb_is_stopped_by_the_declared_sizes(tmp_path: Path) -> None:
    """256 MB of zeros compress to ~250 KB; the tar header gives it away before inflating."""
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = 1 << 28

        class Zeros(io.RawIOBase):
            left = 1 << 28

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
                count = min(len(buffer), self.left)
                buffer[:count] = bytes(count)
                self.left -= count
                return count

        tar.addfile(info, io.BufferedReader(Zeros(), 1 << 20))
    assert archive.stat().st_size < 5_000_000
    with pytest.raises(ModelLoadError, match="unpacks to more than"):
        safe_unpack(archive, tmp_path / "out", max_bytes=100_000_000, max_members=10)


def test_corrupt_archive_is_a_load_error(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ModelLoadError, match="not a readable tar archive"):
        safe_unpack(archive, tmp_path / "out", **LIMITS)


def test_safe_tarball_with_folders_unpacks(tmp_path: Path) -> None:
    archive = make_tarball(
        tmp_path / "ok.tar.gz", {"xgboost-model": b"abc", "code/inference.py": b"print()"}
    )
    safe_unpack(archive, tmp_path / "out", **LIMITS)
    assert (tmp_path / "out" / "xgboost-model").read_bytes() == b"abc"
    assert (tmp_path / "out" / "code" / "inference.py").exists()


def test_server_refuses_a_traversal_tarball_and_exits(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    archive = make_tarball(tmp_path / "model.tar.gz", {"../xgboost-model": b"x"})
    server = start_runtime(MODEL_URI=str(archive), wait=False)
    assert server.wait_exit() == 1
    assert "climbs out with '..'" in server.log()


def test_server_enforces_the_unpacked_size_setting(
    start_runtime: StartRuntime, churn_model: TrainedModel, tmp_path: Path
) -> None:
    archive = sagemaker_tarball(churn_model, tmp_path / "model.tar.gz")
    server = start_runtime(MODEL_URI=str(archive), MAX_UNPACKED_BYTES="1000", wait=False)
    assert server.wait_exit() == 1
    assert "FLEETSHIFT_MAX_UNPACKED_BYTES" in server.log()
