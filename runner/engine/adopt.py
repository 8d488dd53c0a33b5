"""A job that asks for what was already paid takes it: a renamed job, or one whose input went back to an
earlier one, gets that request's outputs instead of a new submit.

A job waiting to be sent whose model and input (its fingerprint) equal an attempt this journal paid
for, under any id (a job since removed or renamed included), *adopts* that attempt, as a twin takes its
leader's: its files are moved from the old job's folder when that job has left the manifest (so the
rename leaves no folder behind), copied when it is still there; an attempt whose files are not on disk
is collected again while RunComfy serves them, and one still live at RunComfy is re-attached. Takes past
the first have fingerprints of their own, so they never adopt one another.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..disk import copy_whole
from ..manifest.loader import Job
from .outputs import intact
from .states import JobState
from .store import OutputRow, PaidAttempt, Store
from .workplan import Row

# Job states that wait to be sent: only these look for what was paid (a failed job is retried knowingly).
_WAITING = (JobState.PENDING, JobState.HELD)


@dataclass(frozen=True)
class Adoption:
    """A job that takes an attempt already paid under another id (or under its own, earlier)."""

    job_id: str
    attempt: PaidAttempt


def adoptions(
    jobs: Sequence[Job], rows: Mapping[str, Row], twins: Mapping[str, str], store: Store
) -> list[Adoption]:
    """The jobs (waiting, none a twin of another) that can take a paid attempt, and which attempt. An
    attempt still in flight for another job of the manifest is that job's: it is not taken."""
    waiting = [
        job for job in jobs if rows.get(job.id, (JobState.PENDING,))[0] in _WAITING and job.id not in twins
    ]
    if not waiting:
        return []
    held = {
        attempt
        for status, attempt, _ in rows.values()
        if attempt is not None and status != JobState.SUCCEEDED
    }
    found = store.paid_attempts({job.fingerprint for job in waiting})
    out = []
    for job in waiting:
        attempt = found.get(job.fingerprint)
        if attempt is not None and attempt.model == job.model and attempt.attempt_id not in held:
            out.append(Adoption(job.id, attempt))
    return out


def adopt(store: Store, adoption: Adoption, output_dir: Path, in_manifest: set[str]) -> JobState:
    """Make the attempt the job's own: files moved or copied into its folder when they are on disk,
    else the job is collected again (or re-attached, for a live request). The state it is left in."""
    attempt = adoption.attempt
    job_id = adoption.job_id
    if attempt.status in (JobState.QUEUED, JobState.RUNNING, JobState.COLLECTING):
        store.adopt_attempt(job_id, attempt.attempt_id, JobState(attempt.status))
        return JobState(attempt.status)
    files = _files_on_disk(store.attempt_outputs(attempt.attempt_id), output_dir, job_id)
    if files is None:
        store.adopt_attempt(job_id, attempt.attempt_id, JobState.COLLECTING)
        return JobState.COLLECTING
    for output in files:
        source = output_dir / output.path
        target = output_dir / job_id / Path(output.path).name
        if source != target:
            if output.job_id in in_manifest:
                copy_whole(source, target)
            else:  # the old job left the manifest (renamed): its files move with the request
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
                _remove_if_empty(source.parent)
                # Back in the manifest one day, it finds its files here in the same way.
                store.set_status(output.job_id, JobState.PENDING)
        store.record_output(
            job_id,
            attempt.attempt_id,
            output.idx,
            output.url,
            target.relative_to(output_dir).as_posix(),
            output.bytes,
            output.sha256,
            target.stat().st_mtime_ns,
        )
    store.adopt_attempt(job_id, attempt.attempt_id, JobState.SUCCEEDED)
    return JobState.SUCCEEDED


def _files_on_disk(rows: list[OutputRow], output_dir: Path, job_id: str) -> list[OutputRow] | None:
    """One intact copy of each of the attempt's files (its rows may be held by several jobs), or
    ``None`` when some file has none. A file already moved into ``job_id``'s folder (a run stopped
    mid-move) counts where it is now."""
    by_idx: dict[int, list[OutputRow]] = {}
    for row in rows:
        by_idx.setdefault(row.idx, []).append(row)
    chosen = []
    for idx in sorted(by_idx):
        copies = by_idx[idx]
        moved = [
            OutputRow(
                r.attempt_id, r.idx, job_id, r.url, f"{job_id}/{Path(r.path).name}", r.bytes, r.sha256, None
            )
            for r in copies[:1]
        ]
        found = next(
            (
                r
                for r in [*copies, *moved]
                if intact(os.path.join(output_dir, r.path), r.bytes, r.mtime_ns, r.sha256)
            ),
            None,
        )
        if found is None:
            return None
        chosen.append(found)
    return chosen or None


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (files of its own), or gone: it stays as it is
