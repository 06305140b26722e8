"""Segment's string form of a trigger condition, parsed and never evaluated.

    type = "track" and (event = "Order Shipped" or contains(event, "Refund"))

The grammar is the part of Segment's filter language its trigger builder
writes: ``and``, ``or``, parentheses, ``FIELD OP VALUE`` with ``=``, ``!=``,
``<``, ``<=``, ``>``, ``>=``, ``FIELD = null`` (does not exist), ``FIELD !=
null`` (exists), ``contains(FIELD, "x")`` and ``match(FIELD, "x*")``, each
optionally negated with ``!``. A field is ``event``, ``type`` or a dotted path
from the top of the event, like ``properties.total``. Values are JSON strings
(double or single quotes), numbers, ``true``, ``false`` or ``null``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from destination.conditions import (
    Condition,
    Group,
    NameTest,
    ValueTest,
    make_name_test,
)
from destination.event_path import EventPath, parse_path

MAX_CONDITION_CHARS = 2_000
MAX_NESTING = 8

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)
      | (?P<operator>!=|<=|>=|=|<|>)
      | (?P<punct>[(),!])
      | (?P<word>[A-Za-z_$][\w$-]*(?:\.[\w$-]+)*)
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")
_COMPARISONS = {
    "=": "equals",
    "!=": "not_equals",
    "<": "less_than",
    "<=": "less_than_or_equal",
    ">": "greater_than",
    ">=": "greater_than_or_equal",
}
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    position: int


def parse_condition_string(text: str) -> Condition:
    """Parse a condition string; raise ValueError naming the character at fault."""
    if len(text) > MAX_CONDITION_CHARS:
        raise ValueError(f"it is over {MAX_CONDITION_CHARS:,} characters")
    parser = _Parser(_tokenize(text), len(text))
    condition = parser.either(0)
    parser.expect_end()
    return condition


def _tokenize(text: str) -> list[Token]:
    tokens = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            start = len(text) - len(text[position:].lstrip())
            raise ValueError(f"it has {text[start]!r} at character {start + 1}")
        kind = match.lastgroup
        tokens.append(Token(kind, match[kind], match.start(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[Token], length: int) -> None:
        self.tokens = tokens
        self.index = 0
        self.length = length

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise ValueError("it ends before the comparison is complete")
        self.index += 1
        return token

    def fail(self, token: Token | None, expected: str) -> ValueError:
        if token is None:
            return ValueError(f"it ends where {expected} was expected")
        return ValueError(
            f"it has {token.text!r} at character {token.position + 1} "
            f"where {expected} was expected"
        )

    def expect(self, kind: str, text: str) -> None:
        token = self.peek()
        if token is None or token.kind != kind or token.text != text:
            raise self.fail(token, repr(text))
        self.index += 1

    def expect_end(self) -> None:
        token = self.peek()
        if token is not None:
            raise self.fail(token, "'and', 'or' or the end")

    def either(self, depth: int) -> Condition:
        parts = [self.both(depth)]
        while self._skip("or"):
            parts.append(self.both(depth))
        return parts[0] if len(parts) == 1 else Group("any", tuple(parts))

    def both(self, depth: int) -> Condition:
        parts = [self.unary(depth)]
        while self._skip("and"):
            parts.append(self.unary(depth))
        return parts[0] if len(parts) == 1 else Group("all", tuple(parts))

    def _skip(self, word: str) -> bool:
        token = self.peek()
        if token is None or token.kind != "word" or token.text != word:
            return False
        self.index += 1
        return True

    def unary(self, depth: int) -> Condition:
        token = self.peek()
        if token is not None and token.text == "(":
            if depth >= MAX_NESTING:
                raise ValueError(f"it nests over {MAX_NESTING} parentheses")
            self.index += 1
            inner = self.either(depth + 1)
            self.expect("punct", ")")
            return inner
        negated = token is not None and token.text == "!"
        if negated:
            self.index += 1
        token = self.take()
        if token.kind == "word" and token.text in ("contains", "match"):
            return self.call(token.text, negated)
        if negated:
            raise self.fail(token, "contains( or match( after '!'")
        if token.kind != "word" or token.text in ("and", "or"):
            raise self.fail(token, "a field such as event or properties.total")
        return self.comparison(token)

    def call(self, function: str, negated: bool) -> Condition:
        self.expect("punct", "(")
        field = self.take()
        if field.kind != "word":
            raise self.fail(field, "a field")
        self.expect("punct", ",")
        pattern = self.take()
        if pattern.kind != "string":
            raise self.fail(pattern, "a quoted string")
        self.expect("punct", ")")
        operand = _unquote(pattern.text)
        operator = "contains" if function == "contains" else _glob(operand, pattern)
        if operator != "is":
            operand = operand.strip("*")
        if negated:
            operator = "is_not" if operator == "is" else "not_" + operator
        return _test(field, operator, operand)

    def comparison(self, field: Token) -> Condition:
        token = self.take()
        if token.kind != "operator":
            raise self.fail(token, "=, !=, <, <=, > or >=")
        operator = _COMPARISONS[token.text]
        if field.text == "event" and operator not in ("equals", "not_equals"):
            raise self.fail(token, "= or != (or contains() or match()) for names")
        value_token = self.take()
        value = _value(value_token, self)
        if value is None and operator in ("equals", "not_equals"):
            return _test(field, "exists", operator == "not_equals")
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is None or (
            operator not in ("equals", "not_equals") and not is_number
        ):
            raise self.fail(value_token, f"a number to compare with {token.text}")
        if field.text == "event":
            if not isinstance(value, str):
                raise self.fail(value_token, "a quoted event name")
            return _test(field, "is" if operator == "equals" else "is_not", value)
        return _test(field, operator, value)


def _value(token: Token, parser: _Parser) -> Any:
    if token.kind == "string":
        return _unquote(token.text)
    if token.kind == "number":
        return (
            float(token.text)
            if any(c in token.text for c in ".eE")
            else int(token.text)
        )
    if token.kind == "word" and token.text in _LITERALS:
        return _LITERALS[token.text]
    raise parser.fail(token, "a quoted string, a number, true, false or null")


def _unquote(text: str) -> str:
    return _ESCAPE.sub(r"\1", text[1:-1])


def _glob(pattern: str, token: Token) -> str:
    inner = pattern.strip("*")
    if "*" in inner or "?" in inner or not inner:
        raise ValueError(
            f"match() at character {token.position + 1} takes 'x*', '*x', '*x*' or "
            f"'x', not {pattern!r}"
        )
    starts, ends = pattern.startswith("*"), pattern.endswith("*")
    if starts and ends:
        return "contains"
    if ends:
        return "starts_with"
    return "ends_with" if starts else "is"


def _test(field: Token, operator: str, operand: Any) -> Condition:
    if field.text == "event" and operator != "exists":
        return make_name_test(operator, [operand], normalized=False)
    try:
        steps = parse_path("$." + field.text, what="field")
    except ValueError:
        raise ValueError(
            f"the field {field.text!r} at character "
            f"{field.position + 1} is not a path like properties.total"
        ) from None
    return ValueTest(EventPath("$." + field.text, steps), operator, operand)


@dataclass(frozen=True, slots=True)
class SplitCondition:
    """A condition string as a mapping uses it: type, indexed names, the rest."""

    event_type: str | None
    event_names: tuple[str, ...] | None
    rest: Condition | None


def split_condition_string(text: str) -> SplitCondition:
    """Parse a ``when`` string and lift its top-level type and event names out.

    ``type = "track" and event = "A"`` gives type ``track``, names ``("A",)``
    and no rest, so it matches as fast as ``{type: track, event: A}``. A type
    anywhere but at the top level is an error: one mapping takes one type.
    """
    condition = parse_condition_string(text)
    parts = (
        list(condition.children)
        if isinstance(condition, Group) and condition.kind == "all"
        else [condition]
    )
    types = [part for part in parts if _is_type_equals(part)]
    if len(types) > 1 or any(_tests_type(part) for part in parts if part not in types):
        raise ValueError(
            'it may name one type, at its top level: type = "track" and '
            "...; write one mapping per type"
        )
    names = next((part for part in parts if _is_name_list(part)), None)
    rest = [part for part in parts if part is not names and part not in types]
    event_type = None
    if types:
        assert isinstance(types[0], ValueTest)
        event_type = str(types[0].operand)
    return SplitCondition(
        event_type,
        None if names is None else tuple(_names_of(names)),
        None if not rest else rest[0] if len(rest) == 1 else Group("all", tuple(rest)),
    )


def _is_type_equals(condition: Condition) -> bool:
    return (
        isinstance(condition, ValueTest)
        and condition.path.steps == ("type",)
        and condition.operator == "equals"
        and isinstance(condition.operand, str)
    )


def _tests_type(condition: Condition) -> bool:
    if isinstance(condition, Group):
        return any(_tests_type(child) for child in condition.children)
    return isinstance(condition, ValueTest) and condition.path.steps == ("type",)


def _is_name_list(condition: Condition) -> bool:
    if isinstance(condition, NameTest):
        return condition.operator == "is"
    return (
        isinstance(condition, Group)
        and condition.kind == "any"
        and all(_is_name_list(child) for child in condition.children)
    )


def _names_of(condition: Condition) -> list[str]:
    if isinstance(condition, NameTest):
        return list(condition.values)
    assert isinstance(condition, Group)
    return [name for child in condition.children for name in _names_of(child)]
