"""Examples embedded in mappings: an input event and what the mapping must give.

```yaml
examples:
  - name: an order from user-1
    event: {type: track, event: Order Completed, ...}   # or a JSON file path
    expect: {body: {...}, path: /send}                  # or {outcome: no_recipient}
```

Their format is checked here when the file loads, so a broken example fails the
load like any other mistake; ``destination check`` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from destination.event_path import MISSING
from destination.mapping_file import Document, JsonPath, check_keys, json_kind
from destination.templates import Report

OUTCOMES = ("sent", "no_recipient", "not_matched", "rejected")

_EXAMPLE_KEYS = ("name", "event", "expect")
_EXPECT_KEYS = ("outcome", "path", "body")


@dataclass(frozen=True, slots=True)
class Example:
    """An input event and the request (or outcome) a mapping must give for it."""

    name: str
    event: Any  # the event itself, or the absolute path of a JSON file holding it
    outcome: str
    body: Any
    path: str | None
    file: str
    line: int


def read_examples(
    value: Any, path: JsonPath, document: Document, report: Report
) -> tuple[Example, ...]:
    """Read a mapping's ``examples`` list, reporting each problem."""
    if not isinstance(value, list):
        report(path, f"examples must be a list, not {json_kind(value)}")
        return ()
    reader = _Reader(document, report)
    examples = (
        reader.example((*path, index), index, item) for index, item in enumerate(value)
    )
    return tuple(example for example in examples if example is not None)


class _Reader:
    def __init__(self, document: Document, report: Report) -> None:
        self.document = document
        self.count = 0
        self._report = report

    def report(self, path: JsonPath, message: str) -> None:
        self.count += 1
        self._report(path, message)

    def example(self, path: JsonPath, index: int, value: Any) -> Example | None:
        if not isinstance(value, dict):
            hint = "write {event: ..., expect: {body: ...}}"
            self.report(path, f"an example must be an object; {hint}")
            return None
        before = self.count
        check_keys(path, value, _EXAMPLE_KEYS, self.report)
        name = value.get("name", f"example {index + 1}")
        if not isinstance(name, str):
            self.report((*path, "name"), "an example's name must be a string")
        event = value.get("event")
        if isinstance(event, str):
            event = str(Path(self.document.file).parent / event)
        elif not isinstance(event, dict):
            hint = "an event object, or the path of a JSON file next to this one"
            self.report(path, f"the example has no event; add {hint}")
        expect = self.expect((*path, "expect"), value.get("expect"))
        if self.count > before or expect is None:
            return None
        outcome, body, where = expect
        line = self.document.line(path)
        return Example(str(name), event, outcome, body, where, self.document.file, line)

    def expect(self, path: JsonPath, value: Any) -> tuple[str, Any, Any] | None:
        if not isinstance(value, dict):
            hint = "expect: {body: {...}} or expect: {outcome: no_recipient}"
            self.report(path, f"the example needs expect; {hint}")
            return None
        check_keys(path, value, _EXPECT_KEYS, self.report)
        outcome = value.get("outcome", "sent")
        if outcome not in OUTCOMES:
            message = f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}"
            self.report((*path, "outcome"), message)
            return None
        if (outcome == "sent") != ("body" in value):
            self.report(path, "give body for a sent request, or an outcome instead")
            return None
        where = value.get("path")
        if where is not None and not isinstance(where, str):
            self.report((*path, "path"), "path must be a string like /send")
        return outcome, value.get("body", MISSING), where
