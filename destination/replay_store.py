"""Replay into the store: plan each batch, store it, and let a worker send it.

``StoreTarget`` stores each batch in one transaction, exactly as a webhook
request is stored, and wakes a delivery worker set up as ``destination worker``
sets up its own; the run ends when the outbox is empty. ``PlanTarget`` is the
dry run: the same plan, and a read-only look at which pairs the store holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from destination.courier import format_expiration
from destination.dead_letters import retry_dead_letters
from destination.delivery import DeliveryWorker, run_delivery
from destination.errors import StoreError, StoreUnavailableError
from destination.ingest import PlannedEvent, plan_events
from destination.log import get_logger
from destination.mapping import MappingSet
from destination.replay_feed import Target
from destination.replay_framing import Record
from destination.replay_report import Report
from destination.retention import expire_before
from destination.settings import Settings
from destination.store import EventOutcome, IncomingEvent, Store, create_store
from destination.store.sqlite import sqlite_path
from destination.validation import EventValidator

log = get_logger(__name__)

STORE_BATCH = 500
STORE_ATTEMPTS = 4
_STATUS_COUNT = {
    "accepted": "accepted",
    "duplicate": "duplicates",
    "conflict": "conflicts",
}

FeedInto = Callable[[Target], Awaitable[None]]
# Dead letters are few; past this many, replay leaves the rest to the command.
DEAD_LETTER_LOOKUP = 100_000


@dataclass(frozen=True, slots=True)
class Planner:
    """What ``plan_events`` needs, and how to count what it decides."""

    validator: EventValidator
    mappings: MappingSet
    settings: Settings
    mapping_filter: bool
    store_created_at: float | None = None

    def expire_before(self, now: float) -> float | None:
        """The webhook's rule (``retention.expire_before``) for this store."""
        return expire_before(self.settings, self.store_created_at, now)

    def plan(
        self, records: Sequence[Record], report: Report, now: float
    ) -> list[tuple[PlannedEvent, Record]]:
        """Report rejected and expired events, count the rest; return what to store."""
        plan = plan_events(
            [record.event for record in records],
            self.validator,
            self.mappings,
            self.settings.source_id,
            expire_before=self.expire_before(now),
        )
        stored = []
        for entry in plan:
            record = records[entry.index]
            if entry.disposition == "store":
                stored.append((entry, record))
            elif entry.disposition == "rejected":
                errors = [error.as_json() for error in entry.errors]
                report.rejected(record.location, entry.message_id, errors)
            elif entry.disposition == "expired":
                report.expired(record.location, entry.message_id)
            elif self.mapping_filter:
                # Under --mapping, an event that mapping does not take is out of scope.
                report.counts["filtered"] += 1
            else:
                report.counts[entry.disposition] += 1
        return stored


class PlanTarget:
    """``--dry-run``: plan, look up which pairs exist, count; never write."""

    batch_size = STORE_BATCH

    def __init__(self, planner: Planner, report: Report, store: Store | None) -> None:
        self._planner = planner
        self._report = report
        self._store = store

    async def take(self, records: list[Record]) -> None:
        stored = self._planner.plan(records, self._report, time.time())
        existing: set[tuple[str, str]] = set()
        if self._store is not None and stored:
            ids = [entry.message_id for entry, _ in stored if entry.message_id]
            source_id = self._planner.settings.source_id
            existing = await self._store.existing_pairs(source_id, ids)
        counts = self._report.counts
        for entry, record in stored:
            assert entry.incoming is not None and entry.message_id is not None
            new = [
                send
                for send in entry.incoming.sends
                if (entry.message_id, send.mapping) not in existing
            ]
            counts["accepted" if new else "duplicates"] += 1
            for send in new:
                counts["requests" if send.body is not None else "no_recipient"] += 1
                self._report.request(record.location, entry.message_id, send)
        # Without a store nothing here awaits; let Ctrl-C in between batches.
        await asyncio.sleep(0)

    async def settle(self) -> None:
        return None


class StoreTarget:
    """The default: store each batch in one transaction, then wake the worker.

    It waits while the outbox holds half of ``DESTINATION_MAX_OUTBOX``, so a
    large replay never makes a service sharing the store refuse live events.
    """

    batch_size = STORE_BATCH

    def __init__(
        self,
        planner: Planner,
        report: Report,
        store: Store,
        worker: DeliveryWorker,
    ) -> None:
        self._planner = planner
        self._report = report
        self._store = store
        self._worker = worker
        self._settings = planner.settings
        self._dead: dict[tuple[str, str], int] | None = None

    async def take(self, records: list[Record]) -> None:
        stored = self._planner.plan(records, self._report, time.time())
        if not stored:
            return
        await self._wait_for_room()
        incoming = [entry.incoming for entry, _ in stored if entry.incoming]
        outcomes = await self._store_events(incoming)
        self._worker.wake()

        counts = self._report.counts
        for (entry, record), outcome in zip(stored, outcomes, strict=True):
            counts[_STATUS_COUNT[outcome.status]] += 1
            counts["enqueued"] += outcome.enqueued
            counts["no_recipient"] += outcome.no_recipient
            for conflict in outcome.conflicts:
                assert entry.message_id is not None
                self._report.conflict(record.location, entry.message_id, conflict)
        await self._retry_dead_letters([entry for entry, _ in stored])

    async def _retry_dead_letters(self, entries: list[PlannedEvent]) -> None:
        """Replaying a dead letter's event sends it again, as `dead-letters retry`."""
        if self._dead is None:
            letters = await self._store.list_dead_letters(DEAD_LETTER_LOOKUP)
            source = self._settings.source_id
            self._dead = {
                (letter.message_id, letter.mapping): letter.pair_id
                for letter in letters
                if letter.source_id == source
            }
        if not self._dead:
            return
        pair_ids = [
            pair_id
            for entry in entries
            if entry.incoming is not None
            for send in entry.incoming.sends
            if (pair_id := self._dead.pop((entry.incoming.message_id, send.mapping), 0))
        ]
        if not pair_ids:
            return
        results = await retry_dead_letters(
            self._store, self._planner.mappings, self._settings, pair_ids, new_key=False
        )
        for result in results:
            name = "retried" if result.outcome != "skipped" else "dead_letters_kept"
            self._report.counts[name] += 1
        self._worker.wake()

    async def _wait_for_room(self) -> None:
        limit = max(1, self._settings.max_outbox // 2)
        while (depth := await self._store.outbox_depth()) >= limit:
            self._report.progress.waiting(depth)
            await asyncio.sleep(self._settings.poll_interval)
        self._report.progress.waiting(None)

    async def _store_events(self, incoming: list[IncomingEvent]) -> list[EventOutcome]:
        settings = self._settings
        for attempt in range(1, STORE_ATTEMPTS + 1):
            now = time.time()
            try:
                return await self._store.store_events(
                    settings.source_id,
                    incoming,
                    now,
                    key_expires_at=format_expiration(now + settings.key_ttl),
                )
            except StoreUnavailableError as error:
                # A service may hold the write lock; the transaction rolled
                # back, so trying again cannot store anything twice.
                if attempt == STORE_ATTEMPTS:
                    raise
                delay = settings.retry_base * 2**attempt
                log.warning("replay.store_busy", error=str(error), retry_in=delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def settle(self) -> None:
        return None


async def replay_dry(feed_into: FeedInto, planner: Planner, report: Report) -> None:
    """Plan against the store when it exists; a store not made yet holds nothing."""
    settings = planner.settings
    if not _store_exists(settings.database_url):
        await feed_into(PlanTarget(planner, report, None))
        return
    store = _create_store(settings)
    await store.open()
    try:
        planner = await _with_store_age(planner, store)
        await feed_into(PlanTarget(planner, report, store))
    finally:
        await store.close()


def _store_exists(database_url: str) -> bool:
    # Opening a SQLite store creates its file; a dry run must not. Other
    # backends are servers whose schema exists before anything runs.
    if urlsplit(database_url).scheme == "sqlite":
        return sqlite_path(database_url).exists()
    return True


async def replay_in_process(
    feed_into: FeedInto, planner: Planner, report: Report, *, concurrency: int | None
) -> None:
    """Store every batch, then send until the outbox is empty."""
    settings = planner.settings
    store = _create_store(settings)
    await store.open()
    try:
        planner = await _with_store_age(planner, store)
        before = await store.counts()
        sending = settings.send_concurrency if concurrency is None else concurrency
        delivery = dataclasses.replace(settings, send_concurrency=sending)
        try:
            async with run_delivery(delivery, store) as worker:
                await feed_into(StoreTarget(planner, report, store, worker))
                await _drain(store, report, settings.poll_interval)
        except StoreError as error:
            report.stopped = str(error)
        finally:
            with contextlib.suppress(StoreError):
                _count_deliveries(report, before, await store.counts())
    finally:
        await store.close()


def _create_store(settings: Settings) -> Store:
    return create_store(
        settings.database_url,
        "live",
        busy_timeout=settings.store_busy_timeout,
        migrate=settings.migrate,
    )


async def _with_store_age(planner: Planner, store: Store) -> Planner:
    created_at = await store.get_meta("created_at")
    when = float(created_at) if created_at else time.time()
    return dataclasses.replace(planner, store_created_at=when)


async def _drain(store: Store, report: Report, poll_interval: float) -> None:
    """Wait until no send is pending in the store.

    The store cannot tell this run's sends from others', so this waits for the
    whole outbox, including rows of a service sharing the store.
    """
    while pending := await store.outbox_depth():
        report.progress.waiting(pending)
        await asyncio.sleep(poll_interval)


def _count_deliveries(
    report: Report, before: dict[str, int], after: dict[str, int]
) -> None:
    for name, key in (("sent", "pairs_delivered"), ("failed", "pairs_dead_letter")):
        report.counts[name] += max(0, after.get(key, 0) - before.get(key, 0))
    report.counts["pending"] = after.get("outbox_pending", 0)
