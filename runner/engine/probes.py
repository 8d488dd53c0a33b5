"""When to probe, and whom: the pacer's reading of the queue (:mod:`.pacing` says why probes cost per
start, not per second).

A probe asks one job for its queue position. Alone on an account, the newest is asked: its position is
the queue's length, and every job ahead of it is ours. On a shared account a position also counts
others' jobs, ahead of ours and between them, so the count of our starts read off the newest lags (two
runners whose submits interleave: half the queue is the other's). There the first asked is the oldest
of ours believed still queued (the *frontier*): its position bounds the count from below, and its
waiting bounds it from above (nothing after it has started), so its answers keep the count within a
start or two; and the account's start rate (anyone's jobs) is read off two answers of the same job
(whichever jobs are asked twice), never off two jobs' positions together.
While at most one of ours is believed to run, the frontier is the oldest not yet seen to run, even if
believed started: on a small shared account a finish of ours often starts another runner's job, not
ours, and only asking the job says which. A poll that finds a job queued there tells what a probe
would, and the next probe's gap runs from it (``Pacer.read_at``).

While ours all wait (all sent, none running, no account rate yet), a start seen late costs little,
and the probes space out faster (the wait grows four times between them, not twice; near the queue's
head too: runners interleaved on one slot made 0.1-0.45 fewer requests a job). All sent, and
before any rate is measured, the answers so far also guess one (:meth:`~.starts.Starts.guessed_rate`):
a position that has not moved in a long wait says the account starts jobs slowly, and the next probe
may then come more than ``poll_max`` after the last (the most the wait so far alone allows), never
sooner.
Behind others' two-minute jobs on one slot, probes had come every ``poll_max`` for half an hour with
nothing moving. Below ``poll_max`` the guess is not used: with 1 s jobs it let a runner miss its first
jobs' runs, learn them wrong, and end late (one HTTP run fell to 0.88 of the slot).

Alone, the probes come as if at least half the slots seen running ours (while others of ours waited)
still ran ours: fewer run than did while a queue waited cannot be, alone; the count lags, or another
runner takes the slots unseen (one believing itself alone waited 4.5 s, 8 runs over the one job it
believed running, while its queued jobs ran and ended), and only a probe says which.

Others' jobs may also stop coming: their batch ends, and ours get every slot at once. Only a probe
shows it, so on a shared account one comes before the account's start rate could have started all of
ours believed queued, and again soon after one that finds ours all running with no rate of ours
measured to refill by (each such probe lets one more queue's worth be sent). So too on an account
believed alone: a runner may share one without having seen it (two over HTTP on 20 slots: the one
left alone had read one queue position, measured no rate, and ran 8 of the 20 slots for 18 s, its
probes 4.7 s apart).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..api.client import IN_QUEUE

if TYPE_CHECKING:
    from .pacing import Pacer, Track

PROBE_STARTS = 8  # at most one probe per this many starts (estimated), below PROBE_INTERVAL_MAX
SHARED_PROBE_RUNS = 0.5  # on a shared account, a probe at least once per this many job runs, or
SHARED_PROBE_STARTS = 4  # per this many of our starts, whichever is longer (few of ours run at once)
SENT_SHARE = 0.75  # all sent, none of ours running, no account rate known: the next probe comes after
# this share of the wait so far (it grows 4 x between probes), not half
SLOTS_SHARE = 0.5  # alone, probes come as if at least this share of the slots seen ran ours
PROBE_GAP_MAX = 600.0  # seconds: a probe at least this often, whatever the estimates say (a wrong count
# of starts defers polls of jobs believed queued; a probe is what sets it right)


def probe_gap(pacer: Pacer, now: float) -> float:
    """Seconds from the pacer's last probe to its next. Before a queue is seen, only a full slow-start
    window needs one; after, at most one per ``PROBE_STARTS`` starts (finishes tell the others), as
    the jobs of ours running make them over a job's run (or, before any, over the pilot's age). On a
    shared account, sooner: see the module's docstring, and below."""
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
        # account's start rate says when ours will start (:meth:`~.starts.Starts.head_wait`: far off
        # behind others' jobs, half way there; on one slot, a probe per run found the next of ours a
        # place further on at each answer, eight times over for one job). With all of ours sent, a
        # start seen late costs little (the slots are busy, and nothing waits to be sent): the wait so
        # far grows 4 x between probes, not 2 x, as the pilot's age does with many of ours behind it.
        since = max(pacer.starts.rose_at, pacer.first_sent_at if pacer.first_sent_at is not None else now)
        near = pacer.mean_duration if pacer.mean_duration is not None else PROBE_GAP_MAX
        wait = pacer.starts.head_wait(max(pacer.poll_max, 0.5 * (now - since)), near)
        guess = None  # all sent, no rate yet: the answers so far guess one (module docstring)
        if wait is None and pacer.draining:
            guess = pacer.starts.head_wait(PROBE_GAP_MAX, near, pacer.starts.guessed_rate())
        share = SENT_SHARE if pacer.draining else 0.5
        wait = min(pacer.poll_max, share * (now - since), near) if wait is None else wait
        if guess is not None and guess > pacer.poll_max:  # (a slow account: past the cap above)
            wait = max(wait, guess)
        return min(PROBE_GAP_MAX, max(pacer.probe_interval, wait))
    run = pacer.mean_duration
    if run is None:
        pilot = pacer.pilot
        start = pacer.start_time(pilot, now) if pilot else None  # (not its submit: it may have waited)
        run = max(pacer.first_poll, now - (start if start is not None else now))
        if start is None and pacer.durations.ceiling:
            run = pacer.durations.ceiling
    if not pacer.starts.shared:  # (fewer run than did while ours queued: the count lags, or others
        running = max(running, SLOTS_SHARE * pacer.slots_seen)  # take the slots: a probe says which)
    gap = PROBE_STARTS * run / running
    if pacer.starts.shared:  # others' finishes start ours too (all, once they stop sending)
        gap = min(gap, max(SHARED_PROBE_RUNS * run, SHARED_PROBE_STARTS * run / running))
        head = pacer.starts.head_rate
        if head and not pacer.draining:  # and before the account's rate could have started all of
            # ours believed queued: should the others stop sending, ours get every slot (and our
            # queue runs dry unseen: another runner's batch ending left 20 slots to one)
            gap = min(gap, max(run / 6, (pacer.submits - started) / head))
    return min(PROBE_GAP_MAX, max(pacer.probe_interval, gap))


def probe_order(pacer: Pacer) -> list[Track]:
    """The jobs a probe may ask about, the first that is still live first: the newest, or on a shared
    account the frontier and then the newest (the module's docstring says why)."""
    newest = list(reversed(pacer.recent))
    if not pacer.starts.shared or pacer.probe_ran:
        return newest  # (after a frontier answer found its job running: how far the count goes)
    believed = pacer.started_estimate(pacer.starts.observed_at)
    if believed - pacer.finished <= 1.0:
        believed = max(pacer.finished, pacer.starts.known)
    return [track for track in pacer.recent if track.seq > believed and not track.running_at][:1] + newest


def probed(pacer: Pacer, track: Track, status: str) -> None:
    """What a probe's answer says beyond the count of starts. The newest job found running means the
    queue ran dry and slots may idle: the start rate (hence the target queue) is too low, so it grows
    until a queue is seen again (twice as fast when dry twice running: others' jobs left, say). On a
    shared account, the frontier found running says the count reaches it, not how far past: the
    newest's answer, soon, says (unless the account runs one job at a time: then nothing more of ours
    can have started)."""
    rate = pacer.start_rate
    if pacer.saturated and not pacer.draining and status != IN_QUEUE and rate:
        if pacer.submits - track.seq < pacer.target_queue:
            run = pacer.mean_duration or pacer.probe_interval
            ceiling = 2.0 * max(1, pacer.in_flight) / run  # every job in flight starting within a run
            grow = 2.0 if pacer.probe_ran else 1.25
            pacer.starts.rate = max(rate, min(ceiling, rate * grow))
    pacer.probe_ran = status != IN_QUEUE
    head, mean = pacer.starts.head_rate, pacer.mean_duration
    one_slot = head is not None and mean is not None and head * mean < 1.5  # (its slots: starts x run)
    frontier = bool(pacer.recent) and track is not pacer.recent[-1]
    pacer.stale = pacer.probe_ran and frontier and pacer.starts.shared and not one_slot
    if pacer.probe_ran and not frontier and not pacer.draining and not rate:
        pacer.stale = True  # ours ran dry with no rate to refill by (the others stopped?): again soon
