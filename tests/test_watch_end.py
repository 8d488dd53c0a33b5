"""The watcher at the run's end: once the last submit is believed started, the run's end is known, and
the lazy polls set while it was not are set again (they may come sooner); and what wakes the submit
loop. The watcher is driven directly, with a fake clock of its own, against the in-process simulator
(``test_answer_graces``)."""

from __future__ import annotations

import pytest
from test_answer_graces import Watched
from test_pacer import learnt

pytestmark = pytest.mark.anyio


async def test_once_the_last_job_is_known_to_run_the_lazy_polls_are_set_again(tmp_path):
    w = Watched(tmp_path)
    try:
        learnt(w.pacer, [8.0, 12.0] * 10)  # jobs take 8 to 12 s
        w.clock.now = 5000.0
        first, second, last = [await w.submitted(name) for name in ("first", "second", "last")]
        w.pacer.on_probe(last.track, "in_queue", 1, 5000.0)  # the first two run, the last waits
        w.watcher.drain(True)  # nothing left to submit
        assert w.pacer.start_time(last.track, 5000.0) is None  # believed queued: the end is a guess
        lazy = second.due  # likely done before the last one ends: polled once, at its likely end
        w.sim_clock.advance(5.0)
        w.clock.now = 5004.0
        await w.watcher.poll(first)  # done: the slot it freed took the last job
        assert first.job.id not in w.flight.live
        assert w.pacer.start_time(last.track, 5004.0) is not None  # the run's end is known now
        sooner = w.pacer.poll_due(second.track, 5004.0)
        assert sooner < lazy - 2.0
        assert second.due == pytest.approx(sooner, abs=0.05 * (sooner - 5004.0))  # set again (with jitter)
    finally:
        await w.close()


async def test_while_submitting_every_answer_wakes_the_submit_loop_and_none_once_draining(tmp_path):
    """The submit loop sleeps until something may leave room in the queue (it no longer looks every
    tenth of a second): an answer finding a job running may, so it wakes the loop; once nothing is
    left to submit, only an ending does."""
    w = Watched(tmp_path)
    try:
        w.clock.now = 100.0
        first = await w.submitted("first")
        w.sim_clock.advance(0.5)  # it runs now
        assert not w.flight._wake.is_set()
        assert await w.poll_at(first, 100.5)  # running: still watched
        assert w.flight._wake.is_set()
        w.flight._wake = type(w.flight._wake)()
        w.watcher.drain(True)
        assert await w.poll_at(first, 100.7)
        assert not w.flight._wake.is_set()
    finally:
        await w.close()
