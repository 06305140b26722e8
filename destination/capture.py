"""Capture: archive every accepted event, and every rejected one, as gzipped JSON lines.

The archive is written from the durable store by a background exporter with a
checkpoint, never from the request path, so it cannot miss an acknowledged
event: after a crash it resumes from the checkpoint, and the few lines it
writes again are harmless because replay deduplicates them.

Layout (documented in docs/replay.md)::

    DIR/events/<source id>/YYYY/MM/DD/HH/events-YYYYMMDDTHH-<n>.jsonl.gz
    DIR/rejected/<source id>/YYYY/MM/DD/HH/rejected-YYYYMMDDTHH-<n>.jsonl.gz

Hours are UTC, from when destination received the event. Each line is an
envelope ``{"destination_capture": 1, "sourceId", "receivedAt", "event"}``,
plus ``"errors"`` for a rejected event; ``destination replay`` unwraps it.
A file is written as ``….part`` and renamed when it rotates (by size or hour)
or the exporter stops; a ``.part`` left by a crash is cut back to its last
complete gzip member and renamed on the next start. Files are mode 0600 and
folders 0700: they hold personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from destination.errors import StoreError
from destination.log import get_logger
from destination.store import Store, StoredEvent, StoredRejection

log = get_logger(__name__)

CAPTURE_VERSION = 1
BATCH = 1000
PART = ".part"


@dataclass(frozen=True, slots=True)
class CaptureLine:
    source_id: str
    received_at: float
    line: bytes


def envelope(
    source_id: str, received_at: float | None, event: Any, errors: Any = None
) -> bytes:
    """One archive line: the event as received, with where and when it came."""
    document: dict[str, Any] = {
        "destination_capture": CAPTURE_VERSION,
        "sourceId": source_id,
    }
    if received_at is not None:
        document["receivedAt"] = _iso(received_at)
    document["event"] = event
    if errors is not None:
        document["errors"] = errors
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace") + b"\n"


def unwrap_capture(document: Any) -> Any:
    """The event inside a capture envelope; any other document as it is."""
    if isinstance(document, dict) and "destination_capture" in document:
        return document.get("event")
    return document


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ArchiveWriter:
    """Appends lines to hourly files of one tree, one gzip member per batch."""

    def __init__(self, root: Path, kind: str, max_bytes: int) -> None:
        self._root = root
        self._kind = kind
        self._max_bytes = max_bytes
        self._current: Path | None = None
        self._current_hour: tuple[str, str] | None = None

    def repair(self) -> None:
        """Finish ``.part`` files a crash left behind: cut, then rename."""
        tree = self._root / self._kind
        if not tree.exists():
            return
        for part in sorted(tree.rglob(f"*{PART}")):
            keep = complete_gzip_length(part.read_bytes())
            if keep == 0:
                part.unlink()
                continue
            with part.open("r+b") as handle:
                handle.truncate(keep)
                os.fsync(handle.fileno())
            part.rename(part.with_name(part.name.removesuffix(PART)))
            log.info("capture.repaired", file=str(part), kept_bytes=keep)

    def write(self, lines: Sequence[CaptureLine]) -> None:
        """Append lines grouped by (source, hour), each group as one fsynced member."""
        groups: dict[tuple[str, str], list[bytes]] = {}
        for line in lines:
            hour = datetime.fromtimestamp(line.received_at, UTC).strftime("%Y%m%dT%H")
            groups.setdefault((line.source_id, hour), []).append(line.line)
        for key, group in groups.items():
            path = self._file_for(key)
            member = gzip.compress(b"".join(group), mtime=0)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(descriptor, member)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def close(self) -> None:
        """Rename the open file to its final name."""
        if self._current is not None and self._current.exists():
            self._current.rename(self._final(self._current))
        self._current = None
        self._current_hour = None

    def _file_for(self, key: tuple[str, str]) -> Path:
        full = self._current is not None and (
            self._current.stat().st_size >= self._max_bytes
            if self._current.exists()
            else False
        )
        if key != self._current_hour or full:
            self.close()
            self._current = self._new_file(*key)
            self._current_hour = key
        assert self._current is not None
        return self._current

    def _new_file(self, source_id: str, hour: str) -> Path:
        folder = self._root
        for part in (self._kind, _safe(source_id), hour[0:4], hour[4:6], hour[6:8]):
            folder = folder / part
            folder.mkdir(exist_ok=True, mode=0o700)
        folder = folder / hour[9:11]
        folder.mkdir(exist_ok=True, mode=0o700)
        number = 0
        while True:
            name = f"{self._kind}-{hour}-{number:04d}.jsonl.gz"
            if not (folder / name).exists() and not (folder / (name + PART)).exists():
                return folder / (name + PART)
            number += 1

    @staticmethod
    def _final(path: Path) -> Path:
        return path.with_name(path.name.removesuffix(PART))


def _safe(source_id: str) -> str:
    """A source id as one safe path segment."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in source_id)
    return cleaned.strip(".") or "_"


def complete_gzip_length(data: bytes) -> int:
    """How many leading bytes of ``data`` are whole gzip members."""
    offset = 0
    while offset < len(data):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            inflater.decompress(data[offset:])
        except zlib.error:
            break
        if not inflater.eof:
            break
        offset = len(data) - len(inflater.unused_data)
    return offset


class Exporter:
    """Copies new events and rejections from the store into the archive."""

    def __init__(self, store: Store, root: Path, *, max_bytes: int) -> None:
        self._store = store
        self._events = ArchiveWriter(root, "events", max_bytes)
        self._rejected = ArchiveWriter(root, "rejected", max_bytes)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Export every ``interval`` seconds until ``stop``; then finish the files."""
        await asyncio.to_thread(self._repair)
        while True:
            try:
                while await self.export_once():
                    pass
            except (StoreError, OSError) as error:
                log.warning("capture.failed", error=str(error))
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
        await asyncio.to_thread(self._close)

    def _repair(self) -> None:
        self._events.repair()
        self._rejected.repair()

    def _close(self) -> None:
        self._events.close()
        self._rejected.close()

    async def export_once(self) -> bool:
        """Export one batch of each kind; True while there may be more."""
        events = await self._export(
            "capture.events", self._store.export_events, self._events, _event_line
        )
        rejected = await self._export(
            "capture.rejected",
            self._store.export_rejected,
            self._rejected,
            _rejected_line,
        )
        return events or rejected

    async def _export(
        self, checkpoint: str, fetch: Any, writer: Any, line: Any
    ) -> bool:
        after = int(await self._store.get_meta(checkpoint) or 0)
        rows = await fetch(after, BATCH)
        if not rows:
            return False
        await asyncio.to_thread(writer.write, [line(row) for row in rows])
        # Only after the lines are on disk: a crash in between repeats them.
        await self._store.set_meta(checkpoint, str(rows[-1].id))
        log.info("capture.exported", kind=checkpoint, lines=len(rows))
        return len(rows) == BATCH


def _event_line(row: StoredEvent) -> CaptureLine:
    event = json.loads(row.payload)
    return CaptureLine(
        row.source_id, row.received_at, envelope(row.source_id, row.received_at, event)
    )


def _rejected_line(row: StoredRejection) -> CaptureLine:
    event = json.loads(row.payload)
    errors = json.loads(row.errors)
    line = envelope(row.source_id, row.received_at, event, errors)
    return CaptureLine(row.source_id, row.received_at, line)
