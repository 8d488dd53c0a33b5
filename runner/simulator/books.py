"""The account's books on disk: every accepted request and every cancel, one JSON line each, so that a
simulator started again (a ``run --simulate`` that was killed and is run again) answers for the
requests the last one accepted, exactly as a real account would have moved them along meanwhile.

Only what cannot be derived is written: a request as it was accepted (its run time, whether it will
fail, its outputs) and when, in Unix seconds; the account is lazy and exact (:mod:`.account`), so
replaying the lines in order at their times gives the state it would have now had it never stopped.
Config changes, fault counters and shapes are not booked: a restarted simulator takes its config from
its own start. Writing is best effort: a line that cannot be written (a full disk) stops the books,
never an answer; a line cut short by a kill is skipped when read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .account import Job

_JOB_FIELDS = (
    "request_id",
    "model_id",
    "input",
    "cost_micros",
    "run_seconds",
    "will_fail",
    "outputs",
    "output_bytes",
    "output_kind",
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the books: ``job`` was accepted, or (``cancel``) the job ``request_id`` was
    cancelled, at Unix time ``at``."""

    at: float
    job: Job | None = None
    cancel: str | None = None


class Books:
    """The append-only file of one simulated account."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.broken: str | None = None  # why writing stopped, if it did

    def entries(self) -> Iterator[Entry]:
        """The lines as written, oldest first; unreadable ones are skipped."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        for line in text.splitlines():
            entry = _entry(line)
            if entry is not None:
                yield entry

    def accepted(self, job: Job, at: float) -> None:
        self._append({"op": "submit", "at": at, **{name: getattr(job, name) for name in _JOB_FIELDS}})

    def cancelled(self, request_id: str, at: float) -> None:
        self._append({"op": "cancel", "at": at, "request_id": request_id})

    def clear(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            self.broken = str(exc)

    def _append(self, line: dict[str, Any]) -> None:
        if self.broken is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
        except OSError as exc:
            self.broken = str(exc)


def _entry(line: str) -> Entry | None:
    try:
        data = json.loads(line)
        at = float(data["at"])
        if data["op"] == "cancel":
            return Entry(at, cancel=str(data["request_id"]))
        fields = {name: data[name] for name in _JOB_FIELDS}
        return Entry(at, job=Job(submitted_at=0.0, **fields))
    except (ValueError, KeyError, TypeError):
        return None  # cut short by a kill, or not a line of ours
