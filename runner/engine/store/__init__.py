"""The journal: one SQLite file per manifest that makes a run resumable and never double-paying.

Why it is built this way:

* **Intent before the POST.** A job's attempt row is written (status ``submitting``) and committed
  before its POST leaves; the ``request_id`` is written the moment it comes back. A process killed
  in between leaves a ``submitting`` attempt, which the next run turns into ``unknown``: the one
  case where the runner cannot know whether it paid, reported as such and never resubmitted
  silently.
* **Group commit.** Writes go into one open transaction that :meth:`Store.flush` commits; the
  run loop flushes every few tens of milliseconds and at the points where durability matters
  (before a POST). WAL mode lets ``status`` read while a run writes.
* **Idempotent upserts keyed by job id**, so syncing the same manifest twice changes nothing.
* **A lock that dies with its process** (``flock`` on ``<state>.lock``) keeps a second runner out,
  while readers (``status``, ``report``) never take it.
* **Every statement is here.** The tables are known to this package alone: the run, the reports and
  ``status`` read and write through named methods, and the connection is private. A store is a
  context manager (``with Store.open(path) as store:``) that commits and closes on the way out.


The store is built in parts, one concern a module: :mod:`.schema` (the tables and their migrations),
:mod:`.journal` (the file: opening, the lock, the group commit, facts, runs), :mod:`.lifecycle` (the
writes that make a job's life), :mod:`.reads` (what the run plans from and the reports read), and
:mod:`.rows` (what the reads hand back). :class:`Store` is all of them, and the only name callers use.

Tables: ``jobs`` (one row per job id ever seen), ``attempts`` (one per paid request, with the input
sent, ``request_id``, timings, cost, error), ``outputs`` (files on disk per attempt), ``runs``, and
``meta`` (facts about the journal as a whole).
"""

from __future__ import annotations

from .journal import journal_trouble
from .lifecycle import JobLife
from .reads import JournalReads
from .rows import AttemptRow, JobHistory, JobRow, OutputRow, PaidAttempt, StateTally, SyncSummary, Totals

__all__ = [
    "AttemptRow",
    "JobHistory",
    "JobRow",
    "OutputRow",
    "PaidAttempt",
    "StateTally",
    "Store",
    "SyncSummary",
    "Totals",
    "journal_trouble",
]


class Store(JobLife, JournalReads):
    """The state file: open it with :meth:`open` (``with Store.open(path) as store:``), hold the run lock
    with :meth:`lock`, write a job's life and read it back, commit with :meth:`flush`."""
