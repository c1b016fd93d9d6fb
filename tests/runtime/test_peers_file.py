"""The peers file (the operator's ConfigMap of shadows and variant Services) as a hostile
writer could leave it: whatever its bytes, the runtime reads it without raising, and every
address it keeps is one it can connect to."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetshift_runtime.mirror import PeersFile, parse_mirror_file

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["http://x:80", "http://x:99999", "http://x:0", "https://x", "http://[::1"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
SHADOW = st.fixed_dictionaries(
    {},
    optional={
        "variant": VALUES,
        "revision": VALUES,
        "url": VALUES,
        "samplingPercent": VALUES,
    },
)
DOCUMENT = st.fixed_dictionaries(
    {},
    optional={
        "shadows": st.one_of(st.lists(SHADOW, max_size=3), VALUES),
        "variants": st.one_of(st.dictionaries(st.text(max_size=8), VALUES, max_size=3), VALUES),
    },
)


def _usable(peers: PeersFile) -> None:
    urls = [t.url for t in peers.shadows] + [url for _, url in peers.variants]
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme == "http" and parts.hostname
        assert parts.port is None or 0 < parts.port < 65536
    assert all(0 <= t.sampling_percent <= 100 for t in peers.shadows)


@settings(max_examples=400, deadline=None)
@given(DOCUMENT)
def test_any_json_document_is_read_without_raising_and_keeps_only_usable_addresses(
    document: dict[str, Any],
) -> None:
    _usable(parse_mirror_file(orjson.dumps(document)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_read_without_raising(text: bytes) -> None:
    _usable(parse_mirror_file(text))


def test_a_port_out_of_range_drops_the_file_rather_than_a_sender_later() -> None:
    text = b'{"shadows": [{"variant": "c", "revision": "1", "url": "http://c:99999"}]}'
    assert parse_mirror_file(text) == PeersFile()


def test_numbers_json_allows_but_a_machine_cannot_hold_drop_the_file() -> None:
    for number in (b"1" + b"0" * 40, b"1e400", b"-1e400"):
        text = b'{"shadows": [{"variant": "c", "revision": "1", "url": "http://c:80",'
        assert parse_mirror_file(text + b' "samplingPercent": ' + number + b"}]}") in (
            PeersFile(),
            parse_mirror_file(text + b' "samplingPercent": 100}]}'),
            parse_mirror_file(text + b' "samplingPercent": 0}]}'),
        )
