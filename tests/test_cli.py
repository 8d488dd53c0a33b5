"""The CLI as a user meets it: real subprocesses, exit codes and the exact lines printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, simple_manifest

from runner.cli.main import build_parser

COMMANDS = ["validate", "run", "retry", "status", "report", "plan", "cancel", "models", "simulate"]


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_command_has_help_text_and_a_line_in_the_readme():
    """`--help` works for each command, and README names each one."""
    parser = build_parser()
    readme = (REPO / "README.md").read_text()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert sorted(subparsers.choices) == sorted(COMMANDS)
    for name, sub in subparsers.choices.items():
        assert sub.description, f"{name} has no description"
        assert f"runcomfy-batch {name}" in readme, f"README does not show `runcomfy-batch {name}`"
    models = next(a for a in subparsers.choices["models"]._actions if a.dest == "models_command")
    for name, sub in models.choices.items():
        assert sub.description, f"models {name} has no description"
        assert f"runcomfy-batch models {name}" in readme, f"README does not show `models {name}`"


def test_validate_lists_every_problem_with_file_line_job_and_field(write_manifest, tmp_path):
    """An invalid manifest: exit 2, one line per problem, no traceback."""
    manifest = write_manifest(
        """
        version: 1
        name: nightly
        defaults:
          model: kling/kling-video-o3/standard/reference-to-video
        jobs:
          - id: hero-1
            input:
              prompt: a hero shot
              duration: 20
          - id: hero-2
            input:
              prompt: another
              aspect_ratio: "4:3"
        """,
        name="nightly.yaml",
    )
    done = cli("validate", "nightly.yaml", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "nightly.yaml:9 job hero-1: input.duration: 20 is greater than the maximum of 15",
        "nightly.yaml:13 job hero-2: input.aspect_ratio: '4:3' is not one of ['16:9', '9:16', '1:1']",
    ]
    assert "Traceback" not in done.stderr
    assert manifest.exists()


def test_run_refuses_an_invalid_manifest_before_anything_is_opened(write_manifest, tmp_path):
    """No state file is created and nothing is sent when the manifest is invalid."""
    write_manifest("version: 1\njobs:\n  - id: ../x\n    model: nope\n    input: {}\n")
    done = cli(
        "run",
        "m.yaml",
        "--base-url",
        "http://127.0.0.1:9",
        cwd=tmp_path,
        env={"RUNCOMFY_API_TOKEN": "tok-1234567890"},
    )
    assert done.returncode == 2
    assert "m.yaml:" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()


def test_run_without_a_token_says_how_to_get_one(write_manifest, tmp_path):
    write_manifest(simple_manifest(1))
    done = cli("run", "m.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "runcomfy-batch: no API token: set RUNCOMFY_API_TOKEN (your RunComfy profile page has it), "
        "or use --simulate to try the runner against the bundled simulator"
    )


def test_run_simulate_leaves_videos_and_reports_then_status_plan_and_report_work(write_manifest, tmp_path):
    """The demo path: run --simulate, then status, plan and report read the state it left."""
    write_manifest(simple_manifest(3, name="demo"))
    done = cli("run", "m.yaml", "--simulate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"all 3 job\(s\) succeeded; 3 succeeded; cost \$1\.26", done.stdout)
    for i in range(3):  # a simulated run's outputs and journal are its own
        assert (tmp_path / "out-simulated" / f"shot-{i}" / "output.mp4").stat().st_size > 0
    assert (tmp_path / "out-simulated" / ".runcomfy-batch" / "journal.sqlite").exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()

    status = cli("status", "m.yaml", "--json", "--simulate", cwd=tmp_path)
    assert status.returncode == 0
    assert json.loads(status.stdout)["counts"] == {"succeeded": 3}

    plan = cli("plan", "m.yaml", "--json", "--simulate", cwd=tmp_path)
    data = json.loads(plan.stdout)
    assert data["estimate_usd"] == pytest.approx(1.26) and data["remaining_usd"] == 0

    (tmp_path / "out-simulated" / "report.json").unlink()
    report = cli("report", "m.yaml", "--simulate", cwd=tmp_path)
    assert report.returncode == 0
    written = json.loads((tmp_path / "out-simulated" / "report.json").read_text())
    assert written["summary"]["succeeded"] == 3 and written["simulated"] is True


def test_status_before_any_run_says_so(write_manifest, tmp_path):
    write_manifest(simple_manifest(1))
    done = cli("status", "m.yaml", cwd=tmp_path)
    assert done.returncode == 3
    assert "no state file yet" in done.stderr


def test_the_token_never_appears_in_output_even_when_rejected(write_manifest, tmp_path):
    """A wrong token: the run stops with exit 6 and the token is nowhere in what is printed or stored."""
    from runner.simulator import SimulatorConfig, running_server

    secret = "sk-very-secret-token-0123456789"
    write_manifest(simple_manifest(2))
    with running_server(SimulatorConfig(job_seconds=0.05)) as base_url:
        done = cli(
            "run",
            "m.yaml",
            "--base-url",
            base_url,
            "--verbose",
            "--json-log",
            cwd=tmp_path,
            env={"RUNCOMFY_API_TOKEN": secret},
        )
    assert done.returncode == 6, done.stderr
    assert "check RUNCOMFY_API_TOKEN" in done.stderr
    everything = done.stdout + done.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            everything += path.read_bytes().decode("latin-1")
    assert secret not in everything


def test_python_dash_m_runner_is_the_same_cli(tmp_path):
    done = cli("--help", cwd=tmp_path)
    assert done.returncode == 0 and "runcomfy-batch" in done.stdout
