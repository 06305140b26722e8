"""``destination replay`` end to end: real store, real worker, the fake API."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from destination import cli
from destination.fake_courier import FakeCourier, Fault
from destination.idempotency import derive_idempotency_key
from destination.replay_framing import Location, Record
from destination.replay_http import make_batches
from destination.settings import Settings
from destination.signature import AuthConfig, authenticate
from destination.store import create_store
from tests.conftest import (
    COURIER_TOKEN,
    SECRET,
    TEST_MAPPINGS,
    compact,
    make_event,
    signed_headers,
    wait_for,
)
from tests.paths import EVENT_FIXTURES, REPLAY_FIXTURES
from tests.processes import DESTINATION


@dataclass(frozen=True, slots=True)
class Replayed:
    code: int
    summary: dict[str, Any]
    problems: list[dict[str, Any]]
    requests: list[dict[str, Any]]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """cli.run configures structlog for the process; later tests need it back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def replay_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment a replay reads: the test store, the fake API, fast timings."""
    env = {
        "DATABASE_URL": settings.database_url,
        "COURIER_BASE_URL": settings.courier_base_url,
        "COURIER_AUTH_TOKEN": COURIER_TOKEN,
        "DESTINATION_MAPPINGS": str(TEST_MAPPINGS),
        "DESTINATION_SHARED_SECRET": SECRET,
        "DESTINATION_POLL_INTERVAL": "0.05",
        "DESTINATION_SEND_TIMEOUT": "1",
        "DESTINATION_LEASE_SECONDS": "2",
        "DESTINATION_RETRY_BASE": "0.01",
        "DESTINATION_RETRY_CAP": "0.05",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


async def replay(capsys: pytest.CaptureFixture[str], *args: str) -> Replayed:
    """Run ``destination replay --json ARGS`` in a thread with its own loop."""
    code = await asyncio.to_thread(cli.run, ["replay", "--json", *args])
    return parse_output(code, capsys.readouterr().out)


def parse_output(code: int, out: str) -> Replayed:
    # Standard output holds replay's JSON lines only; logs go to stderr.
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    [summary] = [line for line in lines if line["kind"] == "summary"]
    return Replayed(
        code,
        summary,
        [line for line in lines if line["kind"] not in ("summary", "request")],
        [line for line in lines if line["kind"] == "request"],
    )


def write_lines(path: Path, *events: Any) -> Path:
    path.write_bytes(b"".join(compact(event) + b"\n" for event in events))
    return path


def order_key(message_id: str, mapping: str = "order-confirmation") -> str:
    return derive_idempotency_key("default", message_id, mapping)


def sent_once(fake: FakeCourier) -> bool:
    keys = fake.executed_keys()
    return len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("name", "sent", "counts", "code"),
    [
        pytest.param("blank_lines.jsonl", 3, {"lines": 3}, 0, id="blank-lines"),
        pytest.param("bom_first_line.jsonl", 3, {"lines": 3}, 0, id="bom"),
        pytest.param("crlf.jsonl", 3, {"lines": 3}, 0, id="crlf"),
        pytest.param(
            "truncated_last_line.jsonl",
            3,
            {"lines": 4, "invalid_lines": 1},
            1,
            id="truncated",
        ),
        pytest.param(
            "concatenated_no_newline.jsonl",
            0,
            {"lines": 1, "invalid_lines": 1},
            1,
            id="concatenated",
        ),
        pytest.param("multi_member.jsonl.gz", 4, {"lines": 4}, 0, id="multi-member"),
        pytest.param(
            "duplicate_messageId.jsonl",
            1,
            {"accepted": 1, "duplicates": 1, "conflicts": 1},
            1,
            id="duplicate-messageId",
        ),
    ],
)
async def test_each_fixture(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    fake: FakeCourier,
    name: str,
    sent: int,
    counts: dict[str, int],
    code: int,
) -> None:
    """R1-R3, D5: each fixture gives its README's counts, sends and exit code."""
    result = await replay(capsys, str(REPLAY_FIXTURES / name))

    assert result.code == code
    assert {k: result.summary[k] for k in counts} == counts
    assert (result.summary["sent"], result.summary["pending"]) == (sent, 0)
    assert len(fake.executed) == sent and sent_once(fake)
    assert not any("\r" in request.body.decode() for request in fake.executed)


async def test_problems_cite_file_and_physical_line(
    capsys: pytest.CaptureFixture[str], replay_env: dict[str, str]
) -> None:
    """R3: the damaged tail names file, line 4 and byte offset, after the records."""
    path = REPLAY_FIXTURES / "truncated_last_line.jsonl"

    result = await replay(capsys, str(path))

    [problem] = result.problems
    assert problem["kind"] == "invalid_line"
    assert problem["location"] == {"file": str(path), "line": 4, "offset": 483}
    assert result.summary["enqueued"] == 3


async def test_conflict_names_both_hashes(
    capsys: pytest.CaptureFixture[str], replay_env: dict[str, str], fake: FakeCourier
) -> None:
    """D5: the third line reuses a messageId with another payload; first wins."""
    result = await replay(capsys, str(REPLAY_FIXTURES / "duplicate_messageId.jsonl"))

    [conflict] = result.problems
    assert conflict["kind"] == "conflict"
    assert conflict["location"]["line"] == 3
    assert conflict["stored_hash"] != conflict["incoming_hash"]
    assert [sent.json()["message"]["data"] for sent in fake.executed] == [
        {"orderId": "o-1"}
    ]


async def test_rerun_after_repair_sends_nothing_twice(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    fake: FakeCourier,
    tmp_path: Path,
) -> None:
    """R3: after the truncated tail is repaired, only the repaired event is new."""
    damaged = REPLAY_FIXTURES / "truncated_last_line.jsonl"
    first = await replay(capsys, str(damaged))
    complete = damaged.read_bytes().splitlines(keepends=True)[:3]
    repaired = tmp_path / "repaired.jsonl"
    fourth = make_event("replay-msg-0004", userId="user-4")
    repaired.write_bytes(b"".join(complete) + compact(fourth) + b"\n")

    second = await replay(capsys, str(repaired))

    assert (first.code, second.code) == (1, 0)
    assert (second.summary["duplicates"], second.summary["sent"]) == (3, 1)
    assert len(fake.executed) == 4 and sent_once(fake)


async def test_the_same_archive_twice_sends_once(
    capsys: pytest.CaptureFixture[str], replay_env: dict[str, str], fake: FakeCourier
) -> None:
    """Replaying an archive again finds every pair handled."""
    archive = str(REPLAY_FIXTURES / "multi_member.jsonl.gz")

    first = await replay(capsys, archive)
    second = await replay(capsys, archive)

    assert first.summary["sent"] == 4
    assert (second.code, second.summary["duplicates"], second.summary["sent"]) == (
        0,
        4,
        0,
    )
    assert len(fake.executed) == 4 and sent_once(fake)


async def test_replay_after_live_traffic_while_serving(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    make_service: Any,
    fake: FakeCourier,
    tmp_path: Path,
) -> None:
    """Events that arrived live are duplicates for a replay, in-process and --to."""
    client = await make_service()
    live = [make_event(f"m-live-{n}") for n in range(3)]
    body = compact(live)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    await wait_for(lambda: len(fake.executed) == 3)
    archive = write_lines(
        tmp_path / "archive.jsonl", *live, make_event("m-new-1"), make_event("m-new-2")
    )

    in_process = await replay(capsys, str(archive))
    over_http = await replay(
        capsys, str(archive), "--to", str(client.make_url("/webhook"))
    )

    assert (in_process.code, in_process.summary["duplicates"]) == (0, 3)
    assert in_process.summary["accepted"] == 2
    assert (over_http.code, over_http.summary["duplicates"]) == (0, 5)
    assert sorted(fake.executed_keys()) == sorted(
        order_key(m) for m in ("m-live-0", "m-live-1", "m-live-2", "m-new-1", "m-new-2")
    )


async def test_spec_event_twice_from_a_file_and_once_over_http(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    make_service: Any,
    fake: FakeCourier,
) -> None:
    """D2: the key comes from messageId, never from anything made at replay time."""
    path = EVENT_FIXTURES / "segment_spec_track_complete.json"

    first = await replay(capsys, str(path))
    second = await replay(capsys, str(path))
    client = await make_service()
    body = path.read_bytes()
    response = await client.post("/webhook", data=body, headers=signed_headers(body))

    assert (first.summary["sent"], second.summary["duplicates"]) == (1, 1)
    assert (await response.json())["duplicates"] == 1
    assert fake.executed_keys() == [
        derive_idempotency_key(
            "default", "ajs-f8ca1e4de5024d9430b3928bd8ac6b96", "course-clicked"
        )
    ]


async def test_to_a_running_service(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    make_service: Any,
    fake: FakeCourier,
    tmp_path: Path,
) -> None:
    """--to posts signed batches; the service's per-event answers are counted."""
    client = await make_service()
    archive = write_lines(
        tmp_path / "archive.jsonl",
        make_event("m-1"),
        make_event("m-2"),
        make_event("m-3", event="Nobody Maps This"),
        make_event("   "),
    )

    result = await replay(
        capsys, str(archive), "--to", str(client.make_url("/webhook"))
    )
    await wait_for(lambda: len(fake.executed) == 2)

    assert result.code == 1
    counts = {k: result.summary[k] for k in ("accepted", "unmapped", "rejected")}
    assert counts == {"accepted": 2, "unmapped": 1, "rejected": 1}
    [rejected] = result.problems
    assert rejected["location"]["line"] == 4
    assert rejected["errors"][0]["path"] == "$.messageId"


def test_batches_are_signed_as_segment_signs_them() -> None:
    """X-Signature covers the first element's raw bytes, X-Segment-Signature all."""
    records = [Record(Location("f", n), make_event(f"m-{n}")) for n in (1, 2)]

    [batch] = make_batches(records)
    headers = batch.signed_headers(SECRET)
    config = AuthConfig(secrets=(SECRET,))
    classic = {"X-Signature": headers["X-Signature"]}
    whole = {"X-Segment-Signature": headers["X-Segment-Signature"]}

    assert json.loads(batch.body) == [r.event for r in records]
    assert authenticate(batch.body, classic, config) == "x-signature:first-element"
    assert authenticate(batch.body, whole, config) == "x-segment-signature"


@dataclass
class FakeService:
    """A webhook stand-in that answers 503, splits with 413, or refuses with 401."""

    answers: list[int]
    max_events: int = 100
    bodies: list[bytes] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.bodies is not None:
            self.bodies.append(body)
        events = json.loads(body)
        status = self.answers.pop(0) if self.answers else 200
        if status == 200 and len(events) > self.max_events:
            status = 413
        if status != 200:
            return web.json_response(
                {"error": "x", "message": f"status {status}"},
                status=status,
                headers={"Retry-After": "0"} if status == 503 else {},
            )
        counts = {"accepted": len(events), "duplicates": 0, "conflicts": 0}
        counts.update({"unmapped": 0, "ignored": 0, "expired": 0, "no_recipient": 0})
        return web.json_response({**counts, "rejected": []})


async def start_fake_service(fake_service: FakeService) -> TestServer:
    app = web.Application()
    app.router.add_post("/webhook", fake_service.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_to_retries_and_halves_batches(
    capsys: pytest.CaptureFixture[str], replay_env: dict[str, str], tmp_path: Path
) -> None:
    """A 503 is retried; a 413 halves the batch until the service takes it."""
    service = FakeService(answers=[503], max_events=2, bodies=[])
    server = await start_fake_service(service)
    archive = write_lines(
        tmp_path / "a.jsonl", *(make_event(f"m-{n}") for n in range(5))
    )
    try:
        result = await replay(
            capsys, str(archive), "--to", str(server.make_url("/webhook"))
        )
    finally:
        await server.close()

    assert (result.code, result.summary["accepted"]) == (0, 5)
    assert service.bodies is not None
    assert [len(json.loads(body)) for body in service.bodies] == [5, 5, 2, 3, 1, 2]


async def test_to_stops_when_refused(
    capsys: pytest.CaptureFixture[str], replay_env: dict[str, str], tmp_path: Path
) -> None:
    """A 401 stops the run: every event of the batch is reported, exit 1."""
    server = await start_fake_service(FakeService(answers=[401]))
    archive = write_lines(tmp_path / "a.jsonl", make_event("m-1"), make_event("m-2"))
    try:
        result = await replay(
            capsys, str(archive), "--to", str(server.make_url("/webhook"))
        )
    finally:
        await server.close()

    assert result.code == 1
    assert "401" in result.summary["stopped"]
    assert [p["kind"] for p in result.problems] == ["failed", "failed"]


FILTER_EVENTS = [
    make_event("m-1", timestamp="2024-05-01T12:00:00Z"),
    make_event("m-2", timestamp="2024-05-02T12:00:00Z"),
    make_event("m-3", event="Order Audited", timestamp="2024-05-01T13:00:00Z"),
    {
        "type": "identify",
        "messageId": "m-4",
        "userId": "user-1",
        "timestamp": "2024-05-01T14:00:00Z",
    },
]


@pytest.mark.parametrize(
    ("flags", "templates", "filtered"),
    [
        pytest.param(
            ["--event", "Order Audited"], ["audit-a", "audit-b"], 3, id="event"
        ),
        pytest.param(["--type", "identify"], [], 3, id="type"),
        pytest.param(
            ["--since", "2024-05-01T12:30:00Z", "--until", "2024-05-02T00:00:00Z"],
            ["audit-a", "audit-b"],
            2,
            id="since-until",
        ),
        pytest.param(
            ["--until", "2024-05-01T12:00:00.001Z"],
            ["order-confirmation"],
            3,
            id="until-exclusive",
        ),
        pytest.param(["--mapping", "order-audit"], ["audit-a"], 3, id="mapping"),
    ],
)
async def test_filters(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    fake: FakeCourier,
    tmp_path: Path,
    flags: list[str],
    templates: list[str],
    filtered: int,
) -> None:
    """Filters choose events by name, type, time, and pairs by mapping."""
    archive = write_lines(tmp_path / "mixed.jsonl", *FILTER_EVENTS)

    result = await replay(capsys, str(archive), *flags)

    assert (result.code, result.summary["filtered"]) == (0, filtered)
    sent = sorted(request.json()["message"]["template"] for request in fake.executed)
    assert sent == templates


async def test_dry_run_without_a_store_creates_none(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    settings: Settings,
    fake: FakeCourier,
    tmp_path: Path,
) -> None:
    """--dry-run prints each request with its key and exact body; nothing is made."""
    archive = write_lines(tmp_path / "a.jsonl", make_event("m-1"), make_event("m-2"))

    result = await replay(capsys, "--dry-run", str(archive))

    assert result.code == 0
    assert [r["idempotency_key"] for r in result.requests] == [
        order_key("m-1"),
        order_key("m-2"),
    ]
    assert result.requests[0]["body"]["message"]["data"] == {"orderId": "o-1"}
    assert result.requests[1]["location"] == {
        "file": str(archive),
        "line": 2,
        "offset": len(compact(make_event("m-1"))) + 1,
    }
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    assert not await asyncio.to_thread(database.exists)
    assert fake.received == []


async def test_dry_run_counts_duplicates_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    settings: Settings,
    fake: FakeCourier,
    tmp_path: Path,
) -> None:
    """Against a store, pairs it holds are duplicates; its rows do not change."""
    done = write_lines(tmp_path / "done.jsonl", make_event("m-1"))
    archive = write_lines(tmp_path / "a.jsonl", make_event("m-1"), make_event("m-2"))
    await replay(capsys, str(done))
    before = await store_counts(settings)

    result = await replay(capsys, "--dry-run", str(archive))

    assert await store_counts(settings) == before
    counts = {k: result.summary[k] for k in ("accepted", "duplicates", "requests")}
    assert counts == {"accepted": 1, "duplicates": 1, "requests": 1}
    assert len(fake.received) == 1


async def store_counts(settings: Settings) -> dict[str, int]:
    store = create_store(settings.database_url, "live")
    await store.open()
    try:
        return await store.counts()
    finally:
        await store.close()


async def test_expired_events_are_not_sent(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    settings: Settings,
    fake: FakeCourier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events older than the record retention, in an older store, are not sent."""
    store = create_store(settings.database_url, "live")
    await store.open()
    await store.set_meta("created_at", "0")
    await store.close()
    archive = str(REPLAY_FIXTURES / "blank_lines.jsonl")

    refused = await replay(capsys, archive)
    monkeypatch.setenv("DESTINATION_ACCEPT_EXPIRED", "true")
    accepted = await replay(capsys, archive)

    assert (refused.code, refused.summary["expired"]) == (1, 3)
    assert {p["kind"] for p in refused.problems} == {"expired"}
    assert (accepted.code, accepted.summary["sent"]) == (0, 3)
    assert len(fake.executed) == 3


async def test_stdin(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """- reads gzipped JSON lines from standard input."""
    data = gzip.compress((REPLAY_FIXTURES / "crlf.jsonl").read_bytes())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    result = await replay(capsys, "--dry-run", "-")

    assert (result.code, result.summary["requests"]) == (0, 3)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["missing.jsonl"], "does not exist", id="missing-path"),
        pytest.param(
            ["--dry-run", "--to", "http://127.0.0.1:9/webhook"],
            "exclude",
            id="to-and-dry-run",
        ),
        pytest.param(
            ["--to", "http://127.0.0.1:9/webhook", "--mapping", "x"],
            "in-process only",
            id="to-and-mapping",
        ),
        pytest.param(["--to", "ftp://x"], "webhook URL", id="bad-url"),
        pytest.param(["--since", "yesterday"], "RFC 3339", id="bad-since"),
        pytest.param(
            ["--since", "2024-05-02T00:00:00Z", "--until", "2024-05-01T00:00:00Z"],
            "must be before",
            id="empty-window",
        ),
        pytest.param(["--rate", "0"], "positive", id="zero-rate"),
        pytest.param(
            ["--mapping", "nope"], "'nope' is not among", id="unknown-mapping"
        ),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    args: list[str],
    needle: str,
) -> None:
    """Bad flags and paths stop before anything is read, with exit code 2."""
    paths = [] if "missing.jsonl" in args else [str(REPLAY_FIXTURES / "crlf.jsonl")]

    try:
        code = cli.run(["replay", *args, *paths])
    except SystemExit as exit:  # argparse's own refusals
        code = int(exit.code or 0)

    assert code == 2
    assert needle in capsys.readouterr().err


def test_in_process_needs_a_courier_token(
    capsys: pytest.CaptureFixture[str],
    replay_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In-process replay sends, so it needs the token; a dry run does not."""
    monkeypatch.delenv("COURIER_AUTH_TOKEN")
    path = str(REPLAY_FIXTURES / "crlf.jsonl")

    assert cli.run(["replay", path]) == 2
    assert "COURIER_AUTH_TOKEN" in capsys.readouterr().err
    assert cli.run(["replay", "--dry-run", path]) == 0


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
async def test_killed_half_way_then_rerun_sends_every_pair_once(
    replay_env: dict[str, str],
    fake: FakeCourier,
    tmp_path: Path,
    how: signal.Signals,
) -> None:
    """A replay stopped half way and run again delivers every pair exactly once."""
    events = [make_event(f"m-kill-{n}") for n in range(200)]
    archive = str(write_lines(tmp_path / "archive.jsonl", *events))
    env = {**os.environ, **replay_env}
    # Slow sends, so that the stop lands while some are in flight.
    fake.faults.extend(Fault("delay", seconds=0.05) for _ in range(500))

    first = await start_replay(env, tmp_path, archive, "--rate", "50", output=False)
    await wait_for(lambda: len(fake.executed) >= 60)
    first.send_signal(how)
    await first.wait()
    halfway = len(fake.executed)
    second = await start_replay(env, tmp_path, archive)
    out, _ = await second.communicate()

    rerun = parse_output(second.returncode or 0, out.decode())
    assert 60 <= halfway < 200
    assert first.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 1)
    assert (second.returncode, rerun.summary["pending"]) == (0, 0)
    assert rerun.summary["duplicates"] >= 50
    assert sorted(fake.executed_keys()) == sorted(
        order_key(event["messageId"]) for event in events
    )


async def start_replay(
    env: dict[str, str], cwd: Path, *args: str, output: bool = True
) -> asyncio.subprocess.Process:
    """``destination replay --json ARGS`` as a process; output=False discards it."""
    return await asyncio.create_subprocess_exec(
        *DESTINATION,
        "replay",
        "--json",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if output else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_a_capture_archive_replays(
    make_service: Any,
    fake: FakeCourier,
    settings: Settings,
    replay_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Replay reads the capture layout: envelopes unwrap, nothing is sent twice."""
    root = tmp_path / "capture"
    client = await make_service(capture_dir=root, capture_interval=0.05)
    body = compact([make_event("m-arc-1"), make_event("m-arc-2")])
    await client.post("/webhook", data=body, headers=signed_headers(body))
    await wait_for(lambda: len(fake.executed) == 2)
    await client.close()

    replayed = await replay(capsys, str(root / "events"))

    assert replayed.code == 0
    assert (replayed.summary["lines"], replayed.summary["duplicates"]) == (2, 2)
    assert len(fake.executed) == 2


async def test_replaying_a_dead_letter_retries_it(
    make_service: Any,
    fake: FakeCourier,
    settings: Settings,
    replay_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A dead letter's exported event, replayed after the API recovers, is sent."""
    from destination.fake_courier import Fault

    fake.faults.append(Fault("status", status=400, body='{"message":"later"}'))
    client = await make_service()
    body = compact(make_event("m-dead-replay"))
    await client.post("/webhook", data=body, headers=signed_headers(body))
    await wait_for(lambda: len(fake.received) == 1)
    await client.close()
    exported = tmp_path / "dead.jsonl"
    code = await asyncio.to_thread(
        cli.run, ["dead-letters", "export", "--output", str(exported)]
    )

    replayed = await replay(capsys, str(exported))

    assert code == 0
    assert replayed.code == 0
    assert replayed.summary["retried"] == 1
    assert fake.executed_keys() == [order_key("m-dead-replay")]
