"""What each CLI command prints: each function calls the library once and formats its answer.

Kept apart from ``cli.py`` (which only parses) so the printing of each command reads on its own.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TextIO

import anyio
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import defaults
from ..api.client import CANCELLED
from ..batch import (
    BatchOptions,
    BatchResult,
    _defaults,
    base_url_of,
    cancel_batch,
    finished_already,
    resolve,
    run_batch,
)
from ..catalog.models import Catalog
from ..catalog.pricing import PriceTable
from ..engine.home import DEFAULT_API, SIMULATOR, Owner, check_owner
from ..engine.outage import span
from ..engine.settings import RunSettings
from ..engine.states import ALL_STATES, IN_FLIGHT, NEEDS_ATTENTION, RETRIED, JobState
from ..engine.store import Store
from ..errors import (
    EXIT_AUTH,
    EXIT_BALANCE,
    EXIT_HALTED,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    EXIT_OUTAGE,
    EXIT_STORAGE,
    ManifestInvalid,
    redact,
)
from ..manifest.loader import is_stdin, load_manifest
from ..reports.plan import ModelPlan, make_plan
from ..reports.progress import let_go, progress_sink
from ..reports.report import write_reports
from ..reports.status import Status
from ..reports.status import status as read_status


def _out(text: str = "") -> None:
    say(text, sys.stdout)


def say(text: str, stream: TextIO) -> None:
    """Print one line (redacted). A stream whose reader went away (``… | head -3``) is let go: what the
    command did does not depend on anyone reading about it, and its exit code still says it."""
    try:
        print(redact(text), file=stream, flush=True)
    except (OSError, ValueError):  # EPIPE, or a stream closed already
        let_go(stream)


def validate(path: Path, *, as_json: bool = False) -> int:
    try:
        manifest = load_manifest(path, Catalog.load())
    except ManifestInvalid as error:
        if not as_json:
            raise
        problems = [
            {"file": p.file, "line": p.line, "job": p.job_id, "field": p.field, "message": p.message}
            for p in error.problems
        ]
        _out(json.dumps({"ok": False, "problems": problems}, indent=2, ensure_ascii=False))
        return error.exit_code
    if as_json:
        jobs = [
            {
                "id": j.id,
                "model": j.model,
                "input": j.input,
                "line": j.line,
                "fingerprint": j.fingerprint,
                "after": list(j.needs),
            }
            for j in manifest.jobs
        ]
        _out(json.dumps({"ok": True, "problems": [], "jobs": jobs}, indent=2, ensure_ascii=False))
    else:
        models = sorted({j.model for j in manifest.jobs})
        _out(f"{path}: ok: {len(manifest.jobs)} job(s) across {len(models)} model(s)")
    return EXIT_OK


def run(
    path: Path, options: BatchOptions, *, verbose: bool = False, json_log: bool = False, progress: bool = True
) -> int:
    started = time.monotonic()
    done = finished_already(path, options)  # from the state file alone, when nothing is left to do
    if done is not None:
        print_run_summary(path, done, time.monotonic() - started, located=located_by(options))
        return done.exit_code
    catalog = Catalog.load()
    manifest = load_manifest(path, catalog)  # before anything is opened or sent
    with progress_sink(live=progress, verbose=verbose, json_log=json_log, title=manifest.name) as sink:
        result = anyio.run(lambda: run_batch(manifest, options, catalog=catalog, on_event=sink))
    print_run_summary(path, result, time.monotonic() - started, located=located_by(options))
    return result.exit_code


def located_by(options: BatchOptions) -> list[str]:
    """The options that find this run's journal, outputs and API, as a command repeats them: a hint
    printed without them would use another journal, or ask another API."""
    args: list[str] = []
    if options.state_path is not None:
        args += ["--state", str(options.state_path)]
    if options.output_dir is not None:
        args += ["--output", str(options.output_dir)]
    if options.simulated:
        args.append("--simulate")
    elif base_url_of(options) != defaults.BASE_URL:
        args += ["--base-url", base_url_of(options)]
    return args


def command(verb: str, path: Path, located: list[str], *extra: str) -> str:
    """``runcomfy-batch VERB PATH …`` as a shell reads it back."""
    return shlex.join(["runcomfy-batch", verb, str(path), *located, *extra])


def print_run_summary(
    path: Path, result: BatchResult, seconds: float, *, located: list[str] | None = None, limit: int = 10
) -> None:
    """One line on success (stdout); on trouble, the line, the jobs that need attention and what to do
    next (stderr), each hint a command that works as printed (``located``: see :func:`located_by`)."""
    located = located or []
    for notice in result.notices:
        say(f"runcomfy-batch: {notice}", sys.stderr)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
    stream = sys.stderr if result.exit_code else sys.stdout
    # The account's refusal was told as the run stopped, once; the summary does not say it again.
    message = (
        "stopped by RunComfy (above)" if result.exit_code in (EXIT_AUTH, EXIT_BALANCE) else result.message
    )
    say(
        f"{message}; {counts}; cost ${result.cost_usd:.2f}; took {span(seconds)}; "
        f"report: {_shown(result.report_paths['html'])}",
        stream,
    )
    if not result.exit_code:
        return
    attention = result.needs_attention
    for job in attention[:limit]:
        why = job.get("error") or ""
        say(f"  {job['id']}: {job['status']}" + (f": {why}" if why else ""), stream)
    total = sum(n for status, n in result.counts.items() if status in NEEDS_ATTENTION)
    readers = _readers(located)
    if total > limit:
        say(f"  … and {total - limit} more: {command('status', path, readers)}", stream)
    if result.exit_code in (EXIT_INTERRUPTED, EXIT_OUTAGE, EXIT_STORAGE):
        say(f"runcomfy-batch: to resume, run: {command('run', path, located)}", stream)
        if result.exit_code == EXIT_INTERRUPTED:
            return
    elif any(job["status"] in IN_FLIGHT for job in attention):
        say(
            f"runcomfy-batch: the next run picks up the jobs it stopped: {command('run', path, located)}",
            stream,
        )
    if result.exit_code == EXIT_HALTED:
        say(
            "runcomfy-batch: stopped submitting (--halt-after); to send the rest once the cause is fixed: "
            + command("run", path, located),
            stream,
        )
    if any(result.counts.get(s) for s in RETRIED):
        say(f"runcomfy-batch: to run the failed jobs again: {command('retry', path, located)}", stream)
    blocked = result.counts.get(JobState.BLOCKED, 0)
    if blocked:
        say(
            f"runcomfy-batch: {blocked} chained job(s) blocked: a job whose output each needs did not "
            "succeed; they are sent once it does (retry runs the failed ones again)",
            stream,
        )
    unknown = result.counts.get(JobState.UNKNOWN, 0)
    if unknown:
        again = command("run", path, located, "--resubmit-unknown")
        say(
            f"runcomfy-batch: {unknown} job(s) unknown: the submit may have been accepted and billed; to "
            f"submit them again anyway (maybe paying twice): {again}",
            stream,
        )


def _readers(located: list[str]) -> list[str]:
    """The locating options that ``status`` and ``report`` take (they talk to no API)."""
    if "--base-url" in located:
        at = located.index("--base-url")
        return located[:at] + located[at + 2 :]
    return located


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is under it (shorter to read and click)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def status(path: Path, options: BatchOptions, *, as_json: bool = False, limit: int = 50) -> int:
    answer = read_status(path, options.state_path, output_dir=options.output_dir, simulated=options.simulated)
    for notice in answer.notices:
        print(redact(f"runcomfy-batch: {notice}"), file=sys.stderr)
    if as_json:
        _out(json.dumps(answer.as_json(), indent=2))
        return EXIT_OK
    buffer = io.StringIO()
    tty = sys.stdout.isatty()
    console = Console(file=buffer, force_terminal=tty, width=None if tty else 160, highlight=False)
    print_status(console, path, answer, located=located_by(options), limit=limit)
    text = buffer.getvalue()
    if not tty:  # rich pads table lines to their width: no trailing blanks in a pipe or a file
        text = "".join(line.rstrip() + "\n" for line in text.splitlines())
    sys.stdout.write(redact(text))
    return EXIT_OK


def print_status(
    console: Console, path: Path, answer: Status, *, located: list[str] | None = None, limit: int = 50
) -> None:
    """The status as a person reads it: where the run is, a model × state table, the jobs that need
    attention, and what to do next as commands that work as printed."""
    run = answer.run
    line = Text(f"{answer.manifest}: {answer.jobs} job(s)", style="bold")
    if answer.simulated:
        line.append(f" · simulated ({answer.api}): not RunComfy's results", style="magenta")
    if run is None:
        line.append(" · never run")
    else:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at))
        if run.state == "running":
            line.append(f" · running now (pid {run.pid}, since {started})", style="cyan")
        elif run.state == "refused":
            line.append(f" · last run {started} refused: over budget (exit {run.exit_code})", style="yellow")
        elif run.state == "interrupted":
            line.append(f" · interrupted (run of {started} stopped without finishing)", style="yellow")
        else:
            ended = time.strftime("%H:%M", time.localtime(run.finished_at))
            line.append(f" · last run {started}–{ended}, exit {run.exit_code}")
        line.append(f" · {run.runs} run(s)", style="dim")
    console.print(line)

    per_model = answer.per_model
    states = [s for s in ALL_STATES if any(s in by for by in per_model.values())]
    table = Table(box=box.SIMPLE_HEAD, show_footer=len(per_model) > 1, pad_edge=False, show_edge=False)
    table.add_column("model", footer="total", no_wrap=True)
    for state in states:
        total = sum(by.get(state, 0) for by in per_model.values())
        table.add_column(state, justify="right", footer=str(total), style=_STATE_STYLE.get(state, ""))
    table.add_column("total", justify="right", footer=str(sum(answer.counts.values())), style="bold")
    for model, by_state in sorted(per_model.items()):
        table.add_row(Text(model), *(str(by_state.get(s, "")) for s in states), str(sum(by_state.values())))
    if per_model:
        console.print(table)
    console.print(
        f"cost so far ${answer.cost_usd:.2f} (estimate for the whole manifest ${answer.estimate_usd:.2f})"
    )
    if answer.not_yet_in_state:
        console.print(f"{answer.not_yet_in_state} job(s) of the manifest not run yet")
    elif answer.not_yet_in_state is None:
        console.print("the manifest was edited and the running run is reading it: counts so far")
    attention = answer.needs_attention
    if attention:
        console.print()
        jobs = Table(
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            show_edge=False,
            title=f"needs attention ({len(attention)})",
            title_justify="left",
            title_style="bold",
        )
        jobs.add_column("job", no_wrap=True)
        jobs.add_column("status", no_wrap=True)
        jobs.add_column("request id", no_wrap=True, style="dim")
        jobs.add_column("error", overflow="fold")
        for job in attention[:limit]:
            jobs.add_row(
                Text(job["id"]),
                Text(job["status"], style=_STATE_STYLE.get(job["status"], "")),
                Text(job["request_id"] or "—"),
                Text(job["error"] or ""),
            )
        console.print(jobs)
        if len(attention) > limit:
            console.print(f"… and {len(attention) - limit} more (see --json)")
    again = _with_api(located or [], answer.api)
    if run is not None and run.state == "interrupted":
        console.print(
            "to resume (jobs already submitted are re-attached, none is paid twice): "
            + command("run", path, again),
            markup=False,
            soft_wrap=True,  # a command is copied whole: never broken over lines
        )
    elif run is not None and run.state == "finished" and any(j["status"] in RETRIED for j in attention):
        console.print(
            "to run the failed jobs again: " + command("retry", path, again), markup=False, soft_wrap=True
        )


def _with_api(located: list[str], api: str) -> list[str]:
    """``status``'s locating options, with the API its journal's requests went to (which ``run`` must
    be told again: RunComfy's needs nothing, the simulator ``--simulate``, another ``--base-url``)."""
    if api == SIMULATOR:
        return located if "--simulate" in located else [*located, "--simulate"]
    if api.startswith(("http://", "https://")) and api != DEFAULT_API:
        return [*located, "--base-url", api]
    return located


_STATE_STYLE = {
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.EXPIRED: "red",
    JobState.UNKNOWN: "red",
    JobState.CANCELLED: "yellow",
    JobState.HELD: "magenta",
    JobState.BLOCKED: "yellow",
    JobState.QUEUED: "blue",
    JobState.RUNNING: "cyan",
    JobState.COLLECTING: "cyan",
    JobState.SUBMITTING: "cyan",
}


def _notices(notices: tuple[str, ...] | list[str]) -> None:
    for notice in notices:
        print(redact(f"runcomfy-batch: {notice}"), file=sys.stderr)


def report(path: Path, options: BatchOptions) -> int:
    manifest, located = resolve(load_manifest(path, Catalog.load()), options)
    _notices(located.notices)
    with Store.open(located.path, create=False) as store:
        check_owner(store, Owner.of(manifest), record=False, api_matters=False)
        paths = write_reports(manifest, store)
    _out(f"wrote {paths['json']}, {paths['csv']}, {paths['html']}")
    return EXIT_OK


def plan(path: Path, options: BatchOptions, *, budget: float | None, as_json: bool) -> int:
    catalog = Catalog.load()
    manifest = load_manifest(path, catalog)
    subset = RunSettings(only=options.only, limit=options.limit)
    journal: Path | None = None
    if not is_stdin(path) or options.state_path or options.output_dir:  # a piped one may have no journal
        manifest, located = resolve(manifest, options)
        _notices(located.notices)
        journal = located.path
    catalog = catalog.with_models(manifest.models)
    prices = PriceTable.load(catalog, options.prices_path)
    if journal is not None and journal.exists():
        with Store.open(journal, create=False) as store:
            check_owner(store, Owner.of(manifest), record=False, api_matters=False)
            result = make_plan(manifest, prices, _defaults(catalog), store, budget, subset)
    else:
        result = make_plan(manifest, prices, _defaults(catalog), None, budget, subset)
    if as_json:
        _out(json.dumps(result.as_json(), indent=2))
        return EXIT_JOBS_FAILED if result.over_budget else EXIT_OK
    simulated = " (simulated: the --simulate run's journal; nothing was charged)" if result.simulated else ""
    _out(f"{path}: {result.jobs} job(s); price table read on {result.prices_read_on}{simulated}")
    _out(
        f"  {'model':<52} {'jobs':>5} {'paid':>5} {'units':>8} {'estimate':>10} {'done':>5} "
        f"{'left':>5} {'to spend':>10}  price"
    )
    for m in result.models:
        units = f"{m.outputs:.0f} out" if m.price_unit == "output" else f"{m.seconds:.0f} s"
        unknown = m.unknown_price_jobs == m.paid_requests
        estimate, to_spend = ("?", "?") if unknown else (f"{m.estimate_usd:.2f}", f"{m.remaining_usd:.2f}")
        _out(
            f"  {m.model:<52} {m.jobs:>5} {m.paid_requests:>5} {units:>8} {estimate:>10} "
            f"{m.done:>5} {m.remaining:>5} {to_spend:>10}  {_price(m)}"
        )
    _out(
        f"  total estimate ${result.estimate_usd:.2f}; already spent ${result.spent_usd:.2f}; "
        f"a run would still spend ${result.remaining_usd:.2f} on {sum(m.remaining for m in result.models)} "
        "job(s)"
    )
    retry = sum(m.retry for m in result.models)
    if retry:
        _out(f"  retry would also send {retry} failed, cancelled or expired job(s): ${result.retry_usd:.2f}")
    unknown_jobs = sum(m.unknown for m in result.models)
    if unknown_jobs:
        _out(
            f"  --resubmit-unknown would also send {unknown_jobs} unknown job(s): ${result.unknown_usd:.2f} "
            "(each may have been paid already)"
        )
    if result.budget_usd is not None:
        verdict = "OVER" if result.over_budget else "within"
        _out(
            f"  budget ${result.budget_usd:.2f}: committed ${result.committed_usd:.2f} + "
            f"remaining ${result.remaining_usd:.2f} is {verdict} budget"
        )
    _out(f"  a run would send {result.would_submit} job(s)")
    for note in result.notes:
        _out(f"  note: {note}")
    return EXIT_JOBS_FAILED if result.over_budget else EXIT_OK


def _price(m: ModelPlan) -> str:
    """``$0.084/s (price table, 2026-11-01)``; ``unknown price`` where nothing knows one (for some jobs:
    a tier whose price nobody published)."""
    unit = {"second": "s", "output": "output"}.get(m.price_unit or "", m.price_unit or "s")
    if m.usd_per_unit is None:
        return "unknown price" + (f" (per {m.price_unit})" if m.price_unit else "")
    known = f"${m.usd_per_unit:g}/{unit} ({m.price_source}, {m.price_read_on})"
    if m.unknown_price_jobs:
        known += f"; unknown price for {m.unknown_price_jobs} job(s)"
    return known


def cancel(path: Path, options: BatchOptions) -> int:
    outcomes = anyio.run(lambda: cancel_batch(path, options))
    if not outcomes:
        _out("nothing to cancel: no request of this run is queued or running")
        return EXIT_OK
    cancelled = [o for o in outcomes if o[2] == CANCELLED]
    for job_id, request_id, outcome in outcomes:
        if outcome != CANCELLED:
            _out(f"  {job_id} ({request_id}): {outcome} (still running; it will be billed)")
    _out(f"cancelled {len(cancelled)} of {len(outcomes)} live request(s)")
    return EXIT_OK if len(cancelled) == len(outcomes) else EXIT_JOBS_FAILED
