"""The run loop's parts, each driven directly (no running loop): the budget, the 429 throttle, the work
plan against a real state file, the poll queue with a fake clock, and the collector downloading from
the simulator in-process into real files."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import FAST_POLICY, R2V

from runner.api.client import ApiConfig, RunComfyClient
from runner.api.download import DownloadConfig
from runner.api.http import HttpxSession
from runner.catalog.pricing import PriceTable
from runner.engine.budget import Budget
from runner.engine.collect import Collector
from runner.engine.events import EventKind
from runner.engine.flight import Live
from runner.engine.pacing import Track
from runner.engine.polls import PollQueue
from runner.engine.settings import RunSettings
from runner.engine.states import JobState
from runner.engine.store import Store
from runner.engine.throttle import Throttle
from runner.engine.workplan import Reattach, plan_work, twin_map
from runner.errors import BudgetExceeded, ErrorRecord, RequestNotFound
from runner.manifest.loader import Job
from runner.simulator import ManualClock, SimulatorConfig, create_app, expected_output_bytes

PRICES = PriceTable({R2V: {"unit": "second", "usd": 0.1}}, "2026-01-01")
UNPRICED = "kling/kling-video-o3/4K/text-to-video"


def job(job_id: str, *, model: str = R2V, duration: int = 5, same_as: str | None = None) -> Job:
    """A job; ``same_as`` gives it the fingerprint of another (a twin: one paid request)."""
    return Job(job_id, model, {"prompt": job_id, "duration": duration}, 1, f"fp-{same_as or job_id}")


class Events:
    """An Emit that keeps what it is sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[EventKind, dict[str, Any]]] = []

    def __call__(self, kind: EventKind, /, **data: Any) -> None:
        self.seen.append((kind, data))

    def kinds(self) -> list[EventKind]:
        return [kind for kind, _ in self.seen]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the budget ---------------------------------------------------------------------------------
def test_an_estimate_is_the_price_times_the_seconds_and_unknown_without_a_price():
    budget = Budget(PRICES, None)
    assert budget.estimate(job("a", duration=10)) == pytest.approx(1.0)
    assert budget.estimate(job("b", model=UNPRICED)) is None


def test_an_estimate_is_kept_until_the_api_answers_a_fresher_price():
    budget = Budget(PRICES, None)
    a = job("a")
    assert budget.estimate(a) == pytest.approx(0.5)
    budget.prices = PriceTable({R2V: {"unit": "second", "usd": 9.0}}, "later")
    assert budget.estimate(a) == pytest.approx(0.5)  # the table changed behind its back: kept
    budget.reprice(R2V, {"base_price_usd": 0.2, "price_unit": "second"})
    assert budget.estimate(a) == pytest.approx(1.0)


def test_holds_commit_estimates_until_the_cap_and_the_job_past_it_is_held():
    budget = Budget(PRICES, 1.0)
    assert budget.hold(job("a")) and budget.hold(job("b"))  # 0.5 + 0.5: exactly at the cap fits
    assert budget.committed_usd == pytest.approx(1.0)
    assert not budget.hold(job("c"))
    assert budget.committed_usd == pytest.approx(1.0)  # a held job commits nothing


def test_under_a_cap_a_job_without_a_price_is_held_and_without_one_it_goes():
    assert not Budget(PRICES, 100.0).hold(job("a", model=UNPRICED))
    free = Budget(PRICES, None)
    assert free.hold(job("a", model=UNPRICED)) and free.committed_usd == 0.0


def test_a_refund_lifts_a_hold_and_a_settlement_replaces_the_estimate_with_the_charge():
    budget = Budget(PRICES, 1.0)
    a, b = job("a"), job("b")
    budget.hold(a)
    budget.hold(b)
    budget.refund(a)  # its submit created no request
    assert budget.committed_usd == pytest.approx(0.5)
    budget.settle(b, 0.2)  # RunComfy charged less than estimated
    assert budget.committed_usd == pytest.approx(0.2)
    budget.settle(b, None)  # no cost answered: nothing changes
    assert budget.committed_usd == pytest.approx(0.2)
    assert budget.hold(job("c")) and budget.committed_usd == pytest.approx(0.7)


def test_the_start_check_counts_what_is_committed_and_what_is_left():
    budget = Budget(PRICES, 1.0)
    budget.committed_usd = 0.6  # an earlier run's spend
    budget.check_start([job("a", duration=4)])  # 0.6 + 0.4
    with pytest.raises(
        BudgetExceeded, match=r"\$1\.10 \(\$0\.60 already committed\), over the budget of \$1\.00"
    ):
        budget.check_start([job("b", duration=5)])


def test_the_start_check_refuses_an_unknown_price_unless_partial():
    with pytest.raises(BudgetExceeded, match="no known price"):
        Budget(PRICES, 10.0).check_start([job("a", model=UNPRICED)])
    Budget(PRICES, 0.1, partial=True).check_start([job("a", model=UNPRICED), job("b")])
    Budget(PRICES, None).check_start([job("a", model=UNPRICED)])


# -- the throttle -------------------------------------------------------------------------------
def test_a_429_halves_the_limit_once_per_burst_and_never_below_one():
    clock, events = FakeClock(), Events()
    throttle = Throttle(8, clock=clock, emit=events)
    throttle.rate_limited()
    throttle.rate_limited()  # the same burst
    assert throttle.limit == 4 and throttle.limiter.total_tokens == 4
    for _ in range(4):
        clock.now += 1.0
        throttle.rate_limited()
    assert throttle.limit == 1
    assert events.seen[0] == (EventKind.CONCURRENCY, {"http": 4, "reason": "rate limited (429)"})
    assert [data["http"] for _, data in events.seen] == [4, 2, 1, 1, 1]


def test_after_as_many_successes_as_the_limit_one_more_call_is_allowed_up_to_the_ceiling():
    clock, events = FakeClock(), Events()
    throttle = Throttle(4, clock=clock, emit=events)
    throttle.rate_limited()
    assert throttle.limit == 2
    throttle.succeeded()
    assert throttle.limit == 2
    throttle.succeeded()
    assert throttle.limit == 3
    for _ in range(3):
        throttle.succeeded()
    assert throttle.limit == 4
    for _ in range(20):
        throttle.succeeded()
    assert throttle.limit == 4  # the ceiling
    assert events.seen[-1] == (EventKind.CONCURRENCY, {"http": 4, "reason": "recovering"})


def test_a_429_starts_the_count_of_successes_again():
    clock = FakeClock()
    throttle = Throttle(8, clock=clock, emit=Events())
    throttle.rate_limited()  # 4
    for _ in range(3):
        throttle.succeeded()
    clock.now += 2
    throttle.rate_limited()  # 2; the three successes no longer count
    throttle.succeeded()
    assert throttle.limit == 2
    throttle.succeeded()
    assert throttle.limit == 3


# -- the work plan ------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path):
    with_store = Store.open(tmp_path / "state.sqlite")
    yield with_store
    with_store.close()


def synced(store: Store, jobs: list[Job]) -> dict[str, str]:
    twins = twin_map(jobs)
    store.sync_manifest(jobs, {j.id: 0.5 for j in jobs}, twins)
    return twins


def submitted(store: Store, j: Job, request_id: str) -> int:
    attempt_id = store.record_intent(j.id, j.fingerprint, j.model, "{}", 0.5)
    store.record_submitted(j.id, attempt_id, request_id)
    return attempt_id


def test_a_fresh_manifest_is_all_submitted_in_order_and_twins_follow_their_leader(store):
    jobs = [job("a"), job("b"), job("a2", same_as="a"), job("c")]
    twins = synced(store, jobs)
    plan = plan_work(jobs, store.states(), twins, RunSettings())
    assert plan.submit == ["a", "b", "c"]
    assert plan.follow == {"a": ["a2"]}
    assert plan.waiting == 4
    assert not (plan.reattach or plan.collect or plan.copy or plan.rest or plan.unknown)


def test_a_request_with_an_id_is_reattached_and_never_submitted_again(store):
    jobs = [job("queued"), job("running"), job("done"), job("collect"), job("new")]
    twins = synced(store, jobs)
    queued = submitted(store, jobs[0], "r-q")
    running = submitted(store, jobs[1], "r-r")
    store.record_remote("running", running, JobState.RUNNING, "in_progress", started=True)
    done = submitted(store, jobs[2], "r-d")
    store.record_remote("done", done, JobState.COLLECTING, "completed", finished=True, outputs=["u"])
    store.record_collected("done", done)
    collect = submitted(store, jobs[3], "r-c")
    store.record_remote("collect", collect, JobState.COLLECTING, "completed", finished=True, outputs=["u"])
    store.flush()
    plan = plan_work(jobs, store.states(), twins, RunSettings())
    assert plan.reattach == [
        Reattach("queued", queued, "r-q", JobState.QUEUED),
        Reattach("running", running, "r-r", JobState.RUNNING),
    ]
    assert plan.collect == ["collect"]
    assert plan.submit == ["new"]


def test_a_submit_cut_short_by_a_crash_is_unknown_and_sent_again_only_when_asked(store):
    jobs = [job("a"), job("b")]
    twins = synced(store, jobs)
    store.record_intent("a", "fp-a", R2V, "{}", 0.5)  # the intent was committed; the answer never came
    store.flush()
    store.recover_interrupted()
    plan = plan_work(jobs, store.states(), twins, RunSettings())
    assert plan.submit == ["b"] and plan.unknown == {"a"}
    again = plan_work(jobs, store.states(), twins, RunSettings(resubmit_unknown=True))
    assert again.submit == ["a", "b"] and again.unknown == {"a"}


def test_failed_jobs_rest_unless_the_run_retries_them(store):
    jobs = [job("a"), job("b")]
    twins = synced(store, jobs)
    store.set_status("a", JobState.FAILED, ErrorRecord("RemoteFailure", "boom"))
    store.flush()
    assert plan_work(jobs, store.states(), twins, RunSettings()).submit == ["b"]
    assert plan_work(jobs, store.states(), twins, RunSettings(retry_failed=True)).submit == ["a", "b"]


def test_a_twin_copies_a_succeeded_leader_waits_for_a_live_one_and_rests_with_a_resting_one(store):
    jobs = [job(name) for name in ("ok", "live", "bad")] + [
        job(f"{name}2", same_as=name) for name in ("ok", "live", "bad")
    ]
    twins = synced(store, jobs)
    done = submitted(store, jobs[0], "r-ok")
    store.record_remote("ok", done, JobState.COLLECTING, "completed", finished=True, outputs=["u"])
    store.record_collected("ok", done)
    submitted(store, jobs[1], "r-live")
    store.set_status("bad", JobState.FAILED, ErrorRecord("RemoteFailure", "boom"))
    store.flush()
    plan = plan_work(jobs, store.states(), twins, RunSettings())
    assert plan.copy == {"ok": ["ok2"]}
    assert plan.follow == {"live": ["live2"]}
    assert plan.rest == {
        "bad2": (JobState.FAILED, ErrorRecord("Twin", "same request as bad, which is failed"))
    }
    assert plan.submit == []
    # Retried, the resting leader is sent again and its twin waits for it.
    retried = plan_work(jobs, store.states(), twins, RunSettings(retry_failed=True))
    assert retried.submit == ["bad"] and retried.follow == {"live": ["live2"], "bad": ["bad2"]}


# -- the poll queue -----------------------------------------------------------------------------
def live(job_id: str) -> Live:
    return Live(job(job_id), 1, f"r-{job_id}", Track(job_id, 0.0))


def test_polls_come_due_in_time_order_and_a_later_one_waits():
    clock = FakeClock(100.0)
    queue = PollQueue(clock, random.Random(1))
    a, b, c = live("a"), live("b"), live("c")
    assert queue.schedule(b, 100.0)  # the first entry: a sleeping poller should wake
    assert queue.schedule(a, 99.0)  # earlier still
    assert not queue.schedule(c, 150.0)
    assert queue.take_due(100.0, lambda _: True) == [a, b]
    assert a.polling and b.polling and not c.polling
    assert queue.take_due(100.0, lambda _: True) == []
    assert queue.next_due() == c.due


def test_a_later_poll_is_spread_by_at_most_five_percent_of_its_wait():
    clock = FakeClock(100.0)
    queue = PollQueue(clock, random.Random(7))
    dues = []
    for i in range(200):
        one = live(f"j{i}")
        queue.schedule(one, 110.0)
        dues.append(one.due)
    assert all(110.0 <= due <= 110.5 for due in dues)
    assert len({round(due, 6) for due in dues}) > 100  # spread, not bunched
    now_due = live("now")
    queue.schedule(now_due, 90.0)  # already due: no jitter
    assert now_due.due == 90.0


def test_polls_due_within_a_few_milliseconds_go_out_together():
    queue = PollQueue(FakeClock(1.0), random.Random(1))
    a, b, c = live("a"), live("b"), live("c")
    queue.schedule(a, 1.0)
    queue.schedule(b, 1.004)  # a few milliseconds later (4.2 at most, with its jitter)
    queue.schedule(c, 1.01)
    assert queue.take_due(1.0, lambda _: True) == [a, b]
    assert queue.next_due() == c.due


def test_stale_entries_are_skipped_rescheduled_polling_or_no_longer_current():
    clock = FakeClock(10.0)
    queue = PollQueue(clock, random.Random(1))
    moved, busy, gone, ok = live("moved"), live("busy"), live("gone"), live("ok")
    for one in (moved, busy, gone, ok):
        queue.schedule(one, 5.0)
    queue.schedule(moved, 8.0)  # rescheduled: its entry at 5.0 is stale
    busy.polling = True
    assert len(queue) == 5
    assert queue.take_due(10.0, lambda one: one is not gone) == [ok, moved]  # moved: at 8.0, once
    assert len(queue) == 0


# -- the collector ------------------------------------------------------------------------------
class Sim:
    """The simulator in-process on a manual clock, with a store and a collector beside it."""

    def __init__(self, tmp_path: Path, store: Store, **config: Any) -> None:
        self.clock = ManualClock()
        knobs = {"job_seconds": 1.0, "job_spread": 0.0, "output_bytes": 4096, **config}
        self.app = create_app(SimulatorConfig(**knobs), clock=self.clock)
        self.http = HttpxSession(httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app)))
        self.client = RunComfyClient(
            self.http, ApiConfig(token="sim-token", base_url="http://sim.local", retry=FAST_POLICY)
        )
        self.store = store
        self.out = tmp_path / "out"
        self.events = Events()

    def collector(self, **config: Any) -> Collector:
        download = DownloadConfig(**{"allowed_hosts": ("sim.local",), "retry": FAST_POLICY, **config})
        return Collector(self.store, self.http, self.out, download, emit=self.events)

    async def finished(self, j: Job) -> tuple[int, str, list[str]]:
        """Submit ``j`` to the simulator, let it finish, and journal it as ready to collect."""
        request_id = await self.client.submit(j.model, j.input)
        attempt_id = self.store.record_intent(j.id, j.fingerprint, j.model, "{}", 0.5)
        self.store.record_submitted(j.id, attempt_id, request_id)
        self.clock.advance(5.0)
        remote = await self.client.result(request_id)
        assert remote.succeeded, remote
        urls = list(remote.outputs)
        self.store.record_remote(
            j.id, attempt_id, JobState.COLLECTING, remote.status, finished=True, outputs=urls
        )
        self.store.flush()
        return attempt_id, request_id, urls


def row(store: Store, job_id: str) -> tuple[str, dict[str, Any] | None]:
    found = next(r for r in store.jobs() if r.job_id == job_id)
    return found.status, found.error


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.anyio
async def test_collecting_downloads_every_output_whole_journals_it_and_copies_it_to_twins(tmp_path, store):
    sim = Sim(tmp_path, store, outputs_per_job=2)
    leader, twin = job("lead"), job("twin", same_as="lead")
    synced(store, [leader, twin])
    attempt_id, request_id, urls = await sim.finished(leader)
    collector = sim.collector()
    collector.followers = {"lead": ["twin"]}
    assert await collector.collect("lead") == JobState.SUCCEEDED
    store.flush()
    names = ["output-1.mp4", "output.mp4"]
    assert files_in(sim.out) == [f"{owner}/{name}" for owner in ("lead", "twin") for name in names]
    for index, name in enumerate(["output.mp4", "output-1.mp4"]):
        expected = expected_output_bytes(request_id, index, 4096)
        assert (sim.out / "lead" / name).read_bytes() == expected == (sim.out / "twin" / name).read_bytes()
    for owner in ("lead", "twin"):
        outputs = store.outputs_of(owner, attempt_id)
        assert [o.url for o in outputs] == urls
        assert all(o.sha256 == hashlib.sha256((sim.out / o.path).read_bytes()).hexdigest() for o in outputs)
        assert row(store, owner) == (JobState.SUCCEEDED, None)
    assert sim.events.seen == [
        (EventKind.SUCCEEDED, {"job_id": "lead"}),
        (EventKind.SUCCEEDED, {"job_id": "twin", "twin_of": "lead"}),
    ]
    assert collector.followers == {}
    await sim.http.aclose()


@pytest.mark.anyio
async def test_outputs_gone_before_they_were_downloaded_expire_the_job_and_its_twins(tmp_path, store):
    sim = Sim(tmp_path, store, expire_seconds=60)
    leader, twin = job("lead"), job("twin", same_as="lead")
    synced(store, [leader, twin])
    await sim.finished(leader)
    sim.clock.advance(120)  # RunComfy forgets the request and its files
    collector = sim.collector()
    collector.followers = {"lead": ["twin"]}
    assert await collector.collect("lead") == JobState.EXPIRED
    store.flush()
    assert files_in(sim.out) == []  # no partial file anywhere
    status, error = row(store, "lead")
    assert status == JobState.EXPIRED and error is not None
    assert error["type"] == "RequestNotFound" and error["http_status"] == 404
    assert (
        error["message"] == "the outputs expired at RunComfy before they were downloaded; run the job again"
    )
    status, error = row(store, "twin")
    assert status == JobState.EXPIRED and error is not None
    assert error["message"].startswith("same request as lead: the outputs expired")
    assert sim.events.kinds() == [EventKind.EXPIRED, EventKind.EXPIRED]
    await sim.http.aclose()


@pytest.mark.anyio
async def test_an_output_on_a_host_not_allowed_fails_the_job_and_fetches_nothing(tmp_path, store):
    sim = Sim(tmp_path, store)
    synced(store, [job("a")])
    await sim.finished(job("a"))
    assert await sim.collector(allowed_hosts=()).collect("a") == JobState.FAILED
    store.flush()
    status, error = row(store, "a")
    assert status == JobState.FAILED and error is not None and error["type"] == "OutputHostRefused"
    assert "--allow-output-host sim.local" in error["message"]
    assert files_in(sim.out) == []
    stats = (await sim.http.client.get("http://sim.local/_sim/stats")).json()
    assert stats["requests"]["download"] == 0
    await sim.http.aclose()


@pytest.mark.anyio
async def test_downloads_failing_past_their_retries_leave_the_job_for_the_next_run(tmp_path, store):
    sim = Sim(tmp_path, store, rate_5xx=1.0, fault_endpoints={"5xx": ("download",)})
    synced(store, [job("a")])
    await sim.finished(job("a"))
    assert await sim.collector().collect("a") == JobState.COLLECTING
    store.flush()
    assert row(store, "a") == (JobState.COLLECTING, None)
    assert sim.events.kinds() == [EventKind.DOWNLOAD_ERROR]
    assert files_in(sim.out) == []
    await sim.http.aclose()


@pytest.mark.anyio
async def test_a_job_with_no_outputs_recorded_fails(tmp_path, store):
    sim = Sim(tmp_path, store)
    synced(store, [job("a")])
    assert await sim.collector().collect("a") == JobState.FAILED
    store.flush()
    assert row(store, "a") == (JobState.FAILED, {"type": "NoOutput", "message": "no outputs recorded"})
    await sim.http.aclose()


# -- what the journal keeps about a failure ------------------------------------------------------
def test_an_error_record_is_stored_with_the_keys_state_files_always_had(store):
    synced(store, [job("a"), job("b"), job("c")])
    api = RequestNotFound("RunComfy answered 404/404001: gone", http_status=404, error_code=404001)
    store.set_status("a", JobState.EXPIRED, api.as_record())
    store.set_status(
        "b", JobState.FAILED, ErrorRecord.remote({"error_code": 500001, "error_message": "boom"})
    )
    store.set_status("c", JobState.FAILED, ErrorRecord("Timeout", "deadline passed"))
    store.flush()
    with sqlite3.connect(store.path) as db:
        stored = {k: json.loads(v) for k, v in db.execute("SELECT job_id, error FROM jobs ORDER BY job_id")}
    assert stored["a"] == {
        "type": "RequestNotFound",
        "http_status": 404,
        "error_code": 404001,
        "message": "RunComfy answered 404/404001: gone",
        "detail": None,
    }
    assert stored["b"] == {
        "error_code": 500001,
        "error_message": "boom",
        "type": "RemoteFailure",
        "message": "boom",
    }
    assert stored["c"] == {"type": "Timeout", "message": "deadline passed"}


def test_the_flusher_sleeps_while_nothing_is_written_and_commits_a_write_one_interval_later(tmp_path):
    """The journal's group commit, on a real file and a real event loop: no wake-ups while a run only
    waits for its jobs (minutes, on a one-slot account), and a write after the quiet is committed (seen
    from another connection) one flush interval later."""
    from runner.engine.flight import Flight
    from runner.engine.loop import flush_journal

    path = tmp_path / "state.sqlite"

    def committed() -> str | None:
        with sqlite3.connect(path) as other:
            row = other.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone()
        return row[0] if row else None

    async def scenario() -> None:
        with Store.open(path) as store:
            store.flush()
            flight = Flight(lambda *args, **kwargs: None)
            commits, woken = store.commits, []

            def kept(write: Any) -> None:
                woken.append(store.pending)
                write()

            async with anyio.create_task_group() as tg:
                tg.start_soon(flush_journal, store, 0.05, flight, kept)
                await anyio.sleep(0.3)  # nothing written: it has not woken to commit nothing
                assert woken == [] and store.commits == commits and not store.pending
                store.set_meta("probe", "written after a quiet while")
                assert store.pending and committed() is None
                with anyio.fail_after(5):
                    while store.pending:
                        await anyio.sleep(0.01)
                assert woken == [True] and store.commits == commits + 1
                assert committed() == "written after a quiet while"
                tg.cancel_scope.cancel()
            assert store.on_begin is None  # the flusher let go of the journal

    anyio.run(scenario)
