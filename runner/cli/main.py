"""``runcomfy-batch``: a thin shell over the library. Each command parses its options, calls one
library function and prints the result. Errors a user can cause print as one line (no traceback)
and exit with the code documented in README; anything else is a bug and keeps its traceback
(``RUNCOMFY_BATCH_TRACEBACK=1`` forces tracebacks for user errors too)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from .. import defaults
from ..batch import BatchOptions
from ..engine.home import simulator_books
from ..errors import ManifestInvalid, RunnerError, UsageError
from . import commands, models
from .commands import say

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d`` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2)]


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_text(seconds: float) -> str:
    """Seconds as ``parse_duration`` reads them back, in the largest whole unit: 10s, 60s, 5m, 2h."""
    for unit in "dhm":
        size = _UNITS[unit]
        # A minute and a half is 90s, and one minute reads better as 60s beside the other 60s defaults.
        if seconds % size == 0 and seconds >= size * (2 if unit == "m" else 1):
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")


def _add_manifest(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path, help="the YAML manifest (- reads it from standard input)")
    p.add_argument(
        "--state",
        type=Path,
        help="the journal (default: <output folder>/.runcomfy-batch/journal.sqlite, beside the outputs)",
    )
    p.add_argument("--output", type=Path, help="output folder (overrides the manifest's output_dir)")


def _add_simulated(p: argparse.ArgumentParser) -> None:
    """For the commands that only read a journal: which one, the real run's or the simulated one's."""
    p.add_argument(
        "--simulate",
        action="store_true",
        help="the --simulate run's journal and outputs (<output_dir>-simulated)",
    )


def _add_duration(p: argparse.ArgumentParser, flag: str, default: float, help: str, note: str = "") -> None:
    """A duration flag whose help ends with its default, written as the flag reads it back."""
    shown = f"default {duration_text(default)}" + (f"; {note}" if note else "")
    p.add_argument(flag, type=parse_duration, default=default, help=f"{help} ({shown})")


def _add_connection(p: argparse.ArgumentParser, *, simulate: bool = True) -> None:
    p.add_argument(
        "--base-url", help=f"API base URL (or {defaults.BASE_URL_ENV}; default {defaults.BASE_URL})"
    )
    if simulate:
        p.add_argument(
            "--simulate",
            action="store_true",
            help="run against an in-process simulator on loopback (no token needed; for trying it out); "
            "its outputs and journal go to <output_dir>-simulated",
        )
    _add_duration(p, "--connect-timeout", defaults.CONNECT_TIMEOUT, "per request, downloads included")
    _add_duration(p, "--read-timeout", defaults.READ_TIMEOUT, "per request")
    p.add_argument(
        "--retries",
        type=_positive_int,
        default=defaults.RETRY_ATTEMPTS,
        help="attempts for a call that is safe to repeat (status, result, cancel, download; "
        f"default {defaults.RETRY_ATTEMPTS}; a submit answered 429: at most "
        f"{defaults.SUBMIT_RETRY_ATTEMPTS})",
    )
    _add_duration(
        p,
        "--retry-max-time",
        defaults.RETRY_MAX_SECONDS,
        "give up retrying one call after this long",
        note=f"a submit: at most {duration_text(defaults.SUBMIT_RETRY_MAX_SECONDS)}",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    _add_connection(p)
    p.add_argument(
        "--concurrency",
        type=_positive_int,
        help="at most this many jobs submitted and unfinished at once (default: adaptive)",
    )
    p.add_argument("--budget", type=float, metavar="USD", help="budget cap in USD (overrides budget_usd)")
    p.add_argument(
        "--budget-partial",
        action="store_true",
        help="start even if the estimate is over budget; jobs that do not fit are held",
    )
    p.add_argument("--prices", type=Path, help="a price file overriding the bundled one per model")
    p.add_argument(
        "--resubmit-unknown",
        action="store_true",
        help="resubmit jobs whose earlier submit had an unknown outcome (may pay twice)",
    )
    p.add_argument(
        "--retry-failed", action="store_true", help="re-run jobs that failed, expired or were cancelled"
    )
    p.add_argument(
        "--auto-resubmit-failed",
        type=int,
        default=defaults.AUTO_RESUBMIT_FAILED,
        metavar="N",
        help="resubmit a job RunComfy reports failed up to N times "
        f"(each is paid; default {defaults.AUTO_RESUBMIT_FAILED})",
    )
    _add_duration(p, "--job-timeout", defaults.JOB_TIMEOUT, "give up on a job this long after its submit")
    p.add_argument(
        "--outage-max-time",
        type=parse_duration,
        default=defaults.OUTAGE_MAX_SECONDS,
        help="stop the run (exit 10; run it again to resume) when the API has not answered for this long "
        "(default: as long as --retry-max-time)",
    )
    p.add_argument(
        "--queue-timeout",
        type=parse_duration,
        help="cancel a job still queued this long after its submit (cancelled jobs cost nothing)",
    )
    _add_duration(
        p, "--stall-timeout", defaults.STALL_TIMEOUT, "restart a download that receives nothing for this long"
    )
    p.add_argument(
        "--allow-output-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also download outputs from HOST (repeatable)",
    )
    p.add_argument(
        "--verify-hashes",
        action="store_true",
        help="on resume, re-hash every finished output instead of trusting size and mtime",
    )
    _add_subset(p)
    p.add_argument(
        "--halt-after",
        type=_positive_int,
        metavar="N",
        help="stop submitting once N jobs failed in this run (in-flight jobs are still collected; exit 8)",
    )
    p.add_argument("--no-progress", action="store_true", help="plain line-by-line output, no live display")
    p.add_argument("--json-log", action="store_true", help="one JSON object per event on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="log every event")


def _add_subset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GLOB",
        help="send only the jobs whose ids match (repeatable; shell-style: 'shot-1*'); the jobs whose "
        "outputs they need, and a twin's leader, come too",
    )
    p.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="send at most the first N jobs still to do (manifest order, a chain's jobs before it)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runcomfy-batch",
        description=(
            "Run batches of RunComfy Model API jobs (video, image and audio models) from a YAML manifest. "
            "Resumable: run the same command again after any stop."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "validate",
        help="check a manifest; list every problem; send nothing",
        description="Check a manifest against the bundled schemas. Prints every problem as "
        "file:line job ID: field: message and exits 2 if there are any. Sends no request.",
    )
    p.add_argument("manifest", type=Path, help="the YAML manifest (- reads it from standard input)")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"ok": …, "problems": [{"file", "line", "job", "field", "message"}…], "jobs": […]} '
        "on stdout (exit codes unchanged)",
    )

    p = sub.add_parser(
        "run",
        help="validate, submit, track, download, report",
        description="Validate the manifest, submit its jobs, track them, download every output "
        "into <output_dir>/<job id>/ and write report.json/.csv/.html. Run it again to resume.",
    )
    _add_manifest(p)
    _add_run_options(p)

    p = sub.add_parser(
        "retry",
        help="re-run the jobs that failed (same as run --retry-failed)",
        description="Re-run failed, expired and cancelled jobs only; finished jobs are kept.",
    )
    _add_manifest(p)
    _add_run_options(p)

    p = sub.add_parser(
        "status",
        help="per-state counts and the jobs that need attention",
        description="Show the state of a manifest's run; works while a run is going on.",
    )
    _add_manifest(p)
    _add_simulated(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser(
        "report",
        help="rewrite report.json/.csv/.html from the state file",
        description="Rewrite the reports from the state file; sends nothing.",
    )
    _add_manifest(p)
    _add_simulated(p)

    p = sub.add_parser(
        "plan",
        help="estimate the cost of a run (dry run, nothing sent)",
        description="Jobs per model, seconds of video, estimated cost, what is already done "
        "and what a run would still spend. Sends nothing.",
    )
    _add_manifest(p)
    _add_simulated(p)
    p.add_argument("--prices", type=Path, help="a price file overriding the bundled one per model")
    p.add_argument("--budget", type=float, metavar="USD", help="compare the estimate with this budget")
    _add_subset(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output, with every job and whether a run sends it",
    )

    p = sub.add_parser(
        "cancel",
        help="cancel the run's queued requests at RunComfy",
        description="Ask RunComfy to cancel every queued request of this manifest's run. "
        "Running requests cannot be cancelled and are billed; they are listed.",
    )
    _add_manifest(p)
    _add_connection(p)

    _add_models(sub)

    p = sub.add_parser(
        "simulate",
        help="serve the bundled RunComfy API simulator on loopback",
        description="Serve the simulator of the RunComfy Model API (for tests, benchmarks, demos).",
    )
    from ..simulator import add_simulator_arguments  # noqa: PLC0415 - loaded only to build this parser

    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8790, help="port (default %(default)s)")
    add_simulator_arguments(p)
    return parser


def _add_models(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "models",
        help="the models the runner knows (models show ID; models sync)",
        description="List the models the runner can validate and price: output kind, price and where "
        "each one's schema comes from (a synced catalog, else the bundled one). `models show ID` "
        "prints a model's inputs and price; `models sync` fetches RunComfy's live catalog. "
        "Only `sync` sends anything.",
    )
    p.add_argument("--json", action="store_true", help="a JSON list of objects, one per model")
    p.add_argument("--kind", choices=("video", "image", "audio"), help="only models that make this kind")
    p.add_argument("--search", metavar="TEXT", help="only models whose id holds TEXT")
    p.add_argument("--prices", type=Path, help="a price file overriding the bundled one per model")
    models = p.add_subparsers(dest="models_command", metavar="{show,sync}", parser_class=_Parser)
    s = models.add_parser(
        "show",
        help="a model's inputs (types, bounds, files) and price",
        description="Print one model's inputs with their types, bounds, choices and file rules, "
        "its output kind and its price. Sends nothing.",
    )
    s.add_argument("model_id", help="a model id, as in POST /v1/models/{model_id}")
    s.add_argument("--json", action="store_true", help="the model's schema and facts as JSON")
    s.add_argument("--prices", type=Path, help="a price file overriding the bundled one per model")
    s = models.add_parser(
        "sync",
        help="fetch RunComfy's live model catalog into the user's cache",
        description="Fetch every page of RunComfy's model catalog (GET /v1/models?include_schema=true) "
        f"with your token (${defaults.TOKEN_ENV}) into the user's cache folder, print what was added, "
        "removed or changed, and use it from then on: it wins over the bundled catalog.",
    )
    _add_connection(s, simulate=False)


def connection_options(ns: argparse.Namespace) -> BatchOptions:
    """The options of a command that talks to the API (run, retry, cancel)."""
    return BatchOptions(
        base_url=ns.base_url,
        state_path=ns.state,
        output_dir=ns.output,
        connect_timeout=ns.connect_timeout,
        read_timeout=ns.read_timeout,
        retries=ns.retries,
        retry_max_time=ns.retry_max_time,
    )


def reader_options(ns: argparse.Namespace) -> BatchOptions:
    """The options of a command that only reads a journal (status, report, plan): where it is."""
    return BatchOptions(state_path=ns.state, output_dir=ns.output, simulated=ns.simulate)


def run_options(ns: argparse.Namespace) -> BatchOptions:
    """The options of ``run`` and ``retry``."""
    return replace(
        connection_options(ns),
        prices_path=ns.prices,
        max_in_flight=ns.concurrency,
        budget_usd=ns.budget,
        budget_partial=ns.budget_partial,
        resubmit_unknown=ns.resubmit_unknown,
        retry_failed=ns.retry_failed or ns.command == "retry",
        auto_resubmit_failed=ns.auto_resubmit_failed,
        job_timeout=ns.job_timeout,
        queue_timeout=ns.queue_timeout,
        outage_max_time=ns.outage_max_time,
        stall_timeout=ns.stall_timeout,
        verify_hashes=ns.verify_hashes,
        handle_signals=True,
        allowed_output_hosts=tuple(ns.allow_output_host),
        only=tuple(ns.only),
        limit=ns.limit,
        halt_after=ns.halt_after,
    )


@contextlib.contextmanager
def simulated(ns: argparse.Namespace, options: BatchOptions) -> Iterator[BatchOptions]:
    """With ``--simulate``: a simulator on a free loopback port, and options pointing at it."""
    if not getattr(ns, "simulate", False):
        yield options
        return
    from ..simulator import SimulatorConfig, running_server  # noqa: PLC0415 - only with --simulate

    books = simulator_books(ns.manifest, options.state_path, options.output_dir)
    config = SimulatorConfig(
        concurrency=4, job_seconds=2.0, job_spread=0.3, books_path=str(books) if books else None
    )
    # The same port each time when it is free: the output URLs a killed run journaled stay good.
    digest = hashlib.blake2b(str(books).encode(), digest_size=4).digest() if books else None
    port = 20000 + int.from_bytes(digest) % 30000 if digest else 0
    with contextlib.ExitStack() as stack:
        try:
            base_url = stack.enter_context(running_server(config, port=port))
        except UsageError:  # taken: any free port (only not-yet-downloaded outputs miss the old one)
            base_url = stack.enter_context(running_server(config))
        yield replace(options, base_url=base_url, token=config.token, simulated=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        ns = build_parser().parse_args(argv)
        return dispatch(ns)
    except RunnerError as error:
        if os.environ.get("RUNCOMFY_BATCH_TRACEBACK"):
            raise
        # A manifest's problems already start with file:line; everything else is prefixed.
        say(str(error) if isinstance(error, ManifestInvalid) else f"runcomfy-batch: {error}", sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        say("runcomfy-batch: interrupted", sys.stderr)
        return 130


def dispatch(ns: argparse.Namespace) -> int:
    if ns.command == "validate":
        return commands.validate(ns.manifest, as_json=ns.json)
    if ns.command in ("run", "retry"):
        options = run_options(ns)
        with simulated(ns, options) as options:
            return commands.run(
                ns.manifest, options, verbose=ns.verbose, json_log=ns.json_log, progress=not ns.no_progress
            )
    if ns.command == "status":
        return commands.status(ns.manifest, reader_options(ns), as_json=ns.json)
    if ns.command == "report":
        return commands.report(ns.manifest, reader_options(ns))
    if ns.command == "plan":
        return commands.plan(
            ns.manifest,
            replace(reader_options(ns), prices_path=ns.prices, only=tuple(ns.only), limit=ns.limit),
            budget=ns.budget,
            as_json=ns.json,
        )
    if ns.command == "cancel":
        with simulated(ns, connection_options(ns)) as options:
            return commands.cancel(ns.manifest, options)
    if ns.command == "models":
        if ns.models_command == "show":
            return models.show(ns.model_id, prices_path=ns.prices, as_json=ns.json)
        if ns.models_command == "sync":
            options = BatchOptions(
                base_url=ns.base_url,
                connect_timeout=ns.connect_timeout,
                read_timeout=ns.read_timeout,
                retries=ns.retries,
                retry_max_time=ns.retry_max_time,
            )
            return models.sync(options)
        return models.list_models(kind=ns.kind, search=ns.search, prices_path=ns.prices, as_json=ns.json)
    if ns.command == "simulate":
        from ..simulator import config_from_args, serve  # noqa: PLC0415 - only `simulate` serves

        serve(config_from_args(ns), host=ns.host, port=ns.port)
        return 0
    raise UsageError(f"unknown command {ns.command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
