"""How long a run's jobs take, as learnt from their finishes: the mean, the quantiles the pacer polls
by, and the end phase's step drawn from their spread. Each run is measured to within an error (its
start and end are bracketed by polls and whole-second timestamps); the end phase reads the spread with
the errors' share taken out, so that a small account's coarse measures do not make it poll late."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

EAGER_SPREAD = 2.5  # eager step ≥ this x the spread of durations / jobs run per slot so far


@dataclass
class Durations:
    """How long the last jobs ran, as learnt from their finishes: the mean and quantiles."""

    values: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    errors: deque[float] = field(default_factory=lambda: deque(maxlen=256))  # each one's error variance
    _sorted: list[float] | None = None
    _mean: float | None = None
    _shrink: float | None = None
    ceiling: float | None = None  # none learnt yet: the longest a job found done can have run

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[float]:
        return iter(self.values)

    def add(self, seconds: float, error: float = 0.0) -> None:
        """One job's run; ``error``: how far off its measure may be, taken as spread evenly over
        ±``error`` (the pacer passes the half-width of the window its end was found in)."""
        self.values.append(max(0.0, seconds))
        self.errors.append(error * error / 3)
        self._sorted = self._mean = self._shrink = None

    def bound(self, seconds: float) -> None:
        """A job ran at most ``seconds`` (found done, its start unknown): while no run is learnt, the
        shortest such bound stands for one (:attr:`ceiling`)."""
        if seconds > 0 and not self.values:
            self.ceiling = min(seconds, self.ceiling or seconds)

    @property
    def mean(self) -> float | None:
        if self._mean is None and self.values:
            self._mean = sum(self.values) / len(self.values)
        return self._mean

    def quantile(self, q: float) -> float | None:
        if not self.values:
            return None
        if self._sorted is None:
            self._sorted = sorted(self.values)
        return self._sorted[min(len(self._sorted) - 1, int(q * len(self._sorted)))]

    @property
    def shrink(self) -> float:
        """How much narrower the runs' true spread is than the measured one: measuring adds its own
        error to each run (on a small account a start is known to a second or two, on a job of a few
        seconds), and the spread of the errors is taken back out. Never less than half."""
        if self._shrink is None:
            n, mean = len(self.values), self.mean or 0.0
            if n < 8:
                self._shrink = 1.0
            else:
                measured = sum((v - mean) ** 2 for v in self.values) / (n - 1)
                error = sum(self.errors) / n
                self._shrink = math.sqrt(max(0.25, 1.0 - error / measured)) if measured > 0 else 1.0
        return self._shrink

    def narrowed(self, q: float) -> float | None:
        """A quantile as the runs' true spread puts it (:attr:`shrink`): nearer the mean."""
        value, mean = self.quantile(q), self.mean
        if value is None or mean is None:
            return value
        return mean + (value - mean) * self.shrink

    def eager_step(self, elapsed: float, floor: float) -> float:
        """How often to poll the job that may finish last, ``elapsed`` seconds into the run: a sixtieth
        of a job's run; more when the run so far holds few jobs per slot (its elapsed time over a job's
        run), so that the last wave's polls stay a small share of all."""
        mean = self.mean
        if not mean:
            return floor
        spread = (self.narrowed(0.9) or 0.0) * 1.05 - (self.narrowed(0.05) or 0.0)
        return max(floor, mean / 60, EAGER_SPREAD * spread / max(1.0, elapsed / mean))
