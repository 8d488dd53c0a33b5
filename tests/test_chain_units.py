"""The parts of chains and subsets on their own: the work plan of chained jobs (wait, block, run again),
``--only`` and ``--limit``, a chained job's room on the budget, twins among chained jobs, and CSV cells
converted to a schema's types."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import R2V

from runner.catalog.models import Catalog
from runner.catalog.pricing import PriceTable
from runner.engine.budget import Budget
from runner.engine.settings import RunSettings
from runner.engine.states import JobState
from runner.engine.store import Store
from runner.engine.workplan import plan_work, twin_map
from runner.errors import BudgetExceeded, ErrorRecord, ManifestInvalid
from runner.manifest.job import Job, OutputRef, fingerprint
from runner.manifest.loader import load_manifest
from runner.manifest.tables import convert

CATALOG = Catalog.load()


def job(job_id: str, *needs: str) -> Job:
    refs = tuple(OutputRef(("video",), up, 1) for up in needs[:1])
    input: dict[str, Any] = {"prompt": job_id, **({"video": f"job:{needs[0]}"} if needs else {})}
    return Job(job_id, R2V, input, 1, fingerprint(R2V, input), refs)


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "state.sqlite") as opened:
        yield opened


def synced(store: Store, jobs: list[Job]) -> dict[str, str]:
    twins = twin_map(jobs)
    store.sync_manifest(jobs, {j.id: 0.5 for j in jobs}, twins)
    store.flush()
    return twins


def succeed(store: Store, j: Job, request_id: str, url: str, input: dict[str, Any] | None = None) -> None:
    import json

    sent = json.dumps(input if input is not None else j.input)
    attempt = store.record_intent(j.id, j.fingerprint, j.model, sent, 0.5)
    store.record_submitted(j.id, attempt, request_id)
    store.record_remote(j.id, attempt, JobState.COLLECTING, "completed", finished=True, outputs=[url])
    store.record_collected(j.id, attempt)
    store.flush()


def test_chained_jobs_wait_for_the_jobs_they_need_upstream_first():
    """A chain written out of order waits link by link; the job it starts from is sent now."""
    jobs = [job("c", "b"), job("a"), job("b", "a")]
    rows = {j.id: (JobState.PENDING, None, None) for j in jobs}
    plan = plan_work(jobs, rows, twin_map(jobs), RunSettings())
    assert plan.submit == ["a"]
    assert plan.chained == {"b": ("a",), "c": ("b",)}
    assert plan.waiting == 3 and plan.sends == ["a", "b", "c"]


def test_a_chain_is_blocked_by_a_resting_upstream_and_waits_again_when_retry_sends_it(store):
    jobs = [job("a"), job("b", "a"), job("c", "b")]
    twins = synced(store, jobs)
    store.set_status("a", JobState.FAILED, ErrorRecord("RemoteFailure", "boom"))
    store.flush()
    plan = plan_work(jobs, store.states(), twins, RunSettings())
    assert plan.submit == [] and plan.chained == {}
    assert plan.blocked["b"].message.startswith("needs the output of job a, which is failed")
    store.set_status("b", JobState.BLOCKED, plan.blocked["b"])
    store.flush()
    assert "which is blocked" in plan_work(jobs, store.states(), twins, RunSettings()).blocked["c"].message
    retried = plan_work(jobs, store.states(), twins, RunSettings(retry_failed=True))
    assert retried.submit == ["a"] and retried.chained == {"b": ("a",), "c": ("b",)}


def test_a_chained_job_runs_again_when_the_job_it_needs_makes_a_new_output(store):
    """Succeeded from an output that is being made again (or was, since): sent again after it."""
    jobs = [job("a"), job("b", "a")]
    twins = synced(store, jobs)
    succeed(store, jobs[0], "r-a", "https://cdn/a1.mp4")
    succeed(store, jobs[1], "r-b", "https://cdn/b1.mp4", {**jobs[1].input, "video": "https://cdn/a1.mp4"})
    assert plan_work(jobs, store.states(), twins, RunSettings()).sends == []
    store.set_status("a", JobState.EXPIRED, ErrorRecord("RequestNotFound", "gone"))
    store.flush()
    assert plan_work(jobs, store.states(), twins, RunSettings()).sends == []  # b's output stands
    retried = plan_work(jobs, store.states(), twins, RunSettings(retry_failed=True))
    assert retried.submit == ["a"] and retried.chained == {"b": ("a",)} and retried.rerun == ["b"]
    # a made a new output in a run that stopped before b was planned again: b is out of date.
    succeed(store, jobs[0], "r-a2", "https://cdn/a2.mp4")
    later = plan_work(jobs, store.states(), twins, RunSettings(), outdated={"b"})
    assert later.chained == {"b": ()} and later.rerun == ["b"]


def test_only_brings_the_jobs_a_chosen_one_needs_and_limit_cuts_upstream_first():
    jobs = [job("d", "c"), job("x"), job("c", "b"), job("b"), job("y")]
    rows = {j.id: (JobState.PENDING, None, None) for j in jobs}
    only = plan_work(jobs, rows, twin_map(jobs), RunSettings(only=("d",)))
    assert only.submit == ["b"] and set(only.chained) == {"c", "d"} and only.left_out == 2
    assert only.scope == {"b", "c", "d"}
    first_two = plan_work(jobs, rows, twin_map(jobs), RunSettings(limit=2))
    # Manifest order with each job after those it needs: b, c, d, x, y.
    assert first_two.submit == ["b"] and set(first_two.chained) == {"c"} and first_two.left_out == 3


def test_a_chained_jobs_estimate_is_room_kept_on_the_budget_while_it_waits():
    """Waiting jobs keep their room: a job later in the manifest cannot take the money of a chain that
    has started, and the start check counts them."""
    prices = PriceTable.load(CATALOG)
    waiting = job("b", "a")
    budget = Budget(prices, cap_usd=1.0, defaults_for=lambda m: CATALOG.models[m].defaults)
    chained = budget.estimate(waiting) or 0.0
    assert chained == pytest.approx(5 * 0.126)
    budget.reserve(waiting)
    with pytest.raises(BudgetExceeded):
        budget.check_start([job("a"), waiting])  # 0.42 + 0.63 > 1.0
    assert not budget.hold(job("later"))
    budget.unreserve(waiting)
    assert budget.hold(job("later"))


def test_two_chained_jobs_with_the_same_input_are_one_paid_request(tmp_path):
    """Twins among chained jobs: the same model and the same reference (resolved alike) is one request;
    the same input naming different jobs is not."""
    path = tmp_path / "m.yaml"
    path.write_text(
        f"version: 1\ndefaults: {{model: {R2V}}}\njobs:\n"
        "  - {id: a, input: {prompt: a}}\n"
        "  - {id: a-again, input: {prompt: a}}\n"
        "  - {id: b, input: {prompt: next, video: 'job:a'}}\n"
        "  - {id: b-again, input: {prompt: next, video: 'job:a'}}\n"
        "  - {id: b-from-twin, input: {prompt: next, video: 'job:a-again'}}\n"
        "  - {id: c, input: {prompt: other, video: 'job:a'}}\n",
        encoding="utf-8",
    )
    twins = twin_map(load_manifest(path).jobs)
    assert twins == {"a-again": "a", "b-again": "b", "b-from-twin": "b"}


@pytest.mark.parametrize(
    ("cell", "schema", "value"),
    [
        ("5", {"type": "integer"}, 5),
        ("-3", {"type": "integer"}, -3),
        ("5.5", {"type": "integer"}, "5.5"),  # not a whole number: stays text, and the schema says so
        ("2.5", {"type": "number"}, 2.5),
        ("7", {"type": "number"}, 7),
        ("nan", {"type": "number"}, "nan"),
        ("yes", {"type": "boolean"}, True),
        ("FALSE", {"type": "boolean"}, False),
        ("maybe", {"type": "boolean"}, "maybe"),
        ("a.png|b.png", {"type": "array", "items": {"type": "string"}}, ["a.png", "b.png"]),
        ('["a.png", "b.png"]', {"type": "array"}, ["a.png", "b.png"]),
        ("3|4", {"type": "array", "items": {"type": "integer"}}, [3, 4]),
        ('{"prompt": "x", "duration": 3}', {"type": "object"}, {"prompt": "x", "duration": 3}),
        (" 16:9 ", {"type": "string"}, " 16:9 "),
        ("5", {"enum": [5, 10]}, 5),
        ("5", {}, "5"),
    ],
)
def test_a_csv_cell_becomes_the_type_its_field_asks_for(cell, schema, value):
    assert convert(cell, schema) == value


CHAIN = f"""
version: 1
output_dir: ./out
defaults: {{model: {R2V}, input: {{duration: 3}}}}
jobs:
  - {{id: b, input: {{prompt: second, video: "job:a"}}}}
  - {{id: a, input: {{prompt: first}}}}
  - {{id: x, input: {{prompt: alone}}}}
"""


@pytest.mark.anyio
async def test_the_displays_follow_a_chain_waiting_ready_and_blocked(sim, write_manifest, tmp_path):
    """The tally counts a chained job apart while it waits, and as blocked when its upstream fails; the
    plain log says which job is ready and which is blocked, and why."""
    from io import StringIO

    from rich.console import Console

    from runner.reports.progress import LineLog, LiveProgress, Tally

    manifest = write_manifest(CHAIN)
    events: list[dict[str, Any]] = []
    result = await sim().run(manifest, events)
    assert result.counts == {"succeeded": 3}
    start = next(e for e in events if e["event"] == "start")
    assert start["chained"] == 1 and start["to_submit"] == 2
    ready = next(e for e in events if e["event"] == "ready")
    assert ready["job_id"] == "b" and ready["after"] == ["a"]
    tally = Tally()
    tally.apply(start)
    assert tally.counts["chained"] == 1 and tally.counts["waiting"] == 2
    display = LiveProgress(Console(file=StringIO(), width=120), title="chain")
    for event in events[:-1]:
        display.tally.apply(event)
        if display.tally.started_at is not None:
            assert sum(display.tally.counts.values()) == 3, (event, display.tally.counts)
    assert display.tally.counts["done"] == 3

    failing = write_manifest(CHAIN.replace("prompt: ", "prompt: failing "), name="failing.yaml")
    events = []
    account = sim(fail_rate=1.0)
    own_journal = replace(account.options(), state_path=tmp_path / "failing.sqlite")
    failed = await account.run(failing, events, options=own_journal)
    assert failed.exit_code == 1
    assert failed.counts == {"failed": 2, "blocked": 1}
    assert [j["status"] for j in failed.needs_attention] == ["blocked", "failed", "failed"]
    log = StringIO()
    plain = LineLog(log)
    for event in events:
        plain(event)
    assert "b: blocked, not sent: needs the output of job a, which is failed" in log.getvalue()
    assert plain.tally.counts["blocked"] == 1 and plain.tally.counts["failed"] == 2
    assert (failed.report["jobs"][0]["status"], failed.report["jobs"][0]["after"]) == ("blocked", ["a"])


@pytest.mark.anyio
async def test_a_run_counts_a_chained_jobs_cost_before_its_upstream_finishes(sim, write_manifest):
    """The start check sees the chain's whole cost: a budget that covers the first step alone refuses the
    run (nothing sent); with --budget-partial the chain keeps its room and the job after it is held."""
    manifest = write_manifest(CHAIN)  # a $0.25, then b $0.38 from its clip; x $0.25
    account = sim()
    with pytest.raises(BudgetExceeded, match="the estimate for this run is \\$0.88"):
        await account.run(manifest, budget_usd=0.7)
    assert (await account.stats())["submits_accepted"] == 0
    result = await account.run(manifest, budget_usd=0.7, budget_partial=True)
    assert result.counts == {"succeeded": 2, "held": 1}
    statuses = {job["id"]: job["status"] for job in result.report["jobs"]}
    assert statuses == {"b": "succeeded", "a": "succeeded", "x": "held"}


def test_an_edited_upstream_changes_every_job_chained_to_it(tmp_path):
    """A chained job's fingerprint holds its upstream's: an edit of the first step is an edit of the whole
    chain (each runs again), and an edit of the last leaves the first alone."""
    path = tmp_path / "m.yaml"

    def fingerprints(first: str, last: str) -> dict[str, str]:
        path.write_text(
            f"version: 1\ndefaults: {{model: {R2V}}}\njobs:\n"
            f"  - {{id: a, input: {{prompt: {first}}}}}\n"
            "  - {id: b, input: {prompt: b, video: 'job:a'}}\n"
            f"  - {{id: c, input: {{prompt: {last}, video: 'job:b'}}}}\n",
            encoding="utf-8",
        )
        return {job.id: job.fingerprint for job in load_manifest(path).jobs}

    before = fingerprints("one", "three")
    first_edited = fingerprints("one again", "three")
    assert all(first_edited[j] != before[j] for j in "abc")
    last_edited = fingerprints("one", "three again")
    assert [last_edited[j] == before[j] for j in "abc"] == [True, True, False]


def test_an_edited_table_is_an_edited_manifest(tmp_path):
    """The state file's snapshot of a manifest covers its tables: a changed row is noticed."""
    from runner.manifest.snapshot import Snapshot

    (tmp_path / "rows.csv").write_text("id,prompt\nrow-1,first\n", encoding="utf-8")
    path = tmp_path / "m.yaml"
    path.write_text(f"version: 1\ndefaults: {{model: {R2V}}}\njobs_from: rows.csv\n", encoding="utf-8")
    snapshot = Snapshot.of(load_manifest(path))
    assert snapshot is not None and snapshot.matches(path)
    (tmp_path / "rows.csv").write_text("id,prompt\nrow-1,first, edited\n", encoding="utf-8")
    assert not snapshot.matches(path)


def test_takes_and_chains_combine(tmp_path):
    """Each take of a chained job is its own paid request; a job made from a take names it by its id."""
    path = tmp_path / "m.yaml"
    path.write_text(
        f"version: 1\ndefaults: {{model: {R2V}}}\njobs:\n"
        "  - {id: still, input: {prompt: a}, takes: 2}\n"
        "  - {id: clip, input: {prompt: b, video: 'job:still--take-2'}, takes: 2}\n"
        "  - {id: wrong, input: {prompt: c, video: 'job:still'}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:6 job wrong: input.video: job:still names no one job: still expands to still--take-1, "
        "still--take-2; name one of them"
    ]
    path.write_text(path.read_text().replace("  - {id: wrong, input: {prompt: c, video: 'job:still'}}\n", ""))
    jobs = {job.id: job for job in load_manifest(path).jobs}
    assert list(jobs) == ["still--take-1", "still--take-2", "clip--take-1", "clip--take-2"]
    assert jobs["clip--take-1"].needs == ("still--take-2",)
    assert jobs["clip--take-1"].fingerprint != jobs["clip--take-2"].fingerprint
    assert twin_map(jobs.values()) == {}
