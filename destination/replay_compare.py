"""``replay --compare OLD_DIR``: what a mapping change does to real traffic.

Each batch is planned twice by ``plan_events``, the path every live event
takes, with the same validator, source id and expiry rule: once with the
current mappings, by the dry run's own ``Planner`` (so the counts, problems
and store look-ups are exactly those of ``--dry-run``), and once with the
mappings in OLD_DIR. The two plans are compared per (messageId, mapping):

- ``unchanged``: both send the same request (path and body), or neither sends;
- ``changed``: both send, and the path or the body differs;
- ``appeared``: only the current mappings send;
- ``disappeared``: only the old mappings send.

A pair without a recipient sends nothing, so a recipient found or lost is an
appearance or a disappearance. Memory stays flat over any archive: per mapping,
only the counts and the first few differences are kept.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from destination.errors import MappingError, SettingsError
from destination.ingest import PlannedEvent, plan_events
from destination.mapping import MappingSet, load_mappings
from destination.replay_framing import Location, Record
from destination.replay_report import Report
from destination.replay_store import Planner
from destination.store import PlannedSend

Change = Literal["unchanged", "changed", "appeared", "disappeared"]
CHANGES: tuple[Change, ...] = ("unchanged", "changed", "appeared", "disappeared")
DEFAULT_SAMPLES = 3


def load_old_mappings(directory: Path) -> MappingSet:
    """The mappings to compare against; a SettingsError (usage) when unusable."""
    if not directory.exists():
        raise SettingsError(
            f"--compare {str(directory)!r} does not exist; give the directory "
            "holding the mappings to compare against."
        )
    try:
        return load_mappings(directory)
    except MappingError as error:
        raise SettingsError(
            f"--compare {str(directory)!r}: the mappings there cannot be loaded; "
            f"fix them or compare against another directory:\n{error}"
        ) from None


@dataclass(frozen=True, slots=True)
class Request:
    """What one side would send for a pair: the path and the exact body."""

    path: str
    body: bytes

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "body": json.loads(self.body)}

    def lines(self) -> list[str]:
        """The request as a person diffs it: keys sorted, one value a line."""
        body = json.loads(self.body)
        pretty = json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False)
        return [f"POST {self.path}", *pretty.splitlines()]


@dataclass(frozen=True, slots=True)
class Sample:
    """One pair whose request differs, where its event is in the input."""

    mapping: str
    change: Change
    message_id: str
    location: Location
    old: Request | None
    new: Request | None

    def diff(self, old_label: str, new_label: str) -> list[str]:
        before = [] if self.old is None else self.old.lines()
        after = [] if self.new is None else self.new.lines()
        return list(
            difflib.unified_diff(
                before,
                after,
                f"{self.mapping} (old: {old_label})",
                f"{self.mapping} (current: {new_label})",
                lineterm="",
            )
        )


@dataclass(slots=True)
class MappingChanges:
    """The counts of one mapping name and its first differences."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)

    @property
    def events(self) -> int:
        """The events this mapping takes on either side: the sum of the changes."""
        return sum(self.counts_in_order())

    def counts_in_order(self) -> list[int]:
        return [self.counts[change] for change in CHANGES]

    @property
    def differences(self) -> int:
        return self.events - self.counts["unchanged"]


class Comparison:
    """Per mapping name, how the current requests differ from the old ones."""

    def __init__(
        self,
        current: MappingSet,
        old: MappingSet,
        *,
        current_label: str,
        old_label: str,
        samples: int = DEFAULT_SAMPLES,
    ) -> None:
        names = [mapping.name for mapping in current.mappings]
        names += [m.name for m in old.mappings if current.get(m.name) is None]
        self.mappings = {name: MappingChanges(name) for name in names}
        self.current_label = current_label
        self.old_label = old_label
        self.samples = samples

    def add(
        self,
        location: Location,
        message_id: str,
        old_sends: Sequence[PlannedSend],
        new_sends: Sequence[PlannedSend],
        totals: Counter[str],
    ) -> None:
        """Compare one event's pairs; ``totals`` counts every mapping together."""
        old = {send.mapping: _request(send) for send in old_sends}
        new = {send.mapping: _request(send) for send in new_sends}
        for name in dict.fromkeys([*new, *old]):
            before, after = old.get(name), new.get(name)
            change = _classify(before, after)
            entry = self.mappings[name]
            entry.counts[change] += 1
            totals[change] += 1
            if change != "unchanged" and len(entry.samples) < self.samples:
                sample = Sample(name, change, message_id, location, before, after)
                entry.samples.append(sample)

    def write(self, out: TextIO, *, as_json: bool) -> None:
        """The per-mapping table and samples; with ``as_json``, JSON lines."""
        if as_json:
            out.writelines(
                json.dumps(line, ensure_ascii=False) + "\n" for line in self._json()
            )
        else:
            out.write(self._text())
        out.flush()

    def _json(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for entry in self.mappings.values():
            counts = dict(zip(CHANGES, entry.counts_in_order(), strict=True))
            head = {"kind": "compare", "mapping": entry.name, "events": entry.events}
            lines.append(head | counts)
            lines += [self._sample_json(sample) for sample in entry.samples]
        return lines

    def _sample_json(self, sample: Sample) -> dict[str, Any]:
        return {
            "kind": "compare_sample",
            "mapping": sample.mapping,
            "change": sample.change,
            "messageId": sample.message_id,
            "location": sample.location.as_json(),
            "old": None if sample.old is None else sample.old.as_json(),
            "new": None if sample.new is None else sample.new.as_json(),
            "diff": "\n".join(sample.diff(self.old_label, self.current_label)),
        }

    def _text(self) -> str:
        lines = [
            f"compare: current mappings {self.current_label!r} against old "
            f"mappings {self.old_label!r}"
        ]
        lines += _table(list(self.mappings.values()))
        for entry in self.mappings.values():
            for sample in entry.samples:
                lines.append("")
                lines.append(
                    f"{entry.name}: {sample.change}, messageId "
                    f"{sample.message_id!r} at {sample.location}"
                )
                lines += sample.diff(self.old_label, self.current_label)
            if entry.differences > len(entry.samples) > 0:
                lines.append(
                    f"({len(entry.samples)} of {entry.differences:,} differences of "
                    f"{entry.name!r} shown; --samples N shows more)"
                )
        return "\n".join(lines) + "\n\n"


def _request(send: PlannedSend) -> Request | None:
    return None if send.body is None else Request(send.path, send.body)


def _classify(before: Request | None, after: Request | None) -> Change:
    if before is None:
        return "unchanged" if after is None else "appeared"
    if after is None:
        return "disappeared"
    return "unchanged" if before == after else "changed"


def _table(entries: list[MappingChanges]) -> list[str]:
    headers = ("mapping", "events", *CHANGES)
    rows = [
        [entry.name, *(f"{n:,}" for n in (entry.events, *entry.counts_in_order()))]
        for entry in entries
    ]
    widths = [max(map(len, column)) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        name, *figures = row
        cells = "".join(f"  {f:>{w}}" for f, w in zip(figures, widths[1:], strict=True))
        lines.append(f"  {name:<{widths[0]}}{cells}")
    return lines


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparingPlanner(Planner):
    """The dry run's planner, which also plans with the old mappings and compares.

    Subclassing keeps ``--dry-run``'s target, store look-up and counts as they
    are: the comparison only watches what the current plan decided.
    """

    old_mappings: MappingSet
    comparison: Comparison

    def plan(
        self, records: Sequence[Record], report: Report, now: float
    ) -> list[tuple[PlannedEvent, Record]]:
        stored = Planner.plan(self, records, report, now)
        old_plan = plan_events(
            [record.event for record in records],
            self.validator,
            self.old_mappings,
            self.settings.source_id,
            expire_before=self.expire_before(now),
        )
        current = {entry.index: entry for entry, _ in stored}
        for old, record in zip(old_plan, records, strict=True):
            old_sends, new_sends = _sends(old), _sends(current.get(old.index))
            if old_sends or new_sends:
                assert old.message_id is not None  # a planned pair has one
                self.comparison.add(
                    record.location, old.message_id, old_sends, new_sends, report.counts
                )
        return stored


def _sends(entry: PlannedEvent | None) -> tuple[PlannedSend, ...]:
    # Rejected, expired, unmapped, ignored or filtered: that side sends nothing.
    if entry is None or entry.incoming is None:
        return ()
    return entry.incoming.sends
