"""Every error a user can cause, under one base.

The CLI catches :class:`RunnerError` in one place and prints ``str(error)`` as one line (several lines
for a manifest with several problems), then exits with ``error.exit_code``. Anything that is not a
``RunnerError`` is a bug and keeps its traceback.

    RunnerError
    ├── UsageError                 bad command-line use, missing token            exit 2
    ├── ManifestInvalid            the manifest has problems (all of them)        exit 2
    │   └── ManifestTooLarge       the file or its matrix expansion is too big   exit 2
    ├── LocalInputError            a local file input cannot be sent              exit 2
    ├── StateError                 the state file is unusable                     exit 3
    │   ├── JournalRefused         it belongs to another manifest or API          exit 3
    │   └── StateLocked            another runner holds the state file            exit 4
    ├── BudgetExceeded             the estimate for what remains is over budget   exit 5
    ├── StorageError               the output or state folder cannot be written   exit 9
    ├── ApiUnreachable             the API did not answer for --outage-max-time   exit 10
    └── ApiError                   RunComfy answered with an error
        ├── AccountError           token rejected (401/400004): stop the run      exit 6
        │   └── BalanceError       no balance left (400002/402): stop submitting  exit 7
        ├── RequestNotFound        404001: unknown or expired request id
        ├── InputRejected          422001/400001: the input or model was refused
        ├── RateLimited            429: slow down
        ├── ServerError            5xx
        ├── TransportError         the connection failed or timed out
        │   ├── NeverSent          ... before the request could leave: safe to send again
        │   └── SubmitUnknown      a submit may or may not have been accepted
        └── OutputHostRefused      an output URL points at a host not allowed

A run that stops early says why with one of these too (``StorageError``, ``ApiUnreachable``) as its
result's message and exit code; an interrupted one exits ``EXIT_INTERRUPTED`` (130).

Messages never contain the API token: :func:`redact` is applied to anything that echoes a
server's answer or a URL, and removes the environment's token and every token a run was given in code
(:func:`keep_secret`). What the journal keeps about a failure is an :class:`ErrorRecord`.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from . import defaults

EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_USAGE = 2
EXIT_STATE = 3
EXIT_LOCKED = 4
EXIT_BUDGET = 5
EXIT_AUTH = 6
EXIT_BALANCE = 7
EXIT_HALTED = 8
EXIT_STORAGE = 9
EXIT_OUTAGE = 10
EXIT_INTERRUPTED = 130

_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


# Tokens given in code (``BatchOptions(token=…)``), kept for :func:`redact`. A process-wide set, unlike
# every other setting: errors are made deep in the API edge and printed far from the run's options, and
# a token must be hidden from every one of them, as the environment's is.
_SECRETS: set[str] = set()


def keep_secret(token: str) -> None:
    """Hide ``token`` from every message and log of this process from now on (see :func:`redact`)."""
    if len(token) >= 4:
        _SECRETS.add(token)


def redact(text: str) -> str:
    """Remove the API token (and any bearer credential) from text meant for a user or a log."""
    text = _BEARER.sub(r"\1***", text)
    token = os.environ.get(defaults.TOKEN_ENV, "")
    for secret in (token, *_SECRETS) if len(token) >= 4 else _SECRETS:
        text = text.replace(secret, "***")
    return text


class RunnerError(Exception):
    """Something the user can act on; printed as one line, no traceback."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(RunnerError):
    """The command line or the environment is not usable (e.g. no token)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located as precisely as we can."""

    file: str
    line: int | None
    message: str
    job_id: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where]
        if self.job_id is not None:
            parts.append(f"job {self.job_id}:")
        else:
            parts[0] += ":"
        if self.field:
            parts.append(f"{self.field}:")
        parts.append(self.message)
        return " ".join(parts)


class ManifestInvalid(RunnerError):
    """The manifest has one or more problems; all of them are listed, one per line."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ManifestTooLarge(ManifestInvalid):
    """The manifest file, or the jobs its matrices expand into, is beyond a sane cap."""


class LocalInputError(RunnerError):
    """A local file named as an input cannot be sent (too large, not an image, missing)."""

    exit_code = EXIT_USAGE


class StateError(RunnerError):
    """The state file cannot be opened or is not a runcomfy-batch state file."""

    exit_code = EXIT_STATE


class JournalRefused(StateError):
    """The journal belongs to another manifest, or holds results from another API."""


class StateLocked(StateError):
    """Another runner process holds this state file."""

    exit_code = EXIT_LOCKED


class BudgetExceeded(RunnerError):
    """The estimated cost of what remains is over the budget cap."""

    exit_code = EXIT_BUDGET


class StorageError(RunnerError):
    """A folder the run writes into (the output folder or the state file's) cannot be written: read-only,
    full, or a file where a folder must be."""

    exit_code = EXIT_STORAGE


class ApiUnreachable(RunnerError):
    """The API did not answer for longer than ``--outage-max-time`` (or answered reads, not submits)."""

    exit_code = EXIT_OUTAGE


# Failures of a folder as a whole (its disk, its permissions): every job writing there would fail alike.
# Anything else (a file where a job's folder should be, a name too long) concerns one job's path.
_FOLDER_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)


def folder_trouble(exc: OSError) -> bool:
    """Whether a failed write says the folder (its disk or its permissions) is unusable, not one path."""
    return exc.errno in _FOLDER_ERRNOS


class ApiError(RunnerError):
    """RunComfy (or the simulator) answered with an error."""

    exit_code = EXIT_JOBS_FAILED

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        error_code: int | None = None,
        detail: object = None,
        retry_after: float | None = None,
    ) -> None:
        self.http_status = http_status
        self.error_code = error_code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(message)

    def as_record(self) -> ErrorRecord:
        """What the journal keeps about this error (for the state file and the report)."""
        facts = {"http_status": self.http_status, "error_code": self.error_code, "detail": self.detail}
        return ErrorRecord(type(self).__name__, str(self), facts)


class AccountError(ApiError):
    """The token was rejected; nothing more can be submitted or polled."""

    exit_code = EXIT_AUTH


class BalanceError(AccountError):
    """The account has no balance left; submitting stops, running jobs are still collected."""

    exit_code = EXIT_BALANCE


class RequestNotFound(ApiError):
    """The request id is unknown or its results have expired."""


class InputRejected(ApiError):
    """RunComfy refused the input (422) or the model id (400001); retrying cannot help."""


class RateLimited(ApiError):
    """HTTP 429: too many requests."""


class ServerError(ApiError):
    """A 5xx answer (or an error_code body we do not otherwise know)."""


class TransportError(ApiError):
    """The connection failed, was closed, or timed out before an answer came."""

    # Whether the request cannot have reached the server: it is what the type says (NeverSent), readable
    # on any transport failure.
    surely_not_sent: ClassVar[bool] = False

    def __init__(self, message: str, *, reason: str | None = None, **facts: Any) -> None:
        self._reason = reason
        super().__init__(message, **facts)

    @property
    def reason(self) -> str:
        """What happened, in a few plain words ("connection refused", "read timed out"), as the HTTP
        session said it. An error raised while handling the one that said it (``raise … from None``
        keeps that one as ``__context__``) tells the same. Empty when nothing said it."""
        error: BaseException | None = self
        while error is not None:
            if isinstance(error, TransportError) and error._reason:
                return error._reason
            error = error.__context__
        return ""


class NeverSent(TransportError):
    """The request surely never reached the server (refused, DNS, TLS, connect timeout): even a paid
    submit may be sent again."""

    surely_not_sent: ClassVar[bool] = True


class SubmitUnknown(TransportError):
    """A submit was sent but its outcome is unknown: the job may exist and be billed."""


class OutputHostRefused(ApiError):
    """An output URL points at a host the runner is not allowed to download from."""


@dataclass(frozen=True)
class ErrorRecord(Mapping[str, Any]):
    """What the journal keeps about why a job or an attempt did not succeed, stored as a JSON object.

    ``type`` names the failure (an :class:`ApiError`'s class, or the runner's own word: ``Timeout``,
    ``NoOutput``, ``Twin``…), ``message`` says it to a person, and ``facts`` holds the rest as stored:
    ``http_status``, ``error_code`` and ``detail`` for an API error, RunComfy's own keys for a job it
    reports failed. It is a mapping of those keys, so the journal writes it, and the reports read it, as
    the JSON objects state files have always held.
    """

    type: str
    message: str
    facts: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def remote(cls, error: Mapping[str, Any] | None) -> ErrorRecord:
        """A job RunComfy reports failed, from the error object it answered (kept whole)."""
        error = error or {"error_message": "RunComfy reported the job failed"}
        facts = {k: v for k, v in error.items() if k not in ("type", "message")}
        # Its message is the first of ``message`` and ``error_message`` that says something.
        said = (error.get(key) for key in ("message", "error_message"))
        message = next(
            (str(m) for m in said if m is not None and str(m).strip()), "RunComfy reported the job failed"
        )
        return cls(str(error.get("type") or "RemoteFailure"), message, facts)

    def reworded(self, message: str) -> ErrorRecord:
        """The same failure, told in the runner's words (e.g. what the user can do about it)."""
        return replace(self, message=message)

    def for_twin(self, leader: str) -> ErrorRecord:
        """The failure as a twin of ``leader`` (a job with the same request) records it."""
        return replace(self, message=f"same request as {leader}: {self.message}")

    def __getitem__(self, key: str) -> Any:
        if key == "type":
            return self.type
        if key == "message":
            return self.message
        return self.facts[key]

    def __iter__(self) -> Iterator[str]:
        yield "type"
        yield "message"
        yield from self.facts

    def __len__(self) -> int:
        return 2 + len(self.facts)
