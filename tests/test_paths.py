"""The shared fixtures are found beside the repository, or in the vendored copy."""

from pathlib import Path

import pytest

from tests.paths import EVENT_FIXTURES, REPLAY_FIXTURES, REPO, find_shared

EVENTS = {
    "action_destinations_create_test_event.json",
    "rudderstack_courier_identify_offset_ts.json",
    "rudderstack_courier_track_offset_ts.json",
    "rudderstack_track_missing_userId_anonymous_only.json",
    "segment_personas_identify_sentAt_null.json",
    "segment_spec_track_complete.json",
    "segment_webhooks_classic_identify_no_messageId.json",
    "segment_webhooks_classic_track_no_messageId.json",
    "webhook_actions_batch_array.json",
}
REPLAYS = {
    "blank_lines.jsonl",
    "bom_first_line.jsonl",
    "concatenated_no_newline.jsonl",
    "crlf.jsonl",
    "duplicate_messageId.jsonl",
    "multi_member.jsonl.gz",
    "truncated_last_line.jsonl",
}
VENDORED = REPO / "tests" / "shared" / "fixtures"


def names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir() if path.name != "README.md"}


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        pytest.param(EVENT_FIXTURES, EVENTS, id="events"),
        pytest.param(REPLAY_FIXTURES, REPLAYS, id="replay"),
        pytest.param(VENDORED / "events", EVENTS, id="vendored-events"),
        pytest.param(VENDORED / "replay", REPLAYS, id="vendored-replay"),
    ],
)
def test_fixtures_hold_the_expected_files(directory: Path, expected: set[str]) -> None:
    """The fixtures in use, and the vendored copy, hold every file the tests read."""
    found = names(directory)

    assert expected <= found


def test_a_lone_clone_uses_the_vendored_copy(tmp_path: Path) -> None:
    """Without ../shared beside the clone, the tests read tests/shared."""
    clone = tmp_path / "destination"

    assert find_shared(clone) == clone / "tests" / "shared"


def test_shared_beside_the_clone_wins(tmp_path: Path) -> None:
    """With ../shared/fixtures beside the clone, the tests read it."""
    clone = tmp_path / "destination"
    (tmp_path / "shared" / "fixtures").mkdir(parents=True)

    assert find_shared(clone) == tmp_path / "shared"
