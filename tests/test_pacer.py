"""The pacer on its own, on a made-up timeline (every call is told the time; nothing sleeps): the slow
start, the queue read off queue positions, the start rate, durations learnt from finished jobs, and the
poll times drawn from them, lazy while the queue is full and eager at the end."""

from __future__ import annotations

import pytest

from runner.engine.pacing import Pacer, Track


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


def test_the_slow_start_sends_a_window_and_doubles_it_when_the_newest_job_is_found_running():
    pacer = Pacer()
    tracks = sent(pacer, 8)  # min_queue: as many as may go before anything is known
    assert not pacer.may_submit(0.0) and pacer.window_full()
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
    assert pacer.saturated
    assert pacer.queue_estimate(1.0) == 3
    sent(pacer, 5, now=1.0)  # up to target_queue (min_queue, 8) waiting at RunComfy
    assert pacer.queue_estimate(1.0) == 8 and not pacer.may_submit(1.0)


def test_the_start_rate_is_measured_between_exact_counts_and_grows_the_estimate_only_for_a_while():
    pacer = Pacer()
    tracks = sent(pacer, 8)
    pacer.on_polled(tracks[-1], "in_queue", 3, 10.0)  # 5 started by t=10
    tracks += sent(pacer, 5, now=10.0)
    pacer.on_polled(tracks[-1], "in_queue", 4, 12.0)  # the 13th at position 4: 9 started by t=12
    assert pacer.start_rate == pytest.approx(2.0)  # 4 starts in 2 s
    assert pacer.started_estimate(12.5) == pytest.approx(10.0)
    # Nothing confirms the rate after the horizon (3 probe intervals + 1 s): the estimate holds.
    horizon = 3 * pacer.probe_interval + 1.0
    assert pacer.started_estimate(100.0) == pytest.approx(9 + 2.0 * horizon)
    assert pacer.start_of(7) == pytest.approx(11.0)  # read off the record of starts, in between
    assert pacer.start_of(5) is None and pacer.start_of(10) is None  # outside what was seen


def test_before_any_duration_is_known_a_job_is_polled_sooner_then_less_often():
    pacer = Pacer()
    track = Track("a", 0.0)
    assert pacer.on_submitted(track, 0.0) == pytest.approx(0.5)  # first_poll
    pacer.on_sent(track, 0.0)
    assert pacer.on_polled(track, "in_progress", None, 0.5) == pytest.approx(0.5 + 0.5 * 1.5)
    assert pacer.on_polled(track, "in_progress", None, 1.25) == pytest.approx(1.25 + 0.5 * 1.5**2)


def test_a_finished_job_teaches_its_duration_from_polls_or_runcomfys_timestamps():
    pacer = Pacer()
    narrow = Track("narrow", 0.0)
    pacer.on_submitted(narrow, 0.0)
    pacer.on_sent(narrow, 0.0)
    pacer.on_polled(narrow, "in_progress", None, 1.0)  # found running at 1.0
    pacer.on_polled(narrow, "in_progress", None, 4.6)
    pacer.on_finished(narrow, 5.0)  # done between 4.6 and 5.0: at 4.8
    assert list(pacer.durations) == [pytest.approx(3.8)]
    wide = Track("wide", 10.0)
    pacer.on_submitted(wide, 10.0)
    pacer.on_sent(wide, 10.0)
    pacer.on_polled(wide, "in_progress", None, 10.5)
    # Polled too long ago to tell when it ended: RunComfy's timestamps say it took 3 s from its submit.
    pacer.on_finished(wide, 20.0, 1772366400.0, 1772366403.0)  # 12:00:00Z and 12:00:03Z
    assert list(pacer.durations)[-1] == pytest.approx(3.0)
    assert pacer.in_flight == 0


def test_a_reattached_job_teaches_nothing_about_durations_or_the_queue():
    pacer = Pacer()
    resumed = Track("old", 0.0)  # seq 0: submitted by an earlier run
    pacer.in_flight += 1
    pacer.on_polled(resumed, "in_queue", 2, 1.0)
    pacer.on_finished(resumed, 5.0)
    assert not pacer.saturated and not pacer.durations and pacer.in_flight == 0


def test_with_durations_known_a_job_is_polled_once_when_it_should_be_done():
    pacer = Pacer()
    learnt(pacer, [10.0] * 20)
    track = Track("a", 5000.0)
    due = pacer.on_submitted(track, 5000.0)
    assert due == pytest.approx(5000.0 + 10.0 * 1.05, abs=0.05)  # its start plus the 90% quantile
    assert pacer.probe_interval == pytest.approx(10.0 / 6, abs=0.01)


def test_while_draining_the_job_that_may_finish_last_is_polled_every_step_and_others_lazily():
    pacer = Pacer()
    learnt(pacer, [10.0] * 20)
    early, last = Track("early", 50.0), Track("last", 100.0)
    pacer.on_submitted(early, 50.0)
    pacer.on_submitted(last, 100.0)
    pacer.draining = True
    step = pacer.eager_step
    assert step == pytest.approx(10.0 / 60, rel=0.01)
    low, high = pacer.duration_quantile(0.05), pacer.duration_quantile(0.9)
    assert low is not None and high is not None
    # The run cannot end before the last job's earliest likely finish: the early one is polled once,
    # when it should be done.
    assert pacer.eager_poll(early, 50.0) == pytest.approx(50.0 + high * 1.05)
    # The last one from its earliest likely end on, a step at a time.
    first = pacer.eager_poll(last, 100.0)
    assert first == pytest.approx(100.0 + low)
    assert pacer.eager_poll(last, first) == pytest.approx(first + step)


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
    learnt(pacer, [10.0] * 20)
    tracks = sent(pacer, 8, now=5000.0)
    pacer.on_polled(tracks[-1], "in_queue", 3, 5000.0)
    tracks += sent(pacer, 2, now=5000.0)
    pacer.on_polled(tracks[-1], "in_queue", 2, 5002.0)  # 5 -> 8 started in 2 s
    assert pacer.start_rate == pytest.approx(1.5)
    pacer.on_probe(tracks[-1], "in_progress", None, 5003.0)  # the queue ran dry: slots may idle
    assert pacer.start_rate == pytest.approx(1.5 * 1.25)
