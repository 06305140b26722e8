"""Delivery against a fake API that fails on purpose: same key, same bytes, once."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest
from structlog.testing import capture_logs

from destination.errors import StoreModeError
from destination.fake_courier import FakeCourier, Fault
from tests.conftest import compact, make_event, signed_headers, store_of, wait_for


async def ingest(client: Any, *events: dict[str, Any]) -> None:
    body = compact(list(events))
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200


async def pair_counts(client: Any) -> dict[str, int]:
    counts: dict[str, int] = await store_of(client).counts()
    return counts


def attempts_carry_one_key_and_body(fake: FakeCourier) -> bool:
    return len({(r.idempotency_key, r.body) for r in fake.received}) == 1


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([Fault("status", status=503)], id="503"),
        pytest.param([Fault("status", status=502), Fault("status", 504)], id="502-504"),
        pytest.param(
            [Fault("status", status=429, headers=(("Retry-After", "0"),))],
            id="429-retry-after",
        ),
        pytest.param([Fault("status", status=408)], id="408"),
        pytest.param([Fault("reset"), Fault("reset")], id="resets"),
        pytest.param(
            [
                Fault(
                    "status",
                    status=409,
                    body='{"code":"concurrent_idempotent_requests"}',
                )
            ],
            id="409-in-progress",
        ),
    ],
)
async def test_transient_faults_are_retried(
    make_service: Any, fake: FakeCourier, faults: list[Fault]
) -> None:
    """Faults before execution are retried until one attempt executes."""
    fake.faults.extend(faults)
    client = await make_service()

    await ingest(client, make_event("m-retry"))
    await wait_for(lambda: len(fake.executed) == 1)
    await wait_for(lambda: _delivered(client))

    assert len(fake.received) == len(faults) + 1
    assert attempts_carry_one_key_and_body(fake)


async def _delivered(client: Any) -> bool:
    return (await pair_counts(client)).get("pairs_delivered") == 1


async def test_timeout_then_in_progress_409s(
    make_service: Any, fake: FakeCourier
) -> None:
    """D6: executed after our timeout, then two in-progress 409s, then the replay."""
    conflict = '{"code":"concurrent_idempotent_requests"}'
    fake.faults.extend(
        [
            Fault("delay", seconds=0.8),
            Fault("status", status=409, body=conflict),
            Fault("status", status=409, body=conflict),
        ]
    )
    client = await make_service(send_timeout=0.3)

    await ingest(client, make_event("m-409"))
    await wait_for(lambda: _delivered(client))

    assert len(fake.executed) == 1
    assert attempts_carry_one_key_and_body(fake)
    assert fake.received[-1].outcome == "replayed"


async def test_slow_api_is_ambiguous_not_failed(
    make_service: Any, fake: FakeCourier
) -> None:
    """D7: every attempt times out, yet carries one key and body; one execution."""
    fake.faults.extend(Fault("delay", seconds=0.6) for _ in range(3))
    client = await make_service(send_timeout=0.2)

    await ingest(client, make_event("m-slow"))
    await wait_for(lambda: _delivered(client))

    assert len(fake.executed) == 1
    assert len(fake.received) >= 2
    assert attempts_carry_one_key_and_body(fake)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(400, '{"message":"bad template"}', id="400"),
        pytest.param(422, '{"message":"unprocessable"}', id="422"),
    ],
)
async def test_permanent_errors_fail_with_the_response(
    make_service: Any, fake: FakeCourier, status: int, body: str
) -> None:
    """Other 4xx are not retried: the pair is a dead letter with the response."""
    fake.faults.append(Fault("status", status=status, body=body))
    client = await make_service()

    await ingest(client, make_event("m-perm"))
    await wait_for(lambda: _count(client, "pairs_dead_letter", 1))

    assert len(fake.received) == 1
    row = _outbox_row(client)
    assert row == (status, body)


async def _count(client: Any, name: str, expected: int) -> bool:
    return (await pair_counts(client)).get(name) == expected


def _outbox_row(client: Any) -> tuple[int, str]:
    row = _select(client, "SELECT last_status, last_error FROM outbox")
    return int(row[0]), str(row[1])


def _reason(client: Any) -> str:
    return str(_select(client, "SELECT reason FROM outbox")[0])


def _select(client: Any, sql: str) -> Any:
    path = store_of(client).path
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchone()


async def test_gives_up_after_the_configured_age(
    make_service: Any, fake: FakeCourier
) -> None:
    """A pair still failing past the give-up age is a dead letter, with the reason."""
    fake.faults.extend(Fault("status", status=503) for _ in range(1000))
    client = await make_service(give_up_after=0.3)

    await ingest(client, make_event("m-give-up"))
    await wait_for(lambda: _count(client, "pairs_dead_letter", 1))

    assert _outbox_row(client) == (503, '{"message":"injected fault"}')
    assert _reason(client).startswith("Gave up after")
    assert fake.executed == []


async def test_dry_run_sends_nothing(make_service: Any, fake: FakeCourier) -> None:
    """--dry-run records each request as dry_run and never calls the API."""
    client = await make_service(dry_run=True)

    await ingest(client, make_event("m-dry-1"), make_event("m-dry-2"))
    await wait_for(lambda: _count(client, "pairs_dry_run", 2))

    assert fake.received == []


async def test_delivery_logs_carry_a_status_only_when_there_is_one(
    make_service: Any,
) -> None:
    """A dry run's delivery.succeeded has no status key rather than a null one."""
    client = await make_service(dry_run=True)

    with capture_logs() as logs:
        await ingest(client, make_event("m-dry-log"))
        await wait_for(lambda: _logged(logs, "delivery.succeeded"))

    [entry] = [e for e in logs if e["event"] == "delivery.succeeded"]
    assert entry["log_level"] == "info"
    assert "status" not in entry


async def test_a_dead_letter_is_logged_as_a_warning(
    make_service: Any, fake: FakeCourier
) -> None:
    """delivery.dead_lettered needs an operator, so it is a warning, with status."""
    fake.faults.append(Fault("status", status=400, body='{"message":"bad"}'))
    client = await make_service()

    with capture_logs() as logs:
        await ingest(client, make_event("m-dead-log"))
        await wait_for(lambda: _logged(logs, "delivery.dead_lettered"))

    [entry] = [e for e in logs if e["event"] == "delivery.dead_lettered"]
    assert (entry["log_level"], entry["status"]) == ("warning", 400)


def _logged(logs: list[dict[str, Any]], event: str) -> bool:
    return any(entry["event"] == event for entry in logs)


async def test_dry_run_refuses_a_live_store(make_service: Any) -> None:
    """A dry run never opens the store of a service that really sends."""
    live = await make_service()
    await live.close()

    with pytest.raises(StoreModeError, match="live"):
        await make_service(dry_run=True)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(500, '{"message":"Internal error"}', id="stored-500"),
        pytest.param(409, '{"code":"idempotency_key_reused"}', id="409-other"),
    ],
)
async def test_repeated_identical_answer_becomes_a_dead_letter(
    make_service: Any, fake: FakeCourier, status: int, body: str
) -> None:
    """A 500 (or other 409) that comes back identical N times is a dead letter."""
    fake.faults.extend(Fault("status", status=status, body=body) for _ in range(10))
    client = await make_service(repeat_limit=3)

    await ingest(client, make_event("m-stored-500"))
    await wait_for(lambda: _count(client, "pairs_dead_letter", 1))

    assert len(fake.received) == 3
    assert attempts_carry_one_key_and_body(fake)
    assert "same" in _reason(client) and str(status) in _reason(client)


async def test_retry_after_http_date_is_honoured(
    make_service: Any, fake: FakeCourier
) -> None:
    """A 503 with an HTTP-date Retry-After is retried; a malformed one falls back."""
    from email.utils import formatdate

    fake.faults.extend(
        [
            Fault("status", status=503, headers=(("Retry-After", formatdate()),)),
            Fault("status", status=429, headers=(("Retry-After", "soon"),)),
        ]
    )
    client = await make_service()

    await ingest(client, make_event("m-date"))
    await wait_for(lambda: _delivered(client))

    assert len(fake.received) == 3 and len(fake.executed) == 1


async def test_key_expiration_header_is_fixed_per_pair(
    make_service: Any, fake: FakeCourier
) -> None:
    """x-idempotency-expiration is computed once and identical on every attempt."""
    fake.faults.extend([Fault("status", status=503), Fault("reset")])
    client = await make_service()

    await ingest(client, make_event("m-exp"))
    await wait_for(lambda: _delivered(client))

    expirations = {r.expiration for r in fake.received}
    assert len(expirations) == 1
    [expiration] = expirations
    assert expiration is not None and expiration.endswith("Z")
