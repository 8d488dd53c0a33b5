"""How a run behaves (:class:`RunSettings`) and what it did (:class:`RunResult`), with the two rules that
read them: which jobs at rest a run sends again, and which exit code a run's counts imply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import defaults
from ..api.download import DownloadConfig
from ..errors import (
    EXIT_AUTH,
    EXIT_BALANCE,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    AccountError,
    BalanceError,
)
from .states import RETRIED, JobState


@dataclass(frozen=True)
class RunSettings:
    """How a run behaves; a run's is built from its ``BatchOptions`` by ``runner.batch.configure``."""

    max_in_flight: int | None = None  # --concurrency: cap on submitted-but-unfinished jobs
    http_concurrency: int = defaults.HTTP_CONCURRENCY  # API calls at once (lowered on 429s)
    download_concurrency: int = defaults.DOWNLOAD_CONCURRENCY
    resubmit_unknown: bool = False
    retry_failed: bool = False
    auto_resubmit_failed: int = defaults.AUTO_RESUBMIT_FAILED  # per job RunComfy reports failed; paid
    budget_usd: float | None = None
    budget_partial: bool = False
    job_timeout: float | None = defaults.JOB_TIMEOUT
    queue_timeout: float | None = None
    verify_hashes: bool = False
    flush_interval: float = defaults.FLUSH_INTERVAL
    handle_signals: bool = False
    download: DownloadConfig = field(default_factory=DownloadConfig)


@dataclass
class RunResult:
    """What a run did: final counts per state and the exit code it implies."""

    counts: dict[str, int]
    exit_code: int
    message: str
    cost_usd: float
    wall_seconds: float


def runs_now(status: str, settings: RunSettings) -> bool:
    """Whether a job at rest in ``status`` is (re)submitted by a run with these settings."""
    return (
        status in (JobState.PENDING, JobState.HELD)
        or (status == JobState.UNKNOWN and settings.resubmit_unknown)
        or (status in RETRIED and settings.retry_failed)
    )


def outcome(counts: Mapping[str, int]) -> tuple[int, str]:
    """The exit code and one-line message of a run that ended with these counts per state."""
    unfinished = sum(n for s, n in counts.items() if s != JobState.SUCCEEDED)
    if unfinished:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != JobState.SUCCEEDED)
        return EXIT_JOBS_FAILED, f"{unfinished} job(s) did not succeed ({parts})"
    return EXIT_OK, f"all {counts.get(JobState.SUCCEEDED, 0)} job(s) succeeded"


def run_result(
    counts: dict[str, int],
    cost_usd: float,
    wall_seconds: float,
    *,
    interrupted: bool,
    refused: AccountError | None,
) -> RunResult:
    """The result of a run that ended with these counts: interrupted (exit 130), stopped by the account
    (``refused``: the token, 6, or the balance, 7), or else as its counts say."""
    if interrupted:
        code, message = (
            EXIT_INTERRUPTED,
            "interrupted; run the same command again to resume "
            "(submitted jobs are re-attached, none is paid twice)",
        )
    elif refused is not None:
        code, message = (EXIT_BALANCE if isinstance(refused, BalanceError) else EXIT_AUTH), str(refused)
    else:
        code, message = outcome(counts)
    return RunResult(counts, code, message, cost_usd, wall_seconds)
