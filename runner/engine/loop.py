"""One run of a manifest: submit, track, collect, with the journal always ahead of the network.

The runner builds the run's parts and owns its task group; the HTTP session is passed in (inside the
API client). Its order of work on every start is the resume contract:

1. sync the manifest into the state (new/changed/removed jobs), turn interrupted submits into
   ``unknown``, check finished outputs on disk;
2. re-attach to every request whose ``request_id`` is recorded (never submit those again);
3. only then submit what remains, each intent committed before its POST leaves (:mod:`.submit`).

Transient API trouble is retried inside the client; what is left here are the outcomes. This module
only puts the run together and drives it; each part has a module of its own:

=====================  =========================================================================
:mod:`.workplan`       what to submit, re-attach and collect; which twins follow which leader
:mod:`.submit`         sending a job with the journal ahead of the POST
:mod:`.watch`          polling what is in flight (when: :mod:`.polls`) and acting on the answers
:mod:`.collect`        downloading outputs, copies to twins
:mod:`.budget`         estimates, committed spend, the cap
:mod:`.throttle`       API calls at once, halved on 429s
:mod:`.pacing`         when to submit and when to poll
:mod:`.flight`         what those parts share
=====================  =========================================================================
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..api.client import RunComfyClient
from ..catalog.pricing import PriceTable
from ..errors import EXIT_INTERRUPTED, ApiError, BudgetExceeded, RateLimited
from ..manifest.loader import Manifest
from ..manifest.snapshot import META_KEY, Snapshot
from .adopt import adopt, adoptions
from .budget import Budget, committed_spend, spent
from .collect import Collector
from .events import EventKind, EventSink, emitter
from .flight import Flight, Parts
from .outputs import damaged_outputs
from .pacing import Pacer
from .settings import RunResult, RunSettings, run_result
from .states import JobState
from .store import Store, SyncSummary
from .submit import Submitter
from .throttle import Throttle
from .watch import Watcher
from .workplan import WorkPlan, plan_work, twin_map

# Submits started per turn of the submit loop before it lets other tasks run.
BURST = 64


class Runner:
    """Runs one manifest against one state file through one API client."""

    def __init__(
        self,
        manifest: Manifest,
        store: Store,
        client: RunComfyClient,
        prices: PriceTable,
        settings: RunSettings,
        *,
        defaults_for: Callable[[str], Mapping[str, Any]] | None = None,
        output_kind_for: Callable[[str], str | None] | None = None,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manifest = manifest
        self.store = store
        self.client = client
        self.settings = settings
        self.clock = clock
        self.jobs = {job.id: job for job in manifest.jobs}
        self.emit = emitter(on_event)
        self.flight = Flight(self.emit)
        self.pacer = Pacer(max_in_flight=settings.max_in_flight)
        self.budget = Budget(
            prices, settings.budget_usd, partial=settings.budget_partial, defaults_for=defaults_for
        )
        self.throttle = Throttle(settings.http_concurrency, clock=clock, emit=self.emit)
        self._output_kind_for = output_kind_for or (lambda model: None)
        self.collector = Collector(
            store,
            client.http,
            manifest.output_dir,
            settings.download,
            emit=self.emit,
            on_retry=self.on_retry,
            output_kind_of=self.output_kind_of,
        )
        parts = Parts(
            flight=self.flight,
            store=store,
            client=client,
            pacer=self.pacer,
            throttle=self.throttle,
            budget=self.budget,
            collector=self.collector,
            emit=self.emit,
            clock=clock,
        )
        self.watcher = Watcher(parts, settings)
        self.submitter = Submitter(parts, self.watcher)

    def output_kind_of(self, job_id: str) -> str | None:
        """The kind of file the job's model makes (``image``, ``video``, ``audio``; None: unknown)."""
        job = self.jobs.get(job_id)
        return self._output_kind_for(job.model) if job is not None else None

    def on_retry(self, error: ApiError, delay: float, attempt: int) -> None:
        """Called by the client before each retry of a safe call."""
        if isinstance(error, RateLimited):
            self.throttle.rate_limited()
        self.emit(EventKind.RETRY, error=str(error), delay=round(delay, 3), attempt=attempt)

    # -- preparing ------------------------------------------------------------------------------
    def prepare(self) -> SyncSummary:
        """Sync the manifest, recover interrupted submits, check outputs, and plan the work."""
        jobs = self.manifest.jobs
        twins = twin_map(jobs)
        summary = self.store.sync_manifest(jobs, {job.id: self.budget.estimate(job) for job in jobs}, twins)
        snapshot = Snapshot.of(self.manifest)
        if snapshot is not None:  # the state's jobs are now this manifest's: status can trust them
            self.store.set_meta(META_KEY, snapshot.to_json())
        self.store.recover_interrupted()
        self.budget.committed_usd = committed_spend(self.store)
        for job_id in damaged_outputs(
            self.store, self.manifest.output_dir, verify_hashes=self.settings.verify_hashes
        ):
            self.store.set_status(job_id, JobState.COLLECTING)
            self.emit(EventKind.REFETCH, job_id=job_id)
        rows = self.store.states()
        taken = adoptions(jobs, rows, twins, self.store)
        for adoption in taken:  # what was already paid, under another id or an earlier input
            adopt(self.store, adoption, self.manifest.output_dir, in_manifest=set(rows))
        self._take(plan_work(jobs, self.store.states() if taken else rows, twins, self.settings))
        self.store.flush()
        return summary

    def _take(self, plan: WorkPlan) -> None:
        """Make the plan the run's own: jobs in line, requests watched, twins' copies and rests."""
        flight = self.flight
        flight.unknown = plan.unknown
        flight.to_submit.extend(plan.submit)
        flight.collecting.update(plan.collect)
        for r in plan.reattach:
            self.watcher.reattach(self.jobs[r.job_id], r.attempt_id, r.request_id, r.status)
        for twin, (state, why) in plan.rest.items():
            self.store.set_status(twin, state, why)
        self.collector.followers = {**plan.follow, **plan.copy}
        for leader in plan.copy:  # these leaders succeeded already: their twins get copies now
            self.collector.copy_to_twins(leader)

    async def _check_prices(self) -> None:
        """Ask the API for the price of each model about to be submitted (one call per model): where it
        answers, it is fresher than any table. Under a budget, the models nothing here prices are asked
        first, so that the check before the start knows them; the others only once it passed, so that
        a run refused by its budget sends nothing but those. Estimates already journaled stay."""
        to_submit = [self.jobs[job_id] for job_id in self.flight.to_submit]
        models = {job.model for job in to_submit}
        unpriced = set()
        if self.budget.cap_usd is not None:
            unpriced = {job.model for job in to_submit if self.budget.estimate(job) is None}
        await self._refresh_prices(unpriced)
        self.budget.check_start(to_submit)
        await self._refresh_prices(models - unpriced)

    async def _refresh_prices(self, models: set[str]) -> None:
        for model in sorted(models):
            answer = await self.client.price(model)
            if answer is not None:
                self.budget.reprice(model, answer)
                self.emit(
                    EventKind.PRICE,
                    model=model,
                    usd=answer.get("base_price_usd"),
                    unit=answer.get("price_unit"),
                )

    # -- running --------------------------------------------------------------------------------
    async def run(self) -> RunResult:
        started = time.monotonic()
        self.watcher.run_started = time.time()
        run_id = self.store.start_run("run")
        try:
            self.prepare()
            await self._check_prices()
        except BudgetExceeded as exc:  # refused before anything was paid: recorded so, not as a crash
            self.store.finish_run(run_id, exc.exit_code, self.store.counts())
            raise
        flight = self.flight
        # Enough for a progress display to place every job before the first job event arrives.
        self.emit(
            EventKind.START,
            jobs=len(self.manifest.jobs),
            to_submit=len(flight.to_submit),
            reattached=len(flight.live),
            collecting=len(flight.collecting),
            waiting=len(flight.to_submit) + sum(len(f) for f in self.collector.followers.values()),
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
            async with anyio.create_task_group() as outer:
                if self.settings.handle_signals:
                    outer.start_soon(self._signals)
                async with anyio.create_task_group() as tg:
                    flight.work = tg.cancel_scope
                    tg.start_soon(self._flusher)
                    for job_id in sorted(flight.collecting):
                        flight.collect(job_id)
                    for _ in range(self.settings.download_concurrency):
                        tg.start_soon(self._collector)
                    tg.start_soon(self.watcher.poll_loop, tg)
                    tg.start_soon(self.watcher.probe_loop, tg)
                    await self._drive(tg)
                    tg.cancel_scope.cancel()
                outer.cancel_scope.cancel()
        except KeyboardInterrupt:  # pragma: no cover - only without handle_signals
            interrupted = True
        if flight.stop_reason == "signal":
            interrupted = True
        self.store.flush()
        result = run_result(
            self.store.counts(),
            spent(self.store),
            time.monotonic() - started,
            interrupted=interrupted,
            refused=flight.refused,
        )
        self.store.finish_run(run_id, result.exit_code, result.counts)
        self.emit(
            EventKind.FINISH, counts=result.counts, exit_code=result.exit_code, cost_usd=result.cost_usd
        )
        return result

    async def _drive(self, tg: TaskGroup) -> None:
        """Submit while the pacer allows, until nothing is left to submit, poll or collect."""
        flight = self.flight
        while flight.fatal is None:
            submittable = bool(flight.to_submit) and not flight.stop_reason
            if self.pacer.draining == submittable:
                self.watcher.drain(not submittable)
            if not submittable and flight.idle:
                return
            now = self.clock()
            started = 0
            while submittable and flight.to_submit and self.pacer.may_submit(now) and started < BURST:
                live = self.submitter.start(self.jobs[flight.to_submit.popleft()], now)
                if live is not None:
                    tg.start_soon(self.submitter.send, live)
                    started += 1
            if started:
                continue
            await flight.wait(self.pacer.probe_interval if submittable else 1.0)

    async def _collector(self) -> None:
        async for job_id in self.flight.collect_queue:
            try:
                await self.collector.collect(job_id)
            finally:
                self.flight.collected(job_id)

    async def _flusher(self) -> None:
        while True:
            await anyio.sleep(self.settings.flush_interval)
            self.store.flush()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if self.flight.stop_reason == "signal":
                    # Second Ctrl-C: leave now. This task runs between other tasks' steps, so every
                    # journal update is whole and committing them keeps the state consistent; a submit
                    # still on the wire stays 'submitting' and is reported unknown on the next run.
                    self.store.flush()
                    self.emit(EventKind.STOPPING, reason="interrupted again: stopped at once")
                    sys.stderr.write(
                        "runcomfy-batch: stopped at once; run the same command again to resume "
                        "(submits that were on the wire become unknown)\n"
                    )
                    sys.stderr.flush()
                    os._exit(EXIT_INTERRUPTED)
                self.flight.stop_reason = "signal"
                self.emit(
                    EventKind.STOPPING,
                    reason="interrupted: finishing in-flight submits, then stopping "
                    "(Ctrl-C again to stop at once)",
                )
                if self.flight.work is not None:
                    self.flight.work.cancel()
