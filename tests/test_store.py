"""Tests for destination.store on every backend: first wins, the outbox, leases.

Every test that takes ``backend`` runs on SQLite and on PostgreSQL; the
PostgreSQL half runs when DESTINATION_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from destination.errors import (
    SettingsError,
    StoreError,
    StoreModeError,
    StoreUnavailableError,
)
from destination.idempotency import derive_idempotency_key, hash_body
from destination.store import (
    AttemptOutcome,
    AttemptReport,
    Conflict,
    EventOutcome,
    IncomingEvent,
    OutboxItem,
    PlannedSend,
    RejectedEvent,
    Resend,
    Store,
    StoreMode,
    create_store,
)
from destination.store.postgres import PostgresStore
from destination.store.postgres_schema import (
    MIGRATIONS,
    migrate_database,
    parse_postgres_url,
)
from destination.store.sqlite import SQLiteStore, sqlite_path
from tests.conftest import wait_for
from tests.databases import Backend, PostgresBackend, PostgresSchemas
from tests.processes import free_port

SOURCE = "default"
MAPPING = "order-confirmation"
OTHER_MAPPING = "order-receipt"
T0 = 1_000_000.0
LEASE = 30.0
EXPIRES = "2024-05-08T12:00:00Z"
OK = AttemptReport(status=200, response_id="r-1")
BUSY = AttemptReport(status=503, error="busy")
DELIVERED = AttemptOutcome("delivered", OK)


def make_incoming(
    message_id: str = "m-0001",
    payload_hash: str = "hash-a",
    mappings: tuple[str, ...] = (MAPPING,),
    body: bytes | None = b'{"message":{}}',
    source: str = SOURCE,
) -> IncomingEvent:
    """An event as ingest plans it, with one send per mapping."""
    sends = tuple(
        PlannedSend(
            mapping=mapping,
            idempotency_key=derive_idempotency_key(source, message_id, mapping),
            path="/send",
            body=body,
        )
        for mapping in mappings
    )
    return IncomingEvent(
        message_id=message_id,
        payload=b'{"messageId":"%s"}' % message_id.encode(),
        payload_hash=payload_hash,
        event_time=T0 - 60,
        sends=sends,
    )


def retry_at(when: float, report: AttemptReport = BUSY) -> AttemptOutcome:
    return AttemptOutcome("retry", report, next_attempt_at=when)


def dead_letter(reason: str = "refused") -> AttemptOutcome:
    report = AttemptReport(status=400, error='{"message":"bad"}')
    return AttemptOutcome("dead_letter", report, reason=reason)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """A live store in a fresh location, opened and closed around the test."""
    opened = backend.create("live")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def second_store(store: Store, backend: Backend) -> AsyncIterator[Store]:
    """Another store instance on the same data, as another process would open."""
    opened = backend.create("live")
    await opened.open()
    yield opened
    await opened.close()


async def store_one(store: Store, event: IncomingEvent, now: float = T0) -> Any:
    [outcome] = await store.store_events(SOURCE, [event], now, key_expires_at=EXPIRES)
    return outcome


async def claim_one(store: Store, now: float = T0) -> OutboxItem:
    [item] = await store.claim_due(10, LEASE, now)
    return item


async def dead_pair(store: Store, message_id: str = "m-0001") -> OutboxItem:
    """Store an event and dead-letter its one send; the claimed item."""
    await store_one(store, make_incoming(message_id))
    item = await claim_one(store)
    assert await store.record_attempt(item, dead_letter(), T0 + 2)
    return item


# create_store and URLs


def test_create_store_returns_a_sqlite_store(tmp_path: Path) -> None:
    """A sqlite:/// URL with an absolute path gives a SQLiteStore on that path."""
    path = tmp_path / "x.db"

    store = create_store(f"sqlite:///{path}", "live")

    assert isinstance(store, SQLiteStore)
    assert store.path == path
    assert store.mode == "live"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql://app@db.internal/destination", id="postgresql"),
        pytest.param("postgres://app:pw@db.internal:6432/destination", id="postgres"),
    ],
)
def test_create_store_returns_a_postgres_store(url: str) -> None:
    """Both PostgreSQL schemes give a PostgresStore; nothing connects yet."""
    store = create_store(url, "dry-run", migrate=True)

    assert isinstance(store, PostgresStore)
    assert store.mode == "dry-run"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///x.db", Path("x.db"), id="relative"),
        pytest.param(
            "sqlite:///data/destination.db",
            Path("data/destination.db"),
            id="relative-dir",
        ),
        pytest.param("sqlite:////abs/x.db", Path("/abs/x.db"), id="absolute"),
        pytest.param("sqlite:///my%20db.db", Path("my db.db"), id="percent-encoded"),
    ],
)
def test_sqlite_path_parses_relative_and_absolute_urls(
    url: str, expected: Path
) -> None:
    """Three slashes give a relative path, four an absolute one."""
    path = sqlite_path(url)

    assert path == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("sqlite://host/x.db", id="host"),
        pytest.param("sqlite:", id="no-path"),
        pytest.param("sqlite://", id="empty-authority"),
        pytest.param("sqlite:///", id="root-only"),
        pytest.param("sqlite:x.db", id="no-slashes"),
    ],
)
def test_sqlite_path_refuses_malformed_urls(url: str) -> None:
    """A SQLite URL with a host or without a path is a SettingsError."""
    with pytest.raises(SettingsError, match="DATABASE_URL") as caught:
        sqlite_path(url)

    assert repr(url) in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql://localhost/destination", id="mysql"),
        pytest.param("x.db", id="bare-path"),
        pytest.param("", id="empty"),
        pytest.param("sqlite://host/x.db", id="sqlite-with-host"),
        pytest.param("postgresql://h/db?schema=Bad-Name", id="bad-schema"),
        pytest.param("postgresql://h/db?schema=a&schema=b", id="two-schemas"),
    ],
)
def test_create_store_refuses_unsupported_urls(url: str) -> None:
    """create_store raises SettingsError for a URL it cannot open."""
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        create_store(url, "live")


def test_postgres_url_schema_and_name_are_ours() -> None:
    """schema and application_name are taken out; other parameters stay."""
    url = "postgresql://app:s3cret@db:5432/dest?schema=dest_a&sslmode=require"

    target = parse_postgres_url(url + "&application_name=worker-1")

    assert target.dsn == "postgresql://app:s3cret@db:5432/dest?sslmode=require"
    assert (target.schema, target.application_name) == ("dest_a", "worker-1")
    assert target.display == "postgresql://db:5432/dest?schema=dest_a"


def test_postgres_url_display_never_holds_the_password() -> None:
    """What messages show of a URL has neither user nor password."""
    target = parse_postgres_url("postgresql://app:s3cret@db/dest")

    assert "s3cret" not in target.display and "app" not in target.display
    assert target.application_name == "destination"


# schema and mode


async def test_opening_migrates_to_the_latest_version(
    store: Store, backend: Backend
) -> None:
    """Opening a store migrates it to the latest schema and records the version."""
    version = await backend.schema_version()

    assert version == len(backend.migrations)


async def test_a_newer_schema_is_refused(backend: Backend) -> None:
    """A store from a newer destination is not opened, rather than misread."""
    first = backend.create("live")
    await first.open()
    await first.close()
    await backend.set_schema_version(len(backend.migrations) + 1)
    store = backend.create("live")

    with pytest.raises(StoreError, match="newer"):
        await store.open()

    await store.close()


@pytest.mark.parametrize(
    ("written", "opened"),
    [
        pytest.param("live", "dry-run", id="live-opened-as-dry-run"),
        pytest.param("dry-run", "live", id="dry-run-opened-as-live"),
    ],
)
async def test_store_refuses_the_other_mode(
    backend: Backend, written: StoreMode, opened: StoreMode
) -> None:
    """A store stamped live refuses to open dry-run, and the other way round."""
    first = backend.create(written)
    await first.open()
    await first.close()
    second = backend.create(opened)

    with pytest.raises(StoreModeError) as caught:
        await second.open()

    await second.close()
    assert written in str(caught.value)
    assert opened in str(caught.value)


async def test_store_reopens_in_its_own_mode(backend: Backend) -> None:
    """A dry-run store opens again as dry-run."""
    first = backend.create("dry-run")
    await first.open()
    await first.close()
    second = backend.create("dry-run")

    await second.open()

    await second.close()


async def test_meta_holds_mode_and_creation_time(store: Store) -> None:
    """The store records its mode and when it was created; set_meta overwrites."""
    await store.set_meta("purged_at", "1")
    await store.set_meta("purged_at", "2")

    assert await store.get_meta("mode") == "live"
    assert float(await store.get_meta("created_at") or 0) > 0
    assert await store.get_meta("purged_at") == "2"
    assert await store.get_meta("missing") is None


async def test_store_creates_missing_parent_directories(tmp_path: Path) -> None:
    """The SQLite store's directory is created on open."""
    path = tmp_path / "nested" / "dir" / "x.db"
    store = create_store(f"sqlite:///{path}", "live")

    await store.open()

    await store.close()
    assert path.is_file()


# store_events


async def test_first_event_is_accepted_and_enqueued(store: Store) -> None:
    """A new (event, mapping) pair is accepted with one outbox row."""
    outcome = await store_one(store, make_incoming())

    assert outcome.status == "accepted"
    assert (outcome.enqueued, outcome.no_recipient, outcome.conflicts) == (1, 0, ())
    assert await store.counts() == {
        "pairs_pending": 1,
        "outbox_pending": 1,
        "events": 1,
    }
    assert await store.outbox_depth() == 1


async def test_same_event_again_is_a_duplicate(store: Store) -> None:
    """A redelivery with the same payload hash is a duplicate, enqueued once."""
    await store_one(store, make_incoming())

    outcome = await store_one(store, make_incoming(), now=T0 + 5)

    assert outcome.status == "duplicate"
    assert (outcome.enqueued, outcome.conflicts) == (0, ())
    assert (await store.counts())["outbox_pending"] == 1


async def test_same_message_id_with_another_payload_is_a_conflict(
    store: Store,
) -> None:
    """First wins: a different payload under the same messageId is a conflict."""
    await store_one(store, make_incoming(payload_hash="hash-a", body=b"first"))

    outcome = await store_one(
        store, make_incoming(payload_hash="hash-b", body=b"second")
    )

    assert outcome.status == "conflict"
    assert outcome.enqueued == 0
    assert outcome.conflicts == (Conflict(MAPPING, "hash-a", "hash-b"),)
    item = await claim_one(store)
    assert item.body == b"first"


async def test_duplicates_within_one_batch_are_stored_once(store: Store) -> None:
    """The same event twice in one call is accepted, then a duplicate."""
    events = [make_incoming(), make_incoming()]

    outcomes = await store.store_events(SOURCE, events, T0, key_expires_at=EXPIRES)

    assert [outcome.status for outcome in outcomes] == ["accepted", "duplicate"]
    assert (await store.counts())["outbox_pending"] == 1


async def test_outcomes_follow_the_order_of_the_batch(store: Store) -> None:
    """Each outcome answers the event at its own index, whatever the ids sort to."""
    await store_one(store, make_incoming("m-b"))
    events = [make_incoming("m-c"), make_incoming("m-b"), make_incoming("m-a")]

    outcomes = await store.store_events(SOURCE, events, T0, key_expires_at=EXPIRES)

    assert [outcome.status for outcome in outcomes] == [
        "accepted",
        "duplicate",
        "accepted",
    ]


async def test_the_same_message_id_from_another_source_is_new(store: Store) -> None:
    """Pairs are first-wins per source: another source's messageId is its own."""
    await store_one(store, make_incoming())
    other = make_incoming(source="other-source")

    [outcome] = await store.store_events(
        "other-source", [other], T0, key_expires_at=EXPIRES
    )

    assert outcome.status == "accepted"
    assert (await store.counts())["events"] == 2


async def test_a_new_mapping_for_an_old_message_id_is_backfilled(
    store: Store,
) -> None:
    """A mapping added later creates a new pair for an event already stored."""
    await store_one(store, make_incoming(mappings=(MAPPING,)))

    outcome = await store_one(store, make_incoming(mappings=(MAPPING, OTHER_MAPPING)))

    assert outcome.status == "accepted"
    assert (outcome.enqueued, outcome.conflicts) == (1, ())
    counts = await store.counts()
    assert (counts["pairs_pending"], counts["outbox_pending"]) == (2, 2)
    assert counts["events"] == 1


async def test_no_recipient_sends_create_no_outbox_row(store: Store) -> None:
    """A send without a body is recorded as no_recipient and never claimed."""
    outcome = await store_one(store, make_incoming(body=None))

    assert outcome.status == "accepted"
    assert (outcome.enqueued, outcome.no_recipient) == (0, 1)
    assert await store.counts() == {
        "pairs_no_recipient": 1,
        "outbox_pending": 0,
        "events": 1,
    }
    assert await store.claim_due(10, LEASE, T0 + 3600) == []


async def test_no_recipient_pair_is_a_duplicate_on_redelivery(store: Store) -> None:
    """A redelivered no-recipient event is a duplicate, not counted again."""
    await store_one(store, make_incoming(body=None))

    outcome = await store_one(store, make_incoming(body=None))

    assert outcome.status == "duplicate"
    assert outcome.no_recipient == 0


async def test_mixed_sends_enqueue_only_those_with_a_body(store: Store) -> None:
    """Of two mappings, only the one with a recipient gets an outbox row."""
    event = make_incoming(mappings=(MAPPING, OTHER_MAPPING))
    sends = (event.sends[0], PlannedSend(OTHER_MAPPING, "dst1-other", "/send", None))
    mixed = IncomingEvent(
        event.message_id, event.payload, event.payload_hash, None, sends
    )

    outcome = await store_one(store, mixed)

    assert (outcome.enqueued, outcome.no_recipient) == (1, 1)


async def test_a_failing_batch_stores_nothing(store: Store) -> None:
    """One call is one transaction: an event that cannot be stored undoes all."""
    good = make_incoming("m-good")
    broken_send = PlannedSend(MAPPING, "dst1-broken", None, b"{}")  # type: ignore[arg-type]
    broken = IncomingEvent("m-broken", b"{}", "hash-x", None, (broken_send,))
    rejected = RejectedEvent("m-bad", b"{}", "[]")

    with pytest.raises((StoreError, sqlite3.Error)):
        await store.store_events(
            SOURCE, [good, broken], T0, key_expires_at=EXPIRES, rejected=[rejected]
        )

    assert await store.counts() == {"outbox_pending": 0, "events": 0}
    assert await store.export_rejected(0, 10) == []


async def test_rejected_events_are_kept_for_export(store: Store) -> None:
    """Invalid events are stored with their errors, in order, paged by id."""
    rejected = [
        RejectedEvent("m-bad-1", b'{"a":1}', '[{"path":"$","message":"x"}]'),
        RejectedEvent(None, b'{"b":2}', "[]"),
    ]

    outcomes = await store.store_events(
        SOURCE, [], T0, key_expires_at=EXPIRES, rejected=rejected
    )

    assert outcomes == []
    first, second = await store.export_rejected(0, 10)
    assert (first.source_id, first.payload, first.errors) == (
        SOURCE,
        b'{"a":1}',
        '[{"path":"$","message":"x"}]',
    )
    assert (second.payload, second.received_at) == (b'{"b":2}', T0)
    assert await store.export_rejected(first.id, 10) == [second]
    assert await store.export_rejected(second.id, 10) == []


async def test_events_are_exported_in_order(store: Store) -> None:
    """export_events pages through stored payloads by id."""
    await store.store_events(
        SOURCE,
        [make_incoming("m-1"), make_incoming("m-2"), make_incoming("m-3")],
        T0,
        key_expires_at=EXPIRES,
    )

    first = await store.export_events(0, 2)
    rest = await store.export_events(first[-1].id, 2)

    payloads = [event.payload for event in first + rest]
    assert payloads == [b'{"messageId":"m-%d"}' % i for i in (1, 2, 3)]
    assert {(e.source_id, e.received_at) for e in first + rest} == {(SOURCE, T0)}


async def test_existing_pairs_lists_what_a_source_has(store: Store) -> None:
    """existing_pairs answers (messageId, mapping) for the given ids only."""
    await store_one(store, make_incoming("m-1", mappings=(MAPPING, OTHER_MAPPING)))
    await store_one(store, make_incoming("m-2"))
    ids = ["m-1", "m-3", *(f"m-x{i}" for i in range(600))]

    found = await store.existing_pairs(SOURCE, ids)
    other = await store.existing_pairs("other-source", ["m-1"])

    assert found == {("m-1", MAPPING), ("m-1", OTHER_MAPPING)}
    assert other == set()


# claim_due and leases


async def test_claim_due_returns_what_is_needed_to_send(store: Store) -> None:
    """A claimed item carries its key, expiry, path, body, attempts and lease."""
    event = make_incoming()
    await store_one(store, event)

    item = await claim_one(store, now=T0 + 1)

    assert item.idempotency_key == event.sends[0].idempotency_key
    assert item.key_expires_at == EXPIRES
    assert (item.path, item.body) == ("/send", event.sends[0].body)
    assert (item.attempts, item.created_at) == (1, T0)
    assert (item.last_error_hash, item.same_error_count) == (None, 0)
    assert item.lease_token


async def test_claim_due_respects_the_limit_and_order(store: Store) -> None:
    """At most ``limit`` rows are claimed, oldest due first."""
    for index in range(3):
        await store_one(store, make_incoming(f"m-{index}"), now=T0 + index)

    claimed = await store.claim_due(2, LEASE, T0 + 10)

    keys = [derive_idempotency_key(SOURCE, f"m-{i}", MAPPING) for i in range(2)]
    assert sorted(item.idempotency_key for item in claimed) == sorted(keys)


async def test_rows_are_not_due_before_they_were_stored(store: Store) -> None:
    """A row stored at T0 is not claimed by a clock reading before T0."""
    await store_one(store, make_incoming())

    claimed = await store.claim_due(10, LEASE, T0 - 1)

    assert claimed == []


async def test_a_leased_row_is_not_claimed_again_until_the_lease_expires(
    store: Store, second_store: Store
) -> None:
    """Another store on the same data claims nothing while the lease holds."""
    await store_one(store, make_incoming())
    first = await claim_one(store, now=T0)

    during = await second_store.claim_due(10, LEASE, T0 + LEASE - 1)
    after = await second_store.claim_due(10, LEASE, T0 + LEASE)

    assert during == []
    assert [item.id for item in after] == [first.id]
    assert after[0].lease_token != first.lease_token
    assert after[0].attempts == 2


async def test_concurrent_claims_never_share_a_row(
    store: Store, second_store: Store
) -> None:
    """Many claims racing from two stores hand out every row exactly once."""
    events = [make_incoming(f"m-{index:03d}") for index in range(60)]
    await store.store_events(SOURCE, events, T0, key_expires_at=EXPIRES)

    batches = await asyncio.gather(
        *(
            claimer.claim_due(7, LEASE, T0)
            for _ in range(6)
            for claimer in (store, second_store)
        )
    )

    claimed = [item.id for batch in batches for item in batch]
    assert len(claimed) == len(set(claimed))
    leftover = await store.claim_due(100, LEASE, T0)
    assert len(claimed) + len(leftover) == 60


async def test_concurrent_stores_of_one_event_enqueue_it_once(
    store: Store, second_store: Store
) -> None:
    """Two instances storing the same batches at once: one wins each pair."""
    forward = [make_incoming(f"m-{index:02d}") for index in range(20)]
    backward = list(reversed(forward))

    outcomes = await asyncio.gather(
        store.store_events(SOURCE, forward, T0, key_expires_at=EXPIRES),
        second_store.store_events(SOURCE, backward, T0, key_expires_at=EXPIRES),
    )

    statuses = [outcome.status for batch in outcomes for outcome in batch]
    assert statuses.count("accepted") == 20
    assert statuses.count("duplicate") == 20
    assert (await store.counts())["outbox_pending"] == 20


async def test_record_with_a_lost_lease_changes_nothing(
    store: Store, second_store: Store, backend: Backend
) -> None:
    """After another store re-claims an expired row, the old lease cannot finish."""
    await store_one(store, make_incoming())
    stale = await claim_one(store, now=T0)
    current = await claim_one(second_store, now=T0 + LEASE + 1)
    before = await backend.outbox_row(current.id)

    held = await store.record_attempt(stale, DELIVERED, T0 + LEASE + 2)

    assert held is False
    assert await backend.outbox_row(current.id) == before
    assert (await store.counts())["pairs_pending"] == 1


async def test_retry_with_a_lost_lease_changes_nothing(
    store: Store, second_store: Store, backend: Backend
) -> None:
    """After another store re-claims an expired row, the old lease cannot retry."""
    await store_one(store, make_incoming())
    stale = await claim_one(store, now=T0)
    current = await claim_one(second_store, now=T0 + LEASE + 1)
    before = await backend.outbox_row(current.id)

    held = await store.record_attempt(stale, retry_at(T0 + 999), T0 + LEASE + 2)

    assert held is False
    assert await backend.outbox_row(current.id) == before


async def test_the_current_lease_holder_can_still_finish(
    store: Store, second_store: Store
) -> None:
    """The store that re-claimed the row records its outcome normally."""
    await store_one(store, make_incoming())
    await claim_one(store, now=T0)
    current = await claim_one(second_store, now=T0 + LEASE + 1)

    held = await second_store.record_attempt(current, DELIVERED, T0 + 40)

    assert held is True
    assert (await store.counts())["pairs_delivered"] == 1


async def test_delivered_closes_the_row_and_the_pair(
    store: Store, backend: Backend
) -> None:
    """A finished row is done, keeps the response, and is never claimed again."""
    await store_one(store, make_incoming())
    item = await claim_one(store)

    held = await store.record_attempt(item, DELIVERED, T0 + 2)

    assert held is True
    row = await backend.outbox_row(item.id)
    assert (row["state"], row["last_status"], row["response_id"]) == (
        "done",
        200,
        "r-1",
    )
    assert (row["finished_at"], row["lease_token"]) == (T0 + 2, None)
    assert await store.counts() == {
        "pairs_delivered": 1,
        "outbox_done": 1,
        "outbox_pending": 0,
        "events": 1,
    }
    assert await store.claim_due(10, LEASE, T0 + 10 * LEASE) == []


@pytest.mark.parametrize(
    ("kind", "state"),
    [("delivered", "done"), ("dry_run", "done"), ("dead_letter", "dead")],
)
async def test_a_finished_attempt_sets_the_pair_status(
    store: Store, kind: Any, state: str
) -> None:
    """The pair's status becomes the attempt's kind; the row is done or dead."""
    await store_one(store, make_incoming())
    item = await claim_one(store)

    await store.record_attempt(item, AttemptOutcome(kind, OK), T0 + 2)

    counts = await store.counts()
    assert (counts[f"pairs_{kind}"], counts[f"outbox_{state}"]) == (1, 1)
    assert await store.outbox_depth() == 0


async def test_finishing_twice_is_refused(store: Store) -> None:
    """Finishing releases the lease, so a second finish with it does nothing."""
    await store_one(store, make_incoming())
    item = await claim_one(store)
    await store.record_attempt(item, DELIVERED, T0 + 2)

    again = await store.record_attempt(item, dead_letter(), T0 + 3)

    assert again is False
    assert (await store.counts())["pairs_delivered"] == 1


async def test_a_retry_makes_the_row_due_at_next_attempt_at(
    store: Store, backend: Backend
) -> None:
    """A retried row is released and claimable again from next_attempt_at on."""
    await store_one(store, make_incoming())
    item = await claim_one(store, now=T0)
    outcome = AttemptOutcome(
        "retry", BUSY, next_attempt_at=T0 + 100, error_hash="h-503", same_error_count=1
    )

    held = await store.record_attempt(item, outcome, T0 + 1)

    assert held is True
    row = await backend.outbox_row(item.id)
    assert (row["state"], row["last_status"], row["last_error"]) == (
        "pending",
        503,
        "busy",
    )
    assert row["finished_at"] is None
    assert await store.claim_due(10, LEASE, T0 + 99) == []
    retried = await claim_one(store, now=T0 + 100)
    assert (retried.id, retried.attempts) == (item.id, 2)
    assert retried.idempotency_key == item.idempotency_key
    assert retried.body == item.body
    assert (retried.last_error_hash, retried.same_error_count) == ("h-503", 1)


async def test_release_gives_leases_back_at_once(
    store: Store, second_store: Store
) -> None:
    """Released rows are claimable now; a stale token releases nothing."""
    await store_one(store, make_incoming())
    item = await claim_one(store, now=T0)
    stolen = await claim_one(second_store, now=T0 + LEASE)

    await store.release([item])
    during = await store.claim_due(10, LEASE, T0 + LEASE + 1)
    await second_store.release([stolen])
    after = await store.claim_due(10, LEASE, T0 + LEASE + 1)

    assert during == []
    assert [claimed.id for claimed in after] == [item.id]


async def test_release_of_nothing_is_fine(store: Store) -> None:
    """Releasing an empty list does nothing and does not fail."""
    await store.release([])

    assert await store.outbox_depth() == 0


async def test_next_due_at_follows_rows_and_leases(store: Store) -> None:
    """next_due_at is the earliest moment a pending row can be claimed."""
    empty = await store.next_due_at()
    await store_one(store, make_incoming())
    stored = await store.next_due_at()
    await claim_one(store, now=T0 + 5)

    leased = await store.next_due_at()

    assert (empty, stored, leased) == (None, T0, T0 + 5 + LEASE)


# dead letters


async def test_dead_letters_are_listed_with_their_reason(store: Store) -> None:
    """A dead pair is listed with its key, attempts, last answer and reason."""
    item = await dead_pair(store)

    [letter] = await store.list_dead_letters(10)

    assert (letter.pair_id, letter.source_id, letter.message_id) == (
        item.pair_id,
        SOURCE,
        "m-0001",
    )
    assert (letter.mapping, letter.generation) == (MAPPING, 0)
    assert letter.idempotency_key == item.idempotency_key
    assert (letter.attempts, letter.last_status) == (1, 400)
    assert (letter.last_error, letter.reason) == ('{"message":"bad"}', "refused")
    assert letter.failed_at == T0 + 2


async def test_resend_sources_carry_the_payload(store: Store) -> None:
    """What a retry needs: the pair, its body hash and the stored payload."""
    first = await dead_pair(store, "m-1")
    second = await dead_pair(store, "m-2")

    every = await store.resend_sources(None)
    chosen = await store.resend_sources([second.pair_id, 999_999])
    none = await store.resend_sources([])

    assert [source.pair_id for source in every] == [first.pair_id, second.pair_id]
    [source] = chosen
    assert (source.message_id, source.mapping, source.generation) == ("m-2", MAPPING, 0)
    assert source.body_hash == hash_body(b'{"message":{}}')
    assert (source.key_expires_at, source.payload) == (EXPIRES, b'{"messageId":"m-2"}')
    assert none == []


async def test_resend_enqueues_the_next_generation(store: Store) -> None:
    """A resent dead pair is pending again, and its new request is claimable."""
    item = await dead_pair(store)
    resend = Resend(item.pair_id, 1, "dst1-gen-1", EXPIRES, "/send", b"{}", "h1")

    accepted = await store.resend(resend, T0 + 10)
    again = await store.resend(resend, T0 + 11)

    assert (accepted, again) == (True, False)
    assert await store.list_dead_letters(10) == []
    claimed = await claim_one(store, now=T0 + 10)
    assert (claimed.idempotency_key, claimed.body) == ("dst1-gen-1", b"{}")
    assert claimed.attempts == 1
    assert (await store.counts())["pairs_pending"] == 1


async def test_purged_dead_letters_stay_duplicates(store: Store) -> None:
    """A purged dead letter is discarded: its outbox goes, its record stays."""
    await dead_pair(store, "m-old")
    await dead_pair(store, "m-new")

    purged = await store.purge_dead_letters(T0 + 3)
    nothing = await store.purge_dead_letters(T0 + 3)

    assert (purged, nothing) == (2, 0)
    counts = await store.counts()
    assert counts["pairs_discarded"] == 2
    assert "outbox_dead" not in counts
    assert (await store_one(store, make_incoming("m-old"))).status == "duplicate"


async def test_nul_in_shown_text_does_not_cost_the_write(store: Store) -> None:
    """U+0000 in an API's answer or a rejected messageId is stored, not fatal."""
    rejected = RejectedEvent("m-\x00", b"{}", "[]")
    await store.store_events(
        SOURCE, [make_incoming()], T0, key_expires_at=EXPIRES, rejected=[rejected]
    )
    item = await claim_one(store)
    report = AttemptReport(status=400, error="bad\x00answer", response_id="r\x00")

    held = await store.record_attempt(
        item, AttemptOutcome("dead_letter", report, reason="x\x00"), T0 + 1
    )

    assert held is True
    [letter] = await store.list_dead_letters(10)
    assert letter.last_error is not None
    assert letter.last_error.startswith("bad") and letter.last_error.endswith("answer")
    assert len(await store.export_rejected(0, 10)) == 1


# retention


async def test_purge_keeps_what_is_still_needed(store: Store) -> None:
    """Old payloads, finished rows and rejections go; pending and dead stay."""
    for message_id in ("m-done", "m-pending", "m-dead"):
        await store_one(store, make_incoming(message_id))
    await store.store_events(
        SOURCE,
        [],
        T0,
        key_expires_at=EXPIRES,
        rejected=[RejectedEvent("m-bad", b"{}", "[]")],
    )
    by_key = {item.idempotency_key: item for item in await store.claim_due(10, 1, T0)}
    key = {m: derive_idempotency_key(SOURCE, m, MAPPING) for m in ("m-done", "m-dead")}
    await store.record_attempt(by_key[key["m-done"]], DELIVERED, T0 + 1)
    await store.record_attempt(by_key[key["m-dead"]], dead_letter(), T0 + 1)

    early = await store.purge(payloads_before=T0, records_before=T0)
    payloads = await store.purge(payloads_before=T0 + 10, records_before=T0)
    records = await store.purge(payloads_before=T0 + 10, records_before=T0 + 10)

    assert (early.payloads, early.outbox_rows, early.pairs, early.rejected) == (
        0,
        0,
        0,
        0,
    )
    assert (payloads.payloads, payloads.outbox_rows, payloads.rejected) == (1, 1, 1)
    assert payloads.pairs == 0
    assert (records.pairs, records.payloads, records.outbox_rows) == (1, 0, 0)
    exported = {event.payload for event in await store.export_events(0, 10)}
    assert exported == {b'{"messageId":"m-pending"}', b'{"messageId":"m-dead"}'}
    counts = await store.counts()
    assert (counts["events"], counts["pairs_pending"]) == (2, 1)
    assert counts["pairs_dead_letter"] == 1


# availability and durability


async def test_a_held_lock_makes_store_events_unavailable(backend: Backend) -> None:
    """While another connection holds a write lock, writes fail fast with 503."""
    store = backend.create("live", busy_timeout=0.1)
    await store.open()

    try:
        async with backend.hold_write_lock():
            with pytest.raises(StoreUnavailableError, match="cannot be used now"):
                await store_one(store, make_incoming())
        outcome = await store_one(store, make_incoming())
    finally:
        await store.close()

    assert outcome.status == "accepted"


def test_store_unavailable_is_a_store_error() -> None:
    """Callers catching StoreError also catch StoreUnavailableError."""
    assert issubclass(StoreUnavailableError, StoreError)


async def test_data_survives_close_and_reopen(backend: Backend) -> None:
    """Events, pairs and outbox rows are kept after the store closes."""
    first = backend.create("live")
    await first.open()
    await first.store_events(
        SOURCE, [make_incoming(), make_incoming("m-2")], T0, key_expires_at=EXPIRES
    )
    await first.close()
    second = backend.create("live")
    await second.open()

    counts = await second.counts()
    outcome: EventOutcome = await store_one(second, make_incoming())
    claimed = await second.claim_due(10, LEASE, T0)

    await second.close()
    assert counts == {"pairs_pending": 2, "outbox_pending": 2, "events": 2}
    assert outcome.status == "duplicate"
    assert len(claimed) == 2


async def test_using_a_store_before_open_is_a_store_error(backend: Backend) -> None:
    """A store that was never opened says so instead of failing obscurely."""
    store = backend.create("live")

    with pytest.raises(StoreError, match="not open"):
        await store.counts()

    await store.close()


# PostgreSQL only: migrations, connections


async def test_a_postgres_schema_behind_is_refused_without_migrate(
    postgres: PostgresSchemas,
) -> None:
    """Without migrate, a fresh schema is refused with the command to run."""
    store = create_store(postgres.fresh_url(), "live")

    with pytest.raises(StoreError, match=r"version 0, .* needs 1; run `destination"):
        await store.open()

    await store.close()


async def test_migrate_database_reports_the_versions(
    postgres: PostgresSchemas,
) -> None:
    """The first run migrates from 0; a second finds nothing to do."""
    url = postgres.fresh_url()

    first = await migrate_database(url)
    second = await migrate_database(url)
    store = create_store(url, "live")
    await store.open()

    await store.close()
    assert (first, second) == ((0, len(MIGRATIONS)), (len(MIGRATIONS), len(MIGRATIONS)))


async def test_stores_opening_at_once_migrate_once(postgres: PostgresSchemas) -> None:
    """Five processes starting together on a fresh schema all open; one migrates."""
    url = postgres.fresh_url()
    stores = [create_store(url, "live", migrate=True) for _ in range(5)]

    await asyncio.gather(*(store.open() for store in stores))

    await asyncio.gather(*(store.close() for store in stores))
    connection = await postgres.connect(url)
    rows = await connection.fetch("SELECT version FROM schema_migrations")
    modes = await connection.fetch("SELECT value FROM meta WHERE key = 'mode'")
    await connection.close()
    assert [row[0] for row in rows] == list(range(1, len(MIGRATIONS) + 1))
    assert [row[0] for row in modes] == ["live"]


async def test_an_unreachable_server_is_unavailable_without_the_password() -> None:
    """Nothing listening: StoreUnavailableError, and the message hides secrets."""
    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/test"
    store = create_store(url, "live")

    with pytest.raises(StoreUnavailableError) as caught:
        await store.open()

    await store.close()
    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


async def test_a_dropped_connection_is_unavailable_then_recovers(
    postgres: PostgresSchemas,
) -> None:
    """A connection the server drops mid-statement is a 503; the next call works."""
    backend = PostgresBackend(postgres)
    name = f"destination-test-{secrets.token_hex(4)}"
    backend.url += f"&application_name={name}"
    store = backend.create("live")
    await store.open()

    try:
        async with backend.hold_write_lock():
            waiting = asyncio.create_task(store_one(store, make_incoming()))
            await wait_for(lambda: _terminate_waiting(postgres, name))
            with pytest.raises(StoreUnavailableError):
                await waiting
        outcome = await store_one(store, make_incoming())
    finally:
        await store.close()

    assert outcome.status == "accepted"


async def _terminate_waiting(postgres: PostgresSchemas, name: str) -> bool:
    """Terminate the named client's backends once one waits on a lock."""
    connection = await postgres.connect()
    try:
        terminated = await connection.fetch(
            """
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE application_name = $1 AND wait_event_type = 'Lock'
            """,
            name,
        )
    finally:
        await connection.close()
    return bool(terminated)


async def test_a_failed_open_leaves_nothing_open(postgres: PostgresSchemas) -> None:
    """A refused open closes its pool itself: the app never calls close then."""
    store = create_store(postgres.fresh_url(), "live")

    with pytest.raises(StoreError):
        await store.open()

    with pytest.raises(StoreError, match="not open"):
        await store.counts()
