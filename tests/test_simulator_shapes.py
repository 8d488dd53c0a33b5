"""Every answer shape in SHAPES really shows on the wire, and none changes what the account does.

One scripted conversation (four jobs: one with one output, one with two, one that fails, one cancelled
while queued; polls, results with cost, downloads, the price, 5xx and 429 faults, an unknown id) is
played against the in-process simulator with a manual clock, once as documented and once per shape.
Each shape's check reads the answers it changed; every run's books must match the documented run's.
The keep-alive timeout is a property of a served socket, so it is checked on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import I2V, REPO

from runner.errors import UsageError
from runner.simulator import (
    GRACE_SHAPES,
    SHAPES,
    ManualClock,
    SimulatorConfig,
    add_simulator_arguments,
    config_from_args,
    create_app,
    expected_output_bytes,
    running_server,
)

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer sim-token"}
BYTES = 9000
# The account's books: what /_sim/stats must say alike whatever the shape.
BOOKS = (
    "requests_total",
    "requests",
    "submits_accepted",
    "duplicate_submissions",
    "running",
    "queued",
    "max_running",
    "jobs",
    "faults",
    "errors",
    "cancels",
    "cost_charged_usd",
)


@dataclass
class Story:
    """The answers of one scripted conversation, by label, and the simulator's books after it."""

    answers: dict[str, httpx.Response] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # job label → request id
    walls: dict[str, tuple[float, float]] = field(default_factory=dict)  # job → true created, finished
    stats: dict[str, Any] = field(default_factory=dict)

    def json(self, label: str) -> Any:
        return self.answers[label].json()

    def labelled(self, prefix: str) -> list[tuple[str, httpx.Response]]:
        return [(label, answer) for label, answer in self.answers.items() if label.startswith(prefix)]

    def last_ok(self, prefix: str) -> Any:
        """The last answer with HTTP 200 among those labelled ``prefix…``, as JSON."""
        return [a for _, a in self.labelled(prefix) if a.status_code == 200][-1].json()


async def tell(**knobs: Any) -> Story:
    """Play the conversation against a fresh simulator with these knobs."""
    config = SimulatorConfig(
        **{"concurrency": 1, "job_seconds": 2, "job_spread": 0, "output_bytes": BYTES, **knobs}
    )
    clock = ManualClock()
    app = create_app(config, clock=clock)
    story = Story()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim", headers=AUTH) as client:

        async def say(label: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
            story.answers[label] = answer = await client.request(method, path, **kwargs)
            return answer

        async def control(**changes: Any) -> None:
            assert (await client.post("/_sim/config", json=changes)).status_code == 200

        async def submit(job: str, prompt: str) -> None:
            body = {"image": "https://example.com/a.png", "prompt": prompt}
            story.ids[job] = (await say(f"submit {job}", "POST", f"/v1/models/{I2V}", json=body)).json()[
                "request_id"
            ]

        def requests(job: str) -> str:
            return f"/v1/requests/{story.ids[job]}"

        await submit("a", "one output")  # runs at once
        await control(outputs_per_job=2)
        await submit("b", "two outputs")  # queued first
        await control(outputs_per_job=1, fail_rate=1.0)
        await submit("d", "fails")
        await control(fail_rate=0.0)
        await submit("c", "cancelled while queued")
        for n in (1, 2, 3):
            await say(f"status a {n}", "GET", requests("a") + "/status")
            await say(f"status b {n}", "GET", requests("b") + "/status")
            await say(f"result b live {n}", "GET", requests("b") + "/result")
        await say("cancel c", "POST", requests("c") + "/cancel")
        await say("cancel a", "POST", requests("a") + "/cancel")
        await say("price", "GET", f"/v1/models/{I2V}")
        clock.advance(2)  # a completes; b starts
        for n in (1, 2, 3):
            await say(f"result a {n}", "GET", requests("a") + "/result", params={"include_cost": "true"})
        await say("status a done", "GET", requests("a") + "/status")
        clock.advance(4)  # b completes at 4; d starts and fails at 6
        for job in ("b", "d"):
            for n in (1, 2, 3):
                await say(f"result {job} {n}", "GET", requests(job) + "/result", params={"include_cost": "1"})
        await say("result c", "GET", requests("c") + "/result", params={"include_cost": "true"})
        for job, name in (("a", "output.mp4"), ("b", "output.mp4"), ("b", "output-1.mp4")):
            for n in (1, 2, 3):
                await say(f"download {job}/{name} {n}", "GET", f"/files/{story.ids[job]}/{name}")
        await say("unknown id", "GET", "/v1/requests/no-such-id/status")
        await control(rate_5xx=1.0, fault_endpoints={"5xx": ["status"], "429": ["status"]}, seed=1)
        for n in range(6):
            await say(f"fault 5xx {n}", "GET", requests("a") + "/status")
        await control(rate_5xx=0.0, rate_429=1.0)
        await say("fault 429", "GET", requests("a") + "/status")
        await control(rate_429=0.0)
        story.stats = (await client.get("/_sim/stats")).json()
    sim = app.state.sim
    for job, request_id in story.ids.items():
        described = sim.describe(sim.lookup(request_id)[0])
        if described["finished_at"] is not None:
            story.walls[job] = (sim.wall(described["submitted_at"]), sim.wall(described["finished_at"]))
    return story


_PLAIN: list[Story] = []


async def documented() -> Story:
    """The conversation as documented (no shape), told once per module."""
    if not _PLAIN:
        _PLAIN.append(await tell())
    return _PLAIN[0]


def json_answers(story: Story) -> Iterator[tuple[str, httpx.Response]]:
    for label, answer in story.answers.items():
        if answer.headers.get("content-type", "").startswith("application/json"):
            yield label, answer


def words(story: Story) -> list[str]:
    """Every status word and cancel outcome in the conversation, in order."""
    found = []
    for _, answer in json_answers(story):
        body = answer.json()
        found += [body[key] for key in ("status", "outcome") if key in body]
    return found


# --- what each shape must look like


def timestamps(check: Callable[[Any, float], None]) -> Callable[[Story, Story], None]:
    """A check of a timestamp form: ``check(value, true Unix seconds)`` for each job's two times."""

    def checked(story: Story, plain: Story) -> None:
        for job in ("a", "b"):
            body = story.last_ok(f"result {job} ")
            for key, wall in zip(("created_at", "finished_at"), story.walls[job], strict=True):
                check(body[key], wall)

    return checked


def iso(
    pattern: str, to_seconds: Callable[[str], float], precision: float = 1.0
) -> Callable[[Any, float], None]:
    def check(value: Any, wall: float) -> None:
        assert isinstance(value, str) and re.fullmatch(pattern, value), value
        assert wall - precision < to_seconds(value) <= wall

    return check


def _aware(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _naive(text: str) -> float:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is None
    return moment.replace(tzinfo=UTC).timestamp()


def _epoch(kind: type, scale: float, precision: float) -> Callable[[Any, float], None]:
    def check(value: Any, wall: float) -> None:
        assert type(value) is kind, value
        assert wall - precision < value / scale <= wall + 1e-6

    return check


def _none(value: Any, wall: float) -> None:
    assert value is None


def absent(story: Story, plain: Story) -> None:
    for job in ("a", "b"):
        body = story.last_ok(f"result {job} ")
        assert body["status"] == "completed" and "created_at" not in body and "finished_at" not in body


def status_words(mapping: dict[str, str]) -> Callable[[Story, Story], None]:
    def check(story: Story, plain: Story) -> None:
        expected = [mapping.get(word, word) for word in words(plain)]
        assert words(story) == expected
        assert set(mapping) <= set(words(plain))  # the conversation does say every word changed

    return check


def upper_case(story: Story, plain: Story) -> None:
    assert words(story) == [word.upper() for word in words(plain)]
    assert {"IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "NOT_CANCELLABLE"} <= set(
        words(story)
    )


def unknown_live(story: Story, plain: Story) -> None:
    assert story.json("status a 1")["status"] == "preparing"  # running
    assert story.json("status b 1") == plain.json("status b 1") | {"request_id": story.ids["b"]} | urls(
        story, "b"
    )
    assert words(story) == ["preparing" if w == "in_progress" else w for w in words(plain)]


def urls(story: Story, job: str) -> dict[str, str]:
    root = f"http://sim/v1/requests/{story.ids[job]}"
    return {"status_url": f"{root}/status", "result_url": f"{root}/result"}


def files(story: Story, job: str) -> list[str]:
    names = ["output.mp4"] if job == "a" else ["output.mp4", "output-1.mp4"]
    return [f"http://sim/files/{story.ids[job]}/{name}" for name in names]


def output(one: Callable[[str], Any], several: Callable[[list[str]], Any]) -> Callable[[Story, Story], None]:
    """A check of an output form: job a's output is ``one(url)``, job b's is ``several(urls)``."""

    def check(story: Story, plain: Story) -> None:
        assert story.json("result a 1")["output"] == one(files(story, "a")[0])
        assert story.json("result b 1")["output"] == several(files(story, "b"))

    return check


def output_late(story: Story, plain: Story) -> None:
    for job in ("a", "b"):
        late = [story.json(f"result {job} {n}") for n in (1, 2, 3)]
        assert [body["status"] for body in late] == ["completed"] * 3
        assert [body["output"] for body in late[:2]] == [None, None]  # the grace: two answers
        assert late[2]["output"] == output_of(plain, job, story)
        assert late[0]["cost"] == plain.json(f"result {job} 1")["cost"]  # the bill is already true
    assert story.stats["shaped"]["output-late"] == 4


def output_of(plain: Story, job: str, story: Story) -> Any:
    """The documented output of ``job``, with the request id of ``story``."""
    text = json.dumps(plain.json(f"result {job} 1")["output"])
    return json.loads(text.replace(plain.ids[job], story.ids[job]))


def failure(expected: Callable[[str], Any]) -> Callable[[Story, Story], None]:
    def check(story: Story, plain: Story) -> None:
        message = plain.json("result d 1")["error"]["error_message"]
        body = story.json("result d 1")
        assert body["status"] == "failed" and "error" in body and body["error"] == expected(message)

    return check


def numbers(convert: Callable[[Any], Any]) -> Callable[[Story, Story], None]:
    def check(story: Story, plain: Story) -> None:
        assert story.json("status b 1")["queue_position"] == convert(1)
        assert story.json("result a 1")["cost"] == convert(0.56)
        assert story.json("result c")["cost"] == convert(0.0)  # cancelled while queued: never billed
        assert story.json("price")["base_price_usd"] == convert(0.112)

    return check


def null_numbers(story: Story, plain: Story) -> None:
    numbers(lambda value: None)(story, plain)
    assert story.json("status a 1")["queue_position"] is None  # running: still there, null
    assert "queue_position" not in story.json("status a done")  # finished: as documented


def error_code_null(story: Story, plain: Story) -> None:
    for label, answer in json_answers(story):
        if answer.status_code == 200:
            body = answer.json()
            assert "error_code" in body and "error_message" in body, label
            assert (body["error_code"], body["error_message"]) == (None, None), label
            rest = {k: v for k, v in body.items() if k not in ("error_code", "error_message")}
            assert set(rest) == set(plain.json(label)), label
        else:
            assert answer.json() == plain.json(label) or label.startswith("fault"), label


def extra_fields(story: Story, plain: Story) -> None:
    for label, answer in json_answers(story):
        body, documented_body = answer.json(), plain.json(label)
        assert set(body) > set(documented_body) and body["trace_id"] == "sim-trace-0001", label
    assert story.json("result b 1")["output"]["seed"] == 1234
    assert story.json("result d 1")["error"]["retryable"] is False
    assert story.json("unknown id")["error_code"] == 404001


def submit_status(code: int) -> Callable[[Story, Story], None]:
    def check(story: Story, plain: Story) -> None:
        for label, answer in story.labelled("submit "):
            assert answer.status_code == code and set(answer.json()) == set(plain.json(label))

    return check


def fault_bodies(media: str, body: Callable[[int], bytes]) -> Callable[[Story, Story], None]:
    def check(story: Story, plain: Story) -> None:
        faults = story.labelled("fault ")
        assert {answer.status_code for _, answer in faults} >= {429, 500, 502, 503}
        for _, answer in faults:
            assert answer.headers["content-type"].startswith(media)
            assert answer.content == body(answer.status_code)
        assert story.answers["fault 429"].headers["retry-after"] == "1"
        assert story.json("unknown id")["error_code"] == 404001  # other errors are still JSON

    return check


def html(status: int) -> bytes:
    reason = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway"}
    title = f"{status} {reason.get(status, 'Service Unavailable')}"
    page = (
        f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center><hr></body></html>"
    )
    return page.encode()


def status_404(story: Story, plain: Story) -> None:
    a = [story.answers[f"status a {n}"] for n in (1, 2, 3)]
    b = [story.answers[label] for label in ("status b 1", "result b live 1", "status b 2", "result b live 2")]
    assert [answer.status_code for answer in a] == [404, 404, 200]
    assert [answer.status_code for answer in b] == [404, 404, 200, 200]  # status and result count alike
    assert a[0].json() == plain.json("unknown id")  # the same 404 as for a request id never seen
    assert story.json("status a 3")["status"] == "in_progress"
    assert story.stats["shaped"]["status-404-grace"] == 2 + 2 + 2 + 1  # a, b, d; c was asked once


def file_404(story: Story, plain: Story) -> None:
    for job, name in (("a", "output.mp4"), ("b", "output.mp4"), ("b", "output-1.mp4")):
        seen = [story.answers[f"download {job}/{name} {n}"] for n in (1, 2, 3)]
        assert [answer.status_code for answer in seen] == [404, 404, 200]
        index = 0 if name == "output.mp4" else 1
        assert seen[2].content == expected_output_bytes(story.ids[job], index, BYTES)
    assert story.stats["shaped"]["file-404-grace"] == 6
    assert story.stats["bytes_served"] == 3 * BYTES


CHECKS: dict[str, Callable[[Story, Story], None]] = {
    "iso-utc-offset-timestamps": timestamps(iso(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", _aware)),
    "iso-other-offset-timestamps": timestamps(iso(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-05:00", _aware)),
    "iso-naive-timestamps": timestamps(iso(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", _naive)),
    "iso-fraction-timestamps": timestamps(iso(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", _aware, 0.001)),
    "epoch-seconds-timestamps": timestamps(_epoch(int, 1, 1.0)),
    "epoch-float-timestamps": timestamps(_epoch(float, 1, 1e-6)),
    "epoch-ms-timestamps": timestamps(_epoch(int, 1000, 0.001)),
    "null-timestamps": timestamps(_none),
    "absent-timestamps": absent,
    "upper-case-status": upper_case,
    "canceled-status": status_words({"cancelled": "canceled"}),
    "succeeded-status": status_words({"completed": "succeeded"}),
    "unknown-live-status": unknown_live,
    "output-bare-uri": output(lambda url: url, lambda many: many),
    "output-uri-list": output(lambda url: [url], lambda many: many),
    "output-url-object": output(
        lambda url: {"video": {"url": url}}, lambda many: {"videos": [{"url": u} for u in many]}
    ),
    "output-url-objects": output(
        lambda url: {"videos": [{"url": url, "content_type": "video/mp4"}]},
        lambda many: {"videos": [{"url": u, "content_type": "video/mp4"} for u in many]},
    ),
    "output-url-object-list": output(lambda url: [{"url": url}], lambda many: [{"url": u} for u in many]),
    "output-other-keys": output(lambda url: {"video_url": url}, lambda many: {"video_urls": many}),
    "output-late": output_late,
    "error-string": failure(lambda message: message),
    "error-null": failure(lambda message: None),
    "error-other-object": failure(lambda message: {"code": "GENERATION_FAILED", "message": message}),
    "string-numbers": numbers(lambda value: str(value)),
    "null-numbers": null_numbers,
    "error-code-null": error_code_null,
    "extra-fields": extra_fields,
    "submit-201": submit_status(201),
    "submit-202": submit_status(202),
    "html-errors": fault_bodies("text/html", html),
    "empty-errors": fault_bodies("text/plain", lambda status: b""),
    "status-404-grace": status_404,
    "file-404-grace": file_404,
}


def test_every_shape_has_a_check_here_and_a_line_in_the_docs() -> None:
    assert list(CHECKS) == list(SHAPES)
    docs = (REPO / "docs" / "simulator.md").read_text(encoding="utf-8")
    for name, shape in SHAPES.items():
        assert f"| `{name}` | {shape.summary} |" in docs, name


@pytest.mark.parametrize("name", list(SHAPES))
async def test_a_shape_shows_on_the_wire_and_the_books_stay_true(name: str) -> None:
    plain, story = await documented(), await tell(shapes=(name,))
    CHECKS[name](story, plain)
    assert story.answers.keys() == plain.answers.keys()
    assert {k: story.stats[k] for k in BOOKS} == {k: plain.stats[k] for k in BOOKS}
    downloaded = sum(len(a.content) for _, a in story.labelled("download ") if a.status_code == 200)
    assert story.stats["bytes_served"] == downloaded
    assert story.stats["cost_charged_usd"] == pytest.approx(2 * 0.56)  # a and b; c and d cost nothing
    lagging = {shape for shape, count in story.stats["shaped"].items() if count}
    assert lagging == ({name} & set(GRACE_SHAPES))


@pytest.mark.parametrize("name", list(SHAPES))
async def test_each_check_fails_on_the_documented_answers(name: str) -> None:
    """A check that passed without its shape would prove nothing."""
    plain = await documented()
    with pytest.raises(AssertionError):
        CHECKS[name](plain, plain)


def _normal(story: Story) -> list[tuple[str, int, str, Any]]:
    """The documented conversation with request ids and wall-clock times made stable."""
    text_ids = {request_id: f"<{job}>" for job, request_id in story.ids.items()}
    seen = []
    for label, answer in story.answers.items():
        media = answer.headers.get("content-type", "")
        if media.startswith("application/json"):
            text = answer.text
            for request_id, job in text_ids.items():
                text = text.replace(request_id, job)
            text = re.sub(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', '"<time>"', text)
            seen.append((label, answer.status_code, media, json.loads(text)))
        elif media.startswith("video/mp4"):
            seen.append((label, answer.status_code, media, len(answer.content)))
        else:
            seen.append((label, answer.status_code, media, answer.text))
    return seen


async def test_without_shapes_every_answer_is_the_documented_one() -> None:
    """The conversation as the simulator always answered it (the same on main before shapes existed)."""
    story = await documented()
    seen = {label: (code, body) for label, code, _, body in _normal(story)}
    url = {
        job: {
            "status_url": f"http://sim/v1/requests/<{job}>/status",
            "result_url": f"http://sim/v1/requests/<{job}>/result",
        }
        for job in "abcd"
    }
    assert seen["submit a"] == (
        200,
        {"request_id": "<a>", **url["a"], "cancel_url": "http://sim/v1/requests/<a>/cancel"},
    )
    assert seen["status a 1"] == (200, {"request_id": "<a>", "status": "in_progress", **url["a"]})
    assert seen["status b 1"] == (
        200,
        {"request_id": "<b>", "status": "in_queue", "queue_position": 1, **url["b"]},
    )
    assert seen["result b live 1"] == seen["status b 1"]
    assert seen["cancel c"] == (200, {"request_id": "<c>", "status": "cancelled", "outcome": "cancelled"})
    assert seen["cancel a"] == (
        200,
        {"request_id": "<a>", "status": "in_progress", "outcome": "not_cancellable"},
    )
    assert seen["price"][1]["base_price_usd"] == 0.112 and set(seen["price"][1]) == {
        "model_id",
        "base_price_usd",
        "price_unit",
        "pricing_note",
    }
    assert seen["result a 1"] == (
        200,
        {
            "request_id": "<a>",
            "status": "completed",
            "model_id": I2V,
            "output": {"video": "http://sim/files/<a>/output.mp4"},
            "created_at": "<time>",
            "finished_at": "<time>",
            "cost": 0.56,
        },
    )
    assert seen["result b 1"][1]["output"] == {
        "videos": ["http://sim/files/<b>/output.mp4", "http://sim/files/<b>/output-1.mp4"]
    }
    assert seen["result d 1"] == (
        200,
        {
            "request_id": "<d>",
            "status": "failed",
            "error": {"error_code": 500001, "error_message": "the generation failed (simulated)"},
            "cost": 0.0,
        },
    )
    assert seen["result c"] == (200, {"request_id": "<c>", "status": "cancelled", "cost": 0.0})
    assert seen["download a/output.mp4 1"] == (200, BYTES)
    assert seen["unknown id"] == (
        404,
        {"error_code": 404001, "error_message": "unknown or expired request id", "detail": None},
    )
    for label in ("fault 5xx 0", "fault 5xx 1", "fault 5xx 2", "fault 5xx 3", "fault 5xx 4", "fault 5xx 5"):
        code, body = seen[label]
        if code == 502:
            assert body == "<html><body><h1>502 Bad Gateway</h1></body></html>"
        else:
            assert body == {
                "error_code": code * 1000 + 1,
                "error_message": "simulated server error",
                "detail": None,
            }
    assert seen["fault 429"] == (
        429,
        {"error_code": 429001, "error_message": "rate limited (simulated)", "detail": None},
    )
    assert story.answers["fault 429"].headers["retry-after"] == "1"
    assert story.stats["shaped"] == {"status-404-grace": 0, "file-404-grace": 0, "output-late": 0}


async def test_shapes_of_different_facets_combine() -> None:
    story = await tell(shapes=("upper-case-status", "canceled-status", "succeeded-status", "output-bare-uri"))
    assert story.json("result a 1")["status"] == "SUCCEEDED"
    assert story.json("cancel c") == {
        "request_id": story.ids["c"],
        "status": "CANCELED",
        "outcome": "CANCELED",
    }
    assert story.json("result a 1")["output"] == files(story, "a")[0]


async def test_a_grace_can_last_on_the_clock_as_well_as_for_a_count_of_answers() -> None:
    app = create_app(
        SimulatorConfig(
            shapes=("file-404-grace",), shape_grace_answers=0, shape_grace_seconds=5, job_seconds=0
        ),
        clock=(clock := ManualClock()),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim", headers=AUTH
    ) as client:
        body = {"image": "https://example.com/a.png", "prompt": "p"}
        request_id = (await client.post(f"/v1/models/{I2V}", json=body)).json()["request_id"]
        url = f"/files/{request_id}/output.mp4"
        assert [(await client.get(url)).status_code for _ in range(3)] == [404, 404, 404]
        clock.advance(4.999)
        assert (await client.get(url)).status_code == 404
        clock.advance(0.001)
        assert (await client.get(url)).status_code == 200


async def test_shapes_change_mid_run_through_the_control_endpoint() -> None:
    app = create_app(SimulatorConfig(job_seconds=0))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim", headers=AUTH
    ) as client:
        body = {"image": "https://example.com/a.png", "prompt": "p"}
        request_id = (await client.post(f"/v1/models/{I2V}", json=body)).json()["request_id"]
        changed = await client.post("/_sim/config", json={"shapes": ["epoch-ms-timestamps", "submit-202"]})
        assert changed.json()["shapes"] == ["epoch-ms-timestamps", "submit-202"]
        assert isinstance((await client.get(f"/v1/requests/{request_id}/result")).json()["finished_at"], int)
        assert (await client.post(f"/v1/models/{I2V}", json={**body, "prompt": "q"})).status_code == 202
        for nonsense in (
            {"shapes": ["no-such-shape"]},
            {"shapes": ["submit-201", "submit-202"]},
            {"keepalive_timeout": 1},
        ):
            refused = await client.post("/_sim/config", json=nonsense)
            assert refused.status_code == 400, nonsense
        assert (
            "known: iso-utc-offset-timestamps"
            in (await client.post("/_sim/config", json={"shapes": ["x"]})).text
        )
        assert (await client.post("/_sim/config", json={"shapes": []})).json()["shapes"] == []
        assert isinstance((await client.get(f"/v1/requests/{request_id}/result")).json()["finished_at"], str)


def test_shapes_and_the_keepalive_timeout_are_flags() -> None:
    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)
    ns = parser.parse_args(
        "--shape epoch-ms-timestamps --shape canceled-status --keepalive-timeout 1.5 "
        "--shape-grace-answers 3 --shape-grace-seconds 0.5".split()
    )
    config = config_from_args(ns)
    assert config.shapes == ("epoch-ms-timestamps", "canceled-status")
    assert (config.keepalive_timeout, config.shape_grace_answers, config.shape_grace_seconds) == (1.5, 3, 0.5)
    assert config_from_args(parser.parse_args([])).keepalive_timeout == 5.0  # uvicorn's own default


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"shapes": ("epoch-ms",)}, "unknown shape 'epoch-ms' (known: "),
        (
            {"shapes": ("null-timestamps", "absent-timestamps")},
            "'null-timestamps' and 'absent-timestamps' exclude",
        ),
        ({"keepalive_timeout": 0}, "keepalive_timeout must be a number of seconds > 0"),
        ({"shape_grace_answers": -1}, "shape_grace_answers must be a whole number >= 0"),
    ],
)
def test_nonsense_shape_knobs_are_a_usage_error(knobs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        SimulatorConfig(**knobs)


# --- keep-alive, on a real socket


@contextlib.contextmanager
def idle_connection(base_url: str) -> Iterator[socket.socket]:
    """A connection that has had one answer on it and now sits idle."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET /_sim/stats HTTP/1.1\r\nHost: sim\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        yield conn


def seconds_until_closed(conn: socket.socket, limit: float) -> float | None:
    """How long until the server closes ``conn`` (None: still open after ``limit``)."""
    started = time.monotonic()
    conn.settimeout(limit)
    try:
        assert conn.recv(1) == b""
    except TimeoutError:
        return None
    return time.monotonic() - started


def test_a_served_simulator_closes_an_idle_connection_after_its_keepalive_timeout() -> None:
    with running_server(SimulatorConfig(keepalive_timeout=0.3)) as base, idle_connection(base) as conn:
        closed = seconds_until_closed(conn, 5)
        assert closed is not None and 0.2 < closed < 2
    with running_server(SimulatorConfig(keepalive_timeout=5)) as base, idle_connection(base) as conn:
        assert seconds_until_closed(conn, 1) is None  # uvicorn's default: still open after a second


def test_a_client_that_reuses_a_connection_closed_for_idleness_meets_a_closed_socket() -> None:
    """What a runner's pooled POST would meet: the server has hung up in between."""
    app = create_app(SimulatorConfig(keepalive_timeout=0.2))
    with running_server(app=app) as base, idle_connection(base) as conn:
        time.sleep(0.6)
        price = f"GET /v1/models/{I2V} HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer sim-token\r\n\r\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(price.encode())
        conn.settimeout(2)
        with contextlib.suppress(ConnectionResetError):
            assert conn.recv(1) == b""  # no answer: the server hung up before the request came
        assert app.state.sim.stats()["requests"]["price"] == 0
