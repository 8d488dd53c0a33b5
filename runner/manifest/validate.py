"""Checking a parsed manifest, and saying where each problem is, in words a manifest author reads.

Two passes, as the format promises: the whole document against ``schemas/manifest.schema.json``
first (the shape: keys, types, ids, matrices), then every job's input against its model's schema
through the catalog. Both start with jsonschema_rs's yes/no and only ask jsonschema for errors when
that is not yes (:mod:`runner.catalog.schema`), so a valid 100,000-job manifest is checked in well
under a second.

Every finding becomes one :class:`~runner.errors.Problem` (``file:line job ID: field: what``) in a
:class:`ProblemLog`, located at the value that is wrong: for a job built from defaults, its own input
and a matrix combination, the line is where the offending field was written. One mistake repeated by
many jobs is told once: a bad value in ``defaults.input`` at the defaults line, a mistake in a matrix
job's own input once for all its combinations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any

from ..catalog.models import Catalog, ModelSpec, format_path, schema_dir
from ..catalog.schema import Schema, describe, shorten, show, suggest
from ..errors import Problem
from .yamldoc import Document

MAX_PROBLEMS_SHOWN = 500
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ID_TEMPLATE = re.compile(r"[A-Za-z0-9{][A-Za-z0-9._{}-]{0,127}")
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")  # what would split or garble a line
_PATH_PART = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")

DocPath = tuple[str | int, ...]


def one_line(text: str) -> str:
    """Control characters escaped (a key may hold a newline): every problem prints as one line."""
    return _LINE_BREAKING.sub(lambda m: repr(m.group())[1:-1], text)


@dataclass
class _Entry:
    line: int | None
    message: str
    job_id: str | None
    field: str | None
    order: int
    jobs: list[str] = default(default_factory=list)
    scope: str = ""  # "defaults": count every job it affects; "matrix": count sibling combinations
    file: str | None = None  # another file than the manifest (a table of jobs_from)


class ProblemLog:
    """Every problem found in one manifest, located, de-duplicated and in file order."""

    def __init__(self, file: str, doc: Document | None = None) -> None:
        self.file = file
        self.doc = doc
        self.too_large = False
        self._entries: list[_Entry] = []
        self._groups: dict[tuple[Any, ...], _Entry] = {}
        self._covered: set[tuple[int | None, str | None]] = set()  # (line, field) already told in full
        self.tables: list[str] = []  # the other files jobs were read from, in the order they are told
        self.read_files: dict[str, tuple[int, int]] = {}  # those tables: absolute path -> (size, mtime ns)
        self.may_chain = False  # some file read holds "job:": inputs are searched for references

    def __bool__(self) -> bool:
        return bool(self._entries)

    def add(
        self,
        message: str,
        *,
        line: int | None = None,
        job_id: str | None = None,
        field: str | None = None,
        covers_value: bool = False,
        file: str | None = None,
    ) -> None:
        if (line, field or None) in self._covered and file is None:
            return
        if covers_value:
            self._covered.add((line, field or None))
        self._entries.append(
            _Entry(
                line,
                one_line(message),
                job_id,
                one_line(field) if field else None,
                len(self._entries),
                file=file,
            )
        )

    def at(self, path: DocPath, message: str, *, line: int | None = None, covers_value: bool = False) -> None:
        """A problem with the value at ``path`` in the document (``("jobs", 3, "input", "duration")``)."""
        job_id, shown_path = self.label(path)
        if line is None and self.doc is not None:
            line = self.doc.line_at(path)
        self.add(message, line=line, job_id=job_id, field=shown_path, covers_value=covers_value)

    def grouped(
        self,
        key: tuple[Any, ...],
        message: str,
        *,
        line: int | None,
        job_id: str | None,
        field: str,
        scope: str,
        file: str | None = None,
    ) -> None:
        """One problem however many jobs repeat it; ``job_id`` is one of those jobs."""
        if (line, field) in self._covered and file is None:
            return
        entry = self._groups.get(key)
        if entry is None:
            entry = _Entry(
                line,
                one_line(message),
                None if scope == "defaults" else job_id,
                one_line(field),
                len(self._entries),
                scope=scope,
                file=file,
            )
            self._groups[key] = entry
            self._entries.append(entry)
        if job_id is not None:
            entry.jobs.append(job_id)

    def label(self, path: DocPath) -> tuple[str | None, str]:
        """``("jobs", 3, "input", "x")`` -> (that job's id, ``input.x``); others -> (None, ``a.b[2]``)."""
        if len(path) >= 2 and path[0] == "jobs" and isinstance(path[1], int) and self.doc is not None:
            jobs = self.doc.data.get("jobs") if isinstance(self.doc.data, dict) else None
            job = jobs[path[1]] if isinstance(jobs, list) and 0 <= path[1] < len(jobs) else None
            job_id = job.get("id") if isinstance(job, dict) else None
            usable = SAFE_ID if not (isinstance(job, dict) and "matrix" in job) else _ID_TEMPLATE
            if isinstance(job_id, str) and usable.fullmatch(job_id):
                return job_id, format_path(list(path[2:]))
        return None, format_path(list(path))

    def problems(self, total_jobs: int = 0) -> list[Problem]:
        """The problems, in file order (the manifest's, then each table's), at most
        :data:`MAX_PROBLEMS_SHOWN` and a line saying how many more."""
        out: list[Problem] = []
        files = {**dict.fromkeys(self.tables), **{e.file: None for e in self._entries if e.file is not None}}
        rank: dict[str | None, int] = {file: n for n, file in enumerate(files, start=1)}
        for entry in sorted(self._entries, key=lambda e: (rank.get(e.file, 0), e.line or 0, e.order)):
            out.append(
                Problem(
                    entry.file or self.file,
                    entry.line,
                    entry.message + self._scope(entry, total_jobs),
                    entry.job_id,
                    entry.field,
                )
            )
        if len(out) > MAX_PROBLEMS_SHOWN:
            rest = len(out) - MAX_PROBLEMS_SHOWN
            out = out[:MAX_PROBLEMS_SHOWN] + [Problem(self.file, None, f"… and {rest:,} more problems")]
        return out

    @staticmethod
    def _scope(entry: _Entry, total_jobs: int) -> str:
        n = len(entry.jobs)
        if entry.scope == "matrix" and n > 1:
            return f" (same in {n - 1:,} more {'job' if n == 2 else 'jobs'} of this matrix)"
        if entry.scope != "defaults" or total_jobs <= 1:
            return ""
        if n >= total_jobs:
            return f" (in all {total_jobs:,} jobs)"
        if n == 1:
            return f" (in job {entry.jobs[0]})"
        named = ", ".join(entry.jobs[:3]) + (", …" if n > 3 else "")
        return f" (in {n:,} of {total_jobs:,} jobs: {named})"


# --- the manifest's own schema ------------------------------------------------------------------


class ManifestSchema:
    """``schemas/manifest.schema.json``, split so one bad job in 100,000 costs one slow check, not all."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        jobs = schema["properties"]["jobs"]
        top = {**schema, "properties": {**schema["properties"], "jobs": {**jobs, "items": True}}}
        self.schema = schema
        self.whole = Schema(schema)
        self.top = Schema(top)
        self.job = Schema({**jobs["items"], "$defs": schema.get("$defs", {})})

    @classmethod
    def load(cls, catalog: Catalog) -> ManifestSchema:
        """The catalog's copy, or the bundled one for a catalog of models only."""
        root = catalog.root if (catalog.root / "manifest.schema.json").is_file() else schema_dir()
        return cls(json.loads((root / "manifest.schema.json").read_text(encoding="utf-8")))

    def job_problems(self, job: Any) -> list[tuple[DocPath, str]]:
        """What is wrong with one job's entry (a table's row), as (path in the entry, message)."""
        return [found for error in self.job.errors(job) for found in describe(error, "manifest")]

    def check(self, data: dict[str, Any], log: ProblemLog) -> set[int]:
        """Log every way ``data`` breaks the schema; the indexes of the jobs that do."""
        if self.whole.surely_valid(data):
            return set()
        for error in self.top.errors(data):
            for path, message in describe(error, "manifest"):
                log.at(path, message)
        bad: set[int] = set()
        jobs = data.get("jobs")
        if isinstance(jobs, list):
            for index, job in enumerate(jobs):
                for error in self.job.errors(job):
                    bad.add(index)
                    for path, message in describe(error, "manifest"):
                        log.at(("jobs", index, *path), message)
        return bad


# --- job inputs against their model's schema ---------------------------------------------------


@dataclass(frozen=True)
class InputSource:
    """Where the parts of one job's input were written, to put each problem on its line."""

    index: int  # the job's position in the manifest's `jobs` list
    defaults: Mapping[str, Any]  # defaults.input
    own: Mapping[str, Any]  # the job's `input`
    matrix_keys: tuple[str, ...] = ()
    matrix_pick: tuple[int, ...] = ()  # which value of each matrix field this combination took
    row: tuple[str, int] | None = None  # a job read from a table: its file and line (not the document)

    def origin(self, path: DocPath) -> tuple[str, DocPath]:
        """(``defaults``, ``job`` or ``matrix``, the document path of the value at input ``path``)."""
        if not path:
            return "job", ("jobs", self.index)
        top, rest = path[0], path[1:]
        if top in self.matrix_keys:
            pick = self.matrix_pick[self.matrix_keys.index(top)]
            return "matrix", ("jobs", self.index, "matrix", top, pick, *rest)
        if top in self.own:
            return "job", ("jobs", self.index, "input", *path)
        if top in self.defaults:
            return "defaults", ("defaults", "input", *path)
        return "job", ("jobs", self.index)


def parse_input_path(text: str) -> DocPath:
    """``images[5].x`` -> ``("images", 5, "x")`` (the inverse of catalog.format_path)."""
    return tuple(int(index) if index else name for index, name in _PATH_PART.findall(text))


class InputChecker:
    """Checks job inputs against their model schemas, fast when they are valid."""

    def __init__(self, log: ProblemLog) -> None:
        self.log = log

    def is_valid(self, spec: ModelSpec, input: dict[str, Any]) -> bool:
        """Whether the input is valid for the model; about a µs for a valid one."""
        return not spec.check_input(input)

    def explain(
        self,
        job_id: str,
        spec: ModelSpec,
        input: dict[str, Any],
        source: InputSource,
        file_problems: Sequence[tuple[DocPath, str]] = (),
    ) -> bool:
        """Log every problem with one job's input (and its local files); whether it has none."""
        found = [(path, message) for path, message in file_problems]
        failed_files = {path for path, _ in file_problems}
        for problem in spec.check_input(input):
            path = parse_input_path(problem.path)
            if path not in failed_files:  # a missing local file also fails the URL pattern: say it once
                found.append((path, problem.message))
        for path, message in found:
            self.report(job_id, path, shorten(message), source)
        return not found

    def report(self, job_id: str, path: DocPath, message: str, source: InputSource) -> None:
        where, doc_path = source.origin(path)
        file: str | None = None
        line: int | None
        if where != "defaults" and source.row is not None:
            file, line = source.row
        else:
            line = self.log.doc.line_at(doc_path) if self.log.doc is not None else None
        shown = format_path(["input", *path])
        if where == "defaults":
            self.log.grouped(
                ("defaults", line, shown, message),
                message,
                line=line,
                job_id=job_id,
                field="defaults." + shown,
                scope="defaults",
            )
        else:
            self.log.grouped(
                ("job", source.index, line, shown, message),
                message,
                line=line,
                job_id=job_id,
                field=shown,
                scope="matrix",
                file=file,
            )


class ModelCheck:
    """Why a model a manifest names cannot be used, or None; worked out once per model (finding the
    closest ids of an unknown one takes a millisecond, and 100,000 jobs may name it). An ``excused``
    model is one whose own schema (``models:``) failed to load: that was told, so its jobs are
    neither checked nor told "unknown model" too."""

    def __init__(self, catalog: Catalog, excused: Iterable[str] = ()) -> None:
        self.catalog = catalog
        self._found: dict[str, str | None] = dict.fromkeys(excused)

    def __call__(self, model: Any) -> str | None:
        if not isinstance(model, str):
            return check_model(model, self.catalog)
        if model not in self._found:
            self._found[model] = check_model(model, self.catalog)
        return self._found[model]


def check_model(model: Any, catalog: Catalog) -> str | None:
    """Why ``model`` cannot be used (unknown to the catalog), or None: the closest known ids, and how
    to learn more models (the list of every known one, at 120, would be unreadable)."""
    if isinstance(model, str) and model in catalog:
        return None
    shown = show(model, 120)
    if isinstance(model, str) and model in catalog.unlisted:
        synced = catalog.synced.date if catalog.synced is not None else "the last sync"
        return (
            f"model {shown} is no longer in RunComfy's catalog (synced on {synced}): "
            "`runcomfy-batch models sync` again, or name a schema for it under `models:`"
        )
    closest = catalog.closest(model) if isinstance(model, str) else []
    near = f"; closest: {', '.join(closest)}" if closest else ""
    return (
        f"unknown model {shown}{near} (`runcomfy-batch models` lists the {len(catalog)} known; "
        "`runcomfy-batch models sync` fetches RunComfy's current catalog)"
    )


def check_defaults_used(
    log: ProblemLog, catalog: Catalog, default_input: dict[str, Any], inherited: dict[str, dict[str, Any]]
) -> None:
    """A defaults.input field that no job's model has is a typo, not a field for other models."""
    if not inherited:
        return
    known = sorted(
        {name for spec in map(catalog.get, inherited) if spec for name in spec.schema.get("properties", {})}
    )
    for name in default_input:
        if not any(name in fields for fields in inherited.values()):
            hint = suggest(name, known)
            log.at(
                ("defaults", "input", name),
                f"no job's model has this field{hint} (known: {', '.join(known)})",
            )


def check_name(log: ProblemLog, name: Any) -> None:
    """A ``name`` the schema's pattern lets through but no file name should have (``"name\\n"``: Python's
    ``$`` matches before a final newline)."""
    if isinstance(name, str) and SAFE_ID.match(name) and not SAFE_ID.fullmatch(name):
        log.at(
            ("name",),
            f"{show(name)} is not a usable name: use 1-128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit",
        )
