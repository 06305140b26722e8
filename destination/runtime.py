"""What a running app holds: settings, schemas, mappings, store and worker."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from destination.delivery import DeliveryWorker
from destination.mapping import MappingSet
from destination.metrics import Metrics
from destination.settings import Settings
from destination.signature import AuthConfig
from destination.store import Store
from destination.validation import EventValidator


@dataclass(slots=True)
class Runtime:
    """Mutable on purpose: mappings are swapped whole, the worker set on start."""

    settings: Settings
    auth: AuthConfig
    validator: EventValidator
    mappings: MappingSet
    store: Store
    metrics: Metrics = field(default_factory=Metrics)
    worker: DeliveryWorker | None = None

    store_created_at: float = 0.0
    _depth: tuple[float, int] = (0.0, 0)

    def expire_before(self, now: float) -> float | None:
        """Events older than this may have lost their records: count them expired.

        Pair records are purged once older than the record window, so only an
        event from before ``now - record_retention`` can be a duplicate we no
        longer recognise, and only if the store is older than that moment:
        a younger store has purged nothing yet.
        """
        if self.settings.accept_expired:
            return None
        cutoff = now - self.settings.record_retention
        return cutoff if cutoff > self.store_created_at else None

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def outbox_depth(self) -> int:
        """The outbox depth, looked up at most once a second: ingest asks often."""
        checked_at, depth = self._depth
        now = time.monotonic()
        if now - checked_at >= DEPTH_CACHE_SECONDS:
            depth = await self.store.outbox_depth()
            self._depth = (now, depth)
        return depth

    def note_enqueued(self, count: int) -> None:
        """Count our own new rows at once, so the limit holds between lookups."""
        checked_at, depth = self._depth
        self._depth = (checked_at, depth + count)


DEPTH_CACHE_SECONDS = 1.0

runtime_key = web.AppKey("runtime_key", Runtime)
