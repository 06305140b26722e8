"""The embedded SQLite store.

Durability first: WAL with ``synchronous=FULL`` (a commit survives power
loss), ``BEGIN IMMEDIATE`` for every write (so two processes on one file
queue on the write lock instead of failing half way), and one thread that
owns the connection, so the event loop never waits on the disk. The schema
version lives in ``PRAGMA user_version``; migrations run on open.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
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
from destination.idempotency import hash_body
from destination.store import (
    AttemptOutcome,
    Conflict,
    DeadLetter,
    EventOutcome,
    IncomingEvent,
    OutboxItem,
    PurgeCounts,
    RejectedEvent,
    Resend,
    ResendSource,
    StoredEvent,
    StoredRejection,
    StoreMode,
    event_status,
    outbox_item,
)

T = TypeVar("T")

INGEST = "ingest"
WORK = "work"

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
        payload BLOB,
        event_time REAL,
        received_at REAL NOT NULL,
        UNIQUE (source_id, message_id)
    );
    CREATE INDEX events_received ON events (received_at);
    CREATE TABLE rejected_events (
        id INTEGER PRIMARY KEY,
        source_id TEXT NOT NULL,
        message_id TEXT,
        payload BLOB NOT NULL,
        errors TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE TABLE pairs (
        id INTEGER PRIMARY KEY,
        source_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        mapping TEXT NOT NULL,
        payload_hash TEXT NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0,
        idempotency_key TEXT NOT NULL,
        key_expires_at TEXT,
        body_hash TEXT,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (source_id, message_id, mapping)
    );
    CREATE INDEX pairs_status ON pairs (status, updated_at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        pair_id INTEGER NOT NULL REFERENCES pairs (id) ON DELETE CASCADE,
        idempotency_key TEXT NOT NULL,
        key_expires_at TEXT NOT NULL,
        path TEXT NOT NULL,
        body BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_token TEXT,
        lease_expires_at REAL,
        last_status INTEGER,
        last_error TEXT,
        last_error_hash TEXT,
        same_error_count INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        response_id TEXT,
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
    CREATE INDEX outbox_pair ON outbox (pair_id);
    """,
)

# Pair status once an attempt of the given kind is recorded; None: still pending.
_PAIR_STATUS = {
    "delivered": "delivered",
    "dry_run": "dry_run",
    "dead_letter": "dead_letter",
}
_OUTBOX_STATE = {"delivered": "done", "dry_run": "done", "dead_letter": "dead"}


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
        # Two lanes, each one thread with its own connection: ingest never
        # queues behind the worker's writes, so when another process holds
        # the lock, ingest answers 503 after one busy timeout, not several.
        self._lanes = {
            lane: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{lane}")
            for lane in (INGEST, WORK)
        }
        self._local = threading.local()
        self._opened = False

    async def open(self) -> None:
        await self._run(self._open)
        self._opened = True

    async def close(self) -> None:
        for lane, executor in self._lanes.items():
            await self._run(self._close, lane=lane)
            executor.shutdown(wait=True)

    async def _run(self, function: Callable[..., T], *args: Any, lane: str = WORK) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._lanes[lane], function, *args)
        except sqlite3.OperationalError as error:
            # Locked, busy, full or read-only: the data is fine, the disk or
            # another writer is not; the caller answers 503 and the CDP retries.
            raise StoreUnavailableError(
                f"The SQLite store at {str(self.path)!r} cannot be used now: {error}."
            ) from error
        except sqlite3.Error as error:
            raise StoreError(
                f"The SQLite store at {str(self.path)!r} failed: {error}; check the "
                "file with `sqlite3 FILE 'PRAGMA integrity_check'`."
            ) from error

    async def _write(
        self, work: Callable[[sqlite3.Connection], T], lane: str = WORK
    ) -> T:
        return await self._run(self._transaction, work, lane=lane)

    async def _read(
        self, work: Callable[[sqlite3.Connection], T], lane: str = WORK
    ) -> T:
        return await self._run(lambda: work(self._db()), lane=lane)

    # The methods below run on a lane's thread, with that thread's connection.

    def _db(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "db", None)
        if connection is None:
            if not self._opened:
                raise StoreError("The store is not open; call open() first.")
            connection = self._connect()
        return connection

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        self._local.db = connection
        return connection

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect()
        self._transaction(self._migrate)
        stored = self._transaction(self._stamp_mode)
        if stored != self.mode:
            raise StoreModeError(
                f"The store at {str(self.path)!r} was written by a {stored} "
                f"service and cannot be used for a {self.mode} one; point "
                "DATABASE_URL at another file."
            )

    def _close(self) -> None:
        connection = getattr(self._local, "db", None)
        if connection is not None:
            connection.close()
            self._local.db = None

    def _migrate(self, db: sqlite3.Connection) -> None:
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

    def _stamp_mode(self, db: sqlite3.Connection) -> str:
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('mode', ?)", (self.mode,)
        )
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)",
            (repr(time.time()),),
        )
        return str(
            db.execute("SELECT value FROM meta WHERE key = 'mode'").fetchone()[0]
        )

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT: a transaction left open would make
            # every later write on this connection fail.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    async def store_events(
        self,
        source_id: str,
        events: Sequence[IncomingEvent],
        now: float,
        *,
        key_expires_at: str,
        rejected: Sequence[RejectedEvent] = (),
    ) -> list[EventOutcome]:
        def work(db: sqlite3.Connection) -> list[EventOutcome]:
            db.executemany(
                """
                INSERT INTO rejected_events
                    (source_id, message_id, payload, errors, received_at)
                VALUES (?, ?, ?, ?, ?)
                """,
                [(source_id, r.message_id, r.payload, r.errors, now) for r in rejected],
            )
            return [
                _store_event(db, source_id, event, now, key_expires_at)
                for event in events
            ]

        return await self._write(work, INGEST)

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
                RETURNING id, pair_id, idempotency_key, key_expires_at, path, body,
                          attempts, created_at, last_error_hash, same_error_count
                """,
                (token, now + lease_seconds, now, now, limit),
            ).fetchall()
            return [outbox_item(row, token) for row in rows]

        return await self._write(work)

    async def record_attempt(
        self, item: OutboxItem, outcome: AttemptOutcome, now: float
    ) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            finished = outcome.kind != "retry"
            cursor = db.execute(
                """
                UPDATE outbox
                SET state = ?, next_attempt_at = COALESCE(?, next_attempt_at),
                    finished_at = ?, last_status = ?, last_error = ?,
                    last_error_hash = ?, same_error_count = ?, reason = ?,
                    response_id = ?, lease_token = NULL, lease_expires_at = NULL
                WHERE id = ? AND lease_token = ?
                """,
                (
                    _OUTBOX_STATE.get(outcome.kind, "pending"),
                    outcome.next_attempt_at,
                    now if finished else None,
                    outcome.report.status,
                    outcome.report.error,
                    outcome.error_hash,
                    outcome.same_error_count,
                    outcome.reason,
                    outcome.report.response_id,
                    item.id,
                    item.lease_token,
                ),
            )
            if cursor.rowcount != 1:
                return False
            if finished:
                db.execute(
                    "UPDATE pairs SET status = ?, updated_at = ? WHERE id = ?",
                    (_PAIR_STATUS[outcome.kind], now, item.pair_id),
                )
            return True

        return await self._write(work)

    async def release(self, items: Sequence[OutboxItem]) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                """
                UPDATE outbox SET lease_token = NULL, lease_expires_at = NULL
                WHERE id = ? AND lease_token = ?
                """,
                [(item.id, item.lease_token) for item in items],
            )

        await self._write(work)

    async def next_due_at(self) -> float | None:
        def work(db: sqlite3.Connection) -> float | None:
            row = db.execute(
                """
                SELECT MIN(MAX(next_attempt_at, COALESCE(lease_expires_at, 0)))
                FROM outbox WHERE state = 'pending'
                """
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._read(work)

    async def outbox_depth(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            sql = "SELECT COUNT(*) FROM outbox WHERE state = 'pending'"
            return int(db.execute(sql).fetchone()[0])

        return await self._read(work, INGEST)

    async def counts(self) -> dict[str, int]:
        def work(db: sqlite3.Connection) -> dict[str, int]:
            counts = {
                f"pairs_{status}": number
                for status, number in db.execute(
                    "SELECT status, COUNT(*) FROM pairs GROUP BY status"
                )
            }
            for state, number in db.execute(
                "SELECT state, COUNT(*) FROM outbox GROUP BY state"
            ):
                counts[f"outbox_{state}"] = number
            counts.setdefault("outbox_pending", 0)
            counts["events"] = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            return counts

        return await self._read(work)

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        def work(db: sqlite3.Connection) -> list[DeadLetter]:
            rows = db.execute(
                """
                SELECT p.id, p.source_id, p.message_id, p.mapping, p.generation,
                       p.idempotency_key, o.attempts, o.last_status, o.last_error,
                       o.reason, p.updated_at
                FROM pairs p
                JOIN outbox o ON o.id = (
                    SELECT MAX(id) FROM outbox WHERE pair_id = p.id
                )
                WHERE p.status = 'dead_letter'
                ORDER BY p.updated_at, p.id
                LIMIT ?
                """,
                (limit,),
            ).fetchall()
            return [DeadLetter(*row) for row in rows]

        return await self._read(work)

    async def resend_sources(
        self, pair_ids: Sequence[int] | None
    ) -> list[ResendSource]:
        def work(db: sqlite3.Connection) -> list[ResendSource]:
            sql = """
                SELECT p.id, p.source_id, p.message_id, p.mapping, p.generation,
                       p.body_hash, p.key_expires_at, e.payload
                FROM pairs p
                LEFT JOIN events e
                  ON e.source_id = p.source_id AND e.message_id = p.message_id
                WHERE p.status = 'dead_letter'
            """
            if pair_ids is None:
                rows = db.execute(sql + " ORDER BY p.id").fetchall()
            else:
                marks = ",".join("?" * len(pair_ids))
                rows = db.execute(
                    sql + f" AND p.id IN ({marks}) ORDER BY p.id", tuple(pair_ids)
                ).fetchall()
            return [ResendSource(*row) for row in rows]

        return await self._read(work)

    async def resend(self, resend: Resend, now: float) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                """
                UPDATE pairs
                SET status = 'pending', generation = ?, idempotency_key = ?,
                    key_expires_at = ?, body_hash = ?, updated_at = ?
                WHERE id = ? AND status = 'dead_letter'
                """,
                (
                    resend.generation,
                    resend.idempotency_key,
                    resend.key_expires_at,
                    resend.body_hash,
                    now,
                    resend.pair_id,
                ),
            )
            if cursor.rowcount != 1:
                return False
            _insert_outbox(
                db,
                resend.pair_id,
                resend.idempotency_key,
                resend.key_expires_at,
                resend.path,
                resend.body,
                now,
            )
            return True

        return await self._write(work)

    async def purge_dead_letters(self, failed_before: float) -> int:
        # The pair record stays, as "discarded", so that a replay of the same
        # event still counts it a duplicate instead of sending it again.
        def work(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                """
                UPDATE pairs SET status = 'discarded'
                WHERE status = 'dead_letter' AND updated_at < ?
                RETURNING id
                """,
                (failed_before,),
            )
            ids = [(row[0],) for row in cursor.fetchall()]
            db.executemany("DELETE FROM outbox WHERE pair_id = ?", ids)
            return len(ids)

        return await self._write(work)

    async def purge(self, payloads_before: float, records_before: float) -> PurgeCounts:
        def work(db: sqlite3.Connection) -> PurgeCounts:
            outbox = db.execute(
                "DELETE FROM outbox WHERE state = 'done' AND finished_at < ?",
                (payloads_before,),
            ).rowcount
            # A payload is kept while any of its pairs may still need it: to
            # send, or to be re-rendered by a dead-letter retry.
            payloads = db.execute(
                """
                UPDATE events SET payload = NULL
                WHERE payload IS NOT NULL AND received_at < ?
                  AND NOT EXISTS (
                    SELECT 1 FROM pairs p
                    WHERE p.source_id = events.source_id
                      AND p.message_id = events.message_id
                      AND p.status IN ('pending', 'dead_letter')
                  )
                """,
                (payloads_before,),
            ).rowcount
            pairs = db.execute(
                """
                DELETE FROM pairs
                WHERE updated_at < ? AND status NOT IN ('pending', 'dead_letter')
                """,
                (records_before,),
            ).rowcount
            db.execute(
                "DELETE FROM events WHERE received_at < ? AND payload IS NULL",
                (records_before,),
            )
            rejected = db.execute(
                "DELETE FROM rejected_events WHERE received_at < ?", (payloads_before,)
            ).rowcount
            return PurgeCounts(payloads, outbox, pairs, rejected)

        return await self._write(work)

    async def existing_pairs(
        self, source_id: str, message_ids: Sequence[str]
    ) -> set[tuple[str, str]]:
        def work(db: sqlite3.Connection) -> set[tuple[str, str]]:
            found: set[tuple[str, str]] = set()
            for start in range(0, len(message_ids), 500):
                chunk = tuple(message_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                # Only "?" placeholders are formatted in; values stay bound.
                rows = db.execute(
                    f"""
                    SELECT message_id, mapping FROM pairs
                    WHERE source_id = ? AND message_id IN ({marks})
                    """,  # noqa: S608
                    (source_id, *chunk),
                )
                found.update((str(m), str(n)) for m, n in rows)
            return found

        return await self._read(work, INGEST)

    async def export_events(self, after_id: int, limit: int) -> list[StoredEvent]:
        def work(db: sqlite3.Connection) -> list[StoredEvent]:
            rows = db.execute(
                """
                SELECT id, source_id, payload, received_at FROM events
                WHERE id > ? AND payload IS NOT NULL ORDER BY id LIMIT ?
                """,
                (after_id, limit),
            ).fetchall()
            return [StoredEvent(*row) for row in rows]

        return await self._read(work)

    async def export_rejected(self, after_id: int, limit: int) -> list[StoredRejection]:
        def work(db: sqlite3.Connection) -> list[StoredRejection]:
            rows = db.execute(
                """
                SELECT id, source_id, payload, errors, received_at
                FROM rejected_events WHERE id > ? ORDER BY id LIMIT ?
                """,
                (after_id, limit),
            ).fetchall()
            return [StoredRejection(*row) for row in rows]

        return await self._read(work)

    async def get_meta(self, key: str) -> str | None:
        def work(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._read(work)

    async def set_meta(self, key: str, value: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                """
                INSERT INTO meta (key, value) VALUES (?, ?)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value
                """,
                (key, value),
            )

        await self._write(work)


def _store_event(
    db: sqlite3.Connection,
    source_id: str,
    event: IncomingEvent,
    now: float,
    key_expires_at: str,
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
        body_hash = None if send.body is None else hash_body(send.body)
        row = db.execute(
            """
            INSERT INTO pairs (source_id, message_id, mapping, payload_hash,
                               idempotency_key, key_expires_at, body_hash, status,
                               created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (source_id, message_id, mapping) DO NOTHING
            RETURNING id
            """,
            (
                source_id,
                event.message_id,
                send.mapping,
                event.payload_hash,
                send.idempotency_key,
                key_expires_at,
                body_hash,
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
        _insert_outbox(
            db, row[0], send.idempotency_key, key_expires_at, send.path, send.body, now
        )
        enqueued += 1

    return EventOutcome(
        status=event_status(enqueued + no_recipient, conflicts),
        enqueued=enqueued,
        no_recipient=no_recipient,
        conflicts=tuple(conflicts),
    )


def _insert_outbox(
    db: sqlite3.Connection,
    pair_id: int,
    key: str,
    key_expires_at: str,
    path: str,
    body: bytes,
    now: float,
) -> None:
    db.execute(
        """
        INSERT INTO outbox (pair_id, idempotency_key, key_expires_at, path, body,
                            state, next_attempt_at, created_at)
        VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)
        """,
        (pair_id, key, key_expires_at, path, body, now, now),
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
