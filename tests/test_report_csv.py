"""report.csv: one row per job for spreadsheets, from a real run; user text survives the trip through
csv.reader exactly (text a spreadsheet would evaluate as a formula comes back after a quote, so it is
shown, never run), and every number and path agrees with report.json."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import R2V

from runner.catalog.models import Catalog
from runner.manifest.loader import load_manifest

pytestmark = pytest.mark.anyio

PROMPTS = {
    "commas": "wide, slow, warm: a pan across the bay, at dusk",
    "quotes": 'she says "hello" and he answers \'hi\' ""twice""',
    "lines": "first line\nsecond line\r\nthird, with a comma\n",
    "unicode": "café — 東京の夜, ünïcødé ✓",
    "formula": '=HYPERLINK("http://x","y")',
    "plus": "+cmd|' /C calc'!A0",
    "minus": "-2+3",
    "at": "@SUM(A1:A9)",
    "spaces": "  leading and trailing spaces  ",
}
FORMULAS = {"formula", "plus", "minus", "at"}
COLUMNS = [
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


async def test_prompts_with_commas_quotes_and_newlines_round_trip(sim, write_manifest, tmp_path):
    jobs = "\n".join(
        f"  - id: {name}\n    input: {{prompt: {json.dumps(text)}}}" for name, text in PROMPTS.items()
    )
    manifest = write_manifest(
        f"version: 1\nname: csv\noutput_dir: ./out\ndefaults:\n  model: {R2V}\n"
        f"  input: {{duration: 5}}\njobs:\n{jobs}\n"
    )
    expected = {job.id: job.input["prompt"] for job in load_manifest(manifest, Catalog.load()).jobs}
    assert expected == PROMPTS  # the YAML said what we meant
    account = sim(fail_rate=0.5, seed=7)
    result = await account.run(manifest)
    assert set(result.counts) == {"succeeded", "failed"}

    with open(tmp_path / "out" / "report.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))

    assert [r["id"] for r in rows] == list(PROMPTS)  # manifest order, one row each
    for row, job in zip(rows, report["jobs"], strict=True):
        assert row["prompt"] == ("'" if row["id"] in FORMULAS else "") + PROMPTS[row["id"]]
        assert row["model"] == R2V and row["duration"] == "5"
        assert row["status"] == job["status"] and row["request_id"] == job["request_id"]
        assert float(row["estimate_usd"]) == pytest.approx(job["estimate_usd"])
        assert float(row["duration_s"]) == pytest.approx(job["duration_s"])
        if job["status"] == "succeeded":
            assert float(row["cost_usd"]) == pytest.approx(0.42) and row["error"] == ""
            assert row["outputs"] == f"{row['id']}/output.mp4"
            assert (tmp_path / "out" / row["outputs"]).stat().st_size == 4096
        else:
            assert row["outputs"] == "" and row["error"] == "the generation failed (simulated)"
    assert sum(float(r["cost_usd"] or 0) for r in rows) == pytest.approx(report["summary"]["cost_usd"])


async def test_every_job_of_the_manifest_has_a_row_even_before_it_ran(sim, write_manifest, tmp_path):
    """A run stopped by the budget cap: held jobs still get a row, with empty cost and request id."""
    jobs = "\n".join(f'  - id: j{i}\n    input: {{prompt: "shot {i}"}}' for i in range(4))
    manifest = write_manifest(
        f"version: 1\nname: csv\noutput_dir: ./out\nbudget_usd: 0.9\ndefaults:\n"
        f"  model: {R2V}\n  input: {{duration: 5}}\njobs:\n{jobs}\n"
    )
    result = await sim().run(manifest, budget_partial=True)
    assert result.counts.get("held") == 2, result.counts
    with open(tmp_path / "out" / "report.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["j0", "j1", "j2", "j3"]
    held = [r for r in rows if r["status"] == "held"]
    assert len(held) == 2
    assert all(r["cost_usd"] == "" and r["request_id"] == "" for r in held)
    assert all(r["error"] == "held by the budget cap" for r in held)
