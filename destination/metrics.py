"""In-process counters, served as Prometheus text at ``GET /metrics``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping


class Metrics:
    """Counts of what happened to events since the process started."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.requests: Counter[int] = Counter()

    def update(self, counts: Mapping[str, int], *, rejected: int) -> None:
        self.events.update(counts)
        self.events["rejected"] += rejected

    def count_response(self, status: int) -> None:
        self.requests[status] += 1

    def render(self, store_counts: Mapping[str, int]) -> str:
        lines = [
            "# HELP destination_events_total Events by what ingest did with them.",
            "# TYPE destination_events_total counter",
        ]
        for outcome, number in sorted(self.events.items()):
            lines.append(f'destination_events_total{{outcome="{outcome}"}} {number}')
        lines += [
            "# HELP destination_http_responses_total Webhook responses by status.",
            "# TYPE destination_http_responses_total counter",
        ]
        for status in sorted(self.requests):
            lines.append(
                f'destination_http_responses_total{{status="{status}"}} '
                f"{self.requests[status]}"
            )
        lines += [
            "# HELP destination_store Rows in the store by kind and status.",
            "# TYPE destination_store gauge",
        ]
        for name in sorted(store_counts):
            lines.append(f'destination_store{{kind="{name}"}} {store_counts[name]}')
        return "\n".join(lines) + "\n"
