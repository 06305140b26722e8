"""Reading a webhook body safely and decoding it strictly.

The order matters: headers are judged before a byte is read, the body is read
under a size bound and a deadline, inflated under the same bound when it is
compressed, and only then authenticated (on the inflated bytes: that is what
the sender signed) and parsed. The app turns off aiohttp's own inflating so
that a bad or mislabelled body gets our clear 400 or 415, not a bare error.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from destination.errors import RequestError
from destination.validation import describe_json_type

# octet-stream is what many HTTP clients send when nobody chose a type.
JSON_MEDIA_TYPES = frozenset(
    {"application/json", "text/plain", "application/octet-stream"}
)
INFLATE_SLICE = 64 * 1024
MAX_GZIP_MEMBERS = 64
FORM_MEDIA_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data"}
)
SUPPORTED_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
UTF8_NAMES = frozenset({"utf-8", "utf8"})


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int
    read_timeout: float


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """The events of a request, in order, and how they were sent."""

    events: list[Any]
    shape: Literal["object", "array", "batch"]


def check_headers(request: web.Request, limits: BodyLimits) -> None:
    """Refuse what the headers alone show to be unacceptable, before reading."""
    _check_content_type(request.headers.get("Content-Type"))
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in SUPPORTED_ENCODINGS:
        raise RequestError(
            415,
            f"Content-Encoding {encoding!r} is not supported; send the body "
            "uncompressed, or compressed with gzip or deflate.",
            code="unsupported_encoding",
        )
    length = request.content_length
    if length is not None and length > limits.max_bytes:
        raise _too_large(f"Content-Length {length}", limits)


def _check_content_type(header: str | None) -> None:
    if header is None or not header.strip():
        return  # Some senders omit it; the body must still be JSON.
    media_type, _, parameters = header.partition(";")
    media_type = media_type.strip().lower()
    if media_type in FORM_MEDIA_TYPES:
        raise RequestError(
            415,
            f"Content-Type {media_type!r} is a form; destination takes JSON, so "
            "set your webhook to send application/json.",
            code="unsupported_media_type",
        )
    if media_type not in JSON_MEDIA_TYPES and not media_type.endswith("+json"):
        raise RequestError(
            415,
            f"Content-Type {media_type!r} is not JSON; send application/json.",
            code="unsupported_media_type",
        )
    charset = _charset(parameters)
    if charset is not None and charset not in UTF8_NAMES:
        raise RequestError(
            415,
            f"charset {charset!r} is not supported; send JSON encoded as UTF-8.",
            code="unsupported_charset",
        )


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


async def read_body(request: web.Request, limits: BodyLimits) -> bytes:
    """The body, inflated, at most ``limits.max_bytes`` of it, within the deadline."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.read_timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limits.max_bytes:
                    raise _too_large("The body", limits)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(
            408,
            f"The body did not arrive within {limits.read_timeout:g} seconds; "
            "send it again.",
            code="read_timeout",
        ) from None
    raw = b"".join(chunks)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        return inflate(raw, encoding, limits)
    return raw


def inflate(data: bytes, encoding: str, limits: BodyLimits) -> bytes:
    """Inflate gzip (every member) or deflate, never past ``limits.max_bytes``.

    The input is fed in slices, so each step costs in proportion to the slice,
    however many members the body holds; at most ``MAX_GZIP_MEMBERS`` are read.
    """
    try:
        if encoding == "deflate":
            return _inflate_deflate(data, limits)
        return _inflate_gzip(data, limits)
    except zlib.error as error:
        raise RequestError(
            400,
            f"The body is not valid {encoding} data ({error}); check that "
            "Content-Encoding names how it was compressed.",
            code="bad_encoding",
        ) from None


def _inflate_gzip(data: bytes, limits: BodyLimits) -> bytes:
    output = _Output(limits)
    view = memoryview(data)
    position = members = 0
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    fed = False  # whether the current member has been given any bytes
    pending = b""
    while pending or position < len(view):
        if not pending:
            pending = bytes(view[position : position + INFLATE_SLICE])
            position += INFLATE_SLICE
        fed = True
        output.add(inflater.decompress(pending, output.room()))
        pending = inflater.unconsumed_tail
        if not inflater.eof:
            continue
        members += 1
        pending = inflater.unused_data
        if not pending.strip(b"\0") and not any(view[position:]):
            return output.join()  # gzip(1) also ignores trailing zeros
        if members >= MAX_GZIP_MEMBERS:
            raise RequestError(
                400,
                f"The body holds more than {MAX_GZIP_MEMBERS} gzip members; "
                "compress it as one.",
                code="bad_encoding",
            )
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        fed = False
    if members == 0 or fed:
        raise zlib.error("the compressed data ends early")
    return output.join()


def _inflate_deflate(data: bytes, limits: BodyLimits) -> bytes:
    # RFC 9110's deflate is zlib-wrapped, but many senders send raw deflate.
    wbits = zlib.MAX_WBITS if data[:1] and (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS
    output = _Output(limits)
    inflater = zlib.decompressobj(wbits)
    pending = data
    while pending:
        output.add(inflater.decompress(pending, output.room()))
        pending = inflater.unconsumed_tail
    if not inflater.eof:
        raise zlib.error("the compressed data ends early")
    return output.join()


class _Output:
    """Inflated pieces, refusing to grow past the body limit."""

    def __init__(self, limits: BodyLimits) -> None:
        self._limits = limits
        self._pieces: list[bytes] = []
        self._size = 0

    def room(self) -> int:
        # One byte more than allowed, so going over is seen, never more.
        return self._limits.max_bytes - self._size + 1

    def add(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self._limits.max_bytes:
            raise _too_large("The inflated body", self._limits)
        self._pieces.append(piece)

    def join(self) -> bytes:
        return b"".join(self._pieces)


def _too_large(what: str, limits: BodyLimits) -> RequestError:
    return RequestError(
        413,
        f"{what} exceeds the limit of {limits.max_bytes} bytes "
        "(DESTINATION_MAX_BODY_BYTES); send smaller batches.",
        code="body_too_large",
    )


def parse_body(raw: bytes) -> ParsedBody:
    """Decode strict UTF-8 JSON and find its events; raise 400 on anything else."""
    text = _decode_utf8(raw)
    document = _loads_strict(text)
    if isinstance(document, list):
        return ParsedBody(events=document, shape="array")
    # An event always has a type; only an object without one is a wrapper,
    # so an event with a field named "batch" stays an event.
    if isinstance(document, dict) and "batch" in document and "type" not in document:
        batch = document["batch"]
        if not isinstance(batch, list):
            kind = describe_json_type(batch)
            raise _bad_json(f"'batch' must be a JSON array of events, not {kind}.")
        return ParsedBody(events=batch, shape="batch")
    if isinstance(document, dict):
        return ParsedBody(events=[document], shape="object")
    raise _bad_json(
        f"The body is {describe_json_type(document)}; send one event object, an "
        'array of events, or {"batch": [...]}.'
    )


def _decode_utf8(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _bad_json(
            f"The body is not valid UTF-8: byte 0x{raw[error.start]:02x} at offset "
            f"{error.start}; send JSON encoded as UTF-8."
        ) from None
    # RFC 8259 lets a parser ignore a byte order mark; one is harmless.
    return text.removeprefix("\ufeff")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; write null or a number")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON text, but Python reads it as infinity, which no
    # JSON encoder, store or API downstream can carry.
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text} is too large to represent")
    return number


_STRICT = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def loads_strict(text: str) -> Any:
    """Parse JSON as every input is parsed: no NaN or Infinity, no duplicate keys.

    Raises ``json.JSONDecodeError``, ``ValueError`` or ``RecursionError``.
    """
    return _STRICT.decode(text)


def _loads_strict(text: str) -> Any:
    try:
        return loads_strict(text)
    except json.JSONDecodeError as error:
        raise _bad_json(
            f"The body is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}."
        ) from None
    except ValueError as error:
        raise _bad_json(f"The body is not valid JSON: {error}.") from None
    except RecursionError:
        raise _bad_json("The JSON nests too deeply to be an event.") from None


def _bad_json(reason: str) -> RequestError:
    return RequestError(400, reason, code="bad_json")
