"""The README's library example that needs no token runs as written, against the bundled simulator on
loopback, in a copy of the repository's manifests (so nothing lands in the tree)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_readmes_simulator_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    [block] = [b for b in readme_blocks() if "running_server" in b]
    shutil.copytree(REPO / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("out"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # the README's own example
    clips = sorted((tmp_path / "manifests" / "out" / "demo-simulated").rglob("*.mp4"))
    assert len(clips) == 7, clips
    assert (tmp_path / "manifests" / "out" / "demo-simulated" / "report.html").is_file()
