"""Checking a value against a JSON Schema: fast when it is valid, and in a manifest author's words when not.

Two implementations of JSON Schema 2020-12 see every schema. jsonschema_rs (Rust) answers "valid?"
in about a microsecond, which a 100,000-job manifest needs; jsonschema (Python, the reference, 35-60 µs
an input) is asked only when that answer is not yes, and every message a user reads comes from its
errors, translated once, by :func:`describe`.

jsonschema_rs's no is a question, never a verdict: it is stricter than jsonschema in a few corners,
and there jsonschema decides. Its ``$`` matches only at the very end of the text, as JSON Schema's
regular expressions mean it, where Python's ``re`` also matches before a final newline (``"x\\n"``
passes ``^[a-z]$`` in jsonschema); NaN and infinity fail its ``minimum`` where Python's comparisons
let them pass; and it refuses what JSON has no word for (a key that is not text, a lone surrogate, a
date), where jsonschema judges it. A yes is always jsonschema's yes:
``tests/test_manifest_properties.py`` checks that on the bundled schemas and on every keyword.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # both validators load when something is checked, not for every command
    import jsonschema_rs
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

Words = Literal["manifest", "input"]
"""Whose words a message uses: the manifest's own keys, or a model's input fields."""

_LONG_QUOTED = re.compile(r"'[^']{100,}'|\"[^\"]{100,}\"")
_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
_TYPE_CHECKS = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int),
    "number": lambda v: isinstance(v, float),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


class Schema:
    """One JSON Schema 2020-12; each validator is built the first time it is needed."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema

    @cached_property
    def _fast(self) -> jsonschema_rs.Validator:
        import jsonschema_rs  # noqa: PLC0415  (see the TYPE_CHECKING import)

        return jsonschema_rs.Draft202012Validator(dict(self.schema), offline=True)

    @cached_property
    def reference(self) -> Draft202012Validator:
        from jsonschema import Draft202012Validator  # noqa: PLC0415  (see the TYPE_CHECKING import)

        return Draft202012Validator(self.schema)

    def surely_valid(self, instance: Any) -> bool:
        """True: ``instance`` is valid, in about a µs. False: it may not be; :meth:`errors` tells."""
        try:
            return self._fast.is_valid(instance)
        except ValueError:  # a value JSON has no word for: jsonschema judges it
            return False

    def errors(self, instance: Any) -> list[ValidationError]:
        """jsonschema's errors with ``instance``; none, at once, when it is surely valid."""
        if self.surely_valid(instance):
            return []
        return list(self.reference.iter_errors(instance))


def describe(error: ValidationError, words: Words) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """A jsonschema error as (path in the checked value, message) pairs, in a manifest author's words.

    A schema may word its own messages: ``x-errorMessages`` per keyword, ``patternErrorMessage``.
    Otherwise the manifest's words name types in plain English and suggest a key for a typo; a
    model input's words keep jsonschema's own for types.
    """
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    kind = error.validator
    custom = schema.get("x-errorMessages", {}).get(kind)
    if kind == "pattern" and "patternErrorMessage" in schema:
        custom = str(schema["patternErrorMessage"]).rstrip(".")
    if custom:
        yield path, f"{show(error.instance)} {custom}"
    elif kind == "additionalProperties" and isinstance(error.instance, dict):
        known = list(schema.get("properties", {}))
        for key in sorted(k for k in error.instance if k not in known):
            if words == "manifest":
                yield (*path, key), f"unknown key{suggest(key, known)} (known keys: {', '.join(known)})"
            else:
                yield (*path, key), f"unknown field (known: {', '.join(sorted(known))})"
    elif kind == "required":
        yield path, error.message.replace("is a required property", "is required")
    elif kind == "type" and words == "manifest":
        names = [error.validator_value] if isinstance(error.validator_value, str) else error.validator_value
        wanted = " or ".join(_TYPE_WORDS.get(n, n) for n in names)
        yield path, f"must be {wanted}, not {show(error.instance)}"
    elif kind == "maxItems":
        yield path, f"has {len(error.instance)} items, more than the maximum of {error.validator_value}"
    elif kind == "pattern":
        if "data:" in str(error.validator_value):
            yield path, f"{error.instance!r} is not an http(s) URL, data: URI or local file"
        else:
            yield path, f"{error.instance!r} is not an http(s) URL (a public URL is needed here)"
    else:
        yield path, shorten(error.message)


def show(value: Any, limit: int = 60) -> str:
    """A value as a message shows it: short, on one line, ``null``/``true`` as YAML writes them."""
    if value is None or isinstance(value, bool):
        text = json.dumps(value)
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten(message: str, limit: int = 300) -> str:
    """A message with long quoted values cut short ('0xffff…'), and never more than ``limit`` long."""
    message = _LONG_QUOTED.sub(lambda m: m.group()[:97] + "…" + m.group()[0], " ".join(message.split()))
    return message if len(message) <= limit else message[: limit - 1] + "…"


def suggest(word: str, known: Sequence[str]) -> str:
    """`` (did you mean 'input'?)`` for a likely typo, else nothing."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def type_word(value: Any) -> str:
    """``a list``, ``text``… for the type of a parsed YAML value."""
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPE_CHECKS[name](value):
            return _TYPE_WORDS[name]
    return type(value).__name__
