"""Maps CDP events to Courier ``POST /send`` bodies through no-code mapping files.

A mapping names the events it takes (``when``) and the literal request body to
send for each (``send``), where any value may copy a field of the event with
Segment's ``{"@path": "$.properties.title"}`` directive. ``docs/mappings.md`` is
the reference for authors; ``mapping_file`` reads the files as JSON values, and
this module checks the format, matches events and renders bodies.

Rendering is deterministic: the same event and mapping always give the same
body with the same key order, because the body bytes feed the idempotency key.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from destination.errors import MappingError, MappingProblem
from destination.mapping_file import (
    Document,
    JsonPath,
    find_mapping_files,
    json_kind,
    read_document,
)

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")

_TOP_KEYS = ("mappings",)
_MAPPING_KEYS = ("name", "description", "when", "send")
_WHEN_KEYS = ("type", "event")
_LEGACY_KEYS = ("event", "recipient", "profile")
_PATH_HELP = "write '$' then .name, [N] or ['name'] steps, like '$.items[0].sku'"
_NAME_STEP = re.compile(r"\.([\w$-]+)")
_INDEX_STEP = re.compile(r"\[(0|[1-9][0-9]{0,8})\]")
_QUOTED_STEP = re.compile(r"""\[(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\]""")
_ESCAPE = re.compile(r"\\(.)")


class _Missing(enum.Enum):
    """What a path yields where the event has nothing (unlike JSON null)."""

    TOKEN = enum.auto()


_MISSING = _Missing.TOKEN


@dataclass(frozen=True, slots=True)
class PathDirective:
    """``{"@path": source}`` in a template: copy the value at ``steps``."""

    source: str
    steps: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Mapping:
    """One loaded mapping: which events it takes and the body template to send."""

    name: str
    event_type: str
    event_names: frozenset[str] | None
    send: Any
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class RenderedSend:
    """A request body rendered for one event and mapping."""

    mapping: str
    body: dict[str, Any]
    has_recipient: bool


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Which mappings take an event; ``mappings`` is empty unless ``mapped``."""

    outcome: Literal["mapped", "unmapped", "ignored"]
    mappings: tuple[Mapping, ...]


_UNMAPPED = MatchResult("unmapped", ())
_IGNORED = MatchResult("ignored", ())


@dataclass(frozen=True, slots=True)
class MappingSet:
    """All loaded mappings in load order, indexed for matching."""

    mappings: tuple[Mapping, ...]
    _by_event: dict[tuple[str, str], MatchResult] = field(
        init=False, repr=False, compare=False
    )
    _by_type: dict[str, MatchResult] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, Mapping] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Matching is on the hot path, so every answer is built once, here.
        by_event = {
            (mapping.event_type, name): _take(self.mappings, mapping.event_type, name)
            for mapping in self.mappings
            for name in mapping.event_names or ()
        }
        by_type = {
            mapping.event_type: _take(self.mappings, mapping.event_type, None)
            for mapping in self.mappings
            if mapping.event_names is None
        }
        object.__setattr__(self, "_by_event", by_event)
        object.__setattr__(self, "_by_type", by_type)
        object.__setattr__(self, "_by_name", {m.name: m for m in self.mappings})

    def match(self, event: abc.Mapping[str, Any]) -> MatchResult:
        """Return the mappings that take ``event``, in load order."""
        event_type = event.get("type")
        if not isinstance(event_type, str):
            return _IGNORED
        name = event.get("event")
        if isinstance(name, str):
            found = self._by_event.get((event_type, name))
            if found is not None:
                return found
        found = self._by_type.get(event_type)
        if found is not None:
            return found
        return _UNMAPPED if event_type == "track" else _IGNORED

    def get(self, name: str) -> Mapping | None:
        """Return the mapping called ``name``, if loaded."""
        return self._by_name.get(name)


def _take(mappings: tuple[Mapping, ...], kind: str, name: str | None) -> MatchResult:
    taken = tuple(
        mapping
        for mapping in mappings
        if mapping.event_type == kind
        and (mapping.event_names is None or name in mapping.event_names)
    )
    return MatchResult("mapped", taken)


def load_mappings(directory: Path) -> MappingSet:
    """Load every mapping file under ``directory`` into one set, in path order.

    A missing or empty directory gives an empty set. Otherwise MappingError lists
    every problem in every file, so one start-up shows them all.
    """
    checkers = [_check_file(path) for path in find_mapping_files(directory)]
    problems = [problem for checker in checkers for problem in checker.problems]
    named = [mapping for checker in checkers for mapping in checker.named]

    problems += _check_unique_names(named)
    if problems:
        raise MappingError(problems)
    return MappingSet(tuple(m for checker in checkers for m in checker.mappings))


def load_mapping_file(path: Path) -> list[Mapping]:
    """Load one mapping file, or raise MappingError listing all its problems."""
    checker = _check_file(path)
    problems = checker.problems + _check_unique_names(checker.named)
    if problems:
        raise MappingError(problems)
    return checker.mappings


def _check_file(path: Path) -> _FileChecker:
    try:
        document = read_document(path)
    except MappingError as exc:
        checker = _FileChecker(Document(str(path), None, {}, ()))
        checker.problems += exc.problems
        return checker
    checker = _FileChecker(document)
    checker.check()
    return checker


def _check_unique_names(mappings: list[Mapping]) -> list[MappingProblem]:
    first: dict[str, Mapping] = {}
    problems = []
    for mapping in mappings:
        seen = first.setdefault(mapping.name, mapping)
        if seen is not mapping:
            message = (
                f"name {mapping.name!r} is already used at {seen.file}:{seen.line}; "
                "names must be unique across all mapping files"
            )
            problems.append(
                MappingProblem(
                    mapping.file, mapping.line, mapping.name, "name", message
                )
            )
    return problems


class _Invalid(enum.Enum):
    """Stands for an absent or broken field, so no Mapping is built from it."""

    TOKEN = enum.auto()


_INVALID = _Invalid.TOKEN


class _FileChecker:
    """Checks one document against the mapping format, collecting every problem."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.mappings: list[Mapping] = []
        # Every entry with a usable name, valid or not, for the uniqueness check.
        self.named: list[Mapping] = []
        self.problems: list[MappingProblem] = []

    def check(self) -> None:
        if self.document.issues:
            # Values under an issue are placeholders; checking them further
            # would only add confusing follow-on problems.
            for issue in self.document.issues:
                self._problem(issue.path, issue.message, line=issue.line)
            return
        for index, entry in enumerate(self._check_top()):
            self._check_mapping(("mappings", index), entry)

    def _check_top(self) -> list[Any]:
        value = self.document.value
        if not isinstance(value, dict):
            kind = json_kind(value)
            self._problem((), f"a file must be an object with 'mappings', not {kind}")
            return []
        suggested = self._check_keys((), value, _TOP_KEYS)
        entries = value.get("mappings", _INVALID)
        if entries is _INVALID and "mappings" in suggested:
            return []
        if not isinstance(entries, list):
            got = "nothing" if entries is _INVALID else json_kind(entries)
            self._problem(("mappings",), f"'mappings' must be a list, not {got}")
            return []
        return entries

    def _check_mapping(self, path: JsonPath, entry: Any) -> None:
        if not isinstance(entry, dict):
            kind = json_kind(entry)
            self._problem(path, f"a mapping must be an object, not {kind}")
            return
        before = len(self.problems)
        suggested = self._check_keys(path, entry, _MAPPING_KEYS)
        for key in ("name", "when", "send"):
            # A misspelt key already says what is missing.
            if key not in entry and key not in suggested:
                self._problem(path, f"the mapping has no {key!r}; add it")

        name = self._check_name(path, entry.get("name", _INVALID))
        self._check_description(path, entry.get("description", ""))
        when = self._check_when((*path, "when"), entry.get("when", _INVALID))
        send = self._check_send((*path, "send"), entry.get("send", _INVALID))

        if name is None:
            return
        event_type, event_names = when or ("track", None)
        line = self.document.line(path)
        mapping = Mapping(name, event_type, event_names, send, self.document.file, line)
        self.named.append(mapping)
        if len(self.problems) == before:
            self.mappings.append(mapping)

    def _check_name(self, path: JsonPath, name: Any) -> str | None:
        if isinstance(name, str) and name.strip():
            return name
        if name is not _INVALID:
            message = f"name must be a non-empty string, not {name!r}"
            self._problem((*path, "name"), message)
        return None

    def _check_description(self, path: JsonPath, description: Any) -> None:
        if not isinstance(description, str):
            message = f"description must be a string, not {json_kind(description)}"
            self._problem((*path, "description"), message)

    def _check_when(
        self, path: JsonPath, when: Any
    ) -> tuple[str, frozenset[str] | None] | None:
        if when is _INVALID:
            return None
        if not isinstance(when, dict):
            kind = json_kind(when)
            self._problem(
                path, f"when must be an object like {{event: NAME}}, not {kind}"
            )
            return None
        self._check_keys(path, when, _WHEN_KEYS)
        event_type = when.get("type", "track")
        if event_type not in EVENT_TYPES:
            message = (
                f"type must be one of {', '.join(EVENT_TYPES)}, not {event_type!r}"
            )
            self._problem((*path, "type"), message)
            return None
        if "event" not in when:
            return event_type, None
        if event_type != "track":
            message = (
                "only track events have names; "
                f"drop 'event' to take every {event_type} event"
            )
            self._problem((*path, "event"), message)
            return None
        names = self._check_event_names((*path, "event"), when["event"])
        return None if names is None else (event_type, names)

    def _check_event_names(self, path: JsonPath, value: Any) -> frozenset[str] | None:
        listed = value if isinstance(value, list) else [value]
        if not listed:
            self._problem(
                path, "event is an empty list; drop it to take every track event"
            )
            return None
        before = len(self.problems)
        names: set[str] = set()
        for index, name in enumerate(listed):
            where = (*path, index) if isinstance(value, list) else path
            if not isinstance(name, str) or not name.strip():
                self._problem(
                    where, f"event names must be non-empty strings, not {name!r}"
                )
            elif name in names:
                # Names match exactly, so only an identical name collides.
                self._problem(where, f"event {name!r} is listed twice; keep one")
            else:
                names.add(name)
        return frozenset(names) if len(self.problems) == before else None

    def _check_send(self, path: JsonPath, send: Any) -> Any:
        if send is _INVALID:
            return _INVALID
        if not isinstance(send, dict) or "@path" in send:
            kind = "a @path" if isinstance(send, dict) else json_kind(send)
            message = (
                f"send must be the literal body of a Courier POST /send, not {kind}"
            )
            self._problem(path, message)
            return _INVALID
        before = len(self.problems)
        if "message" in send:
            self._check_current((*path, "message"), send)
        else:
            self._check_legacy(path, send)
        return self._read_template(path, send) if len(self.problems) == before else None

    def _check_current(self, path: JsonPath, send: dict[str, Any]) -> None:
        message = send["message"]
        if not isinstance(message, dict) or "@path" in message:
            kind = "a @path" if isinstance(message, dict) else json_kind(message)
            self._problem(
                path, f"message must be an object with to and template, not {kind}"
            )
            return
        for key in _LEGACY_KEYS:
            if key in send:
                hint = "move it into message or use the legacy format only"
                self._problem(
                    path[:-1], f"send mixes message with legacy {key!r}; {hint}"
                )
        if "to" not in message:
            hint = "add to: {user_id: {'@path': '$.userId'}}"
            self._problem(path, f"message has no 'to' (the recipient); {hint}")
        if "template" not in message and "content" not in message:
            hint = "add template: with the notification's id"
            self._problem(path, f"message has neither 'template' nor 'content'; {hint}")

    def _check_legacy(self, path: JsonPath, send: dict[str, Any]) -> None:
        if "event" not in send and "recipient" not in send:
            hint = "use message: {to, template, data} (or legacy event and recipient)"
            self._problem(path, f"send has no 'message'; {hint}")
            return
        for key, hint in (("event", "the notification id"), ("recipient", "$.userId")):
            if key not in send:
                self._problem(path, f"legacy send has no {key!r}; add it ({hint})")

    def _read_template(self, path: JsonPath, value: Any) -> Any:
        if isinstance(value, list):
            return [self._read_template((*path, i), v) for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        if any(key.startswith("@") for key in value):
            return self._read_directive(path, value)
        return {k: self._read_template((*path, k), v) for k, v in value.items()}

    def _read_directive(self, path: JsonPath, value: dict[str, Any]) -> Any:
        for key in value:
            if key.startswith("@") and key != "@path":
                hint = "directives beyond @path arrive with the richer mapping language"
                self._problem(path, f"{key} is not supported yet; {hint}")
        if "@path" not in value:
            return None
        others = [key for key in value if not key.startswith("@")]
        if others:
            self._problem(
                path, f"an object with @path has no other keys; move {others}"
            )
        source = value["@path"]
        if not isinstance(source, str):
            self._problem(path, f"@path must be a string; {_PATH_HELP}")
            return None
        try:
            return PathDirective(source, parse_path(source))
        except ValueError as exc:
            self._problem(path, str(exc))
            return None

    def _check_keys(
        self, path: JsonPath, value: dict[str, Any], allowed: tuple[str, ...]
    ) -> set[str]:
        """Report unknown keys; return the known keys suggested instead."""
        suggested = set()
        for key in value:
            if key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            suggested.update(close)
            hint = f"did you mean {close[0]!r}?" if close else "expected"
            if not close:
                hint += f" one of {', '.join(allowed)}"
            self._problem((*path, key), f"unknown key {key!r}; {hint}")
        return suggested

    def _problem(
        self, path: JsonPath, message: str, *, line: int | None = None
    ) -> None:
        self.problems.append(self.document.problem(path, message, line=line))


def parse_path(source: str) -> tuple[str | int, ...]:
    """Parse a Segment ``@path`` like ``$.a['b c'][0]``; raise ValueError if bad."""
    if not source.startswith("$"):
        raise ValueError(f"@path {source!r} does not start with '$'; {_PATH_HELP}")
    steps: list[str | int] = []
    position = 1
    while position < len(source):
        if match := _NAME_STEP.match(source, position):
            steps.append(match[1])
        elif match := _INDEX_STEP.match(source, position):
            steps.append(int(match[1]))
        elif match := _QUOTED_STEP.match(source, position):
            quoted = match[1] if match[1] is not None else match[2]
            steps.append(_ESCAPE.sub(r"\1", quoted))
        else:
            raise ValueError(
                f"@path {source!r} is not valid at character {position + 1}; "
                f"{_PATH_HELP} (no wildcards, filters, slices or '..')"
            )
        position = match.end()
    return tuple(steps)


def render_send(mapping: Mapping, event: abc.Mapping[str, Any]) -> RenderedSend:
    """Render ``mapping``'s body for ``event`` and say whether it has a recipient."""
    body = _render(mapping.send, event)
    assert isinstance(body, dict), "the loader accepts only an object for send"
    return RenderedSend(mapping.name, body, _has_recipient(body))


def _render(template: Any, event: abc.Mapping[str, Any]) -> Any:
    if isinstance(template, PathDirective):
        return _resolve(template.steps, event)
    if isinstance(template, dict):
        pairs = ((key, _render(value, event)) for key, value in template.items())
        return {key: value for key, value in pairs if value is not _MISSING}
    if isinstance(template, list):
        items = (_render(item, event) for item in template)
        return [item for item in items if item is not _MISSING]
    return template


def _resolve(steps: tuple[str | int, ...], event: abc.Mapping[str, Any]) -> Any:
    value: Any = event
    for step in steps:
        if isinstance(step, str):
            if not isinstance(value, abc.Mapping) or step not in value:
                return _MISSING
        elif not isinstance(value, list) or step >= len(value):
            return _MISSING
        value = value[step]
    # A copy, so a caller that edits the body never edits the stored event.
    return _copy_json(value)


def _copy_json(value: Any) -> Any:
    if isinstance(value, abc.Mapping):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


def _has_recipient(body: dict[str, Any]) -> bool:
    if "message" in body:
        message = body["message"]
        return isinstance(message, dict) and _is_address(message.get("to"))
    return not _is_blank(body.get("recipient"))


def _is_address(to: Any) -> bool:
    """Courier's ``message.to``: an object with a usable value, or a list of them."""
    if isinstance(to, dict):
        return any(not _is_blank(value) for value in to.values())
    if isinstance(to, list):
        return any(_is_address(item) for item in to)
    return not _is_blank(to)


def _is_blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == {} or value == []
