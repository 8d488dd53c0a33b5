"""What a run does with each job, decided from the journal before anything is sent.

This is the resume contract's second step, as a plain function of the manifest's jobs and their rows
in the journal: a job with a ``request_id`` is re-attached (polled, never submitted again); a job
whose request finished is collected; only what rests in a state the run sends again is submitted.

Jobs with the same model and input (*twins*) are one paid request: the first of them in the manifest
(the *leader*) is sent, the others *follow* it and get copies of its outputs. A twin whose leader rests
(unknown, failed…) and is not sent this time rests with it, since sending the twin instead would pay
for the same request again.

A *chained* job (its input names another job's output) is decided once the jobs it needs are, upstream
first: it waits for them when they are coming this run, is blocked when one of them is at rest without
success, and runs again when it succeeded from an output that has since been replaced (the job that made
it runs again, or made another since: ``outdated``). ``--only`` and ``--limit`` then narrow what is sent
(:func:`narrowed`): jobs still in flight are watched and collected whatever they are.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ErrorRecord, UsageError
from ..manifest import chains as refs
from ..manifest.loader import Job
from .chains import blocked_why
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
    # Chained jobs sent this run, each with the jobs it waits for (none: they succeeded already).
    chained: dict[str, tuple[str, ...]] = field(default_factory=dict)
    blocked: dict[str, ErrorRecord] = field(default_factory=dict)  # chained jobs that cannot be sent
    rerun: list[str] = field(default_factory=list)  # succeeded from an output since replaced: pending again
    scope: set[str] | None = None  # --only / --limit: the jobs this run is about (None: all of them)
    left_out: int = 0  # jobs still to do that --only / --limit leave for another run

    @property
    def waiting(self) -> int:
        """Jobs that wait to be sent, for a leader's outputs, or for the jobs they need."""
        return len(self.submit) + len(self.chained) + sum(len(twins) for twins in self.follow.values())

    @property
    def sends(self) -> list[str]:
        """Every job this run would send (now or once the jobs it needs succeed)."""
        return [*self.submit, *self.chained]


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
    jobs: Sequence[Job],
    rows: Mapping[str, Row],
    twins: Mapping[str, str],
    settings: RunSettings,
    outdated: Collection[str] = (),
) -> WorkPlan:
    """The plan for ``jobs`` given their journal ``rows`` (every job of the manifest has one),
    ``twins`` (from :func:`twin_map`) and the chained jobs that succeeded from an output since
    replaced (``outdated``, from :func:`~.chains.outdated_chains`)."""
    plan = WorkPlan(unknown={job_id for job_id, (status, _, _) in rows.items() if status == JobState.UNKNOWN})
    chained: list[Job] = []
    for job in jobs:
        status, attempt_id, request_id = rows[job.id]
        if status in (JobState.QUEUED, JobState.RUNNING) and request_id:
            plan.reattach.append(Reattach(job.id, attempt_id or 0, request_id, JobState(status)))
        elif status == JobState.COLLECTING and attempt_id is not None:
            plan.collect.append(job.id)
        elif job.after and job.id not in twins:
            chained.append(job)  # decided below, once the jobs it needs are
        elif runs_now(status, settings) or status == JobState.BLOCKED:
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
    if chained:
        _plan_chains(plan, chained, rows, settings, outdated)
    return narrowed(plan, jobs, twins, settings)


def _plan_chains(
    plan: WorkPlan,
    chained: list[Job],
    rows: Mapping[str, Row],
    settings: RunSettings,
    outdated: Collection[str],
) -> None:
    """Decide the chained jobs, upstream first: each waits for the jobs it needs that are coming this
    run, is blocked by one at rest without success, or runs again when one of them will make a new
    output (or made one since it ran)."""
    # Jobs that will have a new attempt (new output URLs) this run, and those that will succeed; a job
    # whose outputs are only downloaded again keeps its attempt and its URLs.
    renewing = {*plan.submit, *(r.job_id for r in plan.reattach)}
    renewing.update(twin for twins in (*plan.follow.values(), *plan.copy.values()) for twin in twins)
    coming = {*renewing, *plan.collect}
    by_id = {job.id: job for job in chained}
    order, _ = refs.order({job.id: job.needs for job in chained})
    for job_id in order:
        job = by_id.get(job_id)
        if job is None:
            continue  # a job chained jobs need, not chained itself
        status = rows[job_id][0]
        if status == JobState.SUCCEEDED:
            if job_id in outdated or any(up in renewing for up in job.needs):
                plan.rerun.append(job_id)
                plan.chained[job_id] = tuple(up for up in job.needs if up in coming)
                coming.add(job_id)
                renewing.add(job_id)
            continue
        if not (runs_now(status, settings) or status == JobState.BLOCKED):
            continue  # at rest (failed, unknown…): sent again only when the user asks, as any job
        resting = next(
            (up for up in job.needs if up not in coming and rows[up][0] != JobState.SUCCEEDED), None
        )
        if resting is not None:
            plan.blocked[job_id] = blocked_why(resting, rows[resting][0])
            continue
        plan.chained[job_id] = tuple(up for up in job.needs if up in coming)
        coming.add(job_id)
        renewing.add(job_id)


def selected_ids(jobs: Sequence[Job], twins: Mapping[str, str], patterns: Sequence[str]) -> set[str]:
    """The ids ``--only`` patterns match, with what they cannot be made without: the jobs whose
    outputs their inputs name (upstream, all the way) and the leader of a twin (its paid request)."""
    by_id = {job.id: job for job in jobs}
    wanted = {job.id for job in jobs if any(fnmatch.fnmatchcase(job.id, p) for p in patterns)}
    if not wanted:
        some = ", ".join(job.id for job in jobs[:3]) + (", …" if len(jobs) > 3 else "")
        raise UsageError(f"--only {' '.join(patterns)}: no job id matches (the ids are {some})")
    todo = list(wanted)
    while todo:
        job = by_id[todo.pop()]
        for needed in (*job.needs, *([twins[job.id]] if job.id in twins else [])):
            if needed not in wanted and needed in by_id:
                wanted.add(needed)
                todo.append(needed)
    return wanted


def narrowed(
    plan: WorkPlan, jobs: Sequence[Job], twins: Mapping[str, str], settings: RunSettings
) -> WorkPlan:
    """The plan with only what ``--only`` and ``--limit`` leave to send (everything in flight stays).

    ``--only`` keeps the jobs whose ids match and what they need (:func:`selected_ids`); ``--limit N``
    then the first N of those still to send, in manifest order with every job after the jobs it
    needs, so a chain is never cut below the jobs it starts from."""
    if not settings.only and settings.limit is None:
        return plan
    scope = selected_ids(jobs, twins, settings.only) if settings.only else {job.id for job in jobs}
    sends = set(plan.sends)
    if settings.limit is not None:
        candidates = {job.id: job for job in jobs if job.id in sends and job.id in scope}
        order, _ = refs.order(
            {job_id: tuple(n for n in job.needs if n in candidates) for job_id, job in candidates.items()}
        )
        chosen = set(order[: settings.limit])
        scope = chosen | {twin for twin, leader in twins.items() if leader in chosen and twin in scope}
    left_out = len(sends - scope)
    kept = WorkPlan(
        submit=[j for j in plan.submit if j in scope],
        reattach=plan.reattach,
        collect=plan.collect,
        follow={lead: [t for t in ts if t in scope] for lead, ts in plan.follow.items() if lead in scope},
        copy={lead: [t for t in ts if t in scope] for lead, ts in plan.copy.items()},
        rest={t: why for t, why in plan.rest.items() if t in scope},
        unknown=plan.unknown,
        chained={j: w for j, w in plan.chained.items() if j in scope},
        blocked={j: why for j, why in plan.blocked.items() if j in scope},
        rerun=[j for j in plan.rerun if j in scope],
        scope=scope,
        left_out=left_out,
    )
    return kept


def scope_counts(rows: Mapping[str, Row], scope: Collection[str] | None) -> dict[str, int] | None:
    """Per state, the jobs ``--only`` / ``--limit`` chose (what a run's outcome is judged on); None
    without a subset."""
    if scope is None:
        return None
    counts: dict[str, int] = {}
    for job_id, (status, _, _) in rows.items():
        if job_id in scope:
            counts[status] = counts.get(status, 0) + 1
    return counts
