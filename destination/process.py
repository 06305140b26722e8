"""Running a process until it is told to stop: the service, the worker, the fake.

SIGTERM and SIGINT ask for a graceful stop. A second signal while stopping is
only logged: operators and process managers often send two, and the stop that
is under way (requests in flight, sends in flight) must not be cut short.
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from destination.errors import SettingsError
from destination.log import get_logger

log = get_logger(__name__)


async def wait_for_stop_signal() -> None:
    """Return on the first SIGTERM or SIGINT; later ones are only logged."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(signum: signal.Signals) -> None:
        if stop.is_set():
            log.info("process.stop_in_progress", signal=signum.name)
        else:
            log.info("process.stopping", signal=signum.name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    await stop.wait()


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float,
    idle_timeout: float = 75.0,
) -> None:
    """Serve ``app`` until a stop signal, then finish requests and clean up.

    ``idle_timeout`` closes a connection that sends nothing, or its headers
    too slowly, for that long (aiohttp's keep-alive timeout).
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=idle_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=shutdown_timeout)
        try:
            await site.start()
        except OSError as error:
            raise SettingsError(
                f"Cannot listen on {host}:{port}: {error.strerror or error}; "
                "choose another port with --port or PORT."
            ) from None
        await wait_for_stop_signal()
    finally:
        # Also on a second signal: stop listening, let requests in flight
        # finish (up to shutdown_timeout), then run the app's cleanup.
        await runner.cleanup()
