"""How long a run's jobs take, as learnt from their finishes: the mean, the quantiles the pacer polls
by, and the end phase's step drawn from their spread."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

EAGER_SPREAD = 2.5  # eager step ≥ this x the spread of durations / jobs run per slot so far


@dataclass
class Durations:
    """How long the last jobs ran, as learnt from their finishes: the mean and quantiles."""

    values: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    _sorted: list[float] | None = None
    _mean: float | None = None

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[float]:
        return iter(self.values)

    def add(self, seconds: float) -> None:
        self.values.append(max(0.0, seconds))
        self._sorted = self._mean = None

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

    def eager_step(self, elapsed: float, floor: float) -> float:
        """How often to poll the job that may finish last, ``elapsed`` seconds into the run: a sixtieth
        of a job's run; more when the run so far holds few jobs per slot (its elapsed time over a job's
        run), so that the last wave's polls stay a small share of all."""
        mean = self.mean
        if not mean:
            return floor
        spread = (self.quantile(0.9) or 0.0) * 1.05 - (self.quantile(0.05) or 0.0)
        return max(floor, mean / 60, EAGER_SPREAD * spread / max(1.0, elapsed / mean))
