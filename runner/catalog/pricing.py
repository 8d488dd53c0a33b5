"""Prices as data: what a request costs before it is sent.

The table is ``schemas/prices.json`` (with the date it was read), optionally overlaid per model by a
user's file. Cost of a request = tier price × the seconds of output (``duration``, or the schema's
default). A model missing from the table has an unknown price, and every estimate says so (``None``)
rather than guessing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .models import Catalog


@dataclass(frozen=True)
class Quote:
    """The estimated price of one request."""

    usd: float | None
    usd_per_unit: float | None = None
    units: float | None = None
    tier: str = "base"


@dataclass(frozen=True)
class PriceTable:
    """Per-model price rules, as read from the bundled table and a user's override."""

    models: Mapping[str, Mapping[str, Any]]
    read_on: str

    @classmethod
    def load(cls, catalog: Catalog, override: Path | None = None) -> PriceTable:
        data = catalog.read_json("prices.json")
        models = dict(data["models"])
        read_on = data.get("read_on", "unknown")
        if override is not None:
            try:
                extra = json.loads(Path(override).read_text(encoding="utf-8"))
                models.update(extra.get("models", {}))
            except (OSError, ValueError, AttributeError) as exc:
                raise UsageError(f"{override}: cannot read the price file: {exc}") from None
            read_on = extra.get("read_on", read_on)
        return cls(models, read_on)

    def refreshed(self, model_id: str, answer: Mapping[str, Any]) -> PriceTable:
        """This table with ``model_id``'s base price taken from the API's price call. Tiers keep their
        ratio to the base (the call gives only the base price)."""
        base = answer.get("base_price_usd")
        rule = self.models.get(model_id)
        if not isinstance(base, int | float) or base <= 0:
            return self
        unit = str(answer.get("price_unit") or "second")
        if rule is None:
            new_rule: dict[str, Any] = {"unit": unit, "usd": float(base), "source": "api"}
        else:
            ratio = float(base) / float(rule["usd"]) if rule.get("usd") else 1.0
            tiers = [{**t, "usd": round(float(t["usd"]) * ratio, 6)} for t in rule.get("tiers", [])]
            new_rule = {**rule, "unit": unit, "usd": float(base), "tiers": tiers, "source": "api"}
        return PriceTable({**self.models, model_id: new_rule}, self.read_on)

    def quote(
        self, model_id: str, input: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
    ) -> Quote:
        rule = self.models.get(model_id)
        if rule is None:
            return Quote(None)
        usd, tier = float(rule["usd"]), "base"
        for candidate in rule.get("tiers", []):
            if input.get(candidate["when"]) not in (None, False, "", []):
                usd, tier = float(candidate["usd"]), candidate.get("name", candidate["when"])
                break
        if rule.get("unit", "second") != "second":
            return Quote(round(usd, 6), usd, 1, tier)
        field_name = rule.get("seconds_field", "duration")
        seconds = input.get(field_name, (defaults or {}).get(field_name))
        if not isinstance(seconds, int | float):
            return Quote(None, usd, None, tier)
        return Quote(round(usd * seconds, 6), usd, float(seconds), tier)
