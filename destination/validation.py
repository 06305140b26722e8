"""Per-event validation against the JSON Schemas in ``schemas/``.

``common.json`` holds Segment's common fields; each known call type has its own
schema that refers to it. An event whose ``type`` is unknown is checked against
``common.json`` only, so the service can acknowledge it and count it as ignored.

Problems are returned as ``EventError`` values (a JSON path and one plain
sentence), never raised: one bad event must not hide the others in a batch.

Timestamps follow one rule, shared by the schemas and by ``parse_timestamp``:
RFC 3339 with a mandatory offset, a real calendar date, and an instant Python
can represent in UTC. See docs/events.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable

from destination.errors import EventError, SchemaSetupError

MAX_EVENT_BYTES = 32 * 1024
MAX_ERRORS_PER_EVENT = 20
KNOWN_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})

_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_TIME_FIELDS = ("timestamp", "originalTimestamp", "receivedAt")
_ID_FIELDS = frozenset({"messageId", "userId", "anonymousId", "groupId", "previousId"})
_EXAMPLE_TIME = "2024-05-01T12:00:00Z"
# A character that shows: not white space, not a zero-width one.
_NON_SPACE = "[^\\s\\u200b-\\u200d\\u2060\\ufeff]"
_NO_CONTROL = "^[^\\u0000-\\u001f\\u007f]*$"
_SHORTHAND_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_WHY_REQUIRED = {
    "messageId": "the CDP sets it on every event and destination uses it "
    "to send each event once",
    "type": "it says which call this is (track, identify, page, screen, group "
    "or alias)",
    "event": "a track call names the action the user took, such as 'Order Completed'",
    "groupId": "a group call says which group the user belongs to",
    "previousId": "an alias call says which earlier id the new userId replaces",
}
_ANY_OF_MESSAGES = {
    frozenset({"userId", "anonymousId"}): "userId or anonymousId must be a "
    "non-empty string: every event must say which user (userId) or which "
    "anonymous visitor (anonymousId) it is about",
}
_TYPE_WORDS = {
    "string": "a string",
    "null": "null",
    "object": "a JSON object",
    "array": "an array",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
}

Location = tuple[str | int, ...]


class _Problem(NamedTuple):
    location: Location
    message: str


def default_schema_dir() -> Path:
    """Return the ``schemas/`` directory that ships next to the package."""
    return Path(__file__).resolve().parent.parent / "schemas"


def _to_datetime(value: str) -> datetime | None:
    # jsonschema upper-cases before checking, so 't' and 'z' pass the RFC 3339
    # check; fromisoformat only knows the upper-case forms.
    try:
        parsed = datetime.fromisoformat(value.upper())
        # Year 1 with a positive offset (or 9999 with a negative one) parses,
        # but is not an instant in UTC: comparing it later would overflow.
        parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed


def _create_format_checker() -> FormatChecker:
    checker = FormatChecker()
    rfc3339 = checker.checkers.get("date-time")
    if rfc3339 is None:
        # jsonschema only registers date-time when rfc3339-validator imports;
        # without it, formats pass silently. check_format_checker says so.
        return checker
    conforms_to_rfc3339 = rfc3339[0]

    @checker.checks("date-time")
    def is_date_time(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        return conforms_to_rfc3339(instance) and _to_datetime(instance) is not None

    return checker


_FORMAT_CHECKER = _create_format_checker()
_SELF_TEST = (
    ("not a date", False),
    ("2024-02-30T10:00:00Z", False),
    ("2024-05-01T12:00:00", False),
    ("2024-05-01T12:00:00.000Z", True),
)


def check_format_checker(checker: FormatChecker | None = None) -> None:
    """Raise ``SchemaSetupError`` unless date-time formats are really checked."""
    checker = _FORMAT_CHECKER if checker is None else checker
    if "date-time" not in checker.checkers:
        raise SchemaSetupError(
            "jsonschema has no date-time format checker, so timestamps would "
            "go unchecked: install rfc3339-validator"
        )

    for value, valid in _SELF_TEST:
        if checker.conforms(value, "date-time") is not valid:
            verdict = "rejects" if valid else "accepts"
            raise SchemaSetupError(
                f"the date-time format checker {verdict} {value!r}, against "
                "the rule in docs/events.md: check the installed rfc3339-validator"
            )


def parse_timestamp(value: str) -> datetime | None:
    """Return the aware datetime of an RFC 3339 date-time, or None if it is not one."""
    if not isinstance(value, str) or not _FORMAT_CHECKER.conforms(value, "date-time"):
        return None
    return _to_datetime(value)


def event_time(event: Mapping[str, Any]) -> datetime | None:
    """Return when a valid event happened: timestamp, originalTimestamp, receivedAt."""
    for field in _TIME_FIELDS:
        value = event.get(field)
        if value is not None:
            return parse_timestamp(value) if isinstance(value, str) else None
    return None


@dataclass(frozen=True, slots=True)
class EventValidator:
    """Validates single events; build it once with ``create_validator``."""

    common: Draft202012Validator
    by_type: Mapping[str, Draft202012Validator]
    max_errors: int = MAX_ERRORS_PER_EVENT

    def validate(self, event: object) -> list[EventError]:
        """Return what is wrong with ``event``; an empty list means it is valid."""
        if not isinstance(event, dict):
            return [
                EventError(
                    "$",
                    f"an event must be a JSON object, not {describe_json_type(event)}.",
                )
            ]

        size_error = _check_size(event)
        if size_error is not None:
            return [size_error]

        kind = event.get("type")
        validator = self.common
        if isinstance(kind, str):
            validator = self.by_type.get(kind, self.common)
        problems = _problems(validator.iter_errors(event))

        return _cap(problems, self.max_errors)


def create_validator(schema_dir: Path | None = None) -> EventValidator:
    """Load and check every schema, then build the validators used per event."""
    directory = default_schema_dir() if schema_dir is None else schema_dir
    check_format_checker()

    names = ("common", *sorted(KNOWN_TYPES))
    schemas = {name: _load_schema(directory / f"{name}.json") for name in names}
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    for name, schema in schemas.items():
        _check_refs(f"{name}.json", schema, registry)

    validators = {
        name: Draft202012Validator(
            schema, registry=registry, format_checker=_FORMAT_CHECKER
        )
        for name, schema in schemas.items()
    }
    common = validators.pop("common")

    return EventValidator(common=common, by_type=MappingProxyType(validators))


def _load_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaSetupError(f"cannot read schema {path.name}: {exc}") from exc

    if not isinstance(schema, dict):
        raise SchemaSetupError(f"schema {path.name} must be a JSON object")
    if schema.get("$schema") != _DRAFT_2020_12:
        raise SchemaSetupError(
            f"schema {path.name} must declare $schema {_DRAFT_2020_12!r}"
        )
    if not isinstance(schema.get("$id"), str):
        raise SchemaSetupError(f"schema {path.name} must have a string $id")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _render_path(tuple(exc.absolute_path))
        raise SchemaSetupError(
            f"schema {path.name} is not a valid draft 2020-12 schema at {where}: "
            f"{exc.message}"
        ) from exc
    for node in _walk(schema):
        if isinstance(node.get("format"), str) and "type" not in node:
            # A format alone accepts every other JSON type, so a number would
            # slip through where a date-time string was meant.
            raise SchemaSetupError(
                f"schema {path.name} has a format {node['format']!r} without a type"
            )

    return schema


def _check_refs(file: str, schema: dict[str, Any], registry: Registry[Any]) -> None:
    # Resolve every $ref now: at validation time an unknown one would raise
    # for the first event that reaches it, and nothing is ever fetched.
    resolver = registry.resolver(base_uri=schema["$id"])
    for node in _walk(schema):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            continue
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise SchemaSetupError(
                f"schema {file} refers to {ref!r}, which is not in the loaded schemas"
            ) from exc


def _walk(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _check_size(event: dict[str, Any]) -> EventError | None:
    try:
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return EventError("$", "the event holds a value that JSON cannot represent.")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        # JSON's "\ud800" escape can name half of a UTF-16 pair alone; that is
        # no character, and no store, log or API downstream can carry it.
        return EventError(
            "$",
            f"the event holds a lone UTF-16 surrogate "
            f"({text[error.start]!r}) that is not a Unicode character; send "
            "text as valid Unicode.",
        )
    if size <= MAX_EVENT_BYTES:
        return None
    return EventError(
        "$",
        f"the event is {size:,} bytes as compact UTF-8 JSON, over the limit of "
        f"{MAX_EVENT_BYTES:,} bytes (Segment caps events at 32 KiB).",
    )


def _problems(errors: Iterable[ValidationError]) -> list[_Problem]:
    raw = list(errors)
    located = {
        tuple(error.absolute_path) for error in raw if error.validator != "anyOf"
    }
    problems: dict[_Problem, None] = {}
    for error in raw:
        if error.validator == "anyOf" and _is_explained(error, located):
            continue
        for problem in _describe(error):
            problems.setdefault(problem)

    return sorted(problems, key=lambda problem: _sort_key(problem.location))


def _is_explained(error: ValidationError, located: set[Location]) -> bool:
    # A numeric userId also fails "userId or anonymousId"; the type error on
    # userId already says what to fix, so the second sentence is noise.
    where = tuple(error.absolute_path)
    return any((*where, name) in located for name in _branch_names(error))


def _branch_names(error: ValidationError) -> list[str]:
    names: list[str] = []
    branches = error.validator_value if isinstance(error.validator_value, list) else []
    for branch in branches:
        if isinstance(branch, dict):
            names.extend(
                name for name in branch.get("required", ()) if name not in names
            )
    return names


def _describe(error: ValidationError) -> list[_Problem]:
    where = tuple(error.absolute_path)
    keyword = error.validator
    # The stubs allow "unset"; errors from iter_errors always carry both.
    expected: Any = error.validator_value
    value: Any = error.instance
    name = _field_name(where)

    if keyword == "required":
        missing = [field for field in expected if field not in value]
        return [_required((*where, field)) for field in missing]
    if keyword == "type":
        message = _wrong_type(where, expected, value)
    elif keyword == "pattern" and expected == _NON_SPACE:
        message = f"{name} must contain a non-space character, not {_show(value)}."
    elif keyword == "pattern" and expected == _NO_CONTROL:
        message = (
            f"{name} must not contain control characters such as U+0000, "
            f"as {_show(value)} does; ids are text a database can index."
        )
    elif keyword == "pattern":
        message = f"{name} does not have the expected form: {_show(value)}."
    elif keyword == "maxLength":
        message = (
            f"{name} is {len(value)} characters long, over the limit of {expected}."
        )
    elif keyword == "minLength":
        message = f"{name} must be at least {expected} characters long."
    elif keyword == "format" and expected == "date-time":
        message = (
            f"{name} must be a real date and time in RFC 3339 form with an offset "
            f"(Z or +HH:MM), such as {_EXAMPLE_TIME!r}, not {_show(value)}."
        )
    elif keyword == "format":
        message = f"{name} must be a valid {expected}, not {_show(value)}."
    elif keyword == "anyOf":
        fallback = f"{name} matches none of its allowed forms"
        message = _ANY_OF_MESSAGES.get(frozenset(_branch_names(error)), fallback) + "."
    else:
        message = f"{name} breaks the {keyword!r} rule of the event schema."

    return [_Problem(where, message)]


def _required(location: Location) -> _Problem:
    name = _field_name(location)
    why = _WHY_REQUIRED.get(name) if len(location) == 1 else None
    reason = "" if why is None else f": {why}"
    return _Problem(location, f"{name} is required{reason}.")


def _wrong_type(where: Location, expected: str | list[str], value: object) -> str:
    allowed = [expected] if isinstance(expected, str) else expected
    words = " or ".join(_TYPE_WORDS.get(kind, kind) for kind in allowed)
    message = f"{_field_name(where)} must be {words}, not {describe_json_type(value)}"
    if isinstance(value, bool | int | float | str):
        message += f" ({_show(value)})"

    # Hints only for the top-level fields the schemas name.
    field = where[0] if len(where) == 1 else None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if field in _ID_FIELDS and is_number:
        message += (
            ": JavaScript senders have already lost precision on large numeric "
            "ids, so send the id as a string"
        )
    elif field in (*_TIME_FIELDS, "sentAt"):
        message += f": send an RFC 3339 date-time such as {_EXAMPLE_TIME!r}"

    return message + "."


def describe_json_type(value: object) -> str:
    """How an error message names a value's JSON type: 'a string', 'an array'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a JSON object"
    return type(value).__name__


def _show(value: object, limit: int = 60) -> str:
    # Python's True and None would confuse a sender who wrote JSON.
    text = json.dumps(value) if isinstance(value, bool) else repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _cap(problems: Sequence[_Problem], limit: int) -> list[EventError]:
    errors = [EventError(_render_path(p.location), p.message) for p in problems]
    if len(errors) <= limit:
        return errors
    hidden = len(errors) - (limit - 1)
    note = EventError("$", f"{hidden} more problems were found but not listed.")
    return [*errors[: limit - 1], note]


def _sort_key(location: Location) -> tuple[tuple[int, int, str], ...]:
    return tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, part) for part in location
    )


def _render_path(location: Location) -> str:
    parts = ["$"]
    for part in location:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _SHORTHAND_NAME.fullmatch(part):
            parts.append(f".{part}")
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"['{escaped}']")
    return "".join(parts)


def _field_name(location: Location) -> str:
    if not location:
        return "the event"
    return _render_path(location).removeprefix("$").removeprefix(".")
