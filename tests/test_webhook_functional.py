"""End to end over loopback: the real app, a real SQLite file, the fake API."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from destination.fake_courier import FakeCourier
from destination.idempotency import derive_idempotency_key
from destination.runtime import runtime_key
from destination.signature import sign
from tests.conftest import (
    SECRET,
    compact,
    make_event,
    signed_headers,
    store_of,
    wait_for,
)
from tests.paths import EVENT_FIXTURES

ORDER_KEY = derive_idempotency_key("default", "m-0001", "order-confirmation")


async def post(client: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
    # A file object, because aiohttp warns about sending large raw bytes.
    response = await client.post(
        "/webhook",
        data=io.BytesIO(body),
        headers=signed_headers(body) if headers is None else headers,
    )
    return response.status, await response.json()


async def raw_status_line(client: Any, request: bytes) -> bytes:
    """Send raw bytes on a new connection; return the response's status line."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()


async def delivered(client: Any) -> int:
    counts = await store_of(client).counts()
    return int(counts.get("pairs_delivered", 0))


async def settled(client: Any) -> bool:
    """True once no outbox row is waiting or in flight."""
    counts = await store_of(client).counts()
    return counts["outbox_pending"] == 0


async def test_single_event_becomes_one_send(
    make_service: Any, fake: FakeCourier
) -> None:
    """A signed event is acknowledged, then sent once with its documented key."""
    client = await make_service()

    status, summary = await post(client, compact(make_event()))
    await wait_for(lambda: len(fake.executed) == 1)

    assert status == 200
    assert summary["accepted"] == 1
    sent = fake.executed[0]
    assert sent.idempotency_key == ORDER_KEY
    assert sent.path == "/send"
    assert sent.json() == {
        "message": {
            "to": {"user_id": "user-1"},
            "template": "order-confirmation",
            "data": {"orderId": "o-1"},
        }
    }
    assert fake.received[0].authorization == "Bearer courier-test-token"


async def test_ack_does_not_wait_for_the_send(
    make_service: Any, fake: FakeCourier
) -> None:
    """D1: every POST is answered while the API still holds the send."""
    fake.hold()
    client = await make_service()
    body = compact(make_event())

    first = await post(client, body)
    await wait_for(lambda: len(fake.received) == 0 and fake.gate.is_set() is False)
    again = await post(client, body)
    later = make_event(
        sentAt="2024-05-01T12:00:09.000Z", receivedAt="2024-05-01T12:00:10Z"
    )
    third = await post(client, compact(later))
    fake.release()
    await wait_for(lambda: delivered(client))

    assert first == (200, {**first[1], "accepted": 1})
    assert again[1]["duplicates"] == 1 and again[1]["accepted"] == 0
    assert third[1]["duplicates"] == 1 and third[1]["conflicts"] == 0
    assert fake.executed_keys() == [ORDER_KEY]
    assert await settled(client)


async def test_redelivery_after_restart_is_a_duplicate(
    make_service: Any, fake: FakeCourier
) -> None:
    """D2: the same bytes twice, then again after a restart on the same store."""
    body = (EVENT_FIXTURES / "segment_spec_track_complete.json").read_bytes()
    client = await make_service()
    assert (await post(client, body))[1]["accepted"] == 1
    assert (await post(client, body))[1]["duplicates"] == 1
    await wait_for(lambda: delivered(client))
    await client.close()

    restarted = await make_service()
    status, summary = await post(restarted, body)

    assert (status, summary["duplicates"]) == (200, 1)
    assert fake.executed_keys() == [
        derive_idempotency_key(
            "default", "ajs-f8ca1e4de5024d9430b3928bd8ac6b96", "course-clicked"
        )
    ]


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(
            json.loads(
                (
                    EVENT_FIXTURES / "segment_webhooks_classic_track_no_messageId.json"
                ).read_text()
            ),
            id="fixture-without-messageId",
        ),
        pytest.param(make_event(""), id="empty"),
        pytest.param(make_event("   "), id="blank"),
        pytest.param(make_event(157963456373623802), id="number"),
        pytest.param(make_event({"id": "x"}), id="object"),
        pytest.param(make_event(None), id="null"),
    ],
)
async def test_bad_message_id_is_rejected(
    make_service: Any, fake: FakeCourier, event: dict[str, Any]
) -> None:
    """D3, D4: a missing, empty or non-string messageId is a per-event error."""
    client = await make_service()

    status, summary = await post(client, compact(event))

    assert status == 400
    assert summary["error"] == "no_valid_events"
    [rejected] = summary["rejected"]
    assert rejected["index"] == 0
    assert any("messageId" in error["path"] for error in rejected["errors"])
    assert fake.received == []


async def test_numeric_user_id_is_explained(make_service: Any) -> None:
    """D4: a numeric userId is rejected with the precision explanation."""
    client = await make_service()

    status, summary = await post(client, compact(make_event(userId=157963456373623803)))

    assert status == 400
    [error] = summary["rejected"][0]["errors"]
    assert error["path"] == "$.userId"
    assert "precision" in error["message"]


async def test_same_message_id_new_payload_is_a_conflict(
    make_service: Any, fake: FakeCourier
) -> None:
    """D5: first wins; the second is acknowledged, counted and logged with hashes."""
    client = await make_service()
    first = make_event("m-dup-1", properties={"orderId": "A"})
    second = make_event("m-dup-1", properties={"orderId": "B"})

    await post(client, compact(first))
    with capture_logs() as logs:
        status, summary = await post(client, compact(second))
    await wait_for(lambda: delivered(client))

    assert (status, summary["conflicts"], summary["accepted"]) == (200, 1, 0)
    [conflict] = [entry for entry in logs if entry["event"] == "webhook.conflict"]
    assert conflict["message_id"] == "m-dup-1"
    assert conflict["stored_hash"] != conflict["incoming_hash"]
    assert [sent.json()["message"]["data"] for sent in fake.executed] == [
        {"orderId": "A"}
    ]


async def test_batch_with_one_bad_event(make_service: Any, fake: FakeCourier) -> None:
    """D8: good events are sent once in total, the bad one is listed, no 5xx."""
    client = await make_service()
    bad = {"event": "Order Completed", "messageId": "m-b2"}
    body = compact([make_event("m-b1"), bad, make_event("m-b3")])

    first = await post(client, body)
    again = await post(client, body)
    reordered_body = compact([make_event("m-b3"), make_event("m-b1")])
    whole = {
        "Content-Type": "application/json",
        "X-Segment-Signature": sign(SECRET, reordered_body),
    }
    reordered = await post(client, reordered_body, whole)
    await wait_for(lambda: len(fake.executed) == 2)
    await wait_for(lambda: settled(client))

    assert first[0] == 200 and first[1]["accepted"] == 2
    assert first[1]["rejected"][0]["index"] == 1
    assert first[1]["rejected"][0]["messageId"] == "m-b2"
    assert again[1]["duplicates"] == 2
    assert reordered[1]["duplicates"] == 2
    assert sorted(fake.executed_keys()) == sorted(
        derive_idempotency_key("default", m, "order-confirmation")
        for m in ("m-b1", "m-b3")
    )


async def test_fan_out_sends_one_request_per_mapping(
    make_service: Any, fake: FakeCourier
) -> None:
    """One event matching two mappings gives two requests with two keys."""
    client = await make_service()

    await post(client, compact(make_event("m-fan", event="Order Audited")))
    await wait_for(lambda: len(fake.executed) == 2)

    templates = sorted(sent.json()["message"]["template"] for sent in fake.executed)
    assert templates == ["audit-a", "audit-b"]
    assert len(set(fake.executed_keys())) == 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("segment_spec_track_complete.json", "accepted", id="spec-track"),
        pytest.param(
            "action_destinations_create_test_event.json", "accepted", id="test-event"
        ),
        pytest.param(
            "rudderstack_courier_track_offset_ts.json", "accepted", id="offset-ts"
        ),
        pytest.param(
            "rudderstack_track_missing_userId_anonymous_only.json",
            "accepted",
            id="anonymous-only",
        ),
        pytest.param(
            "rudderstack_courier_identify_offset_ts.json", "ignored", id="identify"
        ),
        pytest.param(
            "segment_personas_identify_sentAt_null.json", "ignored", id="sentAt-null"
        ),
        pytest.param("webhook_actions_batch_array.json", "accepted", id="batch-array"),
        pytest.param(
            "segment_webhooks_classic_track_no_messageId.json",
            "rejected",
            id="classic-track",
        ),
        pytest.param(
            "segment_webhooks_classic_identify_no_messageId.json",
            "rejected",
            id="classic-identify",
        ),
    ],
)
async def test_every_shared_fixture(
    make_service: Any, name: str, expected: str
) -> None:
    """Every published example event gets the outcome its shape calls for."""
    client = await make_service()
    body = (EVENT_FIXTURES / name).read_bytes()

    status, summary = await post(client, body)

    if expected == "rejected":
        assert status == 400
        assert "messageId" in json.dumps(summary["rejected"])
    else:
        assert status == 200
        assert summary[expected] >= 1
        assert summary["rejected"] == []


async def test_anonymous_event_without_recipient(
    make_service: Any, fake: FakeCourier
) -> None:
    """M1: anonymous events are valid; no userId means no_recipient, not a send."""
    client = await make_service()
    anonymous = make_event("m-anon-1", userId=None, anonymousId="anon-1")
    keyless = make_event("m-anon-2", anonymousId="anon-2")
    del keyless["userId"]
    nobody = make_event("m-anon-3", userId=None, anonymousId=None)

    status, summary = await post(client, compact([anonymous, keyless, nobody]))
    await asyncio.sleep(0.2)

    assert status == 200
    assert (summary["accepted"], summary["no_recipient"]) == (2, 2)
    assert [r["index"] for r in summary["rejected"]] == [2]
    assert fake.received == []
    counts = await store_of(client).counts()
    assert counts["pairs_no_recipient"] == 2 and counts["outbox_pending"] == 0


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        pytest.param("Order Completed", "accepted", id="exact"),
        pytest.param(" order completed ", "unmapped", id="spaces-and-case"),
        pytest.param("ORDER COMPLETED", "unmapped", id="upper"),
        pytest.param("Order  Completed", "unmapped", id="double-space"),
        pytest.param("", "rejected", id="empty"),
        pytest.param(42, "rejected", id="number"),
    ],
)
async def test_event_name_variants(make_service: Any, name: Any, outcome: str) -> None:
    """M2: names match exactly; empty and non-string names are validation errors."""
    client = await make_service()

    status, summary = await post(client, compact(make_event("m-name", event=name)))

    if outcome == "rejected":
        assert status == 400
        assert summary["rejected"][0]["errors"][0]["path"] == "$.event"
    else:
        assert status == 200 and summary[outcome] == 1


@pytest.mark.parametrize(
    ("timestamp", "valid"),
    [
        pytest.param("2024-05-01T12:00:00.000Z", True, id="zulu"),
        pytest.param("2022-10-17T15:32:44.202+05:30", True, id="offset"),
        pytest.param("this should fail", False, id="text"),
        pytest.param("2023-07-28", False, id="date-only"),
        pytest.param("2015-10-30T22:45", False, id="no-seconds"),
        pytest.param("-0001-11-30T00:00:00+0000", False, id="negative-year"),
        pytest.param("2024-02-30T10:00:00Z", False, id="impossible"),
        pytest.param("2024-05-01T12:00:00", False, id="naive"),
    ],
)
async def test_timestamps(make_service: Any, timestamp: str, valid: bool) -> None:
    """T1-T3: RFC 3339 with an offset is accepted; all else is a per-event error."""
    client = await make_service()
    body = compact([make_event("m-ok"), make_event("m-ts", timestamp=timestamp)])

    status, summary = await post(client, body)

    assert status == 200
    if valid:
        assert summary["accepted"] == 2
    else:
        assert summary["rejected"][0]["errors"][0]["path"] == "$.timestamp"


async def test_signature_schemes(make_service: Any) -> None:
    """S1: first-element and whole-body signing are accepted and logged by name."""
    client = await make_service()
    one, two = compact(make_event("m-s1")), compact(make_event("m-s2"))
    body = b"[" + one + b"," + two + b"]"
    altered = body.replace(b'"o-1"}}]', b'"o-X"}}]')
    first = {"X-Signature": sign(SECRET, one)}
    whole = {"X-Segment-Signature": sign(SECRET, body)}

    with capture_logs() as logs:
        a = await client.post("/webhook", data=body, headers=first)
        b = await client.post("/webhook", data=body, headers=whole)
        c = await client.post("/webhook", data=altered, headers=first)
        d = await client.post("/webhook", data=altered, headers=whole)

    assert [a.status, b.status, c.status, d.status] == [200, 200, 200, 401]
    schemes = [e["auth"] for e in logs if e["event"] == "webhook.completed"]
    assert schemes == [
        "x-signature:first-element",
        "x-segment-signature",
        "x-signature:first-element",
    ]
    assert (await d.json())["error"] == "bad_signature"


async def test_signature_is_checked_on_raw_bytes(make_service: Any) -> None:
    """S2: JavaScript-written bytes verify; Python's re-serialisation would not."""
    client = await make_service()
    body = (
        '{"type":"track","event":"Order Completed","messageId":"m-s2x",'
        '"userId":"zoë","timestamp":"2024-05-01T12:00:00.000Z",'
        '"properties":{"total":1e2,"orderId":"o-1"}}'
    ).encode()
    reserialised = json.dumps(json.loads(body)).encode()

    status, _ = await post(client, body)

    assert status == 200
    assert sign(SECRET, reserialised) != sign(SECRET, body)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param({}, 401, "missing_credentials", id="no-signature"),
        pytest.param({"X-Signature": "0" * 40}, 401, "bad_signature", id="wrong"),
        pytest.param(
            {"X-Signature": "0" * 40, "Authorization": "Bearer tok"},
            401,
            "bad_signature",
            id="wrong-signature-valid-token",
        ),
        pytest.param(
            {"Authorization": "Bearer nope"}, 401, "bad_token", id="wrong-token"
        ),
        pytest.param({"Authorization": "Bearer tok"}, 200, None, id="bearer"),
        pytest.param({"Authorization": "Basic dXNlcjp0b2s="}, 200, None, id="basic"),
    ],
)
async def test_authentication(
    make_service: Any, headers: dict[str, str], status: int, code: str | None
) -> None:
    """A present but wrong signature is 401 even beside a valid token."""
    client = await make_service(token="tok")

    response = await client.post(
        "/webhook", data=compact(make_event()), headers=headers
    )

    assert response.status == status
    if code is not None:
        assert (await response.json())["error"] == code


async def test_rotated_secrets(make_service: Any) -> None:
    """Either configured secret verifies, so rotation has no window of 401s."""
    client = await make_service(shared_secrets=("old-secret", SECRET))
    body = compact(make_event())

    old = await client.post(
        "/webhook", data=body, headers=signed_headers(body, "old-secret")
    )
    new = await client.post("/webhook", data=body, headers=signed_headers(body))

    assert (old.status, new.status) == (200, 200)


async def test_unsigned_only_when_allowed(make_service: Any) -> None:
    """--allow-unsigned accepts requests with no credentials at all."""
    client = await make_service(shared_secrets=(), allow_unsigned=True)

    response = await client.post("/webhook", data=compact(make_event()))

    assert response.status == 200


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        pytest.param("application/json", 200, id="json"),
        pytest.param("application/json; charset=utf-8", 200, id="json-utf8"),
        pytest.param("Application/JSON;charset=UTF-8", 200, id="json-upper"),
        pytest.param("text/plain;charset=UTF-8", 200, id="sendbeacon"),
        pytest.param(None, 200, id="missing"),
        pytest.param("application/x-www-form-urlencoded", 415, id="form"),
        pytest.param("application/json; charset=iso-8859-1", 415, id="latin1"),
        pytest.param("application/json; charset=utf-9", 415, id="utf-9"),
        pytest.param("application/xml", 415, id="xml"),
    ],
)
async def test_content_types(
    make_service: Any, content_type: str | None, status: int
) -> None:
    """S5: UTF-8 JSON in any spelling is accepted; forms and other charsets are 415."""
    client = await make_service()
    body = compact(make_event("m-ct"))
    headers = {"X-Signature": sign(SECRET, body)}
    if content_type is not None:
        headers["Content-Type"] = content_type

    response = await client.post("/webhook", data=body, headers=headers)
    answer = await response.json()

    assert response.status == status
    if status == 200:
        assert answer["accepted"] == 1
    else:
        assert answer["message"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            compact(make_event()).replace(b"user-1", b"user-\xe9"), id="latin1-byte"
        ),
        pytest.param(b'{"type":"track","messageId":"m","x":NaN}', id="nan"),
        pytest.param(b'{"type":"track","messageId":"m","x":Infinity}', id="infinity"),
        pytest.param(
            b'{"type":"track","messageId":"a","messageId":"b"}', id="duplicate-key"
        ),
        pytest.param(b'{"type":', id="truncated"),
        pytest.param(b'"just a string"', id="string"),
        pytest.param(b"[]", id="empty-array"),
        pytest.param(b'{"batch": {"type": "track"}}', id="batch-not-array"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-nesting"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_bad_json_is_400(make_service: Any, body: bytes) -> None:
    """S6: anything but strict UTF-8 JSON events is a 400 with a message."""
    client = await make_service()

    status, answer = await post(client, body)

    assert status == 400
    assert answer["message"]


async def test_batch_object_form(make_service: Any, fake: FakeCourier) -> None:
    """{"batch": [...]} is accepted like a bare array."""
    client = await make_service()
    body = compact({"batch": [make_event("m-bo1"), make_event("m-bo2")]})

    status, summary = await post(client, body)

    assert (status, summary["accepted"]) == (200, 2)


async def test_sizes(make_service: Any) -> None:
    """S4: big batches pass, an oversized event is rejected alone, bodies bounded."""
    client = await make_service(max_body_bytes=1024 * 1024)
    padding = "x" * (30 * 1024 - 300)
    batch = [
        make_event(f"m-big-{i}", properties={"orderId": "o", "pad": padding})
        for i in range(16)
    ]
    huge = make_event("m-huge", properties={"orderId": "o", "pad": "y" * 40 * 1024})
    mixed = [make_event("m-small-1"), huge, make_event("m-small-2")]
    too_big = compact(
        [make_event(f"m-over-{i}", properties={"pad": padding}) for i in range(40)]
    )

    status_batch, summary_batch = await post(client, compact(batch))
    status_mixed, summary_mixed = await post(client, compact(mixed))
    status_over, answer_over = await post(client, too_big)

    assert (status_batch, summary_batch["accepted"]) == (200, 16)
    assert status_mixed == 200 and summary_mixed["accepted"] == 2
    assert [r["messageId"] for r in summary_mixed["rejected"]] == ["m-huge"]
    assert (status_over, answer_over["error"]) == (413, "body_too_large")


async def test_lying_content_length_is_refused_before_reading(
    make_service: Any,
) -> None:
    """S4: a Content-Length far over the limit gets 413 before any byte is read."""
    client = await make_service()
    status_line = await raw_status_line(
        client,
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 999999999\r\n\r\n0123456789",
    )

    assert status_line.startswith(b"HTTP/1.1 413")


async def test_slow_body_gets_408(make_service: Any) -> None:
    """A body that stops arriving is answered 408 at the read deadline, never 5xx."""
    client = await make_service(read_timeout=0.3)
    status_line = await raw_status_line(
        client,
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"type"',
    )

    assert status_line.startswith(b"HTTP/1.1 408")


async def test_gzip_body_signed_after_inflating(make_service: Any) -> None:
    """S3: a gzip body whose signature covers the inflated JSON is accepted."""
    import gzip

    client = await make_service()
    body = compact(make_event("m-gz"))
    headers = {**signed_headers(body), "Content-Encoding": "gzip"}

    response = await client.post("/webhook", data=gzip.compress(body), headers=headers)

    assert response.status == 200
    assert (await response.json())["accepted"] == 1


async def test_gzip_bomb_is_413(make_service: Any) -> None:
    """S3: 200 KB of gzip that inflates to 300 MB is stopped at the size limit."""
    import zlib

    client = await make_service()
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * (1024 * 1024)
    bomb = b"".join(packer.compress(chunk) for _ in range(300)) + packer.flush()
    headers = {**signed_headers(b"x"), "Content-Encoding": "gzip"}

    response = await client.post("/webhook", data=bomb, headers=headers)

    assert len(bomb) < 400 * 1024
    assert response.status == 413


@pytest.mark.parametrize(
    ("encoding", "status"),
    [
        pytest.param("br", 415, id="br-is-gzip"),
        pytest.param("compress", 415, id="compress"),
    ],
)
async def test_unsupported_encoding(
    make_service: Any, encoding: str, status: int
) -> None:
    """S3: a body labelled with an encoding we do not take is 415, never 500."""
    import gzip

    client = await make_service()
    body = compact(make_event("m-br"))
    headers = {**signed_headers(body), "Content-Encoding": encoding}

    response = await client.post("/webhook", data=gzip.compress(body), headers=headers)

    assert response.status == status


async def test_gzip_label_on_plain_bytes_is_400(make_service: Any) -> None:
    """S3: bytes labelled gzip that are not gzip are a 400 that says so."""
    client = await make_service()
    body = compact(make_event("m-notgz"))
    headers = {**signed_headers(body), "Content-Encoding": "gzip"}

    response = await client.post("/webhook", data=body, headers=headers)

    assert response.status == 400


async def test_store_busy_is_503_with_retry_after(
    make_service: Any, settings: Any
) -> None:
    """A store that cannot take events answers 503 with Retry-After; nothing lost."""
    import sqlite3

    client = await make_service(store_busy_timeout=0.1)
    path = settings.database_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        response = await client.post(
            "/webhook",
            data=compact(make_event()),
            headers=signed_headers(compact(make_event())),
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    retried = await post(client, compact(make_event()))
    assert retried[1]["accepted"] == 1


async def test_health_and_metrics(make_service: Any) -> None:
    """/healthz answers ok and /metrics counts what ingest did."""
    client = await make_service()
    await post(client, compact([make_event("m-met"), make_event("")]))

    health = await client.get("/healthz")
    metrics = await (await client.get("/metrics")).text()

    assert health.status == 200
    assert 'destination_events_total{outcome="accepted"} 1' in metrics
    assert 'destination_events_total{outcome="rejected"} 1' in metrics


async def test_deep_outbox_answers_503(make_service: Any, fake: FakeCourier) -> None:
    """Back-pressure: past DESTINATION_MAX_OUTBOX ingest answers 503 Retry-After."""
    fake.hold()
    client = await make_service(max_outbox=2)

    first = await post(client, compact([make_event("m-bp-1"), make_event("m-bp-2")]))
    refused = await client.post(
        "/webhook",
        data=compact(make_event("m-bp-3")),
        headers=signed_headers(compact(make_event("m-bp-3"))),
    )
    only_invalid = await post(client, compact(make_event("")))

    assert first[1]["accepted"] == 2
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "30"
    assert (await refused.json())["error"] == "outbox_full"
    assert only_invalid[0] == 400


async def test_expired_events_are_counted_not_sent(
    make_service: Any, fake: FakeCourier
) -> None:
    """An event older than the record window of an old store is expired, not sent."""
    client = await make_service(record_retention=3600.0, payload_retention=60.0)
    client.app[runtime_key].store_created_at = 0.0
    old = make_event("m-old", timestamp="2020-01-01T00:00:00Z")
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    new = make_event("m-new", timestamp=now)

    status, summary = await post(client, compact([old, new]))
    await wait_for(lambda: len(fake.executed) == 1)

    assert (status, summary["expired"], summary["accepted"]) == (200, 1, 1)
    assert fake.executed[0].idempotency_key == derive_idempotency_key(
        "default", "m-new", "order-confirmation"
    )


async def test_lone_surrogate_message_id_is_a_400(make_service: Any) -> None:
    """A messageId holding a lone surrogate is rejected as an event, never a 500."""
    client = await make_service()
    body = compact(make_event("m-x")).replace(b'"m-x"', b'"m-\\ud800"')

    status, summary = await post(client, body)

    assert status == 400
    assert "surrogate" in summary["rejected"][0]["errors"][0]["message"]


async def test_client_disconnect_mid_request(
    make_service: Any, fake: FakeCourier, settings: Any
) -> None:
    """C2: the CDP hangs up while we work, then retries; one notification in all."""
    import sqlite3

    client = await make_service(store_busy_timeout=5.0)
    body = compact(make_event("m-hangup"))
    path = settings.database_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # holds the handler before its commit
    _, writer = await asyncio.open_connection(client.host, client.port)
    head = (
        "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Signature: {sign(SECRET, body)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )

    with capture_logs() as logs:
        writer.write(head.encode() + body)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        blocker.execute("ROLLBACK")
        blocker.close()
        status, summary = await post(client, body)  # the CDP's retry
        await wait_for(lambda: len(fake.executed) == 1)
        await wait_for(lambda: settled(client))

    assert status == 200
    assert summary["accepted"] + summary["duplicates"] == 1
    assert fake.executed_keys() == [
        derive_idempotency_key("default", "m-hangup", "order-confirmation")
    ]
    assert not [entry for entry in logs if entry.get("log_level") == "error"]


async def test_slow_clients_do_not_block_others(make_service: Any) -> None:
    """C3: connections trickling bytes are cut at the deadline; others go through."""
    client = await make_service(read_timeout=1.0)
    slow = []
    for _ in range(50):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000\r\n\r\n["
        )
        slow.append((reader, writer))

    answers = [await post(client, compact(make_event(f"m-fast-{i}"))) for i in range(5)]
    statuses = [
        (await asyncio.wait_for(reader.readline(), timeout=10)).split()[1]
        for reader, _ in slow
    ]
    for _, writer in slow:
        writer.close()

    assert [status for status, _ in answers] == [200] * 5
    assert set(statuses) == {b"408"}


# Found by attacking a running service; each is a whole kind, kept as a test.


async def test_numbers_too_large_for_a_float_are_a_400(make_service: Any) -> None:
    """1e400 is JSON text Python reads as infinity: refused, never sent on."""
    client = await make_service()
    body = compact(make_event("m-inf")).replace(b'"o-1"', b"1e400")

    status, answer = await post(client, body)

    assert status == 400
    assert "1e400" in answer["message"]


async def test_an_event_with_a_batch_field_stays_an_event(
    make_service: Any,
) -> None:
    """Only an object without a type is a batch wrapper."""
    client = await make_service()
    event = make_event("m-outer", batch=[make_event("m-inner")])

    status, summary = await post(client, compact(event))

    assert (status, summary["accepted"]) == (200, 1)
    counts = await store_of(client).counts()
    assert counts["events"] == 1


async def test_many_gzip_members_are_refused_quickly(make_service: Any) -> None:
    """Thousands of tiny gzip members cost linear time and end in a 400."""
    import gzip

    client = await make_service()
    body = gzip.compress(b"", mtime=0) * 150_000
    headers = {**signed_headers(b"{}"), "Content-Encoding": "gzip"}

    response = await client.post("/webhook", data=io.BytesIO(body), headers=headers)

    assert response.status == 400
    assert "gzip members" in (await response.json())["message"]


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param("gzip-zero-padded", id="gzip-zero-padded"),
        pytest.param("raw-deflate", id="raw-deflate"),
        pytest.param("zlib-deflate", id="zlib-deflate"),
    ],
)
async def test_compression_variants_senders_use(
    make_service: Any, encoded: str
) -> None:
    """Zero padding after gzip and deflate without its zlib header are accepted."""
    import gzip
    import zlib

    client = await make_service()
    body = compact(make_event(f"m-{encoded}"))
    if encoded == "gzip-zero-padded":
        data, encoding = gzip.compress(body) + b"\0" * 512, "gzip"
    elif encoded == "raw-deflate":
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        data, encoding = packer.compress(body) + packer.flush(), "deflate"
    else:
        data, encoding = zlib.compress(body), "deflate"
    headers = {**signed_headers(body), "Content-Encoding": encoding}

    response = await client.post("/webhook", data=data, headers=headers)

    assert response.status == 200


async def test_too_many_events_is_a_413(make_service: Any) -> None:
    """More events than DESTINATION_MAX_EVENTS in one request is refused whole."""
    client = await make_service(max_events=3)
    body = compact([make_event(f"m-many-{i}") for i in range(4)])

    status, answer = await post(client, body)

    assert (status, answer["error"]) == (413, "too_many_events")


async def test_undecodable_authorization_is_a_401(make_service: Any) -> None:
    """A token with bytes that are not UTF-8 is a wrong token, not a crash."""
    client = await make_service(shared_secrets=(), token="tok")
    status_line = await raw_status_line(
        client,
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer t\xe9k\r\nContent-Length: 2\r\n\r\n{}",
    )

    assert status_line.startswith(b"HTTP/1.1 401")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/webhook", 405, id="get"),
        pytest.param("PUT", "/webhook", 405, id="put"),
        pytest.param("POST", "/nowhere", 404, id="not-found"),
    ],
)
async def test_every_refusal_is_json(
    make_service: Any, method: str, path: str, status: int
) -> None:
    """aiohttp's own refusals come in the same {"error", "message"} shape."""
    client = await make_service()

    response = await client.request(method, path)

    assert response.status == status
    assert set(await response.json()) == {"error", "message"}


async def test_expect_continue_is_judged_on_headers_first(make_service: Any) -> None:
    """With Expect: 100-continue, an oversized body is refused before it is sent."""
    client = await make_service()
    status_line = await raw_status_line(
        client,
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: 99999999\r\n\r\n",
    )

    assert status_line.startswith(b"HTTP/1.1 413")


async def test_redelivery_is_answered_even_when_the_outbox_is_full(
    make_service: Any, fake: FakeCourier
) -> None:
    """Back-pressure refuses new work only: a duplicate still gets its 200."""
    fake.hold()
    client = await make_service(max_outbox=1)
    body = compact(make_event("m-bp-again"))
    await post(client, body)

    status, summary = await post(client, body)

    assert (status, summary["duplicates"]) == (200, 1)


async def test_oversized_rejected_events_are_not_kept_whole(
    make_service: Any,
) -> None:
    """An event over 32 KiB is rejected, and only a stub of it is stored."""
    client = await make_service()
    huge = make_event("m-huge-kept", properties={"pad": "z" * 100_000})
    await post(client, compact([make_event("m-small"), huge]))

    [kept] = await store_of(client).export_rejected(0, 10)

    assert len(kept.payload) < 200
    assert json.loads(kept.payload)["messageId"] == "m-huge-kept"
