"""When to submit and when to poll: keeping the account's paid slots full with few requests, whatever
the account's size (one slot or hundreds) and however long its jobs run (seconds or minutes).

The runner is not told how many jobs the account runs at once, nor whether other runners share it. It
learns what it needs from the API itself:

* **A small queue at RunComfy keeps slots full.** The API queues what it cannot run yet and starts
  the next job the instant a slot frees, whatever our poll latency. So the runner keeps a small,
  bounded number of its jobs waiting ``in_queue`` (``target_queue``), enough to cover the time it
  takes us to notice and refill.
* **The queue is one FIFO, so our jobs start in the order we sent them**, and the pacer only needs
  *how many* of them have started (``started``). A queued job's position says it: when our ``k``-th
  submit is at ``queue_position`` ``p``, ``k - p`` of ours have left the queue (exactly, when no one
  else uses the account; at least, when others do). So does every finish: the slot it freed took the
  next job in the queue (:meth:`Pacer.on_finished`). Between answers the count grows at the measured
  start rate, whole starts only and for a little while (an estimate nothing confirms stops draining,
  so the runner never floods the queue blind). Before any queue is seen the runner ramps up like TCP
  slow start: each answer that finds the newest job already running doubles the window.
* **A job is polled once, when it should be done**: its start plus a high quantile of the durations
  seen. A job the pacer believes still queued is not polled at all (:meth:`Pacer.poll_due` defers it
  for free): only a running one can finish, and the finish that lets the queued one start is seen on
  the running one. The watcher asks :meth:`Pacer.take_started` after each answer for the jobs that
  have just started by that count. Before any duration is known, only the oldest running job (the
  *pilot*) is polled, less and less often as it ages; its finish teaches when the others will end.
* **Probes cost per start, not per second.** Every so often the newest job is polled for its queue
  position (:meth:`Pacer.probe_gap`): on a large account a sixth of a job's run apart, a few requests
  per hundred jobs; on a small one, where each finish already says a job started, at most once per
  ``PROBE_STARTS`` starts.
* **Lazy while the queue is full, eager for the last finish.** A late poll costs nothing while jobs
  wait at RunComfy: the freed slot is taken at once whether we notice or not. Once nothing is left to
  submit (``draining``), the run cannot end before the last submitted job's earliest likely finish
  (``end``): a job likely done before that is still polled once, lazily; only one that may be the last
  to finish is polled every ``eager_step`` from ``end`` on. The step is a sixtieth of a job's run,
  or more when the run holds few jobs per slot, so the last wave's polls stay a small share of the
  run's requests while its lateness stays a small share of the run's time.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from dataclasses import dataclass, field

from ..api.client import COMPLETED, IN_QUEUE

PROBE_STARTS = 8  # at most one probe per this many starts (estimated), below PROBE_INTERVAL_MAX
PROBE_INTERVAL_MAX = 5.0  # seconds: on a large account, a probe at least this often
EAGER_SPREAD = 2.5  # eager step ≥ this x the spread of durations / jobs run per slot so far
TIMESTAMP_ERROR = 1.0  # seconds either way: RunComfy's timestamps are whole seconds


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
    waiting: bool = False  # its poll is deferred until the pacer believes it started


@dataclass
class Pacer:
    """Estimates of the account's queue and job durations, and the decisions drawn from them."""

    max_in_flight: int | None = None
    min_queue: int = 8
    first_poll: float = 0.5  # before any duration is known
    poll_min: float = 0.05
    poll_max: float = 30.0  # the longest a job goes without its poll time being looked at again
    in_flight: int = 0
    submits: int = 0
    sent: int = 0  # submits whose POST has left (the others wait for a connection)
    max_unsent: int = 16  # more waiting for a connection would only make the queue estimate stale
    draining: bool = False  # nothing left to submit: poll eagerly (set by the scheduler)
    saturated: bool = False  # a job of ours has been seen waiting in RunComfy's queue
    shared: bool = False  # others' jobs have been seen waiting in it too
    stale: bool = False  # a finish showed the count of starts lagging: probe soon
    start_rate: float | None = None  # our jobs leaving RunComfy's queue per second, while it is not empty
    finished: int = 0  # this run's submits seen to leave the account after running
    tail: Track | None = None  # the newest live request
    last_submitted: Track | None = None  # kept after it finishes: it starts last, so it ends the run
    pilot: Track | None = None  # the first submit, polled for its end before any duration is known
    recent: deque[Track] = field(default_factory=lambda: deque(maxlen=64))  # newest sent last: to probe
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    # ``started`` (how many of our submits have left the queue) as last observed, and when; and the
    # starts that finishes seen since then imply (each finish lets the next queued job start)
    _started: float = 0.0
    _started_at: float = 0.0
    _chain: list[float] = field(default_factory=list)  # when each of those starts was, in order
    _rose_at: float = 0.0  # when an observation last found more of ours started
    _known: int = 0  # the newest of ours seen running or done: surely started
    _exact_started: float = 0.0  # the last count read off a queue position, and when (the start rate)
    _exact_at: float | None = None
    _first_sent_at: float | None = None
    # when ``started`` reached each value, as far as known (every observation, in order)
    _log_times: list[float] = field(default_factory=list)
    _log_started: list[float] = field(default_factory=list)
    # submits whose poll may be deferred until they start, by their place (see take_started)
    _unstarted: list[tuple[int, int, Track]] = field(default_factory=list)
    _pushes: int = 0  # ties in ``_unstarted`` go in the order pushed (a Track is not ordered)
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
        """The shortest time between probes (and between the submit loop's looks at the estimate): a
        sixth of a job's run, at most ``PROBE_INTERVAL_MAX``."""
        mean = self.mean_duration
        return min(PROBE_INTERVAL_MAX, max(self.poll_min, (mean / 6) if mean else 0.1))

    def probe_gap(self, now: float) -> float:
        """Seconds until the next probe. Once a queue is seen, a probe is worth the starts it may
        reveal that finishes do not: at most one per ``PROBE_STARTS`` starts, as the jobs of ours
        running make them over a job's run (before any duration is known, over the pilot's age), and
        every ``probe_interval`` while none of ours is believed running. Before a queue is seen, only a
        full slow-start window needs one."""
        if not self.saturated:
            return self.probe_interval if self.window_full() else self.poll_max
        if self.stale:
            return self.probe_interval
        started = self.started_estimate(now)
        running = started - self.finished
        if running < 1:
            # None of ours runs (others' jobs hold the slots), so no finish of ours will say when one
            # starts: only a probe can, asked less often the longer the wait has gone on.
            wait = min(self.mean_duration or self.first_poll, 0.5 * (now - self._rose_at))
            return max(self.probe_interval, wait)
        run = self.mean_duration
        if run is None:
            pilot = self.pilot
            run = max(self.first_poll, now - (pilot.est_start if pilot else now))
        return max(self.probe_interval, PROBE_STARTS * run / running)

    def eager_step(self, now: float) -> float:
        """How often the job that may finish last is polled once nothing is left to submit: a
        sixtieth of a job's run; more when the run so far holds few jobs per slot (its elapsed time
        over a job's run), so that its polls stay a small share of all."""
        mean = self.mean_duration
        if not mean:
            return self.poll_min
        low, high = self.duration_quantile(0.05) or 0.0, self.duration_quantile(0.9) or 0.0
        first = self._first_sent_at
        per_slot = max(1.0, (now - first) / mean) if first is not None else 1.0
        return max(self.poll_min, mean / 60, EAGER_SPREAD * (high * 1.05 - low) / per_slot)

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
        """How many of our submits have left the queue by ``now``: the last answer, plus the starts
        that finishes seen since imply, or (if more) whole starts at the measured rate, but only for
        as long as answers should have come (then it holds)."""
        horizon = 3 * self.probe_interval + 1.0
        grown = math.floor((self.start_rate or 0.0) * min(max(0.0, now - self._started_at), horizon))
        return min(float(self.submits), self._started + max(grown, len(self._chain)))

    def queue_estimate(self, now: float) -> float:
        if not self.saturated:
            return 0.0
        return max(0.0, self.submits - self.started_estimate(now))

    def start_of(self, seq: int) -> float | None:
        """When our ``seq``-th submit left the queue, from the record of ``started`` and the starts
        finishes told of since (None: unknown); past both, where the measured start rate puts it."""
        times, counts = self._log_times, self._log_started
        chained = seq - int(self._started)
        if 0 < chained <= len(self._chain) and (not counts or seq > counts[-1]):
            return self._chain[chained - 1]
        i = bisect.bisect_left(counts, seq)
        if i == len(counts):
            if not counts or not self.start_rate:
                return None
            return times[-1] + (seq - counts[-1]) / self.start_rate
        if i == 0:
            return None
        t0, s0, t1, s1 = times[i - 1], counts[i - 1], times[i], counts[i]
        return t0 + (t1 - t0) * (seq - s0) / (s1 - s0) if s1 > s0 else t1

    def start_time(self, track: Track, now: float) -> float | None:
        """When ``track`` started running, as far as known; None while it is believed queued."""
        if not track.seq:
            return track.est_start  # re-attached: it started some time ago (0), or will
        if not track.running_at and self.saturated and track.seq > self.started_estimate(now):
            return None
        start = self.start_of(track.seq) if self.saturated else None
        start = track.est_start if start is None else start
        if track.running_at:
            start = min(start, track.running_at)
        return max(track.submitted_at, start)

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
        return self.poll_due(track, now)

    def on_sent(self, track: Track, now: float) -> bool:
        """Its POST is leaving now (it may have waited for a connection since :meth:`on_submitted`).
        True if submits were held back for want of connections, and one more may now go."""
        held = self.submits - self.sent >= self.max_unsent
        track.submitted_at = now
        track.est_start = max(track.est_start, now)
        track.sent = True
        self.sent += 1
        self.recent.append(track)
        if self._first_sent_at is None:  # the run's first submit: its pilot (the only one there is)
            self._first_sent_at = now
            self.pilot = track
        return held

    def poll_due(self, track: Track, now: float) -> float:
        """When to poll ``track``, from what is known now; a time not after ``now`` means now. A job
        believed queued is looked at again (for free) when it may have started."""
        start = self.start_time(track, now)
        if start is None:
            if not track.waiting:
                self._defer(track)
            wait = self._wait_to_start(track, now) + (self.duration_quantile(0.9) or 0.0)
            return now + min(self.poll_max, max(self.poll_min, wait))
        high = self.duration_quantile(0.9)
        mean = self.mean_duration
        if high is None or mean is None:
            return self._before_durations(track, start, now)
        high *= 1.05 + 0.3 / len(self.durations)  # the few first durations say little of the spread
        if self.draining:
            when = self._eager(track, start, high, now)
        else:
            when = start + high
            if track.live_polls:  # found running past when it should have been done
                when = max(when, track.last_live + 0.2 * mean)
        return min(now + self.poll_max, when)

    expected_done = poll_due

    def _before_durations(self, track: Track, start: float, now: float) -> float:
        """No job has finished yet: only the pilot is polled, each time its age has doubled (while
        jobs wait at RunComfy a late finish costs nothing) or, once nothing is left to submit, grown by
        a quarter (it may be the last); the others wait for what it teaches, looked at again as often.
        A pilot that left without teaching a duration (failed at once, say) leaves each to poll itself."""
        if not track.seq:  # re-attached: at once, then less and less often
            return track.last_live + self.first_poll * (1.5 ** min(track.polls, 8)) if track.polls else now
        pilot = self.pilot
        polled = track.last_live if track is pilot or pilot is None else now
        growth = 1.25 if self.draining else 2.0
        return min(now + self.poll_max, start + max(self.first_poll, growth * (polled - start)))

    def _eager(self, track: Track, start: float, high: float, now: float) -> float:
        """Draining: the run cannot end before the last submitted job's earliest likely finish
        (``end``). A job likely done before that is polled once, lazily, when it should be done (and,
        if it is not, again only just before ``end``); one that may be the last to finish is polled
        every step from ``end`` on."""
        low = self.duration_quantile(0.05) or 0.0
        step = self.eager_step(now)
        last = self.last_submitted or track
        last_start = start if last is track else self.start_time(last, now)
        if last_start is None:  # still queued: it starts when the jobs ahead of it have
            last_start = self.start_of(last.seq) or now + self._wait_to_start(last, now)
        end = max(last_start, start) + low
        if track.live_polls:
            return max(track.last_live + step, min(start + high, end) - step)
        return min(start + high, max(start + low, end - step))

    def _wait_to_start(self, track: Track, now: float) -> float:
        """How long a job believed queued may still wait: the jobs ahead of it at the measured start
        rate, or else at the rate the jobs believed running start others (one per run each)."""
        ahead = track.seq - self.started_estimate(now)
        rate = self.start_rate
        if not rate:
            running = max(1.0, self.started_estimate(now) - self.finished)
            rate = running / (self.mean_duration or self.first_poll)
        return max(0.0, ahead) / rate

    def probe_candidates(self) -> list[Track]:
        """The most recently sent requests, newest first: the first one known to RunComfy is probed."""
        return list(reversed(self.recent))

    def take_started(self, now: float) -> list[Track]:
        """The submits whose poll was deferred while they were believed queued, and that are now
        believed started (oldest first): their polls are due again (:meth:`poll_due`)."""
        started = self.started_estimate(now)
        unstarted, out = self._unstarted, []
        while unstarted and unstarted[0][0] <= started:
            track = heapq.heappop(unstarted)[2]
            if track.waiting:
                track.waiting = False
                out.append(track)
        return out

    def _defer(self, track: Track) -> None:
        track.waiting = True
        self._pushes += 1
        heapq.heappush(self._unstarted, (track.seq, self._pushes, track))

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
        self.stale = False
        self.observe(track, status, position, now)

    def observe(self, track: Track, status: str, position: int | None, now: float) -> None:
        """What any answer about one of our jobs tells about the queue (FIFO, one account): queued at
        ``position``, ``seq - position`` of ours have started (exactly, if no one else's jobs wait
        ahead of it); running or done, at least ``seq``."""
        if not track.seq:
            return
        if status == IN_QUEUE:
            self.saturated = True
            if not track.waiting:
                self._defer(track)  # it may have been taken for started: wait for it again
            count = track.seq - (position if position is not None else 1)
            if count < self._known:
                self.shared = True  # more jobs wait ahead of it than ours could: others use the account
            count = max(0, count)
            if self._exact_at is not None and now > self._exact_at:
                elapsed = now - self._exact_at
                rate = max(0.0, count - self._exact_started) / elapsed
                # Averaged over time, not over answers: they come often and each sees few starts.
                weight = 1.0 - math.exp(-elapsed / self.rate_memory)
                old = self.start_rate
                self.start_rate = rate if old is None else old + weight * (rate - old)
            self._exact_started, self._exact_at = count, now
            started = float(max(count, self._known))
        else:
            self._known = max(self._known, track.seq)
            started = float(track.seq)
            if started <= self.started_estimate(now):
                return  # nothing new: it only bounds what we already believe
        if started > self._started:
            self._rose_at = now
        for k, when in enumerate(self._chain, start=1):  # the starts finishes told of, kept
            if self._started + k <= started:
                self._record(when, self._started + k)
        self._started, self._started_at = started, now
        self._chain.clear()
        self._record(now, started)

    def _record(self, when: float, started: float) -> None:
        """``started`` had reached this value by ``when`` (kept in order: a later count, a later time)."""
        times, counts = self._log_times, self._log_started
        if counts and started <= counts[-1]:
            return
        times.append(max(when, times[-1]) if times else when)
        counts.append(started)
        if len(times) > 8192:
            del times[:4096], counts[:4096]

    def on_polled(self, track: Track, status: str, position: int | None, now: float) -> float:
        """A live job's status; the time of its next poll."""
        track.polls += 1
        track.last_live = now
        self.observe(track, status, position, now)
        if status == IN_QUEUE:
            rate = self.start_rate or 0.0
            track.est_start = now + ((position or 1) / rate if rate else 0.0)
            track.live_polls = 0
        else:
            if not track.running_at:
                track.running_at = now
                track.est_start = min(track.est_start, now) if track.seq else now
            track.live_polls += 1
        return max(now + self.poll_min, self.poll_due(track, now))

    def on_finished(
        self, track: Track, now: float, created: float | None = None, finished: float | None = None
    ) -> None:
        """A job left the account (done, failed, cancelled): learn how long it ran, and that the slot
        it freed took the next job in the queue. ``created`` and ``finished`` are RunComfy's timestamps
        in Unix seconds (read at the API edge, whatever their form on the wire; ``None`` when the
        answer had none)."""
        self.in_flight = max(0, self.in_flight - 1)
        if self.tail is track:
            self.tail = None
        if self.pilot is track:
            self.pilot = None
        if not track.seq:
            return  # re-attached: when it started is unknown
        self.finished += 1
        self.observe(track, COMPLETED, None, now)
        start = self.start_time(track, now) or track.submitted_at
        # When it finished: after our last poll that found it live (or its start) and before this one;
        # RunComfy's timestamps (whole seconds: their difference is up to a second off either way, but
        # right on average) narrow that down; the middle of what is left.
        low, high = max(track.last_live, start), now
        stamped = created is not None and finished is not None and finished >= created
        if created is not None and finished is not None and stamped:
            at = track.submitted_at + (finished - created)
            if at - TIMESTAMP_ERROR < high and at + TIMESTAMP_ERROR > low:
                low, high = max(low, at - TIMESTAMP_ERROR), min(high, at + TIMESTAMP_ERROR)
        end = (low + high) / 2
        if self.saturated:
            self._freed(end)
        if not (track.running_at or stamped):
            return  # never seen to run, nor timed by RunComfy (cancelled while queued, say)
        shortest = self.duration_quantile(0.05)
        if shortest is not None and len(self.durations) >= 8 and end - start < 0.8 * shortest:
            # It ran shorter than jobs do: it started well before we thought, so the count of starts
            # lags (others' jobs may share the queue, or finishes were missed). A probe says how far.
            self.stale = True
        self.durations.append(max(0.0, end - start))
        self._sorted_cache = self._mean_cache = None

    def _freed(self, when: float) -> None:
        """A job of ours finished at ``when``: alone on the account, the slot it freed took the next job
        in the queue then. After the last observation that is one more start (``_chain``, in the order
        they happened, whatever order they are seen in); before it, the record learns that the count
        it shows was reached by ``when``, not only when it was seen."""
        if when > self._started_at:
            if self._started + len(self._chain) < self.submits:
                bisect.insort(self._chain, when)
            return
        if self.shared:
            return  # the start it made may have been another runner's
        times, counts = self._log_times, self._log_started
        i = bisect.bisect_right(times, when)
        if i == len(times):
            return
        reached = (counts[i - 1] if i else 0.0) + 1
        if counts[i] == reached:
            times[i] = when
        elif counts[i] > reached:
            times.insert(i, when)
            counts.insert(i, reached)

    def on_dropped(self, track: Track) -> None:
        """A submit that created no request (refused, or never sent)."""
        self.in_flight = max(0, self.in_flight - 1)
        if not track.sent:
            self.sent += 1  # no longer waiting for a connection
        if self.tail is track:
            self.tail = None
        if self.pilot is track:
            self.pilot = None
        track.waiting = False

    def on_rate_limited(self) -> None:
        """A 429 on a submit: assume the queue is full for now."""
        self.saturated = True
        self._started = min(self._started, float(max(0, self.submits - self.target_queue)))
