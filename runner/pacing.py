"""When to submit and when to poll: keeping the account's paid slots full with few requests.

The runner is not told how many jobs the account runs at once. It learns it from the API itself:

* **A small queue at RunComfy keeps slots full.** The API queues what it cannot run yet and starts
  the next job the instant a slot frees, whatever our poll latency. So the runner keeps a small,
  bounded number of its jobs waiting ``in_queue`` (``target_queue``), enough to cover the time it
  takes us to notice and refill.
* **The tail tells the queue's length.** Every ``probe_interval`` the most recently submitted live
  job is polled; its ``queue_position`` is the length of the queue (FIFO, one account). Between
  probes the estimate drains at the measured start rate. Before any queue is seen the runner ramps
  up like TCP slow start: each probe that finds the tail already running doubles the window.
* **Finished jobs teach how long the next ones take.** A job is polled (on ``/result``, the one
  endpoint that answers both live status and results) when it should be done: its estimated start
  plus a high quantile of observed durations. So most jobs cost one submit, one or two polls and
  one download.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(eq=False)
class Track:
    """The pacing view of one live remote request."""

    job_id: str
    submitted_at: float
    queue_ahead: float = 0.0  # estimated jobs ahead of it in RunComfy's queue when submitted
    est_start: float = 0.0
    running_seen: bool = False
    polls: int = 0
    live_polls: int = 0  # consecutive polls that found it still running


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Pacer:
    """Estimates of the account's queue and job durations, and the decisions drawn from them."""

    max_in_flight: int | None = None
    min_queue: int = 8
    first_poll: float = 0.5  # before any duration is known
    poll_min: float = 0.05
    poll_max: float = 30.0
    in_flight: int = 0
    # queue model
    queue_len: float = 0.0  # at the last probe, plus submits since
    queue_seen_at: float = 0.0
    saturated: bool = False
    confirmed_running: int = 0
    unconfirmed: int = 0
    start_rate: float | None = None  # jobs started per second at RunComfy (measured while queued)
    _last_probe: tuple[float, float, int] | None = None  # (time, queue length, submits so far)
    submits: int = 0
    tail: Track | None = None
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    _sorted_cache: list[float] | None = None

    # -- estimates ----------------------------------------------------------------------------
    @property
    def mean_duration(self) -> float | None:
        return sum(self.durations) / len(self.durations) if self.durations else None

    def duration_quantile(self, q: float) -> float | None:
        if not self.durations:
            return None
        if self._sorted_cache is None:
            self._sorted_cache = sorted(self.durations)
        values = self._sorted_cache
        return values[min(len(values) - 1, int(q * len(values)))]

    @property
    def probe_interval(self) -> float:
        mean = self.mean_duration
        return min(5.0, max(self.poll_min, (mean / 10) if mean else 0.1))

    @property
    def target_queue(self) -> int:
        """Jobs to keep waiting at RunComfy: enough to cover two probe intervals of starts."""
        if not self.start_rate:
            return self.min_queue
        return max(self.min_queue, math.ceil(self.start_rate * (2 * self.probe_interval + 0.2)))

    def queue_estimate(self, now: float) -> float:
        drained = (self.start_rate or 0.0) * max(0.0, now - self.queue_seen_at) if self.saturated else 0.0
        return max(0.0, self.queue_len - drained)

    # -- decisions ----------------------------------------------------------------------------
    def may_submit(self, now: float) -> bool:
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            return False
        if not self.saturated:
            # Slow start: as many unconfirmed submits as jobs already seen running (at least min_queue).
            return self.unconfirmed < max(self.min_queue, self.confirmed_running)
        return self.queue_estimate(now) < self.target_queue

    def on_submitted(self, track: Track, now: float) -> float:
        """Account for a new request; the time of its first poll."""
        self.in_flight += 1
        self.submits += 1
        ahead = self.queue_estimate(now) if self.saturated else 0.0
        track.queue_ahead = ahead
        track.est_start = now + (ahead / self.start_rate if self.start_rate and self.saturated else 0.0)
        if not self.saturated:
            self.unconfirmed += 1
        self.queue_len = ahead + 1 if self.saturated else self.queue_len + 1
        self.queue_seen_at = now if self.saturated else self.queue_seen_at
        self.tail = track
        return self.expected_done(track, now)

    def expected_done(self, track: Track, now: float) -> float:
        high = self.duration_quantile(0.9)
        if high is None:
            return now + self.first_poll * (1.5 ** min(track.polls, 8))
        return max(now + self.poll_min, track.est_start + high * 1.05)

    def next_probe(self, now: float) -> float:
        return now + self.probe_interval

    def on_probe(self, track: Track, status: str, position: int | None, now: float) -> None:
        """The tail's status: the length of RunComfy's queue right now."""
        if track is not self.tail:
            return
        if status == "in_queue":
            length = float(position if position is not None else 1)
            self.saturated = True
        else:
            length = 0.0
            if not self.saturated:
                self.confirmed_running += self.unconfirmed
                self.unconfirmed = 0
        if self._last_probe is not None and self.saturated:
            t0, length0, submits0 = self._last_probe
            elapsed = now - t0
            if elapsed > 0 and length0 > 0 and length > 0:
                started = length0 + (self.submits - submits0) - length
                rate = max(started, 0) / elapsed
                self.start_rate = rate if self.start_rate is None else 0.7 * self.start_rate + 0.3 * rate
        self._last_probe = (now, length, self.submits)
        self.queue_len = length
        self.queue_seen_at = now

    def on_polled(self, track: Track, status: str, position: int | None, now: float) -> float:
        """A live job's status; the time of its next poll."""
        track.polls += 1
        if status == "in_queue":
            rate = self.start_rate or 0.0
            ahead = float(position or 1)
            track.est_start = now + (ahead / rate if rate else 0.0)
            track.live_polls = 0
            wait = self.expected_done(track, now) - now
            return now + min(self.poll_max, max(self.poll_min, wait))
        if not track.running_seen:
            track.running_seen = True
            track.est_start = min(track.est_start, now) if track.est_start else now
        track.live_polls += 1
        mean = self.mean_duration
        if mean is None:
            return now + min(self.poll_max, self.first_poll * (1.5 ** min(track.polls, 8)))
        done = self.expected_done(track, now)
        if done > now + self.poll_min and track.live_polls == 1:
            return min(now + self.poll_max, done)
        return now + min(self.poll_max, max(self.poll_min, 0.2 * mean))

    def on_finished(self, track: Track, now: float, created_at: str | None = None,
                    finished_at: str | None = None) -> None:
        """A job left the account (done, failed, cancelled): learn its duration."""
        self.in_flight = max(0, self.in_flight - 1)
        if not self.saturated and not track.running_seen and self.unconfirmed > 0:
            self.unconfirmed -= 1
            self.confirmed_running += 1
        if self.tail is track:
            self.tail = None
        created, finished = _parse_time(created_at), _parse_time(finished_at)
        if created is not None and finished is not None and finished > created:
            sample = finished - created
            if track.queue_ahead and self.start_rate:
                sample -= track.queue_ahead / self.start_rate
        else:
            sample = now - track.est_start
        if sample > 0:
            self.durations.append(sample)
            self._sorted_cache = None

    def on_rate_limited(self) -> None:
        """A 429 on a submit: assume the queue is full for now."""
        self.saturated = True
        self.queue_len = max(self.queue_len, float(self.target_queue))
