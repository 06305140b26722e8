"""What a running app holds: settings, schemas, mappings, store and worker."""

from __future__ import annotations

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

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()


runtime_key = web.AppKey("runtime_key", Runtime)
