"""Every problem a manifest can have is told at once, one exact line each, at the right line."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from runner.errors import ManifestInvalid, ManifestTooLarge, Problem
from runner.manifest.inputs import LocalFiles
from runner.manifest.loader import MAX_FILE_BYTES, load_manifest
from runner.manifest.validate import MAX_PROBLEMS_SHOWN

CORPUS = Path(__file__).parent / "bad_manifests"
CASES = sorted(path.name for path in CORPUS.glob("*.yaml"))
PRO = "kling/kling-video-o3/pro/image-to-video"
REF = "kling/kling-video-o3/standard/reference-to-video"
PNG = (CORPUS / "files" / "red.png").read_bytes()


def problems_of(path: str | Path) -> list[str]:
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    return str(caught.value).splitlines()


def write(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_bad_manifest_has_its_expected_lines() -> None:
    """The corpus is complete: each manifest has an .expected file and each .expected a manifest."""
    manifests = {path.stem for path in CORPUS.glob("*.yaml")}
    expected = {path.stem for path in CORPUS.glob("*.expected")}
    assert manifests == expected
    assert len(manifests) >= 30


@pytest.mark.parametrize("name", CASES)
def test_bad_manifest_gives_the_expected_lines(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad manifest raises ManifestInvalid (ManifestTooLarge for too_large_*) with exactly these lines."""
    monkeypatch.chdir(CORPUS)
    expected = (CORPUS / name).with_suffix(".expected").read_text(encoding="utf-8")
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(name)
    assert str(caught.value).splitlines() == expected.replace("{here}", str(CORPUS)).splitlines()
    assert isinstance(caught.value, ManifestTooLarge) == name.startswith("too_large_")
    assert all(isinstance(p, Problem) for p in caught.value.problems)


def test_the_message_names_the_file_as_the_user_gave_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """file:line job ID: field: message, with the path as typed (relative stays relative)."""
    (tmp_path / "manifests").mkdir()
    lines = [
        "version: 1",
        "defaults:",
        f"  model: {PRO}",
        "  input:",
        "    image: https://example.com/a.png",
        "    prompt: A shot.",
        "jobs:",
        "  - id: hero-1",
        "  - id: hero-2",
        "  - id: hero-3",
        "    input:",
        "      sound: true",
        "      duration: 20",
    ]
    write(tmp_path / "manifests", "\n".join(lines) + "\n", "nightly.yaml")
    monkeypatch.chdir(tmp_path)
    expected = ["manifests/nightly.yaml:13 job hero-3: input.duration: 20 is greater than the maximum of 15"]
    assert problems_of("manifests/nightly.yaml") == expected
    absolute = tmp_path / "manifests" / "nightly.yaml"
    assert problems_of(absolute) == [f"{absolute}:13 {expected[0].split(' ', 1)[1]}"]


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    """Over the size cap: ManifestTooLarge from the file's size alone (a sparse file is never read)."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ManifestTooLarge) as caught:
        load_manifest(path)
    assert str(caught.value) == (
        f"{path}: the file is 50.0 MB; a manifest may be at most 50 MB (use matrices, or split it)"
    )


def test_a_missing_file_or_a_folder_is_a_manifest_problem(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such file"]
    assert problems_of(tmp_path) == [f"{tmp_path}: is a folder, not a manifest file"]


def test_a_large_local_image_needs_a_public_url(tmp_path: Path) -> None:
    """An image too big to inline (6 MiB once base64-encoded) is a problem naming the size and the way out."""
    (tmp_path / "big.png").write_bytes(PNG + b"\0" * (5 * 1024 * 1024))
    write(
        tmp_path,
        f"version: 1\ndefaults:\n  model: {PRO}\njobs:\n  - id: big\n    input:\n"
        "      prompt: Big.\n      image: big.png\n",
    )
    assert problems_of(tmp_path / "m.yaml") == [
        f"{tmp_path / 'm.yaml'}:8 job big: input.image: big.png: is 5.0 MiB; images over 4.5 MiB cannot be "
        "sent inline (6 MiB once encoded): give a public https URL instead"
    ]


def test_inlined_images_over_the_request_limit_are_refused(tmp_path: Path) -> None:
    """Twelve 4.4 MiB images pass one by one but not together: RunComfy takes 64 MiB per request.

    (No bundled model takes that many images; a future one might.)"""
    for n in range(12):
        (tmp_path / f"img{n}.png").write_bytes(PNG + bytes([n]) * (4400 * 1024))
    files = LocalFiles(tmp_path)
    input, problems = files.inline_input({"images": [f"img{n}.png" for n in range(12)]}, {"images": "image"})
    assert all(uri.startswith("data:image/png;base64,") for uri in input["images"])
    assert problems == [
        (
            (),
            "the images sent inline add up to 68.8 MiB, more than RunComfy's 64 MiB per "
            "request: give public URLs",
        )
    ]


def test_problems_are_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    """Thousands of distinct mistakes print the first 500 and say how many more there are."""
    jobs = "".join(
        f"  - id: j{n}\n    input: {{image: https://e.com/a.png, prompt: p, duration: {100 + n}}}\n"
        for n in range(MAX_PROBLEMS_SHOWN + 20)
    )
    write(tmp_path, f"version: 1\ndefaults:\n  model: {PRO}\njobs:\n{jobs}")
    lines = problems_of(tmp_path / "m.yaml")
    assert len(lines) == MAX_PROBLEMS_SHOWN + 1
    assert lines[-1] == f"{tmp_path / 'm.yaml'}: … and 20 more problems"


def test_every_line_is_one_line_even_for_values_with_newlines(tmp_path: Path) -> None:
    """Ids and values with newlines or huge text are shown escaped and shortened."""
    write(
        tmp_path,
        f'version: 1\ndefaults:\n  model: {PRO}\njobs:\n  - id: "a\\nb"\n'
        f'    input: {{image: https://e.com/a.png, prompt: p, shot_type: "{"x" * 5000}"}}\n',
    )
    lines = problems_of(tmp_path / "m.yaml")
    assert len(lines) == 1 and "'a\\nb' is not a safe job id" in lines[0]
    write(
        tmp_path,
        f"version: 1\ndefaults:\n  model: {PRO}\njobs:\n  - id: a\n"
        f'    input: {{image: https://e.com/a.png, prompt: p, shot_type: "{"x" * 5000}"}}\n',
    )
    [line] = problems_of(tmp_path / "m.yaml")
    assert line.endswith(f"input.shot_type: '{'x' * 96}…' is not one of ['customize', 'intelligent']")


def test_a_trailing_newline_cannot_sneak_into_an_id(tmp_path: Path) -> None:
    """JSON Schema's $ (in Python's re) accepts 'x\\n'; the loader's own check does not."""
    write(
        tmp_path,
        f'version: 1\nname: "n\\n"\ndefaults:\n  model: {PRO}\njobs:\n  - id: "x\\n"\n'
        "    input: {image: https://e.com/a.png, prompt: p}\n",
    )
    lines = problems_of(tmp_path / "m.yaml")
    where = tmp_path / "m.yaml"
    assert [line.split(": ", 1)[0] for line in lines] == [f"{where}:2", f"{where}:6"]
    assert "is not a usable name" in lines[0] and "is not a safe job id" in lines[1]


def test_a_local_image_becomes_a_data_uri_and_identical_files_give_identical_uris(tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "a.png").write_bytes(PNG)
    (tmp_path / "refs" / "copy.png").write_bytes(PNG)
    write(
        tmp_path,
        f"version: 1\njobs:\n"
        f"  - id: one\n    model: {PRO}\n    input: {{image: ./refs/a.png, prompt: p}}\n"
        f"  - id: two\n    model: {PRO}\n    input: {{image: refs/copy.png, prompt: p}}\n"
        f"  - id: three\n    model: {REF}\n"
        "    input: {images: [refs/a.png, https://e.com/b.png], prompt: p}\n",
    )
    manifest = load_manifest(tmp_path / "m.yaml")
    one, two, three = manifest.jobs
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert one.input["image"] == two.input["image"] == uri
    assert three.input["images"] == [uri, "https://e.com/b.png"]
    assert one.fingerprint == two.fingerprint
    assert load_manifest(tmp_path / "m.yaml").jobs[0].fingerprint == one.fingerprint


@pytest.mark.parametrize(
    "head, kind",
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 12, "jpeg"),
        (b"RIFF\x10\0\0\0WEBPVP8 ", "webp"),
        (b"GIF89a" + b"\0" * 10, "gif"),
    ],
)
def test_image_types_come_from_magic_bytes_not_names(tmp_path: Path, head: bytes, kind: str) -> None:
    (tmp_path / "image.txt").write_bytes(head)
    write(
        tmp_path,
        f"version: 1\njobs:\n  - id: one\n    model: {PRO}\n    input: {{image: image.txt, prompt: p}}\n",
    )
    assert load_manifest(tmp_path / "m.yaml").jobs[0].input["image"].startswith(f"data:image/{kind};base64,")


def test_the_garbage_collector_is_left_as_it_was(tmp_path: Path) -> None:
    import gc

    assert gc.isenabled()
    with pytest.raises(ManifestInvalid):
        load_manifest(tmp_path / "missing.yaml")
    load_manifest(Path(__file__).parent.parent / "manifests" / "demo.yaml")
    assert gc.isenabled()


def test_an_unreadable_file_is_a_manifest_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\n")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read anything")
        assert problems_of(path) == [f"{path}: cannot be read (Permission denied)"]
    finally:
        path.chmod(0o644)


def test_numbers_python_cannot_print_stay_text(tmp_path: Path) -> None:
    """A 6,000-digit hex integer would crash repr() and json.dumps; it is read as text instead."""
    write(
        tmp_path,
        f"version: 1\ndefaults:\n  model: {PRO}\njobs:\n  - id: a\n"
        f"    input: {{image: https://e.com/a.png, prompt: p, duration: 0x{'f' * 5000}}}\n",
    )
    [line] = problems_of(tmp_path / "m.yaml")
    assert line.startswith(f"{tmp_path / 'm.yaml'}:6 job a: input.duration: '0xfff") and "not of type" in line


def test_a_path_with_a_nul_byte_is_a_manifest_problem() -> None:
    assert problems_of("bad\0name.yaml") == ["bad\0name.yaml: cannot be read (embedded null byte)"]


def test_a_file_of_millions_of_tiny_values_is_refused_early() -> None:
    """Within the size cap, 12 million one-letter items would take gigabytes: the parser stops at a count."""
    from runner.manifest.yamldoc import parse_yaml

    doc = parse_yaml("- a\n" * 1000, max_values=500)
    assert doc.fatal and doc.too_large and doc.data is None
    assert [(p.line, p.message) for p in doc.problems] == [
        (500, "the manifest holds more than 500 values: split it, or use matrices")
    ]
