"""``destination check``: load every mapping and schema, run the examples.

Each problem is printed with its file, line, mapping and field, every one in
one run. Then each mapping's ``examples`` run like unit tests, through the
same path as ``preview`` and the service (``plan_events``), against that
mapping alone; a failing example shows a diff of the expected and actual
request. The exit status is non-zero on any problem or failed example.
"""

from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from destination.body import parse_body
from destination.errors import EXIT_FAILURE, EXIT_OK, MappingProblem, RequestError
from destination.event_path import MISSING
from destination.mapping import Example, Mapping, MappingSet, inspect_mappings
from destination.preview import EventPreview, preview_events, register_preview
from destination.settings import load_settings
from destination.validation import EventValidator, create_validator

# register_preview is here too, so the command line imports both from one place.
__all__ = ["check_directory", "register_check", "register_preview", "run_example"]


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """One example run: passed or not, and the lines that say why."""

    mapping: Mapping
    example: Example
    passed: bool
    details: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping.name,
            "example": self.example.name,
            "file": self.example.file,
            "line": self.example.line,
            "passed": self.passed,
            "details": list(self.details),
        }


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Everything one check found, for text or JSON output."""

    directory: Path
    mappings: MappingSet
    problems: tuple[MappingProblem, ...]
    results: tuple[ExampleResult, ...]

    @property
    def ok(self) -> bool:
        return not self.problems and all(result.passed for result in self.results)


def check_directory(
    directory: Path, validator: EventValidator, source_id: str
) -> CheckReport:
    """Check every file under ``directory`` and run the valid mappings' examples."""
    problems: list[MappingProblem] = []
    if not directory.is_dir():
        message = (
            "is not a directory of mapping files; give the directory as PATH "
            "or set DESTINATION_MAPPINGS"
        )
        problems.append(MappingProblem(str(directory), None, None, None, message))
    mappings, found = inspect_mappings(directory)
    problems += found
    results = tuple(
        run_example(mapping, example, validator, source_id)
        for mapping in mappings.mappings
        for example in mapping.examples
    )
    return CheckReport(directory, mappings, tuple(problems), results)


def run_example(
    mapping: Mapping, example: Example, validator: EventValidator, source_id: str
) -> ExampleResult:
    """Run one example against its mapping alone and compare the outcome."""
    try:
        event = _example_event(example)
    except ValueError as error:
        return ExampleResult(mapping, example, False, (str(error),))
    (preview,) = preview_events([event], validator, MappingSet((mapping,)), source_id)
    outcome, path, body = _actual(preview)
    if outcome != example.outcome:
        reasons = (f"expected {example.outcome}, got {outcome}", *_why(preview))
        return ExampleResult(mapping, example, False, reasons)
    if outcome != "sent":
        return ExampleResult(mapping, example, True)
    details: list[str] = []
    if example.path is not None and path != example.path:
        details.append(f"expected path {example.path}, got {path}")
    if body != example.body:
        details.append("the body differs:")
        details += _diff(example.body, body)
    return ExampleResult(mapping, example, not details, tuple(details))


def _example_event(example: Example) -> Any:
    if not isinstance(example.event, str):
        return example.event
    try:
        events = parse_body(Path(example.event).read_bytes()).events
    except OSError as error:
        raise ValueError(f"cannot read {example.event}: {error.strerror}") from None
    except RequestError as error:
        raise ValueError(f"{example.event}: {error.reason}") from None
    if len(events) != 1:
        raise ValueError(f"{example.event} holds {len(events)} events; give one")
    return events[0]


def _actual(preview: EventPreview) -> tuple[str, str | None, Any]:
    if preview.outcome == "rejected":
        return "rejected", None, MISSING
    if not preview.requests:
        return "not_matched", None, MISSING
    (request,) = preview.requests
    if request.body is None:
        return "no_recipient", request.path, MISSING
    return "sent", request.path, json.loads(request.body)


def _why(preview: EventPreview) -> list[str]:
    reasons = list(preview.reasons)
    reasons += [r.reason for r in preview.requests if r.reason is not None]
    return reasons


def _diff(expected: Any, actual: Any) -> list[str]:
    def lines(value: Any) -> list[str]:
        if value is MISSING:
            return ["(nothing)"]
        return json.dumps(value, indent=2, ensure_ascii=False).splitlines()

    return list(
        difflib.unified_diff(
            lines(expected), lines(actual), "expected", "actual", lineterm=""
        )
    )


def format_report(report: CheckReport) -> str:
    """The text check prints: problems, then examples, then a summary."""
    lines = [str(problem) for problem in report.problems]
    for result in report.results:
        verdict = "ok  " if result.passed else "FAIL"
        where = f"{result.example.file}:{result.example.line}"
        lines.append(
            f"{verdict} {where}, mapping {result.mapping.name!r}, "
            f"example {result.example.name!r}"
        )
        lines += [f"       {detail}" for detail in result.details]
    failed = sum(not result.passed for result in report.results)
    files = len({mapping.file for mapping in report.mappings.mappings})
    lines.append(
        f"{_count(len(report.problems), 'problem')}; "
        f"{_count(len(report.mappings.mappings), 'valid mapping')} in "
        f"{_count(files, 'file')}; {_count(len(report.results), 'example')} run, "
        f"{failed} failed."
    )
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def report_json(report: CheckReport) -> dict[str, Any]:
    return {
        "directory": str(report.directory),
        "ok": report.ok,
        "problems": [
            {
                "file": problem.file,
                "line": problem.line,
                "mapping": problem.mapping,
                "field": problem.field,
                "message": problem.message,
            }
            for problem in report.problems
        ],
        "examples": [result.as_json() for result in report.results],
    }


def register_check(commands: Any) -> None:
    parser = commands.add_parser(
        "check", help="check mapping files and run the examples they hold"
    )
    parser.set_defaults(handler=run_check)
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="mapping directory (default: DESTINATION_MAPPINGS, else ./mappings)",
    )
    parser.add_argument("--source-id", help="source id (DESTINATION_SOURCE_ID)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run_check(args: argparse.Namespace) -> int:
    settings = load_settings(
        role="tool", mappings_dir=args.path, source_id=args.source_id
    )
    report = check_directory(
        settings.mappings_dir, create_validator(), settings.source_id
    )
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        print(format_report(report))
    return EXIT_OK if report.ok else EXIT_FAILURE
