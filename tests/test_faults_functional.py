"""Issue 3's acceptance runs: scripted API faults over 1,000 events, and crashes.

Each scenario is bounded (about a minute at most) with delays scaled down by
settings, and checks the two promises: every accepted pair was executed once
under its key, and no key ever carried two bodies.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections import Counter
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from destination.fake_courier import FakeCourier, Fault
from destination.idempotency import derive_idempotency_key
from destination.mapping import load_mappings
from tests.conftest import (
    COURIER_TOKEN,
    SECRET,
    compact,
    make_event,
    signed_headers,
    store_of,
    wait_for,
)
from tests.paths import REPO
from tests.processes import DESTINATION, free_port, start, stop

EVENTS = 1000
BATCH = 50
MAPPINGS = REPO / "tests" / "data" / "mappings"


def scripted_faults(count: int, seed: int) -> list[Fault]:
    """A shuffled mix of every transient fault the API can throw at us.

    A 500 injected before execution looks exactly like a stored 500, so the
    same key may meet several in a row by chance: the scenarios set the
    repeat limit to 5, where that chance is negligible, and model stored
    500s with ``failing_templates``.
    """
    conflict = '{"code":"concurrent_idempotent_requests"}'
    kinds = [
        Fault("status", status=500),
        Fault("status", status=502),
        Fault("status", status=503),
        Fault("status", status=503, headers=(("Retry-After", "0"),)),
        Fault("status", status=429, headers=(("Retry-After", "0"),)),
        Fault("status", status=429, headers=(("Retry-After", formatdate()),)),
        Fault("status", status=409, body=conflict),
        Fault("delay", seconds=0.3),
        Fault("reset"),
        Fault("stale"),
    ]
    chooser = random.Random(seed)
    return [chooser.choice(kinds) for _ in range(count)]


def no_key_with_two_bodies(fake: FakeCourier) -> bool:
    bodies: dict[str | None, set[bytes]] = {}
    for request in fake.received:
        bodies.setdefault(request.idempotency_key, set()).add(request.body)
    return all(len(seen) == 1 for seen in bodies.values())


async def test_scripted_faults_over_a_thousand_events(
    make_service: Any, fake: FakeCourier, tmp_path: Path
) -> None:
    """Faults while 1,000 events arrive: each pair executed once, stored 500s dead."""
    fake.failing_templates = frozenset({"audit-b"})
    fake.faults.extend(scripted_faults(600, seed=7))
    client = await make_service(
        send_timeout=0.15, repeat_limit=5, send_concurrency=20, lease_seconds=2.0
    )
    events = [make_event(f"m-fault-{i:04d}") for i in range(EVENTS)]
    events[::100] = [
        make_event(f"m-fault-audit-{i}", event="Order Audited") for i in range(10)
    ]

    for start_at in range(0, EVENTS, BATCH):
        body = compact(events[start_at : start_at + BATCH])
        response = await client.post(
            "/webhook", data=body, headers=signed_headers(body)
        )
        assert response.status == 200
    counts = await _settle(client)

    expected_keys = {
        derive_idempotency_key("default", e["messageId"], m)
        for e in events
        for m in _mappings_of(e)
    }
    executed = Counter(fake.executed_keys())
    _report(
        "faults",
        events=EVENTS,
        pairs=len(expected_keys),
        requests=len(fake.received),
        executed=len(executed),
        duplicates=sum(executed.values()) - len(executed),
        dead_letters=counts["pairs_dead_letter"],
    )
    assert set(executed) == expected_keys
    assert max(executed.values()) == 1
    assert no_key_with_two_bodies(fake)
    assert counts["pairs_delivered"] == len(expected_keys) - 10
    assert counts["pairs_dead_letter"] == 10
    dead = await store_of(client).list_dead_letters(100)
    assert {letter.mapping for letter in dead} == {"order-audit-copy"}
    assert all("same 500 answer" in (letter.reason or "") for letter in dead)
    assert len(fake.faults) == 0


def _report(scenario: str, **figures: int) -> None:
    """Figures for the closing note; shown with ``pytest -s``."""
    print(scenario, " ".join(f"{name}={value}" for name, value in figures.items()))


def _mappings_of(event: dict[str, Any]) -> list[str]:
    if event["event"] == "Order Audited":
        return ["order-audit", "order-audit-copy"]
    return ["order-confirmation"]


async def _settle(client: Any) -> dict[str, int]:
    store = store_of(client)

    async def done() -> bool:
        return int((await store.counts())["outbox_pending"]) == 0

    await wait_for(done, within=90)
    counts: dict[str, int] = await store.counts()
    return counts


@pytest.mark.parametrize(
    ("backend", "processes"),
    [
        pytest.param("sqlite", 1, id="sqlite-one-process"),
        pytest.param("postgres", 3, id="postgres-three-processes"),
    ],
)
async def test_sigkill_at_random_moments(
    tmp_path: Path,
    fake: FakeCourier,
    courier_server: TestServer,
    request: pytest.FixtureRequest,
    backend: str,
    processes: int,
) -> None:
    """SIGKILLs at random moments while faults fly: every acknowledged pair once."""
    fake.failing_templates = frozenset({"audit-b"})
    fake.faults.extend(scripted_faults(300, seed=3))
    database_url = f"sqlite:///{tmp_path / 'crash.db'}"
    if backend == "postgres":
        database_url = request.getfixturevalue("postgres").fresh_url()
    ports = [free_port() for _ in range(processes)]
    envs = [_service_env(database_url, courier_server, port) for port in ports]
    chooser = random.Random(11)
    acknowledged: list[str] = []
    kills = 0

    services = [_start_service(tmp_path, env) for env in envs]
    async with aiohttp.ClientSession() as session:
        for port in ports:
            await _healthy(session, port)
        poster = asyncio.create_task(_stream(session, ports, acknowledged, 400))
        try:
            while not poster.done() or kills < 5:
                await asyncio.sleep(chooser.uniform(0.2, 0.6))
                victim = chooser.randrange(processes)
                stop(services[victim], signal.SIGKILL)
                kills += 1
                services[victim] = _start_service(tmp_path, envs[victim])
                await _healthy(session, ports[victim])
            await poster
            expected = {
                derive_idempotency_key("default", m, mapping)
                for m in acknowledged
                for mapping in _mappings_of(_kill_event(m))
            }
            await wait_for(lambda: expected <= set(fake.executed_keys()), within=60)
            dead = await _dead_letters_settled(envs[0], len(acknowledged) // 50)
        finally:
            poster.cancel()
            for service in services:
                stop(service)

    executed = Counter(fake.executed_keys())
    _report(
        f"sigkill-{backend}",
        processes=processes,
        acknowledged=len(acknowledged),
        dead_letters=len(dead),
        kills=kills,
        requests=len(fake.received),
        executed=len(executed),
        duplicates=sum(executed.values()) - len(executed),
    )
    assert kills >= 5
    assert len(acknowledged) == 400
    assert {letter["mapping"] for letter in dead} == {"order-audit-copy"}
    assert all("same 500 answer" in letter["reason"] for letter in dead)
    assert set(executed) == expected
    assert max(executed.values()) == 1
    assert no_key_with_two_bodies(fake)


async def _dead_letters_settled(env: dict[str, str], count: int) -> list[Any]:
    """The dead letters, as an operator lists them, once all ``count`` are in."""
    found: list[Any] = []

    async def listed() -> bool:
        command = [*DESTINATION, "dead-letters", "list", "--json"]
        process = await asyncio.create_subprocess_exec(
            *command,
            env={**os.environ, "DATABASE_URL": env["DATABASE_URL"]},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await process.communicate()
        found[:] = [json.loads(line) for line in out.splitlines() if line.strip()]
        return len(found) >= count

    await wait_for(listed, within=60)
    return found


def _start_service(tmp_path: Path, env: dict[str, str]) -> Any:
    log = tmp_path / f"service-{env['PORT']}.log"
    return start(["serve", "--host", "127.0.0.1"], cwd=tmp_path, env=env, log=log)


def _service_env(database_url: str, courier: TestServer, port: int) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DESTINATION_MIGRATE": "true",
        "DESTINATION_SHARED_SECRET": SECRET,
        "COURIER_BASE_URL": str(courier.make_url("")).rstrip("/"),
        "COURIER_AUTH_TOKEN": COURIER_TOKEN,
        "DESTINATION_MAPPINGS": str(MAPPINGS),
        "DESTINATION_POLL_INTERVAL": "0.05",
        "DESTINATION_LEASE_SECONDS": "1.5",
        "DESTINATION_SEND_TIMEOUT": "1",
        "DESTINATION_RETRY_BASE": "0.02",
        "DESTINATION_RETRY_CAP": "0.2",
        "DESTINATION_BREAKER_COOLDOWN": "0.1",
        "DESTINATION_REPEAT_LIMIT": "5",
        "PORT": str(port),
    }


async def _healthy(session: aiohttp.ClientSession, port: int) -> None:
    async def answers() -> bool:
        try:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(answers, within=30)


async def _stream(
    session: aiohttp.ClientSession,
    ports: list[int],
    acknowledged: list[str],
    total: int,
) -> None:
    """Post batches of 5 like a CDP, round robin; retry a batch until acknowledged."""
    turn = 0
    for start_at in range(0, total, 5):
        ids = [f"m-kill-{i:04d}" for i in range(start_at, start_at + 5)]
        body = compact([_kill_event(message_id) for message_id in ids])
        while True:
            port = ports[turn % len(ports)]
            turn += 1
            try:
                async with session.post(
                    f"http://127.0.0.1:{port}/webhook",
                    data=body,
                    headers=signed_headers(body),
                ) as response:
                    if response.status == 200:
                        acknowledged.extend(ids)
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.01)


def _kill_event(message_id: str) -> dict[str, Any]:
    """Every 50th event fans out to the audit mappings, one of whose sends fails."""
    if int(message_id.rsplit("-", 1)[1]) % 50 == 0:
        return make_event(message_id, event="Order Audited")
    return make_event(message_id)


def test_load_mappings_for_faults() -> None:
    """The fault scenarios rely on the audit mappings fanning out to two."""
    names = [
        m.name
        for m in load_mappings(MAPPINGS)
        .match(make_event(event="Order Audited"))
        .mappings
    ]
    assert names == ["order-audit", "order-audit-copy"]
