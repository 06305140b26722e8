"""Conditions in ``when``: Segment's trigger conditions, and how names match.

A condition tests the event's name (``{event: {starts_with: "Order "}}``) or a
value at a path (``{path: $.properties.total, greater_than: 100}``); ``all``
and ``any`` group them. ``condition_string`` parses Segment's string form into
the same objects. Nothing here evaluates code: a condition is data, checked
when the file loads and compared against the event.

Comparisons are the ones docs/mappings.md pins: ``equals`` compares JSON
values, and a string equals a number or boolean written the same way
(``"10"`` equals ``10``); numeric tests take numbers or numeric strings; string
tests are false for anything that is not a string, in both their forms.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from destination.event_path import MISSING, EventPath, parse_path
from destination.json_text import format_number
from destination.mapping_file import JsonPath, json_kind

Report = Callable[[JsonPath, str], None]

STRING_OPERATORS = (
    "contains",
    "not_contains",
    "starts_with",
    "not_starts_with",
    "ends_with",
    "not_ends_with",
)
NAME_OPERATORS = ("is", "is_not", *STRING_OPERATORS)
NUMBER_OPERATORS = (
    "greater_than",
    "greater_than_or_equal",
    "less_than",
    "less_than_or_equal",
)
VALUE_OPERATORS = (
    "exists",
    "equals",
    "not_equals",
    "is",
    *NUMBER_OPERATORS,
    *STRING_OPERATORS,
)
MAX_CONDITIONS = 100
MAX_GROUP_DEPTH = 8

_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_SHOWN_CHARS = 40


def normalize_name(name: str) -> str:
    """The name-matching policy: Unicode NFC, case-folded, trimmed, spaces collapsed."""
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())
    return " ".join(folded.split())


class Condition:
    """Base of every condition: ``holds`` for one event, ``why_not`` explains."""

    __slots__ = ()

    def holds(self, event: Any) -> bool:
        raise NotImplementedError

    def why_not(self, event: Any) -> str | None:
        """None when the condition holds, else a sentence saying what failed."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class NameTest(Condition):
    """A test of the event's name; ``values`` are normalised when ``normalized``."""

    operator: str
    values: tuple[str, ...]
    normalized: bool = False

    def holds(self, event: Any) -> bool:
        name = event.get("event") if isinstance(event, dict) else None
        if not isinstance(name, str):
            return False
        if self.normalized:
            name = normalize_name(name)
        if self.operator == "is":
            return name in self.values
        if self.operator == "is_not":
            return name not in self.values
        return _string_test(self.operator, name, self.values[0])

    def why_not(self, event: Any) -> str | None:
        if self.holds(event):
            return None
        shown = self.values[0] if len(self.values) == 1 else list(self.values)
        name = event.get("event") if isinstance(event, dict) else None
        return f"the event name {name!r} fails {self.operator} {shown!r}"


@dataclass(frozen=True, slots=True)
class ValueTest(Condition):
    """A test of the value at ``path``."""

    path: EventPath
    operator: str
    operand: Any

    def holds(self, event: Any) -> bool:
        return _value_test(self.operator, self.path.resolve(event), self.operand)

    def why_not(self, event: Any) -> str | None:
        actual = self.path.resolve(event)
        if _value_test(self.operator, actual, self.operand):
            return None
        test = f"{self.path.source} {self.operator} {self.operand!r}"
        return f"{test} is false: the value is {describe_value(actual)}"


@dataclass(frozen=True, slots=True)
class Group(Condition):
    """``all``: every child holds; ``any``: at least one does."""

    kind: Literal["all", "any"]
    children: tuple[Condition, ...]

    def holds(self, event: Any) -> bool:
        if self.kind == "all":
            return all(child.holds(event) for child in self.children)
        return any(child.holds(event) for child in self.children)

    def why_not(self, event: Any) -> str | None:
        reasons = [child.why_not(event) for child in self.children]
        failed = [reason for reason in reasons if reason is not None]
        if self.kind == "all":
            return failed[0] if failed else None
        if len(failed) < len(reasons):
            return None
        return "none of these holds: " + "; ".join(failed)


def describe_value(value: Any) -> str:
    """A short description of an event value, for preview and check output."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json_kind(value)
    shown = repr(value)
    if len(shown) > _SHOWN_CHARS:
        shown = shown[: _SHOWN_CHARS - 3] + "..."
    return f"{json_kind(value)} {shown}"


def _string_test(operator: str, text: str, operand: str) -> bool:
    positive = operator.removeprefix("not_")
    if positive == "contains":
        found = operand in text
    elif positive == "starts_with":
        found = text.startswith(operand)
    else:
        found = text.endswith(operand)
    return found if positive == operator else not found


def _value_test(operator: str, actual: Any, operand: Any) -> bool:
    if operator == "exists":
        return (actual is not MISSING and actual is not None) is operand
    if operator in ("equals", "is"):
        return values_equal(actual, operand)
    if operator == "not_equals":
        return not values_equal(actual, operand)
    if operator in NUMBER_OPERATORS:
        number = _number(actual)
        return number is not None and _compare(operator, number, operand)
    return isinstance(actual, str) and _string_test(operator, actual, operand)


def values_equal(actual: Any, expected: Any) -> bool:
    """Equal as JSON; a string also equals a number or boolean written the same."""
    if actual is MISSING:
        return False
    if isinstance(actual, str) != isinstance(expected, str):
        text, other = (
            (actual, expected) if isinstance(actual, str) else (expected, actual)
        )
        return isinstance(other, bool | int | float) and _text_of(other) == text
    if isinstance(actual, bool) or isinstance(expected, bool):
        # Python's True == 1; JSON's true is not the number 1.
        return type(actual) is type(expected) and actual == expected
    return bool(actual == expected)


def _text_of(value: bool | int | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return format_number(value)


def _number(value: Any) -> int | float | Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and len(value) <= 100 and _NUMBER_TEXT.fullmatch(value):
        return Decimal(value)
    return None


def _compare(operator: str, number: int | float | Decimal, operand: Any) -> bool:
    if operator == "greater_than":
        return bool(number > operand)
    if operator == "greater_than_or_equal":
        return bool(number >= operand)
    if operator == "less_than":
        return bool(number < operand)
    return bool(number <= operand)


def compile_conditions(
    value: Any,
    path: JsonPath,
    report: Report,
    kind: Literal["all", "any"],
    *,
    normalized: bool,
) -> Group | None:
    """Read an ``all`` or ``any`` list from a file, reporting each problem."""
    reader = _Reader(report, normalized)
    group = reader.group(value, path, kind, 0)
    if reader.count > MAX_CONDITIONS:
        report(path, f"a mapping holds more than {MAX_CONDITIONS} conditions")
        return None
    return group


class _Reader:
    def __init__(self, report: Report, normalized: bool) -> None:
        self.report = report
        self.normalized = normalized
        self.count = 0

    def group(
        self, value: Any, path: JsonPath, kind: Literal["all", "any"], depth: int
    ) -> Group | None:
        if not isinstance(value, list) or not value:
            self.report(path, f"{kind} must be a non-empty list of conditions")
            return None
        if depth >= MAX_GROUP_DEPTH:
            self.report(path, f"conditions nest deeper than {MAX_GROUP_DEPTH} groups")
            return None
        children = [
            self.condition(item, (*path, index), depth)
            for index, item in enumerate(value)
        ]
        if any(child is None for child in children):
            return None
        return Group(kind, tuple(child for child in children if child is not None))

    def condition(self, value: Any, path: JsonPath, depth: int) -> Condition | None:
        self.count += 1
        if isinstance(value, dict) and len(value) == 1:
            (key,) = value
            if key in ("all", "any"):
                return self.group(value[key], (*path, key), key, depth + 1)
            if key == "event":
                return self.name_test(value[key], (*path, key))
        if isinstance(value, dict) and "path" in value:
            return self.value_test(value, path)
        self.report(
            path,
            "a condition is {event: {is: NAME}}, {path: $.properties.x, equals: V}, "
            "{all: [...]} or {any: [...]}",
        )
        return None

    def name_test(self, value: Any, path: JsonPath) -> Condition | None:
        operators = ", ".join(NAME_OPERATORS)
        if not isinstance(value, dict) or len(value) != 1:
            self.report(path, f"event takes one test, like {{is: NAME}}: {operators}")
            return None
        ((operator, operand),) = value.items()
        if operator not in NAME_OPERATORS:
            self.report(
                (*path, operator), f"unknown test {operator!r}; use {operators}"
            )
            return None
        listed = (
            operand
            if isinstance(operand, list) and operator in ("is", "is_not")
            else [operand]
        )
        if not listed or not all(isinstance(item, str) and item for item in listed):
            self.report((*path, operator), f"{operator} takes a non-empty string")
            return None
        return make_name_test(operator, listed, normalized=self.normalized)

    def value_test(self, value: dict[str, Any], path: JsonPath) -> Condition | None:
        source = value["path"]
        operators = [key for key in value if key != "path"]
        if len(operators) != 1 or operators[0] not in VALUE_OPERATORS:
            self.report(
                path,
                "a path condition has one test besides path: "
                + ", ".join(VALUE_OPERATORS),
            )
            return None
        operator = operators[0]
        try:
            steps = parse_path(source if isinstance(source, str) else "", what="path")
        except ValueError as error:
            self.report((*path, "path"), str(error))
            return None
        problem = check_operand(operator, value[operator])
        if problem is not None:
            self.report((*path, operator), problem)
            return None
        return ValueTest(EventPath(source, steps), operator, value[operator])


def make_name_test(operator: str, values: list[str], *, normalized: bool) -> NameTest:
    """A name test whose values follow the mapping's name matching."""
    if normalized:
        values = [normalize_name(value) for value in values]
    return NameTest(operator, tuple(values), normalized)


def check_operand(operator: str, operand: Any) -> str | None:
    """What is wrong with an operand for ``operator``, or None."""
    if operator in ("exists", "is"):
        ok = isinstance(operand, bool)
        need = "true or false"
    elif operator in NUMBER_OPERATORS:
        ok = isinstance(operand, int | float) and not isinstance(operand, bool)
        need = "a number"
    elif operator in STRING_OPERATORS:
        ok = isinstance(operand, str)
        need = "a string"
    else:
        ok = operand is None or isinstance(operand, str | int | float | bool)
        need = "a string, number, true, false or null"
    return None if ok else f"{operator} takes {need}, not {json_kind(operand)}"
