"""When to submit and when to poll: keeping the account's paid slots full with few requests.

The runner is not told how many jobs the account runs at once. It learns it from the API itself:

* **A small queue at RunComfy keeps slots full.** The API queues what it cannot run yet and starts
  the next job the instant a slot frees, whatever our poll latency. So the runner keeps a small,
  bounded number of its jobs waiting ``in_queue`` (``target_queue``), enough to cover the time it
  takes us to notice and refill.
* **A queued job's position counts the jobs that started.** One account, one FIFO: when our
  ``k``-th submit is at ``queue_position`` ``p``, exactly ``k - p`` of our jobs have left the queue
  (``started``), and every job submitted after it waits behind it. Every ``probe_interval`` the
  newest job RunComfy knows is polled for that; any other poll that finds a job queued or running
  tells the same. Between answers the count grows at the measured start rate (for a little while
  only: an estimate nothing confirms stops draining, so the runner never floods the queue blind).
  Before any queue is seen the runner ramps up like TCP slow start: each answer that finds the
  newest job already running doubles the window.
* **Finished jobs teach how long the next ones take.** When the ``k``-th job started is read off the
  record of ``started`` over time; when it finished, from the result's timestamps or our own polls.
  A job is polled (on ``/result``, which answers both live status and results) when it should be
  done: its estimated start plus a high quantile of the durations seen. So most jobs cost one
  submit, one poll and one download.
* **Lazy while the queue is full, eager at the end.** A late poll costs nothing while jobs wait at
  RunComfy: the freed slot is taken at once whether we notice or not. Once nothing is left to submit
  (``draining``) a finish noticed late delays the end of the run, so the jobs that may finish last
  are polled every ``eager_step`` from the run's earliest likely end. That costs a few polls for the
  last wave only.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

from ..api.client import COMPLETED, IN_QUEUE


@dataclass(eq=False, slots=True)
class Track:
    """The pacing view of one live remote request."""

    job_id: str
    submitted_at: float
    seq: int = 0  # its place among this run's submits (0: re-attached on resume, place unknown)
    est_start: float = 0.0  # when it started or will start (0 for a re-attached one: some time ago)
    sent: bool = False  # its POST has left
    running_at: float = 0.0  # when a poll first found it running
    last_live: float = 0.0  # when a poll last found it queued or running
    polls: int = 0
    live_polls: int = 0  # consecutive polls that found it running


@dataclass
class Pacer:
    """Estimates of the account's queue and job durations, and the decisions drawn from them."""

    max_in_flight: int | None = None
    min_queue: int = 8
    first_poll: float = 0.5  # before any duration is known
    poll_min: float = 0.05
    poll_max: float = 30.0
    in_flight: int = 0
    submits: int = 0
    sent: int = 0  # submits whose POST has left (the others wait for a connection)
    max_unsent: int = 16  # more waiting for a connection would only make the queue estimate stale
    draining: bool = False  # nothing left to submit: poll eagerly (set by the scheduler)
    saturated: bool = False  # a job of ours has been seen waiting in RunComfy's queue
    start_rate: float | None = None  # our jobs leaving RunComfy's queue per second, while it is not empty
    tail: Track | None = None  # the newest live request
    last_submitted: Track | None = None  # kept after it finishes: it starts last, so it ends the run
    recent: deque[Track] = field(default_factory=lambda: deque(maxlen=64))  # newest sent last: to probe
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    # ``started`` (how many of our submits have left the queue) as last observed, and when
    _started: float = 0.0
    _started_at: float = 0.0
    _started_exact: bool = False  # observed from a queued job (not only a lower bound)
    _log_times: list[float] = field(default_factory=list)  # exact observations of ``started``, in order
    _log_started: list[float] = field(default_factory=list)
    _sorted_cache: list[float] | None = None
    _mean_cache: float | None = None

    # -- estimates ----------------------------------------------------------------------------
    @property
    def mean_duration(self) -> float | None:
        if self._mean_cache is None and self.durations:
            self._mean_cache = sum(self.durations) / len(self.durations)
        return self._mean_cache

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
        return min(5.0, max(self.poll_min, (mean / 6) if mean else 0.1))

    @property
    def eager_step(self) -> float:
        mean = self.mean_duration
        return max(self.poll_min, mean / 60) if mean else self.poll_min

    @property
    def rate_memory(self) -> float:
        """Seconds over which the start rate is averaged: long enough to see many starts."""
        mean = self.mean_duration
        return max(1.0, mean / 2) if mean else 1.0

    @property
    def target_queue(self) -> int:
        """Jobs to keep waiting at RunComfy: enough to cover two probe intervals of starts."""
        if not self.start_rate:
            return self.min_queue
        return max(self.min_queue, math.ceil(self.start_rate * (2 * self.probe_interval + 0.2)))

    def started_estimate(self, now: float) -> float:
        """How many of our submits have left the queue by ``now``: the last answer, plus starts at the
        measured rate since, but only for as long as answers should have come (then it holds)."""
        horizon = 3 * self.probe_interval + 1.0
        grown = (self.start_rate or 0.0) * min(max(0.0, now - self._started_at), horizon)
        return min(float(self.submits), self._started + grown)

    def queue_estimate(self, now: float) -> float:
        if not self.saturated:
            return 0.0
        return max(0.0, self.submits - self.started_estimate(now))

    def start_of(self, seq: int) -> float | None:
        """When our ``seq``-th submit left the queue, from the record of ``started`` (None: unknown)."""
        times, counts = self._log_times, self._log_started
        i = bisect.bisect_left(counts, seq)
        if i == 0 or i == len(counts):
            return None
        t0, s0, t1, s1 = times[i - 1], counts[i - 1], times[i], counts[i]
        return t0 + (t1 - t0) * (seq - s0) / (s1 - s0) if s1 > s0 else t1

    # -- decisions ----------------------------------------------------------------------------
    def may_submit(self, now: float) -> bool:
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            return False
        if self.submits - self.sent >= self.max_unsent:
            return False
        if not self.saturated:
            # Slow start: as many unconfirmed submits as jobs already known to run (at least min_queue).
            return self.submits - self._started < max(self.min_queue, self._started)
        return self.queue_estimate(now) < self.target_queue

    def window_full(self) -> bool:
        """In the slow start, whether the window of unconfirmed submits is used up: only an answer that
        finds the newest job running can open it further (so it is worth asking at once)."""
        return not self.saturated and self.submits - self._started >= max(self.min_queue, self._started)

    def on_submitted(self, track: Track, now: float) -> float:
        """Account for a new request; the time of its first poll."""
        ahead = self.queue_estimate(now)
        self.in_flight += 1
        self.submits += 1
        track.seq = self.submits
        track.est_start = now + (ahead / self.start_rate if self.start_rate else 0.0)
        self.tail = self.last_submitted = track
        return self.expected_done(track, now)

    def on_sent(self, track: Track, now: float) -> bool:
        """Its POST is leaving now (it may have waited for a connection since :meth:`on_submitted`).
        True if submits were held back for want of connections, and one more may now go."""
        held = self.submits - self.sent >= self.max_unsent
        track.submitted_at = now
        track.est_start = max(track.est_start, now)
        track.sent = True
        self.sent += 1
        self.recent.append(track)
        return held

    def expected_done(self, track: Track, now: float) -> float:
        high = self.duration_quantile(0.9)
        if high is None:
            return now + self.first_poll * (1.5 ** min(track.polls, 8))
        if self.draining:
            return self.eager_poll(track, now)
        return min(now + self.poll_max, max(now + self.poll_min, track.est_start + high * 1.05))

    def eager_poll(self, track: Track, now: float) -> float:
        """When to poll a live job while draining. The run cannot end before the last submitted job's
        earliest likely finish (``end``): a job likely done before that is polled once, lazily, when it
        should be done; one that may be the last to finish is polled every step from ``end`` on."""
        low, high = self.duration_quantile(0.05), self.duration_quantile(0.9)
        if low is None or high is None:
            return now + self.first_poll * (1.5 ** min(track.polls, 8))
        last = self.last_submitted or track
        step = self.eager_step
        end = max(last.est_start, track.est_start) + low
        when = min(track.est_start + high * 1.05, max(track.est_start + low, end - step))
        return min(now + self.poll_max, max(now + step, when))

    def probe_candidates(self) -> list[Track]:
        """The most recently sent requests, newest first: the first one known to RunComfy is probed."""
        return list(reversed(self.recent))

    # -- what the API says ----------------------------------------------------------------------
    def on_probe(self, track: Track, status: str, position: int | None, now: float) -> None:
        """A probe's answer: how many of our jobs have left the queue. The newest job RunComfy knows
        already running means the queue ran dry, and slots may be idling: the start rate (hence the
        target queue) is too low, so it grows until a queue is seen again (where it is measured)."""
        if (
            self.saturated
            and not self.draining
            and status != IN_QUEUE
            and self.start_rate
            and self.submits - track.seq < self.target_queue
        ):
            mean = self.mean_duration or self.probe_interval
            ceiling = 2.0 * max(1, self.in_flight) / mean  # every job in flight starting within a mean run
            self.start_rate = max(self.start_rate, min(ceiling, self.start_rate * 1.25))
        self.observe(track, status, position, now)

    def observe(self, track: Track, status: str, position: int | None, now: float) -> None:
        """What any answer about one of our jobs tells about the queue (FIFO, one account): queued at
        ``position``, exactly ``seq - position`` of ours have started; running or done, at least ``seq``."""
        if not track.seq:
            return
        if status == IN_QUEUE:
            started, exact = float(track.seq - (position if position is not None else 1)), True
            self.saturated = True
        else:
            started, exact = float(track.seq), False
            if started <= self.started_estimate(now):
                return  # nothing new: it only bounds what we already believe
        if exact and self._started_exact and now > self._started_at:
            elapsed = now - self._started_at
            rate = max(0.0, started - self._started) / elapsed
            # Averaged over time, not over answers: they come often and each sees few starts.
            weight = 1.0 - math.exp(-elapsed / self.rate_memory)
            old = self.start_rate
            self.start_rate = rate if old is None else old + weight * (rate - old)
        self._started, self._started_at, self._started_exact = started, now, exact
        if exact and (not self._log_started or started >= self._log_started[-1]):
            self._log_times.append(now)
            self._log_started.append(started)
            if len(self._log_times) > 8192:
                del self._log_times[:4096], self._log_started[:4096]

    def on_polled(self, track: Track, status: str, position: int | None, now: float) -> float:
        """A live job's status; the time of its next poll."""
        track.polls += 1
        track.last_live = now
        self.observe(track, status, position, now)
        if status == IN_QUEUE:
            rate = self.start_rate or 0.0
            track.est_start = now + ((position or 1) / rate if rate else 0.0)
            track.live_polls = 0
            return min(now + self.poll_max, max(now + self.poll_min, self.expected_done(track, now)))
        if not track.running_at:
            track.running_at = now
            track.est_start = min(track.est_start, now) if track.est_start else now
        track.live_polls += 1
        mean = self.mean_duration
        if mean is None:
            return now + min(self.poll_max, self.first_poll * (1.5 ** min(track.polls, 8)))
        if self.draining:
            return self.eager_poll(track, now)
        done = self.expected_done(track, now)
        if done > now + self.poll_min and track.live_polls == 1:
            return min(now + self.poll_max, done)
        return now + min(self.poll_max, max(self.poll_min, 0.2 * mean))

    def on_finished(
        self, track: Track, now: float, created: float | None = None, finished: float | None = None
    ) -> None:
        """A job left the account (done, failed, cancelled): learn how long it ran. ``created`` and
        ``finished`` are RunComfy's timestamps in Unix seconds (read at the API edge, whatever their
        form on the wire; ``None`` when the answer had none)."""
        self.in_flight = max(0, self.in_flight - 1)
        if self.tail is track:
            self.tail = None
        if not track.seq or not (track.running_at or (created is not None and finished is not None)):
            return  # re-attached (when it started is unknown), or never seen to run (cancelled while queued)
        self.observe(track, COMPLETED, None, now)
        # When it finished: between our last poll that found it live and this one, if that window is
        # narrow; else from RunComfy's timestamps (whole seconds: their difference is up to a second
        # off either way, but right on average); else the middle of what we know.
        if track.last_live and now - track.last_live < 1.0:
            end = (track.last_live + now) / 2
        elif created is not None and finished is not None and finished >= created:
            end = track.submitted_at + (finished - created)
        else:
            end = (max(track.last_live, track.submitted_at) + now) / 2
        # When it started: read off the record of starts; bounded by its submit and by a poll that
        # found it running.
        start = self.start_of(track.seq)
        start = track.est_start if start is None else start
        start = max(track.submitted_at, min(start, track.running_at or now))
        self.durations.append(max(0.0, end - start))
        self._sorted_cache = self._mean_cache = None

    def on_dropped(self, track: Track) -> None:
        """A submit that created no request (refused, or never sent)."""
        self.in_flight = max(0, self.in_flight - 1)
        if not track.sent:
            self.sent += 1  # no longer waiting for a connection
        if self.tail is track:
            self.tail = None

    def on_rate_limited(self) -> None:
        """A 429 on a submit: assume the queue is full for now."""
        self.saturated = True
        self._started = min(self._started, float(max(0, self.submits - self.target_queue)))
