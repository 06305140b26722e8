"""A local stand-in for the Courier API, for demos and tests, on loopback only.

It models what matters for exactly-once delivery:

- a request *executed* under an ``Idempotency-Key`` is stored with its answer,
  and a later request with that key and the same body gets the stored answer
  again without executing; the same key with another body is a 409;
- faults injected before execution (an error status, a reset connection) are
  not remembered, as with the real API;
- while a request is executing, another with the same key gets
  ``409 concurrent_idempotent_requests``;
- a gate can hold every request until a test opens it, and a delay can make
  execution slower than the client's timeout;
- a "stale" fault answers normally, then closes the kept-alive connection
  behind the client's back, as a server's idle timeout does;
- a send naming one of ``failing_templates`` executes *and fails* with 500,
  and that stored 500 is replayed for its key, as Courier does.

``destination fake-courier`` runs it and prints one line per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from aiohttp import web

from destination.body import loads_strict

FaultKind = Literal["status", "reset", "delay", "stale"]


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one incoming request instead of, or before, executing it."""

    kind: FaultKind
    status: int = 503
    body: str = '{"message":"injected fault"}'
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    path: str
    idempotency_key: str | None
    authorization: str | None
    body: bytes
    outcome: str
    expiration: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class _Stored:
    body_hash: str
    status: int
    answer: str


@dataclass(slots=True)
class FakeCourier:
    """The fake's state; tests read ``received`` and ``executed``."""

    auth_token: str | None = None
    echo: TextIO | None = None
    # When set, a send naming another template is refused with 400.
    known_templates: frozenset[str] | None = None
    failing_templates: frozenset[str] = frozenset()
    faults: deque[Fault] = field(default_factory=deque)
    received: list[ReceivedRequest] = field(default_factory=list)
    executed: list[ReceivedRequest] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    _stored: dict[str, _Stored] = field(default_factory=dict)
    _executing: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[web.Response]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.gate.set()

    def hold(self) -> None:
        """Make every request wait until ``release()``."""
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def executing(self) -> int:
        """How many requests are executing right now."""
        return len(self._executing)

    def executed_keys(self) -> list[str | None]:
        return [request.idempotency_key for request in self.executed]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = request.headers.get("Idempotency-Key")
        authorization = request.headers.get("Authorization")
        if self.auth_token is not None and authorization != f"Bearer {self.auth_token}":
            return self._answer(request, body, key, 401, '{"message":"Unauthorized"}')
        await self.gate.wait()

        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "reset":
            self._record(request, body, key, "reset")
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("injected reset")
        if fault is not None and fault.kind == "status":
            return self._answer(
                request, body, key, fault.status, fault.body, fault.headers
            )
        if key is not None and key in self._executing:
            answer = '{"code":"concurrent_idempotent_requests"}'
            return self._answer(request, body, key, 409, answer)
        if fault is not None and fault.kind == "stale" and request.transport:
            asyncio.get_running_loop().call_later(0.005, request.transport.close)
        delay = fault.seconds if fault is not None and fault.kind == "delay" else 0.0
        # Like the real API, execution goes on when the client hangs up.
        execution = asyncio.create_task(self._execute_after(delay, request, body, key))
        self._tasks.add(execution)
        execution.add_done_callback(self._tasks.discard)
        return await asyncio.shield(execution)

    async def _execute_after(
        self, delay: float, request: web.Request, body: bytes, key: str | None
    ) -> web.Response:
        if key is not None:
            self._executing.add(key)
        try:
            await asyncio.sleep(delay)
            return self._execute(request, body, key)
        finally:
            self._executing.discard(key or "")

    def _execute(
        self, request: web.Request, body: bytes, key: str | None
    ) -> web.Response:
        try:
            # As strict as a real API: NaN, Infinity and duplicate keys fail.
            document = loads_strict(body.decode("utf-8"))
        except (ValueError, RecursionError):
            return self._answer(request, body, key, 400, '{"message":"Invalid JSON"}')
        template = _template_of(document)
        if self.known_templates is not None and template not in self.known_templates:
            answer = json.dumps({"message": f"Notification {template!r} not found"})
            return self._answer(request, body, key, 400, answer)
        body_hash = hashlib.sha256(body).hexdigest()
        stored = self._stored.get(key) if key is not None else None
        if stored is not None and stored.body_hash != body_hash:
            answer = '{"code":"idempotency_key_reused","message":"Different body"}'
            return self._answer(request, body, key, 409, answer)
        if stored is not None:
            return self._answer(
                request, body, key, stored.status, stored.answer, outcome="replayed"
            )

        recorded = ReceivedRequest(request.path, key, None, body, "executed")
        self.executed.append(recorded)
        status, answer = 202, json.dumps({"requestId": f"1-fake-{len(self.executed)}"})
        if template in self.failing_templates:
            status, answer = 500, '{"message":"Internal Server Error"}'
        if key is not None:
            self._stored[key] = _Stored(body_hash, status, answer)
        return self._answer(request, body, key, status, answer, outcome="executed")

    def _answer(
        self,
        request: web.Request,
        body: bytes,
        key: str | None,
        status: int,
        answer: str,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        outcome: str | None = None,
    ) -> web.Response:
        self._record(request, body, key, outcome or f"status {status}")
        return web.Response(
            text=answer,
            status=status,
            headers=dict(headers),
            content_type="application/json",
        )

    def _record(
        self, request: web.Request, body: bytes, key: str | None, outcome: str
    ) -> None:
        received = ReceivedRequest(
            request.path,
            key,
            request.headers.get("Authorization"),
            body,
            outcome,
            request.headers.get("x-idempotency-expiration"),
        )
        self.received.append(received)
        if self.echo is not None:
            print(
                f"{request.method} {request.path} Idempotency-Key: {key} -> {outcome}"
                f"\n  {body.decode('utf-8', 'replace')}",
                file=self.echo,
                flush=True,
            )


def _template_of(document: Any) -> Any:
    if not isinstance(document, dict):
        return None
    message = document.get("message")
    if isinstance(message, dict):
        return message.get("template")
    return document.get("event")


def create_fake_courier_app(fake: FakeCourier) -> web.Application:
    app = web.Application()
    app.router.add_post("/send", fake.handle)
    app.router.add_post("/profiles/{user_id}", fake.handle)
    return app
