"""Compiling C into shared libraries, and the checks before loading code from one: a
cached library must be private to this user, a prebuilt one writable by no one else."""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .ensemble import UnsupportedModelError

COMPILE_TIMEOUT_SECONDS = 180.0
CFLAGS = ("-O3", "-shared", "-fPIC", "-fno-fast-math")


def compiler() -> str | None:
    """The C compiler on PATH (``FLEETSHIFT_CC`` may name another one)."""
    named = os.environ.get("FLEETSHIFT_CC") or "cc"
    return shutil.which(named) or shutil.which("gcc")


def check_trusted(path: Path) -> None:
    """A prebuilt library (and its folder) must belong to root or this user, and no one
    else may write to it: the server loads code from it."""
    for item in (path, path.parent):
        info = item.stat()
        if info.st_uid not in (0, os.getuid()) or info.st_mode & 0o022:
            raise UnsupportedModelError(f"{item} may be written by another user; not loading code")


def check_private(path: Path) -> None:
    """Refuse to load code from a place another user could have written to (the name
    of a cached library is predictable from the model)."""
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise UnsupportedModelError(f"{path} is not private to this user; not loading code")


def _compile(source: str, output: Path, *, nice: bool) -> Path:
    """Compile C ``source`` into the shared library ``output``, atomically (a concurrent
    reader sees all or nothing); ``nice`` builds at low priority."""
    cc = compiler()
    if cc is None:
        raise UnsupportedModelError("no C compiler on PATH (set FLEETSHIFT_CC)")
    with tempfile.TemporaryDirectory(prefix="fleetshift-cc-", dir=output.parent) as work:
        c_file = Path(work) / "source.c"
        c_file.write_text(source)
        built = Path(work) / output.name
        command = [cc, *CFLAGS, "-o", str(built), str(c_file), "-lm"]
        low = shutil.which("nice") if nice else None
        result = subprocess.run(
            [low, "-n", "10", *command] if low else command,
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            raise UnsupportedModelError(f"compiler failed: {result.stderr.strip()[:300]}")
        os.replace(built, output)
    return output


def build(source: str, cache_dir: Path) -> Path:
    """Compile ``source`` into a cached shared library; reuse it if already built."""
    if compiler() is None:
        raise UnsupportedModelError("no C compiler on PATH")
    key = hashlib.sha256(("\0".join(CFLAGS) + "\0" + source).encode()).hexdigest()[:32]
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(cache_dir)
    library = cache_dir / f"trees-{key}.so"
    if library.exists():
        check_private(library)
        return library
    # Low priority: the build must not slow the requests being served meanwhile.
    return _compile(source, library, nice=True)


def build_forest_library(output: Path) -> Path:
    """Compile ``forest.c`` into ``output`` (atomically, mode 0755) with the C compiler."""
    source = importlib.resources.files("fleetshift_runtime.models").joinpath("forest.c").read_text()
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    library = _compile(source, output, nice=False)
    library.chmod(0o755)
    return library
