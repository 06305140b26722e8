"""Dead letters: pairs that failed for good, and what an operator can do about them.

``destination dead-letters list`` shows each with its last status, response
(truncated), attempts and reason. ``retry`` renders the request again from the
stored event with the *current* mappings: an identical body keeps its key, so
the API still deduplicates it; a changed body takes the next key generation,
so no key is ever sent with two different bodies. ``--new-key`` forces a new
generation even for an identical body: needed when the API stored a failure
for the key (it would replay that failure forever), at the risk of a second
notification if the first one did go out. ``purge`` gives up on old ones; their
records stay, so a replay of the same events still counts them as handled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from destination.capture import envelope
from destination.courier import format_expiration
from destination.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, OutputExistsError
from destination.idempotency import derive_idempotency_key, hash_body
from destination.ingest import render_request
from destination.mapping import EventRejectedError, MappingSet, load_mappings
from destination.settings import Settings, load_settings, with_dry_run_database
from destination.store import (
    DeadLetter,
    Resend,
    ResendSource,
    Store,
    StoreMode,
    create_store,
)

LIST_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class RetryResult:
    pair_id: int
    outcome: str  # "same_key", "new_key" or "skipped"
    detail: str


def plan_resend(
    source: ResendSource,
    mappings: MappingSet,
    settings: Settings,
    *,
    new_key: bool,
    now: float,
) -> Resend | str:
    """The new outbox row for a dead pair, or why it cannot be sent again."""
    mapping = mappings.get(source.mapping)
    if mapping is None:
        return f"mapping {source.mapping!r} no longer exists; restore it or purge"
    if source.payload is None:
        return "the event payload was purged; replay the event from an archive"
    try:
        path, body = render_request(mapping, json.loads(source.payload))
    except EventRejectedError as error:
        return f"the current mapping rejects the event: {error}"
    if body is None:
        return "the current mapping renders no recipient for this event"

    body_hash = hash_body(body)
    changed = body_hash != source.body_hash
    generation = source.generation + 1 if new_key or changed else source.generation
    expires = source.key_expires_at
    if generation != source.generation or not _still_valid(expires, settings, now):
        expires = format_expiration(now + settings.key_ttl)
    assert expires is not None
    return Resend(
        pair_id=source.pair_id,
        generation=generation,
        idempotency_key=derive_idempotency_key(
            source.source_id, source.message_id, source.mapping, generation
        ),
        key_expires_at=expires,
        path=path,
        body=body,
        body_hash=body_hash,
    )


def _still_valid(expires: str | None, settings: Settings, now: float) -> bool:
    """Whether the key outlives every retry a new attempt may make."""
    if expires is None:
        return False
    latest = format_expiration(now + settings.give_up_after)
    return expires > latest  # same ISO format, so text order is time order


async def retry_dead_letters(
    store: Store,
    mappings: MappingSet,
    settings: Settings,
    pair_ids: Sequence[int] | None,
    *,
    new_key: bool,
) -> list[RetryResult]:
    results = []
    now = time.time()
    for source in await store.resend_sources(pair_ids):
        plan = plan_resend(source, mappings, settings, new_key=new_key, now=now)
        if isinstance(plan, str):
            results.append(RetryResult(source.pair_id, "skipped", plan))
            continue
        same = plan.generation == source.generation
        if await store.resend(plan, now):
            outcome = "same_key" if same else "new_key"
            results.append(RetryResult(source.pair_id, outcome, plan.idempotency_key))
        else:
            results.append(RetryResult(source.pair_id, "skipped", "no longer dead"))
    return results


def add_store_arguments(parser: argparse.ArgumentParser, *, action: bool) -> None:
    """``--database-url`` and ``--dry-run``, for the command and each action.

    Either position works: an action's parser copies every attribute it has
    over the command's, so on actions the defaults are suppressed and only a
    flag actually given after the action is copied.
    """
    parser.add_argument(
        "--database-url",
        default=argparse.SUPPRESS if action else None,
        help="store location (DATABASE_URL)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=argparse.SUPPRESS if action else False,
        help="use the dry-run store",
    )


def make_action_parent() -> argparse.ArgumentParser:
    """A parent parser that gives an action the store arguments."""
    parent = argparse.ArgumentParser(add_help=False)
    add_store_arguments(parent, action=True)
    return parent


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dead-letters", help="list, retry or purge dead letters"
    )
    add_store_arguments(parser, action=False)
    actions = parser.add_subparsers(dest="action", required=True)
    parent = make_action_parent()

    listing = actions.add_parser("list", parents=[parent], help="show dead letters")
    listing.add_argument("--json", action="store_true", help="JSON lines output")

    retry = actions.add_parser(
        "retry", parents=[parent], help="send dead letters again"
    )
    retry.add_argument("ids", nargs="*", type=int, help="dead letter ids")
    retry.add_argument("--all", action="store_true", help="every dead letter")
    retry.add_argument("--mappings", type=Path, help="mapping directory")
    retry.add_argument(
        "--new-key",
        action="store_true",
        help="take a new key even for an identical body (may notify twice)",
    )
    retry.add_argument("--json", action="store_true")

    export = actions.add_parser(
        "export",
        parents=[parent],
        help="write the dead letters' events as JSON lines for replay",
    )
    export.add_argument(
        "--output", type=Path, help="file to write (default: standard output)"
    )

    purge = actions.add_parser(
        "purge", parents=[parent], help="give up on old dead letters"
    )
    purge.add_argument(
        "--older-than", required=True, help="age such as 30d, 12h, 90m or 3600s"
    )
    parser.set_defaults(handler=run_dead_letters)


def run_dead_letters(args: argparse.Namespace) -> int:
    settings = with_dry_run_database(
        load_settings(
            role="tool",
            database_url=args.database_url,
            dry_run=args.dry_run or None,
            mappings_dir=getattr(args, "mappings", None),
        )
    )
    if args.action == "retry" and not (args.ids or args.all):
        print("destination: name dead letter ids, or pass --all.", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "purge":
        try:
            older_than = parse_age(args.older_than)
        except ValueError as error:
            print(f"destination: --older-than {error}", file=sys.stderr)
            return EXIT_USAGE
        return asyncio.run(_purge(settings, older_than))
    if args.action == "retry":
        return asyncio.run(_retry(settings, args))
    if args.action == "export":
        return asyncio.run(_export(settings, args.output))
    return asyncio.run(_list(settings, json_output=args.json))


async def open_store(settings: Settings) -> Store:
    mode: StoreMode = "dry-run" if settings.dry_run else "live"
    store = create_store(settings.database_url, mode)
    await store.open()
    return store


async def _list(settings: Settings, *, json_output: bool) -> int:
    store = await open_store(settings)
    try:
        dead = await store.list_dead_letters(LIST_LIMIT)
    finally:
        await store.close()
    if json_output:
        for letter in dead:
            print(json.dumps(asdict(letter)))
    else:
        print_table(dead)
    return EXIT_OK


def print_table(dead: list[DeadLetter]) -> None:
    if not dead:
        print("No dead letters.")
        return
    headers = ("id", "messageId", "mapping", "attempts", "status", "reason")
    rows = [
        (
            str(letter.pair_id),
            _clip(letter.message_id, 36),
            _clip(letter.mapping, 24),
            str(letter.attempts),
            "-" if letter.last_status is None else str(letter.last_status),
            _clip(letter.reason or letter.last_error or "", 60),
        )
        for letter in dead
    ]
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(6)]
    for row in (headers, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


async def _retry(settings: Settings, args: argparse.Namespace) -> int:
    mappings = load_mappings(settings.mappings_dir)
    if args.new_key:
        print(
            "destination: warning: --new-key sends under a new key; if the API did "
            "deliver an earlier attempt, the recipient is notified twice.",
            file=sys.stderr,
        )
    store = await open_store(settings)
    try:
        ids = None if args.all else args.ids
        results = await retry_dead_letters(
            store, mappings, settings, ids, new_key=args.new_key
        )
    finally:
        await store.close()
    for result in results:
        if args.json:
            print(json.dumps(asdict(result)))
        else:
            print(f"{result.pair_id}: {result.outcome} ({result.detail})")
    missing = set(args.ids) - {result.pair_id for result in results}
    for pair_id in sorted(missing):
        print(f"{pair_id}: skipped (not a dead letter)", file=sys.stderr)
    skipped = missing or any(r.outcome == "skipped" for r in results)
    return EXIT_FAILURE if skipped else EXIT_OK


async def _export(settings: Settings, output: Path | None) -> int:
    """Capture envelopes of each dead letter's event, once per event."""
    store = await open_store(settings)
    try:
        sources = await store.resend_sources(None)
    finally:
        await store.close()
    seen: set[tuple[str, str]] = set()
    lines = []
    for source in sources:
        key = (source.source_id, source.message_id)
        if source.payload is None or key in seen:
            continue
        seen.add(key)
        lines.append(envelope(source.source_id, None, json.loads(source.payload)))
    write_lines(lines, output)
    print(f"Exported {len(lines)} events of dead letters.", file=sys.stderr)
    return EXIT_OK


def write_lines(lines: Sequence[bytes], output: Path | None) -> None:
    """JSON lines to a new 0600 file, or to standard output."""
    with open_output(output) as sink:
        sink.writelines(lines)


@contextlib.contextmanager
def open_output(output: Path | None) -> Iterator[BinaryIO]:
    """A new file readable by its owner only (it holds personal data), or stdout."""
    if output is None:
        yield sys.stdout.buffer
        sys.stdout.flush()
        return
    try:
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise OutputExistsError(
            f"{output} exists; choose a new file, the export never overwrites"
        ) from None
    with os.fdopen(descriptor, "wb") as handle:
        yield handle


async def _purge(settings: Settings, older_than: float) -> int:
    store = await open_store(settings)
    try:
        purged = await store.purge_dead_letters(time.time() - older_than)
    finally:
        await store.close()
    print(f"Purged {purged} dead letters; their records stay, so replays skip them.")
    return EXIT_OK


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s`` or plain seconds, as seconds."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:])
    number = text[:-1] if unit is not None else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not an age such as 30d, 12h or 90m") from None
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value * (unit or 1)
