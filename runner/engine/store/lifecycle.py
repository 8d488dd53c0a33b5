"""What makes a job's life in the journal, in the order a run writes it: the manifest synced in, the
submits a killed run left behind turned ``unknown``, then for each job its intent (committed before the
POST leaves), its request id, what the polls say, its files, and how it ended.

Every write goes into the open transaction (:meth:`~.journal.Journal.flush` commits it); only the
run's own points of durability flush here (the sync, the recovery). The jobs table holds
:class:`~runner.engine.states.JobState` words, the attempts table
:class:`~runner.engine.states.AttemptState` ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ...errors import ErrorRecord
from ..states import AttemptState, JobState
from .journal import Journal, now
from .rows import SyncSummary


class JobLife(Journal):
    """The store's writes: a job from the manifest to its end (or its ``unknown``)."""

    # -- the manifest ---------------------------------------------------------------------------
    def sync_manifest(
        self, jobs: Iterable[Any], estimates: Mapping[str, float | None], twins: Mapping[str, str]
    ) -> SyncSummary:
        """Upsert the manifest's jobs: new ones pending, changed ones (model/input) pending again
        with their old attempt kept as history, removed ones marked out of the manifest."""
        known = {
            r[0]: (r[1], r[2]) for r in self._conn.execute("SELECT job_id, fingerprint, status FROM jobs")
        }
        new = changed = unchanged = 0
        seen: set[str] = set()
        t = now()
        inserts, updates, refresh = [], [], []
        for position, job in enumerate(jobs):
            seen.add(job.id)
            twin = twins.get(job.id)
            estimate = estimates.get(job.id)
            if job.id not in known:
                new += 1
                inserts.append(
                    (
                        job.id,
                        job.fingerprint,
                        job.model,
                        job.line,
                        position,
                        1,
                        JobState.PENDING,
                        None,
                        twin,
                        estimate,
                        None,
                        t,
                    )
                )
            elif known[job.id][0] != job.fingerprint:
                changed += 1
                updates.append(
                    (
                        job.fingerprint,
                        job.model,
                        job.line,
                        position,
                        JobState.PENDING,
                        twin,
                        estimate,
                        t,
                        job.id,
                    )
                )
            else:
                unchanged += 1
                refresh.append((job.line, position, twin, estimate, job.id))
        removed = [(job_id,) for job_id in known if job_id not in seen]
        self._write_many("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", inserts)
        self._write_many(
            "UPDATE jobs SET fingerprint=?, model=?, line=?, position=?, in_manifest=1, status=?, "
            "attempt_id=NULL, twin_of=?, estimate_usd=?, error=NULL, updated_at=? WHERE job_id=?",
            updates,
        )
        self._write_many(
            "UPDATE jobs SET line=?, position=?, in_manifest=1, twin_of=?, estimate_usd=? "
            "WHERE job_id=? AND (line IS NOT ? OR position IS NOT ? OR in_manifest=0 OR twin_of IS NOT ? "
            "OR estimate_usd IS NOT ?)",
            [(line, pos, twin, est, jid, line, pos, twin, est) for line, pos, twin, est, jid in refresh],
        )
        self._write_many("UPDATE jobs SET in_manifest=0 WHERE job_id=? AND in_manifest=1", removed)
        self.flush()
        return SyncSummary(new, changed, len(removed), unchanged)

    def recover_interrupted(self) -> int:
        """Attempts left ``submitting`` by a killed run become ``unknown``: the POST may have landed."""
        rows = self._conn.execute(
            "SELECT attempt_id, job_id FROM attempts WHERE status=? AND request_id IS NULL",
            (AttemptState.SUBMITTING,),
        ).fetchall()
        error = _stored(
            ErrorRecord(
                "SubmitUnknown",
                "the runner stopped while this job's submit was in flight; it may have been accepted",
            )
        )
        for attempt_id, job_id in rows:
            self._write(
                "UPDATE attempts SET status=?, error=? WHERE attempt_id=?",
                (AttemptState.UNKNOWN, error, attempt_id),
            )
            self._write(
                "UPDATE jobs SET status=?, error=?, updated_at=? WHERE job_id=? AND attempt_id=?",
                (JobState.UNKNOWN, error, now(), job_id, attempt_id),
            )
        self.flush()
        return len(rows)

    # -- one job's life ---------------------------------------------------------------------------
    def record_intent(
        self,
        job_id: str,
        fingerprint: str,
        model: str,
        input_json: str,
        estimate: float | None,
        *,
        resubmit_of_unknown: bool = False,
    ) -> int:
        """Journal that a POST is about to leave; call :meth:`flush` before sending it."""
        t = now()
        cursor = self._write(
            "INSERT INTO attempts (job_id, fingerprint, model, input_json, status, resubmit_of_unknown, "
            "intent_at, estimate_usd) VALUES (?,?,?,?,?,?,?,?)",
            (
                job_id,
                fingerprint,
                model,
                input_json,
                AttemptState.SUBMITTING,
                int(resubmit_of_unknown),
                t,
                estimate,
            ),
        )
        attempt_id = int(cursor.lastrowid or 0)
        self._write(
            "UPDATE jobs SET status=?, attempt_id=?, error=NULL, updated_at=? WHERE job_id=?",
            (JobState.SUBMITTING, attempt_id, t, job_id),
        )
        return attempt_id

    def record_submitted(self, job_id: str, attempt_id: int, request_id: str) -> None:
        t = now()
        self._write(
            "UPDATE attempts SET request_id=?, status=?, submitted_at=? WHERE attempt_id=?",
            (request_id, AttemptState.QUEUED, t, attempt_id),
        )
        self._set_job(job_id, attempt_id, JobState.QUEUED, t)

    def record_remote(
        self,
        job_id: str,
        attempt_id: int,
        status: str,
        remote_status: str,
        *,
        started: bool = False,
        finished: bool = False,
        finished_at: float | None = None,
        cost: float | None = None,
        outputs: Iterable[str] | None = None,
    ) -> None:
        """A poll's news: live status, or completion with its output URLs and charged cost (and when it
        finished, when that was not now: no runner saw it)."""
        t = now()
        sets = ["status=?", "remote_status=?"]
        params: list[Any] = [status, remote_status]
        if started:
            sets.append("started_at=coalesce(started_at, ?)")
            params.append(t)
        if finished:
            sets.append("finished_at=coalesce(finished_at, ?)")
            params.append(finished_at or t)
        if finished_at is not None:
            sets.append("end_unseen=1")
        if cost is not None:
            sets.append("cost_usd=?")
            params.append(cost)
        if outputs is not None:
            sets.append("outputs_json=?")
            params.append(json.dumps(list(outputs)))
        self._write(f"UPDATE attempts SET {', '.join(sets)} WHERE attempt_id=?", (*params, attempt_id))
        self._set_job(job_id, attempt_id, status, t)

    def record_error(
        self,
        job_id: str,
        attempt_id: int | None,
        status: str,
        error: Mapping[str, Any],
        *,
        cost: float | None = None,
        finished_at: float | None = None,
    ) -> None:
        """The job ended without success (or its submit is unknown): keep the cause (and when it ended,
        when that was not now)."""
        t = now()
        text = _stored(error)
        if attempt_id is not None:
            self._write(
                "UPDATE attempts SET status=?, error=?, finished_at=coalesce(finished_at, ?), "
                "cost_usd=coalesce(?, cost_usd), end_unseen=coalesce(?, end_unseen) WHERE attempt_id=?",
                (status, text, finished_at or t, cost, 1 if finished_at is not None else None, attempt_id),
            )
        self._write(
            "UPDATE jobs SET status=?, error=?, updated_at=? WHERE job_id=?", (status, text, t, job_id)
        )

    def record_output(
        self,
        job_id: str,
        attempt_id: int,
        idx: int,
        url: str,
        path: str,
        size: int,
        sha256: str,
        mtime_ns: int,
    ) -> None:
        self._write(
            "INSERT OR REPLACE INTO outputs VALUES (?,?,?,?,?,?,?,?,?)",
            (attempt_id, idx, job_id, url, path, size, sha256, mtime_ns, now()),
        )

    def record_collected(self, job_id: str, attempt_id: int) -> None:
        """Every output of the attempt is on disk: the job succeeded, and so did its request."""
        self._write(
            "UPDATE attempts SET status=? WHERE attempt_id=? AND status=?",
            (AttemptState.SUCCEEDED, attempt_id, AttemptState.COLLECTING),
        )
        self._write(
            "UPDATE jobs SET status=?, error=NULL, updated_at=? WHERE job_id=?",
            (JobState.SUCCEEDED, now(), job_id),
        )

    def record_expired(self, job_id: str, attempt_id: int, error: Mapping[str, Any]) -> None:
        """The attempt's outputs answered 404 before they were all on disk: the job needs a new run."""
        self._write(
            "UPDATE attempts SET status=? WHERE attempt_id=? AND status=?",
            (AttemptState.EXPIRED, attempt_id, AttemptState.COLLECTING),
        )
        self.set_status(job_id, JobState.EXPIRED, error)

    def set_status(self, job_id: str, status: str, error: Mapping[str, Any] | None = None) -> None:
        self._write(
            "UPDATE jobs SET status=?, error=?, updated_at=? WHERE job_id=?",
            (status, _stored(error) if error else None, now(), job_id),
        )

    def adopt_attempt(self, job_id: str, attempt_id: int, status: str) -> None:
        """Make another job's attempt this job's own (dedupe: one paid request, two job ids)."""
        self._write(
            "UPDATE jobs SET status=?, attempt_id=?, error=NULL, updated_at=? WHERE job_id=?",
            (status, attempt_id, now(), job_id),
        )

    def _set_job(self, job_id: str, attempt_id: int, status: str, t: float) -> None:
        self._write(
            "UPDATE jobs SET status=?, updated_at=? WHERE job_id=? AND attempt_id=?",
            (status, t, job_id, attempt_id),
        )


def _stored(error: Mapping[str, Any]) -> str:
    """An error as the journal stores it: a JSON object (an :class:`ErrorRecord` is a mapping)."""
    return json.dumps(dict(error), default=str)
