"""What a run does with each job, decided from the journal before anything is sent.

This is the resume contract's second step, as a plain function of the manifest's jobs and their rows
in the journal: a job with a ``request_id`` is re-attached (polled, never submitted again); a job
whose request finished is collected; only what rests in a state the run sends again is submitted.

Jobs with the same model and input (*twins*) are one paid request: the first of them in the manifest
(the *leader*) is sent, the others *follow* it and get copies of its outputs. A twin whose leader rests
(unknown, failed…) and is not sent this time rests with it, since sending the twin instead would pay
for the same request again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ErrorRecord
from ..manifest.loader import Job
from .settings import RunSettings, runs_now
from .states import IN_FLIGHT, JobState

# A job's row as the journal gives it to a run: status, current attempt, that attempt's request id.
Row = tuple[str, int | None, str | None]


@dataclass(frozen=True)
class Reattach:
    """A request RunComfy has for a job: polled until it lands."""

    job_id: str
    attempt_id: int
    request_id: str
    status: JobState


@dataclass
class WorkPlan:
    """The work of one run, in manifest order."""

    submit: list[str] = field(default_factory=list)  # job ids to send
    reattach: list[Reattach] = field(default_factory=list)
    collect: list[str] = field(default_factory=list)  # finished at RunComfy; outputs to download
    follow: dict[str, list[str]] = field(default_factory=dict)  # leader -> twins waiting for its outputs
    copy: dict[str, list[str]] = field(default_factory=dict)  # succeeded leader -> twins to copy to now
    rest: dict[str, tuple[JobState, ErrorRecord]] = field(default_factory=dict)  # twin -> its leader's rest
    unknown: set[str] = field(default_factory=set)  # submit unknown: a new one is a knowing resubmission

    @property
    def waiting(self) -> int:
        """Jobs that wait to be sent, or for a leader's outputs."""
        return len(self.submit) + sum(len(twins) for twins in self.follow.values())


def twin_map(jobs: Iterable[Job]) -> dict[str, str]:
    """Job id -> the first job id with the same fingerprint (dedupe: one paid request for both)."""
    first: dict[str, str] = {}
    twins: dict[str, str] = {}
    for job in jobs:
        leader = first.setdefault(job.fingerprint, job.id)
        if leader != job.id:
            twins[job.id] = leader
    return twins


def plan_work(
    jobs: Sequence[Job], rows: Mapping[str, Row], twins: Mapping[str, str], settings: RunSettings
) -> WorkPlan:
    """The plan for ``jobs`` given their journal ``rows`` (every job of the manifest has one) and
    ``twins`` (from :func:`twin_map`)."""
    plan = WorkPlan(unknown={job_id for job_id, (status, _, _) in rows.items() if status == JobState.UNKNOWN})
    for job in jobs:
        status, attempt_id, request_id = rows[job.id]
        if status in (JobState.QUEUED, JobState.RUNNING) and request_id:
            plan.reattach.append(Reattach(job.id, attempt_id or 0, request_id, JobState(status)))
        elif status == JobState.COLLECTING and attempt_id is not None:
            plan.collect.append(job.id)
        elif runs_now(status, settings):
            leader = twins.get(job.id)
            if leader is None:
                plan.submit.append(job.id)
                continue
            lead = rows[leader][0]
            if lead == JobState.SUCCEEDED:
                plan.copy.setdefault(leader, []).append(job.id)
            elif lead in IN_FLIGHT or runs_now(lead, settings):
                plan.follow.setdefault(leader, []).append(job.id)
            else:
                why = ErrorRecord("Twin", f"same request as {leader}, which is {lead}")
                plan.rest[job.id] = (JobState(lead), why)
    return plan
