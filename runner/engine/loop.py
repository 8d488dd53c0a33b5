"""One run of a manifest: submit, track, collect, with the journal always ahead of the network.

The scheduler owns one task group, the HTTP limiter and the pacer; the HTTP session is passed in
(inside the API client). Its order of work on every start is the resume contract:

1. sync the manifest into the state (new/changed/removed jobs), turn interrupted submits into
   ``unknown``, check finished outputs on disk;
2. re-attach to every request whose ``request_id`` is recorded (never submit those again);
3. only then submit what remains, each intent committed before its POST leaves.

Transient API trouble is retried inside the client; what is left here are the outcomes.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .. import defaults
from ..api.client import KNOWN_LIVE, RemoteState, RunComfyClient
from ..api.download import DownloadConfig, Fsync, download, file_names
from ..catalog.pricing import PriceTable
from ..disk import copy_whole
from ..errors import (
    EXIT_AUTH,
    EXIT_BALANCE,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    AccountError,
    ApiError,
    BalanceError,
    BudgetExceeded,
    InputRejected,
    OutputHostRefused,
    RateLimited,
    RequestNotFound,
    SubmitUnknown,
    TransportError,
)
from ..manifest.loader import Job, Manifest
from ..manifest.snapshot import META_KEY, Snapshot
from . import store as S
from .outputs import damaged_outputs
from .pacing import Pacer, Track


@dataclass(frozen=True)
class RunSettings:
    """How a run behaves; a run's is built from its ``BatchOptions`` by ``runner.batch.configure``."""

    max_in_flight: int | None = None  # --concurrency: cap on submitted-but-unfinished jobs
    http_concurrency: int = defaults.HTTP_CONCURRENCY  # API calls at once (lowered on 429s)
    download_concurrency: int = defaults.DOWNLOAD_CONCURRENCY
    resubmit_unknown: bool = False
    retry_failed: bool = False
    auto_resubmit_failed: int = defaults.AUTO_RESUBMIT_FAILED  # per job RunComfy reports failed; paid
    budget_usd: float | None = None
    budget_partial: bool = False
    job_timeout: float | None = defaults.JOB_TIMEOUT
    queue_timeout: float | None = None
    verify_hashes: bool = False
    flush_interval: float = defaults.FLUSH_INTERVAL
    handle_signals: bool = False
    download: DownloadConfig = field(default_factory=DownloadConfig)


@dataclass
class RunResult:
    """What a run did: final counts per state and the exit code it implies."""

    counts: dict[str, int]
    exit_code: int
    message: str
    cost_usd: float
    wall_seconds: float
    stopped_by: str | None = None


Event = dict[str, Any]
EventSink = Callable[[Event], None]


@dataclass(eq=False)
class Live:
    """A request in flight, as the scheduler tracks it."""

    job: Job
    attempt_id: int
    request_id: str | None
    track: Track
    status: str = S.QUEUED
    remote_status: str = ""
    polling: bool = False
    failed_polls: int = 0
    resubmit: bool = False  # this attempt resubmits a job whose earlier submit was unknown
    due: float = 0.0  # when its next poll is scheduled (older entries in the poll heap are stale)


PROBE_GAP = 0.02  # seconds between probes asked for early by the slow start


class Runner:
    """Runs one manifest against one state file through one API client."""

    def __init__(
        self,
        manifest: Manifest,
        store: S.Store,
        client: RunComfyClient,
        prices: PriceTable,
        settings: RunSettings,
        *,
        defaults_for: Callable[[str], Mapping[str, Any]] | None = None,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manifest = manifest
        self.store = store
        self.client = client
        self.prices = prices
        self._estimates: dict[str, float | None] = {}
        self.settings = settings
        self.defaults_for = defaults_for or (lambda model: {})
        self.on_event = on_event
        self.clock = clock
        self.jobs = {job.id: job for job in manifest.jobs}
        self.pacer = Pacer(max_in_flight=settings.max_in_flight)
        self.http_limit = anyio.CapacityLimiter(settings.http_concurrency)
        # Finished jobs wait here for one of ``download_concurrency`` collectors: when downloads fall
        # behind (100,000 fast jobs), a waiting job costs a queue entry, not a task of its own.
        self._to_collect, self._collect_queue = anyio.create_memory_object_stream[str](math.inf)
        self.to_submit: deque[str] = deque()
        self.live: dict[str, Live] = {}
        self.collecting: set[str] = set()
        self.followers: dict[str, list[str]] = {}
        self.resubmits: Counter[str] = Counter()
        self._unknown: set[str] = set()  # jobs whose last submit is unknown: the next one resubmits knowingly
        self.polls: list[tuple[float, int, Live]] = []
        self._seq = itertools.count()
        self.wake = anyio.Event()
        self._poll_due = anyio.Event()
        self._probe_now = anyio.Event()
        self._fsync = Fsync()
        self.stop_reason: str | None = None
        self.fatal: ApiError | None = None
        self.balance_hit: BalanceError | None = None
        self.committed_usd = 0.0
        self.unknown_words: set[str] = set()
        self._last_429 = 0.0
        self._rng = random.Random()
        self._ok_streak = 0

    # -- events -----------------------------------------------------------------------------------
    def emit(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event({"event": kind, "time": time.time(), **data})

    def _wake(self) -> None:
        self.wake.set()

    # -- preparing ----------------------------------------------------------------------------------
    def estimate(self, job: Job) -> float | None:
        """The job's price from the current table (kept per job until the table changes)."""
        try:
            return self._estimates[job.id]
        except KeyError:
            quote = self.prices.quote(job.model, job.input, self.defaults_for(job.model))
            self._estimates[job.id] = quote.usd
            return quote.usd

    def prepare(self) -> S.SyncSummary:
        """Sync the manifest, recover interrupted submits, check outputs, and plan the work."""
        estimates = {job.id: self.estimate(job) for job in self.manifest.jobs}
        twins = twin_map(self.manifest.jobs)
        summary = self.store.sync_manifest(self.manifest.jobs, estimates, twins)
        snapshot = Snapshot.of(self.manifest)
        if snapshot is not None:  # the state's jobs are now this manifest's: status can trust them
            self.store.set_meta(META_KEY, snapshot.to_json())
        self.store.recover_interrupted()
        self.committed_usd = committed_spend(self.store)
        self._check_outputs()
        rows = self.store.states()
        self._unknown = {job_id for job_id, (status, _, _) in rows.items() if status == S.UNKNOWN}
        for job in self.manifest.jobs:
            status, attempt_id, request_id = rows[job.id]
            if status in (S.QUEUED, S.RUNNING) and request_id:
                self._track(job, attempt_id or 0, request_id, status, resumed=True)
            elif status == S.COLLECTING and attempt_id is not None:
                self.collecting.add(job.id)
            elif self._runs_now(status):
                leader = twins.get(job.id)
                if leader is None:
                    self.to_submit.append(job.id)
                    continue
                lead = rows[leader][0]
                if lead == S.SUCCEEDED or lead in S.IN_FLIGHT or self._runs_now(lead):
                    self.followers.setdefault(leader, []).append(job.id)
                    if lead == S.SUCCEEDED:
                        self._copy_to_followers(leader)
                else:
                    # The leader rests (unknown, failed...) and is not run this time. Submitting its twin
                    # would pay again for the same request, maybe twice if the leader's was accepted.
                    why = {"type": "Twin", "message": f"same request as {leader}, which is {lead}"}
                    self.store.set_status(job.id, lead, why)
        self._check_budget_at_start()
        self.store.flush()
        return summary

    def _runs_now(self, status: str) -> bool:
        return runs_now(status, self.settings)

    def _check_outputs(self) -> None:
        """Finished jobs whose files are missing or changed go back to collecting (or expire)."""
        for job_id in damaged_outputs(
            self.store, self.manifest.output_dir, verify_hashes=self.settings.verify_hashes
        ):
            self.store.set_status(job_id, S.COLLECTING)
            self.emit("refetch", job_id=job_id)

    def _check_budget_at_start(self) -> None:
        budget = self.settings.budget_usd
        if budget is None:
            return
        remaining = [self.estimate(self.jobs[j]) for j in self.to_submit]
        if any(e is None for e in remaining) and not self.settings.budget_partial:
            raise BudgetExceeded(
                "a budget is set but some models have no known price; "
                "add them to a --prices file or run with --budget-partial"
            )
        total = self.committed_usd + sum(e or 0.0 for e in remaining)
        if total > budget + 1e-9 and not self.settings.budget_partial:
            raise BudgetExceeded(
                f"the estimate for this run is ${total:.2f} (${self.committed_usd:.2f} already committed), "
                f"over the budget of ${budget:.2f}; raise --budget or run with --budget-partial"
            )

    # -- running --------------------------------------------------------------------------------
    async def run(self) -> RunResult:
        started = time.monotonic()
        run_id = self.store.start_run("run")
        self.prepare()
        await self._refresh_prices()
        # Enough for a progress display to place every job before the first job event arrives.
        self.emit(
            "start",
            jobs=len(self.manifest.jobs),
            to_submit=len(self.to_submit),
            reattached=len(self.live),
            collecting=len(self.collecting),
            waiting=len(self.to_submit) + sum(len(f) for f in self.followers.values()),
            counts=self.store.counts(),
            spent_usd=spent(self.store),
            http=self.settings.http_concurrency,
            max_in_flight=self.settings.max_in_flight,
        )
        interrupted = False
        try:
            # The signal receiver lives outside the work's task group: the first signal cancels the
            # work, and the receiver stays installed to catch a second one (never a KeyboardInterrupt
            # between two writes of one journal update).
            async with anyio.create_task_group() as watch:
                if self.settings.handle_signals:
                    watch.start_soon(self._signals)
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._flusher)
                    for job_id in sorted(self.collecting):
                        self._to_collect.send_nowait(job_id)
                    for _ in range(self.settings.download_concurrency):
                        tg.start_soon(self._collector)
                    tg.start_soon(self._poller)
                    tg.start_soon(self._prober)
                    await self._drive()
                    tg.cancel_scope.cancel()
                watch.cancel_scope.cancel()
        except KeyboardInterrupt:  # pragma: no cover - only without handle_signals
            interrupted = True
        if self.stop_reason == "signal":
            interrupted = True
        self.store.flush()
        result = self._result(time.monotonic() - started, interrupted)
        self.store.finish_run(run_id, result.exit_code, result.counts)
        self.emit("finish", counts=result.counts, exit_code=result.exit_code, cost_usd=result.cost_usd)
        return result

    async def _wait_wake(self, timeout: float) -> None:
        with anyio.move_on_after(max(0.0, timeout)):
            await self.wake.wait()
        self.wake = anyio.Event()

    async def _flusher(self) -> None:
        while True:
            await anyio.sleep(self.settings.flush_interval)
            self.store.flush()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if self.stop_reason == "signal":
                    # Second Ctrl-C: leave now. This task runs between other tasks' steps, so every
                    # journal update is whole and committing them keeps the state consistent; a submit
                    # still on the wire stays 'submitting' and is reported unknown on the next run.
                    self.store.flush()
                    self.emit("stopping", reason="interrupted again: stopped at once")
                    sys.stderr.write(
                        "runcomfy-batch: stopped at once; run the same command again to resume "
                        "(submits that were on the wire become unknown)\n"
                    )
                    sys.stderr.flush()
                    os._exit(EXIT_INTERRUPTED)
                self.stop_reason = "signal"
                self.emit(
                    "stopping",
                    reason="interrupted: finishing in-flight submits, then stopping "
                    "(Ctrl-C again to stop at once)",
                )
                self._tg.cancel_scope.cancel()

    # -- submitting -----------------------------------------------------------------------------
    async def _drive(self) -> None:
        """Submit while the pacer allows, until nothing is left to submit, poll or collect."""
        while self.fatal is None:
            submittable = bool(self.to_submit) and not self.stop_reason
            if self.pacer.draining == submittable:
                self._set_draining(not submittable)
            if not (submittable or self.live or self.collecting):
                return
            now = self.clock()
            batch: list[Live] = []
            while submittable and self.to_submit and self.pacer.may_submit(now) and len(batch) < 64:
                live = self._start_attempt(self.jobs[self.to_submit.popleft()], now)
                if live is not None:
                    batch.append(live)
            if batch:
                for live in batch:
                    self._tg.start_soon(self._submit_one, live)
                continue
            await self._wait_wake(self.pacer.probe_interval if submittable else 1.0)

    def _set_draining(self, draining: bool) -> None:
        """Once nothing is left to submit, a finish noticed late delays the end of the run (no queued
        job takes the slot any more): the pacer polls eagerly, starting with every live job now."""
        self.pacer.draining = draining
        if draining:
            now = self.clock()
            for live in self.live.values():
                if not live.polling:
                    self._schedule(live, self.pacer.eager_poll(live.track, now))

    def _start_attempt(self, job: Job, now: float) -> Live | None:
        estimate = self.estimate(job)
        budget = self.settings.budget_usd
        if budget is not None and (estimate is None or self.committed_usd + estimate > budget + 1e-9):
            self.store.set_status(job.id, S.HELD, {"message": "held by the budget cap", "type": "BudgetHeld"})
            self.emit("held", job_id=job.id, estimate_usd=estimate)
            return None
        self.committed_usd += estimate or 0.0
        track = Track(job.id, now)
        live = Live(job, 0, None, track, status=S.SUBMITTING)  # its attempt is journaled in _submit_one
        self.pacer.on_submitted(track, now)
        live.polling = True  # not pollable until its request id is known
        self.live[job.id] = live
        return live

    def _record_intent(self, live: Live) -> None:
        """Journal the attempt; the caller commits it (then a death of this process is an unknown)."""
        job = live.job
        live.resubmit = job.id in self._unknown
        input_json = json.dumps(job.input, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        live.attempt_id = self.store.record_intent(
            job.id,
            job.fingerprint,
            job.model,
            input_json,
            self.estimate(job),
            resubmit_of_unknown=live.resubmit,
        )

    async def _commit_soon(self) -> None:
        """Commit what is journaled, sharing the commit with every task that journals in this same
        turn of the event loop (a burst of submits): each returns only once its own writes are
        committed. The yield cannot be cancelled, so it opens no new way to stop between two steps."""
        await anyio.lowlevel.cancel_shielded_checkpoint()
        self.store.flush()

    async def _submit_one(self, live: Live) -> None:
        job = live.job
        try:
            # The intent is journaled only once a connection slot is ours, right before the POST: a run
            # killed while jobs wait for a slot leaves them pending (they were never sent), not unknown.
            # The wait is not shielded, so a stop before the POST leaves sends nothing.
            async with self.http_limit:
                if self.stop_reason or self.fatal is not None:
                    self._drop(live, refund=True)
                    return
                self._record_intent(live)
                await self._commit_soon()
                if self.pacer.on_sent(live.track, self.clock()):
                    self._wake()  # a connection is ours: a submit held back may wait for one in its place
                try:
                    # The client shields each POST until its answer: a stop never abandons one on the
                    # wire. What a stop can cut short is the backoff between tries, and a try is only
                    # repeated when it surely did not reach RunComfy.
                    request_id = await self.client.submit(job.model, job.input)
                except ApiError as exc:
                    self._submit_failed(live, exc)
                    return
                live.request_id = request_id
                live.status = S.QUEUED
                self._unknown.discard(job.id)
                self.store.record_submitted(job.id, live.attempt_id, request_id)
                await self._commit_soon()  # the request id is durable at once: the unknown window stays tiny
        except anyio.get_cancelled_exc_class():
            if live.attempt_id and live.request_id is None:
                # Stopped while waiting to retry a submit that was not taken (429, refused): not sent.
                self.store.record_error(
                    job.id,
                    live.attempt_id,
                    "not_sent",
                    {"type": "Stopped", "message": "the run stopped before this submit could be retried"},
                )
                self.store.set_status(job.id, S.UNKNOWN if live.resubmit else S.PENDING)
            if live.request_id is None:
                self._drop(live, refund=True)
            raise
        self._ok()
        if self.pacer.window_full():
            self._probe_now.set()
        self.emit("submitted", job_id=job.id, request_id=request_id)
        live.polling = False
        self._schedule(live, self.pacer.expected_done(live.track, self.clock()))

    def _submit_failed(self, live: Live, exc: ApiError) -> None:
        job = live.job
        # A job that was unknown before this attempt stays unknown when the attempt surely did not
        # reach RunComfy, so its next attempt is still marked as a knowing resubmission.
        at_rest = S.UNKNOWN if live.resubmit else S.PENDING
        if isinstance(exc, SubmitUnknown):
            self._drop(live)
            self.store.record_error(job.id, live.attempt_id, S.UNKNOWN, exc.as_record())
            self._unknown.add(job.id)
            self.emit("unknown", job_id=job.id, error=str(exc))
            self._fail_followers(job.id, S.UNKNOWN, exc.as_record())
        elif isinstance(exc, InputRejected):
            self._drop(live, refund=True)
            self.store.record_error(job.id, live.attempt_id, S.FAILED, exc.as_record())
            self.emit("failed", job_id=job.id, error=str(exc), stage="submit")
            self._fail_followers(job.id, S.FAILED, exc.as_record())
        elif isinstance(exc, AccountError):  # BalanceError included
            self._drop(live, refund=True)
            self.store.record_error(job.id, live.attempt_id, "refused", exc.as_record())
            self.store.set_status(job.id, at_rest)
            self._account_error(exc)
        elif isinstance(exc, RateLimited | TransportError):
            # Surely not accepted (429 or never connected), retries exhausted: back in line.
            self._drop(live, refund=True)
            self.store.record_error(job.id, live.attempt_id, "not_sent", exc.as_record())
            self.store.set_status(job.id, at_rest)
            self.to_submit.append(job.id)
            self.pacer.on_rate_limited()
            self._slow_down()
            self.emit("retry", job_id=job.id, error=str(exc))
        else:
            # Any other answer to a submit (the client turns 5xx into SubmitUnknown): not accepted.
            self._drop(live, refund=True)
            self.store.record_error(job.id, live.attempt_id, S.FAILED, exc.as_record())
            self.emit("failed", job_id=job.id, error=str(exc), stage="submit")
            self._fail_followers(job.id, S.FAILED, exc.as_record())

    def _drop(self, live: Live, *, refund: bool = False) -> None:
        """A submit that created no live request: forget it in the pacer and the in-flight spend."""
        self.live.pop(live.job.id, None)
        self.pacer.on_dropped(live.track)
        if refund:
            self.committed_usd -= self.estimate(live.job) or 0.0
        self._wake()

    def _account_error(self, exc: AccountError) -> None:
        if isinstance(exc, BalanceError):
            if self.balance_hit is None:
                self.emit("stopping", reason=str(exc))
            self.balance_hit = exc
            self.stop_reason = self.stop_reason or "balance"
        else:
            self.fatal = exc
            self.stop_reason = "auth"
            self.emit("stopping", reason=str(exc))
            self._tg.cancel_scope.cancel()
        self._wake()

    # -- AIMD on 429 ----------------------------------------------------------------------------
    def _slow_down(self) -> None:
        now = self.clock()
        if now - self._last_429 < 1.0:
            return
        self._last_429 = now
        self._ok_streak = 0
        total = max(1, int(self.http_limit.total_tokens) // 2)
        self.http_limit.total_tokens = total
        self.emit("concurrency", http=total, reason="rate limited (429)")

    def _ok(self) -> None:
        self._ok_streak += 1
        total = int(self.http_limit.total_tokens)
        if total < self.settings.http_concurrency and self._ok_streak >= total:
            self._ok_streak = 0
            self.http_limit.total_tokens = total + 1
            self.emit("concurrency", http=total + 1, reason="recovering")

    def on_retry(self, error: ApiError, delay: float, attempt: int) -> None:
        """Called by the client before each retry of a safe call."""
        if isinstance(error, RateLimited):
            self._slow_down()
        self.emit("retry", error=str(error), delay=round(delay, 3), attempt=attempt)

    # -- polling --------------------------------------------------------------------------------
    def _track(self, job: Job, attempt_id: int, request_id: str, status: str, *, resumed: bool) -> None:
        now = self.clock()
        track = Track(job.id, now)  # no place in this run's submits: it teaches the pacer nothing
        live = Live(job, attempt_id, request_id, track, status=status)
        self.live[job.id] = live
        self.pacer.in_flight += 1
        self._schedule(live, now)

    async def _refresh_prices(self) -> None:
        """Ask the API for the price of each model about to be submitted (one call per model): where it
        answers, it is fresher than the bundled table. Estimates already journaled stay as they were."""
        for model in sorted({self.jobs[j].model for j in self.to_submit}):
            answer = await self.client.price(model)
            if answer is not None:
                self.prices = self.prices.refreshed(model, answer)
                self._estimates.clear()
                self.emit(
                    "price", model=model, usd=answer.get("base_price_usd"), unit=answer.get("price_unit")
                )

    def _schedule(self, live: Live, when: float) -> None:
        # A little jitter keeps polls of jobs submitted together from arriving together.
        now = self.clock()
        if when > now:
            when = now + (when - now) * self._rng.uniform(1.0, 1.05)
        live.due = when
        heapq.heappush(self.polls, (when, next(self._seq), live))
        if self.polls[0][2] is live:
            self._poll_due.set()

    async def _poller(self) -> None:
        while True:
            now = self.clock()
            # Polls due within a few milliseconds go out together: fewer wake-ups, same latency.
            while self.polls and self.polls[0][0] <= now + 0.005:
                when, _, live = heapq.heappop(self.polls)
                if live.polling or when != live.due or self.live.get(live.job.id) is not live:
                    continue
                live.polling = True
                self._tg.start_soon(self._poll, live, False)
            self._poll_due = anyio.Event()
            with anyio.move_on_after(self.polls[0][0] - now if self.polls else 1.0):
                await self._poll_due.wait()

    async def _prober(self) -> None:
        """Now and then poll the most recently submitted job RunComfy knows: its queue position (plus
        the jobs submitted after it) is the length of the queue. During the slow start, a submit answered
        while the window is used up asks for a probe at once (at most one per PROBE_GAP): the window
        doubles per round trip, not per probe interval."""
        while True:
            with anyio.move_on_after(self.pacer.probe_interval):
                await self._probe_now.wait()
                await anyio.sleep(PROBE_GAP)  # at most one early probe per gap, however fast answers come
            self._probe_now = anyio.Event()
            for track in self.pacer.probe_candidates():
                live = self.live.get(track.job_id)
                if live is None or live.track is not track or live.polling or live.request_id is None:
                    continue
                live.polling = True
                self._tg.start_soon(self._poll, live, True)
                break

    async def _poll(self, live: Live, probe: bool) -> None:
        job = live.job
        try:
            async with self.http_limit:
                remote = await self.client.result(live.request_id or "")
        except AccountError as exc:
            live.polling = False
            self._account_error(exc)
            return
        except RequestNotFound as exc:
            # RunComfy gave us this request id, so a 404 means it expired (e.g. it finished long before
            # this run came back to collect it): the job needs a new run, like expired outputs.
            self._finish(
                live,
                S.EXPIRED,
                error={
                    **exc.as_record(),
                    "message": "RunComfy no longer knows this request (its results expired); "
                    "run the job again",
                },
            )
            return
        except ApiError as exc:
            live.polling = False
            live.failed_polls += 1
            self.emit("poll_error", job_id=job.id, error=str(exc))
            self._schedule(live, self.clock() + min(60.0, 2.0 * live.failed_polls))
            return
        self._ok()
        live.failed_polls = 0
        now = self.clock()
        if probe:
            self.pacer.on_probe(live.track, remote.status, remote.queue_position, now)
            self._wake()
        if remote.terminal:
            self._landed(live, remote, now)
            return
        if remote.status not in KNOWN_LIVE and remote.status not in self.unknown_words:
            self.unknown_words.add(remote.status)
            self.emit("unknown_status", job_id=job.id, status=remote.status)
        status = S.QUEUED if remote.status == "in_queue" else S.RUNNING
        if status != live.status or remote.status != live.remote_status:
            self.store.record_remote(
                job.id, live.attempt_id, status, remote.status, started=status == S.RUNNING
            )
            if status != live.status:
                self.emit(status, job_id=job.id)
            live.status, live.remote_status = status, remote.status
        if self._deadline_passed(live, now):
            await self._time_out(live)
            return
        live.polling = False
        self._schedule(live, self.pacer.on_polled(live.track, remote.status, remote.queue_position, now))

    def _deadline_passed(self, live: Live, now: float) -> bool:
        waited = now - live.track.submitted_at
        if self.settings.job_timeout is not None and waited > self.settings.job_timeout:
            return True
        return (
            self.settings.queue_timeout is not None
            and live.status == S.QUEUED
            and waited > self.settings.queue_timeout
        )

    async def _time_out(self, live: Live) -> None:
        outcome = "not asked"
        if live.status == S.QUEUED:
            try:
                outcome = await self.client.cancel(live.request_id or "")
            except ApiError as exc:
                outcome = f"cancel failed: {exc}"
        self._finish(
            live,
            S.FAILED,
            error={
                "type": "Timeout",
                "message": f"job deadline passed while {live.status} (cancel: {outcome})",
            },
        )

    def _landed(self, live: Live, remote: RemoteState, now: float) -> None:
        job = live.job
        if remote.succeeded:
            if not remote.outputs:
                self._finish(
                    live, S.FAILED, remote, error={"type": "NoOutput", "message": "result has no outputs"}
                )
                return
            self.store.record_remote(
                job.id,
                live.attempt_id,
                S.COLLECTING,
                remote.status,
                finished=True,
                cost=remote.cost_usd,
                outputs=remote.outputs,
            )
            self._settle_cost(job, remote.cost_usd)
            self.emit("completed", job_id=job.id, cost_usd=remote.cost_usd)
            self.pacer.on_finished(live.track, now, remote.created_at, remote.finished_at)
            self.live.pop(job.id, None)
            self.collecting.add(job.id)
            self._to_collect.send_nowait(job.id)
            self._wake()
            return
        if remote.status == "cancelled":
            self._finish(
                live, S.CANCELLED, remote, error={"type": "Cancelled", "message": "cancelled at RunComfy"}
            )
            return
        error = dict(remote.error or {"error_message": "RunComfy reported the job failed"})
        error.setdefault("type", "RemoteFailure")
        error.setdefault("message", str(error.get("error_message", "failed")))
        self._finish(live, S.FAILED, remote, error=error)
        if self.resubmits[job.id] < self.settings.auto_resubmit_failed and not self.stop_reason:
            self.resubmits[job.id] += 1
            self.store.set_status(job.id, S.PENDING)
            self.to_submit.append(job.id)
            self.emit("resubmit", job_id=job.id, attempt=self.resubmits[job.id])

    def _finish(
        self, live: Live, status: str, remote: RemoteState | None = None, *, error: Mapping[str, Any]
    ) -> None:
        cost = remote.cost_usd if remote is not None else None
        if remote is not None and remote.status == "cancelled":
            cost = 0.0 if cost is None else cost
        self.store.record_error(live.job.id, live.attempt_id, status, error, cost=cost)
        self._settle_cost(live.job, cost)
        self.pacer.on_finished(
            live.track,
            self.clock(),
            remote.created_at if remote else None,
            remote.finished_at if remote else None,
        )
        self.live.pop(live.job.id, None)
        self._fail_followers(live.job.id, status, error)
        self.emit(status, job_id=live.job.id, error=error.get("message"), cost_usd=cost)
        self._wake()

    def _settle_cost(self, job: Job, actual: float | None) -> None:
        """Replace the job's estimate in committed spend with what RunComfy charged."""
        if actual is not None:
            self.committed_usd += actual - (self.estimate(job) or 0.0)

    # -- collecting -----------------------------------------------------------------------------
    async def _collector(self) -> None:
        async for job_id in self._collect_queue:
            await self._collect(job_id)

    async def _collect(self, job_id: str) -> None:
        attempt = self.store.current_outputs(job_id)
        if attempt is None or not attempt[1]:
            self.collecting.discard(job_id)
            self.store.set_status(job_id, S.FAILED, {"type": "NoOutput", "message": "no outputs recorded"})
            self._wake()
            return
        attempt_id, urls = attempt
        folder = self.manifest.output_dir / job_id
        try:
            # Downloads are bounded by the collectors, not the API's limiter: a long one must not hold
            # a slot that polls and submits need (and the API's 429s say nothing about the file host).
            for idx, (url, name) in enumerate(zip(urls, file_names(urls), strict=True)):
                got = await download(
                    self.client.http,
                    url,
                    folder / name,
                    self.settings.download,
                    on_retry=self.on_retry,
                    fsync=self._fsync,
                )
                rel = got.path.relative_to(self.manifest.output_dir).as_posix()
                self.store.record_output(
                    job_id, attempt_id, idx, url, rel, got.size, got.sha256, got.mtime_ns
                )
        except RequestNotFound as exc:
            self.store.record_expired(
                job_id,
                attempt_id,
                {
                    **exc.as_record(),
                    "message": "the outputs expired at RunComfy before they were downloaded; "
                    "run the job again",
                },
            )
            self.emit("expired", job_id=job_id)
            self._fail_followers(job_id, S.EXPIRED, {"message": "outputs expired"})
        except OutputHostRefused as exc:
            self.store.set_status(job_id, S.FAILED, exc.as_record())
            self.emit("failed", job_id=job_id, error=str(exc))
        except ApiError as exc:
            # Transient trouble outlasted the retries: the job stays collecting for the next run.
            self.emit("download_error", job_id=job_id, error=str(exc))
        else:
            self.store.record_collected(job_id, attempt_id)
            self.emit("succeeded", job_id=job_id)
            self._copy_to_followers(job_id)
        finally:
            self.collecting.discard(job_id)
            if not self.collecting and not self.live:
                self._wake()  # the submit loop ends once nothing is in flight

    def _copy_to_followers(self, leader: str) -> None:
        """Jobs with the same model and input as ``leader`` share its one paid request."""
        followers = self.followers.pop(leader, [])
        if not followers:
            return
        attempt_id = self.store.current_attempt(leader)
        assert attempt_id is not None  # the leader succeeded: it has an attempt
        files = self.store.outputs_of(leader, attempt_id)
        for follower in followers:
            for output in files:
                source = self.manifest.output_dir / output.path
                target = self.manifest.output_dir / follower / Path(output.path).name
                copy_whole(source, target)
                rel = target.relative_to(self.manifest.output_dir).as_posix()
                self.store.record_output(
                    follower,
                    attempt_id,
                    output.idx,
                    output.url,
                    rel,
                    output.bytes,
                    output.sha256,
                    target.stat().st_mtime_ns,
                )
            self.store.adopt_attempt(follower, attempt_id, S.SUCCEEDED)
            self.emit("succeeded", job_id=follower, twin_of=leader)

    def _fail_followers(self, leader: str, status: str, error: Mapping[str, Any]) -> None:
        for follower in self.followers.pop(leader, []):
            self.store.set_status(
                follower,
                status,
                {**error, "message": f"same request as {leader}: {error.get('message', status)}"},
            )
            self.emit(status, job_id=follower, twin_of=leader, error=error.get("message"))

    # -- the end --------------------------------------------------------------------------------
    def _result(self, wall: float, interrupted: bool) -> RunResult:
        counts = self.store.counts()
        cost = spent(self.store)
        if interrupted:
            return RunResult(
                counts,
                EXIT_INTERRUPTED,
                "interrupted; run the same command again to resume "
                "(submitted jobs are re-attached, none is paid twice)",
                cost,
                wall,
                "signal",
            )
        if self.fatal is not None:
            return RunResult(counts, EXIT_AUTH, str(self.fatal), cost, wall, "auth")
        if self.balance_hit is not None:
            return RunResult(counts, EXIT_BALANCE, str(self.balance_hit), cost, wall, "balance")
        return RunResult(counts, *outcome(counts), cost, wall)


def runs_now(status: str, settings: RunSettings) -> bool:
    """Whether a job at rest in ``status`` is (re)submitted by a run with these settings."""
    return (
        status in (S.PENDING, S.HELD)
        or (status == S.UNKNOWN and settings.resubmit_unknown)
        or (status in (S.FAILED, S.CANCELLED, S.EXPIRED) and settings.retry_failed)
    )


def outcome(counts: Mapping[str, int]) -> tuple[int, str]:
    """The exit code and one-line message of a run that ended with these counts per state."""
    unfinished = sum(n for s, n in counts.items() if s != S.SUCCEEDED)
    if unfinished:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != S.SUCCEEDED)
        return EXIT_JOBS_FAILED, f"{unfinished} job(s) did not succeed ({parts})"
    return EXIT_OK, f"all {counts.get(S.SUCCEEDED, 0)} job(s) succeeded"


def twin_map(jobs: list[Job]) -> dict[str, str]:
    """Job id -> the first job id with the same fingerprint (dedupe: one paid request for both)."""
    first: dict[str, str] = {}
    twins: dict[str, str] = {}
    for job in jobs:
        leader = first.setdefault(job.fingerprint, job.id)
        if leader != job.id:
            twins[job.id] = leader
    return twins


def committed_spend(store: S.Store) -> float:
    """Money spent or possibly spent by this state file (see :meth:`Store.committed_usd`)."""
    return store.committed_usd()


def spent(store: S.Store) -> float:
    """Money RunComfy reported charging, over every attempt in the state file."""
    return store.spent_usd()
