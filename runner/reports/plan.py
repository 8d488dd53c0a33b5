"""The cost of a run before it starts: per model, in total, and what is left given the state file.

A job's estimate is its model's tier price times its seconds of output (``pricing.py``). Jobs with
the same model and input are one paid request (the runner submits the first and copies its
outputs), so twins are counted once. A model without a known price makes the estimate
"unknown", which the plan says, rather than a guess.

Each job is listed too (``plan --json``), with its estimate and whether a run would send it, as the run
itself decides it (:func:`~runner.engine.workplan.plan_work` over the journal): a chained job (its input
names another job's output) is sent once that job succeeds, and its estimate counts from the start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog.pricing import PriceTable
from ..engine.budget import committed_spend, spent
from ..engine.chains import outdated_chains
from ..engine.settings import RunSettings
from ..engine.states import IN_FLIGHT, JobState
from ..engine.store import Store
from ..engine.workplan import Row, plan_work, twin_map
from ..manifest.loader import Manifest


@dataclass
class ModelPlan:
    """One model's share of the manifest."""

    model: str
    jobs: int = 0
    paid_requests: int = 0
    seconds: float = 0.0
    estimate_usd: float = 0.0
    unknown_price_jobs: int = 0
    done: int = 0
    in_flight: int = 0
    remaining: int = 0
    remaining_usd: float = 0.0


@dataclass
class JobPlan:
    """One job as a run would see it: its estimate, where it stands, and whether a run sends it."""

    id: str
    model: str
    estimate_usd: float | None
    status: str  # in the journal (``pending`` for a job it does not know or that changed)
    would_submit: bool  # now, or (a chained job) once the jobs it names succeed
    twin_of: str | None = None  # same model and input as this job: one paid request
    after: list[str] = field(default_factory=list)  # the jobs whose outputs its input names
    why: str | None = None  # why it is not sent (blocked: the job it needs did not succeed)


@dataclass
class Plan:
    """A dry run: what the manifest costs and what a run would still spend."""

    models: list[ModelPlan]
    jobs: int
    twins: dict[str, str]
    estimate_usd: float
    remaining_usd: float
    spent_usd: float
    committed_usd: float
    unknown_price: bool
    prices_read_on: str
    budget_usd: float | None = None
    over_budget: bool = False
    notes: list[str] = field(default_factory=list)
    chained: int = 0  # jobs whose input names another job's output (twins counted once)
    chained_usd: float = 0.0  # what they are estimated to cost
    would_submit: int = 0  # jobs a run would send (chained ones included)
    job_list: list[JobPlan] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def make_plan(
    manifest: Manifest,
    prices: PriceTable,
    defaults_for: Callable[[str], Mapping[str, Any]],
    store: Store | None = None,
    budget_usd: float | None = None,
    settings: RunSettings | None = None,
) -> Plan:
    twins = twin_map(manifest.jobs)
    known: dict[str, tuple[str, str]] = {}
    rows: dict[str, Row] = {}
    if store is not None:
        for r in store.jobs(in_manifest_only=False):
            known[r.job_id] = (r.fingerprint, r.status)
            rows[r.job_id] = (r.status, r.attempt_id, r.request_id)
    # What a run would do, as the run decides it: a job the journal does not know, or knows with another
    # model or input, is new (pending).
    rows = {
        job.id: rows[job.id]
        if known.get(job.id, ("",))[0] == job.fingerprint
        else (JobState.PENDING, None, None)
        for job in manifest.jobs
    }
    outdated = outdated_chains(manifest.jobs, store, rows) if store is not None else set()
    work = plan_work(manifest.jobs, rows, twins, settings or RunSettings(), outdated)
    sends = set(work.sends)
    details: list[JobPlan] = []
    chained = 0
    chained_usd = 0.0
    by_model: dict[str, ModelPlan] = {}
    unknown = False
    for job in manifest.jobs:
        plan = by_model.setdefault(job.model, ModelPlan(job.model))
        plan.jobs += 1
        quote = prices.quote(job.model, job.input, defaults_for(job.model))
        fingerprint, status = known.get(job.id, (None, None))
        same = fingerprint == job.fingerprint
        blocked = work.blocked.get(job.id)
        details.append(
            JobPlan(
                job.id,
                job.model,
                quote.usd,
                JobState.BLOCKED if blocked else rows[job.id][0],
                job.id in sends,
                twins.get(job.id),
                list(job.needs),
                blocked.message if blocked else None,
            )
        )
        if job.id in twins:
            continue  # one paid request with its leader
        if job.after:
            chained += 1
            chained_usd += quote.usd or 0.0
        plan.paid_requests += 1
        plan.seconds += quote.units or 0.0
        if quote.usd is None:
            plan.unknown_price_jobs += 1
            unknown = True
        else:
            plan.estimate_usd += quote.usd
        if same and status == JobState.SUCCEEDED:
            plan.done += 1
        elif same and status in IN_FLIGHT:
            plan.in_flight += 1
        else:
            plan.remaining += 1
            plan.remaining_usd += quote.usd or 0.0
    models = sorted(by_model.values(), key=lambda p: p.model)
    for p in models:
        p.estimate_usd = round(p.estimate_usd, 6)
        p.remaining_usd = round(p.remaining_usd, 6)
    remaining = round(sum(p.remaining_usd for p in models), 6)
    committed = committed_spend(store) if store is not None else 0.0
    budget = budget_usd if budget_usd is not None else manifest.budget_usd
    result = Plan(
        models,
        len(manifest.jobs),
        twins,
        round(sum(p.estimate_usd for p in models), 6),
        remaining,
        spent(store) if store is not None else 0.0,
        round(committed, 6),
        unknown,
        prices.read_on,
        budget,
    )
    result.chained, result.chained_usd = chained, round(chained_usd, 6)
    result.would_submit, result.job_list = len(sends), details
    if work.chained:
        waiting = sum(d.estimate_usd or 0.0 for d in details if d.id in work.chained)
        result.notes.append(
            f"{len(work.chained)} of them are chained (${waiting:.2f}): each is sent once the jobs whose "
            "outputs it names have succeeded, and its estimate counts from the start"
        )
    if work.blocked:
        result.notes.append(
            f"{len(work.blocked)} chained job(s) are blocked: a job whose output they need did not "
            "succeed (see job_list in --json)"
        )
    if work.left_out:
        result.notes.append(f"{work.left_out} job(s) still to do are left out by --only/--limit")
    if budget is not None:
        result.over_budget = committed + remaining > budget + 1e-9
    if twins:
        result.notes.append(
            f"{len(twins)} job(s) have the same model and input as an earlier job and "
            "share its paid request: "
            + ", ".join(f"{a} = {b}" for a, b in list(twins.items())[:10])
            + (" …" if len(twins) > 10 else "")
        )
    if unknown:
        result.notes.append(
            "some models have no known price: the estimate leaves them out (add a --prices file)"
        )
    return result
