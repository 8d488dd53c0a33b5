"""The script a careful user would write from RunComfy's documentation, to compare the runner with.

Every job goes through an ``asyncio.Semaphore`` of the account's concurrency (the user looked it up):
submit, poll ``/status`` at a fixed interval until the job is finished, fetch ``/result``, download
each output. No journal, no resume, no pacing: the simplest correct thing. ``benchmarks/run.py``
runs it against the same simulator settings as the runner and prints the ratios.

    python benchmarks/baseline.py MANIFEST --base-url URL --concurrency 50 --poll-interval 0.0167 --output DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from runner.manifest.loader import load_manifest

TERMINAL = {"completed", "succeeded", "failed", "cancelled"}


async def run_job(
    http: httpx.AsyncClient,
    gate: asyncio.Semaphore,
    interval: float,
    job_id: str,
    model: str,
    payload: dict[str, Any],
    output: Path,
) -> str:
    async with gate:
        submitted = (await http.post(f"/v1/models/{model}", json=payload)).raise_for_status().json()
        request_id = submitted["request_id"]
        while True:
            await asyncio.sleep(interval)
            status = (await http.get(f"/v1/requests/{request_id}/status")).raise_for_status().json()
            if status["status"] in TERMINAL:
                break
        result = (await http.get(f"/v1/requests/{request_id}/result")).raise_for_status().json()
        if result["status"] not in ("completed", "succeeded"):
            return result["status"]
        outputs = result.get("output") or {}
        urls = [outputs["video"]] if "video" in outputs else list(outputs.get("videos", []))
        folder = output / job_id
        folder.mkdir(parents=True, exist_ok=True)
        for index, url in enumerate(urls):
            async with http.stream("GET", url) as response:
                response.raise_for_status()
                with open(folder / f"output-{index + 1}.mp4", "wb") as handle:
                    async for chunk in response.aiter_bytes():
                        handle.write(chunk)
        return "completed"


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    jobs = load_manifest(args.manifest).jobs
    gate = asyncio.Semaphore(args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {args.token}"}
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, limits=limits, timeout=60) as http:
        started, started_at = time.perf_counter(), time.monotonic()
        outcomes = await asyncio.gather(
            *(
                run_job(http, gate, args.poll_interval, job.id, job.model, job.input, args.output)
                for job in jobs
            )
        )
        makespan = time.perf_counter() - started
    # Monotonic times too (one clock for every process): baselines sharing an account end together.
    return {
        "jobs": len(jobs),
        "makespan": makespan,
        "started_at": started_at,
        "finished_at": time.monotonic(),
        "completed": outcomes.count("completed"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", default="sim-token")
    parser.add_argument("--concurrency", type=int, required=True, help="the account's concurrency")
    parser.add_argument("--poll-interval", type=float, required=True, help="seconds between status polls")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    figures = asyncio.run(run_all(args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures.update(cpu_user=usage.ru_utime, cpu_sys=usage.ru_stime, peak_rss_mb=usage.ru_maxrss / 1024)
    json.dump(figures, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
