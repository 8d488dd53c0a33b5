"""The built wheel carries its schemas: installed on its own and run from another folder, it validates
and runs a manifest (against the simulator it carries too)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, installed (without dependencies: they come from this
    environment, and no network is needed) into a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy so the checkout gets no build artefacts.
    source = work / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "state", "out", "__pycache__", "*.sqlite*", "dist", "build"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = (work / "dist").glob("runcomfy_batch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "runner/_schemas/manifest.schema.json" in names
    assert "runner/_schemas/catalog/models.json" in names
    assert any(n.startswith("runner/_schemas/models/") for n in names)
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    env["PYTHONPATH"] = str(target)
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_installed_wheel_uses_its_own_schemas(installed, tmp_path):
    code = "import runner.catalog.models as c; print(c.schema_dir())"
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert where.stdout.strip() == str(installed / "runner" / "_schemas")


def test_the_installed_wheel_validates_and_runs_a_manifest_from_another_folder(installed, tmp_path):
    shutil.copy(REPO / "manifests" / "demo.yaml", tmp_path / "demo.yaml")
    checked = run_installed(installed, tmp_path, "validate", "demo.yaml")
    assert checked.returncode == 0, checked.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text((tmp_path / "demo.yaml").read_text().replace("duration: 10\n", "duration: 99\n", 1))
    refused = run_installed(installed, tmp_path, "validate", "bad.yaml")
    assert refused.returncode == 2 and "is greater than the maximum of 15" in refused.stderr
    ran = run_installed(installed, tmp_path, "run", "demo.yaml", "--simulate", "--no-progress")
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "out" / "demo-simulated" / "report.json").exists()


def test_the_installed_wheel_knows_the_whole_bundled_catalog(installed, tmp_path):
    listed = run_installed(installed, tmp_path, "models", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 120 and all(row["file"].startswith(str(installed)) for row in rows)
