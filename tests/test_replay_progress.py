"""Progress and the pieces of replay that need no store: bar, log lines, rules."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from destination.mapping import MappingSet
from destination.progress import Progress
from destination.replay_feed import Selection
from destination.replay_store import Planner
from destination.runtime import Runtime
from destination.settings import Settings
from destination.signature import AuthConfig
from destination.validation import EventValidator
from tests.conftest import make_event


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bar_shows_rate_and_time_left_on_a_terminal() -> None:
    """On a terminal one line is redrawn: percent, events, rate, ETA."""
    clock, stream = Clock(), io.StringIO()
    progress = Progress(
        stream,
        total_bytes=1000,
        interactive=True,
        log_event="replay.progress",
        clock=clock,
    )

    clock.now += 10
    progress.update(events=500, bytes_read=250)

    drawn = stream.getvalue()
    assert drawn.startswith("\r\x1b[K[######")
    assert " 25.0%  500 events  50/s  ETA 0:00:30" in drawn


def test_notes_print_above_the_bar() -> None:
    """A problem line clears the bar, prints, and draws the bar again below it."""
    clock, stream = Clock(), io.StringIO()
    progress = Progress(
        stream, total_bytes=None, interactive=True, log_event="x", clock=clock
    )
    clock.now += 1
    progress.update(events=5, bytes_read=10)

    progress.note("replay: a.jsonl:3: bad")
    progress.close()

    assert stream.getvalue().endswith(
        "\r\x1b[Kreplay: a.jsonl:3: bad\n5 events  5/s\r\x1b[K"
    )


def test_log_lines_elsewhere() -> None:
    """Off a terminal, one replay.progress log line per interval and no bar."""
    clock, stream = Clock(), io.StringIO()
    progress = Progress(
        stream,
        total_bytes=1000,
        interactive=False,
        log_event="replay.progress",
        interval=10,
        clock=clock,
    )

    with capture_logs() as logs:
        for second in range(1, 26):
            clock.now += 1
            progress.update(events=second * 10, bytes_read=second * 20)
        progress.waiting(7)

    assert stream.getvalue() == ""
    lines = [entry for entry in logs if entry["event"] == "replay.progress"]
    assert [entry["events"] for entry in lines] == [100, 200]
    assert lines[0]["percent"] == 20.0 and lines[0]["eta_seconds"] == 40


@pytest.mark.parametrize(
    ("event", "selection", "admitted"),
    [
        pytest.param(make_event(), Selection(), True, id="no-filter"),
        pytest.param(
            make_event(), Selection(types=frozenset({"page"})), False, id="type"
        ),
        pytest.param(
            make_event(event=["Order Completed"]),
            Selection(events=frozenset({"Order Completed"})),
            False,
            id="unhashable-name",
        ),
        pytest.param(
            make_event(timestamp="not a time"),
            Selection(since=datetime(2024, 1, 1, tzinfo=UTC)),
            False,
            id="unreadable-time",
        ),
        pytest.param(
            make_event(timestamp="2024-05-01T14:00:00+02:00"),
            Selection(until=datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=UTC)),
            True,
            id="offset-time",
        ),
        pytest.param(42, Selection(types=frozenset({"track"})), True, id="not-object"),
    ],
)
def test_selection(event: Any, selection: Selection, admitted: bool) -> None:
    """Filters read raw fields; what is not an object is left to validation."""
    assert selection.admits(event) is admitted


@pytest.mark.parametrize(
    ("created_at", "accept_expired"),
    [
        pytest.param(0.0, False, id="old-store"),
        pytest.param(0.0, True, id="accept-expired"),
        pytest.param(1e12, False, id="young-store"),
    ],
)
def test_expiry_rule_is_the_webhooks(
    validator: EventValidator, created_at: float, accept_expired: bool
) -> None:
    """Replay expires exactly the events the webhook expires."""
    settings = Settings(accept_expired=accept_expired)
    runtime = Runtime(
        settings=settings,
        auth=AuthConfig(),
        validator=validator,
        mappings=MappingSet(()),
        store=None,  # type: ignore[arg-type]
        store_created_at=created_at,
    )
    planner = Planner(
        validator, MappingSet(()), settings, False, store_created_at=created_at
    )

    for now in (1e9, 2e9):
        assert planner.expire_before(now) == runtime.expire_before(now)
