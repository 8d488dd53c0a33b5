"""The models the runner knows, read from the bundled JSON schemas.

Adding a model means adding a file to ``schemas/models/``: its ``x-model-id`` names the model, the
JSON Schema 2020-12 body checks its input, ``x-file`` marks the fields that take files (so local paths
can be turned into data URIs), and ``x-checks`` says in data what a schema cannot (e.g. that the
``multi_prompt`` durations add up to ``duration``). No model is named in code.

The schemas live at the top of the repository and ship inside the wheel as ``runner/_schemas``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .schema import Schema, describe


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


@dataclass(frozen=True)
class ModelSpec:
    """One model: its id, input schema and the checks a schema cannot express."""

    model_id: str
    schema: Mapping[str, Any]
    source: Path

    @cached_property
    def input_schema(self) -> Schema:
        """The input schema's validators, built when the model's first input is checked."""
        return Schema(self.schema)

    @cached_property
    def defaults(self) -> dict[str, Any]:
        """Top-level input defaults, as the API applies them."""
        return {k: v["default"] for k, v in self.schema.get("properties", {}).items() if "default" in v}

    @cached_property
    def file_fields(self) -> dict[str, str]:
        """Input fields that take files: name -> kind (``image`` or ``video``)."""
        out: dict[str, str] = {}
        for name, prop in self.schema.get("properties", {}).items():
            kind = prop.get("x-file") or prop.get("items", {}).get("x-file")
            if kind:
                out[name] = kind
        return out

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
        for check in self.schema.get("x-checks", []):
            if "sum_of" in check:
                array_name, _, item_field = check["sum_of"].partition("[].")
                out.append((array_name, item_field, check["equals"], check["message"]))
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
    """Every model the runner can validate and price, keyed by model id."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    root: Path = field(default_factory=schema_dir)

    @classmethod
    def load(cls, root: Path | None = None) -> Catalog:
        root = root or schema_dir()
        catalog = cls(root=root)
        for path in sorted((root / "models").glob("*.json")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            from jsonschema import Draft202012Validator  # noqa: PLC0415

            Draft202012Validator.check_schema(schema)
            model_id = schema["x-model-id"]
            catalog.models[model_id] = ModelSpec(model_id, schema, path)
        return catalog

    def get(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.models

    def read_json(self, name: str) -> Any:
        """Another bundled schema or data file (``manifest.schema.json``, ``prices.json``…)."""
        return json.loads((self.root / name).read_text(encoding="utf-8"))
