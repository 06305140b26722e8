"""Tests for ``destination check`` and ``destination preview``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from destination.check import check_directory
from destination.cli import build_parser
from destination.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from destination.idempotency import derive_idempotency_key
from destination.ingest import plan_events
from destination.mapping import load_mappings
from destination.validation import EventValidator
from tests.conftest import TEST_MAPPINGS
from tests.paths import EVENT_FIXTURES, EXAMPLE_MAPPINGS, REPO

BROKEN = REPO / "tests" / "data" / "mappings-broken"
FIXTURES = sorted(EVENT_FIXTURES.glob("*.json"))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands read settings from the environment; start each test without."""
    for name in ("DESTINATION_MAPPINGS", "DESTINATION_SOURCE_ID"):
        monkeypatch.delenv(name, raising=False)


def command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run one subcommand's handler, as ``destination`` would, and its stdout."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code, capsys.readouterr().out


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# check


def test_check_passes_on_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped examples load and every embedded example passes."""
    code, out = command(["check", str(EXAMPLE_MAPPINGS)], capsys)

    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[-1] == (
        "0 problems; 6 valid mappings in 6 files; 13 examples run, 0 failed."
    )
    assert all(line.startswith("ok   ") for line in lines[:-1])
    assert "example 'the README demo event'" in out


def test_check_reports_five_broken_files_precisely(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Five broken files give five lines with file, line, mapping and field."""
    code, out = command(["check", str(BROKEN)], capsys)

    assert code == EXIT_FAILURE
    lines = out.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [
        f"{BROKEN}/01_unknown_key.yaml:5, mapping 'welcome', field 'sned'",
        f"{BROKEN}/02_bad_path.yaml:9, mapping 'course-started', "
        "field 'send.message.data.title'",
        f"{BROKEN}/03_bad_condition.yaml:4, mapping 'refund-issued', field 'when'",
        f"{BROKEN}/04_email_from_event.yaml:8, mapping 'password-reset', "
        "field 'send.message.to.email'",
        f"{BROKEN}/05_nan.json:9, mapping 'score-changed', "
        "field 'send.message.data.score'",
    ]
    assert "did you mean 'send'?" in lines[0]
    assert "is not valid at character 13" in lines[1]
    assert "ends before the comparison is complete" in lines[2]
    assert "set allow_event_contacts: true" in lines[3]
    assert "NaN is not a JSON number" in lines[4]
    assert lines[-1].startswith("5 problems;")


FAILING = """\
mappings:
  - name: greet
    when: {event: Signed Up}
    send:
      message:
        template: welcome
        data: {name: {"@path": "$.traits.name"}}
    examples:
      - name: wrong name
        event: {type: track, event: Signed Up, messageId: m-1, userId: u-1,
                traits: {name: Ada}}
        expect:
          body: {message: {to: {user_id: u-1}, template: welcome,
                           data: {name: Bob}}}
      - name: wrong outcome
        event: {type: track, event: Signed Up, messageId: m-2, anonymousId: a}
        expect: {outcome: no_recipient}
      - name: invalid event
        event: {type: track, event: Signed Up, userId: u-1}
        expect: {outcome: rejected}
      - name: missing file
        event: nowhere.json
        expect: {outcome: sent, body: {}}
  - name: fine
    when: {event: Other}
    send: {message: {template: t}}
"""


def test_failing_examples_show_a_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing example shows the expected and actual body as a diff."""
    write(tmp_path, "m.yaml", FAILING)

    code, out = command(["check", str(tmp_path)], capsys)

    assert code == EXIT_FAILURE
    assert "FAIL" in out and "example 'wrong name'" in out
    assert '-      "name": "Bob"' in out
    assert '+      "name": "Ada"' in out
    assert "expected no_recipient, got sent" in out
    assert f"cannot read {tmp_path / 'nowhere.json'}" in out
    assert out.splitlines()[-1] == (
        "0 problems; 2 valid mappings in 1 file; 4 examples run, 3 failed."
    )


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives the problems and example results for machines."""
    write(tmp_path, "m.yaml", FAILING)
    write(tmp_path, "broken.yaml", "mappings: [{name: x}]\n")

    code, out = command(["check", str(tmp_path), "--json"], capsys)

    report = json.loads(out)
    assert code == EXIT_FAILURE
    assert report["ok"] is False
    assert [p["message"] for p in report["problems"]] == [
        "the mapping has no 'when'; add it",
        "the mapping has no 'send'; add it (or 'profile' for a profile merge)",
    ]
    assert [(e["example"], e["passed"]) for e in report["examples"]] == [
        ("wrong name", False),
        ("wrong outcome", False),
        ("invalid event", True),
        ("missing file", False),
    ]


def test_check_finds_the_directory_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without PATH, check reads DESTINATION_MAPPINGS, else ./mappings."""
    write(tmp_path, "mappings/m.yaml", FAILING)
    monkeypatch.chdir(tmp_path)

    code, out = command(["check"], capsys)
    assert code == EXIT_FAILURE and "example 'wrong name'" in out

    monkeypatch.setenv("DESTINATION_MAPPINGS", str(EXAMPLE_MAPPINGS))
    assert command(["check"], capsys)[0] == EXIT_OK


def test_check_of_a_missing_directory_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory that does not exist is a problem, not an empty pass."""
    code, out = command(["check", str(tmp_path / "typo")], capsys)

    assert code == EXIT_FAILURE
    assert "typo: is not a directory of mapping files" in out
    assert "give the directory as PATH or set DESTINATION_MAPPINGS" in out


def test_check_runs_examples_of_valid_mappings_beside_broken_ones(
    tmp_path: Path, validator: EventValidator
) -> None:
    """A broken file does not stop the other files' examples from running."""
    write(tmp_path, "a.yaml", FAILING)
    write(tmp_path, "b.yaml", "mappings: [{name: x, when: {}, send: []}]\n")

    report = check_directory(tmp_path, validator, "default")

    assert len(report.problems) == 1
    assert len(report.results) == 4


def test_check_as_a_process() -> None:
    """The installed command exits 0 on the examples and 1 on broken files."""
    good = subprocess.run(
        [sys.executable, "-m", "destination", "check", str(EXAMPLE_MAPPINGS)],
        capture_output=True,
        text=True,
        check=False,
    )
    bad = subprocess.run(
        [sys.executable, "-m", "destination", "check", str(BROKEN)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert (good.returncode, bad.returncode) == (EXIT_OK, EXIT_FAILURE)
    assert bad.stdout.count(str(BROKEN)) == 5


# preview


@pytest.mark.parametrize(
    "mappings", [TEST_MAPPINGS, EXAMPLE_MAPPINGS], ids=["test", "ex"]
)
@pytest.mark.parametrize("fixture", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_preview_every_fixture(
    fixture: Path,
    mappings: Path,
    validator: EventValidator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each shared fixture previews as the requests ingest plans, or the reason
    there are none; the bodies are the exact bytes that would be sent."""
    argv = ["preview", "--event", str(fixture), "--mappings", str(mappings)]

    code, out = command([*argv, "--json"], capsys)

    assert code == EXIT_OK
    previews = json.loads(out)
    loaded = json.loads(fixture.read_text(encoding="utf-8"))
    events = loaded if isinstance(loaded, list) else [loaded]
    plan = plan_events(events, validator, load_mappings(mappings), "default")
    assert len(previews) == len(plan)
    for preview, entry in zip(previews, plan, strict=True):
        sends = entry.incoming.sends if entry.incoming is not None else ()
        assert [
            (r["mapping"], r["path"], r["idempotency_key"], r["body_text"])
            for r in preview["requests"]
        ] == [
            (s.mapping, s.path, s.idempotency_key, s.body and s.body.decode())
            for s in sends
        ]
        explained = preview["reasons"] or [
            r["reason"] for r in preview["requests"] if r["body"] is None
        ]
        assert explained or all(r["body"] for r in preview["requests"])
    text_code, text = command(argv, capsys)
    assert text_code == EXIT_OK
    assert text.startswith("event 0 (messageId ")


def test_preview_prints_the_exact_request(capsys: pytest.CaptureFixture[str]) -> None:
    """The text form shows method, path, key and the body bytes."""
    fixture = EVENT_FIXTURES / "segment_spec_track_complete.json"

    code, out = command(
        ["preview", "--event", str(fixture), "--mappings", str(EXAMPLE_MAPPINGS)],
        capsys,
    )

    key = derive_idempotency_key(
        "default", "ajs-f8ca1e4de5024d9430b3928bd8ac6b96", "course-clicked"
    )
    assert code == EXIT_OK
    assert out == (
        "event 0 (messageId 'ajs-f8ca1e4de5024d9430b3928bd8ac6b96'): mapped, "
        "1 request\n"
        "  mapping 'course-clicked':\n"
        "    POST /send\n"
        f"    Idempotency-Key: {key}\n"
        "    Content-Type: application/json\n"
        "\n"
        '    {"message":{"to":{"user_id":"user_fake_0001"},"template":'
        '"course-clicked","data":{"title":"Intro to Analytics"}}}\n'
    )


def test_preview_uses_the_source_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key's source id comes from --source-id, else DESTINATION_SOURCE_ID."""
    fixture = str(EVENT_FIXTURES / "segment_spec_track_complete.json")
    argv = ["preview", "--event", fixture, "--mappings", str(EXAMPLE_MAPPINGS)]
    message_id = "ajs-f8ca1e4de5024d9430b3928bd8ac6b96"
    monkeypatch.setenv("DESTINATION_SOURCE_ID", "from-env")

    from_env = command(argv, capsys)[1]
    from_flag = command([*argv, "--source-id", "from-flag"], capsys)[1]

    assert derive_idempotency_key("from-env", message_id, "course-clicked") in from_env
    assert derive_idempotency_key("from-flag", message_id, "course-clicked") in (
        from_flag
    )


def test_preview_profile_requests(capsys: pytest.CaptureFixture[str]) -> None:
    """Identify fixtures preview as profile merges with URL-encoded ids."""
    fixture = EVENT_FIXTURES / "segment_personas_identify_sentAt_null.json"

    code, out = command(
        ["preview", "--event", str(fixture), "--mappings", str(EXAMPLE_MAPPINGS)],
        capsys,
    )

    assert code == EXIT_OK
    assert "POST /profiles/Test%20User%20ID%20Y" in out
    assert '{"profile":{"email":"user0003@example.com"}}' in out


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        pytest.param(
            {
                "type": "track",
                "event": "Order Shipped",
                "messageId": "m",
                "userId": "u",
                "properties": {"order_id": "o", "total": 3, "test_order": True},
            },
            "mapping 'order-shipped' takes this event's type and name, but its "
            "condition is false: $.properties.test_order not_equals True is false: "
            "the value is a boolean True",
            id="condition-false",
        ),
        pytest.param(
            {
                "type": "track",
                "event": "order completed",
                "messageId": "m",
                "userId": "u",
            },
            "mapping 'order-confirmation' takes 'Order Completed', which differs from "
            "'order completed' only in case or spaces; add match: normalized to its "
            "when to take both",
            id="near-miss",
        ),
        pytest.param(
            {"type": "track", "event": "Nothing", "messageId": "m", "userId": "u"},
            "no mapping takes track events named 'Nothing'",
            id="unmapped",
        ),
        pytest.param(
            {"type": "group", "groupId": "g", "messageId": "m", "userId": "u"},
            "no mapping takes group events",
            id="ignored",
        ),
        pytest.param(
            {
                "type": "track",
                "event": "Course Clicked",
                "messageId": "m",
                "anonymousId": "a",
            },
            "no recipient: message.to is {}; the pair is recorded no_recipient and "
            "never sent",
            id="no-recipient",
        ),
        pytest.param(
            {
                "type": "track",
                "event": "Order Shipped",
                "messageId": "m",
                "userId": "u",
                "properties": {"total": "3"},
            },
            "$.properties: breaks the tracking plan (Order Shipped.json): 'order_id' "
            "is a required property.",
            id="tracking-plan",
        ),
    ],
)
def test_preview_says_why_nothing_is_sent(
    tmp_path: Path,
    event: dict[str, Any],
    reason: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Unmapped, condition false, no recipient and invalid each get a reason."""
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")

    code, out = command(
        ["preview", "--event", str(path), "--mappings", str(EXAMPLE_MAPPINGS)], capsys
    )

    assert code == EXIT_OK
    assert reason in out


def test_preview_one_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--mapping limits the preview to one mapping; an unknown name is a usage error."""
    fixture = str(EVENT_FIXTURES / "segment_spec_track_complete.json")
    argv = ["preview", "--event", fixture, "--mappings", str(EXAMPLE_MAPPINGS)]

    chosen = command([*argv, "--mapping", "order-confirmation"], capsys)
    unknown = command([*argv, "--mapping", "course-clickd"], capsys)

    assert chosen[0] == EXIT_OK
    assert "no mapping takes track events named 'Course Clicked'" in chosen[1]
    assert unknown[0] == EXIT_USAGE


@pytest.mark.parametrize(
    ("given", "warned"),
    [
        pytest.param([], True, id="default-missing"),
        pytest.param(["--mappings", "typo"], True, id="flag-missing"),
        pytest.param(["--mappings", str(EXAMPLE_MAPPINGS)], False, id="present"),
    ],
)
def test_preview_warns_of_a_missing_mapping_directory(
    given: list[str],
    warned: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A mapping directory that does not exist is named on stderr, with the fix."""
    monkeypatch.chdir(tmp_path)
    fixture = str(EVENT_FIXTURES / "segment_spec_track_complete.json")
    args = build_parser().parse_args(["preview", "--event", fixture, *given])

    code = args.handler(args)

    assert code == EXIT_OK
    err = capsys.readouterr().err
    missing = "typo" if given else "mappings"
    warning = (
        f"destination: warning: mapping directory './{missing}' does not exist; "
        "pass --mappings DIR or set DESTINATION_MAPPINGS\n"
    )
    assert err == (warning if warned else "")


@pytest.mark.parametrize(
    "content", [pytest.param(b"{", id="not-json"), pytest.param(b"\xff", id="bytes")]
)
def test_preview_of_a_bad_file(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not JSON is a usage error with the parser's reason."""
    path = tmp_path / "event.json"
    path.write_bytes(content)

    args = build_parser().parse_args(["preview", "--event", str(path)])

    code = args.handler(args)

    assert code == EXIT_USAGE
    assert f"destination: {path}: The body is not" in capsys.readouterr().err
