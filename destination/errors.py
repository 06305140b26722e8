"""Errors raised by destination.

Every error is a ``DestinationError``; each message is one sentence naming the
rule, the bad value and, when known, the fix::

    DestinationError
    ├── SettingsError          a setting or flag has a bad value (start-up stops)
    ├── MappingError           a mapping file cannot be loaded
    ├── RenderError            a mapping cannot render for an event (a bound hit)
    ├── EventRejectedError     a mapped event breaks the tracking plan or a bound
    │                          (these two live in directives.py and mapping.py)
    ├── SchemaSetupError       the JSON Schemas or their format checker are unusable
    ├── OutputExistsError      an export's output file exists (it never overwrites)
    ├── StoreError             the store cannot be opened or written
    │   ├── StoreUnavailableError  busy, locked or full: the caller may retry later
    │   └── StoreModeError         a dry-run store used live, or the other way round
    └── RequestError           an HTTP request to /webhook is refused as a whole
        (carries the HTTP status; data errors are always 4xx, never 5xx)

Per-event validation problems are not exceptions: they are ``EventError``
values collected for the response, so one bad event never hides the others.
"""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes of the ``destination`` command, in one place.
EXIT_OK = 0  # success: every input was used
EXIT_FAILURE = 1  # some data or the environment was bad: mappings, store, lines
EXIT_USAGE = 2  # the command line or a setting was wrong


class DestinationError(Exception):
    """Base class of every error destination raises on purpose."""


class SettingsError(DestinationError, ValueError):
    """A setting from the environment or a flag has a value we cannot use."""


@dataclass(frozen=True, slots=True)
class MappingProblem:
    """One problem found in a mapping file, located as precisely as we can."""

    file: str
    line: int | None
    mapping: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.mapping is not None:
            parts.append(f"mapping {self.mapping!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        return f"{', '.join(parts)}: {self.message}"


class MappingError(DestinationError, ValueError):
    """One or more mapping files are invalid; ``problems`` lists each of them."""

    def __init__(self, problems: list[MappingProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


class SchemaSetupError(DestinationError, RuntimeError):
    """The event schemas cannot be loaded or their formats are not checked."""


class OutputExistsError(DestinationError, FileExistsError):
    """An export was asked to write a file that exists; exports never overwrite."""


class StoreError(DestinationError):
    """The store failed in a way the caller cannot fix by retrying."""


class StoreUnavailableError(StoreError):
    """The store is busy, locked or full; the request may be retried later."""


class StoreModeError(StoreError, ValueError):
    """A store written by live delivery was opened for a dry run, or vice versa."""


class RequestError(DestinationError):
    """The whole HTTP request is refused with ``status`` and a clear reason."""

    def __init__(
        self, status: int, reason: str, *, code: str, retry_after: int | None = None
    ) -> None:
        self.status = status
        self.reason = reason
        self.code = code
        self.retry_after = retry_after
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class EventError:
    """One reason an event was rejected: a JSON path into the event and a sentence."""

    path: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}
