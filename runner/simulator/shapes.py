"""Answer shapes: the other ways a Model API may write the same answers, on demand.

RunComfy documents one shape per answer; its own clients (CLI, ComfyUI nodes, MCP server) tolerate many
more, and an independent implementation written from the docs would pick among them (see "Answers vary"
in ``shared/runcomfy-api.md``). Each such way is a named :class:`Shape` in :data:`SHAPES`, the one list
that the simulator's config, its docs, its tests and the runner's tolerance tests all iterate over.

A shape changes only how an answer is *written*, never what the account does: the queue, the charges
and ``/_sim/stats`` are the same with any shapes as without. The grace shapes (a 404 for a moment, a
result that says ``completed`` before its outputs are in) are the one place where an answer lags the
account; they last for the first ``shape_grace_answers`` answers about a job or file and at least
``shape_grace_seconds`` on the account clock, and ``/_sim/stats`` counts each such answer under
``shaped``.

Shapes of one *facet* exclude each other (an answer has one timestamp form); shapes of different
facets combine. :class:`Wire` writes answers in the shapes a config names; with none it writes the
documented form, byte for byte as the simulator always has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from .outputs import MEDIA_TYPES


@dataclass(frozen=True)
class Shape:
    """One way of writing answers, as a real API or an independent implementation might."""

    name: str
    facet: str  # shapes of one facet exclude each other
    summary: str  # one line, as docs/simulator.md lists it


# Each facet's shapes, one line each (the docs' table says the same). Shapes of one facet exclude each other.
_BY_FACET: dict[str, tuple[tuple[str, str], ...]] = {
    "timestamps": (  # created_at and finished_at of a finished result
        ("iso-utc-offset-timestamps", "`2026-03-01T12:00:00+00:00`"),
        ("iso-other-offset-timestamps", "at UTC-5: `2026-03-01T07:00:00-05:00` (the same instant)"),
        ("iso-naive-timestamps", "no zone, UTC meant: `2026-03-01T12:00:00`"),
        ("iso-fraction-timestamps", "with milliseconds: `2026-03-01T12:00:00.250Z`"),
        ("epoch-seconds-timestamps", "Unix seconds, an integer: `1772366400`"),
        ("epoch-float-timestamps", "Unix seconds, a float: `1772366400.25`"),
        ("epoch-ms-timestamps", "Unix milliseconds, an integer: `1772366400250`"),
        ("null-timestamps", "`created_at` and `finished_at` present but null"),
        ("absent-timestamps", "no `created_at` or `finished_at` at all"),
    ),
    "status case": (("upper-case-status", "status words in upper case: `IN_QUEUE`, `COMPLETED`…"),),
    "cancelled word": (("canceled-status", "`canceled` (one l) for `cancelled`, in `status` and `outcome`"),),
    "completed word": (("succeeded-status", "`succeeded` for `completed`"),),
    "running word": (("unknown-live-status", "a running job says `preparing` (`unknown_status_word`)"),),
    "output": (  # a completed result's output
        ("output-bare-uri", "`output` is the URI itself (a list of them when there are several)"),
        ("output-uri-list", "`output` is a list of URIs"),
        ("output-url-object", '`{"video": {"url": …}}` (several: `{"videos": [{"url": …}, …]}`)'),
        ("output-url-objects", '`{"videos": [{"url": …, "content_type": "video/mp4"}]}`, even for one'),
        ("output-url-object-list", '`output` is a list of objects: `[{"url": …}, …]`'),
        ("output-other-keys", '`{"video_url": …}` (several: `{"video_urls": […]}`)'),
    ),
    "output timing": (("output-late", "`completed` with `output: null` for a grace, then the outputs"),),
    "error": (  # a failed result's error
        ("error-string", 'a string: `"error": "the generation failed (simulated)"`'),
        ("error-null", '`"error": null`'),
        ("error-other-object", '`{"code": "GENERATION_FAILED", "message": …}`'),
    ),
    "numbers": (
        ("string-numbers", '`queue_position`, `cost` and `base_price_usd` as strings: `"3"`, `"1.4"`'),
        ("null-numbers", "`queue_position` (on every live answer), `cost` and `base_price_usd` null"),
    ),
    "error_code": (
        ("error-code-null", 'HTTP 200 answers carry `"error_code": null, "error_message": null`'),
    ),
    "extra fields": (("extra-fields", "unknown fields in every JSON answer, in `output` and in `error`"),),
    "submit status": (
        ("submit-201", "an accepted submit answers HTTP 201 (the same body)"),
        ("submit-202", "an accepted submit answers HTTP 202 (the same body)"),
    ),
    "error bodies": (
        ("html-errors", "the 5xx and 429 faults answer an HTML page (`text/html`)"),
        ("empty-errors", "the 5xx and 429 faults answer an empty body"),
    ),
    "status 404": (
        ("status-404-grace", "`/status` and `/result` answer 404/404001 for a grace after the submit"),
    ),
    "file 404": (("file-404-grace", "each output file answers 404/404001 for a grace after the finish"),),
}
SHAPES: Mapping[str, Shape] = {
    name: Shape(name, facet, summary) for facet, rows in _BY_FACET.items() for name, summary in rows
}

# The shapes whose answers lag the account for a grace; /_sim/stats counts those answers.
GRACE_SHAPES = ("status-404-grace", "file-404-grace", "output-late")

_CASE = {"upper-case-status": str.upper}
_WORDS = {"canceled-status": ("cancelled", "canceled"), "succeeded-status": ("completed", "succeeded")}
_UTC_MINUS_5 = timezone(timedelta(hours=-5))
_EXTRA_TOP = {"trace_id": "sim-trace-0001", "meta": {"api_version": "1.1", "region": "sim-local"}, "logs": []}
_EXTRA_OUTPUT = {"seed": 1234, "has_nsfw_concepts": [False]}
_EXTRA_ERROR = {"retryable": False, "detail": None}
_HTML = "<html><head><title>{0}</title></head><body><center><h1>{0}</h1></center><hr></body></html>"


def shape_problems(names: Iterable[str]) -> list[str]:
    """What is wrong with a list of shape names: unknown ones, two of one facet."""
    problems: list[str] = []
    by_facet: dict[str, str] = {}
    for name in names:
        shape = SHAPES.get(name)
        if shape is None:
            problems.append(f"unknown shape {name!r} (known: {', '.join(SHAPES)})")
        elif shape.facet in by_facet and by_facet[shape.facet] != name:
            problems.append(f"shapes {by_facet[shape.facet]!r} and {name!r} exclude each other")
        else:
            by_facet[shape.facet] = name
    return problems


class Wire:
    """Writes the simulator's answers in the shapes it is given (none: the documented form)."""

    def __init__(self, shapes: Iterable[str] = (), unknown_status_word: str = "preparing") -> None:
        self.shapes = frozenset(shapes)
        facets = {SHAPES[name].facet: name for name in self.shapes}
        self._timestamps = facets.get("timestamps")
        self._output = facets.get("output")
        self._error = facets.get("error")
        self._numbers = facets.get("numbers")
        self._bodies = facets.get("error bodies")
        self._case = _CASE.get(facets.get("status case", ""))
        self._words = dict(_WORDS[name] for name in self.shapes if name in _WORDS)
        if "unknown-live-status" in self.shapes:
            self._words["in_progress"] = unknown_status_word
        self._extra = "extra-fields" in self.shapes
        self._error_code_null = "error-code-null" in self.shapes
        self.submit_status = {"submit-201": 201, "submit-202": 202}.get(facets.get("submit status", ""), 200)

    def __contains__(self, name: str) -> bool:
        return name in self.shapes

    def word(self, word: str) -> str:
        """A status word (or a cancel's outcome) as this API writes it."""
        word = self._words.get(word, word)
        return self._case(word) if self._case else word

    def number(self, value: float | None) -> Any:
        """``queue_position``, ``cost`` or a price as this API writes it."""
        if self._numbers == "string-numbers" and value is not None:
            return str(value)
        if self._numbers == "null-numbers":
            return None
        return value

    def always_queue_position(self) -> bool:
        """Whether every live answer carries ``queue_position`` (null when not queued)."""
        return self._numbers == "null-numbers"

    def put_times(self, body: dict[str, Any], **walls: float | None) -> None:
        """Put each named wall-clock time (Unix seconds) into ``body``, in this API's timestamp form."""
        form = self._timestamps
        if form == "absent-timestamps":
            return
        for key, wall in walls.items():
            body[key] = _timestamp(form, wall)

    def output(self, urls: list[str], kind: str = "video") -> Any:
        """A completed job's ``output`` for its file URLs, keyed by the kind of file they are
        (``video``/``videos``, ``image``/``images``, ``audio``/``audios``)."""
        form, one, many = self._output, len(urls) == 1, kind + "s"
        if form is None:
            value: Any = {kind: urls[0]} if one else {many: urls}
        elif form == "output-bare-uri":
            return urls[0] if one else urls
        elif form == "output-uri-list":
            return urls
        elif form == "output-url-object":
            value = {kind: {"url": urls[0]}} if one else {many: [{"url": u} for u in urls]}
        elif form == "output-url-objects":
            media = MEDIA_TYPES.get(kind, "application/octet-stream")
            value = {many: [{"url": u, "content_type": media} for u in urls]}
        elif form == "output-url-object-list":
            return [{"url": u} for u in urls]
        else:  # output-other-keys
            value = {f"{kind}_url": urls[0]} if one else {f"{kind}_urls": urls}
        return {**value, **_EXTRA_OUTPUT} if self._extra else value

    def failure(self, message: str) -> Any:
        """A failed job's ``error``."""
        if self._error == "error-string":
            return message
        if self._error == "error-null":
            return None
        if self._error == "error-other-object":
            value: dict[str, Any] = {"code": "GENERATION_FAILED", "message": message}
        else:
            value = {"error_code": 500001, "error_message": message}
        return {**value, **_EXTRA_ERROR} if self._extra else value

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """A successful (HTTP 200) answer's body, with this API's envelope."""
        if self._error_code_null:
            body = {**body, "error_code": None, "error_message": None}
        return {**body, **_EXTRA_TOP} if self._extra else body

    def refusal(self, body: dict[str, Any]) -> dict[str, Any]:
        """An error answer's JSON body, with this API's envelope."""
        return {**body, **_EXTRA_TOP} if self._extra else body

    def fault_body(self, status: int) -> tuple[bytes, str] | None:
        """The body and media type of a 5xx or 429 fault, if this API does not answer those in JSON."""
        if self._bodies == "empty-errors":
            return b"", "text/plain"
        if self._bodies == "html-errors":
            return _HTML.format(f"{status} {_REASONS.get(status, 'Error')}").encode(), "text/html"
        return None


_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _timestamp(form: str | None, wall: float | None) -> Any:
    if wall is None or form == "null-timestamps":
        return None
    if form is None:
        return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if form == "epoch-seconds-timestamps":
        return int(wall)
    if form == "epoch-float-timestamps":
        return round(wall, 6)
    if form == "epoch-ms-timestamps":
        return int(wall * 1000)
    if form == "iso-other-offset-timestamps":
        return datetime.fromtimestamp(int(wall), _UTC_MINUS_5).isoformat()
    moment = datetime.fromtimestamp(wall, UTC)
    if form == "iso-utc-offset-timestamps":
        return moment.replace(microsecond=0).isoformat()
    if form == "iso-naive-timestamps":
        return moment.strftime("%Y-%m-%dT%H:%M:%S")
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")  # iso-fraction-timestamps
