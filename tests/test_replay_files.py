"""Reading and framing replay input: lines, gzip members, documents, errors."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from destination import replay_files, replay_framing
from destination.errors import SettingsError
from destination.replay_files import (
    ReadProgress,
    Source,
    list_sources,
    read_source,
    read_stream,
)
from destination.replay_framing import InvalidInput, Item, Record
from tests.conftest import compact, make_event
from tests.paths import REPLAY_FIXTURES


def read(path: Path) -> list[Item]:
    [source] = list_sources([str(path)])
    return list(read_source(source, ReadProgress()))


def records(items: list[Item]) -> list[Record]:
    return [item for item in items if isinstance(item, Record)]


def problems(items: list[Item]) -> list[InvalidInput]:
    return [item for item in items if isinstance(item, InvalidInput)]


def lines(*events: Any) -> bytes:
    return b"".join(compact(event) + b"\n" for event in events)


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


@pytest.fixture(params=[1, 7, replay_files.CHUNK_BYTES], ids=["1B", "7B", "default"])
def chunk_bytes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every framing test runs with chunks that split lines, BOMs and CRLFs."""
    monkeypatch.setattr(replay_files, "CHUNK_BYTES", request.param)
    return int(request.param)


@pytest.mark.parametrize(
    ("name", "message_ids", "line_numbers"),
    [
        pytest.param("blank_lines.jsonl", [1, 2, 3], [1, 3, 5], id="blank-lines"),
        pytest.param("bom_first_line.jsonl", [1, 2, 3], [1, 2, 3], id="bom"),
        pytest.param("crlf.jsonl", [1, 2, 3], [1, 2, 3], id="crlf"),
        pytest.param("multi_member.jsonl.gz", [1, 2, 3, 4], [1, 2, 3, 4], id="gzip"),
        pytest.param("duplicate_messageId.jsonl", [1, 1, 1], [1, 2, 3], id="dup-id"),
    ],
)
def test_clean_fixtures(
    chunk_bytes: int, name: str, message_ids: list[int], line_numbers: list[int]
) -> None:
    """R1, R2, R3: each fixture gives its README's events at their physical lines."""
    items = read(REPLAY_FIXTURES / name)

    assert problems(items) == []
    found = records(items)
    assert [r.event["messageId"] for r in found] == [
        f"replay-msg-{n:04d}" for n in message_ids
    ]
    assert [r.location.line for r in found] == line_numbers
    assert all(set(r.event) >= {"type", "event"} for r in found)
    assert not any("\r" in text or "\ufeff" in text for text in strings_in(found[0]))


def test_crlf_leaves_no_carriage_return_in_values(chunk_bytes: int) -> None:
    """R2: no value of any event keeps a stray \\r."""
    found = records(read(REPLAY_FIXTURES / "crlf.jsonl"))

    texts = [text for record in found for text in strings_in(record.event)]
    assert texts and not any("\r" in text for text in texts)
    assert [r.event["properties"]["orderId"] for r in found] == ["o-1", "o-2", "o-3"]


def test_multi_member_gzip_names_members(chunk_bytes: int) -> None:
    """Both members are read; offsets count in the decompressed stream."""
    found = records(read(REPLAY_FIXTURES / "multi_member.jsonl.gz"))

    assert [r.location.member for r in found] == [1, 1, 2, 2]
    assert [r.location.offset for r in found] == [0, 161, 322, 483]


def test_truncated_last_line_comes_after_the_complete_records(
    chunk_bytes: int,
) -> None:
    """R3: three records, then one error with file, line 4 and byte offset."""
    path = REPLAY_FIXTURES / "truncated_last_line.jsonl"

    items = read(path)

    assert [type(item) for item in items] == [Record, Record, Record, InvalidInput]
    problem = items[-1]
    assert isinstance(problem, InvalidInput)
    assert (problem.location.line, problem.location.offset) == (4, 483)
    assert "truncated" in problem.message
    assert str(problem).startswith(f"{path}:4 (byte offset 483): line 4 ")


def test_concatenated_objects_are_one_error(chunk_bytes: int) -> None:
    """R3: three objects on one line are one error naming the line, never one event."""
    items = read(REPLAY_FIXTURES / "concatenated_no_newline.jsonl")

    assert len(items) == 1
    [problem] = problems(items)
    assert problem.location.line == 1
    assert "line 1 holds more than one JSON value" in problem.message


@pytest.mark.parametrize(
    "separator",
    [
        pytest.param("\u2028", id="U+2028"),
        pytest.param("\u2029", id="U+2029"),
        pytest.param("\u0085", id="NEL"),
        pytest.param("\x0b", id="VT"),
        pytest.param("\x0c", id="FF"),
    ],
)
def test_only_newline_ends_a_line(
    tmp_path: Path, chunk_bytes: int, separator: str
) -> None:
    """Unicode line separators inside strings are data, not line ends."""
    event = make_event("m-sep", properties={"note": f"a{separator}b"})
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines(event, make_event("m-next")))

    found = records(read(path))

    assert [r.event["messageId"] for r in found] == ["m-sep", "m-next"]
    assert found[0].event["properties"]["note"] == f"a{separator}b"


def test_whitespace_lines_are_skipped_and_lines_keep_their_numbers(
    tmp_path: Path, chunk_bytes: int
) -> None:
    """Spaces, tabs and a lone \\r make blank lines; later lines keep their numbers."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b" \t \n\r\n\n" + lines(make_event("m-4")) + b"\t\n{oops}\n")

    items = read(path)

    assert [(type(i), i.location.line) for i in items] == [
        (Record, 4),
        (InvalidInput, 6),
    ]


def test_last_line_without_newline_is_used_when_complete(
    tmp_path: Path, chunk_bytes: int
) -> None:
    """Many writers omit the final newline; a complete last line is a record."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines(make_event("m-1")) + compact(make_event("m-2")))

    assert [r.event["messageId"] for r in records(read(path))] == ["m-1", "m-2"]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        pytest.param(b'{"a": NaN}', "NaN is not JSON", id="nan"),
        pytest.param(b'{"a": Infinity}', "Infinity is not JSON", id="infinity"),
        pytest.param(b'{"a": 1, "a": 2}', "'a' appears twice", id="duplicate-key"),
        pytest.param(b'{"a": "\xe9"}', "byte 0xe9 at column 8", id="latin-1"),
        pytest.param(b'{"a": 1', "not valid JSON", id="unclosed"),
        pytest.param(b'{"a": 1} trailing', "more than one JSON value", id="garbage"),
    ],
)
def test_bad_lines_are_reported_with_their_line(
    tmp_path: Path, line: bytes, needle: str
) -> None:
    """Strict JSON as the webhook parses it; each bad line is one error, in place."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines(make_event("m-1")) + line + b"\n" + lines(make_event("m-3")))

    items = read(path)

    assert [type(item) for item in items] == [Record, InvalidInput, Record]
    problem = items[1]
    assert isinstance(problem, InvalidInput)
    assert problem.location.line == 2
    assert needle in problem.message


def test_an_overlong_line_is_refused_without_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line past the cap is one error; the next line is read as usual."""
    monkeypatch.setattr(replay_framing, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(replay_files, "CHUNK_BYTES", 64)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a":"' + b"x" * 5000 + b'"}\n' + lines(make_event("m-2")))

    items = read(path)

    assert [type(item) for item in items] == [InvalidInput, Record]
    assert "line 1 is 5008 bytes long" in str(items[0])


def test_gzip_is_detected_by_magic_whatever_the_name(
    tmp_path: Path, chunk_bytes: int
) -> None:
    """Segment's archive names end in .gz, ours may not; the bytes decide."""
    disguised = tmp_path / "events.txt"
    disguised.write_bytes(gzip.compress(lines(make_event("m-1"))))
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_bytes(lines(make_event("m-2")))

    assert records(read(disguised))[0].location.member == 1
    assert records(read(plain))[0].location.member is None


def test_bom_is_dropped_at_each_member_start(tmp_path: Path, chunk_bytes: int) -> None:
    """A writer that starts every member with a BOM still gives clean events."""
    first = gzip.compress(replay_files.BOM + lines(make_event("m-1")))
    second = gzip.compress(replay_files.BOM + lines(make_event("m-2")))
    path = tmp_path / "events.gz"
    path.write_bytes(first + second)

    first_length = len(replay_files.BOM + lines(make_event("m-1")))

    items = read(path)

    assert problems(items) == []
    assert [r.location.offset for r in records(items)] == [3, first_length + 3]
    assert [r.location.member for r in records(items)] == [1, 2]


def test_zero_padding_after_a_member_is_ignored(tmp_path: Path) -> None:
    """gzip allows zero bytes after a member; they are not a new member."""
    path = tmp_path / "events.gz"
    path.write_bytes(gzip.compress(lines(make_event("m-1"))) + b"\0" * 64)

    assert [type(item) for item in read(path)] == [Record]


def test_truncated_gzip_names_member_and_offset(
    tmp_path: Path, chunk_bytes: int
) -> None:
    """R3: every complete record first, then member, line and decompressed offset."""
    first = gzip.compress(lines(make_event("m-1"), make_event("m-2")))
    noise = [make_event(f"m-{n}", note=os.urandom(32).hex()) for n in range(3, 40)]
    second = gzip.compress(lines(*noise))
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(first + second[: len(second) // 2])

    items = read(path)

    found, [problem] = records(items), problems(items)
    assert items[-1] is problem
    assert [r.event["messageId"] for r in found] == [
        f"m-{n}" for n in range(1, len(found) + 1)
    ]
    assert found[-1].location.member == 2
    assert problem.location.member == 2
    expected_line = len(found) + 1
    assert problem.location.line == expected_line
    assert problem.location.offset is not None and problem.location.offset > 0
    assert "gzip member 2 ends early: the file looks truncated" in problem.message
    assert f"line {expected_line} is cut short" in problem.message
    assert "(gzip member 2, decompressed byte offset" in str(problem)


def test_corrupt_gzip_is_reported(tmp_path: Path) -> None:
    """Damaged compressed bytes end the file with an error, not an exception."""
    data = bytearray(gzip.compress(lines(*(make_event(f"m-{n}") for n in range(50)))))
    data[40:60] = b"\xff" * 20
    path = tmp_path / "events.gz"
    path.write_bytes(bytes(data))

    items = read(path)

    assert isinstance(items[-1], InvalidInput)
    assert "gzip member 1 is not valid gzip data" in items[-1].message


@pytest.mark.parametrize(
    ("document", "paths"),
    [
        pytest.param(make_event("m-1"), [None], id="one-event"),
        pytest.param(
            [make_event("m-1"), make_event("m-2")], ["$[0]", "$[1]"], id="array"
        ),
        pytest.param(
            {"batch": [make_event("m-1"), make_event("m-2")]},
            ["$.batch[0]", "$.batch[1]"],
            id="batch",
        ),
    ],
)
def test_json_documents(tmp_path: Path, document: Any, paths: list[str | None]) -> None:
    """A .json file holds an event, an array of events, or a batch."""
    path = tmp_path / "events.json"
    path.write_text(json.dumps(document, indent=2))

    found = records(read(path))

    assert [r.location.path for r in found] == paths
    assert [r.event["messageId"] for r in found] == [
        f"m-{n}" for n in range(1, len(paths) + 1)
    ]


def test_gzipped_json_document(tmp_path: Path) -> None:
    """A .json name with gzip bytes is a compressed document."""
    path = tmp_path / "batch.json"
    path.write_bytes(gzip.compress(compact({"batch": [make_event("m-1")]})))

    assert [r.location.path for r in records(read(path))] == ["$.batch[0]"]


@pytest.mark.parametrize(
    ("text", "needle", "line"),
    [
        pytest.param('{"batch": 3}', "'batch' must be an array", None, id="batch"),
        pytest.param('{"a":1}\n{"b":2}\n', "must not be named .json", 2, id="lines"),
        pytest.param('[\n {"a":1},\n {"a":2\n]', "not valid JSON", 4, id="broken"),
    ],
)
def test_bad_json_documents(
    tmp_path: Path, text: str, needle: str, line: int | None
) -> None:
    """A document that cannot be read is one error with its line."""
    path = tmp_path / "events.json"
    path.write_text(text)

    [problem] = read(path)

    assert isinstance(problem, InvalidInput)
    assert needle in problem.message
    assert problem.location.line == line


def test_stdin_is_read_as_json_lines() -> None:
    """- reads standard input, gzip or not."""
    source = Source(replay_files.STDIN_NAME, None, None)
    data = io.BytesIO(gzip.compress(lines(make_event("m-1"), make_event("m-2"))))

    found = records(list(read_stream(source, data, ReadProgress())))

    second_offset = len(lines(make_event("m-1")))
    assert [str(r.location) for r in found] == [
        "<stdin>:1 (gzip member 1, decompressed byte offset 0)",
        f"<stdin>:2 (gzip member 1, decompressed byte offset {second_offset})",
    ]


def test_progress_counts_raw_bytes(tmp_path: Path) -> None:
    """Progress counts the bytes read from disk, compressed or not."""
    path = tmp_path / "events.gz"
    path.write_bytes(gzip.compress(lines(make_event("m-1"))))
    progress = ReadProgress()
    [source] = list_sources([str(path)])

    list(read_source(source, progress))

    assert progress.bytes_read == path.stat().st_size == source.size


def test_directories_are_walked_in_sorted_order(tmp_path: Path) -> None:
    """Files under a directory, recursively, sorted; hidden ones are skipped."""
    for name in ("b/2.jsonl", "a.jsonl", "b/10.jsonl", ".hidden/x.jsonl", "b/.swp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")

    sources = list_sources([str(tmp_path)])

    assert [Path(s.name).relative_to(tmp_path).as_posix() for s in sources] == [
        "a.jsonl",
        "b/10.jsonl",
        "b/2.jsonl",
    ]


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        pytest.param(["missing.jsonl"], "does not exist", id="missing"),
        pytest.param(["-", "-"], "only once", id="stdin-twice"),
    ],
)
def test_bad_paths_are_usage_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    needle: str,
) -> None:
    """A path that does not exist stops the command before anything is read."""
    monkeypatch.chdir(tmp_path)

    with pytest.raises(SettingsError, match=needle):
        list_sources(arguments)


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    """A file that vanished between listing and reading is one error, not a crash."""
    path = tmp_path / "gone.jsonl"
    source = Source(str(path), path, 10)

    [problem] = list(read_source(source, ReadProgress()))

    assert isinstance(problem, InvalidInput)
    assert "cannot be read" in problem.message
