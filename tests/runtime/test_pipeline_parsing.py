"""What the runtime reads from a pipeline: its setting, and the steps' answers however they
are framed (``Content-Length``, chunked in any pieces, or to the close)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetshift_runtime.pipeline import MAX_ANSWER_BYTES, MAX_STEPS, parse_pipeline
from fleetshift_runtime.upstream import BadAnswerError, read_answer


def read(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes, bool]:
    async def go() -> tuple[int, dict[bytes, bytes], bytes, bool]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_answer(reader, MAX_ANSWER_BYTES)

    return asyncio.run(go())


def chunked(body: bytes, cuts: list[int]) -> bytes:
    pieces, start = [], 0
    for cut in [*sorted({c % (len(body) + 1) for c in cuts}), len(body)]:
        if cut > start:
            pieces.append(body[start:cut])
            start = cut
    framed = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces)
    return framed + b"0\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=2000),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
    framing=st.sampled_from(["length", "chunked", "close"]),
    status=st.sampled_from([200, 201, 400, 500, 503]),
)
def test_an_answer_reads_back_whole_however_it_is_framed(
    body: bytes, cuts: list[int], framing: str, status: int
) -> None:
    head = f"HTTP/1.1 {status} Whatever\r\nContent-Type: text/csv\r\n".encode()
    if framing == "length":
        raw = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    elif framing == "chunked":
        raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, cuts)
    else:
        raw = head + b"Connection: close\r\n\r\n" + body

    got_status, headers, got_body, keep = read(raw + b"HTTP/1.1 200 OK\r\n" * (framing != "close"))

    assert (got_status, got_body) == (status, body)
    assert headers[b"content-type"] == b"text/csv"
    assert keep == (framing != "close")


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    ],
)
def test_an_answer_that_is_not_http_is_a_bad_answer(raw: bytes) -> None:
    with pytest.raises(BadAnswerError):
        read(raw)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)
STEP = st.fixed_dictionaries(
    {"name": st.text(max_size=6)},
    optional={
        "port": st.integers(-1, 70000) | st.booleans() | st.text(max_size=3),
        "contentType": st.text(max_size=5) | st.integers(),
        "accept": st.text(max_size=5),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, st.lists(STEP, max_size=MAX_STEPS + 1)))
def test_any_pipeline_setting_is_read_or_refused_with_a_value_error(document: Any) -> None:
    try:
        steps = parse_pipeline(json.dumps(document))
    except ValueError as error:
        refused = str(error)
    else:
        refused = ""
    if refused:
        assert refused.startswith("pipeline: ")
        return
    assert 2 <= len(steps) <= MAX_STEPS
    assert sum(step.is_model for step in steps) == 1
    assert len({step.name for step in steps}) == len(steps)
