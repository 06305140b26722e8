"""The ``destination`` command: ``run(argv)`` does the work, ``main()`` exits.

Exit codes are in ``destination.errors``; errors become exit codes here only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from destination.app import create_app
from destination.check import register_check, register_preview
from destination.dead_letters import register as register_dead_letters
from destination.delivery import run_delivery
from destination.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    DestinationError,
    MappingError,
    SettingsError,
)
from destination.fake_courier import FakeCourier, create_fake_courier_app
from destination.log import configure_logging, get_logger
from destination.mapping import MappingSet, load_mappings
from destination.migrate_command import register as register_migrate
from destination.process import serve_app, wait_for_stop_signal
from destination.rejected import register as register_rejected
from destination.replay import register as register_replay
from destination.retention import purge_periodically
from destination.settings import (
    LOCAL_SECRET_FILE,
    Settings,
    apply_local_defaults,
    load_settings,
    with_dry_run_database,
)
from destination.store import StoreMode, create_store
from destination.validation import create_validator

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
# Each adds one subcommand whose ``handler(args)`` returns an exit code.
COMMANDS: tuple[Register, ...] = (
    register_check,
    register_preview,
    register_dead_letters,
    register_migrate,
    register_replay,
    register_rejected,
)

log = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="destination",
        description="Turn CDP webhook events into notifications, once each.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the webhook service and worker")
    serve.set_defaults(handler=_serve)
    serve.add_argument("--port", type=int, help="port to listen on (PORT)")
    serve.add_argument("--host", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--database-url", help="store location (DATABASE_URL)")
    serve.add_argument(
        "--mappings", type=Path, help="mapping directory (DESTINATION_MAPPINGS)"
    )
    serve.add_argument("--source-id", help="source id (DESTINATION_SOURCE_ID)")
    serve.add_argument(
        "--allow-unsigned",
        action="store_true",
        default=None,
        help="accept requests without a signature or token",
    )
    serve.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="record requests in a separate store and never send them",
    )
    serve.add_argument(
        "--capture",
        type=Path,
        metavar="DIR",
        help="archive every event as gzipped JSON lines (DESTINATION_CAPTURE_DIR)",
    )
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="only take events; leave delivery to `destination worker` processes",
    )
    serve.add_argument(
        "--migrate",
        action="store_true",
        default=None,
        help="apply PostgreSQL migrations on start (DESTINATION_MIGRATE)",
    )
    serve.add_argument(
        "--local",
        action="store_true",
        help="for a first try: bind 127.0.0.1, generate a shared secret in "
        f"{LOCAL_SECRET_FILE}, and dry-run unless COURIER_AUTH_TOKEN is set",
    )

    worker = commands.add_parser(
        "worker", help="deliver from the store, without taking events"
    )
    worker.set_defaults(handler=_worker)
    worker.add_argument("--database-url", help="store location (DATABASE_URL)")
    worker.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="use the dry-run store: mark requests dry_run, never send them",
    )
    worker.add_argument(
        "--migrate",
        action="store_true",
        default=None,
        help="apply PostgreSQL migrations on start (DESTINATION_MIGRATE)",
    )

    fake = commands.add_parser(
        "fake-courier", help="run a local stand-in for the notification API"
    )
    fake.set_defaults(handler=_fake_courier)
    fake.add_argument("--port", type=int, default=8081)
    fake.add_argument(
        "--token", help="answer 401 unless this bearer token is sent (default: any)"
    )
    # Each further command lives in its own module and registers itself here.
    for register in COMMANDS:
        register(commands)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        code: int = args.handler(args)
        return code
    except SettingsError as error:
        print(f"destination: {error}", file=sys.stderr)
        return EXIT_USAGE
    except MappingError as error:
        print(f"destination: the mappings cannot be loaded:\n{error}", file=sys.stderr)
        return EXIT_FAILURE
    except DestinationError as error:
        print(f"destination: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        "port": args.port,
        "host": args.host,
        "database_url": args.database_url,
        "mappings_dir": args.mappings,
        "source_id": args.source_id,
        "allow_unsigned": args.allow_unsigned,
        "dry_run": args.dry_run,
        "migrate": args.migrate,
        "run_worker": False if args.no_worker else None,
        "capture_dir": args.capture,
    }
    if args.local:
        local, created = apply_local_defaults(os.environ)
        overrides = {**local, **{k: v for k, v in overrides.items() if v is not None}}
        overrides.setdefault("host", "127.0.0.1")
        _announce_local_secret(created)
    settings = with_dry_run_database(load_settings(**overrides))

    validator = create_validator()
    mappings = _load_mappings(settings)
    app = create_app(
        settings,
        validator=validator,
        mappings=mappings,
        run_worker=settings.run_worker,
    )
    log.info(
        "service.starting",
        host=settings.host,
        port=settings.port,
        database_url=_redact_url(settings.database_url),
        mappings=len(mappings.mappings),
        source_id=settings.source_id,
        courier_base_url=_redact_url(settings.courier_base_url),
        dry_run=settings.dry_run,
    )
    if settings.dry_run:
        log.warning(
            "service.dry_run",
            message="Dry run: requests are recorded in the store, never sent.",
        )
    asyncio.run(
        serve_app(
            app,
            settings.host,
            settings.port,
            shutdown_timeout=settings.shutdown_timeout,
            idle_timeout=settings.read_timeout,
        )
    )
    log.info("service.stopped")
    return EXIT_OK


def _worker(args: argparse.Namespace) -> int:
    settings = with_dry_run_database(
        load_settings(
            role="worker",
            database_url=args.database_url,
            dry_run=args.dry_run,
            migrate=args.migrate,
        )
    )
    log.info(
        "worker.starting",
        database_url=_redact_url(settings.database_url),
        dry_run=settings.dry_run,
    )
    asyncio.run(run_worker_until_stopped(settings))
    return EXIT_OK


async def run_worker_until_stopped(settings: Settings) -> None:
    """Deliver and purge until SIGTERM or SIGINT, then finish sends in flight."""
    mode: StoreMode = "dry-run" if settings.dry_run else "live"
    store = create_store(
        settings.database_url,
        mode,
        busy_timeout=settings.store_busy_timeout,
        migrate=settings.migrate,
    )
    await store.open()
    try:
        purging = asyncio.create_task(purge_periodically(store, settings))
        async with run_delivery(settings, store):
            await wait_for_stop_signal()
        purging.cancel()
        await asyncio.gather(purging, return_exceptions=True)
    finally:
        await store.close()
    log.info("worker.stopped")


def _announce_local_secret(created: str | None) -> None:
    if created is not None:
        print(
            f"Generated a shared secret for local use in {LOCAL_SECRET_FILE}:\n"
            f"  {created}\nSet the same secret in your CDP's webhook settings.",
            file=sys.stderr,
        )
    elif LOCAL_SECRET_FILE.exists():
        print(f"Using the shared secret in {LOCAL_SECRET_FILE}.", file=sys.stderr)


def _load_mappings(settings: Settings) -> MappingSet:
    mappings = load_mappings(settings.mappings_dir)
    if not mappings.mappings:
        log.warning(
            "mappings.empty",
            directory=str(settings.mappings_dir),
            message="No mappings: every event will be counted unmapped or ignored.",
        )
    return mappings


def _redact_url(url: str) -> str:
    """A URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _fake_courier(args: argparse.Namespace) -> int:
    fake = FakeCourier(auth_token=args.token, echo=sys.stdout)
    print(
        f"fake courier listening on http://127.0.0.1:{args.port} "
        "(routes: /send, /profiles/{user_id})",
        flush=True,
    )
    app = create_fake_courier_app(fake)
    asyncio.run(serve_app(app, "127.0.0.1", args.port, shutdown_timeout=5.0))
    return EXIT_OK


def main() -> None:
    try:
        code = run()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`destination ... | head`): stop quietly, and
        # point stdout at devnull so the interpreter's final flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(EXIT_FAILURE)
    sys.exit(code)
