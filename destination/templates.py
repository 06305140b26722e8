"""Reading templates from mapping files: which objects are directives, and checks.

An object with a key starting with ``@`` is a directive and must have that one
key. What changes a directive's meaning (a path, a template string, an
operator, a pattern) must be written literally in the file: it is checked here,
once, when the file loads, and never comes from event data. Templates nest at
most ``MAX_TEMPLATE_DEPTH`` levels, so rendering one recurses a bounded depth.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from destination.directives import (
    ArrayPathDirective,
    CaseDirective,
    ExcludeWhenNullDirective,
    FlattenDirective,
    IfDirective,
    JsonDirective,
    LiteralDirective,
    MergeDirective,
    PathDirective,
    ReplaceDirective,
    Replacement,
    TemplateDirective,
    TransformDirective,
)
from destination.event_path import MISSING, PATH_HELP, EventPath, parse_path
from destination.mapping_file import JsonPath, json_kind

Report = Callable[[JsonPath, str], None]
Builder = Callable[[Any, JsonPath, int], Any]

MAX_TEMPLATE_DEPTH = 32
MAX_TEMPLATE_CHARS = 10_000
MAX_PLACEHOLDERS = 100
MAX_PATTERN_CHARS = 100
MAX_REPLACEMENT_CHARS = 1_000

DIRECTIVE_NAMES = (
    "@path",
    "@template",
    "@if",
    "@case",
    "@replace",
    "@json",
    "@merge",
    "@arrayPath",
    "@flatten",
    "@excludeWhenNull",
    "@literal",
    "@transform",
)


def compile_template(value: Any, path: JsonPath, report: Report) -> Any:
    """Turn a JSON value from a file into a template, reporting each problem."""
    return _Compiler(report).template(value, path, 0)


def is_directive(value: Any) -> bool:
    """Whether a JSON value from a file is written as a directive object."""
    return isinstance(value, dict) and any(key.startswith("@") for key in value)


class _Compiler:
    def __init__(self, report: Report) -> None:
        self.report = report
        self.builders: dict[str, Builder] = {
            "@path": self._path,
            "@template": self._template_text,
            "@if": self._if,
            "@case": self._case,
            "@replace": self._replace,
            "@json": self._json,
            "@merge": self._merge,
            "@arrayPath": self._array_path,
            "@flatten": self._flatten,
            "@excludeWhenNull": self._exclude_when_null,
            "@literal": lambda value, path, depth: LiteralDirective(value),
            "@transform": self._transform,
        }

    def template(self, value: Any, path: JsonPath, depth: int) -> Any:
        if depth > MAX_TEMPLATE_DEPTH and isinstance(value, dict | list):
            self.report(
                path,
                f"the template nests deeper than {MAX_TEMPLATE_DEPTH} levels; "
                "flatten it",
            )
            return None
        if isinstance(value, list):
            return [
                self.template(item, (*path, index), depth + 1)
                for index, item in enumerate(value)
            ]
        if not isinstance(value, dict):
            return value
        if is_directive(value):
            return self._directive(value, path, depth)
        return {
            key: self.template(item, (*path, key), depth + 1)
            for key, item in value.items()
        }

    def _directive(self, value: dict[str, Any], path: JsonPath, depth: int) -> Any:
        names = [key for key in value if key.startswith("@")]
        if len(names) > 1:
            listed = ", ".join(names)
            self.report(path, f"an object holds one directive, not {listed}; nest them")
            return None
        name = names[0]
        others = [key for key in value if key != name]
        if others:
            self.report(path, f"an object with {name} has no other keys; move {others}")
            return None
        build = self.builders.get(name)
        if build is None:
            close = difflib.get_close_matches(name, DIRECTIVE_NAMES, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"the directives are {', '.join(DIRECTIVE_NAMES)}"
            )
            self.report(path, f"unknown directive {name!r}; {hint}")
            return None
        return build(value[name], path, depth + 1)

    def _path(self, value: Any, path: JsonPath, depth: int) -> Any:
        if not isinstance(value, str):
            self.report(path, f"@path must be a string; {PATH_HELP}")
            return None
        try:
            return PathDirective(value, parse_path(value))
        except ValueError as error:
            self.report(path, str(error))
            return None

    def _template_text(self, value: Any, path: JsonPath, depth: int) -> Any:
        if not isinstance(value, str):
            kind = json_kind(value)
            self.report(
                path, f"@template must be a string like 'Hi {{{{name}}}}', not {kind}"
            )
            return None
        try:
            return TemplateDirective(value, parse_template(value))
        except ValueError as error:
            self.report(path, str(error))
            return None

    def _if(self, value: Any, path: JsonPath, depth: int) -> Any:
        keys = ("exists", "blank", "then", "else")
        options = self._options("@if", value, path, keys, ())
        if options is None:
            return None
        tests = [key for key in ("exists", "blank") if key in options]
        if len(tests) != 1:
            self.report(path, "@if takes exactly one of exists or blank")
            return None
        if "then" not in options and "else" not in options:
            self.report(path, "@if has neither then nor else; add one")
            return None
        parts = {
            key: self.template(options[key], (*path, "@if", key), depth)
            for key in options
        }
        return IfDirective(
            tests[0],
            parts[tests[0]],
            parts.get("then", MISSING),
            parts.get("else", MISSING),
        )

    def _case(self, value: Any, path: JsonPath, depth: int) -> Any:
        options = self._options("@case", value, path, ("operator", "value"), ("value",))
        if options is None:
            return None
        operator = self._choice("@case", options, "operator", path, ("lower", "upper"))
        content = self.template(options.get("value"), (*path, "@case", "value"), depth)
        return None if operator is None else CaseDirective(operator, content)

    def _replace(self, value: Any, path: JsonPath, depth: int) -> Any:
        keys = (
            "pattern",
            "replacement",
            "pattern2",
            "replacement2",
            "ignorecase",
            "global",
            "value",
        )
        options = self._options("@replace", value, path, keys, ("pattern", "value"))
        if options is None:
            return None
        ignorecase = self._flag("@replace", options, "ignorecase", path, False)
        replace_all = self._flag("@replace", options, "global", path, True)
        flags = re.IGNORECASE if ignorecase else 0
        replacements = []
        for suffix in ("", "2"):
            if f"pattern{suffix}" not in options:
                continue
            pattern = self._text(options, f"pattern{suffix}", path, MAX_PATTERN_CHARS)
            replacement = self._text(
                options, f"replacement{suffix}", path, MAX_REPLACEMENT_CHARS, ""
            )
            if pattern and replacement is not None:
                compiled = re.compile(re.escape(pattern), flags)
                replacements.append(Replacement(compiled, replacement))
            elif pattern == "":
                self.report(
                    (*path, "@replace", f"pattern{suffix}"), "the pattern is empty"
                )
        content = self.template(options["value"], (*path, "@replace", "value"), depth)
        return ReplaceDirective(tuple(replacements), replace_all, content)

    def _json(self, value: Any, path: JsonPath, depth: int) -> Any:
        options = self._options(
            "@json", value, path, ("mode", "value"), ("mode", "value")
        )
        if options is None:
            return None
        mode = self._choice("@json", options, "mode", path, ("encode", "decode"))
        content = self.template(options["value"], (*path, "@json", "value"), depth)
        return None if mode is None else JsonDirective(mode, content)

    def _merge(self, value: Any, path: JsonPath, depth: int) -> Any:
        keys = ("objects", "direction")
        options = self._options("@merge", value, path, keys, ("objects",))
        if options is None:
            return None
        direction = self._choice(
            "@merge", options, "direction", path, ("right", "left"), "right"
        )
        objects = options["objects"]
        if not isinstance(objects, list) or not objects:
            where = (*path, "@merge", "objects")
            self.report(where, "objects must be a non-empty list of objects to merge")
            return None
        compiled = self.template(objects, (*path, "@merge", "objects"), depth)
        return None if direction is None else MergeDirective(tuple(compiled), direction)

    def _array_path(self, value: Any, path: JsonPath, depth: int) -> Any:
        if not isinstance(value, list) or not 1 <= len(value) <= 2:
            hint = "write ['$.products', {item shape}] or just ['$.products']"
            self.report(path, f"@arrayPath takes a list of a path and a shape; {hint}")
            return None
        source = value[0]
        if isinstance(source, str):
            source = {"@path": source}
        if not is_directive(source):
            self.report((*path, "@arrayPath", 0), "the first item must be a path")
            return None
        root = self.template(source, (*path, "@arrayPath", 0), depth)
        if len(value) == 1:
            return ArrayPathDirective(root)
        shape = value[1]
        if not isinstance(shape, dict) or not shape:
            hint = "drop it to copy the items as they are"
            where = (*path, "@arrayPath", 1)
            self.report(where, f"the item shape must be a non-empty object; {hint}")
            return None
        return ArrayPathDirective(
            root, self.template(shape, (*path, "@arrayPath", 1), depth)
        )

    def _flatten(self, value: Any, path: JsonPath, depth: int) -> Any:
        keys = ("value", "separator", "omitArrays")
        options = self._options("@flatten", value, path, keys, ("value",))
        if options is None:
            return None
        separator = self._text(options, "separator", path, 10, ".", name="@flatten")
        omit = self._flag("@flatten", options, "omitArrays", path, False)
        content = self.template(options["value"], (*path, "@flatten", "value"), depth)
        if separator == "":
            self.report((*path, "@flatten", "separator"), "the separator is empty")
        if not separator:
            return None
        return FlattenDirective(content, separator, omit)

    def _exclude_when_null(self, value: Any, path: JsonPath, depth: int) -> Any:
        return ExcludeWhenNullDirective(
            self.template(value, (*path, "@excludeWhenNull"), depth)
        )

    def _transform(self, value: Any, path: JsonPath, depth: int) -> Any:
        keys = ("apply", "mapping")
        options = self._options("@transform", value, path, keys, keys)
        if options is None:
            return None
        if not isinstance(options["apply"], dict) or is_directive(options["apply"]):
            where = (*path, "@transform", "apply")
            self.report(where, "apply must be an object of fields to build first")
            return None
        apply = self.template(options["apply"], (*path, "@transform", "apply"), depth)
        mapping = self.template(
            options["mapping"], (*path, "@transform", "mapping"), depth
        )
        return TransformDirective(apply, mapping)

    def _options(
        self,
        name: str,
        value: Any,
        path: JsonPath,
        allowed: tuple[str, ...],
        required: tuple[str, ...],
    ) -> dict[str, Any] | None:
        if not isinstance(value, dict) or is_directive(value):
            kind = "a directive" if isinstance(value, dict) else json_kind(value)
            self.report(
                path, f"{name} takes an object of {', '.join(allowed)}, not {kind}"
            )
            return None
        problems = 0
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"use {', '.join(allowed)}"
                )
                self.report((*path, name, key), f"{name} has no option {key!r}; {hint}")
                problems += 1
        for key in required:
            if key not in value:
                self.report(path, f"{name} has no {key!r}; add it")
                problems += 1
        return None if problems else value

    def _choice(
        self,
        name: str,
        options: dict[str, Any],
        key: str,
        path: JsonPath,
        choices: tuple[str, ...],
        default: str | None = None,
    ) -> Any:
        value = options.get(key, default)
        if value in choices:
            return value
        shown = "nothing" if value is None else repr(value)
        listed = " or ".join(choices)
        self.report((*path, name, key), f"{name} {key} must be {listed}, not {shown}")
        return None

    def _flag(
        self,
        name: str,
        options: dict[str, Any],
        key: str,
        path: JsonPath,
        default: bool,
    ) -> bool:
        value = options.get(key, default)
        if isinstance(value, bool):
            return value
        self.report((*path, name, key), f"{name} {key} must be true or false")
        return default

    def _text(
        self,
        options: dict[str, Any],
        key: str,
        path: JsonPath,
        limit: int,
        default: str | None = None,
        *,
        name: str = "@replace",
    ) -> str | None:
        value = options.get(key, default)
        if isinstance(value, str) and len(value) <= limit:
            return value
        where = (*path, name, key)
        if isinstance(value, str):
            self.report(where, f"{name} {key} is over {limit} characters")
        else:
            kind = json_kind(value)
            self.report(
                where, f"{name} {key} must be a string written here, not {kind}"
            )
        return None


def parse_template(source: str) -> tuple[str | EventPath, ...]:
    """Split ``'Hi {{traits.name}}!'`` into text and paths; raise ValueError if bad."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"@template is over {MAX_TEMPLATE_CHARS:,} characters")
    parts: list[str | EventPath] = []
    position = 0
    while (start := source.find("{{", position)) >= 0:
        close = "}}}" if source.startswith("{{{", start) else "}}"
        end = source.find(close, start + len(close))
        if end < 0:
            raise ValueError(
                f"@template has {source[start : start + len(close)]!r} at character "
                f"{start + 1} but no {close!r} after it"
            )
        parts.append(source[position:start])
        parts.append(_placeholder(source[start + len(close) : end], start))
        position = end + len(close)
    parts.append(source[position:])
    if len(parts) // 2 > MAX_PLACEHOLDERS:
        raise ValueError(f"@template has more than {MAX_PLACEHOLDERS} placeholders")
    return tuple(part for part in parts if part != "")


def _placeholder(text: str, start: int) -> EventPath:
    name = text.strip()
    source = name if name.startswith("$") else "$." + name
    try:
        return EventPath(name, parse_path(source))
    except ValueError:
        raise ValueError(
            f"@template placeholder {{{{{text}}}}} at character {start + 1} is not "
            "a path; write {{properties.name}} or {{$.properties['first name']}}"
        ) from None
