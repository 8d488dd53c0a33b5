"""Where the journal lives and what it belongs to, as people meet it: the CLI as a process, started from
real working folders (a second terminal, a cron job in another folder), against a simulator on loopback
standing in for RunComfy, whose own counters judge what was paid."""

from __future__ import annotations

import json
import shlex
import signal
import sqlite3
from pathlib import Path

import pytest
from helpers import SimProcess, query, run_cli, start_cli, stop_leftovers, wait_for, write_jobs_manifest

JOBS = [("a", "first shot"), ("b", "second shot"), ("c", "third shot")]


@pytest.fixture(autouse=True)
def _no_leftovers():
    yield
    stop_leftovers()


def journal(out: Path) -> Path:
    return out / ".runcomfy-batch" / "journal.sqlite"


def test_a_simulated_run_never_satisfies_a_real_one(tmp_path):
    """After the demo with --simulate, the real run (another API) submits every job, into its own folder;
    the simulated run's report and status say "simulated"."""
    manifest = write_jobs_manifest(tmp_path / "m.yaml", JOBS, name="demo")
    demo = run_cli(["run", "m.yaml", "--simulate", "--no-progress"], cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    with SimProcess(tmp_path / "sim", job_seconds=0.1, output_bytes=2048) as real:
        done = run_cli(["run", str(manifest), "--base-url", real.base_url, "--no-progress"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "nothing to do" not in done.stdout
        assert real.stats()["submits_accepted"] == 3
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["simulated"] is False and report["summary"]["succeeded"] == 3

    simulated = json.loads((tmp_path / "out-simulated" / "report.json").read_text())
    assert simulated["simulated"] is True and simulated["api"] == "the bundled simulator"
    assert "(simulated)" in (tmp_path / "out-simulated" / "report.html").read_text()
    status = run_cli(["status", "m.yaml", "--simulate"], cwd=tmp_path)
    assert "simulated (the bundled simulator)" in status.stdout.splitlines()[0]


def test_results_of_one_api_are_refused_by_a_run_against_another(tmp_path):
    """Same output folder, another API: refused in one line that says which and what to do; nothing sent."""
    write_jobs_manifest(tmp_path / "m.yaml", JOBS[:1])
    with SimProcess(tmp_path / "staging", job_seconds=0.05) as staging:
        assert run_cli(["run", "m.yaml", "--base-url", staging.base_url], cwd=tmp_path).returncode == 0
    with SimProcess(tmp_path / "prod", job_seconds=0.05) as prod:
        done = run_cli(["run", "m.yaml", "--base-url", prod.base_url, "--no-progress"], cwd=tmp_path)
        assert done.returncode == 3
        assert done.stderr.count("\n") == 1
        assert f"holds results from {staging.base_url}, not from {prod.base_url}" in done.stderr
        assert "--output DIR" in done.stderr
        assert prod.stats()["submits_accepted"] == 0


def test_an_old_journal_from_a_simulated_demo_is_moved_and_refused_for_a_real_run(tmp_path):
    """A journal at state/<name>.sqlite (the old default) that belongs to this manifest is moved beside
    its outputs, saying so; one whose outputs came from a loopback simulator never satisfies a real run."""
    write_jobs_manifest(tmp_path / "m.yaml", JOBS[:2], name="demo")
    old = tmp_path / "state" / "demo.sqlite"
    with SimProcess(tmp_path / "sim-old", job_seconds=0.05) as sim:
        args = ["run", "m.yaml", "--base-url", sim.base_url, "--state", "state/demo.sqlite"]
        assert run_cli(args, cwd=tmp_path).returncode == 0
    with sqlite3.connect(old) as db:  # as an earlier version left it: no record of its owner
        db.execute("DELETE FROM meta WHERE key = 'owner'")
    with SimProcess(tmp_path / "sim-real", job_seconds=0.05) as real:
        done = run_cli(["run", "m.yaml", "--base-url", real.base_url, "--no-progress"], cwd=tmp_path)
        assert f"moved this manifest's journal from {old} to {journal(tmp_path / 'out')}" in done.stderr
        assert done.returncode == 3 and "holds results from a simulator on 127.0.0.1" in done.stderr
        assert real.stats()["submits_accepted"] == 0
    assert not old.exists() and journal(tmp_path / "out").exists()


def test_the_same_manifest_from_another_folder_finds_its_journal(tmp_path):
    """A second terminal elsewhere, a cron job started in another folder: the same journal, nothing paid
    again."""
    project = tmp_path / "project"
    project.mkdir()
    manifest = write_jobs_manifest(project / "m.yaml", JOBS)
    elsewhere, cron_home = tmp_path / "elsewhere", tmp_path / "home"
    elsewhere.mkdir(), cron_home.mkdir()
    with SimProcess(tmp_path / "sim", job_seconds=0.05) as sim:
        first = run_cli(["run", "m.yaml", "--base-url", sim.base_url], cwd=project)
        assert first.returncode == 0, first.stderr
        again = run_cli(["run", "../project/m.yaml", "--base-url", sim.base_url], cwd=elsewhere)
        assert again.returncode == 0 and again.stdout.startswith("nothing to do"), again.stderr
        cron = run_cli(["run", str(manifest), "--base-url", sim.base_url], cwd=cron_home)
        assert cron.returncode == 0 and cron.stdout.startswith("nothing to do"), cron.stderr
        assert sim.stats()["submits_accepted"] == 3 and sim.stats()["duplicate_submissions"] == 0
    assert not (elsewhere / "state").exists() and not (cron_home / "state").exists()
    status = run_cli(["status", str(manifest), "--json"], cwd=cron_home)
    assert json.loads(status.stdout)["counts"] == {"succeeded": 3}


def test_a_renamed_manifest_file_keeps_its_journal(tmp_path):
    """The same file under another name is the same batch: it takes its journal over and pays nothing."""
    write_jobs_manifest(tmp_path / "old.yaml", JOBS[:2])
    with SimProcess(tmp_path / "sim", job_seconds=0.05) as sim:
        assert run_cli(["run", "old.yaml", "--base-url", sim.base_url], cwd=tmp_path).returncode == 0
        (tmp_path / "old.yaml").rename(tmp_path / "new.yaml")
        done = run_cli(["run", "new.yaml", "--base-url", sim.base_url, "--no-progress"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "which is gone: taken over by" in done.stderr
        assert sim.stats()["submits_accepted"] == 2


def test_two_manifests_with_one_name_keep_their_own_journals(tmp_path):
    """Two manifests named alike: aimed at one output folder, the second is refused in one line; with
    folders of their own, each status shows its own jobs and cost, and a re-run of the first pays
    nothing."""
    write_jobs_manifest(tmp_path / "a.yaml", JOBS[:2], name="same")
    write_jobs_manifest(tmp_path / "b.yaml", JOBS[2:], name="same")
    with SimProcess(tmp_path / "sim", job_seconds=0.05) as sim:
        assert run_cli(["run", "a.yaml", "--base-url", sim.base_url], cwd=tmp_path).returncode == 0
        clash = run_cli(["run", "b.yaml", "--base-url", sim.base_url, "--no-progress"], cwd=tmp_path)
        assert clash.returncode == 3 and clash.stderr.count("\n") == 1
        assert f"is the journal of {tmp_path / 'a.yaml'}, not of {tmp_path / 'b.yaml'}" in clash.stderr
        assert "its own output_dir" in clash.stderr
        assert sim.stats()["submits_accepted"] == 2

        b_args = ["run", "b.yaml", "--base-url", sim.base_url, "--output", "out-b"]
        assert run_cli(b_args, cwd=tmp_path).returncode == 0
        a = json.loads(run_cli(["status", "a.yaml", "--json"], cwd=tmp_path).stdout)
        b = json.loads(run_cli(["status", "b.yaml", "--json", "--output", "out-b"], cwd=tmp_path).stdout)
        assert (a["jobs"], a["counts"], b["jobs"], b["counts"]) == (2, {"succeeded": 2}, 1, {"succeeded": 1})
        assert a["cost_usd"] == pytest.approx(2 * b["cost_usd"])
        again = run_cli(["run", "a.yaml", "--base-url", sim.base_url], cwd=tmp_path)
        assert again.stdout.startswith("nothing to do"), again.stderr
        assert sim.stats()["submits_accepted"] == 3 and sim.stats()["requests"]["download"] == 3


def test_the_resume_hint_works_as_printed(tmp_path):
    """Interrupted with --state, --output and --base-url of its own: the printed "to resume" command
    repeats them, and run as printed it re-attaches every job without paying twice."""
    write_jobs_manifest(tmp_path / "my jobs.yaml", JOBS)
    with SimProcess(tmp_path / "sim", concurrency=3, job_seconds=2.0, job_spread=0) as sim:
        args = ["run", "my jobs.yaml", "--base-url", sim.base_url, "--state", "j/state.sqlite"]
        runner = start_cli([*args, "--output", "clips", "--no-progress"], cwd=tmp_path)
        state = tmp_path / "j" / "state.sqlite"
        wait_for(
            lambda: len(query(state, "SELECT 1 FROM attempts WHERE request_id IS NOT NULL")) == 3,
            what="three submits",
        )
        runner.send_signal(signal.SIGINT)
        _, stderr = runner.communicate(timeout=30)
        assert runner.returncode == 130, stderr
        hint = next(line for line in stderr.splitlines() if "to resume, run: " in line)
        command = shlex.split(hint.split("to resume, run: ", 1)[1])
        assert command == [
            "runcomfy-batch",
            "run",
            "my jobs.yaml",
            "--state",
            "j/state.sqlite",
            "--output",
            "clips",
            "--base-url",
            sim.base_url,
        ]
        resumed = run_cli(command[1:], cwd=tmp_path)  # `runcomfy-batch` is `python -m runner`
        assert resumed.returncode == 0, resumed.stderr
        assert sim.stats()["submits_accepted"] == 3
    assert sorted(p.name for p in (tmp_path / "clips").iterdir() if p.is_dir()) == ["a", "b", "c"]
