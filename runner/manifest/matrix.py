"""Matrices and takes: one manifest entry expanded into a job per combination of its matrix values, each
with a stable, file-safe id (``hero--duration-5--aspect_ratio-16x9``, or an id template's ``hero-5s``),
and into ``takes: N`` separately paid jobs of one input (``<id>--take-1`` …)."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator
from typing import Any

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_TOKEN = 32


def matrix_size(matrix: dict[str, list[Any]]) -> int:
    """How many jobs a matrix expands into."""
    return math.prod(len(values) for values in matrix.values())


def value_tokens(values: list[Any]) -> list[str]:
    """How each value of one matrix field appears in ids: ``16:9`` -> ``16x9``, ``5`` -> ``5``.

    Values that are long, structured, or would collide with a sibling once made file-safe appear as
    their 1-based position in the list instead, so ids stay short and unique.
    """
    tokens = [_token(value) for value in values]
    if any(t is None for t in tokens) or len(set(tokens)) != len(tokens):
        return [str(i) for i in range(1, len(values) + 1)]
    return tokens  # type: ignore[return-value]


def _token(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = _UNSAFE_CHARS.sub("_", value.replace(":", "x")).strip("_")
    else:
        return None
    return text if 0 < len(text) <= _MAX_TOKEN and not _UNSAFE_CHARS.search(text) else None


def expand_matrix(job_id: str, matrix: dict[str, list[Any]]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Each combination's id and pick (the index of each field's value), first field varying slowest.

    A plain id is extended field by field (``hero--duration-5--aspect_ratio-16x9``); an id with
    ``{field}`` placeholders is a template (``hero-{duration}s-{aspect_ratio}`` -> ``hero-5s-16x9``).
    """
    keys = list(matrix)
    tokens = [value_tokens(matrix[key]) for key in keys]
    parts = _PLACEHOLDER.split(job_id)  # literal, name, literal, name, ..., literal
    for pick in itertools.product(*(range(len(matrix[key])) for key in keys)):
        chosen = {key: tokens[k][i] for k, (key, i) in enumerate(zip(keys, pick, strict=True))}
        if len(parts) == 1:
            yield job_id + "".join(f"--{key}-{token}" for key, token in chosen.items()), pick
        else:
            yield "".join(chosen[p] if n % 2 else p for n, p in enumerate(parts)), pick


def template_problem(job_id: str, matrix: dict[str, list[Any]]) -> str | None:
    """What is wrong with an id template for this matrix, if anything."""
    if "{" not in job_id and "}" not in job_id:
        return None
    parts = _PLACEHOLDER.split(job_id)
    names, literals = parts[1::2], parts[0::2]
    if any("{" in text or "}" in text for text in literals):
        return f"{job_id!r} has unbalanced braces"
    unknown = [n for n in names if n not in matrix]
    if unknown:
        return f"{{{unknown[0]}}} in the id template is not a matrix field (matrix: {', '.join(matrix)})"
    missing = [key for key in matrix if key not in names]
    if missing:
        return (
            f"the id template must name every matrix field so ids are unique; add "
            f"{', '.join('{' + key + '}' for key in missing)}"
        )
    return None


def take_ids(job_id: str, takes: int) -> list[str]:
    """The ids of a job's takes: the id itself for one, else ``<id>--take-1`` … ``<id>--take-N``."""
    return [job_id] if takes == 1 else [f"{job_id}--take-{n}" for n in range(1, takes + 1)]


def takes_of(value: Any) -> int:
    """A ``takes`` value the schema let through, else 1 (a bad one is reported by the schema)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100 else 1
