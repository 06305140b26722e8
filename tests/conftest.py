"""Fixtures that build the real app and a fake notification API on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from destination.app import create_app
from destination.fake_courier import FakeCourier, create_fake_courier_app
from destination.log import configure_logging
from destination.mapping import MappingSet, load_mappings
from destination.runtime import runtime_key
from destination.settings import Settings
from destination.signature import sign
from destination.validation import EventValidator, create_validator
from tests.databases import (
    Backend,
    PostgresBackend,
    PostgresSchemas,
    SQLiteBackend,
    describe_postgres_tests,
    deselect_postgres_tests,
    postgres_schemas,
)
from tests.paths import REPO

SECRET = "whsec-test"
COURIER_TOKEN = "courier-test-token"
TEST_MAPPINGS = REPO / "tests" / "data" / "mappings"


def make_event(message_id: Any = "m-0001", **changes: Any) -> dict[str, Any]:
    """CASES.md's E(m): an Order Completed track event."""
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": "user-1",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"orderId": "o-1"},
    }
    event.update(changes)
    return event


def compact(value: Any) -> bytes:
    """JSON as JavaScript's JSON.stringify writes it: no spaces, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def signed_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Signature": sign(secret, body)}


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], *, within: float = 15.0
) -> None:
    """Poll until ``predicate`` holds; fail if it never does (no timing claim)."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within} s")
        await asyncio.sleep(0.02)


def pytest_report_header() -> str:
    return describe_postgres_tests()


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    deselect_postgres_tests(config, items)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresSchemas]:
    """The test PostgreSQL server, or one skip reason for every test that needs it."""
    with postgres_schemas() as schemas:
        yield schemas


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh store location on each backend: a SQLite file, a PostgreSQL schema."""
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "destination.db")
    return PostgresBackend(request.getfixturevalue("postgres"))


@pytest.fixture(scope="session", autouse=True)
def logging_to_stderr() -> None:
    """Logs as the service writes them: JSON lines on standard error."""
    configure_logging(json=True)


@pytest.fixture(scope="session")
def validator() -> EventValidator:
    return create_validator()


@pytest.fixture(scope="session")
def test_mappings() -> MappingSet:
    return load_mappings(TEST_MAPPINGS)


@pytest.fixture
def fake() -> FakeCourier:
    return FakeCourier(auth_token=COURIER_TOKEN)


@pytest.fixture
async def courier_server(fake: FakeCourier) -> Any:
    server = TestServer(create_fake_courier_app(fake), host="127.0.0.1")
    await server.start_server()
    yield server
    fake.release()
    await server.close()


@pytest.fixture
def settings(tmp_path: Path, courier_server: TestServer) -> Settings:
    """Settings with every delay scaled down so tests run in milliseconds."""
    return Settings(
        host="127.0.0.1",
        database_url=f"sqlite:///{tmp_path / 'destination.db'}",
        shared_secrets=(SECRET,),
        courier_base_url=str(courier_server.make_url("")).rstrip("/"),
        courier_auth_token=COURIER_TOKEN,
        read_timeout=2.0,
        send_timeout=1.0,
        connect_timeout=1.0,
        retry_base=0.01,
        retry_cap=0.05,
        poll_interval=0.05,
        lease_seconds=3.0,
        shutdown_timeout=2.0,
        breaker_cooldown=0.1,
    )


ServiceFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_service(
    settings: Settings, validator: EventValidator, test_mappings: MappingSet
) -> Any:
    """Start the real app over loopback HTTP; keyword arguments change settings."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(
        mappings: MappingSet | None = None, **changes: Any
    ) -> TestClient[web.Request, web.Application]:
        app = create_app(
            dataclasses.replace(settings, **changes),
            validator=validator,
            mappings=test_mappings if mappings is None else mappings,
        )
        client = TestClient(TestServer(app, host="127.0.0.1"))
        clients.append(client)
        await client.start_server()
        return client

    yield start
    for client in clients:
        await client.close()


def store_of(client: TestClient[web.Request, web.Application]) -> Any:
    return client.app[runtime_key].store
