"""Tests for when-conditions: the structured form, the string form, name matching."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from destination.condition_string import parse_condition_string, split_condition_string
from destination.conditions import (
    Group,
    NameTest,
    ValueTest,
    compile_conditions,
    normalize_name,
    values_equal,
)
from destination.errors import MappingError
from destination.event_path import MISSING
from destination.mapping import MappingSet, load_mapping_file, load_mappings
from destination.mapping_file import JsonPath

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user-1",
    "properties": {
        "total": 42.5,
        "count": 3,
        "revenue": "39.95",
        "coupon": None,
        "gift": True,
        "note": "",
        "tags": ["a"],
        "name": "Nike Air",
        "id": "10",
    },
    "context": {"page": {"url": "https://shop.example.com/cart"}},
}


def condition(item: dict[str, Any], normalized: bool = False) -> Group:
    problems: list[tuple[JsonPath, str]] = []
    group = compile_conditions(
        [item],
        ("all",),
        lambda p, m: problems.append((p, m)),
        "all",
        normalized=normalized,
    )
    assert not problems, problems
    assert group is not None
    return group


def problems_of(items: Any) -> list[tuple[JsonPath, str]]:
    problems: list[tuple[JsonPath, str]] = []
    compile_conditions(
        items, ("all",), lambda p, m: problems.append((p, m)), "all", normalized=False
    )
    return problems


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# Property conditions


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            {"path": "$.properties.coupon", "exists": True}, False, id="null-not-exists"
        ),
        pytest.param(
            {"path": "$.properties.coupon", "exists": False},
            True,
            id="null-does-not-exist",
        ),
        pytest.param(
            {"path": "$.properties.nope", "exists": False}, True, id="missing"
        ),
        pytest.param(
            {"path": "$.properties.note", "exists": True}, True, id="empty-exists"
        ),
        pytest.param({"path": "$.properties.total", "equals": 42.5}, True, id="equals"),
        pytest.param(
            {"path": "$.properties.count", "equals": 3.0}, True, id="int-float"
        ),
        pytest.param(
            {"path": "$.properties.id", "equals": 10}, True, id="string-number"
        ),
        pytest.param(
            {"path": "$.properties.count", "equals": "3"}, True, id="number-string"
        ),
        pytest.param(
            {"path": "$.properties.gift", "equals": "true"}, True, id="bool-string"
        ),
        pytest.param(
            {"path": "$.properties.gift", "equals": 1}, False, id="true-is-not-1"
        ),
        pytest.param({"path": "$.properties.coupon", "equals": None}, True, id="null"),
        pytest.param(
            {"path": "$.properties.nope", "equals": None}, False, id="missing-not-null"
        ),
        pytest.param(
            {"path": "$.properties.coupon", "equals": "null"}, False, id="null-not-text"
        ),
        pytest.param(
            {"path": "$.properties.nope", "not_equals": "x"}, True, id="missing-ne"
        ),
        pytest.param({"path": "$.properties.gift", "is": True}, True, id="is-true"),
        pytest.param({"path": "$.properties.gift", "is": False}, False, id="is-false"),
        pytest.param({"path": "$.properties.total", "greater_than": 42}, True, id="gt"),
        pytest.param(
            {"path": "$.properties.total", "greater_than": 42.5}, False, id="gt-equal"
        ),
        pytest.param(
            {"path": "$.properties.total", "greater_than_or_equal": 42.5}, True, id="ge"
        ),
        pytest.param({"path": "$.properties.count", "less_than": 3.5}, True, id="lt"),
        pytest.param(
            {"path": "$.properties.count", "less_than_or_equal": 2}, False, id="le"
        ),
        pytest.param(
            {"path": "$.properties.revenue", "greater_than": 39.9},
            True,
            id="numeric-string",
        ),
        pytest.param(
            {"path": "$.properties.name", "greater_than": 0},
            False,
            id="text-not-number",
        ),
        pytest.param(
            {"path": "$.properties.gift", "greater_than": 0},
            False,
            id="bool-not-number",
        ),
        pytest.param(
            {"path": "$.properties.coupon", "less_than": 1}, False, id="null-not-zero"
        ),
        pytest.param(
            {"path": "$.properties.note", "less_than": 1}, False, id="empty-not-zero"
        ),
        pytest.param(
            {"path": "$.properties.nope", "less_than": 1}, False, id="missing-lt"
        ),
        pytest.param(
            {"path": "$.properties.name", "contains": "Air"}, True, id="contains"
        ),
        pytest.param(
            {"path": "$.properties.name", "not_contains": "Air"},
            False,
            id="not-contains",
        ),
        pytest.param(
            {"path": "$.properties.name", "starts_with": "Nike"}, True, id="starts"
        ),
        pytest.param(
            {"path": "$.properties.name", "ends_with": "Air"}, True, id="ends"
        ),
        pytest.param(
            {"path": "$.properties.name", "not_ends_with": "x"}, True, id="not-ends"
        ),
        pytest.param(
            {"path": "$.properties.count", "contains": "3"},
            False,
            id="number-no-contains",
        ),
        pytest.param(
            {"path": "$.properties.nope", "not_contains": "x"},
            False,
            id="missing-not-contains",
        ),
        pytest.param(
            {"path": "$.properties.tags", "contains": "a"}, False, id="list-no-contains"
        ),
        pytest.param(
            {"path": "$.context.page.url", "contains": "/cart"}, True, id="nested-path"
        ),
    ],
)
def test_value_conditions(item: dict[str, Any], expected: bool) -> None:
    """Each operator follows the table in docs/mappings.md."""
    assert condition(item).holds(EVENT) is expected


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param({"event": {"is": "Order Completed"}}, True, id="is"),
        pytest.param({"event": {"is": ["A", "Order Completed"]}}, True, id="is-any-of"),
        pytest.param({"event": {"is_not": "Order Completed"}}, False, id="is-not"),
        pytest.param({"event": {"contains": "der Com"}}, True, id="contains"),
        pytest.param({"event": {"not_contains": "Refund"}}, True, id="not-contains"),
        pytest.param({"event": {"starts_with": "Order "}}, True, id="starts"),
        pytest.param({"event": {"not_starts_with": "Order"}}, False, id="not-starts"),
        pytest.param({"event": {"ends_with": "Completed"}}, True, id="ends"),
        pytest.param({"event": {"not_ends_with": "d"}}, False, id="not-ends"),
        pytest.param({"event": {"is": "order completed"}}, False, id="exact-case"),
    ],
)
def test_name_conditions(item: dict[str, Any], expected: bool) -> None:
    """Event-name tests are exact unless the mapping matches names normalised."""
    assert condition(item).holds(EVENT) is expected


def test_name_conditions_follow_normalisation() -> None:
    """With match: normalized both sides are normalised before comparing."""
    test = condition({"event": {"starts_with": "  ORDER  com"}}, normalized=True)

    assert test.holds({"event": "order   Completed!"})
    assert not test.holds({"event": "Order Refunded"})


def test_groups_nest() -> None:
    """all and any nest; the explanation names the failing test."""
    group = condition(
        {
            "any": [
                {"path": "$.properties.total", "greater_than": 100},
                {
                    "all": [
                        {"event": {"is": "Order Completed"}},
                        {"path": "$.userId", "exists": True},
                    ]
                },
            ]
        }
    )

    assert group.holds(EVENT)
    assert not group.holds({**EVENT, "userId": None})
    assert group.why_not({**EVENT, "userId": None}) == (
        "none of these holds: $.properties.total greater_than 100 is false: the value "
        "is a number 42.5; $.userId exists True is false: the value is null"
    )


@pytest.mark.parametrize(
    ("items", "where", "message"),
    [
        pytest.param([], ("all",), "all must be a non-empty list", id="empty"),
        pytest.param(
            [{"event": "A"}],
            ("all", 0, "event"),
            "event takes one test",
            id="bare-name",
        ),
        pytest.param(
            [{"event": {"equals": "A"}}],
            ("all", 0, "event", "equals"),
            "unknown test",
            id="bad-op",
        ),
        pytest.param(
            [{"event": {"is": ""}}],
            ("all", 0, "event", "is"),
            "non-empty string",
            id="empty-name",
        ),
        pytest.param(
            [{"path": "properties.x", "exists": True}],
            ("all", 0, "path"),
            "does not start with '$'",
            id="path",
        ),
        pytest.param(
            [{"path": "$.x", "greater_than": "5"}],
            ("all", 0, "greater_than"),
            "takes a number, not a string",
            id="gt-string",
        ),
        pytest.param(
            [{"path": "$.x", "exists": "yes"}],
            ("all", 0, "exists"),
            "true or false",
            id="exists-type",
        ),
        pytest.param(
            [{"path": "$.x", "equals": {"a": 1}}],
            ("all", 0, "equals"),
            "a string, number",
            id="equals-object",
        ),
        pytest.param(
            [{"path": "$.x", "equals": 1, "exists": True}],
            ("all", 0),
            "one test besides path",
            id="two-tests",
        ),
        pytest.param(
            [{"path": "$.x", "bigger": 1}],
            ("all", 0),
            "one test besides path",
            id="unknown-test",
        ),
        pytest.param(
            [{"properties.x": 1}], ("all", 0), "a condition is", id="not-a-condition"
        ),
    ],
)
def test_condition_problems(items: Any, where: JsonPath, message: str) -> None:
    """A broken condition is one problem at its field."""
    (problem,) = problems_of(items)

    assert problem[0] == where
    assert message in problem[1]


def test_conditions_are_bounded() -> None:
    """Groups nest at most 8 deep and a mapping holds at most 100 conditions."""
    deep: Any = {"path": "$.x", "exists": True}
    for _ in range(10):
        deep = {"all": [deep]}
    many = [{"path": "$.x", "exists": True}] * 101

    assert "nest deeper than 8" in problems_of([deep])[0][1]
    assert "more than 100 conditions" in problems_of(many)[0][1]


def test_values_equal_for_deep_values_is_cheap() -> None:
    """Equality against a scalar never walks a deep event value."""
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]

    assert not values_equal(deep, "x")
    assert not values_equal(MISSING, None)


# The string form


@pytest.mark.parametrize(
    ("text", "event", "expected"),
    [
        pytest.param('event = "Order Completed"', EVENT, True, id="equals"),
        pytest.param("event = 'Order Completed'", EVENT, True, id="single-quotes"),
        pytest.param('event != "Order Completed"', EVENT, False, id="not-equals"),
        pytest.param('contains(event, "der")', EVENT, True, id="contains"),
        pytest.param('!contains(event, "der")', EVENT, False, id="not-contains"),
        pytest.param('match(event, "Order*")', EVENT, True, id="starts-with"),
        pytest.param('match(event, "*Completed")', EVENT, True, id="ends-with"),
        pytest.param('!match(event, "*d")', EVENT, False, id="not-ends-with"),
        pytest.param('match(event, "*der*")', EVENT, True, id="contains-glob"),
        pytest.param("properties.total >= 42.5", EVENT, True, id="number"),
        pytest.param("properties.total < 10", EVENT, False, id="lt"),
        pytest.param("properties.coupon = null", EVENT, True, id="not-exists"),
        pytest.param("properties.coupon != null", EVENT, False, id="exists"),
        pytest.param("properties.gift = true", EVENT, True, id="bool"),
        pytest.param('properties.gift = "true"', EVENT, True, id="bool-as-text"),
        pytest.param(
            'userId = "user-1" and properties.count = 3', EVENT, True, id="and"
        ),
        pytest.param('event = "A" or event = "Order Completed"', EVENT, True, id="or"),
        pytest.param(
            '(event = "A" or properties.count > 2) and '
            '!contains(context.page.url, "/test")',
            EVENT,
            True,
            id="parentheses",
        ),
        pytest.param(
            'properties.name = "say \\"hi\\""',
            {"properties": {"name": 'say "hi"'}},
            True,
            id="escape",
        ),
    ],
)
def test_string_form(text: str, event: dict[str, Any], expected: bool) -> None:
    """Segment's string form parses into the same conditions."""
    assert parse_condition_string(text).holds(event) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "ends before the comparison", id="empty"),
        pytest.param("event =", "ends before the comparison", id="no-value"),
        pytest.param(
            "event > 3", "'>' at character 7 where = or !=", id="event-compare"
        ),
        pytest.param(
            'properties.x > "3"', "a number to compare with >", id="text-compare"
        ),
        pytest.param('event = "A" and', "ends before", id="dangling-and"),
        pytest.param('event = "A" extra', "'extra' at character 13", id="trailing"),
        pytest.param('event = "A" && event = "B"', "'&' at character 13", id="symbols"),
        pytest.param('match(event, "a*b")', "takes 'x*'", id="inner-glob"),
        pytest.param("(" * 9 + "a = 1" + ")" * 9, "nests over 8", id="deep"),
        pytest.param("a = 1 " + "and a = 1 " * 400, "over 2,000 characters", id="long"),
        pytest.param("__import__('os') = 1", "'(' at character 11", id="no-calls"),
        pytest.param('!(event = "A")', "contains( or match(", id="negated-group"),
    ],
)
def test_string_form_errors(text: str, message: str) -> None:
    """A condition string that does not parse says where; nothing is evaluated."""
    with pytest.raises(ValueError) as caught:
        parse_condition_string(text)

    assert message in str(caught.value)


def test_string_form_lifts_type_and_names() -> None:
    """Top-level type and event names become the mapping's index."""
    split = split_condition_string(
        'type = "track" and (event = "A" or event = "B") and properties.x > 1'
    )

    assert (split.event_type, split.event_names) == ("track", ("A", "B"))
    assert isinstance(split.rest, ValueTest)


def test_string_form_type_only_at_the_top() -> None:
    """A type inside an or is refused: one mapping takes one type."""
    with pytest.raises(ValueError, match="one type, at its top level"):
        split_condition_string('type = "track" or type = "page"')


def test_string_form_without_names_keeps_name_tests() -> None:
    """Name tests other than equality stay conditions."""
    split = split_condition_string('match(event, "Order*")')

    assert split.event_names is None
    assert isinstance(split.rest, NameTest)


# Name matching


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        pytest.param("Order Completed", "order completed", id="case"),
        pytest.param(" order completed ", "order completed", id="trim"),
        pytest.param("ORDER\tCOMPLETED", "order completed", id="tab"),
        pytest.param("Order  \u00a0Completed", "order completed", id="nbsp"),
        pytest.param("Cafe\u0301 Visited", "café visited", id="nfc"),
        pytest.param("STRASSE", "strasse", id="casefold"),
        pytest.param("Straße", "strasse", id="sharp-s"),
    ],
)
def test_normalize_name(name: str, normalized: str) -> None:
    """NFC, case folding, trimming and collapsed inner spaces."""
    assert normalize_name(name) == normalized


MAPPING = """\
  - name: {name}
    when: {{event: {event}, match: {match}}}
    send: {{message: {{template: t}}}}
"""


def mapping_file(*entries: tuple[str, str, str]) -> str:
    return "mappings:\n" + "".join(
        MAPPING.format(name=name, event=event, match=match)
        for name, event, match in entries
    )


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Order Completed", id="exact"),
        pytest.param(" order completed ", id="padded-lower"),
        pytest.param("ORDER COMPLETED", id="upper"),
        pytest.param("Order  Completed", id="double-space"),
    ],
)
def test_normalized_mapping_takes_every_spelling(tmp_path: Path, name: str) -> None:
    """M2: with match: normalized each variant of the name maps."""
    path = write(
        tmp_path, "m.yaml", mapping_file(("m", "Order Completed", "normalized"))
    )
    mappings = MappingSet(tuple(load_mapping_file(path)))

    assert mappings.match({**EVENT, "event": name}).outcome == "mapped"
    assert mappings.match({**EVENT, "event": "Order Refunded"}).outcome == "unmapped"


def test_collision_fails_the_load(tmp_path: Path) -> None:
    """Two spellings of one normalised name fail when either mapping normalises."""
    write(tmp_path, "a.yaml", mapping_file(("a", "Order Completed", "exact")))
    write(tmp_path, "b.yaml", mapping_file(("b", "order completed", "normalized")))

    with pytest.raises(MappingError) as caught:
        load_mappings(tmp_path)

    (problem,) = caught.value.problems
    assert (problem.mapping, problem.field) == ("b", "when.event")
    assert "'order completed' and 'Order Completed' (mapping 'a' at" in problem.message


def test_spellings_may_differ_when_no_mapping_normalises(tmp_path: Path) -> None:
    """Exact mappings of two spellings are two names; fan-out of one spelling is
    legal; a normalising mapping on either spelling makes them collide."""
    exact = [
        ("a", "Order Completed", "exact"),
        ("b", "order completed", "exact"),
        ("c", "Order Completed", "exact"),
    ]
    write(tmp_path, "a.yaml", mapping_file(*exact))

    result = load_mappings(tmp_path).match(EVENT)

    assert [m.name for m in result.mappings] == ["a", "c"]
    write(
        tmp_path, "a.yaml", mapping_file(*exact, ("d", "Order Completed", "normalized"))
    )
    with pytest.raises(MappingError, match="one name once normalised"):
        load_mappings(tmp_path)


def test_one_mapping_may_not_list_two_spellings(tmp_path: Path) -> None:
    """Within a normalised mapping two spellings of one name are refused."""
    text = (
        "mappings:\n  - name: m\n    when: {event: [Order Completed, ORDER COMPLETED], "
        "match: normalized}\n    send: {message: {template: t}}\n"
    )

    with pytest.raises(MappingError, match="are one name once normalised"):
        load_mapping_file(write(tmp_path, "m.yaml", text))


def test_conditions_decline_with_a_reason(tmp_path: Path) -> None:
    """A mapping whose condition is false declines; the event is unmapped."""
    text = """\
        mappings:
          - name: big-orders
            when:
              event: Order Completed
              all: [{path: $.properties.total, greater_than: 100}]
            send: {message: {template: t}}
        """
    mappings = MappingSet(tuple(load_mapping_file(write(tmp_path, "m.yaml", text))))

    result = mappings.match(EVENT)

    assert result.outcome == "unmapped"
    (declined,) = result.declined
    assert declined.reason == (
        "$.properties.total greater_than 100 is false: the value is a number 42.5"
    )
    assert mappings.match({**EVENT, "properties": {"total": 101}}).outcome == "mapped"


def test_when_string_in_a_file(tmp_path: Path) -> None:
    """A when string sets type, names and conditions of the mapping."""
    text = """\
        mappings:
          - name: m
            when: 'type = "identify" and traits.plan = "pro"'
            send: {message: {template: t}}
        """
    (mapping,) = load_mapping_file(write(tmp_path, "m.yaml", text))
    mappings = MappingSet((mapping,))

    assert (mapping.event_type, mapping.event_names) == ("identify", None)
    assert (
        mappings.match({"type": "identify", "traits": {"plan": "pro"}}).outcome
        == "mapped"
    )
    assert mappings.match({"type": "identify", "traits": {}}).outcome == "ignored"


def test_huge_strings_are_compared_quickly() -> None:
    """String and number tests on a megabyte string stay linear and fast."""
    huge = "x" * 1_000_000 + "needle"
    event = {"properties": {"s": huge, "n": "9" * 1_000_000}}
    tests = [
        {"path": "$.properties.s", "contains": "needle"},
        {"path": "$.properties.s", "ends_with": "needle"},
        {"path": "$.properties.s", "equals": huge},
        {"path": "$.properties.n", "greater_than": 1},
    ]
    started = time.monotonic()

    results = [condition(item).holds(event) for item in tests]

    assert results == [True, True, True, False]  # over 100 digits is not a number
    assert time.monotonic() - started < 1
