"""How many API calls a run makes at once, steered by RunComfy's 429s (AIMD, as TCP does).

RunComfy publishes no rate limit, so the runner learns it: a 429 halves the number of calls in flight
(at most once a second, since one burst of calls answers many 429s together), and each run of as many
successes as the current limit gives one back, up to the configured ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio

from .events import Emit, EventKind

# 429s closer together than this are one signal (the calls of one burst), not several.
_QUIET = 1.0


class Throttle:
    """The limiter every API call takes a slot of, and the rules that move its size."""

    def __init__(self, ceiling: int, *, clock: Callable[[], float], emit: Emit) -> None:
        self.ceiling = ceiling
        self.limiter = anyio.CapacityLimiter(ceiling)
        self._clock = clock
        self._emit = emit
        self._last_429 = -math.inf
        self._ok_streak = 0

    @property
    def limit(self) -> int:
        """API calls allowed at once, now."""
        return int(self.limiter.total_tokens)

    def rate_limited(self) -> None:
        """RunComfy answered 429: halve the limit (once per burst; never below one)."""
        now = self._clock()
        if now - self._last_429 < _QUIET:
            return
        self._last_429 = now
        self._ok_streak = 0
        self._set(max(1, self.limit // 2), "rate limited (429)")

    def succeeded(self) -> None:
        """A call went through: after as many in a row as the limit, allow one more."""
        self._ok_streak += 1
        if self.limit < self.ceiling and self._ok_streak >= self.limit:
            self._ok_streak = 0
            self._set(self.limit + 1, "recovering")

    def _set(self, limit: int, reason: str) -> None:
        self.limiter.total_tokens = limit
        self._emit(EventKind.CONCURRENCY, http=limit, reason=reason)
