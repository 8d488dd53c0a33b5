"""Kill the runner anywhere, run it again, lose nothing, pay once.

The chaos test runs the real CLI as a subprocess against the simulator in its own process (so the
simulator outlives every runner it sees die) and SIGKILLs the runner at seeded random moments: during
start-up and validation, while a submit is on the wire (submits are slowed so kills land there), while
outputs download, while the report is written, anywhere. It runs the same command again until the run
ends by itself, then checks every invariant from the files, the state file and the simulator's books.
Between rounds it edits the manifest (changed, added and removed jobs) and keeps killing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    SimProcess,
    check_books,
    integrity,
    job_statuses,
    query,
    run_cli,
    start_cli,
    stop_leftovers,
    wait_for,
    write_jobs_manifest,
)

CHAOS_SEED = int(os.environ.get("CHAOS_SEED", "20261121"))


@pytest.fixture(autouse=True)
def _no_runner_outlives_its_test() -> Iterator[None]:
    yield
    stop_leftovers()


DURATION = 3  # seconds of video per job (the manifest's default)


@dataclass
class Profile:
    """One chaos set-up: the simulator's knobs and how many kills to aim for."""

    kills: int
    sim: dict[str, Any]
    outputs_per_job: int = 1


PROFILES = {
    # Slow submits put kills between a POST and its answer; GETs fail now and then; downloads are
    # slowed and cut short, so kills also land mid-download.
    "kill-anywhere": Profile(
        kills=22,
        outputs_per_job=2,
        sim={
            "rate_slow": 0.35,
            "slow_seconds": 0.35,
            "rate_5xx": 0.05,
            "rate_truncate": 0.1,
            "fault_endpoints": ["slow=submit,download", "5xx=status,result,download"],
        },
    ),
    # Submits that were accepted but answered 5xx or dropped: unknown jobs the runner must not resubmit
    # unless told to, and when told to, the only way a request gets paid twice.
    "accepted-but-unanswered": Profile(
        kills=14,
        sim={
            "rate_accepted_5xx": 0.15,
            "rate_accepted_drop": 0.1,
            "rate_slow": 0.3,
            "slow_seconds": 0.3,
            "fault_endpoints": ["slow=submit"],
        },
    ),
}


def round_jobs(round_no: int, rng: random.Random, previous: dict[str, str]) -> dict[str, str]:
    """The manifest of a round: 26 distinct jobs and a pair of twins first; later rounds change a few
    prompts, drop a few jobs and add new ones."""
    if not previous:
        jobs = {f"shot-{i:02d}": f"shot number {i}" for i in range(26)}
        jobs["twin-a"] = jobs["twin-b"] = "one request for two jobs"
        return jobs
    jobs = dict(previous)
    singles = sorted(j for j in jobs if not j.startswith("twin-"))
    for job_id in rng.sample(singles, 10):
        jobs[job_id] = f"{jobs[job_id]} (take {round_no})"
    for job_id in rng.sample(singles, 3):
        del jobs[job_id]
    for i in range(4):
        jobs[f"new-{round_no}-{i}"] = f"a new shot {i} of round {round_no}"
    return jobs


class Chaos:
    """Runs the CLI over and over against one state file, killing it as a seeded RNG says."""

    def __init__(self, tmp_path: Path, sim: SimProcess, rng: random.Random) -> None:
        self.dir = tmp_path
        self.sim = sim
        self.rng = rng
        self.state = tmp_path / "state.sqlite"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.runs = 0
        self.kills: dict[str, int] = {}
        self.unknown_endings = 0  # runs that ended by themselves with only unknown jobs left

    def args(self, resubmit_unknown: bool) -> list[str]:
        args = [
            "run",
            "m.yaml",
            "--base-url",
            self.sim.base_url,
            "--state",
            str(self.state),
            "--no-progress",
            "--read-timeout",
            "5s",
        ]
        return args + (["--resubmit-unknown"] if resubmit_unknown else [])

    def _max_attempt(self) -> int:
        rows = query(self.state, "SELECT coalesce(max(attempt_id), 0) FROM attempts")
        return int(rows[0][0]) if rows else 0

    def _kill_moment(self, proc: subprocess.Popen[str], how: str) -> bool:
        """Wait for the moment ``how`` names, then SIGKILL; False if the run ended first."""
        started = time.monotonic()
        if how == "early":  # start-up, validation, the manifest sync
            deadline = started + self.rng.uniform(0.0, 0.9)
        elif how == "anywhere":  # anything: submits, polls, downloads, the report, state writes
            deadline = started + self.rng.uniform(0.4, 2.2)
        else:
            deadline = started + 30
        floor = self._max_attempt()
        posts = self.sim.stats()["requests"]["submit"] if how == "posted" else 0
        extra = self.rng.uniform(0.0, 0.25)
        while proc.poll() is None:
            now = time.monotonic()
            if how == "posted" and self.sim.stats()["requests"]["submit"] > posts:
                deadline = min(deadline, now + extra / 5)  # a POST reached the server: its answer is near
            if how == "submit" and query(
                self.state,
                "SELECT 1 FROM attempts WHERE attempt_id > ? AND status = 'submitting' LIMIT 1",
                (floor,),
            ):
                deadline = min(deadline, now + extra)  # a POST is on the wire (or about to be)
            if how == "collect" and query(self.state, "SELECT 1 FROM jobs WHERE status = 'collecting'"):
                deadline = min(deadline, now + extra / 5)
            if now >= deadline:
                proc.kill()
                proc.wait()
                return True
            time.sleep(0.005)
        return False

    def run_round(self, kills_wanted: int) -> None:
        """Run until a run ends by itself with exit 0, killing up to ``kills_wanted`` runs on the way."""
        resubmit = False
        killed = 0
        for _ in range(200):
            self.runs += 1
            log = self.logs / f"run-{self.runs:03d}.log"
            proc = start_cli(self.args(resubmit), cwd=self.dir, log=log)
            if killed < kills_wanted:
                how = self.rng.choice(["early", "anywhere", "anywhere", "submit", "posted", "collect"])
                if self._kill_moment(proc, how):
                    killed += 1
                    self.kills[how] = self.kills.get(how, 0) + 1
                    continue
            code = proc.wait(120)
            if code == 0:
                return
            text = log.read_text()
            if code == 10:  # RunComfy answered, but two trial submits in a row did not: a clean stop
                assert "to resume, run:" in text, text
                continue
            assert code == 1, f"run {self.runs} exited {code}:\n{text}"
            left = {s for s in job_statuses(self.state).values() if s != "succeeded"}
            assert left == {"unknown"}, f"run {self.runs} left {left}:\n{text}"
            assert "--resubmit-unknown" in text, text
            self.unknown_endings += 1
            resubmit = True  # the user's knowing choice: submit them again, maybe paying twice
        raise AssertionError("the batch never finished")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("profile_name", list(PROFILES))
def test_kill_anywhere_and_run_again_loses_nothing_and_pays_once(profile_name, tmp_path, capsys):
    """SIGKILL at random moments (dozens of times), run again until done: every job finished once,
    every file whole and the simulator's bytes, the report complete, the state file intact, and no
    request paid twice except by a knowing --resubmit-unknown of a job that had been accepted."""
    profile = PROFILES[profile_name]
    rng = random.Random(f"{CHAOS_SEED}:{profile_name}")
    output_bytes = 8192
    started = time.monotonic()
    with SimProcess(
        tmp_path / "sim",
        concurrency=6,
        job_seconds=0.3,
        job_spread=0.3,
        output_bytes=output_bytes,
        outputs_per_job=profile.outputs_per_job,
        seed=rng.randrange(1 << 30),
        **profile.sim,
    ) as sim:
        chaos = Chaos(tmp_path, sim, rng)
        jobs: dict[str, str] = {}
        rounds = 0
        while sum(chaos.kills.values()) < profile.kills and rounds < 8:
            rounds += 1
            jobs = round_jobs(rounds, rng, jobs)
            write_jobs_manifest(tmp_path / "m.yaml", sorted(jobs.items()))
            per_round = max(4, (profile.kills - sum(chaos.kills.values())) // 2 + 1)
            chaos.run_round(per_round)
            inputs = {job_id: {"prompt": prompt, "duration": DURATION} for job_id, prompt in jobs.items()}
            books = check_books(
                chaos.state,
                tmp_path / "out",
                inputs,
                sim,
                output_bytes=output_bytes,
                outputs_per_job=profile.outputs_per_job,
            )
            assert not books.problems, "\n".join(books.problems)
        stats = sim.stats()
    removed = query(chaos.state, "SELECT count(*) FROM jobs WHERE in_manifest = 0")[0][0]
    cut_off = query(chaos.state, "SELECT count(*) FROM attempts WHERE error LIKE '%stopped while%'")[0][0]
    figures = {
        "profile": profile_name,
        "seed": CHAOS_SEED,
        "rounds": rounds,
        "runs": chaos.runs,
        "kills": sum(chaos.kills.values()),
        "kills_by_moment": chaos.kills,
        "unknown_attempts": books.unknown_attempts,
        "unknown_from_kills": cut_off,
        "knowing_resubmits": books.knowing_resubmits,
        "runs_ending_with_unknowns": chaos.unknown_endings,
        "accepted": books.accepted,
        "recorded": books.recorded,
        "duplicates": books.duplicates,
        "removed_jobs_kept": removed,
        "faults": {k: v for k, v in stats["faults"].items() if v},
        "seconds": round(time.monotonic() - started, 1),
    }
    with capsys.disabled():
        print("\nchaos:", json.dumps(figures))
    assert sum(chaos.kills.values()) >= profile.kills * 0.75
    assert removed > 0


# -- stopping on purpose, and a second runner -------------------------------------------------------------


def run_args(sim: SimProcess, *extra: str) -> list[str]:
    return ["run", "m.yaml", "--base-url", sim.base_url, "--state", "state.sqlite", "--no-progress", *extra]


def recorded(state: Path) -> int:
    found = query(state, "SELECT count(*) FROM attempts WHERE request_id IS NOT NULL")
    return int(found[0][0]) if found else 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_submitting_records_everything_and_exits_130_saying_how_to_resume(signum, tmp_path):
    """Ctrl-C (or SIGTERM) mid-run: no new submit, every submitted job journaled with its request id,
    exit 130 with the command to resume; the next run re-attaches them and submits the rest, once."""
    write_jobs_manifest(tmp_path / "m.yaml", [(f"shot-{i}", f"shot number {i}") for i in range(10)])
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", concurrency=2, job_seconds=0.5, output_bytes=4096) as sim:
        proc = start_cli(run_args(sim, "--concurrency", "4"), cwd=tmp_path)
        wait_for(lambda: recorded(state) >= 3, what="three submits")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == (  # the command as run: the same journal, the same API
            "runcomfy-batch: to resume, run: runcomfy-batch run m.yaml --state state.sqlite "
            f"--base-url {sim.base_url}"
        )
        assert "Traceback" not in err
        stats = sim.stats()
        assert integrity(state) == "ok"
        assert query(state, "SELECT count(*) FROM attempts WHERE status = 'submitting'") == [(0,)]
        assert stats["requests"]["submit"] == stats["submits_accepted"] == recorded(state) < 10
        in_flight = dict(
            query(
                state,
                "SELECT j.job_id, a.request_id FROM jobs j JOIN attempts a "
                "USING (attempt_id) WHERE j.status IN ('queued', 'running')",
            )
        )
        assert in_flight, "some jobs should have been left running at RunComfy"
        assert set(job_statuses(state).values()) <= {
            "pending",
            "queued",
            "running",
            "collecting",
            "succeeded",
        }

        done = run_cli(run_args(sim), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        stats = sim.stats()
    assert stats["submits_accepted"] == 10 and stats["duplicate_submissions"] == 0
    for job_id, request_id in in_flight.items():  # re-attached, not submitted again
        assert query(state, "SELECT request_id FROM attempts WHERE job_id = ?", (job_id,)) == [(request_id,)]


@pytest.mark.parametrize("how", ["second Ctrl-C", "SIGKILL"])
def test_a_stop_while_submits_are_on_the_wire_leaves_them_unknown_never_paid_twice_unasked(how, tmp_path):
    """Submits are slow; the runner is stopped hard while one is on the wire (the first of a run goes
    alone: a second Ctrl-C exits at once, like SIGKILL). The state stays whole; the next run calls that
    job unknown and never sends it; --resubmit-unknown sends it again, marked, and the simulator counts
    that duplicate."""
    write_jobs_manifest(tmp_path / "m.yaml", [(f"shot-{i}", f"shot number {i}") for i in range(3)])
    state = tmp_path / "state.sqlite"
    with SimProcess(
        tmp_path / "sim",
        job_seconds=0.1,
        output_bytes=4096,
        rate_slow=1.0,
        slow_seconds=2,
        fault_endpoints=["slow=submit"],
    ) as sim:
        proc = start_cli(run_args(sim), cwd=tmp_path)
        wait_for(lambda: sim.stats()["requests"]["submit"] == 1, what="the first POST at the simulator")
        if how == "SIGKILL":
            proc.kill()
            proc.wait(10)
        else:
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            assert proc.poll() is None, "the first Ctrl-C waits for the answers of submits on the wire"
            stopped = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
            assert proc.returncode == 130
            assert time.monotonic() - stopped < 1.5  # not the 2 s the slowed answers take
            assert "stopped at once; run the same command again to resume" in err
        assert integrity(state) == "ok"
        assert query(state, "SELECT status, count(*) FROM attempts GROUP BY status") == [("submitting", 1)]
        wait_for(lambda: sim.stats()["submits_accepted"] == 1, what="the slow submit to be accepted")
        sim.configure(rate_slow=0.0)

        again = run_cli(run_args(sim), cwd=tmp_path)
        assert again.returncode == 1
        assert "1 job(s) unknown: the submit may have been accepted and billed" in again.stderr
        assert "--resubmit-unknown" in again.stderr
        assert sorted(job_statuses(state).values()) == ["succeeded", "succeeded", "unknown"]
        assert sim.stats()["requests"]["submit"] == 3

        knowing = run_cli(run_args(sim, "--resubmit-unknown"), cwd=tmp_path)
        assert knowing.returncode == 0, knowing.stderr
        stats = sim.stats()
    assert stats["submits_accepted"] == 4 and stats["duplicate_submissions"] == 1
    assert query(state, "SELECT resubmit_of_unknown, count(*) FROM attempts GROUP BY 1") == [(0, 3), (1, 1)]


def test_a_second_runner_is_refused_with_exit_4_while_status_keeps_working(tmp_path):
    """While one runner holds the state file, another `run` exits 4 naming it, and `status` works; the
    lock dies with its holder, so after a SIGKILL the next run goes ahead and finishes the batch."""
    write_jobs_manifest(tmp_path / "m.yaml", [(f"shot-{i}", f"shot number {i}") for i in range(3)])
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", concurrency=1, job_seconds=1.5, output_bytes=4096) as sim:
        first = start_cli(run_args(sim), cwd=tmp_path)
        wait_for(lambda: recorded(state) >= 1, what="the first runner's submits")

        second = run_cli(run_args(sim), cwd=tmp_path)
        assert second.returncode == 4
        assert second.stderr.strip() == (
            f"runcomfy-batch: state.sqlite: another runner (pid {first.pid}) is running this manifest; "
            "wait for it, or use `status` to watch it"
        )
        status = run_cli(["status", "m.yaml", "--state", "state.sqlite", "--json"], cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert sum(json.loads(status.stdout)["counts"].values()) == 3
        assert first.poll() is None

        first.kill()
        first.wait(10)
        done = run_cli(run_args(sim), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        stats = sim.stats()
    assert stats["submits_accepted"] == 3 and stats["duplicate_submissions"] == 0


def test_cancel_cancels_the_queued_requests_and_names_the_ones_it_could_not(tmp_path):
    """After a stop, `cancel` cancels what is queued at RunComfy (never billed) and lists what runs on;
    a later `run` leaves cancelled jobs alone and `retry` runs them again."""
    write_jobs_manifest(tmp_path / "m.yaml", [(f"shot-{i}", f"shot number {i}") for i in range(3)])
    state = tmp_path / "state.sqlite"
    with SimProcess(tmp_path / "sim", concurrency=1, job_seconds=3, job_spread=0, output_bytes=4096) as sim:
        proc = start_cli(run_args(sim), cwd=tmp_path)
        wait_for(lambda: recorded(state) == 3, what="three submits")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130

        cancel = run_cli(
            ["cancel", "m.yaml", "--state", "state.sqlite", "--base-url", sim.base_url], cwd=tmp_path
        )
        assert cancel.returncode == 1, cancel.stderr
        running = query(
            state,
            "SELECT a.request_id FROM jobs j JOIN attempts a USING (attempt_id) WHERE j.job_id = 'shot-0'",
        )[0][0]
        assert cancel.stdout.splitlines() == [
            f"  shot-0 ({running}): not_cancellable (still running; it will be billed)",
            "cancelled 2 of 3 live request(s)",
        ]
        assert sim.stats()["cancels"] == {"cancelled": 2, "not_cancellable": 1}
        sim.configure(job_seconds=0.2)  # for the jobs submitted from now on

        after = run_cli(run_args(sim), cwd=tmp_path)
        assert after.returncode == 1
        assert job_statuses(state) == {"shot-0": "succeeded", "shot-1": "cancelled", "shot-2": "cancelled"}
        assert sim.stats()["submits_accepted"] == 3
        retry = run_cli(
            ["retry", "m.yaml", "--state", "state.sqlite", "--base-url", sim.base_url, "--no-progress"],
            cwd=tmp_path,
        )
        assert retry.returncode == 0, retry.stderr
        stats = sim.stats()
    assert stats["submits_accepted"] == 5
    assert stats["cost_charged_usd"] == pytest.approx(3 * DURATION * 0.084)  # cancelled ones cost nothing


def test_a_stop_during_a_rate_limited_submits_backoff_sends_nothing_more(tmp_path):
    """Submits answered 429 wait to be retried; Ctrl-C then stops at once: no POST after the signal,
    and the jobs are pending (never sent), not unknown."""
    write_jobs_manifest(tmp_path / "m.yaml", [(f"shot-{i}", f"shot number {i}") for i in range(2)])
    state = tmp_path / "state.sqlite"
    with SimProcess(
        tmp_path / "sim",
        job_seconds=0.1,
        output_bytes=4096,
        rate_429=1.0,
        retry_after_seconds=5,
        fault_endpoints=["429=submit"],
    ) as sim:
        proc = start_cli(run_args(sim), cwd=tmp_path)
        wait_for(lambda: sim.stats()["faults"]["429"] >= 2, what="both submits rate limited")
        posts = sim.stats()["requests"]["submit"]
        stopped = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        assert time.monotonic() - stopped < 3.0  # not the 5 s of Retry-After
        assert sim.stats()["requests"]["submit"] == posts
    assert job_statuses(state) == {"shot-0": "pending", "shot-1": "pending"}
    assert query(state, "SELECT DISTINCT status FROM attempts") == [("not_sent",)]
