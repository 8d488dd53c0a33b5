"""A fast yes/no JSON Schema 2020-12 check for the subset of keywords our schemas use.

jsonschema needs 35-60 µs to accept one small job input; a 100,000-job manifest must be checked in
well under a second. :func:`compile_schema` writes a schema out as one Python function of plain
``if`` statements (as fastjsonschema does), which only answers "valid or not", in 1-3 µs. Messages
never come from here: when an instance fails, the caller asks jsonschema for the errors, so every
word a user reads still comes from the reference implementation. A schema that uses a keyword
outside the subset compiles to jsonschema's own ``is_valid``: slower, never different.
``tests/test_manifest_properties.py`` checks that both always agree.

The generated source holds no value from the schema except property names written with ``repr``;
every other constant (patterns, enums, bounds) is passed in by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Check = Callable[[Any], bool]

# Keywords jsonschema would act on but this compiler does not: their presence means "fall back".
_UNSUPPORTED = frozenset(
    {
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$anchor",
        "contains",
        "minContains",
        "maxContains",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "multipleOf",
        "patternProperties",
        "prefixItems",
        "uniqueItems",
        "unevaluatedItems",
        "unevaluatedProperties",
        "additionalItems",
    }
)

_IS_TYPE = {
    "string": "isinstance({v}, str)",
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
    "number": "(isinstance({v}, (int, float)) and not isinstance({v}, bool))",
    # Draft 2020-12: 5.0 is an integer too.
    "integer": "((isinstance({v}, int) and not isinstance({v}, bool)) or "
    "(isinstance({v}, float) and {v}.is_integer()))",
}
_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_FAILS = {"minimum": "<", "maximum": ">", "exclusiveMinimum": "<=", "exclusiveMaximum": ">="}


class _Unsupported(Exception):
    pass


def compile_schema(schema: Mapping[str, Any] | bool) -> Check:
    """A function telling whether an instance is valid against ``schema`` (same answer as jsonschema)."""
    try:
        return _Writer(schema).compile()
    except _Unsupported:
        from jsonschema import Draft202012Validator  # noqa: PLC0415

        is_valid: Check = Draft202012Validator(schema).is_valid
        return is_valid


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


class _Writer:
    """Writes the source of ``check(x)`` and of one helper per ``$ref`` or sub-answer it needs."""

    def __init__(self, root: Mapping[str, Any] | bool) -> None:
        self.root = root
        self.names: dict[str, Any] = {"json_equal": json_equal}
        self.functions: list[list[str]] = []
        self.refs: dict[str, str] = {}
        self.count = 0

    def compile(self) -> Check:
        entry = self.function(self.root)
        source = "\n".join("\n".join(lines) for lines in self.functions)
        namespace = dict(self.names)
        exec(compile(source, "<fastschema>", "exec"), namespace)  # our own source, constants passed by name
        check: Check = namespace[entry]
        return check

    def const(self, value: Any) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.names[name] = value
        return name

    def var(self) -> str:
        self.count += 1
        return f"v{self.count}"

    def function(self, schema: Any) -> str:
        """A helper ``fN(x) -> bool`` for a subschema; its name."""
        self.count += 1
        name = f"f{self.count}"
        lines = [f"def {name}(x):"]
        self.functions.append(lines)
        self.emit(schema, "x", lines, 1)
        lines.append("    return True")
        return name

    def emit(self, schema: Any, v: str, out: list[str], depth: int) -> None:
        """Lines that ``return False`` when ``v`` breaks ``schema`` and fall through when it does not."""
        pad = "    " * depth
        if schema is True:
            return
        if schema is False:
            out.append(f"{pad}return False")
            return
        if not isinstance(schema, Mapping) or _UNSUPPORTED.intersection(schema):
            raise _Unsupported
        if "$id" in schema and schema is not self.root:
            raise _Unsupported  # a new base for references: leave it to jsonschema
        known: str | None = None  # the instance's type, once a single "type" has been checked
        if "type" in schema:
            names = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
            if not names or not set(names) <= _IS_TYPE.keys():
                raise _Unsupported
            out.append(f"{pad}if not ({' or '.join(_IS_TYPE[n].format(v=v) for n in names)}): return False")
            known = names[0] if len(names) == 1 else None
        if "enum" in schema:
            values = list(schema["enum"])
            if all(isinstance(e, str) for e in values):
                out.append(
                    f"{pad}if not (isinstance({v}, str) and {v} in {self.const(frozenset(values))}): "
                    "return False"
                )
            else:
                out.append(f"{pad}if not any(json_equal({v}, e) for e in {self.const(values)}): return False")
        if "const" in schema:
            out.append(f"{pad}if not json_equal({v}, {self.const(schema['const'])}): return False")
        self.by_type(schema, v, out, depth, known)
        self.applicators(schema, v, out, depth)

    def by_type(
        self, schema: Mapping[str, Any], v: str, out: list[str], depth: int, known: str | None
    ) -> None:
        """Keywords that apply to one type only, each under a test of that type (skipped if known)."""
        pad = "    " * depth
        groups: list[tuple[str, list[str]]] = []
        numeric = [k for k in _NUMERIC if k in schema]
        if numeric:
            lines = [f"if {v} {_FAILS[k]} {self.const(schema[k])}: return False" for k in numeric]
            groups.append(("integer" if known == "integer" else "number", lines))
        strings = []
        if "minLength" in schema:
            strings.append(f"if len({v}) < {self.const(schema['minLength'])}: return False")
        if "maxLength" in schema:
            strings.append(f"if len({v}) > {self.const(schema['maxLength'])}: return False")
        if "pattern" in schema:
            search = self.const(re.compile(schema["pattern"]).search)
            strings.append(f"if {search}({v}) is None: return False")
        if strings:
            groups.append(("string", strings))
        for kind, lines in groups:
            if known == kind or (kind == "number" and known == "integer"):
                out.extend(pad + line for line in lines)
            else:
                out.append(f"{pad}if {_IS_TYPE[kind].format(v=v)}:")
                out.extend(pad + "    " + line for line in lines)
        self.array(schema, v, out, depth, known == "array")
        self.object(schema, v, out, depth, known == "object")

    def array(self, schema: Mapping[str, Any], v: str, out: list[str], depth: int, known: bool) -> None:
        if not {"minItems", "maxItems", "items"} & schema.keys():
            return
        if not known:
            out.append(f"{'    ' * depth}if isinstance({v}, list):")
            depth += 1
        pad = "    " * depth
        out.append(f"{pad}pass")
        if "minItems" in schema:
            out.append(f"{pad}if len({v}) < {self.const(schema['minItems'])}: return False")
        if "maxItems" in schema:
            out.append(f"{pad}if len({v}) > {self.const(schema['maxItems'])}: return False")
        if "items" in schema and schema["items"] is not True:
            item = self.var()
            out.append(f"{pad}for {item} in {v}:")
            self.emit(schema["items"], item, out, depth + 1)
            out.append(f"{pad}    pass")

    def object(self, schema: Mapping[str, Any], v: str, out: list[str], depth: int, known: bool) -> None:
        keywords = {
            "required",
            "minProperties",
            "maxProperties",
            "properties",
            "additionalProperties",
            "propertyNames",
        }
        if not keywords & schema.keys():
            return
        if not known:
            out.append(f"{'    ' * depth}if isinstance({v}, dict):")
            depth += 1
        pad = "    " * depth
        out.append(f"{pad}pass")
        for name in schema.get("required", ()):
            out.append(f"{pad}if {name!r} not in {v}: return False")
        if "minProperties" in schema:
            out.append(f"{pad}if len({v}) < {self.const(schema['minProperties'])}: return False")
        if "maxProperties" in schema:
            out.append(f"{pad}if len({v}) > {self.const(schema['maxProperties'])}: return False")
        properties = schema.get("properties", {})
        for name, subschema in properties.items():
            if subschema is True:
                continue
            value = self.var()
            out.append(f"{pad}if {name!r} in {v}:")
            out.append(f"{pad}    {value} = {v}[{name!r}]")
            self.emit(subschema, value, out, depth + 1)
        extra = schema.get("additionalProperties", True)
        if extra is False:
            out.append(f"{pad}if not {self.const(frozenset(properties))}.issuperset({v}): return False")
        elif extra is not True:
            key, value = self.var(), self.var()
            out.append(f"{pad}for {key}, {value} in {v}.items():")
            out.append(f"{pad}    if {key} in {self.const(frozenset(properties))}: continue")
            self.emit(extra, value, out, depth + 1)
        if "propertyNames" in schema and schema["propertyNames"] is not True:
            key = self.var()
            out.append(f"{pad}for {key} in {v}:")
            self.emit(schema["propertyNames"], key, out, depth + 1)
            out.append(f"{pad}    pass")

    def applicators(self, schema: Mapping[str, Any], v: str, out: list[str], depth: int) -> None:
        pad = "    " * depth
        if "$ref" in schema:
            out.append(f"{pad}if not {self.ref(schema['$ref'])}({v}): return False")
        for subschema in schema.get("allOf", ()):
            self.emit(subschema, v, out, depth)
        if "anyOf" in schema:
            calls = " or ".join(f"{self.function(s)}({v})" for s in schema["anyOf"])
            out.append(f"{pad}if not ({calls}): return False")
        if "oneOf" in schema:
            calls = ", ".join(f"{self.function(s)}({v})" for s in schema["oneOf"])
            out.append(f"{pad}if [{calls}].count(True) != 1: return False")
        if "not" in schema:
            out.append(f"{pad}if {self.function(schema['not'])}({v}): return False")
        if "if" in schema:
            out.append(f"{pad}if {self.function(schema['if'])}({v}):")
            self.emit(schema.get("then", True), v, out, depth + 1)
            out.append(f"{pad}    pass")
            out.append(f"{pad}else:")
            self.emit(schema.get("else", True), v, out, depth + 1)
            out.append(f"{pad}    pass")

    def ref(self, ref: str) -> str:
        """Local references only (``#`` or ``#/$defs/...``), each written once (recursion works)."""
        if ref != "#" and not ref.startswith("#/"):
            raise _Unsupported
        if ref not in self.refs:
            target: Any = self.root
            for part in ref[2:].split("/") if ref != "#" else []:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, Mapping) or part not in target:
                    raise _Unsupported
                target = target[part]
            self.count += 1
            name = self.refs[ref] = f"r{self.count}"
            lines = [f"def {name}(x):"]
            self.functions.append(lines)
            self.emit(target, "x", lines, 1)
            lines.append("    return True")
        return self.refs[ref]
