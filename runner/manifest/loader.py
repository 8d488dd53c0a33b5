"""The manifest: a YAML file listing the jobs of a batch, read into :class:`Manifest` and its :class:`Job` s.

:func:`load_manifest` is the one entry point. It reads the file (capped in size), parses it with
lines (:mod:`runner.yamldoc`), checks it against the manifest schema, reads its own model schemas
(:mod:`.own_models`), expands matrices into jobs with stable, file-safe ids, builds each job's input
(defaults, then the job's input, then its matrix combination; local images inlined by
:mod:`runner.inputs`), and checks every input against its model (:mod:`runner.validate`). It
either returns a manifest whose every job can be sent as is, or raises
:class:`~runner.errors.ManifestInvalid` listing all the problems, one line each; no other exception
escapes for any file content. The format is documented in ``docs/manifest.md``.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.models import Catalog, ModelSpec
from ..catalog.schema import show, suggest, type_word
from ..errors import ManifestInvalid, ManifestTooLarge
from .inputs import LocalFiles
from .own_models import read_own_models
from .validate import (
    SAFE_ID,
    InputChecker,
    InputSource,
    ManifestSchema,
    ModelCheck,
    ProblemLog,
)
from .yamldoc import parse_yaml

MAX_FILE_BYTES = 50 * 1000 * 1000
MAX_JOBS = 200_000
SETTINGS = ("description",)  # optional top-level keys kept in Manifest.raw_settings

_Expanded = tuple[str, tuple[int, ...], dict[str, Any]]  # id, pick, matrix combination
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_TOKEN = 32


@dataclass(frozen=True, slots=True)
class Job:
    """One request to send: its model, its exact input, and where the manifest wrote it."""

    id: str
    model: str
    input: dict[str, Any]
    line: int
    fingerprint: str


@dataclass(frozen=True)
class Source:
    """What a manifest was built from: its file's sha256, and each local file inlined or named as a
    model schema (absolute path, size, mtime in ns). The same source and schemas give the same jobs."""

    sha256: str
    local_files: tuple[tuple[str, int, int], ...] = ()


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


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(model: str, input: dict[str, Any], take: int = 1) -> str:
    """sha256 of the canonical JSON of the request: equal fingerprints are the same paid request. A take
    past the first (``takes:``) is another paid request of the same body, so its number is part of it."""
    request: dict[str, Any] = {"model": model, "input": input}
    if take > 1:
        request["take"] = take
    canonical = _CANONICAL.encode(request)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def load_manifest(path: str | Path, catalog: Catalog | None = None) -> Manifest:
    """Read, expand and check a manifest; :class:`ManifestInvalid` lists everything wrong with it."""
    shown = os.fspath(path)
    absolute = Path(os.path.abspath(shown))
    catalog = catalog or Catalog.load()
    with _gc_paused():
        return _Loader(shown, absolute, catalog).load()


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


def matrix_size(matrix: dict[str, list[Any]]) -> int:
    """How many jobs a matrix expands into."""
    return math.prod(len(values) for values in matrix.values())


def value_tokens(values: list[Any]) -> list[str]:
    """How each value of one matrix field appears in ids: ``16:9`` -> ``16x9``, ``5`` -> ``5``.

    Values that are long, structured, or would collide with a sibling once made file-safe appear as
    their 1-based position in the list instead, so ids stay short and unique.
    """
    tokens = [_token(value) for value in values]
    if any(t is None for t in tokens) or len(set(tokens)) != len(tokens):
        return [str(i) for i in range(1, len(values) + 1)]
    return tokens  # type: ignore[return-value]


def _token(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = _UNSAFE_CHARS.sub("_", value.replace(":", "x")).strip("_")
    else:
        return None
    return text if 0 < len(text) <= _MAX_TOKEN and not _UNSAFE_CHARS.search(text) else None


def expand_matrix(job_id: str, matrix: dict[str, list[Any]]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Each combination's id and pick (the index of each field's value), first field varying slowest.

    A plain id is extended field by field (``hero--duration-5--aspect_ratio-16x9``); an id with
    ``{field}`` placeholders is a template (``hero-{duration}s-{aspect_ratio}`` -> ``hero-5s-16x9``).
    """
    keys = list(matrix)
    tokens = [value_tokens(matrix[key]) for key in keys]
    parts = _PLACEHOLDER.split(job_id)  # literal, name, literal, name, ..., literal
    for pick in itertools.product(*(range(len(matrix[key])) for key in keys)):
        chosen = {key: tokens[k][i] for k, (key, i) in enumerate(zip(keys, pick, strict=True))}
        if len(parts) == 1:
            yield job_id + "".join(f"--{key}-{token}" for key, token in chosen.items()), pick
        else:
            yield "".join(chosen[p] if n % 2 else p for n, p in enumerate(parts)), pick


def refuse_output_dir(output_dir: Path) -> str | None:
    """Why ``output_dir`` cannot hold a run's outputs (the filesystem root or the home folder itself:
    a job id would become a folder beside the user's own), or ``None``."""
    resolved = Path(os.path.abspath(os.path.expanduser(output_dir)))
    if resolved == Path(resolved.anchor):
        return "is the filesystem root; give the outputs a folder of their own"
    if resolved == Path(os.path.abspath(os.path.expanduser("~"))):
        return "is your home folder itself; give the outputs a folder of their own"
    return None


def take_ids(job_id: str, takes: int) -> list[str]:
    """The ids of a job's takes: the id itself for one, else ``<id>--take-1`` … ``<id>--take-N``."""
    return [job_id] if takes == 1 else [f"{job_id}--take-{n}" for n in range(1, takes + 1)]


def _takes(value: Any) -> int:
    """A ``takes`` value the schema let through, else 1 (a bad one is reported by the schema)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100 else 1


def template_problem(job_id: str, matrix: dict[str, list[Any]]) -> str | None:
    """What is wrong with an id template for this matrix, if anything."""
    if "{" not in job_id and "}" not in job_id:
        return None
    parts = _PLACEHOLDER.split(job_id)
    names, literals = parts[1::2], parts[0::2]
    if any("{" in text or "}" in text for text in literals):
        return f"{job_id!r} has unbalanced braces"
    unknown = [n for n in names if n not in matrix]
    if unknown:
        return f"{{{unknown[0]}}} in the id template is not a matrix field (matrix: {', '.join(matrix)})"
    missing = [key for key in matrix if key not in names]
    if missing:
        return (
            f"the id template must name every matrix field so ids are unique; add "
            f"{', '.join('{' + key + '}' for key in missing)}"
        )
    return None


def fields_for(spec: ModelSpec, default_input: dict[str, Any]) -> dict[str, Any]:
    """The defaults.input fields a model has: shared defaults serve jobs of several models."""
    properties = spec.schema.get("properties")
    if spec.schema.get("additionalProperties", True) is not False or not isinstance(properties, dict):
        return default_input
    return {name: value for name, value in default_input.items() if name in properties}


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}"


class _Loader:
    """One load: the file, its document, the problems found, the jobs built."""

    def __init__(self, shown: str, path: Path, catalog: Catalog) -> None:
        self.shown = shown
        self.path = path
        self.folder = path.parent
        self.catalog = catalog
        self.log = ProblemLog(shown)
        self.sha256 = ""
        self.local_files: dict[str, tuple[int, int]] = {}
        self.own_models: dict[str, ModelSpec] = {}  # the manifest's own model schemas (``models:``)

    def fail(self, message: str, line: int | None = None, *, too_large: bool = False) -> ManifestInvalid:
        self.log.add(message, line=line)
        error = ManifestTooLarge if too_large or self.log.too_large else ManifestInvalid
        return error(self.log.problems())

    def load(self) -> Manifest:
        doc = parse_yaml(self.read())  # the text is dropped as soon as it is parsed
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
        bad_jobs = ManifestSchema.load(self.catalog).check(data, self.log)
        self.check_name(data.get("name"))
        own = data["models"] if isinstance(data.get("models"), dict) else {}
        self.own_models = read_own_models(own, self.folder, self.log, self.local_files)
        self.catalog = self.catalog.with_models(self.own_models)
        self.model_problem = ModelCheck(self.catalog, excused=set(own) - set(self.own_models))
        defaults = data.get("defaults", {})
        jobs: list[Any] = data["jobs"] if isinstance(data.get("jobs"), list) else []
        # With a broken defaults block, every job's input would be judged without it: say nothing of them.
        defaults_usable = isinstance(defaults, dict) and isinstance(defaults.get("input", {}), dict)
        default_model = defaults.get("model") if defaults_usable else None
        if isinstance(default_model, str) and self.model_problem(default_model):
            self.log.at(("defaults", "model"), self.model_problem(default_model) or "")
        default_input = defaults.get("input", {}) if defaults_usable else {}
        default_takes = _takes(defaults.get("takes")) if isinstance(defaults, dict) else 1
        good = [(i, job) for i, job in enumerate(jobs) if isinstance(job, dict) and i not in bad_jobs]
        self.check_size(good, default_takes)
        built = self.build_jobs(
            jobs,
            bad_jobs,
            default_model,
            default_input,
            doc.lines.get(id(jobs), []),
            check_inputs=defaults_usable,
            default_takes=default_takes,
        )
        refused = refuse_output_dir(self.output_dir(data))
        if refused:
            self.log.at(("output_dir",), f"{show(data.get('output_dir'))} {refused}")
        if self.log:
            raise self.fail_now(len(built))
        return self.manifest(data, built)

    def check_name(self, name: Any) -> None:
        # The schema's pattern lets "name\n" through (Python's $ matches before a final newline).
        if isinstance(name, str) and SAFE_ID.match(name) and not SAFE_ID.fullmatch(name):
            self.log.at(
                ("name",),
                f"{show(name)} is not a usable name: use 1-128 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit",
            )

    def fail_now(self, total_jobs: int = 0) -> ManifestInvalid:
        error = ManifestTooLarge if self.log.too_large else ManifestInvalid
        return error(self.log.problems(total_jobs))

    def read(self) -> str:
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

    def check_size(self, sources: list[tuple[int, dict[str, Any]]], default_takes: int = 1) -> None:
        """Refuse a manifest whose matrices (and takes) expand beyond :data:`MAX_JOBS`, before expanding
        anything."""
        sizes = [
            (
                (matrix_size(job["matrix"]) if isinstance(job.get("matrix"), dict) else 1)
                * _takes(job.get("takes", default_takes)),
                index,
            )
            for index, job in sources
        ]
        total = sum(size for size, _ in sizes)
        if total <= MAX_JOBS:
            return
        self.log.too_large = True
        biggest, index = max(sizes)
        if biggest > 1:
            self.log.at(
                ("jobs", index, "matrix"),
                f"expands to {_count(biggest)} jobs, and the manifest to "
                f"{_count(total)}: more than the {MAX_JOBS:,} a manifest may hold",
            )
        else:
            self.log.at(("jobs",), f"{total:,} jobs: more than the {MAX_JOBS:,} a manifest may hold")
        raise self.fail_now()

    def build_jobs(
        self,
        jobs: list[Any],
        bad_jobs: set[int],
        default_model: Any,
        default_input: dict[str, Any],
        job_lines: list[int],
        *,
        check_inputs: bool,
        default_takes: int = 1,
    ) -> list[Job]:
        checker = InputChecker(self.log)
        files = LocalFiles(self.folder, read=self.local_files)  # the schema files are in it already
        inherited: dict[str, dict[str, Any]] = {}  # model id -> the defaults.input fields it has
        seen: dict[str, tuple[int, int]] = {}  # id -> (line, index of its job in the manifest)
        built: list[Job] = []
        for index, job in enumerate(jobs):
            if not isinstance(job, dict):
                continue
            line = job_lines[index] if index < len(job_lines) else 0
            if index in bad_jobs:  # its problems are told; its id still counts for duplicates
                job_id = job.get("id")
                if isinstance(job_id, str) and SAFE_ID.fullmatch(job_id) and "matrix" not in job:
                    self.note_id(job_id, line, index, seen)
                continue
            model = job.get("model", default_model)
            if model is None and check_inputs:
                self.log.at(("jobs", index), "no model: set `model` on the job or in `defaults`")
            elif "model" in job and self.model_problem(model):
                self.log.at(("jobs", index, "model"), self.model_problem(model) or "")
            spec = self.catalog.get(model) if isinstance(model, str) and check_inputs else None
            own = job.get("input") or {}
            keys = tuple(job.get("matrix") or ())
            takes = _takes(job.get("takes", default_takes))
            for expanded_id, pick, combo in self.expand(index, job):
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
                    self.log.grouped(
                        ("id", index), message, line=line, job_id=None, field=f"jobs[{index}].id", scope=""
                    )
                    continue
                for one in ids:
                    self.note_id(one, line, index, seen)
                if spec is None:
                    continue
                base = inherited.get(spec.model_id)
                if base is None:
                    base = inherited[spec.model_id] = fields_for(spec, default_input)
                input = {**base, **own, **combo} if combo else {**base, **own}
                input, file_problems = files.inline_input(input, spec.file_fields, spec.file_checks)
                if file_problems or not checker.is_valid(spec, input):
                    source = InputSource(index, base, own, keys, pick)
                    checker.explain(ids[0], spec, input, source, file_problems)
                for take, one in enumerate(ids, start=1):
                    built.append(
                        Job(one, spec.model_id, input, line, fingerprint(spec.model_id, input, take))
                    )
        self.check_defaults_used(default_input, inherited)
        return built

    def check_defaults_used(
        self, default_input: dict[str, Any], inherited: dict[str, dict[str, Any]]
    ) -> None:
        """A defaults.input field that no job's model has is a typo, not a field for other models."""
        if not inherited:
            return
        known = sorted(
            {
                name
                for spec in map(self.catalog.get, inherited)
                if spec
                for name in spec.schema.get("properties", {})
            }
        )
        for name in default_input:
            if not any(name in fields for fields in inherited.values()):
                hint = suggest(name, known)
                self.log.at(
                    ("defaults", "input", name),
                    f"no job's model has this field{hint} (known: {', '.join(known)})",
                )

    def note_id(self, job_id: str, line: int, index: int, seen: dict[str, tuple[int, int]]) -> None:
        first = seen.setdefault(job_id, (line, index))
        if first[1] != index:
            message = f"duplicate job id (first used at line {first[0]})"
            self.log.grouped(
                ("duplicate", index, first[1]), message, line=line, job_id=job_id, field="id", scope="matrix"
            )

    def expand(self, index: int, job: dict[str, Any]) -> Iterator[_Expanded]:
        """(id, pick, matrix combination) for each job a manifest entry stands for."""
        job_id, matrix = job["id"], job.get("matrix")
        if not matrix:
            yield job_id, (), {}
            return
        problem = template_problem(job_id, matrix)
        if problem:
            self.log.at(("jobs", index, "id"), problem)
            return
        keys = tuple(matrix)
        for expanded_id, pick in expand_matrix(job_id, matrix):
            combo = {key: matrix[key][i] for key, i in zip(keys, pick, strict=True)}
            yield expanded_id, pick, combo

    def output_dir(self, data: dict[str, Any]) -> Path:
        """The output folder the manifest names: ``output_dir`` (relative to its folder), else out/<name>."""
        output = data.get("output_dir")
        if not isinstance(output, str) or not output:
            name = data.get("name")
            return Path(
                os.path.abspath(
                    self.folder / "out" / (name if isinstance(name, str) and name else self.path.stem)
                )
            )
        return Path(os.path.abspath(self.folder / os.path.expanduser(output)))

    def manifest(self, data: dict[str, Any], jobs: list[Job]) -> Manifest:
        name = data.get("name") or self.path.stem
        budget = data.get("budget_usd")
        return Manifest(
            path=self.path,
            name=name,
            output_dir=self.output_dir(data),
            jobs=jobs,
            budget_usd=float(budget) if budget is not None else None,
            concurrency=int(data["concurrency"]) if data.get("concurrency") is not None else None,
            raw_settings={key: data[key] for key in SETTINGS if key in data},
            source=Source(self.sha256, tuple(sorted((p, *st) for p, st in self.local_files.items()))),
            models=self.own_models,
        )
