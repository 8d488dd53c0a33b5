"""Where a manifest's run stands, from its journal: counts per model and state, the jobs that need
attention, what was spent, and whether a run is going on (``runner.status``; ``runcomfy-batch status``
prints it).

It is answered from the state file alone while the manifest is the one it last synced (see
``snapshot.py``): a 100,000-job manifest is not read again. An edited manifest is loaded, to count its
jobs not yet in the state, unless a run is syncing it right now. It works during a run (the journal is
read, never locked), after one, and after a crash.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..catalog.models import Catalog
from ..engine.store import Store, quick_state_path, state_path_for
from ..manifest.loader import Manifest, load_manifest
from ..manifest.snapshot import META_KEY, Snapshot


@dataclass(frozen=True)
class LastRun:
    """The latest run: ``running`` (its process is alive), ``finished`` or ``interrupted`` (it died)."""

    state: str
    pid: int
    started_at: float
    finished_at: float | None
    exit_code: int | None
    runs: int  # how many runs the journal holds, this one included


@dataclass(frozen=True)
class Status:
    """A manifest's run as its journal tells it."""

    manifest: Path
    state: Path
    jobs: int  # in the manifest
    counts: dict[str, int]
    per_model: dict[str, dict[str, int]]
    needs_attention: list[dict[str, Any]]
    not_yet_in_state: int | None  # None: a run is syncing an edited manifest, the counts are so far
    cost_usd: float
    estimate_usd: float
    run: LastRun | None

    def as_json(self) -> dict[str, Any]:
        """What ``status --json`` prints."""
        return {
            "manifest": str(self.manifest),
            "state": str(self.state),
            "jobs": self.jobs,
            "counts": self.counts,
            "per_model": self.per_model,
            "needs_attention": self.needs_attention,
            "not_yet_in_state": self.not_yet_in_state,
            "cost_usd": self.cost_usd,
            "estimate_usd": self.estimate_usd,
            "run": None if self.run is None else asdict(self.run),
        }


def status(manifest_path: str | Path, state_path: str | Path | None = None) -> Status:
    """Where the run of the manifest at ``manifest_path`` stands, read from its state file (``state_path``,
    else ``state/<name>.sqlite`` under the working directory); :class:`~runner.errors.StateError` when
    there is none yet."""
    path = Path(manifest_path)
    manifest: Manifest | None = None
    found = quick_state_path(path, state_path)
    if found is None:  # the name cannot be told without reading the manifest
        manifest = load_manifest(path, Catalog.load())
        found = state_path_for(manifest.name)
    with Store.open(found, create=False) as store:
        run = last_run(store)
        snapshot = Snapshot.from_json(store.get_meta(META_KEY))
        synced = snapshot is not None and snapshot.matches(path)
        if manifest is None and not synced and not (run and run.state == "running"):
            manifest = load_manifest(path, Catalog.load())
        per_model: dict[str, dict[str, int]] = {}
        counts: dict[str, int] = {}
        cost = estimate = 0.0
        for tally in store.tallies():
            per_model.setdefault(tally.model, {})[tally.status] = tally.jobs
            counts[tally.status] = counts.get(tally.status, 0) + tally.jobs
            cost, estimate = cost + tally.cost_usd, estimate + tally.estimate_usd
        not_synced: int | None
        if manifest is not None:
            known = store.job_ids()
            jobs, not_synced = len(manifest.jobs), sum(j.id not in known for j in manifest.jobs)
        elif synced and snapshot is not None:
            jobs, not_synced = snapshot.jobs, 0
        else:  # a run is syncing an edited manifest now: what the state holds so far
            jobs, not_synced = sum(counts.values()), None
        return Status(
            path,
            store.path,
            jobs,
            counts,
            per_model,
            store.needs_attention(),
            not_synced,
            round(cost, 6),
            round(estimate, 6),
            run,
        )


def last_run(store: Store) -> LastRun | None:
    """The latest run of the journal, and whether its process still lives."""
    runs = store.runs()
    if not runs:
        return None
    last = max(runs, key=lambda r: r["run_id"])
    if last["finished_at"] is not None:
        state = "finished"
    else:
        try:
            os.kill(last["pid"], 0)
            state = "running"
        except ProcessLookupError:
            state = "interrupted"
        except PermissionError:  # alive, another user's
            state = "running"
    return LastRun(state, last["pid"], last["started_at"], last["finished_at"], last["exit_code"], len(runs))
