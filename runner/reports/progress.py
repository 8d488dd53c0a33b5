"""What a person sees while a run goes on. Every display here is an event sink: a callable that takes
the run's events (``{"event": kind, "time": …, …}``, their kinds listed in
:mod:`runner.engine.events`), so the run holds no display code.

* :class:`LiveProgress` (a terminal): a bar with done / running / queued / waiting / chained / failed /
  blocked counts (chained: waiting for another job's output; blocked: that job did not succeed),
  throughput, ETA, spend so far and the current concurrency, above a short log of notable events
  (retries, 429 slow-downs, failures). Failures are also printed above the bar, so they stay on screen
  after it is gone; on success the bar leaves nothing behind but the command's one-line summary.
* :class:`LineLog` (a log file, a pipe, ``--no-progress``): one line per notable event; routine events
  (submitted, running, succeeded, retries) only with ``--verbose``. With ``--json-log`` it writes every
  event as one JSON object per line, for pipelines. A stream that goes away (a pipe whose reader
  exited) is written to no more: the run does not depend on anyone reading it.

Both word each event with :func:`.lines.describe`, and read the run through :class:`Tally`, which
places every job in one bucket from the ``start`` event's counts and each job event after it. Nothing
printed here can contain the API token: every line goes through :func:`~runner.errors.redact`, and
user text is never read as rich markup.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..engine.events import Event, EventKind, EventSink
from ..engine.states import JobState
from ..errors import redact
from .lines import describe, money


class Bucket(StrEnum):
    """Where a job is, as the displays count it (coarser than its state)."""

    DONE = "done"
    RUNNING = "running"  # running at RunComfy or being downloaded
    QUEUED = "queued"  # in RunComfy's queue
    WAITING = "waiting"  # not sent yet
    CHAINED = "chained"  # not sent yet: waiting for the output of another job
    FAILED = "failed"  # at rest, needing attention: failed, unknown, expired, cancelled
    HELD = "held"  # waiting for budget
    BLOCKED = "blocked"  # never sent: a job whose output it needs did not succeed


BUCKETS = tuple(Bucket)
_AT_REST_FAILED = (JobState.FAILED, JobState.UNKNOWN, JobState.EXPIRED, JobState.CANCELLED)
# The events that leave a job in one of those states (each is named as the state it leaves it in).
_ENDED_BADLY = frozenset(EventKind(state) for state in _AT_REST_FAILED)

# Shown in plain mode without --verbose, and kept in the live display's log.
NOTABLE = _ENDED_BADLY | {
    EventKind.BLOCKED,
    EventKind.STOPPING,
    EventKind.OUTAGE,
    EventKind.API_BACK,
    EventKind.INTERNAL_ERROR,
    EventKind.CONCURRENCY,
    EventKind.UNKNOWN_STATUS,
    EventKind.DOWNLOAD_ERROR,
    EventKind.RESUBMIT,
    EventKind.REFETCH,
}
# Shown in the live log (they explain a slow run), but in plain mode only with --verbose.
WORTH_A_GLANCE = frozenset({EventKind.RETRY, EventKind.POLL_ERROR, EventKind.HELD, EventKind.READY})
# Printed above the live display, so they stay on screen after it is gone (an outage's first line and
# its end, not each probe's).
_KEPT_ON_SCREEN = NOTABLE - {EventKind.CONCURRENCY, EventKind.REFETCH, EventKind.OUTAGE}


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class Tally:
    """The run as its events tell it: a bucket for every job, spend, throughput and concurrency.

    The ``start`` event places the jobs not yet heard of in pools by state; each later job event
    moves one job, taken from its last known bucket or, the first time a job is heard of, from the
    pool its event implies. The ``finish`` event's counts settle every number.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, window: int = 50) -> None:
        self.clock = clock
        self.jobs = 0
        self.counts = dict.fromkeys(BUCKETS, 0)
        self._pool = dict.fromkeys(BUCKETS, 0)  # jobs not heard of since start, by bucket
        self._where: dict[str, Bucket] = {}
        self.spent_usd = 0.0
        self.http: int | None = None
        self.http_max: int | None = None
        self.max_in_flight: int | None = None
        self.retries = 0
        self.started_at: float | None = None
        self.finished: dict[str, Any] | None = None
        self._recent: deque[float] = deque(maxlen=window)
        self._rate_base: float | None = None

    # -- reading -------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self.counts[Bucket.QUEUED] + self.counts[Bucket.RUNNING]

    @property
    def remaining(self) -> int:
        return self.counts[Bucket.WAITING] + self.counts[Bucket.CHAINED] + self.in_flight

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else self.clock() - self.started_at

    def rate(self) -> float | None:
        """Jobs finished per second, over the last ``window`` finishes of this run."""
        if not self._recent or self._rate_base is None:
            return None
        span = self.clock() - self._rate_base
        return len(self._recent) / span if span > 0 else None

    def eta(self) -> float | None:
        rate = self.rate()
        if not self.remaining:
            return 0.0
        return self.remaining / rate if rate else None

    # -- events --------------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        kind = event["event"]
        if kind == EventKind.START:
            self._start(event)
        elif kind == EventKind.FINISH:
            self._finish(event)
        elif kind == EventKind.CONCURRENCY and isinstance(event.get("http"), int):
            self.http = event["http"]
        elif kind == EventKind.RETRY:
            self.retries += 1
        charged = kind == EventKind.COMPLETED or kind in _ENDED_BADLY
        if charged and isinstance(event.get("cost_usd"), int | float):
            self.spent_usd += event["cost_usd"]
        job = event.get("job_id")
        if self.started_at is None or self.finished is not None or not isinstance(job, str):
            return
        target = self._target(kind, event)
        if target is not None:
            self._move(job, self._source(job, kind, event), target)

    def _start(self, event: Event) -> None:
        counts = dict(event.get("counts") or {})
        self.jobs = int(event.get("jobs") or 0)
        pool = dict.fromkeys(BUCKETS, 0)
        pool[Bucket.DONE] = counts.get(JobState.SUCCEEDED, 0)
        pool[Bucket.QUEUED] = counts.get(JobState.QUEUED, 0)
        pool[Bucket.RUNNING] = counts.get(JobState.RUNNING, 0) + counts.get(JobState.COLLECTING, 0)
        pool[Bucket.CHAINED] = int(event.get("chained") or 0)
        pool[Bucket.WAITING] = int(event.get("waiting") or event.get("to_submit") or 0) - pool[Bucket.CHAINED]
        pool[Bucket.BLOCKED] = counts.get(JobState.BLOCKED, 0)
        pool[Bucket.FAILED] = max(0, self.jobs - sum(pool.values()))
        self._pool = pool
        self.counts = dict(pool)
        self._where.clear()
        self.spent_usd = float(event.get("spent_usd") or 0.0)
        self.http = self.http_max = event.get("http")
        self.max_in_flight = event.get("max_in_flight")
        self.started_at = self._rate_base = self.clock()
        self.finished = None

    def _finish(self, event: Event) -> None:
        counts = dict(event.get("counts") or {})
        in_flight = (JobState.RUNNING, JobState.COLLECTING, JobState.SUBMITTING)
        self.counts = {
            Bucket.DONE: counts.get(JobState.SUCCEEDED, 0),
            Bucket.RUNNING: sum(counts.get(s, 0) for s in in_flight),
            Bucket.QUEUED: counts.get(JobState.QUEUED, 0),
            Bucket.WAITING: counts.get(JobState.PENDING, 0),
            Bucket.FAILED: sum(counts.get(s, 0) for s in _AT_REST_FAILED),
            Bucket.CHAINED: 0,
            Bucket.HELD: counts.get(JobState.HELD, 0),
            Bucket.BLOCKED: counts.get(JobState.BLOCKED, 0),
        }
        if isinstance(event.get("cost_usd"), int | float):
            self.spent_usd = float(event["cost_usd"])
        self.finished = dict(event)

    @staticmethod
    def _target(kind: str, event: Event) -> Bucket | None:
        if kind in (EventKind.SUBMITTED, EventKind.QUEUED):
            return Bucket.QUEUED
        if kind in (EventKind.RUNNING, EventKind.COMPLETED):
            return Bucket.RUNNING
        if kind == EventKind.SUCCEEDED:
            return Bucket.DONE
        if kind in _ENDED_BADLY or kind == EventKind.INTERNAL_ERROR:
            return Bucket.FAILED
        if kind == EventKind.HELD:
            return Bucket.HELD
        if kind == EventKind.BLOCKED:
            return Bucket.BLOCKED
        if kind in (EventKind.RESUBMIT, EventKind.READY):
            return Bucket.WAITING
        return None

    def _source(self, job: str, kind: str, event: Event) -> Bucket:
        """The bucket ``job`` leaves: where it was last seen, or the pool its first event implies."""
        known = self._where.get(job)
        if known is not None:
            return known
        sent_now = kind in (EventKind.SUBMITTED, EventKind.HELD, EventKind.UNKNOWN)
        if kind in (EventKind.READY, EventKind.BLOCKED):
            order = (Bucket.CHAINED, Bucket.WAITING, Bucket.FAILED, Bucket.RUNNING)
        elif sent_now or event.get("twin_of") or event.get("stage") == "submit":
            order = (Bucket.WAITING, Bucket.QUEUED, Bucket.RUNNING, Bucket.FAILED)
        elif kind == EventKind.RUNNING:
            order = (Bucket.QUEUED, Bucket.RUNNING, Bucket.WAITING, Bucket.FAILED)
        else:  # a re-attached or downloading job finishing
            order = (Bucket.RUNNING, Bucket.QUEUED, Bucket.WAITING, Bucket.FAILED)
        for pool in order:
            if self._pool[pool] > 0:
                self._pool[pool] -= 1
                return pool
        return order[0]  # more events than jobs (should not happen): keep the counts non-negative below

    def _move(self, job: str, source: Bucket, target: Bucket) -> None:
        self._where[job] = target
        if source == target:
            return
        self.counts[source] = max(0, self.counts[source] - 1)
        self.counts[target] += 1
        if target in (Bucket.DONE, Bucket.FAILED, Bucket.BLOCKED):
            now = self.clock()
            if len(self._recent) == self._recent.maxlen:
                self._rate_base = self._recent[0]
            self._recent.append(now)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


class LineLog:
    """An event sink that writes one line per notable event (every event with ``verbose``), or every
    event as a JSON object per line (``json_lines``)."""

    def __init__(
        self, stream: TextIO | None = None, *, verbose: bool = False, json_lines: bool = False
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.verbose = verbose
        self.json_lines = json_lines
        self.tally = Tally()
        self._held_shown = False
        self.closed = False  # the stream went away (its reader exited): nothing more is written

    def __call__(self, event: Event) -> None:
        self.tally.apply(event)
        if self.json_lines:
            # Redact the values, not the JSON text: a redaction must not eat a closing quote.
            self._put(json.dumps(_redacted(event), default=str, ensure_ascii=False) + "\n")
            return
        kind = event["event"]
        if kind == EventKind.HELD and not self._held_shown and not self.verbose:
            self._held_shown = True
            self._write(self._stamp(event) + describe(event) + " (further held jobs are not listed)")
            return
        if kind in NOTABLE or self.verbose:
            self._write(self._stamp(event) + describe(event))
            if self.verbose and event.get("traceback"):
                self._write(str(event["traceback"]).rstrip())

    @staticmethod
    def _stamp(event: Event) -> str:
        t = event.get("time")
        return datetime.fromtimestamp(t).strftime("%H:%M:%S ") if isinstance(t, int | float) else ""

    def _write(self, line: str) -> None:
        self._put(redact(line) + "\n")

    def _put(self, text: str) -> None:
        if self.closed:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe (EPIPE), a closed file
            self.closed = True
            let_go(self.stream)


def let_go(stream: TextIO) -> None:
    """Point a stream whose reader went away at /dev/null: what is still buffered for it, and the
    interpreter's last flush at exit, go nowhere instead of raising (or setting the exit code) again."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class LiveProgress:
    """A live terminal display (rich) of a run, fed by its events. Use it as a context manager."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        title: str = "",
        verbose: bool = False,
        log_lines: int = 5,
        clock: Callable[[], float] = time.monotonic,
        refresh_per_second: float = 4,
        transient: bool = True,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.title = title
        self.verbose = verbose
        self.tally = Tally(clock)
        self.log: deque[str] = deque(maxlen=log_lines)
        self._lock = threading.Lock()
        self._live = Live(
            self,
            console=self.console,
            refresh_per_second=refresh_per_second,
            transient=transient,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def __call__(self, event: Event) -> None:
        kind = event["event"]
        with self._lock:
            self.tally.apply(event)
            if kind in NOTABLE or kind in WORTH_A_GLANCE or (self.verbose and kind != EventKind.FINISH):
                self.log.append(redact(LineLog._stamp(event) + describe(event)))
        first_of_outage = kind == EventKind.OUTAGE and event.get("attempt") == 1
        if kind in _KEPT_ON_SCREEN or first_of_outage:
            self._live.console.print(Text(redact(LineLog._stamp(event) + describe(event)), style="yellow"))
            if self.verbose and event.get("traceback"):
                self._live.console.print(Text(redact(str(event["traceback"]).rstrip()), style="dim"))
        if kind == EventKind.STOPPING:
            # A second Ctrl-C ends the process at once (os._exit): leave the terminal's cursor visible.
            self.console.show_cursor(True)
        if kind in (EventKind.START, EventKind.FINISH):
            self._live.refresh()  # the rest shows at the next auto-refresh: 10,000 jobs make 40,000 events

    def __rich__(self) -> RenderableType:
        with self._lock:
            return self.render()

    def render(self) -> RenderableType:
        """The display as it stands (call with the lock held, or from tests)."""
        t = self.tally
        c = t.counts
        total = max(t.jobs, 1)
        finished = c[Bucket.DONE] + c[Bucket.FAILED] + c[Bucket.BLOCKED]
        head = Table.grid(padding=(0, 1))
        head.add_column(no_wrap=True)
        head.add_column(width=30)
        head.add_column(no_wrap=True)
        head.add_row(
            Text(self.title, style="bold"),
            ProgressBar(total=total, completed=finished, width=30),
            Text(
                f"{finished}/{t.jobs} {100 * finished / total:3.0f}%  "
                f"{_clock(t.elapsed)} elapsed · ETA {_clock(t.eta())}"
            ),
        )
        counts = Text()
        for bucket, style in (
            (Bucket.DONE, "green"),
            (Bucket.RUNNING, "cyan"),
            (Bucket.QUEUED, "blue"),
            (Bucket.WAITING, ""),
            (Bucket.CHAINED, ""),
            (Bucket.FAILED, "red"),
            (Bucket.HELD, "magenta"),
            (Bucket.BLOCKED, "yellow"),
        ):
            if bucket in (Bucket.HELD, Bucket.BLOCKED, Bucket.CHAINED) and not c[bucket]:
                continue
            counts.append(f"{bucket} ", style="dim")
            counts.append(str(c[bucket]), style=style if c[bucket] else "")
            counts.append("  ")
        rate = t.rate()
        limit = t.max_in_flight if t.max_in_flight is not None else "auto"
        http = f" · http {t.http}" + (f"/{t.http_max}" if t.http_max and t.http != t.http_max else "")
        stats = Text(
            (f"{rate * 60:.1f} jobs/min" if rate else "-- jobs/min")
            + f" · spent {money(t.spent_usd)} · in flight {t.in_flight}/{limit}{http}"
            + (f" · {t.retries} retries" if t.retries else ""),
            style="dim",
        )
        parts: list[RenderableType] = [head, counts, stats]
        parts.extend(Text(line, style="dim", overflow="ellipsis", no_wrap=True) for line in self.log)
        return Group(*parts)


@contextlib.contextmanager
def progress_sink(
    *,
    live: bool = True,
    verbose: bool = False,
    json_log: bool = False,
    title: str = "",
    stream: TextIO | None = None,
) -> Iterator[EventSink]:
    """The sink a CLI run should use: JSON lines with ``json_log``; the live display when ``live`` and
    the stream (stderr) is a terminal; otherwise plain lines."""
    stream = stream if stream is not None else sys.stderr
    if json_log:
        yield LineLog(stream, json_lines=True)
        return
    if live and stream.isatty():
        with LiveProgress(Console(file=stream), title=title, verbose=verbose) as display:
            yield display
        return
    yield LineLog(stream, verbose=verbose)
