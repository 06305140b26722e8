"""From parsed events to what must be stored: validate, map, render, key.

This is the path every event takes, whether it came over HTTP or from a
replayed file. It is pure: it reads the event, the schemas and the mappings,
and returns a plan; storing the plan is the caller's one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from destination.errors import EventError
from destination.idempotency import derive_idempotency_key, encode_json, hash_payload
from destination.mapping import EventRejectedError, Mapping, MappingSet, render_send
from destination.store import IncomingEvent, PlannedSend
from destination.validation import EventValidator, event_time

SEND_PATH = "/send"

Disposition = Literal["store", "rejected", "unmapped", "ignored", "expired"]


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """What to do with the event at ``index`` of a request or file."""

    index: int
    disposition: Disposition
    message_id: str | None
    incoming: IncomingEvent | None = None
    errors: tuple[EventError, ...] = ()


def encode_body(body: Any) -> bytes:
    """The exact bytes sent for a rendered request, identical on every attempt."""
    return encode_json(body)


def plan_events(
    events: Sequence[Any],
    validator: EventValidator,
    mappings: MappingSet,
    source_id: str,
    *,
    expire_before: float | None = None,
) -> list[PlannedEvent]:
    """Decide, for each event in order, whether to store, reject or count it.

    A mapped event whose time is before ``expire_before`` is ``expired``: its
    pair records may already be purged, so sending it could send it twice.
    """
    return [
        _plan_event(index, event, validator, mappings, source_id, expire_before)
        for index, event in enumerate(events)
    ]


def _plan_event(
    index: int,
    event: Any,
    validator: EventValidator,
    mappings: MappingSet,
    source_id: str,
    expire_before: float | None,
) -> PlannedEvent:
    message_id = _message_id_of(event)
    errors = validator.validate(event)
    if errors:
        return PlannedEvent(index, "rejected", message_id, errors=tuple(errors))
    assert message_id is not None  # the schema requires a string messageId

    match = mappings.match(event)
    if match.outcome != "mapped":
        return PlannedEvent(index, match.outcome, message_id)
    when = event_time(event)
    if _is_expired(when, expire_before):
        return PlannedEvent(index, "expired", message_id)

    sends = []
    for mapping in match.mappings:
        try:
            path, body = render_request(mapping, event)
        except EventRejectedError as error:
            # Breaks the tracking plan or a render bound: a data error, so the
            # event is rejected alone and a fixed mapping can take a replay.
            return PlannedEvent(index, "rejected", message_id, errors=error.errors)
        key = derive_idempotency_key(source_id, message_id, mapping.name)
        sends.append(PlannedSend(mapping.name, key, path, body))
    incoming = IncomingEvent(
        message_id=message_id,
        payload=encode_body(event),
        payload_hash=hash_payload(event),
        event_time=None if when is None else when.timestamp(),
        sends=tuple(sends),
    )
    return PlannedEvent(index, "store", message_id, incoming=incoming)


def render_request(mapping: Mapping, event: Any) -> tuple[str, bytes | None]:
    """The path and exact body of one mapping's request; no body: no recipient.

    Raises EventRejectedError when the event breaks the mapping's tracking
    plan or a render bound (docs/mappings.md).
    """
    rendered = render_send(mapping, event)
    body = encode_body(rendered.body) if rendered.has_recipient else None
    return rendered.path, body


def _is_expired(when: datetime | None, expire_before: float | None) -> bool:
    if when is None or expire_before is None:
        return False
    return when.timestamp() < expire_before


def _message_id_of(event: Any) -> str | None:
    """The messageId as text that any store, log or response can carry."""
    if isinstance(event, dict):
        value = event.get("messageId")
        if isinstance(value, str):
            # A lone surrogate (rejected by validation) shows as its escape.
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return None
