"""Finds mapping files and reads each as plain JSON values with the line of every field.

PyYAML's constructors follow YAML 1.1: ``on`` becomes ``True``, ``2024-05-01`` a
date, tags build arbitrary objects and aliases expand without limit (the "billion
laughs" bomb). We take only its composer, the node graph, and build JSON values
ourselves by the YAML 1.2 core schema, refusing what JSON cannot carry.

JSON files are parsed by ``json.loads``, so JSON keeps its own strict rules; the
composer only supplies line numbers, and locates the problem when ``json.loads``
refuses a duplicate key or ``NaN`` without saying where.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import yaml
from yaml.error import Mark
from yaml.events import AliasEvent, CollectionStartEvent, Event, NodeEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from destination.errors import MappingError, MappingProblem

JsonPath = tuple[str | int, ...]

MAPPING_SUFFIXES = frozenset({".yaml", ".yml", ".json"})

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUES = frozenset({"true", "True", "TRUE"})
_FALSES = frozenset({"false", "False", "FALSE"})
_DECIMAL = re.compile(r"[-+]?[0-9]+")
_OCTAL = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
# Python's json accepts these by default; strict JSON (and our json.loads) does not.
_JSON_CONSTANTS = frozenset({"NaN", "Infinity", "-Infinity"})
_SIMPLE_FIELD = re.compile(r"[A-Za-z_][\w-]*")


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem at a path inside the document; the caller names mapping and field."""

    path: JsonPath
    line: int
    message: str


@dataclass(frozen=True, slots=True)
class Document:
    """A file's JSON value, the line where each path starts, and what is wrong."""

    file: str
    value: Any
    lines: dict[JsonPath, int]
    issues: tuple[Issue, ...]

    def line(self, path: JsonPath) -> int:
        """Return the line of ``path``, or of its nearest ancestor we know."""
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def problem(
        self, path: JsonPath, message: str, *, line: int | None = None
    ) -> MappingProblem:
        """Locate a problem at ``path`` by line, mapping name and field."""
        if line is None:
            line = self.line(path)
        name = self._mapping_name(path)
        field = path[2:] if name is not None else path
        return MappingProblem(
            self.file, line, name, format_field(field) or None, message
        )

    def _mapping_name(self, path: JsonPath) -> str | None:
        if len(path) < 2 or path[0] != "mappings" or not isinstance(path[1], int):
            return None
        try:
            name = self.value["mappings"][path[1]]["name"]
        except (KeyError, IndexError, TypeError):
            return None
        return name if isinstance(name, str) and name.strip() else None


def find_mapping_files(directory: Path) -> list[Path]:
    """Return the mapping files under ``directory`` in load order.

    Hidden files and folders are skipped: editors leave lock and swap files
    there. Symlinked folders are not followed, so no file loads twice.
    """
    if not directory.exists():
        return []
    if not directory.is_dir():
        _fail(str(directory), None, "is not a directory of mapping files")
    found = []
    for folder, subfolders, files in os.walk(directory, onerror=_unreadable):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            path = Path(folder, name)
            if not name.startswith(".") and path.suffix in MAPPING_SUFFIXES:
                found.append(path)
    return sorted(found, key=lambda path: path.relative_to(directory).parts)


def _unreadable(error: OSError) -> NoReturn:
    # os.walk skips unreadable folders silently; their mappings would vanish.
    _fail(str(error.filename), None, f"cannot be read: {error.strerror}")


def read_document(path: Path) -> Document:
    """Read a ``.yaml``, ``.yml`` or ``.json`` file; raise MappingError if unreadable.

    Problems inside an otherwise readable file come back as ``issues`` so the
    caller can name the mapping and field they belong to.
    """
    file = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        _fail(file, None, f"cannot be read: {exc.strerror}")
    except UnicodeDecodeError as exc:
        _fail(file, None, f"is not UTF-8 (bad byte at offset {exc.start})")

    try:
        if path.suffix == ".json":
            return _read_json(file, text)
        converter = _Converter(file, json_mode=False)
        value = converter.convert(_compose(file, text), ())
    except RecursionError:
        _fail(file, None, "is nested too deeply")
    return Document(file, value, converter.lines, tuple(converter.issues))


def _read_json(file: str, text: str) -> Document:
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
            parse_float=_parse_finite_float,
        )
    except json.JSONDecodeError as exc:
        _fail(file, exc.lineno, f"is not valid JSON: {exc.msg}")
    except ValueError as exc:
        refused: str | None = str(exc)
    else:
        refused = None

    # Strict JSON has tabs only between tokens, where YAML flow style wants
    # spaces. The composer's values are not kept: PyYAML decodes escaped
    # surrogate pairs differently, so json.loads stays the source of truth.
    converter = _Converter(file, json_mode=True)
    try:
        located = converter.convert(_compose(file, text.replace("\t", " ")), ())
    except MappingError:
        converter.lines.clear()
    if refused is None:
        return Document(file, value, converter.lines, ())
    if not converter.issues:
        _fail(file, None, f"is not valid JSON: {refused}")
    # Good enough to name the mapping each issue belongs to.
    return Document(file, located, converter.lines, tuple(converter.issues))


class _JsonComposer(yaml.SafeLoader):
    """A composer that marks anchors, aliases and tags instead of honouring them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.refused: dict[int, str] = {}

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        # types-PyYAML leaves the parser's event methods untyped.
        event = cast(Event, self.peek_event())  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            # Never hand out the anchored node: expanding it is the alias bomb.
            self.get_event()  # type: ignore[no-untyped-call]
            mark = cast(Mark, event.start_mark)
            placeholder = ScalarNode("", "", mark, mark)
            self.refused[id(placeholder)] = "aliases (*name) are not allowed"
            return placeholder
        node = super().compose_node(parent, index)
        if isinstance(event, NodeEvent) and event.anchor is not None:
            self.refused[id(node)] = "anchors (&name) are not allowed; repeat the value"
        elif isinstance(event, ScalarEvent | CollectionStartEvent) and event.tag:
            self.refused[id(node)] = f"tags ({event.tag}) are not allowed; remove it"
        return node


def _compose(file: str, text: str) -> tuple[Node | None, dict[int, str]]:
    loader = _JsonComposer(text)
    try:
        return loader.get_single_node(), loader.refused
    except yaml.MarkedYAMLError as exc:
        line = None if exc.problem_mark is None else exc.problem_mark.line + 1
        _fail(file, line, f"is not valid YAML: {exc.problem}")
    except yaml.YAMLError as exc:
        _fail(file, None, f"is not valid YAML: {exc}")
    finally:
        loader.dispose()


def _fail(file: str, line: int | None, message: str) -> NoReturn:
    raise MappingError([MappingProblem(file, line, None, None, message)])


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _parse_finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} cannot be carried by JSON; quote it to keep a string")
    return number


class _Converter:
    """Turns composed nodes into JSON values, collecting every issue it meets."""

    def __init__(self, file: str, *, json_mode: bool) -> None:
        self.file = file
        self.json_mode = json_mode
        self.lines: dict[JsonPath, int] = {}
        self.issues: list[Issue] = []
        self.refused: dict[int, str] = {}

    def convert(
        self, composed: tuple[Node | None, dict[int, str]], path: JsonPath
    ) -> Any:
        root, self.refused = composed
        return self._convert(root, path) if root is not None else None

    def _convert(self, node: Node, path: JsonPath) -> Any:
        self.lines.setdefault(path, _line(node))
        refused = self.refused.get(id(node))
        if refused is not None:
            self._issue(path, node, refused)
            return None
        if isinstance(node, MappingNode):
            return self._convert_mapping(node, path)
        if isinstance(node, SequenceNode):
            return [
                self._convert(item, (*path, i)) for i, item in enumerate(node.value)
            ]
        assert isinstance(node, ScalarNode)
        return self._convert_scalar(node, path)

    def _convert_mapping(self, node: MappingNode, path: JsonPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._convert_key(key_node, path)
            if key is None:
                continue
            if key in result:
                self._issue((*path, key), key_node, f"duplicate key {key!r}; keep one")
                continue
            self.lines[(*path, key)] = _line(key_node)
            result[key] = self._convert(value_node, (*path, key))
        return result

    def _convert_key(self, node: Node, path: JsonPath) -> str | None:
        if id(node) in self.refused:
            self._issue(path, node, self.refused[id(node)])
            return None
        key = self._convert_scalar(node, path) if isinstance(node, ScalarNode) else []
        if not isinstance(key, str):
            self._issue(path, node, f"keys must be strings, not {key!r}; quote the key")
            return None
        return key

    def _convert_scalar(self, node: ScalarNode, path: JsonPath) -> Any:
        text = node.value
        # Quoted and block scalars are always strings; only plain ones resolve.
        if node.style is not None:
            return text
        if self.json_mode and text in _JSON_CONSTANTS:
            self._issue(path, node, f"{text} is not a JSON number")
            return None
        try:
            return _resolve_plain(text)
        except ValueError as exc:
            self._issue(path, node, str(exc))
            return None

    def _issue(self, path: JsonPath, node: Node, message: str) -> None:
        self.issues.append(Issue(path, _line(node), message))


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _resolve_plain(text: str) -> Any:
    """Resolve a plain scalar by the YAML 1.2 core schema; anything else is a string."""
    if text in _NULLS:
        return None
    if text in _TRUES or text in _FALSES:
        return text in _TRUES
    if _DECIMAL.fullmatch(text):
        return int(text)
    if _OCTAL.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _NOT_FINITE.fullmatch(text):
        raise ValueError(f"{text} cannot be carried by JSON; quote it to keep a string")
    if _FLOAT.fullmatch(text):
        return _parse_finite_float(text)
    return text


def json_kind(value: Any) -> str:
    """Name a value's JSON type for messages, as the file's author knows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def check_keys(
    path: JsonPath,
    value: dict[str, Any],
    allowed: tuple[str, ...],
    report: Callable[[JsonPath, str], None],
) -> set[str]:
    """Report keys not in ``allowed``, with a "did you mean"; return the known
    keys suggested instead, so a caller does not also call them missing."""
    suggested = set()
    for key in value:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1)
        suggested.update(close)
        hint = f"did you mean {close[0]!r}?" if close else "expected"
        if not close:
            hint += f" one of {', '.join(allowed)}"
        report((*path, key), f"unknown key {key!r}; {hint}")
    return suggested


def format_field(path: JsonPath) -> str:
    """Write a path the way a reader finds it in the file: ``send.message.to``."""
    text = ""
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        elif _SIMPLE_FIELD.fullmatch(step):
            text += f".{step}" if text else step
        else:
            text += f"[{step!r}]"
    return text
