"""``destination replay``: archived events through the path live events take.

The command reads files, directories and stdin (``replay_files``), frames them
into records (``replay_framing``), and feeds them in order (``replay_feed``) to
one of three targets:

- in-process, the default (``replay_store``): every event goes through
  ``plan_events`` and ``Store.store_events`` exactly as a webhook request does,
  and a delivery worker sends what was enqueued until the outbox is empty;
- ``--to URL`` (``replay_http``): signed batches to a running service;
- ``--dry-run`` (``replay_store``): plan and count, write nothing;
  ``--compare OLD_DIR`` (``replay_compare``) is a dry run that also plans with
  the old mappings and reports what changes.

Keys come from each event's ``messageId``, so what the store already holds
(from live traffic, an earlier replay, or a replay killed half way) is a
duplicate and is never sent again: rerunning the same command is always safe,
and is how an interrupted replay resumes. ``replay_report`` says what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from destination.errors import SettingsError
from destination.log import configure_logging, get_logger
from destination.mapping import MappingSet, load_mappings
from destination.progress import Progress
from destination.replay_compare import (
    DEFAULT_SAMPLES,
    ComparingPlanner,
    Comparison,
    load_old_mappings,
)
from destination.replay_feed import Pacer, Selection, Target, feed
from destination.replay_files import (
    ReadProgress,
    list_sources,
    read_sources,
    total_size,
)
from destination.replay_framing import Item
from destination.replay_http import open_service_target
from destination.replay_report import Mode, Report
from destination.replay_store import Planner, replay_dry, replay_in_process
from destination.settings import Settings, load_settings
from destination.validation import create_validator, parse_timestamp

log = get_logger(__name__)

PROGRESS_LOG_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """The command line, checked."""

    paths: tuple[str, ...]
    selection: Selection
    mapping_names: tuple[str, ...]
    dry_run: bool
    compare: Path | None
    samples: int
    to: str | None
    secret: str | None
    as_json: bool
    rate: float | None
    concurrency: int | None

    @property
    def mode(self) -> Mode:
        if self.to is not None:
            return "to"
        if self.compare is not None:
            return "compare"
        return "dry-run" if self.dry_run else "in-process"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``destination replay`` to the command line."""
    parser = commands.add_parser(
        "replay",
        help="replay archived events; nothing already handled is sent twice",
        description="Feed archived events (JSON lines, gzip, .json) through "
        "validation, mappings, the store and delivery, as live events go. "
        "Exit 0 when every line was used, 1 when any was not, 2 on usage errors.",
    )
    parser.set_defaults(handler=run_replay)
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a file, a directory (read recursively, in sorted order), or - for "
        "standard input",
    )
    target = parser.add_argument_group("target")
    target.add_argument(
        "--to", metavar="URL", help="POST signed batches to the service's webhook URL"
    )
    target.add_argument(
        "--secret-file",
        type=Path,
        help="shared secret to sign with for --to (DESTINATION_SHARED_SECRET)",
    )
    target.add_argument(
        "--dry-run",
        action="store_true",
        help="plan and count only: write nothing, send nothing",
    )
    target.add_argument(
        "--compare",
        type=Path,
        metavar="OLD_DIR",
        help="a dry run that also plans with the mappings in OLD_DIR and shows, "
        "per mapping, the requests that change, appear or disappear (implies "
        "--dry-run)",
    )
    target.add_argument("--database-url", help="store location (DATABASE_URL)")
    target.add_argument(
        "--mappings", type=Path, help="mapping directory (DESTINATION_MAPPINGS)"
    )
    target.add_argument("--source-id", help="source id (DESTINATION_SOURCE_ID)")
    chosen = parser.add_argument_group("filters (each may be given several times)")
    chosen.add_argument(
        "--event", action="append", default=[], metavar="NAME", help="event name"
    )
    chosen.add_argument(
        "--type", action="append", default=[], metavar="TYPE", help="event type"
    )
    chosen.add_argument(
        "--mapping",
        action="append",
        default=[],
        metavar="NAME",
        help="only this mapping's pairs (in-process and dry run)",
    )
    chosen.add_argument("--since", metavar="TIME", help="event time at or after TIME")
    chosen.add_argument("--until", metavar="TIME", help="event time before TIME")
    pace = parser.add_argument_group("pace and output")
    pace.add_argument("--rate", type=_positive(float), help="events per second")
    pace.add_argument(
        "--concurrency",
        type=_positive(int),
        help="sends (in-process) or batches (--to) in flight at once",
    )
    pace.add_argument(
        "--json", action="store_true", help="JSON lines on standard output"
    )
    pace.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help=f"--compare: diffs shown per mapping (default {DEFAULT_SAMPLES})",
    )


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(value: str) -> int | float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not 0 < number < float("inf"):
            raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
        return number

    return parse


def read_options(args: argparse.Namespace) -> ReplayOptions:
    """Check the flags that depend on each other; raise SettingsError if wrong."""
    _check_compare(args)
    if args.to is not None and args.dry_run:
        raise SettingsError("--to and --dry-run exclude each other; pick one.")
    if args.to is not None and args.mapping:
        raise SettingsError(
            "--mapping works in-process only: the service at --to maps with its "
            "own mappings; drop --mapping or replay in-process."
        )
    if args.to is not None:
        _check_url(args.to)
    since = _read_time("--since", args.since)
    until = _read_time("--until", args.until)
    if since is not None and until is not None and since >= until:
        raise SettingsError(
            f"--since ({args.since}) must be before --until ({args.until})."
        )
    return ReplayOptions(
        paths=tuple(args.paths),
        selection=Selection(
            events=frozenset(args.event),
            types=frozenset(args.type),
            since=since,
            until=until,
        ),
        mapping_names=tuple(args.mapping),
        # A comparison is a dry run: it never writes or sends.
        dry_run=args.dry_run or args.compare is not None,
        compare=args.compare,
        samples=DEFAULT_SAMPLES if args.samples is None else args.samples,
        to=args.to,
        secret=None,
        as_json=args.json,
        rate=args.rate,
        concurrency=args.concurrency,
    )


def _check_compare(args: argparse.Namespace) -> None:
    if args.compare is not None and args.to is not None:
        raise SettingsError(
            "--compare and --to exclude each other: a comparison plans here and "
            "sends nothing; drop --to."
        )
    if args.samples is not None and args.compare is None:
        raise SettingsError("--samples works with --compare only; add --compare.")
    if args.samples is not None and args.samples < 0:
        raise SettingsError(f"--samples must be 0 or more, not {args.samples}.")


def _read_time(flag: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        raise SettingsError(
            f"{flag} must be an RFC 3339 date-time with an offset, such as "
            f"2024-05-01T00:00:00Z, not {value!r}."
        )
    return parsed


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            "--to must be the service's webhook URL, such as "
            f"http://127.0.0.1:8080/webhook, not {url!r}."
        )


def read_secret(path: Path | None, settings: Settings) -> str:
    """The secret ``--to`` signs with: ``--secret-file``, else the first configured."""
    if path is not None:
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise SettingsError(
                f"--secret-file {str(path)!r} cannot be read: {error.strerror}."
            ) from None
        if not secret:
            raise SettingsError(f"--secret-file {str(path)!r} is empty.")
        return secret
    if settings.shared_secrets:
        # During a rotation the first secret signs; the service accepts any.
        return settings.shared_secrets[0]
    raise SettingsError(
        "--to needs the service's shared secret to sign with: set "
        "DESTINATION_SHARED_SECRET or pass --secret-file."
    )


def load_replay_settings(args: argparse.Namespace, mode: Mode) -> Settings:
    """Settings from the environment and flags, read as serve reads them.

    In-process replay sends, as a worker does, so it needs COURIER_AUTH_TOKEN;
    a dry run and ``--to`` send nothing themselves.
    """
    return load_settings(
        role="worker" if mode == "in-process" else "tool",
        database_url=args.database_url,
        mappings_dir=args.mappings,
        source_id=args.source_id,
    )


def run_replay(args: argparse.Namespace) -> int:
    """The ``replay`` handler: returns EXIT_OK only when every line was used."""
    options = read_options(args)
    settings = load_replay_settings(args, options.mode)
    if options.to is not None:
        options = dataclasses.replace(
            options, secret=read_secret(args.secret_file, settings)
        )
    sources = list_sources(options.paths)
    planner = None if options.to else _create_planner(options, settings)

    interactive = sys.stderr.isatty()
    if interactive:
        # The bar shows progress; per-send log lines would only break it.
        configure_logging(level=logging.WARNING)
    progress = Progress(
        sys.stderr,
        total_bytes=total_size(sources),
        interactive=interactive,
        log_event="replay.progress",
        interval=PROGRESS_LOG_SECONDS,
    )
    report = Report(options.mode, sys.stdout, progress, as_json=options.as_json)
    read = ReadProgress()
    job = _Job(read_sources(sources, read), read, options, settings, report)
    log.info("replay.started", mode=options.mode, files=len(sources))

    try:
        asyncio.run(_replay(job, planner))
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        progress.close()
    if isinstance(planner, ComparingPlanner):
        planner.comparison.write(report.out, as_json=options.as_json)
    report.write_summary()
    summary = report.summary()
    log.info("replay.completed", **{k: v for k, v in summary.items() if k != "kind"})
    return report.exit_code()


def _create_planner(options: ReplayOptions, settings: Settings) -> Planner:
    mappings = load_mappings(settings.mappings_dir)
    old = None if options.compare is None else load_old_mappings(options.compare)
    if options.mapping_names:
        _check_mapping_names(options, settings, [mappings, old])
        mappings = _choose(mappings, options.mapping_names)
        old = None if old is None else _choose(old, options.mapping_names)
    elif not mappings.mappings:
        log.warning(
            "mappings.empty",
            directory=str(settings.mappings_dir),
            message="No mappings: every event will be counted unmapped or ignored.",
        )
    validator = create_validator()
    mapping_filter = bool(options.mapping_names)
    if old is None:
        return Planner(validator, mappings, settings, mapping_filter=mapping_filter)
    comparison = Comparison(
        mappings,
        old,
        current_label=str(settings.mappings_dir),
        old_label=str(options.compare),
        samples=options.samples,
    )
    return ComparingPlanner(
        validator,
        mappings,
        settings,
        mapping_filter,
        old_mappings=old,
        comparison=comparison,
    )


def _check_mapping_names(
    options: ReplayOptions, settings: Settings, sets: list[MappingSet | None]
) -> None:
    """Each ``--mapping`` names a loaded mapping (with --compare, old or current)."""
    loaded = [mappings for mappings in sets if mappings is not None]
    missing = [
        name
        for name in options.mapping_names
        if all(mappings.get(name) is None for mappings in loaded)
    ]
    if not missing:
        return
    names = dict.fromkeys(m.name for mappings in loaded for m in mappings.mappings)
    known = ", ".join(map(repr, names)) or "none"
    directories = [settings.mappings_dir, options.compare]
    where = " or ".join(repr(str(path)) for path in directories if path is not None)
    raise SettingsError(
        f"--mapping {missing[0]!r} is not among the mappings in {where} "
        f"(loaded: {known})."
    )


def _choose(mappings: MappingSet, names: tuple[str, ...]) -> MappingSet:
    # dict.fromkeys: a name given twice must not plan its pairs twice.
    chosen = (mappings.get(name) for name in dict.fromkeys(names))
    return MappingSet(tuple(m for m in chosen if m is not None))


@dataclass(frozen=True, slots=True)
class _Job:
    """One replay's input, choices and report, whichever target runs it."""

    items: Iterable[Item]
    read: ReadProgress
    options: ReplayOptions
    settings: Settings
    report: Report

    async def feed_into(self, target: Target) -> None:
        await feed(
            self.items,
            target,
            self.report,
            selection=self.options.selection,
            pacer=Pacer(self.options.rate),
            read=self.read,
        )


async def _replay(job: _Job, planner: Planner | None) -> None:
    options, report = job.options, job.report
    if planner is None:
        assert options.to is not None and options.secret is not None
        async with open_service_target(
            options.to,
            options.secret,
            report,
            job.settings,
            concurrency=options.concurrency,
        ) as target:
            await job.feed_into(target)
    elif options.dry_run:
        await replay_dry(job.feed_into, planner, report)
    else:
        await replay_in_process(
            job.feed_into, planner, report, concurrency=options.concurrency
        )
