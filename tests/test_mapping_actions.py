"""Tests for what a mapping sends: profile merges, default recipients, opt-ins,
the tracking plan, examples, and how ingest plans each of them."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from destination.errors import MappingError, MappingProblem
from destination.fake_courier import FakeCourier
from destination.ingest import plan_events
from destination.mapping import (
    EventRejectedError,
    Mapping,
    MappingSet,
    load_mapping_file,
    load_mappings,
    render_send,
)
from destination.validation import EventValidator
from tests.conftest import compact, signed_headers, wait_for


def make_event(**changes: Any) -> dict[str, Any]:
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


def identify(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "identify",
        "messageId": "m-identify",
        "userId": "user-1",
        "traits": {"email": "a@example.com", "name": "Ada"},
    }
    event.update(changes)
    return event


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def one_mapping(tmp_path: Path, text: str, plan_dir: Path | None = None) -> Mapping:
    path = write(tmp_path, "m.yaml", text)
    (mapping,) = load_mapping_file(path, plan_dir=plan_dir or tmp_path / "no-plan")
    return mapping


def problems_of(tmp_path: Path, text: str) -> list[MappingProblem]:
    with pytest.raises(MappingError) as caught:
        load_mapping_file(write(tmp_path, "m.yaml", text), plan_dir=tmp_path / "none")
    return caught.value.problems


PROFILE = """\
mappings:
  - name: profile
    when: {type: identify}
    allow_event_contacts: true
    profile:
      %s
      profile:
        email: {"@path": "$.traits.email"}
        name: {"@path": "$.traits.name"}
"""


# The profile action


@pytest.mark.parametrize(
    ("user_id_line", "event", "path"),
    [
        pytest.param(
            'user_id: {"@path": "$.userId"}', identify(), "/profiles/user-1", id="named"
        ),
        pytest.param("", identify(), "/profiles/user-1", id="default-userId"),
        pytest.param(
            "",
            identify(userId=None, anonymousId="anon 1"),
            "/profiles/anon%201",
            id="default-anonymousId",
        ),
        pytest.param(
            'user_id: {"@path": "$.traits.account"}',
            identify(traits={"account": "a/b?c=d&e#f é", "email": "x@example.com"}),
            "/profiles/a%2Fb%3Fc%3Dd%26e%23f%20%C3%A9",
            id="url-encoded",
        ),
        pytest.param(
            'user_id: {"@path": "$.traits.number"}',
            identify(traits={"number": 157963456373623803}),
            "/profiles/157963456373623803",
            id="integer-exact",
        ),
    ],
)
def test_profile_path(
    tmp_path: Path, user_id_line: str, event: dict[str, Any], path: str
) -> None:
    """The id comes from the named path (default userId, then anonymousId) and is
    URL-encoded into POST /profiles/{user_id}."""
    mapping = one_mapping(tmp_path, PROFILE % user_id_line)

    sent = render_send(mapping, event)

    assert (sent.path, sent.has_recipient) == (path, True)
    assert list(sent.body) == ["profile"]


@pytest.mark.parametrize(
    "user_id", [pytest.param(".", id="dot"), pytest.param("..", id="dots")]
)
def test_profile_ids_that_climb_the_path_are_rejected(
    tmp_path: Path, user_id: str
) -> None:
    """ "." and ".." would turn POST /profiles/{id} into another URL: rejected."""
    mapping = one_mapping(tmp_path, PROFILE % "")

    with pytest.raises(EventRejectedError, match="URL path"):
        render_send(mapping, identify(userId=user_id))


@pytest.mark.parametrize(
    "traits",
    [
        pytest.param({}, id="missing"),
        pytest.param({"account": None}, id="null"),
        pytest.param({"account": "  "}, id="blank"),
        pytest.param({"account": 1.5}, id="float"),
        pytest.param({"account": True}, id="bool"),
        pytest.param({"account": {"id": "x"}}, id="object"),
    ],
)
def test_profile_without_a_usable_id_has_no_recipient(
    tmp_path: Path, traits: dict[str, Any]
) -> None:
    """A user id that is not a non-blank string or an integer means no_recipient."""
    mapping = one_mapping(tmp_path, PROFILE % 'user_id: {"@path": "$.traits.account"}')

    assert not render_send(mapping, identify(traits=traits)).has_recipient


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "mappings:\n  - name: p\n    when: {type: identify}\n    profile: {}\n",
            "profile has no 'profile'",
            id="no-profile-body",
        ),
        pytest.param(
            "mappings:\n  - name: p\n    when: {type: identify}\n"
            "    profile: {profile: {}, userid: x}\n",
            "did you mean 'user_id'?",
            id="typo",
        ),
        pytest.param(
            "mappings:\n  - name: p\n    when: {type: identify}\n"
            "    profile: {profile: {}}\n    send: {message: {template: t}}\n",
            "send or profile, not both",
            id="both-actions",
        ),
    ],
)
def test_profile_problems(tmp_path: Path, text: str, message: str) -> None:
    """A broken profile action is refused with a precise message."""
    problems = problems_of(tmp_path, text)

    assert any(message in problem.message for problem in problems), problems


# Default recipients (M1)


@pytest.mark.parametrize(
    ("send", "changes", "body"),
    [
        pytest.param(
            "{message: {template: t}}",
            {},
            {"message": {"to": {"user_id": "user-1"}, "template": "t"}},
            id="current-userId",
        ),
        pytest.param(
            "{message: {template: t}}",
            {"userId": None, "anonymousId": "anon-1"},
            {"message": {"to": {"user_id": "anon-1"}, "template": "t"}},
            id="current-anonymousId",
        ),
        pytest.param(
            "{event: t, data: {a: 1}}",
            {"userId": "  ", "anonymousId": "anon-1"},
            {"event": "t", "recipient": "anon-1", "data": {"a": 1}},
            id="legacy-blank-userId",
        ),
        pytest.param(
            "{message: {template: t}}",
            {"userId": None, "anonymousId": None},
            {"message": {"template": "t"}},
            id="none",
        ),
    ],
)
def test_default_recipient(
    tmp_path: Path, send: str, changes: dict[str, Any], body: dict[str, Any]
) -> None:
    """Without a named recipient the userId is used, then the anonymousId."""
    text = "mappings:\n  - name: m\n    when: {event: Order Completed}\n"
    text += f"    send: {send}\n"
    mapping = one_mapping(tmp_path, text)

    sent = render_send(mapping, make_event(**changes))

    assert sent.body == body
    assert sent.has_recipient is (body != {"message": {"template": "t"}})


# Opt-ins: addresses and lists from the event


OPT_IN = """\
mappings:
  - name: m
    when: {event: Order Completed}
    send:
      message:
        to: %s
        template: t
%s"""


@pytest.mark.parametrize(
    ("to", "field", "message"),
    [
        pytest.param(
            '{email: {"@path": "$.properties.email"}}',
            "send.message.to.email",
            "email comes from the event",
            id="email",
        ),
        pytest.param(
            '{user_id: u, phone_number: {"@template": "+{{properties.phone}}"}}',
            "send.message.to.phone_number",
            "phone_number comes from the event",
            id="phone",
        ),
        pytest.param(
            '{"@path": "$.properties.to"}',
            "send.message.to",
            "to comes whole from the event",
            id="whole-to",
        ),
        pytest.param(
            '[{user_id: u}, {email: {"@path": "$.properties.email"}}]',
            "send.message.to[1].email",
            "email comes from the event",
            id="list-item",
        ),
        pytest.param(
            "{list_id: newsletter}",
            "send.message.to.list_id",
            "sending to a Courier list or audience (list_id) is off by default",
            id="list",
        ),
        pytest.param(
            '{list_pattern: {"@path": "$.properties.pattern"}}',
            "send.message.to.list_pattern",
            "set allow_lists: true",
            id="list-pattern",
        ),
        pytest.param(
            "{audience_id: vips}",
            "send.message.to.audience_id",
            "off by default",
            id="audience",
        ),
    ],
)
def test_contacts_and_lists_are_opt_in(
    tmp_path: Path, to: str, field: str, message: str
) -> None:
    """Addresses from the event, and list sends, need the mapping's opt-in."""
    (problem,) = problems_of(tmp_path, OPT_IN % (to, ""))

    assert (problem.mapping, problem.field) == ("m", field)
    assert message in problem.message


def test_fixed_addresses_need_no_opt_in(tmp_path: Path) -> None:
    """An address written in the mapping file is the operator's choice."""
    mapping = one_mapping(tmp_path, OPT_IN % ("{email: ops@example.com}", ""))

    assert render_send(mapping, make_event()).body["message"]["to"] == {
        "email": "ops@example.com"
    }


def test_opt_ins_allow_event_addresses_and_lists(tmp_path: Path) -> None:
    """With both opt-ins the event may name the address and the list."""
    extra = "    allow_event_contacts: true\n    allow_lists: true\n"
    mapping = one_mapping(tmp_path, OPT_IN % ('{"@path": "$.properties.to"}', extra))
    to = {"list_id": "l-1", "email": "a@example.com"}

    assert render_send(mapping, make_event(properties={"to": to})).body == {
        "message": {"to": to, "template": "t"}
    }


def test_a_list_from_the_event_is_rejected_without_the_list_opt_in(
    tmp_path: Path,
) -> None:
    """Contacts allowed but lists not: an event naming a list is rejected."""
    extra = "    allow_event_contacts: true\n"
    mapping = one_mapping(tmp_path, OPT_IN % ('{"@path": "$.properties.to"}', extra))
    event = make_event(properties={"to": [{"user_id": "u"}, {"list_id": "all"}]})

    with pytest.raises(EventRejectedError, match="Courier list or audience"):
        render_send(mapping, event)


def test_legacy_profile_contacts_are_opt_in(tmp_path: Path) -> None:
    """The legacy body's profile holds addresses too."""
    text = (
        "mappings:\n  - name: m\n    when: {event: A}\n    send: {event: t, "
        'profile: {email: {"@path": "$.traits.email"}}}\n'
    )

    (problem,) = problems_of(tmp_path, text)

    assert problem.field == "send.profile.email"


def test_profile_action_contacts_are_opt_in(tmp_path: Path) -> None:
    """A profile merge taking the email from the event needs the opt-in."""
    text = PROFILE.replace("    allow_event_contacts: true\n", "") % ""

    (problem,) = problems_of(tmp_path, text)

    assert problem.field == "profile.profile.email"


# The tracking plan


PLAN = {
    "type": "object",
    "required": ["orderId"],
    "properties": {
        "orderId": {"type": "string"},
        "total": {"type": "number", "minimum": 0},
        "items": {"type": "array", "items": {"type": "object"}},
    },
    "patternProperties": {"^x_": {}},
}


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "plan"
    directory.mkdir()
    (directory / "Order Completed.json").write_text(json.dumps(PLAN), encoding="utf-8")
    return directory


def mapping_with_plan(tmp_path: Path, plan_dir: Path, extra: str = "") -> Mapping:
    text = (
        "mappings:\n  - name: m\n    when: {event: Order Completed}\n"
        f"    send: {{message: {{template: t}}}}\n{extra}"
    )
    return one_mapping(tmp_path, text, plan_dir)


@pytest.mark.parametrize(
    ("properties", "errors"),
    [
        pytest.param({"orderId": "o-1", "total": 3}, [], id="fits"),
        pytest.param(
            {"total": -1},
            [
                ("$.properties", "'orderId' is a required property"),
                ("$.properties.total", "-1 is less than the minimum of 0"),
            ],
            id="two-violations",
        ),
        pytest.param(
            {"orderId": "o", "items": [{}, 3]},
            [("$.properties.items[1]", "3 is not of type 'object'")],
            id="nested-path",
        ),
    ],
)
def test_tracking_plan_file(
    tmp_path: Path,
    plan_dir: Path,
    properties: dict[str, Any],
    errors: list[tuple[str, str]],
) -> None:
    """schemas/events/<event>.json rejects events breaking it, with JSON paths."""
    mapping = mapping_with_plan(tmp_path, plan_dir)

    try:
        render_send(mapping, make_event(properties=properties))
        found: list[tuple[str, str]] = []
    except EventRejectedError as error:
        found = [(e.path, e.message) for e in error.errors]

    assert [path for path, _ in found] == [path for path, _ in errors]
    for (_, message), (_, expected) in zip(found, errors, strict=True):
        assert "breaks the tracking plan (Order Completed.json)" in message
        assert expected in message


def test_unknown_properties_reject(tmp_path: Path, plan_dir: Path) -> None:
    """unknown_properties: reject refuses undeclared top-level properties."""
    mapping = mapping_with_plan(tmp_path, plan_dir, "    unknown_properties: reject\n")
    event = make_event(properties={"orderId": "o", "x_extra": 1, "coupon": "c"})

    with pytest.raises(EventRejectedError) as caught:
        render_send(mapping, event)

    (error,) = caught.value.errors
    assert error.path == "$.properties.coupon"
    assert "'coupon' is not in the tracking plan" in error.message
    allowed = mapping_with_plan(tmp_path, plan_dir)
    assert render_send(allowed, event).has_recipient


def test_inline_schema_overrides_the_file(tmp_path: Path, plan_dir: Path) -> None:
    """properties_schema on the mapping replaces the plan file for it."""
    extra = (
        "    properties_schema: {type: object, required: [sku]}\n"
        "    unknown_properties: reject\n"
    )
    mapping = mapping_with_plan(tmp_path, plan_dir, extra)

    with pytest.raises(EventRejectedError) as caught:
        render_send(mapping, make_event(properties={"orderId": "o-1"}))

    paths = [error.path for error in caught.value.errors]
    assert paths == ["$.properties", "$.properties.orderId"]


def test_identify_schemas_check_traits(tmp_path: Path) -> None:
    """For identify the properties schema checks traits."""
    text = (
        "mappings:\n  - name: m\n    when: {type: identify}\n"
        "    properties_schema: {properties: {age: {type: integer}}}\n"
        "    send: {message: {template: t}}\n"
    )
    mapping = one_mapping(tmp_path, text)

    with pytest.raises(EventRejectedError) as caught:
        render_send(mapping, identify(traits={"age": "27"}))

    assert caught.value.errors[0].path == "$.traits.age"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        pytest.param('{"type": "objekt"}', "is not a valid JSON Schema", id="invalid"),
        pytest.param(
            '{"$ref": "https://example.com/s.json"}',
            "points outside the schema",
            id="remote-ref",
        ),
        pytest.param("[1]", "must be a JSON Schema object", id="not-object"),
    ],
)
def test_broken_plan_files_are_reported(
    tmp_path: Path, schema: str, message: str
) -> None:
    """A broken plan file fails the load, naming the file."""
    plan = tmp_path / "plan"
    plan.mkdir()
    (plan / "A.json").write_text(schema, encoding="utf-8")
    write(tmp_path, "maps/m.yaml", "mappings: []\n")

    with pytest.raises(MappingError) as caught:
        load_mappings(tmp_path / "maps", plan_dir=plan)

    (problem,) = caught.value.problems
    assert problem.file == str(plan / "A.json")
    assert message in problem.message


# Examples in a mapping


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        pytest.param("[{event: {}}]", "the example needs expect", id="no-expect"),
        pytest.param(
            "[{expect: {body: {}}}]", "the example has no event", id="no-event"
        ),
        pytest.param(
            "[{event: {}, expect: {outcome: skipped}}]",
            "outcome must be one of sent, no_recipient, not_matched, rejected",
            id="bad-outcome",
        ),
        pytest.param(
            "[{event: {}, expect: {outcome: sent}}]",
            "give body for a sent request",
            id="sent-without-body",
        ),
        pytest.param(
            "[{event: {}, expect: {bdy: {}}}]", "did you mean 'body'?", id="typo"
        ),
        pytest.param("{event: {}}", "examples must be a list", id="not-a-list"),
    ],
)
def test_example_problems(tmp_path: Path, examples: str, message: str) -> None:
    """A malformed example is a load problem, even before check runs it."""
    text = (
        "mappings:\n  - name: m\n    when: {event: A}\n"
        f"    send: {{message: {{template: t}}}}\n    examples: {examples}\n"
    )

    problems = problems_of(tmp_path, text)

    assert any(message in problem.message for problem in problems), problems


def test_example_event_files_are_relative_to_the_mapping(tmp_path: Path) -> None:
    """An example's event file is found next to the mapping file."""
    text = (
        "mappings:\n  - name: m\n    when: {event: A}\n"
        "    send: {message: {template: t}}\n"
        "    examples: [{event: events/a.json, expect: {outcome: no_recipient}}]\n"
    )
    mapping = one_mapping(tmp_path / "maps", text)

    (example,) = mapping.examples

    assert example.event == str(tmp_path / "maps" / "events" / "a.json")
    assert example.outcome == "no_recipient"


# Ingest plans every action the same way


def test_ingest_plans_profile_paths(tmp_path: Path, validator: EventValidator) -> None:
    """plan_events stores the profile path with the rendered body."""
    mappings = MappingSet(
        (one_mapping(tmp_path, PROFILE % 'user_id: {"@path": "$.traits.name"}'),)
    )

    (entry,) = plan_events([identify()], validator, mappings, "src")

    assert entry.incoming is not None
    (send,) = entry.incoming.sends
    assert send.path == "/profiles/Ada"
    assert json.loads(send.body or b"") == {
        "profile": {"email": "a@example.com", "name": "Ada"}
    }


def test_ingest_rejects_events_a_mapping_cannot_send(
    tmp_path: Path, validator: EventValidator, plan_dir: Path
) -> None:
    """A tracking-plan violation rejects the event alone, with its paths."""
    mappings = MappingSet((mapping_with_plan(tmp_path, plan_dir),))
    events = [make_event(properties={}), make_event(messageId="m-2")]

    bad, good = plan_events(events, validator, mappings, "src")

    assert bad.disposition == "rejected"
    assert [error.path for error in bad.errors] == ["$.properties"]
    assert good.disposition == "store"


def test_ingest_rejects_render_limits(
    tmp_path: Path, validator: EventValidator
) -> None:
    """An event that would render past the size bound is rejected, not crashed."""
    text = (
        "mappings:\n  - name: m\n    when: {event: Order Completed}\n"
        '    send: {message: {template: t, data: {x: {"@template": "'
        + "{{properties.big}}" * 60
        + '"}}}}\n'
    )
    mappings = MappingSet((one_mapping(tmp_path, text),))
    event = make_event(properties={"big": "x" * 30_000})

    (entry,) = plan_events([event], validator, mappings, "src")

    assert entry.disposition == "rejected"
    assert "mapping 'm' cannot render this event" in entry.errors[0].message


async def test_profile_merge_end_to_end(
    tmp_path: Path, make_service: Any, fake: FakeCourier
) -> None:
    """An identify reaches the API as POST /profiles/{id} with {"profile": ...}."""
    write(tmp_path, "maps/p.yaml", PROFILE % 'user_id: {"@path": "$.traits.name"}')
    client = await make_service(mappings=load_mappings(tmp_path / "maps"))
    body = compact(identify(traits={"email": "a@example.com", "name": "Ada L"}))

    response = await client.post(
        "/webhook", data=io.BytesIO(body), headers=signed_headers(body)
    )
    await wait_for(lambda: len(fake.executed) == 1)

    assert (await response.json())["accepted"] == 1
    sent = fake.executed[0]
    assert sent.path == "/profiles/Ada L"  # aiohttp decodes %20 in request.path
    assert sent.json() == {"profile": {"email": "a@example.com", "name": "Ada L"}}
