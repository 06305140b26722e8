"""Tests for the mapping language's directives: what each renders, what each refuses."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from destination.directives import (
    MAX_CHARS,
    MAX_DEPTH,
    Budget,
    RenderError,
    copy_output,
    is_blank,
    render,
)
from destination.event_path import MISSING
from destination.json_text import encode_compact, format_number
from destination.mapping_file import JsonPath
from destination.templates import compile_template

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user-1",
    "properties": {
        "title": "Intro",
        "count": 3,
        "price": 9.5,
        "whole": 2.0,
        "zero": 0,
        "no": False,
        "yes": True,
        "empty": "",
        "spaces": "   ",
        "nothing": None,
        "list": [1, "two", None],
        "empty_list": [],
        "empty_object": {},
        "nested": {"a": {"b": 1}, "c": [1, {"d": 2}]},
        "first name": "Ada",
        "a.b": "dotted",
        "0": "key zero",
        "products": [{"sku": "A", "price": 1}, {"sku": "B"}, "loose"],
        "html": "<b>Tom & Jerry</b>",
        "accent": "Café ☕",
    },
}


def compiled(template: Any) -> Any:
    problems: list[tuple[JsonPath, str]] = []
    result = compile_template(template, (), lambda p, m: problems.append((p, m)))
    assert not problems, problems
    return result


def resolve(template: Any, event: Any = None) -> Any:
    """Render ``template`` for ``event`` (EVENT by default) as the service does."""
    budget = Budget()
    value = render(compiled(template), EVENT if event is None else event, budget)
    return value if value is MISSING else copy_output(value, budget)


def problems_of(template: Any) -> list[tuple[JsonPath, str]]:
    problems: list[tuple[JsonPath, str]] = []
    compile_template(template, ("t",), lambda p, m: problems.append((p, m)))
    return problems


def path(source: str) -> dict[str, str]:
    return {"@path": source}


# @path


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("$.properties.title", "Intro", id="string"),
        pytest.param("$.properties.count", 3, id="number-stays-number"),
        pytest.param("$.properties.no", False, id="false"),
        pytest.param("$.properties.zero", 0, id="zero"),
        pytest.param("$.properties.empty", "", id="empty-string"),
        pytest.param("$.properties.nothing", None, id="null-kept"),
        pytest.param("$.properties.missing", MISSING, id="missing"),
        pytest.param("$.properties['first name']", "Ada", id="quoted-space"),
        pytest.param("$.properties.first name", "Ada", id="dotted-space"),
        pytest.param("$.properties['a.b']", "dotted", id="dot-in-key"),
        pytest.param("$.properties.a.b", MISSING, id="dot-means-a-step"),
        pytest.param("$.properties.list[1]", "two", id="bracket-index"),
        pytest.param("$.properties.list.1", "two", id="dot-index"),
        pytest.param("$.properties.list[3]", MISSING, id="past-the-end"),
        pytest.param("$.properties[0]", "key zero", id="number-reads-object-key"),
        pytest.param("$.properties['0']", "key zero", id="quoted-number-key"),
        pytest.param("$.properties.list['1']", MISSING, id="quoted-key-on-list"),
        pytest.param("$.properties.title.length", MISSING, id="through-a-string"),
        pytest.param("$.properties.nested.c[1].d", 2, id="deep"),
        pytest.param("$.properties.list", [1, "two", None], id="list-copied"),
    ],
)
def test_path(source: str, expected: Any) -> None:
    """@path copies the value with its JSON type; missing is distinct from null."""
    assert resolve(path(source)) == expected


def test_missing_is_dropped_and_null_kept_in_objects_and_lists() -> None:
    """A missing value drops its key or element; null stays."""
    template = {
        "gone": path("$.nope"),
        "null": path("$.properties.nothing"),
        "list": [path("$.nope"), path("$.properties.nothing"), 1],
        "all_gone": {"a": path("$.nope")},
    }

    assert resolve(template) == {"null": None, "list": [None, 1], "all_gone": {}}


def test_rendered_values_are_copies() -> None:
    """Editing a rendered value never edits the event."""
    value = resolve({"nested": path("$.properties.nested")})

    value["nested"]["a"]["b"] = "changed"

    assert EVENT["properties"]["nested"]["a"]["b"] == 1


# @template


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Hi {{properties.title}}!", "Hi Intro!", id="string"),
        pytest.param("{{ properties.title }}", "Intro", id="spaces-trimmed"),
        pytest.param("{{{properties.title}}}", "Intro", id="triple-braces"),
        pytest.param("{{$.properties.title}}", "Intro", id="dollar-form"),
        pytest.param("[{{properties.missing}}]", "[]", id="missing-is-empty"),
        pytest.param("[{{properties.nothing}}]", "[]", id="null-is-empty"),
        pytest.param("{{properties.count}}", "3", id="integer"),
        pytest.param("{{properties.price}}", "9.5", id="float"),
        pytest.param("{{properties.whole}}", "2", id="float-whole-like-javascript"),
        pytest.param("{{properties.zero}}", "0", id="zero"),
        pytest.param("{{properties.yes}}/{{properties.no}}", "true/false", id="bools"),
        pytest.param("{{properties.list}}", '[1,"two",null]', id="list-as-json"),
        pytest.param("{{properties.nested.a}}", '{"b":1}', id="object-as-json"),
        pytest.param("{{properties.html}}", "<b>Tom & Jerry</b>", id="no-html-escape"),
        pytest.param("{{properties['first name']}}", "Ada", id="quoted-key"),
        pytest.param("{{properties.list.0}}", "1", id="dot-index"),
        pytest.param("no placeholders", "no placeholders", id="plain"),
        pytest.param("a }} b", "a }} b", id="lone-close"),
    ],
)
def test_template(text: str, expected: str) -> None:
    """@template fills placeholders with each value's text, as docs/mappings.md pins."""
    assert resolve({"@template": text}) == expected


@pytest.mark.parametrize(
    ("number", "text"),
    [
        pytest.param(1.0, "1", id="whole-float"),
        pytest.param(-0.0, "0", id="negative-zero"),
        pytest.param(0.1, "0.1", id="tenth"),
        pytest.param(1e20, "100000000000000000000", id="1e20"),
        pytest.param(1e21, "1e+21", id="1e21"),
        pytest.param(1.5e-7, "1.5e-7", id="small"),
        pytest.param(0.000001, "0.000001", id="1e-6"),
        pytest.param(123456789.125, "123456789.125", id="long"),
        pytest.param(2**60, "1152921504606846976", id="big-int-exact"),
    ],
)
def test_numbers_are_written_like_javascript(number: float, text: str) -> None:
    """Numbers in text read as JavaScript's String(n), but integers stay exact."""
    assert format_number(number) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Hi {{name", id="unclosed"),
        pytest.param("{{}}", id="empty"),
        pytest.param("{{ a b. }}", id="bad-path"),
        pytest.param("{{a[*]}}", id="wildcard"),
        pytest.param("x" * 10_001, id="too-long"),
        pytest.param("{{a}}" * 101, id="too-many-placeholders"),
    ],
)
def test_template_refuses(text: str) -> None:
    """A template that is not text with path placeholders is a load error."""
    (problem,) = problems_of({"@template": text})

    assert problem[0] == ("t",)
    assert "@template" in problem[1]


# @if


@pytest.mark.parametrize(
    ("test", "source", "expected"),
    [
        pytest.param("exists", "$.properties.title", "then", id="exists-string"),
        pytest.param("exists", "$.properties.empty", "then", id="exists-empty"),
        pytest.param("exists", "$.properties.zero", "then", id="exists-zero"),
        pytest.param("exists", "$.properties.no", "then", id="exists-false"),
        pytest.param("exists", "$.properties.nothing", "else", id="exists-null"),
        pytest.param("exists", "$.properties.missing", "else", id="exists-missing"),
        pytest.param("blank", "$.properties.title", "then", id="blank-string"),
        pytest.param("blank", "$.properties.zero", "then", id="blank-zero"),
        pytest.param("blank", "$.properties.no", "then", id="blank-false"),
        pytest.param("blank", "$.properties.empty", "else", id="blank-empty"),
        pytest.param("blank", "$.properties.spaces", "else", id="blank-spaces"),
        pytest.param("blank", "$.properties.empty_list", "else", id="blank-list"),
        pytest.param("blank", "$.properties.empty_object", "else", id="blank-obj"),
        pytest.param("blank", "$.properties.nothing", "else", id="blank-null"),
        pytest.param("blank", "$.properties.missing", "else", id="blank-missing"),
    ],
)
def test_if(test: str, source: str, expected: str) -> None:
    """exists: not missing or null; blank (Segment's sense): then unless blank."""
    template = {"@if": {test: path(source), "then": "then", "else": "else"}}

    assert resolve(template) == expected


def test_if_without_a_branch_drops_the_key() -> None:
    """A branch that is not written renders missing, so the key disappears."""
    template = {
        "a": {"@if": {"exists": path("$.nope"), "then": 1}},
        "b": {"@if": {"exists": path("$.userId"), "else": 2}},
        "c": {"@if": {"exists": path("$.nope"), "then": 1, "else": 0}},
        "d": {"@if": {"exists": path("$.nope"), "then": 1, "else": False}},
    }

    assert resolve(template) == {"c": 0, "d": False}


def test_if_branches_are_templates() -> None:
    """then and else may hold directives and objects."""
    template = {
        "@if": {
            "exists": path("$.properties.title"),
            "then": {"t": {"@template": "{{properties.title}}!"}},
        }
    }

    assert resolve(template) == {"t": "Intro!"}


# @case, @replace


@pytest.mark.parametrize(
    ("operator", "source", "expected"),
    [
        pytest.param("upper", "$.properties.accent", "CAFÉ ☕", id="upper-unicode"),
        pytest.param("lower", "$.properties.title", "intro", id="lower"),
        pytest.param("upper", "$.properties.count", 3, id="number-unchanged"),
        pytest.param("upper", "$.properties.nothing", None, id="null-kept"),
        pytest.param("upper", "$.properties.missing", MISSING, id="missing"),
        pytest.param("lower", "$.properties.list", [1, "two", None], id="list"),
    ],
)
def test_case(operator: str, source: str, expected: Any) -> None:
    """@case changes strings only."""
    template = {"@case": {"operator": operator, "value": path(source)}}

    assert resolve(template) == expected


@pytest.mark.parametrize(
    ("options", "source", "expected"),
    [
        pytest.param({"pattern": "o"}, "$.properties.title", "Intr", id="remove"),
        pytest.param(
            {"pattern": "&", "replacement": "and"},
            "$.properties.html",
            "<b>Tom and Jerry</b>",
            id="replace",
        ),
        pytest.param(
            {"pattern": ".", "replacement": "$&\\1"},
            "$.properties.price",
            "9$&\\15",
            id="literal-pattern-and-replacement",
        ),
        pytest.param(
            {"pattern": "I", "replacement": "i", "ignorecase": True},
            "$.properties.title",
            "intro",
            id="ignorecase",
        ),
        pytest.param(
            {"pattern": "wo", "replacement": "x", "global": False},
            "$.properties.list[1]",
            "tx",
            id="first-only",
        ),
        pytest.param(
            {"pattern": "t", "replacement": "T", "pattern2": "T", "replacement2": "-"},
            "$.properties.title",
            "In-ro",
            id="second-pattern",
        ),
        pytest.param({"pattern": "1"}, "$.properties.count", "3", id="number-as-text"),
        pytest.param(
            {"pattern": "ru", "replacement": "RU"},
            "$.properties.yes",
            "tRUe",
            id="bool-as-text",
        ),
        pytest.param({"pattern": "x"}, "$.properties.nothing", None, id="null"),
        pytest.param({"pattern": "x"}, "$.properties.missing", MISSING, id="missing"),
        pytest.param(
            {"pattern": "x"}, "$.properties.nested.a", {"b": 1}, id="object-unchanged"
        ),
    ],
)
def test_replace(options: dict[str, Any], source: str, expected: Any) -> None:
    """@replace replaces literal text; patterns are never regular expressions."""
    template = {"@replace": {**options, "value": path(source)}}

    assert resolve(template) == expected


# @json


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(
            {"b": 1, "a": [True, None]}, '{"b":1,"a":[true,null]}', id="order"
        ),
        pytest.param({"x": "é ☕ 😀"}, '{"x":"é ☕ 😀"}', id="non-ascii-as-is"),
        pytest.param({"x": "\ud800"}, '{"x":"\\ud800"}', id="lone-surrogate-escaped"),
        pytest.param({"x": 'a\n"b"\u0001'}, '{"x":"a\\n\\"b\\"\\u0001"}', id="escapes"),
        pytest.param([1.0, 1e21, 0.5], "[1,1e+21,0.5]", id="numbers"),
        pytest.param("text", '"text"', id="string"),
    ],
)
def test_json_encode(value: Any, text: str) -> None:
    """@json encode writes compact JSON like JSON.stringify, keys in their order."""
    template = {"@json": {"mode": "encode", "value": {"@literal": value}}}

    assert resolve(template) == text


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param('{"a": [1, 2]}', {"a": [1, 2]}, id="object"),
        pytest.param("42", 42, id="number"),
        pytest.param("null", None, id="null"),
    ],
)
def test_json_decode(source: str, expected: Any) -> None:
    """@json decode reads JSON text."""
    template = {"@json": {"mode": "decode", "value": path("$.properties.raw")}}

    assert resolve(template, {"properties": {"raw": source}}) == expected


def test_json_passes_non_strings_and_missing() -> None:
    """decode leaves non-strings alone; either mode keeps missing missing."""
    decode = {"@json": {"mode": "decode", "value": path("$.properties.count")}}
    encode = {"@json": {"mode": "encode", "value": path("$.nope")}}

    assert resolve(decode) == 3
    assert resolve({"k": encode}) == {}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("{not json", id="syntax"),
        pytest.param('{"a": 1, "a": 2}', id="duplicate-key"),
        pytest.param("NaN", id="nan"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="deep"),
    ],
)
def test_json_decode_refuses(raw: str) -> None:
    """JSON text that is not strict JSON is a render error, never a crash."""
    template = {"@json": {"mode": "decode", "value": path("$.raw")}}

    with pytest.raises(RenderError, match="@json cannot decode"):
        resolve(template, {"raw": raw})


# @merge, @arrayPath, @flatten, @excludeWhenNull, @literal, @transform


def test_merge_directions_and_key_order() -> None:
    """right: later objects win; left: earlier ones; keys keep first appearance."""
    objects = [{"a": 1, "b": 1}, path("$.properties.nested"), {"b": 2, "c": 3}]

    right = resolve({"@merge": {"objects": objects}})
    left = resolve({"@merge": {"objects": objects, "direction": "left"}})

    assert list(right) == ["a", "b", "c"]
    assert right == {"a": {"b": 1}, "b": 2, "c": 3}
    assert left == {"a": 1, "b": 1, "c": [1, {"d": 2}]}


def test_merge_skips_what_is_not_an_object() -> None:
    """Missing, null, strings and lists are skipped."""
    objects = [path("$.nope"), path("$.properties.nothing"), "s", [1], {"k": 1}]

    assert resolve({"@merge": {"objects": objects}}) == {"k": 1}


def test_array_path_shapes_each_item() -> None:
    """Inside the shape $ is the item; a lone object is wrapped in a list."""
    shape = {"id": path("$.sku"), "price": path("$.price"), "self": path("$")}
    template = {"@arrayPath": ["$.properties.products", shape]}

    assert resolve(template) == [
        {"id": "A", "price": 1, "self": {"sku": "A", "price": 1}},
        {"id": "B", "self": {"sku": "B"}},
        {"self": "loose"},
    ]
    single = {"@arrayPath": ["$.properties.nested.a", {"b": path("$.b")}]}
    assert resolve(single) == [{"b": 1}]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("$.properties.missing", MISSING, id="missing"),
        pytest.param("$.properties.nothing", None, id="null"),
        pytest.param("$.properties.title", "Intro", id="string-unchanged"),
        pytest.param("$.properties.empty_list", [], id="empty-list"),
    ],
)
def test_array_path_leaves_non_lists(source: str, expected: Any) -> None:
    """Anything but a list or an object comes back unchanged."""
    assert resolve({"@arrayPath": [source, {"x": path("$.x")}]}) == expected


def test_array_path_without_shape_and_with_a_directive() -> None:
    """Without a shape it copies; the source may be any directive."""
    source = {
        "@if": {
            "exists": path("$.properties.nope"),
            "then": path("$.properties.nope"),
            "else": path("$.properties.products"),
        }
    }
    template = {"@arrayPath": [source, {"sku": path("$.sku")}]}

    assert resolve({"@arrayPath": ["$.properties.list"]}) == [1, "two", None]
    assert resolve(template) == [{"sku": "A"}, {"sku": "B"}, {}]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            {},
            {"a.b": 1, "c.0": 1, "c.1.d": 2},
            id="default-dot-and-arrays",
        ),
        pytest.param(
            {"separator": "_", "omitArrays": True},
            {"a_b": 1, "c": [1, {"d": 2}]},
            id="omit-arrays",
        ),
    ],
)
def test_flatten(options: dict[str, Any], expected: dict[str, Any]) -> None:
    """@flatten joins nested keys; omitArrays keeps lists as values."""
    template = {"@flatten": {"value": path("$.properties.nested"), **options}}

    assert resolve(template) == expected


def test_flatten_keeps_empty_containers_and_scalars() -> None:
    """Empty objects and lists stay as values; a scalar is unchanged."""
    event = {"v": {"e": {}, "l": [], "n": None}}

    assert resolve({"@flatten": {"value": path("$.v")}}, event) == event["v"]
    assert resolve({"@flatten": {"value": path("$.userId")}}) == "user-1"


def test_exclude_when_null() -> None:
    """@excludeWhenNull drops null, keeps every other value, falsy ones too."""
    template = {
        key: {"@excludeWhenNull": path(f"$.properties.{key}")}
        for key in ("nothing", "zero", "no", "empty", "missing")
    }

    assert resolve(template) == {"zero": 0, "no": False, "empty": ""}


def test_literal_is_not_rendered() -> None:
    """@literal sends its value exactly, directives and braces included."""
    value = {"@path": "$.userId", "t": "{{x}}"}

    assert resolve({"@literal": value}) == value


def test_transform_renders_mapping_over_apply() -> None:
    """@transform builds apply from the event, then renders mapping over it."""
    template = {
        "@transform": {
            "apply": {"name": path("$.properties.title"), "gone": path("$.nope")},
            "mapping": {"greeting": {"@template": "Hello {{name}}{{gone}}"}},
        }
    }

    assert resolve(template) == {"greeting": "Hello Intro"}


# Load-time checks


@pytest.mark.parametrize(
    ("template", "where", "message"),
    [
        pytest.param({"@path": 1}, ("t",), "@path must be a string", id="path-type"),
        pytest.param({"@pth": "$"}, ("t",), "did you mean '@path'?", id="unknown"),
        pytest.param(
            {"@path": "$.a", "@template": "x"},
            ("t",),
            "an object holds one directive, not @path, @template",
            id="two-directives",
        ),
        pytest.param(
            {"@path": "$.a", "k": 1},
            ("t",),
            "an object with @path has no other keys",
            id="mixed",
        ),
        pytest.param({"@if": "x"}, ("t",), "@if takes an object", id="if-type"),
        pytest.param(
            {"@if": {"then": 1}},
            ("t",),
            "@if takes exactly one of exists or blank",
            id="if-no-test",
        ),
        pytest.param(
            {"@if": {"exists": 1, "blank": 1, "then": 1}},
            ("t",),
            "exactly one of exists or blank",
            id="if-two-tests",
        ),
        pytest.param(
            {"@if": {"exists": 1}}, ("t",), "neither then nor else", id="if-no-branch"
        ),
        pytest.param(
            {"@if": {"exists": 1, "than": 2}},
            ("t", "@if", "than"),
            "did you mean 'then'?",
            id="if-typo",
        ),
        pytest.param(
            {"@case": {"operator": "title", "value": 1}},
            ("t", "@case", "operator"),
            "@case operator must be lower or upper, not 'title'",
            id="case-operator",
        ),
        pytest.param(
            {"@case": {"operator": {"@path": "$.op"}, "value": 1}},
            ("t", "@case", "operator"),
            "must be lower or upper",
            id="case-operator-from-event",
        ),
        pytest.param(
            {"@replace": {"value": 1}}, ("t",), "@replace has no 'pattern'", id="no-pat"
        ),
        pytest.param(
            {"@replace": {"pattern": "", "value": 1}},
            ("t", "@replace", "pattern"),
            "the pattern is empty",
            id="empty-pattern",
        ),
        pytest.param(
            {"@replace": {"pattern": "x" * 101, "value": 1}},
            ("t", "@replace", "pattern"),
            "over 100 characters",
            id="long-pattern",
        ),
        pytest.param(
            {"@replace": {"pattern": "x", "global": "yes", "value": 1}},
            ("t", "@replace", "global"),
            "must be true or false",
            id="global-type",
        ),
        pytest.param(
            {"@json": {"mode": "pretty", "value": 1}},
            ("t", "@json", "mode"),
            "encode or decode",
            id="json-mode",
        ),
        pytest.param(
            {"@merge": {"objects": []}},
            ("t", "@merge", "objects"),
            "non-empty list",
            id="merge-empty",
        ),
        pytest.param(
            {"@merge": {"objects": [{}], "direction": "up"}},
            ("t", "@merge", "direction"),
            "right or left",
            id="merge-direction",
        ),
        pytest.param(
            {"@arrayPath": "$.a"}, ("t",), "@arrayPath takes a list", id="array-type"
        ),
        pytest.param(
            {"@arrayPath": [1]},
            ("t", "@arrayPath", 0),
            "the first item must be a path",
            id="array-source",
        ),
        pytest.param(
            {"@arrayPath": ["$.a", {}]},
            ("t", "@arrayPath", 1),
            "non-empty object",
            id="array-shape",
        ),
        pytest.param(
            {"@arrayPath": ["$.a["]}, ("t", "@arrayPath", 0), "not valid", id="bad-path"
        ),
        pytest.param(
            {"@flatten": {"value": 1, "separator": ""}},
            ("t", "@flatten", "separator"),
            "the separator is empty",
            id="flatten-separator",
        ),
        pytest.param(
            {"@transform": {"apply": [], "mapping": 1}},
            ("t", "@transform", "apply"),
            "apply must be an object",
            id="transform-apply",
        ),
        pytest.param(
            {"@template": {"@path": "$.t"}},
            ("t",),
            "@template must be a string",
            id="template-from-event",
        ),
    ],
)
def test_load_time_problems(
    template: dict[str, Any], where: JsonPath, message: str
) -> None:
    """Each broken directive gives one problem at the field that is wrong."""
    (problem,) = problems_of(template)

    assert problem[0] == where
    assert message in problem[1]


def test_templates_nest_a_bounded_depth() -> None:
    """A template nested past the limit is refused when the file loads."""
    template: Any = "leaf"
    for _ in range(40):
        template = {"k": template}

    (problem,) = problems_of(template)

    assert "nests deeper than 32 levels" in problem[1]


# Bounds: time and size on any input


def test_huge_strings_hit_the_size_bound_quickly() -> None:
    """A template repeating a 30 KB value stops at the size bound, fast."""
    event = {"big": "x" * 30_000}
    template = {"@template": "{{big}}" * 100}
    started = time.monotonic()

    with pytest.raises(RenderError, match="larger than"):
        resolve(template, event)

    assert time.monotonic() - started < 2


def test_replace_growth_is_charged_before_it_happens() -> None:
    """One character replaced by 1,000 in a 30 KB string is refused, not built."""
    template = {
        "@replace": {"pattern": "x", "replacement": "y" * 1000, "value": path("$.big")}
    }

    with pytest.raises(RenderError, match="larger than"):
        resolve(template, {"big": "x" * 30_000})


def test_array_paths_multiplied_hit_a_bound() -> None:
    """Nested @arrayPath over many items is bounded in steps and size."""
    inner = {"@arrayPath": ["$.items", {"copy": path("$")}]}
    template = {
        "@arrayPath": [
            "$.items",
            {
                "all": {
                    "@transform": {
                        "apply": {"items": {"@literal": list(range(2000))}},
                        "mapping": inner,
                    }
                }
            },
        ]
    }
    started = time.monotonic()

    with pytest.raises(RenderError):
        resolve(template, {"items": list(range(2000))})

    assert time.monotonic() - started < 5


def test_deep_event_values_are_refused_not_recursed() -> None:
    """Copying, flattening or encoding a deeply nested value stops at MAX_DEPTH."""
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"d": deep}
    event = {"deep": deep}

    for template in (
        path("$.deep"),
        {"@flatten": {"value": path("$.deep")}},
        {"@json": {"mode": "encode", "value": path("$.deep")}},
        {"@template": "{{deep}}"},
    ):
        with pytest.raises(RenderError, match="nest"):
            resolve(template, event)


def test_values_at_the_depth_limit_render() -> None:
    """A value nested just under the limit still renders."""
    value: Any = 1
    for _ in range(MAX_DEPTH - 1):
        value = [value]

    assert resolve(path("$.v"), {"v": value}) == value


def test_encode_compact_is_bounded() -> None:
    """The JSON writer stops at its character limit."""
    with pytest.raises(ValueError, match="size limit"):
        encode_compact(["x" * 100] * 100, limit=1000, max_depth=10)
    assert len(encode_compact(["x"] * 10, limit=MAX_CHARS, max_depth=10)) == 41


def test_blank() -> None:
    """Blank means missing, null, only spaces, [] or {}; never 0 or false."""
    assert all(is_blank(v) for v in (MISSING, None, "", " \t", [], {}))
    assert not any(is_blank(v) for v in (0, False, "x", [None], {"a": None}))


def test_rendering_is_deterministic() -> None:
    """The same template and event give the same bytes, keys in template order."""
    template = {"z": path("$.properties.nested"), "a": {"@template": "{{userId}}"}}

    first = json.dumps(resolve(template))
    second = json.dumps(resolve(template, json.loads(json.dumps(EVENT))))

    assert first == second
    assert first.startswith('{"z": {"a": {"b": 1}, "c"')
