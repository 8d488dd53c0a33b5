"""One simulated RunComfy account: its jobs, its queue and its bill, moved along lazily and exactly.

No task runs per job. The account keeps a heap of the running jobs' end times and a FIFO of queued
jobs; every call first *advances* it to "now": each running job whose end time has passed finishes at
that end time, and the next queued job starts at that same instant. The result is the same as a real
scheduler ticking continuously, at O(log n) per finished job, and time is whatever the caller's clock
says (tests pass a manual clock and are exact).

``queue_position`` is the true 1-based place among jobs still waiting. Queued jobs hold tickets in
arrival order; cancelled ones stay in the FIFO (skipped when they reach its head) and are counted in a
Fenwick tree, so a position is ``ticket - started - cancelled_before(ticket) + 1`` in O(log n).

Billing: a job's cost is charged when it is accepted; it is refunded if the job is cancelled while
queued (never billed) or fails (RunComfy does not charge failed generations, *inferred*).
Finished jobs are forgotten ``expire_seconds`` after they finish, and answer 404 from then on.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

IN_QUEUE, IN_PROGRESS = "in_queue", "in_progress"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
STATES = (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
FINISHED = frozenset((COMPLETED, FAILED, CANCELLED))


@dataclass(eq=False, slots=True)
class Job:
    """One accepted request, as the account sees it (times are the account clock's seconds)."""

    request_id: str
    model_id: str
    input: Any
    cost_micros: int  # charged in millionths of a USD, so totals are exact
    run_seconds: float
    will_fail: bool
    submitted_at: float
    state: str = IN_QUEUE
    ticket: int = -1  # place in arrival order among queued jobs; -1: never queued
    started_at: float | None = None
    finished_at: float | None = None
    outputs: int = 1  # how many output files it produces
    output_bytes: int = 0  # the size of each
    output_kind: str = "video"  # what they are: video, image or audio

    @property
    def billed_micros(self) -> int:
        """What this job costs now: nothing if it was cancelled while queued or failed."""
        return 0 if self.state in (CANCELLED, FAILED) else self.cost_micros


class _Marks:
    """How many of the tickets below ``t`` are marked: a Fenwick tree that grows by doubling."""

    def __init__(self) -> None:
        self._flags = bytearray(1024)
        self._tree = [0] * (len(self._flags) + 1)

    def mark(self, ticket: int) -> None:
        if ticket >= len(self._flags):
            self._grow(ticket)
        self._flags[ticket] = 1
        tree, i = self._tree, ticket + 1
        while i < len(tree):
            tree[i] += 1
            i += i & -i

    def below(self, ticket: int) -> int:
        tree, i, total = self._tree, min(ticket, len(self._flags)), 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    def _grow(self, ticket: int) -> None:
        size = len(self._flags)
        while size <= ticket:
            size *= 2
        self._flags.extend(bytes(size - len(self._flags)))
        tree = [0, *self._flags]  # linear-time build: push each node's sum to its parent
        for i in range(1, len(tree)):
            parent = i + (i & -i)
            if parent < len(tree):
                tree[parent] += tree[i]
        self._tree = tree


@dataclass
class Account:
    """The jobs of one account, a concurrency limit and a bill; every method takes the time as ``now``."""

    concurrency: int
    expire_seconds: float
    jobs: dict[str, Job] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)  # jobs by state, plus "expired"
    charged_micros: int = 0
    max_running: int = 0
    _running: list[tuple[float, int, Job]] = field(default_factory=list)  # heap of (end, seq, job)
    _queue: deque[Job] = field(default_factory=deque)
    _finished: deque[Job] = field(default_factory=deque)  # in finishing order, for expiry
    _cancelled: _Marks = field(default_factory=_Marks)
    _tickets: int = 0
    _started_from_queue: int = 0
    _seq: int = 0

    @property
    def running(self) -> int:
        return len(self._running)

    def advance(self, now: float) -> None:
        """Finish every job whose end has come, start queued ones in their place, forget expired ones."""
        running = self._running
        while running and running[0][0] <= now:
            end, _, job = heapq.heappop(running)
            self._finish(job, FAILED if job.will_fail else COMPLETED, end)
            self._fill(end)
        finished = self._finished
        while finished and finished[0].finished_at + self.expire_seconds <= now:  # type: ignore[operator]
            job = finished.popleft()
            del self.jobs[job.request_id]
            self.counts[job.state] -= 1
            self.counts["expired"] += 1

    def submit(self, job: Job, now: float) -> None:
        """Accept ``job`` at ``now``: it starts at once if a slot is free, else it waits its turn."""
        self.advance(now)
        self.jobs[job.request_id] = job
        self.charged_micros += job.cost_micros
        if len(self._running) < self.concurrency:
            self._start(job, now)
        else:
            job.state, job.ticket = IN_QUEUE, self._tickets
            self._tickets += 1
            self._queue.append(job)
            self.counts[IN_QUEUE] += 1

    def get(self, request_id: str, now: float) -> Job | None:
        """The job as it stands at ``now``, or None if unknown or expired."""
        self.advance(now)
        return self.jobs.get(request_id)

    def queue_position(self, job: Job) -> int | None:
        """1-based place of a queued job among those still waiting (call after :meth:`advance`)."""
        if job.state != IN_QUEUE:
            return None
        return job.ticket - self._started_from_queue - self._cancelled.below(job.ticket) + 1

    def cancel(self, job: Job, now: float) -> bool:
        """Cancel ``job`` if it is still queued (then it costs nothing); False if it is past that."""
        self.advance(now)
        if job.state != IN_QUEUE:
            return False
        self._cancelled.mark(job.ticket)
        self.counts[IN_QUEUE] -= 1
        self.counts[CANCELLED] += 1
        self._settle(job, CANCELLED, now)
        return True

    def set_concurrency(self, concurrency: int, now: float) -> None:
        """Change the limit; a higher one starts queued jobs at ``now``, a lower one lets running ones end."""
        self.advance(now)
        self.concurrency = concurrency
        self._fill(now)

    def _fill(self, at: float) -> None:
        while len(self._running) < self.concurrency and self._queue:
            job = self._queue.popleft()
            if job.state != IN_QUEUE:  # cancelled while it waited
                continue
            self._started_from_queue += 1
            self.counts[IN_QUEUE] -= 1
            self._start(job, at)

    def _start(self, job: Job, at: float) -> None:
        job.state, job.started_at = IN_PROGRESS, at
        self.counts[IN_PROGRESS] += 1
        self._seq += 1
        heapq.heappush(self._running, (at + job.run_seconds, self._seq, job))
        self.max_running = max(self.max_running, len(self._running))

    def _finish(self, job: Job, state: str, at: float) -> None:
        self.counts[IN_PROGRESS] -= 1
        self.counts[state] += 1
        self._settle(job, state, at)

    def _settle(self, job: Job, state: str, at: float) -> None:
        job.state, job.finished_at = state, at
        self.charged_micros -= job.cost_micros - job.billed_micros
        self._finished.append(job)


def fifo_makespan(run_seconds: Iterable[float], slots: int) -> float:
    """How long ``slots`` slots take to run jobs of these run times, sent at once in this order and
    each started on the first slot free: an account's queue with no scheduler's latency at all (what
    the benchmarks and the pacer's tests measure a runner against)."""
    free, end = [0.0] * slots, 0.0
    for seconds in run_seconds:
        start = heapq.heappop(free)
        heapq.heappush(free, start + seconds)
        end = max(end, start + seconds)
    return end
