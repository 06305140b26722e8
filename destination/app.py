"""The application factory: routes, middleware, and what starts and stops with it."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from destination.capture import Exporter
from destination.delivery import run_delivery
from destination.errors import RequestError, StoreError
from destination.log import get_logger
from destination.mapping import MappingSet
from destination.reload import reload_context
from destination.retention import purge_periodically
from destination.runtime import Runtime, runtime_key
from destination.settings import Settings
from destination.signature import AuthConfig
from destination.store import StoreMode, create_store
from destination.validation import EventValidator
from destination.webhook import expect_webhook, handle_webhook, refusal_response

log = get_logger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    settings: Settings,
    *,
    validator: EventValidator,
    mappings: MappingSet,
    run_worker: bool = True,
) -> web.Application:
    """Build the service; the store opens and the worker starts with the app."""
    mode: StoreMode = "dry-run" if settings.dry_run else "live"
    runtime = Runtime(
        settings=settings,
        auth=AuthConfig(
            secrets=settings.shared_secrets,
            token=settings.token,
            allow_unsigned=settings.allow_unsigned,
        ),
        validator=validator,
        mappings=mappings,
        store=create_store(
            settings.database_url,
            mode,
            busy_timeout=settings.store_busy_timeout,
            migrate=settings.migrate,
        ),
    )
    # Bodies are read, bounded and inflated by the webhook handler itself;
    # client_max_size is the backstop for any other route.
    app = web.Application(
        middlewares=[request_middleware],
        client_max_size=settings.max_body_bytes,
        handler_args={"auto_decompress": False},
    )
    app[runtime_key] = runtime
    app.router.add_post("/webhook", handle_webhook, expect_handler=expect_webhook)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/metrics", handle_metrics)
    app.cleanup_ctx.append(_store_context)
    app.cleanup_ctx.append(reload_context)  # SIGHUP or a file change
    if run_worker:
        app.cleanup_ctx.append(_delivery_context)
        app.cleanup_ctx.append(_retention_context)
    if settings.capture_dir is not None:
        app.cleanup_ctx.append(_capture_context)
    return app


async def _store_context(app: web.Application) -> AsyncIterator[None]:
    runtime = app[runtime_key]
    store = runtime.store
    await store.open()
    created_at = await store.get_meta("created_at")
    runtime.store_created_at = float(created_at) if created_at else time.time()
    yield
    await store.close()


async def _delivery_context(app: web.Application) -> AsyncIterator[None]:
    runtime = app[runtime_key]
    async with run_delivery(runtime.settings, runtime.store) as worker:
        runtime.worker = worker
        yield
        runtime.worker = None


async def _capture_context(app: web.Application) -> AsyncIterator[None]:
    runtime = app[runtime_key]
    settings = runtime.settings
    assert settings.capture_dir is not None
    exporter = Exporter(
        runtime.store, settings.capture_dir, max_bytes=settings.capture_max_bytes
    )
    stop = asyncio.Event()
    task = asyncio.create_task(exporter.run(settings.capture_interval, stop))
    yield
    stop.set()
    await task


async def _retention_context(app: web.Application) -> AsyncIterator[None]:
    runtime = app[runtime_key]
    task = asyncio.create_task(purge_periodically(runtime.store, runtime.settings))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@web.middleware
async def request_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Bind a request id, turn refusals into JSON, and log one line per request."""
    request_id = request.headers.get("X-Request-Id", "")
    if not _REQUEST_ID.match(request_id):
        request_id = uuid.uuid4().hex
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
        except RequestError as error:
            response = refusal_response(error)
        except web.HTTPException as error:
            response = _http_error_response(error)
        except Exception:
            # A bug, not a data error: log it with its traceback, answer JSON.
            log.exception("http.unhandled_error", path=request.path)
            response = web.json_response(
                {
                    "error": "internal_error",
                    "message": "An unexpected error; see logs.",
                },
                status=500,
            )
        response.headers["X-Request-Id"] = request_id
        _log_request(request, response.status, started)
    if request.path.startswith("/webhook"):
        request.app[runtime_key].metrics.count_response(response.status)
    return response


def _http_error_response(error: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (404, 405, 413 ...) in our JSON error shape."""
    if error.status < 400:
        raise error
    code = error.reason.lower().replace(" ", "_")
    response = web.json_response(
        {"error": code, "message": f"{error.reason}: {error.text or ''}".strip(": ")},
        status=error.status,
    )
    for name in ("Allow", "Retry-After"):
        if name in error.headers:
            response.headers[name] = error.headers[name]
    return response


def _log_request(request: web.Request, status: int, started: float) -> None:
    log.info(
        "http.request",
        method=request.method,
        path=request.path,
        status=status,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )


async def handle_health(request: web.Request) -> web.Response:
    runtime = request.app[runtime_key]
    try:
        await runtime.store.next_due_at()
    except StoreError as error:
        return web.json_response(
            {"status": "unavailable", "message": str(error)}, status=503
        )
    return web.json_response({"status": "ok", "dry_run": runtime.settings.dry_run})


async def handle_metrics(request: web.Request) -> web.Response:
    runtime = request.app[runtime_key]
    try:
        store_counts = await runtime.store.counts()
    except StoreError:
        store_counts = {}
    return web.Response(
        text=runtime.metrics.render(store_counts),
        content_type="text/plain",
        charset="utf-8",
    )
