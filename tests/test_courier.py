"""Tests for destination.courier: how API answers count, and Retry-After."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from destination.courier import (
    MAX_ERROR_TEXT,
    classify_response,
    format_expiration,
    parse_retry_after,
)

IN_PROGRESS = json.dumps(
    {"code": "concurrent_idempotent_requests", "message": "Request in progress"}
)


def http_date(delta: timedelta) -> str:
    """An IMF-fixdate ``delta`` from now, as servers write Retry-After."""
    return format_datetime(datetime.now(UTC) + delta, usegmt=True)


# classify_response: the module docstring's table, row by row


@pytest.mark.parametrize(
    ("status", "text"),
    [
        pytest.param(200, '{"requestId":"r-1"}', id="200-json"),
        pytest.param(201, "{}", id="201-empty-object"),
        pytest.param(202, '{"requestId":"r-1"}', id="202-json"),
        pytest.param(204, "", id="204-empty"),
        pytest.param(200, "", id="200-empty"),
        pytest.param(200, "OK", id="200-not-json"),
        pytest.param(200, "<html>accepted</html>", id="200-html"),
        pytest.param(299, "[1,2]", id="299-array"),
    ],
)
def test_any_2xx_is_delivered_whatever_its_body(status: int, text: str) -> None:
    """Row 1: any 2xx counts as delivered, with no error recorded."""
    result = classify_response(status, text, None)

    assert result.verdict == "delivered"
    assert result.report.status == status
    assert result.report.error is None
    assert result.retry_after is None


@pytest.mark.parametrize(
    ("text", "response_id"),
    [
        pytest.param('{"requestId":"r-1"}', "r-1", id="requestId"),
        pytest.param('{"messageId":"m-1"}', "m-1", id="messageId"),
        pytest.param('{"id":"i-1"}', "i-1", id="id"),
        pytest.param(
            '{"id":"i-1","messageId":"m-1","requestId":"r-1"}',
            "r-1",
            id="requestId-first",
        ),
        pytest.param('{"requestId":"","id":"i-1"}', "i-1", id="empty-skipped"),
        pytest.param('{"requestId":42,"id":"i-1"}', "i-1", id="non-string-skipped"),
        pytest.param('{"requestId":null}', None, id="null"),
        pytest.param('{"other":"x"}', None, id="no-id-field"),
        pytest.param('["r-1"]', None, id="array"),
        pytest.param('"r-1"', None, id="string"),
        pytest.param("", None, id="empty"),
        pytest.param("not json", None, id="not-json"),
    ],
)
def test_response_id_is_taken_from_a_json_object(
    text: str, response_id: str | None
) -> None:
    """The id of a 2xx answer is requestId, messageId or id, in that order."""
    result = classify_response(202, text, None)

    assert result.report.response_id == response_id


def test_response_id_is_cut_to_200_characters() -> None:
    """A huge id is cut, so one answer cannot bloat the store."""
    text = json.dumps({"requestId": "r" * 500})

    result = classify_response(200, text, None)

    assert result.report.response_id == "r" * 200


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(408, id="408"),
        pytest.param(429, id="429"),
        pytest.param(502, id="502"),
        pytest.param(503, id="503"),
        pytest.param(504, id="504"),
    ],
)
def test_408_429_502_503_504_are_transient(status: int) -> None:
    """Row 3: these answers are retried with backoff, keeping the answer."""
    result = classify_response(status, '{"message":"try later"}', None)

    assert result.verdict == "transient"
    assert result.report.status == status
    assert result.report.error == '{"message":"try later"}'
    assert result.report.response_id is None


def test_409_concurrent_idempotent_requests_is_transient() -> None:
    """Row 4: a 409 saying the key is still running means back off and retry."""
    result = classify_response(409, IN_PROGRESS, "5")

    assert result.verdict == "transient"
    assert result.report.status == 409
    assert result.report.error == IN_PROGRESS


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"code":"idempotency_key_reused"}', id="other-code"),
        pytest.param('{"message":"Conflict"}', id="no-code"),
        pytest.param("", id="empty"),
    ],
)
def test_other_409_is_repeatable(text: str) -> None:
    """Row 5: any other 409 is retried only until it repeats N times."""
    result = classify_response(409, text, None)

    assert result.verdict == "repeatable"
    assert result.report.status == 409
    assert result.report.error == text
    assert result.retry_after is None


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(500, id="500"),
        pytest.param(501, id="501"),
        pytest.param(505, id="505"),
        pytest.param(599, id="599"),
    ],
)
def test_other_5xx_are_repeatable(status: int) -> None:
    """Row 6: a 5xx other than 502-504 is replayed per key, so it repeats."""
    result = classify_response(status, '{"message":"boom"}', "30")

    assert result.verdict == "repeatable"
    assert result.report.error == '{"message":"boom"}'
    assert result.retry_after is None


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(400, id="400"),
        pytest.param(401, id="401"),
        pytest.param(403, id="403"),
        pytest.param(404, id="404"),
        pytest.param(413, id="413"),
        pytest.param(422, id="422"),
    ],
)
def test_other_4xx_are_permanent(status: int) -> None:
    """Row 7: any other 4xx is a dead letter now, keeping the answer."""
    result = classify_response(status, '{"message":"bad request"}', "30")

    assert result.verdict == "permanent"
    assert result.report.status == status
    assert result.report.error == '{"message":"bad request"}'
    assert result.retry_after is None


@pytest.mark.parametrize("status", [429, 500, 400])
def test_error_text_is_cut_to_the_maximum(status: int) -> None:
    """A long error body is kept only up to MAX_ERROR_TEXT characters."""
    text = "x" * (MAX_ERROR_TEXT + 100)

    result = classify_response(status, text, None)

    assert result.report.error == "x" * MAX_ERROR_TEXT


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(429, 7.0, id="429"),
        pytest.param(503, 7.0, id="503"),
        pytest.param(502, None, id="502"),
        pytest.param(408, None, id="408"),
        pytest.param(500, None, id="500"),
        pytest.param(409, None, id="409-in-progress"),
    ],
)
def test_retry_after_is_honoured_for_429_and_503(
    status: int, expected: float | None
) -> None:
    """Only 429 and 503 carry the server's Retry-After into the result."""
    text = IN_PROGRESS if status == 409 else ""

    result = classify_response(status, text, "7")

    assert result.retry_after == expected


def test_missing_retry_after_leaves_backoff_to_the_policy() -> None:
    """A 429 without Retry-After retries with no server-chosen delay."""
    result = classify_response(429, "", None)

    assert (result.verdict, result.retry_after) == ("transient", None)


# parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(" 5 ", 5.0, id="padded"),
        pytest.param("007", 7.0, id="leading-zeros"),
    ],
)
def test_retry_after_seconds(value: str, expected: float) -> None:
    """A delay in whole seconds is returned as a float."""
    seconds = parse_retry_after(value)

    assert seconds == expected


def test_retry_after_http_date_in_the_future() -> None:
    """An HTTP-date an hour ahead is about an hour from now, never more."""
    value = http_date(timedelta(hours=1))

    seconds = parse_retry_after(value)

    assert seconds is not None
    assert 3000 < seconds <= 3600


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    """An HTTP-date already past means retry now, not a negative delay."""
    value = http_date(timedelta(hours=-1))

    seconds = parse_retry_after(value)

    assert seconds == 0.0


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("soon", id="word"),
        pytest.param("-1", id="negative"),
        pytest.param("1.5", id="fraction"),
        pytest.param("1e3", id="exponent"),
        pytest.param("5 seconds", id="with-unit"),
        pytest.param("Wed, 99 Foo 2015 07:28:00 GMT", id="bad-date"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 -0000", id="date-without-zone"),
    ],
)
def test_malformed_retry_after_is_none(value: str | None) -> None:
    """A value that is neither seconds nor an HTTP-date with a zone is None."""
    seconds = parse_retry_after(value)

    assert seconds is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("²", id="superscript-two"),
        pytest.param("1²", id="digit-and-superscript"),
    ],
)
def test_retry_after_with_non_ascii_digits_is_none(value: str) -> None:
    """Digits outside ASCII are malformed: None, never an exception."""
    seconds = parse_retry_after(value)

    assert seconds is None


# format_expiration


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        pytest.param(0.0, "1970-01-01T00:00:00Z", id="epoch"),
        pytest.param(1714564800.987, "2024-05-01T12:00:00Z", id="fraction-dropped"),
    ],
)
def test_format_expiration_is_utc_iso_to_the_second(
    timestamp: float, expected: str
) -> None:
    """The x-idempotency-expiration value is ISO 8601 UTC with a Z, no fraction."""
    value = format_expiration(timestamp)

    assert value == expected
