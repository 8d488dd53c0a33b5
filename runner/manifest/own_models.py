"""A manifest's own model schemas: ``models:`` names a schema file for a model the catalog lacks or
describes differently (a private endpoint, one newer than the last sync)::

    models:
      acme/private-video/text-to-video: ./schemas/private-video.json

The file is JSON, either a model schema written as ``schemas/models/`` writes them (JSON Schema
2020-12 with ``x-file``, ``x-checks``, ``x-output``, ``x-price``…) or one entry of RunComfy's
catalog answer (``model_id``, ``categories``, ``input_schema``…), which is normalised as a sync
normalises it. Unlike the bundled schemas, which the tests check, each file is checked against
JSON Schema's metaschema when it is read. It wins over the synced and the bundled catalog for the
jobs of this manifest only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..catalog.models import ModelSpec
from ..catalog.normalise import normalise_entry
from ..catalog.schema import show
from .validate import ProblemLog

MAX_SCHEMA_BYTES = 5 * 1000 * 1000


def read_own_models(
    entries: Mapping[str, Any], folder: Path, log: ProblemLog, read: dict[str, tuple[int, int]]
) -> dict[str, ModelSpec]:
    """The models the manifest's ``models:`` names; each file read goes into ``read`` (absolute path
    -> size and mtime in ns, for the state file's snapshot), every problem into ``log``."""
    specs: dict[str, ModelSpec] = {}
    for model_id, value in entries.items():
        if not isinstance(value, str) or not value:
            continue  # the manifest schema has said so
        where = ("models", model_id)
        path = Path(os.path.normpath(folder / os.path.expanduser(value)))
        try:
            info = path.stat()
            read[str(path)] = (info.st_size, info.st_mtime_ns)
            if info.st_size > MAX_SCHEMA_BYTES:
                log.at(where, f"{value}: {info.st_size / 1e6:.1f} MB is too large for a model schema")
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            log.at(where, f"{value}: no such file (looked for {path})")
            continue
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            log.at(where, f"{value}: cannot be read as JSON ({reason})")
            continue
        schema, problem = _model_schema(model_id, data, value)
        if schema is None:
            log.at(where, f"{value}: {problem}")
            continue
        specs[model_id] = ModelSpec(model_id, schema, path, "manifest")
    return specs


def _model_schema(model_id: str, data: Any, shown: str) -> tuple[dict[str, Any] | None, str]:
    """The file's data as a checked model schema for ``model_id``, or None and why not."""
    if not isinstance(data, Mapping):
        return None, "a model schema is a JSON object"
    if "input_schema" in data or ("model_id" in data and "x-model-id" not in data):
        named = data.get("model_id", model_id)
        if named != model_id:
            return None, f"is the catalog entry of {show(named)}, not of {show(model_id)}"
        result = normalise_entry({**data, "model_id": model_id}, source=f"{shown} (named by the manifest)")
        if result.schema is None:
            return None, "; ".join(result.notes) or "not a usable catalog entry"
        schema = result.schema
    else:
        named = data.get("x-model-id", model_id)
        if named != model_id:
            return None, f"its x-model-id is {show(named)}, not {show(model_id)}"
        schema = {**data, "x-model-id": model_id}
    problem = _metaschema_problem(schema)
    if problem:
        return None, f"not a valid JSON Schema 2020-12: {problem}"
    return schema, ""


def _metaschema_problem(schema: Mapping[str, Any]) -> str | None:
    """The most telling way ``schema`` breaks JSON Schema 2020-12's metaschema, in jsonschema's
    words, or None. (jsonschema_rs says yes or no in a few µs; jsonschema words the no.)"""
    import jsonschema_rs  # noqa: PLC0415  (loaded only for a manifest that names schemas)

    if jsonschema_rs.meta.is_valid(dict(schema)):
        return None
    from jsonschema import Draft202012Validator  # noqa: PLC0415
    from jsonschema.exceptions import best_match  # noqa: PLC0415

    error = best_match(Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(schema))
    if error is None:
        return "rejected by the metaschema"
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message
