"""Tests for destination.validation: schemas, messages, timestamps, self-test."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from jsonschema import FormatChecker

from destination.errors import EventError, SchemaSetupError
from destination.validation import (
    KNOWN_TYPES,
    MAX_EVENT_BYTES,
    EventValidator,
    check_format_checker,
    create_validator,
    default_schema_dir,
    event_time,
    parse_timestamp,
)
from tests.paths import EVENT_FIXTURES, SCHEMAS

MESSAGE_ID_REQUIRED = (
    "messageId is required: the CDP sets it on every event and destination uses "
    "it to send each event once."
)
FIXTURES = sorted(EVENT_FIXTURES.glob("*.json"))
SCHEMA_FILES = ["common.json", *(f"{kind}.json" for kind in sorted(KNOWN_TYPES))]


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


def paths(errors: list[EventError]) -> list[str]:
    return [error.path for error in errors]


@pytest.fixture(scope="module")
def validator() -> EventValidator:
    return create_validator(SCHEMAS)


@pytest.fixture
def schema_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


def edit_schema(directory: Path, name: str, **changes: Any) -> None:
    path = directory / name
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema.update(changes)
    path.write_text(json.dumps(schema), encoding="utf-8")


# Fixtures from the field


@pytest.mark.parametrize(
    "path", [pytest.param(path, id=path.stem) for path in FIXTURES]
)
def test_fixture_events(validator: EventValidator, path: Path) -> None:
    """Every shared fixture validates, except the two without a messageId."""
    document = json.loads(path.read_text(encoding="utf-8"))
    events = document if isinstance(document, list) else [document]

    results = [validator.validate(event) for event in events]

    if path.stem.endswith("_no_messageId"):
        assert results == [[EventError("$.messageId", MESSAGE_ID_REQUIRED)]]
    else:
        assert results == [[] for _ in events]


def test_fixture_batch_holds_several_events() -> None:
    """The batch fixture really is an array, so each element is checked above."""
    document = json.loads(
        (EVENT_FIXTURES / "webhook_actions_batch_array.json").read_text("utf-8")
    )

    assert isinstance(document, list)
    assert len(document) == 2


# messageId (D3, D4)


@pytest.mark.parametrize(
    ("message_id", "expected"),
    [
        pytest.param(
            "", "messageId must contain a non-space character, not ''.", id="empty"
        ),
        pytest.param(
            "   ",
            "messageId must contain a non-space character, not '   '.",
            id="spaces",
        ),
        pytest.param(
            157963456373623802,
            "messageId must be a string, not a number (157963456373623802): "
            "JavaScript senders have already lost precision on large numeric ids, "
            "so send the id as a string.",
            id="large-number",
        ),
        pytest.param(
            {"id": "x"},
            "messageId must be a string, not a JSON object.",
            id="object",
        ),
        pytest.param(None, "messageId must be a string, not null.", id="null"),
        pytest.param(
            True, "messageId must be a string, not a boolean (true).", id="boolean"
        ),
        pytest.param(
            "m" * 101,
            "messageId is 101 characters long, over the limit of 100.",
            id="too-long",
        ),
    ],
)
def test_bad_message_id(
    validator: EventValidator, message_id: object, expected: str
) -> None:
    """A messageId that is not a usable string is one error naming messageId."""
    errors = validator.validate(make_event(messageId=message_id))

    assert errors == [EventError("$.messageId", expected)]


def test_missing_message_id(validator: EventValidator) -> None:
    """A missing messageId is reported at its own path with the reason."""
    event = make_event()
    del event["messageId"]

    assert validator.validate(event) == [EventError("$.messageId", MESSAGE_ID_REQUIRED)]


@pytest.mark.parametrize(
    "message_id",
    [
        pytest.param("m-0001", id="plain"),
        pytest.param(" m ", id="padded"),
        pytest.param("m" * 100, id="at-limit"),
    ],
)
def test_good_message_id(validator: EventValidator, message_id: str) -> None:
    """Any string with a non-space character, up to 100 long, is a messageId."""
    assert validator.validate(make_event(messageId=message_id)) == []


# userId and anonymousId (D4, M1)

IDENTITY_REQUIRED = (
    "userId or anonymousId must be a non-empty string: every event must say which "
    "user (userId) or which anonymous visitor (anonymousId) it is about."
)


@pytest.mark.parametrize(
    "identity",
    [
        pytest.param({"userId": None, "anonymousId": "anon-1"}, id="userId-null"),
        pytest.param({"anonymousId": "anon-1"}, id="no-userId-key"),
        pytest.param({"userId": "", "anonymousId": "anon-1"}, id="userId-empty"),
        pytest.param({"userId": "user-1", "anonymousId": None}, id="anon-null"),
    ],
)
def test_one_identity_is_enough(
    validator: EventValidator, identity: dict[str, Any]
) -> None:
    """An event with either userId or anonymousId is valid."""
    event = make_event()
    del event["userId"]
    event.update(identity)

    assert validator.validate(event) == []


@pytest.mark.parametrize(
    "identity",
    [
        pytest.param({"userId": None, "anonymousId": None}, id="both-null"),
        pytest.param({}, id="both-missing"),
        pytest.param({"userId": " ", "anonymousId": ""}, id="both-blank"),
    ],
)
def test_no_identity(validator: EventValidator, identity: dict[str, Any]) -> None:
    """Without a userId or an anonymousId there is exactly one clear error."""
    event = make_event()
    del event["userId"]
    event.update(identity)

    assert validator.validate(event) == [EventError("$", IDENTITY_REQUIRED)]


def test_numeric_user_id(validator: EventValidator) -> None:
    """A numeric userId is refused with the precision explanation, and only that."""
    errors = validator.validate(make_event(userId=157963456373623803))

    assert errors == [
        EventError(
            "$.userId",
            "userId must be a string or null, not a number (157963456373623803): "
            "JavaScript senders have already lost precision on large numeric ids, "
            "so send the id as a string.",
        )
    ]


def test_numeric_anonymous_id_beside_user_id(validator: EventValidator) -> None:
    """A numeric anonymousId is an error even when userId is fine."""
    errors = validator.validate(make_event(anonymousId=12))

    assert paths(errors) == ["$.anonymousId"]
    assert "send the id as a string" in errors[0].message


# type and the per-type rules (M2)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "", "event must contain a non-space character, not ''.", id="empty"
        ),
        pytest.param(
            "  ", "event must contain a non-space character, not '  '.", id="spaces"
        ),
        pytest.param(42, "event must be a string, not a number (42).", id="number"),
        pytest.param(None, "event must be a string, not null.", id="null"),
    ],
)
def test_bad_track_event_name(
    validator: EventValidator, name: object, expected: str
) -> None:
    """A track event name must be a string with a non-space character."""
    assert validator.validate(make_event(event=name)) == [
        EventError("$.event", expected)
    ]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Order Completed", id="canonical"),
        pytest.param(" order completed ", id="padded-lower"),
        pytest.param("ORDER COMPLETED", id="upper"),
        pytest.param("Order  Completed", id="double-space"),
    ],
)
def test_event_name_variants_are_valid(validator: EventValidator, name: str) -> None:
    """Spelling variants are valid events; matching them is the mapping's job."""
    assert validator.validate(make_event(event=name)) == []


def test_track_without_event(validator: EventValidator) -> None:
    """A track call without an event name says why the name is needed."""
    event = make_event()
    del event["event"]

    assert validator.validate(event) == [
        EventError(
            "$.event",
            "event is required: a track call names the action the user took, "
            "such as 'Order Completed'.",
        )
    ]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(
            None,
            EventError(
                "$.type",
                "type is required: it says which call this is (track, identify, "
                "page, screen, group or alias).",
            ),
            id="missing",
        ),
        pytest.param(
            "",
            EventError("$.type", "type must contain a non-space character, not ''."),
            id="empty",
        ),
        pytest.param(
            7,
            EventError("$.type", "type must be a string, not a number (7)."),
            id="number",
        ),
    ],
)
def test_bad_type(
    validator: EventValidator, kind: object, expected: EventError
) -> None:
    """type must be a non-empty string."""
    event = make_event()
    del event["event"]
    if kind is None:
        del event["type"]
    else:
        event["type"] = kind

    assert validator.validate(event) == [expected]


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("delete", id="delete"),
        pytest.param("suppress", id="suppress"),
        pytest.param("Track", id="other-case"),
    ],
)
def test_unknown_type_checks_common_fields_only(
    validator: EventValidator, kind: str
) -> None:
    """An unknown type needs only the common fields, so it can be ignored."""
    event = {"type": kind, "messageId": "m-1", "userId": "user-1"}

    assert validator.validate(event) == []
    assert validator.validate({**event, "messageId": 1}) != []


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(
            {"type": "identify", "traits": {"plan": "basic"}}, [], id="identify"
        ),
        pytest.param({"type": "page", "name": "Home"}, [], id="page-name"),
        pytest.param({"type": "page", "name": None}, [], id="page-name-null"),
        pytest.param({"type": "page"}, [], id="page-no-name"),
        pytest.param(
            {"type": "page", "name": 3},
            [EventError("$.name", "name must be a string or null, not a number (3).")],
            id="page-name-number",
        ),
        pytest.param({"type": "screen", "name": "Settings"}, [], id="screen-name"),
        pytest.param(
            {"type": "screen", "name": ["a"]},
            [EventError("$.name", "name must be a string or null, not an array.")],
            id="screen-name-array",
        ),
        pytest.param({"type": "group", "groupId": "g-1"}, [], id="group"),
        pytest.param(
            {"type": "group"},
            [
                EventError(
                    "$.groupId",
                    "groupId is required: a group call says which group the user "
                    "belongs to.",
                )
            ],
            id="group-no-groupId",
        ),
        pytest.param(
            {"type": "group", "groupId": 5},
            [
                EventError(
                    "$.groupId",
                    "groupId must be a string, not a number (5): JavaScript senders "
                    "have already lost precision on large numeric ids, so send the "
                    "id as a string.",
                )
            ],
            id="group-numeric-groupId",
        ),
        pytest.param({"type": "alias", "previousId": "anon-1"}, [], id="alias"),
        pytest.param(
            {"type": "alias"},
            [
                EventError(
                    "$.previousId",
                    "previousId is required: an alias call says which earlier id "
                    "the new userId replaces.",
                )
            ],
            id="alias-no-previousId",
        ),
        pytest.param(
            {"type": "alias", "previousId": " "},
            [
                EventError(
                    "$.previousId",
                    "previousId must contain a non-space character, not ' '.",
                )
            ],
            id="alias-blank-previousId",
        ),
    ],
)
def test_per_type_rules(
    validator: EventValidator, event: dict[str, Any], expected: list[EventError]
) -> None:
    """Each known type adds its own required fields to the common ones."""
    assert (
        validator.validate({"messageId": "m-1", "userId": "u-1", **event}) == expected
    )


# What real senders send


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"version": 2}, id="version-number"),
        pytest.param({"version": "1.1"}, id="version-string"),
        pytest.param({"properties": {"revenue": "39.95"}}, id="revenue-string"),
        pytest.param({"properties": {}}, id="empty-properties"),
        pytest.param({"sentAt": None}, id="sentAt-null"),
        pytest.param({"timestamp": None}, id="timestamp-null"),
        pytest.param({"channel": "server", "rudderId": "r-1"}, id="rudderstack"),
        pytest.param({"writeKey": "ABC", "projectId": "XYZ"}, id="segment-extras"),
        pytest.param({"somethingNew": [1, {"a": None}]}, id="unknown-field"),
        pytest.param(
            {"context": {"ip": "203.0.113.8"}, "integrations": {"All": False}},
            id="context-integrations",
        ),
        pytest.param({"traits": {"email": "user@example.com"}}, id="traits"),
    ],
)
def test_tolerated_fields(validator: EventValidator, changes: dict[str, Any]) -> None:
    """Fields that real senders add or shape loosely do not make an event invalid."""
    assert validator.validate(make_event(**changes)) == []


@pytest.mark.parametrize("field", ["context", "properties", "traits", "integrations"])
def test_objects_must_be_objects(validator: EventValidator, field: str) -> None:
    """context, properties, traits and integrations must be JSON objects."""
    errors = validator.validate(make_event(**{field: "x"}))

    assert errors == [
        EventError(f"$.{field}", f"{field} must be a JSON object, not a string ('x').")
    ]


# Timestamps (T1, T2, T3)

BAD_TIMES = [
    pytest.param("this should fail", id="words"),
    pytest.param("2023-07-28", id="date-only"),
    pytest.param("2015-10-30T22:45", id="no-seconds"),
    pytest.param("-0001-11-30T00:00:00+0000", id="negative-year"),
    pytest.param("2024-02-30T10:00:00Z", id="february-30"),
    pytest.param("2023-02-29T10:00:00Z", id="not-leap-year"),
    pytest.param("2024-05-01T12:00:00", id="naive"),
    pytest.param("2024-05-01T12:00:00+0000", id="offset-without-colon"),
    pytest.param("2024-05-01 12:00:00Z", id="space-separator"),
    pytest.param("2024-05-01T24:00:00Z", id="hour-24"),
    pytest.param("1990-12-31T23:59:60Z", id="leap-second"),
    pytest.param("0000-01-01T00:00:00Z", id="year-zero"),
    pytest.param("0001-01-01T00:00:00+01:00", id="before-year-1-in-utc"),
    pytest.param("", id="empty"),
]
GOOD_TIMES = [
    pytest.param(
        "2024-05-01T12:00:00.000Z", datetime(2024, 5, 1, 12, tzinfo=UTC), id="zulu"
    ),
    pytest.param(
        "2022-10-17T15:32:44.202+05:30",
        datetime(
            2022, 10, 17, 15, 32, 44, 202000, tzinfo=timezone(timedelta(hours=5.5))
        ),
        id="offset",
    ),
    pytest.param(
        "2024-05-01T12:00:00.123456789Z",
        datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        id="nanoseconds",
    ),
    pytest.param(
        "2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC), id="lower-case"
    ),
    pytest.param(
        "2024-02-29T23:00:00-01:00",
        datetime(2024, 3, 1, 0, tzinfo=UTC),
        id="leap-day-negative-offset",
    ),
]


@pytest.mark.parametrize("value", BAD_TIMES)
@pytest.mark.parametrize(
    "field", ["timestamp", "originalTimestamp", "sentAt", "receivedAt"]
)
def test_bad_timestamps_are_event_errors(
    validator: EventValidator, field: str, value: str
) -> None:
    """A timestamp that breaks the rule is one error at its path, never an exception."""
    errors = validator.validate(make_event(**{field: value}))

    assert errors == [
        EventError(
            f"$.{field}",
            f"{field} must be a real date and time in RFC 3339 form with an offset "
            f"(Z or +HH:MM), such as '2024-05-01T12:00:00Z', not {value!r}.",
        )
    ]


@pytest.mark.parametrize("value", BAD_TIMES)
def test_parser_rejects_bad_timestamps(value: str) -> None:
    """parse_timestamp returns None for what the schema rejects."""
    assert parse_timestamp(value) is None


@pytest.mark.parametrize(("value", "expected"), GOOD_TIMES)
def test_good_timestamps(
    validator: EventValidator, value: str, expected: datetime
) -> None:
    """Schema and parser both accept RFC 3339 with an offset, as aware datetimes."""
    parsed = parse_timestamp(value)

    assert validator.validate(make_event(timestamp=value)) == []
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is not None


def test_parser_rejects_non_strings() -> None:
    """parse_timestamp returns None rather than raising on a non-string."""
    assert parse_timestamp(1714564800) is None  # type: ignore[arg-type]


def test_numeric_timestamp(validator: EventValidator) -> None:
    """An epoch number is refused with the form to use instead."""
    errors = validator.validate(make_event(timestamp=1714564800))

    assert errors == [
        EventError(
            "$.timestamp",
            "timestamp must be a string or null, not a number (1714564800): send an "
            "RFC 3339 date-time such as '2024-05-01T12:00:00Z'.",
        )
    ]


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        pytest.param(
            {
                "timestamp": "2024-05-01T12:00:00Z",
                "originalTimestamp": "2024-05-01T11:00:00Z",
                "receivedAt": "2024-05-01T13:00:00Z",
            },
            datetime(2024, 5, 1, 12, tzinfo=UTC),
            id="timestamp-first",
        ),
        pytest.param(
            {"originalTimestamp": "2022-10-17T15:32:44.202+05:30"},
            datetime(2022, 10, 17, 10, 2, 44, 202000, tzinfo=UTC),
            id="original-with-offset",
        ),
        pytest.param(
            {
                "timestamp": None,
                "originalTimestamp": None,
                "receivedAt": "2024-05-01T13:00:00Z",
            },
            datetime(2024, 5, 1, 13, tzinfo=UTC),
            id="nulls-skipped",
        ),
        pytest.param({"sentAt": "2024-05-01T13:00:00Z"}, None, id="sentAt-ignored"),
        pytest.param({}, None, id="none"),
    ],
)
def test_event_time(times: dict[str, Any], expected: datetime | None) -> None:
    """The event time is timestamp, else originalTimestamp, else receivedAt."""
    event = make_event()
    del event["timestamp"]
    event.update(times)

    assert event_time(event) == expected


def test_event_time_of_fixture_without_timestamp() -> None:
    """T1's RudderStack fixture takes its time from originalTimestamp, offset kept."""
    path = EVENT_FIXTURES / "rudderstack_courier_track_offset_ts.json"
    event = json.loads(path.read_text(encoding="utf-8"))

    moment = event_time(event)

    assert moment is not None
    assert moment.utcoffset() == timedelta(hours=5, minutes=30)
    assert moment == datetime(2022, 10, 17, 10, 2, 44, 202000, tzinfo=UTC)


# Start-up self-test (T2)


def test_format_checker_self_test_passes() -> None:
    """The installed checker really checks date-time."""
    check_format_checker()


def test_self_test_fails_without_date_time_checker() -> None:
    """A checker without date-time (rfc3339-validator missing) stops start-up."""
    with pytest.raises(SchemaSetupError, match="install rfc3339-validator"):
        check_format_checker(FormatChecker(formats=()))


def test_self_test_fails_when_date_time_accepts_anything() -> None:
    """A date-time checker that lets 'not a date' through stops start-up."""
    checker = FormatChecker(formats=())
    checker.checks("date-time")(lambda instance: True)

    with pytest.raises(SchemaSetupError, match="accepts 'not a date'"):
        check_format_checker(checker)


def test_self_test_fails_when_date_time_rejects_good_times() -> None:
    """A date-time checker that refuses a good time stops start-up too."""
    checker = FormatChecker(formats=())
    checker.checks("date-time")(lambda instance: False)

    with pytest.raises(SchemaSetupError, match=r"rejects '2024-05-01T12:00:00\.000Z'"):
        check_format_checker(checker)


# Size and shape


def test_event_over_size_limit(validator: EventValidator) -> None:
    """An event over 32 KiB of compact UTF-8 JSON is refused with both numbers."""
    event = make_event(properties={"note": "é" * MAX_EVENT_BYTES})
    size = len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())

    errors = validator.validate(event)

    assert errors == [
        EventError(
            "$",
            f"the event is {size:,} bytes as compact UTF-8 JSON, over the limit of "
            "32,768 bytes (Segment caps events at 32 KiB).",
        )
    ]


def test_event_at_size_limit(validator: EventValidator) -> None:
    """An event of exactly 32 KiB is accepted."""
    event = make_event(properties={"note": ""})
    base = len(json.dumps(event, separators=(",", ":")).encode())
    event["properties"]["note"] = "x" * (MAX_EVENT_BYTES - base)

    assert validator.validate(event) == []
    assert validator.validate(make_event(properties={"note": "x" * MAX_EVENT_BYTES}))


def test_lone_surrogates_are_rejected(validator: EventValidator) -> None:
    """A lone surrogate from a JSON escape is an error, never a crash downstream."""
    event = make_event(properties={"note": json.loads('"\\ud800"')})

    [error] = validator.validate(event)

    assert error.path == "$"
    assert "lone UTF-16 surrogate" in error.message


def test_value_json_cannot_hold(validator: EventValidator) -> None:
    """A Python value with no JSON form is an error at the root, not an exception."""
    errors = validator.validate(make_event(properties={"tags": {"a", "b"}}))

    assert errors == [
        EventError("$", "the event holds a value that JSON cannot represent.")
    ]


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        pytest.param("track", "a string", id="string"),
        pytest.param([make_event()], "an array", id="array"),
        pytest.param(None, "null", id="null"),
        pytest.param(42, "a number", id="number"),
        pytest.param(True, "a boolean", id="boolean"),
    ],
)
def test_non_object_event(validator: EventValidator, event: object, kind: str) -> None:
    """Anything but a JSON object is one error at the root."""
    assert validator.validate(event) == [
        EventError("$", f"an event must be a JSON object, not {kind}.")
    ]


def test_errors_are_sorted_by_path(validator: EventValidator) -> None:
    """Several problems come back together, sorted by path, without duplicates."""
    event: dict[str, Any] = {
        "type": "group",
        "userId": None,
        "sentAt": "soon",
        "context": [],
    }

    errors = validator.validate(event)

    assert paths(errors) == [
        "$",
        "$.context",
        "$.groupId",
        "$.messageId",
        "$.sentAt",
    ]
    assert all(error.message.endswith(".") for error in errors)
    assert not any("{" in error.message for error in errors)


def test_error_count_is_capped(validator: EventValidator) -> None:
    """Past the cap, the last slot says how many problems were left out."""
    capped = dataclasses.replace(validator, max_errors=3)
    event = {"type": "track", "sentAt": 1, "context": 2, "traits": 3}

    errors = capped.validate(event)

    assert len(validator.validate(event)) == 6
    assert errors[:2] == validator.validate(event)[:2]
    assert errors[2] == EventError("$", "4 more problems were found but not listed.")


# Loading the schemas


def test_default_schema_dir() -> None:
    """The default schema directory is the repository's schemas/."""
    assert default_schema_dir() == SCHEMAS


def test_create_validator_uses_default_dir() -> None:
    """Without an argument, create_validator loads the shipped schemas."""
    validator = create_validator()

    assert set(validator.by_type) == KNOWN_TYPES
    assert validator.validate(make_event()) == []


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_files_declare_draft_and_id(name: str) -> None:
    """Each schema names draft 2020-12 and its own $id; per-type ones use common."""
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://destination.invalid/schemas/{name}"
    assert name == "common.json" or schema["$ref"] == "common.json"


def test_missing_schema_file(schema_copy: Path) -> None:
    """A missing schema file stops start-up, naming the file."""
    (schema_copy / "alias.json").unlink()

    with pytest.raises(SchemaSetupError, match=r"cannot read schema alias\.json"):
        create_validator(schema_copy)


def test_schema_file_not_json(schema_copy: Path) -> None:
    """A schema file that is not JSON stops start-up, naming the file."""
    (schema_copy / "page.json").write_text("{", encoding="utf-8")

    with pytest.raises(SchemaSetupError, match=r"cannot read schema page\.json"):
        create_validator(schema_copy)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"$schema": "http://json-schema.org/draft-07/schema#"},
            r"track\.json must declare \$schema",
            id="other-draft",
        ),
        pytest.param({"$id": None}, r"track\.json must have a string \$id", id="no-id"),
        pytest.param(
            {"required": "event"},
            r"track\.json is not a valid draft 2020-12 schema at \$\.required",
            id="invalid-keyword",
        ),
        pytest.param(
            {"properties": {"when": {"format": "date-time"}}},
            r"track\.json has a format 'date-time' without a type",
            id="format-without-type",
        ),
        pytest.param(
            {"$ref": "https://example.com/remote.json"},
            r"track\.json refers to 'https://example\.com/remote\.json'",
            id="remote-ref",
        ),
    ],
)
def test_bad_schema_stops_start_up(
    schema_copy: Path, changes: dict[str, Any], expected: str
) -> None:
    """A schema that is wrong or unusable stops start-up with its file name."""
    edit_schema(schema_copy, "track.json", **changes)

    with pytest.raises(SchemaSetupError, match=expected):
        create_validator(schema_copy)


def test_schema_not_an_object(schema_copy: Path) -> None:
    """A schema file holding an array stops start-up."""
    (schema_copy / "group.json").write_text("[]", encoding="utf-8")

    with pytest.raises(SchemaSetupError, match=r"group\.json must be a JSON object"):
        create_validator(schema_copy)


def test_nested_paths_and_generic_messages(schema_copy: Path) -> None:
    """Nested fields get JSON paths; unnamed rules still get plain sentences."""
    edit_schema(
        schema_copy,
        "track.json",
        properties={
            "properties": {
                "type": "object",
                "required": ["orderId"],
                "properties": {
                    "order id": {"type": "string", "pattern": "^o-"},
                    "items": {"type": "array", "items": {"minimum": 0}},
                    "code": {"type": "string", "minLength": 3},
                },
            }
        },
    )
    validator = create_validator(schema_copy)
    event = make_event(properties={"order id": "x", "items": [1, -1], "code": "ab"})

    errors = validator.validate(event)

    assert errors == [
        EventError(
            "$.properties.code", "properties.code must be at least 3 characters long."
        ),
        EventError(
            "$.properties.items[1]",
            "properties.items[1] breaks the 'minimum' rule of the event schema.",
        ),
        EventError(
            "$.properties['order id']",
            "properties['order id'] does not have the expected form: 'x'.",
        ),
        EventError("$.properties.orderId", "properties.orderId is required."),
    ]


@pytest.mark.parametrize("field", ["userId", "anonymousId"])
def test_ids_refuse_control_characters(validator: EventValidator, field: str) -> None:
    """A recipient id with a control character is refused like a messageId with one."""
    [error] = validator.validate(make_event(**{field: "user\u0001"}))

    assert error.path == f"$.{field}"
    assert "control characters" in error.message


@pytest.mark.parametrize("blank", ["\u200b", "\ufeff", " \u2060 "])
def test_zero_width_ids_are_blank(validator: EventValidator, blank: str) -> None:
    """An id of only zero-width characters shows nothing, so it is blank."""
    [error] = validator.validate(make_event(messageId=blank))

    assert error.path == "$.messageId"
    assert "non-space character" in error.message
