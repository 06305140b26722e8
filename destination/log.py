"""Structured logging: configured once, JSON lines unless a person is watching.

Event names are short, dotted and stable (``webhook.completed``,
``delivery.retry_scheduled``); data goes in keys. Secrets and raw event
payloads are never logged: ids, counts, hashes and statuses are.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


def configure_logging(
    *, stream: TextIO | None = None, json: bool | None = None, level: int = logging.INFO
) -> None:
    """Send structlog output to ``stream``; JSON lines unless it is a terminal.

    Without a stream, output goes to whatever ``sys.stderr`` is when a line is
    written, so a replaced or closed stream is never written to later.
    """
    if json is None:
        json = not (sys.stderr if stream is None else stream).isatty()
    target: Any = _CurrentStandardError() if stream is None else stream
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(target),
        cache_logger_on_first_use=False,
    )
    # aiohttp reports malformed requests through the standard library, with
    # tracebacks that quote the raw request (headers with tokens, bodies):
    # keep only what went wrong, as one of our lines.
    server = logging.getLogger("aiohttp.server")
    server.handlers[:] = [_ProtocolErrors()]
    server.propagate = False


class _ProtocolErrors(logging.Handler):
    """Turns aiohttp's error records into ``http.protocol_error`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        get_logger("aiohttp.server").warning(
            "http.protocol_error",
            error=None if error is None else type(error).__name__,
            status=getattr(error, "code", None),
        )


class _CurrentStandardError:
    """A file-like object that writes to the current ``sys.stderr``."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def get_logger(name: str) -> Any:
    """A lazy logger tagged with the module that logs.

    Modules call this at import time, before ``configure_logging`` runs, so
    the logger must resolve the configuration when it logs, not now: binding
    here would freeze structlog's defaults (console output on stdout).
    """
    return structlog.get_logger(module=name)
