"""Reading manifests: defaults, matrices, ids, paths, lines and fingerprints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from runner.manifest.loader import Job, expand_matrix, fingerprint, load_manifest, value_tokens

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "manifests").glob("*.yaml"))
PRO = "kling/kling-video-o3/pro/image-to-video"
REF = "kling/kling-video-o3/standard/reference-to-video"


def write(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_manifest_validates(path: Path) -> None:
    """Each manifest shipped in manifests/ loads with no problem and has jobs."""
    manifest = load_manifest(path)
    assert manifest.jobs
    assert len({job.id for job in manifest.jobs}) == len(manifest.jobs)


def test_the_examples_include_demo_and_nightly() -> None:
    assert {"demo.yaml", "nightly.yaml"} <= {p.name for p in EXAMPLES}
    assert 5 <= len(load_manifest(ROOT / "manifests" / "demo.yaml").jobs) <= 8
    assert len(load_manifest(ROOT / "manifests" / "nightly.yaml").jobs) == 40


def test_demo_jobs_settings_and_lines() -> None:
    """The demo: defaults inherited, a matrix expanded in order, lines of each entry, settings read."""
    manifest = load_manifest(ROOT / "manifests" / "demo.yaml")
    assert manifest.path == ROOT / "manifests" / "demo.yaml"
    assert manifest.name == "demo"
    assert manifest.output_dir == ROOT / "manifests" / "out" / "demo"
    assert (manifest.budget_usd, manifest.concurrency, manifest.raw_settings) == (10.0, 4, {})
    assert [job.id for job in manifest.jobs] == [
        "golden-hour",
        "golden-hour-sound",
        "two-beats",
        "paris--duration-5--aspect_ratio-16x9",
        "paris--duration-5--aspect_ratio-9x16",
        "paris--duration-10--aspect_ratio-16x9",
        "paris--duration-10--aspect_ratio-9x16",
    ]
    first, sound = manifest.jobs[0], manifest.jobs[1]
    assert first.model == PRO and first.line == 19
    assert first.input["duration"] == 5 and first.input["shot_type"] == "customize"
    assert sound.input["duration"] == 8 and sound.input["sound"] is True
    paris = manifest.jobs[3:]
    assert {job.model for job in paris} == {REF} and {job.line for job in paris} == {45}
    assert [(j.input["duration"], j.input["aspect_ratio"]) for j in paris] == [
        (5, "16:9"),
        (5, "9:16"),
        (10, "16:9"),
        (10, "9:16"),
    ]


def test_job_input_is_defaults_then_own_input_then_matrix(tmp_path: Path) -> None:
    """Later wins, key by key: defaults.input < the job's input < the matrix combination."""
    write(
        tmp_path,
        f"""version: 1
defaults:
  model: {PRO}
  input: {{image: https://e.com/d.png, prompt: from defaults, duration: 5, sound: false}}
jobs:
  - id: a
    input: {{prompt: from the job, duration: 10}}
    matrix: {{duration: [3, 15]}}
""",
    )
    jobs = load_manifest(tmp_path / "m.yaml").jobs
    assert [job.input for job in jobs] == [
        {"image": "https://e.com/d.png", "prompt": "from the job", "duration": d, "sound": False}
        for d in (3, 15)
    ]


def test_fingerprint_is_sha256_of_canonical_json(tmp_path: Path) -> None:
    """sha256 of {"model", "input"} with sorted keys, no spaces, UTF-8: the same request, the same print."""
    input = {"prompt": "café – 東京", "image": "https://e.com/a.png", "duration": 5}
    canonical = json.dumps(
        {"model": PRO, "input": input}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert fingerprint(PRO, input) == hashlib.sha256(canonical.encode()).hexdigest()
    write(
        tmp_path,
        f"""version: 1
jobs:
  - id: a
    model: {PRO}
    input: {{prompt: "café – 東京", image: "https://e.com/a.png", duration: 5}}
  - id: b
    model: {PRO}
    input: {{duration: 5, image: "https://e.com/a.png", prompt: "café – 東京"}}
""",
    )
    a, b = load_manifest(tmp_path / "m.yaml").jobs
    assert a.fingerprint == b.fingerprint == fingerprint(PRO, input)


def test_matrix_ids_extend_the_id_field_by_field() -> None:
    """Plain ids grow --field-value parts, in the matrix's order, first field varying slowest."""
    matrix = {"duration": [5, 10], "aspect_ratio": ["16:9", "9:16"], "sound": [False, True]}
    ids = [job_id for job_id, _ in expand_matrix("hero", matrix)]
    assert ids[:3] == [
        "hero--duration-5--aspect_ratio-16x9--sound-false",
        "hero--duration-5--aspect_ratio-16x9--sound-true",
        "hero--duration-5--aspect_ratio-9x16--sound-false",
    ]
    assert ids[-1] == "hero--duration-10--aspect_ratio-9x16--sound-true"
    assert len(set(ids)) == 8


def test_an_id_template_names_each_matrix_field() -> None:
    matrix = {"duration": [5, 10], "aspect_ratio": ["1:1"]}
    picks = list(expand_matrix("hero-{duration}s-{aspect_ratio}", matrix))
    assert picks == [("hero-5s-1x1", (0, 0)), ("hero-10s-1x1", (1, 0))]


@pytest.mark.parametrize(
    "values, tokens",
    [
        ([5, 10, 15], ["5", "10", "15"]),
        (["16:9", "9:16", "1:1"], ["16x9", "9x16", "1x1"]),
        ([True, False, None], ["true", "false", "null"]),
        ([2.5, -1], ["2.5", "-1"]),
        (["a b", "c/d"], ["a_b", "c_d"]),
        (["a b", "a_b"], ["1", "2"]),  # would collide once made file-safe
        (["A long prompt that goes on for more than thirty-two characters", "short"], ["1", "2"]),
        ([["https://e.com/a.png"], ["https://e.com/b.png"]], ["1", "2"]),
        (["", "x"], ["1", "2"]),
    ],
)
def test_matrix_values_become_short_file_safe_tokens(values: list[object], tokens: list[str]) -> None:
    assert value_tokens(values) == tokens


def test_paths_are_relative_to_the_manifest_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """output_dir relative to the manifest's folder, not the working directory; the path made absolute."""
    (tmp_path / "batches").mkdir()
    body = f"jobs:\n  - id: a\n    model: {PRO}\n    input: {{image: https://e.com/a.png, prompt: p}}\n"
    write(tmp_path / "batches", "version: 1\noutput_dir: ../renders\n" + body, "night.yaml")
    write(tmp_path / "batches", "version: 1\n" + body, "plain.yaml")
    write(tmp_path / "batches", "version: 1\nname: named\noutput_dir: /tmp/elsewhere\n" + body, "abs.yaml")
    write(tmp_path / "batches", "version: 1\noutput_dir: ~/renders\n" + body, "home.yaml")
    monkeypatch.chdir(tmp_path)
    night = load_manifest("batches/night.yaml")
    assert night.path == tmp_path / "batches" / "night.yaml"
    assert night.output_dir == tmp_path / "renders"
    assert night.name == "night"
    plain = load_manifest("batches/plain.yaml")
    assert plain.output_dir == tmp_path / "batches" / "out" / "plain"
    named = load_manifest("batches/abs.yaml")
    assert (named.name, named.output_dir) == ("named", Path("/tmp/elsewhere"))
    assert load_manifest("batches/home.yaml").output_dir == Path.home() / "renders"


def test_settings_and_raw_settings(tmp_path: Path) -> None:
    write(
        tmp_path,
        f"""version: 1
description: Nightly renders.
budget_usd: 12
concurrency: 3
jobs:
  - {{id: a, model: {PRO}, input: {{image: https://e.com/a.png, prompt: p}}}}
""",
    )
    manifest = load_manifest(tmp_path / "m.yaml")
    assert manifest.budget_usd == 12.0 and isinstance(manifest.budget_usd, float)
    assert manifest.concurrency == 3
    assert manifest.raw_settings == {"description": "Nightly renders."}
    bare = load_manifest(
        write(
            tmp_path,
            f"version: 1\njobs:\n  - {{id: a, model: {PRO}, "
            "input: {image: https://e.com/a.png, prompt: p}}\n",
            "n.yaml",
        )
    )
    assert (bare.budget_usd, bare.concurrency, bare.raw_settings) == (None, None, {})


def test_yaml_reads_as_a_manifest_author_means_it(tmp_path: Path) -> None:
    """Anchors and merge keys work; 16:9 unquoted stays text (not YAML 1.1's base-60 969)."""
    write(
        tmp_path,
        f"""version: 1
jobs:
  - id: a
    model: {REF}
    input: &common
      prompt: Shared.
      aspect_ratio: 16:9
      sound: yes
  - id: b
    model: {REF}
    input:
      <<: *common
      aspect_ratio: 9:16
""",
    )
    a, b = load_manifest(tmp_path / "m.yaml").jobs
    assert a.input == {"prompt": "Shared.", "aspect_ratio": "16:9", "sound": True}
    assert b.input == {"prompt": "Shared.", "aspect_ratio": "9:16", "sound": True}
    assert b.line == 9


def test_jobs_are_frozen_and_inputs_independent(tmp_path: Path) -> None:
    manifest = load_manifest(ROOT / "manifests" / "demo.yaml")
    job = manifest.jobs[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.id = "other"  # type: ignore[misc]
    assert manifest.jobs[3].input is not manifest.jobs[4].input
    assert isinstance(job, Job)


def test_jobs_keep_manifest_order_across_models(tmp_path: Path) -> None:
    write(
        tmp_path,
        f"""version: 1
defaults: {{input: {{prompt: p, duration: 5}}}}
jobs:
  - {{id: z, model: {REF}}}
  - {{id: a, model: {PRO}, input: {{image: https://e.com/a.png}}}}
  - {{id: m, model: {REF}, matrix: {{sound: [true, false]}}}}
""",
    )
    jobs = load_manifest(tmp_path / "m.yaml").jobs
    assert [(j.id, j.line) for j in jobs] == [("z", 4), ("a", 5), ("m--sound-true", 6), ("m--sound-false", 6)]


def test_the_example_in_docs_manifest_md_loads(tmp_path: Path) -> None:
    """The documented example is a valid manifest (its two local images stubbed with a tiny PNG)."""
    import re
    import shutil

    text = (ROOT / "docs" / "manifest.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert example is not None
    (tmp_path / "refs").mkdir()
    for name in ("woman.png", "man.png"):
        shutil.copy(ROOT / "tests" / "bad_manifests" / "files" / "red.png", tmp_path / "refs" / name)
    (tmp_path / "shots.csv").write_text("id,prompt,duration\nshot-1,From a table.,10\n", encoding="utf-8")
    (tmp_path / "more.jsonl").write_text('{"id": "line-1", "input": {"prompt": "From a line."}}\n')
    jobs = load_manifest(write(tmp_path, example.group(1))).jobs
    assert [job.id for job in jobs][:3] == ["push-in", "orbit", "couple--aspect_ratio-16x9--duration-5"]
    assert len(jobs) == 16 and jobs[-7].id == "turntable-15s"
    assert [job.id for job in jobs[-6:-3]] == ["hero--take-1", "hero--take-2", "hero--take-3"]
    assert [job.id for job in jobs[-3:]] == ["next-shot", "shot-1", "line-1"]
    assert jobs[-3].needs == ("push-in",) and jobs[-2].input["duration"] == 10
