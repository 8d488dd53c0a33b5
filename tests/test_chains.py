"""Chains end to end: the real CLI against the simulator in its own process, whose own log
(``GET /_sim/requests/{id}``: the input each request carried, when it was submitted and finished) is
the judge of what was sent, with what, and when."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    SimProcess,
    job_statuses,
    query,
    run_cli,
    start_cli,
    wait_for,
    write_text,
)

R2V = "kling/kling-video-o3/standard/reference-to-video"
I2V = "kling/kling-video-o3/pro/image-to-video"
T2I = "bytedance/seedream-5.0-pro/text-to-image"
WAN_T2I = "wan-ai/wan-2.7/text-to-image"  # up to 5 images a request


pytestmark = pytest.mark.usefixtures("no_runner_outlives_its_test")
write = write_text


CHAIN = f"""
    version: 1
    name: chain
    output_dir: ./out
    defaults:
      input: {{duration: 3}}
    jobs:
      - id: sequel
        model: {R2V}
        input: {{prompt: "the next shot continues the clip", video: "job:clip"}}
      - id: still
        model: {T2I}
        input: {{prompt: "a lighthouse at dusk", aspect_ratio: "16:9"}}
      - id: clip
        model: {I2V}
        input: {{prompt: "the camera pushes in on the lighthouse", image: "job:still#1"}}
"""


def run_args(sim: SimProcess, state: Path, *extra: str) -> list[str]:
    return ["run", "m.yaml", "--base-url", sim.base_url, "--state", str(state), "--no-progress", *extra]


def sent(state: Path, sim: SimProcess) -> dict[str, list[dict[str, Any]]]:
    """Per job, what the simulator recorded of each request the journal holds for it, in order (an
    empty record for one it has forgotten since: expired)."""
    out: dict[str, list[dict[str, Any]]] = {}
    rows = query(
        state, "SELECT job_id, request_id FROM attempts WHERE request_id IS NOT NULL ORDER BY attempt_id"
    )
    for job_id, request_id in rows:
        out.setdefault(job_id, []).append(sim.request(request_id) or {})
    return out


def assert_fed(upstream: dict[str, Any], dependent: dict[str, Any], field: str = "video") -> None:
    """The dependent was sent the upstream's output URL exactly, after the upstream finished."""
    assert upstream["status"] == "completed"
    assert dependent["input"][field] == upstream["output_urls"][0]
    assert upstream["finished_at"] is not None
    assert dependent["submitted_at"] >= upstream["finished_at"]


def test_a_three_step_chain_sends_each_step_the_output_of_the_one_before_after_it_finished(tmp_path):
    """image (Seedream) → image-to-video → reference-to-video (Kling O3): each step's input is the URL
    RunComfy gave for the step before, sent only once that step had finished."""
    write(tmp_path, CHAIN)
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", job_seconds=0.3, concurrency=4) as sim:
        done = run_cli(run_args(sim, state), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        requests = sent(state, sim)
        assert sorted(requests) == ["clip", "sequel", "still"]
        assert all(len(tries) == 1 for tries in requests.values())
        assert_fed(requests["still"][0], requests["clip"][0], "image")
        assert_fed(requests["clip"][0], requests["sequel"][0])
        assert sim.stats()["submits_accepted"] == 3
    journaled = dict(query(state, "SELECT job_id, input_json FROM attempts"))
    assert json.loads(journaled["clip"])["image"] == requests["still"][0]["output_urls"][0]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    after = {job["id"]: job["after"] for job in report["jobs"]}
    assert after == {"sequel": ["clip"], "still": [], "clip": ["still"]}
    assert "made from the output of" in (tmp_path / "out" / "report.html").read_text()
    assert [p.name for p in (tmp_path / "out" / "still").iterdir()] == ["output.png"]
    assert all((tmp_path / "out" / job / "output.mp4").is_file() for job in ("clip", "sequel"))


def test_a_failed_upstream_leaves_its_chain_unsent_and_blocked_until_retry_makes_it(tmp_path):
    """The first step fails: the two after it are never submitted, are ``blocked`` naming the job that
    blocked them, and the run says so; ``retry`` runs the failed step again and then its chain."""
    write(tmp_path, CHAIN)
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", job_seconds=0.2, fail_rate=1.0) as sim:
        failed = run_cli(run_args(sim, state), cwd=tmp_path)
        assert failed.returncode == 1, failed.stderr
        assert sim.stats()["submits_accepted"] == 1
        assert job_statuses(state) == {"still": "failed", "clip": "blocked", "sequel": "blocked"}
        errors = dict(query(state, "SELECT job_id, error FROM jobs"))
        assert "needs the output of job still, which is failed" in json.loads(errors["clip"])["message"]
        assert "needs the output of job clip, which is blocked" in json.loads(errors["sequel"])["message"]
        assert "clip: blocked: needs the output of job still" in failed.stderr
        assert "2 chained job(s) blocked" in failed.stderr
        status = run_cli(["status", "m.yaml", "--state", str(state), "--json"], cwd=tmp_path)
        attention = {j["id"]: j["status"] for j in json.loads(status.stdout)["needs_attention"]}
        assert attention == {"sequel": "blocked", "still": "failed", "clip": "blocked"}

        sim.configure(fail_rate=0.0)
        again = run_cli(["retry", *run_args(sim, state)[1:]], cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        requests = sent(state, sim)
        assert [len(requests[j]) for j in ("still", "clip", "sequel")] == [2, 1, 1]
        assert_fed(requests["still"][1], requests["clip"][0], "image")
        assert_fed(requests["clip"][0], requests["sequel"][0])


def test_killed_between_the_steps_the_chain_resumes_without_paying_twice(tmp_path):
    """SIGKILL while the first step's output downloads, then again while the second runs at RunComfy:
    each run again re-attaches or collects what was paid, and every step is paid exactly once."""
    write(tmp_path, CHAIN)
    state = tmp_path / "state.sqlite"
    knobs = {"job_seconds": 1.5, "rate_slow": 1.0, "slow_seconds": 1.5, "fault_endpoints": "slow=download"}
    with SimProcess(tmp_path / "sim", **knobs) as sim:
        first = start_cli(run_args(sim, state), cwd=tmp_path)
        wait_for(lambda: job_statuses(state).get("still") == "collecting", what="still downloading")
        first.kill()
        first.wait()
        assert job_statuses(state)["clip"] == "pending"
        second = start_cli(run_args(sim, state), cwd=tmp_path)
        wait_for(lambda: job_statuses(state).get("clip") == "running", timeout=60, what="clip running")
        second.kill()
        second.wait()
        done = run_cli(run_args(sim, state), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        stats = sim.stats()
        assert stats["submits_accepted"] == 3
        assert stats["duplicate_submissions"] == 0
        requests = sent(state, sim)
        assert all(len(tries) == 1 for tries in requests.values())
        assert_fed(requests["still"][0], requests["clip"][0], "image")
        assert_fed(requests["clip"][0], requests["sequel"][0])
    assert query(state, "SELECT count(*) FROM attempts")[0][0] == 3


def test_an_upstream_output_gone_from_runcomfy_is_said_and_retry_makes_it_again(tmp_path):
    """The first step ran in an earlier run and RunComfy has forgotten its output since: the next step
    is not sent with a dead URL; the first is ``expired`` (with what to do) and the rest ``blocked``.
    ``retry`` makes it again, and the chain goes on from the new URL."""
    write(tmp_path, CHAIN)
    state = tmp_path / "state.sqlite"
    # Forgotten 3 s after it ends: the retry's own first step is checked a second or more after it ended
    # (the pilot's first poll, two more steps, the reports), which must not be forgotten by then.
    with SimProcess(tmp_path / "sim", job_seconds=0.2, expire_seconds=3.0) as sim:
        first = run_cli(run_args(sim, state, "--only", "still"), cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert "2 job(s) left for another run" in first.stdout
        time.sleep(3.5)  # the simulator now answers 404 for it, as RunComfy does after about 7 days
        stale = run_cli(run_args(sim, state), cwd=tmp_path)
        assert stale.returncode == 1, stale.stderr
        assert sim.stats()["submits_accepted"] == 1
        assert job_statuses(state) == {"still": "expired", "clip": "blocked", "sequel": "blocked"}
        assert "no longer serves its output" in stale.stderr and "retry" in stale.stderr
        again = run_cli(["retry", *run_args(sim, state)[1:]], cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        requests = sent(state, sim)
        assert_fed(requests["still"][-1], requests["clip"][0], "image")


def test_a_step_made_again_makes_the_steps_after_it_run_again(tmp_path):
    """The chain succeeded; the first step's file is lost and RunComfy has forgotten it, so ``retry``
    makes it again: a new attempt with a new URL, and the steps that were made from the old one run
    again with the new one (their old attempts stay in the history)."""
    write(tmp_path, CHAIN)
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", job_seconds=0.2, expire_seconds=3.0) as sim:  # (room: as above)
        assert run_cli(run_args(sim, state), cwd=tmp_path).returncode == 0
        time.sleep(3.5)
        (tmp_path / "out" / "still" / "output.png").unlink()
        lost = run_cli(run_args(sim, state), cwd=tmp_path)
        assert lost.returncode == 1, lost.stderr
        assert job_statuses(state) == {"still": "expired", "clip": "succeeded", "sequel": "succeeded"}
        again = run_cli(["retry", *run_args(sim, state)[1:]], cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        requests = sent(state, sim)
        assert [len(requests[j]) for j in ("still", "clip", "sequel")] == [2, 2, 2]
        assert_fed(requests["still"][1], requests["clip"][1], "image")
        assert_fed(requests["clip"][1], requests["sequel"][1])
        assert sim.stats()["submits_accepted"] == 6


def test_validate_tells_every_broken_reference_with_its_line(tmp_path):
    """Unknown ids (with a suggestion), loops, an output index the model cannot make and a video fed
    to an image field are problems with file:line, job and field; nothing is sent."""
    write(
        tmp_path,
        f"""
        version: 1
        defaults:
          model: {R2V}
        jobs:
          - id: clip-1
            input: {{prompt: a}}
          - id: clip-2
            input: {{prompt: b, video: "job:clip-l"}}
          - id: loop-a
            input: {{prompt: c, video: "job:loop-b"}}
          - id: loop-b
            input: {{prompt: d, video: "job:loop-a"}}
          - id: second
            input: {{prompt: e, video: "job:clip-1#2"}}
          - id: still
            model: {I2V}
            input: {{prompt: f, image: "job:clip-1"}}
          - id: bad
            input: {{prompt: g, images: ["job:", "job:clip-1"]}}
          - id: posters
            model: {WAN_T2I}
            input: {{prompt: h, max_images: 5}}
          - id: from-poster-3
            model: {I2V}
            input: {{prompt: i, image: "job:posters#3"}}
          - id: from-poster-6
            model: {I2V}
            input: {{prompt: j, image: "job:posters#6"}}
        """,
    )
    checked = run_cli(["validate", "m.yaml"], cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stderr.splitlines() == [
        "m.yaml:8 job clip-2: input.video: job:clip-l names no job of this manifest (did you mean 'clip-1'?)",
        "m.yaml:10 job loop-a: input.video: job:loop-b makes a loop (loop-a -> loop-b -> loop-a): a chain "
        "cannot come back to a job",
        f"m.yaml:14 job second: input.video: job:clip-1#2 names output 2, but {R2V} makes one output "
        "per request",
        f"m.yaml:17 job still: input.image: job:clip-1 is a video (made by {R2V}), but this field takes "
        "an image",
        "m.yaml:19 job bad: input.images[0]: 'job:' is not a reference to a job's output: write job:<id> "
        "(its first output) or job:<id>#<k> (its k-th, from 1)",
        f"m.yaml:19 job bad: input.images[1]: job:clip-1 is a video (made by {R2V}), but this field takes "
        "an image",
        f"m.yaml:28 job from-poster-6: input.image: job:posters#6 names output 6, but {WAN_T2I} makes at "
        "most 5 outputs per request",
    ]
