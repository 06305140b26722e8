"""Retention: the service purges what it no longer needs, by itself.

Pair records (key, status, hashes: small) are kept for
``DESTINATION_RECORD_RETENTION`` (400 days) so that replaying an old archive
sends nothing twice. Event payloads, finished outbox rows and rejected events
are kept for ``DESTINATION_PAYLOAD_RETENTION`` (7 days). Payloads that a
pending request or a dead letter may still need are never purged.
"""

from __future__ import annotations

import asyncio
import time

from destination.errors import StoreError
from destination.log import get_logger
from destination.settings import Settings
from destination.store import PurgeCounts, Store

log = get_logger(__name__)


def expire_before(
    settings: Settings, store_created_at: float | None, now: float
) -> float | None:
    """Events older than this may have lost their records: count them expired.

    Pair records are purged once older than the record window, so only an
    event from before ``now - record_retention`` can be a duplicate we no
    longer recognise, and only if the store is older than that moment: a
    younger store has purged nothing yet. None: nothing is expired.
    """
    if settings.accept_expired or store_created_at is None:
        return None
    cutoff = now - settings.record_retention
    return cutoff if cutoff > store_created_at else None


async def purge_once(store: Store, settings: Settings) -> PurgeCounts:
    now = time.time()
    counts = await store.purge(
        payloads_before=now - settings.payload_retention,
        records_before=now - settings.record_retention,
    )
    log.info(
        "store.purged",
        payloads=counts.payloads,
        outbox_rows=counts.outbox_rows,
        pairs=counts.pairs,
        rejected=counts.rejected,
    )
    return counts


async def purge_periodically(store: Store, settings: Settings) -> None:
    """Purge now and then every ``purge_interval`` seconds until cancelled."""
    while True:
        try:
            await purge_once(store, settings)
        except StoreError as error:
            log.warning("store.purge_failed", error=str(error))
        await asyncio.sleep(settings.purge_interval)
