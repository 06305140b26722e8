"""Reading replay input: files, directories and stdin, as decompressed bytes.

Every input is read in chunks of ``CHUNK_BYTES`` and handed on as it comes, so
memory stays flat however large the input is. gzip is recognised by its magic
bytes, whatever the file is called, and every member of a multi-member file is
read; positions count in the decompressed stream, which is what ``gzip -dc``
prints. A UTF-8 BOM is dropped at the start of a file and of each member. A
member cut short or corrupt ends the stream with one ``Damage``, after every
byte decoded before it.

A file whose name ends in ``.json`` holds one JSON document; everything else
is JSON lines. ``replay_framing`` turns the bytes into records.
"""

from __future__ import annotations

import io
import itertools
import os
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from destination.errors import SettingsError
from destination.replay_framing import (
    Damage,
    InvalidInput,
    Item,
    Location,
    Piece,
    Stream,
    read_document,
    split_lines,
)

STDIN = "-"
STDIN_NAME = "<stdin>"
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 256 * 1024
_INFLATE_STEP_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Source:
    """One input: a file, or standard input when ``path`` is None."""

    name: str
    path: Path | None
    size: int | None

    @property
    def is_document(self) -> bool:
        return self.name.lower().endswith(".json")


@dataclass(slots=True)
class ReadProgress:
    """Raw bytes read so far (compressed bytes for gzip), for progress and ETA."""

    bytes_read: int = 0


def list_sources(arguments: Sequence[str]) -> list[Source]:
    """The files to read, in order; directories are walked in sorted order.

    Hidden files and folders inside a directory are skipped, as in mapping
    directories. A path that does not exist is a usage error.
    """
    sources: list[Source] = []
    for argument in arguments:
        if argument == STDIN:
            sources.append(Source(STDIN_NAME, None, None))
            continue
        path = Path(argument)
        if path.is_dir():
            sources += [_file_source(found) for found in _walk(path)]
        elif path.exists():
            sources.append(_file_source(path))
        else:
            raise SettingsError(
                f"replay input {argument!r} does not exist; name a file, a "
                "directory, or - for standard input."
            )
    if sum(source.path is None for source in sources) > 1:
        raise SettingsError("replay input - (standard input) may be given only once.")
    return sources


def total_size(sources: Sequence[Source]) -> int | None:
    """The bytes to read, when every source has a known size."""
    sizes = [source.size for source in sources]
    if any(size is None for size in sizes):
        return None
    return sum(size for size in sizes if size is not None)


def _walk(directory: Path) -> list[Path]:
    found = []
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [Path(folder, name) for name in files if not name.startswith(".")]
    return sorted(found, key=lambda path: path.relative_to(directory).parts)


def _file_source(path: Path) -> Source:
    try:
        size: int | None = path.stat().st_size
    except OSError:
        size = None  # read_source reports why it cannot be read
    return Source(str(path), path, size)


def read_sources(sources: Iterable[Source], progress: ReadProgress) -> Iterator[Item]:
    """Every record and problem of every source, in order."""
    for source in sources:
        yield from read_source(source, progress)


def read_source(source: Source, progress: ReadProgress) -> Iterator[Item]:
    """The records of one source, then any problem that ended it early."""
    if source.path is None:
        # A BufferedReader unless something replaced it; typeshed says BinaryIO.
        stdin = cast(io.BufferedIOBase, sys.stdin.buffer)
        yield from read_stream(source, stdin, progress)
        return
    try:
        stream = source.path.open("rb")
    except OSError as error:
        yield InvalidInput(Location(source.name), _unreadable(error))
        return
    with stream:
        yield from read_stream(source, stream, progress)


def read_stream(
    source: Source, stream: io.BufferedIOBase, progress: ReadProgress
) -> Iterator[Item]:
    """Decompress when gzip, then frame as JSON lines or as one document."""
    chunks = _read_chunks(stream)
    head = b""
    for chunk in chunks:
        if isinstance(chunk, OSError):
            yield InvalidInput(Location(source.name), _unreadable(chunk))
            return
        head += chunk
        if len(head) >= len(GZIP_MAGIC):
            break
    if not head:
        return
    rest = itertools.chain([head], chunks)
    if head.startswith(GZIP_MAGIC):
        pieces = _inflate(rest, progress)
    else:
        pieces = _plain(rest, progress)
    if source.is_document:
        yield from read_document(source.name, _strip_boms(pieces))
    else:
        yield from split_lines(source.name, _strip_boms(pieces))


def _read_chunks(stream: io.BufferedIOBase) -> Iterator[bytes | OSError]:
    while True:
        try:
            # read1 returns what a pipe has now instead of waiting for a full chunk.
            chunk = stream.read1(CHUNK_BYTES)
        except OSError as error:
            yield error
            return
        if not chunk:
            return
        yield chunk


def _unreadable(error: OSError) -> str:
    return f"the file cannot be read: {error.strerror or error}."


def _plain(chunks: Iterator[bytes | OSError], progress: ReadProgress) -> Stream:
    offset = 0
    for chunk in chunks:
        if isinstance(chunk, OSError):
            yield Damage(_cannot_read_further(chunk), offset, None)
            return
        progress.bytes_read += len(chunk)
        yield Piece(chunk, offset, None, starts_member=offset == 0)
        offset += len(chunk)


def _inflate(chunks: Iterator[bytes | OSError], progress: ReadProgress) -> Stream:
    """Every gzip member in turn; a member cut short or corrupt ends the stream.

    Progress counts compressed bytes as the inflater consumes them, so that a
    bar moves with the events rather than with whole chunks read ahead.
    """
    member = offset = 0
    inflater: Any = None
    starting = False
    for chunk in chunks:
        if isinstance(chunk, OSError):
            yield Damage(_cannot_read_further(chunk), offset, member or None)
            return
        pending = chunk
        while pending:
            before = len(pending)
            if inflater is None:
                # gzip allows zero padding after a member, as tapes wrote it.
                pending = pending.lstrip(b"\0") if member else pending
                if not pending:
                    progress.bytes_read += before
                    break
                member += 1
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                starting = True
            try:
                # A bounded step: a small chunk may inflate a thousandfold.
                data = inflater.decompress(pending, _INFLATE_STEP_BYTES)
            except zlib.error as error:
                yield Damage(f"is not valid gzip data ({error})", offset, member)
                return
            if data:
                yield Piece(data, offset, member, starting)
                offset += len(data)
                starting = False
            if inflater.eof:
                pending, inflater = inflater.unused_data, None
            else:
                pending = inflater.unconsumed_tail
            progress.bytes_read += before - len(pending)
    if inflater is not None:
        data = inflater.flush()
        if data:
            yield Piece(data, offset, member, starting)
            offset += len(data)
        if not inflater.eof:
            yield Damage("ends early: the file looks truncated", offset, member)


def _cannot_read_further(error: OSError) -> str:
    return f"cannot be read further ({error.strerror or error})"


def _strip_boms(pieces: Stream) -> Stream:
    """Drop a UTF-8 BOM at the start of the stream and of each gzip member."""
    held: Piece | None = None
    for piece in pieces:
        if isinstance(piece, Damage) or piece.starts_member:
            if held is not None:
                yield _without_bom(held)
            held = None
        if isinstance(piece, Damage):
            yield piece
            return
        if piece.starts_member:
            held = piece
        elif held is not None:
            # The BOM may straddle two pieces of the same member.
            held = Piece(held.data + piece.data, held.offset, held.member, True)
        else:
            yield piece
            continue
        if len(held.data) >= len(BOM):
            yield _without_bom(held)
            held = None
    if held is not None:
        yield _without_bom(held)


def _without_bom(piece: Piece) -> Piece:
    if not piece.data.startswith(BOM):
        return piece
    size = len(BOM)
    return Piece(piece.data[size:], piece.offset + size, piece.member, True)
