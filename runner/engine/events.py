"""What a run tells its displays, named once: every event kind, and the one shape an event has.

An event is a mapping ``{"event": kind, "time": <unix seconds>, …}`` with the fields its kind lists
below. It stays a plain mapping (not a class) because it leaves the process as it is: ``--json-log``
prints each one as a JSON object per line, and programs using the library receive them as dicts. A
kind is a ``str`` (a :class:`StrEnum`), so it is written and compared as its word.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol

Event = Mapping[str, Any]
EventSink = Callable[[Event], None]


class EventKind(StrEnum):
    """Every kind of event a run emits, with the fields it carries (besides ``event`` and ``time``)."""

    # The run as a whole.
    # jobs, to_submit, reattached, collecting, waiting, chained (of those waiting: for another job's
    # output), left_out (by --only / --limit), counts, spent_usd, http, max_in_flight
    START = "start"
    FINISH = "finish"  # counts, exit_code, cost_usd
    STOPPING = "stopping"  # reason
    PRICE = "price"  # model, usd, unit: a price the API answered, fresher than the table
    CONCURRENCY = "concurrency"  # http, reason: the HTTP limit moved (429s halve it, successes grow it)
    RETRY = "retry"  # error, and delay and attempt (a safe call retried), or job_id (a submit put back)
    # The API does not answer (or fails its submits): submitting waits. problem (one line: "cannot reach
    # HOST: connection refused"), retry_in and gives_up_in (seconds), attempt (1 when it begins)
    OUTAGE = "outage"
    API_BACK = "api_back"  # host, after (seconds), unknown (submits of the outage whose outcome is unknown)
    # Something the runner did not expect while handling one job (or the run, without job_id): error (one
    # line), stage (submit, poll, collect, run), log (the file with the traceback), traceback
    INTERNAL_ERROR = "internal_error"
    # One job (every one carries job_id).
    SUBMITTED = "submitted"  # request_id
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"  # cost_usd: finished at RunComfy, its outputs are being downloaded
    SUCCEEDED = "succeeded"  # twin_of when it took a twin's outputs
    FAILED = "failed"  # error, cost_usd, stage ("submit" when refused at submit), twin_of
    UNKNOWN = "unknown"  # error: the submit may or may not have been accepted; twin_of
    EXPIRED = "expired"  # error, cost_usd, twin_of: RunComfy no longer has its results
    CANCELLED = "cancelled"  # error, cost_usd, twin_of
    HELD = "held"  # estimate_usd: it would take committed spend over the budget
    READY = "ready"  # after: the jobs whose outputs its input names succeeded; it is submitted next
    BLOCKED = "blocked"  # error, after: a job whose output its input names did not succeed
    RESUBMIT = "resubmit"  # attempt: a failed job sent again (--auto-resubmit-failed)
    POLL_ERROR = "poll_error"  # error: a poll failed; the job is polled again later
    DOWNLOAD_ERROR = "download_error"  # error: its outputs are downloaded on the next run
    UNKNOWN_STATUS = "unknown_status"  # status: a word RunComfy answered that the runner does not know
    REFETCH = "refetch"  # its files on disk are missing or changed: they are downloaded again


class Emit(Protocol):
    """How a part of the run sends an event: ``emit(EventKind.HELD, job_id=…, estimate_usd=…)``."""

    def __call__(self, kind: EventKind, /, **data: Any) -> None: ...


def emitter(sink: EventSink | None) -> Emit:
    """An :class:`Emit` that stamps each event with its kind and time and hands it to ``sink``."""

    def emit(kind: EventKind, /, **data: Any) -> None:
        if sink is not None:
            sink({"event": kind, "time": time.time(), **data})

    return emit
