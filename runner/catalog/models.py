"""The models the runner knows: each one's input schema and the facts beside it (output kind, price).

Where a model's schema comes from, the first that has it wins:

1. a schema file the manifest names for it (``models:`` in the manifest; :meth:`Catalog.with_models`);
2. the synced copy of RunComfy's live catalog (``runcomfy-batch models sync``; :mod:`.synced`);
3. the bundled snapshot: a hand-checked file in ``schemas/models/`` over the catalog snapshot
   ``schemas/catalog/models.json`` (built by :mod:`.build` from a saved catalog answer).

Every schema is JSON Schema 2020-12 written the project's way: ``x-model-id`` names the model,
``x-file`` marks the fields that take files (so local paths can be turned into data URIs),
``x-checks`` says in data what a schema cannot (a sum of durations, a file's size or aspect ratio),
``x-output`` the kinds of file it makes and ``x-price`` / ``x-price-unit`` what the catalog says of
its price. No model is named in code.

Loading is one read and one parse of the snapshot (a few ms for 120 models); nothing is checked or
compiled then. The bundled schemas are checked by the tests, synced and manifest-supplied ones when
they are read, and each model's validators are built the first time one of its inputs is checked.
The schemas live at the top of the repository and ship inside the wheel as ``runner/_schemas``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .schema import Schema, describe

if TYPE_CHECKING:  # .synced imports this module
    from .synced import Synced

SNAPSHOT = Path("catalog") / "models.json"
# What the catalog knows of a model beside its input: a hand-checked schema takes these from it.
FACTS = ("x-output", "x-categories", "x-price-unit", "x-price")
# Input fields that say how many files one request makes (the catalog has no word for it).
OUTPUT_COUNT_FIELDS = ("num_images", "max_images", "num_outputs", "num_videos", "n", "batch_size")


def schema_dir() -> Path:
    """Where the bundled schemas are: inside the installed package, or at the repository's top."""
    packaged = Path(__file__).parent.parent / "_schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "schemas"


@dataclass(frozen=True)
class InputProblem:
    """One thing wrong with a job's input; ``path`` is relative to the input (``images[5]``)."""

    path: str
    message: str


def format_path(parts: Iterator[Any] | list[Any]) -> str:
    """``['images', 5, 'x']`` -> ``images[5].x``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_COMPARE = {
    "lt": lambda got, bound: got < bound,
    "le": lambda got, bound: got <= bound,
    "gt": lambda got, bound: got > bound,
    "ge": lambda got, bound: got >= bound,
    "eq": lambda got, bound: got == bound,
}


@dataclass(frozen=True)
class FileCheck:
    """A rule the catalog states about the files of one field (``x-checks`` with a ``measure``):
    ``file_size_mb`` (10^6 bytes), ``aspect_ratio`` (width / height), ``width_px`` or ``height_px``,
    each bounded by ``lt``, ``le``, ``gt``, ``ge`` or ``eq``."""

    field: str
    measure: str
    bounds: tuple[tuple[str, float], ...]
    message: str

    def problem(self, facts: Mapping[str, float]) -> str | None:
        """Why a file with these facts breaks the rule, or None (also when the measure is unknown)."""
        got = facts.get(self.measure)
        if got is None or all(_COMPARE[op](got, bound) for op, bound in self.bounds):
            return None
        return f"{self.message} (it is {got:g})"


@dataclass(frozen=True)
class ModelSpec:
    """One model: its id, its input schema, the checks a schema cannot express, and where it came
    from (``origin``: ``manifest``, ``synced``, ``hand-checked`` or ``bundled``; ``source``: the file)."""

    model_id: str
    schema: Mapping[str, Any]
    source: Path
    origin: str = "bundled"

    @cached_property
    def input_schema(self) -> Schema:
        """The input schema's validators, built when the model's first input is checked."""
        return Schema(self.schema)

    @cached_property
    def defaults(self) -> dict[str, Any]:
        """Top-level input defaults, as the API applies them."""
        return {k: v["default"] for k, v in self._properties.items() if "default" in v}

    @cached_property
    def _properties(self) -> Mapping[str, Any]:
        properties = self.schema.get("properties")
        return {k: v for k, v in properties.items() if isinstance(v, Mapping)} if properties else {}

    @property
    def family(self) -> str:
        """The model's family: the first two parts of its id (``kling/kling-video-o3``)."""
        return "/".join(self.model_id.split("/")[:2])

    @cached_property
    def output_kinds(self) -> tuple[str, ...]:
        """The kinds of file a request makes (``video``, ``image``, ``audio``), as its categories say."""
        return self._words("x-output")

    @property
    def output_kind(self) -> str | None:
        """The kind of file a request makes, or None where the catalog does not say."""
        return self.output_kinds[0] if self.output_kinds else None

    @property
    def categories(self) -> tuple[str, ...]:
        """The catalog's categories (``image-to-video``…)."""
        return self._words("x-categories")

    def _words(self, key: str) -> tuple[str, ...]:
        found = self.schema.get(key)
        return tuple(w for w in found if isinstance(w, str)) if isinstance(found, list) else ()

    @property
    def price_unit(self) -> str | None:
        """``second`` or ``output`` where the catalog or a price rule says; None where nothing does."""
        price = self.schema.get("x-price")
        unit = self.schema.get("x-price-unit") or (price.get("unit") if isinstance(price, Mapping) else None)
        return unit if unit in ("second", "output") else None

    @cached_property
    def outputs_field(self) -> str | None:
        """The input field that sets how many files one request makes (``num_images``…), if any."""
        for name in OUTPUT_COUNT_FIELDS:
            if self._properties.get(name, {}).get("type") == "integer":
                return name
        return None

    @cached_property
    def max_outputs(self) -> int:
        """The most files one request can make: the bound of :attr:`outputs_field`, else 1."""
        if self.outputs_field is None:
            return 1
        prop = self._properties[self.outputs_field]
        most = prop.get("maximum", prop.get("default", 1))
        return int(most) if isinstance(most, int | float) and most >= 1 else 1

    def outputs_for(self, input: Mapping[str, Any]) -> int:
        """How many files a request with this input makes (what it asks for, else the default, else 1)."""
        if self.outputs_field is None:
            return 1
        asked = input.get(self.outputs_field, self.defaults.get(self.outputs_field, 1))
        return int(asked) if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 1 else 1

    @cached_property
    def file_fields(self) -> dict[str, str]:
        """Input fields that take files: name -> kind (``image``, ``video`` or ``audio``)."""
        out: dict[str, str] = {}
        for name, prop in self._properties.items():
            items = prop.get("items")
            kind = prop.get("x-file") or (items.get("x-file") if isinstance(items, Mapping) else None)
            if isinstance(kind, str):
                out[name] = kind
        return out

    @cached_property
    def file_checks(self) -> dict[str, tuple[FileCheck, ...]]:
        """The rules the catalog states about each file field's files: field name -> its checks."""
        out: dict[str, list[FileCheck]] = {}
        for check in self._x_checks:
            name, measure = check.get("field"), check.get("measure")
            if not isinstance(name, str) or not isinstance(measure, str):
                continue
            bounds = tuple(
                (op, float(check[op])) for op in _COMPARE if isinstance(check.get(op), int | float)
            )
            message = str(check.get("message") or f"{measure} is out of bounds")
            out.setdefault(name, []).append(FileCheck(name, measure, bounds, message))
        return {name: tuple(checks) for name, checks in out.items()}

    @cached_property
    def _x_checks(self) -> list[Mapping[str, Any]]:
        found = self.schema.get("x-checks")
        return [c for c in found if isinstance(c, Mapping)] if isinstance(found, list) else []

    def check_input(self, value: Any) -> list[InputProblem]:
        """Every problem with an input object (none, in about a µs, for a valid one): the schema
        first, then the ``x-checks``."""
        errors = self.input_schema.errors(value)
        if errors:
            return [
                InputProblem(format_path(list(path)), message)
                for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))
                for path, message in describe(error, "input")
            ]
        if not self._sum_checks or not isinstance(value, dict):
            return []
        return self._sums_that_differ(value)

    @cached_property
    def _sum_checks(self) -> list[tuple[str, str, str, str]]:
        """The ``x-checks`` saying a list's items add up to a field: (list, item field, field, message)."""
        out = []
        for check in self._x_checks:
            if "sum_of" in check:
                array_name, _, item_field = str(check["sum_of"]).partition("[].")
                out.append((array_name, item_field, str(check["equals"]), str(check["message"])))
        return out

    def _sums_that_differ(self, value: dict[str, Any]) -> list[InputProblem]:
        problems = []
        for array_name, item_field, total_field, message in self._sum_checks:
            items = value.get(array_name)
            if not items:
                continue
            total = value.get(total_field, self.defaults.get(total_field))
            got = sum(item.get(item_field, 0) for item in items)
            if got != total:
                problems.append(InputProblem(array_name, message.format(sum=got, total=total)))
        return problems


@dataclass
class Catalog:
    """Every model the runner can validate and price, keyed by model id.

    ``read_on`` is the date of the bundled snapshot; ``synced`` says when and from where the live
    catalog was last synced (None: never); ``unlisted`` holds bundled models a complete sync no
    longer found (they are not offered, and an unknown-model message says why)."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    root: Path = field(default_factory=schema_dir)
    read_on: str = "unknown"
    synced: Synced | None = None
    unlisted: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()

    @classmethod
    def load(cls, root: Path | None = None, *, use_cache: bool = True) -> Catalog:
        """The bundled models, then (unless ``use_cache`` is false) the synced cache over them."""
        root = root or schema_dir()
        catalog = cls(root=root)
        snapshot_path = root / SNAPSHOT
        snapshot: Mapping[str, Any] = {}
        if snapshot_path.is_file():
            snapshot = json.loads(snapshot_path.read_text(encoding="utf-8"))
            catalog.read_on = str(snapshot.get("read_on", "unknown"))
        listed: Mapping[str, Any] = snapshot.get("models", {})
        for model_id, schema in listed.items():
            catalog.models[model_id] = ModelSpec(model_id, schema, snapshot_path, "bundled")
        for path in sorted((root / "models").glob("*.json")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            model_id = schema["x-model-id"]
            facts = listed.get(model_id, {})
            merged = {**schema, **{k: facts[k] for k in FACTS if k in facts and k not in schema}}
            catalog.models[model_id] = ModelSpec(model_id, merged, path, "hand-checked")
        if use_cache:
            from .synced import apply_synced  # noqa: PLC0415  (it imports this module)

            apply_synced(catalog)
        return catalog

    def with_models(self, specs: Mapping[str, ModelSpec]) -> Catalog:
        """This catalog with ``specs`` over its models (a manifest's own schemas); itself unchanged."""
        return replace(self, models={**self.models, **specs}) if specs else self

    def get(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.models

    def __len__(self) -> int:
        return len(self.models)

    def closest(self, model_id: str, n: int = 3) -> list[str]:
        """The known ids most like ``model_id``: close spellings first, then models of its family."""
        known = sorted(self.models)
        close = difflib.get_close_matches(model_id, known, n=n, cutoff=0.6)
        family = "/".join(model_id.split("/")[:2]) + "/"
        close += [k for k in known if k.startswith(family) and k not in close]
        if not close:
            owner = model_id.split("/")[0] + "/"
            close = [k for k in known if k.startswith(owner)]
        return close[:n]

    def read_json(self, name: str) -> Any:
        """Another bundled schema or data file (``manifest.schema.json``, ``prices.json``…)."""
        return json.loads((self.root / name).read_text(encoding="utf-8"))
