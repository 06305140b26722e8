"""The embedded SQLite store.

Durability first: WAL with ``synchronous=FULL`` (a commit survives power
loss), ``BEGIN IMMEDIATE`` for every write (so two processes on one file
queue on the write lock instead of failing half way), and one thread that
owns the connection, so the event loop never waits on the disk. The schema
version lives in ``PRAGMA user_version``.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from destination.errors import (
    SettingsError,
    StoreError,
    StoreModeError,
    StoreUnavailableError,
)
from destination.store import (
    AttemptReport,
    Conflict,
    DeliveryResult,
    EventOutcome,
    EventStatus,
    IncomingEvent,
    OutboxItem,
    StoreMode,
)

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        source_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        payload_hash TEXT NOT NULL,
        payload BLOB NOT NULL,
        event_time REAL,
        received_at REAL NOT NULL,
        UNIQUE (source_id, message_id)
    );
    CREATE TABLE pairs (
        id INTEGER PRIMARY KEY,
        source_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        mapping TEXT NOT NULL,
        payload_hash TEXT NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0,
        idempotency_key TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (source_id, message_id, mapping)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        pair_id INTEGER NOT NULL REFERENCES pairs (id),
        idempotency_key TEXT NOT NULL,
        path TEXT NOT NULL,
        body BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_token TEXT,
        lease_expires_at REAL,
        last_status INTEGER,
        last_error TEXT,
        response_id TEXT,
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
    """,
)


def sqlite_path(database_url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` as a path."""
    parts = urlsplit(database_url)
    if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
        raise SettingsError(
            f"DATABASE_URL {database_url!r} is not a SQLite URL; use "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db."
        )
    return Path(unquote(parts.path[1:]))


class SQLiteStore:
    """A ``Store`` on one SQLite file, safe to share between processes."""

    def __init__(
        self, path: Path, mode: StoreMode, *, busy_timeout: float = 5.0
    ) -> None:
        self.path = path
        self.mode = mode
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.OperationalError as error:
            # Locked, busy, full or read-only: the data is fine, the disk or
            # another writer is not; the caller answers 503 and the CDP retries.
            raise StoreUnavailableError(
                f"The SQLite store at {str(self.path)!r} cannot be written now: "
                f"{error}."
            ) from error

    # The methods below run on the store's own thread.

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError("The store is not open; call open() first.")
        return self._connection

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        self._connection = connection
        self._migrate()
        self._check_mode()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _migrate(self) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"The store at {str(self.path)!r} has schema version {version}, "
                    f"newer than this destination ({len(MIGRATIONS)}); upgrade it."
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _check_mode(self) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('mode', ?)",
                (self.mode,),
            )
            stored = db.execute("SELECT value FROM meta WHERE key = 'mode'").fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if stored[0] != self.mode:
            raise StoreModeError(
                f"The store at {str(self.path)!r} was written by a {stored[0]} "
                f"service and cannot be used for a {self.mode} one; point "
                "DATABASE_URL at another file."
            )

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    async def store_events(
        self, source_id: str, events: list[IncomingEvent], now: float
    ) -> list[EventOutcome]:
        def work(db: sqlite3.Connection) -> list[EventOutcome]:
            return [_store_event(db, source_id, event, now) for event in events]

        return await self._run(self._transaction, work)

    async def claim_due(
        self, limit: int, lease_seconds: float, now: float
    ) -> list[OutboxItem]:
        token = secrets.token_hex(16)

        def work(db: sqlite3.Connection) -> list[OutboxItem]:
            rows = db.execute(
                """
                UPDATE outbox
                SET lease_token = ?, lease_expires_at = ?, attempts = attempts + 1
                WHERE id IN (
                    SELECT id FROM outbox
                    WHERE state = 'pending' AND next_attempt_at <= ?
                      AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
                    ORDER BY next_attempt_at, id
                    LIMIT ?
                )
                RETURNING id, idempotency_key, path, body, attempts, created_at
                """,
                (token, now + lease_seconds, now, now, limit),
            ).fetchall()
            return [
                OutboxItem(
                    id=row[0],
                    idempotency_key=row[1],
                    path=row[2],
                    body=row[3],
                    attempts=row[4],
                    created_at=row[5],
                    lease_token=token,
                )
                for row in rows
            ]

        return await self._run(self._transaction, work)

    async def record_finished(
        self,
        item: OutboxItem,
        result: DeliveryResult,
        report: AttemptReport,
        now: float,
    ) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                """
                UPDATE outbox
                SET state = 'done', finished_at = ?, last_status = ?,
                    last_error = ?, response_id = ?,
                    lease_token = NULL, lease_expires_at = NULL
                WHERE id = ? AND lease_token = ?
                """,
                (
                    now,
                    report.status,
                    report.error,
                    report.response_id,
                    item.id,
                    item.lease_token,
                ),
            )
            if cursor.rowcount != 1:
                return False
            db.execute(
                """
                UPDATE pairs SET status = ?, updated_at = ?
                WHERE id = (SELECT pair_id FROM outbox WHERE id = ?)
                """,
                (result, now, item.id),
            )
            return True

        return await self._run(self._transaction, work)

    async def record_retry(
        self, item: OutboxItem, next_attempt_at: float, report: AttemptReport
    ) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                """
                UPDATE outbox
                SET next_attempt_at = ?, last_status = ?, last_error = ?,
                    lease_token = NULL, lease_expires_at = NULL
                WHERE id = ? AND lease_token = ?
                """,
                (
                    next_attempt_at,
                    report.status,
                    report.error,
                    item.id,
                    item.lease_token,
                ),
            )
            return cursor.rowcount == 1

        return await self._run(self._transaction, work)

    async def next_due_at(self) -> float | None:
        def work() -> float | None:
            row = (
                self._db()
                .execute(
                    """
                    SELECT MIN(MAX(next_attempt_at, COALESCE(lease_expires_at, 0)))
                    FROM outbox WHERE state = 'pending'
                    """
                )
                .fetchone()
            )
            return None if row[0] is None else float(row[0])

        return await self._run(work)

    async def counts(self) -> dict[str, int]:
        def work() -> dict[str, int]:
            db = self._db()
            counts = {
                f"pairs_{status}": number
                for status, number in db.execute(
                    "SELECT status, COUNT(*) FROM pairs GROUP BY status"
                )
            }
            counts["outbox_pending"] = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'"
            ).fetchone()[0]
            counts["events"] = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            return counts

        return await self._run(work)


def _store_event(
    db: sqlite3.Connection, source_id: str, event: IncomingEvent, now: float
) -> EventOutcome:
    """Insert one event's records; first wins for every (event, mapping) pair."""
    db.execute(
        """
        INSERT INTO events
            (source_id, message_id, payload_hash, payload, event_time, received_at)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (source_id, message_id) DO NOTHING
        """,
        (
            source_id,
            event.message_id,
            event.payload_hash,
            event.payload,
            event.event_time,
            now,
        ),
    )
    enqueued = no_recipient = 0
    conflicts: list[Conflict] = []
    for send in event.sends:
        status = "pending" if send.body is not None else "no_recipient"
        row = db.execute(
            """
            INSERT INTO pairs (source_id, message_id, mapping, payload_hash,
                               idempotency_key, status, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (source_id, message_id, mapping) DO NOTHING
            RETURNING id
            """,
            (
                source_id,
                event.message_id,
                send.mapping,
                event.payload_hash,
                send.idempotency_key,
                status,
                now,
                now,
            ),
        ).fetchone()
        if row is None:
            stored = _stored_hash(db, source_id, event.message_id, send.mapping)
            if stored != event.payload_hash:
                conflicts.append(Conflict(send.mapping, stored, event.payload_hash))
            continue
        if send.body is None:
            no_recipient += 1
            continue
        db.execute(
            """
            INSERT INTO outbox (pair_id, idempotency_key, path, body, state,
                                next_attempt_at, created_at)
            VALUES (?, ?, ?, ?, 'pending', ?, ?)
            """,
            (row[0], send.idempotency_key, send.path, send.body, now, now),
        )
        enqueued += 1

    return EventOutcome(
        status=_event_status(enqueued + no_recipient, conflicts),
        enqueued=enqueued,
        no_recipient=no_recipient,
        conflicts=tuple(conflicts),
    )


def _stored_hash(
    db: sqlite3.Connection, source_id: str, message_id: str, mapping: str
) -> str:
    row = db.execute(
        """
        SELECT payload_hash FROM pairs
        WHERE source_id = ? AND message_id = ? AND mapping = ?
        """,
        (source_id, message_id, mapping),
    ).fetchone()
    return str(row[0])


def _event_status(new_pairs: int, conflicts: list[Conflict]) -> EventStatus:
    if new_pairs:
        return "accepted"
    return "conflict" if conflicts else "duplicate"
