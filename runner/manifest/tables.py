"""Jobs from a table: ``jobs_from: shots.csv`` (or a ``.jsonl``, or a list of such files) adds one job per
row, for pipelines that keep their shots in a spreadsheet or write them from a script.

* **CSV**: a header row, then one job per row. The column ``id`` is required, ``model`` is optional
  (else ``defaults.model``), and every other column is an input field. A cell is text; it becomes the
  type its field's schema asks for (:func:`convert`): ``5`` an integer, ``2.5`` a number, ``true`` /
  ``false`` / ``yes`` / ``no`` a boolean, ``a.png|b.png`` or ``["a.png", "b.png"]`` a list (each item
  converted in turn), ``{…}`` an object. An empty cell leaves the field out, so ``defaults.input``
  applies. A cell that cannot be converted stays text, and the model's schema says what is wrong.
* **JSONL**: one JSON object per line, with ``id``, optional ``model`` and ``input`` (and anything else
  a job in YAML may have, such as ``matrix``); blank lines are skipped.

Either way a row is then a job like one written in the manifest: defaults, matrices and every check
apply, and a problem is told at the row's line in the table (``shots.csv:7 job shot-6: input.duration:
…``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog.models import Catalog
from ..errors import Problem
from .validate import DocPath, ProblemLog

_INTEGER = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
# Tried in this order when a field's schema allows several types: text is what a cell already is.
_TYPE_ORDER = ("integer", "number", "boolean", "array", "object", "string")
SUFFIXES = (".csv", ".jsonl")
MAX_TABLE_BYTES = 50 * 1000 * 1000  # as a manifest


@dataclass(frozen=True)
class Row:
    """One job read from a table: the file as problems name it, the line its row starts on, the job."""

    file: str
    line: int
    job: dict[str, Any]


SchemaFor = Callable[[Any], Mapping[str, Any] | None]
"""The input schema of a model id (None: unknown model), to convert CSV cells to its field types."""


def read_table(
    text: str, shown: str, suffix: str, schema_for: SchemaFor, default_model: Any
) -> tuple[list[Row], list[Problem]]:
    """The rows of a ``.csv`` or ``.jsonl`` file's text, and what is wrong with it."""
    if suffix == ".jsonl":
        return _read_jsonl(text, shown)
    return _read_csv(text, shown, schema_for, default_model)


def _read_csv(
    text: str, shown: str, schema_for: SchemaFor, default_model: Any
) -> tuple[list[Row], list[Problem]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[Problem] = []
    try:
        header = next(reader, None)
    except csv.Error as error:
        return [], [Problem(shown, reader.line_num, f"not a CSV table: {error}")]
    if header is None:
        return [], [Problem(shown, None, "is empty: it needs a header row naming `id` and the input fields")]
    names = [name.strip() for name in header]
    seen: set[str] = set()
    for name in names:
        if not name:
            problems.append(Problem(shown, 1, "the header has an empty column name"))
        elif name in seen:
            problems.append(Problem(shown, 1, f"the header names the column {name!r} twice"))
        seen.add(name)
    if "id" not in names:
        problems.append(Problem(shown, 1, f"the header has no `id` column (columns: {', '.join(names)})"))
    if problems:
        return [], problems
    rows: list[Row] = []
    line = reader.line_num + 1
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as error:
            problems.append(Problem(shown, line, f"not a CSV row: {error}"))
            break
        if cells is None:
            break
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(names):
            problems.append(
                Problem(shown, start, f"the row has {len(cells)} cells, but the header names {len(names)}")
            )
            continue
        values = dict(zip(names, cells, strict=False))
        job_id, model = values.pop("id", ""), values.pop("model", "").strip()
        job: dict[str, Any] = {"id": job_id.strip()}
        if model:
            job["model"] = model
        schema = schema_for(model or default_model) or {}
        fields = schema.get("properties")
        fields = fields if isinstance(fields, Mapping) else {}
        job["input"] = {
            name: convert(cell, fields.get(name) or {}) for name, cell in values.items() if cell.strip() != ""
        }
        rows.append(Row(shown, start, job))
    return rows, problems


def convert(cell: str, schema: Mapping[str, Any]) -> Any:
    """A CSV cell as the value a field's schema asks for; the text itself when it is not one."""
    types = schema.get("type")
    wanted = [types] if isinstance(types, str) else list(types) if isinstance(types, list) else []
    if not wanted and isinstance(schema.get("enum"), list):  # an enum of numbers, say
        wanted = list({_json_type(v) for v in schema["enum"]})
    text = cell.strip()
    for kind in _TYPE_ORDER:
        if kind not in wanted:
            continue
        if kind == "string":
            return cell
        value = _as(kind, text, schema)
        if value is not None:
            return value
    return cell


def _as(kind: str, text: str, schema: Mapping[str, Any]) -> Any:
    """``text`` as a value of JSON type ``kind``, or None when it is not one."""
    if kind == "integer":
        return int(text) if _INTEGER.fullmatch(text) else None
    if kind == "number":
        if _INTEGER.fullmatch(text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    if kind == "boolean":
        word = text.lower()
        return True if word in _TRUE else False if word in _FALSE else None
    if kind == "array":
        if text.startswith("["):
            value = _json(text)
            return value if isinstance(value, list) else None
        items = schema.get("items")
        item_schema = items if isinstance(items, Mapping) else {}
        return [convert(part.strip(), item_schema) for part in text.split("|")]
    if kind == "object" and text.startswith("{"):
        value = _json(text)
        return value if isinstance(value, dict) else None
    return None


def _json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return None


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} is not a number JSON allows")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def _read_jsonl(text: str, shown: str) -> tuple[list[Row], list[Problem]]:
    rows: list[Row] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        except json.JSONDecodeError as error:
            problems.append(Problem(shown, number, f"not a JSON object: {error.msg} (column {error.colno})"))
            continue
        except ValueError as error:
            problems.append(Problem(shown, number, f"not a usable JSON object: {error}"))
            continue
        if not isinstance(value, dict):
            problems.append(
                Problem(
                    shown,
                    number,
                    f"each line must be a JSON object with `id`, optional `model` and `input`, "
                    f"not {type(value).__name__}",
                )
            )
            continue
        rows.append(Row(shown, number, value))
    return rows, problems


def table_kind(path: Path) -> str | None:
    """``.csv`` or ``.jsonl`` for a table file's name; None for any other."""
    suffix = path.suffix.lower()
    return suffix if suffix in SUFFIXES else None


def read_table_file(
    name: str,
    doc_path: DocPath,
    folder: Path,
    manifest_shown: str | None,
    log: ProblemLog,
    catalog: Catalog,
    default_model: Any,
) -> list[Row]:
    """The rows of the table ``name`` (as ``jobs_from`` at ``doc_path`` writes it, relative to ``folder``);
    its problems go into ``log``, named by the table's path beside the manifest's (``manifest_shown``;
    None: the manifest came from standard input)."""
    kind = table_kind(Path(name))
    if kind is None:
        log.at(doc_path, f"{name!r} is not a .csv or .jsonl file (its name says which it is)")
        return []
    full = Path(os.path.normpath(folder / os.path.expanduser(name)))
    shown = os.path.normpath(os.path.join(os.path.dirname(manifest_shown), name)) if manifest_shown else name
    log.tables.append(shown)
    try:
        with full.open("rb") as handle:
            st = os.fstat(handle.fileno())
            data = handle.read(MAX_TABLE_BYTES + 1)
    except OSError as error:
        log.at(doc_path, f"{name}: cannot be read ({error.strerror or error}; looked for {full})")
        return []
    if len(data) > MAX_TABLE_BYTES:
        log.at(doc_path, f"{name}: more than {MAX_TABLE_BYTES / 1e6:.0f} MB, the most a table may be")
        return []
    log.read_files[str(full)] = (st.st_size, st.st_mtime_ns)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        log.add("the file is not UTF-8 text: save it as UTF-8", file=shown, line=line)
        return []

    def schema_for(model: Any) -> dict[str, Any] | None:
        spec = catalog.get(model) if isinstance(model, str) else None
        return dict(spec.schema) if spec is not None else None

    log.may_chain |= "job:" in text
    rows, problems = read_table(text, shown, kind, schema_for, default_model)
    for problem in problems:
        log.add(problem.message, file=problem.file, line=problem.line)
    return rows
