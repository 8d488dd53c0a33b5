"""Whatever a manifest file holds, loading it gives a Manifest or ManifestInvalid, never anything else.

Also: the fast schema check (jsonschema_rs) agrees with jsonschema, its regular expressions with
Python's, except in the corners runner/catalog/schema.py names, where it says no and jsonschema
decides; and matrix ids are always unique and safe.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from runner.catalog.models import Catalog
from runner.catalog.schema import Schema
from runner.errors import ManifestInvalid
from runner.manifest.loader import Manifest, expand_matrix, load_manifest

ROOT = Path(__file__).resolve().parent.parent
DEMO = yaml.safe_load((ROOT / "manifests" / "demo.yaml").read_text(encoding="utf-8"))
CATALOG = Catalog.load()
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-20, 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "16:9",
            "9:16",
            "1:1",
            "customize",
            "intelligent",
            "../x",
            "a/b",
            "https://e.com/a.png",
            "data:image/png;base64,AAAA",
            "file:///etc/passwd",
            "kling/kling-video-o3/pro/image-to-video",
            "./missing.png",
            "{x}",
            "shot-1\n",  # passes a `$` pattern in Python only
            "",
        ]
    ),
)
keys = st.sampled_from(
    [
        "id",
        "model",
        "input",
        "matrix",
        "prompt",
        "duration",
        "image",
        "images",
        "video",
        "sound",
        "multi_prompt",
        "aspect_ratio",
        "x",
        "next",
        "n",
        "k",
    ]
) | st.text(max_size=6)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def load_bytes(folder: Path, data: bytes) -> Manifest | ManifestInvalid:
    path = folder / "fuzz.yaml"
    path.write_bytes(data)
    try:
        return load_manifest(path, CATALOG)
    except ManifestInvalid as error:
        assert error.problems and all("\n" not in str(p) for p in error.problems)
        return error


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes_give_a_manifest_or_manifest_invalid(folder: Path, data: bytes) -> None:
    load_bytes(folder, data)


yaml_text = st.lists(
    st.sampled_from(
        list("abc019 :-[]{},&*!|>\"'?#%@`\t\n.~/<=\\")
        + [
            "<<",
            "version: 1\n",
            "jobs:\n",
            "  - id: a\n",
            "    input: ",
            "!!python/object ",
            "&a ",
            "*a ",
            "---\n",
            "\\ud800",
            "\x00",
            "\ufeff",
            "é",
            "    ",
        ]
    ),
    max_size=40,
).map("".join)


@SETTINGS
@given(text=yaml_text)
def test_random_yaml_like_text_gives_a_manifest_or_manifest_invalid(folder: Path, text: str) -> None:
    load_bytes(folder, text.encode("utf-8", "surrogatepass"))


def paths_in(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths_in(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += paths_in(value, (*prefix, index))
    return out


@st.composite
def mutated_demo(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(DEMO)
    for _ in range(draw(st.integers(1, 4))):
        paths = paths_in(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            doc = draw(values) if draw(st.integers(0, 20)) == 0 else doc
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        key = path[-1]
        if action == "replace":
            parent[key] = draw(values)
        elif action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return doc


@SETTINGS
@given(doc=mutated_demo())
def test_mutated_demo_manifests_give_a_manifest_or_manifest_invalid(folder: Path, doc: Any) -> None:
    """The demo, with values replaced, keys deleted or added and jobs duplicated, then written back."""
    (folder / "refs").mkdir(exist_ok=True)
    outcome = load_bytes(folder, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode("utf-8"))
    if isinstance(outcome, Manifest):
        assert len({job.id for job in outcome.jobs}) == len(outcome.jobs)
        assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", job.id) for job in outcome.jobs)


def input_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Inputs near a model schema: its own fields with valid and invalid values, and strangers."""
    names = list(schema.get("properties", {})) + ["extra"]
    segment = st.fixed_dictionaries(
        {}, optional={"prompt": scalars, "duration": st.integers(0, 20) | scalars, "x": scalars}
    )
    field_values = scalars | st.lists(scalars, max_size=9) | st.lists(segment, max_size=4)
    return st.dictionaries(st.sampled_from(names), field_values, max_size=len(names)) | values


def edges(schema: Any, *, inside: bool) -> st.SearchStrategy[Any]:
    """Values at the edges of a model schema's keywords: just inside every one of them, or just
    outside one (a bound passed, a required field dropped, a stranger added, an item too many)."""
    if not isinstance(schema, dict):
        return scalars
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"] if inside else ["other", None, str(schema["enum"][0]).upper()])
    if kind == "string":
        pattern = schema.get("pattern")
        if inside:
            return st.from_regex(pattern) if pattern else st.text(min_size=1, max_size=8)
        return st.sampled_from(["", "./a.png", "ftp://e.com/a", " https://e.com", "data:video/mp4,", 5])
    if kind == "integer":
        low, high = schema.get("minimum", -5), schema.get("maximum", 20)
        if inside:
            return st.sampled_from([low, high, float(low), (low + high) // 2])
        return st.sampled_from([low - 1, high + 1, high + 0.5, True, math.nan, str(low)])
    if kind == "boolean":
        return st.sampled_from([True, False] if inside else [0, None, "true"])
    if kind == "array":
        most, item = schema.get("maxItems", 3), schema.get("items")
        if inside:
            return st.sampled_from([0, 1, most]).flatmap(
                lambda n: st.lists(edges(item, inside=True), min_size=n, max_size=n)
            )
        too_many = st.lists(edges(item, inside=True), min_size=most + 1, max_size=most + 1)
        one_bad = st.tuples(edges(item, inside=True), edges(item, inside=False)).map(list)
        return too_many | one_bad
    if kind == "object":
        fields, required = schema.get("properties", {}), schema.get("required", [])
        optional = sorted(set(fields) - set(required))
        chosen = st.lists(st.sampled_from(optional), unique=True) if optional else st.just([])
        good = chosen.flatmap(
            lambda keys: st.fixed_dictionaries({k: edges(fields[k], inside=True) for k in [*required, *keys]})
        )
        if inside:
            return good
        names = sorted(fields)
        return st.tuples(
            good, st.sampled_from(names), st.sampled_from(["break", "drop", "stranger"])
        ).flatmap(
            lambda g: st.builds(lambda bad: _break(g[0], g[1], g[2], bad), edges(fields[g[1]], inside=False))
        )
    return scalars


def _break(good: dict[str, Any], name: str, how: str, bad: Any) -> dict[str, Any]:
    """``good`` with one field given a value outside its edges, dropped, or a stranger added beside."""
    broken = dict(good)
    if how == "break":
        broken[name] = bad
    elif how == "drop":
        broken.pop(name, None)
    else:
        broken["stranger"] = 1
    return broken


def stricter_corner(instance: Any) -> bool:
    """Whether ``instance`` holds a value where jsonschema_rs may say no and jsonschema yes: text
    ending in a newline (``$``), a non-finite number, a key that is not text."""
    if isinstance(instance, str):
        return instance.endswith("\n")
    if isinstance(instance, float):
        return not math.isfinite(instance)
    if isinstance(instance, list):
        return any(map(stricter_corner, instance))
    if isinstance(instance, dict):
        return any(
            not isinstance(key, str) or stricter_corner(key) or stricter_corner(value)
            for key, value in instance.items()
        )
    return False


def checks(schema: dict[str, Any]) -> tuple[Schema, Draft202012Validator]:
    """The runner's check of ``schema`` and jsonschema's own, to compare."""
    return Schema(schema), Draft202012Validator(schema)


def assert_agree(
    check: Schema, reference: Draft202012Validator, instance: Any, *, corners: bool = True
) -> None:
    """A yes from jsonschema_rs is jsonschema's yes; a no is jsonschema's no but in the known corners;
    and the errors the runner reports are there exactly when jsonschema finds the instance invalid."""
    fast, valid = check.surely_valid(instance), reference.is_valid(instance)
    if fast:
        assert valid, "jsonschema_rs accepted what jsonschema refuses"
    elif valid:
        assert corners and stricter_corner(instance), "jsonschema_rs refused what jsonschema accepts"
    assert (not check.errors(instance)) == valid


@pytest.mark.parametrize("model_id", sorted(CATALOG.models))
def test_the_fast_check_agrees_with_jsonschema_on_model_inputs(model_id: str) -> None:
    """The hand-checked schemas have no ``$``, NaN fails their integers in both: no corner at all. The
    catalog's may have bounded ``number`` fields, where NaN is the known corner (jsonschema's
    comparisons are false, so it passes); there, fewer examples each keep 120 models quick."""
    spec = CATALOG.models[model_id]
    schema = dict(spec.schema)
    check, reference = checks(schema)
    hand_checked = spec.origin == "hand-checked"

    @settings(max_examples=200 if hand_checked else 25, deadline=None)
    @given(instance=edges(schema, inside=True) | edges(schema, inside=False) | input_for(schema))
    def agree(instance: Any) -> None:
        assert_agree(check, reference, instance, corners=not hand_checked)

    agree()


MANIFEST_CHECKS = checks(CATALOG.read_json("manifest.schema.json"))


@SETTINGS
@given(doc=mutated_demo())
def test_the_fast_check_agrees_with_jsonschema_on_manifests(doc: Any) -> None:
    assert_agree(*MANIFEST_CHECKS, doc)


KITCHEN_SINK = {
    "$defs": {
        "node": {
            "type": ["object", "null"],
            "properties": {"next": {"$ref": "#/$defs/node"}, "n": {"type": "number", "exclusiveMaximum": 10}},
        }
    },
    "type": "object",
    "required": ["a"],
    "minProperties": 1,
    "maxProperties": 5,
    "propertyNames": {"maxLength": 6},
    "properties": {
        "a": {
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^x", "maxLength": 4}]
        },
        "b": {"oneOf": [{"type": "number"}, {"type": "integer", "maximum": 3}]},
        "c": {"not": {"enum": [1, "1", None, [1], {"k": True}]}},
        "d": {"const": [1, {"k": False}]},
        "e": {"$ref": "#/$defs/node"},
        "f": {"type": "array", "items": {"allOf": [{"type": "string"}, {"minLength": 2}]}, "maxItems": 3},
        "g": False,
        "h": True,
        "x": {"type": "array", "prefixItems": [{"type": "integer"}], "uniqueItems": True, "contains": True},
        "y": {"type": "number", "multipleOf": 0.5, "format": "email"},
    },
    "patternProperties": {"^lo": {"type": "string"}},
    "dependentRequired": {"b": ["c"]},
    "additionalProperties": {"type": ["boolean", "array"], "minItems": 1},
    "if": {"properties": {"a": {"type": "string"}}},
    "then": {"required": ["b"]},
    "else": {"properties": {"b": {"exclusiveMinimum": -1}}},
}


# Values near each KITCHEN_SINK property's edges (random values alone would almost never be valid).
_NEAR = {
    "a": [0, 3, 2.0, -1, "x", "xyz", "xyzab"],
    "b": [2.5, 5, 3, 1.0, -0.5, -1, "b"],
    "c": [2, "x", [2], None, True, 1.0],
    "d": [[1, {"k": False}], [1.0, {"k": False}], [True, {"k": False}], [1]],
    "e": [None, {"next": None, "n": 3}, {"next": {"n": 10}}, {"n": 9.99}, []],
    "f": [[], ["ab"], ["ab", "cd", "ef"], ["ab", "c"], ["ab"] * 4],
    "h": [1],
    "x": [[1], [1, 2], [1, 1], [1.0, 1], ["a", 1], []],
    "y": [2.5, 3, 0.3, -1.5, "a@b"],
    "lo": ["s", 1],
    "z": [True, [1], [], 1],
}
kitchen_sink_instances = st.lists(st.sampled_from(sorted(_NEAR)), unique=True, max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({key: st.sampled_from(_NEAR[key]) for key in ["a", *keys]})
)


@SETTINGS
@given(
    instance=kitchen_sink_instances
    | st.dictionaries(st.sampled_from([*_NEAR, "g", "long-key"]), values)
    | values
)
def test_the_fast_check_agrees_with_jsonschema_on_every_keyword(instance: Any) -> None:
    assert_agree(*checks(KITCHEN_SINK), instance)


def test_draft_2020_12_as_jsonschema_reads_it() -> None:
    """5.0 is an integer and true is not; true is not 1 in an enum; ``format`` is not asserted."""
    assert Schema({"type": "integer"}).surely_valid(5.0)
    assert not Schema({"type": "integer"}).surely_valid(True)
    assert Schema({"enum": [1, True]}).surely_valid(True) and not Schema({"const": 1}).surely_valid(True)
    assert Schema({"type": "string", "format": "email"}).surely_valid("not an address")
    assert Schema({"type": "array", "uniqueItems": True}).errors([1, 1])


@pytest.mark.parametrize(
    "schema, instance",
    [
        ({"type": "string", "pattern": "^[a-z]$"}, "x\n"),  # Python's $ also matches before a final \n
        ({"type": "number", "exclusiveMinimum": 0}, math.inf),  # non-finite: not JSON
        ({"type": "number", "minimum": 0}, math.nan),
        ({"type": "object"}, {1: "a"}),  # a key that is not text
        ({"type": "string"}, "\ud800"),  # a lone surrogate
        ({}, b"bytes"),  # no JSON type at all
    ],
)
def test_where_jsonschema_rs_is_stricter_jsonschema_decides(schema: dict[str, Any], instance: Any) -> None:
    check, reference = checks(schema)
    assert not check.surely_valid(instance)
    assert check.errors(instance) == [] and reference.is_valid(instance)


def bundled_patterns() -> list[str]:
    """Every ``pattern`` in the schemas the fast check sees: the manifest's and the models'."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.append(node["pattern"])
            found.extend(node.get("patternProperties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(CATALOG.read_json("manifest.schema.json"))
    for spec in CATALOG.models.values():
        walk(spec.schema)
    return sorted(set(found))


def test_the_bundled_schemas_have_patterns_to_compare() -> None:
    assert len(bundled_patterns()) >= 4


tricky_text = st.sampled_from(
    [
        "",
        "\n",
        "x\n",
        "x\n\n",
        "\nx",
        "https://e.com",
        "http://x\n",
        "data:image/png",
        "DATA:image/",
        "é",
        "ａ",
        "İ",
        "٣",
        "x\u2028",
        "x\r",
        "a{b}",
        "{x}-y",
        "_a1",
        "1a",
        "a b",
        "a" * 128,
        "a" * 129,
    ]
)


@pytest.mark.parametrize("pattern", bundled_patterns())
def test_the_bundled_patterns_match_as_python_reads_them_with_dollar_as_the_very_end(pattern: str) -> None:
    """Rust's regex and Python's re agree on every bundled pattern once ``$`` is read as ``\\Z``:
    the one difference, on a final newline, is where jsonschema_rs says no and jsonschema decides."""
    fast, reference = checks({"pattern": pattern})
    python_end = re.compile(re.sub(r"\$$", r"\\Z", pattern))

    @settings(max_examples=300, deadline=None)
    @given(
        text=st.from_regex(pattern)
        | st.text(max_size=12)
        | tricky_text
        | st.from_regex(pattern).map(str.upper)
    )
    def agree(text: str) -> None:
        assert fast.surely_valid(text) == bool(python_end.search(text))
        assert reference.is_valid(text) == bool(re.search(pattern, text))

    agree()


matrix_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)


@SETTINGS
@given(
    base=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    matrix=st.dictionaries(
        matrix_keys,
        st.lists(scalars | st.lists(scalars, max_size=2), min_size=1, max_size=4, unique_by=repr),
        min_size=1,
        max_size=3,
    ),
)
def test_matrix_ids_are_unique_and_file_safe(base: str, matrix: dict[str, list[Any]]) -> None:
    ids = [job_id for job_id, _ in expand_matrix(base, matrix)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", job_id) for job_id in ids)
    template = base + "".join(f"-{{{key}}}" for key in matrix)
    assert len({job_id for job_id, _ in expand_matrix(template, matrix)}) == len(ids)
