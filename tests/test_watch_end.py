"""The watcher at the run's end: once the last submit is believed started, the run's end is known, and
the lazy polls set while it was not are set again (they may come sooner). The watcher is driven
directly, with a fake clock of its own, against the in-process simulator (``test_answer_graces``)."""

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
