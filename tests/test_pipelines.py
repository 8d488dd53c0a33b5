"""What content pipelines use: jobs from CSV and JSONL tables, machine-readable answers (``validate
--json``, ``plan --json``), a subset of a manifest (``--only``, ``--limit``, ``--halt-after``) and a
manifest piped on standard input. Through the CLI, against the simulator in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import (
    SimProcess,
    cli_env,
    job_statuses,
    query,
    run_cli,
    write_text,
)

R2V = "kling/kling-video-o3/standard/reference-to-video"
I2V = "kling/kling-video-o3/pro/image-to-video"
PNG = (Path(__file__).parent / "bad_manifests" / "files" / "red.png").read_bytes()


pytestmark = pytest.mark.usefixtures("no_runner_outlives_its_test")
write = write_text


def shots(n: int, *, name: str = "subset") -> str:
    jobs = "\n".join(f"  - id: shot-{i}\n    input: {{prompt: 'shot number {i}'}}" for i in range(1, n + 1))
    head = (
        f"version: 1\nname: {name}\noutput_dir: ./out\ndefaults:\n  model: {R2V}\n  input: {{duration: 3}}\n"
    )
    return f"{head}jobs:\n{jobs}\n"


def sent_inputs(state: Path, sim: SimProcess) -> dict[str, dict[str, object]]:
    rows = query(state, "SELECT job_id, request_id FROM attempts WHERE request_id IS NOT NULL")
    return {job_id: (sim.request(rid) or {}).get("input") for job_id, rid in rows}  # type: ignore[misc]


# -- jobs from tables -------------------------------------------------------------------------------


def test_csv_and_jsonl_rows_are_jobs_with_cells_converted_to_the_schema_types(tmp_path):
    """A CSV's cells become the types the model asks for (``5`` an integer, ``yes`` true, ``a|b`` a
    list), a JSONL line is a job as written; defaults and matrices apply; the simulator gets exactly
    those inputs."""
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "red.png").write_bytes(PNG)
    write(
        tmp_path,
        """
        id,prompt,duration,sound,images,model
        csv-1,"a prompt, with a comma",5,yes,https://example.com/a.png|./refs/red.png,
        csv-2,"a second
        line",,no,,
        csv-3,an image to video,4,,,kling/kling-video-o3/pro/image-to-video
        """,
        "tables/shots.csv",
    )
    write(
        tmp_path,
        """
        {"id": "line-1", "input": {"prompt": "from a JSON line", "duration": 6}}

        {"id": "line-2", "input": {"prompt": "a JSON matrix"}, "matrix": {"aspect_ratio": ["16:9", "1:1"]}}
        """,
        "tables/more.jsonl",
    )
    write(
        tmp_path,
        f"""
        version: 1
        name: tables
        output_dir: ./out
        defaults:
          model: {R2V}
          input: {{duration: 3, image: https://example.com/start.png}}
        jobs_from: [tables/shots.csv, tables/more.jsonl]
        """,
    )
    checked = run_cli(["validate", "m.yaml", "--json"], cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    jobs = {job["id"]: job for job in json.loads(checked.stdout)["jobs"]}
    assert list(jobs) == [
        "csv-1",
        "csv-2",
        "csv-3",
        "line-1",
        "line-2--aspect_ratio-16x9",
        "line-2--aspect_ratio-1x1",
    ]
    csv_1 = jobs["csv-1"]["input"]
    assert csv_1["duration"] == 5 and csv_1["sound"] is True and csv_1["prompt"] == "a prompt, with a comma"
    assert csv_1["images"][0] == "https://example.com/a.png"
    assert csv_1["images"][1].startswith("data:image/png;base64,")  # a local path, relative to the manifest
    assert jobs["csv-2"]["input"] == {"duration": 3, "prompt": "a second\nline", "sound": False}
    assert jobs["csv-3"]["model"] == I2V
    assert jobs["csv-3"]["input"] == {
        "duration": 4,
        "image": "https://example.com/start.png",
        "prompt": "an image to video",
    }
    assert (
        jobs["csv-2"]["line"] == 3
        and jobs["csv-3"]["line"] == 5
        and jobs["line-2--aspect_ratio-1x1"]["line"] == 3
    )
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", job_seconds=0.1) as sim:
        done = run_cli(
            ["run", "m.yaml", "--base-url", sim.base_url, "--state", str(state), "--no-progress"],
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert sent_inputs(state, sim) == {job_id: job["input"] for job_id, job in jobs.items()}


def test_a_bad_row_is_told_at_its_line_in_the_table(tmp_path):
    """Problems in a table are told as ``table:line job ID: field: …``, every one at once, beside the
    manifest's own; nothing is sent."""
    write(
        tmp_path,
        """
        id,prompt,duration
        shot-1,fine,5
        shot-2,too long,20
        shot-3,not a number,five
        shot-1,a duplicate,5
        ,no id,5
        shot-7,too,many,cells
        """,
        "shots.csv",
    )
    write(
        tmp_path,
        """
        {"id": "j-1", "input": {"prompt": "typed as text", "duration": "5"}}
        {"id": "j-2", "input": {"prompt": "x"}
        ["not", "an", "object"]
        {"id": "j-4", "imput": {"prompt": "x"}}
        """,
        "more.jsonl",
    )
    write(
        tmp_path,
        f"""
        version: 1
        defaults:
          model: {R2V}
          input: {{duration: 99}}
        jobs:
          - id: yaml-1
            input: {{prompt: from the manifest, duration: 5}}
        jobs_from: [shots.csv, more.jsonl]
        """,
    )
    checked = run_cli(["validate", "m.yaml"], cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stderr.splitlines() == [
        "shots.csv:3 job shot-2: input.duration: 20 is greater than the maximum of 15",
        "shots.csv:4 job shot-3: input.duration: 'five' is not of type 'integer'",
        "shots.csv:5 job shot-1: id: duplicate job id (first used at line 2)",
        "shots.csv:6: id: '' is not a safe job id: use 1-128 letters, digits, '.', '_' or '-', starting "
        "with a letter or digit",
        "shots.csv:7: the row has 4 cells, but the header names 3",
        "more.jsonl:1 job j-1: input.duration: '5' is not of type 'integer'",
        "more.jsonl:2: not a JSON object: Expecting ',' delimiter (column 39)",
        "more.jsonl:3: each line must be a JSON object with `id`, optional `model` and `input`, not list",
        "more.jsonl:4 job j-4: imput: unknown key (did you mean 'input'?) (known keys: id, model, input, "
        "takes, matrix)",
    ]


# -- machine-readable answers ---------------------------------------------------------------------


def test_validate_json_lists_every_problem_with_file_line_job_and_field(tmp_path):
    """``validate --json`` on a manifest with several problems prints them all as objects on stdout, and
    exits 2 as without --json."""
    write(
        tmp_path,
        f"""
        version: 1
        budget: 5
        defaults:
          model: {R2V}
        jobs:
          - id: shot-1
            input: {{prompt: a, duration: 20}}
          - id: shot-2
            input: {{prompt: b, video: "job:shot-9"}}
        """,
    )
    checked = run_cli(["validate", "m.yaml", "--json"], cwd=tmp_path)
    assert checked.returncode == 2
    answer = json.loads(checked.stdout)
    assert answer["ok"] is False
    assert answer["problems"] == [
        {
            "file": "m.yaml",
            "line": 2,
            "job": None,
            "field": "budget",
            "message": "unknown key (did you mean 'budget_usd'?) (known keys: version, name, description, "
            "output_dir, budget_usd, concurrency, models, defaults, jobs, jobs_from)",
        },
        {
            "file": "m.yaml",
            "line": 7,
            "job": "shot-1",
            "field": "input.duration",
            "message": "20 is greater than the maximum of 15",
        },
        {
            "file": "m.yaml",
            "line": 9,
            "job": "shot-2",
            "field": "input.video",
            "message": "job:shot-9 names no job of this manifest (did you mean 'shot-1'?)",
        },
    ]
    fine = write(tmp_path, shots(2), "ok.yaml")
    good = run_cli(["validate", str(fine), "--json"], cwd=tmp_path)
    assert good.returncode == 0
    answer = json.loads(good.stdout)
    assert (
        answer["ok"] is True
        and answer["problems"] == []
        and [j["id"] for j in answer["jobs"]] == ["shot-1", "shot-2"]
    )


def test_plan_json_lists_each_job_its_estimate_and_whether_a_run_sends_it(tmp_path):
    """Every job with its estimate; chained jobs are counted with their cost; ``--only`` says which a
    run would send."""
    write(
        tmp_path,
        f"""
        version: 1
        defaults:
          model: {R2V}
          input: {{duration: 5}}
        jobs:
          - id: still
            input: {{prompt: a}}
          - id: clip
            input: {{prompt: b, video: "job:still"}}
          - id: other
            input: {{prompt: c}}
        """,
    )
    planned = run_cli(["plan", "m.yaml", "--json", "--only", "clip"], cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    answer = json.loads(planned.stdout)
    by_id = {job["id"]: job for job in answer["job_list"]}
    assert [by_id[j]["would_submit"] for j in ("still", "clip", "other")] == [True, True, False]
    assert by_id["clip"]["after"] == ["still"] and by_id["still"]["estimate_usd"] == pytest.approx(0.42)
    assert by_id["clip"]["estimate_usd"] == pytest.approx(0.63)  # the reference-video tier: 5 s × 0.126
    assert answer["chained"] == 1 and answer["chained_usd"] == pytest.approx(0.63)
    assert answer["would_submit"] == 2
    text = run_cli(["plan", "m.yaml"], cwd=tmp_path)
    assert "a run would send 3 job(s)" in text.stdout
    assert "1 of them are chained ($0.63)" in text.stdout


# -- a subset -------------------------------------------------------------------------------------


def test_only_sends_the_matching_jobs_and_what_they_need(tmp_path):
    """``--only`` (repeatable, shell-style) sends the matching jobs and the job a chained one needs; the
    rest stay pending for another run, and the exit code is about the chosen ones. A job chained to one
    made in that earlier run is sent later with its output (RunComfy still serves it)."""
    chained = (
        "  - id: follow-up\n    input: {prompt: next, video: 'job:shot-5'}\n"
        "  - id: later\n    input: {prompt: later, video: 'job:shot-1'}\n"
    )
    write(tmp_path, shots(5) + chained)
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", job_seconds=0.1) as sim:
        args = ["run", "m.yaml", "--base-url", sim.base_url, "--state", str(state), "--no-progress"]
        done = run_cli([*args, "--only", "shot-1", "--only", "follow-*"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "all 3 job(s) succeeded" in done.stdout and "4 job(s) left for another run" in done.stdout
        statuses = job_statuses(state)
        assert sorted(j for j, s in statuses.items() if s == "succeeded") == ["follow-up", "shot-1", "shot-5"]
        assert sim.stats()["submits_accepted"] == 3
        typo = run_cli([*args, "--only", "shot-9*"], cwd=tmp_path)
        assert typo.returncode == 2 and "--only shot-9*: no job id matches" in typo.stderr
        rest = run_cli(args, cwd=tmp_path)
        assert rest.returncode == 0, rest.stderr
        assert sim.stats()["submits_accepted"] == 7
        requests = dict(query(state, "SELECT job_id, request_id FROM attempts"))
        shot_1, later = sim.request(requests["shot-1"]), sim.request(requests["later"])
        assert shot_1 is not None and later is not None
        assert later["input"]["video"] == shot_1["output_urls"][0]


def test_limit_sends_the_first_n_still_to_do(tmp_path):
    """``--limit N`` sends the first N jobs not done yet; the next run with it sends the next N."""
    write(tmp_path, shots(5))
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", job_seconds=0.1) as sim:
        args = [
            "run",
            "m.yaml",
            "--base-url",
            sim.base_url,
            "--state",
            str(state),
            "--no-progress",
            "--limit",
            "2",
        ]
        assert run_cli(args, cwd=tmp_path).returncode == 0
        assert sorted(j for j, s in job_statuses(state).items() if s == "succeeded") == ["shot-1", "shot-2"]
        again = run_cli(args, cwd=tmp_path)
        assert again.returncode == 0 and "1 job(s) left for another run" in again.stdout
        assert sorted(j for j, s in job_statuses(state).items() if s == "succeeded") == [
            "shot-1",
            "shot-2",
            "shot-3",
            "shot-4",
        ]
        assert sim.stats()["submits_accepted"] == 4


def test_halt_after_stops_submitting_once_that_many_jobs_failed(tmp_path):
    """A bad template fails every job: with ``--halt-after 2`` the run stops sending after the second
    failure, says so (exit 8, the summary, the report) and leaves the rest pending, unpaid."""
    write(tmp_path, shots(10))
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", job_seconds=0.1, fail_rate=1.0) as sim:
        args = ["run", "m.yaml", "--base-url", sim.base_url, "--state", str(state), "--no-progress"]
        halted = run_cli([*args, "--halt-after", "2", "--concurrency", "1"], cwd=tmp_path)
        assert halted.returncode == 8, halted.stderr
        assert "halted after 2 failed job(s) (--halt-after); 8 job(s) not submitted" in halted.stderr
        assert "stopping: 2 job(s) failed (--halt-after 2)" in halted.stderr
        assert sim.stats()["submits_accepted"] == 2
        counts = {}
        for status in job_statuses(state).values():
            counts[status] = counts.get(status, 0) + 1
        assert counts == {"failed": 2, "pending": 8}
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["summary"]["halted"] == {"failed": 2, "after": 2}
        assert "halted after 2" in (tmp_path / "out" / "report.html").read_text()
        sim.configure(fail_rate=0.0)
        rest = run_cli(args, cwd=tmp_path)
        assert rest.returncode == 1  # the two failed stay failed (retry sends them); the rest succeeded
        assert json.loads((tmp_path / "out" / "report.json").read_text())["summary"]["halted"] is None
        assert sim.stats()["submits_accepted"] == 10


# -- a manifest from standard input ---------------------------------------------------------------


def pipe(args: list[str], text: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        input=text,
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_manifest_piped_on_stdin_runs_with_paths_from_the_working_folder(tmp_path):
    """``-`` reads the manifest from standard input: its local files and tables are found from the
    working folder; a run needs --state or --output (the journal has no place of its own otherwise);
    running it again pays nothing."""
    (tmp_path / "red.png").write_bytes(PNG)
    write(tmp_path, "id,prompt\nrow-1,from a table\n", "rows.csv")
    text = textwrap.dedent(
        f"""
        version: 1
        name: piped
        output_dir: ./out
        defaults:
          model: {R2V}
          input: {{duration: 3}}
        jobs:
          - id: inline
            input: {{prompt: with a local image, images: [./red.png]}}
        jobs_from: rows.csv
        """
    )
    checked = pipe(["validate", "-"], text, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "2 job(s)" in checked.stdout
    bad = pipe(["validate", "-"], text.replace("red.png", "blue.png"), tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("<stdin>:")
    with SimProcess(tmp_path / "sim", job_seconds=0.1) as sim:
        nowhere = pipe(["run", "-", "--base-url", sim.base_url], text, tmp_path)
        assert nowhere.returncode == 2 and "give --output DIR (or --state FILE)" in nowhere.stderr
        state = tmp_path / "piped.sqlite"
        args = ["run", "-", "--base-url", sim.base_url, "--state", str(state), "--no-progress"]
        done = pipe(args, text, tmp_path)
        assert done.returncode == 0, done.stderr
        again = pipe(args, text, tmp_path)
        assert again.returncode == 0, again.stderr
        assert sim.stats()["submits_accepted"] == 2
    assert (tmp_path / "out" / "row-1" / "output.mp4").is_file()
