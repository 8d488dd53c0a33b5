"""Reading RunComfy's answers: one tolerant reader, total, with every rule written down.

RunComfy documents one shape per answer; its own clients accept many more (``shared/runcomfy-api.md``,
"Answers vary"), and so does this reader. Each rule is one line of ``docs/api-answers.md``, which
names the function below that applies it. Two promises hold for every input:

* **Total.** Whatever bytes come back, reading them returns a value or raises one of the project's
  :class:`~runner.errors.ApiError` subclasses, never anything else: a malformed answer is a
  :class:`~runner.errors.ServerError` for that one call (retried like a 5xx), not a crash of the run.
  ``tests/test_answers.py`` drives the reader with answers hypothesis builds from the vocabulary below.
* **Nothing paid is lost.** Where an answer can be read two ways, the reader takes the one that keeps a
  paid request: a submit answer that names a request id is accepted; every URI under ``output`` is
  collected; a word it does not know is a job still running (polled on, within the bound the watcher
  sets), never a failure.

The grace rules (a 404 just after the submit or just after the finish, a result without its outputs
yet) need to know when things happened, so the engine applies them (``runner/engine/watch.py``) and
the download (:mod:`.download`); the docs page lists them with the rest.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from .. import defaults
from ..errors import (
    AccountError,
    ApiError,
    BalanceError,
    InputRejected,
    RateLimited,
    RequestNotFound,
    ServerError,
)

# -- status words ---------------------------------------------------------------------------------
IN_QUEUE, IN_PROGRESS = "in_queue", "in_progress"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
LIVE = frozenset({IN_QUEUE, IN_PROGRESS})
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})

# Every word the reader knows, after case and separators are folded (``IN-PROGRESS`` is ``in_progress``).
WORDS: Mapping[str, str] = {
    "in_queue": IN_QUEUE,
    "queued": IN_QUEUE,
    "in_progress": IN_PROGRESS,
    "running": IN_PROGRESS,
    "completed": COMPLETED,
    "succeeded": COMPLETED,
    "failed": FAILED,
    "cancelled": CANCELLED,
    "canceled": CANCELLED,
}
NO_WORD = "(none)"  # how an answer without a status word is named in logs

# -- numbers and times ----------------------------------------------------------------------------
# An epoch number at or above this is milliseconds (1e11 s is the year 5138; 1e11 ms is 1973), at or
# above 1e14 microseconds, at or above 1e17 nanoseconds.
_EPOCH_UNITS = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_MAX_DEPTH = 32  # nesting followed inside ``output``; deeper is not an output any model writes

# -- URIs -----------------------------------------------------------------------------------------
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#]+[^\s]*")
_PREFERRED = ("video", "videos", "image", "images")  # read first, in this order; then the rest by name
_REQUEST_IN_URL = re.compile(r"/requests/([^/?#]+)/")
_REQUEST_ID = re.compile(r"[^\s/?#]{1,200}")


@dataclass(frozen=True)
class RemoteState:
    """What the API says about one request right now, as the reader understood it.

    ``status`` is always one of :data:`LIVE` or :data:`TERMINAL`; ``word`` is what RunComfy wrote
    (folded to lower case, :data:`NO_WORD` when it wrote none) and ``known`` whether the reader knew it.
    A word it does not know is read as ``in_queue`` when the answer has a queue position, else
    ``in_progress``. Times are Unix seconds."""

    request_id: str
    status: str
    queue_position: int | None = None
    outputs: tuple[str, ...] = ()
    cost_usd: float | None = None
    error: Mapping[str, Any] | None = None
    created_at: float | None = None
    finished_at: float | None = None
    word: str = ""
    known: bool = True

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == COMPLETED

    @property
    def label(self) -> str:
        """The word to show and journal: the status when the reader knew the word, else the word."""
        return self.status if self.known else self.word


_NOT_JSON: Any = object()  # what a body that is not JSON reads as (JSON's null is None)


# -- one answer's body ----------------------------------------------------------------------------
def read_body(
    status: int, body: bytes, headers: Mapping[str, str], *, what: str, submit: bool = False
) -> Any:
    """The JSON of a successful answer (any 2xx), or the error it is.

    Raises the project's error for any other HTTP status, for a 2xx whose body carries an error
    (:func:`carries_error`; but a ``submit`` answer that names its request id is accepted whatever
    else it says: that request exists and is paid, and polling it tells how it ends), and
    :class:`ServerError` for a 2xx that is not JSON. ``what`` names the call in messages."""
    answer = _json(body)
    if not 200 <= status < 300 or (carries_error(answer) and not (submit and read_request_id(answer))):
        raise error_from_answer(status, answer, headers, empty=not body.strip())
    if answer is _NOT_JSON:
        kind = "empty" if not body.strip() else _media_type(headers)
        raise ServerError(f"{what}: the answer is not JSON (HTTP {status}, {kind} body)", http_status=status)
    return answer


def _json(body: bytes) -> Any:
    if not body or not body.strip():
        return _NOT_JSON
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
        return _NOT_JSON


def carries_error(answer: Any) -> bool:
    """Whether a 2xx answer's body says it is an error: an ``error_code`` that is present and set.

    ``null``, ``0``, ``"0"``, ``""`` and ``false`` are "no error" (RunComfy's clients read a null code
    so; 0 is the usual "success" code)."""
    if not isinstance(answer, Mapping) or "error_code" not in answer:
        return False
    code = answer["error_code"]
    if code is None or code is False or code == "":
        return False
    return read_code(code) != 0


def read_code(value: Any) -> int | None:
    """An ``error_code``: an integer, or a string or a whole float of digits; anything else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def error_from_answer(
    status: int, body: Any, headers: Mapping[str, str] | None = None, *, empty: bool = False
) -> ApiError:
    """The project's error for an error answer (any HTTP status, or a 2xx with an ``error_code``).

    The body may be RunComfy's JSON (``error_code``, ``error_message``, ``detail``), another API's
    (``message``, ``error``, ``detail`` as text), HTML from a gateway, or empty: the message says what
    it can (``empty``: the body was), and the class follows the code where there is one, else the
    HTTP status."""
    mapping = body if isinstance(body, Mapping) else {}
    code = read_code(mapping.get("error_code"))
    code = code if code else None
    kind = (
        "empty"
        if empty
        else "JSON"
        if body is not None and body is not _NOT_JSON
        else _media_type(headers or {})
    )
    message = _error_message(mapping) or _reason(status, kind)
    retry_after = parse_retry_after((headers or {}).get("retry-after"))
    # A code's first three digits are the HTTP status it stands for (RunComfy: 404001 is a 404).
    from_code = code // 1000 if code is not None and 100_000 <= code <= 599_999 else None
    http_status = from_code if from_code is not None and 200 <= status < 300 else status
    kwargs: dict[str, Any] = {
        "http_status": http_status,
        "error_code": code,
        "detail": mapping.get("detail"),
        "retry_after": retry_after,
    }
    text = f"RunComfy answered {http_status}" + (f"/{code}" if code else "") + f": {message}"
    if code == 400002 or http_status == 402:
        return BalanceError(text + " (no balance left on the account)", **kwargs)
    if code in (400004, 401001) or http_status == 401:
        return AccountError(text + f" (check {defaults.TOKEN_ENV})", **kwargs)
    if http_status == 429:
        return RateLimited(text, **kwargs)
    if code == 404001 or http_status == 404:
        return RequestNotFound(text, **kwargs)
    if code in (400001, 422001) or http_status in (400, 422):
        return InputRejected(text, **kwargs)
    if http_status == 403:
        return InputRejected(text + " (request belongs to another account)", **kwargs)
    return ServerError(text, **kwargs)


def _error_message(body: Mapping[str, Any]) -> str:
    """The text of an error body: ``error_message``, ``message``, ``error`` or ``detail``, whichever is
    text first (``error`` may be an object with its own ``message``)."""
    for key in ("error_message", "message", "error", "detail"):
        value = body.get(key)
        if isinstance(value, Mapping):
            value = value.get("message") or value.get("error_message")
        if isinstance(value, str) and value.strip():
            return _one_line(value)
    return ""


def _reason(status: int, body: str) -> str:
    """What a body that says nothing (HTML from a gateway, empty) leaves to say: the status's phrase."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "HTTP error"
    return f"{phrase} ({body} body)"


def _media_type(headers: Mapping[str, str]) -> str:
    """An answer's media type, to name a body that is not JSON (``text/html``)."""
    kind = str(headers.get("content-type", "")).split(";")[0].strip()
    return kind or "untyped"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds or an HTTP date; else ``None``."""
    if not value:
        return None
    value = value.strip()
    seconds = read_number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


# -- the parts of an answer -----------------------------------------------------------------------
def read_word(value: Any) -> str:
    """A status word folded: lower case, ``-`` and spaces as ``_``; :data:`NO_WORD` for none."""
    if value is None or isinstance(value, Mapping | list):
        return NO_WORD
    word = "_".join(str(value).strip().lower().replace("-", " ").split())
    return word[:64] or NO_WORD


def read_time(value: Any) -> float | None:
    """A timestamp as Unix seconds: ISO 8601 in any common form (``Z``, an offset, no zone meaning UTC,
    fractions), an HTTP date, or an epoch number (seconds, milliseconds, microseconds or nanoseconds;
    an integer, a float or a string of digits). Null, absent, empty or unreadable: ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return _epoch(float(value))
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return _epoch(float(text))
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # no zone: RunComfy's clocks are UTC
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _epoch(number: float) -> float | None:
    if not math.isfinite(number) or number <= 0:
        return None
    for at_least, per_second in _EPOCH_UNITS:
        if number >= at_least:
            number /= per_second
            break
    return number if number < 1e11 else None


def read_number(value: Any) -> float | None:
    """A non-negative amount (``cost``, a price): a number or a string of one (``"1.4"``, ``" 3 "``,
    ``"$1.40"``). Null, negative, infinite or unreadable: ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip().removeprefix("$").strip()
        if not _NUMBER.fullmatch(text):
            return None
        value = float(text)
    if not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def read_position(value: Any) -> int | None:
    """A ``queue_position``: a whole number >= 0, as a number or a string; else ``None``."""
    number = read_number(value)
    if number is None or number > 1e9:
        return None
    return int(number)


def read_outputs(output: Any) -> tuple[str, ...]:
    """Every URI under a result's ``output``, once each, in a stable order.

    ``output`` may be a bare URI, a list, or an object with any keys whose values are URIs, lists,
    or objects carrying them (``{"video": {"url": …}}``, ``{"videos": [{"url": …}]}``). Objects are
    read ``video``, ``videos``, ``image``, ``images`` first, then their other keys by name; lists in
    order; the first sighting of a URI decides its place."""
    return tuple(dict.fromkeys(_uris(output, 0)))


def _uris(value: Any, depth: int) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        uri = value.strip()
        if is_uri(uri):
            yield uri
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _uris(item, depth + 1)
    elif isinstance(value, Mapping):
        keys = [k for k in _PREFERRED if k in value]
        keys += sorted((k for k in value if k not in _PREFERRED), key=str)
        for key in keys:
            yield from _uris(value[key], depth + 1)


def is_uri(text: str) -> bool:
    """Whether ``text`` is an absolute URI with a host (``https://…``; ``data:`` and paths are not)."""
    if len(text) > 8192 or not _URI.fullmatch(text):
        return False
    try:
        parts = urlsplit(text)
        return bool(parts.scheme and parts.netloc and parts.hostname)
    except ValueError:  # e.g. a bracketed host that is not an IPv6 address
        return False


def read_error(value: Any, answer: Mapping[str, Any] | None = None) -> Mapping[str, Any] | None:
    """A failed job's ``error``: an object is kept whole, text becomes its ``error_message``, anything
    else is kept as JSON text. Without one, the answer's own ``error_message`` or ``message``."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, str) and value.strip():
        return {"error_message": _one_line(value)}
    if not _blank(value):
        return {"error_message": _one_line(json.dumps(value, default=str))}
    text = _error_message(answer or {})
    return {"error_message": text} if text else None


def _blank(value: Any) -> bool:
    """Whether a value says nothing: null, false, 0 (as an ``error_code`` of 0 is no error), blank
    text, an empty list or object."""
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | Mapping):
        return not value
    return value is None or value is False or (isinstance(value, int | float) and value == 0)


def read_request_id(answer: Any) -> str | None:
    """The request id of a submit answer: ``request_id`` (text or a number), else the id inside its
    ``status_url``, ``result_url`` or ``cancel_url``. ``None`` when there is none that can go in a URL."""
    if not isinstance(answer, Mapping):
        return None
    value = answer.get("request_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _REQUEST_ID.fullmatch(value.strip()):
        return value.strip()
    for key in ("status_url", "result_url", "cancel_url"):
        url = answer.get(key)
        found = _REQUEST_IN_URL.search(url) if isinstance(url, str) else None
        if found and _REQUEST_ID.fullmatch(unquote(found.group(1))):
            return unquote(found.group(1))
    return None


def read_outcome(answer: Any) -> str:
    """A cancel's outcome: ``cancelled`` (it was queued; never billed), ``not_cancellable``, or the word
    the API wrote, folded (``CANCELED`` is ``cancelled``)."""
    if not isinstance(answer, Mapping):
        return "unknown"
    word = read_word(answer.get("outcome"))
    if word == NO_WORD:
        word = read_word(answer.get("status"))
    word = WORDS.get(word, word)
    return "unknown" if word == NO_WORD else word


def read_price(answer: Any) -> Mapping[str, Any] | None:
    """The price call's answer with a usable ``base_price_usd`` (a number > 0, or a string of one) and
    ``price_unit`` (``second`` or ``output``, any case, plural too); else ``None`` (use the table)."""
    if not isinstance(answer, Mapping):
        return None
    usd = read_number(answer.get("base_price_usd"))
    unit = read_word(answer.get("price_unit", "second")).removesuffix("s")
    if not usd or unit not in ("second", "output"):
        return None
    return {**answer, "base_price_usd": usd, "price_unit": unit}


def read_state(request_id: str, answer: Any) -> RemoteState:
    """A status or result answer as a :class:`RemoteState` (:class:`ServerError` if it is no object).

    The status word is folded and looked up in :data:`WORDS`. With no word at all, an answer carrying
    outputs is completed and one carrying an error failed. A word the reader does not know (or no
    word and nothing else) is live: queued when the answer has a queue position, else running."""
    if not isinstance(answer, Mapping):
        raise ServerError(f"request {request_id}: the answer is not a JSON object ({type(answer).__name__})")
    word = read_word(answer.get("status"))
    outputs = read_outputs(answer.get("output"))
    position = read_position(answer.get("queue_position"))
    raw_error = answer.get("error")
    status = WORDS.get(word)
    known = status is not None
    if status is None and word == NO_WORD and outputs:
        status, known = COMPLETED, True
    elif status is None and word == NO_WORD and not _blank(raw_error):
        status, known = FAILED, True
    elif status is None:
        status = IN_QUEUE if position is not None else IN_PROGRESS
    return RemoteState(
        request_id=request_id,
        status=status,
        queue_position=position,
        outputs=outputs,
        cost_usd=read_number(answer.get("cost")),
        error=read_error(raw_error, answer) if status == FAILED else None,
        created_at=read_time(answer.get("created_at")),
        finished_at=read_time(answer.get("finished_at")),
        word=word,
        known=known,
    )
