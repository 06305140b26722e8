"""The delivery worker: claims due outbox rows, sends them, records outcomes.

Each row is sent with its stored key and stored bytes on every attempt.
Outcomes are written only while the worker still holds the row's lease, so a
worker that stalled past its lease cannot overwrite what another one did.
A send cut short by a crash or a shutdown keeps its lease until it expires;
the row is then claimed again and re-sent under the same key, which the
notification API deduplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Protocol

from destination.courier import SendResult
from destination.errors import StoreError
from destination.log import get_logger
from destination.store import AttemptReport, DeliveryResult, OutboxItem, Store

log = get_logger(__name__)


class Sender(Protocol):
    async def send(
        self, path: str, body: bytes, idempotency_key: str
    ) -> SendResult: ...


class DryRunSender:
    """Sends nothing: every request is recorded as ``dry_run`` in the store."""

    async def send(self, path: str, body: bytes, idempotency_key: str) -> SendResult:
        log.info(
            "delivery.dry_run",
            idempotency_key=idempotency_key,
            path=path,
            body_bytes=len(body),
        )
        return SendResult("delivered", AttemptReport(status=None))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float
    cap: float
    give_up_after: float

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, or the server's wish, never past the cap."""
        if retry_after is not None:
            return min(retry_after, self.cap)
        ceiling = min(self.cap, self.base * 2 ** min(attempts - 1, 60))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


class DeliveryWorker:
    """Runs until stopped; ``wake()`` tells it new rows are due now."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        policy: RetryPolicy,
        *,
        concurrency: int,
        lease_seconds: float,
        poll_interval: float,
        dry_run: bool = False,
    ) -> None:
        self._store = store
        self._sender = sender
        self._policy = policy
        self._concurrency = concurrency
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._dry_run = dry_run
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        log.info("delivery.started", concurrency=self._concurrency)
        while not self._stopping:
            try:
                await self._step()
            except Exception:
                # A bug here must not stop delivery for good: log it, pause, go on.
                log.exception("delivery.loop_failed")
                await asyncio.sleep(self._poll_interval)

    async def _step(self) -> None:
        free = self._concurrency - len(self._in_flight)
        claimed = await self._claim(free) if free > 0 else []
        for item in claimed:
            task = asyncio.create_task(self._deliver(item))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if not claimed:
            await self._sleep()

    async def _claim(self, limit: int) -> list[OutboxItem]:
        try:
            return await self._store.claim_due(limit, self._lease_seconds, time.time())
        except StoreError as error:
            log.warning("delivery.claim_failed", error=str(error))
            return []

    async def _sleep(self) -> None:
        timeout = self._poll_interval
        if self._in_flight and len(self._in_flight) >= self._concurrency:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            return
        with contextlib.suppress(StoreError):
            due = await self._store.next_due_at()
            if due is not None:
                timeout = min(timeout, max(0.0, due - time.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        self._wake.clear()

    async def stop(self, grace: float) -> None:
        """Stop claiming, let sends in flight finish for up to ``grace`` seconds."""
        self._stopping = True
        self._wake.set()
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("delivery.stopped")

    async def _deliver(self, item: OutboxItem) -> None:
        result = await self._sender.send(item.path, item.body, item.idempotency_key)
        try:
            await self._record(item, result)
        except StoreError as error:
            # The lease will expire and the row will be sent again under the
            # same key: safe, and better than losing the outcome silently.
            log.warning(
                "delivery.record_failed",
                idempotency_key=item.idempotency_key,
                error=str(error),
            )

    async def _record(self, item: OutboxItem, result: SendResult) -> None:
        now = time.time()
        fields = {
            "idempotency_key": item.idempotency_key,
            "attempts": item.attempts,
            "status": result.report.status,
        }
        if result.verdict == "delivered":
            outcome: DeliveryResult = "dry_run" if self._dry_run else "delivered"
            held = await self._store.record_finished(item, outcome, result.report, now)
            event = "delivery.succeeded"
        elif result.verdict == "failed":
            held = await self._store.record_finished(item, "failed", result.report, now)
            event = "delivery.failed"
        elif now - item.created_at >= self._policy.give_up_after:
            report = AttemptReport(
                status=result.report.status,
                error=f"Gave up after {item.attempts} attempts: {result.report.error}",
            )
            held = await self._store.record_finished(item, "failed", report, now)
            event = "delivery.gave_up"
        else:
            delay = self._policy.delay(item.attempts, result.retry_after)
            held = await self._store.record_retry(item, now + delay, result.report)
            event = "delivery.retry_scheduled"
            fields["delay"] = round(delay, 3)
        if not held:
            event = "delivery.lease_lost"
        log.info(event, **fields)
