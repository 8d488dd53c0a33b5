"""The run's account, built from the state file: ``report.json`` (the machine-readable source, with
its schema in ``schemas/report.schema.json``), ``report.csv`` and ``report.html`` beside it.

Every file is written to a temporary name and renamed into place, so a report on disk is always
whole, even if the runner is killed while writing it. The three are written side by side, one job at a
time, from queries over the state file: a report of 100,000 jobs needs a few MB of memory, not a GB.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from ..disk import written_whole
from ..engine.home import is_simulator, recorded_owner
from ..engine.settings import HALTED_KEY
from ..engine.states import NEEDS_ATTENTION, JobState
from ..engine.store import Store, journal_trouble
from ..errors import EXIT_JOBS_FAILED, EXIT_OK, EXIT_STORAGE
from ..manifest.loader import Manifest
from ..manifest.snapshot import reader_digest
from .html import PageFacts, is_video, write_html

REPORT_VERSION = 1
INPUT_SUMMARY_FIELDS = (
    "prompt",
    "duration",
    "aspect_ratio",
    "sound",
    "keep_original_sound",
    "shot_type",
    "multi_prompt",
)
_FILE_VALUE = ("https://", "http://", "data:")


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if t else None


def _input_files(input: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The file inputs of a job, whatever its model calls them (``image``, ``image_urls``,
    ``audio_url``…): public URLs as they are; inline ``data:`` images by type and size only."""
    files = []
    for name, values in input.items():
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, str) or not value.startswith(_FILE_VALUE):
                continue
            if value.startswith("data:"):
                head, _, body = value.partition(",")
                files.append(
                    {
                        "field": name,
                        "url": None,
                        "inline_type": head[5:].split(";")[0],
                        "inline_bytes": len(body) * 3 // 4 - body[-2:].count("="),
                    }
                )
            else:
                files.append({"field": name, "url": value})
    return files


def _run_span(attempt: Mapping[str, Any]) -> tuple[float, float] | None:
    """When an attempt held one of the account's slots, as the runner saw it: from the first poll that
    found it running (or its submit, if no poll did) to the poll that found it finished."""
    if attempt.get("end_unseen") and not attempt["started_at"]:
        return None  # it ran and ended while no runner watched: when it ran is not known
    start = attempt["started_at"] or attempt["submitted_at"]
    end = attempt["finished_at"]
    return (start, end) if attempt["request_id"] and start and end and end >= start else None


def slot_use(spans: Iterable[tuple[float, float]]) -> dict[str, float | int | None]:
    """Busy seconds, the most jobs seen running at once, and slot efficiency: busy seconds divided by
    (that peak × the time from the first job's start to the last job's end)."""
    spans = list(spans)
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    return _slot_use(edges, sum(end - start for start, end in spans))


def _slot_use(edges: Iterable[tuple[float, int]], busy: float) -> dict[str, float | int | None]:
    """:func:`slot_use` from the spans' edges in time order (at equal times ends, -1, first: back-to-back
    jobs share a slot)."""
    peak = running = 0
    first = last = None
    for t, step in edges:
        running += step
        peak = max(peak, running)
        first = t if first is None else first
        last = t
    if first is None or last is None:
        return {"busy_seconds": 0.0, "peak_running": 0, "slot_efficiency": None}
    span = last - first
    efficiency = round(min(1.0, busy / (peak * span)), 4) if peak and span > 0 else None
    return {"busy_seconds": round(busy, 3), "peak_running": peak, "slot_efficiency": efficiency}


def wall_seconds(store: Store, runs: list[dict[str, Any]]) -> float:
    """Seconds the runner ran, over every run. A run that was killed has no end of its own: it ended
    before the next run started, and no earlier than the last thing it journaled. (Counting it until
    now would grow the figure every time the report is written.)"""
    ordered = sorted(runs, key=lambda r: r["started_at"])
    total = 0.0
    for i, run in enumerate(ordered):
        start, end = run["started_at"], run["finished_at"]
        if end is None:
            before = ordered[i + 1]["started_at"] if i + 1 < len(ordered) else float("inf")
            end = store.last_activity(start, before) or start
        total += max(0.0, end - start)
    return total


def report_summary(store: Store) -> dict[str, Any]:
    """The summary block of the report, from aggregates over the state file (nothing per job is kept)."""
    counts = store.counts()
    totals = store.totals()
    runs = store.runs()
    started = min((r["started_at"] for r in runs), default=None)
    ended = max((r["finished_at"] or 0 for r in runs), default=None) or None
    return {
        "jobs": sum(counts.values()),
        "counts": dict(sorted(counts.items())),
        "succeeded": counts.get(JobState.SUCCEEDED, 0),
        "needs_attention": sum(counts.get(s, 0) for s in NEEDS_ATTENTION),
        "cost_usd": round(totals.cost_usd, 6),
        "estimate_usd": round(totals.estimate_usd, 6),
        "started_at": _iso(started),
        "finished_at": _iso(ended),
        "wall_seconds": round(wall_seconds(store, runs), 3),
        "runs": len(runs),
        **_slot_use(store.span_edges(), totals.busy_seconds),
        "halted": json.loads(store.get_meta(HALTED_KEY) or "null"),
    }


def report_header(manifest: Manifest, store: Store) -> dict[str, Any]:
    """Everything in report.json but its ``jobs``."""
    owner = recorded_owner(store)
    api = owner.api if owner is not None else ""
    return {
        "report_version": REPORT_VERSION,
        "name": manifest.name,
        "manifest": str(manifest.path),
        "output_dir": str(manifest.output_dir),
        "api": api,
        "simulated": is_simulator(api),
        "generated_at": _iso(time.time()),
        "summary": report_summary(store),
    }


def job_entries(manifest: Manifest, store: Store) -> Iterator[dict[str, Any]]:
    """One report entry per job of the manifest, in manifest order, made one at a time as the journal is
    read (:meth:`Store.job_histories`), so memory stays flat however many jobs there are."""
    jobs_by_id = {job.id: job for job in manifest.jobs}
    for history in store.job_histories():
        row = history.job
        job = jobs_by_id.get(row.job_id)
        run_span = _run_span(
            {
                "started_at": row.started_at,
                "submitted_at": row.submitted_at,
                "finished_at": row.finished_at,
                "request_id": row.request_id,
                "end_unseen": row.end_unseen,
            }
        )
        submitted, finished = row.submitted_at, row.finished_at
        twin_of = row.twin_of if row.twin_of and row.attempt_of not in (None, row.job_id) else None
        yield {
            "id": row.job_id,
            "model": row.model,
            "status": row.status,
            "request_id": row.request_id,
            "twin_of": twin_of,
            "adopted_from": row.attempt_of
            if not twin_of and row.attempt_of not in (None, row.job_id)
            else None,
            "after": list(job.needs) if job else [],
            "input": {k: job.input[k] for k in INPUT_SUMMARY_FIELDS if job and k in job.input},
            "input_files": _input_files(job.input) if job else [],
            "line": job.line if job else None,
            "submitted_at": _iso(submitted),
            "started_at": _iso(row.started_at),
            "finished_at": _iso(finished),
            "duration_s": round(finished - submitted, 3) if submitted and finished else None,
            "run_s": round(run_span[1] - run_span[0], 3) if run_span else None,
            "estimate_usd": row.estimate_usd,
            "cost_usd": row.cost_usd,
            "outputs": [
                {"path": o.path, "bytes": o.bytes, "sha256": o.sha256, "url": o.url} for o in history.outputs
            ],
            "error": row.error,
            "attempts": [
                {
                    "attempt_id": a.attempt_id,
                    "request_id": a.request_id,
                    "status": a.status,
                    "remote_status": a.remote_status,
                    "cost_usd": a.cost_usd,
                    "estimate_usd": a.estimate_usd,
                    "error": a.error,
                    "resubmit_of_unknown": a.resubmit_of_unknown,
                    "submitted_at": _iso(a.submitted_at),
                    "finished_at": _iso(a.finished_at),
                }
                for a in history.attempts
            ],
        }


def build_report(manifest: Manifest, store: Store) -> dict[str, Any]:
    """The whole report as one dict, as report.json holds it (fine for a few thousand jobs; the files
    themselves are written job by job)."""
    return {**report_header(manifest, store), "jobs": list(job_entries(manifest, store))}


def page_facts(store: Store) -> PageFacts:
    """What report.html's head says about all the rows, from the state file."""
    counts = store.counts()
    videos = sum(is_video(path) for path in store.current_output_paths())
    return PageFacts(sum(counts.values()), videos, tuple(sorted(counts)), tuple(store.models()))


CSV_FIELDS = (
    "id",
    "model",
    "status",
    "request_id",
    "duration",
    "prompt",
    "estimate_usd",
    "cost_usd",
    "submitted_at",
    "finished_at",
    "duration_s",
    "outputs",
    "error",
)


# A cell starting with one of these is a formula to a spreadsheet (=1+1, +cmd, -2+3, @SUM, and a tab or
# carriage return before one): report.csv writes it after a quote, so it is shown, never evaluated.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value as report.csv writes it: text that a spreadsheet would evaluate is neutralised."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def csv_row(job: Mapping[str, Any]) -> dict[str, Any]:
    """A report entry as one row of report.csv."""
    error = job["error"] or {}
    row = {
        **{k: job.get(k) for k in CSV_FIELDS if k in job},
        "duration": job["input"].get("duration"),
        "prompt": job["input"].get("prompt"),
        "outputs": " ".join(o["path"] for o in job["outputs"]),
        "error": error.get("message") or error.get("error_message") or "",
    }
    return {key: csv_cell(value) for key, value in row.items()}


REPORTS_KEY = "reports_written_for"


def report_paths(folder: Path) -> dict[str, Path]:
    return {"json": folder / "report.json", "csv": folder / "report.csv", "html": folder / "report.html"}


def _reports_key(store: Store, manifest_sha256: str, output_dir: Path) -> str:
    """What the reports were written from: the journal's version, the manifest, and this runner."""
    return ":".join(
        (str(store.journal_version()), manifest_sha256, str(output_dir), reader_digest(), _report_code())
    )


def reports_current(store: Store, manifest_sha256: str, output_dir: Path) -> bool:
    """Whether the reports on disk were written for this very journal, manifest and runner."""
    return store.get_meta(REPORTS_KEY) == _reports_key(store, manifest_sha256, output_dir) and all(
        p.exists() for p in report_paths(output_dir).values()
    )


def write_reports(manifest: Manifest, store: Store, *, if_changed: bool = False) -> dict[str, Path]:
    """Write report.json, report.csv and report.html into the output folder, job by job; their paths.

    With ``if_changed``, reports already written for this very journal (``journal_version``), manifest
    and runner are left as they are: a re-run with nothing to do costs no rewrite of 100,000 rows."""
    paths = report_paths(manifest.output_dir)
    sha256 = manifest.source.sha256 if manifest.source else ""
    key = _reports_key(store, sha256, manifest.output_dir)
    if if_changed and reports_current(store, sha256, manifest.output_dir):
        return paths
    header = report_header(manifest, store)
    facts = page_facts(store)
    with (
        written_whole(paths["json"], text=True) as out_json,
        written_whole(paths["csv"], text=True) as out_csv,
        written_whole(paths["html"], text=True) as out_html,
    ):
        head = json.dumps(header, indent=2, ensure_ascii=False)
        out_json.write(head[:-2] + ',\n  "jobs": [')  # the header without its closing brace
        rows = csv.DictWriter(out_csv, fieldnames=CSV_FIELDS)
        rows.writeheader()

        def entries() -> Iterator[dict[str, Any]]:
            for n, entry in enumerate(job_entries(manifest, store)):
                out_json.write(("\n    " if n == 0 else ",\n    ") + json.dumps(entry, ensure_ascii=False))
                rows.writerow(csv_row(entry))
                yield entry

        write_html(out_html.write, header, facts, entries())
        out_json.write("\n  ]\n}\n")
    store.set_meta(REPORTS_KEY, key)
    store.flush()
    return paths


def write_reports_kept(
    manifest: Manifest, store: Store, code: int, message: str
) -> tuple[dict[str, Path], int, str]:
    """:func:`write_reports` at the end of a run that ended with ``code`` and ``message``: their paths,
    and the code and message the run ends with. An output folder that cannot take them (full,
    read-only) is said, exit 9 over a job's 1; a journal that cannot note them (its disk is full) is
    no reason to say more: they are rewritten next time."""
    try:
        return write_reports(manifest, store, if_changed=True), code, message
    except OSError as exc:
        unwritten = (
            f"the reports could not be written into {manifest.output_dir}: {exc.strerror or exc} "
            "(`runcomfy-batch report` writes them once it is fixed)"
        )
        code = EXIT_STORAGE if code in (EXIT_OK, EXIT_JOBS_FAILED) else code
        return report_paths(manifest.output_dir), code, f"{message}; {unwritten}"
    except Exception as exc:
        if not journal_trouble(exc):
            raise
        return report_paths(manifest.output_dir), code, message


@cache
def _report_code() -> str:
    here = Path(__file__).parent
    code = (here / "report.py").read_bytes() + (here / "html.py").read_bytes()
    return hashlib.sha256(code).hexdigest()
