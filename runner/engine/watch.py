"""Watching the requests in flight: poll each one when the pacer says it should be done, now and then
probe the newest for the length of RunComfy's queue, and act on what the answers say (running, done,
failed, gone, or past its deadline).

A poll asks ``/result``, which answers the live status until the request finishes and its outputs and
cost after: most jobs cost one poll. A request that finished goes to the collectors; one that ended
otherwise is journaled with its cause, and its twins end with it.

The answers are read by ``runner.api.answers``; the rules that need to know when things happened are
here, each bounded (``docs/api-answers.md``, the numbers in ``runner/defaults.py``): a 404 soon after
this run's submit is asked again, not taken for expiry; ``completed`` without outputs is polled again a
few times; a job that answers only words nobody knows is polled on, then given up.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable

import anyio
from anyio.abc import TaskGroup

from .. import defaults
from ..api.answers import CANCELLED, IN_QUEUE, RemoteState
from ..errors import AccountError, ApiError, ErrorRecord, RequestNotFound
from ..manifest.loader import Job
from .events import EventKind
from .flight import Live, Part, Parts
from .pacing import Track
from .polls import TOGETHER, PollQueue
from .settings import RunSettings
from .states import JobState

PROBE_GAP = 0.02  # seconds between probes asked for early by the slow start
MAX_POLL_BACKOFF = 60.0  # seconds: the longest wait before polling again after failed polls
DEADLINE_SLACK = 0.01  # seconds past a timeout that its poll comes (the timeout is passed, not met)
AGAIN_SOON = 0.5  # seconds before asking again about a 404 in its grace or a result without outputs


class Watcher(Part):
    """Polls the run's requests in flight and journals how each one lands."""

    def __init__(self, parts: Parts, settings: RunSettings) -> None:
        super().__init__(parts)
        self.settings = settings
        self.polls = PollQueue(parts.clock)
        self.unknown_words: set[str] = set()  # status words RunComfy answered that we do not know
        self.resubmits: Counter[str] = Counter()  # per job: --auto-resubmit-failed used so far
        self.run_started = time.time()  # the runner's wall clock at the start of this run (set by it)
        self._last_watched: float | None = None  # when an earlier run last journaled anything
        self.empty_results: Counter[str] = Counter()  # per job: `completed` answers without outputs
        self.puzzled: dict[str, tuple[float, int]] = {}  # per job: since when, how many unknown words
        self._poll_due = anyio.Event()
        self._asked_again: set[str] = set()  # jobs whose next poll the watcher set itself (a retry, a grace)
        self._probe_wake = anyio.Event()  # the probe loop looks again at when its next probe is due
        self._probe_due = 0.0  # when it sleeps until
        self._last_probe = parts.clock()
        self._early_probe: float | None = None  # a probe asked for early by the slow start, due then

    # -- what to poll, when ---------------------------------------------------------------------
    def reattach(self, job: Job, attempt_id: int, request_id: str, status: JobState) -> None:
        """Watch a request an earlier run submitted (polled at once)."""
        now = self._clock()
        track = Track(job.id, now)  # no place in this run's submits: it teaches the pacer nothing
        live = Live(job, attempt_id, request_id, track, status=status, unseen=True)
        self.flight.live[job.id] = live
        self.pacer.in_flight += 1
        self.schedule(live, now)

    def schedule(self, live: Live, when: float) -> None:
        deadline = poll_deadline(self.settings, live)  # a deferred poll still keeps the job's timeouts
        if self._clock() < deadline < when:
            when = deadline
        if self.polls.schedule(live, when):
            self._poll_due.set()

    def probe_soon(self) -> None:
        """The slow start's window is used up: a probe's answer may open it."""
        if self._early_probe is None:
            self._early_probe = self._clock() + PROBE_GAP  # at most one per gap, however fast answers come
            self._probe_wake.set()

    def drain(self, draining: bool) -> None:
        """Nothing left to submit: every poll is set again (the ones that may finish last, eagerly)."""
        self.pacer.draining = draining
        self._probe_wake.set()  # the probe gap depends on it (are ours queued behind the first ones?)
        if draining:
            self._set_again([live.track for live in self.flight.live.values()], self._clock())

    def _set_again(self, tracks: Iterable[Track], now: float) -> None:
        """These polls set again from what the pacer knows now (one may come sooner); not a retry's."""
        for track in tracks:
            live = self.flight.live.get(track.job_id)
            if live is not None and live.track is track and not live.polling and live.request_id:
                if live.job.id not in self._asked_again:  # a retry keeps its own delay
                    self.schedule(live, self.pacer.poll_due(track, now))

    def _learnt(self, now: float) -> None:
        """After an answer: polls of jobs now believed started are set again (all, once the last submit
        is: the run's end is known), the next probe may come sooner, and while submitting so may a submit."""
        started = self.pacer.take_started(now)
        if self.pacer.draining and self.pacer.last_submitted in started:
            started = [live.track for live in self.flight.live.values()]
        self._set_again(started, now)
        if max(self._last_probe, self.pacer.read_at) + self.pacer.probe_gap(now) < self._probe_due:
            self._probe_wake.set()
        if not self.pacer.draining:
            self.flight.wake()  # the count of starts may leave room for a submit

    async def poll_loop(self, tg: TaskGroup) -> None:
        """Start each poll when it is due, for as long as the run goes on; one the pacer set is looked at
        again first (it may know better by then, e.g. that the job has not started): it waits, free."""
        while True:
            now = self._clock()
            for live in self.polls.take_due(now, lambda live: self.flight.live.get(live.job.id) is live):
                if live.job.id in self._asked_again:
                    self._asked_again.discard(live.job.id)
                else:
                    when = min(self.pacer.poll_due(live.track, now), poll_deadline(self.settings, live))
                    if when > now + TOGETHER:
                        live.polling = False
                        self.schedule(live, when)
                        continue
                tg.start_soon(self.poll, live, False)
            self._poll_due = anyio.Event()
            first = self.polls.next_due()
            with anyio.move_on_after(first - now if first is not None else 1.0):
                await self._poll_due.wait()

    async def probe_loop(self, tg: TaskGroup) -> None:
        """Now and then poll the newest job RunComfy knows: its queue position is the queue's length, and
        the pacer says how often (``probe_gap``). In the slow start a full window asks for one at once
        (at most one per PROBE_GAP): the window doubles per round trip, not per probe interval."""
        while True:
            now = self._clock()
            due = max(self._last_probe, self.pacer.read_at) + self.pacer.probe_gap(now)
            if self._early_probe is not None:
                due = min(due, self._early_probe)
            if now < due:
                self._probe_due, self._probe_wake = due, anyio.Event()
                with anyio.move_on_after(due - now):
                    await self._probe_wake.wait()
                continue
            self._last_probe, self._early_probe = now, None
            for track in self.pacer.probe_order():
                live = self.flight.live.get(track.job_id)
                if live is None or live.track is not track or live.polling or live.request_id is None:
                    continue
                live.polling = True
                tg.start_soon(self.poll, live, True)
                break

    # -- one poll and its answer ----------------------------------------------------------------
    async def poll(self, live: Live, probe: bool = False) -> None:
        """Ask RunComfy about one request and act on the answer (a probe also teaches the pacer the
        queue); what this code did not expect fails that job alone, not the run (``on_crash``:
        :mod:`.isolation`)."""
        try:
            await self._ask(live, probe)
        except Exception as exc:  # noqa: BLE001 - handed on whole, traceback and all
            self._on_crash(live, exc, "poll")

    async def _ask(self, live: Live, probe: bool) -> None:
        job = live.job
        try:
            async with self.throttle.limiter:
                remote = await self.client.result(live.request_id or "")
        except AccountError as exc:
            live.polling = False
            self.flight.account_refused(exc)
            return
        except RequestNotFound as exc:
            if self._just_submitted(live):
                # RunComfy may not know a request for a moment after accepting it: not expiry yet.
                self._poll_again(live, exc, AGAIN_SOON * 2**live.failed_polls)
                return
            # RunComfy gave us this request id, so a 404 means it expired (e.g. it finished long before
            # this run came back to collect it): the job needs a new run, like expired outputs.
            why = "RunComfy no longer knows this request (its results expired); run the job again"
            self._finish(live, JobState.EXPIRED, error=exc.as_record().reworded(why))
            return
        except ApiError as exc:
            self._poll_again(live, exc, 2.0 * (live.failed_polls + 1))
            return
        self.throttle.succeeded()
        live.failed_polls = 0
        first_sight, live.unseen = live.unseen, False
        now = self._clock()
        if probe:  # (the submit loop is woken below, by _learnt or by an ending)
            self.pacer.on_probe(live.track, remote.status, remote.queue_position, now)
        if remote.terminal:
            self._landed(live, remote, now, self._unseen_end(live, remote) if first_sight else None)
            self._learnt(now)
            return
        if not remote.known:
            if remote.word not in self.unknown_words:
                self.unknown_words.add(remote.word)
                self._emit(EventKind.UNKNOWN_STATUS, job_id=job.id, status=remote.word)
            if puzzled_too_long(self.puzzled, job.id, now):
                why = f"RunComfy answered only {remote.word!r}, a word the runner does not know,"
                await self._give_up(live, "UnknownStatus", why, ask_cancel=True)
                return
        else:
            self.puzzled.pop(job.id, None)
        status = JobState.QUEUED if remote.status == IN_QUEUE else JobState.RUNNING
        if status != live.status or remote.label != live.remote_status:
            self.store.record_remote(
                job.id, live.attempt_id, status, remote.label, started=status == JobState.RUNNING
            )
            if status != live.status:
                self._emit(EventKind(status), job_id=job.id)
            live.status, live.remote_status = status, remote.label
        if deadline_passed(self.settings, live, now):
            queued = live.status == JobState.QUEUED
            await self._give_up(live, "Timeout", "job deadline passed", ask_cancel=queued)
            return
        live.polling = False
        self.schedule(live, self.pacer.on_polled(live.track, remote.status, remote.queue_position, now))
        self._learnt(now)

    def _poll_again(self, live: Live, exc: ApiError, delay: float) -> None:
        """A poll failed: say so and ask again after ``delay`` seconds (at most MAX_POLL_BACKOFF)."""
        live.polling = False
        live.failed_polls += 1
        self._emit(EventKind.POLL_ERROR, job_id=live.job.id, error=str(exc))
        self._asked_again.add(live.job.id)
        self.schedule(live, self._clock() + min(MAX_POLL_BACKOFF, delay))

    def _just_submitted(self, live: Live) -> bool:
        """Whether this run submitted the request within the grace in which a 404 is not expiry (a
        re-attached request was submitted some time ago: its 404 is expiry at once)."""
        waited = self._clock() - live.track.submitted_at
        return bool(live.track.seq) and waited < defaults.STATUS_NOT_FOUND_GRACE

    async def _give_up(self, live: Live, kind: str, why: str, *, ask_cancel: bool) -> None:
        """Stop watching a live request and fail its job; a cancel asked first is never billed if the
        request was still queued (a running one answers ``not_cancellable`` and runs on)."""
        outcome = "not asked"
        if ask_cancel:
            try:
                outcome = await self.client.cancel(live.request_id or "")
            except ApiError as exc:
                outcome = f"cancel failed: {exc}"
        record = ErrorRecord(kind, f"{why} while {live.status} (cancel: {outcome})")
        self._finish(live, JobState.FAILED, error=record)

    def _unseen_end(self, live: Live, remote: RemoteState) -> float:
        """When a request that ended while no runner watched it ended, for its run time: RunComfy's own
        timestamps (their difference, laid from our submit: the clocks need not agree), else the last
        moment an earlier run was there to see it. Never later than now, never before it started."""
        now = time.time()
        submitted, started = self.store.attempt_times(live.attempt_id)
        start = started or submitted or now
        created, finished = remote.created_at, remote.finished_at  # Unix seconds, read at the API edge
        if submitted and created is not None and finished is not None and finished >= created:
            end = submitted + (finished - created)
        else:
            if self._last_watched is None:
                self._last_watched = self.store.last_activity(0.0, self.run_started) or start
            end = self._last_watched
        return min(now, max(start, end))

    def _landed(self, live: Live, remote: RemoteState, now: float, ended_at: float | None = None) -> None:
        job = live.job
        if remote.succeeded:
            if not remote.outputs:
                seen = self.empty_results[job.id] = self.empty_results[job.id] + 1
                if seen <= defaults.EMPTY_RESULT_POLLS:
                    # The result may say completed a moment before its outputs are filled in.
                    live.polling = False
                    self._asked_again.add(job.id)
                    self.schedule(live, now + AGAIN_SOON * 2 ** (seen - 1))
                    return
                why = f"RunComfy said {remote.word!r} but gave no output URI ({seen} answers)"
                self._finish(
                    live, JobState.FAILED, remote, error=ErrorRecord("NoOutput", why), ended_at=ended_at
                )
                return
            self.store.record_remote(
                job.id,
                live.attempt_id,
                JobState.COLLECTING,
                remote.label,
                finished=True,
                finished_at=ended_at,
                cost=remote.cost_usd,
                outputs=remote.outputs,
            )
            self.budget.settle(job, remote.cost_usd)
            self._emit(EventKind.COMPLETED, job_id=job.id, cost_usd=remote.cost_usd)
            self.pacer.on_finished(live.track, now, remote.created_at, remote.finished_at)
            self._forget(job.id)
            self.collector.seen_finishing.add(job.id)
            self.flight.collect(job.id)
            return
        if remote.status == CANCELLED:
            cancelled = ErrorRecord("Cancelled", "cancelled at RunComfy")
            self._finish(live, JobState.CANCELLED, remote, error=cancelled, ended_at=ended_at)
            return
        self._finish(live, JobState.FAILED, remote, error=ErrorRecord.remote(remote.error), ended_at=ended_at)
        if self.resubmits[job.id] < self.settings.auto_resubmit_failed and not self.flight.stop_reason:
            self.resubmits[job.id] += 1
            self.store.set_status(job.id, JobState.PENDING)
            self.flight.to_submit.append(job.id)
            self._emit(EventKind.RESUBMIT, job_id=job.id, attempt=self.resubmits[job.id])

    def _finish(
        self,
        live: Live,
        state: JobState,
        remote: RemoteState | None = None,
        *,
        error: ErrorRecord,
        ended_at: float | None = None,
    ) -> None:
        """The request ended without outputs to collect: journal why (and when it ended, if not now),
        settle its cost, free its slot."""
        cost = remote.cost_usd if remote is not None else None
        if remote is not None and remote.status == CANCELLED:
            cost = 0.0 if cost is None else cost
        self.store.record_error(live.job.id, live.attempt_id, state, error, cost=cost, finished_at=ended_at)
        self.budget.settle(live.job, cost)
        self.pacer.on_finished(
            live.track,
            self._clock(),
            remote.created_at if remote else None,
            remote.finished_at if remote else None,
        )
        self._forget(live.job.id)
        self.collector.fail_twins(live.job.id, state, error)
        self._emit(EventKind(state), job_id=live.job.id, error=error.message, cost_usd=cost)
        self.flight.wake()

    def _forget(self, job_id: str) -> None:
        """The request is no longer live: nothing about it is watched any more."""
        self.flight.live.pop(job_id, None)
        self.empty_results.pop(job_id, None)
        self.puzzled.pop(job_id, None)
        self._asked_again.discard(job_id)


def puzzled_too_long(puzzled: dict[str, tuple[float, int]], job_id: str, now: float) -> bool:
    """Count one more answer in a word nobody knows; whether the job has answered only such words
    for UNKNOWN_STATUS_PATIENCE seconds and UNKNOWN_STATUS_MIN_POLLS polls."""
    since, polls = puzzled.get(job_id, (now, 0))
    puzzled[job_id] = (since, polls + 1)
    return now - since >= defaults.UNKNOWN_STATUS_PATIENCE and polls + 1 >= defaults.UNKNOWN_STATUS_MIN_POLLS


def poll_deadline(settings: RunSettings, live: Live) -> float:
    """The latest a job's poll may come to keep ``--job-timeout``, and ``--queue-timeout`` while it
    may be queued: the pacer defers the polls of jobs it believes queued, not their deadlines."""
    at = math.inf
    if settings.job_timeout is not None:
        at = live.track.submitted_at + settings.job_timeout
    if settings.queue_timeout is not None and live.status != JobState.RUNNING:
        at = min(at, live.track.submitted_at + settings.queue_timeout)
    return at + DEADLINE_SLACK


def deadline_passed(settings: RunSettings, live: Live, now: float) -> bool:
    """Whether the job has waited past ``--job-timeout``, or queued past ``--queue-timeout``."""
    waited = now - live.track.submitted_at
    if settings.job_timeout is not None and waited > settings.job_timeout:
        return True
    queued = live.status == JobState.QUEUED
    return settings.queue_timeout is not None and queued and waited > settings.queue_timeout
