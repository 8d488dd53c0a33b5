"""Disciplined retries: named transient failures only, full jitter, capped by attempts and time.

Built here rather than taken from stamina or tenacity because the decision needs things those
libraries keep outside the retry loop: a server's ``Retry-After`` must replace the computed backoff,
and the caller wants to hear about every retry (progress log, 429 slow-down). It is forty lines.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from ..errors import ApiError, RateLimited, ServerError, TransportError

T = TypeVar("T")
_RNG = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a call that is safe to repeat."""

    attempts: int = 8
    max_seconds: float = 300.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    # Tests set this to 0 so retries do not sleep; Retry-After is scaled the same way.
    sleep_scale: float = 1.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)]."""
        return (rng or _RNG).uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def is_transient(error: BaseException) -> bool:
    """Failures worth repeating a safe call for: connection trouble, timeouts, 429, 5xx."""
    return isinstance(error, TransportError | RateLimited | ServerError)


OnRetry = Callable[[ApiError, float, int], None]


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retryable: Callable[[BaseException], bool] = is_transient,
    on_retry: OnRetry | None = None,
) -> T:
    """Run ``call`` until it succeeds, a non-retryable error comes, or attempts/time run out."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return await call()
        except ApiError as error:
            attempt += 1
            if not retryable(error) or attempt >= policy.attempts:
                raise
            delay = policy.backoff(attempt)
            if error.retry_after is not None:
                delay = min(max(error.retry_after, 0.0), policy.max_delay * 4)
            if time.monotonic() - started + delay > policy.max_seconds:
                raise
            if on_retry is not None:
                on_retry(error, delay, attempt)
            await anyio.sleep(delay * policy.sleep_scale)
