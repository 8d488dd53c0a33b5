"""A fast yes/no JSON Schema 2020-12 check for the subset of keywords our schemas use.

jsonschema needs 35-60 µs to accept one small job input; a 100,000-job manifest must be checked in
well under a second. :func:`compile_schema` turns a schema into nested closures that only answer
"valid or not" (a few µs per input). Messages never come from here: when an instance fails, the caller
asks jsonschema for the errors, so every word a user reads still comes from the reference
implementation. A schema that uses a keyword outside the subset compiles to jsonschema's own
``is_valid``: slower, never different. ``tests/test_manifest_properties.py`` checks that both agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator

Check = Callable[[Any], bool]

# Keywords jsonschema would act on but this compiler does not: their presence means "fall back".
_UNSUPPORTED = frozenset(
    {
        "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$anchor", "contains", "minContains",
        "maxContains", "dependentRequired", "dependentSchemas", "dependencies", "multipleOf",
        "patternProperties", "prefixItems", "uniqueItems", "unevaluatedItems",
        "unevaluatedProperties", "additionalItems",
    }
)

_TYPES: dict[str, Check] = {
    "string": lambda x: isinstance(x, str),
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": lambda x: isinstance(x, int | float) and not isinstance(x, bool),
    # Draft 2020-12: 5.0 is an integer too.
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool))
    or (isinstance(x, float) and x.is_integer()),
}


class _Unsupported(Exception):
    pass


def compile_schema(schema: Mapping[str, Any] | bool) -> Check:
    """A function telling whether an instance is valid against ``schema`` (same answer as jsonschema)."""
    try:
        return _Compiler(schema).compile(schema)
    except _Unsupported:
        return Draft202012Validator(schema).is_valid


def json_equal(one: Any, two: Any) -> bool:
    """Equality as JSON Schema means it: ``True`` is not ``1``, lists and objects compare deeply."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(json_equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return one.keys() == two.keys() and all(json_equal(one[k], two[k]) for k in one)
    if isinstance(one, bool) or isinstance(two, bool):
        return isinstance(one, bool) and isinstance(two, bool) and one == two
    return bool(one == two)


def _all(checks: list[Check]) -> Check:
    if not checks:
        return lambda x: True
    if len(checks) == 1:
        return checks[0]
    checks_t = tuple(checks)

    def check(x: Any) -> bool:
        for c in checks_t:
            if not c(x):
                return False
        return True

    return check


class _Compiler:
    def __init__(self, root: Mapping[str, Any] | bool) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def compile(self, schema: Mapping[str, Any] | bool) -> Check:
        if schema is True:
            return lambda x: True
        if schema is False:
            return lambda x: False
        if not isinstance(schema, Mapping):
            raise _Unsupported
        if _UNSUPPORTED.intersection(schema) or ("$id" in schema and schema is not self.root):
            raise _Unsupported
        checks: list[Check] = []
        if "type" in schema:
            names = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
            if not names or not set(names) <= _TYPES.keys():
                raise _Unsupported
            type_checks = tuple(_TYPES[n] for n in names)
            if len(type_checks) == 1:
                checks.append(type_checks[0])
            else:
                checks.append(lambda x: any(t(x) for t in type_checks))
        if "enum" in schema:
            checks.append(self._enum(schema["enum"]))
        if "const" in schema:
            const = schema["const"]
            checks.append(lambda x: json_equal(x, const))
        checks.extend(self._numbers(schema))
        checks.extend(self._strings(schema))
        checks.extend(self._arrays(schema))
        checks.extend(self._objects(schema))
        checks.extend(self._applicators(schema))
        return _all(checks)

    def _enum(self, values: list[Any]) -> Check:
        if all(isinstance(v, str) for v in values):
            allowed = frozenset(values)
            return lambda x: isinstance(x, str) and x in allowed
        return lambda x: any(json_equal(x, v) for v in values)

    def _numbers(self, schema: Mapping[str, Any]) -> list[Check]:
        is_number = _TYPES["number"]
        out: list[Check] = []
        if "minimum" in schema:
            lo = schema["minimum"]
            out.append(lambda x: not is_number(x) or not x < lo)
        if "maximum" in schema:
            hi = schema["maximum"]
            out.append(lambda x: not is_number(x) or not x > hi)
        if "exclusiveMinimum" in schema:
            xlo = schema["exclusiveMinimum"]
            out.append(lambda x: not is_number(x) or not x <= xlo)
        if "exclusiveMaximum" in schema:
            xhi = schema["exclusiveMaximum"]
            out.append(lambda x: not is_number(x) or not x >= xhi)
        return out

    def _strings(self, schema: Mapping[str, Any]) -> list[Check]:
        out: list[Check] = []
        if "minLength" in schema:
            min_len = schema["minLength"]
            out.append(lambda x: not isinstance(x, str) or len(x) >= min_len)
        if "maxLength" in schema:
            max_len = schema["maxLength"]
            out.append(lambda x: not isinstance(x, str) or len(x) <= max_len)
        if "pattern" in schema:
            search = re.compile(schema["pattern"]).search
            out.append(lambda x: not isinstance(x, str) or search(x) is not None)
        return out

    def _arrays(self, schema: Mapping[str, Any]) -> list[Check]:
        out: list[Check] = []
        if "minItems" in schema:
            min_items = schema["minItems"]
            out.append(lambda x: not isinstance(x, list) or len(x) >= min_items)
        if "maxItems" in schema:
            max_items = schema["maxItems"]
            out.append(lambda x: not isinstance(x, list) or len(x) <= max_items)
        if "items" in schema:
            item = self.compile(schema["items"])
            out.append(lambda x: not isinstance(x, list) or all(item(v) for v in x))
        return out

    def _objects(self, schema: Mapping[str, Any]) -> list[Check]:
        out: list[Check] = []
        if "required" in schema:
            required = tuple(schema["required"])
            out.append(lambda x: not isinstance(x, dict) or all(k in x for k in required))
        if "minProperties" in schema:
            min_props = schema["minProperties"]
            out.append(lambda x: not isinstance(x, dict) or len(x) >= min_props)
        if "maxProperties" in schema:
            max_props = schema["maxProperties"]
            out.append(lambda x: not isinstance(x, dict) or len(x) <= max_props)
        props = {k: self.compile(v) for k, v in schema.get("properties", {}).items()}
        if props:
            items = tuple(props.items())

            def properties(x: Any) -> bool:
                if not isinstance(x, dict):
                    return True
                for k, check in items:
                    if k in x and not check(x[k]):
                        return False
                return True

            out.append(properties)
        if "additionalProperties" in schema:
            extra = self.compile(schema["additionalProperties"])
            known = frozenset(props)
            if schema["additionalProperties"] is False:
                out.append(lambda x: not isinstance(x, dict) or known.issuperset(x))
            else:
                out.append(
                    lambda x: not isinstance(x, dict) or all(extra(v) for k, v in x.items() if k not in known)
                )
        if "propertyNames" in schema:
            name = self.compile(schema["propertyNames"])
            out.append(lambda x: not isinstance(x, dict) or all(name(k) for k in x))
        return out

    def _applicators(self, schema: Mapping[str, Any]) -> list[Check]:
        out: list[Check] = []
        if "$ref" in schema:
            out.append(self._ref(schema["$ref"]))
        if "allOf" in schema:
            out.append(_all([self.compile(s) for s in schema["allOf"]]))
        if "anyOf" in schema:
            any_of = tuple(self.compile(s) for s in schema["anyOf"])
            out.append(lambda x: any(c(x) for c in any_of))
        if "oneOf" in schema:
            one_of = tuple(self.compile(s) for s in schema["oneOf"])
            out.append(lambda x: sum(1 for c in one_of if c(x)) == 1)
        if "not" in schema:
            negated = self.compile(schema["not"])
            out.append(lambda x: not negated(x))
        if "if" in schema:
            if_ = self.compile(schema["if"])
            then = self.compile(schema.get("then", True))
            else_ = self.compile(schema.get("else", True))
            out.append(lambda x: then(x) if if_(x) else else_(x))
        return out

    def _ref(self, ref: str) -> Check:
        """Local references only (``#`` or ``#/$defs/...``); compiled once, resolved lazily (recursion)."""
        if ref != "#" and not ref.startswith("#/"):
            raise _Unsupported
        if ref not in self.refs:
            target: Any = self.root
            for part in ref[2:].split("/") if ref != "#" else []:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, Mapping) or part not in target:
                    raise _Unsupported
                target = target[part]
            slot: list[Check] = []
            self.refs[ref] = lambda x: slot[0](x)
            slot.append(self.compile(target))
        return self.refs[ref]
