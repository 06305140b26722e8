"""Capture: the archive the exporter writes from the store, and its crash repair."""

from __future__ import annotations

import asyncio
import gzip
import json
import stat
from pathlib import Path
from typing import Any

from destination.capture import (
    ArchiveWriter,
    CaptureLine,
    Exporter,
    complete_gzip_length,
    envelope,
)
from tests.conftest import compact, make_event, signed_headers, store_of, wait_for


def archive_lines(root: Path, kind: str) -> list[dict[str, Any]]:
    lines = []
    for path in sorted((root / kind).rglob("*.jsonl.gz*")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines += [json.loads(line) for line in handle]
    return lines


async def test_service_archives_accepted_and_rejected(
    make_service: Any, tmp_path: Path
) -> None:
    """--capture writes every accepted event and every rejected one, 0600."""
    root = tmp_path / "capture"
    client = await make_service(capture_dir=root, capture_interval=0.05)
    body = compact([make_event("m-cap-1"), make_event(""), make_event("m-cap-2")])
    await client.post("/webhook", data=body, headers=signed_headers(body))

    await wait_for(lambda: len(archive_lines(root, "events")) == 2)
    await wait_for(lambda: len(archive_lines(root, "rejected")) == 1)
    await client.close()

    events = archive_lines(root, "events")
    [rejected] = archive_lines(root, "rejected")
    files = sorted(root.rglob("*.jsonl.gz*"))
    assert [line["event"]["messageId"] for line in events] == ["m-cap-1", "m-cap-2"]
    assert {line["destination_capture"] for line in events} == {1}
    assert events[0]["sourceId"] == "default"
    assert rejected["event"]["messageId"] == ""
    assert rejected["errors"][0]["path"] == "$.messageId"
    assert all(not path.name.endswith(".part") for path in files)
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o600}
    assert stat.S_IMODE((root / "events").stat().st_mode) == 0o700


async def test_exporter_resumes_from_its_checkpoint(
    make_service: Any, tmp_path: Path
) -> None:
    """A second exporter on the same store writes only what is new."""
    client = await make_service()
    store = store_of(client)
    root = tmp_path / "capture"
    first = compact([make_event("m-ck-1"), make_event("m-ck-2")])
    await client.post("/webhook", data=first, headers=signed_headers(first))
    await _export_all(store, root)
    second = compact([make_event("m-ck-3")])
    await client.post("/webhook", data=second, headers=signed_headers(second))

    await _export_all(store, root)

    ids = [line["event"]["messageId"] for line in archive_lines(root, "events")]
    assert ids == ["m-ck-1", "m-ck-2", "m-ck-3"]


async def _export_all(store: Any, root: Path) -> None:
    stop = asyncio.Event()
    stop.set()
    await Exporter(store, root, max_bytes=1 << 20).run(0.01, stop)


def test_files_rotate_by_size(tmp_path: Path) -> None:
    """Past the size limit a new file starts; every file is complete gzip."""
    writer = ArchiveWriter(tmp_path, "events", max_bytes=200)
    for index in range(5):
        line = envelope("default", 1714564800.0, make_event(f"m-rot-{index}"))
        writer.write([CaptureLine("default", 1714564800.0, line)])
    writer.close()

    files = sorted((tmp_path / "events").rglob("*.jsonl.gz"))
    assert len(files) >= 2
    assert files[0].parent == tmp_path / "events/default/2024/05/01/12"
    assert len(archive_lines(tmp_path, "events")) == 5


def test_files_rotate_by_hour(tmp_path: Path) -> None:
    """Events received in two hours land in two folders."""
    writer = ArchiveWriter(tmp_path, "events", max_bytes=1 << 20)
    lines = [
        CaptureLine("default", at, envelope("default", at, make_event(f"m-h-{at}")))
        for at in (1714564800.0, 1714568400.0)
    ]

    writer.write(lines)
    writer.close()

    folders = {p.parent.name for p in (tmp_path / "events").rglob("*.jsonl.gz")}
    assert folders == {"12", "13"}


def test_a_crashed_part_file_is_cut_to_whole_members(tmp_path: Path) -> None:
    """A .part with a torn last member keeps its whole members and is renamed."""
    folder = tmp_path / "events" / "default" / "2024" / "05" / "01" / "12"
    folder.mkdir(parents=True)
    whole = gzip.compress(b'{"a":1}\n') + gzip.compress(b'{"a":2}\n')
    torn = gzip.compress(b'{"a":3}\n')[:-6]
    part = folder / "events-20240501T12-0000.jsonl.gz.part"
    part.write_bytes(whole + torn)

    ArchiveWriter(tmp_path, "events", max_bytes=1 << 20).repair()

    repaired = folder / "events-20240501T12-0000.jsonl.gz"
    assert not part.exists()
    assert gzip.decompress(repaired.read_bytes()) == b'{"a":1}\n{"a":2}\n'


def test_complete_gzip_length() -> None:
    """Whole members count; a torn or foreign tail does not."""
    member = gzip.compress(b"x\n")

    assert complete_gzip_length(member * 2) == len(member) * 2
    assert complete_gzip_length(member + member[:5]) == len(member)
    assert complete_gzip_length(b"not gzip") == 0
