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
  *pilot*) is polled, less and less often as it ages (:func:`pilot_growth`: its age doubled, up to
  quadrupled while many of ours wait behind it, since late costs nothing then; its first poll's age
  too, once a probe saw them wait); its finish teaches when the others will end. A job found running
  past its likely end is asked again ever later.
* **Probes cost per start, not per second.** Every so often the newest job (on a shared account
  the oldest of ours still waiting: :mod:`.probes`) is polled for its queue position
  (:meth:`Pacer.probe_gap`): on a large account a sixth of a job's run apart, a few requests
  per hundred jobs; on a small one, where each finish already says a job started, at most once per
  ``PROBE_STARTS`` starts; on a shared one, where it does not, at least every ``SHARED_PROBE_STARTS``
  of ours or half a job's run, whichever is longer (while none of ours runs, when the account's start
  rate says ours will start: :meth:`~.starts.Starts.head_wait`). Once
  all is submitted before any queue was seen, one probe says whether ours wait behind the first ones
  (on a one-slot account they do, and the pilot is then not the job that may finish last). Whatever
  the estimates say, a probe comes at least every ``PROBE_GAP_MAX``: only a probe corrects a count of
  starts gone wrong, and the polls of jobs believed queued wait on that count. One comes soon when a
  finish may have fallen either side of the count's last reading, or when RunComfy dates a finish
  before the job's believed start (the count lags far: on a shared account others' jobs left the queue
  unseen, and ours with them); none once all of ours are seen to run.
* **Lazy while the queue is full, eager for the last finish.** A late poll costs nothing while jobs
  wait at RunComfy: the freed slot is taken at once whether we notice or not. Once nothing is left to
  submit (``draining``), the run cannot end before the last submitted job's earliest likely finish
  (``end``): a job likely done before that is still polled once, lazily; only one that may be the last
  to finish is polled every ``eager_step`` from ``end`` on. The step is a sixtieth of a job's run,
  or more when the run holds few jobs per slot, so the last wave's polls stay a small share of the
  run's requests while its lateness stays a small share of the run's time.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

from ..api.client import COMPLETED, IN_QUEUE
from .durations import Durations
from .probes import probe_gap, probe_order, probed
from .starts import Starts

PROBE_INTERVAL_MAX = 5.0  # seconds: on a large account, a probe at least this often
SHORTEST_SHARE = 0.8  # alone, a job found done ended no sooner than its start + this x the shortest run
TIMESTAMP_ERROR = 1.0  # seconds either way: RunComfy's timestamps are whole seconds
LOOSE_START = 2.0  # a run is not learnt, only bounded, when its start may lie this x its length earlier


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
    queued_at: float = 0.0  # when a poll last found it queued
    polls: int = 0
    live_polls: int = 0  # consecutive polls that found it running
    waiting: bool = False  # its poll is deferred until the pacer believes it started


def seen_start(track: Track, start: float, within: float) -> float | None:
    """When ``track`` started, if two answers close together saw it (queued, or just sent, then running
    ``within`` seconds later at most): ``start`` kept between them (None: not seen so closely). On a
    shared account the start a count gives is only believed; one seen teaches a run even when the
    stamps put the end within a second of it (1 s jobs: two runners on two slots learnt none in fifteen,
    and polled every job by the rules for no run known)."""
    if not track.running_at:
        return None
    before = max(track.queued_at, track.submitted_at)  # (queued again after running: not seen so)
    return min(track.running_at, max(start, before)) if 0 <= track.running_at - before <= within else None


def finish_window(track: Track, start: float, now: float, at: float | None) -> tuple[float, float]:
    """When a job that has just been found ended did, at the earliest and latest: after our last poll
    that found it live (or its start) and before this one; ``at``, where RunComfy's timestamps put its
    end (:func:`stamped_end`: whole seconds, up to a second off either way, but right on average),
    narrows that down."""
    low, high = max(track.last_live, start), now
    if at is not None and at - TIMESTAMP_ERROR < high and at + TIMESTAMP_ERROR > low:
        low, high = max(low, at - TIMESTAMP_ERROR), min(high, at + TIMESTAMP_ERROR)
    return low, high


def stamped_end(track: Track, created: float | None, finished: float | None) -> float | None:
    """When RunComfy's timestamps say the job ended, on our clock (None without a usable pair)."""
    if created is None or finished is None or finished < created:
        return None
    return track.submitted_at + (finished - created)


@dataclass
class Waiting:
    """The submits whose poll waits until the pacer believes they started, by their place."""

    _heap: list[tuple[int, int, Track]] = field(default_factory=list)
    _pushes: int = 0  # ties go in the order pushed (a Track is not ordered)

    def add(self, track: Track) -> None:
        track.waiting = True
        self._pushes += 1
        heapq.heappush(self._heap, (track.seq, self._pushes, track))

    def started(self, count: float) -> list[Track]:
        """Those among the first ``count`` submits, oldest first; they wait no more."""
        heap, out = self._heap, []
        while heap and heap[0][0] <= count:
            track = heapq.heappop(heap)[2]
            if track.waiting:
                track.waiting = False
                out.append(track)
        return out


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
    stale: bool = False  # a finish showed the count of starts lagging: probe soon
    finished: int = 0  # this run's submits seen to leave the account after running
    slots_seen: float = 0.0  # the most of ours believed running while others of ours waited
    tail: Track | None = None  # the newest live request
    last_submitted: Track | None = None  # kept after it finishes: it starts last, so it ends the run
    pilot: Track | None = None  # the first submit, polled for its end before any duration is known
    recent: deque[Track] = field(default_factory=lambda: deque(maxlen=64))  # newest sent last: to probe
    durations: Durations = field(default_factory=Durations)
    starts: Starts = field(default_factory=Starts)  # how many of ours have left the queue, and when
    waiting: Waiting = field(default_factory=Waiting)
    first_sent_at: float | None = None  # when this run's first submit left
    read_at: float = -math.inf  # shared: the last poll that read a queued position (as good as a probe)
    probe_ran: bool = False  # the last probe found its job started: the next asks the newest

    # -- estimates ----------------------------------------------------------------------------
    @property
    def start_rate(self) -> float | None:  # (see Starts for both)
        return self.starts.rate

    @property
    def saturated(self) -> bool:
        return self.starts.saturated

    @property
    def mean_duration(self) -> float | None:
        return self.durations.mean

    def duration_quantile(self, q: float) -> float | None:
        return self.durations.quantile(q)

    @property
    def probe_interval(self) -> float:
        """The shortest time between probes (and between the submit loop's looks at the estimate): a
        sixth of a job's run, at most ``PROBE_INTERVAL_MAX``."""
        mean = self.mean_duration
        return min(PROBE_INTERVAL_MAX, max(self.poll_min, (mean / 6) if mean else 0.1))

    def probe_gap(self, now: float) -> float:
        """Seconds from the last probe to the next (:func:`probe_gap`)."""
        return probe_gap(self, now)

    def eager_step(self, now: float) -> float:
        """How often the job that may finish last is polled once nothing is left to submit."""
        first, mean = self.first_sent_at, self.mean_duration or 0.0
        elapsed = now - first if first is not None else 0.0  # (shared: no longer than ours alone took)
        return self.durations.eager_step(min(elapsed, self.submits * mean), self.poll_min)

    @property
    def target_queue(self) -> int:
        """Jobs to keep waiting at RunComfy: enough to cover two probe intervals of starts."""
        if not self.start_rate:
            return self.min_queue
        return max(self.min_queue, math.ceil(self.start_rate * (2 * self.probe_interval + 0.2)))

    @property
    def horizon(self) -> float:  # how long after an answer the count of starts may grow without one
        return 3 * self.probe_interval + 1.0

    def started_estimate(self, now: float) -> float:
        """How many of ours have left the queue by ``now`` (growing for three probe intervals at most)."""
        return self.starts.estimate(now, self.submits, self.horizon)

    def queue_estimate(self, now: float) -> float:
        return max(0.0, self.submits - self.started_estimate(now)) if self.saturated else 0.0

    def start_time(self, track: Track, now: float) -> float | None:
        """When ``track`` started running, as far as known; None while it is believed queued."""
        if not track.seq:
            return track.est_start  # re-attached: it started some time ago (0), or will
        if not track.running_at and self.saturated and track.seq > self.started_estimate(now):
            return None
        start = self.starts.start_of(track.seq) if self.saturated else None
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
            started = self.starts.started
            return self.submits - started < max(self.min_queue, started)
        return self.queue_estimate(now) < self.target_queue

    def window_full(self) -> bool:
        """In the slow start, whether the window of unconfirmed submits is used up (ask at once)."""
        started = self.starts.started
        return not self.saturated and self.submits - started >= max(self.min_queue, started)

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
        if self.first_sent_at is None:  # the run's first submit: its pilot (the only one there is)
            self.first_sent_at = now
            self.pilot = track
        return held

    def poll_due(self, track: Track, now: float) -> float:
        """When to poll ``track``, from what is known now (not after ``now``: now); a job believed queued
        is looked at again, for free, when it may have started."""
        start = self.start_time(track, now)
        if start is None:
            if not track.waiting:
                self.waiting.add(track)
            at = self.starts.reaches(track.seq, self.horizon)  # when the count may take it in
            if at is None:
                return now + self.poll_max  # only an answer can start it (and sets its poll again)
            wait = max(0.0, at - now) + (self.duration_quantile(0.9) or 0.0)  # (when it may be done)
            return now + min(self.poll_max, max(self.poll_min, wait))
        high = self.duration_quantile(0.9)
        mean = self.mean_duration
        if high is None or mean is None:
            return self._before_durations(track, start, now)
        high *= 1.05 + 0.3 / len(self.durations)  # the few first durations say little of the spread
        if self.draining:
            when = self._eager(track, start, high, mean, now)
        else:
            when = start + high
            if track.live_polls:  # found running past when it should have been done: back off
                when = max(when, track.last_live + 0.2 * mean * 2 ** min(track.live_polls - 1, 3))
        return min(now + self.poll_max, when)

    def _before_durations(self, track: Track, start: float, now: float) -> float:
        """No job has finished yet: only the pilot is polled, each time its age has grown by
        :func:`pilot_growth`; the others wait for what it teaches. Without a pilot (it failed at once,
        say) each polls itself."""
        if not track.seq:  # re-attached: at once, then less and less often
            return track.last_live + self.first_poll * (1.5 ** min(track.polls, 8)) if track.polls else now
        pilot = self.pilot
        polled = track.last_live if track is pilot or pilot is None else now
        queued = self.queue_estimate(now)  # may it be the last to finish? (unknown until a probe says)
        last = self.draining and queued < 1 and (self.saturated or self.starts.known >= self.submits)
        running = self.started_estimate(now) - self.finished
        growth = pilot_growth(queued, running, may_be_last=last)
        age = polled - start
        if track is pilot and not track.polls and queued >= max(1.0, running):
            age = self.first_poll  # a probe saw ours wait behind it: its first poll grows too
        return min(now + self.poll_max, start + max(self.first_poll, growth * age))

    def _eager(self, track: Track, start: float, high: float, mean: float, now: float) -> float:
        """Draining: the run cannot end before the last submitted job's earliest likely finish (``end``).
        A job likely done before that is polled lazily (if not done, again just before ``end``); one
        that may be the last to finish, every step from ``end`` on."""
        low = self.durations.narrowed(0.05) or 0.0
        step = self.eager_step(now)
        last = self.last_submitted or track
        last_start = start if last is track else self.start_time(last, now)
        if last_start is None:  # still queued: it starts when the jobs ahead of it have
            last_start = self.starts.start_of(last.seq) or now + wait_to_start(self, last, now)
        end = max(last_start, start) + low
        if track.live_polls:  # running past its likely end: lazily again until the end phase
            step = max(step, 0.1 * (track.last_live - start - high))  # (a tenth of its overrun)
            lazy = max(start + high, track.last_live + 0.5 * mean)
            return max(track.last_live + step, min(lazy, end - step))
        return min(start + high, max(start + low, end - step))

    def probe_order(self) -> list[Track]:
        """The jobs a probe may ask about, the first fit first (:func:`.probes.probe_order`)."""
        return probe_order(self)

    def take_started(self, now: float) -> list[Track]:
        """The submits deferred while believed queued, now believed started (oldest first): to poll."""
        return self.waiting.started(self.started_estimate(now))

    # -- what the API says ----------------------------------------------------------------------
    def on_probe(self, track: Track, status: str, position: int | None, now: float) -> None:
        """A probe's answer (:func:`.probes.probed`, then what any answer tells)."""
        probed(self, track, status)
        self.observe(track, status, position, now)

    def observe(self, track: Track, status: str, position: int | None, now: float) -> None:
        """What any answer about one of our jobs tells the count of starts (:class:`~.starts.Starts`)."""
        if not track.seq:
            return
        if status == IN_QUEUE:
            mean = self.mean_duration  # the rate is averaged over half a job's run: many starts
            memory = max(1.0, mean / 2) if mean else 1.0
            self.starts.queued(track.seq, position, now, memory, self.started_estimate(now))
            self.slots_seen = max(self.slots_seen, self.started_estimate(now) - self.finished)
            if not track.waiting:
                self.waiting.add(track)  # it may have been taken for started: wait for it again
        else:
            self.starts.seen(track.seq, now, self.started_estimate(now))

    def on_polled(self, track: Track, status: str, position: int | None, now: float) -> float:
        """A live job's status; the time of its next poll."""
        track.polls += 1
        track.last_live = now
        self.observe(track, status, position, now)
        if status == IN_QUEUE:
            if self.starts.shared:
                self.read_at = now
            rate = self.start_rate or 0.0
            track.est_start = now + ((position or 1) / rate if rate else 0.0)
            track.live_polls, track.queued_at = 0, now
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
        self.tail, self.pilot = (None if t is track else t for t in (self.tail, self.pilot))
        if not track.seq:
            return  # re-attached: when it started is unknown
        self.finished += 1
        self.observe(track, COMPLETED, None, now)
        start = self.start_time(track, now) or track.submitted_at
        # (read before its own finish is freed below: alone, that finish would be taken as its start)
        earliest = min(start, self.starts.placed(track.seq)[1]) if self.saturated else start
        ended = stamped_end(track, created, finished)
        low, high = finish_window(track, start, now, ended)
        # (Found done long after its start, by lazy polls: the window's middle dated ends, and so the
        # next starts, early; shared, the start is only believed, and may be late: the window stands.)
        if not self.starts.shared and (shortest := self.duration_quantile(0.05)) is not None:
            low = min(high, max(low, start + SHORTEST_SHARE * shortest))
        end = (low + high) / 2
        early = False
        if ended is not None and track.last_live < ended <= start - TIMESTAMP_ERROR:
            # RunComfy says it ended before we believed it started: the count of starts lags far (on a
            # shared account others' jobs left the queue unseen, say, and ours started early). When it
            # ran is unknown: no duration, and a probe soon sets the count right.
            early, end, self.stale = True, ended, self.saturated
        if self.saturated:
            counted, least = self.starts.observed_at, low  # (shared, the start itself is only believed)
            if not self.starts.shared:
                least = max(low, start + 0.8 * (self.duration_quantile(0.05) or 0.0))
            if self.draining and least < counted < high and self.starts.started < self.submits:
                # Whether the start this finish made is in the count read at ``counted`` (the finish
                # may have come just before or just after, though not before the job ran a shortest
                # run's most): a probe says, or a start goes unseen.
                self.stale = True
            self.starts.freed(end, self.submits)
        learn_run(self, track, (earliest, start), (low, end, high), ended, early=early)

    def on_dropped(self, track: Track) -> None:
        """A submit that created no request (refused, or never sent)."""
        self.in_flight = max(0, self.in_flight - 1)
        if not track.sent:
            self.sent += 1  # no longer waiting for a connection
        self.tail, self.pilot = (None if t is track else t for t in (self.tail, self.pilot))
        track.waiting = False

    def on_rate_limited(self) -> None:
        """A 429 on a submit: assume the queue is full for now."""
        self.starts.rate_limited(self.submits, self.target_queue)


def learn_run(
    pacer: Pacer,
    track: Track,
    start: tuple[float, float],
    end: tuple[float, float, float],
    ended: float | None,
    *,
    early: bool,
) -> None:
    """What a finish teaches of how long jobs run (:meth:`Pacer.on_finished`): ``start``, the earliest
    the count of starts lets the job's start be and where it places it; ``end``, the window its end was
    found in and its middle; ``ended``, where RunComfy's stamps put it; ``early``, they put it before the
    believed start."""
    (earliest, begun), (low, finish, high) = start, end
    durations, mean = pacer.durations, pacer.mean_duration
    near = ended is not None and ended - TIMESTAMP_ERROR < begun
    most = ended - max(track.queued_at, track.submitted_at) if ended is not None else 0.0  # its run
    if early or not (track.running_at or ended is not None):  # (not: cancelled while queued, say)
        return durations.bound(most) if early else None  # (run at most: since last queued)
    if (seen := seen_start(track, begun, (high - low) / 2)) is not None:
        begun = seen  # (whatever the count says)
    elif near and pacer.starts.shared and (mean is None or finish - begun < 0.5 * mean):
        return durations.bound(most)  # shared: the count lags, and a start near the end is late
    elif 0 < LOOSE_START * (finish - begun) < begun - earliest:
        # Placed between two counts further apart than it ran (probes are seldom while ours wait): the
        # start may be anywhere in there, and the run only bounded. A runner that took itself for alone
        # learnt 1.5 s off a two-minute job and probed every 1.5 s for ten minutes.
        return durations.bound(finish - earliest)
    shortest = pacer.duration_quantile(0.05)
    if shortest is not None and len(durations) >= 8 and finish - begun < 0.8 * shortest:
        # It ran shorter than jobs do: it started well before we thought, so the count of starts
        # lags (others' jobs may share the queue, or finishes were missed). A probe says how far.
        pacer.stale = True
    # Its error: the end's is nearer the window's middle than evenly spread (RunComfy's two whole-
    # second stamps round alike: a variance of a sixth of the half-width squared); its start's is
    # larger (read between counts, or off another job's end found late). Taken as three times the
    # end's (the sqrt 2), 2-slot runs were 0.7 % shorter than with it taken as equal, in six runs of
    # each over HTTP, and the fake clock agrees; 5 and 20 slots did not tell them apart.
    durations.add(finish - begun, (high - low) / 2 * math.sqrt(2))


def wait_to_start(pacer: Pacer, track: Track, now: float) -> float:
    """How long a job believed queued may still wait: the jobs ahead of it at the measured start
    rate, or else at the rate the jobs believed running start others (one per run each)."""
    ahead = track.seq - pacer.started_estimate(now)
    rate = pacer.start_rate
    if not rate:
        running = max(1.0, pacer.started_estimate(now) - pacer.finished)
        rate = running / (pacer.mean_duration or pacer.first_poll)
    return max(0.0, ahead) / rate


def submit_wait(pacer: Pacer, now: float) -> float:
    """How long the submit loop may sleep while the pacer holds submits back and no answer comes (each
    one wakes it): until the count of starts, growing at the measured rate, leaves room in the target
    queue; ``PROBE_INTERVAL_MAX`` at most, or when only an answer can make room."""
    if pacer.saturated:
        at = pacer.starts.reaches(pacer.submits - pacer.target_queue + 1, pacer.horizon)
        if at is not None and at > now:
            return min(PROBE_INTERVAL_MAX, max(pacer.poll_min, at - now))
    return PROBE_INTERVAL_MAX


def pilot_growth(queued: float, running: float, *, may_be_last: bool) -> float:
    """How much the pilot's age grows between its polls: a quarter when it may be the last job to
    finish; else late costs nothing while ours wait behind it (RunComfy starts the next at once), so
    2x, up to 4x the more of ours wait for each one running."""
    if may_be_last:
        return 1.25
    return max(2.0, min(4.0, 1 + queued / max(1.0, running)))
