"""Sending jobs, with the journal always ahead of the network: the heart of the resume contract.

For each submit, in this order:

1. its attempt is journaled (``submitting``) and *committed* once a connection slot is ours, right
   before the POST leaves: a process killed after that is an ``unknown`` on the next run, never a
   silent second payment;
2. the POST is shielded (inside the client) until its answer comes: a stop never abandons one on the
   wire;
3. the ``request_id`` is committed the moment it comes back, so the window in which a death leaves an
   ``unknown`` stays as small as one round trip.

Commits are grouped (:meth:`Submitter._commit_soon`): every submit journaled in the same turn of the
event loop shares one commit, and each still returns only once its own writes are durable.

Every submit passes the outage gate first (:mod:`.outage`): a few at a time on the wire, none while
the API does not answer. A submit that surely never left (a refused connection) is first in line again
once it answers; one that may have been accepted is ``unknown``.
"""

from __future__ import annotations

import json

import anyio
import anyio.lowlevel

from ..errors import AccountError, ApiError, ErrorRecord, NeverSent, RateLimited, SubmitUnknown
from ..manifest.loader import Job
from .events import EventKind
from .flight import Live, Part, Parts
from .outage import Outage
from .pacing import Track
from .states import AttemptState, JobState
from .watch import Watcher


class Submitter(Part):
    """Starts attempts within the pacer's and the budget's limits and sends them."""

    def __init__(self, parts: Parts, watcher: Watcher, outage: Outage) -> None:
        super().__init__(parts)
        self.watcher = watcher
        self.outage = outage

    def start(self, job: Job, now: float) -> Live | None:
        """Take a place for the job's submit (in the pacer, and its estimate on the budget), or hold it
        when the budget cannot take it. The attempt is journaled later, in :meth:`send`."""
        if not self.budget.hold(job):
            self.store.set_status(job.id, JobState.HELD, ErrorRecord("BudgetHeld", "held by the budget cap"))
            self._emit(EventKind.HELD, job_id=job.id, estimate_usd=self.budget.estimate(job))
            return None
        track = Track(job.id, now)
        live = Live(job, 0, None, track, status=JobState.SUBMITTING)
        self.pacer.on_submitted(track, now)
        live.polling = True  # not pollable until its request id is known
        self.flight.live[job.id] = live
        return live

    async def send(self, live: Live) -> None:
        """Journal the attempt, POST it, journal its request id; then watch it."""
        job = live.job
        try:
            # The intent is journaled only once a connection slot is ours, right before the POST: a run
            # killed while jobs wait for a slot leaves them pending (they were never sent), not unknown.
            # The waits are not shielded, so a stop before the POST leaves sends nothing.
            async with self.outage.sending(), self.throttle.limiter:
                if not self.flight.may_submit:
                    self._drop(live, refund=True)
                    return
                self._record_intent(live)
                await self._commit_soon()
                if self.pacer.on_sent(live.track, self._clock()):
                    # A connection is ours: a submit held back may wait for one in its place.
                    self.flight.wake()
                try:
                    # The client shields each POST until its answer: a stop never abandons one on the
                    # wire. What a stop can cut short is the backoff between tries, and a try is only
                    # repeated when it surely did not reach RunComfy.
                    request_id = await self.client.submit(job.model, job.input)
                except ApiError as exc:
                    self._failed(live, exc)
                    return
                self.outage.answered()
                live.request_id = request_id
                live.status = JobState.QUEUED
                self.flight.unknown.discard(job.id)
                self.store.record_submitted(job.id, live.attempt_id, request_id)
                await self._commit_soon()  # the request id is durable at once: the unknown window stays tiny
        except anyio.get_cancelled_exc_class():
            if live.attempt_id and live.request_id is None:
                # Stopped while waiting to retry a submit that was not taken (429, refused): not sent.
                why = ErrorRecord("Stopped", "the run stopped before this submit could be retried")
                self.store.record_error(job.id, live.attempt_id, AttemptState.NOT_SENT, why)
                self.store.set_status(job.id, JobState.UNKNOWN if live.resubmit else JobState.PENDING)
            if live.request_id is None:
                self._drop(live, refund=True)
            raise
        self.throttle.succeeded()
        if self.pacer.window_full():
            self.watcher.probe_soon()
        self._emit(EventKind.SUBMITTED, job_id=job.id, request_id=request_id)
        live.polling = False
        self.watcher.schedule(live, self.pacer.poll_due(live.track, self._clock()))

    def _record_intent(self, live: Live) -> None:
        """Journal the attempt; the caller commits it (then a death of this process is an unknown)."""
        job = live.job
        live.resubmit = job.id in self.flight.unknown
        input_json = json.dumps(job.input, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        live.attempt_id = self.store.record_intent(
            job.id,
            job.fingerprint,
            job.model,
            input_json,
            self.budget.estimate(job),
            resubmit_of_unknown=live.resubmit,
        )

    async def _commit_soon(self) -> None:
        """Commit what is journaled, sharing the commit with every task that journals in this same
        turn of the event loop (a burst of submits): each returns only once its own writes are
        committed. The yield cannot be cancelled, so it opens no new way to stop between two steps."""
        await anyio.lowlevel.cancel_shielded_checkpoint()
        self.store.flush()

    def _failed(self, live: Live, exc: ApiError) -> None:
        """The submit got no request id: journal what that means for the job, and for its twins."""
        job = live.job
        why = exc.as_record()
        # A job that was unknown before this attempt stays unknown when the attempt surely did not
        # reach RunComfy, so its next attempt is still marked as a knowing resubmission.
        at_rest = JobState.UNKNOWN if live.resubmit else JobState.PENDING
        if isinstance(exc, SubmitUnknown):
            self._drop(live)  # it may have been accepted: its estimate stays committed
            self.store.record_error(job.id, live.attempt_id, AttemptState.UNKNOWN, why)
            self.flight.unknown.add(job.id)
            self._emit(EventKind.UNKNOWN, job_id=job.id, error=str(exc))
            self.collector.fail_twins(job.id, JobState.UNKNOWN, why)
            self.outage.submit_failed(exc, unknown=True)
        elif isinstance(exc, NeverSent):
            # It never left (refused, DNS, connect timeout): first in line again, sent once the API
            # answers. Not a rate limit: nothing is slowed down for it.
            self._drop(live, refund=True)
            self.store.record_error(job.id, live.attempt_id, AttemptState.NOT_SENT, why)
            self.store.set_status(job.id, at_rest)
            self.flight.to_submit.appendleft(job.id)
            self.outage.submit_failed(exc, unknown=False)
        elif isinstance(exc, AccountError):  # BalanceError included
            self.outage.answered()
            self._drop(live, refund=True)
            self.store.record_error(job.id, live.attempt_id, AttemptState.REFUSED, why)
            self.store.set_status(job.id, at_rest)
            self.flight.account_refused(exc)
        elif isinstance(exc, RateLimited):
            # Surely not accepted (429), retries exhausted: back in line.
            self._drop(live, refund=True)
            self.store.record_error(job.id, live.attempt_id, AttemptState.NOT_SENT, why)
            self.store.set_status(job.id, at_rest)
            self.flight.to_submit.append(job.id)
            self.pacer.on_rate_limited()
            self.throttle.rate_limited()
            self._emit(EventKind.RETRY, job_id=job.id, error=str(exc))
        else:
            # Refused (422, a bad model id), or any other answer to a submit (the client turns 5xx into
            # SubmitUnknown): not accepted, and sending it again would not help.
            self.outage.answered()
            self._drop(live, refund=True)
            self.store.record_error(job.id, live.attempt_id, AttemptState.FAILED, why)
            self._emit(EventKind.FAILED, job_id=job.id, error=str(exc), stage="submit")
            self.collector.fail_twins(job.id, JobState.FAILED, why)

    def _drop(self, live: Live, *, refund: bool = False) -> None:
        """A submit that created no live request: forget it in the pacer and in flight."""
        self.flight.live.pop(live.job.id, None)
        self.pacer.on_dropped(live.track)
        if refund:
            self.budget.refund(live.job)
        self.flight.wake()
