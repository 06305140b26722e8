"""End to end on PostgreSQL: the real app, instances sharing a schema, crashes.

Runs when DESTINATION_TEST_DATABASE_URL is set; every test gets a fresh
schema. The migrate command's refusals need no server and always run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from destination.courier import CourierClient, create_session
from destination.fake_courier import FakeCourier
from destination.idempotency import derive_idempotency_key
from destination.settings import Settings
from destination.store import (
    AttemptOutcome,
    AttemptReport,
    IncomingEvent,
    OutboxItem,
    PlannedSend,
    create_store,
)
from tests.conftest import (
    COURIER_TOKEN,
    SECRET,
    TEST_MAPPINGS,
    compact,
    make_event,
    signed_headers,
    store_of,
    wait_for,
)
from tests.databases import PostgresSchemas
from tests.processes import DESTINATION, free_port, start, stop, wait_until_healthy

MAPPING = "order-confirmation"
EXPIRES = "2099-01-01T00:00:00Z"


def key_of(message_id: str) -> str:
    return derive_idempotency_key("default", message_id, MAPPING)


@pytest.fixture
def settings(settings: Settings, postgres: PostgresSchemas) -> Settings:
    """The conftest settings on a fresh PostgreSQL schema, migrated on start."""
    return dataclasses.replace(
        settings, database_url=postgres.fresh_url(), migrate=True
    )


async def post(client: Any, body: bytes) -> tuple[int, Any]:
    response = await client.post(
        "/webhook", data=io.BytesIO(body), headers=signed_headers(body)
    )
    return response.status, await response.json()


async def counts(client: Any) -> dict[str, int]:
    found: dict[str, int] = await store_of(client).counts()
    return found


async def settled(client: Any) -> bool:
    """True once no outbox row is waiting or in flight."""
    return (await counts(client))["outbox_pending"] == 0


# The app on PostgreSQL


async def test_single_event_becomes_one_send(
    make_service: Any, fake: FakeCourier
) -> None:
    """A signed event is acknowledged, then sent once with its documented key."""
    client = await make_service()

    status, summary = await post(client, compact(make_event()))
    await wait_for(lambda: len(fake.executed) == 1)
    await wait_for(lambda: settled(client))

    assert (status, summary["accepted"]) == (200, 1)
    assert fake.executed_keys() == [key_of("m-0001")]
    assert fake.executed[0].json()["message"]["data"] == {"orderId": "o-1"}
    assert (await counts(client))["pairs_delivered"] == 1


async def test_redelivery_before_and_after_restart_is_a_duplicate(
    make_service: Any, fake: FakeCourier
) -> None:
    """The same bytes twice, then again after a restart on the same schema."""
    body = compact(make_event("m-again"))
    client = await make_service()
    first = await post(client, body)
    second = await post(client, body)
    await wait_for(lambda: settled(client))
    await client.close()

    restarted = await make_service()
    third = await post(restarted, body)

    assert [first[1]["accepted"], second[1]["duplicates"]] == [1, 1]
    assert (third[0], third[1]["duplicates"]) == (200, 1)
    assert fake.executed_keys() == [key_of("m-again")]


async def test_same_message_id_new_payload_is_a_conflict(
    make_service: Any, fake: FakeCourier
) -> None:
    """First wins: the second payload is acknowledged and counted, never sent."""
    client = await make_service()
    first = make_event("m-dup-1", properties={"orderId": "A"})
    second = make_event("m-dup-1", properties={"orderId": "B"})

    await post(client, compact(first))
    status, summary = await post(client, compact(second))
    await wait_for(lambda: settled(client))

    assert (status, summary["conflicts"], summary["accepted"]) == (200, 1, 0)
    assert [sent.json()["message"]["data"] for sent in fake.executed] == [
        {"orderId": "A"}
    ]


async def test_batch_with_one_bad_event(make_service: Any, fake: FakeCourier) -> None:
    """Good events are stored and sent once; the bad one is listed; no 5xx."""
    client = await make_service()
    bad = {"event": "Order Completed", "messageId": "m-b2"}
    body = compact([make_event("m-b1"), bad, make_event("m-b3")])

    first = await post(client, body)
    again = await post(client, body)
    await wait_for(lambda: len(fake.executed) == 2)
    await wait_for(lambda: settled(client))

    assert (first[0], first[1]["accepted"]) == (200, 2)
    assert [entry["messageId"] for entry in first[1]["rejected"]] == ["m-b2"]
    assert (again[0], again[1]["duplicates"]) == (200, 2)
    assert sorted(fake.executed_keys()) == sorted(map(key_of, ["m-b1", "m-b3"]))
    assert len(await store_of(client).export_rejected(0, 10)) == 2


async def test_a_worker_that_died_mid_send_is_replaced_once(
    make_service: Any,
    fake: FakeCourier,
    courier_server: TestServer,
    settings: Settings,
) -> None:
    """A row whose worker sent it and died is re-sent after its lease, once."""
    dead = create_store(settings.database_url, "live", migrate=True)
    await dead.open()
    try:
        await dead.store_events(
            "default", [_incoming("m-orphan")], time.time(), key_expires_at=EXPIRES
        )
        [orphan] = await dead.claim_due(10, 0.5, time.time())
        await _send_once(orphan, courier_server)

        worker = await make_service()
        await wait_for(lambda: _delivered(worker, 1))
        stale = await dead.record_attempt(
            orphan, AttemptOutcome("delivered", AttemptReport(200)), time.time()
        )
    finally:
        await dead.close()

    assert stale is False
    assert fake.executed_keys() == [key_of("m-orphan")]
    assert [request.outcome for request in fake.received] == ["executed", "replayed"]


def _incoming(message_id: str) -> IncomingEvent:
    body = compact({"message": {"to": {"user_id": "u-1"}, "template": "t"}})
    send = PlannedSend(MAPPING, key_of(message_id), "/send", body)
    return IncomingEvent(message_id, b"{}", "hash-" + message_id, None, (send,))


async def _send_once(item: OutboxItem, courier_server: TestServer) -> None:
    """Send a claimed row the way the dead worker did before it died."""
    base_url = str(courier_server.make_url("")).rstrip("/")
    session = create_session(connect_timeout=1, total_timeout=2, concurrency=1)
    async with session:
        await CourierClient(session, base_url, COURIER_TOKEN).send(item)


async def _delivered(client: Any, expected: int) -> bool:
    return (await counts(client)).get("pairs_delivered") == expected


async def test_two_instances_share_one_schema(
    make_service: Any, fake: FakeCourier
) -> None:
    """Two apps on one schema: every event, even one posted to both, goes once."""
    first, second = await make_service(), await make_service()
    body = compact(make_event("m-both"))
    events = [make_event(f"m-share-{index:02d}") for index in range(40)]

    both = await asyncio.gather(post(first, body), post(second, body))
    for index, event in enumerate(events):
        await post((first, second)[index % 2], compact(event))
    await wait_for(lambda: len(fake.executed) == 41, within=30)
    await wait_for(lambda: settled(first))

    statuses = sorted(summary["accepted"] for _, summary in both)
    assert statuses == [0, 1]
    expected = sorted(map(key_of, ["m-both", *(e["messageId"] for e in events)]))
    assert sorted(fake.executed_keys()) == expected
    assert sorted(request.idempotency_key for request in fake.received) == expected
    assert (await counts(second))["pairs_delivered"] == 41


# destination migrate


def run_destination(args: list[str], cwd: Path, **env: str) -> Any:
    return subprocess.run(
        [*DESTINATION, *args],
        cwd=cwd,
        env={**_environment(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def test_migrate_brings_a_schema_up_to_date(
    tmp_path: Path, postgres: PostgresSchemas
) -> None:
    """`destination migrate` migrates once, then says the schema is current."""
    url = postgres.fresh_url()

    first = run_destination(["migrate", "--database-url", url], tmp_path)
    second = run_destination(["migrate"], tmp_path, DATABASE_URL=url)

    assert first.returncode == 0, first.stderr
    assert "from version 0 to 1" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "up to date (version 1)" in second.stdout
    assert "postgres@" not in first.stdout + first.stderr


def test_serve_refuses_a_schema_that_is_behind(
    tmp_path: Path, postgres: PostgresSchemas
) -> None:
    """Without --migrate, serve stops at start-up and names the command to run."""
    env = {
        "DATABASE_URL": postgres.fresh_url(),
        "DESTINATION_SHARED_SECRET": SECRET,
        "PORT": str(free_port()),
    }

    result = run_destination(["serve", "--dry-run"], tmp_path, **env)

    assert result.returncode == 1
    assert "run `destination migrate`" in result.stderr


def test_migrate_opens_a_sqlite_store(tmp_path: Path) -> None:
    """On SQLite, migrate opens the store (which migrates itself) and says so."""
    url = f"sqlite:///{tmp_path / 'store.db'}"

    result = run_destination(["migrate", "--database-url", url], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "migrates itself" in result.stdout
    assert (tmp_path / "store.db").is_file()


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        pytest.param("mysql://db/x", 2, "not supported", id="unsupported"),
        pytest.param(
            "postgresql://app:s3cret@127.0.0.1:{port}/test",
            1,
            "cannot be used now",
            id="unreachable",
        ),
    ],
)
def test_migrate_fails_with_an_exit_code(
    tmp_path: Path, url: str, code: int, message: str
) -> None:
    """2 for a URL it cannot use, 1 for a server it cannot reach; no password."""
    url = url.format(port=free_port())

    result = run_destination(["migrate", "--database-url", url], tmp_path)

    assert result.returncode == code
    assert message in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


# Several `destination serve` processes


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def test_processes_share_a_schema_through_a_sigkill(
    tmp_path: Path,
    postgres: PostgresSchemas,
    fake: FakeCourier,
    courier_server: TestServer,
    http: aiohttp.ClientSession,
) -> None:
    """Three processes on one schema, one SIGKILLed mid-send: each pair once."""
    ports = [free_port() for _ in range(3)]
    env = {
        "DATABASE_URL": postgres.fresh_url(),
        "DESTINATION_MIGRATE": "1",
        "DESTINATION_SHARED_SECRET": SECRET,
        "COURIER_BASE_URL": str(courier_server.make_url("")).rstrip("/"),
        "COURIER_AUTH_TOKEN": COURIER_TOKEN,
        "DESTINATION_MAPPINGS": str(TEST_MAPPINGS),
        "DESTINATION_POLL_INTERVAL": "0.1",
        "DESTINATION_LEASE_SECONDS": "2",
        "DESTINATION_SEND_TIMEOUT": "1",
        "DESTINATION_RETRY_BASE": "0.05",
        "DESTINATION_RETRY_CAP": "0.2",
    }

    def serve(index: int) -> subprocess.Popen[bytes]:
        return start(
            ["serve", "--host", "127.0.0.1", "--port", str(ports[index])],
            cwd=tmp_path,
            env=env,
            log=tmp_path / f"service-{index}.log",
        )

    # Started together on a fresh schema: all three migrate, once.
    services = [serve(index) for index in range(3)]
    acknowledged: list[str] = []
    try:
        for index, service in enumerate(services):
            await asyncio.to_thread(wait_until_healthy, ports[index], service)
        for batch in range(12):
            if batch == 4:
                fake.hold()  # sends now wait at the API: kills catch them mid-send
            if batch == 6:
                await wait_for(lambda: _leased(postgres, env["DATABASE_URL"]))
                stop(services[1], signal.SIGKILL)
                fake.release()
            if batch == 9:
                services[1] = serve(1)
                await asyncio.to_thread(wait_until_healthy, ports[1], services[1])
            alive = [i for i in range(3) if services[i].poll() is None]
            port = ports[alive[batch % len(alive)]]
            ids = [f"m-proc-{batch:02d}-{n}" for n in range(4)]
            await _post_batch(http, port, ids)
            acknowledged.extend(ids)
        await wait_for(lambda: len(fake.executed) >= len(acknowledged), within=60)
        await wait_for(lambda: _drained(http, ports[0]), within=30)
    finally:
        fake.release()
        for service in services:
            stop(service)

    assert sorted(fake.executed_keys()) == sorted(map(key_of, acknowledged))


async def _post_batch(http: aiohttp.ClientSession, port: int, ids: list[str]) -> None:
    body = compact([make_event(message_id) for message_id in ids])
    async with http.post(
        f"http://127.0.0.1:{port}/webhook", data=body, headers=signed_headers(body)
    ) as response:
        assert response.status == 200
        assert (await response.json())["accepted"] == len(ids)


async def _leased(postgres: PostgresSchemas, url: str) -> bool:
    """True once some outbox row is claimed: a send is in flight somewhere."""
    connection = await postgres.connect(url)
    try:
        sql = "SELECT COUNT(*) FROM outbox WHERE lease_token IS NOT NULL"
        return bool(await connection.fetchval(sql))
    finally:
        await connection.close()


async def _drained(http: aiohttp.ClientSession, port: int) -> bool:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return 'destination_store{kind="outbox_pending"} 0' in text
