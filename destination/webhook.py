"""``POST /webhook``: read, authenticate, parse, plan, store, answer.

The CDP gets its 200 as soon as the valid events are committed to the store,
never later: delivery happens in the background, so a slow notification API
never makes the CDP time out and redeliver.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from destination.body import BodyLimits, check_headers, parse_body, read_body
from destination.errors import RequestError, StoreUnavailableError
from destination.ingest import PlannedEvent, plan_events
from destination.log import get_logger
from destination.runtime import runtime_key
from destination.signature import authenticate
from destination.store import EventOutcome

log = get_logger(__name__)

STORE_RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Summary:
    """The counts the CDP (and a person with curl) gets back."""

    counts: Counter[str]
    rejected: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        names = ("accepted", "duplicates", "conflicts", "unmapped", "ignored")
        result: dict[str, Any] = {name: self.counts[name] for name in names}
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
    plan = plan_events(
        parsed.events, runtime.validator, runtime.mappings, settings.source_id
    )
    stored = [entry for entry in plan if entry.incoming is not None]
    outcomes = await _store(request, stored)
    if stored:
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


async def _store(
    request: web.Request, stored: list[PlannedEvent]
) -> list[EventOutcome]:
    if not stored:
        return []
    runtime = request.app[runtime_key]
    incoming = [entry.incoming for entry in stored if entry.incoming is not None]
    try:
        return await runtime.store.store_events(
            runtime.settings.source_id, incoming, time.time()
        )
    except StoreUnavailableError as error:
        log.error("webhook.store_unavailable", error=str(error))
        raise web.HTTPServiceUnavailable(
            headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
            text='{"error":"store_unavailable","message":"The store cannot take '
            'events right now; retry later."}',
            content_type="application/json",
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
        elif entry.disposition in ("unmapped", "ignored"):
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
