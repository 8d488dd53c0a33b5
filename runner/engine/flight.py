"""What the parts of one run share: the requests in flight, the jobs waiting to be sent or collected,
why the run is stopping, and the one wake-up of the submit loop (:class:`Flight`); and the parts
themselves, built once by the loop and handed to those that work with the others (:class:`Parts`).

The run's parts (the loop, :mod:`.submit`, :mod:`.watch`, the collectors) are tasks of one task group
on one thread; they meet here, so each of them reads as what it does and this says what they share.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio

from ..api.client import RunComfyClient
from ..errors import AccountError, BalanceError, RunnerError
from ..manifest.loader import Job
from .budget import Budget
from .collect import Collector
from .events import Emit, EventKind
from .pacing import Pacer, Track
from .states import JobState
from .store import Store
from .throttle import Throttle

# Why a run stops before its work is done: Ctrl-C, the account (token, balance), --halt-after, an API
# that stopped answering (--outage-max-time), a folder it cannot write (the journal's or the outputs').
StopReason = Literal["signal", "auth", "balance", "halted", "outage", "storage"]


@dataclass(eq=False)
class Live:
    """A request in flight (or a submit about to be), as the run tracks it."""

    job: Job
    attempt_id: int
    request_id: str | None
    track: Track
    status: JobState = JobState.QUEUED
    remote_status: str = ""
    polling: bool = False  # a poll (or its submit) is under way: not to be polled again meanwhile
    failed_polls: int = 0
    resubmit: bool = False  # this attempt resubmits a job whose earlier submit was unknown
    unseen: bool = False  # re-attached, not polled yet by this run: what it did meanwhile nobody saw
    due: float = 0.0  # when its next poll is scheduled (older entries in the poll queue are stale)


class Flight:
    """The state of one run that its parts share, with the few things any of them may do to it."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit  # the run's events, for the parts that tell them
        self.live: dict[str, Live] = {}
        self.to_submit: deque[str] = deque()
        self.collecting: set[str] = set()
        self.unknown: set[str] = set()  # jobs whose last submit is unknown: the next one resubmits knowingly
        # Finished jobs wait here for one of the collectors: when downloads fall behind (100,000 fast
        # jobs), a waiting job costs a queue entry, not a task of its own.
        self._to_collect, self.collect_queue = anyio.create_memory_object_stream[str](math.inf)
        self.stop_reason: StopReason | None = None
        self.failed_jobs = 0  # paid requests that failed in this run (what --halt-after counts)
        self.fatal: AccountError | None = None  # the token was refused: nothing more can be done
        self.balance_hit: BalanceError | None = None  # no balance: nothing more is submitted
        self.stopped: RunnerError | None = None  # why the run stopped at once (an outage, a full disk)
        self.work: anyio.CancelScope | None = None  # the work's task group, cancelled to stop at once
        self._wake = anyio.Event()

    # -- the submit loop's wake-up --------------------------------------------------------------
    def wake(self) -> None:
        """Something changed that may let the submit loop go on (a slot freed, a job came back)."""
        self._wake.set()

    async def wait(self, timeout: float) -> None:
        """Sleep until :meth:`wake` is called, or ``timeout`` seconds."""
        with anyio.move_on_after(max(0.0, timeout)):
            await self._wake.wait()
        self._wake = anyio.Event()

    # -- the work ------------------------------------------------------------------------------
    @property
    def may_submit(self) -> bool:
        return not self.stop_reason and self.fatal is None

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing being collected."""
        return not self.live and not self.collecting

    def collect(self, job_id: str) -> None:
        """The job's outputs are ready at RunComfy: queue it for a collector."""
        self.collecting.add(job_id)
        self._to_collect.send_nowait(job_id)
        self.wake()

    def collected(self, job_id: str) -> None:
        """A collector is done with the job (whatever came of it)."""
        self.collecting.discard(job_id)
        if self.idle:
            self.wake()  # the submit loop ends once nothing is in flight

    # -- stopping ------------------------------------------------------------------------------
    def stop(self, reason: StopReason, why: RunnerError) -> None:
        """Stop the run at once, as a Ctrl-C does: submits on the wire get their answers, jobs at
        RunComfy stay there for the next run. The first reason given is the run's."""
        if self.stopped is not None or self.stop_reason == "signal":
            return
        self.stop_reason = reason
        self.stopped = why
        self.emit(EventKind.STOPPING, reason=str(why))
        if self.work is not None:
            self.work.cancel()
        self.wake()

    def job_failed(self, halt_after: int | None) -> None:
        """A paid request failed. Once ``halt_after`` have in this run (``--halt-after``), nothing more is
        submitted (a bad prompt template must not spend the whole budget); what is in flight lands."""
        self.failed_jobs += 1
        if halt_after is None or self.failed_jobs < halt_after or self.stop_reason is not None:
            return
        self.stop_reason = "halted"
        self.emit(
            EventKind.STOPPING,
            reason=f"{self.failed_jobs} job(s) failed (--halt-after {halt_after}): no more submits; "
            "the jobs in flight are still collected",
        )
        self.wake()

    @property
    def refused(self) -> AccountError | None:
        """Why the account stopped the run, if it did: the token first, else the balance."""
        return self.fatal if self.fatal is not None else self.balance_hit

    def account_refused(self, exc: AccountError) -> None:
        """RunComfy refused the account: no balance stops submitting (running jobs are collected);
        a refused token stops everything."""
        if isinstance(exc, BalanceError):
            if self.balance_hit is None:
                self.emit(EventKind.STOPPING, reason=str(exc))
            self.balance_hit = exc
            self.stop_reason = self.stop_reason or "balance"
        else:
            if self.fatal is None:  # told once, however many requests were refused with it
                self.emit(EventKind.STOPPING, reason=str(exc))
            self.fatal = exc
            self.stop_reason = "auth"
            if self.work is not None:
                self.work.cancel()
        self.wake()


@dataclass(frozen=True)
class Parts:
    """The parts of one run, as the submitter and the watcher work with them."""

    flight: Flight
    store: Store
    client: RunComfyClient
    pacer: Pacer
    throttle: Throttle
    budget: Budget
    collector: Collector
    emit: Emit
    clock: Callable[[], float]
    # What to do when handling one job raises what the code did not expect (:mod:`.isolation`): the job,
    # its trouble, and the stage it was in (submit, poll, collect). Parts driven on their own (a unit's
    # test) hear of it as the exception itself.
    on_crash: Callable[[Live | str, Exception, str], None] = field(
        default=lambda job, exc, stage: _reraise(exc)
    )


def _reraise(exc: Exception) -> None:
    raise exc


class Part:
    """A part of a run that works with the others: it has them at hand under their own names."""

    def __init__(self, parts: Parts) -> None:
        self.flight = parts.flight
        self.store = parts.store
        self.client = parts.client
        self.pacer = parts.pacer
        self.throttle = parts.throttle
        self.budget = parts.budget
        self.collector = parts.collector
        self._emit = parts.emit
        self._clock = parts.clock
        self._on_crash = parts.on_crash
