"""The durable store: events, one record per (event, mapping) pair, and the outbox.

Ingest writes an event, its pair records and its rendered requests in one
transaction and answers the CDP only after it commits. The delivery worker
claims due outbox rows under a lease, so two processes sharing a store never
send the same row at once, and records each outcome only while its lease is
still its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import urlsplit

from destination.errors import SettingsError

StoreMode = Literal["live", "dry-run"]
EventStatus = Literal["accepted", "duplicate", "conflict"]


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
    idempotency_key: str
    path: str
    body: bytes
    attempts: int
    created_at: float
    lease_token: str


DeliveryResult = Literal["delivered", "dry_run", "failed"]


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """What one send attempt returned: HTTP status, response id, or the error."""

    status: int | None
    error: str | None = None
    response_id: str | None = None


class Store(Protocol):
    """What ingest and delivery need from a backend."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def store_events(
        self, source_id: str, events: list[IncomingEvent], now: float
    ) -> list[EventOutcome]: ...

    async def claim_due(
        self, limit: int, lease_seconds: float, now: float
    ) -> list[OutboxItem]: ...

    async def record_finished(
        self,
        item: OutboxItem,
        result: DeliveryResult,
        report: AttemptReport,
        now: float,
    ) -> bool: ...

    async def record_retry(
        self,
        item: OutboxItem,
        next_attempt_at: float,
        report: AttemptReport,
    ) -> bool: ...

    async def next_due_at(self) -> float | None: ...

    async def counts(self) -> dict[str, int]: ...


def create_store(
    database_url: str, mode: StoreMode, *, busy_timeout: float = 5.0
) -> Store:
    """The backend a ``DATABASE_URL`` names; ``busy_timeout`` bounds lock waits."""
    scheme = urlsplit(database_url).scheme
    if scheme == "sqlite":
        from destination.store.sqlite import SQLiteStore, sqlite_path

        return SQLiteStore(sqlite_path(database_url), mode, busy_timeout=busy_timeout)
    raise SettingsError(
        f"DATABASE_URL scheme {scheme!r} is not supported; use "
        "sqlite:///relative/path.db or sqlite:////absolute/path.db."
    )
