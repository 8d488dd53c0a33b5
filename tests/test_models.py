"""Every model of RunComfy's catalog, as a user meets them: listed offline, a manifest over many
families validated with each model's own bounds and run against the simulator into files of the
right kind, and a model only a sync knows, synced from the simulator and then run."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import I2V, REPO
from helpers import cli_env

from runner.api.catalog import next_page
from runner.batch import sync_models
from runner.catalog.models import Catalog
from runner.catalog.synced import cache_path
from runner.errors import ManifestInvalid
from runner.manifest.loader import load_manifest
from runner.simulator import SimulatorConfig, expected_output_bytes, running_server

pytestmark = pytest.mark.anyio

STUDIO = REPO / "manifests" / "studio.yaml"
SNAPSHOT = json.loads((REPO / "schemas" / "catalog" / "models.json").read_text(encoding="utf-8"))["models"]
OPENS_AS = {  # the bytes a program recognises each kind of file by
    "image": lambda data: data.startswith(b"\x89PNG\r\n\x1a\n"),
    "audio": lambda data: data.startswith(b"RIFF") and data[8:12] == b"WAVE",
    "video": lambda data: data[4:8] == b"ftyp",
}
NEW_MODEL = "acme/lumen-1/text-to-video"
NEW_ENTRY = {
    "model_id": NEW_MODEL,
    "kind": "model",
    "categories": ["text-to-video"],
    "price_unit": "second",
    "input_schema": {
        "type": "object",
        "properties": {
            "prompt": {"type": "string"},
            "duration": {"type": "integer", "minimum": 2, "maximum": 8, "default": 4},
            "mood": {"type": "string", "enum": ["calm", "tense"]},
        },
        "required": ["prompt"],
    },
}


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def studio_copy(folder: Path) -> Path:
    shutil.copy(STUDIO, folder / "studio.yaml")
    shutil.copytree(REPO / "manifests" / "refs", folder / "refs")
    return folder / "studio.yaml"


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this test's own: what it syncs no other test sees."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


def test_models_json_lists_every_endpoint_of_the_snapshot_offline(tmp_path: Path) -> None:
    """No token and an API that is not there: the list comes from the bundled snapshot alone."""
    done = cli(
        "models", "--json", cwd=tmp_path, RUNCOMFY_BASE_URL="http://127.0.0.1:9", RUNCOMFY_API_TOKEN=""
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) > 100 and [row["model_id"] for row in rows] == sorted(SNAPSHOT)
    assert all(
        {"model_id", "output_kind", "price_unit", "source", "max_outputs"} <= row.keys() for row in rows
    )
    assert Counter(row["output_kind"] for row in rows) == Counter(video=90, image=24, audio=6)
    by_id = {row["model_id"]: row for row in rows}
    facts = ("source", "output_kind", "price_unit", "price_usd", "price_source", "price_read_on")
    assert [by_id[I2V][k] for k in facts] == [
        "hand-checked",
        "video",
        "second",
        0.112,
        "price table",
        "2026-11-01",
    ]
    seedream = by_id["bytedance/seedream-5.0-pro/text-to-image"]
    assert (seedream["price_unit"], seedream["price_usd"], seedream["price_read_on"]) == (
        "output",
        0.08,
        "2026-09-23",
    )
    assert by_id["wan-ai/wan-2.7/text-to-image"]["max_outputs"] == 5
    assert by_id["acestep-ai/ace-step-1.5/text-to-audio"]["price_usd"] is None


def test_models_prints_a_table_and_show_prints_a_models_inputs_and_price(tmp_path: Path) -> None:
    table = cli("models", "--kind", "audio", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "acestep-ai/ace-step-1.5/text-to-audio" in table.stdout and "kling" not in table.stdout
    assert "6 of 120 models (90 video, 24 image, 6 audio) in 31 families" in table.stdout
    shown = cli("models", "show", "bytedance/seedream-5.0-pro/image-to-image", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert (
        "  price: unknown: a run asks the API's price call; under a budget, give one with --prices FILE"
        in lines
    )
    image = next(line for line in lines if line.strip().startswith("image "))
    assert "required: list of images: https URL, data: URI or local file (sent inline); 1–10 items" in image
    assert any("each file: width/height must be over 0.0625 and under 16" in line for line in lines)
    i2v = cli("models", "show", I2V, cwd=tmp_path).stdout
    assert "price: $0.112/s (with sound: $0.14), from the price table read on 2026-11-01" in i2v
    assert "duration      optional: whole number, 3–15; default 5" in i2v


def test_an_unknown_model_id_is_answered_with_the_closest_ids_and_a_hint_to_sync(tmp_path: Path) -> None:
    done = cli("models", "show", "kling/kling-video-o3/pro/image-to-vidoe", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(
        "runcomfy-batch: unknown model 'kling/kling-video-o3/pro/image-to-vidoe'; closest: "
        "kling/kling-video-o3/pro/image-to-video, "
    )
    assert "`runcomfy-batch models sync` fetches RunComfy's current catalog" in line and len(line) < 400


def test_the_studio_manifest_spans_five_families_and_an_image_a_video_and_an_audio_model() -> None:
    manifest = load_manifest(STUDIO)
    catalog = Catalog.load()
    specs = {job.model: catalog.models[job.model] for job in manifest.jobs}
    assert len({spec.family for spec in specs.values()}) >= 5
    assert {spec.output_kind for spec in specs.values()} == {"image", "video", "audio"}
    assert {"wan-ai/wan-2.7/text-to-image", "wan-ai/wan-2.7/image-to-video"} <= specs.keys()


async def test_the_studio_manifest_runs_and_leaves_files_of_each_models_kind(sim, tmp_path: Path) -> None:
    """Images as PNG, videos as MP4, audio as WAV, as many as each input asks for; the report shows
    the images and plays the videos and the audio."""
    account = sim(output_bytes=16384)  # room for the playable sample clip
    manifest = studio_copy(tmp_path)
    result = await account.run(manifest)
    assert result.exit_code == 0, result.needs_attention
    catalog = Catalog.load()
    kinds = {job.id: catalog.models[job.model].output_kind for job in load_manifest(manifest).jobs}
    report = json.loads((tmp_path / "out" / "studio" / "report.json").read_text())
    seen: dict[str, list[str]] = {}
    for job in report["jobs"]:
        kind = kinds[job["id"]]
        for index, output in enumerate(job["outputs"]):
            path = tmp_path / "out" / "studio" / output["path"]
            assert path.suffix == {"image": ".png", "video": ".mp4", "audio": ".wav"}[kind]
            data = path.read_bytes()
            assert OPENS_AS[kind](data)
            assert data == expected_output_bytes(job["request_id"], index, 16384, kind)
        seen[job["id"]] = [o["path"] for o in job["outputs"]]
    assert seen["harbour-stills"] == [
        "harbour-stills/output.png",
        "harbour-stills/output-1.png",
    ]  # max_images: 2
    assert seen["score"] == ["score/output.wav"]
    page = (tmp_path / "out" / "studio" / "report.html").read_text()
    assert '<img src="poster-1K/output.png"' in page
    assert '<video src="harbour-clip/output.mp4"' in page
    assert '<audio src="score/output.wav" controls' in page


def test_a_wrong_field_of_any_model_is_reported_with_that_models_own_bound(tmp_path: Path) -> None:
    """One job per model of the studio manifest, each with one field past the bound its own schema
    gives (a maximum, else a choice): each is one line, file:line job ID: field: …, with that bound."""
    catalog = Catalog.load()
    jobs = [job for job in yaml.safe_load(STUDIO.read_text())["jobs"] if "matrix" not in job]
    lines, expected = ["version: 1", "jobs:"], []
    for job in jobs:
        spec = catalog.models[job["model"]]
        properties = spec.schema["properties"]
        bounded = sorted(name for name, prop in properties.items() if "maximum" in prop)
        if bounded:
            name = bounded[0]
            wrong: Any = properties[name]["maximum"] + 1
            why = f"{wrong} is greater than the maximum of {properties[name]['maximum']}"
        else:
            name = sorted(name for name, prop in properties.items() if "enum" in prop)[0]
            wrong = "no-such-choice"
            why = f"'no-such-choice' is not one of {properties[name]['enum']!r}"
        body = {**job, "input": {**job["input"], name: wrong}}
        lines.append(f"  - {json.dumps(body)}")
        expected.append(f"m.yaml:{len(lines)} job {job['id']}: input.{name}: {why}")
    (tmp_path / "m.yaml").write_text("\n".join(lines) + "\n")
    (tmp_path / "refs").mkdir()
    shutil.copy(REPO / "manifests" / "refs" / "end-card.png", tmp_path / "refs")
    done = cli("validate", "m.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == expected
    assert len({catalog.models[job["model"]].family for job in jobs}) >= 5


def test_sync_brings_a_model_no_bundled_file_has_and_a_manifest_using_it_validates_and_runs(
    tmp_path: Path,
) -> None:
    """Before the sync the model is unknown (closest ids and the hint); `models sync` against the
    simulator serving it says it was added; then it validates with its own bounds and runs."""
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"models": [NEW_ENTRY]}))
    cache = tmp_path / "cache"
    (tmp_path / "new.yaml").write_text(
        f"version: 1\nname: new\njobs:\n  - id: lumen\n    model: {NEW_MODEL}\n"
        "    input: {prompt: a lantern in fog, duration: 6, mood: calm}\n"
    )
    before = cli("validate", "new.yaml", cwd=tmp_path, XDG_CACHE_HOME=str(cache))
    assert before.returncode == 2
    assert f"new.yaml:5 job lumen: model: unknown model '{NEW_MODEL}'" in before.stderr
    assert "`runcomfy-batch models sync` fetches RunComfy's current catalog" in before.stderr
    config = SimulatorConfig(
        job_seconds=0.05, output_bytes=16384, extra_models_path=str(extra), catalog_page_size=25
    )
    with running_server(config) as base_url:
        synced = cli("models", "sync", "--base-url", base_url, cwd=tmp_path, XDG_CACHE_HOME=str(cache))
        assert synced.returncode == 0, synced.stderr
        assert synced.stdout.splitlines()[:3] == [
            f"synced 121 models from 5 page(s) into {cache / 'runcomfy-batch' / 'catalog.json'}",
            "added (1):",
            f"  {NEW_MODEL}",
        ]
        listed = json.loads(cli("models", "--json", cwd=tmp_path, XDG_CACHE_HOME=str(cache)).stdout)
        assert {row["source"] for row in listed} == {"synced"} and len(listed) == 121
        checked = cli("validate", "new.yaml", cwd=tmp_path, XDG_CACHE_HOME=str(cache))
        assert checked.returncode == 0, checked.stderr
        ran = cli(
            "run",
            "new.yaml",
            "--base-url",
            base_url,
            "--no-progress",
            cwd=tmp_path,
            XDG_CACHE_HOME=str(cache),
        )
        assert ran.returncode == 0, ran.stderr
        assert (tmp_path / "out" / "new" / "lumen" / "output.mp4").read_bytes()[4:8] == b"ftyp"
    (tmp_path / "new.yaml").write_text(
        (tmp_path / "new.yaml").read_text().replace("duration: 6", "duration: 9")
    )
    wrong = cli("validate", "new.yaml", cwd=tmp_path, XDG_CACHE_HOME=str(cache))
    assert wrong.stderr.splitlines() == [
        "new.yaml:6 job lumen: input.duration: 9 is greater than the maximum of 8"
    ]


@pytest.mark.parametrize(("paging", "pages"), [("cursor", 3), ("next-url", 3), ("page", 3), ("none", 1)])
async def test_sync_follows_every_paging_style(sim, own_cache: Path, paging: str, pages: int) -> None:
    account = sim(catalog_paging=paging, catalog_page_size=50)
    done = await sync_models(account.options())
    assert (done.models, done.pages, done.complete, done.notes) == (120, pages, True, [])
    assert not done.changes  # the simulator serves the saved answer the snapshot was built from
    assert (await account.stats())["requests"]["catalog"] == pages
    catalog = Catalog.load()
    assert catalog.synced is not None and len(catalog) == 120
    assert {spec.origin for spec in catalog.models.values()} == {"synced"}


async def test_a_catalog_whose_pages_never_end_stops_and_removes_nothing(sim, own_cache: Path) -> None:
    account = sim(catalog_paging="cursor-loop", catalog_page_size=30)
    done = await sync_models(account.options())
    assert (done.models, done.pages, done.complete) == (30, 2, False)
    assert done.notes == ["page 2 held no model not seen before; stopped there"]
    assert done.changes.removed == []
    catalog = Catalog.load()  # the 30 synced over the bundled 120: nothing set aside
    assert len(catalog) == 120 and not catalog.unlisted
    assert Counter(spec.origin for spec in catalog.models.values())["synced"] == 30


async def test_a_complete_sync_sets_aside_what_it_no_longer_lists(
    sim, own_cache: Path, tmp_path: Path
) -> None:
    """A sync is compared with the one before: what it lists no more is removed, and a manifest
    naming such a model is told so."""
    (tmp_path / "one.json").write_text(json.dumps([NEW_ENTRY]))
    (tmp_path / "two.json").write_text(json.dumps([{**NEW_ENTRY, "model_id": "acme/lumen-2/text-to-video"}]))
    account = sim(extra_models_path=str(tmp_path / "one.json"))
    first = await sync_models(account.options())
    assert first.changes.added == [NEW_MODEL] and first.models == 121
    await account.configure(extra_models_path=str(tmp_path / "two.json"))
    second = await sync_models(account.options())
    assert (second.changes.added, second.changes.removed) == (["acme/lumen-2/text-to-video"], [NEW_MODEL])
    (tmp_path / "m.yaml").write_text(
        f"version: 1\njobs:\n  - {{id: a, model: {NEW_MODEL}, input: {{prompt: x}}}}\n"
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(tmp_path / "m.yaml")
    assert f"model '{NEW_MODEL}' is no longer in RunComfy's catalog (synced on " in str(caught.value)


def test_a_next_page_elsewhere_is_not_followed_and_cursors_pages_and_links_are() -> None:
    base = "https://api.example.com"
    here = ("/v1/models", "include_schema=true")
    assert next_page({"next": "https://evil.example.net/v1/models?page=2"}, here, base) == (
        None,
        "its next page is at evil.example.net, outside the API's base URL: not followed (the token stays)",
    )
    assert next_page({"next": "/v1/models?offset=50"}, here, base) == (("/v1/models", "offset=50"), None)
    assert next_page({"links": {"next": {"href": f"{base}/v1/models?p=2"}}}, here, base)[0] == (
        "/v1/models",
        "p=2",
    )
    assert next_page({"next_cursor": "abc", "has_more": False}, here, base) == (None, None)
    assert next_page({"next_cursor": "abc"}, here, base)[0] == (
        "/v1/models",
        "include_schema=true&cursor=abc",
    )
    assert next_page({"page": 2, "total_pages": 2}, here, base) == (None, None)
    assert next_page({"page": 1, "has_more": True}, here, base)[0] == (
        "/v1/models",
        "include_schema=true&page=2",
    )
    assert next_page({"has_more": True}, here, base) == (
        None,
        "it says more pages follow but not how to reach them",
    )
    assert next_page([{"model_id": "x"}], here, base) == (None, None)


async def test_the_simulator_answers_prices_from_the_catalog_and_makes_what_each_model_makes(sim) -> None:
    import httpx

    account = sim()
    headers = {"Authorization": "Bearer sim-token"}
    async with httpx.AsyncClient(
        transport=account.transport(), base_url="http://sim", headers=headers
    ) as client:
        price = (await client.get("/v1/models/bytedance/seedream-5.0-pro/text-to-image")).json()
        assert (price["base_price_usd"], price["price_unit"]) == (0.08, "output")
        assert (await client.get("/v1/models/acestep-ai/ace-step-1.5/text-to-audio")).status_code == 404
        assert (await client.get("/v1/models/acme/none")).status_code == 400
        page = (await client.get("/v1/models", params={"include_schema": "false"})).json()
        assert "input_schema" not in page["models"][0] and page["has_more"] is True
        posted = await client.post(
            "/v1/models/wan-ai/wan-2.7/text-to-image", json={"prompt": "p", "max_images": 3}
        )
        request_id = posted.json()["request_id"]
        described = (await client.get(f"/_sim/requests/{request_id}")).json()
        assert (described["outputs"], described["output_kind"]) == (3, "image")
        assert math.isclose(described["cost_usd"], 0.0)  # no price known: the simulator charges nothing


def test_the_catalog_loads_fast_and_checks_no_bundled_schema() -> None:
    """The snapshot is one read and one parse: a few milliseconds (0.2 s even on a busy machine)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time, sys; from runner.catalog.models import Catalog; t = time.perf_counter(); "
            "c = Catalog.load(); print(len(c), time.perf_counter() - t, 'jsonschema' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=cli_env(),
    )
    count, seconds, imported = done.stdout.split()
    assert (count, imported) == ("120", "False") and float(seconds) < 0.2
    assert cache_path().name == "catalog.json"


async def test_a_manifest_may_name_schemas_of_its_own_which_win_for_its_jobs(sim, tmp_path: Path) -> None:
    """A model schema file and a catalog entry file under `models:`: their models validate with their
    own bounds, the first is priced by its x-price, one narrowing a bundled model wins over it, the
    files are remembered with the manifest's sources, and a job of such a model runs."""
    private = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "x-output": ["image"],
        "x-price": {"unit": "output", "usd": 0.5},
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": False,
        "properties": {
            "prompt": {"type": "string"},
            "num_images": {"type": "integer", "minimum": 1, "maximum": 4},
        },
    }
    narrower = json.loads(
        (REPO / "schemas" / "models" / "kling-video-o3-pro-image-to-video.json").read_text()
    )
    narrower["properties"]["duration"]["maximum"] = 10
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "private.json").write_text(json.dumps(private))
    (tmp_path / "schemas" / "entry.json").write_text(json.dumps(NEW_ENTRY))
    (tmp_path / "schemas" / "narrower.json").write_text(json.dumps(narrower))
    manifest = tmp_path / "own.yaml"
    manifest.write_text(
        "version: 1\nname: own\noutput_dir: ./out\nmodels:\n"
        "  acme/private/text-to-image: schemas/private.json\n"
        f"  {NEW_MODEL}: schemas/entry.json\n"
        f"  {I2V}: schemas/narrower.json\n"
        "jobs:\n"
        "  - {id: stills, model: acme/private/text-to-image, input: {prompt: p, num_images: 5}}\n"
        f"  - {{id: lumen, model: {NEW_MODEL}, input: {{prompt: p, duration: 9}}}}\n"
        f"  - {{id: hero, model: {I2V}, input: {{prompt: p, image: 'https://x/a.png', duration: 12}}}}\n"
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(manifest)
    assert [p.message.rsplit(": ", 1)[-1] for p in caught.value.problems] == [
        "5 is greater than the maximum of 4",
        "9 is greater than the maximum of 8",
        "12 is greater than the maximum of 10",
    ]
    manifest.write_text(manifest.read_text().replace("5}", "2}").replace("9}", "6}").replace("12}", "10}"))
    loaded = load_manifest(manifest)
    assert {m: s.origin for m, s in loaded.models.items()} == dict.fromkeys(
        ["acme/private/text-to-image", NEW_MODEL, I2V], "manifest"
    )
    assert {name for name, _, _ in loaded.source.local_files} == {
        str(tmp_path / "schemas" / name) for name in ("private.json", "entry.json", "narrower.json")
    }
    plan = cli("plan", "own.yaml", "--json", cwd=tmp_path)
    by_model = {m["model"]: m for m in json.loads(plan.stdout)["models"]}
    assert by_model["acme/private/text-to-image"]["estimate_usd"] == pytest.approx(1.0)  # 2 images × $0.5
    assert by_model[I2V]["estimate_usd"] == pytest.approx(10 * 0.112)

    (tmp_path / "lumen.yaml").write_text(
        f"version: 1\nname: lumen\noutput_dir: ./out\nmodels:\n  {NEW_MODEL}: schemas/entry.json\n"
        f"jobs:\n  - {{id: lumen, model: {NEW_MODEL}, input: {{prompt: p}}}}\n"
    )
    account = sim(extra_models_path=str(tmp_path / "schemas" / "entry.json"))
    result = await account.run(tmp_path / "lumen.yaml")
    assert result.counts == {"succeeded": 1}
    assert (tmp_path / "out" / "lumen" / "output.mp4").is_file()


def test_a_file_is_named_from_its_url_else_its_content_type_else_the_models_output_kind() -> None:
    from runner.api.download import file_names, named_for

    folder = Path("/out/job")
    assert named_for(folder / "clip.webm", "video/mp4", "video") == folder / "clip.webm"  # the URL's own
    assert named_for(folder / "output", "audio/mpeg; charset=binary", "audio") == folder / "output.mp3"
    assert named_for(folder / "output", "application/octet-stream", "image") == folder / "output.png"
    assert named_for(folder / "output", None, None) == folder / "output"
    # An extension added later can never make two names one.
    assert file_names(["https://x/a/output", "https://x/b/output.png", "https://x/c/output"]) == [
        "output",
        "output-2.png",
        "output-3",
    ]


async def test_outputs_whose_urls_carry_no_extension_get_one_from_their_content_type(
    sim, tmp_path: Path
) -> None:
    account = sim(bare_output_names=True, outputs_per_job=2)
    manifest = studio_copy(tmp_path)
    result = await account.run(manifest)
    assert result.exit_code == 0
    folder = tmp_path / "out" / "studio"
    assert sorted(p.name for p in (folder / "score").iterdir()) == ["output-1.wav", "output.wav"]
    assert sorted(p.name for p in (folder / "poster-2K").iterdir()) == ["output-1.png", "output.png"]
    assert sorted(p.name for p in (folder / "hero-push-in").iterdir()) == ["output-1.mp4", "output.mp4"]
