"""Running a finished manifest again, and asking its status, from the state file alone: what the state
file remembers of the manifest (snapshot.py), when that is trusted and when the manifest is read again,
and reports that are rewritten only when the journal changed. Real state files, real files on disk,
the simulator in-process."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from conftest import I2V, simple_manifest

import runner
from runner.batch import finished_already
from runner.engine.store import Store
from runner.manifest.loader import load_manifest
from runner.manifest.snapshot import META_KEY, Snapshot, quick_name
from runner.reports.report import build_report, report_paths

pytestmark = pytest.mark.anyio


def png(path: Path, shade: int) -> Path:
    """A real 1x1 PNG of one grey shade."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(bytes([0, shade]))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )
    return path


async def test_a_finished_manifest_runs_again_from_the_state_file_alone(sim, write_manifest, tmp_path):
    """Second run: 'nothing to do', no request sent, the run recorded, the reports left as they were."""
    account = sim()
    manifest = write_manifest(simple_manifest(5))
    first = await account.run(manifest)
    assert first.exit_code == 0 and not first.message.startswith("nothing to do")
    reports = report_paths(tmp_path / "out")
    written = {name: os.stat(p).st_mtime_ns for name, p in reports.items()}
    sent = (await account.stats())["requests_total"]

    again = await account.run(manifest)
    assert again.exit_code == 0
    assert again.message == "nothing to do: all 5 job(s) succeeded"
    assert (await account.stats())["requests_total"] == sent
    assert {name: os.stat(p).st_mtime_ns for name, p in reports.items()} == written
    assert again.report["summary"]["succeeded"] == 5  # report.json, read on demand
    with Store.open(tmp_path / "state.sqlite", create=False) as store:
        assert [r["exit_code"] for r in store.runs()] == [0, 0]


async def test_anything_left_to_do_means_a_real_run(sim, write_manifest, tmp_path):
    """A deleted output, a failed job with --retry-failed, an edited manifest: each is a real run,
    which fetches, resubmits or syncs what it must."""
    account = sim()
    manifest = write_manifest(simple_manifest(3))
    await account.run(manifest)
    options = account.options()
    assert finished_already(manifest, options) is not None

    (tmp_path / "out" / "shot-1" / "output.mp4").unlink()
    assert finished_already(manifest, options) is None
    fetched = await account.run(manifest)
    assert fetched.exit_code == 0 and (tmp_path / "out" / "shot-1" / "output.mp4").exists()
    assert finished_already(manifest, options) is not None

    manifest.write_text(manifest.read_text() + '  - id: shot-new\n    input: {prompt: "a new one"}\n')
    assert finished_already(manifest, options) is None
    grown = await account.run(manifest)
    assert grown.counts == {"succeeded": 4}


async def test_failed_jobs_rest_unless_retry_is_asked(sim, write_manifest, tmp_path):
    account = sim(fail_rate=0.5, seed=3)
    manifest = write_manifest(simple_manifest(6))
    first = await account.run(manifest)
    assert first.counts.get("failed")
    again = finished_already(manifest, account.options())
    assert again is not None and again.exit_code == 1 and again.message.startswith("nothing to do: ")
    assert {j["status"] for j in again.needs_attention} == {"failed"}
    assert finished_already(manifest, account.options(retry_failed=True)) is None


async def test_a_changed_local_image_is_seen_without_reading_the_manifest(sim, write_manifest, tmp_path):
    """The manifest's bytes did not change, but a local file it inlines did: the snapshot no longer
    matches, so the job runs again with the new image."""
    image = png(tmp_path / "ref.png", 10)
    manifest = write_manifest(f"""
        version: 1
        name: local
        output_dir: ./out
        jobs:
          - id: from-file
            model: {I2V}
            input: {{image: ./ref.png, prompt: "from a local file", duration: 5}}
    """)
    account = sim()
    await account.run(manifest)
    snapshot = Snapshot.of(load_manifest(manifest))
    assert snapshot is not None and snapshot.matches(manifest)
    assert [Path(f[0]).name for f in snapshot.local_files] == ["ref.png"]
    png(image, 200)
    os.utime(image, ns=(1, 1))
    assert not snapshot.matches(manifest)
    assert finished_already(manifest, account.options()) is None
    rerun = await account.run(manifest)
    assert rerun.exit_code == 0 and len(rerun.report["jobs"][0]["attempts"]) == 2


async def test_status_reads_the_state_file_and_says_when_the_manifest_changed(sim, write_manifest, tmp_path):
    account = sim()
    manifest = write_manifest(simple_manifest(4))
    await account.run(manifest)
    state = tmp_path / "state.sqlite"
    with Store.open(state, create=False) as store:
        snapshot = Snapshot.from_json(store.get_meta(META_KEY))
    assert snapshot is not None and snapshot.jobs == 4 and snapshot.manifest == str(manifest)
    answer = runner.status(manifest, state)
    assert answer.jobs == 4 and answer.not_yet_in_state == 0 and answer.counts == {"succeeded": 4}

    manifest.write_text(simple_manifest(6))  # edited, not run yet: the manifest is read to count
    edited = runner.status(manifest, state)
    assert edited.jobs == 6 and edited.not_yet_in_state == 2


def test_the_state_file_is_found_by_the_name_line(tmp_path):
    """quick_name reads the top-level name (quoted or not); anything unsure gives None (a full load)."""
    cases = {
        "version: 1\nname: nightly\njobs: []\n": "nightly",
        "version: 1\nname: 'quoted-1'   # a comment\njobs: []\n": "quoted-1",
        "jobs: []\nversion: 1\n": "m",  # no name: the file's stem, as load_manifest does
        "{version: 1, name: flow, jobs: []}\n": None,
        "name: a\nname: b\njobs: []\n": None,
        "name: &anchor x\njobs: []\n": None,
    }
    for text, expected in cases.items():
        path = tmp_path / "m.yaml"
        path.write_text(text)
        assert quick_name(path) == expected, text


async def test_reports_are_written_job_by_job_and_match_the_whole_report(sim, write_manifest, tmp_path):
    """report.json on disk (streamed) is the same document build_report makes in memory, but for the time
    it was generated; report.csv has a row per job."""
    account = sim(fail_rate=0.3, seed=11)
    manifest = write_manifest(simple_manifest(12))
    await account.run(manifest)
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    with Store.open(tmp_path / "state.sqlite", create=False) as store:
        in_memory = build_report(load_manifest(manifest), store)
    on_disk.pop("generated_at"), in_memory.pop("generated_at")
    assert on_disk == in_memory
    assert len(on_disk["jobs"]) == 12 and on_disk["jobs"][0]["id"] == "shot-0"
    assert (tmp_path / "out" / "report.csv").read_text().count("\n") == 13
