"""The pacer on its own, on a made-up timeline (every call is told the time; nothing sleeps): the slow
start, the queue read off queue positions and off finishes, the start rate, durations learnt from
finished jobs, and the poll times drawn from them: a queued job waits for the running one ahead of
it, the end phase begins only near the run's end, probes cost per start, and a shared account is
noticed. The last tests drive whole runs against the simulator's own account (its FIFO queue, on a
fake clock) at one slot and at many, with jobs of seconds and of minutes, alone and shared."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import sys
from dataclasses import dataclass, field

import pytest

from runner.engine.pacing import PROBE_INTERVAL_MAX, SHORTEST_SHARE, Pacer, Track, submit_wait
from runner.engine.probes import PROBE_GAP_MAX, PROBE_STARTS, SHARED_PROBE_STARTS, SLOTS_SHARE
from runner.engine.starts import Starts
from runner.simulator.account import Account, Job, fifo_makespan


def sent(pacer: Pacer, n: int, now: float = 0.0) -> list[Track]:
    """``n`` submits made and sent at ``now`` (each checked against the pacer first)."""
    tracks = []
    for _ in range(n):
        assert pacer.may_submit(now)
        track = Track(f"job-{pacer.submits + 1}", now)
        pacer.on_submitted(track, now)
        pacer.on_sent(track, now)
        tracks.append(track)
    return tracks


def learnt(pacer: Pacer, seconds: list[float]) -> None:
    """Teach the pacer these job durations: each job is found running at its start, and again just
    before its end, so its end is known within a few milliseconds."""
    for i, duration in enumerate(seconds):
        start = 1000.0 + 100 * i
        track = Track(f"learnt-{i}", start)
        pacer.on_submitted(track, start)
        pacer.on_sent(track, start)
        pacer.on_polled(track, "in_progress", None, start)
        pacer.on_polled(track, "in_progress", None, start + duration - 0.01)
        pacer.on_finished(track, start + duration + 0.01)


# When one_slot's first job should be done: its start plus the 90% quantile, with a margin.
HIGH = 5000.0 + 10.0 * (1.05 + 0.3 / 20)


def one_slot(jobs: int, seconds: float = 10.0) -> tuple[Pacer, list[Track]]:
    """A pacer that knows ``seconds``-long jobs, with ``jobs`` of this run's sent at t=5000 to an
    account that runs one at a time: a probe found the last one queued behind all the others."""
    pacer = Pacer()
    learnt(pacer, [seconds] * 20)
    base = pacer.submits
    tracks = sent(pacer, 8, now=5000.0)
    pacer.on_probe(tracks[-1], "in_queue", 7, 5000.0)  # only the first of the eight runs
    tracks += sent(pacer, jobs - 8, now=5000.0) if jobs > 8 else []
    assert pacer.started_estimate(5000.0) == base + 1
    for track in tracks:  # each first poll, as the watcher asks for it
        pacer.poll_due(track, 5000.0)
    return pacer, tracks


def test_the_slow_start_sends_a_window_and_doubles_it_when_the_newest_job_is_found_running():
    pacer = Pacer()
    tracks = sent(pacer, 8)  # min_queue: as many as may go before anything is known
    assert not pacer.may_submit(0.0) and pacer.window_full()
    assert pacer.probe_gap(0.0) == pacer.probe_interval  # a full window is worth a probe soon
    pacer.on_probe(tracks[-1], "in_progress", None, 0.2)  # all eight started: none is queued
    assert not pacer.window_full()
    tracks = sent(pacer, 8, now=0.2)
    assert not pacer.may_submit(0.2)
    pacer.on_probe(tracks[-1], "in_progress", None, 0.4)
    sent(pacer, 16, now=0.4)  # the window doubled
    assert not pacer.may_submit(0.4) and not pacer.saturated


def test_a_queued_jobs_position_says_how_many_started_and_keeps_the_queue_small():
    pacer = Pacer()
    tracks = sent(pacer, 8)
    pacer.on_polled(tracks[-1], "in_queue", 3, 1.0)  # the 8th waits behind 2 more: 5 have started
    assert pacer.saturated and not pacer.starts.shared
    assert pacer.queue_estimate(1.0) == 3
    sent(pacer, 5, now=1.0)  # up to target_queue (min_queue, 8) waiting at RunComfy
    assert pacer.queue_estimate(1.0) == 8 and not pacer.may_submit(1.0)


def test_the_start_rate_is_measured_between_queue_positions_and_grows_the_estimate_only_for_a_while():
    pacer = Pacer()
    tracks = sent(pacer, 8)
    pacer.on_polled(tracks[-1], "in_queue", 3, 10.0)  # 5 started by t=10
    tracks += sent(pacer, 5, now=10.0)
    pacer.on_polled(tracks[-1], "in_queue", 4, 12.0)  # the 13th at position 4: 9 started by t=12
    assert pacer.start_rate == pytest.approx(2.0)  # 4 starts in 2 s
    assert pacer.started_estimate(12.4) == 9  # whole starts only: the next one is due at 12.5
    assert pacer.started_estimate(12.6) == 10
    # Nothing confirms the rate after the horizon (3 probe intervals + 1 s): the estimate holds.
    horizon = 3 * pacer.probe_interval + 1.0
    assert pacer.started_estimate(100.0) == 9 + int(2.0 * horizon)
    # Read off the record of starts, in between: the 2nd of the four between t=10 and t=12, in the
    # middle of its share of that time (not at its end: a lone start between two counts read far apart
    # was dated at the later one, and its run learnt short by all the gap).
    assert pacer.starts.start_of(7) == pytest.approx(10.75)
    assert pacer.starts.start_of(5) is None  # before what was seen
    assert pacer.starts.start_of(10) == pytest.approx(12.5)  # past it, where the rate puts it


def test_finishes_learnt_late_and_out_of_order_each_date_the_start_they_made_room_for():
    # Five slots, 13 sent at t=0: five run, the 8th waits at position 3. The first five end at 4.4,
    # 4.8, 5.0, 5.5 and 5.8, each starting the next, but polls find them only at 9-9.4 s, in another
    # order, and a probe between them reads the count (ten started) before most are known.
    starts = Starts()
    starts.queued(8, 3, 0.0, 1.0)
    starts.freed(4.4, 13)  # found first, before the probe: a start told of since the count
    starts.queued(13, 3, 9.11, 1.0)
    for when in (5.8, 4.8, 5.5, 5.0):  # found after the probe, out of order
        starts.freed(when, 13)
    assert starts.started == 10
    assert [starts.start_of(seq) for seq in range(6, 11)] == pytest.approx([4.4, 4.8, 5.0, 5.5, 5.8])
    assert starts.start_of(11) is None or starts.start_of(11) >= 9.11  # no finish says it started sooner


def test_a_start_between_two_counts_is_dated_from_the_last_reading_that_found_it_not_yet_started():
    """One slot shared, 30 s jobs: probes read none of ours started at 0, 100 and 200 s, then one at
    260 s. It started between 200 and 260 s (in the middle, as far as known), not between 0 and 260 s
    (dated at 260 s before, so a 33 s run ending at 262 s was learnt as 1.3 s, and every poll and probe
    after came forty times too often)."""
    starts = Starts()
    for when in (0.0, 100.0, 200.0):
        starts.queued(8, 15, when, 1.0)  # others' jobs wait ahead of all of ours
    starts.queued(8, 7, 260.0, 1.0)
    assert starts.started == 1
    assert starts.start_of(1) == pytest.approx(230.0)


def test_while_others_jobs_hold_the_slots_probes_come_when_the_accounts_start_rate_says_ours_start():
    """Our newest waits behind others' jobs: its position falls one every 5 s (the account's start
    rate, whoever's jobs start). The next probe comes half way to when ours may start while that is
    far, and just after it once it is near, not at the doubling waits that saw ours start 20 s late."""
    pacer = Pacer()
    tracks = sent(pacer, 6)
    pacer.draining = True
    for when, position in ((0.1, 16), (5.1, 15), (10.1, 14), (15.1, 13), (20.1, 12)):
        pacer.on_probe(tracks[-1], "in_queue", position, when)  # 11, then 6 ahead of all of ours
    assert pacer.starts.shared and pacer.starts.head_rate == pytest.approx(0.2, rel=0.05)
    assert pacer.started_estimate(20.1) == 0
    # six others' starts, then our first: 35 s on, and the next probe half way there
    assert pacer.probe_gap(20.1) == pytest.approx(17.5, rel=0.05)
    for when, position in ((30.1, 10), (40.1, 8), (50.1, 6)):
        pacer.on_probe(tracks[-1], "in_queue", position, when)
    assert pacer.probe_gap(50.1) == pytest.approx(5.5, rel=0.05)  # one start away: just after it
    pacer.on_probe(tracks[-1], "in_queue", 6, 55.6)  # not yet: again soon, not a doubling later
    assert pacer.probe_gap(55.6) == pytest.approx(1.25, rel=0.05)


def test_held_back_the_submit_loop_sleeps_until_the_count_of_starts_can_make_room():
    """With the queue full, the count of starts grows only at a measured rate (and for a while) or with
    an answer (which wakes the loop): it sleeps until the next whole start the rate brings, or else
    PROBE_INTERVAL_MAX; not a tenth of a second, as before any duration is known it used to."""
    pacer = Pacer()
    tracks = sent(pacer, 8)
    pacer.on_polled(tracks[-1], "in_queue", 8, 0.5)  # none of ours started: a queue, no rate
    assert not pacer.may_submit(0.5)
    assert pacer.probe_interval == pytest.approx(0.1)
    assert submit_wait(pacer, 0.5) == PROBE_INTERVAL_MAX
    pacer.on_polled(tracks[-1], "in_queue", 4, 2.5)  # 4 started in 2 s: 2 a second
    tracks += sent(pacer, 4, now=2.5)  # the queue is full again
    assert not pacer.may_submit(2.5) and pacer.start_rate == pytest.approx(2.0)
    wait = submit_wait(pacer, 2.5)
    assert wait == pytest.approx(0.5, abs=1e-3)  # the next start the rate brings
    assert not pacer.may_submit(2.5 + wait - 0.01) and pacer.may_submit(2.5 + wait)
    sent(pacer, 1, now=3.0)
    assert submit_wait(pacer, 3.0) == pytest.approx(0.5, abs=1e-3)
    sent(pacer, 1, now=3.5)
    # The estimate grows for 3 probe intervals + 1 s (1.3 s here) after the last answer, no further: a
    # third start is past that, so only an answer can make room.
    assert not pacer.may_submit(10.0)
    assert submit_wait(pacer, 3.5) == PROBE_INTERVAL_MAX


def test_a_queued_job_is_looked_at_again_only_when_the_count_of_starts_could_take_it_in():
    """Believed queued, a job is looked at again (for free) when the estimate, growing at the measured
    start rate, may count it started; with no rate, only an answer can, and that answer sets its poll
    again: until then it is left alone for poll_max (it was looked at every half second)."""
    pacer = Pacer()
    tracks = sent(pacer, 8)
    pacer.on_polled(tracks[-1], "in_queue", 7, 0.0)  # only the first runs
    queued = tracks[1]
    assert pacer.start_time(queued, 0.0) is None and pacer.start_rate is None
    assert pacer.poll_due(queued, 0.0) == pytest.approx(pacer.poll_max)
    pacer.on_polled(tracks[0], "in_progress", None, 0.1)
    pacer.on_finished(tracks[0], 3.1)  # an answer: the second took its slot; jobs take 3 s
    assert pacer.take_started(3.1) == [queued]
    pacer.on_polled(tracks[-1], "in_queue", 2, 8.0)  # 6 started by t=8: 5 since t=0
    assert pacer.start_rate == pytest.approx(5 / 8)
    # The estimate grows for 3 probe intervals + 1 s (2.5 s) after this answer: one more start.
    assert pacer.poll_due(tracks[6], 8.0) < 8.0 + pacer.poll_max  # the 7th: it may start by then
    assert pacer.poll_due(tracks[7], 8.0) == pytest.approx(8.0 + pacer.poll_max)  # the 8th may not


def test_each_finish_on_a_one_slot_account_says_the_next_job_started_and_when():
    pacer, tracks = one_slot(8)
    first, second = tracks[0], tracks[1]
    pacer.on_polled(first, "in_progress", None, 5009.9)
    pacer.on_finished(first, 5010.1)  # it ended at 5010: the second took its slot then
    assert pacer.started_estimate(5010.1) == pacer.submits - 6
    assert pacer.take_started(5010.1) == [second]  # its poll, deferred so far, is due again
    assert pacer.start_time(second, 5010.1) == pytest.approx(5010.0)
    assert pacer.poll_due(second, 5010.1) == pytest.approx(5010.0 + 10.0 * (1.05 + 0.3 / 21), abs=0.05)


def test_a_queued_job_is_not_polled_while_the_running_one_ahead_of_it_can_tell_the_same():
    pacer, tracks = one_slot(8)
    running, queued = tracks[0], tracks[1:]
    assert pacer.poll_due(running, 5000.0) == pytest.approx(HIGH, abs=0.1)  # when it should be done
    for track in queued:
        # Not before the job ahead of it could have finished, and then only looked at again (for
        # free): only the running one's finish lets it start.
        assert pacer.poll_due(track, 5000.0) > 5010.0
        assert pacer.start_time(track, 5000.0) is None and track.waiting
    assert pacer.take_started(5015.0) == []  # nothing says the first one finished yet
    assert pacer.start_time(queued[0], 5015.0) is None


def test_before_any_duration_is_known_only_the_oldest_running_job_is_polled_ever_less_often():
    pacer = Pacer()
    pilot, other = sent(pacer, 2)
    assert pacer.pilot is pilot
    assert pacer.poll_due(pilot, 0.0) == pytest.approx(0.5)  # first_poll
    assert pacer.on_polled(pilot, "in_progress", None, 0.5) == pytest.approx(1.0)  # each time its age doubles
    assert pacer.poll_due(other, 0.5) > 0.5  # it waits for what the pilot teaches
    assert pacer.on_polled(pilot, "in_progress", None, 1.0) == pytest.approx(2.0)
    assert pacer.poll_due(other, 1.9) > 1.9  # still waiting, at no cost
    pacer.draining = True  # nothing left to submit: whether the pilot may be the last, a probe says
    assert pacer.probe_gap(1.9) == pacer.probe_interval
    pacer.on_probe(other, "in_progress", None, 1.95)  # running too: nothing waits behind the pilot
    assert pacer.probe_gap(1.95) == PROBE_GAP_MAX  # all of ours are seen to run: nothing to ask
    assert pacer.on_polled(pilot, "in_progress", None, 2.0) == pytest.approx(2.5)  # a quarter late at most
    pacer.on_finished(pilot, 2.2)
    assert pacer.durations and pacer.poll_due(other, 2.2) <= 2.2 + 2.1 * 1.4  # its turn now


def test_a_pilot_with_ours_queued_behind_it_is_polled_lazily_though_all_is_submitted():
    pacer = Pacer()
    pilot, *queued = sent(pacer, 6)  # a one-slot account: the other five wait behind the pilot
    pacer.draining = True
    assert pacer.probe_gap(0.0) == pacer.probe_interval  # are they queued? one probe says
    pacer.on_probe(queued[-1], "in_queue", 5, 0.1)
    assert pacer.probe_gap(0.1) > 1.0  # known now: no more probes before the pilot teaches a duration
    # Late costs nothing while five wait behind it (RunComfy starts the next at once): its age is
    # quadrupled between polls, not doubled, nor grown by a quarter as for a job that may finish last;
    # its first poll too (at four first_polls, not one: 0.5 s would tell only that it runs, as the
    # probe did).
    assert pacer.poll_due(pilot, 0.1) == pytest.approx(2.0)
    assert pacer.on_polled(pilot, "in_progress", None, 2.0) == pytest.approx(8.0)
    assert all(pacer.start_time(track, 2.0) is None for track in queued)  # believed queued: not polled


def test_a_finished_job_teaches_its_duration_from_polls_or_runcomfys_timestamps():
    pacer = Pacer()
    wide = Track("wide", 10.0)
    pacer.on_submitted(wide, 10.0)
    pacer.on_sent(wide, 10.0)
    pacer.on_polled(wide, "in_progress", None, 10.5)
    # Polled too long ago to tell when it ended: RunComfy's timestamps say it took 3 s from its submit
    # (whole seconds: 12 to 14 s, and after the poll that found it running).
    pacer.on_finished(wide, 20.0, 1772366400.0, 1772366403.0)  # 12:00:00Z and 12:00:03Z
    assert list(pacer.durations) == [pytest.approx(3.0)]
    narrow = Track("narrow", 30.0)
    pacer.on_submitted(narrow, 30.0)
    pacer.on_sent(narrow, 30.0)
    pacer.on_polled(narrow, "in_progress", None, 31.0)  # found running at 31.0
    pacer.on_polled(narrow, "in_progress", None, 34.6)
    pacer.on_finished(narrow, 35.0)  # done between 34.6 and 35.0: at 34.8
    assert list(pacer.durations)[-1] == pytest.approx(4.8)  # it ran since its submit (nothing queued)
    assert pacer.in_flight == 0


@pytest.mark.parametrize("shared", [False, True])
def test_a_job_found_done_long_after_its_start_ran_at_least_most_of_the_shortest_run(shared):
    """Alone on the account, a job found done long after it started (lazy polls, no timestamps) ended
    no sooner than its start plus most of the shortest run learnt (``SHORTEST_SHARE``): the middle of
    the whole window between would teach a run too short, and, alone, date the next start too early
    (one slot, sixteen 1 s jobs: the last job's start was dated 0.6 s early, and the end phase polled
    it fifteen times). On a shared account the believed start may be late: the whole window stands."""
    pacer = Pacer()
    learnt(pacer, [1.0] * 8)
    pacer.starts.shared = shared
    late = Track("late", 5000.0)
    pacer.on_submitted(late, 5000.0)
    pacer.on_sent(late, 5000.0)
    pacer.on_polled(late, "in_progress", None, 5000.05)  # running at once: it started at its submit
    pacer.on_finished(late, 5003.0)  # and found done three seconds later
    earliest = 5000.05 if shared else 5000.0 + SHORTEST_SHARE * 1.0
    assert list(pacer.durations)[-1] == pytest.approx((earliest + 5003.0) / 2 - 5000.0)


def test_alone_fewer_of_ours_running_than_did_while_ours_queued_brings_a_probe_soon():
    """A count read off a position says twenty of ours run, eight waiting; the next reading says the
    count stood while nineteen finished. Alone that cannot be (a freed slot takes the next queued job
    at once): the count lags, or another runner's jobs take the slots. Probes then come as often as
    for half the slots seen, not as for the one job believed running (a runner that took itself for
    alone on a shared account waited 4.5 s for its next probe, ours all run and done unseen, and the
    account fell to 0.85 of a zero-latency scheduler)."""
    pacer = Pacer(min_queue=32)  # (the slow start's window lets all 28 go at once)
    learnt(pacer, [2.0] * 8)
    tracks = sent(pacer, 28, now=5000.0)
    pacer.on_probe(tracks[-1], "in_queue", 8, 5000.0)  # 20 run, 8 wait
    assert pacer.slots_seen == pytest.approx(20.0)
    for i, track in enumerate(tracks[:19]):  # each found done, its end placed before the next reading
        pacer.on_polled(track, "in_progress", None, 5000.1)
        pacer.on_finished(track, 5002.0 + 0.01 * i, 1772366400.0, 1772366402.0)
    pacer.on_probe(tracks[-1], "in_queue", 8, 5002.5)  # the count stood: 20 started, 19 done
    running = pacer.started_estimate(5002.5) - pacer.finished
    assert running == pytest.approx(1.0) and not pacer.starts.shared
    run = pacer.mean_duration
    assert pacer.probe_gap(5002.5) == pytest.approx(PROBE_STARTS * run / (SLOTS_SHARE * 20))  # not / 1


def test_a_finish_that_may_have_come_just_after_the_count_was_read_asks_for_a_probe():
    # Whole-second timestamps place a finish within a second either way. If the count of starts was
    # read inside that window, whether the start the finish made is in it is unknown: taken as in it,
    # a job that runs is believed queued, and the last one is then polled a run late. A probe says.
    def finish_near_the_count(took: float) -> Pacer:
        pacer, tracks = one_slot(3)
        pacer.draining = True
        pacer.on_probe(tracks[-1], "in_queue", 1, 5010.0)  # two of the three started by 5010
        assert not pacer.stale
        created = 1772366400.0  # the submits at 5000, as RunComfy stamped them
        pacer.on_finished(tracks[0], 5012.0, created, created + took)
        return pacer

    ambiguous = finish_near_the_count(10.0)  # it ended between 5009 and 5011
    assert ambiguous.stale and ambiguous.probe_gap(5012.0) == ambiguous.probe_interval
    assert not finish_near_the_count(8.0).stale  # between 5007 and 5009: before the count, surely


def test_a_finish_that_cannot_have_come_before_the_count_was_read_asks_for_no_probe():
    """One-second jobs: RunComfy's whole seconds put every finish within a second either way, so the
    window always held the last reading of the count (taken at the job's start), and each finish asked
    for a probe (16 one-second jobs on one slot made up to 4.4 requests a job). A job runs at least most
    of the shortest run: one that started at the reading cannot have ended before it."""
    pacer = Pacer()
    learnt(pacer, [0.9, 1.0, 1.1] * 8)
    tracks = sent(pacer, 3, now=5000.0)
    pacer.draining = True
    pacer.on_probe(tracks[-1], "in_queue", 2, 5000.05)  # the first runs, two wait
    created = 1772366400.0  # the submits at 5000, as RunComfy stamped them
    pacer.on_finished(tracks[0], 5001.5, created, created + 1.0)  # ended between 5000 and 5002
    assert not pacer.stale
    assert pacer.started_estimate(5001.5) == pacer.submits - 1  # the finish started the second


def test_a_reattached_job_teaches_nothing_about_durations_or_the_queue():
    pacer = Pacer()
    resumed = Track("old", 0.0)  # seq 0: submitted by an earlier run
    pacer.in_flight += 1
    assert pacer.poll_due(resumed, 0.0) == 0.0  # polled at once
    pacer.on_polled(resumed, "in_queue", 2, 1.0)
    pacer.on_finished(resumed, 5.0)
    assert not pacer.saturated and not pacer.durations and pacer.in_flight == 0


def test_with_durations_known_a_job_is_polled_once_when_it_should_be_done():
    pacer = Pacer()
    learnt(pacer, [10.0] * 20)
    track = Track("a", 5000.0)
    due = pacer.on_submitted(track, 5000.0)
    assert due == pytest.approx(5000.0 + 10.0 * (1.05 + 0.3 / 20), abs=0.05)  # start + 90% quantile
    assert pacer.probe_interval == pytest.approx(10.0 / 6, abs=0.01)


def test_the_end_phase_polls_eagerly_only_the_job_that_may_finish_last_and_only_near_the_end():
    pacer, tracks = one_slot(8)
    pacer.draining = True  # everything is submitted at once on a small account...
    running, last = tracks[0], tracks[-1]
    # ...but nothing can end the run before the last job has run: the running one is polled lazily,
    # when it should be done, and the queued ones not at all.
    assert pacer.poll_due(running, 5000.0) == pytest.approx(HIGH, abs=0.1)
    assert pacer.poll_due(last, 5000.0) > 5010.0 and last.waiting
    # The jobs run one after another, each finish letting the next one start: the last one starts at
    # 5070, and from its earliest likely end on it is polled every step.
    when = 5000.0
    for ahead, following in zip(tracks, tracks[1:], strict=False):
        when += 10.0
        pacer.on_polled(ahead, "in_progress", None, when - 0.1)
        pacer.on_finished(ahead, when + 0.1)
        assert pacer.take_started(when + 0.1) == [following]
    start = pacer.start_time(last, 5070.1)
    assert start == pytest.approx(5070.0, abs=0.01)
    low = pacer.duration_quantile(0.05)
    assert low is not None
    first = pacer.poll_due(last, 5070.1)
    assert first == pytest.approx(start + low)
    step = pacer.eager_step(first)
    assert pacer.on_polled(last, "in_progress", None, first) == pytest.approx(first + step)


def test_on_two_slots_the_end_phase_waits_for_the_last_wave_though_all_is_submitted_at_once():
    pacer = Pacer()
    learnt(pacer, [10.0] * 20)
    base = pacer.submits
    tracks = sent(pacer, 8, now=5000.0)
    pacer.on_probe(tracks[-1], "in_queue", 6, 5000.0)  # two of the eight run: two slots
    pacer.draining = True  # nothing left to submit from the start
    due = [pacer.poll_due(track, 5000.0) for track in tracks]  # each first poll, as the watcher asks
    assert due[:2] == [pytest.approx(HIGH, abs=0.1)] * 2  # the running pair: when it should be done
    assert [track.waiting for track in tracks] == [False] * 2 + [True] * 6  # the rest: not at all
    when = 5000.0
    for wave in range(3):  # each pair's finishes let the next pair start, ten seconds apart
        when += 10.0
        for track in tracks[2 * wave : 2 * wave + 2]:
            pacer.on_polled(track, "in_progress", None, when - 0.1)
            pacer.on_finished(track, when + 0.1)
        following = pacer.take_started(when + 0.1)
        assert following == tracks[2 * wave + 2 : 2 * wave + 4]
        low, high = pacer.duration_quantile(0.05), pacer.duration_quantile(0.9)
        assert low is not None and high is not None
        due = [pacer.poll_due(track, when + 0.1) for track in following]
        if wave < 2:  # a wave the last one follows: polled once, lazily, when it should be done
            assert due == [pytest.approx(when + high * (1.05 + 0.3 / len(pacer.durations)))] * 2
        else:  # the last wave: eagerly, from its earliest likely end on
            assert due == [pytest.approx(when + low)] * 2
            step = pacer.eager_step(due[0])
            assert pacer.on_polled(following[0], "in_progress", None, due[0]) == pytest.approx(due[0] + step)
    assert pacer.submits - base == 8


def test_the_end_phase_step_grows_when_the_run_holds_few_jobs_per_slot():
    pacer = Pacer()
    learnt(pacer, [9.0, 10.0, 11.0] * 400)
    pacer.on_sent(Track("first", 0.0), 0.0)  # the run's first submit at t=0, learnt's at 1000 on
    mean = pacer.mean_duration
    assert mean is not None
    long_run = pacer.eager_step(10_000.0)  # a thousand job-lengths: as precise as a sixtieth of one
    assert long_run == pytest.approx(max(mean / 60, 2.5 * (11.0 * 1.05 - 9.0) / (10_000 / mean)))
    assert pacer.eager_step(1_200.0) > long_run  # a hundred and twenty: coarser


def test_the_end_phase_step_counts_our_jobs_not_the_time_others_held_the_account():
    """Thirty of ours in nine hundred job-lengths (others' jobs held the account most of that time): the
    last wave's polls are shared among thirty jobs, so the step is as coarse as thirty job-lengths give."""
    pacer = Pacer()
    learnt(pacer, [9.0, 10.0, 11.0] * 10)
    pacer.on_sent(Track("first", 0.0), 0.0)
    mean, first = pacer.mean_duration, pacer.first_sent_at
    assert mean is not None and first is not None
    ours = first + pacer.submits * mean  # when our jobs alone, one after another, would have ended
    assert pacer.eager_step(10_000.0) == pytest.approx(pacer.eager_step(ours))
    assert pacer.eager_step(10_000.0) > 1.2 * mean / 60  # (a sixtieth of a run, counted by time)


def test_durations_known_only_roughly_do_not_widen_the_end_phase():
    # The same runs, 9-11 s, learnt twice: with ends known to milliseconds, and with ends known to
    # within a second either way (a small account's: one poll a job, RunComfy's whole seconds), each
    # measure off by up to 0.7 s. The end phase's step follows the runs' spread, not the errors'.
    runs = [9.0, 10.0, 11.0] * 10
    precise, rough = Pacer(), Pacer()
    learnt(precise, runs)
    for i, (duration, off) in enumerate(zip(runs, [-0.7, 0.0, 0.7, 0.35, -0.35] * 6, strict=True)):
        start = 1000.0 + 100 * i
        track = Track(f"rough-{i}", start)
        rough.on_submitted(track, start)
        rough.on_sent(track, start)
        rough.on_polled(track, "in_progress", None, start)
        rough.on_polled(track, "in_progress", None, start + duration + off - 1.0)
        rough.on_finished(track, start + duration + off + 1.0)
    measured = Pacer().durations
    for value in rough.durations:
        measured.add(value)  # the same values, taken as exact: the spread the errors add
    now = 1030.0  # three runs after the first submit (learnt's, at 1000): a run of few jobs per slot
    exact, raw = precise.eager_step(now), measured.eager_step(now - 1000.0, 0.0)
    assert raw > 1.3 * exact  # taken as exact, the errors widen the spread
    assert abs(rough.eager_step(now) - exact) < 0.5 * (raw - exact)  # most of that is taken back out
    low, raw_low, exact_low = rough.durations.narrowed(0.05), measured.quantile(0.05), 9.0
    assert low is not None and raw_low is not None and precise.duration_quantile(0.05) == exact_low
    assert abs(low - exact_low) < 0.6 * abs(raw_low - exact_low)  # the earliest likely end too


def test_probes_cost_per_start_not_per_second():
    small, _ = one_slot(8)  # one job running at a time: each finish already says a job started
    assert small.probe_gap(5000.0) == pytest.approx(PROBE_STARTS * 10.0)
    large = Pacer()
    learnt(large, [10.0] * 20)
    tracks = sent(large, 8, now=5000.0)
    large.on_probe(tracks[-1], "in_progress", None, 5000.0)
    tracks += sent(large, 16, now=5000.0)
    large.on_probe(tracks[-1], "in_progress", None, 5000.0)
    tracks += sent(large, 32, now=5000.0)
    large.on_probe(tracks[-1], "in_queue", 2, 5000.0)  # 54 of ours running
    assert large.probe_gap(5000.0) == large.probe_interval  # a sixth of a job's run


def test_jobs_that_seem_to_take_no_time_leave_the_pacer_working():
    pacer = Pacer()
    learnt(pacer, [0.0] * 5)  # estimates can come out at zero (the end seen before the start)
    pacer.draining = True
    track = sent(pacer, 1, now=2000.0)[0]
    assert pacer.poll_due(track, 2000.0) >= 2000.0
    assert pacer.eager_step(2000.0) == pacer.poll_min


def test_a_429_on_a_submit_assumes_the_queue_is_full():
    pacer = Pacer()
    tracks = sent(pacer, 8)
    pacer.on_probe(tracks[-1], "in_progress", None, 0.1)
    sent(pacer, 8, now=0.1)
    pacer.on_rate_limited()
    assert pacer.saturated
    assert pacer.queue_estimate(0.1) == pacer.target_queue  # exactly full: nothing more goes
    assert not pacer.may_submit(0.1)


def test_the_in_flight_cap_and_the_submits_waiting_for_a_connection_hold_submits_back():
    capped = Pacer(max_in_flight=2)
    a, _ = sent(capped, 2)
    assert not capped.may_submit(0.0)
    capped.on_finished(a, 1.0)
    assert capped.may_submit(1.0)

    waiting = Pacer(min_queue=100, max_unsent=3)
    tracks = []
    for i in range(3):
        track = Track(f"w{i}", 0.0)
        waiting.on_submitted(track, 0.0)  # none has a connection yet
        tracks.append(track)
    assert not waiting.may_submit(0.0)
    assert waiting.on_sent(tracks[0], 0.1)  # it was holding submits back: one more may go
    assert waiting.may_submit(0.1)
    waiting.on_dropped(tracks[1])  # refused before it was sent: no longer waiting either
    assert waiting.submits - waiting.sent == 1 and waiting.in_flight == 2


def test_a_probe_that_finds_the_newest_job_running_raises_a_measured_start_rate():
    pacer = Pacer()
    learnt(pacer, [5.0] * 20)
    tracks = sent(pacer, 12, now=5000.0)
    pacer.on_polled(tracks[-1], "in_queue", 11, 5000.0)
    pacer.on_polled(tracks[-1], "in_queue", 7, 5002.0)  # 1 -> 5 started in 2 s
    assert pacer.start_rate == pytest.approx(2.0)
    pacer.on_probe(tracks[-1], "in_progress", None, 5003.0)  # the queue ran dry: slots may idle
    assert pacer.start_rate == pytest.approx(2.0 * 1.25)


def test_a_shared_account_is_noticed_and_its_positions_taken_as_bounds():
    pacer = Pacer()
    learnt(pacer, [10.0] * 20)
    base = pacer.submits
    tracks = sent(pacer, 8, now=5000.0)
    pacer.on_polled(tracks[1], "in_progress", None, 5001.0)  # our second runs, and ends with the first
    for track in tracks[:2]:
        pacer.on_finished(track, 5010.0)
    # Yet our eighth has 11 jobs ahead of it: more than ours could be, so others' wait there too.
    pacer.on_probe(tracks[-1], "in_queue", 12, 5010.5)
    assert pacer.starts.shared
    assert pacer.started_estimate(5010.5) == base + 2  # never below what was seen, never negative
    # None of ours is believed running: no finish of ours will tell when one starts, so probes do
    # (less often the longer the wait, but at least once a job's run).
    assert pacer.started_estimate(5010.5) - pacer.finished < 1
    assert pacer.probe_interval <= pacer.probe_gap(5010.5) <= 10.0 + 1e-9


def test_on_a_shared_account_probes_come_more_often_as_finishes_no_longer_tell_the_starts():
    def two_running(position: int) -> Pacer:
        pacer = Pacer()
        learnt(pacer, [10.0] * 20)
        tracks = sent(pacer, 8, now=5000.0)
        pacer.on_polled(tracks[1], "in_progress", None, 5001.0)
        pacer.on_probe(tracks[-1], "in_queue", position, 5001.0)
        return pacer

    alone = two_running(6)  # two of ours run, six wait: our finishes will say when each starts
    assert not alone.starts.shared and alone.probe_gap(5001.0) == pytest.approx(PROBE_STARTS * 10.0 / 2)
    shared = two_running(12)  # others' jobs wait too: when they stop coming, ours start at once
    # once per SHARED_PROBE_STARTS of ours (two run, so two start per run), or every half a run when
    # many of ours run at once
    assert shared.starts.shared and shared.probe_gap(5001.0) == pytest.approx(SHARED_PROBE_STARTS * 10.0 / 2)
    assert SHARED_PROBE_STARTS < PROBE_STARTS


def test_a_count_of_starts_that_falls_shows_others_share_the_queue():
    # Alone, the count read off positions never falls (one FIFO, ours in the order sent): a later
    # submit found with more jobs ahead of it than an earlier one left means others' jobs came between.
    pacer = Pacer()
    tracks = sent(pacer, 8)
    pacer.on_probe(tracks[-1], "in_queue", 1, 0.01)  # seven of ours started
    tracks += sent(pacer, 7, now=0.01)
    pacer.on_probe(tracks[-1], "in_queue", 8, 0.02)  # seven still: the fifteenth is eighth in the queue
    assert not pacer.starts.shared
    pacer.on_probe(tracks[-1], "in_queue", 12, 0.3)  # three only: others' jobs wait ahead of ours
    assert pacer.starts.shared
    # probes per SHARED_PROBE_STARTS of the three of ours running (the pilot's age for a run)
    assert pacer.probe_gap(0.3) <= SHARED_PROBE_STARTS * 0.5 / 3 + 1e-9


def test_a_finish_runcomfy_dates_before_its_believed_start_asks_for_a_probe_and_teaches_no_duration():
    # Ours waited behind others' jobs; those left the queue unseen and ours started early, so the
    # count of starts lags. A job then ends, by RunComfy's stamps, before the pacer thought it started.
    pacer = Pacer()
    learnt(pacer, [2.0] * 20)
    tracks = sent(pacer, 12, now=5000.0)
    pacer.on_probe(tracks[-1], "in_queue", 8, 5000.1)  # four of ours run, eight wait (so it seems)
    known = list(pacer.durations)
    late = tracks[6]  # believed to start at the second wave of finishes, after 5004
    assert pacer.start_time(late, 5004.5) is None or pacer.start_time(late, 5004.5) > 5003.5
    created = 1772366400.0
    pacer.on_finished(late, 5006.0, created, created + 2.0)  # it was done by 5002 (± 1 s)
    assert pacer.stale and pacer.probe_gap(5006.0) == pacer.probe_interval
    assert list(pacer.durations) == known  # its run is unknown: nothing learnt from it


# -- whole runs on a fake clock ------------------------------------------------------------------
@dataclass
class FakeRunner:
    """One runner as the run loop drives its pacer (submit loop, poll queue, probe loop, end phase),
    against an account shared with any other FakeRunner; answers come at once."""

    name: str
    jobs: int
    pacer: Pacer = field(default_factory=Pacer)
    to_submit: int = 0
    live: dict[int, tuple[Track, Job]] = field(default_factory=dict)
    due: dict[int, float] = field(default_factory=dict)
    requests: int = 0
    last_probe: float = 0.0
    probe_due: float = 0.0  # when the probe loop will next look (as the watcher's _probe_due)
    finished_at: float | None = None
    starts_at: float = 0.0  # when it begins (a second runner may start a moment after the first)

    def __post_init__(self) -> None:
        self.to_submit = self.jobs


@dataclass
class FakeRun:
    slots: int
    seconds: float
    runners: list[FakeRunner]
    account: Account = field(init=False)
    now: float = 0.0
    events: list[tuple[float, int, str, int]] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    submit_gap: float = 0.0  # > 0: one submit per drive, the next 1-2 gaps later (POSTs take time)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.account = Account(self.slots, expire_seconds=1e9)

    def at(self, when: float, what: str, who: int, job: int = 0) -> None:
        heapq.heappush(self.events, (when, next(self._seq), what, who * 1_000_000 + job))

    def run(self) -> None:
        for who, runner in enumerate(self.runners):
            runner.last_probe = runner.starts_at
            self.at(runner.starts_at, "drive", who)
            self.at(runner.starts_at, "probe", who)
        while self.events:
            self.now, _, what, key = heapq.heappop(self.events)
            who, seq = divmod(key, 1_000_000)
            runner = self.runners[who]
            if runner.finished_at is None:
                getattr(self, what)(runner, who, seq)

    def drive(self, runner: FakeRunner, who: int, _: int) -> None:
        pacer, now = runner.pacer, self.now
        self.drain(runner, who)
        while runner.to_submit and pacer.may_submit(now):
            runner.to_submit -= 1
            track = Track(f"{runner.name}-{runner.to_submit}", now)
            pacer.on_submitted(track, now)
            pacer.on_sent(track, now)
            job = Job(track.job_id, "m", None, 0, self.seconds * self.rng.uniform(0.8, 1.2), False, now)
            self.account.submit(job, now)
            runner.live[track.seq] = (track, job)
            runner.requests += 1
            self.schedule(runner, who, track.seq, pacer.poll_due(track, now))
            if pacer.window_full():
                self.at(now + 0.02, "probe", who)
            if self.submit_gap:  # over HTTP, several runners' submits interleave in the queue
                self.at(now + self.submit_gap * (1 + self.rng.random()), "drive", who)
                return
        self.drain(runner, who)  # as the run loop does, at once after its last submit
        if not runner.to_submit and not runner.live:
            runner.finished_at = now

    def drain(self, runner: FakeRunner, who: int) -> None:
        pacer = runner.pacer
        if pacer.draining != (runner.to_submit == 0):
            pacer.draining = runner.to_submit == 0
            for seq in runner.live:
                self.schedule(runner, who, seq, pacer.poll_due(runner.live[seq][0], self.now))
            self.at(self.now, "probe", who)  # the watcher wakes its probe loop (watch.drain)

    def schedule(self, runner: FakeRunner, who: int, seq: int, when: float) -> None:
        runner.due[seq] = when = max(when, self.now)
        self.at(when, "poll", who, seq)

    def poll(self, runner: FakeRunner, who: int, seq: int) -> None:
        if seq not in runner.live or runner.due.get(seq) != self.now:
            return  # stale: it finished, or was rescheduled since
        when = runner.pacer.poll_due(runner.live[seq][0], self.now)
        if when > self.now + 0.005:
            self.schedule(runner, who, seq, when)  # looked at again: it waits, at no cost
            return
        self.answer(runner, who, seq, probe=False)

    def probe(self, runner: FakeRunner, who: int, _: int) -> None:
        pacer = runner.pacer
        due = max(runner.last_probe, pacer.read_at) + pacer.probe_gap(self.now)
        if self.now < due and not pacer.window_full():
            runner.probe_due = due
            self.at(due, "probe", who)  # as the probe loop does: it waits, and looks again
            return
        runner.last_probe = self.now
        asked = next((track.seq for track in pacer.probe_order() if track.seq in runner.live), None)
        if asked is not None:
            self.answer(runner, who, asked, probe=True)
        runner.probe_due = self.now + pacer.probe_gap(self.now)
        self.at(runner.probe_due, "probe", who)

    def answer(self, runner: FakeRunner, who: int, seq: int, *, probe: bool) -> None:
        pacer, now = runner.pacer, self.now
        track, job = runner.live[seq]
        job = self.account.get(job.request_id, now) or job
        position = self.account.queue_position(job)
        runner.requests += 1
        if probe:
            pacer.on_probe(track, job.state, position, now)
        if job.state == "completed":
            pacer.on_finished(track, now, stamp(job.submitted_at), stamp(job.finished_at))
            del runner.live[seq]
            runner.requests += 1  # the download
        else:
            self.schedule(runner, who, seq, pacer.on_polled(track, job.state, position, now))
        started = pacer.take_started(now)
        if pacer.draining and pacer.last_submitted in started:  # the run's end is known: as watch does
            started = [track for track, _ in runner.live.values()]
        for track in started:
            self.schedule(runner, who, track.seq, pacer.poll_due(track, now))
        self.at(now, "drive", who)
        gap = pacer.probe_gap(now)
        last = max(runner.last_probe, pacer.read_at)
        if last + gap < runner.probe_due:  # due sooner than the probe loop thought: as
            runner.probe_due = max(now, last + gap)  # the watcher does, it wakes it
            self.at(runner.probe_due, "probe", who)


STAMP_OFFSET = 0.37  # where the fake clock's 0 falls in a second of RunComfy's


def stamp(when: float | None) -> float:
    """An account time as RunComfy writes it (whole seconds), read as Unix seconds. The fake clock's 0
    falls 0.37 s into a second of RunComfy's: a run's submits at 0 would otherwise carry exact stamps,
    and every duration read from them would come out short (a real clock falls anywhere)."""
    return 1_800_000_000.0 + math.floor((when or 0.0) + STAMP_OFFSET)


def fake_run(slots: int, jobs: int, seconds: float, runners: int = 1) -> tuple[float, float]:
    """Requests per job and slot efficiency of ``runners`` runners of ``jobs`` jobs each."""
    run = FakeRun(slots, seconds, [FakeRunner(f"r{i}", jobs) for i in range(runners)])
    run.run()
    makespan = max(r.finished_at or run.now for r in run.runners)
    requests = sum(r.requests for r in run.runners) / (jobs * runners)
    return requests, jobs * runners * seconds / slots / makespan


@pytest.mark.parametrize(
    ("slots", "jobs", "seconds"),
    [(1, 20, 3.0), (1, 20, 120.0), (2, 40, 5.0), (5, 100, 3.0), (5, 60, 120.0), (50, 1000, 1.0)],
)
def test_a_whole_run_costs_few_requests_a_job_at_every_account_size(slots, jobs, seconds):
    requests, efficiency = fake_run(slots, jobs, seconds)
    assert requests <= 4.0
    assert efficiency >= 0.93  # the last wave's idle slots included (about half a job per slot)


def whole_run(run: FakeRun) -> tuple[float, float]:
    """Run it: requests per job, and efficiency against a zero-latency scheduler."""
    run.run()
    makespan = max(r.finished_at or run.now for r in run.runners)
    jobs = sum(r.jobs for r in run.runners)
    return sum(r.requests for r in run.runners) / jobs, zero_latency_makespan(run) / makespan


def windows_at_once(slots: int, jobs: int, seconds: float, runners: int, seed: int) -> tuple[float, float]:
    """``runners`` runners of ``jobs`` jobs, all starting at once, each sending its window in one go:
    each window queues behind the one before (:func:`whole_run`)."""
    group = [FakeRunner(f"r{i}", jobs) for i in range(runners)]
    return whole_run(FakeRun(slots, seconds, group, rng=random.Random(seed)))


def zero_latency_makespan(run: FakeRun) -> float:
    """How long the account would have taken with every job sent at once and every finish known at
    once: the same run times, started in the order RunComfy received them, each on the first free slot."""
    jobs = sorted(run.account.jobs.values(), key=lambda job: job.submitted_at)
    return fifo_makespan((job.run_seconds for job in jobs), run.slots)


@pytest.mark.parametrize(("slots", "jobs", "seconds"), [(2, 10, 12.0), (5, 30, 5.0)])
def test_the_end_of_a_small_run_is_seen_soon_wherever_runcomfys_seconds_fall(
    slots, jobs, seconds, monkeypatch
):
    """Few jobs a slot, so the last wave is much of the run. Where RunComfy's whole seconds fall on our
    clock decides what its timestamps say of each finish: at none may the runner lose much of the run
    to seeing its last finishes late (2 slots, one seed: 0.927 of a zero-latency scheduler, when the
    lazy polls of jobs likely done before the end were not set again once the last job was known to run)."""
    for offset in (0.0, 0.2, 0.4, 0.6, 0.8, 0.9):
        monkeypatch.setattr(sys.modules[__name__], "STAMP_OFFSET", offset)
        for seed in range(3):
            run = FakeRun(slots, seconds, [FakeRunner("r", jobs)], rng=random.Random(seed))
            run.run()
            assert run.runners[0].finished_at is not None
            assert zero_latency_makespan(run) / run.runners[0].finished_at >= 0.94, (offset, seed)
            assert run.runners[0].requests / jobs <= 4.0


@pytest.mark.parametrize(("slots", "jobs"), [(1, 16), (2, 30)])
def test_alone_on_a_small_account_the_shortest_runs_are_learnt_near_their_length(slots, jobs):
    """Sixteen or thirty 1 s jobs (± 20 %) alone on one or two slots: the polls that find each done come
    late (a queue waits behind it: lateness costs nothing), and RunComfy's whole seconds say little of
    a 1 s run. The runs learnt must still come near the true ones, the short ones too (the end phase
    polls from the last job's start plus the shortest run): twelve seeds, each learns a 5 % quantile
    at least 0.8 of the true one (0.38-0.52 when each end was dated in the middle of its whole
    window), and the mean cost stays at 3.5 requests a job (3.84 and 3.65 then)."""
    requests = []
    for seed in range(12):
        run = FakeRun(slots, 1.0, [FakeRunner("r", jobs)], rng=random.Random(seed))
        requests.append(whole_run(run)[0])
        runs = sorted(job.run_seconds for job in run.account.jobs.values())
        shortest = run.runners[0].pacer.duration_quantile(0.05)
        assert shortest is not None and shortest >= 0.8 * runs[int(0.05 * len(runs))], seed
    assert sum(requests) / len(requests) <= 3.5


@pytest.mark.parametrize("runners", [2, 3])
def test_runners_sharing_an_account_stay_cheap_and_keep_it_busy(runners):
    requests, efficiency = fake_run(20, 150, 2.0, runners)
    assert requests <= 5.0
    assert efficiency >= 0.93


@pytest.mark.parametrize("later", [0.0, 0.01, 0.02, 0.05])
def test_a_runner_starting_a_moment_after_another_on_a_shared_account_takes_it_over_at_once(later):
    """Two runners of 100 two-second jobs on 20 slots, the second a moment behind: its first jobs wait
    behind the first runner's, its count of starts is read while they do, and the first runner ends
    long before it. Those of its jobs believed queued started unseen; RunComfy then dates a finish
    before its believed start, and a probe sets the count right (0.81 of a zero-latency scheduler
    before, one seed of four: it took the emptied account for a one-slot one, polling a job a second)."""
    for seed in range(4):
        runners = [FakeRunner("first", 100), FakeRunner("second", 100, starts_at=later)]
        requests, efficiency = whole_run(FakeRun(20, 2.0, runners, rng=random.Random(seed)))
        assert efficiency >= 0.95, seed
        assert requests <= 5.0


@pytest.mark.parametrize(
    ("slots", "jobs", "seconds", "runners"),
    [(1, 6, 5.0, 2), (2, 12, 7.0, 2), (5, 30, 5.0, 2), (2, 24, 60.0, 2), (1, 6, 5.0, 3), (2, 12, 7.0, 3)],
)
def test_runners_sharing_a_small_account_keep_it_busy_to_the_end(slots, jobs, seconds, runners):
    """Two or three runners started together on an account of one to five slots: each submits its
    first window at once, so the later ones' jobs all wait behind the first's, and their first starts,
    first durations and last finishes are seen only through probes. Six seeds each, against a
    zero-latency scheduler (one runner of two on one slot came to 0.82 of it, and two of three on two
    slots to 0.82, when the waiting runner probed at doubling intervals and dated its first start at
    the probe that saw it: it learnt 28 s for 7 s jobs, and polled its last ones a wave late). Held
    to the issue's 0.93: one seed of two runners on two slots comes to 0.937, its last three jobs seen
    late (0.975 when a shared account's probes read only the newest job, at twice the requests once
    submits interleave: tests/test_shared_probes.py)."""
    for seed in range(6):
        requests, efficiency = windows_at_once(slots, jobs, seconds, runners, seed)
        assert efficiency >= 0.93, seed
        assert requests <= 6.0, seed


def test_a_runner_whose_jobs_wait_behind_anothers_asks_less_and_less_often():
    """One slot shared: the first runner's five jobs hold it for about 15 s, and the second runner's
    twenty wait behind them before any of its own has run (so no duration is known). Its probes
    space out as the wait goes on, rather than one every first_poll (32 of them in that wait)."""
    run = FakeRun(1, 3.0, [FakeRunner("first", 5), FakeRunner("behind", 20)])
    run.run()
    first, behind = run.runners
    assert first.requests / 5 <= 5.0 and behind.requests / 20 <= 5.0  # 7.55 a job before
    busy = sum(job.run_seconds for job in run.account.jobs.values())  # one slot: a perfect makespan
    assert behind.finished_at is not None and behind.finished_at <= 1.03 * busy  # the slot kept busy


def test_with_none_of_ours_running_the_probes_space_out_from_the_first_submit_not_from_clock_zero():
    """A resumed run: re-attached jobs (not ours by place) fill the account, the new submits wait
    behind them and no duration is known. The wait between probes grows from the first submit, at most
    poll_max: a monotonic clock is far from zero, and a gap measured from zero never came (the run hung)."""
    pacer = Pacer()
    now = 50_000.0  # a monotonic clock some hours after boot
    tracks = sent(pacer, 6, now=now)
    pacer.draining = True
    pacer.on_probe(tracks[-1], "in_queue", 9, now + 0.1)  # three re-attached ahead: none of ours runs
    assert pacer.started_estimate(now + 0.1) == 0
    assert pacer.probe_gap(now + 0.1) <= 1.0  # soon: the wait has only begun
    assert pacer.probe_gap(now + 40.0) <= pacer.poll_max  # later, further apart, but never unbounded
    assert pacer.probe_gap(now + 40.0) > pacer.probe_gap(now + 4.0)


def test_once_every_job_is_seen_to_run_no_more_probes_come():
    pacer, tracks = one_slot(8)
    pacer.draining = True
    assert pacer.probe_gap(5000.0) < PROBE_GAP_MAX
    pacer.on_probe(tracks[-1], "in_progress", None, 5050.0)  # the newest runs: so do all before it
    assert pacer.probe_gap(5050.0) == PROBE_GAP_MAX  # no position is left to read (10 s apart before)


def test_a_probe_comes_at_least_every_ten_minutes_whatever_the_estimates_say():
    """One slot, two-minute jobs: a probe per eight starts would be 16 minutes apart. A count of starts
    gone wrong defers the polls of jobs believed queued, and only a probe sets it right: one comes
    within PROBE_GAP_MAX whatever the estimates."""
    pacer, _ = one_slot(8, seconds=120.0)
    assert 8 * 120.0 > PROBE_GAP_MAX  # the per-start rule alone would wait longer
    assert pacer.probe_gap(5000.0) == PROBE_GAP_MAX
