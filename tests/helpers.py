"""Test helpers for runs that cross process boundaries: a simulator in its own process (it outlives a
killed runner), the CLI as a subprocess, and the checks that say a state file, its output folder and
the simulator's books agree.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runner.simulator import expected_output_bytes

TOKEN = "sim-token"


class SimProcess:
    """``python -m runner.simulator`` on a free loopback port, as a separate process.

    Use as a context manager; ``stats()``, ``configure(**changes)`` and ``request(id)`` reach its
    ``/_sim/*`` controls."""

    def __init__(self, folder: Path, **knobs: Any) -> None:
        self.folder = folder
        self.knobs = knobs
        self.ready = folder / "sim.ready"
        self.log = folder / "sim.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def __enter__(self) -> SimProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "runner.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ready-file",
            str(self.ready),
        ]
        for name, value in self.knobs.items():
            for one in value if isinstance(value, list | tuple) else [value]:
                args += [f"--{name.replace('_', '-')}", str(one)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start: {self.log.read_text()}")
            time.sleep(0.02)
        self.base_url = self.ready.read_text().strip()
        self._http = httpx.Client(base_url=self.base_url, timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stats(self) -> dict[str, Any]:
        return dict(self._http.get("/_sim/stats").json())

    def configure(self, **changes: Any) -> dict[str, Any]:
        answer = self._http.post("/_sim/config", json=changes)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def request(self, request_id: str) -> dict[str, Any] | None:
        answer = self._http.get(f"/_sim/requests/{request_id}")
        return dict(answer.json()) if answer.status_code == 200 else None


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no RUNCOMFY_* from outside, the simulator's token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    env["RUNCOMFY_API_TOKEN"] = TOKEN
    env.update(extra)
    return env


STARTED: list[subprocess.Popen[str]] = []  # runners started in the background, for stop_leftovers()


def start_cli(args: Sequence[str], *, cwd: Path, log: Path | None = None) -> subprocess.Popen[str]:
    """``python -m runner ARGS`` in the background; stdout and stderr go to ``log`` (or pipes)."""
    if log is None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            cwd=cwd,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    else:
        with open(log, "w", encoding="utf-8") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runner", *args],
                cwd=cwd,
                env=cli_env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
            )
    STARTED.append(proc)
    return proc


def write_text(folder: Path, text: str, name: str = "m.yaml") -> Path:
    """``text``, dedented, as the file ``name`` in ``folder`` (its folders made); its path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def stop_leftovers() -> None:
    """Kill the background runners a failed test left running (only those, by their own handle)."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def run_cli(args: Sequence[str], *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(condition: Any, *, timeout: float = 30, every: float = 0.02, what: str = "a condition") -> Any:
    """Poll ``condition()`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def query(state: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Read the state file as another process would (read-only, never taking the run lock)."""
    if not state.exists():
        return []
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, tuple(params)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the runner has not created the schema yet
            return []
        raise
    finally:
        db.close()


def journal(folder: Path) -> Path:
    """Where a CLI run of a manifest in ``folder`` (outputs in ``./out``) keeps its journal by default."""
    return folder / "out" / ".runcomfy-batch" / "journal.sqlite"


def integrity(state: Path) -> str:
    db = sqlite3.connect(state)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def job_statuses(state: Path) -> dict[str, str]:
    return dict(query(state, "SELECT job_id, status FROM jobs WHERE in_manifest=1"))  # type: ignore[arg-type]


def write_jobs_manifest(
    path: Path,
    jobs: Sequence[tuple[str, str]],
    *,
    name: str = "chaos",
    model: str = "kling/kling-video-o3/standard/reference-to-video",
    extra: str = "",
) -> Path:
    """A manifest of ``(job id, prompt)`` pairs on one model, outputs into ``./out``."""
    lines = [
        f"version: 1\nname: {name}\noutput_dir: ./out\n{extra}defaults:\n  model: {model}\n"
        "  input: {duration: 3}\njobs:"
    ]
    lines += [f"  - id: {job_id}\n    input: {{prompt: {json.dumps(prompt)}}}" for job_id, prompt in jobs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Books:
    """What the state file, the output folder and the simulator say, checked against each other."""

    jobs: int = 0
    attempts: int = 0
    recorded: int = 0  # attempts with a request id
    unknown_attempts: int = 0  # attempts whose submit had an unknown outcome (at any time)
    knowing_resubmits: int = 0  # attempts made with --resubmit-unknown over an unknown one
    accepted: int = 0  # submits the simulator accepted
    duplicates: int = 0  # the simulator's duplicate_submissions
    problems: list[str] = field(default_factory=list)


def check_books(
    state: Path,
    out: Path,
    manifest_jobs: dict[str, dict[str, Any]],
    sim: SimProcess,
    *,
    output_bytes: int,
    outputs_per_job: int = 1,
) -> Books:
    """Every invariant of a finished batch; ``problems`` lists each one that does not hold.

    ``manifest_jobs`` maps each job id of the manifest to its input, exactly as sent."""
    books = Books(jobs=len(manifest_jobs))
    problems = books.problems
    check = integrity(state)
    if check != "ok":
        problems.append(f"PRAGMA integrity_check: {check}")
    jobs = {r[0]: r for r in query(state, "SELECT job_id, status, attempt_id, in_manifest FROM jobs")}
    attempts = query(
        state,
        "SELECT attempt_id, job_id, request_id, status, resubmit_of_unknown, input_json, "
        "error, fingerprint FROM attempts ORDER BY attempt_id",
    )
    outputs = query(state, "SELECT job_id, attempt_id, idx, path, bytes, sha256 FROM outputs")
    stats = sim.stats()
    books.attempts = len(attempts)
    books.accepted = stats["submits_accepted"]
    books.duplicates = stats["duplicate_submissions"]
    by_id = {a[0]: a for a in attempts}
    recorded_ids: dict[str, int] = {}
    for attempt_id, job_id, request_id, status, resubmit, input_json, error, _ in attempts:
        if request_id is not None:
            if request_id in recorded_ids:
                problems.append(f"request {request_id} recorded twice")
            recorded_ids[request_id] = attempt_id
            remote = sim.request(request_id)
            if remote is None:
                problems.append(f"{job_id}: request {request_id} unknown to the simulator")
            elif remote["input"] != json.loads(input_json):
                problems.append(f"{job_id}: request {request_id} carries another job's input")
        if status == "unknown" or (error and "SubmitUnknown" in error):
            books.unknown_attempts += 1
        books.knowing_resubmits += int(resubmit or 0)
        if status == "submitting":
            problems.append(f"{job_id}: attempt {attempt_id} still 'submitting' after the final run")
    books.recorded = len(recorded_ids)

    # Never paid twice without being told to, per paid request (model and input, whichever job sends
    # it: twins share one): nothing is sent again after a request id was recorded (nothing fails here),
    # and what is sent after an unknown attempt is a knowing resubmission.
    history: dict[str, list[tuple[Any, ...]]] = {}
    for a in attempts:
        history.setdefault(a[7], []).append(a)
    for tries in history.values():
        with_id = [a for a in tries if a[2] is not None]
        if len(with_id) > 1:
            problems.append(f"{tries[0][1]}: {len(with_id)} recorded requests for one input")
        for n, later in enumerate(tries[1:], start=1):
            earlier = tries[:n]
            if any(a[2] is not None for a in earlier):
                problems.append(f"{later[1]}: attempt {later[0]} submitted after a request was recorded")
            if any(a[3] == "unknown" for a in earlier) and not later[4]:
                problems.append(f"{later[1]}: attempt {later[0]} resubmitted an unknown request unasked")
    if books.accepted - books.recorded > books.unknown_attempts:
        problems.append(
            f"{books.accepted} accepted submits but only {books.recorded} recorded and "
            f"{books.unknown_attempts} unknown: a paid request went unnoticed"
        )
    if books.duplicates > books.knowing_resubmits:
        problems.append(
            f"{books.duplicates} duplicate submissions but only {books.knowing_resubmits} "
            "knowing resubmissions"
        )

    # Every job of the manifest finished once, its files whole and exactly the simulator's bytes.
    report = json.loads((out / "report.json").read_text())
    reported = {entry["id"]: entry for entry in report["jobs"]}
    if sorted(reported) != sorted(manifest_jobs):
        problems.append(f"the report lists {sorted(reported)}, the manifest {sorted(manifest_jobs)}")
    names = ["output.mp4"] + [f"output-{i}.mp4" for i in range(1, outputs_per_job)]
    for job_id, job_input in manifest_jobs.items():
        row = jobs.get(job_id)
        if row is None or row[1] != "succeeded" or not row[3]:
            problems.append(f"{job_id}: {row[1] if row else 'missing'} in the state file")
            continue
        attempt = by_id[row[2]]
        if json.loads(attempt[5]) != job_input:
            problems.append(f"{job_id}: finished with another input than the manifest's")
        if reported.get(job_id, {}).get("status") != "succeeded":
            problems.append(f"{job_id}: reported as {reported.get(job_id, {}).get('status')}")
        folder = out / job_id
        on_disk = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if on_disk != sorted(names):
            problems.append(f"{job_id}: files on disk {on_disk}, expected {names}")
        files = {(o[2]): o for o in outputs if o[0] == job_id and o[1] == row[2]}
        for idx in range(len(names)):
            record = files.get(idx)
            if record is None:
                problems.append(f"{job_id}: no output {idx} recorded")
                continue
            data = (out / record[3]).read_bytes() if (out / record[3]).exists() else b""
            if len(data) != record[4] or hashlib.sha256(data).hexdigest() != record[5]:
                problems.append(f"{job_id}: {record[3]} does not match its recorded size and sha256")
            if data != expected_output_bytes(attempt[2], idx, output_bytes):
                problems.append(f"{job_id}: {record[3]} is not the simulator's bytes for {attempt[2]}")
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*.part"))
    if leftovers:
        problems.append(f"partial files left behind: {leftovers}")
    return books
