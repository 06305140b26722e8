"""Framing replay input: decompressed bytes into records, or honest errors.

``replay_files`` turns files into a stream of ``Piece`` values (bytes, where
they start in the decompressed stream, which gzip member) ending, if the input
is damaged, in one ``Damage``. This module cuts that stream into JSON lines, or
reads it as one ``.json`` document, and parses each strictly:

- lines end at ``\\n`` only: U+2028 and the other Unicode separators are legal
  inside JSON strings; a ``\\r`` before the ``\\n`` is dropped; blank lines are
  skipped but still counted, so every location is a physical line;
- a line holding several JSON values is one error for that line;
- a line longer than ``MAX_LINE_BYTES`` is refused without being held;
- what cannot be used becomes an ``InvalidInput`` naming the file, line and
  byte offset, yielded after every record before it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from destination.body import loads_strict
from destination.capture import unwrap_capture

# Segment caps an event at 32 KiB; a line 32 times longer is not an event,
# and reading it whole would let one damaged file take all the memory.
MAX_LINE_BYTES = 1024 * 1024
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
_BLANK = b" \t\r"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a record or a problem is: file, physical line, byte offset."""

    source: str
    line: int | None = None
    offset: int | None = None
    member: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        details = [] if self.path is None else [self.path]
        if self.member is not None:
            details.append(f"gzip member {self.member}")
            if self.offset is not None:
                details.append(f"decompressed byte offset {self.offset}")
        elif self.offset is not None:
            details.append(f"byte offset {self.offset}")
        return f"{where} ({', '.join(details)})" if details else where

    def as_json(self) -> dict[str, Any]:
        fields = {
            "file": self.source,
            "line": self.line,
            "offset": self.offset,
            "member": self.member,
            "path": self.path,
        }
        return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Record:
    """One parsed JSON value, which replay treats as one event."""

    location: Location
    event: Any


@dataclass(frozen=True, slots=True)
class InvalidInput:
    """A line, document or file that replay could not use, and why."""

    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


Item = Record | InvalidInput


# Decompressed input, with where each piece starts in the decompressed stream.


@dataclass(frozen=True, slots=True)
class Piece:
    """Decompressed bytes; ``offset`` counts from the start of the whole stream."""

    data: bytes
    offset: int
    member: int | None
    starts_member: bool


@dataclass(frozen=True, slots=True)
class Damage:
    """The stream cannot go on: a truncated or corrupt member, or a read error."""

    reason: str
    offset: int
    member: int | None


Stream = Iterator[Piece | Damage]


# JSON lines.


@dataclass(slots=True)
class _Line:
    """The line being assembled across pieces."""

    number: int = 1
    offset: int | None = None
    member: int | None = None
    length: int = 0
    parts: list[bytes] | None = None

    def location(self, source: str) -> Location:
        return Location(source, self.number, self.offset, self.member)

    def next(self) -> None:
        self.number += 1
        self.offset = self.member = self.parts = None
        self.length = 0


def split_lines(source: str, pieces: Stream) -> Iterator[Item]:
    """JSON lines: one record or one problem per non-blank line, in order."""
    line = _Line()
    for piece in pieces:
        if isinstance(piece, Damage):
            yield from _end_damaged(source, line, piece)
            return
        data = piece.data
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            stop = len(data) if end < 0 else end
            if line.offset is None:
                line.offset, line.member = piece.offset + start, piece.member
            _extend(line, data, start, stop)
            if end < 0:
                break
            item = _judge_line(source, line, complete=True)
            if item is not None:
                yield item
            line.next()
            start = end + 1
    if line.length:
        item = _judge_line(source, line, complete=False)
        if item is not None:
            yield item


def _extend(line: _Line, data: bytes, start: int, stop: int) -> None:
    if line.length + stop - start <= MAX_LINE_BYTES:
        if line.parts is None:
            line.parts = []
        line.parts.append(data[start:stop])
    else:
        line.parts = None  # too long: keep counting, stop keeping
    line.length += stop - start


def _judge_line(source: str, line: _Line, *, complete: bool) -> Item | None:
    location = line.location(source)
    if line.parts is None and line.length > MAX_LINE_BYTES:
        return InvalidInput(
            location,
            f"line {line.number} is {line.length} bytes long, over the limit of "
            f"{MAX_LINE_BYTES}; an event is at most 32 KiB, so this is not one.",
        )
    raw = b"".join(line.parts or ())
    raw = raw.removesuffix(b"\r")
    if not raw.strip(_BLANK):
        return None
    return _decode_line(location, line.number, raw, complete=complete)


def _decode_line(
    location: Location, number: int, raw: bytes, *, complete: bool
) -> Item:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return InvalidInput(
            location,
            f"line {number} is not valid UTF-8: byte 0x{raw[error.start]:02x} at "
            f"column {error.start + 1}; write events as UTF-8.",
        )
    try:
        return Record(location, unwrap_capture(loads_strict(text)))
    except json.JSONDecodeError as error:
        return InvalidInput(location, _json_problem(number, error, complete))
    except ValueError as error:
        return InvalidInput(location, f"line {number} is not valid JSON: {error}.")
    except RecursionError:
        message = f"line {number} nests too deeply to be an event."
        return InvalidInput(location, message)


def _json_problem(number: int, error: json.JSONDecodeError, complete: bool) -> str:
    if error.msg == "Extra data":
        return (
            f"line {number} holds more than one JSON value (the next starts at "
            f"column {error.colno}); put each event on a line of its own."
        )
    if not complete:
        return (
            f"line {number} is not complete JSON ({_describe(error)}) and ends the "
            "file without a newline: the file looks truncated."
        )
    return f"line {number} is not valid JSON: {_describe(error)}."


def _describe(error: json.JSONDecodeError) -> str:
    # Some of json's messages already end in "at" ("Unterminated string starting at").
    joint = " " if error.msg.endswith(" at") else " at "
    return f"{error.msg}{joint}column {error.colno}"


def _end_damaged(source: str, line: _Line, damage: Damage) -> Iterator[Item]:
    """Use what parses of the cut line, then report the damage once."""
    where = "the input" if damage.member is None else f"gzip member {damage.member}"
    message = f"{where} {damage.reason}"
    if line.length:
        item = _judge_line(source, line, complete=True)
        if isinstance(item, Record):
            yield item
            message += f", just after line {line.number}"
        elif item is not None:
            message += f"; line {line.number} is cut short"
    location = Location(source, line.number, damage.offset, damage.member)
    yield InvalidInput(location, message + ".")


# One JSON document per .json file.


def read_document(source: str, pieces: Stream) -> Iterator[Item]:
    """A ``.json`` file: an event, an array of events, or ``{"batch": [...]}``."""
    parts: list[bytes] = []
    size = 0
    for piece in pieces:
        if isinstance(piece, Damage):
            where = (
                "the input" if piece.member is None else f"gzip member {piece.member}"
            )
            location = Location(source, offset=piece.offset, member=piece.member)
            yield InvalidInput(location, f"{where} {piece.reason}.")
            return
        size += len(piece.data)
        if size > MAX_DOCUMENT_BYTES:
            yield InvalidInput(
                Location(source),
                f"the document is over {MAX_DOCUMENT_BYTES} bytes; write large "
                "archives as JSON lines (one event per line) instead.",
            )
            return
        parts.append(piece.data)
    yield from _document_records(source, b"".join(parts))


def _document_records(source: str, raw: bytes) -> Iterator[Item]:
    try:
        document = loads_strict(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        location = Location(source, offset=error.start)
        yield InvalidInput(location, "the document is not valid UTF-8.")
        return
    except json.JSONDecodeError as error:
        location = Location(source, error.lineno, _byte_offset(raw, error.pos))
        hint = ""
        if error.msg == "Extra data":
            hint = "; a file of JSON lines must not be named .json"
        message = f"the document is not valid JSON: {_describe(error)}"
        yield InvalidInput(location, message + hint + ".")
        return
    except (ValueError, RecursionError) as error:
        message = f"the document is not valid JSON: {error or 'it nests too deeply'}."
        yield InvalidInput(Location(source), message)
        return

    if isinstance(document, dict) and "batch" in document:
        events, prefix = document["batch"], "$.batch"
        if not isinstance(events, list):
            message = "'batch' must be an array of events."
            yield InvalidInput(Location(source, path=prefix), message)
            return
    elif isinstance(document, list):
        events, prefix = document, "$"
    else:
        yield Record(Location(source), unwrap_capture(document))
        return
    for index, event in enumerate(events):
        yield Record(Location(source, path=f"{prefix}[{index}]"), event)


def _byte_offset(raw: bytes, position: int) -> int:
    text = raw.decode("utf-8")
    return len(text[:position].encode("utf-8"))
