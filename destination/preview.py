"""``destination preview``: the exact requests an event would produce, or why none.

Preview runs the service's own path: ``parse_body`` reads the file the way the
webhook reads a request body, and ``plan_events`` validates, matches, renders
and keys each event with the same validator, mappings and source id. What it
prints is what the service would store and send. Only the explanations of why
an event produces nothing are extra: they re-read the same match and render.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from destination.body import parse_body
from destination.conditions import describe_value
from destination.errors import EXIT_OK, EXIT_USAGE, RequestError
from destination.event_path import MISSING
from destination.ingest import PlannedEvent, plan_events
from destination.mapping import (
    EventRejectedError,
    MappingSet,
    load_mappings,
    render_send,
)
from destination.settings import load_settings
from destination.validation import EventValidator, create_validator


@dataclass(frozen=True, slots=True)
class PreviewRequest:
    """One (event, mapping) pair: the request it sends, or why it sends none."""

    mapping: str
    path: str
    idempotency_key: str
    body: bytes | None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "method": "POST",
            "path": self.path,
            "idempotency_key": self.idempotency_key,
            "body": None if self.body is None else json.loads(self.body),
            "body_text": None if self.body is None else self.body.decode("utf-8"),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class EventPreview:
    """What one event of the file gives: its outcome, requests and reasons."""

    index: int
    message_id: str | None
    outcome: str
    requests: tuple[PreviewRequest, ...] = ()
    reasons: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "messageId": self.message_id,
            "outcome": self.outcome,
            "requests": [request.as_json() for request in self.requests],
            "reasons": list(self.reasons),
        }


def preview_events(
    events: Sequence[Any],
    validator: EventValidator,
    mappings: MappingSet,
    source_id: str,
) -> list[EventPreview]:
    """Plan ``events`` exactly as ingest does and explain every outcome."""
    plan = plan_events(events, validator, mappings, source_id)
    return [_preview(entry, events[entry.index], mappings) for entry in plan]


def _preview(entry: PlannedEvent, event: Any, mappings: MappingSet) -> EventPreview:
    if entry.disposition == "rejected":
        reasons = tuple(f"{error.path}: {error.message}" for error in entry.errors)
        return EventPreview(entry.index, entry.message_id, "rejected", (), reasons)
    if entry.incoming is None:
        reasons = tuple(explain_no_match(event, mappings, entry.disposition))
        return EventPreview(
            entry.index, entry.message_id, entry.disposition, (), reasons
        )
    requests = []
    for send in entry.incoming.sends:
        reason = None
        if send.body is None:
            reason = explain_no_recipient(mappings, send.mapping, event)
        requests.append(
            PreviewRequest(
                send.mapping, send.path, send.idempotency_key, send.body, reason
            )
        )
    return EventPreview(entry.index, entry.message_id, "mapped", tuple(requests))


def explain_no_match(event: Any, mappings: MappingSet, disposition: str) -> list[str]:
    """Sentences saying why no mapping takes ``event``."""
    if disposition == "expired":
        return ["the event is older than the record retention; it would not be sent"]
    match = mappings.match(event)
    reasons = [
        f"mapping {declined.mapping.name!r} takes this event's type and name, but "
        f"its condition is false: {declined.reason}"
        for declined in match.declined
    ]
    reasons += [
        f"mapping {mapping.name!r} takes {spelling!r}, which differs from "
        f"{event.get('event')!r} only in case or spaces; add match: normalized to "
        "its when to take both"
        for mapping, spelling in mappings.near_misses(event)
    ]
    if reasons:
        return reasons
    kind = event.get("type")
    if kind == "track":
        return [f"no mapping takes track events named {event.get('event')!r}"]
    return [f"no mapping takes {kind} events"]


def explain_no_recipient(mappings: MappingSet, name: str, event: Any) -> str:
    """Why a rendered request has no recipient, showing what was rendered."""
    mapping = mappings.get(name)
    assert mapping is not None, "the plan only names loaded mappings"
    try:
        rendered = render_send(mapping, event)
    except EventRejectedError:  # pragma: no cover - the plan rendered it already
        return "no recipient"
    body = rendered.body
    if mapping.action == "profile":
        where, value = "the user id (profile.user_id, or userId/anonymousId)", MISSING
    elif "message" in body:
        where, value = "message.to", body["message"].get("to", MISSING)
    else:
        where, value = "recipient", body.get("recipient", MISSING)
    shown = describe_value(value) if value is MISSING else json.dumps(value)
    return (
        f"no recipient: {where} is {shown}; the pair is recorded no_recipient "
        "and never sent"
    )


def format_preview(previews: Sequence[EventPreview]) -> str:
    """The text preview prints: each event, then each request as it is sent."""
    lines = []
    for preview in previews:
        count = sum(request.body is not None for request in preview.requests)
        noun = "request" if count == 1 else "requests"
        lines.append(
            f"event {preview.index} (messageId {preview.message_id!r}): "
            f"{preview.outcome}, {count} {noun}"
        )
        lines += [f"  {reason}" for reason in preview.reasons]
        for request in preview.requests:
            lines.append(f"  mapping {request.mapping!r}:")
            if request.body is None:
                lines.append(f"    {request.reason}")
                continue
            lines += [
                f"    POST {request.path}",
                f"    Idempotency-Key: {request.idempotency_key}",
                "    Content-Type: application/json",
                "",
                f"    {request.body.decode('utf-8')}",
            ]
    return "\n".join(lines)


def register_preview(commands: Any) -> None:
    parser = commands.add_parser(
        "preview", help="print the exact requests an event would produce"
    )
    parser.set_defaults(handler=run_preview)
    parser.add_argument(
        "--event",
        type=Path,
        required=True,
        help="a JSON file: one event, an array, or {batch: [...]}",
    )
    parser.add_argument("--mapping", help="only this mapping")
    parser.add_argument(
        "--mappings", type=Path, help="mapping directory (DESTINATION_MAPPINGS)"
    )
    parser.add_argument("--source-id", help="source id (DESTINATION_SOURCE_ID)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run_preview(args: argparse.Namespace) -> int:
    settings = load_settings(
        role="tool", mappings_dir=args.mappings, source_id=args.source_id
    )
    validator = create_validator()
    if not settings.mappings_dir.exists():
        # The service starts without mappings; a preview that silently finds
        # none would only say "unmapped" and hide the real mistake.
        print(
            f"destination: warning: mapping directory "
            f"{_shown(settings.mappings_dir)!r} does not exist; pass --mappings DIR "
            "or set DESTINATION_MAPPINGS",
            file=sys.stderr,
        )
    mappings = load_mappings(settings.mappings_dir)
    if args.mapping is not None:
        chosen = mappings.get(args.mapping)
        if chosen is None:
            names = [mapping.name for mapping in mappings.mappings]
            close = difflib.get_close_matches(args.mapping, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            print(
                f"destination: no mapping is named {args.mapping!r}{hint}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        mappings = MappingSet((chosen,), source=mappings.source)
    try:
        events = parse_body(args.event.read_bytes()).events
    except OSError as error:
        print(
            f"destination: cannot read {args.event}: {error.strerror}", file=sys.stderr
        )
        return EXIT_USAGE
    except RequestError as error:
        print(f"destination: {args.event}: {error.reason}", file=sys.stderr)
        return EXIT_USAGE

    previews = preview_events(events, validator, mappings, settings.source_id)
    if args.json:
        print(json.dumps([preview.as_json() for preview in previews], indent=2))
    else:
        print(format_preview(previews))
    return EXIT_OK


def _shown(directory: Path) -> str:
    """A relative directory as ``./name``, so it reads as a path from here."""
    if directory.is_absolute() or directory.parts[:1] == ("..",):
        return str(directory)
    return f"./{directory}"
