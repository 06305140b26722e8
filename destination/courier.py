"""The client of the Courier-style notification API, and how its answers count.

| answer                                          | counts as  |
|-------------------------------------------------|------------|
| any 2xx, whatever its body                      | delivered  |
| timeout, connection error or reset              | retry      |
| 408, 429, 500-599                               | retry      |
| 409 ``concurrent_idempotent_requests``          | retry      |
| any other 4xx                                   | failed     |

A timeout is an ambiguous outcome: the request may have executed. Retrying it
with the same ``Idempotency-Key`` and the same bytes is what makes that safe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import aiohttp

from destination.store import AttemptReport

RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
MAX_ERROR_TEXT = 2000

Verdict = Literal["delivered", "retry", "failed"]


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
    """Sends one rendered request; never raises for what the network does."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, auth_token: str
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._auth_token = auth_token

    async def send(self, path: str, body: bytes, idempotency_key: str) -> SendResult:
        headers = {
            "Authorization": f"Bearer {self._auth_token}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        }
        try:
            async with self._session.post(
                self._base_url + path, data=body, headers=headers
            ) as response:
                text = await response.text(errors="replace")
                return classify_response(
                    response.status, text, response.headers.get("Retry-After")
                )
        except TimeoutError:
            return _retry(None, "The notification API did not answer in time.")
        except (aiohttp.ClientError, OSError) as error:
            return _retry(None, f"The connection failed: {type(error).__name__}.")


def classify_response(status: int, text: str, retry_after: str | None) -> SendResult:
    """Turn an HTTP answer into delivered, retry or failed (see the module table)."""
    excerpt = text[:MAX_ERROR_TEXT]
    if 200 <= status < 300:
        report = AttemptReport(status=status, response_id=_response_id(text))
        return SendResult("delivered", report)
    if status in RETRYABLE_STATUSES or _in_progress(status, text):
        return SendResult(
            "retry",
            AttemptReport(status=status, error=excerpt),
            retry_after=parse_retry_after(retry_after)
            if status in (429, 503)
            else None,
        )
    return SendResult("failed", AttemptReport(status=status, error=excerpt))


def _retry(status: int | None, error: str) -> SendResult:
    return SendResult("retry", AttemptReport(status=status, error=error))


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


def _in_progress(status: int, text: str) -> bool:
    # Courier answers 409 while another request with the same key is still
    # executing; that one is not our failure, so wait and ask again.
    return status == 409 and "concurrent_idempotent_requests" in text


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
