"""Where a job and each of its attempts are, named once: the journal stores these words, and every
display reads them.

``pending`` and ``held`` wait to be submitted; ``submitting``, ``queued``, ``running`` and
``collecting`` are in flight; the rest are at rest until the user acts (``retry``,
``--resubmit-unknown``, an edit of the manifest). ``blocked`` is a chained job (its input names another
job's output) whose upstream job ended without success: it was never sent, and it is sent once that
job succeeds. An attempt (one paid request, or one try at it) goes
through the same words, plus two of its own for a submit that RunComfy surely did not take.
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
    BLOCKED = "blocked"  # never sent: a job whose output its input names did not succeed


IN_FLIGHT = frozenset({JobState.SUBMITTING, JobState.QUEUED, JobState.RUNNING, JobState.COLLECTING})
NEEDS_ATTENTION = frozenset(
    {JobState.FAILED, JobState.UNKNOWN, JobState.EXPIRED, JobState.HELD, JobState.CANCELLED, JobState.BLOCKED}
)
# What `retry` (``run --retry-failed``) sends again: the jobs that ended without success and cost nothing
# more to retry than a new request.
RETRIED = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED})
ALL_STATES = tuple(JobState)


class AttemptState(StrEnum):
    """An attempt's state in the journal: a job state, or how a submit that created no request ended."""

    SUBMITTING = JobState.SUBMITTING.value
    UNKNOWN = JobState.UNKNOWN.value
    QUEUED = JobState.QUEUED.value
    RUNNING = JobState.RUNNING.value
    COLLECTING = JobState.COLLECTING.value
    SUCCEEDED = JobState.SUCCEEDED.value
    FAILED = JobState.FAILED.value
    CANCELLED = JobState.CANCELLED.value
    EXPIRED = JobState.EXPIRED.value
    NOT_SENT = "not_sent"  # its POST surely never reached RunComfy (refused, 429), or a stop came first
    REFUSED = "refused"  # RunComfy refused the account (token, balance): the job waits for the next run
