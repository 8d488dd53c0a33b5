"""Local files as inputs, end to end: a small PNG next to the manifest reaches the simulator as a
``data:image/png;base64,…`` URI holding exactly its bytes; a file RunComfy cannot take inline (too large,
a video, not an image) stops the run before anything is sent, with exit 2 and a message that says a
public URL is needed."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import pytest
from conftest import I2V, R2V

from runner.simulator import SimulatorConfig, running_server

pytestmark = pytest.mark.anyio


def png(width: int = 3, height: int = 2, seed: int = 0) -> bytes:
    """A real, decodable RGB PNG (so the bytes are an image, not just a signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + bytes((seed + x * 40 + y * 90) % 256 for x in range(width * 3)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def request_ids(state: Path) -> dict[str, str]:
    with sqlite3.connect(state) as db:
        return dict(db.execute("SELECT job_id, request_id FROM attempts WHERE request_id IS NOT NULL"))


def decode(uri: str, kind: str = "png") -> bytes:
    prefix = f"data:image/{kind};base64,"
    assert uri.startswith(prefix), uri[:40]
    return base64.b64decode(uri[len(prefix) :], validate=True)


async def test_a_local_png_reaches_the_api_as_a_data_uri_of_its_bytes(sim, write_manifest, tmp_path):
    woman, man = png(seed=1), png(4, 4, seed=2)
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "woman.png").write_bytes(woman)
    (tmp_path / "refs" / "man.png").write_bytes(man)
    manifest = write_manifest(f"""
        version: 1
        name: local
        output_dir: ./out
        jobs:
          - id: portrait
            model: {I2V}
            input: {{prompt: she turns, image: ./refs/woman.png, end_image: refs/man.png, duration: 5}}
          - id: couple
            model: {R2V}
            input:
              prompt: the two of them walk
              duration: 5
              images: [./refs/woman.png, "https://example.com/street.png", ./refs/man.png]
        """)
    account = sim()
    result = await account.run(manifest)
    assert result.exit_code == 0, result.message

    ids = request_ids(tmp_path / "state.sqlite")
    async with httpx.AsyncClient(transport=account.transport(), base_url="http://sim.local") as client:
        seen = {job: (await client.get(f"/_sim/requests/{rid}")).json()["input"] for job, rid in ids.items()}
    assert decode(seen["portrait"]["image"]) == woman
    assert decode(seen["portrait"]["end_image"]) == man
    first, url, last = seen["couple"]["images"]
    assert decode(first) == woman and url == "https://example.com/street.png" and decode(last) == man

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    portrait = next(j for j in report["jobs"] if j["id"] == "portrait")
    assert portrait["input_files"] == [
        {"field": "image", "url": None, "inline_type": "image/png", "inline_bytes": len(woman)},
        {"field": "end_image", "url": None, "inline_type": "image/png", "inline_bytes": len(man)},
    ]
    assert "base64" not in (tmp_path / "out" / "report.json").read_text()  # the report stays small

    # Loading the manifest again gives the same URIs, so a second run sees nothing new to pay for.
    again = await account.run(manifest)
    assert again.exit_code == 0
    assert (await account.stats())["submits_accepted"] == 2


def cli(*args: str, cwd: Path, base_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    env["RUNCOMFY_API_TOKEN"] = "sim-token"
    return subprocess.run(
        [sys.executable, "-m", "runner", *args, "--base-url", base_url, "--no-progress"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_files_that_cannot_go_inline_stop_the_run_before_anything_is_sent(write_manifest, tmp_path):
    """Too large, a video, or not an image: exit 2, one line each naming the file and asking for a
    public URL, no state file, and the API saw no request at all."""
    (tmp_path / "big.png").write_bytes(png() + b"\x00" * (5 * 1024 * 1024))  # over the ~4.5 MiB inline limit
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    (tmp_path / "notes.png").write_text("not really a picture")
    (tmp_path / "small.png").write_bytes(png())
    write_manifest(f"""
        version: 1
        name: refused
        output_dir: ./out
        defaults:
          input: {{duration: 5}}
        jobs:
          - id: big
            model: {I2V}
            input: {{prompt: big, image: ./big.png}}
          - id: clip
            model: {R2V}
            input: {{prompt: from a clip, video: ./clip.mp4, images: [./small.png]}}
          - id: notes
            model: {I2V}
            input: {{prompt: notes, image: ./notes.png}}
          - id: fine
            model: {I2V}
            input: {{prompt: fine, image: ./small.png}}
        """)
    with running_server(SimulatorConfig(job_seconds=0.05)) as base_url:
        done = cli("run", "m.yaml", cwd=tmp_path, base_url=base_url)
        stats = httpx.get(f"{base_url}/_sim/stats").json()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    big = next(line for line in lines if "job big" in line)
    assert big.startswith("m.yaml:") and "./big.png" in big and "public https URL" in big and "MiB" in big
    clip = next(line for line in lines if "job clip" in line)
    assert "./clip.mp4" in clip and "a local video cannot be sent" in clip and "public http(s) URL" in clip
    notes = next(line for line in lines if "job notes" in line)
    assert "./notes.png" in notes and "is not a PNG, JPEG, WebP or GIF image" in notes
    assert not any("job fine" in line for line in lines)
    assert stats["requests_total"] == 0 and stats["submits_accepted"] == 0
    assert not (tmp_path / "state").exists()


def test_the_size_of_every_image_type_is_read_from_its_header():
    """What the catalog's pixel and aspect rules are checked against: PNG, GIF, JPEG and the three
    WebP flavours; a header cut short is None (the rule is then not checked, never guessed)."""
    from runner.manifest.inputs import image_facts, image_size

    assert image_size("png", png(7, 3)) == (7, 3)
    gif = b"GIF89a" + (300).to_bytes(2, "little") + (200).to_bytes(2, "little") + bytes(10)
    assert image_size("gif", gif) == (300, 200)
    app0 = b"\xff\xe0" + (16).to_bytes(2, "big") + b"JFIF\x00" + bytes(9)
    sof0 = (
        b"\xff\xc0" + (17).to_bytes(2, "big") + b"\x08" + (480).to_bytes(2, "big") + (640).to_bytes(2, "big")
    )
    assert image_size("jpeg", b"\xff\xd8" + app0 + sof0 + bytes(10)) == (640, 480)
    riff = b"RIFF" + bytes(4) + b"WEBP"
    vp8x = riff + b"VP8X" + (10).to_bytes(4, "little") + bytes(4)
    assert image_size("webp", vp8x + (1919).to_bytes(3, "little") + (1079).to_bytes(3, "little")) == (
        1920,
        1080,
    )
    vp8l = riff + b"VP8L" + bytes(4) + b"\x2f" + (99 | 49 << 14).to_bytes(4, "little")
    assert image_size("webp", vp8l) == (100, 50)
    vp8 = (
        riff
        + b"VP8 "
        + bytes(4)
        + bytes(3)
        + b"\x9d\x01\x2a"
        + (320).to_bytes(2, "little")
        + (240).to_bytes(2, "little")
    )
    assert image_size("webp", vp8) == (320, 240)
    assert image_size("jpeg", b"\xff\xd8" + app0[:6]) is None
    assert image_facts("png", png(40, 2)) == {
        "file_size_mb": len(png(40, 2)) / 1e6,
        "width_px": 40,
        "height_px": 2,
        "aspect_ratio": 20.0,
    }
