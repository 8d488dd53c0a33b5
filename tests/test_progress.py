"""What a person sees during a run, fed with the events of real runs against the simulator: the live
display (rich, captured as a terminal), plain lines, JSON lines, and the CLI's choice between them."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import simple_manifest
from rich.console import Console

from runner.batch import run_batch
from runner.reports.progress import LineLog, LiveProgress, Tally, progress_sink
from runner.simulator import SimulatorConfig, running_server

pytestmark = pytest.mark.anyio

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def tally_of(events: list[dict[str, Any]], *, check: bool = True) -> Tally:
    """Feed events to a Tally; with ``check``, every job is in exactly one bucket after every event."""
    tally = Tally()
    for event in events:
        tally.apply(event)
        if check and tally.started_at is not None:
            assert sum(tally.counts.values()) == tally.jobs, (event, tally.counts)
            assert min(tally.counts.values()) >= 0, (event, tally.counts)
    return tally


async def test_the_tally_follows_a_run_with_failures_retries_and_twins(sim, write_manifest):
    """Counts always add up to the jobs, and settle on the state file's counts and charged cost."""
    twins = '  - id: twin-a\n    input: {prompt: "same"}\n  - id: twin-b\n    input: {prompt: "same"}\n'
    manifest = write_manifest(simple_manifest(12) + twins)
    account = sim(concurrency=3, fail_rate=0.3, seed=4, rate_429=0.15)
    events: list[dict[str, Any]] = []
    result = await account.run(manifest, events, auto_resubmit_failed=1)
    kinds = {e["event"] for e in events}
    assert {"start", "submitted", "completed", "succeeded", "failed", "resubmit", "finish"} <= kinds
    assert "concurrency" in kinds  # the 429s slowed it down

    tally = tally_of(events)
    assert tally.counts["done"] == result.counts.get("succeeded", 0)
    assert tally.counts["failed"] == result.counts.get("failed", 0)
    assert tally.spent_usd == pytest.approx(result.cost_usd)
    # Before the finish event settles it, the events alone already told the same story.
    before = tally_of(events[:-1])
    assert before.counts == tally.counts
    assert before.spent_usd == pytest.approx(result.cost_usd)


async def test_the_tally_places_re_attached_jobs_of_an_interrupted_run(sim, write_manifest):
    """A run stopped with jobs in flight, then resumed: the second run's display starts from where the
    state file says each job is, and ends where the run ends."""
    manifest = write_manifest(simple_manifest(10))
    account = sim(concurrency=2, job_seconds=0.15)
    first: list[dict[str, Any]] = []
    with anyio.CancelScope() as scope:

        def stop_after_four(event: dict[str, Any]) -> None:
            first.append(event)
            if sum(e["event"] == "submitted" for e in first) >= 4:
                scope.cancel()

        await run_batch(manifest, account.options(), on_event=stop_after_four)
    second: list[dict[str, Any]] = []
    result = await account.run(manifest, second)
    start = next(e for e in second if e["event"] == "start")
    assert start["event"] == "start" and start["reattached"] >= 1, start
    assert result.counts == {"succeeded": 10}
    tally = tally_of(second)
    assert tally.counts["done"] == 10 and tally.remaining == 0
    assert (await account.stats())["duplicate_submissions"] == 0


async def test_the_live_display_shows_counts_rate_spend_concurrency_and_notable_events(sim, write_manifest):
    manifest = write_manifest(simple_manifest(8))
    account = sim(concurrency=2, fail_rate=0.3, seed=4, rate_429=0.2)
    events: list[dict[str, Any]] = []
    result = await account.run(manifest, events)
    failed = result.counts.get("failed", 0)
    assert failed and result.counts["succeeded"]

    screen = Terminal()
    console = Console(file=screen, force_terminal=True, width=120, color_system="standard")
    slowed = next(i for i, e in enumerate(events) if e["event"] == "concurrency")
    with LiveProgress(console, title="nightly", refresh_per_second=50) as display:
        for event in events[: slowed + 1]:
            display(event)
        assert "HTTP concurrency now" in display.log[-1] and "rate limited (429)" in display.log[-1]
        for event in events[slowed + 1 : -1]:
            display(event)
        mid = display.tally
        assert mid.counts["done"] == result.counts["succeeded"]
        frame = Console(file=io.StringIO(), width=120)
        with frame.capture() as capture:
            frame.print(display.render())
        text = capture.get()
        display(events[-1])
    assert re.search(r"nightly .* 8/8 +100%", text), text
    assert f"done {result.counts['succeeded']}" in text and f"failed {failed}" in text
    assert "running 0" in text and "queued 0" in text and "waiting 0" in text
    assert f"spent ${result.cost_usd:,.2f}" in text
    assert "jobs/min" in text and "in flight 0/auto" in text and "http " in text
    assert display.log and display.log[-1][:100] in text  # the log of notable events, under the bar
    # Failures were printed above the display, so they stay on the terminal after it is gone.
    shown = ANSI.sub("", screen.getvalue())
    for event in events:
        if event["event"] == "failed":
            assert f"{event['job_id']}: failed: the generation failed (simulated)" in shown


def test_the_live_display_never_prints_the_token_or_reads_text_as_markup(monkeypatch):
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", secret)
    screen = Terminal()
    console = Console(file=screen, force_terminal=True, width=200)
    with LiveProgress(console, title="t", refresh_per_second=50) as display:
        display(
            {"event": "start", "time": 0, "jobs": 1, "to_submit": 1, "waiting": 1, "counts": {"pending": 1}}
        )
        display(
            {
                "event": "failed",
                "time": 0,
                "job_id": "j1",
                "error": f"[bold red]boom[/] with {secret} and Authorization: Bearer {secret}",
            }
        )
        display({"event": "stopping", "time": 0, "reason": "interrupted: finishing in-flight submits"})
        # The cursor is shown again at once: a second Ctrl-C leaves without tidying the terminal.
        assert "\x1b[?25h" in screen.getvalue()  # (rich shows it otherwise only when the display stops)
    out = ANSI.sub("", screen.getvalue())
    assert secret not in out
    assert "j1: failed: [bold red]boom[/] with *** and Authorization: Bearer ***" in out
    assert "stopping: interrupted: finishing in-flight submits" in out


async def test_plain_lines_are_quiet_on_success_and_name_every_failure(sim, write_manifest):
    manifest = write_manifest(simple_manifest(6))
    ok_events: list[dict[str, Any]] = []
    await sim().run(manifest, ok_events)
    quiet = io.StringIO()
    log = LineLog(quiet)
    for event in ok_events:
        log(event)
    assert quiet.getvalue() == ""

    verbose = io.StringIO()
    log = LineLog(verbose, verbose=True)
    for event in ok_events:
        log(event)
    lines = [line for line in verbose.getvalue().splitlines() if " price of " not in line]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d starting: 6 job\(s\); 6 to submit, 0 re-attached, 0 to download, "
        r"0 already done",
        lines[0],
    )
    assert sum(" submitted as " in line for line in lines) == 6
    assert sum(line.endswith(": done") for line in lines) == 6
    assert lines[-1].endswith("finished (6 succeeded); exit code 0")


async def test_plain_lines_show_failures_and_budget_holds_once(sim, write_manifest, tmp_path):
    manifest = write_manifest(simple_manifest(6, extra="budget_usd: 1.0\n"))
    events: list[dict[str, Any]] = []
    result = await sim(fail_rate=0.5, seed=7).run(manifest, events, budget_partial=True)
    assert result.counts.get("held", 0) >= 2 and result.counts.get("failed")
    out = io.StringIO()
    log = LineLog(out)
    for event in events:
        log(event)
    lines = out.getvalue().splitlines()
    failed = [e["job_id"] for e in events if e["event"] == "failed"]
    assert [line.split(" ", 1)[1] for line in lines if ": failed" in line] == [
        f"{job}: failed: the generation failed (simulated)" for job in failed
    ]
    held = [line for line in lines if "held by the budget cap" in line]
    assert len(held) == 1 and held[0].endswith("(further held jobs are not listed)")
    assert len(lines) == len(failed) + 1


async def test_json_lines_are_one_event_each_and_redacted(sim, write_manifest, monkeypatch):
    secret = "sk-json-0123456789"
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", secret)
    manifest = write_manifest(simple_manifest(3))
    events: list[dict[str, Any]] = []
    await sim().run(manifest, events)
    events.append(
        {"event": "retry", "time": 1.0, "error": f"echo of Bearer {secret}", "delay": 0.1, "attempt": 2}
    )
    out = io.StringIO()
    log = LineLog(out, json_lines=True)
    for event in events:
        log(event)
    parsed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [p["event"] for p in parsed] == [e["event"] for e in events]
    assert next(p for p in parsed if p["event"] == "start")["jobs"] == 3
    assert parsed[-2]["counts"] == {"succeeded": 3}
    assert secret not in out.getvalue() and parsed[-1]["error"] == "echo of Bearer ***"


def test_the_sink_is_live_only_on_a_terminal_and_never_with_json():
    with progress_sink(stream=Terminal()) as sink:
        assert isinstance(sink, LiveProgress)
    with progress_sink(stream=Terminal(), live=False) as sink:
        assert isinstance(sink, LineLog) and not sink.json_lines
    with progress_sink(stream=io.StringIO()) as sink:
        assert isinstance(sink, LineLog) and not sink.json_lines
    with progress_sink(stream=Terminal(), json_log=True) as sink:
        assert isinstance(sink, LineLog) and sink.json_lines


def cli(*args: str, cwd: Path, base_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    env["RUNCOMFY_API_TOKEN"] = "sim-token"
    return subprocess.run(
        [sys.executable, "-m", "runner", *args, "--base-url", base_url],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_run_prints_plain_or_json_lines_and_a_summary_that_says_what_to_do(write_manifest, tmp_path):
    """Not a terminal: plain lines (failures only), then the summary naming each failed job and the
    command that re-runs them; --json-log: only JSON objects on stderr."""
    write_manifest(simple_manifest(5, name="cli"))
    with running_server(SimulatorConfig(concurrency=3, job_seconds=0.05, fail_rate=0.5, seed=7)) as base_url:
        plain = cli("run", "m.yaml", cwd=tmp_path, base_url=base_url)
        state = tmp_path / "out" / ".runcomfy-batch" / "journal.sqlite"
        state.unlink()
        as_json = cli(
            "run",
            "m.yaml",
            "--json-log",
            "--state",
            str(tmp_path / "other.sqlite"),
            cwd=tmp_path,
            base_url=base_url,
        )
    assert plain.returncode == 1, plain.stderr
    assert plain.stdout == ""
    lines = plain.stderr.splitlines()
    failures = [line for line in lines if re.fullmatch(r"\d\d:\d\d:\d\d shot-\d: failed: .*", line)]
    assert failures
    summary = next(i for i, line in enumerate(lines) if "did not succeed" in line)
    assert re.search(r"; took [\d.]+s; report: out/report.html$", lines[summary]), lines[summary]
    assert sorted(lines[summary + 1 : -1]) == sorted("  " + line.split(" ", 1)[1] for line in failures)
    # The hint repeats the API (and below, the journal) the run used: it works as printed.
    assert (
        lines[-1]
        == f"runcomfy-batch: to run the failed jobs again: runcomfy-batch retry m.yaml --base-url {base_url}"
    )

    assert as_json.returncode == 1
    stderr = as_json.stderr.splitlines()
    objects = [json.loads(line) for line in stderr if line.startswith("{")]
    assert objects[-1]["event"] == "finish"
    assert [o["event"] for o in objects].count("start") == 1
    assert {o["event"] for o in objects} >= {"submitted", "succeeded", "failed"}
    rest = stderr[len(objects) :]  # after the events, only the summary block
    assert all(line.startswith("{") for line in stderr[: len(objects)])
    other = tmp_path / "other.sqlite"
    assert "did not succeed" in rest[0]
    assert rest[-1].endswith(f"runcomfy-batch retry m.yaml --state {other} --base-url {base_url}")
