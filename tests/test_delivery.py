"""The retry policy, the token bucket and the circuit breaker, one rule at a time."""

from __future__ import annotations

from typing import Any

import pytest

from destination import delivery
from destination.courier import SendResult
from destination.delivery import CircuitBreaker, RetryPolicy, TokenBucket
from destination.store import AttemptReport, OutboxItem

POLICY = RetryPolicy(base=1.0, cap=60.0, give_up_after=3600.0, repeat_limit=3)


def item(**changes: Any) -> OutboxItem:
    values: dict[str, Any] = {
        "id": 1,
        "pair_id": 1,
        "idempotency_key": "dst1-x",
        "key_expires_at": "2030-01-01T00:00:00Z",
        "path": "/send",
        "body": b"{}",
        "attempts": 1,
        "created_at": 1000.0,
        "lease_token": "t",
    }
    values.update(changes)
    return OutboxItem(**values)


def result(verdict: Any, status: int | None, error: str = "") -> SendResult:
    return SendResult(verdict, AttemptReport(status=status, error=error))


def test_delivered_is_final() -> None:
    """A 2xx is recorded delivered."""
    outcome = POLICY.decide(item(), result("delivered", 202), now=1001.0)

    assert outcome.kind == "delivered"


def test_permanent_is_a_dead_letter_at_once() -> None:
    """Another 4xx is a dead letter on the first attempt, with a reason."""
    outcome = POLICY.decide(item(), result("permanent", 400, "bad"), now=1001.0)

    assert (outcome.kind, outcome.reason) == (
        "dead_letter",
        "The API refused the request with 400.",
    )


def test_transient_is_retried_within_the_cap() -> None:
    """A transient failure is due again after a jittered delay below the cap."""
    outcome = POLICY.decide(item(attempts=30), result("transient", 503), now=1001.0)

    assert outcome.kind == "retry"
    assert outcome.next_attempt_at is not None
    assert 1001.0 <= outcome.next_attempt_at <= 1001.0 + POLICY.cap


def test_retry_after_is_clamped_to_the_cap() -> None:
    """An absurd Retry-After never delays past the cap."""
    answer = SendResult("transient", AttemptReport(status=429), retry_after=10**9)

    outcome = POLICY.decide(item(), answer, now=1001.0)

    assert outcome.next_attempt_at == 1001.0 + POLICY.cap


def test_give_up_age_ends_transient_retries() -> None:
    """Past the give-up age a transient failure becomes a dead letter."""
    outcome = POLICY.decide(item(), result("transient", 503), now=1000.0 + 3600.0)

    assert outcome.kind == "dead_letter"
    assert outcome.reason is not None and outcome.reason.startswith("Gave up")


def test_same_repeatable_answer_counts_up_to_the_limit() -> None:
    """The same 500 three times is a dead letter; a different one restarts the count."""
    first = POLICY.decide(item(), result("repeatable", 500, "boom"), now=1001.0)
    second = POLICY.decide(
        item(last_error_hash=first.error_hash, same_error_count=1),
        result("repeatable", 500, "boom"),
        now=1002.0,
    )
    other = POLICY.decide(
        item(last_error_hash=second.error_hash, same_error_count=2),
        result("repeatable", 500, "different"),
        now=1003.0,
    )
    third = POLICY.decide(
        item(last_error_hash=second.error_hash, same_error_count=2),
        result("repeatable", 500, "boom"),
        now=1003.0,
    )

    assert (first.kind, first.same_error_count) == ("retry", 1)
    assert (second.kind, second.same_error_count) == ("retry", 2)
    assert (other.kind, other.same_error_count) == ("retry", 1)
    assert third.kind == "dead_letter"
    assert third.reason is not None and "same 500 answer 3 times" in third.reason


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(delivery.time, "monotonic", fake)
    return fake


def test_breaker_opens_after_a_run_of_transient_failures(clock: FakeClock) -> None:
    """Three transient failures in a row open it; nothing starts while open."""
    breaker = CircuitBreaker(threshold=3, cooldown=10.0)

    for _ in range(3):
        breaker.record("transient")

    assert breaker.is_open
    assert breaker.allowed() == 0


def test_breaker_probes_once_after_the_cooldown(clock: FakeClock) -> None:
    """After the cooldown one probe may start; success closes, failure reopens."""
    breaker = CircuitBreaker(threshold=1, cooldown=10.0)
    breaker.record("transient")
    clock.now += 10.0

    allowed = breaker.allowed()
    breaker.started_probe()
    during_probe = breaker.allowed()
    breaker.record("transient")
    reopened = breaker.allowed()
    clock.now += 10.0
    breaker.started_probe()
    breaker.record("delivered")

    assert (allowed, during_probe, reopened) == (1, 0, 0)
    assert not breaker.is_open and breaker.allowed() is None


def test_breaker_ignores_definite_answers(clock: FakeClock) -> None:
    """Only transient failures count: a 4xx is the API answering."""
    breaker = CircuitBreaker(threshold=2, cooldown=10.0)

    breaker.record("transient")
    breaker.record("permanent")
    breaker.record("transient")

    assert not breaker.is_open


async def test_token_bucket_allows_a_burst_then_waits(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At rate 5 five tokens come at once; the sixth waits for 1/5 s of clock."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(delivery.asyncio, "sleep", sleep)
    bucket = TokenBucket(rate=5.0)

    for _ in range(6):
        await bucket.acquire()

    assert waits == [pytest.approx(0.2)]
