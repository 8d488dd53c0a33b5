"""How many of a run's submits have left RunComfy's queue, and when each did (the pacer's count).

One account has one FIFO queue, so our jobs start in the order we sent them and one number says which
have: ``started``. Three kinds of answer tell it, with different strength:

* a queued job's position: when our ``k``-th submit waits at ``queue_position`` ``p``, ``k - p`` of
  ours have left the queue — exactly when no one else's jobs wait there, at least when they do (the
  account is then *shared*, which shows when the count comes out below one already seen to run, or
  below one read before: alone, it never falls);
* a job of ours found running or done: at least its place;
* a finish of ours: the slot it freed took the next queued job at that moment (exactly, when alone).

The start rate is measured between queue positions at least ``RATE_STARTS`` starts apart (or a
while): on a small account starts come seconds apart, and one start between two close answers is
no rate. Between answers the count grows at the measured start rate, in whole starts and for a short horizon
only (an estimate nothing confirms stops growing, so the runner never floods the queue blind).

When a given job started comes from two records: each count observed and when, and every finish of
ours (when alone on the account). Between two observations, the count rose by one at each finish: the
k-th start after an observation came at the k-th finish after it. Finishes are often learnt late and
out of order (a small account's polls find several done at once); kept apart from the counts, each
finds its place whatever order they come in.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

RATE_STARTS = 4  # the start rate is measured over at least this many starts (or a while)
GUESS_STARTS = 0.7  # shared, no rate: (starts seen + this) / seconds ~ the median rate fitting them
ANSWERS_KEPT = 8  # shared: the last answer of this many of our jobs is kept, to measure the rate by


@dataclass
class Starts:
    """The count of our submits that have left the queue: as last observed, plus what finishes and the
    start rate have told since."""

    rate: float | None = None  # our jobs leaving the queue per second, while it is not empty
    saturated: bool = False  # a job of ours has been seen waiting in RunComfy's queue
    shared: bool = False  # others' jobs have been seen waiting in it too
    started: float = 0.0  # as the last observation that moved it said, and when
    observed_at: float = 0.0
    rose_at: float = 0.0  # when an observation last found more of ours started
    chain: list[float] = field(default_factory=list)  # when each start a finish told of since was
    known: int = 0  # the newest of ours seen running or done: surely started
    _exact: tuple[float, float] | None = None  # the last count read off a queue position, and when
    # Through the queue's head: the count read off a position before it is floored at none (on a shared
    # account it falls below none while others' jobs wait ahead of all of ours), when it last moved,
    # when it was last read, and the account's starts per second measured from it (anyone's jobs)
    head: tuple[float, float, float] | None = None
    head_rate: float | None = None
    _head_mark: tuple[float, float] | None = None  # where head_rate was last measured from
    head_seq: int = 0  # shared: whose position the head was read from
    # shared: each job's last raw count and when it was read, and the starts and seconds between two
    # answers of one job not yet enough to measure the rate by
    _answers: dict[int, tuple[float, float]] = field(default_factory=dict)
    _pooled: tuple[float, float] = (0.0, 0.0)
    _read_at: float = -math.inf  # when a queued position was last read
    _peak: int = 0  # the highest count read off a queue position
    # each count an observation found, and when (in order: a later count, a later time)
    _log_times: list[float] = field(default_factory=list)
    _log_started: list[float] = field(default_factory=list)
    _log_last: list[float] = field(default_factory=list)  # the last time each count was read unchanged
    _freed: list[float] = field(default_factory=list)  # when each finish of ours came, in order of time

    def estimate(self, now: float, submits: int, horizon: float) -> float:
        """How many have left the queue by ``now``: the last observation, plus the starts finishes told
        of since or (if more) whole starts at the measured rate, for ``horizon`` seconds at most."""
        grown = math.floor((self.rate or 0.0) * min(max(0.0, now - self.observed_at), horizon))
        return min(float(submits), self.started + max(grown, len(self.chain)))

    def reaches(self, seq: int, horizon: float) -> float | None:
        """When :meth:`estimate` takes in our ``seq``-th submit with no answer coming meanwhile (None:
        only an answer can: without a measured rate, or past the horizon, the count stands still)."""
        need = seq - (self.started + len(self.chain))
        if need <= 0:
            return self.observed_at
        if not self.rate:
            return None
        after = math.ceil(seq - self.started) / self.rate + 1e-6  # whole starts, past the rounding
        return self.observed_at + after if after <= horizon else None

    def start_of(self, seq: int) -> float | None:
        """When our ``seq``-th submit left the queue (None: unknown): between the two observed counts
        it falls within, at the finish that made room for it, or else evenly between the last such
        finish and the later count; past the last count, at a finish told of since, or where the
        measured start rate puts it."""
        return self.placed(seq)[0]

    def placed(self, seq: int) -> tuple[float | None, float]:
        """:meth:`start_of`, and the earliest it can have come: placed between two counts with no
        finish to tell it, the last reading that found it not yet started (else the start itself;
        ``inf`` when unknown)."""
        times, counts = self._log_times, self._log_started
        chained = seq - int(self.started)
        if 0 < chained <= len(self.chain) and (not counts or seq > counts[-1]):
            return self.chain[chained - 1], self.chain[chained - 1]
        i = bisect.bisect_left(counts, seq)
        if i == len(counts):
            if not counts or not self.rate:
                return None, math.inf
            at = self._log_last[-1] + (seq - counts[-1]) / self.rate  # (none had, when last read)
            return at, at
        if i == 0:
            return None, math.inf
        t0, s0, t1, s1 = self._log_last[i - 1], counts[i - 1], times[i], counts[i]
        freed = self._freed
        first, last = bisect.bisect_right(freed, t0), bisect.bisect_right(freed, t1)
        known = min(last - first, int(s1 - s0))  # finishes in between that made room, at most one each
        k = math.ceil(seq - s0 - 1e-9)  # it is the k-th start after the earlier count
        if k <= known:
            return freed[first + k - 1], freed[first + k - 1]
        if known:
            t0, s0 = freed[first + known - 1], s0 + known
        return (t0 + (t1 - t0) * (seq - s0 - 0.5) / (s1 - s0) if s1 > s0 else t1), t0

    def queued(
        self, seq: int, position: int | None, now: float, memory: float, believed: float = 0.0
    ) -> None:
        """Our ``seq``-th submit waits at ``position``. The rate is measured between such answers and
        averaged over ``memory`` seconds (answers come often and each sees few starts). On a shared
        account the position bounds the count only from below (others' jobs sit ahead and between),
        and the job's waiting bounds it from above (none after it has started): the count ``believed``
        so far is kept within the two."""
        self.saturated, self._read_at = True, now
        count = seq - (position if position is not None else 1)
        self._through_head(seq, count, now, memory)
        shared = self.shared
        if count < self.known or count < self._peak - 1:
            # More jobs wait ahead of it than ours could, or fewer of ours have started than a position
            # said before (alone, the count never falls: one FIFO): others' jobs share the queue.
            self.shared = True
        if shared:
            count = max(count, min(math.floor(believed), seq - 1))
        count = max(0, count)
        self._peak = max(self._peak, count)
        if self._exact is None:
            self._exact = (count, now)
        else:
            # Measured over RATE_STARTS starts at least (or 4 x memory): on a small account starts are
            # seconds apart, and one that falls between two close answers is no rate.
            before, elapsed = self._exact[0], now - self._exact[1]
            if elapsed > 0 and (count - before >= RATE_STARTS or elapsed >= 4 * memory or count < before):
                rate = max(0.0, count - before) / elapsed
                weight = 1.0 - math.exp(-elapsed / memory)
                self.rate = rate if self.rate is None else self.rate + weight * (rate - self.rate)
                self._exact = (count, now)
        self._moved(float(max(count, self.known)), now, still=count >= self.known)

    def _through_head(self, seq: int, count: float, now: float, memory: float) -> None:
        """The account's start rate, from the raw counts positions give: each start anywhere ahead of
        the job asked about moves it up by one. Alone, the count read off any job is ours, and one that
        falls (a newer submit waits behind others' jobs sent meanwhile) starts the measure again.
        Shared, a newer job's position also counts others' jobs between ours: the head is read off the
        oldest asked about not known to have started (it says when ours will start), and the rate off
        two answers of the same job (:meth:`_per_job`)."""
        if self.shared:
            self._per_job(seq, count, now, memory)
            if self.head is not None and self.head_seq < seq and self.known < self.head_seq:
                return
            self.head_seq = seq
        moved = now if self.head is None or count != self.head[0] else self.head[1]
        self.head = (count, moved, now)
        if self.shared:
            return
        mark = self._head_mark
        if mark is None or count < mark[0]:
            self._head_mark = (count, now)
        elif self._head_measured(count - mark[0], now - mark[1], memory):
            self._head_mark = (count, now)

    def _per_job(self, seq: int, count: float, now: float, memory: float) -> None:
        """Shared: the starts between two answers of the same job, over the seconds between them, summed
        over whichever jobs were asked twice. Probes alternate between our oldest queued and our newest,
        so one job is seldom asked twice running: read off one job's answers in a row, on one slot no
        rate was ever measured."""
        last, self._answers[seq] = self._answers.get(seq), (count, now)
        if len(self._answers) > ANSWERS_KEPT:
            del self._answers[min(self._answers)]
        if last is None or count < last[0] or now <= last[1]:
            return
        starts, seconds = self._pooled[0] + count - last[0], self._pooled[1] + now - last[1]
        self._pooled = (0.0, 0.0) if self._head_measured(starts, seconds, memory) else (starts, seconds)

    def _head_measured(self, moved: float, elapsed: float, memory: float) -> bool:
        """Update the account's start rate from ``moved`` starts over ``elapsed`` seconds, once they are
        enough to tell one (True: measured, start the next measure from here)."""
        if elapsed <= 0:
            return False
        if moved >= RATE_STARTS or (moved and elapsed >= 4 * memory):
            rate, old = moved / elapsed, self.head_rate
            self.head_rate = rate if old is None else old + (1.0 - math.exp(-elapsed / memory)) * (rate - old)
            return True
        if not moved and self.head_rate and elapsed * self.head_rate > 2:
            # Long without a start (on a small account they come seconds apart, and an answer between
            # two says nothing of the rate): at most one in all that while.
            self.head_rate = min(self.head_rate, 1 / elapsed)
        return False

    def next_ours(self, rate: float | None = None) -> float | None:
        """When the next of ours may leave the queue, as the account's start rate (or ``rate``) puts it:
        the starts still needed ahead of it, counted from the last move of the count (None: no rate)."""
        rate = rate or self.head_rate
        if self.head is None or not rate:
            return None
        count, moved, _ = self.head
        return moved + max(1.0, math.floor(self.started) + 1 - count) / rate

    def guessed_rate(self) -> float | None:
        """Shared, no rate measured yet: the account's starts per second guessed from the answers pooled
        so far, ``GUESS_STARTS`` more than moved over their seconds (none moved in a long wait: slow)."""
        starts, seconds = self._pooled
        return (starts + GUESS_STARTS) / seconds if self.shared and seconds > 0 else None

    def head_wait(self, longest: float, near: float, rate: float | None = None) -> float | None:
        """While others' jobs hold the slots: how long after the last probe the next should come, from
        the account's start rate (or ``rate``) and the starts still needed before ours (None: no rate). Half
        way there while that is far; just after it once near, so that the start is seen soon after it
        came and the job's run is learnt closely (a start dated between two probes far apart teaches a
        wrong one), and ``near`` at most (a job's run: one of ours may start and end unseen between).
        Far off, half way is longer than ``near`` only when the last answer was the next of ours to
        start: another's position counts others' jobs between ours, and an old one moved on since.
        Never longer than ``longest``: a rate measured wrong cannot hold probes off long."""
        rate = rate or self.head_rate
        at = self.next_ours(rate)
        if at is None or self.head is None or rate is None:  # (next_ours: no rate, no time)
            return None
        ahead = at - self.head[2]  # (from the last probe's reading)
        if ahead > 2 / rate:
            told = self.shared and self._read_at == self.head[2] and self.head_seq <= self.started + 1
            wait = 0.5 * ahead if told else min(near, 0.5 * ahead)
        else:
            wait = min(near, ahead + 0.1 / rate if ahead > 0 else 0.25 / rate)  # overdue: again soon
        return min(wait, longest)

    def seen(self, seq: int, now: float, estimate: float) -> None:
        """Our ``seq``-th submit is running or done: at least that many have started. Shared: the starts
        its last position counted came since, a first measure when they are many (the pilot's, say:
        waiting behind another runner's jobs, then running), and later a floor under the measure."""
        self.known = max(self.known, seq)
        last = self._answers.pop(seq, None) if self.shared else None
        if last is not None and self.head_rate is None and seq - last[0] >= RATE_STARTS and now > last[1]:
            starts, seconds = self._pooled[0] + seq - last[0], self._pooled[1] + now - last[1]
            self.head_rate, self._pooled = starts / seconds, (0.0, 0.0)  # (with the pool's: none lost)
        elif last is not None and self.head_rate and seq - last[0] >= 2 * RATE_STARTS and now > last[1]:
            # Many started ahead of it since: the account starts jobs at least that fast (a rate read
            # between two waves is low, and held probes back once the others' batch had ended).
            self.head_rate = max(self.head_rate, (seq - last[0]) / (now - last[1]))
        if seq > estimate:  # else it only bounds what is believed already
            self._moved(float(seq), now)

    def freed(self, when: float, submits: int) -> None:
        """A job of ours finished at ``when``: alone on the account, the slot it freed took the next job
        in the queue then. After the last observation that is one more start (in the order they
        happened, whatever order they are seen in); before it, the record of finishes places the
        start it made between the counts observed (:meth:`start_of`)."""
        if when > self.observed_at:
            if self.started + len(self.chain) < submits:
                bisect.insort(self.chain, when)
            return
        if not self.shared:  # (when shared, the start it made may have been another runner's)
            self._keep_finish(when)

    def rate_limited(self, submits: int, queue: int) -> None:
        """A 429 on a submit: the queue is taken as full, ``queue`` of our ``submits`` waiting in it."""
        self.saturated = True
        self.started = min(self.started, float(max(0, submits - queue)))

    def _moved(self, started: float, now: float, *, still: bool = False) -> None:
        if started > self.started:
            self.rose_at = now
        if not self.shared:  # the finishes told of since the last observation, kept
            for when in self.chain:
                self._keep_finish(when)
        self.started, self.observed_at = started, now
        self.chain.clear()
        self._record(now, started, still=still)

    def _keep_finish(self, when: float) -> None:
        """Into the record of finishes (in order of time; they mostly come in it, so this is cheap).
        The oldest go past 8,192: only the jobs still live need theirs, and they started lately."""
        bisect.insort(self._freed, when)
        if len(self._freed) > 8192:
            del self._freed[:4096]

    def _record(self, when: float, started: float, *, still: bool) -> None:
        """``started`` had reached this value by ``when`` (kept in order: a later count, a later time);
        ``still``: a queue position read it, so no more had started by then (the next came after)."""
        times, counts, last = self._log_times, self._log_started, self._log_last
        while still and self.shared and counts and started < counts[-1]:
            del times[-1], counts[-1], last[-1]  # a later start was believed earlier than it came
        if counts and started <= counts[-1]:
            if still and started == counts[-1]:
                last[-1] = max(last[-1], when)
            return
        times.append(max(when, times[-1]) if times else when)
        counts.append(started)
        # Read off a position, no more had started by then; else (a job seen running, say) the count
        # is only a floor, and the last time fewer were surely started stands (:meth:`placed`).
        last.append(times[-1] if still or not last else last[-1])
        if len(times) > 8192:
            del times[:4096], counts[:4096], last[:4096]
            del self._freed[: bisect.bisect_right(self._freed, times[0])]
