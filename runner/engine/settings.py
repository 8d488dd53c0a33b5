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
    EXIT_HALTED,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    AccountError,
    BalanceError,
    RunnerError,
)
from .states import RETRIED, JobState

HALTED_KEY = "halted"  # journal meta: how the last run was halted by --halt-after (empty: it was not)


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
    # --outage-max-time: how long the API may not answer before the run stops (exit 10); unset on the
    # command line, it is --retry-max-time's (defaults.OUTAGE_MAX_SECONDS)
    outage_max_time: float = defaults.RETRY_MAX_SECONDS
    verify_hashes: bool = False
    flush_interval: float = defaults.FLUSH_INTERVAL
    handle_signals: bool = False
    download: DownloadConfig = field(default_factory=DownloadConfig)
    only: tuple[str, ...] = ()  # --only GLOB: send only the jobs whose ids match (and what they need)
    limit: int | None = None  # --limit N: send at most the first N jobs still to do
    halt_after: int | None = None  # --halt-after N: stop submitting once N jobs failed in this run


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
    judged: Mapping[str, int] | None = None,
    left_out: int = 0,
    halted: int | None = None,
    stopped: RunnerError | None = None,
) -> RunResult:
    """The result of a run that ended with these counts: stopped at once for an API that does not
    answer or a folder it cannot write (``stopped``: 10, 9), interrupted (exit 130), stopped by the
    account (``refused``: the token, 6, or the balance, 7), halted by ``--halt-after`` after ``halted``
    failed jobs (8), or else as the counts of the jobs it was about say (``judged``: those ``--only`` /
    ``--limit`` chose; ``left_out`` more were left for another run)."""
    if stopped is not None:
        code, message = stopped.exit_code, str(stopped)
    elif interrupted:
        code, message = (
            EXIT_INTERRUPTED,
            "interrupted; run the same command again to resume "
            "(submitted jobs are re-attached, none is paid twice)",
        )
    elif refused is not None:
        code, message = (EXIT_BALANCE if isinstance(refused, BalanceError) else EXIT_AUTH), str(refused)
    elif halted is not None:
        waiting = sum(n for s, n in (judged or counts).items() if s == JobState.PENDING)
        code, message = (
            EXIT_HALTED,
            f"halted after {halted} failed job(s) (--halt-after); {waiting} job(s) not submitted: "
            "fix what made them fail, then run again",
        )
    else:
        code, message = outcome(judged if judged is not None else counts)
    if left_out and code != EXIT_INTERRUPTED:
        message += f"; {left_out} job(s) left for another run (--only/--limit)"
    return RunResult(counts, code, message, cost_usd, wall_seconds)
