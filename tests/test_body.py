"""Tests for destination.body's pure functions: strict JSON parsing, inflating."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable

import pytest

from destination.body import BodyLimits, ParsedBody, inflate, parse_body
from destination.errors import RequestError

EVENT = b'{"type":"track","messageId":"m-1"}'
LIMITS = BodyLimits(max_bytes=1024 * 1024, read_timeout=1.0)


def bad_json(raw: bytes) -> RequestError:
    """The 400 parse_body raises for ``raw``."""
    with pytest.raises(RequestError) as caught:
        parse_body(raw)
    assert (caught.value.status, caught.value.code) == (400, "bad_json")
    return caught.value


def refused_inflate(data: bytes, encoding: str, limits: BodyLimits) -> RequestError:
    with pytest.raises(RequestError) as caught:
        inflate(data, encoding, limits)
    return caught.value


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 50 KB of gzip that inflates to 50 MB of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(50)]
    return b"".join(parts) + compressor.flush()


# parse_body


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            EVENT,
            ParsedBody([{"type": "track", "messageId": "m-1"}], "object"),
            id="object",
        ),
        pytest.param(b"{}", ParsedBody([{}], "object"), id="empty-object"),
        pytest.param(
            b'[{"a":1},{"b":2}]', ParsedBody([{"a": 1}, {"b": 2}], "array"), id="array"
        ),
        pytest.param(b"[]", ParsedBody([], "array"), id="empty-array"),
        pytest.param(
            b'[1,"x",null]',
            ParsedBody([1, "x", None], "array"),
            id="array-of-non-events",
        ),
        pytest.param(
            b'{"batch":[{"a":1}],"sentAt":"2024-05-01T12:00:00Z"}',
            ParsedBody([{"a": 1}], "batch"),
            id="batch",
        ),
        pytest.param(b'{"batch":[]}', ParsedBody([], "batch"), id="empty-batch"),
        pytest.param(
            b'\xef\xbb\xbf{"a":1}', ParsedBody([{"a": 1}], "object"), id="utf8-bom"
        ),
        pytest.param(
            b' \r\n\t{"a":1}\n', ParsedBody([{"a": 1}], "object"), id="whitespace"
        ),
        pytest.param(
            '{"name":"Zoë ✓"}'.encode(),
            ParsedBody([{"name": "Zoë ✓"}], "object"),
            id="non-ascii",
        ),
        pytest.param(
            b'{"a":{"b":1},"c":{"b":2}}',
            ParsedBody([{"a": {"b": 1}, "c": {"b": 2}}], "object"),
            id="same-key-in-different-objects",
        ),
    ],
)
def test_parse_body_finds_the_events(raw: bytes, expected: ParsedBody) -> None:
    """One object, an array, or a batch object each give their events in order."""
    parsed = parse_body(raw)

    assert parsed == expected


def test_parse_body_keeps_big_integers_exact() -> None:
    """Integers beyond 2**53 are not rounded through floats."""
    parsed = parse_body(b'{"n":157963456373623802}')

    assert parsed.events[0]["n"] == 157963456373623802


@pytest.mark.parametrize(
    ("raw", "offset", "byte"),
    [
        pytest.param(b'{"a":"caf\xe9"}', 9, "0xe9", id="latin1-e-acute"),
        pytest.param(b"\xff{}", 0, "0xff", id="first-byte"),
        pytest.param(b'{"a":"\xc3"}', 6, "0xc3", id="cut-multibyte"),
        pytest.param(b'{"a":"\xed\xa0\x80"}', 6, "0xed", id="encoded-surrogate"),
    ],
)
def test_invalid_utf8_names_the_byte_and_offset(
    raw: bytes, offset: int, byte: str
) -> None:
    """Bytes that are not UTF-8 get a 400 naming the first bad byte's offset."""
    error = bad_json(raw)

    assert f"byte {byte} at offset {offset}" in error.reason
    assert "UTF-8" in error.reason


@pytest.mark.parametrize(
    ("raw", "mention"),
    [
        pytest.param(b'{"a":NaN}', "NaN", id="nan"),
        pytest.param(b'{"a":Infinity}', "Infinity", id="infinity"),
        pytest.param(b"[-Infinity]", "-Infinity", id="minus-infinity"),
    ],
)
def test_non_finite_numbers_are_refused(raw: bytes, mention: str) -> None:
    """NaN and Infinity are not JSON and get a 400 naming them."""
    error = bad_json(raw)

    assert mention in error.reason


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"a":1,"a":2}', id="top-level"),
        pytest.param(b'[{"e":{"a":1,"a":1}}]', id="nested-same-value"),
        pytest.param(b'{"batch":[{"a":1,"a":2}]}', id="in-batch"),
    ],
)
def test_duplicate_keys_are_refused(raw: bytes) -> None:
    """An object with a key twice is ambiguous and gets a 400."""
    error = bad_json(raw)

    assert "the key 'a' appears twice" in error.reason


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="arrays"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="objects"),
    ],
)
def test_deep_nesting_is_a_400_not_a_crash(raw: bytes) -> None:
    """JSON nested past the recursion limit gets a 400, not a RecursionError."""
    error = bad_json(raw)

    assert "nests too deeply" in error.reason


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        pytest.param(b'"event"', "a string", id="string"),
        pytest.param(b"42", "a number", id="number"),
        pytest.param(b"1.5", "a number", id="float"),
        pytest.param(b"true", "a boolean", id="boolean"),
        pytest.param(b"null", "null", id="null"),
    ],
)
def test_non_container_top_level_is_refused(raw: bytes, kind: str) -> None:
    """A body that is not an object or an array names what it is instead."""
    error = bad_json(raw)

    assert f"The body is {kind};" in error.reason


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        pytest.param(b'{"batch":{"a":1}}', "a JSON object", id="object"),
        pytest.param(b'{"batch":null}', "null", id="null"),
        pytest.param(b'{"batch":"[]"}', "a string", id="string"),
    ],
)
def test_batch_must_be_an_array(raw: bytes, kind: str) -> None:
    """A 'batch' that is not an array is a 400 naming what it is."""
    error = bad_json(raw)

    assert f"'batch' must be a JSON array of events, not {kind}." in error.reason


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        pytest.param(b"", "line 1 column 1", id="empty"),
        pytest.param(b'{"a":1', "line 1 column 7", id="truncated"),
        pytest.param(b'{"a":1}\n{"b":2}', "line 2 column 1", id="concatenated"),
        pytest.param(b"{'a':1}", "line 1 column 2", id="single-quotes"),
        pytest.param(b'{"a":1,}', "line 1 column 8", id="trailing-comma"),
        pytest.param(b"\xef\xbb\xbf\xef\xbb\xbf{}", "line 1 column 1", id="two-boms"),
    ],
)
def test_malformed_json_names_line_and_column(raw: bytes, where: str) -> None:
    """Syntax errors get a 400 saying where the JSON went wrong."""
    error = bad_json(raw)

    assert where in error.reason


# inflate


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        pytest.param("gzip", gzip.compress, id="gzip"),
        pytest.param("x-gzip", gzip.compress, id="x-gzip"),
        pytest.param("deflate", zlib.compress, id="deflate"),
    ],
)
def test_inflate_restores_the_original_bytes(
    encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    """gzip and zlib-wrapped deflate bodies inflate to what was compressed."""
    data = EVENT * 100

    inflated = inflate(compress(data), encoding, LIMITS)

    assert inflated == data


def test_inflate_reads_every_gzip_member() -> None:
    """A multi-member gzip inflates to all its members, concatenated."""
    members = [b'[{"a":1},', b'{"b":2},', b'{"c":3}]']
    data = b"".join(gzip.compress(member) for member in members)

    inflated = inflate(data, "gzip", LIMITS)

    assert inflated == b"".join(members)


def test_inflate_of_an_empty_gzip_member_is_empty() -> None:
    """A gzip of nothing inflates to nothing."""
    inflated = inflate(gzip.compress(b""), "gzip", LIMITS)

    assert inflated == b""


def test_inflate_accepts_exactly_the_limit() -> None:
    """A body inflating to exactly max_bytes is accepted."""
    data = bytes(4096)

    inflated = inflate(gzip.compress(data), "gzip", BodyLimits(4096, 1.0))

    assert inflated == data


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        pytest.param("gzip", gzip.compress, id="gzip"),
        pytest.param("deflate", zlib.compress, id="deflate"),
    ],
)
def test_inflate_refuses_one_byte_over_the_limit(
    encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    """A body inflating to max_bytes + 1 is a 413."""
    data = bytes(4097)

    error = refused_inflate(compress(data), encoding, BodyLimits(4096, 1.0))

    assert (error.status, error.code) == (413, "body_too_large")
    assert "4096" in error.reason
    assert "DESTINATION_MAX_BODY_BYTES" in error.reason


def test_inflate_limit_counts_all_gzip_members_together() -> None:
    """Members each under the limit but together over it are a 413."""
    data = gzip.compress(bytes(3000)) * 2

    error = refused_inflate(data, "gzip", BodyLimits(4096, 1.0))

    assert error.status == 413


def test_inflate_stops_a_bomb_at_the_limit_with_bounded_memory(
    gzip_bomb: bytes,
) -> None:
    """S3: a 50 MB bomb is refused without allocating much past the limit."""
    limits = BodyLimits(max_bytes=1024 * 1024, read_timeout=1.0)
    tracemalloc.start()

    try:
        error = refused_inflate(gzip_bomb, "gzip", limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (error.status, error.code) == (413, "body_too_large")
    assert peak < 4 * limits.max_bytes


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        pytest.param(b"not compressed at all", "gzip", id="plain-text-as-gzip"),
        pytest.param(EVENT, "deflate", id="plain-json-as-deflate"),
        pytest.param(zlib.compress(EVENT), "gzip", id="deflate-labelled-gzip"),
        pytest.param(gzip.compress(EVENT), "deflate", id="gzip-labelled-deflate"),
        pytest.param(bytes.fromhex("1b0b00f8a540020d"), "gzip", id="random-bytes"),
        pytest.param(gzip.compress(EVENT) + b"garbage", "gzip", id="trailing-garbage"),
    ],
)
def test_inflate_refuses_garbage(data: bytes, encoding: str) -> None:
    """Bytes that are not the named encoding are a 400 bad_encoding, not a 500."""
    error = refused_inflate(data, encoding, LIMITS)

    assert (error.status, error.code) == (400, "bad_encoding")
    assert encoding in error.reason


@pytest.mark.parametrize(
    ("encoding", "compressed"),
    [
        pytest.param("gzip", gzip.compress(EVENT * 50), id="gzip"),
        pytest.param("deflate", zlib.compress(EVENT * 50), id="deflate"),
    ],
)
@pytest.mark.parametrize(
    "keep", [pytest.param(0.5, id="half"), pytest.param(-4, id="no-trailer")]
)
def test_inflate_refuses_truncated_data(
    encoding: str, compressed: bytes, keep: float
) -> None:
    """A compressed stream cut short is a 400, not a silently shorter body."""
    cut = int(len(compressed) * keep) if keep > 0 else int(keep)

    error = refused_inflate(compressed[:cut], encoding, LIMITS)

    assert (error.status, error.code) == (400, "bad_encoding")
    assert "ends early" in error.reason
