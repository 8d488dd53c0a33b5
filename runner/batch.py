"""The library's front door: load a manifest, run it, read the results, in a few lines.

    from runner import load_manifest, run_batch_sync, BatchOptions
    result = run_batch_sync("manifests/demo.yaml", BatchOptions(token="…"))
    print(result.exit_code, result.report["summary"])

Everything here is a thin composition of the modules that do the work: it checks that the state and
output folders can be written (before anything is paid), opens the state file (taking the run lock),
opens the one shared HTTP session, runs the scheduler and writes the reports, whatever way the run
ended. ``run_batch`` is the async core; ``run_batch_sync`` calls ``anyio.run`` once.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import anyio
import sniffio

from . import defaults
from .api.catalog import read_catalog
from .api.client import CANCELLED, ApiConfig, RunComfyClient
from .api.download import DownloadConfig
from .api.http import AiohttpSession, HttpSession, httpx_session
from .api.retry import RetryPolicy
from .catalog.models import Catalog, schema_dir
from .catalog.pricing import PriceTable
from .catalog.synced import (
    CatalogChanges,
    Synced,
    baseline,
    cache_path,
    catalog_changes,
    read_synced,
    synced_specs,
    write_synced,
)
from .engine.budget import spent
from .engine.events import EventSink
from .engine.home import (
    Located,
    Owner,
    api_of,
    check_owner,
    journal_path,
    locate,
    recorded_owner,
    refuse_unplaced,
    run_output_dir,
)
from .engine.isolation import check_writable, close_kept, journal_kept, log_path_for
from .engine.loop import Runner
from .engine.outputs import damaged_outputs
from .engine.settings import RunResult, RunSettings, outcome, runs_now
from .engine.states import IN_FLIGHT, JobState
from .engine.store import Store
from .errors import ApiError, ErrorRecord, JournalRefused, RunnerError, StateError, UsageError, keep_secret
from .manifest.loader import Manifest, load_manifest
from .manifest.snapshot import META_KEY, Snapshot, quick_output_dir
from .reports.report import report_paths, reports_current, write_reports_kept

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")


@dataclass(frozen=True)
class BatchOptions:
    """Where to run and how: a field for each of ``run``'s flags, and a few for tests. ``None`` falls
    back to the environment variable, then the manifest, then the default; every other default is
    ``runner/defaults.py``'s. ``configure`` turns these into the configs each part of a run takes."""

    # -- where ------------------------------------------------------------------------------------
    token: str | None = field(default=None, repr=False)  # else $RUNCOMFY_API_TOKEN
    base_url: str | None = None  # --base-url, else $RUNCOMFY_BASE_URL, else RunComfy's
    simulated: bool = False  # --simulate: base_url is the bundled simulator (outputs: <output_dir>-simulated)
    state_path: Path | None = None  # --state, else <output folder>/.runcomfy-batch/journal.sqlite
    output_dir: Path | None = None  # --output, else the manifest's output_dir
    prices_path: Path | None = None  # --prices: overrides the bundled prices model by model
    transport: httpx.AsyncBaseTransport | None = None  # tests: httpx.ASGITransport(app=simulator)
    # -- what a run does --------------------------------------------------------------------------
    max_in_flight: int | None = None  # --concurrency, else the manifest's concurrency, else adaptive
    budget_usd: float | None = None  # --budget, else the manifest's budget_usd
    budget_partial: bool = False
    resubmit_unknown: bool = False
    retry_failed: bool = False
    auto_resubmit_failed: int = defaults.AUTO_RESUBMIT_FAILED
    job_timeout: float | None = defaults.JOB_TIMEOUT
    queue_timeout: float | None = None
    verify_hashes: bool = False
    handle_signals: bool = False  # the command line's: Ctrl-C and SIGTERM stop the run gracefully
    only: tuple[str, ...] = ()  # --only GLOB (repeatable): send only the jobs whose ids match
    limit: int | None = None  # --limit N: send at most the first N jobs still to do
    halt_after: int | None = None  # --halt-after N: stop submitting once N jobs failed in this run
    # -- how patiently ----------------------------------------------------------------------------
    connect_timeout: float = defaults.CONNECT_TIMEOUT  # API calls and downloads
    read_timeout: float = defaults.READ_TIMEOUT  # API calls; a download's is stall_timeout
    stall_timeout: float = defaults.STALL_TIMEOUT
    retries: int = defaults.RETRY_ATTEMPTS  # attempts of a call that is safe to repeat
    retry_max_time: float = defaults.RETRY_MAX_SECONDS
    outage_max_time: float | None = defaults.OUTAGE_MAX_SECONDS  # None: as long as retry_max_time
    allowed_output_hosts: tuple[str, ...] = ()  # besides RunComfy's and the API's
    # -- tuning, for tests and benchmarks ---------------------------------------------------------
    http_concurrency: int = defaults.HTTP_CONCURRENCY
    download_concurrency: int = defaults.DOWNLOAD_CONCURRENCY
    flush_interval: float = defaults.FLUSH_INTERVAL
    retry_sleep_scale: float = 1.0  # tests: 0, the same retry decisions without the waits


@dataclass(frozen=True)
class RunConfig:
    """Every config one run takes, built by ``configure``: the API client's (with its read and submit
    retry policies) and the engine's (with the downloads' in ``settings.download``)."""

    api: ApiConfig
    settings: RunSettings


def configure(options: BatchOptions, manifest: Manifest | None = None) -> RunConfig:
    """The configs of a run, from its options: a field set there wins, then the environment variable,
    then the manifest's value, then the default. Without a manifest (the nothing-to-do check) the
    manifest's values are left out. Raises :class:`UsageError` without a token or a usable base URL."""
    if options.token:
        keep_secret(options.token)  # hidden from every message and log, as the environment's is
    token = options.token or os.environ.get(defaults.TOKEN_ENV)
    if not token:
        raise UsageError(
            f"no API token: set {defaults.TOKEN_ENV} (your RunComfy profile page has it), "
            "or use --simulate to try the runner against the bundled simulator"
        )
    base_url = base_url_of(options)
    if not base_url.startswith(("http://", "https://")):
        raise UsageError(f"base URL {base_url!r} must start with http:// or https://")
    retry = RetryPolicy(
        attempts=options.retries, max_seconds=options.retry_max_time, sleep_scale=options.retry_sleep_scale
    )
    api = ApiConfig(
        token=token,
        base_url=base_url,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        retry=retry,
        submit_retry=retry.for_submit(),
    )
    download = DownloadConfig(
        # The API's own host serves outputs too (the simulator's; RunComfy's hosts are always allowed).
        allowed_hosts=(*options.allowed_output_hosts, urlsplit(base_url).hostname or ""),
        stall_seconds=options.stall_timeout,
        connect_timeout=options.connect_timeout,
        retry=retry,
    )
    settings = RunSettings(
        max_in_flight=_first(options.max_in_flight, manifest.concurrency if manifest is not None else None),
        http_concurrency=options.http_concurrency,
        download_concurrency=options.download_concurrency,
        resubmit_unknown=options.resubmit_unknown,
        retry_failed=options.retry_failed,
        auto_resubmit_failed=options.auto_resubmit_failed,
        budget_usd=_first(options.budget_usd, manifest.budget_usd if manifest is not None else None),
        budget_partial=options.budget_partial,
        job_timeout=options.job_timeout,
        queue_timeout=options.queue_timeout,
        outage_max_time=_first(options.outage_max_time, options.retry_max_time) or 0.0,
        verify_hashes=options.verify_hashes,
        flush_interval=options.flush_interval,
        handle_signals=options.handle_signals,
        download=download,
        only=tuple(options.only),
        limit=options.limit,
        halt_after=options.halt_after,
    )
    return RunConfig(api, settings)


def base_url_of(options: BatchOptions) -> str:
    """The API's base URL: the option, else the environment's, else RunComfy's."""
    return options.base_url or os.environ.get(defaults.BASE_URL_ENV) or defaults.BASE_URL


def api_for(options: BatchOptions) -> str:
    """The API a run with these options talks to, as its journal records it."""
    return api_of(base_url_of(options), simulated=options.simulated)


def _first(*values: T | None) -> T | None:
    """The first value that is set (0 and False are set)."""
    return next((value for value in values if value is not None), None)


@dataclass
class BatchResult:
    """A finished (or stopped) run: its exit code, one-line message, counts, the jobs that need
    attention (the first 50, in manifest order) and the reports on disk."""

    exit_code: int
    message: str
    counts: dict[str, int]
    cost_usd: float
    report_paths: dict[str, Path]
    state_path: Path
    needs_attention: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # what finding the journal did (a move, a takeover)

    @cached_property
    def report(self) -> dict[str, Any]:
        """report.json as a dict, read from disk when first asked for (100,000 jobs take a while)."""
        with open(self.report_paths["json"], encoding="utf-8") as handle:
            return json.load(handle)  # type: ignore[no-any-return]


def resolve(manifest: Manifest, options: BatchOptions) -> tuple[Manifest, Located]:
    """Apply option overrides to the manifest; its journal (see ``engine/home.py``)."""
    refuse_unplaced(manifest, options.state_path, options.output_dir)
    manifest = replace(
        manifest,
        output_dir=run_output_dir(manifest.output_dir, options.output_dir, simulated=options.simulated),
    )
    return manifest, locate(manifest, options.state_path)


def open_journal(
    manifest: Manifest, located: Located, options: BatchOptions, *, run: bool
) -> tuple[Store, list[str]]:
    """The manifest's journal, opened with its run lock (a new one only for a run) and checked to be
    this manifest's and this API's (:class:`~runner.errors.JournalRefused`); what to tell the user."""
    store = Store.open(located.path, create=run)
    try:
        store.lock()
        owner = Owner.of(manifest, api_for(options))
        notices = [*located.notices, *check_owner(store, owner, record=run, api_matters=True)]
    except JournalRefused as exc:
        store.close()
        if located.notices:  # the journal was just moved: say so, in the same one line
            raise JournalRefused("; ".join([*located.notices, str(exc)])) from None
        raise
    except BaseException:
        close_kept(store)
        raise
    return store, notices


def open_session(options: BatchOptions) -> HttpSession:
    """The one shared HTTP session: aiohttp's on asyncio (see ``http.py``); httpx's over
    ``options.transport`` where one is given (tests: the simulator in-process), and under trio."""
    connections = max(16, options.http_concurrency * 2)
    if options.transport is None and sniffio.current_async_library() == "asyncio":
        return AiohttpSession(max_connections=connections)
    return httpx_session(options.transport, max_connections=connections)


def _setup(
    manifest: Manifest | str | Path, options: BatchOptions, catalog: Catalog
) -> tuple[Manifest, Located, RunConfig]:
    """The checked manifest (loaded first: nothing is opened or sent for an invalid one), its journal
    and the run's configs."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest, catalog)
    config = configure(options, manifest)
    manifest, located = resolve(manifest, options)
    return manifest, located, config


async def run_batch(
    manifest: Manifest | str | Path,
    options: BatchOptions | None = None,
    *,
    catalog: Catalog | None = None,
    on_event: EventSink | None = None,
) -> BatchResult:
    """Run a manifest to the end (or until stopped) and write its reports."""
    options = options or BatchOptions()
    if not isinstance(manifest, Manifest):
        done = finished_already(manifest, options)
        if done is not None:
            return done
    catalog = catalog or Catalog.load()
    manifest, located, config = _setup(manifest, options, catalog)
    catalog = catalog.with_models(manifest.models)
    prices = PriceTable.load(catalog, options.prices_path)
    settings = config.settings
    check_writable(manifest.output_dir, "output folder")
    check_writable(located.path.parent, "state folder")
    with journal_kept(located.path):
        store, notices = open_journal(manifest, located, options, run=True)
    try:
        http = open_session(options)
        try:
            client = RunComfyClient(http, config.api)
            runner = Runner(
                manifest,
                store,
                client,
                prices,
                settings,
                defaults_for=_defaults(catalog),
                output_kind_for=_output_kinds(catalog),
                on_event=on_event,
                log_path=log_path_for(located.path),
            )
            client.on_retry = runner.on_retry
            result: RunResult = await runner.run()
        finally:
            with anyio.CancelScope(shield=True):
                await http.aclose()
        paths, code, message = write_reports_kept(manifest, store, result.exit_code, result.message)
        attention = runner.isolation.stopped_jobs(ATTENTION_SHOWN) + store.needs_attention(ATTENTION_SHOWN)
        attention = attention[:ATTENTION_SHOWN]
    finally:
        close_kept(store)
    return BatchResult(code, message, result.counts, result.cost_usd, paths, located.path, attention, notices)


ATTENTION_SHOWN = 50


def finished_already(path: str | Path, options: BatchOptions | None = None) -> BatchResult | None:
    """The result of running ``path`` again when its state file says there is nothing left to do, found
    without loading the manifest (see ``snapshot.py``); ``None`` when a real run is needed.

    Nothing is left when the manifest is the one last synced (same bytes, local files, schemas and
    reader code), no job of it is pending, held or in flight (nor unknown with ``resubmit_unknown``,
    nor failed, cancelled or expired with ``retry_failed``), every succeeded job's files are on disk
    as recorded, and the reports were written for this very journal. The run is still recorded (and
    the run lock taken, so a runner at work is reported as such)."""
    options = options or BatchOptions()
    output_dir: Path | None = None  # with --state alone: the synced one, below
    if options.output_dir is not None:
        output_dir = run_output_dir(Path(), options.output_dir)
    elif options.state_path is None:
        quick = quick_output_dir(path)  # the manifest's own output_dir line: nothing is parsed
        if quick is None:
            return None
        output_dir = run_output_dir(quick, simulated=options.simulated)
    state_path = Path(options.state_path) if options.state_path else journal_path(output_dir or Path())
    if not state_path.is_file():
        return None
    try:
        store = Store.open(state_path, create=False)
    except StateError:
        return None  # the real run says what is wrong with it
    with store:
        snapshot = Snapshot.from_json(store.get_meta(META_KEY))
        if snapshot is None or snapshot.manifest != os.path.abspath(path) or not snapshot.matches(path):
            return None
        # With --state alone, the manifest's output folder is the synced one (the snapshot matches it).
        output_dir = output_dir or Path(snapshot.output_dir)
        if str(output_dir) != snapshot.output_dir:
            return None
        settings = configure(options).settings  # no token: the same error as a real run gives
        owner = recorded_owner(store)
        if owner is None or owner.manifest != snapshot.manifest or owner.api != api_for(options):
            return None  # the real run refuses it, or records what it is
        store.lock()
        counts = store.counts()
        if sum(counts.values()) != snapshot.jobs or any(
            status in IN_FLIGHT or runs_now(status, settings) for status in counts
        ):
            return None
        if damaged_outputs(store, output_dir, verify_hashes=settings.verify_hashes, first_only=True):
            return None
        paths = report_paths(output_dir)
        if not reports_current(store, snapshot.sha256, output_dir):
            return None
        run_id = store.start_run("run")
        code, message = outcome(counts)
        message = f"nothing to do: {message}"
        store.finish_run(run_id, code, counts)
        attention = store.needs_attention(ATTENTION_SHOWN)
        cost = spent(store)
    return BatchResult(code, message, counts, cost, paths, state_path, attention)


def run_batch_sync(
    manifest: Manifest | str | Path, options: BatchOptions | None = None, **kwargs: Any
) -> BatchResult:
    """``run_batch`` for code that is not async."""
    return anyio.run(lambda: run_batch(manifest, options, **kwargs))


def _defaults(catalog: Catalog) -> Callable[[str], Mapping[str, Any]]:
    def defaults_for(model_id: str) -> Mapping[str, Any]:
        spec = catalog.get(model_id)
        return spec.defaults if spec else {}

    return defaults_for


def _output_kinds(catalog: Catalog) -> Callable[[str], str | None]:
    def output_kind_for(model_id: str) -> str | None:
        spec = catalog.get(model_id)
        return spec.output_kind if spec else None

    return output_kind_for


__all__ = [
    "BatchOptions",
    "BatchResult",
    "RunConfig",
    "configure",
    "load_manifest",
    "sync_models",
    "run_batch",
    "run_batch_sync",
]


async def cancel_batch(
    manifest: Manifest | str | Path, options: BatchOptions | None = None, *, catalog: Catalog | None = None
) -> list[tuple[str, str, str]]:
    """Ask RunComfy to cancel every live request of the run: ``(job id, request id, outcome)``.

    Only queued requests can be cancelled (and cost nothing); running ones answer
    ``not_cancellable`` and are billed. Cancelled jobs are recorded so a later ``run`` leaves them
    alone (``retry`` runs them again)."""
    options = options or BatchOptions()
    manifest, located, config = _setup(manifest, options, catalog or Catalog.load())
    outcomes: list[tuple[str, str, str]] = []
    store, _ = open_journal(manifest, located, options, run=False)
    with store:
        live = [r for r in store.jobs() if r.status in (JobState.QUEUED, JobState.RUNNING) and r.request_id]
        http = open_session(options)
        try:
            client = RunComfyClient(http, config.api)
            for row in live:
                assert row.request_id is not None
                try:
                    outcome = await client.cancel(row.request_id)
                except RunnerError as exc:  # reported per job, never fatal
                    outcome = f"error: {exc}"
                if outcome == CANCELLED:
                    store.record_error(
                        row.job_id,
                        row.attempt_id,
                        JobState.CANCELLED,
                        ErrorRecord("Cancelled", "cancelled by `runcomfy-batch cancel`"),
                        cost=0.0,
                    )
                outcomes.append((row.job_id, row.request_id, outcome))
        finally:
            await http.aclose()
        store.flush()
    return outcomes


@dataclass(frozen=True)
class ModelsSynced:
    """What ``models sync`` did: where the catalog is kept now, how many models and pages it read,
    whether the pages ended cleanly, what changed against what the runner knew before, and notes."""

    path: Path
    models: int
    pages: int
    complete: bool
    changes: CatalogChanges
    notes: list[str]


async def sync_models(options: BatchOptions | None = None, *, cache: Path | None = None) -> ModelsSynced:
    """Read every page of RunComfy's live catalog with the user's token and keep it in the user's cache
    folder (``cache`` elsewhere), where every later catalog load finds it. An incomplete read keeps
    the previous sync's models beside the new ones."""
    options = options or BatchOptions()
    api = configure(options).api
    path = cache or cache_path()
    previous, _ = read_synced(path)
    http = open_session(options)
    try:
        read = await read_catalog(RunComfyClient(http, api))
    finally:
        with anyio.CancelScope(shield=True):
            await http.aclose()
    if not read.entries:
        raise ApiError(
            "RunComfy's catalog answer held no models: the synced catalog is left as it was"
            + (f" ({'; '.join(read.notes)})" if read.notes else "")
        )
    entries = list(read.entries)
    if not read.complete and previous is not None:
        fresh = {e.get("model_id") for e in entries if isinstance(e, Mapping)}
        entries += [e for e in previous.entries if isinstance(e, Mapping) and e.get("model_id") not in fresh]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    synced = Synced(when, api.base_url, read.complete, entries, read.notes, read.pages, path=path)
    specs, left_out = synced_specs(synced)
    changes = catalog_changes(baseline(schema_dir(), previous), {m: s.schema for m, s in specs.items()})
    if not read.complete:  # what an incomplete read did not see is not gone
        changes = replace(changes, removed=[])
    write_synced(replace(synced, removed=changes.removed), path)
    return ModelsSynced(path, len(specs), read.pages, read.complete, changes, [*read.notes, *left_out])
