"""An API that stops answering: at the start of a run, in its middle, twice in one run, or not there at
all. The run holds its submits back and probes the API until it answers, costs at most the few submits
that were on the wire (``unknown``), never hangs, and stops cleanly (exit 10, the command to resume)
when the outage outlasts ``--outage-max-time``.

The outages are real: the simulator's faults switched on and off while the run goes on (every endpoint
answers 5xx, or drops the connection), a simulator process frozen with SIGSTOP (requests time out) and
thawed, and a port where nothing listens until a simulator starts there."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import InProcess, simple_manifest
from helpers import SimProcess, check_books, cli_env, job_statuses, journal, query, run_cli, wait_for

from runner.batch import BatchResult, run_batch

pytestmark = pytest.mark.anyio

JOBS = 40


def outage_switch(
    account: InProcess, fault: str, *, starts_after: int, lasts_probes: int, times: int = 1
) -> tuple[Callable[[dict[str, Any]], None], list[dict[str, Any]]]:
    """An event sink that switches ``rate_<fault>`` (every endpoint) on once ``starts_after`` jobs were
    submitted, and off again after the run has probed the API ``lasts_probes`` times, ``times`` times."""
    sim = account.app.state.sim
    events: list[dict[str, Any]] = []
    state = {"on": False, "done": 0, "probes": 0, "submitted_at_end": 0}

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        kind = event["event"]
        submitted = sum(1 for e in events if e["event"] == "submitted")
        if not state["on"] and state["done"] < times and kind == "submitted":
            if submitted >= state["submitted_at_end"] + starts_after:
                sim.reconfigure({f"rate_{fault}": 1.0})
                state.update(on=True, probes=0)
        elif state["on"] and kind == "outage":
            state["probes"] += 1
            if state["probes"] >= lasts_probes:
                sim.reconfigure({f"rate_{fault}": 0.0})
                state.update(on=False, done=state["done"] + 1, submitted_at_end=submitted)

    return on_event, events


def outages(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "api_back"]


async def finish_knowingly(account: InProcess, manifest: Path, first: BatchResult) -> BatchResult:
    """At most one knowing --resubmit-unknown run finishes every job."""
    if first.exit_code == 0:
        return first
    again = await account.run(manifest, resubmit_unknown=True)
    assert again.exit_code == 0, (again.message, again.counts)
    return again


async def test_an_outage_at_the_start_costs_at_most_one_unknown_job(sim, write_manifest):
    """Every endpoint answers 5xx from the first request: one submit goes (nothing has answered yet), it
    is unknown, and no other is sent until the API answers again; then every job runs."""
    account = sim(concurrency=4, seed=1)
    sim_state = account.app.state.sim
    sim_state.reconfigure({"rate_5xx": 1.0})
    events: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event["event"] == "outage" and event["attempt"] == 20:
            sim_state.reconfigure({"rate_5xx": 0.0})

    manifest = write_manifest(simple_manifest(JOBS))
    first = await run_batch(manifest, account.options(), on_event=on_event)
    stats = await account.stats()
    assert stats["requests"]["submit"] == JOBS  # each job once: the unknown one is not sent again
    assert first.counts.get("unknown", 0) <= 1, first.counts
    assert first.counts.get("succeeded", 0) == JOBS - first.counts.get("unknown", 0)
    [back] = outages(events)
    assert back["unknown"] == first.counts.get("unknown", 0)
    lines = [e["problem"] for e in events if e["event"] == "outage"]
    assert lines and all(line == "sim.local answers HTTP " + line[-3:] for line in lines), lines[:3]
    done = await finish_knowingly(account, manifest, first)
    assert done.counts == {"succeeded": JOBS}
    assert (await account.stats())["duplicate_submissions"] == 0  # a 5xx before anything was done


@pytest.mark.parametrize("fault", ["5xx", "drop"])
async def test_an_outage_in_the_middle_costs_at_most_four_unknown_jobs(fault, sim, write_manifest):
    """The API fails every request (5xx, or closes the connection) once a third of the jobs are in:
    at most the four submits on the wire are unknown; the run waits, goes on, and ends."""
    account = sim(concurrency=16, job_seconds=0.3, seed=2)
    on_event, events = outage_switch(account, fault, starts_after=10, lasts_probes=15)
    manifest = write_manifest(simple_manifest(JOBS))
    first = await run_batch(manifest, account.options(), on_event=on_event)
    unknown = first.counts.get("unknown", 0)
    [back] = outages(events)
    assert back["unknown"] == unknown <= 4, (first.counts, back)
    assert first.counts.get("succeeded", 0) == JOBS - unknown
    done = await finish_knowingly(account, manifest, first)
    assert done.counts == {"succeeded": JOBS}
    assert (await account.stats())["duplicate_submissions"] == 0


async def test_two_outages_in_one_run_each_cost_at_most_four(sim, write_manifest):
    account = sim(concurrency=16, job_seconds=0.3, seed=3)
    on_event, events = outage_switch(account, "5xx", starts_after=10, lasts_probes=10, times=2)
    manifest = write_manifest(simple_manifest(JOBS))
    first = await run_batch(manifest, account.options(), on_event=on_event)
    spells = outages(events)
    assert len(spells) == 2, [e["event"] for e in events if e["event"] in ("outage", "api_back")]
    assert all(spell["unknown"] <= 4 for spell in spells), spells
    assert first.counts.get("unknown", 0) == sum(spell["unknown"] for spell in spells)
    done = await finish_knowingly(account, manifest, first)
    assert done.counts == {"succeeded": JOBS}
    assert (await account.stats())["duplicate_submissions"] == 0


async def test_an_outage_longer_than_its_bound_stops_the_run_cleanly(sim, write_manifest):
    """The API never comes back: after --outage-max-time the run stops (exit 10), says what was wrong
    and for how long; the jobs submitted before rest in flight and the next run collects them."""
    account = sim(concurrency=2, job_seconds=0.3, seed=4)
    on_event, events = outage_switch(account, "5xx", starts_after=3, lasts_probes=10**6)
    manifest = write_manifest(simple_manifest(8))
    started = time.monotonic()
    first = await run_batch(manifest, account.options(outage_max_time=1.0), on_event=on_event)
    assert time.monotonic() - started < 15
    assert first.exit_code == 10, first.message
    assert "sim.local answers HTTP" in first.message and "longer than --outage-max-time" in first.message
    assert "run the same command again to resume" in first.message
    assert first.counts.get("unknown", 0) <= 4
    assert first.report_paths["json"].exists()

    account.app.state.sim.reconfigure({"rate_5xx": 0.0})
    done = await finish_knowingly(account, manifest, await account.run(manifest))
    assert done.counts == {"succeeded": 8}
    assert (await account.stats())["duplicate_submissions"] == 0


# -- across process boundaries ----------------------------------------------------------------------
@pytest.fixture
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def runners() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_nothing_listening_stops_after_the_outage_bound_and_says_why(tmp_path, free_port):
    """With nothing at --base-url the run says the connection is refused (never "rate limited"),
    keeps trying for as long as --retry-max-time (the outage bound's default), and stops: exit 10, the
    command to resume, nothing sent, no job unknown."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(simple_manifest(3))
    started = time.monotonic()
    done = run_cli(
        [
            "run",
            "m.yaml",
            "--base-url",
            f"http://127.0.0.1:{free_port}",
            "--retry-max-time",
            "3s",
            "--no-progress",
        ],
        cwd=tmp_path,
        timeout=60,
    )
    took = time.monotonic() - started
    assert done.returncode == 10, done.stderr
    assert 3 <= took < 20
    err = done.stderr
    assert f"cannot reach 127.0.0.1:{free_port}: connection refused, retrying for" in err
    assert "rate limited" not in err and "429" not in err and "Traceback" not in err
    assert "longer than --outage-max-time" in err
    assert "to resume, run: runcomfy-batch run m.yaml" in err
    state = journal(tmp_path)
    assert set(job_statuses(state).values()) == {"pending"}
    assert query(state, "SELECT count(*) FROM attempts WHERE status='unknown'") == [(0,)]


def test_a_run_started_before_the_api_goes_on_once_it_listens(tmp_path, free_port, runners):
    """The runner starts with nothing listening; a simulator process starts on that port a moment
    later: every job runs once, none unknown."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(simple_manifest(6))
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        runner = subprocess.Popen(
            [sys.executable, "-m", "runner", "run", "m.yaml", "--base-url", f"http://127.0.0.1:{free_port}",
             "--no-progress", "--outage-max-time", "2m"],
            cwd=tmp_path, env=cli_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    runners.append(runner)
    wait_for(lambda: "connection refused" in log.read_text(), timeout=30, what="the outage line")
    with SimProcess(tmp_path / "sim", port=free_port, job_seconds=0.2, output_bytes=4096) as sim:
        assert runner.wait(60) == 0, log.read_text()
        stats = sim.stats()
    assert stats["submits_accepted"] == 6 and stats["duplicate_submissions"] == 0
    text = log.read_text()
    assert f"127.0.0.1:{free_port} answers again after" in text
    assert "unknown" not in text


def test_an_api_that_hangs_mid_run_and_comes_back(tmp_path, runners):
    """The simulator's process is frozen (SIGSTOP) in the middle of a run: requests time out; the submits
    on the wire then are unknown (at most four), the others wait; it is thawed (SIGCONT) and the run
    finishes. A knowing --resubmit-unknown finishes the rest, duplicates only among those unknown."""
    jobs = {f"shot-{i}": {"prompt": f"shot number {i}", "duration": 5} for i in range(16)}
    manifest = tmp_path / "m.yaml"
    manifest.write_text(simple_manifest(16))
    with SimProcess(tmp_path / "sim", job_seconds=0.3, concurrency=4, output_bytes=4096) as sim:
        assert sim.proc is not None
        log = tmp_path / "run.log"
        args = ["run", "m.yaml", "--base-url", sim.base_url, "--no-progress", "--json-log",
                "--read-timeout", "1s", "--connect-timeout", "1s", "--outage-max-time", "2m"]  # fmt: skip
        with open(log, "w") as out:
            runner = subprocess.Popen(
                [sys.executable, "-m", "runner", *args],
                cwd=tmp_path, env=cli_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        runners.append(runner)
        wait_for(lambda: sim.stats()["submits_accepted"] >= 6, timeout=60, what="a third of the jobs")
        os.kill(sim.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: log.read_text().count('"event": "outage"') >= 3, timeout=60, what="probes")
        finally:
            os.kill(sim.proc.pid, signal.SIGCONT)
        code = runner.wait(120)
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        backs = [e for e in events if e["event"] == "api_back"]
        assert backs and all(e["unknown"] <= 4 for e in backs), backs
        unknown = sum(1 for e in events if e["event"] == "unknown")
        assert unknown <= 4 * len(backs)
        assert code == (1 if unknown else 0), log.read_text()[-2000:]
        if unknown:
            again = run_cli([*args, "--resubmit-unknown"], cwd=tmp_path, timeout=120)
            assert again.returncode == 0, again.stderr
        books = check_books(journal(tmp_path), tmp_path / "out", jobs, sim, output_bytes=4096)
    assert not books.problems, books.problems
    assert books.duplicates <= unknown
