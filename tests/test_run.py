"""The main job end to end, in-process over HTTP against the simulator: manifest → submit → track →
collect → report, and the resume rules that make a second run safe."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import jsonschema
import pytest
from conftest import I2V, simple_manifest

from runner.catalog.models import schema_dir
from runner.engine.states import JobState
from runner.simulator import expected_output_bytes

pytestmark = pytest.mark.anyio


def request_ids(state: Path) -> dict[str, list[str]]:
    with sqlite3.connect(state) as db:
        rows = db.execute(
            "SELECT job_id, request_id FROM attempts WHERE request_id IS NOT NULL ORDER BY attempt_id"
        )
        out: dict[str, list[str]] = {}
        for job_id, request_id in rows:
            out.setdefault(job_id, []).append(request_id)
    return out


async def test_a_batch_runs_to_files_on_disk_and_a_report(sim, write_manifest, tmp_path):
    """Every job is submitted once, polled, downloaded byte for byte, and reported with its cost."""
    account = sim(concurrency=3)
    manifest = write_manifest(simple_manifest(8))
    result = await account.run(manifest)

    assert result.exit_code == 0, result.message
    assert result.counts == {"succeeded": 8}
    stats = await account.stats()
    assert stats["submits_accepted"] == 8 and stats["duplicate_submissions"] == 0
    assert stats["max_running"] <= 3
    ids = request_ids(tmp_path / "state.sqlite")
    for i in range(8):
        [request_id] = ids[f"shot-{i}"]
        data = (tmp_path / "out" / f"shot-{i}" / "output.mp4").read_bytes()
        assert data == expected_output_bytes(request_id, 0, 4096)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    jsonschema.validate(report, json.loads((schema_dir() / "report.schema.json").read_text()))
    assert report["summary"]["succeeded"] == 8
    assert report["summary"]["cost_usd"] == pytest.approx(8 * 5 * 0.084)
    job = report["jobs"][0]
    assert (
        job["outputs"][0]["sha256"]
        == hashlib.sha256((tmp_path / "out" / job["outputs"][0]["path"]).read_bytes()).hexdigest()
    )
    assert (tmp_path / "out" / "report.html").read_text().startswith("<!doctype html>")
    assert (tmp_path / "out" / "report.csv").read_text().count("\n") == 9


async def test_a_second_run_of_a_finished_batch_sends_nothing(sim, write_manifest):
    """Finished jobs are not redone: the second run makes no request at all."""
    account = sim()
    manifest = write_manifest(simple_manifest(4))
    assert (await account.run(manifest)).exit_code == 0
    before = await account.stats()
    again = await account.run(manifest)
    after = await account.stats()
    assert again.exit_code == 0 and again.counts == {"succeeded": 4}
    assert after["requests_total"] == before["requests_total"]


async def test_recorded_requests_are_reattached_not_resubmitted(sim, write_manifest, tmp_path):
    """A job whose request id is journaled (a run stopped while it was queued) is polled on resume."""
    account = sim(concurrency=1, job_seconds=0.3)
    manifest = write_manifest(simple_manifest(3))
    events: list[dict] = []
    # A first run that is stopped as soon as every job is submitted: the job timeout is far away,
    # so we stop it by cancelling the run from an event (like a crash right after the submits).
    import anyio

    async def first_run() -> None:
        with anyio.move_on_after(0.15):
            await account.run(manifest, events)

    await first_run()
    submitted = {e["job_id"] for e in events if e["event"] == "submitted"}
    assert submitted, "the first run should have submitted something before it was stopped"
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        live = dict(db.execute("SELECT job_id, status FROM jobs"))
    assert any(status in (JobState.QUEUED, JobState.RUNNING, JobState.SUBMITTING) for status in live.values())

    result = await account.run(manifest)
    assert result.exit_code == 0, result.message
    stats = await account.stats()
    assert stats["duplicate_submissions"] == 0
    assert stats["submits_accepted"] == 3
    assert all(len(v) == 1 for v in request_ids(tmp_path / "state.sqlite").values())


async def test_multiple_outputs_are_all_collected(sim, write_manifest, tmp_path):
    """A result with several URIs (``videos``) gives several distinct files, each recorded."""
    account = sim(outputs_per_job=3)
    manifest = write_manifest(simple_manifest(2))
    result = await account.run(manifest)
    assert result.exit_code == 0
    files = sorted(p.name for p in (tmp_path / "out" / "shot-0").iterdir())
    assert len(files) == 3
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["jobs"][0]["outputs"]) == 3


async def test_failed_jobs_carry_runcomfys_error_into_state_and_report(sim, write_manifest, tmp_path):
    """A job that ends failed is reported with RunComfy's error; the run exits 1."""
    account = sim(fail_rate=1.0)
    manifest = write_manifest(simple_manifest(2))
    result = await account.run(manifest)
    assert result.exit_code == 1
    assert result.counts == {"failed": 2}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    error = report["jobs"][0]["error"]
    assert error["error_code"] == 500001 and error["error_message"]
    stats = await account.stats()
    assert stats["submits_accepted"] == 2  # not resubmitted: each submit is paid


async def test_auto_resubmission_of_failed_jobs_is_bounded(sim, write_manifest):
    """With auto_resubmit_failed=2 a job that always fails is submitted exactly three times."""
    account = sim(fail_rate=1.0)
    manifest = write_manifest(simple_manifest(1))
    result = await account.run(manifest, auto_resubmit_failed=2)
    assert result.exit_code == 1
    assert (await account.stats())["submits_accepted"] == 3


async def test_retry_failed_reruns_only_failed_jobs(sim, write_manifest):
    """``retry`` resubmits the failed jobs and leaves the finished ones alone."""
    account = sim(fail_rate=1.0)
    manifest = write_manifest(simple_manifest(2))
    assert (await account.run(manifest)).exit_code == 1
    await account.configure(fail_rate=0.0)
    result = await account.run(manifest, retry_failed=True)
    assert result.exit_code == 0 and result.counts == {"succeeded": 2}
    assert (await account.stats())["submits_accepted"] == 4


async def test_identical_jobs_are_one_paid_request(sim, write_manifest, tmp_path):
    """Two jobs with the same model and input share one submit; both get the files."""
    account = sim()
    manifest = write_manifest(f"""
        version: 1
        name: twins
        output_dir: ./out
        jobs:
          - id: first
            model: {I2V}
            input: {{prompt: same, image: "https://example.com/a.png"}}
          - id: second
            model: {I2V}
            input: {{prompt: same, image: "https://example.com/a.png"}}
        """)
    result = await account.run(manifest)
    assert result.exit_code == 0, result.message
    assert (await account.stats())["submits_accepted"] == 1
    a = (tmp_path / "out" / "first" / "output.mp4").read_bytes()
    assert a == (tmp_path / "out" / "second" / "output.mp4").read_bytes()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["cost_usd"] == pytest.approx(0.56)


async def test_on_one_slot_the_submit_loop_sleeps_until_something_happens(sim, write_manifest, monkeypatch):
    """More jobs than the queue the pacer keeps, on one slot: the submit loop is woken by answers,
    finishes and collects, not by a clock. Before, it looked every tenth of a second until a job had
    finished and every sixth of a job's run after (a second, draining): on a one-slot account with
    jobs of minutes, thousands of wake-ups for nothing."""
    from runner.engine.flight import Flight

    timeouts: list[float] = []
    wait = Flight.wait

    async def counted(self: Flight, timeout: float) -> None:
        woken = self._wake
        await wait(self, timeout)
        if not woken.is_set():
            timeouts.append(timeout)

    monkeypatch.setattr(Flight, "wait", counted)
    account = sim(concurrency=1, job_seconds=0.4, job_spread=0.0)
    result = await account.run(write_manifest(simple_manifest(14)))
    assert result.exit_code == 0 and result.counts == {"succeeded": 14}
    stats = await account.stats()
    assert stats["submits_accepted"] == 14 and stats["requests_total"] <= 5 * 14  # (a machine under load)
    assert len(timeouts) <= 4, timeouts  # a few, where a measured start rate said when to look


def test_outputs_are_fetched_only_from_runcomfy_or_allowed_hosts():
    """RunComfy's CDN and allowed hosts pass; any other host, or a non-http URL, is refused."""
    from runner.api.download import DownloadConfig
    from runner.errors import OutputHostRefused

    config = DownloadConfig(allowed_hosts=("api.local",))
    config.check_host("https://cdn.runcomfy.net/x.mp4")
    config.check_host("http://api.local/files/x.mp4")
    with pytest.raises(OutputHostRefused, match="--allow-output-host evil.example"):
        config.check_host("https://evil.example/x.mp4")
    with pytest.raises(OutputHostRefused, match="not http"):
        config.check_host("file:///etc/passwd")
    DownloadConfig(allow_any_host=True).check_host("https://evil.example/x.mp4")
