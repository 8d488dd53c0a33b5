"""Folders the run cannot write, and pipes whose reader goes away.

A read-only or full output or state folder is one clear line naming the path, exit 9, no traceback,
and nothing paid is lost: the next run picks up every job. Tests run as root here, where ``chmod``
does not stop a write, so the failures are made the ways that do stop root: ``chattr +i`` (an
immutable folder; skipped where the file system has no such flag), a file where the folder must be,
and a per-process file-size limit (``RLIMIT_FSIZE``, ``ulimit -f``: a write past it fails with EFBIG,
as a full disk fails with ENOSPC) on the runner's process.

A closed stdout or stderr (``run … --json-log 2>&1 | head -3``) neither stops the run nor makes any
job unknown: the pipes are real, closed by real reader processes."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import simple_manifest
from helpers import SimProcess, check_books, cli_env, job_statuses, journal, query

JOBS = {f"shot-{i}": {"prompt": f"shot number {i}", "duration": 5} for i in range(6)}


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """Make a folder immutable with ``chattr +i`` (undone after the test); skip where unsupported."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    made: list[Path] = []

    def make(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
        made.append(folder)

    yield make
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    with SimProcess(tmp_path / "sim", job_seconds=0.2, concurrency=3, output_bytes=4096) as process:
        yield process


def run(
    tmp_path: Path, sim: SimProcess, *flags: str, file_limit: int | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    """The CLI against ``sim``, with a per-process file-size limit if given (bytes)."""

    def limit() -> None:
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    args = [sys.executable, "-m", "runner", "run", "m.yaml", "--base-url", sim.base_url, "--no-progress"]
    return subprocess.run(
        [*args, *flags],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120, preexec_fn=limit, **kw,
    )  # fmt: skip


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(simple_manifest(len(JOBS)))
    return path


def one_clear_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 9, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    first = done.stderr.strip().splitlines()[0]
    for word in words:
        assert word in first, first


def test_a_read_only_output_folder_is_one_line_before_anything_is_sent(tmp_path, manifest, sim, immutable):
    immutable(tmp_path / "out")
    done = run(tmp_path, sim)
    one_clear_line(done, f"cannot write into the output folder {tmp_path / 'out'}", "Operation not permitted")
    assert sim.stats()["requests"]["submit"] == 0


def test_a_read_only_state_folder_is_one_line_before_anything_is_sent(tmp_path, manifest, sim, immutable):
    immutable(tmp_path / "state")
    done = run(tmp_path, sim, "--state", "state/journal.sqlite")
    one_clear_line(done, "cannot write into the state folder state", "Operation not permitted")
    assert sim.stats()["requests"]["submit"] == 0


def test_a_file_where_the_output_folder_must_be_is_one_line(tmp_path, manifest, sim):
    (tmp_path / "out").write_text("a file")
    done = run(tmp_path, sim)
    one_clear_line(done, "a file is where a folder must be", str(tmp_path / "out"))


def test_an_output_folder_that_fills_up_stops_the_run_and_loses_nothing(tmp_path, manifest):
    """Outputs of 10 MB against a 5 MB limit on the runner's files (its journal stays below it): the
    downloads of paid jobs fail, the run stops at once (exit 9, the path and the resume command), and
    the next run downloads every one of them without submitting anything again."""
    with SimProcess(tmp_path / "sim", job_seconds=0.2, concurrency=3, output_bytes=10_000_000) as big:
        done = run(tmp_path, big, file_limit=5_000_000)
        one_clear_line(done, f"cannot write into the output folder {tmp_path / 'out'}", "File too large")
        assert "to resume, run: runcomfy-batch run m.yaml" in done.stderr
        paid = big.stats()["submits_accepted"]
        assert paid > 0
        assert "succeeded" not in set(job_statuses(journal(tmp_path)).values())

        again = run(tmp_path, big)
        assert again.returncode == 0, again.stderr
        books = check_books(journal(tmp_path), tmp_path / "out", JOBS, big, output_bytes=10_000_000)
    assert not books.problems, books.problems
    assert books.accepted == len(JOBS) and books.duplicates == 0 and books.unknown_attempts == 0


def test_a_state_folder_that_fills_up_stops_the_run_and_loses_nothing(tmp_path, manifest, sim):
    """The journal cannot grow past 250 KB: the run stops (exit 9, the state file named); every paid
    request is journaled or reported unknown, and the next runs (one knowing --resubmit-unknown at
    most) finish every job."""
    done = run(tmp_path, sim, file_limit=250_000)
    one_clear_line(done, f"cannot write the state file {journal(tmp_path)}")
    assert sim.stats()["submits_accepted"] > 0  # it filled up with jobs paid and in flight
    assert "to resume, run: runcomfy-batch run m.yaml" in done.stderr
    again = run(tmp_path, sim)
    if again.returncode != 0:
        assert "--resubmit-unknown" in again.stderr, again.stderr
        again = run(tmp_path, sim, "--resubmit-unknown")
    assert again.returncode == 0, again.stderr
    books = check_books(journal(tmp_path), tmp_path / "out", JOBS, sim, output_bytes=4096)
    assert not books.problems, books.problems


def test_a_closed_stderr_pipe_neither_stops_the_run_nor_makes_a_job_unknown(tmp_path, manifest, sim):
    """``run … --json-log 2>&1 | head -3``: head exits after three lines; the run finishes, exit 0."""
    read_end, write_end = os.pipe()
    reader = subprocess.Popen(["head", "-3"], stdin=read_end, stdout=subprocess.PIPE)
    runner = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", "m.yaml", "--base-url", sim.base_url, "--json-log", "-v"],
        cwd=tmp_path, env=cli_env(), stdout=write_end, stderr=subprocess.STDOUT,
    )  # fmt: skip
    os.close(read_end)  # the two processes hold the only ends now
    os.close(write_end)
    head, _ = reader.communicate(timeout=60)
    assert len(head.splitlines()) == 3
    assert runner.wait(120) == 0
    state = journal(tmp_path)
    assert set(job_statuses(state).values()) == {"succeeded"}
    assert query(state, "SELECT count(*) FROM attempts WHERE status != 'succeeded'") == [(0,)]
    assert sim.stats()["submits_accepted"] == len(JOBS)


def test_a_closed_stdout_pipe_does_not_change_the_outcome(tmp_path, manifest, sim):
    """The summary goes to a pipe whose reader has exited: exit 0, no traceback, every job done."""
    read_end, write_end = os.pipe()
    subprocess.run(["true"], stdin=read_end, check=True)  # the reader, gone before anything is written
    os.close(read_end)
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", "m.yaml", "--base-url", sim.base_url, "--no-progress"],
        cwd=tmp_path, env=cli_env(), stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
    )  # fmt: skip
    os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert set(job_statuses(journal(tmp_path)).values()) == {"succeeded"}
