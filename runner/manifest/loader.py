"""The manifest: a YAML file listing the jobs of a batch, read into :class:`Manifest` and its :class:`Job` s.

:func:`load_manifest` is the one entry point. It reads the file (capped in size; ``-`` is standard
input), parses it with lines (:mod:`runner.yamldoc`), checks it against the manifest schema, reads its
own model schemas (:mod:`.own_models`), adds the rows of its ``jobs_from`` tables (:mod:`.tables`),
expands matrices and takes into jobs with stable, file-safe ids (:mod:`.matrix`), builds each job's
input (defaults, then the job's input, then its matrix combination; local images inlined by
:mod:`runner.inputs`), checks every input against its model (:mod:`runner.validate`) and links the
jobs whose inputs name another job's output (:mod:`.chains`). It either returns a manifest whose
every job can be sent as is (a chained one once its references are resolved), or raises
:class:`~runner.errors.ManifestInvalid` listing all the problems, one line each; no other exception
escapes for any file content. The format is documented in ``docs/manifest.md``.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog.models import Catalog, ModelSpec, format_path
from ..catalog.schema import show, type_word
from ..errors import ManifestInvalid, ManifestTooLarge
from . import chains
from .inputs import LocalFiles
from .job import PREFIX, Job, Manifest, Source, fingerprint
from .matrix import expand_matrix, matrix_size, take_ids, takes_of, template_problem, value_tokens
from .own_models import read_own_models
from .tables import Row, read_table_file
from .validate import (
    SAFE_ID,
    InputChecker,
    InputSource,
    ManifestSchema,
    ModelCheck,
    ProblemLog,
    check_defaults_used,
    check_name,
)
from .yamldoc import parse_yaml

# Job, its fingerprint and the matrix helpers live in modules of their own; loader's names stay.
__all__ = [
    "MAX_FILE_BYTES",
    "Job",
    "Manifest",
    "Source",
    "expand_matrix",
    "fingerprint",
    "is_stdin",
    "load_manifest",
    "refuse_output_dir",
    "take_ids",
    "value_tokens",
]

MAX_FILE_BYTES = 50 * 1000 * 1000
MAX_JOBS = 200_000
STDIN = "-"  # the manifest's path that means standard input
SETTINGS = ("description",)  # optional top-level keys kept in Manifest.raw_settings

_Expanded = tuple[str, tuple[int, ...], dict[str, Any]]  # id, pick, matrix combination


def load_manifest(path: str | Path, catalog: Catalog | None = None) -> Manifest:
    """Read, expand and check a manifest (``-``: from standard input, its relative paths then taken
    from the working folder); :class:`ManifestInvalid` lists everything wrong with it."""
    shown = os.fspath(path)
    stdin = shown == STDIN
    absolute = Path(STDIN) if stdin else Path(os.path.abspath(shown))
    catalog = catalog or Catalog.load()
    with _gc_paused():
        return _Loader(shown, absolute, catalog, stdin=stdin).load()


def is_stdin(path: str | Path) -> bool:
    """Whether a manifest path means standard input."""
    return os.fspath(path) == STDIN


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building a million small containers triggers the cycle collector over and over (9 s instead of
    1.4 s for 100,000 jobs); nothing built here holds a cycle, so it waits until the end."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def refuse_output_dir(output_dir: Path) -> str | None:
    """Why ``output_dir`` cannot hold a run's outputs (the filesystem root or the home folder itself:
    a job id would become a folder beside the user's own), or ``None``."""
    resolved = Path(os.path.abspath(os.path.expanduser(output_dir)))
    if resolved == Path(resolved.anchor):
        return "is the filesystem root; give the outputs a folder of their own"
    if resolved == Path(os.path.abspath(os.path.expanduser("~"))):
        return "is your home folder itself; give the outputs a folder of their own"
    return None


def fields_for(spec: ModelSpec, default_input: dict[str, Any]) -> dict[str, Any]:
    """The defaults.input fields a model has: shared defaults serve jobs of several models."""
    properties = spec.schema.get("properties")
    if spec.schema.get("additionalProperties", True) is not False or not isinstance(properties, dict):
        return default_input
    return {name: value for name, value in default_input.items() if name in properties}


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One job entry as written: in the manifest's ``jobs`` (at ``index``), or a table's row."""

    index: int  # its place among all entries: the manifest's jobs, then each table's rows
    job: dict[str, Any]
    line: int
    row: Row | None = None

    @property
    def where(self) -> tuple[str, int] | None:
        return (self.row.file, self.row.line) if self.row is not None else None

    def tell(self, log: ProblemLog, path: tuple[str | int, ...], message: str) -> None:
        """A problem with the value at ``path`` inside this entry, told where the entry was written."""
        if self.row is None:
            log.at(("jobs", self.index, *path), message)
            return
        job_id = self.job.get("id")
        usable = isinstance(job_id, str) and SAFE_ID.fullmatch(job_id)
        log.add(
            message,
            file=self.row.file,
            line=self.row.line,
            job_id=job_id if usable else None,
            field=format_path(list(path)) or None,
        )


def note_id(
    log: ProblemLog, shown: str, job_id: str, entry: _Entry, seen: dict[str, tuple[str | None, int, int]]
) -> None:
    """Count ``job_id`` as used by ``entry``; a duplicate is told where it was written again."""
    file, line = entry.where or (None, entry.line)
    first = seen.setdefault(job_id, (file, line, entry.index))
    if first[2] != entry.index:
        at = f"line {first[1]}" if first[0] == file else f"{first[0] or shown}:{first[1]}"
        log.grouped(
            ("duplicate", entry.index, first[2]),
            f"duplicate job id (first used at {at})",
            line=line,
            job_id=job_id,
            field="id",
            scope="matrix",
            file=file,
        )


def expand(entry: _Entry, log: ProblemLog) -> Iterator[_Expanded]:
    """(id, pick, matrix combination) for each job a manifest entry stands for."""
    job = entry.job
    job_id, matrix = job["id"], job.get("matrix")
    if not matrix:
        yield job_id, (), {}
        return
    problem = template_problem(job_id, matrix)
    if problem:
        entry.tell(log, ("id",), problem)
        return
    keys = tuple(matrix)
    for expanded_id, pick in expand_matrix(job_id, matrix):
        combo = {key: matrix[key][i] for key, i in zip(keys, pick, strict=True)}
        yield expanded_id, pick, combo


class _Loader:
    """One load: the file, its document, the problems found, the jobs built."""

    def __init__(self, shown: str, path: Path, catalog: Catalog, *, stdin: bool = False) -> None:
        self.shown = "<stdin>" if stdin else shown
        self.path = path
        self.stdin = stdin
        self.folder = Path.cwd() if stdin else path.parent
        self.catalog = catalog
        self.log = ProblemLog(self.shown)
        self.sha256 = ""
        self.local_files: dict[str, tuple[int, int]] = {}  # model schema files, then files inlined
        self.own_models: dict[str, ModelSpec] = {}  # the manifest's own model schemas (``models:``)
        self.default_takes = 1  # defaults.takes: how many separately paid jobs each entry makes
        self.sources: dict[
            str, tuple[InputSource, ModelSpec, int]
        ] = {}  # chained: where, model, take  # chained job id -> where it was written
        self.seen: dict[str, tuple[str | None, int, int]] = {}  # every job id: (file, line, entry index)

    def fail(self, message: str, line: int | None = None, *, too_large: bool = False) -> ManifestInvalid:
        self.log.add(message, line=line)
        error = ManifestTooLarge if too_large or self.log.too_large else ManifestInvalid
        return error(self.log.problems())

    def load(self) -> Manifest:
        text = self.read()
        # Only a manifest that writes "job:" somewhere can hold a reference (a value slipping by in
        # YAML escapes still fails its field's URL pattern): the others skip the search, per input.
        self.log.may_chain = PREFIX in text
        doc = parse_yaml(text)
        del text  # dropped as soon as it is parsed
        self.log.doc = doc
        for problem in doc.problems:
            self.log.at(problem.path, problem.message, line=problem.line, covers_value=problem.covers_value)
        if doc.fatal:
            self.log.too_large = doc.too_large
            raise self.fail_now()
        data = doc.data
        if data is None:
            raise self.fail("the manifest is empty: it needs at least `version: 1` and a list of `jobs`")
        if not isinstance(data, dict):
            raise self.fail(
                f"the top level must be a mapping (version: 1, jobs: …), not {type_word(data)}", line=1
            )
        schema = ManifestSchema.load(self.catalog)
        bad_jobs = schema.check(data, self.log)
        check_name(self.log, data.get("name"))
        own = data["models"] if isinstance(data.get("models"), dict) else {}
        self.own_models = read_own_models(own, self.folder, self.log, self.local_files)
        self.catalog = self.catalog.with_models(self.own_models)
        self.model_problem = ModelCheck(self.catalog, excused=set(own) - set(self.own_models))
        if "jobs" not in data and "jobs_from" not in data:
            self.log.add("no jobs: write a list of `jobs`, or `jobs_from: FILE` (a .csv or .jsonl table)")
        defaults = data.get("defaults", {})
        jobs: list[Any] = data["jobs"] if isinstance(data.get("jobs"), list) else []
        # With a broken defaults block, every job's input would be judged without it: say nothing of them.
        defaults_usable = isinstance(defaults, dict) and isinstance(defaults.get("input", {}), dict)
        default_model = defaults.get("model") if defaults_usable else None
        if isinstance(default_model, str) and self.model_problem(default_model):
            self.log.at(("defaults", "model"), self.model_problem(default_model) or "")
        default_input = defaults.get("input", {}) if defaults_usable else {}
        self.default_takes = takes_of(defaults.get("takes")) if isinstance(defaults, dict) else 1
        lines = doc.lines.get(id(jobs), [])
        entries = [
            _Entry(i, job, lines[i] if i < len(lines) else 0)
            for i, job in enumerate(jobs)
            if isinstance(job, dict)
        ]
        entries += self.table_entries(data.get("jobs_from"), len(jobs), schema, default_model, bad_jobs)
        self.check_size([e for e in entries if e.index not in bad_jobs])
        built = self.build_jobs(entries, bad_jobs, default_model, default_input, check_inputs=defaults_usable)
        refused = refuse_output_dir(self.output_dir(data))
        if refused:
            self.log.at(("output_dir",), f"{show(data.get('output_dir'))} {refused}")
        built = chains.link_chains(built, self.sources, self.seen, self.log, self.catalog)
        if self.log:
            raise self.fail_now(len(built))
        return self.manifest(data, built)

    def table_entries(
        self, jobs_from: Any, first: int, schema: ManifestSchema, default_model: Any, bad_jobs: set[int]
    ) -> list[_Entry]:
        """The rows of the ``jobs_from`` tables as job entries (indexes from ``first`` on); a row whose
        entry breaks the job schema is told at its line and joins ``bad_jobs``."""
        names = (
            [jobs_from] if isinstance(jobs_from, str) else jobs_from if isinstance(jobs_from, list) else []
        )
        entries: list[_Entry] = []
        for n, name in enumerate(names):
            if not isinstance(name, str):
                continue  # the manifest schema says so
            path = ("jobs_from", n) if isinstance(jobs_from, list) else ("jobs_from",)
            rows = read_table_file(
                name,
                path,
                self.folder,
                None if self.stdin else self.shown,
                self.log,
                self.catalog,
                default_model,
            )
            for row in rows:
                index = first + len(entries)
                entry = _Entry(index, row.job, row.line, row)
                for where, message in schema.job_problems(row.job):
                    entry.tell(self.log, where, message)
                    bad_jobs.add(index)
                entries.append(entry)
        return entries

    def fail_now(self, total_jobs: int = 0) -> ManifestInvalid:
        error = ManifestTooLarge if self.log.too_large else ManifestInvalid
        return error(self.log.problems(total_jobs))

    def read(self) -> str:
        if self.stdin:
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
            self.sha256 = hashlib.sha256(data).hexdigest()
            return self.decode(data)
        try:
            with self.path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > MAX_FILE_BYTES:
                    raise self.fail(
                        f"the file is {size / 1e6:.1f} MB; a manifest may be at most "
                        f"{MAX_FILE_BYTES / 1e6:.0f} MB (use matrices, or split it)",
                        too_large=True,
                    )
                data = handle.read(MAX_FILE_BYTES + 1)
                self.sha256 = hashlib.sha256(data).hexdigest()
        except FileNotFoundError:
            raise self.fail("no such file") from None
        except IsADirectoryError:
            raise self.fail("is a folder, not a manifest file") from None
        except (OSError, ValueError) as error:  # ValueError: a NUL in the path
            raise self.fail(f"cannot be read ({getattr(error, 'strerror', None) or error})") from None
        return self.decode(data)

    def decode(self, data: bytes) -> str:
        if len(data) > MAX_FILE_BYTES:
            raise self.fail(
                f"the file is over {MAX_FILE_BYTES / 1e6:.0f} MB, the most a manifest may be", too_large=True
            )
        try:
            if data.startswith((b"\xff\xfe", b"\xfe\xff")):
                return data.decode("utf-16")
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            byte = data[error.start]
            raise self.fail(
                f"the file is not UTF-8 text (byte 0x{byte:02x} on this line): save it as UTF-8", line
            ) from None

    def check_size(self, entries: Sequence[_Entry]) -> None:
        """Refuse a manifest whose matrices (and takes) expand beyond :data:`MAX_JOBS`, before expanding
        anything."""
        sizes = [
            (
                (matrix_size(e.job["matrix"]) if isinstance(e.job.get("matrix"), dict) else 1)
                * takes_of(e.job.get("takes", self.default_takes)),
                e.index,
            )
            for e in entries
        ]
        total = sum(size for size, _ in sizes)
        if total <= MAX_JOBS:
            return
        self.log.too_large = True
        biggest, index = max(sizes)
        if biggest > 1:
            entry = next(e for e in entries if e.index == index)
            entry.tell(
                self.log,
                ("matrix",),
                f"expands to {_count(biggest)} jobs, and the manifest to "
                f"{_count(total)}: more than the {MAX_JOBS:,} a manifest may hold",
            )
        else:
            self.log.at(("jobs",), f"{total:,} jobs: more than the {MAX_JOBS:,} a manifest may hold")
        raise self.fail_now()

    def build_jobs(
        self,
        entries: Sequence[_Entry],
        bad_jobs: set[int],
        default_model: Any,
        default_input: dict[str, Any],
        *,
        check_inputs: bool,
    ) -> list[Job]:
        checker = InputChecker(self.log)
        files = LocalFiles(self.folder, read=self.local_files)  # the schema files are in it already
        inherited: dict[str, dict[str, Any]] = {}  # model id -> the defaults.input fields it has
        seen = self.seen
        built: list[Job] = []
        for entry in entries:
            index, job, line = entry.index, entry.job, entry.line
            if index in bad_jobs:  # its problems are told; its id still counts for duplicates
                job_id = job.get("id")
                if isinstance(job_id, str) and SAFE_ID.fullmatch(job_id) and "matrix" not in job:
                    note_id(self.log, self.shown, job_id, entry, seen)
                continue
            model = job.get("model", default_model)
            if model is None and check_inputs:
                entry.tell(self.log, (), "no model: set `model` on the job or in `defaults`")
            elif "model" in job and self.model_problem(model):
                entry.tell(self.log, ("model",), self.model_problem(model) or "")
            spec = self.catalog.get(model) if isinstance(model, str) and check_inputs else None
            own = job.get("input") or {}
            keys = tuple(job.get("matrix") or ())
            takes = takes_of(job.get("takes", self.default_takes))
            for expanded_id, pick, combo in expand(entry, self.log):
                ids = take_ids(expanded_id, takes)
                job_id = ids[-1]  # the longest: if it is safe, every take's is
                if not SAFE_ID.fullmatch(job_id):
                    message = (
                        f"{show(job_id, 140)} is not a safe job id: ids are 1-128 letters, digits, "
                        "'.', '_' or '-', starting with a letter or digit"
                    )
                    if len(job_id) > 128 and SAFE_ID.fullmatch(job_id[:128]):
                        message = (
                            f"the expanded id {show(job_id)} is longer than 128 characters: shorten "
                            "the id or use an id template such as shot-{duration}"
                        )
                    where = entry.where
                    self.log.grouped(
                        ("id", index),
                        message,
                        line=where[1] if where else line,
                        job_id=None,
                        field="id" if where else f"jobs[{index}].id",
                        scope="",
                        file=where[0] if where else None,
                    )
                    continue
                for one in ids:
                    note_id(self.log, self.shown, one, entry, seen)
                if spec is None:
                    continue
                base = inherited.get(spec.model_id)
                if base is None:
                    base = inherited[spec.model_id] = fields_for(spec, default_input)
                input = {**base, **own, **combo} if combo else {**base, **own}
                input, file_problems = files.inline_input(input, spec.file_fields, spec.file_checks)
                refs, ref_problems = (
                    chains.find_refs(input, spec.file_fields)
                    if spec.file_fields and self.log.may_chain
                    else ((), [])
                )
                checked = chains.with_placeholders(input, refs) if refs else input
                source = None
                if file_problems or ref_problems or not checker.is_valid(spec, checked):
                    source = InputSource(index, base, own, keys, pick, entry.where)
                    checker.explain(ids[0], spec, checked, source, [*file_problems, *ref_problems])
                if refs:
                    source = source or InputSource(index, base, own, keys, pick, entry.where)
                    self.sources.update({one: (source, spec, take) for take, one in enumerate(ids, start=1)})
                job_line = entry.row.line if entry.row else line
                for take, one in enumerate(ids, start=1):
                    built.append(
                        Job(
                            one, spec.model_id, input, job_line, fingerprint(spec.model_id, input, take), refs
                        )
                    )
        check_defaults_used(self.log, self.catalog, default_input, inherited)
        return built

    def name(self, data: dict[str, Any]) -> str:
        name = data.get("name")
        return name if isinstance(name, str) and name else ("stdin" if self.stdin else self.path.stem)

    def output_dir(self, data: dict[str, Any]) -> Path:
        """The output folder the manifest names: ``output_dir`` (relative to its folder), else out/<name>."""
        output = data.get("output_dir")
        if not isinstance(output, str) or not output:
            return Path(os.path.abspath(self.folder / "out" / self.name(data)))
        return Path(os.path.abspath(self.folder / os.path.expanduser(output)))

    def manifest(self, data: dict[str, Any], jobs: list[Job]) -> Manifest:
        budget = data.get("budget_usd")
        return Manifest(
            path=self.path,
            name=self.name(data),
            output_dir=self.output_dir(data),
            jobs=jobs,
            budget_usd=float(budget) if budget is not None else None,
            concurrency=int(data["concurrency"]) if data.get("concurrency") is not None else None,
            raw_settings={key: data[key] for key in SETTINGS if key in data},
            source=Source(
                self.sha256,
                tuple(sorted((p, *st) for p, st in {**self.log.read_files, **self.local_files}.items())),
                stdin=self.stdin,
            ),
            models=self.own_models,
        )
