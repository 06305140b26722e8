"""What a replay tells people: each unused line as it happens, then a summary.

For a person, problems are one line each on standard error, above the progress
bar, and the summary is a small table on standard output. With ``--json``,
standard output carries JSON lines instead, one object per problem (and per
request in a dry run), each with a ``kind``, and a last ``summary`` object.
A comparison (``--compare``) prints its own lines, per mapping, instead of
the requests (``replay_compare``).

The exit code follows from the report: 0 only when every line was used
(enqueued, duplicate, unmapped, ignored or filtered) and every send finished
delivered; 1 otherwise.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from destination.errors import EXIT_FAILURE, EXIT_OK
from destination.progress import Progress
from destination.replay_framing import InvalidInput, Location
from destination.store import Conflict, PlannedSend

Mode = Literal["in-process", "dry-run", "compare", "to"]

_READING = (
    "lines",
    "invalid_lines",
    "filtered",
    "rejected",
    "expired",
    "unmapped",
    "ignored",
)
SUMMARY_FIELDS: Mapping[Mode, tuple[str, ...]] = {
    "in-process": (
        *_READING,
        "accepted",
        "duplicates",
        "conflicts",
        "enqueued",
        "retried",
        "dead_letters_kept",
        "no_recipient",
        "sent",
        "failed",
        "pending",
    ),
    "dry-run": (*_READING, "accepted", "duplicates", "requests", "no_recipient"),
    # The dry run's counts, then (messageId, mapping) pairs of every mapping.
    "compare": (
        *_READING,
        "accepted",
        "duplicates",
        "requests",
        "no_recipient",
        "unchanged",
        "changed",
        "appeared",
        "disappeared",
    ),
    "to": (
        *_READING,
        "accepted",
        "duplicates",
        "conflicts",
        "no_recipient",
        "failed",
    ),
}
# Counts that mean some line was not used, whatever reported it.
_NOT_USED = ("invalid_lines", "rejected", "expired", "conflicts", "failed", "pending")


@dataclass(slots=True)
class Report:
    """The counts of one replay and where its problems are written."""

    mode: Mode
    out: TextIO
    progress: Progress
    as_json: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    problems: int = 0
    interrupted: bool = False
    stopped: str | None = None
    started: float = field(default_factory=time.monotonic)

    def invalid(self, item: InvalidInput) -> None:
        self.counts["invalid_lines"] += 1
        self._problem(
            {"kind": "invalid_line", "message": item.message},
            item.location,
            item.message,
        )

    def rejected(
        self,
        location: Location,
        message_id: str | None,
        errors: Iterable[Mapping[str, str]],
    ) -> None:
        """An event that fails validation; ``errors`` hold a path and a message."""
        self.counts["rejected"] += 1
        errors = [dict(error) for error in errors]
        reasons = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        self._problem(
            {"kind": "rejected", "messageId": message_id, "errors": errors},
            location,
            f"event {_name(message_id)} is rejected: {reasons}",
        )

    def expired(self, location: Location, message_id: str | None) -> None:
        """An event older than the record retention: it may have been sent already."""
        self.counts["expired"] += 1
        self._problem(
            {"kind": "expired", "messageId": message_id},
            location,
            f"event {_name(message_id)} is older than DESTINATION_RECORD_RETENTION, "
            "so its records may be purged and it may have been sent already; it is "
            "not sent (DESTINATION_ACCEPT_EXPIRED=true sends it anyway).",
        )

    def conflict(self, location: Location, message_id: str, conflict: Conflict) -> None:
        self._problem(
            {
                "kind": "conflict",
                "messageId": message_id,
                "mapping": conflict.mapping,
                "stored_hash": conflict.stored_hash,
                "incoming_hash": conflict.incoming_hash,
            },
            location,
            f"event {_name(message_id)} was already handled for mapping "
            f"{conflict.mapping!r} with a different payload (stored "
            f"{conflict.stored_hash}, this line {conflict.incoming_hash}); it is "
            "not sent again.",
        )

    def failed(self, location: Location, message_id: str | None, reason: str) -> None:
        """An event the target never took, such as a batch a service refused."""
        self.counts["failed"] += 1
        self._problem(
            {"kind": "failed", "messageId": message_id, "message": reason},
            location,
            f"event {_name(message_id)} was not replayed: {reason}",
        )

    def request(self, location: Location, message_id: str, send: PlannedSend) -> None:
        """In a dry run with ``--json``, one request that would be sent."""
        if not self.as_json or send.body is None or self.mode == "compare":
            return
        head = json.dumps(
            {
                "kind": "request",
                "location": location.as_json(),
                "messageId": message_id,
                "mapping": send.mapping,
                "idempotency_key": send.idempotency_key,
                "path": send.path,
            },
            ensure_ascii=False,
        )
        # The body goes in as the exact bytes that would be sent.
        self.out.write(f'{head[:-1]}, "body": {send.body.decode("utf-8")}}}\n')

    def _problem(self, fields: dict[str, Any], location: Location, text: str) -> None:
        self.problems += 1
        if self.as_json:
            line = {**fields, "location": location.as_json()}
            self.out.write(json.dumps(line, ensure_ascii=False) + "\n")
        else:
            self.progress.note(f"replay: {location}: {text}")

    def succeeded(self) -> bool:
        """True when every line was used and nothing is left to do."""
        return (
            not self.problems
            and not any(self.counts[name] for name in _NOT_USED)
            and not self.interrupted
            and self.stopped is None
        )

    def exit_code(self) -> int:
        return EXIT_OK if self.succeeded() else EXIT_FAILURE

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"kind": "summary", "mode": self.mode}
        summary.update({name: self.counts[name] for name in SUMMARY_FIELDS[self.mode]})
        summary["interrupted"] = self.interrupted
        summary["stopped"] = self.stopped
        summary["seconds"] = round(time.monotonic() - self.started, 3)
        summary["exit_code"] = self.exit_code()
        return summary

    def write_summary(self) -> None:
        summary = self.summary()
        if self.as_json:
            self.out.write(json.dumps(summary, ensure_ascii=False) + "\n")
        else:
            self.out.write(_summary_table(summary))
        self.out.flush()


def _summary_table(summary: Mapping[str, Any]) -> str:
    mode = summary["mode"]
    title = f"replay ({mode}) finished in {summary['seconds']:.1f} s"
    if summary["interrupted"]:
        title = f"replay ({mode}) interrupted after {summary['seconds']:.1f} s"
    lines = [title]
    if summary["stopped"] is not None:
        lines.append(f"  stopped: {summary['stopped']}")
    names = SUMMARY_FIELDS[mode]
    width = max(len(name) for name in names)
    for name in names:
        label = name.replace("_", " ")
        lines.append(f"  {label:<{width}}  {summary[name]:>10,}")
    return "\n".join(lines) + "\n"


def _name(message_id: str | None) -> str:
    return "without a messageId" if message_id is None else repr(message_id)
