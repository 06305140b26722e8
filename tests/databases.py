"""Where tests keep their data: a SQLite file, or a schema on a PostgreSQL server.

PostgreSQL tests run when ``DESTINATION_TEST_DATABASE_URL`` names a server.
Each test gets a schema of its own, named after the test session, and the
session drops them all at its end; so sessions on one server never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from destination.store import Store, StoreMode, create_store, postgres_schema
from destination.store import sqlite as sqlite_store

DATABASE_URL_VARIABLE = "DESTINATION_TEST_DATABASE_URL"
REQUIRE_VARIABLE = "DESTINATION_REQUIRE_POSTGRES"
SKIP_REASON = f"PostgreSQL tests skipped: set {DATABASE_URL_VARIABLE}"

T = TypeVar("T")


def run_aside(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to the end on a thread of its own, outside any test loop."""

    async def main() -> T:
        return await work()

    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, main()).result(timeout=60)


def describe_postgres_tests() -> str:
    """One line for the report header: where PostgreSQL tests run, or why not."""
    url = os.environ.get(DATABASE_URL_VARIABLE, "").strip()
    if not url:
        required = os.environ.get(REQUIRE_VARIABLE) == "1"
        if required:
            return f"{SKIP_REASON}; {REQUIRE_VARIABLE}=1 makes them fail"
        return f"{SKIP_REASON} (they are deselected)"
    where = postgres_schema.parse_postgres_url(url).display
    return f"PostgreSQL tests: {where}, one schema per test, dropped at the end"


def deselect_postgres_tests(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a server, leave PostgreSQL tests out: the header says why, once."""
    if os.environ.get(DATABASE_URL_VARIABLE, "").strip():
        return
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        return  # they run, and fail on the missing server
    kept, left_out = [], []
    for item in items:
        (left_out if _needs_postgres(item) else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def _needs_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "postgres":
        return True
    return "postgres" in getattr(item, "fixturenames", ())


class PostgresSchemas:
    """Fresh schemas in the test database, all named after one test session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"destination_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._numbers = itertools.count(1)

    def fresh_url(self) -> str:
        """A URL naming a schema no one has used; opening with migrate creates it."""
        schema = f"{self.prefix}_{next(self._numbers)}"
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}schema={schema}"

    async def connect(self, url: str | None = None) -> Any:
        """A plain connection, in the schema ``url`` names, to look behind a store."""
        target = postgres_schema.parse_postgres_url(url or self.url)
        settings = {"search_path": target.schema} if target.schema else {}
        return await asyncpg.connect(target.dsn, server_settings=settings, timeout=10)

    def check(self) -> None:
        async def ping() -> None:
            connection = await self.connect()
            await connection.close()

        try:
            run_aside(ping)
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            where = postgres_schema.parse_postgres_url(self.url).display
            pytest.fail(
                f"{DATABASE_URL_VARIABLE} names {where}, which does not answer: "
                f"{error}",
                pytrace=False,
            )

    def drop_all(self) -> None:
        async def drop() -> None:
            connection = await self.connect()
            try:
                await connection.execute("SET lock_timeout = '10s'")
                names = await connection.fetch(
                    "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
                    self.prefix + "_",
                )
                for (name,) in names:
                    await connection.execute(f'DROP SCHEMA "{name}" CASCADE')
            finally:
                await connection.close()

        run_aside(drop)


@contextlib.contextmanager
def postgres_schemas() -> Iterator[PostgresSchemas]:
    """The session's schemas; a skip, or with REQUIRE set a failure, without."""
    url = os.environ.get(DATABASE_URL_VARIABLE, "").strip()
    if not url:
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{REQUIRE_VARIABLE}=1 but {SKIP_REASON}", pytrace=False)
        pytest.skip(SKIP_REASON)
    schemas = PostgresSchemas(url)
    schemas.check()
    try:
        yield schemas
    finally:
        schemas.drop_all()


class Backend:
    """One store location for one test, and a way to look behind the store."""

    name: str
    url: str
    migrations: tuple[str, ...]

    def create(self, mode: StoreMode = "live", **options: Any) -> Store:
        return create_store(self.url, mode, **options)

    async def outbox_row(self, row_id: int) -> dict[str, Any]:
        raise NotImplementedError

    async def schema_version(self) -> int:
        raise NotImplementedError

    async def set_schema_version(self, version: int) -> None:
        raise NotImplementedError

    def hold_write_lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError


class SQLiteBackend(Backend):
    name = "sqlite"
    migrations = sqlite_store.MIGRATIONS

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def _select(self, sql: str, *args: Any) -> Any:
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, args).fetchone()

    async def outbox_row(self, row_id: int) -> dict[str, Any]:
        return dict(self._select("SELECT * FROM outbox WHERE id = ?", row_id))

    async def schema_version(self) -> int:
        return int(self._select("PRAGMA user_version")[0])

    async def set_schema_version(self, version: int) -> None:
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            db.execute(f"PRAGMA user_version = {version}")

    @contextlib.asynccontextmanager
    async def hold_write_lock(self) -> AsyncIterator[None]:
        locker = sqlite3.connect(self.path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()


class PostgresBackend(Backend):
    name = "postgres"
    migrations = postgres_schema.MIGRATIONS

    def __init__(self, schemas: PostgresSchemas) -> None:
        self.schemas = schemas
        self.url = schemas.fresh_url()

    def create(self, mode: StoreMode = "live", **options: Any) -> Store:
        return create_store(self.url, mode, **{"migrate": True, **options})

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        connection = await self.schemas.connect(self.url)
        try:
            return await connection.fetchrow(sql, *args)
        finally:
            await connection.close()

    async def outbox_row(self, row_id: int) -> dict[str, Any]:
        return dict(await self.fetchrow("SELECT * FROM outbox WHERE id = $1", row_id))

    async def schema_version(self) -> int:
        row = await self.fetchrow("SELECT MAX(version) FROM schema_migrations")
        return int(row[0])

    async def set_schema_version(self, version: int) -> None:
        await self.fetchrow(
            "INSERT INTO schema_migrations (version) VALUES ($1)", version
        )

    @contextlib.asynccontextmanager
    async def hold_write_lock(self) -> AsyncIterator[None]:
        locker = await self.schemas.connect(self.url)
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
            await locker.close()
