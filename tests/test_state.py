"""The state file's own bookkeeping (the journal version the reports are keyed on, its facts, where it
lives, opening and closing), the reads the reports and ``status`` make, and the rule that no other module
speaks SQL. Real SQLite files in tmp_path, written through the store's own methods."""

from __future__ import annotations

import ast
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import simple_manifest

import runner
from runner.engine.store import Store
from runner.errors import StateError
from runner.manifest.loader import load_manifest


def test_journal_version_moves_with_job_changes_only(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.sqlite")
    try:
        assert store.journal_version() == 0
        run_id = store.start_run("run")  # the runs table is not what a report reflects
        store.set_meta("manifest_digest", "abc")
        store.flush()
        assert store.journal_version() == 0
        assert store.get_meta("manifest_digest") == "abc"
        attempt = store.record_intent("job-1", "fp", "model", "{}", None)
        store.flush()
        assert store.journal_version() == 1
        store.record_submitted("job-1", attempt, "req-1")
        store.finish_run(run_id, 0, {})
        assert store.journal_version() == 2
    finally:
        store.close()
    reopened = Store.open(tmp_path / "state.sqlite")  # it is journaled, not kept in memory
    try:
        assert reopened.journal_version() == 2
        assert reopened.get_meta("missing") is None
    finally:
        reopened.close()


# -- the reads behind the reports and status, against a journal written through the store's own methods --
def journal(tmp_path: Path, write_manifest: Callable[..., Path]) -> tuple[Path, dict[str, int]]:
    """A state file in which, of the manifest's five jobs: ``a`` succeeded with two files, ``b`` failed
    once and then succeeded, ``c`` (the other model) is unknown (its submit never answered), ``d`` is
    ``a``'s twin and holds a copy of its files, and ``e`` was removed from the manifest after it ran."""
    i2v = "kling/kling-video-o3/pro/image-to-video"
    path = write_manifest(
        simple_manifest(2)
        + f'  - id: c\n    model: {i2v}\n    input: {{prompt: "c", image: "https://example.com/c.png"}}\n'
        + '  - id: d\n    input: {prompt: "shot number 0"}\n'
        + '  - id: e\n    input: {prompt: "soon gone"}\n'
    )
    manifest = load_manifest(path)
    a, b, c, d, e = (job.id for job in manifest.jobs)
    state = tmp_path / "state.sqlite"
    with Store.open(state) as store:
        store.sync_manifest(manifest.jobs, {job.id: 0.42 for job in manifest.jobs}, {d: a})
        jobs = {job.id: job for job in manifest.jobs}

        def intent(job_id: str) -> int:
            job = jobs[job_id]
            return store.record_intent(job_id, job.fingerprint, job.model, "{}", 0.42)

        def success(job_id: str, attempt: int, files: int) -> None:
            store.record_submitted(job_id, attempt, f"req-{job_id}-{attempt}")
            store.record_remote(job_id, attempt, "running", "in_progress", started=True)
            urls = [f"https://cdn.example.com/{job_id}/{n}.mp4" for n in range(files)]
            store.record_remote(
                job_id, attempt, "collecting", "completed", finished=True, cost=0.5, outputs=urls
            )
            for n, url in enumerate(urls):
                store.record_output(job_id, attempt, n, url, f"{job_id}/{n}.mp4", 100 + n, "ab" * 32, 1)
            store.record_collected(job_id, attempt)

        attempts = {"a": intent(a)}
        success(a, attempts["a"], 2)
        for n in range(2):
            store.record_output(
                d, attempts["a"], n, f"https://cdn.example.com/{a}/{n}.mp4", f"d/{n}.mp4", 7, "cd" * 32, 1
            )
        store.adopt_attempt(d, attempts["a"], "succeeded")
        attempts["b1"] = intent(b)
        store.record_submitted(b, attempts["b1"], "req-b-failed")
        store.record_error(b, attempts["b1"], "failed", {"message": "the generation failed"}, cost=0.0)
        attempts["b2"] = intent(b)
        success(b, attempts["b2"], 1)
        attempts["c"] = intent(c)
        store.record_error(c, attempts["c"], "unknown", {"message": "no answer to the submit"})
        attempts["e"] = intent(e)
        success(e, attempts["e"], 1)
    with_e_removed = manifest.jobs[:4]
    with Store.open(state) as store:
        store.sync_manifest(with_e_removed, {job.id: 0.42 for job in with_e_removed}, {d: a})
    return state, attempts


def test_the_history_of_each_job_comes_in_manifest_order_with_its_own_attempts_and_files(
    tmp_path: Path, write_manifest: Callable[..., Path]
) -> None:
    state, attempts = journal(tmp_path, write_manifest)
    with Store.open(state, create=False) as store:
        histories = list(store.job_histories())
    assert [h.job.job_id for h in histories] == ["shot-0", "shot-1", "c", "d"]  # e left the manifest
    a, b, c, d = histories
    assert [(x.attempt_id, x.request_id, x.status) for x in a.attempts] == [
        (attempts["a"], f"req-shot-0-{attempts['a']}", "succeeded")
    ]
    assert [o.path for o in a.outputs] == ["shot-0/0.mp4", "shot-0/1.mp4"]
    assert [(x.status, x.error, x.cost_usd) for x in b.attempts] == [
        ("failed", {"message": "the generation failed"}, 0.0),
        ("succeeded", None, 0.5),
    ]
    assert b.job.attempt_id == attempts["b2"] and [o.path for o in b.outputs] == ["shot-1/0.mp4"]
    assert c.job.status == "unknown" and c.job.error == {"message": "no answer to the submit"}
    assert [x.request_id for x in c.attempts] == [None] and c.outputs == []
    # The twin holds its leader's attempt (and its own copies of the files) but made no attempt itself.
    assert (d.job.attempt_id, d.job.attempt_of, d.job.twin_of) == (attempts["a"], "shot-0", "shot-0")
    assert d.attempts == [] and [o.path for o in d.outputs] == ["d/0.mp4", "d/1.mp4"]
    assert a.job.finished_at is not None and a.job.finished_at >= (a.job.started_at or 0)


def test_totals_tallies_and_facts_count_the_manifest_only(
    tmp_path: Path, write_manifest: Callable[..., Path]
) -> None:
    state, _ = journal(tmp_path, write_manifest)
    i2v, r2v = "kling/kling-video-o3/pro/image-to-video", "kling/kling-video-o3/standard/reference-to-video"
    with Store.open(state, create=False) as store:
        totals = store.totals()
        edges = list(store.span_edges())
        tallies = store.tallies()
        assert store.job_ids() == {"shot-0", "shot-1", "c", "d"}
        assert store.models() == [i2v, r2v]
        assert sorted(store.current_output_paths()) == [
            "d/0.mp4",
            "d/1.mp4",
            "shot-0/0.mp4",
            "shot-0/1.mp4",
            "shot-1/0.mp4",
        ]
    # Charged: a and b's second attempt (e's half dollar left with e); estimated: the four jobs.
    assert (totals.cost_usd, totals.estimate_usd) == (pytest.approx(1.0), pytest.approx(4 * 0.42))
    # The run spans of a and of b's two attempts: each starts once and ends once, in time order.
    assert sorted(step for _, step in edges) == [-1, -1, -1, 1, 1, 1]
    assert edges == sorted(edges)
    assert sum(-t * step for t, step in edges) == pytest.approx(totals.busy_seconds)
    by_state = {(t.model, t.status): (t.jobs, t.cost_usd, t.estimate_usd) for t in tallies}
    assert by_state == {
        (r2v, "succeeded"): (
            3,
            pytest.approx(1.5),
            pytest.approx(3 * 0.42),
        ),  # d counts a's cost: its attempt
        (i2v, "unknown"): (1, 0.0, pytest.approx(0.42)),
    }


def test_a_store_opened_with_with_commits_closes_and_lets_go_of_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with Store.open(path) as store:
        store.lock()
        store.set_meta("written", "yes")  # not flushed by hand: leaving the block commits it
    with pytest.raises(sqlite3.ProgrammingError):
        store.get_meta("written")  # closed
    with Store.open(path, create=False) as again:
        again.lock()  # the first store's lock went with it
        assert again.get_meta("written") == "yes"
    with (
        pytest.raises(StateError, match="no state file yet"),
        Store.open(tmp_path / "none.sqlite", create=False),
    ):
        pass


def test_no_module_but_the_store_speaks_sql() -> None:
    """The journal's tables are known to the ``runner/engine/store/`` package alone: nothing else in the
    package imports sqlite, executes a statement or reaches for a connection."""
    package = Path(runner.__file__).parent
    store = package / "engine" / "store"
    assert (store / "__init__.py").exists()  # the exemption below names a folder that is there
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.is_relative_to(store):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name.split(".")[0] in ("sqlite3", "sqlite_utils") for name in names):
                found.append(f"{path.relative_to(package)}:{node.lineno}: imports {names}")
            if isinstance(node, ast.Attribute) and node.attr in (
                "execute",
                "executemany",
                "executescript",
                "conn",
                "_conn",
            ):
                found.append(f"{path.relative_to(package)}:{node.lineno}: .{node.attr}")
    assert found == []
