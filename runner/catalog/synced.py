"""The synced copy of RunComfy's live catalog: where it lives, how it is kept, and what a sync changed.

``runcomfy-batch models sync`` reads every page of ``GET /v1/models?include_schema=true``
(:mod:`runner.api.catalog`) and keeps the entries as RunComfy wrote them, in one JSON file in the
user's cache folder (:func:`cache_path`). They are normalised (:mod:`.normalise`) each time the
catalog loads, a few milliseconds for the whole catalog, so a newer runner reads an old cache its
own way. Each normalised schema is checked against JSON Schema's metaschema (jsonschema_rs, about
0.1 ms); one that fails is left out, with a note.

The synced entries win over the bundled ones. A complete sync (its pages ended cleanly) also
replaces the bundled list: a bundled model it did not find is set aside (``Catalog.unlisted``, with
the models the sync before listed and this one did not), since RunComfy no longer offers it. An
incomplete one only adds and updates.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..disk import written_whole
from .models import SNAPSHOT, Catalog, ModelSpec
from .normalise import normalise_entry

APP = "runcomfy-batch"
CACHE_FILE = "catalog.json"
# Keys of a schema that say where it came from, not what it checks: a sync that changes only these
# changed nothing.
_PROVENANCE = {"x-source", "x-notes", "$id", "$schema"}


def cache_dir() -> Path:
    """The user's cache folder for the runner, as the platform keeps caches: ``$XDG_CACHE_HOME`` (else
    ``~/.cache``) on Linux and other Unixes, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on
    Windows."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP
    if os.name == "nt":
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else Path.home() / "AppData" / "Local") / APP / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec: a relative path is invalid and must be ignored.
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / APP


def cache_path() -> Path:
    """The file ``models sync`` writes and every catalog load reads."""
    return cache_dir() / CACHE_FILE


@dataclass(frozen=True)
class Synced:
    """One sync's answer: the entries as RunComfy wrote them, when and where they were read, and
    whether every page was read (``complete``); ``notes`` say what did not go as documented."""

    synced_at: str  # ISO 8601, UTC
    base_url: str
    complete: bool
    entries: Sequence[Any]
    notes: Sequence[str] = ()
    pages: int = 0
    removed: Sequence[str] = ()  # models the sync before listed and this one does not
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> str:
        data = {
            "$comment": "Written by `runcomfy-batch models sync`; delete it to use the bundled catalog.",
            "synced_at": self.synced_at,
            "base_url": self.base_url,
            "complete": self.complete,
            "pages": self.pages,
            "notes": list(self.notes),
            "removed": list(self.removed),
            "models": list(self.entries),
        }
        return json.dumps(data, indent=1, ensure_ascii=False) + "\n"

    @property
    def date(self) -> str:
        return self.synced_at[:10]


def read_synced(path: Path) -> tuple[Synced | None, str | None]:
    """The sync kept at ``path`` (None when there is none), and why it cannot be used when it cannot."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path}: the synced catalog cannot be read ({exc}); run `runcomfy-batch models sync`"
    if not isinstance(data, Mapping) or not isinstance(data.get("models"), list):
        return None, f"{path}: not a synced catalog; run `runcomfy-batch models sync`"
    synced = Synced(
        synced_at=str(data.get("synced_at", "")),
        base_url=str(data.get("base_url", "")),
        complete=data.get("complete") is True,
        entries=data["models"],
        notes=[str(n) for n in data.get("notes", []) if isinstance(n, str)],
        pages=int(data["pages"]) if isinstance(data.get("pages"), int) else 0,
        removed=[str(m) for m in data.get("removed", []) if isinstance(m, str)],
        path=path,
    )
    return synced, None


def write_synced(synced: Synced, path: Path) -> None:
    """Keep a sync at ``path``, whole (a reader sees the old file or the new one)."""
    with written_whole(path, text=True) as out:
        out.write(synced.to_json())


def synced_specs(synced: Synced) -> tuple[dict[str, ModelSpec], list[str]]:
    """The models of a sync, normalised and checked, and a note for each entry left out."""
    import jsonschema_rs  # noqa: PLC0415  (loaded only when a sync is kept)

    source = f"RunComfy model catalog synced on {synced.date} from {synced.base_url}"
    path = synced.path or cache_path()
    specs: dict[str, ModelSpec] = {}
    notes: list[str] = []
    for entry in synced.entries:
        result = normalise_entry(entry, source=source)
        if result.schema is None or result.model_id is None:
            notes.extend(f"{result.model_id or 'an entry'}: {note}" for note in result.notes)
            continue
        try:
            jsonschema_rs.meta.validate(result.schema)
        except (jsonschema_rs.ValidationError, ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            notes.append(f"{result.model_id}: its schema is not valid JSON Schema ({why}); left out")
            continue
        specs.setdefault(result.model_id, ModelSpec(result.model_id, result.schema, path, "synced"))
    return specs, notes


def apply_synced(catalog: Catalog, path: Path | None = None) -> None:
    """Put the sync kept at ``path`` (default: the user's cache) over ``catalog``'s models."""
    synced, problem = read_synced(path or cache_path())
    if problem:
        catalog.notes = (*catalog.notes, problem)
    if synced is None:
        return
    specs, notes = synced_specs(synced)
    if synced.complete and specs:
        unlisted = {m for m, spec in catalog.models.items() if m not in specs and spec.origin != "manifest"}
        for model_id in unlisted:
            del catalog.models[model_id]
        catalog.unlisted = frozenset(unlisted | set(synced.removed))
    catalog.models.update(specs)
    catalog.synced = synced
    catalog.notes = (*catalog.notes, *notes)


@dataclass(frozen=True)
class CatalogChanges:
    """What a sync changed: model ids added and removed, and for each changed model what changed."""

    added: list[str]
    removed: list[str]
    changed: dict[str, list[str]]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def baseline(root: Path, previous: Synced | None) -> dict[str, Mapping[str, Any]]:
    """What a sync is compared with: the previous sync's schemas, else the bundled snapshot's (the
    catalog's own entries, not the hand-checked files, so that like is compared with like)."""
    if previous is not None:
        specs, _ = synced_specs(previous)
        return {model_id: spec.schema for model_id, spec in specs.items()}
    try:
        snapshot = json.loads((root / SNAPSHOT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(snapshot.get("models", {}))


def catalog_changes(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> CatalogChanges:
    """The differences between two sets of model schemas, in words."""
    changed = {}
    for model_id in sorted(before.keys() & after.keys()):
        what = schema_changes(before[model_id], after[model_id])
        if what:
            changed[model_id] = what
    return CatalogChanges(sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys()), changed)


def schema_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two schemas of one model: ``inputs added: seed``, ``price``…"""
    out = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    added = sorted(new_props.keys() - old_props.keys())
    removed = sorted(old_props.keys() - new_props.keys())
    differ = sorted(k for k in old_props.keys() & new_props.keys() if old_props[k] != new_props[k])
    for label, names in (("inputs added", added), ("inputs removed", removed), ("inputs changed", differ)):
        if names:
            out.append(f"{label}: {', '.join(names)}")
    for key, label in (
        ("required", "required inputs"),
        ("x-checks", "file rules"),
        ("x-output", "output kind"),
        ("x-price-unit", "price unit"),
        ("x-price", "price"),
    ):
        if old.get(key) != new.get(key):
            out.append(label)
    rest = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)} - _PROVENANCE
    rest -= {"properties", "required", "x-checks", "x-output", "x-price-unit", "x-price"}
    if rest:
        out.append(", ".join(sorted(rest)))
    return out
