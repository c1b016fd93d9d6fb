"""The fast CSV path (orjson) parses exactly like ``np.fromstring``, or steps aside."""

from __future__ import annotations

import numpy as np
import pytest

from fleetshift_runtime.codecs import _parse_plain_numbers, parse_csv
from fleetshift_runtime.errors import RequestError


@pytest.mark.parametrize("fmt", ["{!r}", "{:.6f}", "{:.9g}", "{:.17g}", "{:.3e}"])
def test_plain_numbers_parse_like_numpy(fmt: str) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, size=2000)
    flat = ",".join(fmt.format(float(v)) for v in values.astype(np.float32)).encode()
    fast = _parse_plain_numbers(flat)
    assert fast is not None
    np.testing.assert_array_equal(fast, np.fromstring(flat, dtype=np.float32, sep=","))


@pytest.mark.parametrize(
    "flat", [b"1,,3", b".5,1", b"+1,2", b"nan,1", b"true,1", b"null,2", b"1e999,1", b'"1",2']
)
def test_anything_else_takes_the_numpy_path(flat: bytes) -> None:
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
