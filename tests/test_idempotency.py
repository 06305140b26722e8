"""Tests for destination.idempotency: key format, payload hashes, stable JSON."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from destination.idempotency import (
    KEY_PREFIX,
    TRANSPORT_FIELDS,
    canonical_json,
    derive_idempotency_key,
    encode_json,
    hash_payload,
)

KEY_PATTERN = re.compile(r"^dst1-[0-9a-f]{40}$")
BASE_KEY_ARGS: dict[str, Any] = {
    "source_id": "default",
    "message_id": "m-0001",
    "mapping": "order-confirmation",
    "generation": 0,
}


def make_event(**changes: Any) -> dict[str, Any]:
    """Return CASES.md's E(m) with the given fields replaced."""
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-0001",
        "userId": "user-1",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"orderId": "o-1"},
    }
    event.update(changes)
    return event


# derive_idempotency_key


def test_key_has_the_documented_format() -> None:
    """A key is dst1- and 40 lowercase hex digits: 45 ASCII characters."""
    key = derive_idempotency_key(**BASE_KEY_ARGS)

    assert key.startswith(KEY_PREFIX)
    assert KEY_PATTERN.match(key)
    assert key.isascii()
    assert len(key) == 45


def test_key_is_deterministic() -> None:
    """The same inputs give the same key on every call."""
    first = derive_idempotency_key(**BASE_KEY_ARGS)

    second = derive_idempotency_key(**BASE_KEY_ARGS)

    assert first == second


def test_key_does_not_change_across_releases() -> None:
    """The dst1 format is frozen: sha256 of the compact JSON list, cut to 40."""
    key = derive_idempotency_key("default", "m-0001", "order-confirmation")

    material = b'["default","m-0001","order-confirmation",0]'
    assert key == "dst1-" + hashlib.sha256(material).hexdigest()[:40]
    assert key == "dst1-d9f0b0d25e4ffec018c65b2cc4326d07908073cc"


def test_generation_defaults_to_zero() -> None:
    """Leaving out the generation is the same as generation 0."""
    explicit = derive_idempotency_key("default", "m-0001", "order-confirmation", 0)

    implicit = derive_idempotency_key("default", "m-0001", "order-confirmation")

    assert explicit == implicit


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"source_id": "other"}, id="source"),
        pytest.param({"message_id": "m-0002"}, id="message-id"),
        pytest.param({"message_id": "M-0001"}, id="message-id-case"),
        pytest.param({"message_id": "m-0001 "}, id="message-id-whitespace"),
        pytest.param({"mapping": "order-shipped"}, id="mapping"),
        pytest.param({"generation": 1}, id="generation"),
    ],
)
def test_key_differs_when_any_input_differs(changes: dict[str, Any]) -> None:
    """Each of source, messageId, mapping and generation changes the key."""
    base = derive_idempotency_key(**BASE_KEY_ARGS)

    changed = derive_idempotency_key(**{**BASE_KEY_ARGS, **changes})

    assert changed != base


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(("a,b", "c", "m"), ("a", "b,c", "m"), id="comma-shift"),
        pytest.param(("a", "b", "c"), ("ab", "", "c"), id="concatenation"),
        pytest.param(("a", 'b","c', "m"), ("a", "b", 'c","m'), id="quote-shift"),
    ],
)
def test_key_inputs_cannot_run_into_each_other(
    left: tuple[str, str, str], right: tuple[str, str, str]
) -> None:
    """Moving characters between inputs never yields the same key."""
    left_key = derive_idempotency_key(*left)

    right_key = derive_idempotency_key(*right)

    assert left_key != right_key


@pytest.mark.parametrize(
    "message_id",
    [
        pytest.param("m-é", id="latin"),
        pytest.param("ユーザー-1", id="japanese"),
        pytest.param("m-😀", id="emoji"),
        pytest.param("m-\u0000-nul", id="nul"),
    ],
)
def test_key_is_ascii_for_non_ascii_message_ids(message_id: str) -> None:
    """Non-ASCII messageIds still give an ASCII key of the same format."""
    key = derive_idempotency_key("default", message_id, "order-confirmation")

    assert KEY_PATTERN.match(key)
    assert key != derive_idempotency_key("default", "m-", "order-confirmation")


def test_composed_and_decomposed_ids_are_different_keys() -> None:
    """Keys compare ids exactly: no Unicode normalisation happens."""
    composed = derive_idempotency_key("default", "caf\u00e9", "order-confirmation")

    decomposed = derive_idempotency_key("default", "cafe\u0301", "order-confirmation")

    assert composed != decomposed


def test_key_is_derived_for_a_message_id_with_a_lone_surrogate() -> None:
    """A lone surrogate in a messageId still gives a deterministic ASCII key."""
    message_id = json.loads('"m-\\ud800"')

    key = derive_idempotency_key("default", message_id, "order-confirmation")

    assert KEY_PATTERN.match(key)
    assert key == derive_idempotency_key("default", message_id, "order-confirmation")


# hash_payload


def test_transport_fields_are_the_documented_three() -> None:
    """sentAt, receivedAt and integrations are the fields a CDP rewrites."""
    assert frozenset({"sentAt", "receivedAt", "integrations"}) == TRANSPORT_FIELDS


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"sentAt": "2024-05-01T12:00:05.000Z"}, id="sentAt"),
        pytest.param({"receivedAt": "2024-05-01T12:00:06.000Z"}, id="receivedAt"),
        pytest.param({"integrations": {"All": False}}, id="integrations"),
        pytest.param(
            {
                "sentAt": "2024-05-01T13:00:00.000Z",
                "receivedAt": "2024-05-01T13:00:01.000Z",
                "integrations": {},
            },
            id="all-three",
        ),
    ],
)
def test_hash_ignores_transport_fields(changes: dict[str, Any]) -> None:
    """Adding or changing sentAt, receivedAt or integrations keeps the hash."""
    original = hash_payload(make_event(sentAt="2024-05-01T12:00:01.000Z"))

    redelivered = hash_payload(make_event(**changes))

    assert redelivered == original


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"properties": {"orderId": "o-2"}}, id="properties"),
        pytest.param({"timestamp": "2024-05-01T12:00:01.000Z"}, id="timestamp"),
        pytest.param({"userId": "user-2"}, id="userId"),
        pytest.param({"messageId": "m-0002"}, id="messageId"),
        pytest.param({"event": "Order Shipped"}, id="event"),
        pytest.param({"context": {"ip": "192.0.2.1"}}, id="added-context"),
        pytest.param({"originalTimestamp": "2024-05-01T12:00:00Z"}, id="other-time"),
        pytest.param({"properties": {"orderId": "o-1", "n": 1.0}}, id="added-float"),
    ],
)
def test_hash_sees_every_other_field(changes: dict[str, Any]) -> None:
    """Any change outside the transport fields changes the hash."""
    original = hash_payload(make_event())

    changed = hash_payload(make_event(**changes))

    assert changed != original


def test_hash_distinguishes_integer_and_float() -> None:
    """1 and 1.0 are different payloads, as JSON producers wrote them."""
    integer = hash_payload(make_event(properties={"total": 1}))

    floating = hash_payload(make_event(properties={"total": 1.0}))

    assert integer != floating


def test_hash_is_independent_of_key_order_at_every_level() -> None:
    """Reordered keys, top level and nested, give the same hash."""
    event = make_event(properties={"orderId": "o-1", "total": 5, "items": [{"a": 1}]})
    reordered = dict(reversed(list(event.items())))
    reordered["properties"] = {"items": [{"a": 1}], "total": 5, "orderId": "o-1"}

    hashes = {hash_payload(event), hash_payload(reordered)}

    assert len(hashes) == 1


def test_hash_keeps_array_order() -> None:
    """Arrays are ordered: swapping two items changes the hash."""
    forward = hash_payload(make_event(properties={"items": [1, 2]}))

    backward = hash_payload(make_event(properties={"items": [2, 1]}))

    assert forward != backward


def test_hash_is_sha256_hex() -> None:
    """The hash is 64 lowercase hex digits."""
    digest = hash_payload(make_event())

    assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_hash_handles_a_lone_surrogate_deterministically() -> None:
    """A payload with a lone surrogate hashes, and always to the same value."""
    event = make_event(userId=json.loads('"u-\\ud800"'))

    first = hash_payload(event)

    assert first == hash_payload(dict(event))
    assert first != hash_payload(make_event(userId="u-"))


# encode_json


def test_encode_json_is_compact_utf8() -> None:
    """Output has no spaces and keeps non-ASCII characters as UTF-8."""
    encoded = encode_json({"name": "Zoë", "n": [1, 2]})

    assert encoded == '{"name":"Zoë","n":[1,2]}'.encode()


def test_encode_json_keeps_key_order_unless_asked() -> None:
    """Keys stay in insertion order; canonical_json sorts them."""
    value = {"b": 1, "a": 2}

    encoded = encode_json(value)

    assert encoded == b'{"b":1,"a":2}'
    assert canonical_json(value) == b'{"a":2,"b":1}'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("\ud800", b'"\\ud800"', id="lone-high-surrogate"),
        pytest.param("\udfff", b'"\\udfff"', id="lone-low-surrogate"),
        pytest.param(
            {"a": "é", "b": "\ud800"},
            b'{"a":"\\u00e9","b":"\\ud800"}',
            id="with-other-non-ascii",
        ),
    ],
)
def test_encode_json_escapes_lone_surrogates(value: Any, expected: bytes) -> None:
    """A lone surrogate is written as ASCII escapes, not an encoding error."""
    encoded = encode_json(value)

    assert encoded == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param({"user": "u-\ud83d", "name": "Zoë"}, id="mixed"),
        pytest.param(["\udc00\ud800", {"k\ud800": 1}], id="surrogate-in-key"),
    ],
)
def test_encode_json_with_surrogates_is_valid_deterministic_json(value: Any) -> None:
    """The escaped output decodes as UTF-8 JSON back to the same value."""
    encoded = encode_json(value)

    assert encoded == encode_json(value)
    assert json.loads(encoded.decode("utf-8")) == value


def test_encode_json_joins_a_valid_surrogate_pair() -> None:
    """A proper surrogate pair from JSON is one character, written as UTF-8."""
    value = json.loads('"\\ud83d\\ude00"')

    encoded = encode_json(value)

    assert encoded == '"😀"'.encode()
