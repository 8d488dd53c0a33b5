"""`status` on a finished, a running and an interrupted run: a compact table of jobs per model and state,
the jobs that need attention, and what to do next — read from the state file while a runner may write it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import I2V, R2V, simple_manifest

import runner
from runner.batch import BatchOptions, run_batch
from runner.cli import commands
from runner.simulator import SimulatorConfig, running_server

pytestmark = pytest.mark.anyio


def two_models(n: int) -> str:
    jobs = "\n".join(f'  - id: r{i}\n    input: {{prompt: "ref {i}"}}' for i in range(n))
    jobs += "\n" + "\n".join(
        f'  - id: p{i}\n    model: {I2V}\n    input: {{prompt: "push {i}", '
        f'image: "https://example.com/a.png"}}'
        for i in range(n)
    )
    return (
        f"version: 1\nname: st\noutput_dir: ./out\ndefaults:\n  model: {R2V}\n  input: {{duration: 5}}\n"
        f"jobs:\n{jobs}\n"
    )


async def test_status_of_a_finished_run_with_failures(sim, write_manifest, tmp_path, capsys):
    manifest = write_manifest(two_models(4))
    result = await sim(fail_rate=0.4, seed=7).run(manifest)
    counts = result.counts
    assert counts.get("failed") and counts.get("succeeded")
    capsys.readouterr()

    assert commands.status(manifest, BatchOptions(state_path=tmp_path / "state.sqlite")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{manifest}: 8 job(s) · last run ") and ", exit 1 · 1 run(s)" in lines[0]
    header = next(line for line in lines if line.startswith("model"))
    assert header.split() == ["model", "succeeded", "failed", "total"]  # only the states present
    answer = runner.status(manifest, tmp_path / "state.sqlite")
    for model in (I2V, R2V):
        row = next(line for line in lines if line.startswith(model))
        by_state = answer.per_model[model]
        cells = [
            str(by_state.get("succeeded", "")),
            str(by_state.get("failed", "")),
            str(sum(by_state.values())),
        ]
        assert row.split()[1:] == [c for c in cells if c]  # an empty cell is blank, not 0
        assert len(row) == len(header.rstrip()) or row.endswith(cells[-1])
    total = next(line for line in lines if line.startswith("total")).split()
    assert total == ["total", str(counts["succeeded"]), str(counts["failed"]), "8"]
    attention = lines.index(f"needs attention ({counts['failed']})")
    failed = [line.split()[0] for line in lines[attention + 3 : attention + 3 + counts["failed"]]]
    assert sorted(failed) == sorted(j["id"] for j in answer.needs_attention)
    assert all(
        line.endswith("the generation failed (simulated)")
        for line in lines[attention + 3 : attention + 3 + counts["failed"]]
    )
    # The hint repeats what found the journal, and the API its requests went to: it works as printed.
    state = tmp_path / "state.sqlite"
    assert lines[-1] == (
        f"to run the failed jobs again: runcomfy-batch retry {manifest} --state {state} "
        "--base-url http://sim.local"
    )
    assert all(line == line.rstrip() for line in lines)  # no padding in a pipe


async def test_status_while_a_run_is_going_on(sim, write_manifest, tmp_path, capsys):
    """Read mid-run from the same state file: the run shows as running, jobs in flight are counted."""
    manifest = write_manifest(simple_manifest(8))
    account = sim(concurrency=2, job_seconds=0.2)
    seen: list[runner.Status] = []

    def look(event: dict[str, Any]) -> None:
        if event["event"] == "succeeded" and not seen:
            seen.append(runner.status(manifest, tmp_path / "state.sqlite"))
            commands.status(manifest, BatchOptions(state_path=tmp_path / "state.sqlite"))

    result = await run_batch(manifest, account.options(), on_event=look)
    assert result.exit_code == 0
    [answer] = seen
    assert answer.run is not None and answer.run.state == "running" and answer.run.pid == os.getpid()
    in_flight = sum(answer.counts.get(s, 0) for s in ("submitting", "queued", "running", "collecting"))
    assert in_flight >= 1 and answer.counts.get("succeeded", 0) < 8
    out = capsys.readouterr().out
    assert f"running now (pid {os.getpid()}" in out
    assert json.loads(json.dumps(answer.as_json()))  # --json prints it as it is


def submitted(state: Path) -> int:
    """Attempts with a request id so far (0 while the state file is still being created)."""
    if not state.exists():
        return 0
    db = sqlite3.connect(state)
    try:
        return int(db.execute("SELECT count(*) FROM attempts WHERE request_id IS NOT NULL").fetchone()[0])
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0
    finally:
        db.close()


def test_status_of_an_interrupted_run_says_how_to_resume(write_manifest, tmp_path, capsys):
    """A runner killed with jobs in flight: status (from another working folder) says so, counts them, and
    names the command to resume, with the API the journal's requests went to."""
    manifest = write_manifest(simple_manifest(4, name="killed"))
    state = tmp_path / "out" / ".runcomfy-batch" / "journal.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    env["RUNCOMFY_API_TOKEN"] = "sim-token"
    with running_server(SimulatorConfig(concurrency=2, job_seconds=30)) as base_url:
        process = subprocess.Popen(
            [sys.executable, "-m", "runner", "run", "m.yaml", "--base-url", base_url, "--no-progress"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while submitted(state) < 4:
                assert time.monotonic() < deadline, "the runner never submitted"
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    assert commands.status(manifest, BatchOptions()) == 0  # found from the manifest, not the working folder
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "· interrupted (run of " in lines[0]
    header = next(line for line in lines if line.startswith("model")).split()
    assert header[0] == "model" and header[-1] == "total" and set(header[1:-1]) <= {"queued", "running"}
    assert next(line for line in lines if line.startswith(R2V)).split()[-1] == "4"
    assert (
        lines[-1] == f"to resume (jobs already submitted are re-attached, none is paid twice): "
        f"runcomfy-batch run {manifest} --base-url {base_url}"
    )
    answer = runner.status(manifest, state)
    assert answer.run is not None and answer.run.state == "interrupted" and answer.run.finished_at is None


STATUS_JSON_KEYS = [
    "manifest",
    "state",
    "jobs",
    "counts",
    "per_model",
    "needs_attention",
    "not_yet_in_state",
    "cost_usd",
    "estimate_usd",
    "run",
    "api",
    "simulated",
]


async def test_the_library_status_answers_from_a_real_runs_journal(
    sim, write_manifest, tmp_path, monkeypatch, capsys
):
    """``runner.status`` after a run with failures: what the run said, found in the output folder the
    manifest names (``out/.runcomfy-batch/journal.sqlite``), and what ``status --json`` prints."""
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(two_models(4))
    account = sim(fail_rate=0.4, seed=7)
    options = replace(account.options(), state_path=None)  # the default: beside the outputs
    result = await run_batch(manifest, options)
    journal = tmp_path / "out" / ".runcomfy-batch" / "journal.sqlite"
    assert result.counts.get("failed") and result.state_path == journal

    answer = runner.status(manifest)
    assert answer.state == result.state_path and answer.manifest == manifest
    assert answer.jobs == 8 and answer.not_yet_in_state == 0
    assert answer.counts == result.counts
    assert {m: sum(by.values()) for m, by in answer.per_model.items()} == {I2V: 4, R2V: 4}
    assert answer.needs_attention == result.needs_attention
    assert answer.cost_usd == pytest.approx(result.cost_usd) and answer.cost_usd > 0
    assert answer.run is not None
    assert (answer.run.state, answer.run.exit_code, answer.run.runs) == ("finished", result.exit_code, 1)

    assert list(answer.as_json()) == STATUS_JSON_KEYS
    assert list(answer.as_json()["run"]) == ["state", "pid", "started_at", "finished_at", "exit_code", "runs"]
    capsys.readouterr()
    assert commands.status(manifest, BatchOptions(), as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == answer.as_json()
