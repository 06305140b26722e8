"""The replay loop: read, filter, pace, and hand batches to a target in order.

A target is where batches go: the store in-process, a count in a dry run, or a
running service with ``--to``. The loop keeps one promise for all of them:
anything reported about a line comes after every complete record before it
has been handed over and settled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from destination.replay_files import ReadProgress
from destination.replay_framing import InvalidInput, Item, Record
from destination.replay_report import Report
from destination.validation import event_time


@dataclass(frozen=True, slots=True)
class Selection:
    """The filters: which events of the input this replay is about.

    They look at the raw fields, before validation: an event they leave out
    is counted as ``filtered`` and is not judged. A value that is not a JSON
    object is never left out, so that validation can reject it.
    """

    events: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def admits(self, event: Any) -> bool:
        if not isinstance(event, dict):
            return True
        if self.types and not _one_of(event.get("type"), self.types):
            return False
        if self.events and not _one_of(event.get("event"), self.events):
            return False
        if self.since is None and self.until is None:
            return True
        when = event_time(event)
        if when is None:
            return False
        after_start = self.since is None or when >= self.since
        return after_start and (self.until is None or when < self.until)


def _one_of(value: Any, names: frozenset[str]) -> bool:
    return isinstance(value, str) and value in names


class Pacer:
    """Holds events back to ``rate`` per second; no limit when rate is None."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._started = time.monotonic()
        self._count = 0

    @property
    def batch_limit(self) -> int | None:
        """Under a rate, batches of about a second's worth, so sends stay smooth."""
        return None if self._rate is None else max(1, int(self._rate))

    async def wait(self) -> None:
        if self._rate is None:
            return
        self._count += 1
        delay = self._started + self._count / self._rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class Target(Protocol):
    """Where batches go: the store, a dry-run count, or a running service."""

    batch_size: int

    async def take(self, records: list[Record]) -> None: ...

    async def settle(self) -> None: ...


async def feed(
    items: Iterable[Item],
    target: Target,
    report: Report,
    *,
    selection: Selection,
    pacer: Pacer,
    read: ReadProgress,
) -> None:
    """Read every item, filter, pace, and hand batches to ``target`` in order."""
    limit = min(target.batch_size, pacer.batch_limit or target.batch_size)
    batch: list[Record] = []
    for item in items:
        report.counts["lines"] += 1
        if isinstance(item, InvalidInput):
            # Every record before a damaged line is used before it is reported.
            await _hand_over(target, batch)
            await target.settle()
            report.invalid(item)
        elif not selection.admits(item.event):
            report.counts["filtered"] += 1
        else:
            await pacer.wait()
            batch.append(item)
            if len(batch) >= limit:
                await _hand_over(target, batch)
        report.progress.update(report.counts["lines"], read.bytes_read)
        if report.stopped is not None:
            # The reason is in the summary; what is in flight still settles.
            batch.clear()
            break
    await _hand_over(target, batch)
    await target.settle()


async def _hand_over(target: Target, batch: list[Record]) -> None:
    if batch:
        await target.take(list(batch))
        batch.clear()
