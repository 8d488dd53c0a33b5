"""One job's trouble stays that job's: a failure nobody planned for while handling one job (its folder
cannot be written, an answer the runner cannot read) fails that job for this run with a one-line reason,
keeps it re-attachable, and lets every other job finish; the reports are written, the exit code says a
job did not succeed, and the traceback is in the log beside the state file (on the terminal with -v).

Each failure here is real: a file sits where a job's folder must go, the simulator writes its
timestamps in epoch milliseconds, a display's stream closes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import simple_manifest
from helpers import SimProcess, journal, query, run_cli

from runner.batch import run_batch
from runner.reports.progress import LineLog

pytestmark = pytest.mark.anyio


def block_folder(tmp_path: Path, job_id: str) -> Path:
    """Put a file where the job's output folder must be made."""
    (tmp_path / "out").mkdir(exist_ok=True)
    blocker = tmp_path / "out" / job_id
    blocker.write_text("not a folder")
    return blocker


async def test_a_job_whose_folder_cannot_be_made_fails_alone_and_is_collected_next_time(
    sim, write_manifest, tmp_path
):
    account = sim(concurrency=4)
    manifest = write_manifest(simple_manifest(6))
    blocker = block_folder(tmp_path, "shot-2")
    events: list[dict[str, Any]] = []
    result = await account.run(manifest, events)

    assert result.exit_code == 1, result.message
    assert result.counts == {"succeeded": 5, "collecting": 1}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    entry = next(job for job in report["jobs"] if job["id"] == "shot-2")
    message = entry["error"]["message"]
    assert "\n" not in message
    assert "while downloading its outputs" in message and "FileExistsError" in message
    assert "downloaded again on the next run" in message
    log = tmp_path / "state.sqlite.log"
    assert f"traceback in {log}" in message
    assert "Traceback (most recent call last)" in log.read_text()
    [crash] = [e for e in events if e["event"] == "internal_error"]
    assert crash["job_id"] == "shot-2" and crash["stage"] == "collect" and "Traceback" in crash["traceback"]
    assert result.needs_attention[0]["id"] == "shot-2"
    assert result.needs_attention[0]["status"] == "collecting"

    blocker.unlink()
    again = await account.run(manifest)
    assert again.exit_code == 0 and again.counts == {"succeeded": 6}
    stats = await account.stats()
    assert stats["submits_accepted"] == 6 and stats["duplicate_submissions"] == 0  # never resubmitted


async def test_an_answer_the_runner_cannot_read_fails_no_more_than_its_jobs(sim, write_manifest, tmp_path):
    """Results written with epoch-millisecond timestamps (a reader may or may not read them): the run
    ends, its reports are written, and every job either succeeded or rests where the next run polls it
    again, each submitted once."""
    account = sim(concurrency=3, shapes=("epoch-ms-timestamps",))
    manifest = write_manifest(simple_manifest(5))
    result = await account.run(manifest)
    assert result.exit_code in (0, 1), result.message
    assert (tmp_path / "out" / "report.json").exists()
    rows = query(
        tmp_path / "state.sqlite",
        "SELECT j.status, a.request_id FROM jobs j JOIN attempts a ON a.attempt_id = j.attempt_id",
    )
    assert len(rows) == 5
    assert all(status == "succeeded" or (status in ("running", "queued") and rid) for status, rid in rows)
    stats = await account.stats()
    assert stats["submits_accepted"] == 5 and stats["duplicate_submissions"] == 0
    again = await account.run(manifest)
    assert (await account.stats())["submits_accepted"] == 5  # the next run re-attaches, never resubmits
    assert again.exit_code in (0, 1)


async def test_a_display_that_fails_does_not_stop_the_run(sim, write_manifest, tmp_path):
    """A caller's event sink that raises, and a log whose stream is closed: the run goes on."""
    account = sim()
    manifest = write_manifest(simple_manifest(4))

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("the display is gone")

    result = await run_batch(manifest, account.options(), on_event=broken)
    assert result.exit_code == 0 and result.counts == {"succeeded": 4}
    assert "the display is gone" in (tmp_path / "state.sqlite.log").read_text()

    stream = (tmp_path / "closed.log").open("w")
    stream.close()
    log = LineLog(stream, verbose=True)
    other = write_manifest(simple_manifest(4, name="other"), name="other.yaml")
    options = replace(account.options(), state_path=tmp_path / "other.sqlite")
    again = await run_batch(other, options, on_event=log)
    assert again.exit_code == 0 and again.counts == {"succeeded": 4} and log.closed


def test_verbose_shows_the_traceback_and_the_plain_run_one_line(tmp_path):
    """On the command line: one line per failed job, the traceback only with -v (and in the log)."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(simple_manifest(3))
    with SimProcess(tmp_path / "sim", job_seconds=0.1, output_bytes=4096) as sim:
        block_folder(tmp_path, "shot-1")
        plain = run_cli(["run", "m.yaml", "--base-url", sim.base_url, "--no-progress"], cwd=tmp_path)
        assert plain.returncode == 1, plain.stderr
        assert "Traceback" not in plain.stderr
        assert "shot-1: collecting: stopped in this run while downloading its outputs" in plain.stderr
        assert "the next run picks up the jobs it stopped: runcomfy-batch run m.yaml" in plain.stderr
        log = journal(tmp_path).with_name("journal.sqlite.log")
        assert "Traceback (most recent call last)" in log.read_text()

        verbose = run_cli(["run", "m.yaml", "--base-url", sim.base_url, "--no-progress", "-v"], cwd=tmp_path)
        assert verbose.returncode == 1
        assert "Traceback (most recent call last)" in verbose.stderr
        assert "FileExistsError" in verbose.stderr
        assert sim.stats()["submits_accepted"] == 3
