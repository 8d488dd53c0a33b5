"""What a manifest becomes: its jobs (each one request: its model, exact input and fingerprint), its
settings, and what it was built from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.models import ModelSpec

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


def fingerprint(model: str, input: dict[str, Any], take: int = 1) -> str:
    """sha256 of the canonical JSON of the request: equal fingerprints are the same paid request. A take
    past the first (``takes:``) is another paid request of the same body, so its number is part of it."""
    request: dict[str, Any] = {"model": model, "input": input}
    if take > 1:
        request["take"] = take
    canonical = _CANONICAL.encode(request)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Source:
    """What a manifest was built from: its file's sha256, and each local file inlined, named as a model
    schema or read as a table of jobs (absolute path, size, mtime in ns). The same source and schemas
    give the same jobs."""

    sha256: str
    local_files: tuple[tuple[str, int, int], ...] = ()  # jobs_from tables too
    stdin: bool = False  # read from standard input: there is no file to read again


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: settings and jobs, every path absolute."""

    path: Path
    name: str
    output_dir: Path
    jobs: list[Job]
    budget_usd: float | None
    concurrency: int | None
    raw_settings: dict[str, Any]
    source: Source | None = None  # None for a manifest built in code
    models: dict[str, ModelSpec] = field(default_factory=dict)  # its own schemas (``models:``)
