"""What ``runcomfy-batch models`` prints: the list, one model's inputs, and what a sync changed."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import anyio
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..batch import BatchOptions, ModelsSynced, sync_models
from ..catalog.listing import input_lines, model_row, model_rows, price_words, summary
from ..catalog.models import Catalog
from ..catalog.pricing import PriceTable
from ..catalog.schema import show as show_value
from ..errors import EXIT_OK, UsageError, redact

SHOWN_PER_CHANGE = 20  # ids listed per kind of change; the rest are counted


def _out(text: str = "") -> None:
    print(redact(text))


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    tty = sys.stdout.isatty()
    return Console(file=buffer, force_terminal=tty, width=None if tty else 160, highlight=False), buffer


def _flush(buffer: io.StringIO) -> None:
    text = buffer.getvalue()
    if not sys.stdout.isatty():  # rich pads table lines: no trailing blanks in a pipe or a file
        text = "".join(line.rstrip() + "\n" for line in text.splitlines())
    sys.stdout.write(redact(text))


def list_models(
    *, kind: str | None = None, search: str | None = None, prices_path: Path | None = None, as_json: bool
) -> int:
    catalog = Catalog.load()
    prices = PriceTable.load(catalog, prices_path)
    rows = [
        row
        for row in model_rows(catalog, prices)
        if (kind is None or kind in row["output_kinds"])
        and (search is None or search.lower() in row["model_id"].lower())
    ]
    if as_json:
        _out(json.dumps(rows, indent=2, ensure_ascii=False))
        return EXIT_OK
    console, buffer = _console()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in ("model", "output", "price", "from"):
        table.add_column(name, no_wrap=name != "price")
    for row in rows:
        made = row["output_kind"] or "?"
        if row["max_outputs"] > 1:
            made += f" ×{row['max_outputs']}"
        table.add_row(Text(row["model_id"]), made, price_words(row), row["source"])
    console.print(table)
    facts = summary(catalog)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(facts.by_kind.items(), key=lambda kv: -kv[1]))
    shown = f"{len(rows)} of " if len(rows) != facts.models else ""
    console.print(f"{shown}{facts.models} models ({kinds}) in {facts.families} families")
    console.print(f"bundled catalog read on {catalog.read_on}; " + _synced_words(catalog))
    for note in catalog.notes[:5]:
        console.print(f"note: {note}")
    _flush(buffer)
    return EXIT_OK


def _synced_words(catalog: Catalog) -> str:
    synced = catalog.synced
    if synced is None:
        return "never synced (`runcomfy-batch models sync` fetches RunComfy's current catalog)"
    whole = "" if synced.complete else ", incomplete"
    return f"synced {synced.synced_at} from {synced.base_url}{whole}"


def show(model_id: str, *, prices_path: Path | None = None, as_json: bool = False) -> int:
    catalog = Catalog.load()
    spec = catalog.get(model_id)
    if spec is None:
        closest = catalog.closest(model_id)
        near = f"; closest: {', '.join(closest)}" if closest else ""
        raise UsageError(
            f"unknown model {show_value(model_id, 120)}{near} (`runcomfy-batch models` lists the "
            f"{len(catalog)} known; `runcomfy-batch models sync` fetches RunComfy's current catalog)"
        )
    prices = PriceTable.load(catalog, prices_path)
    row = model_row(spec, prices)
    if as_json:
        _out(json.dumps({**row, "schema": spec.schema}, indent=2, ensure_ascii=False))
        return EXIT_OK
    _out(f"{spec.model_id}  ({spec.origin}: {spec.source})")
    made = ", ".join(spec.output_kinds) or "unknown"
    count = f", up to {spec.max_outputs} per request ({spec.outputs_field})" if spec.max_outputs > 1 else ""
    _out(f"  makes: {made}{count}; categories: {', '.join(spec.categories) or 'none stated'}")
    _out(f"  price: {_price_line(prices, model_id, row)}")
    _out("  inputs:")
    lines = input_lines(spec)
    width = max((len(line.name) for line in lines), default=0)
    for line in lines:
        need = "required" if line.required else "optional"
        default = f"; default {show_value(line.default)}" if line.has_default else ""
        _out(f"    {line.name:<{width}}  {need}: {line.kind}{default}")
        for rule in line.rules:
            _out(f"    {'':<{width}}  each file: {rule}")
    if not lines:
        _out("    (none described: inputs are passed on unchecked)")
    return EXIT_OK


def _price_line(prices: PriceTable, model_id: str, row: dict[str, Any]) -> str:
    rule = prices.rule_for(model_id) or {}
    if row["price_usd"] is None:
        unit = f" per {row['price_unit']}" if row["price_unit"] else ""
        return f"unknown{unit}: a run asks the API's price call; under a budget, give one with --prices FILE"
    tiers = []
    for tier in rule.get("tiers", []):
        name = tier.get("name") or tier.get("when")
        when = f"{tier['when']} = {show_value(tier['equals'])}" if "equals" in tier else f"with {name}"
        if "usd" in tier:
            tiers.append(f"{when}: ${tier['usd']:g}")
        elif tier.get("factor") is not None:
            tiers.append(f"{when}: ×{tier['factor']:g}")
        else:
            tiers.append(f"{when}: unknown")
    extra = f" ({'; '.join(tiers)})" if tiers else ""
    return f"{price_words(row)}{extra}, from the {row['price_source']} read on {row['price_read_on']}"


def sync(options: BatchOptions) -> int:
    done: ModelsSynced = anyio.run(lambda: sync_models(options))
    changes = done.changes
    whole = "" if done.complete else " (incomplete: see the notes; nothing was removed)"
    _out(f"synced {done.models} models from {done.pages} page(s) into {done.path}{whole}")
    for label, ids in (("added", changes.added), ("removed", changes.removed)):
        if ids:
            _out(f"{label} ({len(ids)}):")
            for model_id in ids[:SHOWN_PER_CHANGE]:
                _out(f"  {model_id}")
            if len(ids) > SHOWN_PER_CHANGE:
                _out(f"  … and {len(ids) - SHOWN_PER_CHANGE} more")
    if changes.changed:
        _out(f"changed ({len(changes.changed)}):")
        for model_id, what in list(changes.changed.items())[:SHOWN_PER_CHANGE]:
            _out(f"  {model_id}: {'; '.join(what)}")
        if len(changes.changed) > SHOWN_PER_CHANGE:
            _out(f"  … and {len(changes.changed) - SHOWN_PER_CHANGE} more")
    if not changes:
        _out("nothing changed")
    for note in done.notes:
        _out(f"note: {note}")
    return EXIT_OK
