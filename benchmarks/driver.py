"""Run one manifest with the runner's library in this process and print what it cost, as one JSON line.

``benchmarks/run.py`` starts this script as its own process, so the CPU time and peak RSS it reports
are the runner's alone (the simulator is another process). It composes the run the way
``runner.batch.run_batch`` does, and reports the state file's own counts of commits and statements
written (``Store.commits``, ``Store.writes``), which show whether state writes are grouped.

    python benchmarks/driver.py MANIFEST --base-url URL --state FILE --output DIR
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _trace(runner: Any, base_url: str, path: Path) -> None:
    """Every 50 ms, the pacer's view of RunComfy's queue beside the simulator's (diagnostics only)."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url) as http:
        with open(path, "w") as out:
            while True:
                pacer, now = runner.pacer, runner.clock()
                stats = (await http.get("/_sim/stats")).json()
                out.write(
                    json.dumps(
                        {
                            "t": now,
                            "estimate": pacer.queue_estimate(now),
                            "target": pacer.target_queue,
                            "rate": pacer.start_rate,
                            "in_flight": pacer.in_flight,
                            "saturated": pacer.saturated,
                            "queued": stats["queued"],
                            "running": stats["running"],
                            "draining": pacer.draining,
                            "mean": pacer.mean_duration,
                            "q05": pacer.duration_quantile(0.05),
                            "q90": pacer.duration_quantile(0.9),
                            "live": len(runner.flight.live),
                            "heap": len(runner.watcher.polls),
                            "polls": stats["requests"]["result"],
                            "collecting": len(runner.flight.collecting),
                            "submits": pacer.submits,
                            "sent": pacer.sent,
                            "started": pacer.starts.started,
                            "shared": pacer.starts.shared,
                            "to_submit": len(runner.flight.to_submit),
                        }
                    )
                    + "\n"
                )
                await anyio.sleep(0.05)


def _log_polls(runner: Any, client: Any, path: Path) -> None:
    """Write one line per ``/result`` call: when, which of this run's submits, and what it found
    (diagnostics only: where the polls of a run went)."""
    out = open(path, "w")  # open for the whole run, closed with the process
    result = client.result

    async def logged(request_id: str, **kwargs: Any) -> Any:
        track = next((v.track for v in runner.flight.live.values() if v.request_id == request_id), None)
        asked = runner.clock()
        remote = await result(request_id, **kwargs)
        pacer = runner.pacer
        out.write(
            json.dumps(
                {
                    "t": asked,
                    "seq": track.seq if track else None,
                    "status": remote.status,
                    "position": remote.queue_position,
                    "draining": pacer.draining,
                    "submits": pacer.submits,
                    "started": pacer.started_estimate(asked),
                    "shared": pacer.starts.shared,
                    "stale": pacer.stale,
                    "mean": pacer.mean_duration,
                    "head_rate": pacer.starts.head_rate,
                    "probe_ran": pacer.probe_ran,
                }
            )
            + "\n"
        )
        out.flush()
        return remote

    client.result = logged


async def _run(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    from runner.api.client import RunComfyClient
    from runner.batch import BatchOptions, _defaults, configure, open_journal, open_session, resolve
    from runner.catalog.models import Catalog
    from runner.catalog.pricing import PriceTable
    from runner.engine.loop import Runner
    from runner.manifest.loader import load_manifest
    from runner.reports.report import write_reports

    started = time.perf_counter()
    catalog = Catalog.load()
    manifest = load_manifest(args.manifest, catalog)
    figures["load_seconds"] = time.perf_counter() - started
    figures["peak_rss_mb_loaded"] = _peak_mb()
    import gc

    gc_time = [0.0, 0.0, 0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_time[1] = time.process_time()
        else:
            gc_time[0] += time.process_time() - gc_time[1]
            gc_time[2] += 1

    gc.callbacks.append(on_gc)
    figures["gc"] = gc_time
    if args.gc_freeze:
        gc.freeze()
    options = BatchOptions(
        token=args.token,
        base_url=args.base_url,
        state_path=args.state,
        output_dir=args.output,
    )
    if args.http_concurrency:
        options = replace(options, http_concurrency=args.http_concurrency)
    if args.download_concurrency:
        options = replace(options, download_concurrency=args.download_concurrency)
    manifest, located = resolve(manifest, options)  # the journal: --state here, always
    config = configure(options, manifest)
    events: Counter[str] = Counter()
    times: dict[str, float] = {}

    cpu_at: dict[str, float] = {}

    def on_event(event: dict[str, Any]) -> None:
        kind = event["event"]
        events[kind] += 1
        times[kind] = time.monotonic()  # the simulator's clock too: its job times line up
        if kind in ("submitted", "finish"):  # the CPU of start-up, and of the jobs themselves
            cpu_at.setdefault(kind, _cpu())

    # As a run opens it: locked, and recording the manifest and API it belongs to (a later CLI run
    # against the same simulator must find it its own).
    store, _ = open_journal(manifest, located, options, run=True)
    cpu_before = _cpu()
    try:
        http = open_session(options)
        if args.httpx:  # for comparison: the runner over httpx's own connection pool
            import httpx

            from runner.api.http import HttpxSession

            await http.aclose()
            http = HttpxSession(httpx.AsyncClient(limits=httpx.Limits(max_connections=16)))
        try:
            client = RunComfyClient(http, config.api)
            runner = Runner(
                manifest,
                store,
                client,
                PriceTable.load(catalog),
                config.settings,
                defaults_for=_defaults(catalog),
                on_event=on_event,
            )
            client.on_retry = runner.on_retry
            if args.poll_log:
                _log_polls(runner, client, args.poll_log)
            if args.trace:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_trace, runner, args.base_url, args.trace)
                    result = await runner.run()
                    tg.cancel_scope.cancel()
            else:
                result = await runner.run()
        finally:
            await http.aclose()
        figures["run_cpu_seconds"] = _cpu() - cpu_before
        # Start-up: everything before RunComfy accepted the first job (imports, catalog, journal, the
        # session and its TLS context). The jobs: from then to the run's end (polls, downloads, state).
        figures["startup_cpu_seconds"] = cpu_at.get("submitted", 0.0)
        figures["jobs_cpu_seconds"] = cpu_at.get("finish", 0.0) - cpu_at.get("submitted", 0.0)
        commits, writes = store.commits, store.writes
        figures["peak_rss_mb_run"] = _peak_mb()
        report_started = time.perf_counter()
        write_reports(manifest, store)
        figures["report_seconds"] = time.perf_counter() - report_started
    finally:
        store.close()
    figures.update(
        jobs=len(manifest.jobs),
        exit_code=result.exit_code,
        counts=result.counts,
        message=result.message,
        makespan=times.get("finish", 0.0) - times.get("start", 0.0),
        started_at=times.get("start"),
        finished_at=times.get("finish"),
        last_event_at=times,
        wall_minus_monotonic=time.time() - time.monotonic(),
        to_submit=events["submitted"],
        commits=commits,
        writes=writes,
        events=dict(events),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", default="sim-token")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--trace", type=Path, help="write the pacer's and the simulator's queue here")
    parser.add_argument("--poll-log", type=Path, help="write every /result call and what it found here")
    parser.add_argument("--gc-freeze", action="store_true", help="experiment: gc.freeze() after loading")
    parser.add_argument("--httpx", action="store_true", help="experiment: httpx's transport, not aiohttp's")
    parser.add_argument("--download-concurrency", type=int, help="override BatchOptions.download_concurrency")
    parser.add_argument("--http-concurrency", type=int, help="override BatchOptions.http_concurrency")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    anyio.run(_run, args, figures, backend_options={"use_uvloop": args.uvloop})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures.update(
        wall_seconds=time.perf_counter() - started,
        cpu_user=usage.ru_utime,
        cpu_sys=usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
    )
    json.dump(figures, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
