"""The cost of a run before it starts: per model, in total, and what is left given the state file.

What is left is told as the commands would spend it: what a plain ``run`` would submit (new, edited,
pending and held jobs), and apart from it what ``retry`` would send again (failed, cancelled, expired)
and what ``--resubmit-unknown`` would (unknown: maybe paid already). A job that can adopt an attempt
already paid under another id (a rename; see ``engine/adopt.py``) costs nothing and is named.

A job's estimate is its model's tier price times its seconds of output, or times the files it asks
for (``pricing.py``). Each model's line says its price, where it was read and when. Jobs with the
same model and input are one paid request (the runner submits the first and copies its outputs),
so twins are counted once. A model without a known price makes the estimate "unknown", which the
plan says, rather than a guess.

Each job is listed too (``plan --json``), with its estimate and whether a run would send it, as the run
itself decides it (:func:`~runner.engine.workplan.plan_work` over the journal): a chained job (its input
names another job's output) is sent once that job succeeds, and its estimate counts from the start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog.pricing import PriceTable, unit_of
from ..engine.budget import committed_spend, spent
from ..engine.chains import outdated_chains
from ..engine.home import is_simulator, recorded_owner
from ..engine.settings import RunSettings
from ..engine.states import IN_FLIGHT, RETRIED, JobState
from ..engine.store import Store
from ..engine.workplan import Row, WorkPlan, plan_work, twin_map
from ..manifest.loader import Manifest


@dataclass
class ModelPlan:
    """One model's share of the manifest."""

    model: str
    jobs: int = 0
    paid_requests: int = 0
    seconds: float = 0.0  # of output, for a model priced per second
    outputs: float = 0.0  # files asked for, for a model priced per output
    price_unit: str | None = None  # ``second``, ``output``; None: nothing states it
    usd_per_unit: float | None = None  # the base price (tiers may differ); None: unknown
    price_source: str | None = None  # ``price table``, ``catalog``, ``--prices FILE``…
    price_read_on: str | None = None
    estimate_usd: float = 0.0
    unknown_price_jobs: int = 0
    done: int = 0
    in_flight: int = 0
    remaining: int = 0  # what a plain `run` would submit
    remaining_usd: float = 0.0
    adopted: int = 0  # take what was already paid under another id
    retry: int = 0  # failed, cancelled or expired: what `retry` would submit besides
    retry_usd: float = 0.0
    unknown: int = 0  # sent again only with --resubmit-unknown
    unknown_usd: float = 0.0


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
    remaining_usd: float  # what a plain `run` would still spend
    spent_usd: float
    committed_usd: float
    unknown_price: bool
    prices_read_on: str
    budget_usd: float | None = None
    over_budget: bool = False
    notes: list[str] = field(default_factory=list)
    retry_usd: float = 0.0  # what `retry` would spend besides (failed, cancelled, expired jobs)
    unknown_usd: float = 0.0  # what `--resubmit-unknown` would spend besides (maybe paying twice)
    adopted: dict[str, str] = field(default_factory=dict)  # job -> the id whose paid request it takes
    simulated: bool = False  # the journal's results came from a simulator (never charged)
    chained: int = 0  # jobs whose input names another job's output (twins counted once)
    chained_usd: float = 0.0  # what they are estimated to cost
    would_submit: int = 0  # jobs a run would send (chained ones included)
    job_list: list[JobPlan] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _model_plan(model: str, prices: PriceTable) -> ModelPlan:
    rule = prices.rule_for(model) or {}
    usd = rule.get("usd")
    known = isinstance(usd, int | float)
    return ModelPlan(
        model,
        price_unit=unit_of(rule) if known else rule.get("unit"),
        usd_per_unit=float(usd) if isinstance(usd, int | float) else None,
        price_source=rule.get("source") if known else None,
        price_read_on=rule.get("read_on") if known else None,
    )


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
    held: set[int] = set()
    if store is not None:
        for r in store.jobs(in_manifest_only=False):
            known[r.job_id] = (r.fingerprint, r.status)
            if r.in_manifest and r.attempt_id is not None and r.status != JobState.SUCCEEDED:
                held.add(r.attempt_id)
    paid = store.paid_attempts(_waiting(manifest, known, twins)) if store is not None else {}
    adopted: dict[str, str] = {}
    work, rows = _work(manifest, store, twins, known, settings or RunSettings())
    sends = set(work.sends)
    details: list[JobPlan] = []
    chained = 0
    chained_usd = 0.0
    by_model: dict[str, ModelPlan] = {}
    unknown = False
    for job in manifest.jobs:
        plan = by_model.get(job.model) or by_model.setdefault(job.model, _model_plan(job.model, prices))
        plan.jobs += 1
        quote = prices.quote(job.model, job.input, defaults_for(job.model))
        fingerprint, status = known.get(job.id, (None, None))
        same = fingerprint == job.fingerprint
        blocked = work.blocked.get(job.id)
        status_now = JobState.BLOCKED if blocked else rows[job.id][0]
        details.append(
            JobPlan(
                job.id,
                job.model,
                quote.usd,
                status_now,
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
        if quote.unit == "output":
            plan.outputs += quote.units or 0.0
        else:
            plan.seconds += quote.units or 0.0
        if quote.usd is None:
            plan.unknown_price_jobs += 1
            unknown = True
        else:
            plan.estimate_usd += quote.usd
        attempt = paid.get(job.fingerprint)
        if same and status == JobState.SUCCEEDED:
            plan.done += 1
        elif same and status in IN_FLIGHT:
            plan.in_flight += 1
        elif same and status in RETRIED:
            plan.retry += 1
            plan.retry_usd += quote.usd or 0.0
        elif same and status == JobState.UNKNOWN:
            plan.unknown += 1
            plan.unknown_usd += quote.usd or 0.0
        elif attempt is not None and attempt.model == job.model and attempt.attempt_id not in held:
            plan.adopted += 1
            adopted[job.id] = attempt.job_id
        else:
            plan.remaining += 1
            plan.remaining_usd += quote.usd or 0.0
    models = sorted(by_model.values(), key=lambda p: p.model)
    for p in models:
        p.estimate_usd = round(p.estimate_usd, 6)
        p.remaining_usd = round(p.remaining_usd, 6)
        p.retry_usd = round(p.retry_usd, 6)
        p.unknown_usd = round(p.unknown_usd, 6)
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
        retry_usd=round(sum(p.retry_usd for p in models), 6),
        unknown_usd=round(sum(p.unknown_usd for p in models), 6),
        adopted=adopted,
        simulated=store is not None and is_simulator(_api(store)),
    )
    result.chained, result.chained_usd = chained, round(chained_usd, 6)
    result.would_submit, result.job_list = len(sends), details
    _chain_notes(result, work, details)
    if budget is not None:
        result.over_budget = committed + remaining > budget + 1e-9
    if twins:
        result.notes.append(
            f"{len(twins)} job(s) have the same model and input as an earlier job and "
            "share its paid request: "
            + ", ".join(f"{a} = {b}" for a, b in list(twins.items())[:10])
            + (" …" if len(twins) > 10 else "")
        )
    if adopted:
        result.notes.append(
            f"{len(adopted)} job(s) take what was already paid under another id, without a new submit: "
            + ", ".join(f"{a} adopted from {b}" for a, b in list(adopted.items())[:10])
            + (" …" if len(adopted) > 10 else "")
        )
    if unknown:
        result.notes.append(
            "some models have no known price: the estimate leaves them out (add a --prices file)"
        )
    return result


def _work(
    manifest: Manifest,
    store: Store | None,
    twins: Mapping[str, str],
    known: Mapping[str, tuple[str, str]],
    settings: RunSettings,
) -> tuple[WorkPlan, dict[str, Row]]:
    """What a run would do, as the run decides it, and the rows it decides from: a job the journal does
    not know, or knows with another model or input, is new (pending)."""
    journal = store.states() if store is not None else {}
    rows: dict[str, Row] = {
        job.id: journal[job.id]
        if job.id in journal and known.get(job.id, ("",))[0] == job.fingerprint
        else (JobState.PENDING, None, None)
        for job in manifest.jobs
    }
    outdated = outdated_chains(manifest.jobs, store, rows) if store is not None else set()
    return plan_work(manifest.jobs, rows, twins, settings, outdated), rows


def _chain_notes(result: Plan, work: WorkPlan, details: list[JobPlan]) -> None:
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


def _api(store: Store) -> str:
    owner = recorded_owner(store)
    return owner.api if owner is not None else ""


def _waiting(manifest: Manifest, known: Mapping[str, tuple[str, str]], twins: Mapping[str, str]) -> set[str]:
    """The fingerprints of the jobs a run would submit (new, edited, pending, held; no twin): those that
    may adopt what was already paid."""
    waiting = set()
    for job in manifest.jobs:
        fingerprint, status = known.get(job.id, (None, None))
        if job.id not in twins and (
            fingerprint != job.fingerprint or status in (JobState.PENDING, JobState.HELD)
        ):
            waiting.add(job.fingerprint)
    return waiting
