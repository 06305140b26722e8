"""The tracking plan: JSON Schemas for the properties of named events.

A mapping checks an event's ``properties`` (``traits`` for identify and group)
against its ``properties_schema``, or else against ``schemas/events/<event
name>.json`` when that file exists. An event that breaks the plan is rejected
with the JSON path of each violation, so bad data never reaches a customer.
With ``unknown_properties: reject`` a top-level property the schema does not
declare is a violation too.

Schemas are draft 2020-12, checked when the mappings load; ``$ref`` may only
point inside the same schema, so nothing is ever fetched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from destination.conditions import normalize_name
from destination.errors import EventError, MappingError, MappingProblem
from destination.event_path import format_steps
from destination.mapping_file import Document, JsonPath, format_field, read_document
from destination.validation import MAX_ERRORS_PER_EVENT, default_schema_dir

PLAN_SUFFIX = ".json"


def default_plan_dir() -> Path:
    """``schemas/events/``, next to the event schemas the service ships."""
    return default_schema_dir() / "events"


@dataclass(frozen=True, slots=True)
class PropertySchema:
    """One checked schema and where it came from, for messages."""

    origin: str
    validator: Draft202012Validator
    declared: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]

    def violations(
        self, event: Mapping[str, Any], *, reject_unknown: bool
    ) -> list[EventError]:
        """Each way the event's properties break this schema, with its JSON path."""
        field = "traits" if event.get("type") in ("identify", "group") else "properties"
        properties = event.get(field)
        if properties is None:
            properties = {}
        errors = [
            EventError(
                format_steps((field, *error.absolute_path)),
                f"breaks the tracking plan ({self.origin}): {error.message}.",
            )
            for error in self.validator.iter_errors(properties)
        ]
        if reject_unknown and isinstance(properties, dict):
            errors += [
                EventError(
                    format_steps((field, key)),
                    f"{key!r} is not in the tracking plan ({self.origin}); add it "
                    "to the schema, or set unknown_properties: allow.",
                )
                for key in properties
                if key not in self.declared
                and not any(pattern.search(key) for pattern in self.patterns)
            ]
        return sorted(errors, key=lambda error: error.path)[:MAX_ERRORS_PER_EVENT]


@dataclass(frozen=True, slots=True)
class TrackingPlan:
    """The schemas in ``schemas/events/``, by exact and by normalised name."""

    by_name: Mapping[str, PropertySchema]
    by_normalized: Mapping[str, PropertySchema]

    def schema_for(self, name: Any, *, normalized: bool) -> PropertySchema | None:
        if not isinstance(name, str):
            return None
        found = self.by_name.get(name)
        if found is None and normalized:
            found = self.by_normalized.get(normalize_name(name))
        return found


EMPTY_PLAN = TrackingPlan({}, {})


def load_tracking_plan(directory: Path) -> tuple[TrackingPlan, list[MappingProblem]]:
    """Read every ``<event name>.json`` in ``directory``; a missing one is empty."""
    if not directory.is_dir():
        return EMPTY_PLAN, []
    by_name: dict[str, PropertySchema] = {}
    by_normalized: dict[str, PropertySchema] = {}
    problems: list[MappingProblem] = []
    for path in sorted(directory.glob("*" + PLAN_SUFFIX)):
        if path.name.startswith("."):
            continue
        schema, found = read_property_schema(path)
        problems += found
        if schema is None:
            continue
        name = path.name.removesuffix(PLAN_SUFFIX)
        key = normalize_name(name)
        other = by_normalized.get(key)
        if other is not None:
            message = (
                f"names the same event as {other.origin} once names are normalised; "
                "keep one file"
            )
            problems.append(MappingProblem(str(path), None, None, None, message))
        by_name[name] = schema
        by_normalized.setdefault(key, schema)
    return TrackingPlan(by_name, by_normalized), problems


def read_property_schema(
    path: Path,
) -> tuple[PropertySchema | None, list[MappingProblem]]:
    """Read one schema file, with the file and line of each problem."""
    try:
        document = read_document(path)
    except MappingError as error:
        return None, error.problems
    if document.issues:
        return None, [_locate(document, i.path, i.message) for i in document.issues]
    problems: list[MappingProblem] = []
    schema = check_property_schema(
        document.value,
        lambda where, message: problems.append(_locate(document, where, message)),
        origin=path.name,
    )
    return schema, problems


def _locate(document: Document, where: JsonPath, message: str) -> MappingProblem:
    field = format_field(where) or None
    return MappingProblem(document.file, document.line(where), None, field, message)


def check_property_schema(
    value: Any,
    report: Callable[[JsonPath, str], None],
    *,
    origin: str,
    path: JsonPath = (),
) -> PropertySchema | None:
    """Check a schema written in a file or a mapping; None after reporting."""
    if not isinstance(value, dict):
        report(path, "a properties schema must be a JSON Schema object")
        return None
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as error:
        report(
            (*path, *error.absolute_path),
            f"is not a valid JSON Schema: {error.message}",
        )
        return None
    for where, ref in _refs(value, path):
        if not ref.startswith("#"):
            report(where, f"$ref {ref!r} points outside the schema; only '#...' refs")
            return None
    properties = value.get("properties", {})
    patterns = value.get("patternProperties", {})
    try:
        compiled = tuple(re.compile(pattern) for pattern in patterns)
    except re.error as error:
        report((*path, "patternProperties"), f"has a bad pattern: {error}")
        return None
    return PropertySchema(
        origin,
        Draft202012Validator(value, format_checker=Draft202012Validator.FORMAT_CHECKER),
        frozenset(properties) if isinstance(properties, dict) else frozenset(),
        compiled,
    )


def _refs(node: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield (*path, key), value
            else:
                yield from _refs(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _refs(value, (*path, index))
