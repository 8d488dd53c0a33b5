"""One entry of RunComfy's model catalog turned into the project's model schema.

The catalog (``GET /v1/models?include_schema=true``) describes each endpoint's input in a
JSON-Schema-like dialect: a nonstandard ``float`` type, media inputs marked by ``format``
(``image_uri``, ``video_uris``…) and file rules in ``validations``. :func:`normalise_entry` turns
such an entry into JSON Schema 2020-12 written the way ``schemas/models/`` is:

* ``x-model-id``, ``$id`` and ``x-source`` name the model and where its facts come from;
* a media input becomes a string (or an array of strings) with ``x-file`` set to ``image``,
  ``video`` or ``audio`` and a pattern: images may be URLs or ``data:image/`` URIs, video and audio
  need a public URL;
* ``float`` becomes ``number``; enums, bounds, lengths, item counts, defaults and required fields are
  kept; descriptions and titles are not (they are RunComfy's words, and the runner needs none);
* what a schema cannot say goes into ``x-checks``, one object per rule (see :func:`file_checks`);
* what the runner needs beside the input: ``x-output`` (the kinds of file a request produces, from
  the categories), ``x-categories``, ``x-price-unit`` (``second`` or ``output``) and ``x-price``
  when a price is known (see :func:`price_of`).

It is a tolerant reader: the catalog's shape is not documented and a live answer may differ from
the saved one. Whatever it cannot understand it leaves out and says so in the notes it returns; it
raises for nothing. It reads no files and opens no connections, so ``models sync`` can run it on a
live answer as the build runs it on the saved one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# A local image can be inlined as a data: URI; video and audio must be fetched by RunComfy itself.
MEDIA_PATTERN = {"image": "^(https?://|data:image/)", "video": "^https?://", "audio": "^https?://"}
MEDIA_FORMATS = {
    f"{kind}_uri{plural}": (kind, bool(plural)) for kind in MEDIA_PATTERN for plural in ("", "s")
}
TYPES = {
    "string": "string",
    "str": "string",
    "text": "string",
    "integer": "integer",
    "int": "integer",
    "number": "number",
    "float": "number",
    "double": "number",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "object": "object",
    "dict": "object",
    "null": "null",
}
STANDARD_FORMATS = {"uri", "url", "email", "date", "date-time", "time", "uuid", "hostname"}
NUMBER_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")
IGNORED = {"description", "title", "examples", "example", "placeholder", "$comment"}
OUTPUT_KINDS = ("video", "image", "audio")

# `validations` rules as the catalog writes them: a measure and a comparison, e.g. "file_size_mb<".
RULE = re.compile(r"^\s*(?P<measure>[A-Za-z_/]+?)\s*(?P<op><=|>=|==|<|>)\s*$")
MEASURES = {
    "file_size_mb": "file_size_mb",
    "width/height": "aspect_ratio",
    "width_pixels": "width_px",
    "height_pixels": "height_px",
}
OPS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "==": "eq"}  # message order: lower bound first
OP_WORDS = {"lt": "under", "le": "at most", "gt": "over", "ge": "at least", "eq": "exactly"}
MEASURE_WORDS = {
    "file_size_mb": ("file size", " MB"),
    "aspect_ratio": ("width/height", ""),
    "width_px": ("width", " pixels"),
    "height_px": ("height", " pixels"),
}


@dataclass(frozen=True)
class Normalised:
    """One catalog entry, normalised: its model id and schema (``None`` when the entry is unusable)
    and a note for everything that was left out or could not be understood."""

    model_id: str | None
    schema: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


def catalog_entries(answer: Any) -> tuple[list[Any], list[str]]:
    """The entries of one catalog page, wherever the answer keeps them (a bare list, or a list under
    ``models``, ``data``, ``items`` or ``results``), and a note when none is found."""
    if isinstance(answer, list):
        return answer, []
    if isinstance(answer, Mapping):
        for key in ("models", "data", "items", "results"):
            if isinstance(answer.get(key), list):
                return list(answer[key]), []
        return [], ["the answer holds no list of models (looked under models, data, items, results)"]
    return [], [f"the answer is a {type(answer).__name__}, not a list or an object"]


def normalise_entry(entry: Any, *, source: str) -> Normalised:
    """``entry`` (one model of a catalog answer) as a model schema; ``source`` says where it was read
    (it becomes ``x-source``)."""
    if not isinstance(entry, Mapping):
        return Normalised(None, None, [f"an entry that is a {type(entry).__name__}, not an object"])
    model_id = entry.get("model_id")
    if not isinstance(model_id, str) or not model_id.strip():
        return Normalised(None, None, [f"an entry without a model_id: {_short(entry)}"])
    model_id = model_id.strip()
    kind = entry.get("kind", "model")
    if kind != "model":
        return Normalised(model_id, None, [f"kind {kind!r} is not a hosted model endpoint; left out"])
    notes: list[str] = []
    categories = _strings(entry.get("categories"), "categories", notes)
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        # Quoted: an id is free text to the API, and a `#` or a space would make $id an invalid URI.
        "$id": f"urn:runcomfy-batch:model:{quote(model_id, safe='/:')}",
        "x-model-id": model_id,
        "x-source": source,
        "x-output": output_kinds(categories, entry.get("output_type"), notes),
        "x-categories": categories,
    }
    unit = price_unit(entry.get("price_unit"), notes)
    if unit:
        schema["x-price-unit"] = unit
    price = price_of(entry, unit, notes)
    if price:
        schema["x-price"] = price
    body = _input_body(entry, notes)
    if body["x-checks"]:
        schema["x-checks"] = body["x-checks"]
    schema.update({k: v for k, v in body.items() if k != "x-checks"})
    return Normalised(model_id, schema, notes)


def output_kinds(categories: list[str], output_type: Any, notes: list[str]) -> list[str]:
    """The kinds of file a model produces, from the part of each category after ``-to-``
    (``image-to-video`` -> ``video``), or else from an ``output_type`` word."""
    kinds: list[str] = []
    for category in categories:
        tail = category.lower().rpartition("-to-")[2]
        if tail in OUTPUT_KINDS and tail not in kinds:
            kinds.append(tail)
        elif tail not in OUTPUT_KINDS:
            notes.append(f"category {category!r} names no output kind")
    if not kinds and isinstance(output_type, str) and output_type.lower() in OUTPUT_KINDS:
        kinds.append(output_type.lower())
    if not kinds:
        notes.append("output kind unknown (no category names video, image or audio)")
    return kinds


def price_unit(value: Any, notes: list[str]) -> str | None:
    """``second`` or ``output``, as the catalog's ``price_unit`` says (a few spellings accepted)."""
    if value is None:
        notes.append("price unit unknown")
        return None
    word = str(value).strip().lower().removeprefix("per_").removeprefix("per ")
    if word in ("second", "seconds", "sec", "s"):
        return "second"
    if word in ("output", "outputs", "request", "image", "images", "video", "videos", "track"):
        return "output"
    notes.append(f"price unit {value!r} not understood; price unknown")
    return None


def price_of(entry: Mapping[str, Any], unit: str | None, notes: list[str]) -> dict[str, Any] | None:
    """The price facts an entry carries, in the shape of a rule of ``schemas/prices.json``:
    ``{"unit", "usd"?, "tiers"?}``. ``usd`` is the price per unit with default inputs (from a
    ``base_price_usd`` or the saved answer's ``x-pricing``). A tier applies when its ``when`` input
    is set (or, with ``equals``, has that value) and gives either ``usd`` or a ``factor`` of the base
    price (``null``: the price changes by an amount nobody published, so it is unknown)."""
    pricing = entry.get("x-pricing")
    base = entry.get("base_price_usd")
    if pricing is None and base is None:
        return None
    out: dict[str, Any] = {"unit": unit} if unit else {}
    usd = base if base is not None else (pricing.get("usd") if isinstance(pricing, Mapping) else None)
    if usd is not None:
        if _is_number(usd) and usd > 0:
            out["usd"] = float(usd)
        else:
            notes.append(f"price {usd!r} is not a positive number; left out")
    if isinstance(pricing, Mapping) and "tiers" in pricing:
        tiers = [t for t in (_tier(t, notes) for t in _list(pricing["tiers"], "price tiers", notes)) if t]
        if tiers:
            out["tiers"] = tiers
    elif pricing is not None and not isinstance(pricing, Mapping):
        notes.append("x-pricing is not an object; left out")
    return out if out.keys() - {"unit"} else None


def _tier(tier: Any, notes: list[str]) -> dict[str, Any] | None:
    if not isinstance(tier, Mapping) or not isinstance(tier.get("when"), str):
        notes.append(f"price tier {_short(tier)} names no input; left out")
        return None
    out: dict[str, Any] = {"when": tier["when"]}
    if "equals" in tier:
        out["equals"] = tier["equals"]
    if _is_number(tier.get("usd")):
        out["usd"] = float(tier["usd"])
    elif "factor" in tier and (tier["factor"] is None or _is_number(tier["factor"])):
        out["factor"] = None if tier["factor"] is None else float(tier["factor"])
    else:
        notes.append(f"price tier for {tier['when']!r} has neither usd nor factor; left out")
        return None
    if tier.get("approximate") is True:
        out["approximate"] = True
    return out


def _input_body(entry: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    """``type``, ``required``, ``additionalProperties``, ``properties``, ``examples`` and the
    ``x-checks`` gathered from the properties' ``validations``."""
    raw = entry.get("input_schema", entry.get("schema"))
    checks: list[dict[str, Any]] = []
    if not isinstance(raw, Mapping) or not isinstance(raw.get("properties"), Mapping):
        notes.append("no input schema: its inputs are passed on unchecked")
        return {"x-checks": checks, "type": "object"}
    properties: dict[str, Any] = {}
    for name, prop in raw["properties"].items():
        properties[str(name)] = _property(prop, str(name), notes, checks)
    for name in _strings(entry.get("x-omitted_inputs"), "x-omitted_inputs", notes):
        if name not in properties:
            # The API takes it; the source does not say its structure, so it passes unchecked.
            properties[name] = {}
            notes.append(f"{name}: accepted, but its structure is unknown; not checked")
    required: list[str] = []
    for name in _strings(raw.get("required"), "required", notes):
        if name not in properties:
            properties[name] = {}
            notes.append(f"{name}: required but not described; not checked beyond being present")
        if name not in required:
            required.append(name)
    body: dict[str, Any] = {"x-checks": checks, "type": "object"}
    if required:
        body["required"] = required
    body["additionalProperties"] = False
    body["properties"] = properties
    examples = _examples(entry, raw, notes)
    if examples:
        body["examples"] = examples
    return body


def _property(prop: Any, path: str, notes: list[str], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """One input field (or array item) in JSON Schema 2020-12; what cannot be understood is dropped
    with a note naming ``path``."""
    if not isinstance(prop, Mapping):
        notes.append(f"{path}: described by a {type(prop).__name__}, not an object; not checked")
        return {}
    out: dict[str, Any] = {}
    media = _media(prop)
    if "type" in prop:
        _type(prop["type"], out, path, notes)
    rules = [prop.get("validations")]
    if media is not None:
        kind, plural = media
        file_item = {"type": "string", "minLength": 1, "pattern": MEDIA_PATTERN[kind], "x-file": kind}
        if plural or out.get("type") == "array":
            out["type"] = "array"
            out["items"] = file_item
            items = prop.get("items")
            rules.append(items.get("validations") if isinstance(items, Mapping) else None)
        else:
            out.update(file_item)
    elif "items" in prop:
        out["items"] = _property(prop["items"], f"{path}[]", notes, checks)
    if "enum" in prop:
        _enum(prop["enum"], out, path, notes)
    for key in NUMBER_KEYWORDS:
        if key in prop:
            if _is_number(prop[key]):
                out[key] = prop[key]
            else:
                notes.append(f"{path}: {key} {prop[key]!r} is not a number; left out")
    for key in COUNT_KEYWORDS:
        if key in prop:
            if isinstance(prop[key], int) and not isinstance(prop[key], bool) and prop[key] >= 0:
                out[key] = prop[key]
            else:
                notes.append(f"{path}: {key} {prop[key]!r} is not a count; left out")
    _pattern_and_format(prop, out, path, notes, media is not None)
    if out.get("type") == "object" and isinstance(prop.get("properties"), Mapping):
        out["properties"] = {
            str(k): _property(v, f"{path}.{k}", notes, checks) for k, v in prop["properties"].items()
        }
        nested_required = _strings(prop.get("required"), f"{path}.required", notes)
        if nested_required:
            out["required"] = nested_required
    if isinstance(prop.get("additionalProperties"), bool):
        out["additionalProperties"] = prop["additionalProperties"]
    if "default" in prop:
        out["default"] = prop["default"]
        if "enum" in out and prop["default"] not in out["enum"]:
            notes.append(f"{path}: the default {prop['default']!r} is not one of its choices")
    each = out.get("type") == "array"
    for found in rules:
        if found is not None:
            checks.extend(file_checks(found, path, each=each, notes=notes))
    known = {"type", "format", "items", "enum", "properties", "required", "additionalProperties"}
    known |= {"default", "validations", "pattern", *NUMBER_KEYWORDS, *COUNT_KEYWORDS, *IGNORED}
    for key in prop:
        if key not in known and not str(key).startswith("x-"):
            notes.append(f"{path}: {key!r} not understood; left out")
    return out


def _media(prop: Mapping[str, Any]) -> tuple[str, bool] | None:
    """(kind, is a list) when the field takes files, from its own ``format`` or its items'."""
    own = prop.get("format")
    if isinstance(own, str) and own.lower() in MEDIA_FORMATS:
        return MEDIA_FORMATS[own.lower()]
    items = prop.get("items")
    inner = items.get("format") if isinstance(items, Mapping) else None
    if isinstance(inner, str) and inner.lower() in MEDIA_FORMATS:
        return MEDIA_FORMATS[inner.lower()][0], True
    return None


def _type(declared: Any, out: dict[str, Any], path: str, notes: list[str]) -> None:
    """``float`` and other spellings mapped to JSON Schema's types; a list of types is kept as one."""
    names = declared if isinstance(declared, list) else [declared]
    mapped = [TYPES.get(n.lower()) if isinstance(n, str) else None for n in names]
    if not names or None in mapped:
        notes.append(f"{path}: type {declared!r} not understood; any type accepted")
        return
    unique = list(dict.fromkeys(m for m in mapped if m))
    out["type"] = unique[0] if len(unique) == 1 else unique


def _enum(values: Any, out: dict[str, Any], path: str, notes: list[str]) -> None:
    if not isinstance(values, list) or not values:
        notes.append(f"{path}: enum {values!r} is not a list of choices; left out")
        return
    out["enum"] = list(values)
    declared = out.get("type")
    if isinstance(declared, str) and not any(_has_type(v, declared) for v in values):
        # The choices are the more precise fact; a type none of them has would refuse them all.
        del out["type"]
        notes.append(f"{path}: its choices are not of type {declared}; the type is left out")


def _pattern_and_format(
    prop: Mapping[str, Any], out: dict[str, Any], path: str, notes: list[str], media: bool
) -> None:
    pattern = prop.get("pattern")
    if pattern is not None and not media:
        try:
            re.compile(str(pattern))
        except re.error:
            notes.append(f"{path}: pattern {pattern!r} is not a regular expression; left out")
        else:
            out["pattern"] = str(pattern)
    fmt = prop.get("format")
    if fmt is not None and not media:
        if isinstance(fmt, str) and fmt in STANDARD_FORMATS:
            out["format"] = fmt
        else:
            notes.append(f"{path}: format {fmt!r} not understood; left out")


def file_checks(rules: Any, field_name: str, *, each: bool, notes: list[str]) -> list[dict[str, Any]]:
    """A field's ``validations`` as ``x-checks`` entries, one per measure:
    ``{"field": "image", "each": true, "measure": "file_size_mb", "lt": 30, "message": "…"}``.

    ``measure`` is ``file_size_mb``, ``aspect_ratio`` (width divided by height), ``width_px`` or
    ``height_px``; the bounds are ``lt``, ``le``, ``gt``, ``ge`` or ``eq`` (several may join, e.g.
    an aspect ratio between two values); ``each`` says the field is a list and every file is
    checked. The message is ours, in words a manifest author understands."""
    by_measure: dict[str, dict[str, Any]] = {}
    for rule in _list(rules, f"{field_name}: validations", notes):
        text = rule.get("validation_rule") if isinstance(rule, Mapping) else None
        value = rule.get("validation_value") if isinstance(rule, Mapping) else None
        match = RULE.match(text) if isinstance(text, str) else None
        measure = MEASURES.get(match["measure"].lower()) if match else None
        if measure is None or match is None or not _is_number(value):
            notes.append(f"{field_name}: validation rule {_short(rule)} not understood; not checked")
            continue
        check = by_measure.setdefault(measure, {"field": field_name, "each": each, "measure": measure})
        check[OPS[match["op"]]] = value
    out = []
    for measure, check in by_measure.items():
        if not check["each"]:
            del check["each"]
        label, suffix = MEASURE_WORDS[measure]
        bounds = " and ".join(f"{OP_WORDS[op]} {check[op]}{suffix}" for op in OPS.values() if op in check)
        check["message"] = f"{label} must be {bounds}"
        out.append(check)
    return out


def _examples(entry: Mapping[str, Any], raw: Mapping[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    found: list[Any] = []
    for holder in (entry, raw):
        for key in ("examples", "example", "example_input"):
            value = holder.get(key)
            if value is not None:
                found.extend(value if isinstance(value, list) else [value])
    kept = [dict(e) for e in found if isinstance(e, Mapping)]
    if len(kept) < len(found):
        notes.append(f"{len(found) - len(kept)} example input(s) that are not objects left out")
    return kept


def _strings(value: Any, what: str, notes: list[str]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    items = _list(value, what, notes)
    out = [v for v in items if isinstance(v, str)]
    if len(out) < len(items):
        notes.append(f"{what}: {len(items) - len(out)} item(s) that are not text left out")
    return out


def _list(value: Any, what: str, notes: list[str]) -> list[Any]:
    if isinstance(value, list):
        return value
    notes.append(f"{what}: {_short(value)} is not a list; left out")
    return []


def _has_type(value: Any, json_type: str) -> bool:
    if json_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if json_type == "number":
        return _is_number(value)
    python = {"string": str, "boolean": bool, "array": list, "object": dict, "null": type(None)}
    return isinstance(value, python.get(json_type, object))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
