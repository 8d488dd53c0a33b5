"""When to probe: the pacer's reading of the queue (:mod:`.pacing` says why probes cost per start,
not per second). A probe asks the newest job for its queue position: its position is the queue's
length."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pacing import Pacer

PROBE_STARTS = 8  # at most one probe per this many starts (estimated), below PROBE_INTERVAL_MAX
SHARED_PROBE_RUNS = 0.5  # on a shared account, a probe at least once per this many job runs, or
SHARED_PROBE_STARTS = 4  # per this many of our starts, whichever is longer (few of ours run at once)
PROBE_GAP_MAX = 600.0  # seconds: a probe at least this often, whatever the estimates say (a wrong count
# of starts defers polls of jobs believed queued; a probe is what sets it right)


def probe_gap(pacer: Pacer, now: float) -> float:
    """Seconds from the pacer's last probe to its next. Before a queue is seen, only a full slow-start
    window needs one; after, at most one per ``PROBE_STARTS`` starts (finishes tell the others), as
    the jobs of ours running make them over a job's run (or, before any, over the pilot's age)."""
    if pacer.draining and pacer.starts.known >= pacer.submits:
        return PROBE_GAP_MAX  # all of ours are seen to run (or done): no position is left to read
    if not pacer.saturated:
        # A full slow-start window, or all submitted and not all seen to run: whether ours queue
        # behind the first ones decides how eagerly to poll them (one probe says).
        asking = pacer.window_full() or pacer.draining  # draining, and so not all seen to run
        return pacer.probe_interval if asking else pacer.poll_max
    if pacer.stale:
        return pacer.probe_interval
    started = pacer.started_estimate(now)
    running = started - pacer.finished
    if running < 1:
        # Others' jobs hold the slots: only a probe can tell when one of ours starts. The longer the
        # wait so far (since ours last started, or since the first was sent), the longer it may go on:
        # at most a job's run apart once one is known, and never more than poll_max, unless the
        # account's start rate says when ours will start (:meth:`~.starts.Starts.head_wait`).
        since = max(pacer.starts.rose_at, pacer.first_sent_at if pacer.first_sent_at is not None else now)
        wait = pacer.starts.head_wait(max(pacer.poll_max, 0.5 * (now - since)))
        wait = min(pacer.poll_max, 0.5 * (now - since)) if wait is None else wait
        if pacer.mean_duration is not None:
            wait = min(pacer.mean_duration, wait)
        return min(PROBE_GAP_MAX, max(pacer.probe_interval, wait))
    run = pacer.mean_duration
    if run is None:
        pilot = pacer.pilot
        start = pacer.start_time(pilot, now) if pilot else None  # (not its submit: it may have waited)
        run = max(pacer.first_poll, now - (start if start is not None else now))
    gap = PROBE_STARTS * run / running
    if pacer.starts.shared:  # others' finishes start ours too (all, once they stop sending)
        gap = min(gap, max(SHARED_PROBE_RUNS * run, SHARED_PROBE_STARTS * run / running))
    return min(PROBE_GAP_MAX, max(pacer.probe_interval, gap))
