"""The client of the Courier-style notification API, and how its answers count.

| answer                                     | verdict    | then                   |
|--------------------------------------------|------------|------------------------|
| any 2xx, whatever its body or content type | delivered  | done; response id kept |
| timeout, connection error, reset           | transient  | backoff, until give-up |
| 408, 429, 502, 503, 504                    | transient  | backoff or Retry-After |
| 409 ``concurrent_idempotent_requests``     | transient  | backoff: still running |
| any other 409                              | repeatable | dead letter after N    |
| 500, 501, 505-599                          | repeatable | dead letter after N    |
| any other 4xx                              | permanent  | dead letter now        |

A timeout is an ambiguous outcome: the request may have executed. Retrying it
with the same ``Idempotency-Key`` and the same bytes is what makes that safe.
Courier stores the first *executed* result for a key, errors included, and
replays it: a 500 for our key comes back on every retry until the key
expires, so the same 500 seen N times (``DESTINATION_REPEAT_LIMIT``) is a dead
letter, not something to retry for a day. aiohttp never retries a POST, so a
pooled connection the server had closed surfaces here as a transient error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import aiohttp

from destination.store import AttemptReport, OutboxItem

TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
MAX_ERROR_TEXT = 2000
IN_PROGRESS_CODE = "concurrent_idempotent_requests"

Verdict = Literal["delivered", "transient", "repeatable", "permanent"]


@dataclass(frozen=True, slots=True)
class SendResult:
    verdict: Verdict
    report: AttemptReport
    retry_after: float | None = None


def create_session(
    *, connect_timeout: float, total_timeout: float, concurrency: int
) -> aiohttp.ClientSession:
    """The one session an app sends through, with explicit timeouts and limits."""
    timeout = aiohttp.ClientTimeout(
        total=total_timeout, connect=connect_timeout, sock_read=total_timeout
    )
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    return aiohttp.ClientSession(timeout=timeout, connector=connector)


class CourierClient:
    """Sends one stored request; never raises for what the network does."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, auth_token: str
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._auth_token = auth_token

    async def send(self, item: OutboxItem) -> SendResult:
        headers = {
            "Authorization": f"Bearer {self._auth_token}",
            "Content-Type": "application/json",
            "Idempotency-Key": item.idempotency_key,
            "x-idempotency-expiration": item.key_expires_at,
        }
        try:
            async with self._session.post(
                self._base_url + item.path, data=item.body, headers=headers
            ) as response:
                text = await response.text(errors="replace")
                return classify_response(
                    response.status, text, response.headers.get("Retry-After")
                )
        except TimeoutError:
            return _transient("The notification API did not answer in time.")
        except (aiohttp.ClientError, OSError) as error:
            return _transient(f"The connection failed: {type(error).__name__}.")


def classify_response(status: int, text: str, retry_after: str | None) -> SendResult:
    """Turn an HTTP answer into a verdict (see the module's table)."""
    excerpt = text[:MAX_ERROR_TEXT]
    if 200 <= status < 300:
        report = AttemptReport(status=status, response_id=_response_id(text))
        return SendResult("delivered", report)
    report = AttemptReport(status=status, error=excerpt)
    if status in TRANSIENT_STATUSES or (status == 409 and IN_PROGRESS_CODE in text):
        wait = parse_retry_after(retry_after) if status in (429, 503) else None
        return SendResult("transient", report, retry_after=wait)
    if status == 409 or status >= 500:
        return SendResult("repeatable", report)
    return SendResult("permanent", report)


def _transient(error: str) -> SendResult:
    return SendResult("transient", AttemptReport(status=None, error=error))


def _response_id(text: str) -> str | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    for name in ("requestId", "messageId", "id"):
        value = document.get(name)
        if isinstance(value, str) and value:
            return value[:200]
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def format_expiration(timestamp: float) -> str:
    """The ``x-idempotency-expiration`` value: ISO 8601 in UTC, to the second."""
    moment = datetime.fromtimestamp(timestamp, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")
