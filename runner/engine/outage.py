"""What a run does while the API does not answer: stop submitting, ask with safe reads until it answers
again, then go on; and stop the run, to be resumed, when that lasts longer than ``--outage-max-time``.

A paid submit sent into a failing API may be accepted without its answer coming back: its job becomes
``unknown`` (maybe billed, never resubmitted unasked). What an outage costs is the submits on the wire
when it begins, so the run keeps few there, and none while the API is in doubt:

* **up**: at most ``SUBMITS_ON_WIRE`` (4) submits on the wire at once;
* **down**: a submit failed with a 5xx, a timeout, a closed or a refused connection (or a read did):
  no submit leaves; one safe read at a time (:meth:`RunComfyClient.probe`) asks whether the API
  answers, with exponential backoff and full jitter;
* **trial**: the API answers (a probe did), or no submit of this run has been answered yet: one submit
  at a time until one is answered; then up.

So an outage costs at most the submits on the wire when it begins (4, or 1 at a run's start). A trial
that fails goes back to down, with the backoff where it was. Two ways out stop the run (exit 10, the
command to resume): the API has not answered for ``max_seconds``, or ``OUTAGE_TRIALS`` trials in a row
ended unknown (RunComfy answers reads but not submits, and each trial may be paid).

The messages say what happens in a user's words: ``cannot reach HOST: connection refused``, ``HOST
answers HTTP 503``, with how long the run keeps trying; never "rate limited" for a connection that was
never made (a 429 is the one answer this module leaves to the throttle).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum

import anyio

from .. import defaults
from ..api.client import RunComfyClient
from ..errors import ApiError, ApiUnreachable, NeverSent, RateLimited, ServerError, TransportError
from .events import EventKind
from .flight import Flight

# The shortest wait between probes, whatever the retry policy's sleep scale (tests run it at 0).
MIN_PROBE_GAP = 0.05


class Phase(StrEnum):
    UP = "up"
    DOWN = "down"
    TRIAL = "trial"


def api_trouble(error: BaseException) -> bool:
    """Whether a failed call says the API is not answering (not a refusal, not a 429)."""
    if isinstance(error, TransportError):
        return True
    return isinstance(error, ServerError) and (error.http_status or 500) >= 500


def problem(host: str, error: ApiError) -> str:
    """What is wrong, as one line a user understands."""
    status = error.http_status
    if status is not None and status >= 500:
        return f"{host} answers HTTP {status}"
    if isinstance(error, NeverSent):
        return f"cannot reach {host}: {error.reason or 'cannot connect'}"
    if isinstance(error, TransportError) and error.reason:
        return f"{host} did not answer: {error.reason}"
    return f"{host}: {error}"


def span(seconds: float) -> str:
    """A duration as a person reads it: ``0.4s``, ``45.0s``, ``4m30s``, ``1h05m``."""
    minutes, secs = divmod(round(max(0.0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


class Outage:
    """The gate every submit passes, and the probing while the API is down."""

    def __init__(
        self,
        client: RunComfyClient,
        flight: Flight,
        probe_model: str,
        *,
        max_seconds: float,
        clock: Callable[[], float],
        on_wire: int = defaults.SUBMITS_ON_WIRE,
        trials: int = defaults.OUTAGE_TRIALS,
    ) -> None:
        self.client = client
        self.host = client.base_url.split("://", 1)[-1].split("/", 1)[0]
        self.probe_model = probe_model  # any model of the run: its price is the read that asks
        self.policy = client.config.retry  # the backoff of the run's other safe calls
        self.max_seconds = max_seconds
        self.flight = flight
        self._emit = flight.emit
        self._clock = clock
        self.wire_limit = on_wire
        self.trials = trials
        self.phase = Phase.TRIAL  # nothing answered yet: the first submit goes alone
        self.on_wire = 0  # submits past the gate, until their answer
        self.waiting = 0  # submits waiting at the gate
        self.since: float | None = None  # when the API stopped answering (None: it answers)
        self.problem = ""
        self.unknown = 0  # submits of this outage whose outcome is unknown
        self.failed_trials = 0  # trials in a row that ended unknown
        self.stopped = False  # it stopped the run: nothing more to say
        self._attempt = 0  # probes so far in this outage: the backoff's step
        self._changed = anyio.Event()
        self._down = anyio.Event()

    # -- the gate ------------------------------------------------------------------------------
    @property
    def may_start(self) -> bool:
        """Whether the run may line up another submit: always while up; otherwise one waits, no more."""
        return self.phase == Phase.UP or self.waiting + self.on_wire == 0

    def _may_send(self) -> bool:
        if self.phase == Phase.UP:
            return self.on_wire < self.wire_limit
        return self.phase == Phase.TRIAL and self.on_wire == 0

    @asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """Hold a place on the wire for one submit (waiting while the API is down or the wire is full)."""
        self.waiting += 1
        try:
            while not self._may_send():
                await self._changed.wait()
        finally:
            self.waiting -= 1
        self.on_wire += 1
        try:
            yield
        finally:
            self.on_wire -= 1
            self._changed_now()

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
        self.flight.wake()

    async def answering(self) -> None:
        """Wait until the API answers again (returns at once when it does)."""
        while self.since is not None:
            await self._changed.wait()

    # -- what the API says ---------------------------------------------------------------------
    def answered(self) -> None:
        """A submit got an answer (its request id, or a refusal): the API takes submits."""
        self.failed_trials = 0
        if self.phase != Phase.UP:
            self._back()
            self.phase = Phase.UP
            self._changed_now()

    def submit_failed(self, error: ApiError, *, unknown: bool) -> None:
        """A submit got no answer (a 5xx, a timeout, a closed or refused connection); ``unknown``: it
        may have been accepted."""
        if unknown:
            self.unknown += 1
            if self.phase == Phase.TRIAL:
                self.failed_trials += 1
        self._fail(error)
        if self.failed_trials >= self.trials:
            self._stopping(
                ApiUnreachable(
                    f"{self.problem} to submits, though it answers reads: stopped after "
                    f"{self.failed_trials} trial submits in a row with no answer (they may have been "
                    "accepted: see the unknown jobs); run the same command again to resume"
                )
            )

    def call_failed(self, error: ApiError) -> None:
        """A safe call failed; if it says the API is not answering, stop submitting until it does."""
        if api_trouble(error) and not isinstance(error, RateLimited):
            self._fail(error)

    def _fail(self, error: ApiError) -> None:
        self.problem = problem(self.host, error)
        if self.phase == Phase.DOWN:
            return
        self.phase = Phase.DOWN
        if self.since is None:
            self.since = self._clock()
            self._attempt = 0
        self._down.set()
        self._changed_now()

    def _back(self) -> None:
        """The API answers again: the outage is over."""
        if self.since is not None:
            after = self._clock() - self.since
            self._emit(EventKind.API_BACK, host=self.host, after=round(after, 3), unknown=self.unknown)
        self.since = None
        self.unknown = 0

    # -- probing -------------------------------------------------------------------------------
    async def probe_loop(self) -> None:
        """While the API is down, ask it with one safe read at a time, backing off with full jitter,
        until it answers (then a trial submit may go) or ``max_seconds`` have passed (the run stops)."""
        while True:
            await self._down.wait()
            self._down = anyio.Event()
            while self.phase == Phase.DOWN and self.since is not None and not self.stopped:
                left = self.max_seconds - (self._clock() - self.since)
                if left <= 0:
                    self._give_up()
                    return
                delay = min(left, self.policy.backoff(self._attempt))
                self._attempt += 1
                self._emit(
                    EventKind.OUTAGE,
                    problem=self.problem,
                    retry_in=round(delay, 3),
                    gives_up_in=round(left, 3),
                    attempt=self._attempt,
                )
                await anyio.sleep(max(MIN_PROBE_GAP, delay * self.policy.sleep_scale))
                if self.phase != Phase.DOWN:
                    break  # something answered meanwhile
                try:
                    await self.client.probe(self.probe_model)
                except ApiError as exc:
                    if api_trouble(exc):
                        self.problem = problem(self.host, exc)
                        continue
                self._back()
                self.phase = Phase.TRIAL
                self._changed_now()

    def _stopping(self, why: ApiUnreachable) -> None:
        self.stopped = True
        self.flight.stop("outage", why)

    def _give_up(self) -> None:
        assert self.since is not None
        lasted = span(self._clock() - self.since)
        self._stopping(
            ApiUnreachable(
                f"{self.problem} for {lasted}, longer than --outage-max-time: stopped; run the same "
                "command again to resume (submitted jobs are re-attached, none is paid twice)"
            )
        )
