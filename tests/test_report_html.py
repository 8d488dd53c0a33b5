"""report.html: one self-contained page built from a real run against the simulator, checked as text
(escaping, no network, the schema of the report it comes from) and in headless Chromium (it loads
without errors, sorts, filters and plays the videos the run downloaded)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import anyio
import jsonschema
import pytest
from conftest import I2V, R2V, InProcess

from runner.catalog.models import schema_dir
from runner.reports.html import render_html
from runner.reports.report import slot_use
from runner.simulator import SimulatorConfig

EVIL = '</script><script>window.pwned=1</script><img src=x onerror="window.pwned=2"> & <b>bold</b>'
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

MANIFEST = f"""\
version: 1
name: report-check
output_dir: ./out
defaults:
  model: {R2V}
  input: {{duration: 5}}
jobs:
  - id: evil
    input:
      prompt: {json.dumps(EVIL)}
  - id: quotes
    input:
      prompt: "commas, \\"quotes\\" and\\na second line"
      aspect_ratio: "9:16"
      sound: true
  - id: dog
    input: {{prompt: a dog runs on the beach, duration: 10}}
  - id: cat
    input: {{prompt: a cat sleeps}}
  - id: push-in
    model: {I2V}
    input: {{prompt: slow push-in, image: "https://example.com/ref.png", duration: 8}}
  - id: beats
    model: {I2V}
    input:
      prompt: two beats
      image: "https://example.com/ref.png"
      duration: 6
      multi_prompt:
        - {{prompt: wide shot, duration: 3}}
        - {{prompt: close-up, duration: 3}}
"""


def run_report(folder: Path) -> dict[str, Any]:
    """Run MANIFEST in ``folder`` against an in-process simulator where some jobs fail; the report."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "m.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    # seed 7: of the first six jobs accepted, some fail and some succeed (the draws go by accept order)
    account = InProcess(
        SimulatorConfig(
            concurrency=2, job_seconds=0.05, job_spread=0.2, output_bytes=16_384, fail_rate=0.4, seed=7
        ),
        folder,
    )
    anyio.run(lambda: account.run(manifest))
    return json.loads((folder / "out" / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    folder = tmp_path_factory.mktemp("report")
    data = run_report(folder)
    statuses = {j["status"] for j in data["jobs"]}
    assert statuses == {"succeeded", "failed"}, statuses  # the checks below need both
    return data, folder / "out"


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    return parser


def test_a_real_report_validates_against_its_schema(report):
    """report.json, with failures, reference files and slot figures, matches schemas/report.schema.json."""
    data, _ = report
    schema = json.loads((schema_dir() / "report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema)
    push_in = next(j for j in data["jobs"] if j["id"] == "push-in")
    assert push_in["input_files"] == [{"field": "image", "url": "https://example.com/ref.png"}]
    summary = data["summary"]
    assert 1 <= summary["peak_running"] and 0 < summary["slot_efficiency"] <= 1
    ran = [j["run_s"] for j in data["jobs"] if j["run_s"] is not None]
    assert summary["busy_seconds"] >= sum(ran) - 0.01  # every attempt counts, the current ones included


def test_slot_efficiency_is_busy_time_over_peak_times_span():
    """Back-to-back jobs fill one slot (1.0); two 1 s jobs overlapping over 1.5 s fill 2/3 of two slots."""
    assert slot_use([(0.0, 1.0), (1.0, 2.0)]) == {
        "busy_seconds": 2.0,
        "peak_running": 1,
        "slot_efficiency": 1.0,
    }
    assert slot_use([(0.0, 1.0), (0.5, 1.5)])["peak_running"] == 2
    assert slot_use([(0.0, 1.0), (0.5, 1.5)])["slot_efficiency"] == pytest.approx(2 / (2 * 1.5), abs=1e-4)
    assert slot_use([]) == {"busy_seconds": 0.0, "peak_running": 0, "slot_efficiency": None}


def test_user_text_is_escaped_and_only_the_page_script_runs(report):
    """A prompt with </script> and <img onerror> is shown as text: one script, no injected element."""
    data, out = report
    page = (out / "report.html").read_text(encoding="utf-8")
    elements = parse(page)
    assert len(elements.scripts) == 1
    assert "pwned" not in elements.scripts[0]
    assert not [a for tag, a in elements.tags if tag == "img"]  # no output is an image; the prompt's is text
    assert not [a for _, a in elements.tags if any(k.startswith("on") for k in a)]
    assert "&lt;/script&gt;&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
    # A RunComfy error message is user-visible text too.
    tampered = copy.deepcopy(data)
    failed = next(j for j in tampered["jobs"] if j["status"] == "failed")
    failed["error"]["message"] = "<script>alert(1)</script>"
    failed["id"] = 'x"><svg onload=alert(1)>'
    elements = parse(render_html(tampered))
    assert len(elements.scripts) == 1
    assert not [t for t, _ in elements.tags if t == "svg"]


def test_the_page_needs_no_network(report):
    """Every src/href on the page is relative (or a plain link to an input URL); a CSP forbids the rest."""
    _, out = report
    page = (out / "report.html").read_text(encoding="utf-8")
    elements = parse(page)
    csp = next(a["content"] for t, a in elements.tags if t == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in csp and "https:" not in csp
    for tag, attrs in elements.tags:
        src = attrs.get("src")
        if src is not None:
            assert not re.match(r"^[a-z]+:", src), (tag, src)
            assert (out / unquote(src)).is_file(), src
        if tag == "link":
            raise AssertionError(f"no stylesheet or other link may be fetched: {attrs}")


# -- in a real browser ------------------------------------------------------------------------------


def _playwright():
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser():
    sync_api = _playwright()
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, report):
    """The report opened from disk, with every console message, page error and request recorded."""
    _, out = report
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.messages, page.requests = [], []
    page.on("console", lambda m: page.messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.messages.append(f"pageerror: {e}"))
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto((out / "report.html").as_uri())
    page.wait_for_load_state("load")
    yield page
    context.close()


def visible_ids(page) -> list[str]:
    return page.eval_on_selector_all(
        "#jobs > tbody > tr:not([hidden])", "rows => rows.map(r => r.dataset.id)"
    )


@pytest.mark.browser
def test_the_page_loads_without_errors_or_network_and_the_injection_does_not_run(page, report, tmp_path):
    data, out = report
    assert page.title() == "report-check — runcomfy-batch report"
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("#jobs > tbody > tr").count() == len(data["jobs"])
    assert page.locator("text=" + EVIL).count() == 1  # shown, as text, once
    page.wait_for_timeout(300)  # let the players fetch their metadata
    assert [m for m in page.messages if not m.startswith(("debug", "log"))] == []
    assert page.requests and all(urlparse(u).scheme == "file" for u in page.requests), page.requests
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.browser
def test_every_finished_video_plays_inline_from_the_file_beside_the_report(page, report):
    """One <video> per succeeded job, its src a relative path to the downloaded MP4, which the browser
    decodes (metadata loaded, a positive duration)."""
    data, out = report
    succeeded = [j for j in data["jobs"] if j["status"] == "succeeded"]
    videos = page.locator("video")
    assert videos.count() == len(succeeded)
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 1 || v.error)",
        timeout=10_000,
    )
    states = page.eval_on_selector_all(
        "video",
        """vs => vs.map(v => ({src: v.getAttribute('src'),
        ready: v.readyState, duration: v.duration, error: v.error && v.error.code,
        job: v.closest('tr').dataset.id}))""",
    )
    expected = {j["id"]: j["outputs"][0]["path"] for j in succeeded}
    assert {s["job"]: s["src"] for s in states} == expected
    for state in states:
        assert (out / unquote(state["src"])).is_file()
        assert state["error"] is None and state["ready"] >= 1 and state["duration"] > 0, state
    # The prompt and key parameters sit beside the video.
    row = page.locator("tr[data-id='quotes']")
    assert "a second line" in row.inner_text() and "aspect_ratio" in row.inner_text()


@pytest.mark.browser
def test_headers_sort_the_table_both_ways(page, report):
    data, _ = report
    page.click("th[data-key=cost] button")
    costs = page.eval_on_selector_all("#jobs > tbody > tr", "rows => rows.map(r => r.dataset.cost)")
    known = [c for c in costs if c]
    assert costs == known + [""] * (len(costs) - len(known))  # jobs without a cost go last
    assert [float(c) for c in known] == sorted(float(c) for c in known)
    assert page.get_attribute("th[data-key=cost]", "aria-sort") == "ascending"
    page.click("th[data-key=cost] button")
    costs = [
        float(c)
        for c in page.eval_on_selector_all("#jobs > tbody > tr", "rows => rows.map(r => r.dataset.cost)")
        if c
    ]
    assert costs == sorted(costs, reverse=True)
    page.click("th[data-key=id] button")
    assert visible_ids(page) == sorted((j["id"] for j in data["jobs"]), key=str.lower)
    page.click("th[data-key=length] button")
    lengths = page.eval_on_selector_all(
        "#jobs > tbody > tr", "rows => rows.map(r => parseFloat(r.dataset.length))"
    )
    assert lengths == sorted(lengths) and lengths[0] == 5 and lengths[-1] == 10


@pytest.mark.browser
def test_filters_by_status_model_and_text(page, report):
    data, _ = report
    failed = [j["id"] for j in data["jobs"] if j["status"] == "failed"]
    page.select_option("#f-status", "failed")
    assert visible_ids(page) == failed
    assert page.inner_text("#shown") == f"{len(failed)} of {len(data['jobs'])} jobs shown"
    # A failed job shows RunComfy's error and its attempt history.
    row = page.locator(f"tr[data-id='{failed[0]}']")
    assert "500001" in row.inner_text() and "the generation failed" in row.inner_text()
    attempts = next(j["attempts"] for j in data["jobs"] if j["id"] == failed[0])
    assert row.locator("table.attempts tbody tr").count() == len(attempts) >= 1
    page.select_option("#f-status", "")
    page.select_option("#f-model", I2V)
    assert visible_ids(page) == [j["id"] for j in data["jobs"] if j["model"] == I2V]
    page.select_option("#f-model", "")
    page.fill("#f-text", "BEACH")
    assert visible_ids(page) == ["dog"]
    page.fill("#f-text", "")
    page.click(".chip[data-status=succeeded]")
    assert visible_ids(page) == [j["id"] for j in data["jobs"] if j["status"] == "succeeded"]
    assert page.input_value("#f-status") == "succeeded"


@pytest.mark.browser
def test_the_report_folder_can_be_moved_whole(browser, report, tmp_path):
    """Links are relative: a copy of the output folder elsewhere still plays its videos."""
    _, out = report
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, moved)
    context = browser.new_context()
    page = context.new_page()
    page.goto((moved / "report.html").as_uri())
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 1)", timeout=10_000
    )
    srcs = page.eval_on_selector_all("video", "vs => vs.map(v => v.currentSrc)")
    assert srcs and all(s.startswith(moved.as_uri()) for s in srcs)
    context.close()


@pytest.mark.browser
def test_a_large_report_pages_its_rows_and_makes_players_for_the_shown_page_only(browser, report, tmp_path):
    """250 jobs (the real ones, repeated): 100 rows a page, sorting and filtering span every page, and
    a video player exists only for rows that have been shown (each still plays its file)."""
    data, out = report
    jobs = []
    for n in range(250):
        job = copy.deepcopy(data["jobs"][n % len(data["jobs"])])
        job["id"] = f"job-{n:03d}"
        job["cost_usd"] = None if job["status"] != "succeeded" else float(n)
        jobs.append(job)
    big = out / "big.html"  # beside the real outputs, so the relative video paths resolve
    big.write_text(render_html({**data, "jobs": jobs}), encoding="utf-8")
    succeeded = [j for j in jobs if j["status"] == "succeeded"]
    assert len(succeeded) > 60  # past the limit for players written into the page
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(big.as_uri())
        assert page.inner_text("#shown") == "250 of 250 jobs shown (1–100 on this page)"
        assert visible_ids(page) == [f"job-{n:03d}" for n in range(100)]
        on_page = sum(1 for j in succeeded if int(j["id"][4:]) < 100)
        assert page.locator("video").count() == on_page
        loaded = "() => Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 1)"
        page.wait_for_function(loaded, timeout=10_000)
        page.click("#next")
        page.click("#next")
        assert page.inner_text("#page") == "page 3 of 3"
        assert visible_ids(page) == [f"job-{n:03d}" for n in range(200, 250)]
        assert page.locator("video").count() == len(succeeded)  # pages 1-3 have all been shown now
        page.click("th[data-key=cost] button")
        page.click("th[data-key=cost] button")  # descending: the most expensive job, wherever it was
        assert visible_ids(page)[0] == max(succeeded, key=lambda j: j["cost_usd"])["id"]
        assert page.inner_text("#page") == "page 1 of 3"
        page.select_option("#f-status", "failed")
        failed = sum(1 for j in jobs if j["status"] == "failed")
        assert len(visible_ids(page)) == min(100, failed)
        assert page.inner_text("#shown").startswith(f"{failed} of 250 jobs shown")
        assert errors == []
    finally:
        context.close()
