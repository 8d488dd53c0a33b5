"""The cost of a run before it starts: per model, in total, and what is left given the state file.

A job's estimate is its model's tier price times its seconds of output, or times the files it asks
for (``pricing.py``). Each model's line says its price, where it was read and when. Jobs with the
same model and input are one paid request (the runner submits the first and copies its outputs),
so twins are counted once. A model without a known price makes the estimate "unknown", which the
plan says, rather than a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog.pricing import PriceTable, unit_of
from ..engine.budget import committed_spend, spent
from ..engine.states import IN_FLIGHT, JobState
from ..engine.store import Store
from ..engine.workplan import twin_map
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
    remaining: int = 0
    remaining_usd: float = 0.0


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
) -> Plan:
    twins = twin_map(manifest.jobs)
    known: dict[str, tuple[str, str]] = {}
    if store is not None:
        known = {r.job_id: (r.fingerprint, r.status) for r in store.jobs(in_manifest_only=False)}
    by_model: dict[str, ModelPlan] = {}
    unknown = False
    for job in manifest.jobs:
        plan = by_model.get(job.model) or by_model.setdefault(job.model, _model_plan(job.model, prices))
        plan.jobs += 1
        quote = prices.quote(job.model, job.input, defaults_for(job.model))
        fingerprint, status = known.get(job.id, (None, None))
        same = fingerprint == job.fingerprint
        if job.id in twins:
            continue  # one paid request with its leader
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
