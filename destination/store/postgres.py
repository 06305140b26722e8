"""The PostgreSQL store, for several instances sharing one database.

Same tables, statuses and answers as the SQLite store; what differs is how
concurrent processes are kept apart. Unique constraints decide which insert
wins (``ON CONFLICT DO NOTHING``), a claim skips the rows another worker holds
(``FOR UPDATE SKIP LOCKED``) and stamps them with a lease token and expiry,
and an outcome is written only where that token still matches. The schema,
its migrations and the URL are in ``postgres_schema``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from destination.errors import StoreError, StoreModeError, StoreUnavailableError
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
from destination.store.postgres_schema import (
    CLOSE_TIMEOUT,
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    check_version,
    migrate_schema,
    parse_postgres_url,
    schema_version,
    server_settings,
    translated,
)

# Purging a large backlog can take longer than a request may: it runs apart.
PURGE_TIMEOUT = 300.0
POOL_SIZE = 10

_PAIR_STATUS = {
    "delivered": "delivered",
    "dry_run": "dry_run",
    "dead_letter": "dead_letter",
}
_OUTBOX_STATE = {"delivered": "done", "dry_run": "done", "dead_letter": "dead"}


class PostgresStore:
    """A ``Store`` on a PostgreSQL database that many processes share."""

    def __init__(
        self,
        database_url: str,
        mode: StoreMode,
        *,
        lock_timeout: float = 5.0,
        migrate: bool = False,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.target = parse_postgres_url(database_url)
        self.mode = mode
        self._lock_timeout = lock_timeout
        self._migrate = migrate
        self._pool_size = pool_size
        self._pool: Any = None

    async def open(self) -> None:
        async with translated(self.target.display):
            self._pool = await asyncpg.create_pool(
                self.target.dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=server_settings(self.target, self._lock_timeout),
            )
        # The app closes only what opened: a failed open cleans up itself.
        try:
            stored = await self._prepare()
        except BaseException:
            await self.close()
            raise
        if stored != self.mode:
            await self.close()
            raise StoreModeError(
                f"The store at {self.target.display!r} was written by a {stored} "
                f"service and cannot be used for a {self.mode} one; point "
                "DATABASE_URL at another database or schema."
            )

    async def _prepare(self) -> str:
        async with self._connection() as db:
            if self._migrate:
                await migrate_schema(db, self.target)
            else:
                check_version(await schema_version(db), self.target)
            async with db.transaction():
                return await _stamp_mode(db, self.mode)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise StoreError("The store is not open; call open() first.")
        async with (
            translated(self.target.display),
            self._pool.acquire(timeout=CONNECT_TIMEOUT) as connection,
        ):
            yield connection

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._connection() as db, db.transaction():
            yield db

    async def store_events(
        self,
        source_id: str,
        events: Sequence[IncomingEvent],
        now: float,
        *,
        key_expires_at: str,
        rejected: Sequence[RejectedEvent] = (),
    ) -> list[EventOutcome]:
        # Rows are locked in messageId order, so two instances storing
        # overlapping batches wait for each other instead of deadlocking.
        order = sorted(range(len(events)), key=lambda i: events[i].message_id)
        outcomes: dict[int, EventOutcome] = {}
        async with self._transaction() as db:
            await db.executemany(
                """
                INSERT INTO rejected_events
                    (source_id, message_id, payload, errors, received_at)
                VALUES ($1, $2, $3, $4, $5)
                """,
                [
                    (source_id, _text(r.message_id), r.payload, r.errors, now)
                    for r in rejected
                ],
            )
            for index in order:
                outcomes[index] = await _store_event(
                    db, source_id, events[index], now, key_expires_at
                )

        return [outcomes[index] for index in range(len(events))]

    async def claim_due(
        self, limit: int, lease_seconds: float, now: float
    ) -> list[OutboxItem]:
        token = secrets.token_hex(16)
        async with self._transaction() as db:
            rows = await db.fetch(
                """
                UPDATE outbox AS o
                SET lease_token = $1, lease_expires_at = $2,
                    attempts = o.attempts + 1
                FROM (
                    SELECT id FROM outbox
                    WHERE state = 'pending' AND next_attempt_at <= $3
                      AND (lease_expires_at IS NULL OR lease_expires_at <= $3)
                    ORDER BY next_attempt_at, id
                    LIMIT $4
                    FOR UPDATE SKIP LOCKED
                ) AS due
                WHERE o.id = due.id
                RETURNING o.id, o.pair_id, o.idempotency_key, o.key_expires_at,
                          o.path, o.body, o.attempts, o.created_at,
                          o.last_error_hash, o.same_error_count
                """,
                token,
                now + lease_seconds,
                now,
                limit,
            )
        return [outbox_item(row, token) for row in rows]

    async def record_attempt(
        self, item: OutboxItem, outcome: AttemptOutcome, now: float
    ) -> bool:
        finished = outcome.kind != "retry"
        async with self._transaction() as db:
            status = await db.execute(
                """
                UPDATE outbox
                SET state = $1,
                    next_attempt_at = COALESCE($2::double precision, next_attempt_at),
                    finished_at = $3, last_status = $4, last_error = $5,
                    last_error_hash = $6, same_error_count = $7, reason = $8,
                    response_id = $9, lease_token = NULL, lease_expires_at = NULL
                WHERE id = $10 AND lease_token = $11
                """,
                _OUTBOX_STATE.get(outcome.kind, "pending"),
                outcome.next_attempt_at,
                now if finished else None,
                outcome.report.status,
                _text(outcome.report.error),
                outcome.error_hash,
                outcome.same_error_count,
                _text(outcome.reason),
                _text(outcome.report.response_id),
                item.id,
                item.lease_token,
            )
            if _row_count(status) != 1:
                return False
            if finished:
                await db.execute(
                    "UPDATE pairs SET status = $1, updated_at = $2 WHERE id = $3",
                    _PAIR_STATUS[outcome.kind],
                    now,
                    item.pair_id,
                )
        return True

    async def release(self, items: Sequence[OutboxItem]) -> None:
        async with self._transaction() as db:
            await db.executemany(
                """
                UPDATE outbox SET lease_token = NULL, lease_expires_at = NULL
                WHERE id = $1 AND lease_token = $2
                """,
                [(item.id, item.lease_token) for item in items],
            )

    async def next_due_at(self) -> float | None:
        async with self._connection() as db:
            due = await db.fetchval(
                """
                SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_expires_at, 0)))
                FROM outbox WHERE state = 'pending'
                """
            )
        return None if due is None else float(due)

    async def outbox_depth(self) -> int:
        async with self._connection() as db:
            sql = "SELECT COUNT(*) FROM outbox WHERE state = 'pending'"
            return int(await db.fetchval(sql))

    async def counts(self) -> dict[str, int]:
        async with self._connection() as db:
            pairs = await db.fetch("SELECT status, COUNT(*) FROM pairs GROUP BY status")
            outbox = await db.fetch("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            events = await db.fetchval("SELECT COUNT(*) FROM events")

        counts = {f"pairs_{status}": int(number) for status, number in pairs}
        counts.update({f"outbox_{state}": int(number) for state, number in outbox})
        counts.setdefault("outbox_pending", 0)
        counts["events"] = int(events)
        return counts

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        async with self._connection() as db:
            rows = await db.fetch(
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
                LIMIT $1
                """,
                limit,
            )
        return [DeadLetter(*row) for row in rows]

    async def resend_sources(
        self, pair_ids: Sequence[int] | None
    ) -> list[ResendSource]:
        async with self._connection() as db:
            rows = await db.fetch(
                """
                SELECT p.id, p.source_id, p.message_id, p.mapping, p.generation,
                       p.body_hash, p.key_expires_at, e.payload
                FROM pairs p
                LEFT JOIN events e
                  ON e.source_id = p.source_id AND e.message_id = p.message_id
                WHERE p.status = 'dead_letter'
                  AND ($1::bigint[] IS NULL OR p.id = ANY($1::bigint[]))
                ORDER BY p.id
                """,
                None if pair_ids is None else list(pair_ids),
            )
        return [ResendSource(*row) for row in rows]

    async def resend(self, resend: Resend, now: float) -> bool:
        async with self._transaction() as db:
            status = await db.execute(
                """
                UPDATE pairs
                SET status = 'pending', generation = $1, idempotency_key = $2,
                    key_expires_at = $3, body_hash = $4, updated_at = $5
                WHERE id = $6 AND status = 'dead_letter'
                """,
                resend.generation,
                resend.idempotency_key,
                resend.key_expires_at,
                resend.body_hash,
                now,
                resend.pair_id,
            )
            if _row_count(status) != 1:
                return False
            await _insert_outbox(
                db,
                resend.pair_id,
                resend.idempotency_key,
                resend.key_expires_at,
                resend.path,
                resend.body,
                now,
            )
        return True

    async def purge_dead_letters(self, failed_before: float) -> int:
        # The pair record stays, as "discarded", so that a replay of the same
        # event still counts it a duplicate instead of sending it again.
        async with self._transaction() as db:
            rows = await db.fetch(
                """
                UPDATE pairs SET status = 'discarded'
                WHERE status = 'dead_letter' AND updated_at < $1
                RETURNING id
                """,
                failed_before,
            )
            ids = [row[0] for row in rows]
            await db.execute("DELETE FROM outbox WHERE pair_id = ANY($1)", ids)
        return len(ids)

    async def purge(self, payloads_before: float, records_before: float) -> PurgeCounts:
        async with self._transaction() as db:
            outbox = await db.execute(
                "DELETE FROM outbox WHERE state = 'done' AND finished_at < $1",
                payloads_before,
                timeout=PURGE_TIMEOUT,
            )
            # A payload is kept while any of its pairs may still need it: to
            # send, or to be re-rendered by a dead-letter retry.
            payloads = await db.execute(
                """
                UPDATE events SET payload = NULL
                WHERE payload IS NOT NULL AND received_at < $1
                  AND NOT EXISTS (
                    SELECT 1 FROM pairs p
                    WHERE p.source_id = events.source_id
                      AND p.message_id = events.message_id
                      AND p.status IN ('pending', 'dead_letter')
                  )
                """,
                payloads_before,
                timeout=PURGE_TIMEOUT,
            )
            pairs = await db.execute(
                """
                DELETE FROM pairs
                WHERE updated_at < $1 AND status NOT IN ('pending', 'dead_letter')
                """,
                records_before,
                timeout=PURGE_TIMEOUT,
            )
            await db.execute(
                "DELETE FROM events WHERE received_at < $1 AND payload IS NULL",
                records_before,
                timeout=PURGE_TIMEOUT,
            )
            rejected = await db.execute(
                "DELETE FROM rejected_events WHERE received_at < $1",
                payloads_before,
                timeout=PURGE_TIMEOUT,
            )

        return PurgeCounts(
            _row_count(payloads),
            _row_count(outbox),
            _row_count(pairs),
            _row_count(rejected),
        )

    async def existing_pairs(
        self, source_id: str, message_ids: Sequence[str]
    ) -> set[tuple[str, str]]:
        async with self._connection() as db:
            rows = await db.fetch(
                """
                SELECT message_id, mapping FROM pairs
                WHERE source_id = $1 AND message_id = ANY($2::text[])
                """,
                source_id,
                list(message_ids),
            )
        return {(str(message_id), str(mapping)) for message_id, mapping in rows}

    async def export_events(self, after_id: int, limit: int) -> list[StoredEvent]:
        async with self._connection() as db:
            rows = await db.fetch(
                """
                SELECT id, source_id, payload, received_at FROM events
                WHERE id > $1 AND payload IS NOT NULL ORDER BY id LIMIT $2
                """,
                after_id,
                limit,
            )
        return [StoredEvent(*row) for row in rows]

    async def export_rejected(self, after_id: int, limit: int) -> list[StoredRejection]:
        async with self._connection() as db:
            rows = await db.fetch(
                """
                SELECT id, source_id, payload, errors, received_at
                FROM rejected_events WHERE id > $1 ORDER BY id LIMIT $2
                """,
                after_id,
                limit,
            )
        return [StoredRejection(*row) for row in rows]

    async def get_meta(self, key: str) -> str | None:
        async with self._connection() as db:
            value = await db.fetchval("SELECT value FROM meta WHERE key = $1", key)
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str) -> None:
        async with self._connection() as db:
            await db.execute(
                """
                INSERT INTO meta (key, value) VALUES ($1, $2)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value
                """,
                key,
                value,
            )


async def _stamp_mode(db: Any, mode: StoreMode) -> str:
    await db.execute(
        "INSERT INTO meta (key, value) VALUES ('mode', $1) ON CONFLICT DO NOTHING",
        mode,
    )
    await db.execute(
        """
        INSERT INTO meta (key, value) VALUES ('created_at', $1)
        ON CONFLICT DO NOTHING
        """,
        repr(time.time()),
    )
    return str(await db.fetchval("SELECT value FROM meta WHERE key = 'mode'"))


def _text(value: str | None) -> str | None:
    """Free text as PostgreSQL can store it: TEXT cannot hold U+0000.

    Only for text that is shown, never matched: an API's answer, a reason, the
    messageId of a rejected event. A NUL there must not cost a whole batch.
    """
    return None if value is None else value.replace("\x00", "\ufffd")


def _row_count(status: str) -> int:
    """The count in a command tag such as ``UPDATE 3``."""
    return int(status.rpartition(" ")[2])


async def _store_event(
    db: Any,
    source_id: str,
    event: IncomingEvent,
    now: float,
    key_expires_at: str,
) -> EventOutcome:
    """Insert one event's records; first wins for every (event, mapping) pair."""
    await db.execute(
        """
        INSERT INTO events
            (source_id, message_id, payload_hash, payload, event_time, received_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (source_id, message_id) DO NOTHING
        """,
        source_id,
        event.message_id,
        event.payload_hash,
        event.payload,
        event.event_time,
        now,
    )
    enqueued = no_recipient = 0
    conflicts: list[Conflict] = []
    for send in event.sends:
        status = "pending" if send.body is not None else "no_recipient"
        body_hash = None if send.body is None else hash_body(send.body)
        pair_id = await db.fetchval(
            """
            INSERT INTO pairs (source_id, message_id, mapping, payload_hash,
                               idempotency_key, key_expires_at, body_hash, status,
                               created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
            ON CONFLICT (source_id, message_id, mapping) DO NOTHING
            RETURNING id
            """,
            source_id,
            event.message_id,
            send.mapping,
            event.payload_hash,
            send.idempotency_key,
            key_expires_at,
            body_hash,
            status,
            now,
        )
        if pair_id is None:
            stored = await _stored_hash(db, source_id, event.message_id, send.mapping)
            if stored != event.payload_hash:
                conflicts.append(Conflict(send.mapping, stored, event.payload_hash))
            continue
        if send.body is None:
            no_recipient += 1
            continue
        await _insert_outbox(
            db, pair_id, send.idempotency_key, key_expires_at, send.path, send.body, now
        )
        enqueued += 1

    return EventOutcome(
        status=event_status(enqueued + no_recipient, conflicts),
        enqueued=enqueued,
        no_recipient=no_recipient,
        conflicts=tuple(conflicts),
    )


async def _insert_outbox(
    db: Any,
    pair_id: int,
    key: str,
    key_expires_at: str,
    path: str,
    body: bytes,
    now: float,
) -> None:
    await db.execute(
        """
        INSERT INTO outbox (pair_id, idempotency_key, key_expires_at, path, body,
                            state, next_attempt_at, created_at)
        VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6)
        """,
        pair_id,
        key,
        key_expires_at,
        path,
        body,
        now,
    )


async def _stored_hash(db: Any, source_id: str, message_id: str, mapping: str) -> str:
    # Under READ COMMITTED this statement sees the row whose insert made ours
    # do nothing: that insert had committed before ours went on.
    stored = await db.fetchval(
        """
        SELECT payload_hash FROM pairs
        WHERE source_id = $1 AND message_id = $2 AND mapping = $3
        """,
        source_id,
        message_id,
        mapping,
    )
    if stored is None:
        raise StoreUnavailableError(
            f"The pair ({message_id!r}, {mapping!r}) was purged while being "
            "stored again; retry the request."
        )
    return str(stored)
