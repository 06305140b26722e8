"""``POST /webhook``: read, authenticate, parse, plan, store, answer.

The CDP gets its 200 as soon as the valid events are committed to the store,
never later: delivery happens in the background, so a slow notification API
never makes the CDP time out and redeliver.
"""

from __future__ import annotations

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

log = get_logger(__name__)

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


async def handle_webhook(request: web.Request) -> web.Response:
    runtime = request.app[runtime_key]
    settings = runtime.settings
    limits = BodyLimits(settings.max_body_bytes, settings.read_timeout)

    check_headers(request, limits)
    raw = await read_body(request, limits)
    scheme = authenticate(raw, request.headers, runtime.auth)
    parsed = parse_body(raw)
    now = time.time()
    plan = plan_events(
        parsed.events,
        runtime.validator,
        runtime.mappings,
        settings.source_id,
        expire_before=runtime.expire_before(now),
    )
    stored = [entry for entry in plan if entry.incoming is not None]
    if stored:
        await _check_backpressure(runtime)
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


async def _check_backpressure(runtime: Runtime) -> None:
    """Answer 503 while the outbox is deeper than the configured limit."""
    depth = await runtime.outbox_depth()
    limit = runtime.settings.max_outbox
    if depth >= limit:
        log.warning("webhook.backpressure", outbox_depth=depth, limit=limit)
        raise RequestError(
            503,
            f"{depth} requests are waiting to be sent (DESTINATION_MAX_OUTBOX is "
            f"{limit}); retry later.",
            code="outbox_full",
            retry_after=BACKPRESSURE_RETRY_AFTER_SECONDS,
        )


def _rejections(plan: list[PlannedEvent], events: list[Any]) -> list[RejectedEvent]:
    return [
        RejectedEvent(
            message_id=entry.message_id,
            payload=encode_json(events[entry.index]),
            errors=json.dumps([error.as_json() for error in entry.errors]),
        )
        for entry in plan
        if entry.disposition == "rejected"
    ]


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
