"""What the journal's reads hand back: plain rows, so no caller needs to know a table or a column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class JobRow:
    """A job as the state file knows it (joined with its current attempt)."""

    job_id: str
    fingerprint: str
    model: str
    status: str
    attempt_id: int | None
    request_id: str | None
    in_manifest: bool
    twin_of: str | None
    estimate_usd: float | None
    cost_usd: float | None
    error: dict[str, Any] | None
    outputs_json: str | None
    submitted_at: float | None
    started_at: float | None
    remote_status: str | None
    finished_at: float | None
    attempt_of: str | None  # whose attempt it is: the job's own, or the twin's it adopted
    end_unseen: bool | None = None  # it ended while no runner watched (see schema's migration 3)


@dataclass
class AttemptRow:
    """One paid request (or its intent) of a job, as its history lists it."""

    job_id: str
    attempt_id: int
    request_id: str | None
    status: str
    remote_status: str | None
    cost_usd: float | None
    estimate_usd: float | None
    error: dict[str, Any] | None
    resubmit_of_unknown: int
    submitted_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class PaidAttempt:
    """An attempt RunComfy accepted (it has a request id) that succeeded or may still: what a job asking
    for the same request can adopt instead of paying again."""

    attempt_id: int
    job_id: str  # the job that made it
    model: str
    status: str


@dataclass
class OutputRow:
    """A file on disk from one attempt."""

    attempt_id: int
    idx: int
    job_id: str
    url: str
    path: str
    bytes: int
    sha256: str
    mtime_ns: int | None


@dataclass
class JobHistory:
    """A job of the manifest with its current attempt, every attempt it made, and its current files."""

    job: JobRow
    attempts: list[AttemptRow]
    outputs: list[OutputRow]


@dataclass(frozen=True)
class SentRequest:
    """A job's current attempt as a chain reads it: the input it sent, its output URLs, when it finished."""

    input: dict[str, Any] | None
    outputs: list[str]
    finished_at: float | None


@dataclass(frozen=True)
class Totals:
    """Sums over the manifest's jobs and the attempts they made."""

    cost_usd: float  # charged by RunComfy (as :meth:`Store.spent_usd`)
    estimate_usd: float  # the jobs' estimates
    busy_seconds: float  # time the attempts held one of the account's slots (their run spans)


@dataclass(frozen=True)
class StateTally:
    """The jobs of the manifest of one model in one state, with what they cost and were estimated."""

    model: str
    status: str
    jobs: int
    cost_usd: float
    estimate_usd: float


@dataclass(frozen=True)
class SyncSummary:
    """What syncing the manifest into the state changed."""

    new: int
    changed: int
    removed: int
    unchanged: int
