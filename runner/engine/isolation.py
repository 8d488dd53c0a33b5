"""One job's trouble stays that job's: what a run does when handling one job raises something its code
did not expect (an answer it cannot read, a bug, a path it cannot write), and when a folder the run
writes into cannot be written at all.

Each job's work (its submit, its polls, its downloads) runs under a guard that hands what it raised to
:meth:`Isolation.job_failed`. The job stops for this run with a one-line reason in the journal, and
rests where the next run picks it up without paying twice:

* it has a request id: it rests ``queued`` or ``running`` (``collecting`` once finished), so the next
  run polls (or downloads) it again; it is never submitted again;
* its POST may have left without an answer: ``unknown``, resubmitted only with ``--resubmit-unknown``;
* nothing was sent: ``failed`` (``retry`` sends it).

The run goes on with the other jobs, its reports are written, and its exit code says that a job did not
succeed. The traceback goes to the run's log file, beside the state file (``<state file>.log``), and
rides on the ``internal_error`` event, which ``-v`` prints.

Two troubles are not one job's, and stop the run at once instead (exit 9, :class:`StorageError`), as a
Ctrl-C does: the journal cannot be written (its disk is full, it went read-only), or the output folder
cannot (:func:`~runner.errors.folder_trouble`: full, read-only, not permitted). Every job after would
fail the same way, each of them paid; the jobs at RunComfy wait there for the next run.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ErrorRecord, StorageError, folder_trouble, redact
from .budget import Budget
from .collect import Collector
from .events import Emit, Event, EventKind, EventSink
from .flight import Flight, Live
from .pacing import Pacer
from .states import NEEDS_ATTENTION, AttemptState, JobState
from .store import Store, journal_trouble


def journal_unwritable(path: Path, exc: BaseException) -> StorageError:
    """The error that stops a run whose state file cannot be written."""
    return StorageError(
        f"cannot write the state file {path}: {exc}; make room (or make its folder writable) and run "
        "the same command again: jobs already submitted are re-attached"
    )


@contextmanager
def journal_kept(path: Path) -> Iterator[None]:
    """A state file that cannot be written inside the block (its disk full, read-only) raises the one
    line of :func:`journal_unwritable` instead."""
    try:
        yield
    except Exception as exc:
        if not journal_trouble(exc):
            raise
        raise journal_unwritable(path, exc) from None


def close_kept(store: Store) -> None:
    """Close the state file; one whose disk filled up cannot take its last commit, and the next run reads
    it as it was last committed."""
    with contextlib.suppress(StorageError), journal_kept(store.path):
        store.close()


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line a person can read (its type, the first line of its words)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return redact(line if len(line) <= limit else line[: limit - 1] + "…")


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside an exception group (a task group's), or the exception itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


class Display:
    """The run's event sink, let go of the first time it raises (its terminal or pipe gone, a caller's
    bug): what shows the run is not the run's trouble. ``failure`` says why, for the log."""

    def __init__(self, sink: EventSink | None) -> None:
        self.sink = sink
        self.failure: Exception | None = None

    def __call__(self, event: Event) -> None:
        if self.sink is None:
            return
        try:
            self.sink(event)
        except Exception as exc:  # noqa: BLE001 - whatever a display raises
            self.sink, self.failure = None, exc


class Isolation:
    """Fails one job for the run (or stops the run, for a folder it cannot write), and keeps the log."""

    def __init__(
        self,
        flight: Flight,
        store: Store,
        pacer: Pacer,
        budget: Budget,
        collector: Collector,
        emit: Emit,
        *,
        log_path: Path | None,
    ) -> None:
        self.flight = flight
        self.store = store
        self.pacer = pacer
        self.budget = budget
        self.collector = collector
        self._emit = emit
        self.log_path = log_path
        self.failed: dict[str, str] = {}  # job id -> why it stopped for this run

    # -- one job -------------------------------------------------------------------------------
    def job_failed(self, job: Live | str, exc: Exception, stage: str) -> None:
        """Handling ``job`` (a request in flight, or the id of a job being collected) raised ``exc``."""
        job_id = job if isinstance(job, str) else job.job.id
        if self.storage_failed(exc, job_id):
            if not isinstance(job, str) and job.request_id is not None:
                # Paid, and the journal may not have it: say its request id where the user reads it.
                lost = f"request {job.request_id} may not be journaled ({one_line(exc)}); RunComfy runs it"
                self._emit(EventKind.UNKNOWN, job_id=job_id, error=lost)
            return
        log = self.log(f"job {job_id} ({stage})", exc)
        if isinstance(job, str):
            state, next_time = JobState.COLLECTING, "its outputs are downloaded again on the next run"
            why = self._record(exc, stage, next_time, log)
            self.store.set_status(job_id, state, why)
        elif self.flight.live.get(job_id) is not job:
            why = self._record(exc, stage, "", log)  # it had moved on already: the journal says where
        else:
            why = self._rest(job, exc, stage, log)
        self.failed[job_id] = why.message
        self._emit(
            EventKind.INTERNAL_ERROR,
            job_id=job_id,
            stage=stage,
            error=why.message,
            log=str(log) if log else None,
            traceback=_traceback(exc),
        )
        self.flight.wake()

    def _rest(self, live: Live, exc: Exception, stage: str, log: Path | None) -> ErrorRecord:
        """Take a request in flight out of this run, journaled where the next run picks it up."""
        job = live.job
        self.flight.live.pop(job.id, None)
        try:
            self.pacer.on_dropped(live.track)
        except Exception:  # noqa: BLE001 - the pacer may be what raised; its count is only a guide
            self.pacer.in_flight = max(0, self.pacer.in_flight - 1)
        if live.request_id is not None:
            why = self._record(exc, stage, "RunComfy has it: it is polled again on the next run", log)
            state = live.status if live.status in (JobState.QUEUED, JobState.RUNNING) else JobState.RUNNING
            self.store.set_status(job.id, state, why)
        elif live.track.sent:
            why = self._record(
                exc,
                stage,
                "its submit may have been accepted: it is resubmitted only with --resubmit-unknown",
                log,
            )
            self.store.record_error(job.id, live.attempt_id or None, AttemptState.UNKNOWN, why)
            self.flight.unknown.add(job.id)
            self.collector.fail_twins(job.id, JobState.UNKNOWN, why)
        else:
            why = self._record(exc, stage, "nothing was sent (`retry` sends it)", log)
            if live.attempt_id:
                self.store.record_error(job.id, live.attempt_id, AttemptState.NOT_SENT, why)
            self.store.set_status(job.id, JobState.FAILED, why)
            self.budget.refund(job)
            self.collector.fail_twins(job.id, JobState.FAILED, why)
        return why

    @staticmethod
    def _record(exc: Exception, stage: str, next_time: str, log: Path | None) -> ErrorRecord:
        where = f" (traceback in {log})" if log else ""
        then = f"; {next_time}" if next_time else ""
        message = f"stopped in this run while {_STAGES.get(stage, stage)}: {one_line(exc)}{then}{where}"
        return ErrorRecord("InternalError", message, {"stage": stage, "exception": type(exc).__name__})

    def stopped_jobs(self, limit: int) -> list[dict[str, Any]]:
        """The jobs this run stopped handling, as ``Store.needs_attention`` lists jobs: most rest in
        flight (the next run picks them up), where that list does not look."""
        if not self.failed:
            return []
        rows = self.store.states()
        out = []
        for job_id, why in list(self.failed.items())[:limit]:
            status, _, request_id = rows.get(job_id, ("unknown", None, None))
            if status not in NEEDS_ATTENTION:
                out.append({"id": job_id, "status": status, "request_id": request_id, "error": why})
        return out

    # -- the run's folders ---------------------------------------------------------------------
    def storage_failed(self, exc: BaseException, job_id: str | None = None) -> bool:
        """If ``exc`` says the journal or the output folder cannot be written, stop the run (exit 9)."""
        if isinstance(exc, StorageError):
            error = exc
        elif journal_trouble(exc):
            error = journal_unwritable(self.store.path, exc)
        elif isinstance(exc, OSError) and folder_trouble(exc):
            error = self.collector.cannot_write(exc, job_id)
        else:
            return False
        self.log(f"job {job_id}" if job_id else "the run", exc)
        self.flight.stop("storage", error)
        return True

    async def guard(self, task: Callable[[Live], Awaitable[None]], live: Live, stage: str) -> None:
        """Do one job's ``task``; what it raises unexpectedly fails that job alone."""
        try:
            await task(live)
        except Exception as exc:  # noqa: BLE001 - one job's trouble: handed on whole
            self.job_failed(live, exc, stage)

    def kept(self, write: Callable[..., object], *args: Any) -> None:
        """Write to the journal; one that cannot be written stops the run (exit 9), nothing more."""
        try:
            write(*args)
        except Exception as exc:
            if not self.storage_failed(exc):
                raise

    # -- the run -------------------------------------------------------------------------------
    def run_failed(self, exc: BaseException) -> str:
        """The run's own loop raised: log it; the one line that says so."""
        log = self.log("the run", exc)
        where = f" (traceback in {log})" if log else ""
        message = f"the run stopped on an internal error: {one_line(leaves(exc)[0])}{where}"
        self._emit(
            EventKind.INTERNAL_ERROR,
            stage="run",
            error=message,
            log=str(log) if log else None,
            traceback=_traceback(exc),
        )
        return message

    def log(self, what: str, exc: BaseException) -> Path | None:
        """Append ``exc``'s traceback to the log file; its path (None when it cannot be written)."""
        if self.log_path is None:
            return None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.log_path, "a", encoding="utf-8") as out:
                out.write(f"{stamp} {what}: {one_line(exc)}\n{_traceback(exc)}\n")
        except OSError:
            return None
        return self.log_path


def log_path_for(state_path: Path) -> Path:
    """The run's log (tracebacks of what it did not expect), beside its state file."""
    return state_path.with_name(state_path.name + ".log")


def check_writable(folder: Path, what: str) -> None:
    """Raise :class:`StorageError` (exit 9) unless a file can be written into ``folder`` (made if need
    be): a read-only or full folder, or a file where it should be, is said before anything is paid."""
    probe = folder / f".runcomfy-batch-{os.getpid()}.probe"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as out:
            out.write(b"ok")
            out.flush()
            os.fsync(out.fileno())
    except (FileExistsError, NotADirectoryError):
        raise StorageError(
            f"cannot write into the {what} {folder}: a file is where a folder must be"
        ) from None
    except OSError as exc:
        raise StorageError(f"cannot write into the {what} {folder}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):  # not made, or a file is where its folder should be
            probe.unlink()


_STAGES = {"submit": "submitting it", "poll": "polling it", "collect": "downloading its outputs"}


def _traceback(exc: BaseException) -> str:
    return redact("".join(traceback.format_exception(exc)))
