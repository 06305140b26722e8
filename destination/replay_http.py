"""``destination replay --to URL``: signed batches to a running service.

Batches go out as Segment sends them: a compact JSON array with
``X-Signature``, the HMAC-SHA1 of the raw bytes of its first element, and
``X-Segment-Signature``, that of the whole body. The service then validates,
maps, stores and delivers as it does for its CDP, and its answer counts each
event and lists the rejected ones by index.

| the service answers                     | replay                                 |
|-----------------------------------------|----------------------------------------|
| 200, or 400 ``no_valid_events``         | counts it, reports rejected events     |
| 413                                     | halves the batch; one event alone fails|
| 408, 429, 5xx, a timeout, no connection | retries with backoff, then stops       |
| anything else (401, 415, ...)           | stops: the URL, secret or service is wrong |

A stopped run is resumed by running the same command again: whatever the
service already stored is a duplicate there.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from destination.courier import create_session, parse_retry_after
from destination.delivery import RetryPolicy
from destination.idempotency import encode_json
from destination.log import get_logger
from destination.replay_framing import Record
from destination.replay_report import Report
from destination.settings import Settings
from destination.signature import sign

log = get_logger(__name__)

BATCH_EVENTS = 100
# aiohttp warns about larger bodies, and a service's limit is 8 MiB by default.
BATCH_BYTES = 1024 * 1024
POST_ATTEMPTS = 8
POST_TIMEOUT = 60.0
DEFAULT_CONCURRENCY = 4
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
ANSWER_COUNTS = (
    "accepted",
    "duplicates",
    "conflicts",
    "unmapped",
    "ignored",
    "expired",
    "no_recipient",
)


@dataclass(frozen=True, slots=True)
class Batch:
    """Records and their compact JSON, signed and sent together."""

    records: tuple[Record, ...]
    encoded: tuple[bytes, ...]

    @property
    def body(self) -> bytes:
        return b"[" + b",".join(self.encoded) + b"]"

    def signed_headers(self, secret: str) -> dict[str, str]:
        body = self.body
        return {
            "Content-Type": "application/json",
            "X-Signature": sign(secret, self.encoded[0]),
            "X-Segment-Signature": sign(secret, body),
        }

    def halves(self) -> tuple[Batch, Batch]:
        middle = len(self.records) // 2
        return (
            Batch(self.records[:middle], self.encoded[:middle]),
            Batch(self.records[middle:], self.encoded[middle:]),
        )


def make_batches(records: Sequence[Record]) -> list[Batch]:
    """Split ``records`` into batches of at most ``BATCH_BYTES`` of body."""
    batches: list[Batch] = []
    taken: list[Record] = []
    encoded: list[bytes] = []
    size = 2
    for record in records:
        data = encode_json(record.event)
        if taken and size + len(data) + 1 > BATCH_BYTES:
            batches.append(Batch(tuple(taken), tuple(encoded)))
            taken, encoded, size = [], [], 2
        taken.append(record)
        encoded.append(data)
        size += len(data) + 1
    if taken:
        batches.append(Batch(tuple(taken), tuple(encoded)))
    return batches


class ServiceTarget:
    """Posts batches, ``concurrency`` at a time, and counts the answers."""

    batch_size = BATCH_EVENTS

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        secret: str,
        report: Report,
        policy: RetryPolicy,
        *,
        concurrency: int,
    ) -> None:
        self._session = session
        self._url = url
        self._secret = secret
        self._report = report
        self._policy = policy
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def take(self, records: list[Record]) -> None:
        for batch in make_batches(records):
            await self._slots.acquire()
            if self._report.stopped is not None:
                self._slots.release()
                return
            task = asyncio.create_task(self._post_in_slot(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _post_in_slot(self, batch: Batch) -> None:
        try:
            await self._post(batch)
        finally:
            self._slots.release()

    async def _post(self, batch: Batch) -> None:
        answer = await self._send(batch)
        if answer is None:
            return
        status, text = answer
        document = _parse(text)

        if status == 200 or (status == 400 and _error(document) == "no_valid_events"):
            self._count(batch, document)
        elif status == 413 and len(batch.records) > 1:
            for half in batch.halves():
                await self._post(half)
        elif status == 413:
            self._fail(batch, "the service refused it as too large (413)")
        else:
            reason = f"the service answered {status}: {_message(document, text)}"
            self._stop(reason)
            self._fail(batch, f"the service answered {status}")

    async def _send(self, batch: Batch) -> tuple[int, str] | None:
        """POST until an answer that is not worth retrying; None when giving up."""
        headers = batch.signed_headers(self._secret)
        reason = ""
        for attempt in range(1, POST_ATTEMPTS + 1):
            retry_after = None
            try:
                async with self._session.post(
                    self._url, data=io.BytesIO(batch.body), headers=headers
                ) as response:
                    text = await response.text(errors="replace")
                    if response.status not in RETRYABLE_STATUSES:
                        return response.status, text
                    reason = f"the service answered {response.status}"
                    retry_after = response.headers.get("Retry-After")
            except TimeoutError:
                reason = f"the service did not answer within {POST_TIMEOUT:g} s"
            except (aiohttp.ClientError, OSError) as error:
                reason = f"the connection failed ({type(error).__name__})"
            if attempt == POST_ATTEMPTS or self._report.stopped is not None:
                break
            delay = self._policy.delay(attempt, parse_retry_after(retry_after))
            log.warning(
                "replay.post_retry", reason=reason, attempt=attempt, delay=delay
            )
            await asyncio.sleep(delay)
        self._stop(f"{reason} ({attempt} attempts); rerun the same command later")
        self._fail(batch, reason)
        return None

    def _count(self, batch: Batch, document: Any) -> None:
        if not _is_summary(document, len(batch.records)):
            self._stop("the service's answer is not a webhook summary; check --to")
            self._fail(batch, "the answer was not understood")
            return
        for name in ANSWER_COUNTS:
            self._report.counts[name] += document[name]
        for rejected in document["rejected"]:
            record = batch.records[rejected["index"]]
            errors = rejected.get("errors") or []
            self._report.rejected(record.location, _message_id(record), errors)

    def _fail(self, batch: Batch, reason: str) -> None:
        for record in batch.records:
            self._report.failed(record.location, _message_id(record), reason)

    def _stop(self, reason: str) -> None:
        if self._report.stopped is None:
            self._report.stopped = reason


@contextlib.asynccontextmanager
async def open_service_target(
    url: str,
    secret: str,
    report: Report,
    settings: Settings,
    *,
    concurrency: int | None,
) -> AsyncIterator[ServiceTarget]:
    """A target on one session, closed with every post still in flight."""
    concurrency = concurrency or DEFAULT_CONCURRENCY
    session = create_session(
        connect_timeout=settings.connect_timeout,
        total_timeout=POST_TIMEOUT,
        concurrency=concurrency,
    )
    policy = RetryPolicy(settings.retry_base, settings.retry_cap, float("inf"))
    target = ServiceTarget(
        session, url, secret, report, policy, concurrency=concurrency
    )
    try:
        yield target
    finally:
        await target.close()
        await session.close()


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error(document: Any) -> Any:
    return document.get("error") if isinstance(document, dict) else None


def _message(document: Any, text: str) -> str:
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return str(document["message"])
    return text[:200] or "(no body)"


def _is_summary(document: Any, size: int) -> bool:
    if not isinstance(document, dict):
        return False
    if not all(type(document.get(name)) is int for name in ANSWER_COUNTS):
        return False
    rejected = document.get("rejected")
    return isinstance(rejected, list) and all(
        isinstance(entry, dict)
        and type(entry.get("index")) is int
        and 0 <= entry["index"] < size
        for entry in rejected
    )


def _message_id(record: Record) -> str | None:
    event = record.event
    if isinstance(event, dict) and isinstance(event.get("messageId"), str):
        return str(event["messageId"])
    return None
