"""The run's account, built from the state file: ``report.json`` (the machine-readable source, with
its schema in ``schemas/report.schema.json``), ``report.csv`` and ``report.html`` beside it.

Every file is written to a temporary name and renamed into place, so a report on disk is always
whole, even if the runner is killed while writing it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import state as S
from .manifest import Manifest

REPORT_VERSION = 1
INPUT_SUMMARY_FIELDS = ("prompt", "duration", "aspect_ratio", "sound", "shot_type")


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if t else None


def build_report(manifest: Manifest, store: S.Store) -> dict[str, Any]:
    """The report as a JSON-able dict: a summary and one entry per job in the manifest."""
    rows = store.jobs()
    attempts = store.attempts()
    outputs = store.outputs()
    jobs_by_id = {job.id: job for job in manifest.jobs}
    entries = []
    counts: Counter[str] = Counter()
    paid_attempts: dict[int, float] = {}
    estimate_total = 0.0
    for row in rows:
        job = jobs_by_id.get(row.job_id)
        counts[row.status] += 1
        history = attempts.get(row.job_id, [])
        current = next((a for a in history if a["attempt_id"] == row.attempt_id), None)
        if current is None and row.attempt_id is not None:
            # A twin's attempt belongs to its leader: find it there.
            current = next((a for h in attempts.values() for a in h if a["attempt_id"] == row.attempt_id), None)
        files = [o for o in outputs.get(row.attempt_id or -1, []) if o.job_id == row.job_id]
        for a in history:
            if a["cost_usd"] is not None:
                paid_attempts[a["attempt_id"]] = a["cost_usd"]
        if row.estimate_usd is not None:
            estimate_total += row.estimate_usd
        submitted = current["submitted_at"] if current else None
        finished = current["finished_at"] if current else None
        entries.append({
            "id": row.job_id,
            "model": row.model,
            "status": row.status,
            "request_id": current["request_id"] if current else None,
            "twin_of": row.twin_of if row.twin_of and current and current["job_id"] != row.job_id else None,
            "input": {k: job.input[k] for k in INPUT_SUMMARY_FIELDS if job and k in job.input},
            "line": job.line if job else None,
            "submitted_at": _iso(submitted),
            "started_at": _iso(current["started_at"] if current else None),
            "finished_at": _iso(finished),
            "duration_s": round(finished - submitted, 3) if submitted and finished else None,
            "estimate_usd": row.estimate_usd,
            "cost_usd": current["cost_usd"] if current else None,
            "outputs": [{"path": o.path, "bytes": o.bytes, "sha256": o.sha256, "url": o.url} for o in files],
            "error": row.error,
            "attempts": [
                {k: a[k] for k in ("attempt_id", "request_id", "status", "remote_status", "cost_usd",
                                   "estimate_usd", "error", "resubmit_of_unknown")}
                | {"submitted_at": _iso(a["submitted_at"]), "finished_at": _iso(a["finished_at"])}
                for a in history
            ],
        })
    runs = store.runs()
    started = min((r["started_at"] for r in runs), default=None)
    ended = max((r["finished_at"] or 0 for r in runs), default=None) or None
    wall = sum((r["finished_at"] or time.time()) - r["started_at"] for r in runs)
    return {
        "report_version": REPORT_VERSION,
        "name": manifest.name,
        "manifest": str(manifest.path),
        "output_dir": str(manifest.output_dir),
        "generated_at": _iso(time.time()),
        "summary": {
            "jobs": len(entries),
            "counts": dict(sorted(counts.items())),
            "succeeded": counts.get(S.SUCCEEDED, 0),
            "needs_attention": sum(counts.get(s, 0) for s in S.NEEDS_ATTENTION),
            "cost_usd": round(sum(paid_attempts.values()), 6),
            "estimate_usd": round(estimate_total, 6),
            "started_at": _iso(started),
            "finished_at": _iso(ended),
            "wall_seconds": round(wall, 3),
            "runs": len(runs),
        },
        "jobs": entries,
    }


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def report_csv(report: Mapping[str, Any]) -> str:
    """One row per job, for spreadsheets."""
    buffer = io.StringIO()
    fields = ["id", "model", "status", "request_id", "duration", "prompt", "estimate_usd", "cost_usd",
              "submitted_at", "finished_at", "duration_s", "outputs", "error"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for job in report["jobs"]:
        error = job["error"] or {}
        writer.writerow({
            **{k: job.get(k) for k in fields if k in job},
            "duration": job["input"].get("duration"),
            "prompt": job["input"].get("prompt"),
            "outputs": " ".join(o["path"] for o in job["outputs"]),
            "error": error.get("message") or error.get("error_message") or "",
        })
    return buffer.getvalue()


def write_reports(manifest: Manifest, store: S.Store) -> dict[str, Path]:
    """Write report.json, report.csv and report.html into the output folder; their paths."""
    from .report_html import render_html  # noqa: PLC0415

    report = build_report(manifest, store)
    folder = manifest.output_dir
    paths = {"json": folder / "report.json", "csv": folder / "report.csv", "html": folder / "report.html"}
    _write_atomic(paths["json"], json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _write_atomic(paths["csv"], report_csv(report))
    _write_atomic(paths["html"], render_html(report))
    return paths
