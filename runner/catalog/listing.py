"""What ``runcomfy-batch models`` says of the models: a row per model, and one model's inputs in words.

Both read only the catalog and the price table, so the command answers offline, in milliseconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .models import Catalog, ModelSpec
from .pricing import PriceTable, unit_of

_TYPE_WORDS = {
    "string": "text",
    "integer": "whole number",
    "number": "number",
    "boolean": "true/false",
    "array": "list",
    "object": "mapping",
    "null": "null",
}


def model_row(spec: ModelSpec, prices: PriceTable) -> dict[str, Any]:
    """One model as ``models --json`` lists it."""
    rule = prices.rule_for(spec.model_id) or {}
    usd = rule.get("usd")
    return {
        "model_id": spec.model_id,
        "family": spec.family,
        "output_kind": spec.output_kind,
        "output_kinds": list(spec.output_kinds),
        "categories": list(spec.categories),
        "max_outputs": spec.max_outputs,
        "price_unit": unit_of(rule) if isinstance(usd, int | float) else rule.get("unit") or spec.price_unit,
        "price_usd": float(usd) if isinstance(usd, int | float) else None,
        "price_source": rule.get("source") if isinstance(usd, int | float) else None,
        "price_read_on": rule.get("read_on") if isinstance(usd, int | float) else None,
        "source": spec.origin,
        "file": str(spec.source),
    }


def model_rows(catalog: Catalog, prices: PriceTable) -> list[dict[str, Any]]:
    """Every model, sorted by id."""
    return [model_row(catalog.models[m], prices) for m in sorted(catalog.models)]


def price_words(row: Mapping[str, Any]) -> str:
    """``$0.084/s``, ``$0.08/output``, or ``unknown`` (with the unit where it is known)."""
    unit = row.get("price_unit")
    short = {"second": "s", "output": "output"}.get(unit or "", unit or "")
    if row.get("price_usd") is None:
        return f"unknown (per {unit})" if unit else "unknown"
    return f"${row['price_usd']:g}/{short or 's'}"


@dataclass(frozen=True)
class CatalogSummary:
    """How many models, by output kind and family, and where they come from."""

    models: int
    families: int
    by_kind: dict[str, int]
    by_origin: dict[str, int]


def summary(catalog: Catalog) -> CatalogSummary:
    specs = list(catalog.models.values())
    kinds = Counter(spec.output_kind or "unknown" for spec in specs)
    origins = Counter(spec.origin for spec in specs)
    return CatalogSummary(len(specs), len({s.family for s in specs}), dict(kinds), dict(origins))


@dataclass(frozen=True)
class InputLine:
    """One input field, as ``models show`` prints it."""

    name: str
    required: bool
    kind: str  # ``text``, ``whole number 3–15``, ``image URL or local file``…
    default: Any
    has_default: bool
    rules: list[str]


def input_lines(spec: ModelSpec) -> list[InputLine]:
    """The model's inputs, required ones first, each with its type, bounds, choices and file rules."""
    properties = spec.schema.get("properties", {})
    required = [r for r in spec.schema.get("required", []) if isinstance(r, str)]
    order = [*required, *sorted(k for k in properties if k not in required)]
    lines = []
    for name in order:
        prop = properties.get(name, {})
        prop = prop if isinstance(prop, Mapping) else {}
        rules = [check.message for check in spec.file_checks.get(name, ())]
        lines.append(
            InputLine(
                name, name in required, describe_field(prop), prop.get("default"), "default" in prop, rules
            )
        )
    return lines


def describe_field(prop: Mapping[str, Any]) -> str:
    """A field's type and bounds in a few words: ``whole number 3–15``, ``one of: 16:9, 9:16``,
    ``list of 1–4 image URLs or local files``, ``any value (not described)``."""
    if not prop:
        return "any value (not described)"
    media = prop.get("x-file")
    if isinstance(media, str):
        return _media_words(media)
    declared = prop.get("type")
    names = declared if isinstance(declared, list) else [declared] if declared else []
    words = " or ".join(_TYPE_WORDS.get(n, str(n)) for n in names) or "any value"
    if "enum" in prop:
        values = prop["enum"]
        if (
            len(values) > 4
            and all(type(v) is int for v in values)
            and values == list(range(values[0], values[-1] + 1))
        ):
            return f"whole number, {values[0]}–{values[-1]}"
        return f"one of: {', '.join(_shown(v) for v in values)}"
    if "const" in prop:
        return f"exactly {_shown(prop['const'])}"
    if declared == "array":
        found = prop.get("items")
        items: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        count = _range(prop.get("minItems"), prop.get("maxItems"), " items")
        if isinstance(items.get("x-file"), str):
            inner = _media_words(items["x-file"], plural=True)
        else:
            inner = describe_field(items) if items else "values"
        return f"list of {inner}" + (f"; {count}" if count else "")
    if declared == "object" and isinstance(prop.get("properties"), Mapping):
        inner = ", ".join(f"{k}: {describe_field(v)}" for k, v in prop["properties"].items())
        return f"mapping ({inner})"
    bounds = _range(prop.get("minimum"), prop.get("maximum"))
    lengths = _range(prop.get("minLength"), prop.get("maxLength"), " characters")
    if lengths == "at least 1 characters":
        lengths = "not empty"
    extra = [part for part in (bounds, lengths) if part]
    if "exclusiveMinimum" in prop:
        extra.append(f"over {prop['exclusiveMinimum']}")
    if "exclusiveMaximum" in prop:
        extra.append(f"under {prop['exclusiveMaximum']}")
    if "pattern" in prop:
        extra.append(f"matching {prop['pattern']}")
    return ", ".join([words, *extra])


def _media_words(kind: str, *, plural: bool = False) -> str:
    name = {"audio": "audio files"}.get(kind, f"{kind}s") if plural else kind
    if kind == "image":
        return f"{name}: https URL, data: URI or local file (sent inline)"
    return f"{name}: public https URL (a local file cannot be sent)"


def _range(low: Any, high: Any, unit: str = "") -> str:
    if low is None and high is None:
        return ""
    if low is not None and high is not None:
        return f"{low}–{high}{unit}"
    return f"at least {low}{unit}" if low is not None else f"at most {high}{unit}"


def _shown(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)
