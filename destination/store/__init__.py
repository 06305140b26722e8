"""The durable store: events, one record per (event, mapping) pair, and the outbox.

Ingest writes an event, its pair records and its rendered requests in one
transaction and answers the CDP only after it commits. The delivery worker
claims due outbox rows under a lease, so two processes sharing a store never
send the same row at once, and records each outcome only while its lease is
still its own.

Tables, the same in every backend:

| table             | one row per                      | kept                       |
|-------------------|----------------------------------|----------------------------|
| `events`          | (source, messageId), first wins  | payload purged after 7 d   |
| `pairs`           | (source, messageId, mapping)     | 400 d: replays stay deduped|
| `outbox`          | request generation of a pair     | purged 7 d after finishing |
| `rejected_events` | invalid event received           | 7 d                        |
| `meta`            | fact of the store (mode, created)| always                     |

Pair statuses: ``pending``, ``delivered``, ``dry_run``, ``dead_letter``,
``no_recipient``, ``discarded`` (a dead letter an operator purged: the record
stays so that replays still see the pair as handled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from destination.errors import SettingsError

StoreMode = Literal["live", "dry-run"]
EventStatus = Literal["accepted", "duplicate", "conflict"]
AttemptKind = Literal["delivered", "dry_run", "retry", "dead_letter"]


@dataclass(frozen=True, slots=True)
class PlannedSend:
    """One rendered request for one mapping; ``body`` is None when no recipient."""

    mapping: str
    idempotency_key: str
    path: str
    body: bytes | None


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    message_id: str
    payload: bytes
    payload_hash: str
    event_time: float | None
    sends: tuple[PlannedSend, ...]


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An invalid event as received, kept for a while so it can be replayed."""

    message_id: str | None
    payload: bytes
    errors: str  # JSON array of {"path", "message"}


@dataclass(frozen=True, slots=True)
class Conflict:
    mapping: str
    stored_hash: str
    incoming_hash: str


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What storing one event did: new pairs, redeliveries and conflicts."""

    status: EventStatus
    enqueued: int = 0
    no_recipient: int = 0
    conflicts: tuple[Conflict, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A claimed row: everything needed to send it and to record the outcome."""

    id: int
    pair_id: int
    idempotency_key: str
    key_expires_at: str
    path: str
    body: bytes
    attempts: int
    created_at: float
    lease_token: str
    last_error_hash: str | None = None
    same_error_count: int = 0


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """What one send attempt returned: HTTP status, response id, or the error."""

    status: int | None
    error: str | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """How to record an attempt: finished (delivered, dead) or due again later."""

    kind: AttemptKind
    report: AttemptReport
    next_attempt_at: float | None = None
    reason: str | None = None
    error_hash: str | None = None
    same_error_count: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A pair that failed for good, with what an operator needs to act on it."""

    pair_id: int
    source_id: str
    message_id: str
    mapping: str
    generation: int
    idempotency_key: str
    attempts: int
    last_status: int | None
    last_error: str | None
    reason: str | None
    failed_at: float


@dataclass(frozen=True, slots=True)
class ResendSource:
    """What a dead-letter retry needs to render the request again."""

    pair_id: int
    source_id: str
    message_id: str
    mapping: str
    generation: int
    body_hash: str | None
    key_expires_at: str | None
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class Resend:
    """A new outbox row for a dead pair: same generation (same key) or the next."""

    pair_id: int
    generation: int
    idempotency_key: str
    key_expires_at: str
    path: str
    body: bytes
    body_hash: str


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    source_id: str
    payload: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class StoredRejection:
    id: int
    source_id: str
    payload: bytes
    errors: str
    received_at: float


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    payloads: int
    outbox_rows: int
    pairs: int
    rejected: int


class Store(Protocol):
    """What ingest, delivery, the commands and capture need from a backend."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def store_events(
        self,
        source_id: str,
        events: Sequence[IncomingEvent],
        now: float,
        *,
        key_expires_at: str,
        rejected: Sequence[RejectedEvent] = (),
    ) -> list[EventOutcome]: ...

    async def claim_due(
        self, limit: int, lease_seconds: float, now: float
    ) -> list[OutboxItem]: ...

    async def record_attempt(
        self, item: OutboxItem, outcome: AttemptOutcome, now: float
    ) -> bool: ...

    async def release(self, items: Sequence[OutboxItem]) -> None: ...

    async def next_due_at(self) -> float | None: ...

    async def outbox_depth(self) -> int: ...

    async def counts(self) -> dict[str, int]: ...

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]: ...

    async def resend_sources(
        self, pair_ids: Sequence[int] | None
    ) -> list[ResendSource]: ...

    async def resend(self, resend: Resend, now: float) -> bool: ...

    async def purge_dead_letters(self, failed_before: float) -> int: ...

    async def purge(
        self, payloads_before: float, records_before: float
    ) -> PurgeCounts: ...

    async def existing_pairs(
        self, source_id: str, message_ids: Sequence[str]
    ) -> set[tuple[str, str]]: ...

    async def export_events(self, after_id: int, limit: int) -> list[StoredEvent]: ...

    async def export_rejected(
        self, after_id: int, limit: int
    ) -> list[StoredRejection]: ...

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


def outbox_item(row: Sequence[Any], token: str) -> OutboxItem:
    """A claimed row, from the columns every backend's claim returns, in order:
    id, pair_id, idempotency_key, key_expires_at, path, body, attempts,
    created_at, last_error_hash, same_error_count."""
    return OutboxItem(
        id=row[0],
        pair_id=row[1],
        idempotency_key=row[2],
        key_expires_at=row[3],
        path=row[4],
        body=row[5],
        attempts=row[6],
        created_at=row[7],
        lease_token=token,
        last_error_hash=row[8],
        same_error_count=row[9],
    )


def event_status(new_pairs: int, conflicts: Sequence[Conflict]) -> EventStatus:
    """An event with any new pair is accepted; else a conflict or a duplicate."""
    if new_pairs:
        return "accepted"
    return "conflict" if conflicts else "duplicate"


def create_store(
    database_url: str,
    mode: StoreMode,
    *,
    busy_timeout: float = 5.0,
    migrate: bool = False,
) -> Store:
    """The backend a ``DATABASE_URL`` names; ``busy_timeout`` bounds lock waits.

    SQLite is embedded and always migrates on open; PostgreSQL is shared, so
    it migrates only when asked (``migrate``) and otherwise refuses a schema
    that is behind.
    """
    scheme = urlsplit(database_url).scheme
    if scheme == "sqlite":
        from destination.store.sqlite import SQLiteStore, sqlite_path

        return SQLiteStore(sqlite_path(database_url), mode, busy_timeout=busy_timeout)
    if scheme in ("postgresql", "postgres"):
        from destination.store.postgres import PostgresStore

        return PostgresStore(
            database_url, mode, lock_timeout=busy_timeout, migrate=migrate
        )
    raise SettingsError(
        f"DATABASE_URL scheme {scheme!r} is not supported; use "
        "sqlite:///relative/path.db, sqlite:////absolute/path.db or "
        "postgresql://user@host/database."
    )
