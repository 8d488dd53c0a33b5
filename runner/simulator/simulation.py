"""The state behind one simulator app: its config, the account, the fault dice and the counters.

Nothing here speaks HTTP (that is :mod:`.app`). The app runs on one event loop and nothing here awaits,
so every request's changes are atomic there; the lock only makes :meth:`Simulation.stats` and friends
safe to call from another thread (a test driving a server that :func:`.running_server` started).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..catalog.build import latest_answer
from ..catalog.models import Catalog, ModelSpec
from ..catalog.normalise import catalog_entries, normalise_entry
from ..catalog.pricing import PriceTable
from ..errors import RunnerError, UsageError
from .account import IN_QUEUE, STATES, Account, Job
from .config import ENDPOINTS, FAULTS, SimulatorConfig
from .faults import FaultDice
from .shapes import GRACE_SHAPES, Wire

Clock = Callable[[], float]
_KEEP_INPUT_BYTES = 256 * 1024  # inputs bigger than this (inline images) are not kept for /_sim/requests


class ManualClock:
    """A clock that moves only when told: pass it to ``create_app(clock=...)`` for exact tests."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Simulation:
    """One simulated account and everything counted about the requests it answered."""

    def __init__(
        self, config: SimulatorConfig, clock: Clock = time.monotonic, catalog: Catalog | None = None
    ):
        self.config = config
        self.clock = clock
        self._bundled = catalog or Catalog.load(use_cache=False)
        self.listing, self.catalog = self._load_models(config)
        self.prices = self._load_prices(config)
        self._lock = threading.Lock()
        self._wall_at_zero = time.time() - clock()
        self.wire = Wire(config.shapes, config.unknown_status_word)
        self.reset()

    def reset(self) -> None:
        """Forget every job and zero every counter; the config stays as it is."""
        with self._lock:
            config = self.config
            self.account = Account(config.concurrency, config.expire_seconds)
            self.dice = FaultDice(config)
            self.job_rng = random.Random(f"jobs:{config.seed}")
            self.requests: Counter[str] = Counter()
            self.faults: Counter[str] = Counter()
            self.errors: Counter[str] = Counter()
            self.cancels: Counter[str] = Counter()
            self.submits_accepted = 0
            self.duplicate_submissions = 0
            self.bytes_served = 0
            self.shaped: Counter[str] = Counter()
            self._payloads: set[bytes] = set()
            self._grace_seen: Counter[tuple[str, str, int]] = Counter()

    def reconfigure(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Apply a JSON object of config changes now; running jobs keep the run times they were given."""
        with self._lock:
            old, new = self.config, self.config.updated(changes)
            if new.keepalive_timeout != old.keepalive_timeout:
                raise UsageError("simulator config: keepalive_timeout is fixed when the server starts")
            if new.extra_models_path != old.extra_models_path:
                self.listing, self.catalog = self._load_models(new)
            if new.prices_path != old.prices_path or new.extra_models_path != old.extra_models_path:
                self.prices = self._load_prices(new)
            if new.seed != old.seed:
                self.dice.rng.seed(f"faults:{new.seed}")
                self.job_rng.seed(f"jobs:{new.seed}")
            self.dice.configure(new)
            self.wire = Wire(new.shapes, new.unknown_status_word)
            self.account.expire_seconds = new.expire_seconds
            self.account.set_concurrency(new.concurrency, self.clock())
            self.config = new
            return new

    def _load_prices(self, config: SimulatorConfig) -> PriceTable:
        return PriceTable.load(self.catalog, Path(config.prices_path) if config.prices_path else None)

    def _load_models(self, config: SimulatorConfig) -> tuple[list[Any], Catalog]:
        """What ``GET /v1/models`` lists (catalog entries as RunComfy writes them: the newest saved
        answer, then ``extra_models_path``'s) and the catalog submits are checked against (the
        bundled one, with the extra models over it)."""
        try:
            saved = json.loads(latest_answer(self._bundled.root).read_text(encoding="utf-8"))
        except (RunnerError, OSError, ValueError):
            saved = []  # a catalog of models only (tests): nothing to list but the extra models
        listing = {e["model_id"]: e for e in catalog_entries(saved)[0] if isinstance(e, dict)}
        extra: dict[str, ModelSpec] = {}
        if config.extra_models_path:
            path = Path(config.extra_models_path)
            problem = f"simulator config: extra_models_path {path}"
            try:
                found = json.loads(path.read_text(encoding="utf-8"))
                entries, notes = catalog_entries(
                    [found] if isinstance(found, dict) and "model_id" in found else found
                )
            except (OSError, ValueError) as exc:
                raise UsageError(f"{problem}: cannot be read ({exc})") from None
            for entry in entries:
                result = normalise_entry(entry, source=f"the simulator's extra models ({path.name})")
                if result.schema is None or result.model_id is None:
                    notes += result.notes
                    continue
                extra[result.model_id] = ModelSpec(result.model_id, result.schema, path, "synced")
                listing[result.model_id] = entry
            if not extra:
                raise UsageError(f"{problem}: no usable model ({'; '.join(notes)})")
        return list(listing.values()), self._bundled.with_models(extra)

    # --- what a request does to the counters and the dice

    def arrive(self, endpoint: str) -> tuple[bool, str | None]:
        """Count a request; say whether it is slow and which fault (if any) answers it before anything."""
        with self._lock:
            self.requests[endpoint] += 1
            slow = self.dice.strikes("slow", endpoint)
            fault = self.dice.first_before(endpoint)
            if slow:
                self.faults["slow"] += 1
            if fault:
                self.faults[fault] += 1
            return slow, fault

    def strikes(self, fault: str, endpoint: str) -> bool:
        """Whether ``fault`` strikes now (and count it if so)."""
        with self._lock:
            hit = self.dice.strikes(fault, endpoint)
            if hit:
                self.faults[fault] += 1
            return hit

    def choose(self, options: tuple[int, ...]) -> int:
        with self._lock:
            return self.dice.choice(options)

    def refuse(self, error_code: int) -> None:
        """Count an error answer of the protocol (not a fault)."""
        with self._lock:
            self.errors[str(error_code)] += 1

    def served(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_served += nbytes

    def lags(self, shape: str, request_id: str, since: float | None, file: int = 0) -> bool:
        """Whether a grace ``shape`` answers this request about a job (or one of its files) with the
        lagging answer: it is on, and this is one of the first ``shape_grace_answers`` such requests
        or ``since`` (an account-clock time) is less than ``shape_grace_seconds`` ago."""
        if shape not in self.wire:
            return False
        with self._lock:
            config, key = self.config, (shape, request_id, file)
            seen = self._grace_seen[key]
            self._grace_seen[key] = seen + 1
            recent = since is not None and self.clock() - since < config.shape_grace_seconds
            lagging = seen < config.shape_grace_answers or recent
            if lagging:
                self.shaped[shape] += 1
            return lagging

    # --- jobs

    def over_balance(self, cost_micros: int) -> bool:
        """Whether a job of this cost would take the account past its balance."""
        if self.config.balance_usd is None:
            return False
        with self._lock:
            return self.account.charged_micros + cost_micros > round(self.config.balance_usd * 1_000_000)

    def accept(self, model_id: str, payload: Any, body_bytes: int, cost_micros: int) -> Job:
        """Accept a submit: the job exists, is billed, and runs when its turn comes. It makes the
        files its model's categories say (a video where they say nothing), as many as its input asks
        for (``num_images``…) or ``outputs_per_job``, whichever is more."""
        spec = self.catalog.get(model_id)
        kind = (spec.output_kind if spec else None) or "video"
        asked = spec.outputs_for(payload) if spec is not None and isinstance(payload, dict) else 1
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        key = hashlib.blake2b(f"{model_id}\n{canonical}".encode(), digest_size=16).digest()
        with self._lock:
            config, rng = self.config, self.job_rng
            run_seconds = config.job_seconds * (1 + config.job_spread * (2 * rng.random() - 1))
            will_fail = rng.random() < config.fail_rate
            job = Job(
                request_id=str(uuid.uuid4()),
                model_id=model_id,
                input=payload if body_bytes <= _KEEP_INPUT_BYTES else None,
                cost_micros=cost_micros,
                run_seconds=max(run_seconds, 0.0),
                will_fail=will_fail,
                submitted_at=self.clock(),
                outputs=max(config.outputs_per_job, asked),
                output_bytes=config.output_bytes,
                output_kind=kind,
            )
            self.account.submit(job, job.submitted_at)
            self.submits_accepted += 1
            if key in self._payloads:
                self.duplicate_submissions += 1
            self._payloads.add(key)
            return job

    def lookup(self, request_id: str) -> tuple[Job | None, int | None]:
        """The job as it stands now (None if unknown or expired) and its queue position if queued."""
        with self._lock:
            job = self.account.get(request_id, self.clock())
            return job, (self.account.queue_position(job) if job is not None else None)

    def cancel(self, job: Job) -> str:
        """Cancel a job: ``cancelled`` if it was still queued, else ``not_cancellable``."""
        with self._lock:
            outcome = "cancelled" if self.account.cancel(job, self.clock()) else "not_cancellable"
            self.cancels[outcome] += 1
            return outcome

    def wall(self, t: float | None) -> float | None:
        """An account-clock time as Unix seconds (what the API's timestamps say)."""
        return None if t is None else self._wall_at_zero + t

    def describe(self, job: Job) -> dict[str, Any]:
        """Everything the simulator knows about a job, for ``GET /_sim/requests/{id}``."""
        with self._lock:
            position = self.account.queue_position(job)
        return {
            "request_id": job.request_id,
            "model_id": job.model_id,
            "status": job.state,
            "queue_position": position,
            "input": job.input,
            "cost_usd": job.cost_micros / 1_000_000,
            "billed_usd": job.billed_micros / 1_000_000,
            "run_seconds": job.run_seconds,
            "will_fail": job.will_fail,
            "submitted_at": job.submitted_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "outputs": job.outputs,
            "output_bytes": job.output_bytes,
            "output_kind": job.output_kind,
        }

    def stats(self) -> dict[str, Any]:
        """The counters, as ``GET /_sim/stats`` shows them."""
        with self._lock:
            account = self.account
            account.advance(self.clock())
            charged = account.charged_micros
            balance = self.config.balance_usd
            return {
                "requests_total": sum(self.requests.values()),
                "requests": {e: self.requests[e] for e in ENDPOINTS},
                "submits_accepted": self.submits_accepted,
                "duplicate_submissions": self.duplicate_submissions,
                "running": account.running,
                "queued": account.counts[IN_QUEUE],
                "max_running": account.max_running,
                "jobs": {s: account.counts[s] for s in (*STATES, "expired")},
                "faults": {f: self.faults[f] for f in FAULTS},
                "errors": dict(sorted(self.errors.items())),
                "cancels": {o: self.cancels[o] for o in ("cancelled", "not_cancellable")},
                "bytes_served": self.bytes_served,
                "shaped": {s: self.shaped[s] for s in GRACE_SHAPES},
                "cost_charged_usd": charged / 1_000_000,
                "balance_left_usd": None if balance is None else (round(balance * 1_000_000) - charged) / 1e6,
                "clock": self.clock(),
            }
