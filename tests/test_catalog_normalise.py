"""A catalog entry becomes a model schema in the project's conventions; whatever the entry's shape,
the normaliser returns a valid schema or none, and notes what it left out, never raising."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from runner.catalog.models import ModelSpec
from runner.catalog.normalise import catalog_entries, normalise_entry


def entry(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required or []}
    return {"model_id": "acme/model/text-to-video", "kind": "model", "categories": ["text-to-video"]} | {
        "price_unit": "second",
        "input_schema": schema,
        **extra,
    }


def test_types_bounds_enums_defaults_and_required_are_kept_and_prose_is_not() -> None:
    result = normalise_entry(
        entry(
            {
                "prompt": {"type": "string", "description": "Say what happens.", "maxLength": 500},
                "strength": {"type": "float", "minimum": 0, "maximum": 1, "default": 0.5, "title": "S"},
                "duration": {"type": "integer", "enum": [5, 10], "default": 5},
            },
            ["prompt"],
        ),
        source="a test",
    )
    assert result.notes == []
    schema = result.schema
    assert schema is not None
    assert schema["properties"] == {
        "prompt": {"type": "string", "maxLength": 500},
        "strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        "duration": {"type": "integer", "enum": [5, 10], "default": 5},
    }
    assert schema["required"] == ["prompt"] and schema["additionalProperties"] is False
    assert (schema["x-model-id"], schema["x-source"], schema["x-output"], schema["x-price-unit"]) == (
        "acme/model/text-to-video",
        "a test",
        ["video"],
        "second",
    )
    Draft202012Validator.check_schema(schema)
    problems = ModelSpec("m", schema, Path(__file__)).check_input({"prompt": "x", "strength": 1.5})
    assert [(p.path, p.message) for p in problems] == [("strength", "1.5 is greater than the maximum of 1")]


def test_media_formats_become_file_fields_of_their_kind() -> None:
    result = normalise_entry(
        entry(
            {
                "image": {"type": "string", "format": "image_uri"},
                "images": {"type": "array", "format": "image_uris", "maxItems": 3},
                "video": {"type": "string", "format": "video_uri"},
                "videos": {"type": "array", "items": {"type": "string", "format": "video_uri"}},
                "audio": {"format": "audio_uri"},
                "audios": {"type": "array", "format": "audio_uris"},
            }
        ),
        source="t",
    )
    assert result.schema is not None
    props = result.schema["properties"]
    image = {"type": "string", "minLength": 1, "pattern": "^(https?://|data:image/)", "x-file": "image"}
    url = {"type": "string", "minLength": 1, "pattern": "^https?://"}
    assert props["image"] == image
    assert props["images"] == {"type": "array", "items": image, "maxItems": 3}
    assert props["video"] == {**url, "x-file": "video"}
    assert props["videos"] == {"type": "array", "items": {**url, "x-file": "video"}}
    assert props["audio"] == {**url, "x-file": "audio"}
    assert props["audios"] == {"type": "array", "items": {**url, "x-file": "audio"}}
    spec = ModelSpec("m", result.schema, Path(__file__))
    assert spec.file_fields == {n: n.rstrip("s") for n in props}


def test_validation_rules_become_checks_joined_per_measure() -> None:
    rules = [
        {"validation_rule": "file_size_mb<", "validation_value": 30, "validation_error": "RunComfy's words"},
        {"validation_rule": "width/height>", "validation_value": 0.25},
        {"validation_rule": "width/height<", "validation_value": 4},
        {"validation_rule": "height_pixels>=", "validation_value": 300},
        {"validation_rule": "colour_depth>", "validation_value": 8},
        {"validation_rule": "file_size_mb<", "validation_value": "big"},
    ]
    result = normalise_entry(
        entry({"refs": {"type": "array", "format": "image_uris", "validations": rules}}), source="t"
    )
    assert result.schema is not None
    assert result.schema["x-checks"] == [
        {
            "field": "refs",
            "each": True,
            "measure": "file_size_mb",
            "lt": 30,
            "message": "file size must be under 30 MB",
        },
        {
            "field": "refs",
            "each": True,
            "measure": "aspect_ratio",
            "gt": 0.25,
            "lt": 4,
            "message": "width/height must be over 0.25 and under 4",
        },
        {
            "field": "refs",
            "each": True,
            "measure": "height_px",
            "ge": 300,
            "message": "height must be at least 300 pixels",
        },
    ]
    refused = [{"validation_rule": "colour_depth>", "validation_value": 8}, rules[5]]
    assert [n for n in result.notes if "validation rule" in n] == [
        f"refs: validation rule {rule!r} not understood; not checked" for rule in refused
    ]
    single = normalise_entry(
        entry({"clip": {"format": "video_uri", "validations": rules[:1]}}), source="t"
    ).schema
    assert single is not None and "each" not in single["x-checks"][0]


def test_what_cannot_be_understood_is_left_out_and_noted() -> None:
    result = normalise_entry(
        {
            "model_id": " acme/odd ",
            "categories": "image-to-image",
            "price_unit": "per_token",
            "input_schema": {
                "properties": {
                    "a": {"type": "tensor", "minimum": "five"},
                    "b": {"enum": "small", "maxLength": -1},
                    "c": "just text",
                    "d": {"type": "integer", "enum": ["x", "y"], "default": "z"},
                    "e": {"type": "string", "pattern": "([", "format": "colour", "widget": "slider"},
                    "f": {"type": ["string", "null"]},
                },
                "required": ["a", "ghost"],
            },
            "x-omitted_inputs": ["multi_prompt"],
        },
        source="t",
    )
    schema = result.schema
    assert schema is not None and result.model_id == "acme/odd"
    Draft202012Validator.check_schema(schema)
    assert schema["properties"] == {
        "a": {},
        "b": {},
        "c": {},
        "d": {"enum": ["x", "y"], "default": "z"},
        "e": {"type": "string"},
        "f": {"type": ["string", "null"]},
        "multi_prompt": {},
        "ghost": {},
    }
    assert schema["required"] == ["a", "ghost"] and schema["x-output"] == ["image"]
    assert result.notes == [
        "price unit 'per_token' not understood; price unknown",
        "a: type 'tensor' not understood; any type accepted",
        "a: minimum 'five' is not a number; left out",
        "b: enum 'small' is not a list of choices; left out",
        "b: maxLength -1 is not a count; left out",
        "c: described by a str, not an object; not checked",
        "d: its choices are not of type integer; the type is left out",
        "d: the default 'z' is not one of its choices",
        "e: pattern '([' is not a regular expression; left out",
        "e: format 'colour' not understood; left out",
        "e: 'widget' not understood; left out",
        "multi_prompt: accepted, but its structure is unknown; not checked",
        "ghost: required but not described; not checked beyond being present",
    ]


def test_entries_without_a_usable_model_are_refused_with_a_note() -> None:
    assert normalise_entry(["not", "an", "object"], source="t").notes == [
        "an entry that is a list, not an object"
    ]
    assert normalise_entry({"kind": "model"}, source="t").schema is None
    workflow = normalise_entry({"model_id": "acme/flow", "kind": "workflow"}, source="t")
    assert (workflow.model_id, workflow.schema) == ("acme/flow", None)
    bare = normalise_entry({"model_id": "acme/bare"}, source="t")
    assert (
        bare.schema is not None
        and "properties" not in bare.schema
        and bare.notes
        == [
            "output kind unknown (no category names video, image or audio)",
            "price unit unknown",
            "no input schema: its inputs are passed on unchecked",
        ]
    )


def test_output_kinds_and_prices() -> None:
    both = normalise_entry(
        {
            "model_id": "m",
            "categories": ["text-to-image", "image-to-video", "text-to-video"],
            "price_unit": "Seconds",
        },
        source="t",
    ).schema
    assert both is not None and both["x-output"] == ["image", "video"] and both["x-price-unit"] == "second"
    fallback = normalise_entry({"model_id": "m", "output_type": "AUDIO"}, source="t").schema
    assert fallback is not None and fallback["x-output"] == ["audio"]
    priced = normalise_entry(
        {
            "model_id": "m",
            "price_unit": "output",
            "base_price_usd": 0.05,
            "x-pricing": {
                "tiers": [{"when": "video", "factor": None}, {"when": "sound", "factor": 1.25}, {"x": 1}]
            },
        },
        source="t",
    )
    assert priced.schema is not None and priced.schema["x-price"] == {
        "unit": "output",
        "usd": 0.05,
        "tiers": [{"when": "video", "factor": None}, {"when": "sound", "factor": 1.25}],
    }
    assert "price tier {'x': 1} names no input; left out" in priced.notes


def test_example_inputs_are_kept_as_examples() -> None:
    result = normalise_entry(
        entry({"prompt": {"type": "string"}}, examples=[{"prompt": "a cat"}, "text"]), source="t"
    )
    assert result.schema is not None and result.schema["examples"] == [{"prompt": "a cat"}]
    assert "1 example input(s) that are not objects left out" in result.notes


def test_catalog_entries_are_found_wherever_a_page_keeps_them() -> None:
    assert catalog_entries([{"model_id": "a"}]) == ([{"model_id": "a"}], [])
    for key in ("models", "data", "items", "results"):
        assert catalog_entries({key: [1], "has_more": True}) == ([1], [])
    assert catalog_entries({"next": None})[0] == []
    assert catalog_entries("nothing") == ([], ["the answer is a str, not a list or an object"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(["type", "format", "enum", "default", "minimum", "maxItems", "items", "validations"])
PROPERTY = st.dictionaries(
    KEYS, JSON | st.sampled_from(["float", "image_uris", "video_uri", "array"]), max_size=6
)
ENTRY = st.fixed_dictionaries(
    {"model_id": st.text(min_size=1, max_size=8)},
    optional={
        "categories": JSON,
        "price_unit": JSON,
        "x-pricing": JSON,
        "input_schema": st.fixed_dictionaries(
            {"properties": st.dictionaries(st.text(max_size=6), PROPERTY | JSON, max_size=4)},
            optional={"required": JSON},
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(ENTRY, JSON))
def test_any_entry_gives_a_valid_schema_or_none_and_never_raises(raw: Any) -> None:
    result = normalise_entry(raw, source="t")
    if result.schema is not None:
        Draft202012Validator.check_schema(result.schema)
    assert all(isinstance(note, str) for note in result.notes)
