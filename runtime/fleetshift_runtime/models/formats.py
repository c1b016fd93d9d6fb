"""Model file formats and where a model file is inside a folder. No xgboost import here,
so the multi-worker parent process can check an artifact without loading xgboost.

>>> detect_format(b'{"learner": {}}')
'json'
>>> detect_format(b"{L\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x07learner")
'ubj'
>>> detect_format(b"binf\\x06\\x1e\\x05?")
'binary'
>>> detect_format(b"\\x80\\x04\\x95B\\x00")
'pickle'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..errors import NotAModelError

ModelFormat = Literal["json", "ubj", "binary", "pickle", "joblib"]

MODEL_FILE_NAMES = (
    "xgboost-model",
    "model.json",
    "model.ubj",
    "model.bst",
    "model.bin",
    "model.model",
    "model",
)
"""Names looked for, in order, in a model folder or an unpacked ``model.tar.gz``."""

_UBJ_TYPE_MARKERS = frozenset(b"iUIlLdDSTFZ[{$#")


def detect_format(head: bytes) -> ModelFormat:
    """Name the serialization format from a file's first bytes."""
    stripped = head.lstrip()
    if stripped.startswith(b'{"') or stripped.startswith(b"{\n") or stripped == b"{":
        return "json"
    if head[:1] == b"{" and len(head) > 1 and head[1] in _UBJ_TYPE_MARKERS:
        return "ubj"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:2] == b"\x78\x9c" or head[:2] == b"\x78\x01" or head[:2] == b"\x78\xda":
        return "joblib"  # joblib's default zlib compression
    return "binary"


def find_model_file(folder: Path) -> Path:
    """The model file inside a folder (a PVC mount or an unpacked ``model.tar.gz``)."""
    for name in MODEL_FILE_NAMES:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if len(files) == 1:
        return files[0]
    listed = ", ".join(str(p.relative_to(folder)) for p in files[:10]) or "nothing"
    expected = f"{', '.join(MODEL_FILE_NAMES)} or a single file"
    raise NotAModelError(
        f"no model file in {folder}: expected one of {expected}, found {listed}",
        public=f"it is a folder without a model file (expected {expected})",
    )
