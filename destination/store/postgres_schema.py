"""The PostgreSQL schema and the way to it: URL, connections, errors, migrations.

The schema version lives in ``schema_migrations``, one row per applied
migration. Migrations run in one transaction that first takes a
transaction-scoped advisory lock, so processes that start together migrate
once; they run from ``destination migrate``, or when a store opens with
``migrate``. A store opened without it refuses a schema that is behind.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from destination.errors import (
    DestinationError,
    SettingsError,
    StoreError,
    StoreUnavailableError,
)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        source_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        payload_hash TEXT NOT NULL,
        payload BYTEA,
        event_time DOUBLE PRECISION,
        received_at DOUBLE PRECISION NOT NULL,
        UNIQUE (source_id, message_id)
    );
    CREATE INDEX events_received ON events (received_at);
    CREATE TABLE rejected_events (
        id BIGSERIAL PRIMARY KEY,
        source_id TEXT NOT NULL,
        message_id TEXT,
        payload BYTEA NOT NULL,
        errors TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX rejected_events_received ON rejected_events (received_at);
    CREATE TABLE pairs (
        id BIGSERIAL PRIMARY KEY,
        source_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        mapping TEXT NOT NULL,
        payload_hash TEXT NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0,
        idempotency_key TEXT NOT NULL,
        key_expires_at TEXT,
        body_hash TEXT,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        UNIQUE (source_id, message_id, mapping)
    );
    CREATE INDEX pairs_status ON pairs (status, updated_at);
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        pair_id BIGINT NOT NULL REFERENCES pairs (id) ON DELETE CASCADE,
        idempotency_key TEXT NOT NULL,
        key_expires_at TEXT NOT NULL,
        path TEXT NOT NULL,
        body BYTEA NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        lease_token TEXT,
        lease_expires_at DOUBLE PRECISION,
        last_status INTEGER,
        last_error TEXT,
        last_error_hash TEXT,
        same_error_count INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        response_id TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION
    );
    CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
    CREATE INDEX outbox_pair ON outbox (pair_id);
    """,
)

# pg_advisory_xact_lock key: the first 8 bytes of sha256(b"destination.migrate"),
# fixed so that every version of destination takes the same lock.
MIGRATION_LOCK_KEY = 0x1A156AF6B51000EF
# A migration may rewrite a large table: waiters allow it more than a request.
MIGRATION_TIMEOUT = 300.0
# Also bounds the wait for a pooled connection: opening one may take as long.
CONNECT_TIMEOUT = 10.0
# No statement of ours runs long; one that does means the server is stuck,
# and ingest should answer 503 before the CDP gives up on the request.
COMMAND_TIMEOUT = 15.0
CLOSE_TIMEOUT = 10.0

# SQLSTATE classes that mean "not now" rather than "never": connection
# exceptions, serialization failures and deadlocks, insufficient resources,
# operator intervention (a cancel, a shutdown), system errors.
_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout passed
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_TRANSIENT_ERRORS = (
    OSError,
    TimeoutError,
    # Raised when the server drops a connection the driver is about to use.
    asyncpg.InternalClientError,
    # A migration changed a table under a prepared statement; the driver has
    # dropped its cache, so the same call works when the CDP retries it.
    asyncpg.InvalidCachedStatementError,
)
# Lower case only: PostgreSQL folds unquoted names, so "Dest" would become "dest".
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A ``DATABASE_URL`` split into what asyncpg gets and what we keep."""

    dsn: str
    schema: str | None
    display: str  # without user or password: safe in messages and logs
    application_name: str = "destination"  # what pg_stat_activity shows


def parse_postgres_url(database_url: str) -> PostgresTarget:
    """Take ``schema`` and ``application_name`` out; asyncpg gets the rest."""
    parts = urlsplit(database_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    host = parts.netloc.rpartition("@")[2]
    display = f"{parts.scheme}://{host}{parts.path}"
    if len(schemas) > 1 or (schemas and not _SCHEMA_NAME.fullmatch(schemas[0])):
        raise SettingsError(
            f"DATABASE_URL {display!r} has a bad schema parameter {schemas!r}; "
            "give one name of lower-case letters, digits and underscores."
        )
    schema = schemas[0] if schemas else None
    ours = ("schema", "application_name")
    names = [value for name, value in query if name == "application_name"]
    rest = urlencode([(name, value) for name, value in query if name not in ours])
    return PostgresTarget(
        dsn=urlunsplit(parts._replace(query=rest)),
        schema=schema,
        display=display if schema is None else f"{display}?schema={schema}",
        application_name=names[-1] if names else "destination",
    )


async def migrate_database(
    database_url: str, *, lock_timeout: float = 5.0
) -> tuple[int, int]:
    """Bring the schema up to date; the version before and after."""
    target = parse_postgres_url(database_url)
    async with translated(target.display):
        connection = await asyncpg.connect(
            target.dsn,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            server_settings=server_settings(target, lock_timeout),
        )
        try:
            return await migrate_schema(connection, target)
        finally:
            await connection.close(timeout=CLOSE_TIMEOUT)


def server_settings(target: PostgresTarget, lock_timeout: float) -> dict[str, str]:
    """What every connection sets on the server when it opens."""
    settings = {
        "application_name": target.application_name,
        # A lock wait past this fails the statement: ingest answers 503.
        "lock_timeout": f"{max(1, round(lock_timeout * 1000))}ms",
        # Our transactions never wait on the network; one idle this long
        # belongs to a stuck process, and its row locks must not outlive it.
        "idle_in_transaction_session_timeout": "60s",
    }
    if target.schema is not None:
        settings["search_path"] = target.schema
    return settings


@contextlib.asynccontextmanager
async def translated(where: str) -> AsyncIterator[None]:
    """Driver and server errors as ours: unavailable (503) or not."""
    try:
        yield
    except _DRIVER_ERRORS as error:
        raise _store_error(where, error) from error


def _store_error(where: str, error: Exception) -> DestinationError:
    if isinstance(error, asyncpg.ClientConfigurationError):
        return SettingsError(f"DATABASE_URL {where!r} cannot be used: {error}.")
    if _is_transient(error):
        return StoreUnavailableError(
            f"The PostgreSQL store at {where!r} cannot be used now: "
            f"{error or type(error).__name__}."
        )
    return StoreError(f"The PostgreSQL store at {where!r} failed: {error}.")


def _is_transient(error: BaseException | None) -> bool:
    # A dropped connection can surface as the error of the ROLLBACK that
    # followed it ("the underlying connection is closed"): look down the chain.
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        sqlstate = str(getattr(error, "sqlstate", None) or "")
        if (
            isinstance(error, _TRANSIENT_ERRORS)
            or sqlstate[:2] in _UNAVAILABLE_CLASSES
            or sqlstate == _LOCK_NOT_AVAILABLE
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


async def migrate_schema(db: Any, target: PostgresTarget) -> tuple[int, int]:
    """Apply what is missing, once however many run it; versions before, after."""
    async with db.transaction():
        await db.execute(
            f"SET LOCAL lock_timeout = '{MIGRATION_TIMEOUT:g}s'",
            timeout=MIGRATION_TIMEOUT,
        )
        await db.execute(
            "SELECT pg_advisory_xact_lock($1)",
            MIGRATION_LOCK_KEY,
            timeout=MIGRATION_TIMEOUT,
        )
        if target.schema is not None:
            # The name matched _SCHEMA_NAME: it is safe unquoted.
            await db.execute(f"CREATE SCHEMA IF NOT EXISTS {target.schema}")
        await db.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )
            """
        )
        before = await schema_version(db)
        check_version(before, target, migrating=True)
        for number, script in enumerate(MIGRATIONS[before:], start=before + 1):
            await db.execute(script, timeout=MIGRATION_TIMEOUT)
            await db.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)", number
            )
    return before, len(MIGRATIONS)


async def schema_version(db: Any) -> int:
    """The last migration applied; 0 for an empty schema."""
    if await db.fetchval("SELECT to_regclass('schema_migrations') IS NULL"):
        return 0
    version = await db.fetchval("SELECT MAX(version) FROM schema_migrations")
    return 0 if version is None else int(version)


def check_version(
    version: int, target: PostgresTarget, *, migrating: bool = False
) -> None:
    """Refuse a newer schema always, and an older one unless migrating it."""
    needed = len(MIGRATIONS)
    if version > needed:
        raise StoreError(
            f"The store at {target.display!r} has schema version {version}, "
            f"newer than this destination ({needed}); upgrade it."
        )
    if version < needed and not migrating:
        raise StoreError(
            f"The PostgreSQL schema at {target.display!r} is at version {version}, "
            f"this destination needs {needed}; run `destination migrate`."
        )
