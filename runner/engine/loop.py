"""One run of a manifest: submit, track, collect, with the journal always ahead of the network.

The runner builds the run's parts and owns its task group; the HTTP session is passed in (inside the
API client). Its order of work on every start is the resume contract:

1. sync the manifest into the state (new/changed/removed jobs), turn interrupted submits into
   ``unknown``, check finished outputs on disk;
2. re-attach to every request whose ``request_id`` is recorded (never submit those again);
3. only then submit what remains, each intent committed before its POST leaves (:mod:`.submit`).

Transient API trouble is retried inside the client; what is left here are the outcomes. An API that
stops answering holds the submits back until it answers again (:mod:`.outage`); what one job's
handling raises unexpectedly fails that job alone (:mod:`.isolation`), so the run always ends, with
its reports. This module only puts the run together and drives it; each part has a module of its own:

=====================  =========================================================================
:mod:`.workplan`       what to submit, re-attach and collect; which twins follow which leader
:mod:`.chains`         chained jobs: sent once the jobs whose outputs they name succeed, or blocked
:mod:`.submit`         sending a job with the journal ahead of the POST
:mod:`.watch`          polling what is in flight (when: :mod:`.polls`) and acting on the answers
:mod:`.collect`        downloading outputs, copies to twins
:mod:`.budget`         estimates, committed spend, the cap
:mod:`.throttle`       API calls at once, halved on 429s
:mod:`.pacing`         when to submit and when to poll
:mod:`.outage`         the gate submits pass: few on the wire, none while the API does not answer
:mod:`.isolation`      one job's unexpected trouble fails that job; a folder it cannot write stops the run
:mod:`.flight`         what those parts share
=====================  =========================================================================
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..api.client import RunComfyClient
from ..catalog.pricing import PriceTable
from ..errors import (
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    ApiError,
    BudgetExceeded,
    RateLimited,
    RunnerError,
    UsageError,
)
from ..manifest.loader import Manifest
from ..manifest.snapshot import META_KEY, Snapshot
from .adopt import adopt, adoptions
from .budget import Budget, committed_spend, spent
from .chains import Chains, outdated_chains
from .collect import Collector
from .events import Emit, Event, EventKind, EventSink, emitter
from .flight import Flight, Parts
from .isolation import Display, Isolation
from .outage import Outage
from .outputs import damaged_outputs
from .pacing import Pacer, submit_wait
from .settings import HALTED_KEY, RunResult, RunSettings, run_result
from .states import JobState
from .store import Store, SyncSummary
from .submit import Submitter
from .throttle import Throttle
from .watch import Watcher
from .workplan import WorkPlan, plan_work, scope_counts, selected_ids, twin_map

# Submits started per turn of the submit loop before it lets other tasks run.
BURST = 64
# Seconds the submit loop sleeps at most once nothing is left to submit (events wake it sooner).
DRAIN_BACKSTOP = 30.0


def retried(emit: Emit, error: ApiError, delay: float, attempt: int) -> None:
    """Tell the displays a call is retried (a download's, or one to the API)."""
    emit(EventKind.RETRY, error=str(error), delay=round(delay, 3), attempt=attempt)


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
        log_path: Path | None = None,
    ) -> None:
        self.manifest = manifest
        self.store = store
        self.client = client
        self.settings = settings
        self.clock = clock
        self.jobs = {job.id: job for job in manifest.jobs}
        self.display = Display(on_event)
        self.emit = emitter(self._observe)
        self.plan = WorkPlan()
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
            on_retry=partial(retried, self.emit),  # the file host is not the API: no outage from it
            output_kind_of=self.output_kind_of,
        )
        self.isolation = Isolation(
            self.flight, store, self.pacer, self.budget, self.collector, self.emit, log_path=log_path
        )
        probe_model = manifest.jobs[0].model if manifest.jobs else ""
        self.outage = Outage(
            client, self.flight, probe_model, max_seconds=settings.outage_max_time, clock=clock
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
            on_crash=self.isolation.job_failed,
        )
        self.watcher = Watcher(parts, settings)
        self.submitter = Submitter(parts, self.watcher, self.outage)
        self.chains = Chains(self.jobs, store, self.flight, self.budget, self.collector, self.emit)

    def _observe(self, event: Event) -> None:
        """Every event of the run: to the displays, then to the parts that follow the run through them
        (the chains; the count of failed jobs that ``--halt-after`` stops at)."""
        self.display(event)
        self.chains.observe(event)
        if event["event"] == EventKind.FAILED and not event.get("twin_of"):  # a paid request failed
            self.flight.job_failed(self.settings.halt_after)

    def output_kind_of(self, job_id: str) -> str | None:
        """The kind of file the job's model makes (``image``, ``video``, ``audio``; None: unknown)."""
        job = self.jobs.get(job_id)
        return self._output_kind_for(job.model) if job is not None else None

    def on_retry(self, error: ApiError, delay: float, attempt: int) -> None:
        """Called by the client before each retry of a call to the API: a 429 slows the calls down, an
        API that does not answer holds the submits back."""
        if isinstance(error, RateLimited):
            self.throttle.rate_limited()
        self.outage.call_failed(error)
        retried(self.emit, error, delay, attempt)

    # -- preparing ------------------------------------------------------------------------------
    def prepare(self) -> SyncSummary:
        """Sync the manifest, recover interrupted submits, check outputs, and plan the work."""
        jobs = self.manifest.jobs
        if self.settings.only:  # a pattern that matches nothing is told before the journal changes
            selected_ids(jobs, {}, self.settings.only)
        twins = twin_map(jobs)
        summary = self.store.sync_manifest(jobs, {job.id: self.budget.estimate(job) for job in jobs}, twins)
        snapshot = Snapshot.of(self.manifest)
        # The state's jobs are now this manifest's: status can trust them (a piped manifest, read once,
        # leaves nothing to compare with, and an older snapshot must not be trusted either).
        self.store.set_meta(META_KEY, snapshot.to_json() if snapshot is not None else "")
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
        rows = self.store.states() if taken else rows
        outdated = outdated_chains(jobs, self.store, rows) if any(job.after for job in jobs) else set()
        self.plan = plan_work(jobs, rows, twins, self.settings, outdated)
        self._take(self.plan, rows)
        self.store.flush()
        return summary

    def _take(self, plan: WorkPlan, rows: Mapping[str, tuple[str, int | None, str | None]]) -> None:
        """Make the plan the run's own: jobs in line, requests watched, chains waiting or blocked,
        twins' copies and rests."""
        flight = self.flight
        flight.unknown = plan.unknown
        flight.to_submit.extend(plan.submit)
        flight.collecting.update(plan.collect)
        for r in plan.reattach:
            self.watcher.reattach(self.jobs[r.job_id], r.attempt_id, r.request_id, r.status)
        for twin, (state, why) in plan.rest.items():
            self.store.set_status(twin, state, why)
        for job_id, why in plan.blocked.items():
            self.store.set_status(job_id, JobState.BLOCKED, why)
        for job_id in plan.chained:  # waiting again (the old attempt of one that runs again stays history)
            if rows[job_id][0] != JobState.PENDING:
                self.store.set_status(job_id, JobState.PENDING)
        self.chains.take(plan.chained)
        self.collector.followers = {**plan.follow, **plan.copy}
        for leader in plan.copy:  # these leaders succeeded already: their twins get copies now
            self.collector.copy_to_twins(leader)

    async def _check_prices(self) -> None:
        """Ask the API for the price of each model about to be submitted (one call per model): where it
        answers, it is fresher than any table. Under a budget, the models nothing here prices are asked
        first, so that the check before the start knows them; the others only once it passed, so that
        a run refused by its budget sends nothing but those. Estimates already journaled stay."""
        to_submit = [self.jobs[job_id] for job_id in self.flight.to_submit]
        chained = [self.jobs[job_id] for job_id in self.chains.waiting]  # their room is kept already
        models = {job.model for job in (*to_submit, *chained)}
        unpriced = set()
        if self.budget.cap_usd is not None:
            unpriced = {job.model for job in (*to_submit, *chained) if self.budget.estimate(job) is None}
        await self._refresh_prices(unpriced)
        self.budget.check_start([*to_submit, *chained])
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
        """Run the manifest to its end or a stop; a result whatever happened (a loop that raised: exit 1)."""
        started = time.monotonic()
        self.watcher.run_started = time.time()
        run_id = self.store.start_run("run")
        interrupted, crashed = False, None
        try:
            interrupted = await self._run(run_id)
        except RunnerError:
            raise  # the user's to act on (over budget, say), before anything was sent: one line
        except Exception as exc:  # noqa: BLE001 - the run's own bug: logged, its journal kept as it is
            if not self.isolation.storage_failed(exc):
                crashed = self.isolation.run_failed(exc)
        return end_run(self, run_id, time.monotonic() - started, interrupted=interrupted, crashed=crashed)

    async def _run(self, run_id: int) -> bool:
        """Prepare and do the work; whether a KeyboardInterrupt ended it."""
        try:
            self.prepare()
            await self._check_prices()
        except (BudgetExceeded, UsageError) as exc:  # refused before anything was paid: recorded so
            self.store.finish_run(run_id, exc.exit_code, self.store.counts())
            raise
        await self.chains.check_outputs(self.client.http, self.settings.download)
        flight = self.flight
        # Enough for a progress display to place every job before the first job event arrives.
        self.emit(
            EventKind.START,
            jobs=len(self.manifest.jobs),
            to_submit=len(flight.to_submit),
            reattached=len(flight.live),
            collecting=len(flight.collecting),
            waiting=len(flight.to_submit)
            + len(self.chains.waiting)
            + sum(len(f) for f in self.collector.followers.values()),
            chained=len(self.chains.waiting),
            left_out=self.plan.left_out,
            counts=self.store.counts(),
            spent_usd=spent(self.store),
            http=self.settings.http_concurrency,
            max_in_flight=self.settings.max_in_flight,
        )
        try:
            # The signal receiver lives outside the work's task group: the first signal cancels the
            # work, and the receiver stays installed to catch a second one (never a KeyboardInterrupt
            # between two writes of one journal update).
            async with anyio.create_task_group() as outer:
                if self.settings.handle_signals:
                    outer.start_soon(self._signals)
                async with anyio.create_task_group() as tg:
                    flight.work = tg.cancel_scope
                    tg.start_soon(
                        flush_journal, self.store, self.settings.flush_interval, flight, self.isolation.kept
                    )
                    for job_id in sorted(flight.collecting):
                        flight.collect(job_id)
                    for _ in range(self.settings.download_concurrency):
                        tg.start_soon(self._collector)
                    tg.start_soon(self.watcher.poll_loop, tg)
                    tg.start_soon(self.watcher.probe_loop, tg)
                    tg.start_soon(self.outage.probe_loop)
                    await self._drive(tg)
                    tg.cancel_scope.cancel()
                outer.cancel_scope.cancel()
        except KeyboardInterrupt:  # pragma: no cover - only without handle_signals
            return True
        return False

    async def _drive(self, tg: TaskGroup) -> None:
        """Submit while the pacer allows, until nothing is left to submit, poll or collect."""
        flight = self.flight
        while flight.fatal is None:
            self.chains.settle()  # jobs that ended without success block the chained jobs that need them
            submittable = bool(flight.to_submit) and not flight.stop_reason
            if self.pacer.draining == submittable:
                self.watcher.drain(not submittable)
            if not submittable and flight.idle:
                return
            now = self.clock()
            started = 0
            while submittable and flight.to_submit and self._may_submit(now) and started < BURST:
                live = self.submitter.start(self.jobs[flight.to_submit.popleft()], now)
                if live is not None:
                    tg.start_soon(self.isolation.guard, self.submitter.send, live, "submit")
                    started += 1
            if started:
                continue
            # Every answer, finish, collect, resubmit, chained job let go and stop wakes this loop;
            # submitting, so does time when the pacer's count of starts grows with it (submit_wait).
            # Draining, the timeout is a backstop only.
            await flight.wait(submit_wait(self.pacer, now) if submittable else DRAIN_BACKSTOP)

    def _may_submit(self, now: float) -> bool:
        """Whether another submit may be lined up: the API answers, and the pacer wants one or nothing is
        in flight at all (no queue of ours can wait at RunComfy then, whatever the pacer believed)."""
        return self.outage.may_start and (self.pacer.may_submit(now) or not self.flight.live)

    async def _collector(self) -> None:
        async for job_id in self.flight.collect_queue:
            try:
                # A download that gave up while the API was down (its files are served beside it) is
                # tried again once it answers; one that gave up otherwise waits for the next run.
                while await self.collector.collect(job_id) == JobState.COLLECTING and self.outage.since:
                    await self.outage.answering()
            except Exception as exc:  # noqa: BLE001 - one job's trouble: handed on whole
                self.isolation.job_failed(job_id, exc, "collect")
            finally:
                self.flight.collected(job_id)

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


def end_run(runner: Runner, run_id: int, wall: float, *, interrupted: bool, crashed: str | None) -> RunResult:
    """A run's last steps, whatever way it ended: its result, journaled as far as the journal takes it
    (one that cannot be written stops nothing more), and the ``finish`` event."""
    flight, store, kept = runner.flight, runner.store, runner.isolation.kept
    interrupted = interrupted or flight.stop_reason == "signal"
    kept(runner.chains.finish)
    kept(store.flush)
    result = run_result(
        store.counts(),
        spent(store),
        wall,
        interrupted=interrupted,
        refused=flight.refused,
        judged=scope_counts(store.states(), runner.plan.scope),
        left_out=runner.plan.left_out,
        halted=flight.failed_jobs if flight.stop_reason == "halted" else None,
        stopped=flight.stopped,
    )
    if crashed is not None and flight.stopped is None:
        result.exit_code, result.message = EXIT_JOBS_FAILED, f"{crashed}; run the same command again"
    halted = {"failed": flight.failed_jobs, "after": runner.settings.halt_after}
    kept(store.set_meta, HALTED_KEY, json.dumps(halted) if flight.stop_reason == "halted" else "")
    kept(store.finish_run, run_id, result.exit_code, result.counts)
    runner.emit(EventKind.FINISH, counts=result.counts, exit_code=result.exit_code, cost_usd=result.cost_usd)
    if runner.display.failure is not None:
        runner.isolation.log("the event display (let go of; the run went on)", runner.display.failure)
    return result


async def flush_journal(
    store: Store, interval: float, flight: Flight, kept: Callable[[Callable[[], None]], None]
) -> None:
    """Commit the journal's writes ``interval`` seconds after the first of them; asleep while there
    are none (a run waiting minutes for its jobs wakes for nothing). ``kept`` makes the commit (the
    run's isolation: one that fails stops the run, ``flight.stopped``, and this loop with it)."""
    try:
        while flight.stopped is None:  # a journal that failed a commit stopped the run
            written = anyio.Event()
            store.on_begin = written.set
            if not store.pending:
                await written.wait()
            await anyio.sleep(interval)
            kept(store.flush)
    finally:
        store.on_begin = None
