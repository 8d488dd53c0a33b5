"""Chained jobs in a run: a job whose input names another job's output (``job:<id>#<k>``) is sent once
that job has succeeded, with the URL RunComfy returned for that output, exactly.

:func:`~.workplan.plan_work` decides from the journal which chained jobs wait this run (the jobs they
need are coming), which are blocked (one of those is at rest without success) and which succeeded
from an upstream output that has since been replaced (they run again). :class:`Chains` then follows
the run through the run's own events, the one place where every job's fate is told: when the last job
a chained job waits for succeeds, its input is resolved and it joins the jobs to submit; when one ends
without success (failed, cancelled, expired, unknown, held, blocked), the chained job is ``blocked``,
and the jobs waiting for it in turn. Endings are applied once per turn of the submit loop
(:meth:`Chains.settle`), so a failure answered by ``--auto-resubmit-failed`` in the same step blocks
nothing. While a chained job waits, its estimate is reserved on the budget: the jobs after it in the
manifest cannot spend the money its chain needs.

RunComfy keeps outputs for about 7 days. An upstream job that finished before this run may have
outputs RunComfy no longer serves: each such URL is asked once before a job is sent with it
(:meth:`Chains.check_outputs`); a gone one makes that job ``expired`` (``retry`` makes it again, then
its chain goes on) and the jobs that need it ``blocked``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from ..api.download import DownloadConfig, still_served
from ..api.http import HttpSession
from ..errors import ErrorRecord
from ..manifest import chains as refs
from ..manifest.loader import Job
from .budget import Budget
from .collect import Collector
from .events import Emit, Event, EventKind
from .flight import Flight
from .states import IN_FLIGHT, JobState
from .store import Store

# The events that leave a job at rest without success in this run: the jobs that need it are blocked.
ENDINGS = frozenset(
    EventKind(state)
    for state in (
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.EXPIRED,
        JobState.UNKNOWN,
        JobState.HELD,
        JobState.BLOCKED,
    )
)
KEEP_DAYS = 7  # about how long RunComfy serves a request's outputs (inferred)


def blocked_why(upstream: str, state: str) -> ErrorRecord:
    """Why a chained job cannot be sent: ``upstream`` (a job whose output it needs) is at rest in
    ``state``. It says what makes the chain go on."""
    advice: dict[str, str] = {
        JobState.FAILED: f"`retry` runs {upstream} again, then this job",
        JobState.CANCELLED: f"`retry` runs {upstream} again, then this job",
        JobState.EXPIRED: f"RunComfy no longer has its output; `retry` makes {upstream} again, then this job",
        JobState.UNKNOWN: f"its submit may have been accepted; --resubmit-unknown sends {upstream} again",
        JobState.HELD: f"{upstream} is held by the budget; raise it and run again",
        JobState.BLOCKED: f"{upstream} waits for a job that did not succeed either",
    }
    then = advice.get(state, f"it is sent once {upstream} succeeds")
    return ErrorRecord(
        "Blocked", f"needs the output of job {upstream}, which is {state}: {then}", {"after": upstream}
    )


class Chains:
    """The chained jobs of one run: what each still waits for, released or blocked as the run goes."""

    def __init__(
        self,
        jobs: dict[str, Job],
        store: Store,
        flight: Flight,
        budget: Budget,
        collector: Collector,
        emit: Emit,
    ) -> None:
        self.jobs = jobs  # the run's jobs by id: a released job's entry becomes its resolved input
        self.store = store
        self.flight = flight
        self.budget = budget
        self.collector = collector
        self.waiting: dict[str, set[str]] = {}  # chained job -> the jobs it still waits for
        self.dependents: dict[str, list[str]] = {}  # job -> the waiting chained jobs that need it
        self._ended: dict[str, str] = {}  # jobs that ended without success, applied by settle()
        self._emit = emit

    @property
    def idle(self) -> bool:
        """No ending is waiting to be applied (the submit loop may end)."""
        return not self._ended

    # -- the plan -------------------------------------------------------------------------------
    def take(self, chained: Mapping[str, Iterable[str]]) -> None:
        """The chained jobs this run sends, each with the jobs it must wait for (none: those it needs
        have succeeded already, and it goes once their outputs are checked)."""
        for job_id, waits_for in chained.items():
            job = self.jobs[job_id]
            self.waiting[job_id] = set(waits_for)
            for upstream in job.needs:
                self.dependents.setdefault(upstream, []).append(job_id)
            self.budget.reserve(job)

    async def check_outputs(self, http: HttpSession, config: DownloadConfig) -> None:
        """Ask RunComfy once for each output a waiting job will be sent with that it already has (they
        finished before this run): a gone one expires its job. Then send what waits for nothing."""
        asked: dict[str, bool] = {}
        for job_id, waits_for in list(self.waiting.items()):
            job = self.jobs[job_id]
            for ref in job.after:
                if ref.job_id in waits_for or ref.job_id in self._ended:
                    continue
                request = self.store.current_request(ref.job_id)
                urls = request.outputs if request is not None else []
                if len(urls) < ref.index:
                    continue  # said when the job is released
                url = urls[ref.index - 1]
                if url not in asked:
                    asked[url] = await still_served(http, url, config)
                if not asked[url]:
                    why = ErrorRecord(
                        "OutputExpired",
                        f"RunComfy no longer serves its output {url} (outputs are kept about {KEEP_DAYS} "
                        f"days), which {job_id} needs; `retry` makes it again, then the jobs that need it",
                    )
                    self.store.set_status(ref.job_id, JobState.EXPIRED, why)
                    self._emit(EventKind.EXPIRED, job_id=ref.job_id, error=why.message)
        self.settle()
        for job_id, waits_for in list(self.waiting.items()):
            if not waits_for:
                self._release(job_id)

    # -- the run's events -------------------------------------------------------------------------
    def observe(self, event: Event) -> None:
        """Follow the run: a job that succeeded may release chained jobs; one that ended otherwise
        blocks them (at the next :meth:`settle`); one sent again (auto-resubmit) blocks nothing."""
        kind, job_id = event["event"], event.get("job_id")
        if not isinstance(job_id, str) or job_id not in self.dependents:
            return
        if kind == EventKind.SUCCEEDED:
            self._ended.pop(job_id, None)
            for dependent in list(self.dependents[job_id]):
                waits_for = self.waiting.get(dependent)
                if waits_for is not None and job_id in waits_for:
                    waits_for.discard(job_id)
                    if not waits_for:
                        self._release(dependent)
        elif kind in ENDINGS:
            self._ended[job_id] = str(kind)
            self.flight.wake()
        elif kind == EventKind.RESUBMIT:
            self._ended.pop(job_id, None)

    def settle(self) -> None:
        """Block the chained jobs that need a job that ended without success (and theirs in turn)."""
        while self._ended:
            upstream, state = self._ended.popitem()
            for dependent in self.dependents.get(upstream, []):
                if dependent in self.waiting:
                    self._block(dependent, blocked_why(upstream, state))

    def finish(self) -> None:
        """At the end of the run: a chained job still waiting for a job at rest without success is
        blocked; one waiting for a job the run did not get to (it was stopped) stays pending."""
        self.settle()
        states = self.store.states()
        for job_id, waits_for in list(self.waiting.items()):
            for upstream in sorted(waits_for):
                state = states.get(upstream, (JobState.PENDING, None, None))[0]
                if state not in (JobState.PENDING, JobState.SUCCEEDED) and state not in IN_FLIGHT:
                    self._block(job_id, blocked_why(upstream, state))
                    break
        self.settle()

    # -- releasing and blocking -------------------------------------------------------------------
    def _release(self, job_id: str) -> None:
        """Every job this one needs succeeded: resolve its input and put it in line to be sent."""
        job = self.jobs[job_id]
        outputs: dict[str, list[str]] = {}
        for upstream in job.needs:
            request = self.store.current_request(upstream)
            outputs[upstream] = request.outputs if request is not None else []
        missing = refs.missing_output(job.after, outputs)
        if missing is not None:
            made = len(outputs.get(missing.job_id, ()))
            why = ErrorRecord(
                "Blocked",
                f"{missing} names output {missing.index} of job {missing.job_id}, which made {made}",
                {"after": missing.job_id},
            )
            self._block(job_id, why)
            return
        del self.waiting[job_id]
        self.budget.unreserve(job)  # its hold is taken when it is submitted
        self.jobs[job_id] = replace(job, input=refs.resolved(job.input, job.after, outputs))
        self.flight.to_submit.append(job_id)
        self._emit(EventKind.READY, job_id=job_id, after=list(job.needs))
        self.flight.wake()

    def _block(self, job_id: str, why: ErrorRecord) -> None:
        if self.waiting.pop(job_id, None) is None:
            return
        job = self.jobs[job_id]
        self.budget.unreserve(job)
        self.store.set_status(job_id, JobState.BLOCKED, why)
        self._emit(EventKind.BLOCKED, job_id=job_id, after=why.facts.get("after"), error=why.message)
        self.collector.fail_twins(job_id, JobState.BLOCKED, why)


def outdated_chains(
    jobs: Iterable[Job], store: Store, rows: Mapping[str, tuple[str, int | None, str | None]]
) -> set[str]:
    """The chained jobs that succeeded from an output since replaced: what they sent is not what their
    references resolve to now (a job they need ran again since, a new attempt with new URLs)."""
    outdated: set[str] = set()
    for job in jobs:
        if not job.after or rows.get(job.id, ("",))[0] != JobState.SUCCEEDED:
            continue
        outputs: dict[str, list[str]] = {}
        for upstream in job.needs:
            request = store.current_request(upstream)
            outputs[upstream] = request.outputs if request is not None else []
        sent = store.current_request(job.id)
        if (
            sent is None
            or refs.missing_output(job.after, outputs) is not None
            or sent.input != refs.resolved(job.input, job.after, outputs)
        ):
            outdated.add(job.id)
    return outdated
