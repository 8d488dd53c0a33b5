"""``run --simulate`` keeps its simulator's account beside the simulated journal, so the README's
promise holds for the demo too: a simulated run killed mid-flight and run again finishes every job,
none paid twice (before, the new simulator had never heard of the killed run's requests, and every
job in flight came back "expired")."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

from helpers import query, run_cli, start_cli, wait_for

REPO = Path(__file__).resolve().parent.parent


def test_a_killed_simulated_run_run_again_finishes_every_job_once(tmp_path: Path) -> None:
    shutil.copytree(REPO / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("out"))
    home = tmp_path / "manifests" / "out" / "demo-simulated" / ".runcomfy-batch"
    state = home / "journal.sqlite"
    first = start_cli(["run", "manifests/demo.yaml", "--simulate", "--no-progress"], cwd=tmp_path)

    def all_submitted_some_live() -> bool:
        # Every submit answered (a kill during one would leave it unknown: another test's matter),
        # and some job still running or queued at the simulator.
        sent = query(state, "SELECT count(*) FROM attempts WHERE request_id IS NOT NULL")
        live = query(state, "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
        return bool(sent and sent[0][0] == 7 and live[0][0] > 0)

    wait_for(all_submitted_some_live, timeout=60, what="every job submitted, some still live")
    first.send_signal(signal.SIGKILL)
    first.wait()
    in_flight = query(state, "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")[0][0]
    assert in_flight > 0

    elsewhere = tmp_path / "cron"  # run again from another folder, as cron would
    elsewhere.mkdir()
    again = run_cli(
        ["run", str(tmp_path / "manifests" / "demo.yaml"), "--simulate", "--no-progress"], cwd=elsewhere
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "all 7 job(s) succeeded" in again.stdout + again.stderr
    accepted = [json.loads(line) for line in (home / "simulator.jsonl").read_text().splitlines()]
    submits = [line for line in accepted if line["op"] == "submit"]
    inputs = {json.dumps([s["model_id"], s["input"]], sort_keys=True) for s in submits}
    assert len(submits) == len(inputs) == 7  # each job accepted once, over both runs
    assert query(state, "SELECT count(*) FROM attempts") == [(7,)]
