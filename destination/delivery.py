"""The delivery worker: claims due outbox rows, sends them, records outcomes.

Each row is sent with its stored key and stored bytes on every attempt.
Outcomes are written only while the worker still holds the row's lease, so a
worker that stalled past its lease cannot overwrite what another one did.
A send cut short by a crash keeps its lease until it expires; the row is then
claimed again and re-sent under the same key, which the API deduplicates.

Sending is throttled three ways: at most ``concurrency`` requests in flight,
at most ``rate`` per second (a token bucket), and not at all while the
circuit breaker is open after an unbroken run of transient failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from destination.courier import CourierClient, SendResult, create_session
from destination.errors import StoreError
from destination.log import get_logger
from destination.settings import Settings
from destination.store import AttemptOutcome, AttemptReport, OutboxItem, Store

log = get_logger(__name__)


class Sender(Protocol):
    async def send(self, item: OutboxItem) -> SendResult: ...


class DryRunSender:
    """Sends nothing: every request is recorded as ``dry_run`` in the store."""

    async def send(self, item: OutboxItem) -> SendResult:
        log.info(
            "delivery.dry_run",
            idempotency_key=item.idempotency_key,
            path=item.path,
            body_bytes=len(item.body),
        )
        return SendResult("delivered", AttemptReport(status=None))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float
    cap: float
    give_up_after: float
    repeat_limit: int = 3

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, or the server's wish, never past the cap."""
        if retry_after is not None:
            return min(retry_after, self.cap)
        ceiling = min(self.cap, self.base * 2 ** min(attempts - 1, 60))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret

    def decide(
        self, item: OutboxItem, result: SendResult, now: float
    ) -> AttemptOutcome:
        """What to record for an attempt: delivered, due again, or a dead letter."""
        report = result.report
        if result.verdict == "delivered":
            return AttemptOutcome("delivered", report)
        if result.verdict == "permanent":
            reason = f"The API refused the request with {report.status}."
            return AttemptOutcome("dead_letter", report, reason=reason)

        error_hash = _answer_hash(report)
        same = item.same_error_count + 1 if error_hash == item.last_error_hash else 1
        if result.verdict == "repeatable" and same >= self.repeat_limit:
            reason = (
                f"The API gave the same {report.status} answer {same} times for this "
                "key; Courier stores a key's first executed result and replays it, "
                "so retrying cannot help: fix the cause, then retry with --new-key."
            )
            return AttemptOutcome("dead_letter", report, reason=reason)
        if now - item.created_at >= self.give_up_after:
            reason = (
                f"Gave up after {item.attempts} attempts over {self.give_up_after:g} s."
            )
            return AttemptOutcome("dead_letter", report, reason=reason)
        delay = self.delay(item.attempts, result.retry_after)
        return AttemptOutcome(
            "retry",
            report,
            next_attempt_at=now + delay,
            error_hash=error_hash,
            same_error_count=same,
        )


def _answer_hash(report: AttemptReport) -> str:
    material = f"{report.status}\n{report.error}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


class TokenBucket:
    """At most ``rate`` acquisitions a second on average, bursts up to ``rate``."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                elapsed = now - self._updated
                self._tokens = min(self._rate, self._tokens + elapsed * self._rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)


class CircuitBreaker:
    """Opens after ``threshold`` transient failures in a row; probes after a pause."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    def allowed(self) -> int | None:
        """How many sends may start now: None for no limit, 0 or 1 when open."""
        if self._opened_at is None:
            return None
        if self._probing or time.monotonic() - self._opened_at < self._cooldown:
            return 0
        return 1

    def started_probe(self) -> None:
        if self._opened_at is not None:
            self._probing = True

    def record(self, verdict: str) -> None:
        if verdict == "transient":
            self._failures += 1
            if self._failures >= self._threshold or self._probing:
                if self._opened_at is None or self._probing:
                    log.warning("delivery.circuit_opened", failures=self._failures)
                self._opened_at = time.monotonic()
        else:
            if self._opened_at is not None:
                log.info("delivery.circuit_closed")
            self._failures = 0
            self._opened_at = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    concurrency: int
    lease_seconds: float
    poll_interval: float
    rate: float | None = None
    breaker_threshold: int = 20
    breaker_cooldown: float = 30.0


class DeliveryWorker:
    """Runs until stopped; ``wake()`` tells it new rows are due now."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        policy: RetryPolicy,
        limits: WorkerLimits,
        *,
        dry_run: bool = False,
    ) -> None:
        self._store = store
        self._sender = sender
        self._policy = policy
        self._limits = limits
        self._dry_run = dry_run
        self._bucket = None if limits.rate is None else TokenBucket(limits.rate)
        self.breaker = CircuitBreaker(limits.breaker_threshold, limits.breaker_cooldown)
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[asyncio.Task[None], OutboxItem] = {}

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        log.info("delivery.started", concurrency=self._limits.concurrency)
        while not self._stopping:
            try:
                await self._step()
            except Exception:
                # A bug here must not stop delivery for good: log it, pause, go on.
                log.exception("delivery.loop_failed")
                await asyncio.sleep(self._limits.poll_interval)

    async def _step(self) -> None:
        free = self._limits.concurrency - len(self._in_flight)
        allowed = self.breaker.allowed()
        if allowed is not None:
            free = min(free, allowed)
        claimed = await self._claim(free) if free > 0 else []
        for item in claimed:
            self.breaker.started_probe()
            task = asyncio.create_task(self._deliver(item))
            self._in_flight[task] = item
            task.add_done_callback(self._forget)
        if not claimed:
            await self._sleep()

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)

    async def _claim(self, limit: int) -> list[OutboxItem]:
        try:
            return await self._store.claim_due(
                limit, self._limits.lease_seconds, time.time()
            )
        except StoreError as error:
            log.warning("delivery.claim_failed", error=str(error))
            return []

    async def _sleep(self) -> None:
        timeout = self._limits.poll_interval
        if len(self._in_flight) >= self._limits.concurrency:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            return
        if not self.breaker.is_open:
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
            unsent = [self._in_flight[task] for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # Give the cut-short rows back now rather than when their leases
            # expire; they are sent again, under the same keys, after restart.
            with contextlib.suppress(StoreError):
                await self._store.release(unsent)
        log.info("delivery.stopped")

    async def _deliver(self, item: OutboxItem) -> None:
        if self._bucket is not None:
            await self._bucket.acquire()
        result = await self._sender.send(item)
        self.breaker.record(result.verdict)
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
        outcome = self._policy.decide(item, result, now)
        if outcome.kind == "delivered" and self._dry_run:
            outcome = AttemptOutcome("dry_run", outcome.report)
        held = await self._store.record_attempt(item, outcome, now)
        event = {
            "delivered": "delivery.succeeded",
            "dry_run": "delivery.succeeded",
            "retry": "delivery.retry_scheduled",
            "dead_letter": "delivery.dead_lettered",
        }[outcome.kind]
        fields: dict[str, object] = {
            "idempotency_key": item.idempotency_key,
            "attempts": item.attempts,
        }
        if outcome.report.status is not None:  # none in a dry run or on a timeout
            fields["status"] = outcome.report.status
        if outcome.next_attempt_at is not None:
            fields["delay"] = round(outcome.next_attempt_at - now, 3)
        if outcome.reason is not None:
            fields["reason"] = outcome.reason
        if not held:
            log.info("delivery.lease_lost", **fields)
        elif outcome.kind == "dead_letter":
            # An operator has to act on it (fix, then `dead-letters retry`).
            log.warning(event, **fields)
        else:
            log.info(event, **fields)


@contextlib.asynccontextmanager
async def run_delivery(
    settings: Settings, store: Store
) -> AsyncIterator[DeliveryWorker]:
    """Run a worker, with its one ClientSession, for as long as the block lasts."""
    session = create_session(
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.send_timeout,
        concurrency=settings.send_concurrency,
    )
    sender: Sender
    if settings.dry_run or settings.courier_auth_token is None:
        sender = DryRunSender()
    else:
        sender = CourierClient(
            session, settings.courier_base_url, settings.courier_auth_token
        )
    worker = DeliveryWorker(
        store,
        sender,
        RetryPolicy(
            settings.retry_base,
            settings.retry_cap,
            settings.give_up_after,
            settings.repeat_limit,
        ),
        WorkerLimits(
            concurrency=settings.send_concurrency,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            rate=settings.send_rate,
            breaker_threshold=settings.breaker_threshold,
            breaker_cooldown=settings.breaker_cooldown,
        ),
        dry_run=settings.dry_run,
    )
    task = asyncio.create_task(worker.run(), name="delivery-worker")
    try:
        yield worker
    finally:
        await worker.stop(settings.shutdown_timeout)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
