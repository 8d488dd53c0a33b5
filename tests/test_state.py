"""The state file's own bookkeeping: the journal version the reports are keyed on, and its facts."""

from __future__ import annotations

from pathlib import Path

from runner.engine.store import Store


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
