"""Prices as data: what a request costs before it is sent, and where that price was read.

A model's price rule comes from, the later winning: what the catalog states (``x-price``: a unit,
maybe a price, tiers as factors of the base price; dated by the catalog), the bundled table
``schemas/prices.json`` (dated by its ``read_on``), a user's file (``--prices``), and during a run
the API's price call (``GET /v1/models/{id}``, dated the day it answered). A rule is priced per
``second`` of output (``duration``, or the schema's default) or per ``output`` (times the files the
input asks for, e.g. ``num_images``); a rule without a unit prices an image model per output and
any other per second. Where nothing states a price, or a tier changes it by an amount
nobody published, the price is unknown (``None``) and every estimate says so rather than guess.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .models import Catalog

CATALOG_SOURCE = "catalog"
TABLE_SOURCE = "price table"
CALL_SOURCE = "price call"


@dataclass(frozen=True)
class Quote:
    """The estimated price of one request: ``usd`` (None: unknown), the price per unit and the units
    (seconds or files), the tier that applied, and where and when the price was read."""

    usd: float | None
    usd_per_unit: float | None = None
    units: float | None = None
    tier: str = "base"
    unit: str | None = None
    source: str | None = None
    read_on: str | None = None


@dataclass(frozen=True)
class PriceTable:
    """Per-model price rules, as read from the catalog, the bundled table and a user's file."""

    models: Mapping[str, Mapping[str, Any]]
    read_on: str

    @classmethod
    def load(cls, catalog: Catalog, override: Path | None = None) -> PriceTable:
        models = catalog_rules(catalog)
        data = catalog.read_json("prices.json")
        read_on = str(data.get("read_on", "unknown"))
        for model_id, rule in data["models"].items():
            dated = {"source": TABLE_SOURCE, "read_on": read_on}
            models[model_id] = {**models.get(model_id, {}), **rule, **dated}
        if override is not None:
            try:
                extra = json.loads(Path(override).read_text(encoding="utf-8"))
                given = dict(extra.get("models", {}))
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                raise UsageError(f"{override}: cannot read the price file: {exc}") from None
            read_on = str(extra.get("read_on", read_on))
            for model_id, rule in given.items():
                if not isinstance(rule, Mapping):
                    raise UsageError(f"{override}: the price of {model_id!r} is not an object")
                models[model_id] = {
                    **models.get(model_id, {}),
                    **rule,
                    "source": f"--prices {Path(override).name}",
                    "read_on": read_on,
                }
        return cls(models, read_on)

    def refreshed(
        self, model_id: str, answer: Mapping[str, Any], today: datetime.date | None = None
    ) -> PriceTable:
        """This table with ``model_id``'s base price taken from the API's price call. Tiers with a
        price of their own keep their ratio to the base; tiers stated as factors stay factors."""
        base = answer.get("base_price_usd")
        if isinstance(base, str):
            try:
                base = float(base)
            except ValueError:
                return self
        if not isinstance(base, int | float) or isinstance(base, bool) or base <= 0:
            return self
        rule = self.models.get(model_id, {})
        unit = str(answer.get("price_unit") or unit_of(rule))
        old = rule.get("usd")
        ratio = float(base) / float(old) if isinstance(old, int | float) and old > 0 else None
        tiers = []
        for tier in rule.get("tiers", []):
            if "usd" in tier and ratio is not None:
                tiers.append({**tier, "usd": round(float(tier["usd"]) * ratio, 6)})
            elif "usd" not in tier:
                tiers.append(tier)  # a factor of the base (or an unknown one): still true of the new base
        when = (today or datetime.date.today()).isoformat()
        new_rule = {**rule, "unit": unit, "usd": float(base), "tiers": tiers, "source": CALL_SOURCE}
        return PriceTable({**self.models, model_id: {**new_rule, "read_on": when}}, self.read_on)

    def quote(
        self, model_id: str, input: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
    ) -> Quote:
        rule = self.models.get(model_id)
        if rule is None:
            return Quote(None)
        defaults = defaults or {}
        unit = unit_of(rule)
        facts = {"unit": unit, "source": rule.get("source"), "read_on": rule.get("read_on")}
        base = rule.get("usd")
        usd, tier = (float(base) if isinstance(base, int | float) else None), "base"
        for candidate in rule.get("tiers", []):
            if _applies(candidate, input, defaults):
                tier = str(candidate.get("name") or candidate["when"])
                if "usd" in candidate:
                    usd = float(candidate["usd"])
                elif isinstance(candidate.get("factor"), int | float) and usd is not None:
                    usd = usd * float(candidate["factor"])
                else:  # a change of price nobody published
                    usd = None
                break
        if usd is None:
            return Quote(None, None, None, tier, **facts)
        if unit != "second":
            count_field = rule.get("count_field")
            count = input.get(count_field, defaults.get(count_field, 1)) if count_field else 1
            files = count if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else 1
            return Quote(round(usd * files, 6), usd, float(files), tier, **facts)
        seconds = _seconds(input.get(rule.get("seconds_field", "duration")))
        if seconds is None:
            seconds = _seconds(defaults.get(rule.get("seconds_field", "duration")))
        if seconds is None:
            return Quote(None, usd, None, tier, **facts)
        return Quote(round(usd * seconds, 6), usd, seconds, tier, **facts)

    def rule_for(self, model_id: str) -> Mapping[str, Any] | None:
        """The price rule of a model, as the table holds it (None: nothing states one)."""
        return self.models.get(model_id)


def catalog_rules(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """The price facts each model's schema states, as rules of the table's shape, dated by where they
    were read (the snapshot's date, or the day of the sync)."""
    out: dict[str, dict[str, Any]] = {}
    synced_on = catalog.synced.date if catalog.synced is not None else None
    for model_id, spec in catalog.models.items():
        price = spec.schema.get("x-price")
        rule: dict[str, Any] = dict(price) if isinstance(price, Mapping) else {}
        if spec.price_unit:
            rule["unit"] = spec.price_unit
        if spec.outputs_field:
            rule["count_field"] = spec.outputs_field
        if spec.output_kind:
            rule["kind"] = spec.output_kind
        if rule.keys() <= {"kind"}:
            continue
        read_on = synced_on if spec.origin == "synced" else catalog.read_on
        out[model_id] = {**rule, "source": CATALOG_SOURCE, "read_on": read_on}
    return out


def unit_of(rule: Mapping[str, Any]) -> str:
    """What a rule prices: its ``unit``, else per output for a model that makes images, else per
    second (a user's price file may leave the unit out)."""
    unit = rule.get("unit")
    if unit in ("second", "output"):
        return str(unit)
    return "output" if rule.get("kind") == "image" else "second"


def _applies(tier: Mapping[str, Any], input: Mapping[str, Any], defaults: Mapping[str, Any]) -> bool:
    """A tier applies when its input is set (present and not false or empty), or with ``equals``, has
    that value; an input left out counts as its default, as the API applies it."""
    name = tier.get("when")
    if not isinstance(name, str):
        return False
    value = input.get(name, defaults.get(name))
    if "equals" in tier:
        return bool(value == tier["equals"])
    return value not in (None, False, "", [])


def _seconds(value: Any) -> float | None:
    """Seconds of output from a duration input: a number, or a number written as text (``"5"``);
    ``auto`` and the like are not known before the request runs."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().removesuffix("s"))
        except ValueError:
            return None
    return None
