"""The main job end to end against every answer shape the simulator can write (SHAPES), in-process
over HTTP: no crash, every output collected byte for byte, the right cost, a report, no duplicate
submission (the simulator's books judge), and the right final states; then a hypothesis sample of whole
runs over shapes drawn together. The grace rules' bounds, one by one: ``test_answer_graces.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema
import pytest
from conftest import InProcess, simple_manifest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.batch import cancel_batch
from runner.catalog.models import schema_dir
from runner.simulator import (
    GRACE_SHAPES,
    SHAPES,
    SimulatorConfig,
    expected_output_bytes,
)

pytestmark = pytest.mark.anyio

BYTES = 4096
COST = 5 * 0.084  # one job of simple_manifest: 5 s of reference-to-video at its published price
JOB_TIMEOUT = 20.0  # a run that would hang on a shape ends (and its test fails) within this
AUTH = {"Authorization": "Bearer sim-token"}

# The shapes about a failed job's error: every job fails, and the report must carry the message.
FAILING = {
    "error-string": "the generation failed (simulated)",
    "error-null": "RunComfy reported the job failed",
    "error-other-object": "the generation failed (simulated)",
}
# The shapes about error bodies: 5xx and 429 strike the reads, which must be retried through them.
FAULTS: dict[str, Any] = {
    "rate_5xx": 0.3,
    "rate_429": 0.3,
    "fault_endpoints": {"5xx": ["status", "result", "download"], "429": ["status", "result"]},
    "retry_after_seconds": 0,
}
BODY_WORDS = {"html-errors": "(text/html body)", "empty-errors": "(empty body)"}
OUTPUT_SHAPES = [name for name, shape in SHAPES.items() if shape.facet == "output"]


def knobs_for(*names: str, **more: Any) -> dict[str, Any]:
    knobs: dict[str, Any] = {"shapes": list(names), "concurrency": 2, "output_bytes": BYTES, "seed": 3}
    if any(name in FAILING for name in names):
        knobs["fail_rate"] = 1.0
    if any(name in BODY_WORDS for name in names):
        knobs.update(FAULTS)
    if "unknown-live-status" in names:  # a poll must find a job live: the first comes half a second in
        knobs["job_seconds"] = 1.0
    return {**knobs, **more}


def output_index(url: str) -> int:
    """Which of its request's outputs a URL is: ``output.mp4`` the first, ``output-2.mp4`` the third."""
    name = url.rsplit("/", 1)[-1].removesuffix(".mp4")
    return 0 if name == "output" else int(name.removeprefix("output-"))


def report_of(tmp_path: Path) -> dict[str, Any]:
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    jsonschema.validate(report, json.loads((schema_dir() / "report.schema.json").read_text()))
    return report  # type: ignore[no-any-return]


def check_succeeded(report: dict[str, Any], tmp_path: Path, outputs: int, *, cost: float | None) -> None:
    """Every job succeeded with every output on disk, the simulator's bytes, and its charge reported."""
    for job in report["jobs"]:
        assert job["status"] == "succeeded", job
        assert len(job["outputs"]) == outputs, job["outputs"]
        assert len({o["url"] for o in job["outputs"]}) == outputs
        for output in job["outputs"]:
            data = (tmp_path / "out" / output["path"]).read_bytes()
            assert data == expected_output_bytes(job["request_id"], output_index(output["url"]), BYTES)
        assert job["cost_usd"] == (None if cost is None else pytest.approx(cost)), job
        assert job["estimate_usd"] == pytest.approx(COST)
    assert not list((tmp_path / "out").rglob("*.part"))


async def run_shapes(
    sim: Any, write_manifest: Any, tmp_path: Path, names: tuple[str, ...], *, jobs: int = 3, **knobs: Any
) -> tuple[Any, dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    account: InProcess = sim(**knobs_for(*names, **knobs))
    events: list[dict[str, Any]] = []
    result = await account.run(write_manifest(simple_manifest(jobs)), events, job_timeout=JOB_TIMEOUT)
    stats = await account.stats()
    assert stats["submits_accepted"] == jobs and stats["duplicate_submissions"] == 0, stats
    return result, stats, report_of(tmp_path), events


@pytest.mark.parametrize("name", list(SHAPES))
async def test_the_main_job_ends_right_in_every_answer_shape(name, sim, write_manifest, tmp_path):
    """Three jobs, each answer in the shape: each job ends as the account says (succeeded, with its
    files and its charge; or failed with RunComfy's message), once paid, with a report."""
    started = time.monotonic()
    result, stats, report, events = await run_shapes(sim, write_manifest, tmp_path, (name,))
    assert time.monotonic() - started < JOB_TIMEOUT / 2  # no shape leaves a job to its deadline
    if name in FAILING:
        assert result.counts == {"failed": 3} and result.exit_code == 1
        assert [job["error"]["message"] for job in report["jobs"]] == [FAILING[name]] * 3
        assert not list((tmp_path / "out").rglob("*.mp4"))
        return
    assert result.counts == {"succeeded": 3} and result.exit_code == 0, (result.message, result.counts)
    charged = None if name == "null-numbers" else COST
    check_succeeded(report, tmp_path, 1, cost=charged)
    assert report["summary"]["cost_usd"] == pytest.approx(0.0 if charged is None else 3 * COST)
    assert stats["cost_charged_usd"] == pytest.approx(3 * COST)
    if name in GRACE_SHAPES:
        assert stats["shaped"], "the grace shape never lagged: the test proves nothing"
    if name == "unknown-live-status":
        assert [e["status"] for e in events if e["event"] == "unknown_status"] == ["preparing"]
    if name in BODY_WORDS:
        assert sum(stats["faults"].values()) > 0
        retried = [e["error"] for e in events if e["event"] == "retry" and "error" in e]
        assert any(BODY_WORDS[name] in error for error in retried), retried


@pytest.mark.parametrize("name", [*OUTPUT_SHAPES, "extra-fields", "output-late", "file-404-grace"])
async def test_several_outputs_are_all_collected_in_every_output_shape(name, sim, write_manifest, tmp_path):
    result, _, report, _ = await run_shapes(sim, write_manifest, tmp_path, (name,), outputs_per_job=3)
    assert result.counts == {"succeeded": 3}, result.message
    check_succeeded(report, tmp_path, 3, cost=COST)


async def cancel_from_outside(account: InProcess, events: list[dict[str, Any]], jobs: int) -> list[str]:
    """What a user does in RunComfy's web page: cancel every request of the run once all are submitted
    (only the queued ones can be); the outcomes, as the API spelled them."""
    while len([e for e in events if e["event"] == "submitted"]) < jobs:
        await anyio.sleep(0.01)
    ids = [e["request_id"] for e in events if e["event"] == "submitted"]
    async with httpx.AsyncClient(transport=account.transport(), base_url="http://sim.local") as client:
        return [(await client.post(f"/v1/requests/{i}/cancel", headers=AUTH)).json()["outcome"] for i in ids]


@pytest.mark.parametrize("shapes", [("canceled-status",), ("canceled-status", "upper-case-status")])
async def test_jobs_cancelled_at_runcomfy_end_cancelled_whatever_the_spelling(
    sim, write_manifest, tmp_path, shapes
):
    """One slot, three jobs: the two queued ones are cancelled from outside while the run watches.
    They end ``cancelled`` at once (costing nothing), not at the job deadline."""
    account = sim(**knobs_for(*shapes, concurrency=1, job_seconds=0.6, job_spread=0.0))
    events: list[dict[str, Any]] = []
    outcomes: list[str] = []
    started = time.monotonic()

    async def watch_and_cancel() -> None:
        outcomes.extend(await cancel_from_outside(account, events, 3))

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_and_cancel)
        result = await account.run(write_manifest(simple_manifest(3)), events, job_timeout=JOB_TIMEOUT)
    assert time.monotonic() - started < JOB_TIMEOUT / 2
    cancelled = sum(outcome.lower() == "canceled" for outcome in outcomes)
    assert cancelled == 2, outcomes
    assert result.counts == {"succeeded": 1, "cancelled": 2}, result.counts
    report = report_of(tmp_path)
    assert sorted(job["cost_usd"] for job in report["jobs"]) == [0.0, 0.0, pytest.approx(COST)]
    assert (await account.stats())["duplicate_submissions"] == 0


async def test_the_cancel_command_understands_canceled_with_one_l(sim, write_manifest, tmp_path):
    """``runcomfy-batch cancel`` after a stopped run: RunComfy answers ``canceled``; the jobs are
    recorded cancelled (a later run leaves them alone), and the outcome reads ``cancelled``."""
    account = sim(**knobs_for("canceled-status", concurrency=1, job_seconds=30.0))
    manifest = write_manifest(simple_manifest(3))
    events: list[dict[str, Any]] = []
    with anyio.move_on_after(1.0):  # stopped (as by a crash) with one job running, two queued
        await account.run(manifest, events)
    outcomes = await cancel_batch(manifest, account.options())
    assert sorted(outcome for _, _, outcome in outcomes) == ["cancelled", "cancelled", "not_cancellable"]
    again = await account.run(manifest, job_timeout=0.5)
    assert again.counts.get("cancelled") == 2, again.counts


# -- whole runs over shapes drawn together --------------------------------------------------------
FACETS: dict[str, list[str]] = {}
for _name, _shape in SHAPES.items():
    FACETS.setdefault(_shape.facet, []).append(_name)


@st.composite
def shape_sets(draw: st.DrawFn) -> tuple[str, ...]:
    """Shapes of different facets, at most one each (as they combine on the wire)."""
    chosen = [draw(st.sampled_from([None, *names])) for names in FACETS.values()]
    return tuple(name for name in chosen if name is not None)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(shape_sets(), st.integers(1, 3), st.sampled_from([0.0, 0.5]))
async def test_whole_runs_over_any_set_of_shapes_pay_once_and_collect_everything(
    tmp_path_factory, shapes, outputs, fail_rate
):
    """Whatever shapes answer together: the run ends without an exception, no request is paid twice,
    every job ends as the account says (its every output on disk, or failed), and a report is written."""
    folder = tmp_path_factory.mktemp("shapes")
    manifest = folder / "m.yaml"
    manifest.write_text(simple_manifest(4))
    knobs = knobs_for(*shapes, outputs_per_job=outputs, fail_rate=fail_rate, job_seconds=0.05)
    account = InProcess(SimulatorConfig(**{"job_spread": 0.2, **knobs}), folder)
    result = await account.run(manifest, job_timeout=JOB_TIMEOUT)
    stats = await account.stats()
    assert stats["duplicate_submissions"] == 0 and stats["submits_accepted"] == 4
    report = report_of(folder)
    assert set(result.counts) <= {"succeeded", "failed"}, (shapes, result.counts)
    assert result.counts.get("failed", 0) == stats["jobs"].get("failed", 0), (shapes, result.counts)
    for job in report["jobs"]:
        if job["status"] == "succeeded":
            assert len(job["outputs"]) == outputs
            for output in job["outputs"]:
                assert (folder / "out" / output["path"]).stat().st_size == BYTES
