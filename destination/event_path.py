"""Event paths: the ``$.properties.items[0].sku`` that points into an event.

One syntax serves ``@path``, ``@template`` placeholders and ``when`` conditions.
A path is parsed once, when the mapping file loads, into steps; resolving it
walks the event and never evaluates anything.

A step is a key (``.name`` or ``['any name']``) or a number (``[0]`` or
``.0``). A number indexes a list and, like Segment's mapping-kit, reads the key
``"0"`` of an object. ``['0']`` is always a key.
"""

from __future__ import annotations

import enum
import re
from collections import abc
from dataclasses import dataclass
from typing import Any

MAX_PATH_CHARS = 1000
MAX_PATH_STEPS = 64

PATH_HELP = (
    "write '$' then .name, [N] or ['name'] steps, like '$.items[0].sku' "
    "(no wildcards, filters, slices or '..')"
)

# Anything but the characters that delimit steps or would look like JSONPath
# features we do not have; keys holding them are written ['like.this'].
_NAME_STEP = re.compile(r"""\.([^.\[\]()*?'"\\\x00-\x1f]+)""")
_INDEX_STEP = re.compile(r"\[(0|[1-9][0-9]{0,8})\]")
_QUOTED_STEP = re.compile(r"""\[(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\]""")
_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")
_ESCAPE = re.compile(r"\\(.)")


class Missing(enum.Enum):
    """What a path yields where the event has nothing (unlike JSON null)."""

    TOKEN = enum.auto()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing.TOKEN


@dataclass(frozen=True, slots=True)
class EventPath:
    """A parsed path: ``source`` as written and the steps it takes."""

    source: str
    steps: tuple[str | int, ...]

    def resolve(self, root: Any) -> Any:
        """Return the value at this path in ``root`` (not a copy), or MISSING."""
        return resolve_steps(self.steps, root)


def parse_path(source: str, *, what: str = "@path") -> tuple[str | int, ...]:
    """Parse a path like ``$.a['b c'][0]``; raise ValueError saying what is wrong."""
    if not source.startswith("$"):
        raise ValueError(f"{what} {source!r} does not start with '$'; {PATH_HELP}")
    if len(source) > MAX_PATH_CHARS:
        raise ValueError(f"{what} is longer than {MAX_PATH_CHARS} characters")
    steps: list[str | int] = []
    position = 1
    while position < len(source):
        match = _match_step(source, position)
        if match is None:
            raise ValueError(
                f"{what} {source!r} is not valid at character {position + 1}; "
                f"{PATH_HELP}"
            )
        steps.append(_step_of(match, what, source))
        position = match.end()
    if len(steps) > MAX_PATH_STEPS:
        raise ValueError(f"{what} has more than {MAX_PATH_STEPS} steps")
    return tuple(steps)


def _match_step(source: str, position: int) -> re.Match[str] | None:
    for pattern in (_NAME_STEP, _INDEX_STEP, _QUOTED_STEP):
        match = pattern.match(source, position)
        if match is not None:
            return match
    return None


def _step_of(match: re.Match[str], what: str, source: str) -> str | int:
    if match.re is _QUOTED_STEP:
        quoted = match[1] if match[1] is not None else match[2]
        return _ESCAPE.sub(r"\1", quoted)
    text = match[1]
    if match.re is _INDEX_STEP or _INDEX.fullmatch(text):
        return int(text)
    if text != text.strip():
        raise ValueError(
            f"{what} {source!r} has a key with spaces at its start or end, "
            f"{text!r}; write it quoted, like ['{text}'], if it is meant"
        )
    return text


def resolve_steps(steps: tuple[str | int, ...], root: Any) -> Any:
    """Walk ``steps`` from ``root``; MISSING where the event has nothing."""
    value = root
    for step in steps:
        if isinstance(value, abc.Mapping):
            key = step if isinstance(step, str) else str(step)
            if key not in value:
                return MISSING
            value = value[key]
        elif isinstance(value, list) and isinstance(step, int):
            if step >= len(value):
                return MISSING
            value = value[step]
        else:
            return MISSING
    return value


def format_steps(steps: tuple[str | int, ...], root: str = "$") -> str:
    """Write steps back as a path, quoting keys that need it: ``$.a['b.c'][0]``."""
    text = root
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        elif (
            _NAME_STEP.fullmatch("." + step)
            and step == step.strip()
            and not _INDEX.fullmatch(step)
        ):
            text += f".{step}"
        else:
            escaped = step.replace("\\", "\\\\").replace("'", "\\'")
            text += f"['{escaped}']"
    return text
