"""What the runner tells after the things people do: rename a job, ask for takes, hit the budget, stop a
run and come back later, edit the manifest, use a wrong token. The CLI as a process, a simulator on
loopback whose own counters judge what was paid."""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import pytest
from helpers import SimProcess, query, run_cli, start_cli, stop_leftovers, wait_for, write_jobs_manifest

from runner.batch import BatchOptions, configure
from runner.errors import ApiError, redact
from runner.reports.progress import LineLog

JOBS = [("a", "first shot"), ("b", "second shot"), ("c", "third shot")]


@pytest.fixture(autouse=True)
def _no_leftovers():
    yield
    stop_leftovers()


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_a_renamed_job_adopts_what_was_paid(tmp_path):
    """Renaming a job pays nothing: plan says it adopts the old request, the run moves its files into the
    new folder (the old one goes), the report says "adopted from"."""
    manifest = write_jobs_manifest(tmp_path / "m.yaml", JOBS)
    out = tmp_path / "out"
    with SimProcess(tmp_path / "sim", job_seconds=0.05, output_bytes=2048) as sim:
        assert run_cli(["run", "m.yaml", "--base-url", sim.base_url], cwd=tmp_path).returncode == 0
        before = (out / "b" / "output.mp4").read_bytes()
        write_jobs_manifest(
            manifest, [("a", "first shot"), ("b-renamed", "second shot"), ("c", "third shot")]
        )
        plan = run_cli(["plan", "m.yaml"], cwd=tmp_path)
        assert "b-renamed adopted from b" in plan.stdout
        assert "a run would still spend $0.00 on 0 job(s)" in plan.stdout
        done = run_cli(["run", "m.yaml", "--base-url", sim.base_url, "--no-progress"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert sim.stats()["submits_accepted"] == 3 and sim.stats()["duplicate_submissions"] == 0
    assert (out / "b-renamed" / "output.mp4").read_bytes() == before
    assert not (out / "b").exists()
    entry = next(j for j in report_of(out)["jobs"] if j["id"] == "b-renamed")
    assert entry["status"] == "succeeded" and entry["adopted_from"] == "b"
    assert "adopted from" in (out / "report.html").read_text()


def test_a_renamed_job_whose_files_are_gone_is_collected_again_not_paid(tmp_path):
    manifest = write_jobs_manifest(tmp_path / "m.yaml", JOBS[:1])
    with SimProcess(tmp_path / "sim", job_seconds=0.05) as sim:
        assert run_cli(["run", "m.yaml", "--base-url", sim.base_url], cwd=tmp_path).returncode == 0
        (tmp_path / "out" / "a" / "output.mp4").unlink()
        write_jobs_manifest(manifest, [("a2", "first shot")])
        done = run_cli(["run", "m.yaml", "--base-url", sim.base_url, "--no-progress"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        stats = sim.stats()
        assert stats["submits_accepted"] == 1 and stats["requests"]["download"] == 2
    assert (tmp_path / "out" / "a2" / "output.mp4").stat().st_size > 0


def test_takes_are_paid_separately_and_combine_with_a_matrix(tmp_path):
    """takes: 2 on a matrix of two: four jobs, four paid requests of two inputs, in the documented order;
    raising the takes of a finished plain job keeps its result as take 1."""
    (tmp_path / "m.yaml").write_text(
        "version: 1\nname: t\noutput_dir: ./out\ndefaults:\n"
        "  model: kling/kling-video-o3/standard/reference-to-video\n  input: {duration: 3}\njobs:\n"
        "  - id: hero\n    input: {prompt: the hero}\n"
        "  - id: orbit\n    input: {prompt: an orbit}\n    takes: 2\n    matrix: {duration: [3, 5]}\n"
    )
    with SimProcess(tmp_path / "sim", job_seconds=0.05) as sim:
        assert run_cli(["run", "m.yaml", "--base-url", sim.base_url], cwd=tmp_path).returncode == 0
        ids = [j["id"] for j in report_of(tmp_path / "out")["jobs"]]
        assert ids == [
            "hero",
            "orbit--duration-3--take-1",
            "orbit--duration-3--take-2",
            "orbit--duration-5--take-1",
            "orbit--duration-5--take-2",
        ]
        stats = sim.stats()
        assert stats["submits_accepted"] == 5 and stats["duplicate_submissions"] == 2  # the second takes

        text = (
            (tmp_path / "m.yaml")
            .read_text()
            .replace("input: {prompt: the hero}", "input: {prompt: the hero}\n    takes: 3")
        )
        (tmp_path / "m.yaml").write_text(text)
        done = run_cli(["run", "m.yaml", "--base-url", sim.base_url, "--no-progress"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert sim.stats()["submits_accepted"] == 7  # take 1 is the paid `hero`; takes 2 and 3 are new
    hero = {j["id"]: j for j in report_of(tmp_path / "out")["jobs"] if j["id"].startswith("hero")}
    assert sorted(hero) == ["hero--take-1", "hero--take-2", "hero--take-3"]
    assert hero["hero--take-1"]["adopted_from"] == "hero"
    assert len({h["request_id"] for h in hero.values()}) == 3


def test_a_run_refused_by_the_budget_is_recorded_as_refused(tmp_path):
    write_jobs_manifest(tmp_path / "m.yaml", JOBS, extra="budget_usd: 0.5\n")
    with SimProcess(tmp_path / "sim", job_seconds=0.05) as sim:
        done = run_cli(["run", "m.yaml", "--base-url", sim.base_url, "--no-progress"], cwd=tmp_path)
        assert done.returncode == 5 and "over the budget" in done.stderr
        assert sim.stats()["submits_accepted"] == 0
    status = run_cli(["status", "m.yaml"], cwd=tmp_path)
    assert "refused: over budget (exit 5)" in status.stdout and "to resume" not in status.stdout
    assert (
        json.loads(run_cli(["status", "m.yaml", "--json"], cwd=tmp_path).stdout)["run"]["state"] == "refused"
    )


def test_plan_tells_what_run_would_submit_and_apart_what_retry_would(tmp_path):
    write_jobs_manifest(tmp_path / "m.yaml", [(f"j{i}", f"shot {i}") for i in range(6)])
    with SimProcess(tmp_path / "sim", job_seconds=0.05, fail_rate=0.5, seed=3) as sim:
        done = run_cli(["run", "m.yaml", "--base-url", sim.base_url], cwd=tmp_path)
    failed = json.loads(run_cli(["status", "m.yaml", "--json"], cwd=tmp_path).stdout)["counts"]["failed"]
    assert done.returncode == 1 and failed
    plan = run_cli(["plan", "m.yaml"], cwd=tmp_path).stdout
    assert "a run would still spend $0.00 on 0 job(s)" in plan
    assert f"retry would also send {failed} failed, cancelled or expired job(s)" in plan
    data = json.loads(run_cli(["plan", "m.yaml", "--json"], cwd=tmp_path).stdout)
    assert data["remaining_usd"] == 0 and data["retry_usd"] > 0


def test_run_times_count_only_what_a_runner_saw(tmp_path):
    """Three 1 s jobs on one slot, the runner killed once they are submitted and back 5 s later (they
    finished meanwhile): no job shows the gap as its run time, and the peak stays within the slot."""
    write_jobs_manifest(tmp_path / "m.yaml", JOBS)
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", concurrency=1, job_seconds=1.0, job_spread=0) as sim:
        args = ["run", "m.yaml", "--base-url", sim.base_url, "--state", "state.sqlite", "--no-progress"]
        runner = start_cli(args, cwd=tmp_path)
        wait_for(lambda: len(query(state, "SELECT 1 FROM attempts WHERE request_id IS NOT NULL")) == 3)
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        wait_for(lambda: sim.stats()["jobs"]["completed"] == 3, timeout=20)
        time.sleep(3)
        done = run_cli(args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert sim.stats()["submits_accepted"] == 3
    report = report_of(tmp_path / "out")
    for job in report["jobs"]:
        assert job["run_s"] is None or job["run_s"] < 2.5, job
        assert job["duration_s"] < 4.5, job  # from submit to RunComfy's finish, not to the second run
    summary = report["summary"]
    assert summary["peak_running"] <= 1 and (summary["slot_efficiency"] or 0) <= 1


def test_status_and_the_report_agree_on_the_cost_after_an_edit(tmp_path):
    manifest = write_jobs_manifest(tmp_path / "m.yaml", JOBS)
    with SimProcess(tmp_path / "sim", job_seconds=0.05) as sim:
        assert run_cli(["run", "m.yaml", "--base-url", sim.base_url], cwd=tmp_path).returncode == 0
        write_jobs_manifest(
            manifest, [("a", "first shot, edited"), ("b", "second shot"), ("c", "third shot")]
        )
        assert run_cli(["run", "m.yaml", "--base-url", sim.base_url], cwd=tmp_path).returncode == 0
        charged = sim.stats()["cost_charged_usd"]
    status = json.loads(run_cli(["status", "m.yaml", "--json"], cwd=tmp_path).stdout)
    report = report_of(tmp_path / "out")
    assert status["cost_usd"] == pytest.approx(report["summary"]["cost_usd"]) == pytest.approx(charged)


def test_a_rejected_token_is_told_in_one_line(tmp_path):
    write_jobs_manifest(tmp_path / "m.yaml", JOBS)
    with SimProcess(tmp_path / "sim", job_seconds=0.05, token="another-token") as sim:
        done = run_cli(["run", "m.yaml", "--base-url", sim.base_url, "--no-progress"], cwd=tmp_path)
    assert done.returncode == 6
    assert [line for line in done.stderr.splitlines() if "401001" in line] == [
        line for line in done.stderr.splitlines() if "unauthorized" in line
    ]
    assert len([line for line in done.stderr.splitlines() if "401001" in line]) == 1, done.stderr


@pytest.mark.parametrize("folder", ["/", "~", "~/"])
def test_an_output_folder_at_the_root_or_home_is_refused(tmp_path, folder):
    write_jobs_manifest(tmp_path / "m.yaml", JOBS[:1])
    text = (tmp_path / "m.yaml").read_text().replace("output_dir: ./out", f"output_dir: {json.dumps(folder)}")
    (tmp_path / "m.yaml").write_text(text)
    done = run_cli(["validate", "m.yaml"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("m.yaml:3: output_dir: ") and "a folder of their own" in done.stderr
    write_jobs_manifest(tmp_path / "m.yaml", JOBS[:1])
    usage = run_cli(["run", "m.yaml", "--simulate", "--output", folder], cwd=tmp_path)
    assert usage.returncode == 2 and "a folder of their own" in usage.stderr


def test_a_token_given_in_code_is_redacted_like_the_environments(monkeypatch):
    """BatchOptions(token=…), as the README's library example has it: hidden from every message and log."""
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    secret = "sk-in-code-0123456789abcdef"
    configure(BatchOptions(token=secret))
    error = ApiError(f"the server echoed {secret} back")
    assert secret not in str(error) and "***" in str(error)
    assert redact(f"x {secret} y") == "x *** y"
    stream = io.StringIO()
    LineLog(stream, json_lines=True)({"event": "retry", "time": 0.0, "error": f"echo {secret}", "attempt": 1})
    assert "echo ***" in stream.getvalue() and secret not in stream.getvalue()
