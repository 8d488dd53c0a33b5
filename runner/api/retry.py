"""Disciplined retries: named transient failures only, full jitter, capped by attempts and time.

Built here rather than taken from stamina or tenacity because the decision needs things those
libraries keep outside the retry loop: a server's ``Retry-After`` must replace the computed backoff,
and the caller wants to hear about every retry (progress log, 429 slow-down). It is forty lines.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import anyio

from .. import defaults
from ..errors import ApiError, RateLimited, ServerError, TransportError

T = TypeVar("T")
_RNG = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a call that is safe to repeat."""

    attempts: int = defaults.RETRY_ATTEMPTS
    max_seconds: float = defaults.RETRY_MAX_SECONDS
    base_delay: float = defaults.RETRY_BASE_DELAY
    max_delay: float = defaults.RETRY_MAX_DELAY
    # Tests set this to 0 so retries do not sleep; Retry-After is scaled the same way.
    sleep_scale: float = 1.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)]."""
        return (rng or _RNG).uniform(0, min(self.max_delay, self.base_delay * 2**attempt))

    def for_submit(self) -> RetryPolicy:
        """This policy as a paid submit uses it: the same backoff and sleep switch, but never more
        than ``SUBMIT_RETRY_ATTEMPTS`` tries within ``SUBMIT_RETRY_MAX_SECONDS``."""
        # A submit is only retried when RunComfy surely did not take it (a 429; one that never
        # connected waits for the API instead), so a retry never pays twice; what a long retry costs
        # is elsewhere. One that gives up is not lost: the run puts its job back in line and slows its
        # submits down. But while it backs off it holds one of the run's few HTTP slots, which the
        # polls of running, billed jobs wait for. So it gives up sooner than a read (6 tries in 120 s
        # against 8 in 300 s), and --retries and --retry-max-time, which lower every call's patience,
        # lower a submit's too.
        return replace(
            self,
            attempts=min(self.attempts, defaults.SUBMIT_RETRY_ATTEMPTS),
            max_seconds=min(self.max_seconds, defaults.SUBMIT_RETRY_MAX_SECONDS),
        )


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
