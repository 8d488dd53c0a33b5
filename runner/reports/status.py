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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..catalog.models import Catalog
from ..engine.home import (
    Owner,
    check_owner,
    is_simulator,
    journal_path,
    locate,
    recorded_owner,
    run_output_dir,
)
from ..engine.store import Store
from ..errors import EXIT_BUDGET
from ..manifest.loader import Manifest, load_manifest
from ..manifest.snapshot import META_KEY, Snapshot, quick_name, quick_output_dir


@dataclass(frozen=True)
class LastRun:
    """The latest run: ``running`` (its process is alive), ``finished``, ``refused`` (it would not start:
    over budget) or ``interrupted`` (it died)."""

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
    api: str = ""  # the API the journal's requests went to ("" before any was sent)
    notices: tuple[str, ...] = ()  # what finding the journal did (a move)

    @property
    def simulated(self) -> bool:
        """Whether the journal's results came from a simulator, not from RunComfy."""
        return is_simulator(self.api)

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
            "api": self.api,
            "simulated": self.simulated,
        }


def status(
    manifest_path: str | Path,
    state_path: str | Path | None = None,
    *,
    output_dir: str | Path | None = None,
    simulated: bool = False,
) -> Status:
    """Where the run of the manifest at ``manifest_path`` stands, read from its journal (``state_path``,
    else the one in the run's output folder: ``output_dir``, else the manifest's, ``-simulated`` for
    ``simulated``); :class:`~runner.errors.StateError` when there is none yet, and
    :class:`~runner.errors.JournalRefused` when it is another manifest's."""
    path = Path(manifest_path)
    manifest: Manifest | None = None
    output = Path(output_dir) if output_dir is not None else None
    notices: tuple[str, ...] = ()
    found = Path(state_path) if state_path is not None else None
    if found is None:
        quick = quick_output_dir(path)
        if quick is not None:
            found = journal_path(run_output_dir(quick, output, simulated=simulated))
    if found is None or (state_path is None and not found.exists()):  # a full load tells (and moves old ones)
        manifest = load_manifest(path, Catalog.load())
        manifest = replace(
            manifest, output_dir=run_output_dir(manifest.output_dir, output, simulated=simulated)
        )
        located = locate(manifest, None)
        found, notices = located.path, located.notices
    with Store.open(found, create=False) as store:
        name = manifest.name if manifest is not None else quick_name(path) or ""
        check_owner(store, Owner(os.path.abspath(path), name), record=False, api_matters=False)
        owner = recorded_owner(store)
        run = last_run(store)
        snapshot = Snapshot.from_json(store.get_meta(META_KEY))
        synced = snapshot is not None and snapshot.matches(path)
        if manifest is None and not synced and not (run and run.state == "running"):
            manifest = load_manifest(path, Catalog.load())
        per_model: dict[str, dict[str, int]] = {}
        counts: dict[str, int] = {}
        estimate = 0.0
        for tally in store.tallies():
            per_model.setdefault(tally.model, {})[tally.status] = tally.jobs
            counts[tally.status] = counts.get(tally.status, 0) + tally.jobs
            estimate += tally.estimate_usd
        cost = store.spent_usd()  # the report's sum, from the same query
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
            owner.api if owner is not None else "",
            notices,
        )


def last_run(store: Store) -> LastRun | None:
    """The latest run of the journal, and whether its process still lives."""
    runs = store.runs()
    if not runs:
        return None
    last = max(runs, key=lambda r: r["run_id"])
    if last["finished_at"] is not None:
        state = "refused" if last["exit_code"] == EXIT_BUDGET else "finished"
    else:
        try:
            os.kill(last["pid"], 0)
            state = "running"
        except ProcessLookupError:
            state = "interrupted"
        except PermissionError:  # alive, another user's
            state = "running"
    return LastRun(state, last["pid"], last["started_at"], last["finished_at"], last["exit_code"], len(runs))
