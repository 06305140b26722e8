"""How mapping values become text: in ``@template``, ``@replace`` and ``@json``.

Segment's mapping-kit runs in JavaScript, so a person who knows it expects
JavaScript's text for a number (``1.0`` is ``1``, ``1e21`` is ``1e+21``) and
``JSON.stringify``'s output for ``@json``: compact, keys in their order,
non-ASCII characters as they are. We write the same, with two deliberate
differences: integers keep every digit (JavaScript rounds past 2^53), and
objects in a template are written as JSON instead of ``[object Object]``.

Every writer here is bounded: ``limit`` characters and ``max_depth`` levels,
past which it raises ``TextLimitError`` instead of growing or recursing.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from destination.event_path import MISSING

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class TextLimitError(ValueError):
    """Writing a value would pass the size or depth limit."""


def format_number(number: int | float) -> str:
    """Write a number the way JavaScript's ``String(number)`` does (see module)."""
    if isinstance(number, int):
        return str(number)
    if number == 0:
        return "0"  # also -0.0, as JavaScript writes it
    sign = "-" if number < 0 else ""
    # repr is the shortest text that reads back the same float, as in JavaScript.
    digits_tuple, exponent = Decimal(repr(abs(number))).normalize().as_tuple()[1:]
    assert isinstance(exponent, int), "JSON numbers are finite"
    digits = "".join(str(digit) for digit in digits_tuple)
    count = len(digits)
    point = exponent + count
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    power = point - 1
    mantissa = digits if count == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{'+' if power >= 0 else '-'}{abs(power)}"


def to_text(value: Any, *, limit: int, max_depth: int) -> str:
    """The text of a value inside a template: ``""`` for missing and null."""
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format_number(value)
    return encode_compact(value, limit=limit, max_depth=max_depth)


def encode_compact(value: Any, *, limit: int, max_depth: int) -> str:
    """Compact JSON like ``JSON.stringify``; raise TextLimitError past the limits."""
    parts: list[str] = []
    _Writer(parts, limit, max_depth).write(value, 0)
    return "".join(parts)


class _Writer:
    def __init__(self, parts: list[str], limit: int, max_depth: int) -> None:
        self.parts = parts
        self.left = limit
        self.max_depth = max_depth

    def write(self, value: Any, depth: int) -> None:
        if isinstance(value, dict):
            self._nest(depth)
            self._emit("{")
            for index, (key, item) in enumerate(value.items()):
                self._emit(("," if index else "") + encode_string(key) + ":")
                self.write(item, depth + 1)
            self._emit("}")
        elif isinstance(value, list):
            self._nest(depth)
            self._emit("[")
            for index, item in enumerate(value):
                if index:
                    self._emit(",")
                self.write(item, depth + 1)
            self._emit("]")
        elif isinstance(value, str):
            self._emit(encode_string(value))
        elif value is None or isinstance(value, bool):
            self._emit(json.dumps(value))
        else:
            self._emit(format_number(value))

    def _nest(self, depth: int) -> None:
        if depth >= self.max_depth:
            raise TextLimitError(f"the value nests deeper than {self.max_depth} levels")

    def _emit(self, text: str) -> None:
        self.left -= len(text)
        if self.left < 0:
            raise TextLimitError("the JSON text is over the size limit")
        self.parts.append(text)


def encode_string(text: str) -> str:
    """A JSON string as ``JSON.stringify`` writes it; lone surrogates escaped."""
    encoded = json.dumps(text, ensure_ascii=False)
    # A lone surrogate cannot be written in UTF-8; JavaScript escapes it too.
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match[0]):04x}", encoded)
