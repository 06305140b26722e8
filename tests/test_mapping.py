"""Tests for destination.mapping: loading mapping files, matching, rendering."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from destination.directives import PathDirective
from destination.errors import MappingError, MappingProblem
from destination.event_path import parse_path
from destination.mapping import (
    Mapping,
    MappingSet,
    load_mapping_file,
    load_mappings,
    render_send,
)
from tests.paths import EVENT_FIXTURES, EXAMPLE_MAPPINGS

CURRENT = """\
mappings:
  - name: {name}
    when: {{event: {event}}}
    send:
      message:
        to: {{user_id: {{"@path": "$.userId"}}}}
        template: {name}
"""


def make_event(**changes: Any) -> dict[str, Any]:
    """Return CASES.md's E(m) with the given fields replaced."""
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-0001",
        "userId": "user-1",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"orderId": "o-1"},
    }
    event.update(changes)
    return event


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[MappingProblem]:
    with pytest.raises(MappingError) as caught:
        load_mapping_file(path)
    return caught.value.problems


def only_problem(path: Path) -> MappingProblem:
    problems = problems_of(path)
    assert len(problems) == 1, problems
    return problems[0]


def mapping_text(
    send: str = "", when: str = "{event: Order Completed}", extra: str = ""
) -> str:
    """A file with one mapping named ``m``; ``send`` and ``when`` are YAML flow text,
    ``extra`` more keys of the mapping, like ``allow_lists: true``."""
    send = send or '{message: {to: {user_id: {"@path": "$.userId"}}, template: t}}'
    more = "".join(f"    {line}\n" for line in extra.splitlines())
    return f"mappings:\n  - name: m\n    when: {when}\n    send: {send}\n{more}"


def mapping_from(
    tmp_path: Path, send: str, when: str = "{event: A}", extra: str = ""
) -> Mapping:
    """Load the one mapping of ``mapping_text(send, when, extra)``."""
    text = mapping_text(send, when, extra)
    (mapping,) = load_mapping_file(write(tmp_path, "m.yaml", text))
    return mapping


def fixture_events(name: str) -> list[dict[str, Any]]:
    loaded = json.loads((EVENT_FIXTURES / name).read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, list) else [loaded]


# Loading the examples


def test_examples_load_in_path_order() -> None:
    """The shipped examples load, sorted by path, each with its file and line."""
    mappings = load_mappings(EXAMPLE_MAPPINGS)

    names = [mapping.name for mapping in mappings.mappings]
    assert names == [
        "cart-reminder",
        "course-clicked",
        "profile-sync",
        "order-confirmation",
        "order-shipped",
        "product-viewed",
    ]
    assert all(Path(m.file).parent == EXAMPLE_MAPPINGS for m in mappings.mappings)
    for mapping in mappings.mappings:
        lines = Path(mapping.file).read_text(encoding="utf-8").splitlines()
        assert lines[mapping.line - 1].strip() == f"- name: {mapping.name}"


def test_example_course_clicked_renders_the_spec_event() -> None:
    """The Segment spec's Course Clicked renders to a current-format body."""
    mappings = load_mappings(EXAMPLE_MAPPINGS)
    (event,) = fixture_events("segment_spec_track_complete.json")

    (mapping,) = mappings.match(event).mappings
    sent = render_send(mapping, event)

    assert sent.body == {
        "message": {
            "to": {"user_id": "user_fake_0001"},
            "template": "course-clicked",
            "data": {"title": "Intro to Analytics"},
        }
    }
    assert sent.has_recipient


def test_example_order_completed_renders_e() -> None:
    """CASES.md's E(m) renders to the order-confirmation notification."""
    mappings = load_mappings(EXAMPLE_MAPPINGS)

    result = mappings.match(make_event())
    sent = render_send(result.mappings[0], make_event())

    assert [m.name for m in result.mappings] == ["order-confirmation"]
    assert sent.body["message"]["template"] == "order-confirmation"
    assert sent.body["message"]["data"] == {"orderId": "o-1"}


def test_example_legacy_product_viewed_renders_the_batch() -> None:
    """Each event of the Actions batch renders a legacy body for its own user."""
    mappings = load_mappings(EXAMPLE_MAPPINGS)

    bodies = [
        render_send(mappings.match(event).mappings[0], event).body
        for event in fixture_events("webhook_actions_batch_array.json")
    ]

    assert bodies == [
        {
            "event": "product-viewed",
            "recipient": "user-1",
            "data": {"sku": "AAA-111", "price": 9.99},
        },
        {
            "event": "product-viewed",
            "recipient": "user-2",
            "data": {"sku": "BBB-222", "price": 42.5},
        },
    ]


# Directories


def test_missing_directory_gives_no_mappings(tmp_path: Path) -> None:
    """A directory that does not exist loads as an empty set; the caller warns."""
    assert load_mappings(tmp_path / "absent").mappings == ()


def test_empty_directory_gives_no_mappings(tmp_path: Path) -> None:
    """An empty directory loads as an empty set."""
    assert load_mappings(tmp_path).mappings == ()


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    """Pointing the loader at a file is an error, not an empty set."""
    path = write(tmp_path, "m.yaml", CURRENT.format(name="a", event="A"))

    with pytest.raises(MappingError) as caught:
        load_mappings(path)

    assert "not a directory" in str(caught.value)


def test_files_load_recursively_in_sorted_order(tmp_path: Path) -> None:
    """Subfolders are searched, files load by sorted path, hidden and other files
    are skipped."""
    write(tmp_path, "b.yml", CURRENT.format(name="b", event="E"))
    write(tmp_path, "a/z.json", json.dumps({"mappings": []}))
    write(tmp_path, "a/c.yaml", CURRENT.format(name="c", event="E"))
    write(tmp_path, ".hidden.yaml", CURRENT.format(name="hidden", event="E"))
    write(tmp_path, ".git/x.yaml", CURRENT.format(name="git", event="E"))
    write(tmp_path, "notes.txt", "not a mapping")

    mappings = load_mappings(tmp_path)

    assert [m.name for m in mappings.mappings] == ["c", "b"]
    assert [m.name for m in mappings.match(make_event(event="E")).mappings] == [
        "c",
        "b",
    ]


def test_json_file_loads_with_line_numbers(tmp_path: Path) -> None:
    """A JSON mapping file (tab-indented, escaped emoji) keeps json.loads values
    and gets real lines."""
    text = (
        '{\n\t"mappings": [\n\t\t{\n\t\t\t"name": "j",\n'
        '\t\t\t"when": {"event": "Order Completed"},\n'
        '\t\t\t"send": {"message": {"to": {"user_id": {"@path": "$.userId"}},'
        ' "template": "t", "data": {"smile": "\\ud83d\\ude00"}}}\n\t\t}\n\t]\n}\n'
    )
    path = write(tmp_path, "m.json", text)

    (mapping,) = load_mapping_file(path)

    assert mapping.line == 3
    assert mapping.send["message"]["data"] == {"smile": "\N{GRINNING FACE}"}


# Loader rejections: every problem says where, down to the field


REJECTIONS = [
    pytest.param(
        "m.yaml",
        "mappings:\n  - name: m\n    when: {event: A}\n    when: {event: B}\n",
        (4, "m", "when"),
        "duplicate key 'when'",
        id="duplicate-key-yaml",
    ),
    pytest.param(
        "m.yaml",
        mapping_text('{message: {to: &who {user_id: "u"}, template: t}}'),
        (4, "m", "send.message.to"),
        "anchors (&name) are not allowed",
        id="anchor",
    ),
    pytest.param(
        "m.yaml",
        mapping_text("{message: {to: {user_id: u}, template: !!str t}}"),
        (4, "m", "send.message.template"),
        "tags (tag:yaml.org,2002:str) are not allowed",
        id="tag",
    ),
    pytest.param(
        "m.yaml",
        mapping_text("{message: {to: {user_id: u}, template: t, data: {x: .inf}}}"),
        (4, "m", "send.message.data.x"),
        ".inf cannot be carried by JSON",
        id="yaml-inf",
    ),
    pytest.param(
        "m.yaml",
        mapping_text("{message: {to: {user_id: u}, template: t, data: {1: x}}}"),
        (4, "m", "send.message.data"),
        "keys must be strings, not 1",
        id="non-string-key",
    ),
    pytest.param(
        "m.yaml",
        "- name: m\n",
        (1, None, None),
        "a file must be an object with 'mappings', not a list",
        id="top-level-list",
    ),
    pytest.param(
        "m.yaml",
        "mapping:\n  - name: m\n",
        (1, None, "mapping"),
        "unknown key 'mapping'; did you mean 'mappings'?",
        id="top-level-typo",
    ),
    pytest.param(
        "m.yaml",
        "mappings: {name: m}\n",
        (1, None, "mappings"),
        "'mappings' must be a list, not an object",
        id="mappings-not-a-list",
    ),
    pytest.param(
        "m.yaml",
        "mappings:\n  - name: m\n    when: {event: A}\n    sned: {}\n",
        (4, "m", "sned"),
        "unknown key 'sned'; did you mean 'send'?",
        id="unknown-key-suggestion",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(when="{event: A, typ: track}"),
        (3, "m", "when.typ"),
        "did you mean 'type'?",
        id="unknown-when-key",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(when="{type: delete}"),
        (3, "m", "when.type"),
        "type must be one of track, identify, page, screen, group, alias",
        id="when-unknown-type",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(when="{type: identify, event: A}"),
        (3, "m", "when.event"),
        "only track events have names",
        id="when-event-on-identify",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(when="{event: ''}"),
        (3, "m", "when.event"),
        "event names must be non-empty strings, not ''",
        id="when-empty-event",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(when="{event: [A, 42]}"),
        (3, "m", "when.event[1]"),
        "event names must be non-empty strings, not 42",
        id="when-number-event",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(when="{event: [Order Completed, Order Completed]}"),
        (3, "m", "when.event[1]"),
        "listed twice",
        id="when-event-twice",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(when="{event: []}"),
        (3, "m", "when.event"),
        "event is an empty list",
        id="when-event-empty-list",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(when="track"),
        (3, "m", "when"),
        "when 'track' is not a condition (it ends before the comparison is "
        "complete); write an object like {event: NAME}, or a condition string",
        id="when-not-a-condition",
    ),
    pytest.param(
        "m.yaml",
        "mappings:\n  - name: m\n    when: {event: A}\n",
        (2, "m", None),
        "the mapping has no 'send'",
        id="missing-send",
    ),
    pytest.param(
        "m.yaml",
        "mappings:\n  - name: ''\n    when: {}\n    send: {event: t, recipient: u}\n",
        (2, None, "mappings[0].name"),
        "name must be a non-empty string",
        id="empty-name",
    ),
    pytest.param(
        "m.yaml",
        mapping_text('{message: {to: {user_id: {"@path": "$.a..b"}}, template: t}}'),
        (4, "m", "send.message.to.user_id"),
        "@path '$.a..b' is not valid at character 4",
        id="path-double-dot",
    ),
    pytest.param(
        "m.yaml",
        mapping_text('{message: {to: {user_id: {"@path": "userId"}}, template: t}}'),
        (4, "m", "send.message.to.user_id"),
        "does not start with '$'",
        id="path-without-dollar",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(
            '{message: {to: {user_id: u}, template: t, data: {"@path": "$.a[*]"}}}'
        ),
        (4, "m", "send.message.data"),
        "no wildcards",
        id="path-wildcard",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(
            '{message: {to: {user_id: u}, template: t, data: {"@path": "$.a[-1]"}}}'
        ),
        (4, "m", "send.message.data"),
        "is not valid at character 4",
        id="path-negative-index",
    ),
    pytest.param(
        "m.yaml",
        mapping_text('{message: {to: {user_id: {"@path": 42}}, template: t}}'),
        (4, "m", "send.message.to.user_id"),
        "@path must be a string",
        id="path-not-a-string",
    ),
    pytest.param(
        "m.yaml",
        mapping_text('{message: {to: {user_id: u}, template: {"@tempalte": "{{x}}"}}}'),
        (4, "m", "send.message.template"),
        "unknown directive '@tempalte'; did you mean '@template'?",
        id="unknown-directive",
    ),
    pytest.param(
        "m.yaml",
        mapping_text(
            '{message: {to: {user_id: {"@path": "$.userId", default: x}}, template: t}}'
        ),
        (4, "m", "send.message.to.user_id"),
        "an object with @path has no other keys",
        id="path-with-other-keys",
    ),
    pytest.param(
        "m.yaml",
        mapping_text("{data: {a: 1}}"),
        (4, "m", "send"),
        "send has no 'message'; use message: {to, template, data}",
        id="send-neither-shape",
    ),
    pytest.param(
        "m.yaml",
        mapping_text("[1]"),
        (4, "m", "send"),
        "send must be the literal body of a Courier POST /send, not a list",
        id="send-not-object",
    ),
    pytest.param(
        "m.yaml",
        mapping_text('{message: {"@path": "$.properties"}}'),
        (4, "m", "send.message"),
        "message must be an object",
        id="message-is-a-path",
    ),
    pytest.param(
        "m.yaml",
        mapping_text("{message: {to: {user_id: u}}}"),
        (4, "m", "send.message"),
        "message has neither 'template' nor 'content'",
        id="message-without-template",
    ),
    pytest.param(
        "m.yaml",
        mapping_text("{event: t, message: {to: {user_id: u}, template: t}}"),
        (4, "m", "send"),
        "send mixes message with legacy 'event'",
        id="mixed-shapes",
    ),
    pytest.param(
        "m.yaml",
        mapping_text("{recipient: u, data: {}}"),
        (4, "m", "send"),
        "legacy send has no 'event'",
        id="legacy-without-event",
    ),
    pytest.param(
        "m.yaml",
        "mappings:\n  - name: m\n    when: {event: A\n",
        (4, None, None),
        "is not valid YAML",
        id="yaml-syntax",
    ),
    pytest.param(
        "m.json",
        '{"mappings": [\n {"name": "m", "when": {}, "when": {}}\n]}',
        (2, "m", "when"),
        "duplicate key 'when'",
        id="duplicate-key-json",
    ),
    pytest.param(
        "m.json",
        '{"mappings": [{"name": "m", "when": {},\n'
        ' "send": {"event": "t", "recipient": "u", "data": {"x": NaN}}}]}',
        (2, "m", "send.data.x"),
        "NaN is not a JSON number",
        id="nan-json",
    ),
    pytest.param(
        "m.json",
        '{"mappings": [{"name": "m", "when": {},\n'
        ' "send": {"event": "t", "recipient": "u", "data": {"x": 1e400}}}]}',
        (2, "m", "send.data.x"),
        "1e400 cannot be carried by JSON",
        id="overflow-json",
    ),
    pytest.param(
        "m.json",
        '{"mappings": [\n  {"name": "m",}\n]}',
        (2, None, None),
        "is not valid JSON",
        id="json-syntax",
    ),
]


@pytest.mark.parametrize(("name", "text", "where", "message"), REJECTIONS)
def test_loader_rejects_with_location(
    tmp_path: Path,
    name: str,
    text: str,
    where: tuple[int, str | None, str | None],
    message: str,
) -> None:
    """Each broken file gives one problem citing file, line, mapping and field."""
    path = write(tmp_path, name, text)

    problem = only_problem(path)

    assert (problem.file, problem.line, problem.mapping, problem.field) == (
        str(path),
        *where,
    )
    assert message in problem.message


def test_yaml_scalars_follow_json_types(tmp_path: Path) -> None:
    """Dates, on/off and yes/no stay strings; core-schema nulls, bools and numbers
    resolve; quoted scalars are always strings."""
    data = (
        "{day: 2024-05-01, at: 2024-05-01T12:00:00Z, on: on, off: off, y: yes, "
        "n: NO, t: True, f: FALSE, nul: ~, empty: , i: 42, o: 0o17, h: 0x1F, "
        "x: 1.5e3, q: '42', qn: \"null\", v: 1.2.3}"
    )
    mapping = mapping_from(tmp_path, f"{{event: t, recipient: u, data: {data}}}")

    assert mapping.send["data"] == {
        "day": "2024-05-01",
        "at": "2024-05-01T12:00:00Z",
        "on": "on",
        "off": "off",
        "y": "yes",
        "n": "NO",
        "t": True,
        "f": False,
        "nul": None,
        "empty": None,
        "i": 42,
        "o": 15,
        "h": 31,
        "x": 1500.0,
        "q": "42",
        "qn": "null",
        "v": "1.2.3",
    }


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """A billion-laughs file is refused at its first anchor, never expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")

    problems = problems_of(path)

    assert problems[0].line == 1
    assert "anchors" in problems[0].message


def test_anchor_and_alias_are_both_reported(tmp_path: Path) -> None:
    """An anchor and each alias to it are refused where they stand."""
    text = "x: &a {event: A}\nmappings:\n  - name: m\n    when: *a\n"
    path = write(tmp_path, "m.yaml", text)

    problems = problems_of(path)

    assert [(p.line, p.mapping, p.field) for p in problems] == [
        (1, None, "x"),
        (4, "m", "when"),
    ]
    assert "anchors (&name) are not allowed" in problems[0].message
    assert "aliases (*name) are not allowed" in problems[1].message


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    """One file with several mistakes reports each, in file order."""
    text = """\
        mappings:
          - name: a
            when: {evnt: A}
            send: {event: t, recipient: u}
          - name: b
            when: {event: B}
            send: {message: {to: {user_id: {"@if": x}}, template: t}}
          - {}
        """
    path = write(tmp_path, "m.yaml", text)

    problems = problems_of(path)

    assert [(p.line, p.mapping, p.field) for p in problems] == [
        (3, "a", "when.evnt"),
        (7, "b", "send.message.to.user_id"),
        (8, None, "mappings[2]"),
        (8, None, "mappings[2]"),
        (8, None, "mappings[2]"),
    ]


def test_problems_across_files_are_collected(tmp_path: Path) -> None:
    """Problems in different files come back together in one MappingError."""
    write(tmp_path, "a.yaml", mapping_text(when="{type: delete}"))
    write(tmp_path, "b.json", '{"mappings": [], "extra": 1}')
    write(tmp_path, "c.yaml", CURRENT.format(name="fine", event="E"))

    with pytest.raises(MappingError) as caught:
        load_mappings(tmp_path)

    problems = caught.value.problems
    assert [(Path(p.file).name, p.field) for p in problems] == [
        ("a.yaml", "when.type"),
        ("b.json", "extra"),
    ]
    assert str(tmp_path / "a.yaml") + ":3, mapping 'm'" in str(caught.value)


def test_duplicate_names_across_files_name_both(tmp_path: Path) -> None:
    """A name used in two files is refused, naming both files and lines."""
    first = write(tmp_path, "a.yaml", CURRENT.format(name="same", event="A"))
    second = write(tmp_path, "b/b.yaml", "\n" + CURRENT.format(name="same", event="B"))

    with pytest.raises(MappingError) as caught:
        load_mappings(tmp_path)

    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.mapping, problem.field) == (
        str(second),
        3,
        "same",
        "name",
    )
    assert f"already used at {first}:2" in problem.message


def test_duplicate_names_in_one_file(tmp_path: Path) -> None:
    """Two mappings with one name in a single file are refused too."""
    text = CURRENT.format(name="same", event="A") + CURRENT.format(
        name="same", event="B"
    ).removeprefix("mappings:\n")
    path = write(tmp_path, "m.yaml", text)

    (problem,) = problems_of(path)

    assert (problem.line, problem.field) == (8, "name")
    assert f"already used at {path}:2" in problem.message


# Paths


@pytest.mark.parametrize(
    ("source", "steps"),
    [
        pytest.param("$", (), id="root"),
        pytest.param("$.properties.title", ("properties", "title"), id="names"),
        pytest.param("$.items[0].sku", ("items", 0, "sku"), id="index"),
        pytest.param("$['first name']", ("first name",), id="single-quoted"),
        pytest.param('$["a.b"]["c"]', ("a.b", "c"), id="double-quoted"),
        pytest.param(r"$['it\'s']", ("it's",), id="escaped-quote"),
        pytest.param("$.order-id.$ref", ("order-id", "$ref"), id="dash-and-dollar"),
        pytest.param("$.traits.first name", ("traits", "first name"), id="space"),
        pytest.param("$.items.0.sku", ("items", 0, "sku"), id="dot-index"),
        pytest.param("$.items.01", ("items", "01"), id="dot-leading-zero-is-a-key"),
        pytest.param("$['0']", ("0",), id="quoted-digits-are-a-key"),
        pytest.param("$.café.ünï", ("café", "ünï"), id="non-ascii"),
    ],
)
def test_parse_path(source: str, steps: tuple[str | int, ...]) -> None:
    """Paths take .name, [N] and quoted names after $."""
    assert parse_path(source) == steps


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("", id="empty"),
        pytest.param("$.", id="trailing-dot"),
        pytest.param("$..a", id="deep-scan"),
        pytest.param("$.a[01]", id="leading-zero"),
        pytest.param("$.a[0:2]", id="slice"),
        pytest.param("$.a[?(@.x)]", id="filter"),
        pytest.param("$['a]", id="unclosed-quote"),
        pytest.param("$.a .b", id="trailing-space"),
        pytest.param("$. a", id="leading-space"),
        pytest.param("$.*", id="wildcard"),
        pytest.param("$." + "a." * 64 + "a", id="too-many-steps"),
        pytest.param("$." + "a" * 1000, id="too-long"),
        pytest.param("$.__class__()", id="call"),
    ],
)
def test_parse_path_rejects(source: str) -> None:
    """Anything beyond plain steps is a syntax error, never evaluated."""
    with pytest.raises(ValueError, match="@path"):
        parse_path(source)


# Rendering


def test_render_nested_index_and_quoted_paths(tmp_path: Path) -> None:
    """Nested names, array indexes and quoted names with spaces all resolve."""
    send = (
        '{event: t, recipient: {"@path": "$.userId"}, data: {'
        'city: {"@path": "$.context.location.city"}, '
        'first: {"@path": "$.properties.items[0].sku"}, '
        'full: {"@path": "$.traits[\'full name\']"}}}'
    )
    mapping = mapping_from(tmp_path, send)
    event = make_event(
        context={"location": {"city": "Utrecht"}},
        properties={"items": [{"sku": "A-1"}, {"sku": "B-2"}]},
        traits={"full name": "Ada Example"},
    )

    sent = render_send(mapping, event)

    assert sent.body["data"] == {
        "city": "Utrecht",
        "first": "A-1",
        "full": "Ada Example",
    }


def test_render_drops_missing_and_keeps_null(tmp_path: Path) -> None:
    """A missing path drops its key or element; a JSON null is kept."""
    send = (
        '{event: t, recipient: u, data: {gone: {"@path": "$.properties.nope"}, '
        'empty: {"@path": "$.properties.coupon"}, '
        'list: [{"@path": "$.properties.nope"}, {"@path": "$.properties.coupon"}, 1], '
        'past_end: {"@path": "$.properties.items[5]"}, '
        'index_on_object: {"@path": "$.properties[0]"}, '
        'name_on_list: {"@path": "$.properties.items.sku"}, '
        'through_string: {"@path": "$.userId.length"}}}'
    )
    mapping = mapping_from(tmp_path, send)
    event = make_event(properties={"coupon": None, "items": [1]})

    sent = render_send(mapping, event)

    assert sent.body["data"] == {"empty": None, "list": [None, 1]}


def test_render_copies_event_values(tmp_path: Path) -> None:
    """Editing a rendered body never edits the event it came from."""
    mapping = mapping_from(
        tmp_path, '{event: t, recipient: u, data: {"@path": "$.properties"}}'
    )
    event = make_event()

    render_send(mapping, event).body["data"]["orderId"] = "changed"

    assert event["properties"] == {"orderId": "o-1"}


def test_render_is_deterministic_and_follows_the_template(tmp_path: Path) -> None:
    """Key order follows the template, not the event, and repeats exactly."""
    send = (
        '{message: {data: {b: {"@path": "$.properties.b"}, '
        'a: {"@path": "$.properties.a"}}, '
        'template: t, to: {user_id: {"@path": "$.userId"}}}}'
    )
    mapping = mapping_from(tmp_path, send)
    event = make_event(properties={"a": 1, "b": 2})

    first = json.dumps(render_send(mapping, event).body)
    second = json.dumps(render_send(mapping, json.loads(json.dumps(event))).body)

    assert first == second
    assert first == (
        '{"message": {"data": {"b": 2, "a": 1}, "template": "t", '
        '"to": {"user_id": "user-1"}}}'
    )


def test_template_holds_path_directives(tmp_path: Path) -> None:
    """Loaded templates keep JSON values with parsed directives in place."""
    mapping = mapping_from(tmp_path, '{event: t, recipient: {"@path": "$.userId"}}')

    assert mapping.send == {
        "event": "t",
        "recipient": PathDirective("$.userId", ("userId",)),
    }


CURRENT_TO = "{message: {to: %s, template: t}}"
LEGACY = "{event: t, recipient: %s}"


@pytest.mark.parametrize(
    ("send", "changes", "expected"),
    [
        pytest.param(
            CURRENT_TO % '{user_id: {"@path": "$.userId"}}', {}, True, id="current"
        ),
        pytest.param(
            CURRENT_TO % '{user_id: {"@path": "$.userId"}}',
            {"userId": None, "anonymousId": "anon-1"},
            False,
            id="m1-userId-null",
        ),
        pytest.param(
            CURRENT_TO % '{user_id: {"@path": "$.userId"}}',
            {"userId": ""},
            False,
            id="current-empty-string",
        ),
        pytest.param(
            CURRENT_TO
            % '{user_id: {"@path": "$.userId"}, email: {"@path": "$.traits.email"}}',
            {"userId": None, "traits": {"email": ""}},
            False,
            id="current-all-values-blank",
        ),
        pytest.param(
            CURRENT_TO
            % '{user_id: {"@path": "$.userId"}, email: {"@path": "$.traits.email"}}',
            {"userId": None, "traits": {"email": "a@example.com"}},
            True,
            id="current-one-value-set",
        ),
        pytest.param(
            CURRENT_TO % '{"@path": "$.context.to"}', {}, False, id="current-to-missing"
        ),
        pytest.param(
            CURRENT_TO % '{"@path": "$.context.to"}',
            {"context": {"to": []}},
            False,
            id="current-to-empty-list",
        ),
        pytest.param(
            CURRENT_TO % '{"@path": "$.context.to"}',
            {"context": {"to": [{"user_id": None}, {"email": "a@example.com"}]}},
            True,
            id="current-to-list",
        ),
        pytest.param(CURRENT_TO % "{}", {}, False, id="current-to-empty-object"),
        pytest.param(LEGACY % '{"@path": "$.userId"}', {}, True, id="legacy"),
        pytest.param(
            LEGACY % '{"@path": "$.userId"}', {"userId": None}, False, id="legacy-null"
        ),
        pytest.param(LEGACY % '{"@path": "$.nobody"}', {}, False, id="legacy-missing"),
        pytest.param(
            LEGACY % '{"@path": "$.userId"}', {"userId": "  "}, False, id="legacy-blank"
        ),
        pytest.param(
            LEGACY % '{"@path": "$.userId"}',
            {"userId": 157963456373623803},
            True,
            id="legacy-number",
        ),
    ],
)
def test_recipient_rule(
    tmp_path: Path, send: str, changes: dict[str, Any], expected: bool
) -> None:
    """A body without a usable recipient is flagged so it is recorded no_recipient."""
    mapping = mapping_from(tmp_path, send, extra="allow_event_contacts: true")

    sent = render_send(mapping, make_event(**changes))

    assert sent.has_recipient is expected


# Matching


@pytest.fixture
def mapping_set(tmp_path: Path) -> MappingSet:
    text = """\
        mappings:
          - name: order-email
            when: {event: Order Completed}
            send: {event: t, recipient: u}
          - name: any-track
            when: {}
            send: {event: t, recipient: u}
          - name: order-sms
            when: {event: [Order Completed, Order Refunded]}
            send: {event: t, recipient: u}
          - name: welcome
            when: {type: identify}
            send: {event: t, recipient: u}
        """
    return MappingSet(tuple(load_mapping_file(write(tmp_path, "m.yaml", text))))


@pytest.mark.parametrize(
    ("event", "outcome", "names"),
    [
        pytest.param(
            make_event(),
            "mapped",
            ["order-email", "any-track", "order-sms"],
            id="fan-out-in-load-order",
        ),
        pytest.param(
            make_event(event="Order Refunded"),
            "mapped",
            ["any-track", "order-sms"],
            id="list-of-names",
        ),
        pytest.param(
            make_event(event="Signed Up"), "mapped", ["any-track"], id="type-wide"
        ),
        pytest.param({"type": "identify"}, "mapped", ["welcome"], id="identify"),
        pytest.param({"type": "page"}, "ignored", [], id="unhandled-type"),
        pytest.param({"type": "delete"}, "ignored", [], id="unknown-type"),
    ],
)
def test_match(
    mapping_set: MappingSet, event: dict[str, Any], outcome: str, names: list[str]
) -> None:
    """An event takes every mapping of its type and name, in load order."""
    result = mapping_set.match(event)

    assert result.outcome == outcome
    assert [m.name for m in result.mappings] == names


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(" order completed ", id="padded-lower"),
        pytest.param("ORDER COMPLETED", id="upper"),
        pytest.param("Order  Completed", id="double-space"),
        pytest.param("Order Completed ", id="trailing-space"),
        pytest.param("", id="empty"),
    ],
)
def test_names_match_exactly(tmp_path: Path, name: str) -> None:
    """M2: only the exact name matches; near misses are unmapped, not retried."""
    path = write(
        tmp_path, "m.yaml", CURRENT.format(name="order", event="Order Completed")
    )
    mappings = MappingSet(tuple(load_mapping_file(path)))

    assert mappings.match(make_event(event=name)).outcome == "unmapped"
    assert mappings.match(make_event()).outcome == "mapped"


def test_track_without_track_mappings_is_unmapped() -> None:
    """A track event is unmapped (counted) even when no track mapping exists."""
    assert MappingSet(()).match(make_event()).outcome == "unmapped"
    assert MappingSet(()).match({"type": "identify"}).outcome == "ignored"


def test_get_finds_mappings_by_name(mapping_set: MappingSet) -> None:
    """get() returns a mapping by name, or None."""
    found = mapping_set.get("welcome")

    assert found is not None and found.event_type == "identify"
    assert mapping_set.get("nope") is None
