"""The simulator's knobs: one frozen dataclass, buildable from command-line flags or a JSON object.

Every fault has its own probability (``rate_<fault>``, 0 = never) and applies only to the endpoints
where it makes sense (``DEFAULT_FAULT_ENDPOINTS``); ``fault_endpoints`` narrows or widens that per
fault. The ``/_sim/*`` control endpoints never see a fault. ``shapes`` names answer shapes from
:data:`.shapes.SHAPES` (how the answers are written, never what the account does).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .shapes import shape_problems

# Endpoint classes, as counted in ``/_sim/stats`` and named in ``fault_endpoints``.
ENDPOINTS = ("submit", "status", "result", "cancel", "price", "catalog", "download")
_API = ("submit", "status", "result", "cancel", "price", "catalog")
# How the pages of GET /v1/models link (the API does not document it; a client must follow any), and
# a broken one: every page says more follows, under the same cursor.
CATALOG_PAGING = ("cursor", "next-url", "page", "none", "cursor-loop")

# Where each fault applies unless the config says otherwise. The fault's name is its config field
# without the ``rate_`` prefix, and its key in the ``faults`` counters of ``/_sim/stats``.
DEFAULT_FAULT_ENDPOINTS: Mapping[str, tuple[str, ...]] = {
    "slow": ENDPOINTS,  # the answer comes late (``slow_seconds``), then normally
    "drop": ENDPOINTS,  # the connection closes before any answer; nothing was done
    "5xx": ENDPOINTS,  # a 500/502/503 before anything was done (502 has an HTML body)
    "429": _API,  # 429 with a Retry-After header
    "429_bare": _API,  # 429 without Retry-After
    "error_200": _API,  # HTTP 200 whose body is an error_code object; nothing was done
    "accepted_drop": ("submit",),  # the submit was accepted (job exists, billed), then the connection closes
    "accepted_5xx": ("submit",),  # the submit was accepted (job exists, billed), then a 5xx answer
    "unknown_status": ("status", "result"),  # a live job reports ``unknown_status_word``
    "truncate": ("download",),  # Content-Length promises more bytes than are sent, then the connection closes
}
FAULTS = tuple(DEFAULT_FAULT_ENDPOINTS)

WEEK = 7 * 24 * 3600.0


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulated RunComfy account does; the defaults are a calm, honest account."""

    token: str = "sim-token"  # the one valid bearer token
    revoked_tokens: tuple[str, ...] = ()  # tokens answered with 400/400004 (expired or revoked)
    concurrency: int = 4  # jobs in_progress at once; the rest wait in_queue, FIFO
    job_seconds: float = 3.0  # mean run time of a job once started
    job_spread: float = 0.2  # run time is uniform in job_seconds × (1 ± job_spread)
    fail_rate: float = 0.0  # share of jobs that end ``failed`` (they cost nothing)
    expire_seconds: float = WEEK  # results and files answer 404 this long after a job finishes
    output_bytes: int = 64 * 1024  # size of each output file (a playable MP4 from ~7 KB up)
    outputs_per_job: int = 1  # 1: ``output.video``; more: ``output.videos`` lists that many URLs
    seed: int = 0  # seeds run times, failures and faults
    balance_usd: float | None = None  # None: unlimited; else a submit past it answers 400/400002
    prices_path: str | None = None  # a price file overlaid on the bundled table (as ``--prices``)
    serve_prices: bool = True  # False: GET /v1/models/{id} answers 404, as an API without it would
    catalog_paging: str = "cursor"  # how GET /v1/models links its pages: one of CATALOG_PAGING
    catalog_page_size: int = 50  # models per page of GET /v1/models
    extra_models_path: str | None = None  # catalog entries listed and accepted beside the bundled ones
    bare_output_names: bool = False  # output URLs without an extension (…/files/ID/output)
    rate_slow: float = 0.0
    slow_seconds: float = 2.0
    rate_drop: float = 0.0
    rate_5xx: float = 0.0
    rate_429: float = 0.0
    rate_429_bare: float = 0.0
    retry_after_seconds: int = 1
    rate_error_200: float = 0.0
    rate_accepted_drop: float = 0.0
    rate_accepted_5xx: float = 0.0
    rate_unknown_status: float = 0.0
    unknown_status_word: str = "preparing"
    rate_truncate: float = 0.0
    truncate_fraction: float = 0.5  # share of the promised bytes a cut-short download sends
    fault_endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # per-fault override
    shapes: tuple[str, ...] = ()  # names from SHAPES: how the answers are written (none: as documented)
    shape_grace_answers: int = 2  # a grace shape lasts this many answers about a job or file...
    shape_grace_seconds: float = 0.0  # ...and at least this long on the account clock
    keepalive_timeout: float = 5.0  # a served simulator closes a connection idle this long (uvicorn's 5 s)

    def __post_init__(self) -> None:
        problems = []
        if self.concurrency < 1:
            problems.append("concurrency must be at least 1")
        if self.outputs_per_job < 1:
            problems.append("outputs_per_job must be at least 1")
        if self.output_bytes < 0:
            problems.append("output_bytes must not be negative")
        if not (isinstance(self.catalog_page_size, int) and self.catalog_page_size >= 1):
            problems.append(f"catalog_page_size must be a whole number >= 1, not {self.catalog_page_size!r}")
        if self.catalog_paging not in CATALOG_PAGING:
            problems.append(
                f"catalog_paging must be one of {', '.join(CATALOG_PAGING)}, not {self.catalog_paging!r}"
            )
        if not (isinstance(self.shape_grace_answers, int) and self.shape_grace_answers >= 0):
            problems.append(
                f"shape_grace_answers must be a whole number >= 0, not {self.shape_grace_answers!r}"
            )
        seconds = (
            "job_seconds",
            "expire_seconds",
            "slow_seconds",
            "retry_after_seconds",
            "shape_grace_seconds",
        )
        for name in seconds:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a number of seconds >= 0, not {value!r}")
        for name in ("job_spread", "fail_rate", "truncate_fraction", *(f"rate_{f}" for f in FAULTS)):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                problems.append(f"{name} must be between 0 and 1, not {value!r}")
        if self.balance_usd is not None and self.balance_usd < 0:
            problems.append("balance_usd must not be negative")
        overrides = {}
        for fault, endpoints in dict(self.fault_endpoints).items():
            if fault not in DEFAULT_FAULT_ENDPOINTS:
                problems.append(f"fault_endpoints: unknown fault {fault!r} (known: {', '.join(FAULTS)})")
                continue
            endpoints = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
            unknown = [e for e in endpoints if e not in ENDPOINTS]
            if unknown:
                problems.append(f"fault_endpoints[{fault}]: unknown endpoint(s) {', '.join(unknown)}")
            overrides[fault] = endpoints
        if not (isinstance(self.keepalive_timeout, int | float) and 0 < self.keepalive_timeout < math.inf):
            problems.append(
                f"keepalive_timeout must be a number of seconds > 0, not {self.keepalive_timeout!r}"
            )
        shapes = (self.shapes,) if isinstance(self.shapes, str) else tuple(self.shapes)
        problems += shape_problems(shapes)
        if problems:
            raise UsageError("simulator config: " + "; ".join(problems))
        object.__setattr__(self, "fault_endpoints", overrides)
        object.__setattr__(self, "revoked_tokens", tuple(self.revoked_tokens))
        object.__setattr__(self, "shapes", tuple(dict.fromkeys(shapes)))

    def endpoints_for(self, fault: str) -> tuple[str, ...]:
        """The endpoints where ``fault`` may strike."""
        return self.fault_endpoints.get(fault, DEFAULT_FAULT_ENDPOINTS[fault])

    def rate(self, fault: str) -> float:
        return float(getattr(self, f"rate_{fault}"))

    def as_json(self) -> dict[str, Any]:
        """The config as a JSON object, as ``GET /_sim/config`` shows it."""
        data = dataclasses.asdict(self)
        data["revoked_tokens"] = list(self.revoked_tokens)
        data["shapes"] = list(self.shapes)
        data["fault_endpoints"] = {f: list(self.endpoints_for(f)) for f in FAULTS}
        return data

    def updated(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """A copy with ``changes`` applied (a JSON object from ``POST /_sim/config``)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UsageError(f"simulator config: unknown field(s) {', '.join(unknown)}")
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:  # a JSON value of the wrong type, e.g. "4" for concurrency
            raise UsageError(f"simulator config: {exc}") from None


_HELP = {
    "token": "the bearer token the simulator accepts",
    "revoked_tokens": "a token answered with 400/400004 (repeatable)",
    "concurrency": "jobs in_progress at once; the rest wait in_queue",
    "job_seconds": "mean run time of a job, in seconds",
    "job_spread": "run time varies uniformly by ± this fraction",
    "fail_rate": "share of jobs that end failed",
    "expire_seconds": "results answer 404 this long after a job finishes",
    "output_bytes": "size of each output file in bytes",
    "outputs_per_job": "output files per job (more than 1: an output.videos list)",
    "seed": "random seed for run times, failures and faults",
    "balance_usd": "account balance; a submit past it answers 400/400002 (default: unlimited)",
    "prices_path": "a price file overlaid on the bundled price table",
    "serve_prices": "answer the price endpoint GET /v1/models/{id}",
    "catalog_paging": "how GET /v1/models links its pages: " + ", ".join(CATALOG_PAGING),
    "catalog_page_size": "models per page of GET /v1/models",
    "extra_models_path": "a JSON file of catalog entries to list and accept beside the bundled models",
    "bare_output_names": "output URLs without a file extension (the runner names files by content type)",
    "rate_slow": "share of answers delayed by --slow-seconds",
    "slow_seconds": "delay of a slow answer",
    "rate_drop": "share of requests whose connection closes without an answer",
    "rate_5xx": "share of requests answered 500/502/503 before anything is done",
    "rate_429": "share of requests answered 429 with Retry-After",
    "rate_429_bare": "share of requests answered 429 without Retry-After",
    "retry_after_seconds": "the Retry-After of a 429",
    "rate_error_200": "share of requests answered HTTP 200 with an error_code body",
    "rate_accepted_drop": "share of accepted submits whose connection then closes unanswered",
    "rate_accepted_5xx": "share of accepted submits then answered with a 5xx",
    "rate_unknown_status": "share of status/result answers for a live job with an unknown status word",
    "unknown_status_word": "the status word of --rate-unknown-status and --shape unknown-live-status",
    "rate_truncate": "share of downloads cut short",
    "truncate_fraction": "share of the promised bytes a cut-short download sends",
    "fault_endpoints": "FAULT=ENDPOINT[,ENDPOINT…]: where a fault applies (repeatable)",
    "shapes": "write the answers in this shape (repeatable; a wrong name lists them all)",
    "shape_grace_answers": "a 404 or output-late shape lasts this many answers about a job or file",
    "shape_grace_seconds": "a 404 or output-late shape lasts at least this many seconds after it begins",
    "keepalive_timeout": "close a connection idle this many seconds",
}


def add_simulator_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Add a flag per :class:`SimulatorConfig` field (``--job-seconds``…), optionally prefixed (``sim-``)."""
    defaults = SimulatorConfig()
    for f in dataclasses.fields(SimulatorConfig):
        flag = "--" + prefix + f.name.replace("_", "-")
        dest = (prefix + f.name).replace("-", "_")
        default = getattr(defaults, f.name)
        text = _HELP[f.name]
        if f.name == "serve_prices":
            flag = "--" + prefix + "no-prices"
            parser.add_argument(flag, dest=dest, action="store_false", default=None, help="do not " + text)
        elif default is False:
            parser.add_argument(flag, dest=dest, action="store_true", default=None, help=text)
        elif f.name in ("revoked_tokens", "fault_endpoints", "shapes"):
            flag = flag if f.name == "fault_endpoints" else flag.removesuffix("s")
            metavar = {"revoked_tokens": "TOKEN", "fault_endpoints": "FAULT=ENDPOINTS"}.get(f.name, "SHAPE")
            parser.add_argument(flag, dest=dest, action="append", default=None, metavar=metavar, help=text)
        else:
            kind = float if f.name == "balance_usd" else str if f.name.endswith("_path") else type(default)
            metavar = {int: "N", float: "X", str: "TEXT"}[kind]
            metavar = "FILE" if f.name.endswith("_path") else metavar
            metavar = "SECONDS" if f.name in ("shape_grace_seconds", "keepalive_timeout") else metavar
            shown = "" if default is None else f" (default: {default})"
            parser.add_argument(flag, dest=dest, type=kind, default=None, metavar=metavar, help=text + shown)


def config_from_args(ns: argparse.Namespace, prefix: str = "") -> SimulatorConfig:
    """The config the flags added by :func:`add_simulator_arguments` describe; unset flags keep defaults."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(SimulatorConfig):
        value = getattr(ns, (prefix + f.name).replace("-", "_"), None)
        if value is None:
            continue
        if f.name == "fault_endpoints":
            value = _parse_fault_endpoints(value)
        values[f.name] = value
    return SimulatorConfig(**values)


def _parse_fault_endpoints(items: list[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for item in items:
        fault, sep, endpoints = item.partition("=")
        if not sep:
            raise UsageError(f"--fault-endpoints {item!r}: expected FAULT=ENDPOINT[,ENDPOINT…]")
        out[fault.strip()] = tuple(e.strip() for e in endpoints.split(",") if e.strip())
    return out
