"""CSV cells mean one thing on every path: the fast orjson path agrees with the exact one.

The exact definition (``_parse_csv_cells``) is: a cell is Python's ``float`` of it, an
empty or all-whitespace cell is missing (NaN), and anything else is a 400. A hypothesis
fuzz sends thousands of bodies built from every kind of cell through ``parse_csv`` and
checks each answer against that definition, written out again here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetshift_runtime.codecs import _parse_csv_cells, _parse_plain_numbers, parse_csv
from fleetshift_runtime.errors import RequestError


def _reference(body: bytes, width: int) -> list[list[float]] | None:
    """The meaning of a CSV body, cell by cell: rows of floats, or None for a 400."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.replace("\r\n", "\n").rstrip("\n")
    if not text.strip():
        return None
    rows: list[list[float]] = []
    for line in text.split("\n"):
        cells = line.split(",")
        if len(cells) != width or not line.strip():
            return None
        row: list[float] = []
        for cell in cells:
            if not cell.strip():
                row.append(math.nan)
                continue
            if "_" in cell:
                return None
            try:
                value = float(cell)
            except ValueError:
                return None
            with np.errstate(over="ignore"):
                as_fp32 = float(np.float32(value))
            if math.isinf(as_fp32) and math.isfinite(value):
                return None  # beyond FP32, in which the model computes: a 400
            row.append(as_fp32)
        rows.append(row)
    return rows


def _parsed(body: bytes, width: int) -> list[list[float]] | None:
    try:
        return parse_csv(body, width).astype(np.float64).tolist()  # type: ignore[no-any-return]
    except RequestError as error:
        if error.status != 400:
            raise
        return None


def _same(got: list[list[float]] | None, want: list[list[float]] | None) -> bool:
    if got is None or want is None:
        return got is want
    return np.array_equal(np.array(got), np.array(want), equal_nan=True)


_NUMBERS = st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
_CELLS = st.one_of(
    _NUMBERS,
    _NUMBERS.map(lambda v: f" {v}\t"),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(
        ["", " ", "  ", "\t", " \t ", "\x0b", "\x0c", "\u00a0", "\u2003", "\x1c", "\r"]
    ),
    st.sampled_from(["nan", "NaN", " nan ", "inf", "-inf", "Infinity", ".5", "+1", "-.5e3"]),
    st.sampled_from(["1e999", "-1e400", "1e39", "01", "1_0", "0x10", "1 2", "- 1", "1e"]),
    st.sampled_from(["x", "true", "null", '"1"', "1,", "é", "\x00", "--1", "1..2"]),
    st.text(alphabet=" \t0123456789.,-+eEnaifNIF", max_size=6),
)


@st.composite
def _csv_bodies(draw: st.DrawFn) -> tuple[bytes, int]:
    width = draw(st.integers(1, 4))
    rows = draw(st.integers(1, 4))
    lines = [",".join(draw(st.lists(_CELLS, min_size=width, max_size=width))) for _ in range(rows)]
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    body = ending.join(lines) + draw(st.sampled_from(["", ending]))
    return body.encode(), width


@settings(
    max_examples=3000, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(_csv_bodies())
def test_every_csv_body_means_the_same_on_the_fast_and_exact_paths(
    case: tuple[bytes, int],
) -> None:
    body, width = case
    assert _same(_parsed(body, width), _reference(body, width)), body


@pytest.mark.parametrize(
    "body",
    [b" ,0.5,0.5", b"0.5, ,0.5", b"0.5,0.5,\t", b"0.5,0.5,0.5\n ,0.5,0.5", b"\xc2\xa0,1,2"],
)
def test_a_blank_csv_cell_is_missing_not_minus_one(body: bytes) -> None:
    parsed = parse_csv(body, 3)
    assert np.isnan(parsed).sum() == 1
    assert not (parsed == -1).any()


def test_a_blank_line_in_a_one_feature_body_is_a_400_not_a_missing_row() -> None:
    with pytest.raises(RequestError, match="line 2 is empty"):
        parse_csv(b"1\n \n2", 1)


@pytest.mark.parametrize("body", [b"1,1e39,3", b"1,-3.5e38,3", b".5,1e39,3"])
def test_a_number_beyond_fp32_is_a_400_not_infinity(body: bytes) -> None:
    with pytest.raises(RequestError, match=r"row 1, column 2: .* is beyond FP32"):
        parse_csv(body, 3)


def test_an_explicit_infinity_is_infinity() -> None:
    assert parse_csv(b"1,inf,-inf", 3).tolist() == [[1.0, math.inf, -math.inf]]


def test_an_underscore_in_a_number_is_a_400_not_python_digit_grouping() -> None:
    with pytest.raises(RequestError, match="row 1, column 2: '1_0' is not a number"):
        parse_csv(b"1,1_0,3", 3)


@pytest.mark.parametrize("fmt", ["{!r}", "{:.6f}", "{:.9g}", "{:.17g}", "{:.3e}"])
def test_plain_numbers_parse_like_the_exact_path(fmt: str) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, size=2000)
    flat = ",".join(fmt.format(float(v)) for v in values.astype(np.float32)).encode()
    fast = _parse_plain_numbers(flat)
    assert fast is not None
    np.testing.assert_array_equal(fast, _parse_csv_cells(flat, 2000)[0])


@pytest.mark.parametrize(
    "flat",
    [b"1,,3", b"1, ,3", b".5,1", b"+1,2", b"nan,1", b"true,1", b"null,2", b"1e999,1", b'"1",2'],
)
def test_anything_else_takes_the_exact_path(flat: bytes) -> None:
    assert _parse_plain_numbers(flat) is None


def test_csv_results_and_errors_are_unchanged() -> None:
    body = b"1,2,3\n-4.5,5e3,+6\n.5,,nan\n"
    np.testing.assert_array_equal(
        parse_csv(body, 3),
        np.array([[1, 2, 3], [-4.5, 5e3, 6], [0.5, np.nan, np.nan]], dtype=np.float32),
    )
    np.testing.assert_array_equal(parse_csv(b"1,2,3", 3), [[1, 2, 3]])
    with pytest.raises(RequestError, match="row 1, column 2: 'true' is not a number"):
        parse_csv(b"1,true,3", 3)
