"""The journal's tables, made by named, append-only migrations (each runs once, in a transaction, when
a state file is opened: :meth:`~runner.engine.store.journal.Journal.open`). A new column or table is a
new migration at the end of :data:`MIGRATIONS`; a migration that has shipped is never edited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("jobs").create(
        {
            "job_id": str,
            "fingerprint": str,
            "model": str,
            "line": int,
            "position": int,
            "in_manifest": int,
            "status": str,
            "attempt_id": int,
            "twin_of": str,
            "estimate_usd": float,
            "error": str,
            "updated_at": float,
        },
        pk="job_id",
        not_null={"fingerprint", "model", "status"},
    )
    db.table("attempts").create(
        {
            "attempt_id": int,
            "job_id": str,
            "fingerprint": str,
            "model": str,
            "input_json": str,
            "request_id": str,
            "status": str,
            "remote_status": str,
            "resubmit_of_unknown": int,
            "intent_at": float,
            "submitted_at": float,
            "started_at": float,
            "finished_at": float,
            "estimate_usd": float,
            "cost_usd": float,
            "outputs_json": str,
            "error": str,
        },
        pk="attempt_id",
        not_null={"job_id", "status"},
    )
    db.table("attempts").create_index(["job_id"])
    db.table("attempts").create_index(["request_id"])
    db.table("outputs").create(
        {
            "attempt_id": int,
            "idx": int,
            "job_id": str,
            "url": str,
            "path": str,
            "bytes": int,
            "sha256": str,
            "mtime_ns": int,
            "downloaded_at": float,
        },
        pk=("job_id", "attempt_id", "idx"),
    )
    db.table("outputs").create_index(["job_id"])
    db.table("runs").create(
        {
            "run_id": int,
            "pid": int,
            "command": str,
            "started_at": float,
            "finished_at": float,
            "exit_code": int,
            "summary": str,
        },
        pk="run_id",
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    """Facts about the journal as a whole: ``journal_version`` counts the commits that changed a job, an
    attempt or an output (what the reports reflect), and later keys remember what an earlier run
    learned (the manifest it checked, the version the reports were written for)."""
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.execute("INSERT INTO meta VALUES ('journal_version', '0')")


def _migration_3(db: sqlite_utils.Database) -> None:
    """Attempts found by what they asked for (a job that asks for what was already paid adopts it), and
    whether a runner saw an attempt end (``end_unseen``: it ended while no runner watched, its
    ``finished_at`` is RunComfy's or the last moment a runner was there), so run times count only what
    was seen."""
    db.table("attempts").create_index(["fingerprint"], if_not_exists=True)
    db.table("attempts").add_column("end_unseen", int)


MIGRATIONS: list[tuple[str, Any]] = [
    ("0001_initial", _migration_1),
    ("0002_meta", _migration_2),
    ("0003_attempts_by_fingerprint", _migration_3),
]
