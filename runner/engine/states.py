"""Where a job is, named once: the journal stores these words, and every display reads them.

``pending`` and ``held`` wait to be submitted; ``submitting``, ``queued``, ``running`` and
``collecting`` are in flight; the rest are at rest until the user acts (``retry``,
``--resubmit-unknown``, an edit of the manifest).
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """A job's state in the journal (a ``str``: it is stored and compared as its word)."""

    PENDING = "pending"
    HELD = "held"  # waiting for budget
    SUBMITTING = "submitting"  # its intent is journaled; its POST may be on the wire
    UNKNOWN = "unknown"  # the submit may or may not have been accepted (maybe billed)
    QUEUED = "queued"
    RUNNING = "running"
    COLLECTING = "collecting"  # finished at RunComfy; its outputs are being downloaded
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # RunComfy no longer has its results


IN_FLIGHT = frozenset({JobState.SUBMITTING, JobState.QUEUED, JobState.RUNNING, JobState.COLLECTING})
NEEDS_ATTENTION = frozenset(
    {JobState.FAILED, JobState.UNKNOWN, JobState.EXPIRED, JobState.HELD, JobState.CANCELLED}
)
ALL_STATES = tuple(JobState)
