"""The state file itself: opening it (migrations, WAL), the run lock, the one open
transaction that :meth:`Journal.flush` commits (the group commit), the facts kept about the journal as
a whole, and the runs that wrote it. What a job's life writes and what the reports read are the two
halves built on this (:mod:`.lifecycle`, :mod:`.reads`).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self

from ...errors import StateError, StateLocked
from .schema import MIGRATIONS


def now() -> float:
    return time.time()


# A write that failed for the values written (a bug of the caller's), not for the file.
_BAD_VALUES = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError)


def journal_trouble(exc: BaseException) -> bool:
    """Whether an error says the state file cannot be written: its disk is full, it went read-only, an
    I/O error (what stops a run at once, rather than failing one job)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, _BAD_VALUES)


class Journal:
    """One open state file and its transaction. Open it with :meth:`open` (``with Store.open(path) as
    store:``); hold the run lock with :meth:`lock`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn  # private: every statement over the journal is a method of the store
        self._in_tx = False
        self._changed = False  # the open transaction wrote a job, an attempt or an output
        self._broken: BaseException | None = None  # why the file stopped taking writes (full, read-only)
        self._lock_fd: int | None = None
        self.commits = 0  # transactions committed, and statements written: how grouped the writes are
        self.writes = 0
        self.on_begin: Callable[[], None] | None = None  # told when a transaction opens (a flush is due)

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> Self:
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
        """Commit what is written, close the file, and let go of the run lock if this store holds it
        (also when the last commit fails: it raises once the file is closed)."""
        try:
            self.flush()
        finally:
            self._conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------
    def _write(self, sql: str, params: Iterable[Any] = (), *, journal: bool = True) -> sqlite3.Cursor:
        with self._writing():
            if not self._in_tx:
                self._begin()
            self._changed |= journal
            self.writes += 1
            return self._conn.execute(sql, tuple(params))

    def _write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._writing():
            if not self._in_tx:
                self._begin()
            cursor = self._conn.executemany(sql, rows)
            self._changed |= cursor.rowcount > 0
            self.writes += max(0, cursor.rowcount)

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        if self.on_begin is not None:
            self.on_begin()

    @property
    def pending(self) -> bool:
        """Whether writes wait for a commit."""
        return self._in_tx

    def flush(self) -> None:
        """Commit everything written so far (group commit); a commit that changed a job, an attempt or
        an output also moves ``journal_version`` on. Once the file failed a write, it raises even
        with nothing open: what another task wrote into the lost transaction is not durable."""
        if self._in_tx or self._broken is not None:
            with self._writing():
                if self._changed:
                    self._conn.execute(
                        "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'journal_version'"
                    )
                self._conn.execute("COMMIT")
            self.commits += 1
            self._in_tx = False
            self._changed = False

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write, or the commit. Once the file fails one (its disk is full, it went read-only), the
        open transaction is rolled back and every later write fails alike: SQLite may have ended the
        transaction itself, and writes after that would each commit alone, half a job's update at a
        time. What was committed before stays whole."""
        if self._broken is not None:
            raise sqlite3.OperationalError(f"the state file takes no more writes ({self._broken})")
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if not journal_trouble(exc):
                raise
            self._broken = exc
            with suppress(sqlite3.Error):
                self._conn.rollback()
            self._in_tx = False
            self._changed = False
            raise

    # -- facts about the journal ----------------------------------------------------------------
    def journal_version(self) -> int:
        """Moves on with every commit that changed what a report shows (jobs, attempts, outputs)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'journal_version'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def peek_meta(path: Path, key: str) -> str | None:
        """A fact of the journal at ``path``, read without migrating or writing it (it may be another
        version's, or another manifest's); ``None`` when it has none or is not a journal."""
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return None
        return None if row is None else str(row[0])

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the file, so the file alone is the whole journal (to move it)."""
        self.flush()
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Write a fact in the current transaction (committed with the next :meth:`flush`)."""
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value), journal=False)

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
        """The latest time journaled in ``[since, before)``: how far a run killed in that span got.
        Only the runner's own clock counts: an end RunComfy reported for a job no runner saw finish
        (``end_unseen``) may fall in the idle time after the kill."""
        spans = " UNION ALL ".join(
            f"SELECT max({column}) AS t FROM {table} WHERE {column} >= :since AND {column} < :before{also}"
            for table, column, also in (
                ("attempts", "intent_at", ""),
                ("attempts", "submitted_at", ""),
                ("attempts", "started_at", ""),
                ("attempts", "finished_at", " AND end_unseen IS NOT 1"),
                ("outputs", "downloaded_at", ""),
                ("jobs", "updated_at", ""),
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
