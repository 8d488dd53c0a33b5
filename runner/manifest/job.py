"""A job as a manifest gives it to a run: one request, its model and exact input, and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

PREFIX = "job:"  # how a file field names another job's output: job:<id> or job:<id>#<k>
InputPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class OutputRef:
    """One place in a job's input that names another job's output: ``job:<job_id>#<index>``."""

    path: InputPath  # where in the input: ("video",) or ("images", 1)
    job_id: str
    index: int  # from 1, as written

    def __str__(self) -> str:
        return f"{PREFIX}{self.job_id}" + (f"#{self.index}" if self.index > 1 else "")


@dataclass(frozen=True, slots=True)
class Job:
    """One request to send: its model, its exact input, and where the manifest wrote it."""

    id: str
    model: str
    input: dict[str, Any]  # a chained job's holds its references (``job:<id>#<k>``) until they are resolved
    line: int
    fingerprint: str
    after: tuple[OutputRef, ...] = ()  # the other jobs' outputs its input names (a chained job)

    @property
    def needs(self) -> tuple[str, ...]:
        """The ids of the jobs whose outputs this job's input names, each once, in the input's order."""
        return tuple(dict.fromkeys(ref.job_id for ref in self.after))


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(model: str, input: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the request: equal fingerprints are the same paid request."""
    canonical = _CANONICAL.encode({"model": model, "input": input})
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
