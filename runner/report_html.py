"""``report.html``: one self-contained page (no network needed) rendered from ``report.json``."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any


def render_html(report: Mapping[str, Any]) -> str:
    summary = report["summary"]
    rows = []
    for job in report["jobs"]:
        video = next((o["path"] for o in job["outputs"] if o["path"].endswith((".mp4", ".webm", ".mov"))), None)
        media = f'<video src="{html.escape(video)}" controls preload="metadata" width="240"></video>' if video else ""
        error = job["error"] or {}
        rows.append(
            f'<tr data-status="{html.escape(job["status"])}" data-model="{html.escape(job["model"])}">'
            f'<td>{html.escape(job["id"])}</td><td>{html.escape(job["model"])}</td>'
            f'<td>{html.escape(job["status"])}</td>'
            f'<td>{html.escape(str(job["input"].get("prompt", "")))}</td>'
            f'<td>{job["cost_usd"] if job["cost_usd"] is not None else ""}</td>'
            f'<td>{media}</td><td>{html.escape(str(error.get("message", "")))}</td></tr>'
        )
    data = json.dumps(summary).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report["name"])} — runcomfy-batch report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}</style></head>
<body><h1>{html.escape(report["name"])}</h1>
<p>{summary["jobs"]} jobs · {summary["succeeded"]} succeeded · cost ${summary["cost_usd"]:.2f}</p>
<table id="jobs"><thead><tr><th>id</th><th>model</th><th>status</th><th>prompt</th><th>cost (USD)</th>
<th>output</th><th>error</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<script type="application/json" id="report-data">{data}</script>
</body></html>
"""
