"""Bad days at the API: every transient fault is ridden through, nothing is paid twice, and what
cannot be known (an accepted-but-unanswered submit) is reported as unknown, never resubmitted."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import simple_manifest

from runner.errors import EXIT_OUTAGE
from runner.simulator import expected_output_bytes

pytestmark = pytest.mark.anyio


def check_files(tmp_path: Path, size: int = 4096) -> int:
    """Every succeeded job's files match the simulator's bytes and the recorded hash; their count."""
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    checked = 0
    for job in report["jobs"]:
        if job["status"] != "succeeded":
            continue
        for index, output in enumerate(job["outputs"]):
            data = (tmp_path / "out" / output["path"]).read_bytes()
            assert data == expected_output_bytes(job["request_id"], index, size)
            assert len(data) == output["bytes"]
            checked += 1
    return checked


async def test_every_fault_at_once_loses_nothing_and_pays_once(sim, write_manifest, tmp_path):
    """10% 5xx, 5% 429 (half without Retry-After), 2% dropped connections, 2% truncated downloads,
    200-with-error_code, unknown status words and 5% failed jobs, all at once."""
    account = sim(
        concurrency=6,
        job_seconds=0.05,
        seed=7,
        rate_5xx=0.10,
        rate_429=0.025,
        rate_429_bare=0.025,
        rate_drop=0.02,
        rate_truncate=0.02,
        rate_error_200=0.02,
        rate_unknown_status=0.05,
        fail_rate=0.05,
        retry_after_seconds=0,
    )
    manifest = write_manifest(simple_manifest(40))
    events: list[dict] = []
    result = await account.run(manifest, events)
    for _ in range(3):
        # Two trial submits in a row without an answer stop a run as an outage (exit 10: it may be
        # paying for submits it never hears of). At this density of faults that happens now and then
        # (more often under load, as the dice fall in another order): the user runs it again.
        if result.exit_code != EXIT_OUTAGE:
            break
        result = await account.run(manifest, events)
    stats = await account.stats()
    assert stats["duplicate_submissions"] == 0
    assert sum(stats["faults"].values()) > 10, stats["faults"]
    counts = result.counts
    # A submit answered with a 5xx or a dropped connection may have been accepted: such jobs are
    # unknown, never silently resubmitted. Here none was accepted (no accepted_* faults), so every
    # accepted submit is a job that finished, and the unknown ones are exactly the cut-off submits.
    assert set(counts) <= {"succeeded", "failed", "unknown"}, (counts, result.exit_code, result.message)
    assert stats["submits_accepted"] == counts.get("succeeded", 0) + counts.get("failed", 0)
    assert counts.get("failed", 0) == stats["jobs"]["failed"]
    assert check_files(tmp_path) == counts["succeeded"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    for job in report["jobs"]:
        if job["status"] == "failed":
            assert job["error"]["error_code"] == 500001
        if job["status"] == "unknown":
            assert "may" in job["error"]["message"]

    # The user resubmits the unknown ones knowingly: now every job that could succeed did, and the
    # duplicate counter shows none of those unknown submits had in fact been accepted.
    again = await account.run(manifest, events, resubmit_unknown=True)
    for _ in range(3):  # resubmitting them, it may meet two failed submits in a row too: run it again
        if again.exit_code != EXIT_OUTAGE:
            break
        again = await account.run(manifest, events, resubmit_unknown=True)
    stats = await account.stats()
    assert set(again.counts) <= {"succeeded", "failed", "unknown"}, (again.counts, again.message)
    assert (
        again.counts.get("succeeded", 0) + again.counts.get("failed", 0) + again.counts.get("unknown", 0)
        == 40
    )
    assert stats["duplicate_submissions"] == 0
    assert again.counts.get("failed", 0) == stats["jobs"]["failed"]
    assert check_files(tmp_path) == again.counts["succeeded"]
    assert any(e["event"] == "retry" for e in events)
    assert any(e["event"] == "unknown_status" for e in events) == (stats["faults"]["unknown_status"] > 0)


async def test_an_unknown_status_word_is_logged_once_and_polled_on(sim, write_manifest):
    """Every live answer says "preparing": the runner logs the new word and keeps polling to the end."""
    # Jobs long enough that a poll finds one live (the first poll comes half a second in).
    account = sim(rate_unknown_status=1.0, concurrency=1, job_seconds=1.0)
    events: list[dict] = []
    result = await account.run(write_manifest(simple_manifest(3)), events)
    assert result.exit_code == 0
    assert (await account.stats())["faults"]["unknown_status"] > 0
    assert [e["status"] for e in events if e["event"] == "unknown_status"] == ["preparing"]


async def test_an_accepted_submit_answered_with_5xx_is_unknown_and_not_resubmitted(
    sim, write_manifest, tmp_path
):
    """The job exists at RunComfy but the answer was a 5xx: the runner reports it unknown, and a second
    run does not submit it again unless told to. Every submit is answered so, though reads are: the run
    stops after two such submits in a row (each may be paid; exit 10), the rest never sent."""
    account = sim(rate_accepted_5xx=1.0)
    manifest = write_manifest(simple_manifest(3))
    result = await account.run(manifest)
    assert result.exit_code == 10, result.message
    assert "to submits, though it answers reads" in result.message
    assert result.counts == {"unknown": 2, "pending": 1}
    assert (await account.stats())["submits_accepted"] == 2

    await account.configure(rate_accepted_5xx=0.0)
    again = await account.run(manifest)
    assert again.exit_code == 1
    assert again.counts == {"unknown": 2, "succeeded": 1}
    assert (await account.stats())["submits_accepted"] == 3  # nothing sent for unknown jobs

    knowingly = await account.run(manifest, resubmit_unknown=True)
    assert knowingly.exit_code == 0
    stats = await account.stats()
    assert stats["duplicate_submissions"] == 2  # exactly the jobs resubmitted knowingly
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        assert db.execute("SELECT count(*) FROM attempts WHERE resubmit_of_unknown=1").fetchone()[0] == 2


async def test_an_accepted_submit_whose_connection_drops_is_unknown(sim, write_manifest):
    account = sim(rate_accepted_drop=1.0)
    result = await account.run(write_manifest(simple_manifest(2)))
    assert result.counts == {"unknown": 2}
    assert (await account.stats())["duplicate_submissions"] == 0


async def test_a_submit_refused_before_acceptance_is_retried_safely(sim, write_manifest):
    """429s and connections dropped before anything was done are retried; still one request per job."""
    account = sim(rate_429=0.3, rate_drop=0.0, retry_after_seconds=0, fault_endpoints={"429": ("submit",)})
    result = await account.run(write_manifest(simple_manifest(10)))
    assert result.exit_code == 0
    stats = await account.stats()
    assert stats["faults"]["429"] > 0
    assert stats["submits_accepted"] == 10 and stats["duplicate_submissions"] == 0


async def test_repeated_429s_lower_concurrency_and_it_recovers(sim, write_manifest):
    """AIMD: a burst of 429s halves the requests in flight; successes raise it again."""
    account = sim(rate_429_bare=0.4, fault_endpoints={"429_bare": ("result",)})
    events: list[dict] = []
    result = await account.run(write_manifest(simple_manifest(30)), events)
    assert result.exit_code == 0
    changes = [e for e in events if e["event"] == "concurrency"]
    assert any(e["reason"].startswith("rate limited") for e in changes)
    assert any(e["reason"] == "recovering" for e in changes)


async def test_no_balance_stops_submitting_but_collects_what_runs(sim, write_manifest):
    """400002 after two jobs' worth: submitting stops, the two finish, exit 7 with one clear message."""
    account = sim(balance_usd=0.84 + 0.01)  # two 5-second reference jobs at $0.084/s
    result = await account.run(write_manifest(simple_manifest(5)), max_in_flight=1)
    assert result.exit_code == 7
    assert "no balance left" in result.message
    assert result.counts.get("succeeded") == 2
    assert result.counts.get("pending") == 3


async def test_a_revoked_token_stops_the_run_with_a_clear_error(sim, write_manifest):
    account = sim(revoked_tokens=("sim-token",), token="other")
    options = account.options()
    from dataclasses import replace

    result = await account.run(
        write_manifest(simple_manifest(2)), options=replace(options, token="sim-token")
    )
    assert result.exit_code == 6
    assert "400004" in result.message and "check RUNCOMFY_API_TOKEN" in result.message


async def test_a_truncated_download_is_detected_and_fetched_again(sim, write_manifest, tmp_path):
    account = sim(rate_truncate=0.5, seed=3)
    result = await account.run(write_manifest(simple_manifest(6)))
    assert result.exit_code == 0
    assert (await account.stats())["faults"]["truncate"] > 0
    assert check_files(tmp_path) == 6
    assert not list((tmp_path / "out").rglob("*.part"))


async def test_a_job_stuck_in_the_queue_is_cancelled_at_its_queue_deadline(sim, write_manifest):
    """One slot, long jobs, a short queue timeout: queued jobs are cancelled (and cost nothing)."""
    account = sim(concurrency=1, job_seconds=2.0, job_spread=0.0)
    result = await account.run(write_manifest(simple_manifest(3)), queue_timeout=0.3, job_timeout=10)
    stats = await account.stats()
    assert stats["cancels"]["cancelled"] >= 1
    assert result.counts.get("failed", 0) >= 1
    assert result.exit_code == 1


async def test_results_that_expire_before_download_make_the_job_expired(sim, write_manifest, monkeypatch):
    """The job finished but its files are gone (404) by the time we fetch: reported as expired. (Its
    result is gone too: a 404 this soon after the submit is asked again for the grace, cut to a second
    here from 30.)"""
    from runner import defaults

    monkeypatch.setattr(defaults, "STATUS_NOT_FOUND_GRACE", 1.0)
    account = sim(expire_seconds=0.0)
    result = await account.run(write_manifest(simple_manifest(2)))
    assert result.exit_code == 1
    assert set(result.counts) <= {"expired", "failed"}


async def test_slow_answers_time_out_and_are_retried(sim, write_manifest, tmp_path):
    """Over loopback (timeouts need real sockets): answers slower than the read timeout on polls and
    downloads time out, are retried, and every job still finishes with the right bytes."""
    from dataclasses import replace

    import httpx

    from runner.simulator import running_server

    account = sim(rate_slow=0.3, slow_seconds=1.0, seed=5, fault_endpoints={"slow": ("result", "download")})
    events: list[dict] = []
    with running_server(account.config) as base_url:
        options = replace(
            account.options(read_timeout=0.2, stall_timeout=0.2), base_url=base_url, transport=None
        )
        result = await account.run(write_manifest(simple_manifest(6)), events, options=options)
        async with httpx.AsyncClient() as client:
            stats = (await client.get(base_url + "/_sim/stats")).json()
    assert result.exit_code == 0, result.message
    assert stats["faults"]["slow"] > 0
    assert any("ReadTimeout" in e.get("error", "") for e in events if e["event"] == "retry")
    assert check_files(tmp_path) == 6


def test_retry_after_is_read_as_seconds_or_an_http_date():
    import email.utils
    import time

    from runner.api.answers import parse_retry_after

    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31
    assert parse_retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0
