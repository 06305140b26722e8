"""Progress of a long command: a bar on a terminal, log lines anywhere else.

A person at a terminal sees one line redrawn in place: events, rate, and the
time left when the size of the input is known. In a pipe, a CI log or a
service manager, a redrawn line is noise, so the same figures go out as one
structured log line every ``interval`` seconds instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from destination.log import get_logger

log = get_logger(__name__)

BAR_WIDTH = 24
REDRAW_SECONDS = 0.1
_CLEAR_LINE = "\r\x1b[K"


class Progress:
    """Counts events against bytes read; ``note`` prints a line above the bar."""

    def __init__(
        self,
        stream: TextIO,
        *,
        total_bytes: int | None,
        interactive: bool,
        log_event: str,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total = total_bytes or None
        self._interactive = interactive
        self._log_event = log_event
        self._interval = REDRAW_SECONDS if interactive else interval
        self._clock = clock
        self._started = clock()
        self._shown_at = self._started
        self._drawn = False
        self.events = 0
        self.bytes_read = 0
        self.pending: int | None = None

    def update(self, events: int, bytes_read: int) -> None:
        """Record the latest figures; show them when the last showing is old."""
        self.events, self.bytes_read = events, bytes_read
        self._show_if_due()

    def waiting(self, pending: int | None) -> None:
        """Reading waits for ``pending`` sends to finish; None: it goes on."""
        self.pending = pending
        if pending is not None:
            self._show_if_due()

    def note(self, line: str) -> None:
        """Print ``line`` on its own, keeping the bar below it."""
        if self._drawn:
            self._stream.write(_CLEAR_LINE)
        self._stream.write(line + "\n")
        if self._drawn:
            self._stream.write(self._bar())
        self._stream.flush()

    def close(self) -> None:
        if self._drawn:
            self._stream.write(_CLEAR_LINE)
            self._stream.flush()
            self._drawn = False

    def _show_if_due(self) -> None:
        now = self._clock()
        if now - self._shown_at < self._interval:
            return
        self._shown_at = now
        if self._interactive:
            self._stream.write(_CLEAR_LINE + self._bar())
            self._stream.flush()
            self._drawn = True
        else:
            log.info(self._log_event, **self.figures())

    def figures(self) -> dict[str, Any]:
        """The numbers a log line or a bar shows, rounded for people."""
        elapsed = max(self._clock() - self._started, 1e-9)
        figures: dict[str, Any] = {
            "events": self.events,
            "rate": round(self.events / elapsed, 1),
            "bytes_read": self.bytes_read,
        }
        if self._total is not None:
            figures["total_bytes"] = self._total
            figures["percent"] = round(100 * self._fraction(), 1)
            eta = self._eta(elapsed)
            if eta is not None:
                figures["eta_seconds"] = round(eta)
        if self.pending is not None:
            figures["pending"] = self.pending
        return figures

    def _fraction(self) -> float:
        if self._total is None:
            return 0.0
        return min(1.0, self.bytes_read / self._total)

    def _eta(self, elapsed: float) -> float | None:
        fraction = self._fraction()
        if fraction <= 0:
            return None
        return elapsed * (1 - fraction) / fraction

    def _bar(self) -> str:
        figures = self.figures()
        parts = []
        if self._total is not None:
            filled = round(BAR_WIDTH * self._fraction())
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            parts.append(f"[{bar}] {figures['percent']:5.1f}%")
        parts.append(f"{self.events:,} events")
        parts.append(f"{figures['rate']:,.0f}/s")
        if self.pending is not None:
            parts.append(f"waiting for {self.pending:,} sends")
        elif "eta_seconds" in figures:
            parts.append(f"ETA {_clock_time(figures['eta_seconds'])}")
        return "  ".join(parts)


def _clock_time(seconds: int) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
