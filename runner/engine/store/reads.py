"""What the run plans from and what the reports and ``status`` read: each a named query over the
journal, read as it goes where the answer could be large (100,000 jobs keep memory flat).

Only the jobs of the manifest (``in_manifest = 1``) are read unless a method says otherwise: a job
removed from the manifest keeps its rows as history but leaves every count, report and plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from ..states import NEEDS_ATTENTION, AttemptState, JobState
from .journal import Journal
from .rows import AttemptRow, JobHistory, JobRow, OutputRow, PaidAttempt, SentRequest, StateTally, Totals

# Attempts that belong to a job of the manifest (its history; a twin's adopted attempt is its leader's).
_HISTORY = "FROM attempts a JOIN jobs j ON j.job_id = a.job_id WHERE j.in_manifest = 1"
# An attempt's run span: from the first poll that saw it running (else its submit) to its finish. An attempt
# that no runner saw either run or end has none: when it ran is not known, only that it did.
_SPAN_START = "coalesce(a.started_at, a.submitted_at)"
# What the manifest's jobs cost: every attempt they made (an edited job's earlier ones too) and every one they
# adopted (a twin's leader's, a renamed job's), each once. The one sum that status, the report and a run's
# summary all show.
_MANIFEST_COST = (
    "SELECT coalesce(sum(cost_usd), 0) FROM attempts WHERE job_id IN "
    "(SELECT job_id FROM jobs WHERE in_manifest = 1) OR attempt_id IN "
    "(SELECT attempt_id FROM jobs WHERE in_manifest = 1 AND attempt_id IS NOT NULL)"
)
_SPANS = (
    f"{_HISTORY} AND a.request_id IS NOT NULL AND {_SPAN_START} > 0 AND a.finished_at > 0 "
    f"AND a.finished_at >= {_SPAN_START} AND (coalesce(a.end_unseen, 0) = 0 OR a.started_at IS NOT NULL)"
)


class JournalReads(Journal):
    """The store's reads: jobs, their attempts and files, money, counts, spans."""

    _JOB_SELECT = (
        "SELECT j.job_id, j.fingerprint, j.model, j.status, j.attempt_id, a.request_id, j.in_manifest, "
        "j.twin_of, j.estimate_usd, a.cost_usd, j.error, a.outputs_json, a.submitted_at, a.started_at, "
        "a.remote_status, a.finished_at, a.job_id, a.end_unseen FROM jobs j "
        "LEFT JOIN attempts a ON a.attempt_id = j.attempt_id"
    )

    def jobs(self, *, in_manifest_only: bool = True) -> list[JobRow]:
        """Every job (of the manifest, unless asked for all), in manifest order, with its current attempt."""
        where = " WHERE j.in_manifest=1" if in_manifest_only else ""
        return [_job_row(r) for r in self._conn.execute(f"{self._JOB_SELECT}{where} ORDER BY j.position")]

    def states(self) -> dict[str, tuple[str, int | None, str | None]]:
        """Each job of the manifest: its status, current attempt and that attempt's request id. What a
        run plans from; a tuple per job, because full :class:`JobRow` s weigh ~1 KB each at 100,000 jobs."""
        return {
            r[0]: (r[1], r[2], r[3])
            for r in self._conn.execute(
                "SELECT j.job_id, j.status, j.attempt_id, a.request_id FROM jobs j "
                "LEFT JOIN attempts a ON a.attempt_id = j.attempt_id WHERE j.in_manifest=1"
            )
        }

    def paid_attempts(self, fingerprints: Iterable[str]) -> dict[str, PaidAttempt]:
        """For each fingerprint, the best attempt of any job (removed ones included) that asked for it
        and was accepted and not lost: a succeeded one first, else a live one, the latest first."""
        found: dict[str, PaidAttempt] = {}
        wanted = list(fingerprints)
        if not wanted or self._conn.execute("SELECT 1 FROM attempts LIMIT 1").fetchone() is None:
            return found
        kept = (AttemptState.SUCCEEDED, AttemptState.COLLECTING, AttemptState.QUEUED, AttemptState.RUNNING)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self._conn.execute(
                "SELECT fingerprint, attempt_id, job_id, model, status FROM attempts "
                f"WHERE fingerprint IN ({','.join('?' * len(chunk))}) AND request_id IS NOT NULL "
                "AND status IN (?, ?, ?, ?) ORDER BY status = ? DESC, attempt_id DESC",
                (*chunk, *kept, AttemptState.SUCCEEDED),
            )
            for fingerprint, *rest in rows:
                found.setdefault(fingerprint, PaidAttempt(*rest))
        return found

    def attempt_outputs(self, attempt_id: int) -> list[OutputRow]:
        """Every file recorded from one attempt, by whichever jobs hold it, in order."""
        return [
            OutputRow(*r)
            for r in self._conn.execute(
                "SELECT attempt_id, idx, job_id, url, path, bytes, sha256, mtime_ns FROM outputs "
                "WHERE attempt_id = ? ORDER BY idx, job_id",
                (attempt_id,),
            )
        ]

    def attempt_times(self, attempt_id: int) -> tuple[float | None, float | None]:
        """When the attempt was submitted, and first seen running (``None``: not known)."""
        row = self._conn.execute(
            "SELECT submitted_at, started_at FROM attempts WHERE attempt_id = ?", (attempt_id,)
        ).fetchone()
        return (None, None) if row is None else (row[0], row[1])

    def some_output_url(self) -> str | None:
        """The URL of one downloaded output (which host a journal's results came from)."""
        row = self._conn.execute("SELECT url FROM outputs LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def outputs_of(self, job_id: str, attempt_id: int) -> list[OutputRow]:
        """The files a job holds from one attempt, in order (a primary-key lookup)."""
        return [
            OutputRow(*r)
            for r in self._conn.execute(
                "SELECT attempt_id, idx, job_id, url, path, bytes, sha256, mtime_ns FROM outputs "
                "WHERE job_id = ? AND attempt_id = ? ORDER BY idx",
                (job_id, attempt_id),
            )
        ]

    def succeeded_outputs(self) -> Iterator[tuple[str, str | None, int | None, int | None, str | None]]:
        """``(job_id, path, bytes, mtime_ns, sha256)`` for each file of each succeeded job of the manifest
        (one row with ``path`` None for a succeeded job that has no file recorded), read as it goes."""
        return iter(
            self._conn.execute(
                "SELECT j.job_id, o.path, o.bytes, o.mtime_ns, o.sha256 FROM jobs j LEFT JOIN outputs o "
                "ON o.job_id = j.job_id AND o.attempt_id = j.attempt_id "
                "WHERE j.in_manifest = 1 AND j.status = ? AND j.attempt_id IS NOT NULL",
                (JobState.SUCCEEDED,),
            )
        )

    def current_attempt(self, job_id: str) -> int | None:
        """The job's current attempt (its own, or the one it adopted from a twin)."""
        row = self._conn.execute("SELECT attempt_id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def current_outputs(self, job_id: str) -> tuple[int, list[str]] | None:
        """The job's current attempt and the output URLs RunComfy gave it (``None``: no attempt; an
        empty list: none recorded)."""
        row = self._conn.execute(
            "SELECT a.attempt_id, a.outputs_json FROM jobs j JOIN attempts a ON a.attempt_id = j.attempt_id "
            "WHERE j.job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), json.loads(row[1]) if row[1] else []

    def current_request(self, job_id: str) -> SentRequest | None:
        """What the job's current attempt sent and got back: the input as sent, the output URLs (empty
        until it finished) and when it finished (what a chained job is resolved and checked from)."""
        row = self._conn.execute(
            "SELECT a.input_json, a.outputs_json, a.finished_at FROM jobs j "
            "JOIN attempts a ON a.attempt_id = j.attempt_id WHERE j.job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        return SentRequest(
            json.loads(row[0]) if row[0] else None, json.loads(row[1]) if row[1] else [], row[2]
        )

    def committed_usd(self) -> float:
        """Money spent or possibly spent by this state file: charged costs, else estimates of every
        attempt that may have reached RunComfy (submitted, in flight or unknown)."""
        row = self._conn.execute(
            "SELECT coalesce(sum(coalesce(cost_usd, estimate_usd, 0)), 0) FROM attempts "
            "WHERE request_id IS NOT NULL OR status IN (?, ?)",
            (AttemptState.UNKNOWN, AttemptState.SUBMITTING),
        ).fetchone()
        return float(row[0])

    def spent_usd(self) -> float:
        """Money RunComfy reported charging for the manifest's jobs (see ``_MANIFEST_COST``)."""
        return float(self._conn.execute(_MANIFEST_COST).fetchone()[0])

    def needs_attention(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Jobs of the manifest that are failed, unknown, expired, held or cancelled, in manifest order:
        id, status, request id and the error's message."""
        marks = ",".join("?" * len(NEEDS_ATTENTION))
        rows = self._conn.execute(
            "SELECT j.job_id, j.status, a.request_id, j.error FROM jobs j "
            "LEFT JOIN attempts a ON a.attempt_id = j.attempt_id "
            f"WHERE j.in_manifest = 1 AND j.status IN ({marks}) ORDER BY j.position LIMIT ?",
            (*sorted(NEEDS_ATTENTION), -1 if limit is None else limit),
        )
        out = []
        for job_id, status, request_id, error in rows:
            why = json.loads(error) if error else {}
            out.append(
                {
                    "id": job_id,
                    "status": status,
                    "request_id": request_id,
                    "error": why.get("message") or why.get("error_message"),
                }
            )
        return out

    def counts(self) -> dict[str, int]:
        """How many jobs of the manifest are in each state."""
        return dict(
            self._conn.execute("SELECT status, count(*) FROM jobs WHERE in_manifest=1 GROUP BY status")
        )

    # -- reading for reports and status ---------------------------------------------------------
    def tallies(self) -> list[StateTally]:
        """The manifest's jobs per model and state, with their current attempts' cost and their estimates
        (one pass over the jobs: ~0.1 s at 100,000)."""
        return [
            StateTally(*r)
            for r in self._conn.execute(
                "SELECT j.model, j.status, count(*), coalesce(sum(a.cost_usd), 0), "
                "coalesce(sum(j.estimate_usd), 0) FROM jobs j "
                "LEFT JOIN attempts a ON a.attempt_id = j.attempt_id "
                "WHERE j.in_manifest = 1 GROUP BY j.model, j.status"
            )
        ]

    def job_ids(self) -> set[str]:
        """The ids of the manifest's jobs the journal knows."""
        return {r[0] for r in self._conn.execute("SELECT job_id FROM jobs WHERE in_manifest = 1")}

    def models(self) -> list[str]:
        """The models the manifest's jobs use, sorted."""
        return [
            r[0]
            for r in self._conn.execute("SELECT DISTINCT model FROM jobs WHERE in_manifest = 1 ORDER BY 1")
        ]

    def current_output_paths(self) -> Iterator[str]:
        """The path of every file the manifest's jobs hold from their current attempts, read as it goes."""
        rows = self._conn.execute(
            "SELECT o.path FROM outputs o JOIN jobs j ON j.job_id = o.job_id AND "
            "o.attempt_id = j.attempt_id WHERE j.in_manifest = 1"
        )
        return (path for (path,) in rows)

    def totals(self) -> Totals:
        """What the manifest's attempts were charged, what its jobs were estimated, and how long the
        attempts held a slot, from aggregates (nothing per job is kept)."""
        row = self._conn.execute(
            f"SELECT ({_MANIFEST_COST}), "
            "(SELECT coalesce(sum(estimate_usd), 0) FROM jobs WHERE in_manifest = 1), "
            f"(SELECT coalesce(sum(a.finished_at - {_SPAN_START}), 0) {_SPANS})"
        ).fetchone()
        return Totals(*row)

    def span_edges(self) -> Iterator[tuple[float, int]]:
        """The starts (+1) and ends (-1) of the manifest's attempts' run spans in time order, ends first at
        equal times (back-to-back attempts share a slot): what slot use is counted from."""
        return iter(
            self._conn.execute(
                f"SELECT t, step FROM (SELECT {_SPAN_START} AS t, 1 AS step {_SPANS} "
                f"UNION ALL SELECT a.finished_at, -1 {_SPANS}) ORDER BY t, step"
            )
        )

    def job_histories(self) -> Iterator[JobHistory]:
        """Each job of the manifest in manifest order with its attempts and current files, made one at a
        time: three queries in the same order are read side by side, so memory stays flat however many
        jobs there are."""
        order = "ORDER BY j.position, j.job_id"
        jobs = self._conn.execute(f"{self._JOB_SELECT} WHERE j.in_manifest = 1 {order}")
        attempts = _by_job(
            AttemptRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _decoded(r[7]), r[8], r[9], r[10])
            for r in self._conn.execute(
                "SELECT a.job_id, a.attempt_id, a.request_id, a.status, a.remote_status, a.cost_usd, "
                f"a.estimate_usd, a.error, a.resubmit_of_unknown, a.submitted_at, a.finished_at {_HISTORY} "
                f"{order}, a.attempt_id"
            )
        )
        outputs = _by_job(
            OutputRow(*r)
            for r in self._conn.execute(
                "SELECT o.attempt_id, o.idx, o.job_id, o.url, o.path, o.bytes, o.sha256, o.mtime_ns "
                "FROM outputs o JOIN jobs j ON j.job_id = o.job_id AND o.attempt_id = j.attempt_id "
                f"WHERE j.in_manifest = 1 {order}, o.idx"
            )
        )
        for r in jobs:
            job = _job_row(r)
            yield JobHistory(job, attempts.take(job.job_id), outputs.take(job.job_id))


def _job_row(r: Sequence[Any]) -> JobRow:
    """A row of ``Store._JOB_SELECT`` as a :class:`JobRow`."""
    in_manifest, error = bool(r[6]), _decoded(r[10])
    return JobRow(r[0], r[1], r[2], r[3], r[4], r[5], in_manifest, r[7], r[8], r[9], error, *r[11:])


def _decoded(error: str | None) -> dict[str, Any] | None:
    return json.loads(error) if error else None


_Row = TypeVar("_Row", AttemptRow, OutputRow)


class _by_job(Generic[_Row]):
    """Rows ordered by job, taken one job's worth at a time."""

    def __init__(self, rows: Iterable[_Row]) -> None:
        self._rows: Iterator[_Row] = iter(rows)
        self._next: _Row | None = next(self._rows, None)

    def take(self, job_id: str) -> list[_Row]:
        taken = []
        while self._next is not None and self._next.job_id == job_id:
            taken.append(self._next)
            self._next = next(self._rows, None)
        return taken
