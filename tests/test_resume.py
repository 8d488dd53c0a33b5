"""Running a manifest again: what is reused, what is fetched again, what is run again, and what is
never sent twice without being asked. In-process against the simulator over HTTP (ASGI transport),
with real state files and real output folders."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import I2V, simple_manifest

from runner.batch import BatchOptions, run_batch
from runner.simulator import SimulatorConfig, expected_output_bytes, running_server

pytestmark = pytest.mark.anyio


def rows(state: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(state)) as db:
        return db.execute(sql, params).fetchall()


def request_of(state: Path, job_id: str) -> str:
    [(request_id,)] = rows(
        state,
        "SELECT a.request_id FROM jobs j JOIN attempts a USING (attempt_id) WHERE j.job_id = ?",
        (job_id,),
    )
    return str(request_id)


def holds_its_output(tmp_path: Path, job_id: str) -> bool:
    """The job's file on disk is exactly what the simulator made for the job's current request."""
    expected = expected_output_bytes(request_of(tmp_path / "state.sqlite", job_id), 0, 4096)
    return output_of(tmp_path, job_id).read_bytes() == expected


def output_of(tmp_path: Path, job_id: str) -> Path:
    return tmp_path / "out" / job_id / "output.mp4"


def report(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "out" / "report.json").read_text()))


async def test_an_edited_manifest_reruns_only_changed_jobs_and_keeps_history(sim, write_manifest, tmp_path):
    """Changed model or input: run again, with the old attempt kept as history. Unchanged: reused,
    nothing sent. Removed: kept in the state file, gone from the report. New: run."""
    account = sim()
    manifest = write_manifest(simple_manifest(4))
    assert (await account.run(manifest)).exit_code == 0
    state = tmp_path / "state.sqlite"
    before = {f"shot-{i}": request_of(state, f"shot-{i}") for i in range(4)}

    text = manifest.read_text().replace('"shot number 1"', '"shot number 1, at dusk"')
    text = text.replace('  - id: shot-3\n    input: {prompt: "shot number 3"}\n', "")
    text += '  - id: shot-4\n    input: {prompt: "a new shot"}\n'
    manifest.write_text(text)
    result = await account.run(manifest)

    assert result.exit_code == 0, result.message
    assert result.counts == {"succeeded": 4}
    assert (await account.stats())["submits_accepted"] == 4 + 2  # shot-1 again, shot-4 new
    assert request_of(state, "shot-0") == before["shot-0"] and request_of(state, "shot-2") == before["shot-2"]
    history = rows(
        state, "SELECT request_id, input_json FROM attempts WHERE job_id='shot-1' ORDER BY attempt_id"
    )
    assert [r[0] for r in history] == [before["shot-1"], request_of(state, "shot-1")]
    assert "dusk" not in history[0][1] and "dusk" in history[1][1]
    assert holds_its_output(tmp_path, "shot-1")
    assert rows(state, "SELECT in_manifest, status FROM jobs WHERE job_id='shot-3'") == [(0, "succeeded")]
    jobs = report(tmp_path)["jobs"]
    assert [j["id"] for j in jobs] == ["shot-0", "shot-1", "shot-2", "shot-4"]
    assert [a["request_id"] for a in jobs[1]["attempts"]] == [r[0] for r in history]


async def test_deleted_or_corrupted_outputs_are_fetched_again_without_paying(sim, write_manifest, tmp_path):
    """A missing file, a changed file and (with verify_hashes) a same-size, same-mtime corruption are
    downloaded again while their URLs live; nothing is submitted again."""
    account = sim()
    manifest = write_manifest(simple_manifest(4))
    assert (await account.run(manifest)).exit_code == 0
    state = tmp_path / "state.sqlite"
    output_of(tmp_path, "shot-0").unlink()
    output_of(tmp_path, "shot-1").write_bytes(b"not a video")
    sneaky = output_of(tmp_path, "shot-2")
    stat = sneaky.stat()
    sneaky.write_bytes(bytes(b ^ 0xFF for b in sneaky.read_bytes()))
    os.utime(sneaky, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = await account.stats()

    events: list[dict[str, Any]] = []
    result = await account.run(manifest, events)
    assert result.exit_code == 0, result.message
    assert sorted(e["job_id"] for e in events if e["event"] == "refetch") == ["shot-0", "shot-1"]
    after = await account.stats()
    assert after["submits_accepted"] == before["submits_accepted"]
    assert after["requests"]["download"] == before["requests"]["download"] + 2
    for job_id in ("shot-0", "shot-1"):
        assert holds_its_output(tmp_path, job_id)
    # Size and mtime unchanged: trusted without --verify-hashes, caught with it.
    assert sneaky.read_bytes() != expected_output_bytes(request_of(state, "shot-2"), 0, 4096)
    result = await account.run(manifest, verify_hashes=True)
    assert result.exit_code == 0
    assert sneaky.read_bytes() == expected_output_bytes(request_of(state, "shot-2"), 0, 4096)
    assert (await account.stats())["submits_accepted"] == before["submits_accepted"]


async def test_outputs_gone_at_runcomfy_are_expired_and_retry_runs_them_again(sim, write_manifest, tmp_path):
    """A deleted file whose URL answers 404 is not silently done: the job is ``expired`` (exit 1) and
    ``retry`` runs it again; the jobs whose files are fine stay as they are."""
    account = sim()
    manifest = write_manifest(simple_manifest(2))
    assert (await account.run(manifest)).exit_code == 0
    output_of(tmp_path, "shot-0").unlink()
    await account.configure(expire_seconds=0)  # a week later

    result = await account.run(manifest)
    assert result.exit_code == 1
    assert result.counts == {"expired": 1, "succeeded": 1}
    entry = report(tmp_path)["jobs"][0]
    assert entry["status"] == "expired" and "run the job again" in entry["error"]["message"]
    assert entry["attempts"][-1]["status"] == "succeeded"  # the request did succeed; its files are gone
    assert (await account.run(manifest)).counts == {"expired": 1, "succeeded": 1}  # a plain run leaves it

    await account.configure(expire_seconds=7 * 24 * 3600)
    result = await account.run(manifest, retry_failed=True)
    assert result.exit_code == 0 and result.counts == {"succeeded": 2}
    assert (await account.stats())["submits_accepted"] == 3
    assert holds_its_output(tmp_path, "shot-0")


async def test_a_request_that_expired_while_no_runner_watched_is_expired(sim, write_manifest, tmp_path):
    """Stopped with jobs in flight and resumed after their results expired: the re-attached polls answer
    404, and the jobs are ``expired`` (run them again), not silently done nor resubmitted."""
    account = sim(concurrency=4, job_seconds=0.05)
    manifest = write_manifest(simple_manifest(2))
    events: list[dict[str, Any]] = []
    with anyio.CancelScope() as scope:

        def stop_once_submitted(event: dict[str, Any]) -> None:
            events.append(event)
            if sum(e["event"] == "submitted" for e in events) == 2:
                scope.cancel()

        await run_batch(manifest, account.options(), on_event=stop_once_submitted)
    assert rows(tmp_path / "state.sqlite", "SELECT count(*) FROM jobs WHERE status='queued'") == [(2,)]
    await account.configure(expire_seconds=0)
    await anyio.sleep(0.2)  # they finish after about 0.05 s and are forgotten at once

    result = await account.run(manifest)
    assert result.exit_code == 1 and result.counts == {"expired": 2}
    assert "no longer knows this request" in report(tmp_path)["jobs"][0]["error"]["message"]
    assert (await account.stats())["submits_accepted"] == 2


async def test_retry_reruns_failed_jobs_only(sim, write_manifest):
    """A plain run leaves failed jobs alone; ``retry_failed`` submits exactly those again."""
    account = sim(fail_rate=0.5, seed=3)
    manifest = write_manifest(simple_manifest(8))
    first = await account.run(manifest)
    failed = first.counts.get("failed", 0)
    assert first.exit_code == 1 and 0 < failed < 8, first.counts
    await account.configure(fail_rate=0.0)
    again = await account.run(manifest)
    assert again.counts == first.counts and (await account.stats())["submits_accepted"] == 8
    result = await account.run(manifest, retry_failed=True)
    assert result.exit_code == 0 and result.counts == {"succeeded": 8}
    assert (await account.stats())["submits_accepted"] == 8 + failed


@pytest.mark.parametrize(
    ("fault", "accepted"), [("accepted_5xx", True), ("accepted_drop", True), ("5xx", False), ("drop", False)]
)
async def test_a_submit_that_may_have_landed_is_unknown_and_resubmitted_only_when_asked(
    fault, accepted, sim, write_manifest, tmp_path
):
    """A 5xx or a closed connection after the POST was sent: ``unknown``, never resubmitted by a plain
    run. Every submit is answered so while reads are not: the run stops after two in a row (exit 10),
    the next sends the rest. ``resubmit_unknown`` sends them again, marked; the simulator counts a
    duplicate exactly when the first submit had in fact been accepted."""
    account = sim(**{f"rate_{fault}": 1.0, "fault_endpoints": {fault: ("submit",)}})
    manifest = write_manifest(simple_manifest(3))
    result = await account.run(manifest)
    assert result.exit_code == 10 and result.counts == {"unknown": 2, "pending": 1}, result.message
    assert (
        "may have been accepted" in report(tmp_path)["jobs"][0]["error"]["message"]
        or "may exist" in report(tmp_path)["jobs"][0]["error"]["message"]
    )
    assert (await account.stats())["submits_accepted"] == (2 if accepted else 0)
    assert (await account.run(manifest)).counts == {"unknown": 3}
    assert (await account.stats())["submits_accepted"] == (3 if accepted else 0)
    assert (await account.run(manifest)).counts == {"unknown": 3}
    assert (await account.stats())["requests"]["submit"] == 3  # nothing sent again

    await account.configure(**{f"rate_{fault}": 0.0})
    result = await account.run(manifest, resubmit_unknown=True)
    assert result.exit_code == 0 and result.counts == {"succeeded": 3}
    stats = await account.stats()
    assert stats["duplicate_submissions"] == (3 if accepted else 0)
    flags = rows(
        tmp_path / "state.sqlite",
        "SELECT resubmit_of_unknown, request_id IS NOT NULL FROM attempts ORDER BY attempt_id",
    )
    assert flags == [(0, 0)] * 3 + [(1, 1)] * 3


async def test_rate_limited_submits_are_retried_and_never_unknown(sim, write_manifest):
    """A 429 says the submit was not taken: it is retried, and no job is unknown or paid twice."""
    account = sim(
        rate_429=0.4,
        rate_429_bare=0.2,
        retry_after_seconds=0,
        fault_endpoints={"429": ("submit",), "429_bare": ("submit",)},
        seed=5,
    )
    manifest = write_manifest(simple_manifest(6))
    result = await account.run(manifest)
    stats = await account.stats()
    assert result.exit_code == 0 and result.counts == {"succeeded": 6}
    assert stats["faults"]["429"] + stats["faults"]["429_bare"] > 0
    assert stats["submits_accepted"] == 6 and stats["duplicate_submissions"] == 0


async def test_submits_refused_at_connect_are_retried_until_the_api_answers(write_manifest, tmp_path):
    """Connection refused cannot have reached RunComfy: the submit waits (the API probed with backoff)
    and is sent again, not made unknown; once the API is up every job runs once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    manifest = write_manifest(simple_manifest(3))
    config = SimulatorConfig(job_seconds=0.05, output_bytes=4096)
    events: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:

        def on_event(event: dict[str, Any]) -> None:
            events.append(event)
            refused = event["event"] == "outage" and "connection refused" in str(event.get("problem"))
            if refused and not any(e.get("up") for e in events):
                stack.enter_context(running_server(config, port=port))  # the API comes up
                events.append({"event": "test", "up": True})

        options = BatchOptions(
            token="sim-token",
            base_url=base_url,
            state_path=tmp_path / "state.sqlite",
            flush_interval=0.01,
        )
        result = await run_batch(manifest, options, on_event=on_event)
        stats = httpx.get(f"{base_url}/_sim/stats").json()
    assert result.exit_code == 0, result.message
    assert any(e.get("up") for e in events)
    assert not any(e["event"] == "unknown" for e in events)
    assert stats["submits_accepted"] == 3 and stats["duplicate_submissions"] == 0


async def test_a_twin_of_an_unknown_job_is_not_submitted_on_its_own(sim, write_manifest, tmp_path):
    """Two jobs with one input share one request. When that submit is unknown, the twin is unknown too:
    sending it alone would pay again for the same request. With resubmit_unknown they share one new one."""
    account = sim(rate_accepted_5xx=1.0)
    manifest = write_manifest(f"""
        version: 1
        name: twins
        output_dir: ./out
        jobs:
          - id: twin-a
            model: {I2V}
            input: {{prompt: same, image: "https://example.com/a.png"}}
          - id: twin-b
            model: {I2V}
            input: {{prompt: same, image: "https://example.com/a.png"}}
        """)
    result = await account.run(manifest)
    assert result.counts == {"unknown": 2}
    assert (await account.run(manifest)).counts == {"unknown": 2}
    assert (await account.stats())["submits_accepted"] == 1

    await account.configure(rate_accepted_5xx=0.0)
    result = await account.run(manifest, resubmit_unknown=True)
    assert result.exit_code == 0 and result.counts == {"succeeded": 2}
    stats = await account.stats()
    assert stats["submits_accepted"] == 2 and stats["duplicate_submissions"] == 1
    assert output_of(tmp_path, "twin-a").read_bytes() == output_of(tmp_path, "twin-b").read_bytes()


async def test_a_killed_run_does_not_inflate_the_reported_wall_time(sim, write_manifest, tmp_path):
    """A run that never recorded its end (killed) counts until the last thing it journaled, not until
    the report is written: the idle time before the next run is not runner time."""
    account = sim(concurrency=2, job_seconds=0.05)
    manifest = write_manifest(simple_manifest(4))
    started = anyio.current_time()
    with anyio.CancelScope() as scope:

        def stop_after_two(event: dict[str, Any]) -> None:
            if event["event"] == "submitted" and event["job_id"] == "shot-1":
                scope.cancel()

        await run_batch(manifest, account.options(), on_event=stop_after_two)
    assert rows(tmp_path / "state.sqlite", "SELECT count(*) FROM runs WHERE finished_at IS NULL") == [(1,)]
    await anyio.sleep(1.0)  # nobody runs it for a while
    result = await account.run(manifest)
    elapsed = anyio.current_time() - started
    assert result.exit_code == 0
    summary = report(tmp_path)["summary"]
    assert summary["runs"] == 2
    assert 0 < summary["wall_seconds"] < elapsed - 0.9


async def test_every_submit_is_journaled_before_its_post_reaches_runcomfy(sim, write_manifest, tmp_path):
    """When a POST arrives at RunComfy, the state file on disk (read by another connection, so only
    committed rows count) already holds an attempt for it: a crash at that moment leaves an unknown
    job, never a paid request the journal does not know. And a request id is on disk before it is
    ever polled. Group commit is slowed to make both strict."""
    account = sim(concurrency=2)
    manifest = write_manifest(simple_manifest(6))
    state = tmp_path / "state.sqlite"
    arrivals: list[tuple[int, int]] = []  # (POSTs so far, attempts committed)
    polls: list[int] = []  # whether the polled request id was committed (1) or not (0)

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith("/v1/models/"):
            with contextlib.closing(sqlite3.connect(state)) as db:
                committed = db.execute("SELECT count(*) FROM attempts").fetchone()[0]
            arrivals.append((len(arrivals) + 1, committed))
        elif scope["type"] == "http" and scope["path"].startswith("/v1/requests/"):
            request_id = scope["path"].split("/")[3]
            with contextlib.closing(sqlite3.connect(state)) as db:
                [(known,)] = db.execute("SELECT count(*) FROM attempts WHERE request_id = ?", (request_id,))
            polls.append(known)
        await account.app(scope, receive, send)

    options = dataclasses.replace(
        account.options(flush_interval=30.0), transport=httpx.ASGITransport(app=watched)
    )
    result = await run_batch(manifest, options)
    assert result.exit_code == 0
    assert len(arrivals) == 6
    assert all(committed >= posts for posts, committed in arrivals), arrivals
    assert polls and all(polls), "a request id is committed the moment it comes back, before any poll"
