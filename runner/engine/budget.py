"""The money of one run: what each job is estimated to cost, what is committed, and the cap.

Committed spend is what the state file may already have paid (charged costs, else the estimates of
attempts that may have reached RunComfy) plus the estimate of every submit this run has started. A
submit puts a *hold* of its estimate on the budget before it is sent; a submit that creates no
request is *refunded*; a finished request is *settled*: its estimate is replaced by what RunComfy
charged. So the cap is never passed by jobs in flight whose cost is not known yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..catalog.pricing import PriceTable
from ..errors import BudgetExceeded
from ..manifest.loader import Job
from .store import Store

# Sums of float prices: a job exactly at the cap is within it.
_SLACK = 1e-9


class Budget:
    """Estimates per job (kept until the price table changes), committed spend, and the cap."""

    def __init__(
        self,
        prices: PriceTable,
        cap_usd: float | None,
        *,
        partial: bool = False,
        defaults_for: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> None:
        self.prices = prices
        self.cap_usd = cap_usd
        self.partial = partial  # --budget-partial: start even when the estimate is over the cap
        self.committed_usd = 0.0
        self.reserved_usd = 0.0  # the estimates of chained jobs waiting for another job's output
        self._reserved: dict[str, Job] = {}
        self._defaults_for = defaults_for or (lambda model: {})
        self._estimates: dict[str, float | None] = {}

    def estimate(self, job: Job) -> float | None:
        """The job's price from the current table (``None``: its model has no known price)."""
        try:
            return self._estimates[job.id]
        except KeyError:
            usd = self.prices.quote(job.model, job.input, self._defaults_for(job.model)).usd
            self._estimates[job.id] = usd
            return usd

    def reprice(self, model: str, answer: Mapping[str, Any]) -> None:
        """A fresher price for ``model`` (the API answered it): estimates are made again from now on."""
        self.prices = self.prices.refreshed(model, answer)
        self._estimates.clear()
        self.reserved_usd = sum(self.estimate(job) or 0.0 for job in self._reserved.values())

    def check_start(self, to_submit: Iterable[Job]) -> None:
        """Refuse to start (:class:`BudgetExceeded`) when committed spend plus the estimate of what is
        left to submit is over the cap, or a price is unknown, unless the run may start partially."""
        if self.cap_usd is None or self.partial:
            return
        jobs = list(to_submit)
        remaining = [self.estimate(job) for job in jobs]
        unpriced = sorted({job.model for job, e in zip(jobs, remaining, strict=True) if e is None})
        if unpriced:
            named = ", ".join(unpriced[:3]) + (f" and {len(unpriced) - 3} more" if len(unpriced) > 3 else "")
            raise BudgetExceeded(
                f"a budget is set but some models have no known price: {named}; "
                "add them to a --prices file or run with --budget-partial"
            )
        total = self.committed_usd + sum(e or 0.0 for e in remaining)
        if total > self.cap_usd + _SLACK:
            raise BudgetExceeded(
                f"the estimate for this run is ${total:.2f} (${self.committed_usd:.2f} already committed), "
                f"over the budget of ${self.cap_usd:.2f}; raise --budget or run with --budget-partial"
            )

    def hold(self, job: Job) -> bool:
        """Commit the job's estimate before it is sent; ``False`` (nothing committed) when that would
        pass the cap or, under a cap, its price is unknown: the job is then held."""
        estimate = self.estimate(job)
        if self.cap_usd is not None and (
            estimate is None or self.committed_usd + self.reserved_usd + estimate > self.cap_usd + _SLACK
        ):
            return False
        self.committed_usd += estimate or 0.0
        return True

    def reserve(self, job: Job) -> None:
        """Keep room for a chained job while it waits for another job's output: the jobs after it
        cannot take that money (its submit then takes its hold, :meth:`unreserve` first)."""
        if job.id not in self._reserved:
            self._reserved[job.id] = job
            self.reserved_usd += self.estimate(job) or 0.0

    def unreserve(self, job: Job) -> None:
        """The chained job is about to be sent, or will not be: its room is given back."""
        if self._reserved.pop(job.id, None) is not None:
            self.reserved_usd -= self.estimate(job) or 0.0

    def refund(self, job: Job) -> None:
        """The job's submit created no request: its hold is lifted."""
        self.committed_usd -= self.estimate(job) or 0.0

    def settle(self, job: Job, charged_usd: float | None) -> None:
        """The job's request ended: what RunComfy charged replaces its estimate (when it says)."""
        if charged_usd is not None:
            self.committed_usd += charged_usd - (self.estimate(job) or 0.0)


def committed_spend(store: Store) -> float:
    """Money spent or possibly spent by this state file (see :meth:`Store.committed_usd`)."""
    return store.committed_usd()


def spent(store: Store) -> float:
    """Money RunComfy reported charging for the manifest's jobs: what status, the report and a run's
    summary all show (:meth:`Store.spent_usd`)."""
    return store.spent_usd()
