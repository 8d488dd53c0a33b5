"""How long a 100,000-job manifest takes to load and check, and how much memory it needs.

Two shapes, both generated into a temporary folder:

* ``flat``: 100,000 entries written out one by one, as a program generating a manifest would;
* ``matrix``: ten entries whose matrices expand into 10,000 jobs each.

Each is loaded in a fresh interpreter so peak RSS is its own. The goal (the benchmark issue) is
≤ 10 s per shape on a 2-core machine. Run: ``python benchmarks/bench_manifest.py [--jobs N]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PRO = "kling/kling-video-o3/pro/image-to-video"
REF = "kling/kling-video-o3/standard/reference-to-video"
IMAGE = "https://playgrounds-storage-public.runcomfy.net/tools/7366/media-files/input-example1.webp"
REFS = [
    "https://playgrounds-storage-public.runcomfy.net/tools/7361/media-files/refs/ref_woman_euro.png",
    "https://playgrounds-storage-public.runcomfy.net/tools/7361/media-files/refs/ref_man_euro.png",
]

_MEASURE = """
import json, resource, sys, time
from runner.manifest.loader import load_manifest
start = time.perf_counter()
manifest = load_manifest(sys.argv[1])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "jobs": len(manifest.jobs),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_BASELINE = """
import json, resource
import runner.manifest.loader
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_flat(path: Path, jobs: int) -> None:
    """``jobs`` entries, half for each model, every one with its own prompt."""
    lines = [
        "version: 1",
        "name: bench-flat",
        "defaults:",
        f"  model: {PRO}",
        "  input:",
        "    shot_type: customize",
        "jobs:",
    ]
    for n in range(jobs):
        lines.append(f"  - id: shot-{n:06d}")
        if n % 2:
            lines.append(f"    model: {REF}")
            lines.append("    input:")
            lines.append(f"      images: [{REFS[0]}, {REFS[1]}]")
            lines.append(f'      aspect_ratio: "{("16:9", "9:16", "1:1")[n % 3]}"')
        else:
            lines.append("    input:")
            lines.append(f"      image: {IMAGE}")
        prompt = f"Take {n}: a slow dolly shot along a rainy neon street, reflections, night"
        lines.append(f'      prompt: "{prompt}"')
        lines.append(f"      duration: {3 + n % 13}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_matrix(path: Path, jobs: int) -> None:
    """Ten entries, each a matrix of prompts × durations × sound × shot type."""
    per_entry = jobs // 10
    prompts = max(1, per_entry // 40)
    lines = [
        "version: 1",
        "name: bench-matrix",
        "defaults:",
        f"  model: {PRO}",
        "  input:",
        f"    image: {IMAGE}",
        "jobs:",
    ]
    for entry in range(10):
        lines += [
            f"  - id: scene{entry}-{{prompt}}-{{duration}}s-{{sound}}-{{shot_type}}",
            "    matrix:",
            "      prompt:",
            *(
                f'        - "Scene {entry}, variation {p}: the camera cranes up over a foggy harbour at dawn"'
                for p in range(prompts)
            ),
            f"      duration: {json.dumps(list(range(3, 13)))}",
            "      sound: [false, true]",
            "      shot_type: [customize, intelligent]",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def measure(path: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per manifest (default 100,000)")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    baseline = json.loads(
        subprocess.run(
            [sys.executable, "-c", _BASELINE], capture_output=True, text=True, check=True, cwd=root
        ).stdout
    )
    print(f"interpreter + runner imported: peak RSS {baseline['peak_rss_mb']:.0f} MB")
    with tempfile.TemporaryDirectory() as folder:
        for shape, write in (("flat", write_flat), ("matrix", write_matrix)):
            path = Path(folder) / f"{shape}.yaml"
            write(path, args.jobs)
            figures = measure(path)
            size_mb = path.stat().st_size / 1e6
            print(
                f"{shape:>6}: {figures['jobs']:,} jobs from {size_mb:.1f} MB of YAML: "
                f"{figures['seconds']:.2f} s, peak RSS {figures['peak_rss_mb']:.0f} MB"
            )


if __name__ == "__main__":
    main()
