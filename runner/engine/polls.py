"""When each request in flight is polled next: one heap ordered by due time.

A request is rescheduled far more often than it is polled (every answer moves its next poll), so a
new time is pushed as a new entry and the old one is left in the heap: it is *stale* (its time is no
longer the request's ``due``) and skipped when it comes up. That keeps scheduling at O(log n) with no
search, at 100,000 requests in flight.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable

from .flight import Live

JITTER = 0.05  # a poll due later is spread over up to 5% more of its wait
TOGETHER = 0.005  # polls due within this many seconds go out together: fewer wake-ups, same latency


class PollQueue:
    """The requests to poll, by when."""

    def __init__(self, clock: Callable[[], float], rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._heap: list[tuple[float, int, Live]] = []
        self._seq = itertools.count()  # ties go first come, first served (and Live is not ordered)

    def __len__(self) -> int:
        """Entries in the heap, stale ones included."""
        return len(self._heap)

    def schedule(self, live: Live, when: float) -> bool:
        """Poll ``live`` at ``when`` (instead of any time set before). True when it is now the first
        due, so a poller sleeping until the previous first should wake up."""
        # A little jitter keeps polls of jobs submitted together from arriving together.
        now = self._clock()
        if when > now:
            when = now + (when - now) * self._rng.uniform(1.0, 1.0 + JITTER)
        live.due = when
        heapq.heappush(self._heap, (when, next(self._seq), live))
        return self._heap[0][2] is live

    def next_due(self) -> float | None:
        """When the first entry is due (stale or not), or None when there is none."""
        return self._heap[0][0] if self._heap else None

    def take_due(self, now: float, current: Callable[[Live], bool]) -> list[Live]:
        """The requests due by ``now`` (or a moment after), each marked ``polling``. Stale entries are
        dropped: a request already being polled, rescheduled since, or no longer ``current`` (it
        finished, or a new attempt took its job's place)."""
        due: list[Live] = []
        while self._heap and self._heap[0][0] <= now + TOGETHER:
            when, _, live = heapq.heappop(self._heap)
            if live.polling or when != live.due or not current(live):
                continue
            live.polling = True
            due.append(live)
        return due
