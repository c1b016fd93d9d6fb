"""Request decoding and response encoding for both protocols. Pure functions.

Every decoder returns a 2-D float32 matrix or raises :class:`RequestError` with a
reason precise enough to fix the request:

>>> parse_csv(b"1,2,3\\n4,5,6\\n", width=3).tolist()
[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
>>> parse_csv(b"1,2\\n", width=3)
Traceback (most recent call last):
...
fleetshift_runtime.errors.RequestError: row 1 has 2 values; this endpoint takes 3 features per row
>>> parse_csv(b"1,x,3", width=3)
Traceback (most recent call last):
...
fleetshift_runtime.errors.RequestError: row 1, column 2: 'x' is not a number
>>> parse_json(b'{"instances": [[1, 2.5, null]]}', width=3).tolist()
[[1.0, 2.5, nan]]
>>> encode_csv(np.array([0.25, 0.5], dtype=np.float32))
b'0.25\\n0.5\\n'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from .errors import RequestError
from .models.base import Predictions, Rows

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"

_CONTENT_TYPES = {
    "text/csv": CSV,
    "application/csv": CSV,
    "application/json": JSON,
    "application/jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "application/x-ndjson": JSONLINES,
}
SUPPORTED = f"{CSV}, {JSON} or {JSONLINES}"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def request_format(content_type: str) -> str:
    """The body format named by ``Content-Type``, or a 415.

    >>> request_format("text/csv; charset=utf-8")
    'text/csv'
    """
    if not content_type:
        raise RequestError(415, f"missing Content-Type header; send {SUPPORTED}")
    media = _media_type(content_type)
    found = _CONTENT_TYPES.get(media)
    if found is None:
        raise RequestError(415, f"unsupported Content-Type {media!r}; send {SUPPORTED}")
    return found


def response_format(accept: str, request: str) -> str:
    """The response format chosen by ``Accept``; the request's format when any will do.

    >>> response_format("application/json, text/csv;q=0.5", CSV)
    'application/json'
    >>> response_format("*/*", CSV)
    'text/csv'
    >>> response_format("text/*", JSON)
    'text/csv'
    """
    if not accept:
        return request
    for part in accept.split(","):
        media = _media_type(part)
        if media in ("*/*", ""):
            return request
        if media == "text/*":
            return CSV
        if media == "application/*":
            return request if request != CSV else JSON
        found = _CONTENT_TYPES.get(media)
        if found is not None:
            return found
    raise RequestError(406, f"cannot answer in {accept!r}; Accept one of {SUPPORTED}")


FP32_MAX = float(np.finfo(np.float32).max)


_DOT_PRODUCT_VALUES = 4096


def _may_hold_infinity(values: npt.NDArray[Any]) -> bool:
    """Whether float32 ``values`` cast from parsed numbers may hold an infinity, which
    text never holds: it is an overflow.

    A small array (an inline request) takes one dot product of the values with
    themselves, finite unless they hold an infinity or a NaN (a blank CSV cell) or a
    magnitude over ~1.8e19: ~0.6 µs for a row, against ~1 µs for
    ``np.isinf(...).any()``, which goes through numpy's ufunc machinery twice. A false
    alarm only sends the values to the exact check. A large one (parsed in a worker
    thread) keeps ``np.isinf``, which leaves BLAS and its threads out of that path.

    >>> _may_hold_infinity(np.array([1.0, 2.0], dtype=np.float32))
    False
    >>> _may_hold_infinity(np.array([1.0, np.inf], dtype=np.float32))
    True
    """
    if values.size <= _DOT_PRODUCT_VALUES:
        return not math.isfinite(np.vdot(values, values))
    return bool(np.isinf(values).any())


def _as_fp32(values: npt.NDArray[Any], noun: str) -> Rows:
    """Rows as float32, in which the model computes, or a 400 naming the first finite
    value that float32 cannot hold (it would silently become infinity).

    >>> _as_fp32(np.array([[1.0, 1e39]]), "row")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fleetshift_runtime.errors.RequestError: row 1, column 2: 1e+39 is beyond FP32 (...
    """
    rows = values.astype(np.float32, copy=False)  # no errstate on the hot path: ~1 µs
    if rows is not values and _may_hold_infinity(rows):
        overflow = np.isinf(rows)
        if overflow.any():
            overflow &= np.isfinite(values)
            if overflow.any():
                r, c = (int(i) for i in np.argwhere(overflow)[0])
                raise RequestError(
                    400,
                    f"{noun} {r + 1}, column {c + 1}: {values[r, c].item()!r} is beyond FP32 "
                    f"(magnitudes up to {FP32_MAX:.2g}), in which the model computes",
                )
    return rows


def _wrong_width(row: int, got: int, width: int, noun: str = "row") -> RequestError:
    return RequestError(
        400, f"{noun} {row} has {got} values; this endpoint takes {width} features per row"
    )


def parse_csv(body: bytes, width: int) -> Rows:
    """Parse ``text/csv``: one row per line, no header, empty cells are missing values."""
    text = body.replace(b"\r\n", b"\n") if b"\r" in body else body
    text = text.rstrip(b"\n")
    if not text.strip():
        raise RequestError(400, "empty body: send one CSV row of features per line")
    if b"\n" in text:
        lines = text.split(b"\n")
        for number, line in enumerate(lines, 1):
            cells = line.count(b",") + 1
            if cells != width or (width == 1 and not line.strip()):
                if not line.strip():
                    raise RequestError(400, f"line {number} is empty; send one row per line")
                raise _wrong_width(number, cells, width)
        flat = text.replace(b"\n", b",")
        rows = len(lines)
    else:
        cells = text.count(b",") + 1
        if cells != width:
            raise _wrong_width(1, cells, width)
        flat, rows = text, 1
    values = _parse_plain_numbers(flat)
    if values is None or values.size != rows * width or _may_hold_infinity(values):
        return _parse_csv_cells(text, width)  # infinity here is an overflow: explained there
    return values.reshape(rows, width)


_NUMBER_BYTES = b"0123456789.,-+eE \t"


def _parse_plain_numbers(flat: bytes) -> Rows | None:
    """Comma-separated plain decimal numbers, parsed by orjson as one JSON array.

    About 3x faster than ``np.fromstring`` for a 100-row request. Only bodies made of
    digits, signs, dots, exponents, commas and blanks qualify, so orjson can only
    return numbers (never ``true``, ``null`` or strings); anything it refuses (``.5``,
    ``+1``, empty or blank cells, ``nan``) returns None and takes the exact path.
    """
    if flat.translate(None, _NUMBER_BYTES):
        return None
    try:  # an overflow to infinity is caught by parse_csv (no errstate: ~1 µs a call)
        return np.array(orjson.loads(b"[" + flat + b"]"), dtype=np.float32)
    except (orjson.JSONDecodeError, OverflowError, TypeError, ValueError):
        return None


def _cell(cell: str) -> float:
    """One CSV cell: a blank cell (empty or only whitespace) is missing, else ``float``."""
    return float(cell) if cell and not cell.isspace() else math.nan


def _parse_csv_cells(text: bytes, width: int) -> Rows:
    """Every body the orjson path refuses: ``nan``, ``.5``, ``+1``, blank cells.

    This is the definition the fast path must agree with (``tests/runtime`` fuzzes the
    two against each other): a cell is Python's ``float`` of it, and a cell that is
    empty or only whitespace is missing (NaN), never a number.
    """
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"body is not UTF-8 text (byte {error.start})") from error
    lines = decoded.split("\n")
    if width == 1:
        for number, line in enumerate(lines, 1):
            if not line or line.isspace():
                raise RequestError(400, f"line {number} is empty; send one row per line")
    try:
        if "_" in decoded:  # float("1_0") is 10.0 in Python, and in no CSV reader
            raise ValueError
        values = [_cell(cell) for cell in decoded.replace("\n", ",").split(",")]
    except ValueError:
        _explain_bad_cell(lines)
        raise  # pragma: no cover - _explain_bad_cell always raises here
    return _as_fp32(np.array(values).reshape(len(lines), width), "row")


def _explain_bad_cell(lines: list[str]) -> None:
    """Raise the 400 that names the first cell that is not a number."""
    for r, line in enumerate(lines):
        for c, cell in enumerate(line.split(",")):
            try:
                if "_" in cell:
                    raise ValueError
                _cell(cell)
            except ValueError:
                hint = " (CSV must not have a header row)" if _looks_like_header(line, r) else ""
                raise RequestError(
                    400,
                    f"row {r + 1}, column {c + 1}: {cell.strip()[:40]!r} is not a number{hint}",
                ) from None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _looks_like_header(line: str, row_index: int) -> bool:
    return row_index == 0 and not any(_is_number(cell) for cell in line.split(","))


def _check_width(rows: Rows, width: int) -> Rows:
    if rows.shape[1] != width:
        raise _wrong_width(1, rows.shape[1], width)
    return rows


def _rows_slowly(instances: list[Any], width: int, where: str) -> Rows:
    matrix = np.empty((len(instances), width), dtype=np.float32)
    with np.errstate(over="ignore"):  # an overflow is found below and explained
        for r, instance in enumerate(instances):
            row = instance.get("features") if isinstance(instance, dict) else instance
            if not isinstance(row, list):
                raise RequestError(
                    400, f'{where} {r + 1} is not a list of numbers (or {{"features": [...]}})'
                )
            if len(row) != width:
                raise _wrong_width(r + 1, len(row), width, "line" if where == "line" else "row")
            for c, cell in enumerate(row):
                if cell is None:
                    matrix[r, c] = np.nan
                elif isinstance(cell, bool) or not isinstance(cell, int | float):
                    raise RequestError(
                        400,
                        f"{where} {r + 1}, column {c + 1}: {orjson.dumps(cell).decode()[:40]} "
                        "is not a number",
                    )
                else:
                    matrix[r, c] = cell
    overflow = np.isinf(matrix)
    if overflow.any():  # JSON holds no infinity: this one is an overflow
        r, c = (int(i) for i in np.argwhere(overflow)[0])
        row = instances[r].get("features") if isinstance(instances[r], dict) else instances[r]
        raise RequestError(
            400,
            f"{where} {r + 1}, column {c + 1}: {row[c]!r} is beyond FP32 (magnitudes up to "
            f"{FP32_MAX:.2g}), in which the model computes",
        )
    return matrix


def _matrix(instances: Any, width: int, body: bytes, where: str) -> Rows:
    if not isinstance(instances, list):
        raise RequestError(
            400,
            f"expected a list of rows, got {type(instances).__name__}: send "
            '{"instances": [[...], ...]}',
        )
    if not instances:
        raise RequestError(400, "no instances: send at least one row")
    if not isinstance(instances[0], list | dict):
        instances = [instances]  # one bare row
    if b"true" not in body and b"false" not in body and isinstance(instances[0], list):
        try:
            array = np.array(instances)
        except ValueError:
            array = None
        if array is not None and array.dtype.kind in "iuf":
            if array.ndim != 2:
                raise RequestError(
                    400, f"rows must be flat lists of numbers; got a {array.ndim}-D array"
                )
            return _as_fp32(_check_width(array, width), where)
    return _rows_slowly(instances, width, where)


def parse_json(body: bytes, width: int) -> Rows:
    """Parse ``application/json``: ``{"instances": rows}``, a bare list of rows, one bare
    row, or rows as ``{"features": [...]}``; ``null`` is a missing value."""
    if not body.strip():
        raise RequestError(400, 'empty body: send {"instances": [[...features...]]}')
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"invalid JSON: {error}") from None
    if isinstance(document, dict):
        if "instances" in document:
            document = document["instances"]
        elif "features" in document:
            document = [document]
        else:
            keys = ", ".join(sorted(document)[:5]) or "none"
            raise RequestError(400, f'JSON object needs an "instances" list (keys found: {keys})')
    return _matrix(document, width, body, "instance")


def parse_jsonlines(body: bytes, width: int) -> Rows:
    """Parse ``application/jsonlines``: one JSON row (list or ``{"features": [...]}``) per
    line."""
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        raise RequestError(400, "empty body: send one JSON array of features per line")
    rows: list[Any] = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError as error:
            raise RequestError(400, f"line {number}: invalid JSON: {error}") from None
    if b"true" not in body and b"false" not in body:
        try:
            array = np.array(rows)
        except ValueError:
            array = None
        if (
            array is not None
            and array.dtype.kind in "iuf"
            and array.ndim == 2
            and array.shape[1] == width
        ):
            return _as_fp32(array, "line")
    return _rows_slowly(rows, width, "line")


LARGE_BODY_PIECE_BYTES = 64 * 1024
"""Large line-based bodies are parsed in pieces of about this size: each piece's C calls
(orjson, numpy) hold the GIL for a millisecond or two, not for the whole body, so the
event loop gets its turn to answer the probes."""


def decode_in_pieces(decode: Callable[[bytes, int], Rows], body: bytes, width: int) -> Rows:
    """Decode a large CSV or JSON Lines body piece by piece, as ``decode`` would at once.

    Pieces end at line ends. When any piece is refused, the whole body is decoded again
    at once, so the error names the true row or line number. Pieces are cut from the
    body by offsets: no whole-body copy or scan holds the GIL for milliseconds.
    """
    if len(body) <= LARGE_BODY_PIECE_BYTES:
        return decode(body, width)
    if decode is parse_json:
        rows = _json_rows_in_pieces(body, width)
        return parse_json(body, width) if rows is None else rows
    if decode not in (parse_csv, parse_jsonlines):
        return decode(body, width)
    stop = len(body)
    while stop and body[stop - 1] in b"\r\n":
        stop -= 1
    pieces: list[bytes] = []
    start = 0
    while start < stop:
        end = body.find(b"\n", start + LARGE_BODY_PIECE_BYTES, stop)
        end = stop if end < 0 else end + 1
        pieces.append(body[start:end])
        start = end
    try:
        return np.concatenate([decode(piece, width) for piece in pieces])
    except RequestError:
        return decode(body, width)


_INSTANCES = re.compile(rb'\s*\{\s*"instances"\s*:\s*(\[.*\])\s*\}\s*', re.DOTALL)
_ROW_BREAK = re.compile(rb"\]\s*,\s*\[")
_ROWS_START = re.compile(rb"\[\s*\[")
_COMMA = re.compile(rb",")
_BLANKS = re.compile(rb"\s*")


def _span(body: bytes) -> tuple[int, int]:
    """Where ``body.strip()`` would be, without copying it."""
    stop = len(body)
    while stop and body[stop - 1] in b" \t\r\n":
        stop -= 1
    match = _BLANKS.match(body)
    return (match.end() if match else 0), stop


def _json_rows_in_pieces(body: bytes, width: int) -> Rows | None:
    """A large ``{"instances": [[...], ...]}`` or ``[[...], ...]`` body of plain numbers,
    parsed a few hundred rows at a time; None for anything else (``parse_json`` then).

    The rows are cut where one row's ``]`` meets the next one's ``[``. With no string
    in the array (no ``"``), a cut anywhere but between two top-level rows leaves
    unbalanced brackets, which orjson refuses, so every piece that parses is whole rows.
    """
    match = _INSTANCES.fullmatch(body)
    start, stop = match.span(1) if match else _span(body)
    values = _numbers_in_pieces(body, start, stop, nested=True)
    if values is None or values.shape[1] != width:
        return None
    return _as_fp32(values, "instance")


def _numbers_in_pieces(body: bytes, start: int, stop: int, *, nested: bool) -> Any:
    """``np.array`` of the JSON array ``body[start:stop]``, parsed a piece at a time: rows
    of numbers (``nested``) or numbers. None when the array is anything else: a string,
    a boolean, ``null``, ragged rows or another depth."""
    if nested and not _ROWS_START.match(body, start):
        return None
    if stop - start < 2 or body[start : start + 1] != b"[" or body[stop - 1 : stop] != b"]":
        return None
    cut_at = _ROW_BREAK if nested else _COMMA
    position, stop = start + 1, stop - 1
    parts: list[npt.NDArray[Any]] = []
    while position < stop:
        cut = cut_at.search(body, position + LARGE_BODY_PIECE_BYTES, stop)
        end = stop if cut is None else cut.start() + (1 if nested else 0)
        text = body[position:end]
        if b'"' in text or b"true" in text or b"false" in text:
            return None
        try:
            piece = np.array(orjson.loads(b"[" + text + b"]"))
        except (orjson.JSONDecodeError, ValueError):
            return None
        if piece.dtype not in (np.int64, np.float64) or piece.ndim != (2 if nested else 1):
            return None
        if parts and piece.shape[1:] != parts[0].shape[1:]:
            return None
        parts.append(piece)
        position = stop if cut is None else (cut.end() - 1 if nested else cut.end())
    return np.concatenate(parts) if parts else None


DECODERS = {CSV: parse_csv, JSON: parse_json, JSONLINES: parse_jsonlines}


def encode_csv(predictions: Predictions) -> bytes:
    """One line per row; a multi-output row is comma-separated."""
    text = orjson.dumps(predictions, option=_NUMPY)
    if predictions.ndim == 1:
        return text[1:-1].replace(b",", b"\n") + b"\n"
    return text[2:-2].replace(b"],[", b"\n") + b"\n"


def _scores(predictions: Predictions, between: bytes) -> bytes:
    """Each row's score as JSON, ``{"score": `` before and ``}`` after, joined by
    ``between``: orjson writes the whole array at once, and the objects are spliced in
    around its rows. Building a dict per row held the GIL ~20 ms for 30,000 rows."""
    text = orjson.dumps(predictions, option=_NUMPY)
    if predictions.ndim == 1:
        rows = text[1:-1].replace(b",", b"}" + between + b'{"score":')
    else:
        rows = text[1:-1].replace(b"],[", b"]}" + between + b'{"score":[')
    return b'{"score":' + rows + b"}"


def encode_json(predictions: Predictions) -> bytes:
    """SageMaker's JSON shape: ``{"predictions": [{"score": ...}, ...]}``.

    >>> encode_json(np.array([0.25, 0.5], dtype=np.float32))
    b'{"predictions":[{"score":0.25},{"score":0.5}]}'
    >>> encode_json(np.array([[0.25, 0.75]], dtype=np.float32))
    b'{"predictions":[{"score":[0.25,0.75]}]}'
    """
    return b'{"predictions":[' + _scores(predictions, b",") + b"]}"


def encode_jsonlines(predictions: Predictions) -> bytes:
    """One ``{"score": ...}`` object per line.

    >>> encode_jsonlines(np.array([0.25, 0.5], dtype=np.float32))
    b'{"score":0.25}\\n{"score":0.5}\\n'
    """
    return _scores(predictions, b"\n") + b"\n"


ENCODERS = {CSV: encode_csv, JSON: encode_json, JSONLINES: encode_jsonlines}


# --- Open Inference Protocol v2 ------------------------------------------------------

OIP_DATATYPES = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
_INTEGER_TYPES = frozenset(t for t in OIP_DATATYPES.values() if np.dtype(t).kind in "iu")
OUTPUT_NAME = "predict"
INPUT_NAME = "input-0"
"""The one input tensor's name, as the model metadata declares it."""


@dataclass(frozen=True)
class OipRequest:
    """A decoded ``/infer`` request."""

    rows: Rows
    request_id: str
    binary_output: bool


def _oip_error(reason: str) -> RequestError:
    return RequestError(400, reason)


def parse_oip(body: bytes, header_length: str, width: int) -> OipRequest:
    """Decode an inference request, with the binary tensor extension when
    ``Inference-Header-Content-Length`` is set."""
    return _parse_oip(body, header_length, width, in_pieces=False)


def parse_oip_in_pieces(body: bytes, header_length: str, width: int) -> OipRequest:
    """:func:`parse_oip` for a large body, with its ``data`` array parsed in pieces (see
    :func:`decode_in_pieces`); the same answers and errors."""
    return _parse_oip(body, header_length, width, in_pieces=True)


def _parse_oip(body: bytes, header_length: str, width: int, *, in_pieces: bool) -> OipRequest:
    if not body.strip():
        raise _oip_error('empty body: send {"inputs": [{"name", "shape", "datatype", "data"}]}')
    binary = b""
    if header_length:
        try:
            length = int(header_length)
        except ValueError:
            raise _oip_error(
                f"Inference-Header-Content-Length {header_length!r} is not a number"
            ) from None
        if not 0 < length <= len(body):
            raise _oip_error(
                f"Inference-Header-Content-Length {length} is outside the body's {len(body)} bytes"
            )
        body, binary = body[:length], body[length:]
    document = None
    if in_pieces and not binary and len(body) > LARGE_BODY_PIECE_BYTES:
        document = _oip_document_in_pieces(body)
    if document is None:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise _oip_error(f"invalid JSON: {error}") from None
    if not isinstance(document, dict):
        raise _oip_error('the request must be a JSON object with an "inputs" list')
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _oip_error('"inputs" must be a non-empty list of tensors')
    if len(inputs) != 1:
        raise _oip_error(
            f"this model takes one input tensor of shape [rows, {width}]; got {len(inputs)}"
        )
    # data parsed in pieces holds no boolean: each piece was checked
    pieces = (
        in_pieces and isinstance(inputs[0], dict) and isinstance(inputs[0].get("data"), np.ndarray)
    )
    may_hold_booleans = not pieces and (b"true" in body or b"false" in body)
    rows = _oip_tensor(inputs[0], binary, width, may_hold_booleans)
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise _oip_error('"id" must be a string')
    return OipRequest(rows, request_id, _wants_binary(document))


_DATA_KEY = re.compile(rb'"data"\s*:\s*\[')


def _oip_document_in_pieces(body: bytes) -> dict[str, Any] | None:
    """The request with its one ``data`` array parsed in pieces; None when the body is
    not one plain tensor of numbers (``parse_oip`` then parses it at once).

    The array holds numbers and brackets only, so it ends before the next ``"`` or
    ``}``. The rest of the body, with ``[]`` in the array's place, is parsed at once: it
    is small. Pieces are cut between rows (nested data) or between numbers (flat data).
    """
    keys = list(_DATA_KEY.finditer(body))
    if len(keys) != 1:
        return None
    start = keys[0].end() - 1
    ends = [i for i in (body.find(b'"', start), body.find(b"}", start)) if i >= 0]
    if not ends:
        return None
    stop = min(ends)
    while stop > start and body[stop - 1] in b" \t\r\n,":
        stop -= 1
    nested = _ROWS_START.match(body, start) is not None
    values = _numbers_in_pieces(body, start, stop, nested=nested)
    if values is None:
        return None
    try:
        document = orjson.loads(body[:start] + b"[]" + body[stop:])
    except orjson.JSONDecodeError:
        return None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict)):
        return None
    if inputs[0].get("data") != []:
        return None  # the array was not the tensor's data
    inputs[0]["data"] = values
    return document  # type: ignore[no-any-return]


def _wants_binary(document: dict[str, Any]) -> bool:
    parameters = document.get("parameters")
    wants = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    outputs = document.get("outputs")
    if outputs is None:
        return wants
    if not isinstance(outputs, list):
        raise _oip_error('"outputs" must be a list')
    for output in outputs:
        if not isinstance(output, dict) or output.get("name") != OUTPUT_NAME:
            name = output.get("name") if isinstance(output, dict) else output
            raise _oip_error(f"unknown output {name!r}; this model has {OUTPUT_NAME!r}")
        params = output.get("parameters")
        if isinstance(params, dict) and params.get("binary_data") is True:
            wants = True
    return wants


_DATA_TYPES = (list, np.ndarray)


def decode_oip_tensor(tensor: dict[str, Any], binary: bytes, width: int) -> Rows:
    """One input tensor as rows, with the checks and messages of ``/infer``: ``tensor``
    has ``name``, ``datatype``, ``shape`` and either ``data`` (numbers, a list or a numpy
    array) or ``parameters.binary_data_size`` with ``binary`` its raw bytes. The gRPC
    service (``oip_grpc``) decodes its requests with it.

    >>> tensor = {"name": "input-0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}
    >>> decode_oip_tensor(tensor, b"", width=2).tolist()
    [[1.0, 2.0]]
    >>> try:
    ...     decode_oip_tensor({**tensor, "shape": [2, 1]}, b"", width=2)
    ... except RequestError as error:
    ...     print(error.status, error.reason)
    400 shape [2, 1] has 1 features per row; this endpoint takes 2
    """
    return _oip_tensor(tensor, binary, width, may_hold_booleans=False)


def _oip_tensor(tensor: Any, binary: bytes, width: int, may_hold_booleans: bool) -> Rows:
    if not isinstance(tensor, dict):
        raise _oip_error("each input must be an object with name, shape, datatype, data")
    name = tensor.get("name")
    if name != INPUT_NAME:
        shown = repr(name[:100]) if isinstance(name, str) else f"a {type(name).__name__}"
        raise _oip_error(
            f"unknown input name {shown}; this model's input is {INPUT_NAME!r} "
            "(GET /v2/models/{name} lists it)"
        )
    datatype = tensor.get("datatype")
    dtype = OIP_DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise _oip_error(
            f"datatype {datatype!r} is not supported; use one of {', '.join(OIP_DATATYPES)}"
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _oip_error(f"shape must be [rows, {width}] with non-negative integers; got {shape!r}")
    count = math.prod(shape)
    parameters = tensor.get("parameters")
    binary_size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if binary_size is not None:
        if not isinstance(binary_size, int) or binary_size != len(binary):
            raise _oip_error(
                f"binary_data_size {binary_size!r} does not match the {len(binary)} bytes "
                "after the JSON header"
            )
        itemsize = np.dtype(dtype).itemsize
        if binary_size != count * itemsize:
            raise _oip_error(
                f"shape {shape} of {datatype} needs {count * itemsize} bytes; got {binary_size}"
            )
        flat = np.frombuffer(binary, dtype=dtype)
    else:
        data = tensor.get("data")
        if not isinstance(data, _DATA_TYPES):  # an ndarray: parsed in pieces
            raise _oip_error('input "data" must be a list of numbers')
        try:
            array = np.array(data)
        except ValueError:
            raise _oip_error('input "data" is a ragged nested list') from None
        if array.dtype.kind not in "iuf" or (may_hold_booleans and _has_bool(data)):
            raise _oip_error(f'input "data" must hold only numbers for datatype {datatype}')
        if array.size != count:
            raise _oip_error(f"shape {shape} needs {count} values; data has {array.size}")
        if array.ndim > 1 and list(array.shape) != shape:
            raise _oip_error(
                f"data is nested as {list(array.shape)} but shape is {shape}; nest it as the "
                "shape says, or send it flat"
            )
        flat = _as_datatype(array.reshape(-1), str(datatype), dtype)
    if len(shape) == 1:
        shape = [1, shape[0]]
    if shape[1] != width:
        raise _oip_error(
            f"shape {shape} has {shape[1]} features per row; this endpoint takes {width}"
        )
    if shape[0] == 0:
        raise _oip_error("shape has 0 rows: send at least one row")
    return flat.astype(np.float32, copy=False).reshape(shape[0], shape[1])


def _as_datatype(values: npt.NDArray[Any], datatype: str, dtype: Any) -> Any:
    """JSON numbers as the declared datatype, or a 400 naming a value it cannot hold.

    Integers must be whole and in range; floats must fit the datatype and FP32, in which
    the model computes. Bounds are compared as Python numbers, which compare exactly.
    """
    if not values.size:
        return values
    if dtype is np.float32 or dtype is np.float64:  # the usual case: a cast, a dot product
        typed = values.astype(np.float32)
        if not _may_hold_infinity(typed):
            return typed
    if dtype in _INTEGER_TYPES:
        if values.dtype.kind == "f":
            fractional = values != np.floor(values)
            if fractional.any():
                bad = values[fractional][0].item()
                raise _oip_error(f"{datatype} data must be whole numbers; got {bad!r}")
        info = np.iinfo(dtype)
        low, high = values.min().item(), values.max().item()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise _oip_error(f"{datatype} holds {info.min} to {info.max}; got {bad!r}")
        return values
    with np.errstate(over="ignore"):  # an overflow is found below and explained
        typed = (values.astype(dtype) if dtype is np.float16 else values).astype(np.float32)
    overflow = np.isinf(typed)
    if overflow.any():
        bad = values[overflow][0].item()
        narrow = dtype if np.dtype(dtype).itemsize < 4 else np.float32
        limit = float(np.finfo(narrow).max)
        where = datatype if narrow is dtype else "FP32, in which the model computes,"
        raise _oip_error(f"{where} holds magnitudes up to {limit:.6g}; got {bad!r}")
    return typed


def _has_bool(data: list[Any] | npt.NDArray[Any]) -> bool:
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            if item and isinstance(item[0], list):
                stack.extend(item)
            elif any(isinstance(v, bool) for v in item):
                return True
    return False


def oip_model_name(path: str) -> str:
    """The model name in an OIP path (names may contain '/' in multi-model mode).

    >>> oip_model_name("/v2/models/churn/versions/3/infer")
    'churn'
    >>> oip_model_name("/v2/models/Chicago_IL/model.ubj/infer")
    'Chicago_IL/model.ubj'
    """
    name = path[len("/v2/models/") :]
    for suffix in ("/infer", "/ready", ""):
        if suffix and name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    head, marker, _version = name.rpartition("/versions/")
    return head if marker else name


def encode_oip(
    predictions: Predictions, *, model_name: str, request_id: str, binary_output: bool
) -> tuple[bytes, int]:
    """The response body and, for binary output, the length of its JSON header (else 0)."""
    output: dict[str, Any] = {
        "name": OUTPUT_NAME,
        "shape": list(predictions.shape),
        "datatype": "FP32",
    }
    response: dict[str, Any] = {"model_name": model_name, "outputs": [output]}
    if request_id:
        response["id"] = request_id
    if binary_output:
        raw = np.ascontiguousarray(predictions, dtype=np.float32).tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
        header = orjson.dumps(response)
        return header + raw, len(header)
    output["data"] = predictions.reshape(-1)
    return orjson.dumps(response, option=_NUMPY), 0
