"""``destination migrate``: bring the store's schema up to date.

Several processes share a PostgreSQL store, so its schema changes only when
someone asks: with this command (a release step), or with ``serve --migrate``
or ``DESTINATION_MIGRATE=1``. Either way the migrations run under an advisory
lock, so processes that start together migrate once. An embedded SQLite store
migrates itself whenever it is opened: for one, this command opens it and
says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from urllib.parse import urlsplit

from destination.errors import EXIT_OK
from destination.log import get_logger
from destination.settings import (
    DEFAULT_DATABASE_URL,
    Settings,
    with_dry_run_database,
)
from destination.store import StoreMode, create_store
from destination.store.postgres_schema import migrate_database, parse_postgres_url

log = get_logger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "migrate", help="bring the store's schema up to date, then exit"
    )
    parser.set_defaults(handler=run_migrate)
    parser.add_argument("--database-url", help="store location (DATABASE_URL)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="the dry-run store: a SQLite store records which use it serves",
    )


def run_migrate(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("DATABASE_URL", "").strip()
    settings = with_dry_run_database(
        Settings(database_url=url or DEFAULT_DATABASE_URL, dry_run=args.dry_run)
    )
    url = settings.database_url
    if urlsplit(url).scheme in ("postgresql", "postgres"):
        before, after = asyncio.run(migrate_database(url))
        where = parse_postgres_url(url).display
        log.info("store.migrated", database_url=where, before=before, after=after)
        if before == after:
            print(f"The PostgreSQL schema at {where} is up to date (version {after}).")
        else:
            print(
                f"Migrated the PostgreSQL schema at {where} "
                f"from version {before} to {after}."
            )
        return EXIT_OK

    mode: StoreMode = "dry-run" if settings.dry_run else "live"
    asyncio.run(_open_and_close(url, mode))
    print(
        f"Opened the store at {url}: a SQLite store migrates itself on open, "
        "and this one is up to date."
    )
    return EXIT_OK


async def _open_and_close(url: str, mode: StoreMode) -> None:
    store = create_store(url, mode)
    try:
        await store.open()
    finally:
        await store.close()
