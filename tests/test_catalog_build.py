"""The bundled catalog snapshot is exactly what the build writes from the saved answer, every schema in
it is valid JSON Schema 2020-12, and each model's inputs are checked by its own bounds."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from jsonschema import Draft202012Validator

from runner.catalog.build import main
from runner.catalog.models import ModelSpec

SCHEMAS = REPO / "schemas"
SHIPPED = SCHEMAS / "catalog" / "models.json"
ANSWER = SCHEMAS / "catalog" / "source" / "2026-09-23.json"
SNAPSHOT: dict[str, Any] = json.loads(SHIPPED.read_text(encoding="utf-8"))
MODELS: dict[str, dict[str, Any]] = SNAPSHOT["models"]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.json"))}


def test_the_build_reproduces_the_shipped_snapshot_and_leaves_the_hand_checked_schemas_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seeds = digests(SCHEMAS / "models")
    assert main(["--source", str(ANSWER), "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["models.json"]
    assert (tmp_path / "models.json").read_bytes() == SHIPPED.read_bytes()
    assert digests(SCHEMAS / "models") == seeds
    assert "120 models from 2026-09-23.json" in capsys.readouterr().out


def test_check_says_when_the_snapshot_is_out_of_date(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text(SHIPPED.read_text(encoding="utf-8").replace("4K", "8K", 1))
    assert main(["--source", str(ANSWER), "--out", str(tmp_path), "--check"]) == 1
    assert main(["--source", str(ANSWER), "--out", str(SHIPPED.parent), "--check"]) == 0


def test_an_unreadable_answer_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"models": [', encoding="utf-8")
    assert main(["--source", str(broken), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken}: cannot read the saved catalog answer") and err.count("\n") == 1
    assert not (tmp_path / "models.json").exists()


def test_the_snapshot_covers_the_catalog_by_family_and_output_kind() -> None:
    """120 endpoints in 31 families: 90 video, 24 image and 6 audio models, as the source counts them."""
    families = Counter("/".join(model_id.split("/")[:2]) for model_id in MODELS)
    kinds = Counter(kind for schema in MODELS.values() for kind in schema["x-output"])
    assert (len(MODELS), len(families), kinds) == (120, 31, Counter(video=90, image=24, audio=6))
    assert SNAPSHOT["left_out"] == []
    assert SNAPSHOT["hand_checked"] == {
        model_id: f"models/{model_id.replace('kling/', '').replace('/', '-')}.json"
        for model_id in (
            "kling/kling-video-o3/pro/image-to-video",
            "kling/kling-video-o3/standard/reference-to-video",
        )
    }


def test_the_saved_answer_carries_facts_not_prose() -> None:
    """No descriptions, titles, node names or error texts of RunComfy's are kept, only structure."""

    def keys(value: Any) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        if isinstance(value, list):
            return {k for v in value for k in keys(v)}
        return set()

    words = {"description", "title", "display_name", "node_class", "validation_error", "limitations"}
    assert not words & keys(json.loads(ANSWER.read_text(encoding="utf-8"))["models"])
    assert not words & keys(MODELS)


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_every_schema_is_json_schema_2020_12_and_checks_its_own_bounds(model_id: str) -> None:
    schema = MODELS[model_id]
    Draft202012Validator.check_schema(schema)
    spec = ModelSpec(model_id, schema, SHIPPED)
    for example in schema.get("examples", []):  # the saved answer has none; a synced one may
        assert spec.check_input(example) == []
    good = smallest_input(schema)
    assert spec.check_input(good) == [], good
    assert [p.path for p in spec.check_input({**good, "no_such_field": 1})] == ["no_such_field"]
    for name in schema.get("required", []):
        [missing] = spec.check_input({k: v for k, v in good.items() if k != name})
        assert missing.message == f"{name!r} is required"
    for name, prop in schema["properties"].items():
        if "maximum" in prop:
            [problem] = spec.check_input({**good, name: prop["maximum"] + 1})
            assert problem.path == name and f"maximum of {prop['maximum']}" in problem.message
        if "enum" in prop:
            wrong = max(prop["enum"]) + 1 if prop.get("type") == "integer" else "no-such-choice"
            [problem] = spec.check_input({**good, name: wrong})
            assert problem.path == name and "is not one of" in problem.message


def test_media_fields_say_their_kind_and_local_files_only_for_images() -> None:
    kinds = Counter()
    for schema in MODELS.values():
        for prop in schema["properties"].values():
            item = prop.get("items", prop)
            if "x-file" in item:
                kinds[item["x-file"]] += 1
                assert item["pattern"] == (
                    "^(https?://|data:image/)" if item["x-file"] == "image" else "^https?://"
                )
    assert set(kinds) == {"image", "video", "audio"}
    assert sum(kinds.values()) == 156  # every media field of the source


def test_file_rules_become_checks_and_prices_stay_facts() -> None:
    seedream = MODELS["bytedance/seedream-5.0-pro/image-to-image"]
    assert {c["measure"]: {k: c[k] for k in ("gt", "lt") if k in c} for c in seedream["x-checks"]} == {
        "file_size_mb": {"lt": 30},
        "aspect_ratio": {"gt": 0.0625, "lt": 16},
        "width_px": {"gt": 14},
        "height_px": {"gt": 14},
    }
    assert all(c["field"] == "image" and c["each"] for c in seedream["x-checks"])
    assert MODELS["bytedance/seedream-5.0-pro/text-to-image"]["x-price"] == {
        "unit": "output",
        "usd": 0.08,
        "tiers": [{"when": "resolution", "equals": "1K", "usd": 0.04}],
    }
    assert {m["x-price-unit"] for k, m in MODELS.items() if k.startswith("kling/kling-video-o3/")} == {
        "second"
    }


def smallest_input(schema: dict[str, Any]) -> dict[str, Any]:
    """The required fields, each with the smallest value its schema accepts."""
    return {name: smallest_value(schema["properties"][name]) for name in schema.get("required", [])}


def smallest_value(prop: dict[str, Any]) -> Any:
    if "default" in prop:
        return prop["default"]
    if "enum" in prop:
        return prop["enum"][0]
    if prop.get("type") == "array":
        return [smallest_value(prop["items"])] * max(1, prop.get("minItems", 1))
    if "x-file" in prop:
        return {"image": "https://example.com/a.png", "video": "https://example.com/a.mp4"}.get(
            prop["x-file"], "https://example.com/a.mp3"
        )
    if prop.get("type") in ("integer", "number"):
        return prop.get("minimum", 1)
    if prop.get("type") == "boolean":
        return False
    return "x"
