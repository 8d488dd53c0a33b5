"""The tolerant reader (``runner/api/answers.py``): every rule of ``docs/api-answers.md``, and two
promises over answers hypothesis builds from the vocabulary: reading never raises anything but the
project's ``ApiError``, and every output URI in an answer is collected, once, in a stable order.

The simulator's own writer of each shape (``Wire``) is read back here too: for every shape in SHAPES,
every answer of the scripted conversation in ``test_simulator_shapes`` means to the reader what the
documented answer means.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_simulator_shapes import Story, documented, tell

from runner.api.answers import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    LIVE,
    NO_WORD,
    TERMINAL,
    WORDS,
    RemoteState,
    carries_error,
    error_from_answer,
    is_uri,
    parse_retry_after,
    read_body,
    read_error,
    read_number,
    read_outcome,
    read_outputs,
    read_position,
    read_price,
    read_request_id,
    read_state,
    read_time,
)
from runner.errors import (
    AccountError,
    ApiError,
    BalanceError,
    ErrorRecord,
    InputRejected,
    RateLimited,
    RequestNotFound,
    ServerError,
)
from runner.simulator import GRACE_SHAPES, SHAPES
from runner.simulator.shapes import Wire

NOON = 1772366400.0  # 2026-03-01T12:00:00Z
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- timestamps ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2026-03-01T12:00:00Z", NOON),
        ("2026-03-01T12:00:00+00:00", NOON),
        ("2026-03-01T07:00:00-05:00", NOON),
        ("2026-03-01T17:30:00+05:30", NOON),
        ("2026-03-01T12:00:00", NOON),  # no zone: UTC
        ("2026-03-01 12:00:00", NOON),
        ("2026-03-01t12:00:00z", NOON),
        ("20260301T120000Z", NOON),
        ("2026-03-01T12:00:00.250Z", NOON + 0.25),
        ("2026-03-01T12:00:00.123456789Z", NOON + 0.123456),
        ("2026-03-01T12:00:00,5Z", NOON + 0.5),
        ("Sun, 01 Mar 2026 12:00:00 GMT", NOON),
        (1772366400, NOON),
        (1772366400.25, NOON + 0.25),
        ("1772366400", NOON),
        (" 1772366400.5 ", NOON + 0.5),
        (1772366400250, NOON + 0.25),  # milliseconds
        ("1772366400250", NOON + 0.25),
        (1772366400250000, NOON + 0.25),  # microseconds
        (1772366400250000000, NOON + 0.25),  # nanoseconds
        (None, None),
        ("", None),
        ("   ", None),
        ("yesterday", None),
        ("2026-13-45T99:00:00Z", None),
        (0, None),
        (-5, None),
        (True, None),
        (math.inf, None),
        (math.nan, None),
        (1e300, None),
        ({"seconds": 1}, None),
        ([1772366400], None),
    ],
)
def test_a_timestamp_is_read_in_any_common_form(value: Any, seconds: float | None) -> None:
    got = read_time(value)
    assert got == (None if seconds is None else pytest.approx(seconds, abs=1e-6))


TIME_SHAPES = [name for name, shape in SHAPES.items() if shape.facet == "timestamps"]


@pytest.mark.parametrize("name", TIME_SHAPES)
def test_every_timestamp_shape_the_simulator_writes_reads_as_the_true_instant(name: str) -> None:
    """The reader and the simulator's writer agree on every timestamp form: the true instant, to the
    precision the form keeps (whole seconds for most), or nothing where the shape gives nothing."""
    created, finished = NOON + 0.375, NOON + 130.75
    body: dict[str, Any] = {}
    Wire([name]).put_times(body, created_at=created, finished_at=finished)
    state = read_state("r", {"status": "completed", **body})
    if name in ("null-timestamps", "absent-timestamps"):
        assert (state.created_at, state.finished_at) == (None, None)
        return
    precision = (
        1e-3 if name in ("iso-fraction-timestamps", "epoch-ms-timestamps", "epoch-float-timestamps") else 1
    )
    for got, wall in ((state.created_at, created), (state.finished_at, finished)):
        assert got is not None and wall - precision <= got <= wall + 1e-6, (name, body)


# -- status words -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("in_queue", IN_QUEUE),
        ("IN_QUEUE", IN_QUEUE),
        ("In-Queue", IN_QUEUE),
        ("queued", IN_QUEUE),
        ("in_progress", IN_PROGRESS),
        ("IN PROGRESS", IN_PROGRESS),
        ("running", IN_PROGRESS),
        ("completed", COMPLETED),
        ("COMPLETED", COMPLETED),
        ("succeeded", COMPLETED),
        ("Succeeded", COMPLETED),
        ("failed", FAILED),
        ("FAILED", FAILED),
        ("cancelled", CANCELLED),
        ("canceled", CANCELLED),
        ("CANCELED", CANCELLED),
        (" completed ", COMPLETED),
    ],
)
def test_a_status_word_is_read_in_any_case_and_spelling(word: str, status: str) -> None:
    state = read_state("r", {"status": word})
    assert (state.status, state.known) == (status, True)


def test_a_word_nobody_knows_is_live_queued_with_a_queue_position_else_running() -> None:
    running = read_state("r", {"status": "Preparing"})
    assert (running.status, running.known, running.word, running.label) == (
        IN_PROGRESS,
        False,
        "preparing",
        "preparing",
    )
    queued = read_state("r", {"status": "WAITING", "queue_position": "4"})
    assert (queued.status, queued.queue_position, queued.known) == (IN_QUEUE, 4, False)
    assert read_state("r", {"status": 7}).word == "7"
    assert read_state("r", {"status": {"state": "x"}}).word == NO_WORD


def test_without_a_status_word_outputs_mean_completed_and_an_error_failed() -> None:
    done = read_state("r", {"output": {"video": "https://cdn.runcomfy.net/a.mp4"}})
    assert (done.status, done.known) == (COMPLETED, True)
    failed = read_state("r", {"status": None, "error": "out of memory"})
    assert (failed.status, failed.error) == (FAILED, {"error_message": "out of memory"})
    nothing = read_state("r", {"request_id": "r"})
    assert (nothing.status, nothing.known, nothing.word) == (IN_PROGRESS, False, NO_WORD)


# -- outputs ------------------------------------------------------------------------------------
A, B, C = (f"https://cdn.runcomfy.net/r/{n}.mp4" for n in ("a", "b", "c"))


@pytest.mark.parametrize(
    ("output", "uris"),
    [
        ({"video": A}, (A,)),
        ({"videos": [A, B]}, (A, B)),
        ({"images": [B, A], "video": C}, (C, B, A)),  # video, videos, image, images first
        (A, (A,)),
        (f"  {A} ", (A,)),
        ([A, B], (A, B)),
        ({"video": {"url": A}}, (A,)),
        ({"videos": [{"url": A, "content_type": "video/mp4"}, {"url": B}]}, (A, B)),
        ([{"url": A}, {"url": B}], (A, B)),
        ({"video_url": A}, (A,)),
        ({"video_urls": [A, B], "seed": 1234, "has_nsfw_concepts": [False]}, (A, B)),
        ({"zeta": A, "alpha": B}, (B, A)),  # other keys by name
        ({"video": A, "videos": [A, B], "thumb": {"url": A}}, (A, B)),  # once each
        ({"video": "not a uri", "image": "data:image/png;base64,AAAA", "path": "/tmp/x.mp4"}, ()),
        ({"video": "http://[not-ipv6/x.mp4"}, ()),
        (None, ()),
        (42, ()),
        ({}, ()),
        ([], ()),
    ],
)
def test_every_uri_under_output_is_collected_once_in_a_stable_order(
    output: Any, uris: tuple[str, ...]
) -> None:
    assert read_outputs(output) == uris


OUTPUT_SHAPES = [name for name, shape in SHAPES.items() if shape.facet == "output"]


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("extra", [False, True])
@pytest.mark.parametrize("name", OUTPUT_SHAPES)
def test_every_output_shape_the_simulator_writes_reads_as_its_urls(
    name: str, extra: bool, count: int
) -> None:
    urls = [f"http://sim.local/files/r/output{'' if i == 0 else f'-{i}'}.mp4" for i in range(count)]
    wire = Wire([name, "extra-fields"] if extra else [name])
    assert read_outputs(wire.output(urls)) == tuple(urls)


# -- numbers, errors, codes ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "number"),
    [(1.4, 1.4), (3, 3.0), ("1.4", 1.4), (" 18 ", 18.0), ("$1.40", 1.4), ("1e1", 10.0), (".5", 0.5)]
    + [
        (v, None)
        for v in (None, "", "free", -1, "-1", True, math.inf, math.nan, "nan", "1e999", [1], {"usd": 1})
    ],
)
def test_an_amount_is_a_number_or_a_string_of_one(value: Any, number: float | None) -> None:
    assert read_number(value) == number


def test_a_queue_position_is_a_whole_number_as_a_number_or_a_string() -> None:
    assert [read_position(v) for v in (3, "3", 3.0, " 0 ", None, "first", -2, 1e30)] == [3, 3, 3, 0] + [
        None
    ] * 4


def test_the_cost_in_a_result_is_read_as_a_number_or_a_string_and_null_is_unknown() -> None:
    assert read_state("r", {"status": "completed", "cost": "18.00"}).cost_usd == 18.0
    assert read_state("r", {"status": "completed", "cost": 0.42}).cost_usd == 0.42
    assert read_state("r", {"status": "completed", "cost": None}).cost_usd is None


@pytest.mark.parametrize(
    ("error", "record"),
    [
        ({"error_code": 500001, "error_message": "boom"}, {"error_code": 500001, "error_message": "boom"}),
        ({"code": "GENERATION_FAILED", "message": "boom"}, {"code": "GENERATION_FAILED", "message": "boom"}),
        ("boom", {"error_message": "boom"}),
        ("  boom\n  twice ", {"error_message": "boom twice"}),
        (None, None),
        ("", None),
        (42, {"error_message": "42"}),
        (["a", 1], {"error_message": '["a", 1]'}),
    ],
)
def test_a_failed_jobs_error_is_an_object_a_string_or_null(error: Any, record: Any) -> None:
    state = read_state("r", {"status": "failed", "error": error})
    assert (state.status, state.error) == (FAILED, record)
    assert ErrorRecord.remote(state.error).message  # what the journal and the report keep: always text


def test_a_failed_result_without_an_error_object_keeps_its_own_message() -> None:
    state = read_state("r", {"status": "failed", "error_message": "the model refused the prompt"})
    assert state.error == {"error_message": "the model refused the prompt"}


@pytest.mark.parametrize(
    ("body", "carries"),
    [
        ({"error_code": None}, False),
        ({"error_code": 0}, False),
        ({"error_code": "0"}, False),
        ({"error_code": ""}, False),
        ({"error_code": False}, False),
        ({"request_id": "r"}, False),
        ({"error_code": 500001}, True),
        ({"error_code": "400002"}, True),
        ({"error_code": "E_FAIL"}, True),
        ({"error_code": True}, True),
        ([{"error_code": 1}], False),
        (None, False),
    ],
)
def test_an_error_code_that_is_null_zero_or_absent_is_no_error(body: Any, carries: bool) -> None:
    assert carries_error(body) is carries


def raw(status: int, body: Any, content_type: str = "application/json", *, submit: bool = False) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return read_body(status, content, {"content-type": content_type}, what="GET /x", submit=submit)


def test_a_2xx_is_an_answer_and_an_error_code_in_it_is_an_error_unless_null() -> None:
    assert (
        raw(200, {"status": "completed", "error_code": None, "error_message": None})["status"] == "completed"
    )
    assert raw(201, {"request_id": "r"}) == {"request_id": "r"}
    assert raw(202, {"request_id": "r"}) == {"request_id": "r"}
    with pytest.raises(ServerError, match="500/500001: simulated"):
        raw(200, {"error_code": 500001, "error_message": "simulated"})
    with pytest.raises(BalanceError):
        raw(200, {"error_code": "400002", "error_message": "insufficient balance"})
    with pytest.raises(ServerError, match="not JSON"):
        raw(200, b"<html>ok</html>", "text/html")
    with pytest.raises(ServerError, match="empty body"):
        raw(204, b"")


def test_a_submit_answer_that_names_its_request_id_is_accepted_whatever_else_it_says() -> None:
    """The request exists and is paid: it is polled (and ends as RunComfy says), never left unknown."""
    answer = {"request_id": "r-1", "error_code": 500001, "error_message": "queue is slow today"}
    assert raw(200, answer, submit=True) == answer
    with pytest.raises(ServerError):
        raw(200, answer)  # a poll with an error_code is retried, as before


@pytest.mark.parametrize(
    ("answer", "request_id"),
    [
        ({"request_id": "abc-123"}, "abc-123"),
        ({"request_id": " abc "}, "abc"),
        ({"request_id": 12345}, "12345"),
        ({"request_id": None, "status_url": "https://x/v1/requests/abc%2D1/status"}, "abc-1"),
        ({"result_url": "https://x/v1/requests/xyz/result?x=1"}, "xyz"),
        ({"request_id": ""}, None),
        ({"request_id": "a b"}, None),
        ({"request_id": "a/b"}, None),
        ({"request_id": True}, None),
        ({"request_id": ["abc"]}, None),
        ({"id": "abc"}, None),
        ("abc", None),
    ],
)
def test_a_submit_answers_request_id_is_text_a_number_or_inside_its_urls(
    answer: Any, request_id: Any
) -> None:
    assert read_request_id(answer) == request_id


@pytest.mark.parametrize(
    ("status", "body", "content_type", "error", "message"),
    [
        (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html", ServerError, "Bad Gateway"),
        (503, b"", "text/plain", ServerError, "Service Unavailable (empty body)"),
        (500, b"oops", "", ServerError, "Internal Server Error (untyped body)"),
        (429, b"<html>slow down</html>", "text/html", RateLimited, "Too Many Requests (text/html body)"),
        (429, b"", "", RateLimited, "empty body"),
        (404, b'{"detail": "Not Found"}', "application/json", RequestNotFound, "Not Found"),
        (404, b'{"error": {"message": "no such request"}}', "application/json", RequestNotFound, "no such"),
        (401, b"", "", AccountError, "RUNCOMFY_API_TOKEN"),
        (
            422,
            b'{"error_code": 422001, "detail": [{"field": "x"}]}',
            "application/json",
            InputRejected,
            "(JSON body)",
        ),
        (599, b"\xff\xfe", "", ServerError, "answered 599: HTTP error (untyped body)"),
        (302, b"", "", ServerError, "Found"),
    ],
)
def test_error_answers_in_json_html_or_empty_say_what_they_can(
    status: int, body: bytes, content_type: str, error: type[ApiError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)) as caught:
        raw(status, body, content_type)
    assert "\n" not in str(caught.value)


def test_a_retry_after_is_honoured_from_the_header_whatever_the_body() -> None:
    with pytest.raises(RateLimited) as caught:
        read_body(429, b"<html/>", {"content-type": "text/html", "retry-after": "7"}, what="GET /x")
    assert caught.value.retry_after == 7.0
    assert parse_retry_after("soon") is None and parse_retry_after("") is None


def test_a_cancel_outcome_is_read_in_any_case_and_spelling() -> None:
    assert read_outcome({"outcome": "CANCELED"}) == "cancelled"
    assert read_outcome({"outcome": "not_cancellable"}) == "not_cancellable"
    assert read_outcome({"status": "Cancelled"}) == "cancelled"
    assert read_outcome({}) == "unknown" and read_outcome(["cancelled"]) == "unknown"


def test_a_price_is_read_as_a_number_or_a_string_and_is_none_when_unusable() -> None:
    assert read_price({"base_price_usd": "0.084", "price_unit": "Seconds"}) == {
        "base_price_usd": 0.084,
        "price_unit": "second",
    }
    assert (
        read_price({"base_price_usd": 0.5, "price_unit": "output", "pricing_note": "x"})["base_price_usd"]
        == 0.5
    )
    for unusable in (
        {"base_price_usd": None},
        {"base_price_usd": 0},
        {"base_price_usd": 1, "price_unit": "token"},
    ):
        assert read_price(unusable) is None
    assert read_price("0.084") is None


# -- every shape's every answer means what the documented one means -------------------------------
def meaning(story: Story, label: str) -> Any:
    """What one answer of the conversation means to the reader, with request ids named by job."""
    answer = story.answers[label]
    headers = {k.lower(): v for k, v in answer.headers.items()}
    submit = label.startswith("submit")
    try:
        body = read_body(answer.status_code, answer.content, headers, what=label, submit=submit)
    except ApiError as exc:
        return type(exc).__name__
    if submit:
        found = read_request_id(body)
        return next(job for job, rid in story.ids.items() if rid == found)
    if label.startswith("cancel"):
        return read_outcome(body)
    if label == "price":
        price = read_price(body)
        return None if price is None else (price["base_price_usd"], price["price_unit"])
    if label.startswith("download"):
        return answer.status_code
    state = read_state("r", body)
    names = {rid: job for job, rid in story.ids.items()}
    outputs = tuple(re.sub(r"/files/([^/]+)/", lambda m: f"/files/{names[m[1]]}/", u) for u in state.outputs)
    message = ErrorRecord.remote(state.error).message if state.status == FAILED else None
    # Each simulator starts its wall clock afresh: what must agree is which times there are and how far
    # apart they are (to the second, as the coarsest form writes them).
    created, finished = state.created_at, state.finished_at
    times = (created is not None, round(finished - created) if created and finished else None)
    return (state.status, state.known, state.queue_position, outputs, state.cost_usd, message, times)


def expected_difference(name: str, label: str, plain: Any) -> Any:
    """What a shape's answer must mean where the shape itself takes something away."""
    if label == "price" and name == "null-numbers":
        return None  # no price: the table's is used
    if not isinstance(plain, tuple) or label == "price":
        return plain
    status, known, position, outputs, cost, message, times = plain
    if name == "null-numbers":
        position, cost = None, None
    if name in ("null-timestamps", "absent-timestamps"):
        times = (False, None)
    if name == "unknown-live-status" and status == IN_PROGRESS:
        known = False
    if name == "error-null" and status == FAILED:
        message = "RunComfy reported the job failed"
    return (status, known, position, outputs, cost, message, times)


@pytest.mark.anyio
@pytest.mark.parametrize("name", [n for n in SHAPES if n not in GRACE_SHAPES])
async def test_every_answer_in_every_shape_means_what_the_documented_answer_means(name: str) -> None:
    plain, shaped = await documented(), await tell(shapes=[name])
    assert list(shaped.answers) == list(plain.answers)
    for label in plain.answers:
        if label.startswith("download") or label.startswith("fault"):
            continue  # bytes and fault bodies: their errors are read above
        want = expected_difference(name, label, meaning(plain, label))
        assert meaning(shaped, label) == want, (name, label, shaped.answers[label].text)


# -- the two promises, over answers built from the vocabulary -------------------------------------
URI = st.builds(
    "https://{}/{}/{}.mp4".format,
    st.sampled_from(["cdn.runcomfy.net", "model-api.runcomfy.net", "sim.local", "127.0.0.1:8790"]),
    st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=12),
    st.sampled_from(["output", "output-1", "clip", "a%20b"]),
)
JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["", " ", "video/mp4", "data:video/mp4;base64,AAAA", "/tmp/x.mp4", "http://", "https://[x"]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
NOT_URI = JUNK.filter(lambda v: not (isinstance(v, str) and "://" in v))
OUTPUT_KEYS = [
    "video",
    "videos",
    "image",
    "images",
    "url",
    "video_url",
    "video_urls",
    "result",
    "data",
    "files",
]
EXTRA_KEYS = ["seed", "content_type", "has_nsfw_concepts", "meta", "trace_id", "width", "logs"]


def spelled(word: str) -> st.SearchStrategy[str]:
    """A word as an API might write it: any case, dashes or spaces for underscores, padded."""
    return st.sampled_from(
        [
            word,
            word.upper(),
            word.title(),
            word.replace("_", "-"),
            word.replace("_", " ").upper(),
            f" {word} ",
        ]
    )


STATUS = st.one_of(
    st.sampled_from(sorted(WORDS)).flatmap(spelled), st.sampled_from(["preparing", "done"]), JUNK
)
TIME = st.one_of(
    st.floats(min_value=1e9, max_value=2e9).flatmap(
        lambda t: st.sampled_from(
            [
                t,
                int(t),
                int(t * 1000),
                str(int(t)),
                datetime.fromtimestamp(t, UTC).isoformat(),
                datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            ]
        )
    ),
    JUNK,
)
NUMBER = st.one_of(st.floats(min_value=0, max_value=1e6), st.integers(0, 10**6), JUNK).flatmap(
    lambda v: (
        st.sampled_from([v, str(v)]) if isinstance(v, int | float) and not isinstance(v, bool) else st.just(v)
    )
)
ERROR = st.one_of(
    JUNK,
    st.fixed_dictionaries(
        {},
        optional={"error_code": JUNK, "error_message": JUNK, "code": JUNK, "message": JUNK, "detail": JUNK},
    ),
)


@st.composite
def holding(draw: st.DrawFn, uris: list[str], depth: int = 0) -> Any:
    """A JSON value in which exactly ``uris`` (and no other URI) appear, nested in lists and objects
    under any of the keys outputs come under, with non-URI values beside them."""
    if len(uris) == 1 and (depth >= 3 or draw(st.booleans())):
        (uri,) = uris
        return draw(st.sampled_from([uri, {"url": uri}, {"url": uri, "content_type": "video/mp4"}]))
    if depth >= 3:
        parts = [[uri] for uri in uris]
    else:
        cut = sorted(draw(st.lists(st.integers(0, len(uris)), max_size=2)))
        parts = [uris[a:b] for a, b in zip([0, *cut], [*cut, len(uris)], strict=True) if uris[a:b]]
    children = [draw(holding(part, depth + 1)) for part in parts]
    junk = draw(st.lists(NOT_URI, max_size=2))
    if draw(st.booleans()) or depth >= 3:
        mixed = children + junk
        return draw(st.permutations(mixed)) if mixed else []
    keys = draw(
        st.lists(st.sampled_from(OUTPUT_KEYS), min_size=len(children), max_size=len(children), unique=True)
    )
    extra = draw(st.lists(st.sampled_from(EXTRA_KEYS), max_size=len(junk), unique=True))
    return {**dict(zip(keys, children, strict=True)), **dict(zip(extra, junk, strict=False))}


@st.composite
def answers(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A status or result answer from the vocabulary, and the URIs its ``output`` carries."""
    uris = draw(st.lists(URI, max_size=4, unique=True))
    fields: dict[str, Any] = {}
    optional = {
        "request_id": st.one_of(st.uuids().map(str), JUNK),
        "status": STATUS,
        "queue_position": NUMBER,
        "cost": NUMBER,
        "error": ERROR,
        "error_code": st.one_of(st.none(), st.just(0), JUNK),
        "error_message": JUNK,
        "created_at": TIME,
        "finished_at": TIME,
        "status_url": st.one_of(URI, JUNK),
        "trace_id": JUNK,
        "meta": st.dictionaries(st.sampled_from(EXTRA_KEYS), JUNK, max_size=3),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            fields[key] = draw(strategy)
    if uris or draw(st.booleans()):
        fields["output"] = draw(holding(uris)) if uris else draw(NOT_URI)
    top = draw(st.sampled_from(["object", "object", "object", "list", "other"]))
    if top == "list":
        return [fields], []
    if top == "other":
        return draw(JUNK), []
    return fields, uris


@PROPERTY
@given(answers())
def test_reading_any_answer_gives_a_state_or_an_api_error_and_collects_every_uri(
    drawn: tuple[Any, list[str]],
) -> None:
    answer, uris = drawn
    try:
        state = read_state("r", answer)
    except ApiError:
        assert not isinstance(answer, Mapping)
        return
    assert isinstance(state, RemoteState) and state.status in LIVE | TERMINAL
    assert sorted(state.outputs) == sorted(uris)  # every URI, none twice, nothing else
    for value in (state.created_at, state.finished_at, state.cost_usd):
        assert value is None or (isinstance(value, float) and math.isfinite(value))
    assert state.queue_position is None or state.queue_position >= 0
    assert state.error is None or isinstance(state.error, Mapping)
    if state.status == FAILED:
        assert ErrorRecord.remote(state.error).message  # what the journal keeps is always text
    json.dumps(dict(state.error or {}), default=str)


@PROPERTY
@given(answers())
def test_the_order_of_outputs_does_not_depend_on_the_order_of_keys(drawn: tuple[Any, list[str]]) -> None:
    answer, _ = drawn
    output = answer.get("output") if isinstance(answer, Mapping) else None

    def reversed_keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reversed_keys(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reversed_keys(v) for v in value]
        return value

    assert (
        read_outputs(output)
        == read_outputs(reversed_keys(output))
        == read_outputs(json.loads(json.dumps(output)))
    )


STATUS_CODES = st.sampled_from(
    [200, 201, 202, 204, 301, 400, 401, 402, 403, 404, 422, 429, 500, 502, 503, 599]
)
BODIES = st.one_of(
    answers().map(lambda drawn: json.dumps(drawn[0], allow_nan=True).encode()),
    st.binary(max_size=64),
    st.sampled_from(
        [b"", b"<html><body>502 Bad Gateway</body></html>", b"[" * 5000 + b"]" * 5000, b"null", b"1e999"]
    ),
)


@PROPERTY
@given(STATUS_CODES, BODIES, st.sampled_from(["application/json", "text/html", ""]), st.booleans(), JUNK)
def test_reading_any_bytes_under_any_status_raises_nothing_but_api_errors(
    status: int, body: bytes, content_type: str, submit: bool, retry_after: Any
) -> None:
    headers = {"content-type": content_type, "retry-after": str(retry_after)}
    try:
        answer = read_body(status, body, headers, what="POST /v1/models/m", submit=submit)
    except ApiError as exc:
        assert "\n" not in str(exc)
        assert exc.retry_after is None or exc.retry_after >= 0
        return
    assert 200 <= status < 300
    read_request_id(answer)
    read_outcome(answer)
    read_price(answer)
    try:
        read_state("r", answer)
    except ApiError:
        assert not isinstance(answer, Mapping)


@PROPERTY
@given(STATUS_CODES, JUNK | ERROR)
def test_any_error_body_becomes_one_of_the_projects_errors(status: int, body: Any) -> None:
    assert isinstance(error_from_answer(status, body, {}), ApiError)


@PROPERTY
@given(st.text(max_size=40) | URI)
def test_any_text_is_a_uri_or_not_without_raising(text: str) -> None:
    assert is_uri(text) in (True, False)
    assert read_error(text) in (None, {"error_message": " ".join(text.split())[:300]}) or len(text) > 299
    parse_retry_after(text)
    read_time(text)
