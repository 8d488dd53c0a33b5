"""YAML text -> plain JSON-like data, plus the line of every value, safely and fast.

Why not ``yaml.safe_load``: it forgets where values were written (every message must name a line),
silently keeps the last of two duplicate keys, reads ``16:9`` as the base-60 number 969, and expands
aliases without limit (a "billion laughs" document of a few hundred bytes never finishes). Why not
``yaml.compose``: its node tree costs twice the memory and time of what is built here.

So this module reads libyaml's event stream (the C parser; the pure-Python one where libyaml is
missing) and builds dicts, lists and scalars itself. Each container's lines are kept aside in
``Document.lines`` (by ``id``), one per key or item, and :meth:`Document.line_at` walks a path to
them only when a problem needs a line, so a valid 100,000-job manifest pays almost nothing for it.

Scalars follow PyYAML's safe rules (YAML 1.1: ``yes`` is true, ``010`` is 8), except that values
with colons (``16:9``, ``1:30``) and timestamps stay text, as a manifest author means them.
Any tag other than the plain ones (``!!python/object``, ``!custom``, ``!!binary``) is a problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.resolver import Resolver

MAX_DEPTH = 64
# Values written in the file: a 50 MB file of "- a" lines would otherwise take over a gigabyte.
# A 200,000-job manifest written out in full has about 2.5 million.
MAX_VALUES = 5_000_000
# Values an alias may add beyond those written: generous for anchors reused in every job of a
# 200,000-job manifest, tiny next to the 10**9 of a billion-laughs document.
MIN_ALIAS_BUDGET = 2_000_000
ALIAS_RATIO = 10

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MERGE, _TIMESTAMP, _VALUE = _TAG + "merge", _TAG + "timestamp", _TAG + "value"
_MAP, _SEQ = _TAG + "map", _TAG + "seq"
_IMPLICIT = Resolver.yaml_implicit_resolvers
_BOOLS = {"yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class SourceProblem:
    """Something wrong in the YAML itself; ``path`` leads to the value when there is one."""

    line: int | None
    message: str
    path: Path = ()
    covers_value: bool = False  # the value is unusable (a foreign tag, NaN): say nothing more about it


@dataclass
class Document:
    """The parsed data and where each value was written.

    ``data`` is ``None`` for an empty file and when ``fatal`` is set (the YAML could not be read to
    the end); ``problems`` lists everything found on the way, ``too_large`` marks an alias bomb.
    """

    data: Any = None
    lines: dict[int, list[int]] = field(default_factory=dict)
    problems: list[SourceProblem] = field(default_factory=list)
    fatal: bool = False
    too_large: bool = False
    empty: bool = True

    def line_at(self, path: Sequence[str | int]) -> int | None:
        """The line of the value at ``path``, or of the deepest part of it that exists."""
        node, line = self.data, None
        for part in path:
            if isinstance(node, dict) and isinstance(part, str) and part in node:
                index = list(node).index(part)
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                index = part
            else:
                break
            lines = self.lines.get(id(node))
            if lines is not None and index < len(lines):
                line = lines[index]
            node = node[part]
        return line


class _Abort(Exception):
    def __init__(self, problem: SourceProblem, too_large: bool = False) -> None:
        self.problem = problem
        self.too_large = too_large


class _Frame:
    __slots__ = ("container", "lines", "key", "key_line", "where", "start", "merges", "anchor", "is_map")

    def __init__(
        self, container: dict[str, Any] | list[Any], where: str | int | None, anchor: str | None, start: int
    ) -> None:
        self.container = container
        self.is_map = isinstance(container, dict)
        self.lines: list[int] = []
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.where = where
        self.start = start  # values read before this one: its size is the count at its end minus this
        self.merges: list[tuple[Any, int]] = []
        self.anchor = anchor


_NO_KEY = object()
_MERGE_KEY = object()


def parse_yaml(text: str, max_values: int = MAX_VALUES) -> Document:
    """Read one YAML document; never raises for any text (everything wrong is in ``problems``)."""
    doc = Document()
    builder = _Builder(doc, max_values)
    try:
        builder.run(yaml.parse(text, Loader=_Loader))
    except _Abort as abort:
        doc.problems.append(abort.problem)
        doc.fatal, doc.too_large, doc.data = True, abort.too_large, None
    except yaml.MarkedYAMLError as error:
        doc.problems.append(_syntax_problem(text, error))
        doc.fatal, doc.data = True, None
    except yaml.YAMLError as error:  # ReaderError: a character YAML does not allow
        position = getattr(error, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        character = getattr(error, "character", None)
        if isinstance(character, str) and character:
            character = ord(character[0])
        what = (
            f"character U+{character:04X} is not allowed"
            if isinstance(character, int)
            else str(error).splitlines()[0]
        )
        doc.problems.append(SourceProblem(line, f"YAML syntax error: {what}"))
        doc.fatal, doc.data = True, None
    return doc


def _syntax_problem(text: str, error: yaml.MarkedYAMLError) -> SourceProblem:
    mark = error.problem_mark or error.context_mark
    lines = text.splitlines()
    # "unexpected end of stream" points past the last line: clamp it to the last one.
    line = min(mark.line + 1, max(len(lines), 1)) if mark is not None else None
    if line is not None and 0 < line <= len(lines) and "\t" in _indent(lines[line - 1]):
        tabbed = [n for n, text_line in enumerate(lines, 1) if "\t" in _indent(text_line)]
        others = ", ".join(map(str, tabbed[1:6])) + (", …" if len(tabbed) > 6 else "")
        more = f" (also on line{'s' if len(tabbed) > 2 else ''} {others})" if len(tabbed) > 1 else ""
        line = tabbed[0] if tabbed[0] <= line else line
        return SourceProblem(line, f"indentation uses a tab; YAML indents with spaces only{more}")
    what = error.problem or "cannot be read"
    if error.context and error.context_mark is not None and error.context_mark.line + 1 != line:
        what += f" ({error.context} started at line {error.context_mark.line + 1})"
    elif error.context:
        what += f" ({error.context})"
    return SourceProblem(line, f"YAML syntax error: {what}")


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


class _Builder:
    def __init__(self, doc: Document, max_values: int) -> None:
        self.doc = doc
        self.max_values = max_values
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.written = 0
        self.expanded = 0

    def run(self, events: Iterable[Any]) -> None:
        # The hot loop of a 100,000-job load (over a million events). The innermost mapping or list
        # lives in locals; the slow paths (tags, resolved scalars, aliases, duplicates, merges) get
        # the frame brought up to date first and run as methods.
        stack, doc, anchors, max_values = self.stack, self.doc, self.anchors, self.max_values
        implicit, no_key = _IMPLICIT, _NO_KEY
        top: _Frame | None = None
        container: Any = None
        lines: list[int] = []
        is_map = False
        key: Any = no_key
        key_line = written = 0
        for ev in events:
            kind = ev.__class__
            if kind is ScalarEvent:
                written += 1
                if written > max_values:
                    raise _Abort(
                        SourceProblem(
                            ev.start_mark.line + 1,
                            f"the manifest holds more than {max_values:,} values: split it, or use matrices",
                        ),
                        True,
                    )
                if is_map and key is no_key:  # a key, as written: `5:` is the key "5"
                    key, key_line = ev.value, ev.start_mark.line + 1
                    if ev.tag is not None or ev.anchor is not None or key == "<<":
                        self.written = written
                        key = self.scalar_key(ev)
                    continue
                value = ev.value
                if ev.tag is not None or (ev.implicit[0] and (not value or value[0] in implicit)):
                    if top is not None:
                        top.key = key
                    self.written = written
                    value = self.scalar(ev)
                if ev.anchor is not None:
                    anchors[ev.anchor] = (value, 1)
            elif kind is AliasEvent:
                if top is not None:
                    top.key = key
                self.written = written
                value = self.alias(ev)
                if is_map and key is no_key:
                    key, key_line = self.alias_key(ev, value), ev.start_mark.line + 1
                    continue
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                written += 1
                if top is not None:
                    top.key, top.key_line = key, key_line
                self.written = written
                top = self.open(ev, {} if kind is MappingStartEvent else [])
                container, lines, is_map, key = top.container, top.lines, top.is_map, no_key
                continue
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                self.written = written
                self.close(stack.pop())
                top = stack[-1] if stack else None
                if top is not None:
                    container, lines, is_map, key = top.container, top.lines, top.is_map, no_key
                continue
            elif kind is DocumentStartEvent:
                if not doc.empty:
                    raise _Abort(
                        SourceProblem(
                            ev.start_mark.line + 1,
                            "a manifest is one YAML document; found a second one (---)",
                        )
                    )
                doc.empty = False
                continue
            else:
                continue
            if top is None:
                doc.data = value
            elif not is_map:
                container.append(value)
                lines.append(ev.start_mark.line + 1)
            elif key.__class__ is str and key not in container:
                container[key] = value
                lines.append(key_line)
                key = no_key
            else:
                top.key, top.key_line = key, key_line
                self.put(top, value)
                key = no_key
        self.written = written

    def scalar(self, ev: ScalarEvent) -> Any:
        value: str = ev.value
        tag = ev.tag
        if tag is None or tag == "!":
            if tag is None and ev.implicit[0]:
                tag = _STR
                for candidate, regexp in _IMPLICIT.get(value[:1] if value else "", ()):
                    if regexp.match(value):
                        tag = candidate
                        break
            else:
                return value
        if tag == _STR or tag == _TIMESTAMP or tag == _VALUE or tag == _MERGE:
            return value
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return _BOOLS.get(value.lower(), value)
        if tag == _INT:
            return _int(value)
        if tag == _FLOAT:
            number = _float(value)
            if isinstance(number, float) and not math.isfinite(number):
                self.problem(ev, f"{value} is not a finite number")
            return number
        self.problem(ev, f"unsupported YAML tag {_show_tag(tag)}: a manifest holds plain values only")
        return None

    def alias(self, ev: AliasEvent) -> Any:
        target = self.anchors.get(ev.anchor or "")
        if target is None:
            self.problem(ev, f"unknown alias *{ev.anchor} (no &{ev.anchor} before it)")
            return None
        value, size = target
        self.expanded += size
        if self.expanded > max(MIN_ALIAS_BUDGET, ALIAS_RATIO * self.written):
            raise _Abort(
                SourceProblem(
                    _line(ev),
                    f"aliases (*{ev.anchor}) expand to more than "
                    f"{max(MIN_ALIAS_BUDGET, ALIAS_RATIO * self.written):,} values: "
                    "refusing what looks like a YAML alias bomb",
                ),
                too_large=True,
            )
        return value

    def open(self, ev: Any, container: dict[str, Any] | list[Any]) -> _Frame:
        stack = self.stack
        tag = ev.tag
        if tag is not None and tag != "!" and tag != (_MAP if isinstance(container, dict) else _SEQ):
            self.problem(ev, f"unsupported YAML tag {_show_tag(tag)}: a manifest holds plain values only")
        where: str | int | None = None
        if stack:
            top = stack[-1]
            line = ev.start_mark.line + 1
            if not top.is_map:
                where = len(top.container)
                top.container.append(container)  # type: ignore[union-attr]
                top.lines.append(line)
            elif top.key is _NO_KEY:
                raise _Abort(
                    SourceProblem(
                        line, "a mapping key must be a plain value, not a list or mapping", self.path()
                    )
                )
            else:
                where = top.key if isinstance(top.key, str) else None
                self.put(top, container)
        else:
            self.doc.data = container
        if len(stack) >= MAX_DEPTH:
            raise _Abort(SourceProblem(ev.start_mark.line + 1, f"values nested over {MAX_DEPTH} levels deep"))
        frame = _Frame(container, where, ev.anchor, self.written + self.expanded - 1)
        self.doc.lines[id(container)] = frame.lines
        stack.append(frame)
        return frame

    def close(self, frame: _Frame) -> None:
        if frame.merges:
            self.merge(frame)
        if frame.anchor is not None:
            # Registered only now, so an alias inside its own anchor is unknown: no cycles.
            self.anchors[frame.anchor] = (frame.container, self.written + self.expanded - frame.start)

    def scalar_key(self, ev: ScalarEvent) -> Any:
        if ev.tag is None and ev.implicit[0] and ev.value == "<<":
            return _MERGE_KEY
        if ev.tag is not None:
            self.scalar(ev)  # only to report a tag that is not a plain one
        if ev.anchor is not None:
            self.anchors[ev.anchor] = (ev.value, 1)
        return ev.value

    def alias_key(self, ev: AliasEvent, value: Any) -> str:
        if isinstance(value, str):
            return value
        line = _line(ev)
        raise _Abort(SourceProblem(line, "a mapping key must be a plain value", self.path()))

    def put(self, top: _Frame, value: Any) -> None:
        key, line = top.key, top.key_line
        top.key = _NO_KEY
        if key is _MERGE_KEY:
            top.merges.append((value, line))
            return
        mapping: dict[str, Any] = top.container  # type: ignore[assignment]
        if key in mapping:
            index = list(mapping).index(key)
            first = top.lines[index]
            message = f"duplicate key {key!r} (first at line {first}; YAML would silently keep only the last)"
            self.doc.problems.append(SourceProblem(line, message, (*self.path(), key)))
            top.lines[index] = line
        else:
            top.lines.append(line)
        mapping[key] = value

    def merge(self, frame: _Frame) -> None:
        """``<<: *base`` (or a list of them): keys written here win, then earlier merges over later."""
        sources: list[dict[str, Any]] = []
        for value, line in frame.merges:
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(item, dict) for item in items):
                message = "a merge (<<) takes a mapping or a list of mappings"
                self.doc.problems.append(SourceProblem(line, message, self.path(frame)))
                continue
            sources.extend(items)
        merged: dict[str, Any] = {}
        lines: dict[str, int] = {}
        for source in [*reversed(sources), frame.container]:
            assert isinstance(source, dict)
            source_lines = frame.lines if source is frame.container else self.doc.lines.get(id(source), [])
            for key, line in zip(source, source_lines, strict=False):
                merged[key] = source[key]
                lines[key] = line
        container: dict[str, Any] = frame.container  # type: ignore[assignment]
        container.clear()
        container.update(merged)
        frame.lines[:] = [lines.get(key, 0) for key in merged]

    def path(self, upto: _Frame | None = None) -> tuple[str | int, ...]:
        parts: list[str | int] = []
        for frame in self.stack[1:]:
            if frame.where is None:
                break
            parts.append(frame.where)
            if frame is upto:
                break
        return tuple(parts)

    def problem(self, ev: Any, message: str) -> None:
        path = self.path()
        top = self.stack[-1] if self.stack else None
        if top is not None:
            if not top.is_map:
                path = (*path, len(top.container))
            elif isinstance(top.key, str):
                path = (*path, top.key)
        self.doc.problems.append(SourceProblem(ev.start_mark.line + 1, message, path, covers_value=True))


def _line(ev: Any) -> int:
    """The 1-based line an event starts on (0 where PyYAML gives no mark)."""
    return ev.start_mark.line + 1 if ev.start_mark is not None else 0


def _int(value: str) -> int | str:
    if ":" in value:
        return value  # 16:9 is an aspect ratio, not YAML 1.1's base-60 number 969
    digits = value.replace("_", "")
    if len(digits) > 64:
        return value  # no input needs such a number, and Python refuses to print one of 4,300+ digits
    sign = -1 if digits[:1] == "-" else 1
    digits = digits.lstrip("+-")
    try:
        if digits.startswith("0b"):
            return sign * int(digits[2:], 2)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        if len(digits) > 1 and digits.startswith("0"):
            return sign * int(digits, 8)
        return sign * int(digits)
    except ValueError:
        return value


def _float(value: str) -> float | str:
    if ":" in value:
        return value
    digits = value.replace("_", "").lower()
    if digits in (".inf", "+.inf"):
        return math.inf
    if digits == "-.inf":
        return -math.inf
    if digits == ".nan":
        return math.nan
    try:
        return float(digits)
    except ValueError:
        return value
