"""Maps CDP events to Courier requests through no-code mapping files.

A mapping names the events it takes (``when``) and the request to make for
each: a ``send`` body for ``POST /send``, or a ``profile`` merge for ``POST
/profiles/{user_id}``, where any value may be a directive such as
``{"@path": "$.properties.title"}``. docs/mappings.md is the reference for
authors. ``mapping_file`` reads files and ``mapping_format`` checks them;
``templates`` and ``directives`` read and render directives; ``conditions``
decides which events a mapping takes; ``recipients`` and ``tracking_plan``
say who a request goes to and which properties an event may carry. This
module loads whole directories, matches events and renders requests.

Rendering is deterministic: the same event and mapping always give the same
body with the same key order, because the body bytes are sent on every attempt
under one idempotency key.
"""

from __future__ import annotations

from collections import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from destination.conditions import normalize_name
from destination.directives import Budget, RenderError, copy_output, render
from destination.errors import (
    DestinationError,
    EventError,
    MappingError,
    MappingProblem,
)
from destination.event_path import MISSING
from destination.mapping_examples import Example
from destination.mapping_file import find_mapping_files
from destination.mapping_format import EVENT_TYPES, Mapping, check_file
from destination.recipients import (
    default_recipient,
    has_recipient,
    names_a_list,
    usable_user_id,
    with_default_recipient,
)
from destination.tracking_plan import default_plan_dir, load_tracking_plan

__all__ = [
    "EVENT_TYPES",
    "SEND_PATH",
    "Declined",
    "EventRejectedError",
    "Example",
    "Mapping",
    "MappingSet",
    "MatchResult",
    "RenderedSend",
    "inspect_mappings",
    "load_mapping_file",
    "load_mappings",
    "render_send",
]

SEND_PATH = "/send"
PROFILE_PATH = "/profiles/"


class EventRejectedError(DestinationError, ValueError):
    """An event a mapping takes cannot be sent: it breaks the tracking plan, a
    render limit, or the mapping's opt-ins. ``errors`` say where, as in validation."""

    def __init__(self, mapping: str, errors: list[EventError]) -> None:
        self.mapping = mapping
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))


@dataclass(frozen=True, slots=True)
class RenderedSend:
    """A request rendered for one event and mapping: body and path."""

    mapping: str
    body: dict[str, Any]
    has_recipient: bool
    path: str = SEND_PATH


@dataclass(frozen=True, slots=True)
class Declined:
    """A mapping whose type and name took the event, but whose condition did not."""

    mapping: Mapping
    reason: str


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Which mappings take an event; ``mappings`` is empty unless ``mapped``."""

    outcome: Literal["mapped", "unmapped", "ignored"]
    mappings: tuple[Mapping, ...]
    declined: tuple[Declined, ...] = ()


@dataclass(frozen=True, slots=True)
class MappingSet:
    """All loaded mappings in load order, indexed for matching.

    ``source`` is the directory the set was loaded from, when it was: the
    service watches it to reload. A set is never changed; a reload builds a
    new one and swaps it in whole.
    """

    mappings: tuple[Mapping, ...]
    source: Path | None = None
    _exact: dict[tuple[str, str], tuple[int, ...]] = field(
        init=False, repr=False, compare=False
    )
    _normalized: dict[tuple[str, str], tuple[int, ...]] = field(
        init=False, repr=False, compare=False
    )
    _by_type: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, Mapping] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Matching is on the hot path, so the indexes are built once, here.
        exact: dict[tuple[str, str], list[int]] = {}
        normalized: dict[tuple[str, str], list[int]] = {}
        by_type: dict[str, list[int]] = {}
        for index, mapping in enumerate(self.mappings):
            if mapping.event_names is None:
                by_type.setdefault(mapping.event_type, []).append(index)
                continue
            for name in mapping.event_names:
                if mapping.names_normalized:
                    key = (mapping.event_type, normalize_name(name))
                    normalized.setdefault(key, []).append(index)
                else:
                    exact.setdefault((mapping.event_type, name), []).append(index)
        object.__setattr__(self, "_exact", _frozen(exact))
        object.__setattr__(self, "_normalized", _frozen(normalized))
        object.__setattr__(self, "_by_type", _frozen(by_type))
        object.__setattr__(self, "_by_name", {m.name: m for m in self.mappings})

    def match(self, event: abc.Mapping[str, Any]) -> MatchResult:
        """Return the mappings that take ``event``, in load order."""
        event_type = event.get("type")
        if not isinstance(event_type, str):
            return MatchResult("ignored", ())
        taken = []
        declined = []
        for mapping in self.candidates(event):
            reason = None
            if mapping.condition is not None:
                reason = mapping.condition.why_not(event)
            if reason is None:
                taken.append(mapping)
            else:
                declined.append(Declined(mapping, reason))
        if taken:
            return MatchResult("mapped", tuple(taken), tuple(declined))
        outcome: Literal["unmapped", "ignored"] = (
            "unmapped" if event_type == "track" else "ignored"
        )
        return MatchResult(outcome, (), tuple(declined))

    def candidates(self, event: abc.Mapping[str, Any]) -> list[Mapping]:
        """The mappings whose type and name take ``event``, before conditions."""
        event_type = event.get("type")
        name = event.get("event")
        if not isinstance(event_type, str):
            return []
        found = list(self._by_type.get(event_type, ()))
        if isinstance(name, str):
            found += self._exact.get((event_type, name), ())
            if self._normalized:
                key = (event_type, normalize_name(name))
                found += self._normalized.get(key, ())
        return [self.mappings[index] for index in sorted(set(found))]

    def near_misses(self, event: abc.Mapping[str, Any]) -> list[tuple[Mapping, str]]:
        """Mappings taking a name that differs from the event's only in case or
        spacing, with the spelling they take: for preview's explanations."""
        name = event.get("event")
        if not isinstance(name, str):
            return []
        wanted = normalize_name(name)
        return [
            (mapping, spelling)
            for mapping in self.mappings
            if mapping.event_type == event.get("type")
            for spelling in sorted(mapping.event_names or ())
            if spelling != name and normalize_name(spelling) == wanted
        ]

    def get(self, name: str) -> Mapping | None:
        """Return the mapping called ``name``, if loaded."""
        return self._by_name.get(name)


def _frozen(index: dict[Any, list[int]]) -> dict[Any, tuple[int, ...]]:
    return {key: tuple(values) for key, values in index.items()}


def load_mappings(directory: Path, *, plan_dir: Path | None = None) -> MappingSet:
    """Load every mapping file under ``directory`` into one set, in path order.

    The tracking plan is read from ``plan_dir`` (``schemas/events/`` by
    default). A missing or empty directory gives an empty set. Otherwise
    MappingError lists every problem in every file, so one start-up shows all.
    """
    mappings, problems = inspect_mappings(directory, plan_dir=plan_dir)
    if problems:
        raise MappingError(problems)
    return mappings


def inspect_mappings(
    directory: Path, *, plan_dir: Path | None = None
) -> tuple[MappingSet, list[MappingProblem]]:
    """Check every file and return the valid mappings and every problem found.

    ``destination check`` uses it to run the examples of the mappings that
    are valid while it reports the others; the service uses ``load_mappings``.
    """
    plan, problems = load_tracking_plan(plan_dir or default_plan_dir())
    checkers = [check_file(path, plan) for path in find_mapping_files(directory)]
    problems += [problem for checker in checkers for problem in checker.problems]
    named = [mapping for checker in checkers for mapping in checker.named]
    problems += check_across_files(named)
    broken = {(p.file, p.mapping) for p in problems if p.mapping is not None}
    valid = tuple(
        mapping
        for checker in checkers
        for mapping in checker.mappings
        if (mapping.file, mapping.name) not in broken
    )
    return MappingSet(valid, source=directory), problems


def load_mapping_file(path: Path, *, plan_dir: Path | None = None) -> list[Mapping]:
    """Load one mapping file, or raise MappingError listing all its problems."""
    plan, problems = load_tracking_plan(plan_dir or default_plan_dir())
    checker = check_file(path, plan)
    problems += checker.problems + check_across_files(checker.named)
    if problems:
        raise MappingError(problems)
    return checker.mappings


def render_send(mapping: Mapping, event: abc.Mapping[str, Any]) -> RenderedSend:
    """Render ``mapping``'s request for ``event`` and say whether it has a recipient.

    Raises EventRejectedError when the event breaks the tracking plan, a render
    bound is hit, or the event names a Courier list the mapping does not allow.
    """
    plan_errors = _plan_violations(mapping, event)
    if plan_errors:
        raise EventRejectedError(mapping.name, plan_errors)
    budget = Budget()
    try:
        body = render(mapping.send, event, budget)
        user_id = None
        if mapping.action == "profile":
            value = (
                default_recipient(event)
                if mapping.user_id is MISSING
                else render(mapping.user_id, event, budget)
            )
            user_id = usable_user_id(value)
        else:
            body = with_default_recipient(mapping.send, body, event)
        body = copy_output(body, budget)
    except RenderError as error:
        message = f"mapping {mapping.name!r} cannot render this event: {error}."
        raise EventRejectedError(mapping.name, [EventError("$", message)]) from None
    assert isinstance(body, dict), "the loader accepts only an object for send"

    if mapping.action == "profile":
        if user_id in (".", ".."):
            # URLs resolve "." and ".." (even percent-encoded) as steps up the
            # path, so no request can name such a profile.
            message = f"the profile id {user_id!r} cannot be part of a URL path."
            raise EventRejectedError(mapping.name, [EventError("$.userId", message)])
        path = PROFILE_PATH + ("" if user_id is None else quote(user_id, safe=""))
        return RenderedSend(mapping.name, body, user_id is not None, path)
    if names_a_list(body) and not mapping.allow_lists:
        refusal = EventError(
            "$",
            f"mapping {mapping.name!r} would send to a Courier list or audience "
            "named by the event; it does not set allow_lists: true.",
        )
        raise EventRejectedError(mapping.name, [refusal])
    return RenderedSend(mapping.name, body, has_recipient(body))


def _plan_violations(
    mapping: Mapping, event: abc.Mapping[str, Any]
) -> list[EventError]:
    schema = mapping.properties_schema
    if schema is None and event.get("type") == "track":
        schema = mapping.plan.schema_for(
            event.get("event"), normalized=mapping.names_normalized
        )
    if schema is None:
        return []
    return schema.violations(event, reject_unknown=mapping.reject_unknown_properties)


def check_across_files(named: list[Mapping]) -> list[MappingProblem]:
    """Names unique across files; no two spellings one name once normalised."""
    return _check_unique_names(named) + _check_name_collisions(named)


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


def _check_name_collisions(mappings: list[Mapping]) -> list[MappingProblem]:
    """Two spellings of one normalised name, where a mapping uses normalisation."""
    spellings: dict[tuple[str, str], list[tuple[str, Mapping]]] = {}
    for mapping in mappings:
        for name in sorted(mapping.event_names or ()):
            key = (mapping.event_type, normalize_name(name))
            spellings.setdefault(key, []).append((name, mapping))
    problems = []
    for entries in spellings.values():
        if not any(mapping.names_normalized for _, mapping in entries):
            continue
        first_name, first = entries[0]
        for name, mapping in entries[1:]:
            if name == first_name:
                continue  # fan-out: one spelling in several mappings
            message = (
                f"event {name!r} and {first_name!r} (mapping {first.name!r} at "
                f"{first.file}:{first.line}) are one name once normalised, and a "
                "mapping matches names normalised; use one spelling"
            )
            problems.append(
                MappingProblem(
                    mapping.file, mapping.line, mapping.name, "when.event", message
                )
            )
    return problems
