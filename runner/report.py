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
INPUT_SUMMARY_FIELDS = (
    "prompt",
    "duration",
    "aspect_ratio",
    "sound",
    "keep_original_sound",
    "shot_type",
    "multi_prompt",
)
INPUT_FILE_FIELDS = ("image", "images", "end_image", "video")


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if t else None


def _input_files(input: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The file inputs of a job: public URLs as they are; inline ``data:`` images by type and size only."""
    files = []
    for name in INPUT_FILE_FIELDS:
        values = input.get(name)
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, str):
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
    start = attempt["started_at"] or attempt["submitted_at"]
    end = attempt["finished_at"]
    return (start, end) if attempt["request_id"] and start and end and end >= start else None


def slot_use(spans: list[tuple[float, float]]) -> dict[str, float | int | None]:
    """Busy seconds, the most jobs seen running at once, and slot efficiency: busy seconds divided by
    (that peak × the time from the first job's start to the last job's end)."""
    if not spans:
        return {"busy_seconds": 0.0, "peak_running": 0, "slot_efficiency": None}
    busy = sum(end - start for start, end in spans)
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = running = 0
    for _, step in edges:  # at equal times ends (-1) sort first: back-to-back jobs share a slot
        running += step
        peak = max(peak, running)
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    efficiency = round(min(1.0, busy / (peak * span)), 4) if peak and span > 0 else None
    return {"busy_seconds": round(busy, 3), "peak_running": peak, "slot_efficiency": efficiency}


def wall_seconds(store: S.Store, runs: list[dict[str, Any]]) -> float:
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
            current = next(
                (a for h in attempts.values() for a in h if a["attempt_id"] == row.attempt_id), None
            )
        files = [o for o in outputs.get(row.attempt_id or -1, []) if o.job_id == row.job_id]
        for a in history:
            if a["cost_usd"] is not None:
                paid_attempts[a["attempt_id"]] = a["cost_usd"]
        if row.estimate_usd is not None:
            estimate_total += row.estimate_usd
        submitted = current["submitted_at"] if current else None
        finished = current["finished_at"] if current else None
        run_span = _run_span(current) if current else None
        entries.append(
            {
                "id": row.job_id,
                "model": row.model,
                "status": row.status,
                "request_id": current["request_id"] if current else None,
                "twin_of": row.twin_of
                if row.twin_of and current and current["job_id"] != row.job_id
                else None,
                "input": {k: job.input[k] for k in INPUT_SUMMARY_FIELDS if job and k in job.input},
                "input_files": _input_files(job.input) if job else [],
                "line": job.line if job else None,
                "submitted_at": _iso(submitted),
                "started_at": _iso(current["started_at"] if current else None),
                "finished_at": _iso(finished),
                "duration_s": round(finished - submitted, 3) if submitted and finished else None,
                "run_s": round(run_span[1] - run_span[0], 3) if run_span else None,
                "estimate_usd": row.estimate_usd,
                "cost_usd": current["cost_usd"] if current else None,
                "outputs": [
                    {"path": o.path, "bytes": o.bytes, "sha256": o.sha256, "url": o.url} for o in files
                ],
                "error": row.error,
                "attempts": [
                    {
                        k: a[k]
                        for k in (
                            "attempt_id",
                            "request_id",
                            "status",
                            "remote_status",
                            "cost_usd",
                            "estimate_usd",
                            "error",
                            "resubmit_of_unknown",
                        )
                    }
                    | {"submitted_at": _iso(a["submitted_at"]), "finished_at": _iso(a["finished_at"])}
                    for a in history
                ],
            }
        )
    runs = store.runs()
    started = min((r["started_at"] for r in runs), default=None)
    ended = max((r["finished_at"] or 0 for r in runs), default=None) or None
    wall = wall_seconds(store, runs)
    spans = [span for history in attempts.values() for a in history if (span := _run_span(a)) is not None]
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
            **slot_use(spans),
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
    fields = [
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
    ]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for job in report["jobs"]:
        error = job["error"] or {}
        writer.writerow(
            {
                **{k: job.get(k) for k in fields if k in job},
                "duration": job["input"].get("duration"),
                "prompt": job["input"].get("prompt"),
                "outputs": " ".join(o["path"] for o in job["outputs"]),
                "error": error.get("message") or error.get("error_message") or "",
            }
        )
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
