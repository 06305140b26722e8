"""``destination rejected export``: invalid events, kept for a week, as JSON lines.

Each line is a capture envelope with the event as it was received and the
errors it was rejected for. After fixing the sender, the schema or a mapping,
``destination replay`` takes the file and sends what is now valid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from destination.capture import envelope
from destination.dead_letters import (
    add_store_arguments,
    make_action_parent,
    open_output,
    open_store,
)
from destination.errors import EXIT_OK
from destination.settings import Settings, load_settings, with_dry_run_database

PAGE = 1000


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("rejected", help="export rejected events")
    add_store_arguments(parser, action=False)
    actions = parser.add_subparsers(dest="action", required=True)
    export = actions.add_parser(
        "export",
        parents=[make_action_parent()],
        help="write them as JSON lines for replay",
    )
    export.add_argument(
        "--output", type=Path, help="file to write (default: standard output)"
    )
    parser.set_defaults(handler=run_rejected)


def run_rejected(args: argparse.Namespace) -> int:
    settings = with_dry_run_database(
        load_settings(
            role="tool", database_url=args.database_url, dry_run=args.dry_run or None
        )
    )
    return asyncio.run(_export(settings, args.output))


async def _export(settings: Settings, output: Path | None) -> int:
    store = await open_store(settings)
    count = after = 0
    try:
        with open_output(output) as sink:
            while page := await store.export_rejected(after, PAGE):
                for row in page:
                    event = json.loads(row.payload)
                    errors = json.loads(row.errors)
                    sink.write(envelope(row.source_id, row.received_at, event, errors))
                count += len(page)
                after = page[-1].id
    finally:
        await store.close()
    print(f"Exported {count} rejected events.", file=sys.stderr)
    return EXIT_OK
