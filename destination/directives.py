"""The directives of the mapping language and how each renders for one event.

A template is JSON in which some objects are directives: ``{"@path": ...}``,
``{"@if": {...}}`` and the rest of Segment's mapping-kit set. ``templates``
reads them from a file into the frozen objects below; ``render`` walks a
template for one event. docs/mappings.md pins what each directive does and
every deliberate difference from mapping-kit.

Rendering is pure and bounded on any input: a ``Budget`` counts steps and the
characters a render creates, and values never nest deeper than ``MAX_DEPTH``.
Past a bound, or on data a directive cannot use, it raises ``RenderError``.
"""

from __future__ import annotations

import json
import re
from collections import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from destination.errors import DestinationError
from destination.event_path import MISSING, EventPath, resolve_steps
from destination.json_text import TextLimitError, encode_compact, to_text

MAX_STEPS = 100_000
MAX_CHARS = 1_000_000
MAX_DEPTH = 64


class RenderError(DestinationError, ValueError):
    """A mapping cannot render for an event: a bound was hit or the data is unusable."""


@dataclass(slots=True)
class Budget:
    """What one render may still spend: steps taken and characters created."""

    steps: int = MAX_STEPS
    chars: int = MAX_CHARS

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise RenderError(
                f"rendering took more than {MAX_STEPS:,} steps; "
                "the event holds too many items for this mapping"
            )

    def spend(self, chars: int) -> None:
        self.chars -= chars
        if self.chars < 0:
            raise RenderError(
                f"the rendered values are larger than {MAX_CHARS:,} characters"
            )


class Directive:
    """Base of every directive; ``render`` returns a value or MISSING."""

    __slots__ = ()
    name: ClassVar[str]

    def render(self, scope: Any, budget: Budget) -> Any:
        raise NotImplementedError


def render(template: Any, scope: Any, budget: Budget) -> Any:
    """Render ``template`` against ``scope`` (the event, or an item of it).

    The result may share values with the event; ``copy_output`` makes the
    final, independent copy. Missing values are dropped from objects and lists.
    """
    budget.step()
    if isinstance(template, Directive):
        return template.render(scope, budget)
    if isinstance(template, dict):
        result = {}
        for key, item in template.items():
            value = render(item, scope, budget)
            if value is not MISSING:
                result[key] = value
        return result
    if isinstance(template, list):
        items = (render(item, scope, budget) for item in template)
        return [item for item in items if item is not MISSING]
    return template


def copy_output(value: Any, budget: Budget, depth: int = 0) -> Any:
    """A fresh deep copy of a rendered value, charged to ``budget`` as it goes."""
    if isinstance(value, abc.Mapping | list) and depth >= MAX_DEPTH:
        raise RenderError(f"the rendered value nests deeper than {MAX_DEPTH} levels")
    budget.spend(1)
    if isinstance(value, abc.Mapping):
        copied = {}
        for key, item in value.items():
            budget.spend(len(key))
            copied[key] = copy_output(item, budget, depth + 1)
        return copied
    if isinstance(value, list):
        return [copy_output(item, budget, depth + 1) for item in value]
    if isinstance(value, str):
        budget.spend(len(value))
    return value


def is_blank(value: Any) -> bool:
    """Missing, null, a string of only spaces (or ``""``), ``[]`` or ``{}``."""
    if isinstance(value, str):
        return not value.strip()
    return value is MISSING or value is None or value == {} or value == []


def _text(value: Any, budget: Budget) -> str:
    try:
        text = to_text(value, limit=budget.chars, max_depth=MAX_DEPTH)
    except TextLimitError as error:
        raise RenderError(str(error)) from None
    budget.spend(len(text))
    return text


@dataclass(frozen=True, slots=True)
class PathDirective(Directive):
    """``{"@path": "$.a.b"}``: the value at the path, or missing."""

    name: ClassVar[str] = "@path"
    source: str
    steps: tuple[str | int, ...]

    def render(self, scope: Any, budget: Budget) -> Any:
        return resolve_steps(self.steps, scope)


@dataclass(frozen=True, slots=True)
class TemplateDirective(Directive):
    """``{"@template": "Hi {{traits.name}}"}``: text with placeholders filled."""

    name: ClassVar[str] = "@template"
    source: str
    parts: tuple[str | EventPath, ...]

    def render(self, scope: Any, budget: Budget) -> Any:
        pieces = []
        for part in self.parts:
            if isinstance(part, str):
                budget.spend(len(part))
                pieces.append(part)
            else:
                pieces.append(_text(part.resolve(scope), budget))
        return "".join(pieces)


@dataclass(frozen=True, slots=True)
class IfDirective(Directive):
    """``@if``: ``then`` when the subject exists (or is not blank), else ``else``."""

    name: ClassVar[str] = "@if"
    test: Literal["exists", "blank"]
    subject: Any
    then: Any = MISSING
    otherwise: Any = MISSING

    def render(self, scope: Any, budget: Budget) -> Any:
        subject = render(self.subject, scope, budget)
        if self.test == "exists":
            holds = subject is not MISSING and subject is not None
        else:
            holds = not is_blank(subject)
        branch = self.then if holds else self.otherwise
        return MISSING if branch is MISSING else render(branch, scope, budget)


@dataclass(frozen=True, slots=True)
class CaseDirective(Directive):
    """``@case``: a string in lower or upper case; other values unchanged."""

    name: ClassVar[str] = "@case"
    operator: Literal["lower", "upper"]
    value: Any

    def render(self, scope: Any, budget: Budget) -> Any:
        value = render(self.value, scope, budget)
        if not isinstance(value, str):
            return value
        changed = value.lower() if self.operator == "lower" else value.upper()
        budget.spend(len(changed))
        return changed


@dataclass(frozen=True, slots=True)
class Replacement:
    """One literal pattern and what replaces it."""

    pattern: re.Pattern[str]
    replacement: str

    def literal(self, match: re.Match[str]) -> str:
        # A function, so that backslashes and group references stay text.
        return self.replacement


@dataclass(frozen=True, slots=True)
class ReplaceDirective(Directive):
    """``@replace``: literal text replaced in a string, number or boolean."""

    name: ClassVar[str] = "@replace"
    replacements: tuple[Replacement, ...]
    replace_all: bool
    value: Any

    def render(self, scope: Any, budget: Budget) -> Any:
        value = render(self.value, scope, budget)
        if value is MISSING or value is None or isinstance(value, dict | list):
            return value
        text = _text(value, budget)
        count = 0 if self.replace_all else 1
        for step in self.replacements:
            matches = len(step.pattern.findall(text)) if self.replace_all else 1
            # Charged before the string is built: a short pattern in a long
            # string with a long replacement would otherwise grow unchecked.
            budget.spend(matches * len(step.replacement))
            text = step.pattern.sub(step.literal, text, count=count)
        return text


@dataclass(frozen=True, slots=True)
class JsonDirective(Directive):
    """``@json``: encode a value as JSON text, or decode JSON text."""

    name: ClassVar[str] = "@json"
    mode: Literal["encode", "decode"]
    value: Any

    def render(self, scope: Any, budget: Budget) -> Any:
        value = render(self.value, scope, budget)
        if value is MISSING:
            return MISSING
        if self.mode == "encode":
            try:
                text = encode_compact(value, limit=budget.chars, max_depth=MAX_DEPTH)
            except TextLimitError as error:
                raise RenderError(f"@json cannot encode the value: {error}") from None
            budget.spend(len(text))
            return text
        if not isinstance(value, str):
            return value
        return _decode(value)


def _decode(text: str) -> Any:
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise RenderError(
            "@json cannot decode the value: it nests too deeply"
        ) from None
    except ValueError as error:
        raise RenderError(f"@json cannot decode the value: {error}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True, slots=True)
class MergeDirective(Directive):
    """``@merge``: objects merged shallowly; ``right`` lets later ones win."""

    name: ClassVar[str] = "@merge"
    objects: tuple[Any, ...]
    direction: Literal["left", "right"] = "right"

    def render(self, scope: Any, budget: Budget) -> Any:
        merged: dict[str, Any] = {}
        for template in self.objects:
            value = render(template, scope, budget)
            if not isinstance(value, abc.Mapping):
                continue
            for key, item in value.items():
                budget.spend(1)
                if self.direction == "right" or key not in merged:
                    merged[key] = item
        return merged


@dataclass(frozen=True, slots=True)
class ArrayPathDirective(Directive):
    """``@arrayPath``: a list whose every item is rendered through ``shape``."""

    name: ClassVar[str] = "@arrayPath"
    source: Any
    shape: Any = MISSING

    def render(self, scope: Any, budget: Budget) -> Any:
        root = render(self.source, scope, budget)
        if self.shape is MISSING:
            return root
        if isinstance(root, abc.Mapping):
            items: list[Any] = [root]
        elif isinstance(root, list):
            items = root
        else:
            return root
        shaped = (render(self.shape, item, budget) for item in items)
        return [item for item in shaped if item is not MISSING]


@dataclass(frozen=True, slots=True)
class FlattenDirective(Directive):
    """``@flatten``: nested keys joined into one level, ``a.b.c``."""

    name: ClassVar[str] = "@flatten"
    value: Any
    separator: str = "."
    omit_arrays: bool = False

    def render(self, scope: Any, budget: Budget) -> Any:
        value = render(self.value, scope, budget)
        flat = isinstance(value, abc.Mapping) or (
            isinstance(value, list) and not self.omit_arrays
        )
        if not flat:
            return value
        result: dict[str, Any] = {}
        self._flatten(value, "", result, budget, 0)
        return result

    def _flatten(
        self,
        value: Any,
        prefix: str,
        result: dict[str, Any],
        budget: Budget,
        depth: int,
    ) -> None:
        if depth >= MAX_DEPTH:
            raise RenderError(f"@flatten met a value nested over {MAX_DEPTH} levels")
        if isinstance(value, abc.Mapping):
            pairs: abc.Iterable[tuple[str, Any]] = value.items()
        else:
            pairs = ((str(index), item) for index, item in enumerate(value))
        for key, item in pairs:
            budget.step()
            name = prefix + key
            budget.spend(len(name))
            if _is_nest(item, self.omit_arrays):
                self._flatten(item, name + self.separator, result, budget, depth + 1)
            else:
                result[name] = item


def _is_nest(value: Any, omit_arrays: bool) -> bool:
    if isinstance(value, abc.Mapping):
        return bool(value)
    return isinstance(value, list) and bool(value) and not omit_arrays


@dataclass(frozen=True, slots=True)
class ExcludeWhenNullDirective(Directive):
    """``@excludeWhenNull``: the value, or missing when it is null."""

    name: ClassVar[str] = "@excludeWhenNull"
    value: Any

    def render(self, scope: Any, budget: Budget) -> Any:
        value = render(self.value, scope, budget)
        return MISSING if value is None else value


@dataclass(frozen=True, slots=True)
class LiteralDirective(Directive):
    """``@literal``: the value exactly as written; nothing inside is a directive."""

    name: ClassVar[str] = "@literal"
    value: Any

    def render(self, scope: Any, budget: Budget) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class TransformDirective(Directive):
    """``@transform``: render ``apply`` first, then ``mapping`` with ``$`` as it."""

    name: ClassVar[str] = "@transform"
    apply: Any
    mapping: Any

    def render(self, scope: Any, budget: Budget) -> Any:
        return render(self.mapping, render(self.apply, scope, budget), budget)
