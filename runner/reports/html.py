"""``report.html``: one self-contained page rendered from ``report.json``'s dict.

Why it is built this way: the page must open from a laptop's disk, years later, offline. So the CSS
and the small script are inline, nothing is fetched (a Content-Security-Policy says so: no network,
no script but this page's own, checked by its hash), and every output is a relative link to the file
beside the report, so the folder can be moved or zipped whole. Every piece of text that came from a
user or from RunComfy (ids, prompts, errors) is HTML-escaped where it is written; the script only
sorts and hides rows that are already on the page and never turns data into markup.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from ..engine.states import NEEDS_ATTENTION
from .html_assets import CSS, JS

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
AUDIO_SUFFIXES = (".mp3", ".wav", ".ogg", ".flac", ".aac", ".m4a")
PARAMETERS = ("duration", "aspect_ratio", "sound", "keep_original_sound", "shot_type")
# Up to this many videos and audio tracks the page holds real players (they work without the script
# too); past it, each is a placeholder the script turns into a player when its row is first shown, so
# that a report of 10,000 jobs opens in seconds, not minutes.
INLINE_VIDEO_LIMIT = 60
PAGE_ROWS = 100  # rows shown at once


COLUMNS = (  # (header, sort key, numeric)
    ("Job", "id", False),
    ("Status", "status", False),
    ("Model", "model", False),
    ("Length", "length", True),
    ("Cost", "cost", True),
    ("Run time", "run", True),
    ("Finished", "finished", False),
    ("Output", None, False),
    ("Prompt and parameters", None, False),
)


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _money(usd: Any) -> str:
    return f"${usd:,.2f}" if isinstance(usd, int | float) else "—"


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    minutes, secs = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _num(value: Any) -> str:
    return repr(float(value)) if isinstance(value, int | float) and not isinstance(value, bool) else ""


def _model(model: str) -> str:
    return "/<wbr>".join(_e(part) for part in model.split("/"))


def _href(path: str) -> str:
    """A relative URL for an output path (relative to the folder report.html sits in)."""
    return _e(quote(path, safe="/"))


def _time(iso: str | None) -> str:
    return f'<time datetime="{_e(iso)}" title="{_e(iso)}">{_e(iso[11:19] or iso)}</time>' if iso else "—"


def _media(job: Mapping[str, Any], inline_videos: bool) -> str:
    parts = []
    for output in job.get("outputs") or []:
        path = str(output["path"])
        lower = path.lower()
        if lower.endswith(VIDEO_SUFFIXES) and inline_videos:
            parts.append(
                f'<video src="{_href(path)}" controls preload="metadata" playsinline '
                f'title="{_e(path)}"></video>'
            )
        elif lower.endswith(VIDEO_SUFFIXES):
            parts.append(f'<div class="player" data-src="{_href(path)}"></div>')
        elif lower.endswith(AUDIO_SUFFIXES) and inline_videos:
            parts.append(
                f'<audio src="{_href(path)}" controls preload="metadata" title="{_e(path)}"></audio>'
            )
        elif lower.endswith(AUDIO_SUFFIXES):
            parts.append(f'<div class="player audio" data-kind="audio" data-src="{_href(path)}"></div>')
        elif lower.endswith(IMAGE_SUFFIXES):
            parts.append(f'<img src="{_href(path)}" alt="{_e(path)}" loading="lazy">')
        parts.append(
            f'<div class="sub"><a href="{_href(path)}">{_e(path)}</a> · {output["bytes"]:,} bytes</div>'
        )
    return "".join(parts)


def _error(error: Mapping[str, Any] | None) -> str:
    if not error:
        return ""
    message = error.get("message") or error.get("error_message") or "failed"
    facts = [f"<strong>{_e(error.get('type') or 'Error')}</strong>"]
    for key, label in (("error_code", "error_code"), ("http_status", "HTTP")):
        if error.get(key) is not None:
            facts.append(f"{label} {_e(error[key])}")
    extra = {
        k: v
        for k, v in error.items()
        if k not in ("type", "message", "error_code", "http_status")
        and v is not None
        and not (k == "error_message" and v == message)
    }
    detail = f"<pre>{_e(json.dumps(extra, indent=2, ensure_ascii=False, default=str))}</pre>" if extra else ""
    return f'<div class="error">{" · ".join(facts)}<p>{_e(message)}</p>{detail}</div>'


def _attempts(attempts: Sequence[Mapping[str, Any]], open_: bool) -> str:
    if not attempts:
        return ""
    rows = []
    for n, a in enumerate(attempts, 1):
        error = a.get("error") or {}
        why = error.get("message") or error.get("error_message") or ""
        remote = f" ({_e(a['remote_status'])})" if a.get("remote_status") else ""
        unknown = " · resubmit of an unknown submit" if a.get("resubmit_of_unknown") else ""
        rows.append(
            f"<tr><td>{n}</td><td>{_e(a.get('request_id') or '—')}</td><td>{_e(a['status'])}{remote}"
            f"{unknown}</td><td>{_time(a.get('submitted_at'))}</td><td>{_time(a.get('finished_at'))}</td>"
            f"<td class=num>{_money(a.get('cost_usd'))}</td><td>{_e(why)}</td></tr>"
        )
    return (
        f"<details{' open' if open_ else ''}><summary>{len(attempts)} attempt(s)</summary>"
        '<table class="attempts"><thead><tr><th>#</th><th>request id</th>'
        "<th>status (last RunComfy status)</th>"
        "<th>submitted</th><th>finished</th><th>cost</th><th>error</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></details>"
    )


def _input_files(files: Sequence[Mapping[str, Any]]) -> str:
    items = []
    for f in files:
        url = f.get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            name = url.rstrip("/").rsplit("/", 1)[-1] or url
            value = f'<a href="{_e(url)}" rel="noopener noreferrer">{_e(name)}</a>'
        elif url:
            value = _e(url)
        else:
            size = int(f.get("inline_bytes") or 0) / 1024
            value = f"inline {_e(f.get('inline_type', 'image'))}, {size:,.0f} KB"
        items.append(f"<div><dt>{_e(f['field'])}</dt><dd>{value}</dd></div>")
    return "".join(items)


def _prompt(job: Mapping[str, Any]) -> str:
    params = job.get("input") or {}
    parts = []
    if params.get("prompt") is not None:
        parts.append(f'<p class="prompt">{_e(params["prompt"])}</p>')
    beats = params.get("multi_prompt")
    if isinstance(beats, list) and beats:
        items = "".join(
            f"<li>{_e(b.get('prompt'))} <span class=sub>({_e(b.get('duration'))} s)</span></li>"
            if isinstance(b, Mapping)
            else f"<li>{_e(b)}</li>"
            for b in beats
        )
        parts.append(f'<ol class="beats">{items}</ol>')
    facts = [
        f"<div><dt>{_e(k)}</dt><dd>{_e(json.dumps(v) if isinstance(v, bool) else v)}</dd></div>"
        for k in PARAMETERS
        if (v := params.get(k)) is not None
    ]
    facts.append(_input_files(job.get("input_files") or []))
    if job.get("twin_of"):
        facts.append(f"<div><dt>same request as</dt><dd>{_e(job['twin_of'])}</dd></div>")
    if job.get("after"):
        facts.append(f"<div><dt>made from the output of</dt><dd>{_e(', '.join(job['after']))}</dd></div>")
    if job.get("adopted_from"):
        facts.append(f"<div><dt>adopted from</dt><dd>{_e(job['adopted_from'])}</dd></div>")
    parts.append(f'<dl class="params">{"".join(facts)}</dl>')
    return "".join(parts)


def _row(job: Mapping[str, Any], inline_videos: bool, hidden: bool = False) -> str:
    status = str(job["status"])
    params = job.get("input") or {}
    length = params.get("duration")
    search = " ".join(str(x or "") for x in (job["id"], params.get("prompt"), job.get("request_id"))).lower()
    data = {
        "id": job["id"],
        "status": status,
        "model": job["model"],
        "length": _num(params.get("duration")),
        "cost": _num(job.get("cost_usd")),
        "run": _num(job.get("run_s")),
        "finished": job.get("finished_at") or "",
        "search": search,
    }
    attrs = " ".join(f'data-{k}="{_e(v)}"' for k, v in data.items())
    trouble = status in NEEDS_ATTENTION
    output = _media(job, inline_videos) + (_error(job.get("error")) if trouble else "")
    history = job.get("attempts") or []
    where = f"line {_e(job['line'])}" if job.get("line") else ""
    request = f"request {_e(job['request_id'])}" if job.get("request_id") else ""
    return (
        f"<tr {attrs}{' hidden' if hidden else ''}>"
        f'<td class="id">{_e(job["id"])}<div class="sub">{" · ".join(p for p in (where, request) if p)}'
        "</div></td>"
        f'<td><span class="badge s-{_e(status)}">{_e(status)}</span></td>'
        f'<td class="model">{_model(str(job["model"]))}</td>'
        f'<td class="num">{_e(length)}{" s" if length is not None else ""}</td>'
        f'<td class="num">{_money(job.get("cost_usd"))}</td>'
        f'<td class="num">{_seconds(job.get("run_s"))}</td>'
        f"<td>{_time(job.get('finished_at'))}</td>"
        f'<td class="media">{output}</td>'
        f"<td>{_prompt(job)}{_attempts(history, open_=trouble) if trouble or len(history) > 1 else ''}"
        "</td>"
        "</tr>"
    )


def _cards(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    jobs = s["jobs"] or 0
    share = f"{100 * s['succeeded'] / jobs:.0f}% of jobs" if jobs else "no jobs"
    efficiency = s.get("slot_efficiency")
    cards = [
        (str(jobs), "jobs"),
        (str(s["succeeded"]), f"succeeded ({share})"),
        (str(s["needs_attention"]), "need attention"),
        (_money(s["cost_usd"]), f"charged (estimate {_money(s['estimate_usd'])})"),
        (_seconds(s["wall_seconds"]), f"wall time over {s.get('runs', 1)} run(s)"),
        (
            f"{100 * efficiency:.0f}%" if isinstance(efficiency, int | float) else "—",
            f"slot efficiency (peak {s.get('peak_running', 0)} running)",
        ),
    ]
    halted = s.get("halted")
    if halted:
        cards.append(
            (f"halted after {halted.get('failed')}", "failed jobs (--halt-after): the rest not sent")
        )
    return "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(label)}</span></div>' for v, label in cards)


def is_video(path: str) -> bool:
    """Whether the page plays the file (a video or an audio track): it counts toward
    :data:`INLINE_VIDEO_LIMIT`."""
    return path.lower().endswith(VIDEO_SUFFIXES + AUDIO_SUFFIXES)


@dataclass(frozen=True)
class PageFacts:
    """What the page's head needs to know about all the rows before the first is written."""

    jobs: int
    videos: int
    statuses: tuple[str, ...]
    models: tuple[str, ...]

    @classmethod
    def of(cls, jobs: Sequence[Mapping[str, Any]]) -> PageFacts:
        videos = sum(is_video(str(o["path"])) for j in jobs for o in j.get("outputs") or [])
        return cls(
            len(jobs),
            videos,
            tuple(sorted({j["status"] for j in jobs})),
            tuple(sorted({j["model"] for j in jobs})),
        )


def render_html(report: Mapping[str, Any]) -> str:
    """The page for a report dict (as report.json holds it)."""
    parts: list[str] = []
    write_html(parts.append, report, PageFacts.of(report["jobs"]), report["jobs"])
    return "".join(parts)


def write_html(
    write: Callable[[str], Any],
    report: Mapping[str, Any],
    facts: PageFacts,
    jobs: Iterable[Mapping[str, Any]],
) -> None:
    """Write the page piece by piece: ``report`` needs its header fields and summary only; the rows
    come from ``jobs`` one at a time, so a report of 100,000 jobs never sits in memory whole."""
    summary = report["summary"]
    inline_videos = facts.videos <= INLINE_VIDEO_LIMIT
    chips = "".join(
        f'<button type="button" class="chip" data-status="{_e(s)}" aria-pressed="false">'
        f"{_e(s)} <b>{_e(n)}</b></button>"
        for s, n in sorted(summary["counts"].items())
    )
    status_options = "".join(f'<option value="{_e(s)}">{_e(s)}</option>' for s in facts.statuses)
    model_options = "".join(f'<option value="{_e(m)}">{_e(m)}</option>' for m in facts.models)
    heads = "".join(
        f'<th data-key="{key}" data-type="{"num" if numeric else "text"}"><button type="button">{_e(title)}'
        f"</button></th>"
        if key
        else f"<th>{_e(title)}</th>"
        for title, key, numeric in COLUMNS
    )
    script = JS.replace("__PAGE__", str(PAGE_ROWS))
    script_hash = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
        "media-src 'self' file:; img-src 'self' file: data:"
    )
    name = _e(report["name"])
    simulated = (
        f'<p class="note"><strong>Simulated:</strong> these results came from {_e(report.get("api"))}, '
        "not from RunComfy; the videos are test clips and the costs were never charged.</p>"
        if report.get("simulated")
        else ""
    )
    write(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name} — runcomfy-batch report</title>
<style>{CSS}</style></head>
<body>
<h1>{name}{" (simulated)" if report.get("simulated") else ""}</h1>
<p class="meta">{_e(report["manifest"])} · generated {_e(report["generated_at"])} ·
<a href="report.json">report.json</a> · <a href="report.csv">report.csv</a></p>
{simulated}
<section class="cards">{_cards(report)}</section>
<div class="chips" aria-label="jobs per state">{chips}</div>
<p class="note">Slot efficiency is how full the account's paid slots were kept: the jobs' run time added up
({_seconds(summary.get("busy_seconds"))}), divided by the most jobs seen running at once
({_e(summary.get("peak_running", 0))}) times the time from the first job's start to the last job's end.
A job's run time is measured by the runner's polls: from the first poll that found it running (or its submit,
when no poll did) to the poll that found it finished, so it can include some queue time and poll latency.
A job that finished while no runner was running ends where RunComfy's own timestamps put it (else when a
runner last saw it); one whose whole run no runner saw has no run time and is left out of these figures.</p>
<div class="controls">
<label>Status <select id="f-status"><option value="">all</option>{status_options}</select></label>
<label>Model <select id="f-model"><option value="">all</option>{model_options}</select></label>
<label>Search <input id="f-text" type="search" placeholder="id, prompt or request id"></label>
<span id="shown">{facts.jobs} of {facts.jobs} jobs shown</span>
<span id="pager" hidden><button type="button" id="prev">‹ previous</button> <span id="page"></span>
<button type="button" id="next">next ›</button></span>
</div>
<table id="jobs"><thead><tr>{heads}</tr></thead>
<tbody>
""")
    # Rows past the first page start hidden, so the browser never lays out 10,000 rows at once.
    n = -1
    for n, job in enumerate(jobs):
        write(_row(job, inline_videos, n >= PAGE_ROWS))
    if n < 0:
        write(f'<tr><td colspan="{len(COLUMNS)}">no jobs</td></tr>')
    write(f"""
</tbody></table>
<script>{script}</script>
</body></html>
""")
