"""The bounds of the reader's grace rules (``docs/api-answers.md``), one by one: the watcher and the
download driven directly, with a fake clock of their own, against the in-process simulator with a
clock that stands still unless a test moves it. A 404 soon after the submit, a result without its
outputs yet, a word nobody knows, a file not on the CDN yet: each is given its grace, and each grace
ends where the docs say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FAST_POLICY, R2V

from runner import defaults
from runner.api.client import ApiConfig, RunComfyClient
from runner.api.download import DownloadConfig, download
from runner.api.http import HttpxSession
from runner.catalog.pricing import PriceTable
from runner.engine.budget import Budget
from runner.engine.collect import Collector
from runner.engine.events import EventKind
from runner.engine.flight import Flight, Live, Parts
from runner.engine.pacing import Pacer, Track
from runner.engine.settings import RunSettings
from runner.engine.states import JobState
from runner.engine.store import Store
from runner.engine.throttle import Throttle
from runner.engine.watch import Watcher
from runner.errors import RequestNotFound
from runner.manifest.loader import Job
from runner.simulator import ManualClock, SimulatorConfig, create_app, expected_output_bytes

pytestmark = pytest.mark.anyio

BYTES = 4096
COST = 5 * 0.084


PRICES = PriceTable({R2V: {"unit": "second", "usd": 0.084}}, "2026-01-01")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Watched:
    """A watcher over the in-process simulator whose clock stands still unless told, and a fake clock
    of the watcher's own: a test walks time forward poll by poll."""

    def __init__(self, tmp_path: Path, **knobs: Any) -> None:
        self.sim_clock = ManualClock()
        config = SimulatorConfig(**{"job_seconds": 1.0, "job_spread": 0.0, "output_bytes": BYTES, **knobs})
        self.app = create_app(config, clock=self.sim_clock)
        self.http = HttpxSession(httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app)))
        self.client = RunComfyClient(
            self.http, ApiConfig(token="sim-token", base_url="http://sim.local", retry=FAST_POLICY)
        )
        self.clock = FakeClock()
        self.events: list[tuple[EventKind, dict[str, Any]]] = []
        self.store = Store.open(tmp_path / "state.sqlite")
        flight = Flight(self.emit)
        self.flight = flight
        download_config = DownloadConfig(allowed_hosts=("sim.local",), retry=FAST_POLICY)
        parts = Parts(
            flight=flight,
            store=self.store,
            client=self.client,
            pacer=Pacer(),
            throttle=Throttle(8, clock=self.clock, emit=self.emit),
            budget=Budget(PRICES, None),
            collector=Collector(self.store, self.http, tmp_path / "out", download_config, emit=self.emit),
            emit=self.emit,
            clock=self.clock,
        )
        self.pacer = parts.pacer
        self.watcher = Watcher(parts, RunSettings(job_timeout=None))

    def emit(self, kind: EventKind, /, **data: Any) -> None:
        self.events.append((kind, data))

    async def submitted(self, job_id: str, *, reattached: bool = False) -> Live:
        """A job submitted to the simulator and journaled, live in this run (or re-attached by it)."""
        job = Job(job_id, R2V, {"prompt": job_id, "duration": 5}, 1, f"fp-{job_id}")
        self.store.sync_manifest([job], {job_id: COST}, {})
        request_id = await self.client.submit(job.model, job.input)
        attempt_id = self.store.record_intent(job_id, job.fingerprint, job.model, "{}", COST)
        self.store.record_submitted(job_id, attempt_id, request_id)
        track = Track(job_id, self.clock.now)
        if not reattached:
            self.pacer.on_submitted(track, self.clock.now)
            self.pacer.on_sent(track, self.clock.now)
        live = Live(job, attempt_id, request_id, track, status=JobState.QUEUED)
        self.flight.live[job_id] = live
        self.pacer.in_flight += 1
        return live

    async def poll_at(self, live: Live, now: float) -> bool:
        """Poll at watcher time ``now``; whether the job is still being watched."""
        self.clock.now = now
        await self.watcher.poll(live)
        return live.job.id in self.flight.live

    def status(self, job_id: str) -> tuple[str, dict[str, Any] | None]:
        found = next(r for r in self.store.jobs() if r.job_id == job_id)
        return found.status, found.error

    async def close(self) -> None:
        self.store.close()
        await self.http.aclose()


@pytest.fixture
async def watched(tmp_path):
    made: list[Watched] = []

    def make(**knobs: Any) -> Watched:
        made.append(Watched(tmp_path, **knobs))
        return made[-1]

    yield make
    for one in made:
        await one.close()


async def test_a_404_soon_after_the_submit_is_asked_again_and_after_the_grace_is_expiry(watched):
    w = watched(shapes=["status-404-grace"], shape_grace_answers=1000)
    live = await w.submitted("a")
    grace = defaults.STATUS_NOT_FOUND_GRACE
    for at in (1000.0, 1001.0, 1000 + grace / 2, 1000 + grace - 0.1):
        assert await w.poll_at(live, at), "a 404 within the grace is not expiry"
        assert w.status("a")[0] == JobState.QUEUED
    assert not await w.poll_at(live, 1000 + grace + 0.1)
    state, error = w.status("a")
    assert state == JobState.EXPIRED and error is not None and error["type"] == "RequestNotFound"
    assert [kind for kind, _ in w.events].count(EventKind.POLL_ERROR) == 4


async def test_a_reattached_request_that_answers_404_is_expired_at_once(watched):
    """It was submitted by an earlier run, some time ago: no grace."""
    w = watched(shapes=["status-404-grace"], shape_grace_answers=1000)
    live = await w.submitted("a", reattached=True)
    assert not await w.poll_at(live, 1000.0)
    assert w.status("a")[0] == JobState.EXPIRED


async def test_completed_without_outputs_is_polled_again_a_few_times_then_fails(watched):
    w = watched(shapes=["output-late"], shape_grace_answers=1000)
    live = await w.submitted("a")
    w.sim_clock.advance(5.0)  # it finished at RunComfy
    now = 1000.0
    for n in range(defaults.EMPTY_RESULT_POLLS):
        assert await w.poll_at(live, now), f"given up after {n} answers without outputs"
        now = live.due
    assert not await w.poll_at(live, now)
    state, error = w.status("a")
    assert state == JobState.FAILED and error is not None and error["type"] == "NoOutput"
    assert "completed" in error["message"]


async def test_outputs_filled_in_late_are_collected(watched):
    w = watched(shapes=["output-late"], shape_grace_answers=2)
    live = await w.submitted("a")
    w.sim_clock.advance(5.0)
    assert await w.poll_at(live, 1000.0) and await w.poll_at(live, live.due)
    assert not await w.poll_at(live, live.due)  # the third answer has the outputs
    assert w.status("a")[0] == JobState.COLLECTING and "a" in w.flight.collecting


async def test_a_job_answering_only_unknown_words_is_polled_on_then_given_up(watched):
    """ "preparing" forever (the simulator's clock stands still): polled as running, logged once, and
    given up once both bounds are past (time and polls), its cancel asked (a running job refuses)."""
    w = watched(rate_unknown_status=1.0)
    live = await w.submitted("a")
    patience, polls = defaults.UNKNOWN_STATUS_PATIENCE, defaults.UNKNOWN_STATUS_MIN_POLLS
    step = patience / (polls - 1)
    for n in range(polls - 1):
        assert await w.poll_at(live, 1000.0 + n * step)
        assert w.status("a")[0] == JobState.RUNNING
    assert await w.poll_at(live, 1000.0 + patience - 1), "not yet past the time bound"
    assert not await w.poll_at(live, 1000.0 + patience + 1)
    state, error = w.status("a")
    assert state == JobState.FAILED and error is not None and error["type"] == "UnknownStatus"
    assert "'preparing'" in error["message"] and "not_cancellable" in error["message"]
    assert [data["status"] for kind, data in w.events if kind == EventKind.UNKNOWN_STATUS] == ["preparing"]


async def test_a_known_word_between_unknown_ones_starts_the_patience_again(watched):
    w = watched(rate_unknown_status=1.0)
    live = await w.submitted("a")
    patience = defaults.UNKNOWN_STATUS_PATIENCE
    for n in range(defaults.UNKNOWN_STATUS_MIN_POLLS):
        assert await w.poll_at(live, 1000.0 + n)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=w.app), base_url="http://sim.local") as c:
        await c.post("/_sim/config", json={"rate_unknown_status": 0.0})
        assert await w.poll_at(live, 1000.0 + patience / 2)  # in_progress: known
        await c.post("/_sim/config", json={"rate_unknown_status": 1.0})
    for n in range(defaults.UNKNOWN_STATUS_MIN_POLLS):
        assert await w.poll_at(live, 1000.0 + patience + n), "the earlier unknown answers still counted"


async def test_a_file_404_is_retried_within_its_grace_and_is_expiry_without_one(tmp_path):
    clock = ManualClock()
    config = SimulatorConfig(
        shapes=("file-404-grace",), shape_grace_answers=3, job_seconds=1.0, output_bytes=BYTES
    )
    app = create_app(config, clock=clock)
    http = HttpxSession(httpx.AsyncClient(transport=httpx.ASGITransport(app=app)))
    client = RunComfyClient(
        http, ApiConfig(token="sim-token", base_url="http://sim.local", retry=FAST_POLICY)
    )
    settings_ = DownloadConfig(allowed_hosts=("sim.local",), retry=FAST_POLICY)
    try:
        urls = []
        for prompt in ("one", "two"):
            request_id = await client.submit(R2V, {"prompt": prompt, "duration": 5})
            clock.advance(5.0)
            urls.append((request_id, (await client.result(request_id)).outputs[0]))
        with pytest.raises(RequestNotFound):  # no grace: the first 404 is expiry
            await download(http, urls[0][1], tmp_path / "one.mp4", settings_)
        got = await download(http, urls[1][1], tmp_path / "two.mp4", settings_, not_found_grace=60.0)
        assert got.path.read_bytes() == expected_output_bytes(urls[1][0], 0, BYTES)
        stats = (
            await httpx.AsyncClient(transport=httpx.ASGITransport(app=app)).get("http://s/_sim/stats")
        ).json()
        assert stats["requests"]["download"] == 1 + 4  # one refused at once; three 404s, then the file
    finally:
        await http.aclose()
