"""``python -m fleetshift_runtime.models.compiled OUTPUT.so``: build the prebuilt forest
library (the image's build stage runs this)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .build import build_forest_library
from .ensemble import UnsupportedModelError
from .libraries import FOREST_ABI


def main(argv: list[str]) -> int:
    """``python -m fleetshift_runtime.models.compiled OUTPUT.so``: build the prebuilt
    forest library (the image's build stage runs this)."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print(
            "usage: python -m fleetshift_runtime.models.compiled OUTPUT.so\n"
            "Builds the prebuilt tree walker; point FLEETSHIFT_TREES_LIBRARY at it.",
            file=sys.stderr,
        )
        return 2
    try:
        library = build_forest_library(Path(argv[0]))
    except (UnsupportedModelError, OSError, subprocess.TimeoutExpired) as error:
        print(f"could not build the forest library: {error}", file=sys.stderr)
        return 1
    print(f"built {library} (forest ABI {FOREST_ABI})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
