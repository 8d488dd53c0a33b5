"""The journal: one SQLite file per manifest that makes a run resumable and never double-paying.

Why it is built this way:

* **Intent before the POST.** A job's attempt row is written (status ``submitting``) and committed
  before its POST leaves; the ``request_id`` is written the moment it comes back. A process killed
  in between leaves a ``submitting`` attempt, which the next run turns into ``unknown``: the one
  case where the runner cannot know whether it paid, reported as such and never resubmitted
  silently.
* **Group commit.** Writes go into one open transaction that :meth:`Store.flush` commits; the
  scheduler flushes every few tens of milliseconds and at the points where durability matters
  (before a POST). WAL mode lets ``status`` read while a run writes.
* **Idempotent upserts keyed by job id**, so syncing the same manifest twice changes nothing.
* **A lock that dies with its process** (``flock`` on ``<state>.lock``) keeps a second runner out,
  while readers (``status``, ``report``) never take it.
* **Every statement is here.** The tables are known to this module alone: the run, the reports and
  ``status`` read and write through named methods, and the connection is private. A store is a
  context manager (``with Store.open(path) as store:``) that commits and closes on the way out.

Tables: ``jobs`` (one row per job id ever seen), ``attempts`` (one per paid request, with the input
sent, ``request_id``, timings, cost, error), ``outputs`` (files on disk per attempt), ``runs``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import sqlite_utils

from ..errors import StateError, StateLocked
from ..manifest.snapshot import quick_name
from .states import ALL_STATES as ALL_STATES
from .states import IN_FLIGHT as IN_FLIGHT
from .states import NEEDS_ATTENTION as NEEDS_ATTENTION
from .states import JobState

# The job states, under the names the modules reading the journal used before ``JobState`` existed (to go
# once every caller names ``JobState``).
PENDING = JobState.PENDING
HELD = JobState.HELD
SUBMITTING = JobState.SUBMITTING
UNKNOWN = JobState.UNKNOWN
QUEUED = JobState.QUEUED
RUNNING = JobState.RUNNING
COLLECTING = JobState.COLLECTING
SUCCEEDED = JobState.SUCCEEDED
FAILED = JobState.FAILED
CANCELLED = JobState.CANCELLED
EXPIRED = JobState.EXPIRED


def now() -> float:
    return time.time()


def state_path_for(manifest_name: str, cwd: Path | None = None) -> Path:
    """Where a manifest's journal lives unless ``--state`` says otherwise: ``state/<name>.sqlite`` under
    the working directory."""
    return (cwd or Path.cwd()) / "state" / f"{manifest_name}.sqlite"


def quick_state_path(manifest_path: str | Path, state_path: str | Path | None = None) -> Path | None:
    """The journal of the manifest at ``manifest_path`` without loading it (``state_path``, or the name
    on its ``name:`` line); ``None`` when that cannot be told without a full load."""
    if state_path is not None:
        return Path(state_path)
    name = quick_name(manifest_path)
    return None if name is None else state_path_for(name)


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


MIGRATIONS: list[tuple[str, Any]] = [("0001_initial", _migration_1), ("0002_meta", _migration_2)]


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

    cost_usd: float  # charged by RunComfy
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


# Attempts that belong to a job of the manifest (its history; a twin's adopted attempt is its leader's).
_HISTORY = "FROM attempts a JOIN jobs j ON j.job_id = a.job_id WHERE j.in_manifest = 1"
# An attempt's run span: from the first poll that saw it running (else its submit) to its finish.
_SPAN_START = "coalesce(a.started_at, a.submitted_at)"
_SPANS = (
    f"{_HISTORY} AND a.request_id IS NOT NULL AND {_SPAN_START} > 0 AND a.finished_at > 0 "
    f"AND a.finished_at >= {_SPAN_START}"
)


class Store:
    """The state file. Open it with :meth:`open` (``with Store.open(path) as store:``); hold the run lock
    with :meth:`lock`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn  # private: every statement over the journal is a method of this class
        self._in_tx = False
        self._changed = False  # the open transaction wrote a job, an attempt or an output
        self._lock_fd: int | None = None
        self.commits = 0  # transactions committed, and statements written: how grouped the writes are
        self.writes = 0

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> Store:
        path = Path(path)
        if not path.exists() and not create:
            raise StateError(f"{path}: no state file yet (nothing has been run for this manifest)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            store = cls(path, conn)
            store._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path}: not a usable state file ({exc})") from None
        return store

    def _migrate(self) -> None:
        self._conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        done = {row[0] for row in self._conn.execute("SELECT name FROM _migrations")}
        for name, apply in MIGRATIONS:
            if name in done:
                continue
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._conn.execute("SELECT 1 FROM _migrations WHERE name=?", (name,)).fetchone() is None:
                    import sqlite_utils  # noqa: PLC0415 - only to create or migrate a state file

                    apply(sqlite_utils.Database(self._conn))
                    self._conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, now()))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def lock(self) -> None:
        """Take the run lock, or raise :class:`StateLocked` naming the process that holds it."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateLocked(
                f"{self.path}: another runner (pid {holder}) is running this manifest; "
                "wait for it, or use `status` to watch it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Commit what is written, close the file, and let go of the run lock if this store holds it."""
        self.flush()
        self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------
    def _write(self, sql: str, params: Iterable[Any] = (), *, journal: bool = True) -> sqlite3.Cursor:
        if not self._in_tx:
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
        self._changed |= journal
        self.writes += 1
        return self._conn.execute(sql, tuple(params))

    def _write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if not self._in_tx:
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
        cursor = self._conn.executemany(sql, rows)
        self._changed |= cursor.rowcount > 0
        self.writes += max(0, cursor.rowcount)

    def flush(self) -> None:
        """Commit everything written so far (group commit); a commit that changed a job, an attempt or
        an output also moves ``journal_version`` on."""
        if self._in_tx:
            if self._changed:
                self._conn.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'journal_version'"
                )
            self._conn.execute("COMMIT")
            self.commits += 1
            self._in_tx = False
            self._changed = False

    # -- facts about the journal ----------------------------------------------------------------
    def journal_version(self) -> int:
        """Moves on with every commit that changed what a report shows (jobs, attempts, outputs)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'journal_version'").fetchone()
        return int(row[0]) if row else 0

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Write a fact in the current transaction (committed with the next :meth:`flush`)."""
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value), journal=False)

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
                        PENDING,
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
                    (job.fingerprint, job.model, job.line, position, PENDING, twin, estimate, t, job.id)
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
            "SELECT attempt_id, job_id FROM attempts WHERE status=? AND request_id IS NULL", (SUBMITTING,)
        ).fetchall()
        error = json.dumps(
            {
                "type": "SubmitUnknown",
                "message": "the runner stopped while this job's submit was in flight; "
                "it may have been accepted",
            }
        )
        for attempt_id, job_id in rows:
            self._write(
                "UPDATE attempts SET status=?, error=? WHERE attempt_id=?", (UNKNOWN, error, attempt_id)
            )
            self._write(
                "UPDATE jobs SET status=?, error=?, updated_at=? WHERE job_id=? AND attempt_id=?",
                (UNKNOWN, error, now(), job_id, attempt_id),
            )
        self.flush()
        return len(rows)

    # -- reading --------------------------------------------------------------------------------
    _JOB_SELECT = (
        "SELECT j.job_id, j.fingerprint, j.model, j.status, j.attempt_id, a.request_id, j.in_manifest, "
        "j.twin_of, j.estimate_usd, a.cost_usd, j.error, a.outputs_json, a.submitted_at, a.started_at, "
        "a.remote_status, a.finished_at, a.job_id FROM jobs j "
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
                (SUCCEEDED,),
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
            (UNKNOWN, SUBMITTING),
        ).fetchone()
        return float(row[0])

    def spent_usd(self) -> float:
        """Money RunComfy reported charging, over every attempt in the state file."""
        row = self._conn.execute("SELECT coalesce(sum(cost_usd), 0) FROM attempts").fetchone()
        return float(row[0])

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
            f"SELECT (SELECT coalesce(sum(a.cost_usd), 0) {_HISTORY}), "
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

    # -- writing the life of a job --------------------------------------------------------------
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
            (job_id, fingerprint, model, input_json, SUBMITTING, int(resubmit_of_unknown), t, estimate),
        )
        attempt_id = int(cursor.lastrowid or 0)
        self._write(
            "UPDATE jobs SET status=?, attempt_id=?, error=NULL, updated_at=? WHERE job_id=?",
            (SUBMITTING, attempt_id, t, job_id),
        )
        return attempt_id

    def record_submitted(self, job_id: str, attempt_id: int, request_id: str) -> None:
        t = now()
        self._write(
            "UPDATE attempts SET request_id=?, status=?, submitted_at=? WHERE attempt_id=?",
            (request_id, QUEUED, t, attempt_id),
        )
        self._set_job(job_id, attempt_id, QUEUED, t)

    def record_remote(
        self,
        job_id: str,
        attempt_id: int,
        status: str,
        remote_status: str,
        *,
        started: bool = False,
        finished: bool = False,
        cost: float | None = None,
        outputs: Iterable[str] | None = None,
    ) -> None:
        """A poll's news: live status, or completion with its output URLs and charged cost."""
        t = now()
        sets = ["status=?", "remote_status=?"]
        params: list[Any] = [status, remote_status]
        if started:
            sets.append("started_at=coalesce(started_at, ?)")
            params.append(t)
        if finished:
            sets.append("finished_at=coalesce(finished_at, ?)")
            params.append(t)
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
    ) -> None:
        """The job ended without success (or its submit is unknown): keep the cause."""
        t = now()
        text = json.dumps(dict(error), default=str)
        if attempt_id is not None:
            self._write(
                "UPDATE attempts SET status=?, error=?, finished_at=coalesce(finished_at, ?), "
                "cost_usd=coalesce(?, cost_usd) WHERE attempt_id=?",
                (status, text, t, cost, attempt_id),
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
            (SUCCEEDED, attempt_id, COLLECTING),
        )
        self._write(
            "UPDATE jobs SET status=?, error=NULL, updated_at=? WHERE job_id=?", (SUCCEEDED, now(), job_id)
        )

    def record_expired(self, job_id: str, attempt_id: int, error: Mapping[str, Any]) -> None:
        """The attempt's outputs answered 404 before they were all on disk: the job needs a new run."""
        self._write(
            "UPDATE attempts SET status=? WHERE attempt_id=? AND status=?", (EXPIRED, attempt_id, COLLECTING)
        )
        self.set_status(job_id, EXPIRED, error)

    def set_status(self, job_id: str, status: str, error: Mapping[str, Any] | None = None) -> None:
        self._write(
            "UPDATE jobs SET status=?, error=?, updated_at=? WHERE job_id=?",
            (status, json.dumps(dict(error)) if error else None, now(), job_id),
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

    # -- runs -----------------------------------------------------------------------------------
    def start_run(self, command: str) -> int:
        cursor = self._write(
            "INSERT INTO runs (pid, command, started_at) VALUES (?,?,?)",
            (os.getpid(), command, now()),
            journal=False,
        )
        self.flush()
        return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, exit_code: int, summary: Mapping[str, Any]) -> None:
        self._write(
            "UPDATE runs SET finished_at=?, exit_code=?, summary=? WHERE run_id=?",
            (now(), exit_code, json.dumps(dict(summary)), run_id),
            journal=False,
        )
        self.flush()

    def last_activity(self, since: float, before: float) -> float | None:
        """The latest time journaled in ``[since, before)``: how far a run killed in that span got."""
        spans = " UNION ALL ".join(
            f"SELECT max({column}) AS t FROM {table} WHERE {column} >= :since AND {column} < :before"
            for table, column in (
                ("attempts", "intent_at"),
                ("attempts", "submitted_at"),
                ("attempts", "started_at"),
                ("attempts", "finished_at"),
                ("outputs", "downloaded_at"),
                ("jobs", "updated_at"),
            )
        )
        row = self._conn.execute(
            f"SELECT max(t) FROM ({spans})", {"since": since, "before": before}
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def runs(self) -> list[dict[str, Any]]:
        cursor = self._conn.execute(
            "SELECT run_id, pid, command, started_at, finished_at, exit_code FROM runs"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor]


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
