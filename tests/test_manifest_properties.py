"""Whatever a manifest file holds, loading it gives a Manifest or ManifestInvalid, never anything else.

Also: the fast schema check always agrees with jsonschema, and matrix ids are always unique and safe.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from runner.catalog.models import Catalog
from runner.errors import ManifestInvalid
from runner.manifest.fastschema import compile_schema
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


@pytest.mark.parametrize("model_id", sorted(CATALOG.models))
def test_the_fast_check_agrees_with_jsonschema_on_model_inputs(model_id: str) -> None:
    schema = CATALOG.models[model_id].schema
    fast, reference = compile_schema(schema), Draft202012Validator(schema)

    @settings(max_examples=200, deadline=None)
    @given(instance=input_for(dict(schema)))
    def agree(instance: Any) -> None:
        assert fast(instance) == reference.is_valid(instance)

    agree()


@SETTINGS
@given(doc=mutated_demo())
def test_the_fast_check_agrees_with_jsonschema_on_manifests(doc: Any) -> None:
    schema = CATALOG.read_json("manifest.schema.json")
    assert compile_schema(schema)(doc) == Draft202012Validator(schema).is_valid(doc)


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
    },
    "additionalProperties": {"type": ["boolean", "array"], "minItems": 1},
    "if": {"properties": {"a": {"type": "string"}}},
    "then": {"required": ["b"]},
    "else": {"properties": {"b": {"exclusiveMinimum": -1}}},
}


@SETTINGS
@given(instance=st.dictionaries(st.sampled_from([*"abcdefghxy", "long-key"]), values, max_size=6) | values)
def test_the_fast_check_agrees_with_jsonschema_on_every_supported_keyword(instance: Any) -> None:
    assert compile_schema(KITCHEN_SINK)(instance) == Draft202012Validator(KITCHEN_SINK).is_valid(instance)


def test_the_fast_check_falls_back_for_keywords_it_does_not_know() -> None:
    schema = {"type": "array", "uniqueItems": True}
    check = compile_schema(schema)
    assert check([1, 2]) and not check([1, 1])
    assert compile_schema({"enum": [1, True]})(True) and not compile_schema({"const": 1})(True)
    assert compile_schema({"type": "integer"})(5.0) and not compile_schema({"type": "integer"})(True)


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
