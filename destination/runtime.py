"""What a running app holds: settings, schemas, mappings, store and worker."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from destination.delivery import DeliveryWorker
from destination.mapping import MappingSet
from destination.metrics import Metrics
from destination.retention import expire_before
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
        """See ``retention.expire_before``."""
        return expire_before(self.settings, self.store_created_at, now)

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
