"""``POST /webhook``: read, authenticate, parse, plan, store, answer.

The CDP gets its 200 as soon as the valid events are committed to the store,
never later: delivery happens in the background, so a slow notification API
never makes the CDP time out and redeliver.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from destination.body import BodyLimits, check_headers, parse_body, read_body
from destination.courier import format_expiration
from destination.errors import RequestError, StoreUnavailableError
from destination.idempotency import encode_json
from destination.ingest import PlannedEvent, plan_events
from destination.log import get_logger
from destination.runtime import Runtime, runtime_key
from destination.signature import authenticate
from destination.store import EventOutcome, RejectedEvent
from destination.validation import MAX_EVENT_BYTES

log = get_logger(__name__)

# After these the rest of the body is not worth reading: close the connection.
_CLOSE_AFTER = frozenset({408, 413})
# Planning is pure CPU; past this many events it leaves the event loop.
INLINE_PLAN_EVENTS = 50
STORE_RETRY_AFTER_SECONDS = 5
BACKPRESSURE_RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Summary:
    """The counts the CDP (and a person with curl) gets back."""

    counts: Counter[str]
    rejected: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        names = ("accepted", "duplicates", "conflicts", "unmapped", "ignored")
        result: dict[str, Any] = {name: self.counts[name] for name in names}
        result["expired"] = self.counts["expired"]
        result["no_recipient"] = self.counts["no_recipient"]
        result["rejected"] = self.rejected
        return result


def refusal_response(error: RequestError) -> web.Response:
    response = web.json_response(
        {"error": error.code, "message": error.reason}, status=error.status
    )
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    if error.status in _CLOSE_AFTER:
        response.force_close()
    return response


async def expect_webhook(request: web.Request) -> web.StreamResponse | None:
    """Judge the headers before ``100 Continue`` invites the body."""
    settings = request.app[runtime_key].settings
    try:
        check_headers(
            request, BodyLimits(settings.max_body_bytes, settings.read_timeout)
        )
    except RequestError as error:
        return refusal_response(error)
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="Only 'Expect: 100-continue' is known.")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


async def handle_webhook(request: web.Request) -> web.Response:
    runtime = request.app[runtime_key]
    settings = runtime.settings
    limits = BodyLimits(settings.max_body_bytes, settings.read_timeout)

    check_headers(request, limits)
    raw = await read_body(request, limits)
    scheme = authenticate(raw, request.headers, runtime.auth)

    parsed = parse_body(raw)
    _check_event_count(len(parsed.events), settings.max_events)

    now = time.time()
    plan = await _plan(runtime, parsed.events, now)
    stored = [entry for entry in plan if entry.incoming is not None]

    if stored:
        await _check_backpressure(runtime, stored)
    outcomes = await _store(runtime, stored, _rejections(plan, parsed.events), now)
    if stored:
        runtime.note_enqueued(sum(outcome.enqueued for outcome in outcomes))
        runtime.wake_worker()

    summary = summarize(
        plan, dict(zip((e.index for e in stored), outcomes, strict=True))
    )
    _log_summary(plan, stored, outcomes, summary, scheme, parsed.shape)
    runtime.metrics.update(summary.counts, rejected=len(summary.rejected))
    if summary.rejected and len(summary.rejected) == len(plan):
        body = summary.as_json()
        body["error"] = "no_valid_events"
        body["message"] = "No event in the request is valid; see 'rejected'."
        return web.json_response(body, status=400)
    if not plan:
        raise RequestError(
            400, "The request holds no events; send at least one.", code="no_events"
        )
    return web.json_response(summary.as_json())


def _check_event_count(count: int, limit: int) -> None:
    if count > limit:
        raise RequestError(
            413,
            f"The request holds {count} events, over the limit of {limit} "
            "(DESTINATION_MAX_EVENTS); send smaller batches.",
            code="too_many_events",
        )


async def _plan(runtime: Runtime, events: list[Any], now: float) -> list[PlannedEvent]:
    """Plan small requests inline; big ones on a thread, so others get answers."""
    settings = runtime.settings
    work = functools.partial(
        plan_events,
        events,
        runtime.validator,
        runtime.mappings,
        settings.source_id,
        expire_before=runtime.expire_before(now),
    )
    return (
        work() if len(events) <= INLINE_PLAN_EVENTS else await asyncio.to_thread(work)
    )


async def _check_backpressure(runtime: Runtime, stored: list[PlannedEvent]) -> None:
    """Answer 503 while the outbox is deeper than the limit, unless nothing is new.

    A redelivery of events already handled adds no request, so it is answered
    (as duplicates) even then: a 503 would only make the CDP send it again.
    """
    depth = await runtime.outbox_depth()
    limit = runtime.settings.max_outbox
    if depth >= limit and not await _all_known(runtime, stored):
        log.warning("webhook.backpressure", outbox_depth=depth, limit=limit)
        raise RequestError(
            503,
            f"{depth} requests are waiting to be sent (DESTINATION_MAX_OUTBOX is "
            f"{limit}); retry later.",
            code="outbox_full",
            retry_after=BACKPRESSURE_RETRY_AFTER_SECONDS,
        )


async def _all_known(runtime: Runtime, stored: list[PlannedEvent]) -> bool:
    wanted = {
        (entry.incoming.message_id, send.mapping)
        for entry in stored
        if entry.incoming is not None
        for send in entry.incoming.sends
    }
    message_ids = sorted({message_id for message_id, _ in wanted})
    known = await runtime.store.existing_pairs(runtime.settings.source_id, message_ids)
    return wanted <= known


def _rejections(plan: list[PlannedEvent], events: list[Any]) -> list[RejectedEvent]:
    return [
        RejectedEvent(
            message_id=entry.message_id,
            payload=_kept_payload(entry, events[entry.index]),
            errors=json.dumps([error.as_json() for error in entry.errors]),
        )
        for entry in plan
        if entry.disposition == "rejected"
    ]


def _kept_payload(entry: PlannedEvent, event: Any) -> bytes:
    """The rejected event as kept for export: whole, unless over the event limit."""
    payload = encode_json(event)
    if len(payload) <= MAX_EVENT_BYTES:
        return payload
    # Too big to ever be valid: keeping it would let one request store megabytes.
    return encode_json(
        {"messageId": entry.message_id, "omitted": f"{len(payload)} bytes"}
    )


async def _store(
    runtime: Runtime,
    stored: list[PlannedEvent],
    rejected: list[RejectedEvent],
    now: float,
) -> list[EventOutcome]:
    settings = runtime.settings
    incoming = [entry.incoming for entry in stored if entry.incoming is not None]
    if not incoming and not rejected:
        return []
    try:
        return await runtime.store.store_events(
            settings.source_id,
            incoming,
            now,
            key_expires_at=format_expiration(now + settings.key_ttl),
            rejected=rejected,
        )
    except StoreUnavailableError as error:
        log.error("webhook.store_unavailable", error=str(error))
        if not incoming:
            return []  # Only rejections were lost: the 400 stands.
        raise RequestError(
            503,
            "The store cannot take events right now; retry later.",
            code="store_unavailable",
            retry_after=STORE_RETRY_AFTER_SECONDS,
        ) from None


def summarize(plan: list[PlannedEvent], outcomes: dict[int, EventOutcome]) -> Summary:
    counts: Counter[str] = Counter()
    rejected: list[dict[str, Any]] = []
    for entry in plan:
        if entry.disposition == "rejected":
            rejected.append(
                {
                    "index": entry.index,
                    "messageId": entry.message_id,
                    "errors": [error.as_json() for error in entry.errors],
                }
            )
        elif entry.disposition in ("unmapped", "ignored", "expired"):
            counts[entry.disposition] += 1
        else:
            outcome = outcomes[entry.index]
            counts[_PLURAL[outcome.status]] += 1
            counts["no_recipient"] += outcome.no_recipient
            counts["enqueued"] += outcome.enqueued
    return Summary(counts, rejected)


_PLURAL = {"accepted": "accepted", "duplicate": "duplicates", "conflict": "conflicts"}


def _log_summary(
    plan: list[PlannedEvent],
    stored: list[PlannedEvent],
    outcomes: list[EventOutcome],
    summary: Summary,
    scheme: str,
    shape: str,
) -> None:
    for entry, outcome in zip(stored, outcomes, strict=True):
        for conflict in outcome.conflicts:
            log.warning(
                "webhook.conflict",
                message_id=entry.message_id,
                mapping=conflict.mapping,
                stored_hash=conflict.stored_hash,
                incoming_hash=conflict.incoming_hash,
            )
    for rejected in summary.rejected:
        log.info(
            "webhook.event_rejected",
            index=rejected["index"],
            message_id=rejected["messageId"],
            paths=[error["path"] for error in rejected["errors"]],
        )
    log.info(
        "webhook.completed",
        auth=scheme,
        shape=shape,
        events=len(plan),
        rejected=len(summary.rejected),
        **dict(summary.counts),
    )
