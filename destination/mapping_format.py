"""The mapping file format: what a mapping is, and the checks that build one.

``mapping_file`` reads a file as JSON values with lines; this module checks
those values against the format docs/mappings.md describes and builds frozen
``Mapping`` objects. Every problem is collected with its file, line, mapping
and field, so one run shows them all; a mapping with any problem is not built.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from destination.condition_string import split_condition_string
from destination.conditions import (
    Condition,
    Group,
    compile_conditions,
    normalize_name,
)
from destination.errors import MappingError, MappingProblem
from destination.event_path import MISSING
from destination.mapping_examples import Example, read_examples
from destination.mapping_file import (
    Document,
    JsonPath,
    check_keys,
    json_kind,
    read_document,
)
from destination.recipients import check_opt_ins
from destination.templates import compile_template, is_directive
from destination.tracking_plan import (
    EMPTY_PLAN,
    PropertySchema,
    TrackingPlan,
    check_property_schema,
)

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")

_TOP_KEYS = ("mappings",)
_MAPPING_KEYS = (
    "name",
    "description",
    "when",
    "send",
    "profile",
    "allow_event_contacts",
    "allow_lists",
    "properties_schema",
    "unknown_properties",
    "examples",
)
_WHEN_KEYS = ("type", "event", "match", "all", "any")
_PROFILE_KEYS = ("user_id", "profile")
_LEGACY_KEYS = ("event", "recipient", "profile")

Action = Literal["send", "profile"]


@dataclass(frozen=True, slots=True)
class Mapping:
    """One loaded mapping: which events it takes, and the request to make."""

    name: str
    event_type: str
    event_names: frozenset[str] | None
    send: Any  # the body template; for a profile action, without user_id
    file: str
    line: int
    action: Action = "send"
    user_id: Any = MISSING  # a profile action's user id template
    names_normalized: bool = False
    condition: Condition | None = None
    allow_event_contacts: bool = False
    allow_lists: bool = False
    properties_schema: PropertySchema | None = None
    reject_unknown_properties: bool = False
    plan: TrackingPlan = field(default=EMPTY_PLAN, repr=False, compare=False)
    examples: tuple[Example, ...] = field(default=(), repr=False, compare=False)


class _Invalid(enum.Enum):
    """Stands for an absent or broken field, so no Mapping is built from it."""

    TOKEN = enum.auto()


_INVALID = _Invalid.TOKEN


@dataclass(frozen=True, slots=True)
class _When:
    event_type: str
    names: frozenset[str] | None
    normalized: bool
    condition: Condition | None


def check_file(path: Path, plan: TrackingPlan) -> FileChecker:
    """Check one file; the checker holds its mappings and its problems."""
    try:
        document = read_document(path)
    except MappingError as exc:
        checker = FileChecker(Document(str(path), None, {}, ()), plan)
        checker.problems += exc.problems
        return checker
    checker = FileChecker(document, plan)
    checker.check()
    return checker


class FileChecker:
    """Checks one document against the mapping format, collecting every problem."""

    def __init__(self, document: Document, plan: TrackingPlan) -> None:
        self.document = document
        self.plan = plan
        self.mappings: list[Mapping] = []
        # Every entry with a usable name, valid or not, for cross-file checks.
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
        self._check_required(path, entry, suggested)

        name = self._check_name(path, entry.get("name", _INVALID))
        self._check_type(path, entry, "description", str, "a string")
        contacts = self._check_type(path, entry, "allow_event_contacts", bool, "true")
        lists = self._check_type(path, entry, "allow_lists", bool, "true")
        when = self._check_when((*path, "when"), entry.get("when", _INVALID))
        action: Action = "profile" if "profile" in entry else "send"
        if action == "profile":
            send, user_id = self._check_profile((*path, "profile"), entry["profile"])
        else:
            send = self._check_send((*path, "send"), entry.get("send", _INVALID))
            user_id = MISSING
        check_opt_ins(
            path, entry, self._problem, contacts=contacts is True, lists=lists is True
        )
        schema = self._check_schema(path, entry)
        reject = self._check_unknown(path, entry)
        examples = read_examples(
            entry.get("examples", []), (*path, "examples"), self.document, self._problem
        )

        if name is None:
            return
        when = when or _When("track", None, False, None)
        mapping = Mapping(
            name,
            when.event_type,
            when.names,
            send,
            self.document.file,
            self.document.line(path),
            action=action,
            user_id=user_id,
            names_normalized=when.normalized,
            condition=when.condition,
            allow_event_contacts=contacts is True,
            allow_lists=lists is True,
            properties_schema=schema,
            reject_unknown_properties=reject,
            plan=self.plan,
            examples=examples,
        )
        self.named.append(mapping)
        if len(self.problems) == before:
            self.mappings.append(mapping)

    def _check_required(
        self, path: JsonPath, entry: dict[str, Any], suggested: set[str]
    ) -> None:
        for key in ("name", "when"):
            # A misspelt key already says what is missing.
            if key not in entry and key not in suggested:
                self._problem(path, f"the mapping has no {key!r}; add it")
        if "send" in entry and "profile" in entry:
            self._problem(path, "a mapping has send or profile, not both; split it")
        elif not {"send", "profile"} & (entry.keys() | suggested):
            hint = "add it (or 'profile' for a profile merge)"
            self._problem(path, f"the mapping has no 'send'; {hint}")

    def _check_name(self, path: JsonPath, name: Any) -> str | None:
        if isinstance(name, str) and name.strip():
            return name
        if name is not _INVALID:
            message = f"name must be a non-empty string, not {name!r}"
            self._problem((*path, "name"), message)
        return None

    def _check_type(
        self, path: JsonPath, entry: dict[str, Any], key: str, kind: type, shown: str
    ) -> Any:
        value = entry.get(key, _INVALID)
        if value is _INVALID or isinstance(value, kind):
            return value
        self._problem((*path, key), f"{key} must be {shown}, not {json_kind(value)}")
        return _INVALID

    def _check_when(self, path: JsonPath, when: Any) -> _When | None:
        if when is _INVALID:
            return None
        if isinstance(when, str):
            return self._check_when_string(path, when)
        if not isinstance(when, dict):
            kind = json_kind(when)
            self._problem(
                path, f"when must be an object like {{event: NAME}}, not {kind}"
            )
            return None
        before = len(self.problems)
        self._check_keys(path, when, _WHEN_KEYS)
        event_type = self._check_event_type((*path, "type"), when.get("type", "track"))
        match = when.get("match", "exact")
        if match not in ("exact", "normalized"):
            message = f"match must be exact or normalized, not {match!r}"
            self._problem((*path, "match"), message)
        normalized = match == "normalized"
        names = None
        if "event" in when and event_type is not None:
            names = self._check_event_names(
                (*path, "event"), when["event"], event_type, normalized
            )
        groups = [
            compile_conditions(
                when[kind], (*path, kind), self._problem, kind, normalized=normalized
            )
            for kind in ("all", "any")
            if kind in when
        ]
        if len(self.problems) > before or event_type is None:
            return None
        kept = tuple(group for group in groups if group is not None)
        condition = (
            None if not kept else kept[0] if len(kept) == 1 else Group("all", kept)
        )
        return _When(event_type, names, normalized, condition)

    def _check_when_string(self, path: JsonPath, text: str) -> _When | None:
        try:
            split = split_condition_string(text)
        except ValueError as error:
            hint = "write an object like {event: NAME}, or a condition string"
            self._problem(path, f"when {text!r} is not a condition ({error}); {hint}")
            return None
        event_type = self._check_event_type(path, split.event_type or "track")
        if event_type is None:
            return None
        names = None
        if split.event_names is not None:
            names = self._check_event_names(
                path, list(split.event_names), event_type, False
            )
            if names is None:
                return None
        return _When(event_type, names, False, split.rest)

    def _check_event_type(self, path: JsonPath, event_type: Any) -> str | None:
        if event_type in EVENT_TYPES:
            return str(event_type)
        message = f"type must be one of {', '.join(EVENT_TYPES)}, not {event_type!r}"
        self._problem(path, message)
        return None

    def _check_event_names(
        self, path: JsonPath, value: Any, event_type: str, normalized: bool
    ) -> frozenset[str] | None:
        if event_type != "track":
            message = (
                "only track events have names; "
                f"drop 'event' to take every {event_type} event"
            )
            self._problem(path, message)
            return None
        listed = value if isinstance(value, list) else [value]
        if not listed:
            self._problem(
                path, "event is an empty list; drop it to take every track event"
            )
            return None
        before = len(self.problems)
        seen: dict[str, str] = {}
        for index, name in enumerate(listed):
            where = (*path, index) if isinstance(value, list) else path
            if not isinstance(name, str) or not name.strip():
                self._problem(
                    where, f"event names must be non-empty strings, not {name!r}"
                )
                continue
            key = normalize_name(name) if normalized else name
            if key in seen:
                twice = (
                    f"{name!r} is listed twice"
                    if seen[key] == name
                    else (f"{name!r} and {seen[key]!r} are one name once normalised")
                )
                self._problem(where, f"event {twice}; keep one")
            seen.setdefault(key, name)
        return frozenset(seen.values()) if len(self.problems) == before else None

    def _check_send(self, path: JsonPath, send: Any) -> Any:
        if send is _INVALID:
            return _INVALID
        if not isinstance(send, dict) or is_directive(send):
            kind = "a directive" if isinstance(send, dict) else json_kind(send)
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
        if len(self.problems) > before:
            return None
        return compile_template(send, path, self._problem)

    def _check_current(self, path: JsonPath, send: dict[str, Any]) -> None:
        message = send["message"]
        if not isinstance(message, dict) or is_directive(message):
            kind = "a directive" if isinstance(message, dict) else json_kind(message)
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
        if "template" not in message and "content" not in message:
            hint = "add template: with the notification's id"
            self._problem(path, f"message has neither 'template' nor 'content'; {hint}")

    def _check_legacy(self, path: JsonPath, send: dict[str, Any]) -> None:
        if "event" not in send and "recipient" not in send:
            hint = "use message: {to, template, data} (or legacy event and recipient)"
            self._problem(path, f"send has no 'message'; {hint}")
        elif "event" not in send:
            self._problem(path, "legacy send has no 'event'; add the notification id")

    def _check_profile(self, path: JsonPath, value: Any) -> tuple[Any, Any]:
        if not isinstance(value, dict) or is_directive(value):
            hint = "write profile: {user_id: ..., profile: {...}}"
            self._problem(path, f"profile must be an object; {hint}")
            return None, MISSING
        before = len(self.problems)
        self._check_keys(path, value, _PROFILE_KEYS)
        if "profile" not in value:
            hint = "the fields to merge into the Courier profile"
            self._problem(path, f"profile has no 'profile'; add it ({hint})")
        elif not isinstance(value["profile"], dict):
            kind = json_kind(value["profile"])
            self._problem((*path, "profile"), f"profile must be an object, not {kind}")
        if len(self.problems) > before:
            return None, MISSING
        body = {"profile": value["profile"]}
        user_id = value.get("user_id", MISSING)
        if user_id is not MISSING:
            user_id = compile_template(user_id, (*path, "user_id"), self._problem)
        return compile_template(body, path, self._problem), user_id

    def _check_schema(
        self, path: JsonPath, entry: dict[str, Any]
    ) -> PropertySchema | None:
        if "properties_schema" not in entry:
            return None
        where = (*path, "properties_schema")
        return check_property_schema(
            entry["properties_schema"],
            lambda at, message: self._problem(at, message),
            origin=f"{self.document.file}:{self.document.line(where)}",
            path=where,
        )

    def _check_unknown(self, path: JsonPath, entry: dict[str, Any]) -> bool:
        value = entry.get("unknown_properties", "allow")
        if value not in ("allow", "reject"):
            message = f"unknown_properties must be allow or reject, not {value!r}"
            self._problem((*path, "unknown_properties"), message)
        return bool(value == "reject")

    def _check_keys(
        self, path: JsonPath, value: dict[str, Any], allowed: tuple[str, ...]
    ) -> set[str]:
        return check_keys(path, value, allowed, self._problem)

    def _problem(
        self, path: JsonPath, message: str, *, line: int | None = None
    ) -> None:
        self.problems.append(self.document.problem(path, message, line=line))
