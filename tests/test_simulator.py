"""The simulator speaks RunComfy's protocol, runs an account's queue exactly, and breaks on demand.

Most tests reach the app in-process through httpx.ASGITransport with a manual clock, so every time is
exact; the faults that break connections are also checked over real loopback sockets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import UsageError
from runner.simulator import (
    FAULTS,
    ManualClock,
    SimulatorConfig,
    add_simulator_arguments,
    config_from_args,
    create_app,
    expected_output_bytes,
    running_server,
)
from runner.simulator.account import Account, Job
from runner.simulator.outputs import sample_mp4
from runner.simulator.server import main as simulator_main

pytestmark = pytest.mark.anyio

I2V = "kling/kling-video-o3/pro/image-to-video"
R2V = "kling/kling-video-o3/standard/reference-to-video"
AUTH = {"Authorization": "Bearer sim-token"}
REPO = Path(__file__).resolve().parent.parent


def i2v(**fields: Any) -> dict[str, Any]:
    return {"image": "https://example.com/a.png", "prompt": "a slow push-in", **fields}


class Sim:
    """An in-process simulator with a manual clock and a client that carries the token."""

    def __init__(self, client: httpx.AsyncClient, clock: ManualClock, app: Any) -> None:
        self.client, self.clock, self.app = client, clock, app

    async def submit(self, model: str = I2V, **fields: Any) -> str:
        answer = await self.client.post(f"/v1/models/{model}", json=i2v(**fields))
        assert answer.status_code == 200, answer.text
        return str(answer.json()["request_id"])

    async def status(self, request_id: str) -> dict[str, Any]:
        answer = await self.client.get(f"/v1/requests/{request_id}/status")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def result(self, request_id: str, **params: str) -> httpx.Response:
        return await self.client.get(f"/v1/requests/{request_id}/result", params=params)

    async def cancel(self, request_id: str) -> dict[str, Any]:
        answer = await self.client.post(f"/v1/requests/{request_id}/cancel")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def stats(self) -> dict[str, Any]:
        return dict((await self.client.get("/_sim/stats")).json())


@contextlib.asynccontextmanager
async def simulator(**knobs: Any) -> AsyncIterator[Sim]:
    knobs.setdefault("job_spread", 0.0)  # exact run times unless a test asks for spread
    clock = ManualClock()
    app = create_app(SimulatorConfig(**knobs), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim", headers=AUTH) as client:
        yield Sim(client, clock, app)


# --- the protocol


async def test_submit_answers_request_id_and_urls_on_the_callers_own_base() -> None:
    async with simulator() as sim:
        answer = await sim.client.post(f"/v1/models/{I2V}", json=i2v())
        body = answer.json()
        rid = body["request_id"]
        assert answer.status_code == 200
        assert body == {
            "request_id": rid,
            "status_url": f"http://sim/v1/requests/{rid}/status",
            "result_url": f"http://sim/v1/requests/{rid}/result",
            "cancel_url": f"http://sim/v1/requests/{rid}/cancel",
        }


async def test_a_job_is_queued_then_in_progress_then_completed_exactly_on_the_clock() -> None:
    async with simulator(concurrency=1, job_seconds=10) as sim:
        first, second = await sim.submit(), await sim.submit()
        assert (await sim.status(first))["status"] == "in_progress"
        assert (await sim.status(second))["status"] == "in_queue"
        assert (await sim.status(second))["queue_position"] == 1
        sim.clock.advance(9.999)
        assert (await sim.status(first))["status"] == "in_progress"
        sim.clock.advance(0.001)
        assert (await sim.status(first))["status"] == "completed"
        assert "queue_position" not in await sim.status(second)
        assert (await sim.status(second))["status"] == "in_progress"
        sim.clock.advance(10)
        assert (await sim.status(second))["status"] == "completed"
        described = (await sim.client.get(f"/_sim/requests/{second}")).json()
        assert (described["started_at"], described["finished_at"]) == (10.0, 20.0)


async def test_queue_positions_are_true_and_jobs_start_first_in_first_out() -> None:
    async with simulator(concurrency=2, job_seconds=5) as sim:
        ids = [await sim.submit(prompt=f"p{i}") for i in range(6)]
        assert [(await sim.status(i)).get("queue_position") for i in ids] == [None, None, 1, 2, 3, 4]
        assert (await sim.cancel(ids[3]))["outcome"] == "cancelled"
        assert [(await sim.status(i)).get("queue_position") for i in ids[4:]] == [2, 3]
        sim.clock.advance(5)  # the first two end together; 2 and 4 take their places (3 was cancelled)
        states = [(await sim.status(i))["status"] for i in ids]
        assert states == ["completed", "completed", "in_progress", "cancelled", "in_progress", "in_queue"]
        assert (await sim.status(ids[5]))["queue_position"] == 1
        assert (await sim.stats())["max_running"] == 2


async def test_a_job_queued_behind_others_starts_at_the_instant_a_slot_frees_even_if_polled_later() -> None:
    async with simulator(concurrency=1, job_seconds=4) as sim:
        ids = [await sim.submit(prompt=f"p{i}") for i in range(3)]
        sim.clock.advance(100)  # nobody looked in between: the simulation catches up exactly
        times = [(await sim.client.get(f"/_sim/requests/{i}")).json() for i in ids]
        assert [(t["started_at"], t["finished_at"]) for t in times] == [(0, 4), (4, 8), (8, 12)]


async def test_run_times_spread_uniformly_around_the_mean() -> None:
    async with simulator(job_seconds=10, job_spread=0.2, concurrency=100) as sim:
        ids = [await sim.submit(prompt=f"p{i}") for i in range(50)]
        runs = [(await sim.client.get(f"/_sim/requests/{i}")).json()["run_seconds"] for i in ids]
        assert all(8 <= r <= 12 for r in runs)
        assert max(runs) - min(runs) > 1  # they do vary


async def test_result_answers_the_live_status_until_finished_then_outputs_and_cost() -> None:
    async with simulator(concurrency=1, job_seconds=3) as sim:
        rid = await sim.submit(duration=10, sound=True)
        live = await sim.result(rid, include_cost="true")
        assert live.status_code == 200
        assert live.json()["status"] == "in_progress" and "output" not in live.json()
        sim.clock.advance(3)
        done = (await sim.result(rid, include_cost="true")).json()
        assert done["status"] == "completed" and done["model_id"] == I2V
        assert done["output"] == {"video": f"http://sim/files/{rid}/output.mp4"}
        assert done["cost"] == pytest.approx(1.4)  # 0.14 USD/s with sound × 10 s
        assert done["created_at"].endswith("Z") and done["finished_at"] >= done["created_at"]
        assert "cost" not in (await sim.result(rid)).json()


async def test_a_failed_job_answers_an_error_object_and_costs_nothing() -> None:
    async with simulator(fail_rate=1.0, job_seconds=1) as sim:
        rid = await sim.submit()
        assert (await sim.stats())["cost_charged_usd"] == pytest.approx(0.56)  # held while it runs
        sim.clock.advance(1)
        body = (await sim.result(rid, include_cost="true")).json()
        assert body == {
            "request_id": rid,
            "status": "failed",
            "error": {"error_code": 500001, "error_message": body["error"]["error_message"]},
            "cost": 0.0,
        }
        stats = await sim.stats()
        assert stats["cost_charged_usd"] == 0 and stats["jobs"]["failed"] == 1
        assert (await sim.client.get(f"/files/{rid}/output.mp4")).status_code == 404


async def test_cancel_while_queued_is_cancelled_and_never_billed() -> None:
    async with simulator(concurrency=1) as sim:
        await sim.submit()
        queued = await sim.submit(duration=15)
        answer = await sim.cancel(queued)
        assert answer == {"request_id": queued, "status": "cancelled", "outcome": "cancelled"}
        assert (await sim.result(queued, include_cost="true")).json() == {
            "request_id": queued,
            "status": "cancelled",
            "cost": 0.0,
        }
        stats = await sim.stats()
        assert stats["cost_charged_usd"] == pytest.approx(0.56)
        assert stats["cancels"] == {"cancelled": 1, "not_cancellable": 0}


async def test_cancel_while_running_or_finished_is_not_cancellable_and_billed() -> None:
    async with simulator(job_seconds=2) as sim:
        rid = await sim.submit()
        assert await sim.cancel(rid) == {
            "request_id": rid,
            "status": "in_progress",
            "outcome": "not_cancellable",
        }
        sim.clock.advance(2)
        assert (await sim.cancel(rid))["outcome"] == "not_cancellable"
        assert (await sim.result(rid, include_cost="true")).json()["cost"] == pytest.approx(0.56)
        assert (await sim.stats())["cancels"]["not_cancellable"] == 2


async def test_results_and_files_answer_404001_once_expired() -> None:
    async with simulator(job_seconds=1, expire_seconds=60) as sim:
        rid = await sim.submit()
        sim.clock.advance(60.5)
        assert (await sim.result(rid)).status_code == 200
        assert (await sim.client.get(f"/files/{rid}/output.mp4")).status_code == 200
        sim.clock.advance(0.5)
        for answer in (
            await sim.client.get(f"/v1/requests/{rid}/status"),
            await sim.result(rid),
            await sim.client.get(f"/files/{rid}/output.mp4"),
            await sim.client.post(f"/v1/requests/{rid}/cancel"),
        ):
            assert answer.status_code == 404
            assert answer.json()["error_code"] == 404001
        stats = await sim.stats()
        assert stats["jobs"]["expired"] == 1 and stats["jobs"]["completed"] == 0


async def test_a_download_is_exactly_the_expected_bytes_and_honours_ranges() -> None:
    async with simulator(job_seconds=0, output_bytes=20_000) as sim:
        rid = await sim.submit()
        url = (await sim.result(rid)).json()["output"]["video"]
        whole = await sim.client.get(url, headers={})
        expected = expected_output_bytes(rid, 0, 20_000)
        assert whole.content == expected and len(expected) == 20_000
        assert whole.headers["content-type"] == "video/mp4"
        part = await sim.client.get(url, headers={"Range": "bytes=1000-"})
        assert part.status_code == 206 and part.content == expected[1000:]
        assert part.headers["content-range"] == "bytes 1000-19999/20000"
        assert (await sim.client.get(url, headers={"Range": "bytes=10-19"})).content == expected[10:20]
        assert (await sim.client.get(url, headers={"Range": "bytes=20000-"})).status_code == 416
        assert (await sim.stats())["bytes_served"] == 20_000 + 19_000 + 10


async def test_files_need_no_token_like_a_cdn() -> None:
    async with simulator(job_seconds=0) as sim:
        rid = await sim.submit()
        answer = await sim.client.get(f"/files/{rid}/output.mp4", headers={"Authorization": ""})
        assert answer.status_code == 200


async def test_every_output_file_is_a_unique_playable_mp4() -> None:
    one, other = expected_output_bytes("a"), expected_output_bytes("b")
    assert one != other and len(one) == len(other) == 64 * 1024
    boxes, at = [], 0
    while at < len(one):
        size = int.from_bytes(one[at : at + 4], "big")
        boxes.append(one[at + 4 : at + 8])
        at += size
    assert at == len(one) and boxes[0] == b"ftyp" and b"moov" in boxes and boxes[-1] == b"free"
    assert one.startswith(sample_mp4())
    assert len(expected_output_bytes("a", size=100)) == 100  # too small for the clip: bytes only


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg to decode the clip")
def test_an_output_file_decodes_with_ffmpeg(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(expected_output_bytes("request-1"))
    run = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0 and run.stderr == ""


async def test_several_outputs_per_job_are_listed_under_videos_and_each_downloads() -> None:
    async with simulator(job_seconds=0, outputs_per_job=3, output_bytes=9000) as sim:
        rid = await sim.submit()
        urls = (await sim.result(rid)).json()["output"]["videos"]
        assert [u.rsplit("/", 1)[1] for u in urls] == ["output.mp4", "output-1.mp4", "output-2.mp4"]
        for index, url in enumerate(urls):
            assert (await sim.client.get(url)).content == expected_output_bytes(rid, index, 9000)
        assert (await sim.client.get(f"/files/{rid}/output-3.mp4")).status_code == 404


async def test_the_price_endpoint_answers_from_the_price_table() -> None:
    async with simulator() as sim:
        body = (await sim.client.get(f"/v1/models/{R2V}")).json()
        assert body["model_id"] == R2V and body["base_price_usd"] == 0.084
        assert body["price_unit"] == "second" and "sound" in body["pricing_note"]
        assert (await sim.client.get("/v1/models/acme/nope")).json()["error_code"] == 400001
        assert (await sim.stats())["requests"]["price"] == 2
    async with simulator(serve_prices=False) as sim:
        assert (await sim.client.get(f"/v1/models/{R2V}")).status_code == 404


async def test_a_price_file_overrides_what_is_charged_and_quoted(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {I2V: {"unit": "second", "usd": 1.0}}}))
    async with simulator(prices_path=str(prices), job_seconds=0) as sim:
        rid = await sim.submit(duration=4)
        assert (await sim.result(rid, include_cost="true")).json()["cost"] == 4.0
        assert (await sim.client.get(f"/v1/models/{I2V}")).json()["base_price_usd"] == 1.0


# --- errors of the protocol


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic sim-token", "Bearer "])
async def test_a_missing_or_wrong_token_is_401001(header: str | None) -> None:
    async with simulator() as sim:
        headers = {"Authorization": header} if header is not None else {}
        sim.client.headers.pop("Authorization")
        for answer in (
            await sim.client.post(f"/v1/models/{I2V}", json=i2v(), headers=headers),
            await sim.client.get("/v1/requests/x/status", headers=headers),
            await sim.client.get(f"/v1/models/{I2V}", headers=headers),
        ):
            assert answer.status_code == 401
            assert answer.json()["error_code"] == 401001 and set(answer.json()) == {
                "error_code",
                "error_message",
                "detail",
            }
        stats = await sim.stats()
        assert stats["submits_accepted"] == 0 and stats["errors"] == {"401001": 3}


async def test_a_revoked_token_is_400004() -> None:
    async with simulator(revoked_tokens=("old-token",)) as sim:
        answer = await sim.client.post(
            f"/v1/models/{I2V}", json=i2v(), headers={"Authorization": "Bearer old-token"}
        )
        assert (answer.status_code, answer.json()["error_code"]) == (400, 400004)


async def test_an_unknown_model_is_400001() -> None:
    async with simulator() as sim:
        answer = await sim.client.post("/v1/models/kling/kling-video-o3/ultra/dream", json=i2v())
        assert (answer.status_code, answer.json()["error_code"]) == (400, 400001)


async def test_an_input_off_the_schema_is_422001_with_every_field_in_detail() -> None:
    async with simulator() as sim:
        answer = await sim.client.post(f"/v1/models/{I2V}", json={"prompt": "x", "duration": 20, "colour": 1})
        assert (answer.status_code, answer.json()["error_code"]) == (422, 422001)
        fields = {d["field"]: d["message"] for d in answer.json()["detail"]}
        assert fields["duration"] == "20 is greater than the maximum of 15"
        assert "colour" in fields and "'image' is required" in fields[""]
        broken = await sim.client.post(f"/v1/models/{I2V}", content=b"{not json")
        assert (broken.status_code, broken.json()["error_code"]) == (422, 422001)
        assert (await sim.stats())["submits_accepted"] == 0


async def test_x_checks_beyond_the_schema_are_422001_too() -> None:
    async with simulator() as sim:
        segments = [{"prompt": "a", "duration": 3}, {"prompt": "b", "duration": 3}]
        answer = await sim.client.post(f"/v1/models/{I2V}", json=i2v(duration=5, multi_prompt=segments))
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["field"] == "multi_prompt"


async def test_an_unknown_request_id_is_404001_and_an_unknown_path_a_json_404() -> None:
    async with simulator() as sim:
        answer = await sim.client.get("/v1/requests/no-such-id/status")
        assert (answer.status_code, answer.json()["error_code"]) == (404, 404001)
        lost = await sim.client.get("/v2/whatever")
        assert lost.status_code == 404 and lost.json()["error_code"] == 404001


async def test_a_submit_beyond_the_balance_is_400002_and_a_refund_makes_room_again() -> None:
    async with simulator(balance_usd=1.2, concurrency=1) as sim:
        await sim.submit()  # 0.56
        queued = await sim.submit(prompt="second")  # 0.56, 1.12 charged
        refused = await sim.client.post(f"/v1/models/{I2V}", json=i2v(prompt="third"))
        assert (refused.status_code, refused.json()["error_code"]) == (400, 400002)
        await sim.cancel(queued)  # never billed: 0.56 free again
        await sim.submit(prompt="third")
        stats = await sim.stats()
        assert stats["balance_left_usd"] == pytest.approx(0.08) and stats["errors"] == {"400002": 1}


# --- counters


async def test_duplicate_submissions_count_identical_payloads_accepted_more_than_once() -> None:
    async with simulator() as sim:
        await sim.client.post(f"/v1/models/{I2V}", json={"prompt": "same", "image": "https://e.com/a.png"})
        await sim.client.post(f"/v1/models/{I2V}", json={"image": "https://e.com/a.png", "prompt": "same"})
        await sim.client.post(f"/v1/models/{I2V}", json={"image": "https://e.com/a.png", "prompt": "same"})
        await sim.client.post(f"/v1/models/{I2V}", json={"image": "https://e.com/a.png", "prompt": "other"})
        await sim.client.post(f"/v1/models/{R2V}", json={"prompt": "same", "images": ["https://e.com/a.png"]})
        stats = await sim.stats()
        assert stats["submits_accepted"] == 5 and stats["duplicate_submissions"] == 2


async def test_counters_are_exact_under_many_concurrent_requests() -> None:
    async with simulator(concurrency=3, job_seconds=1) as sim:
        ids: list[str] = []

        async def submit_and_poll(n: int) -> None:
            rid = await sim.submit(prompt=f"job {n}")
            ids.append(rid)
            for _ in range(3):
                await sim.status(rid)

        async with anyio.create_task_group() as tg:
            for n in range(60):
                tg.start_soon(submit_and_poll, n)
        for _ in range(25):
            sim.clock.advance(1)
            await sim.stats()
        stats = await sim.stats()
        assert stats["requests"]["submit"] == 60 and stats["requests"]["status"] == 180
        assert stats["requests_total"] == 240 and stats["submits_accepted"] == 60
        assert stats["max_running"] == 3 and stats["jobs"]["completed"] == 60
        assert stats["duplicate_submissions"] == 0 and len(set(ids)) == 60
        assert stats["cost_charged_usd"] == pytest.approx(60 * 0.56)


async def test_reset_forgets_jobs_and_zeroes_every_counter() -> None:
    async with simulator(rate_429=1.0, fault_endpoints={"429": ["status"]}) as sim:
        rid = await sim.submit()
        await sim.client.get(f"/v1/requests/{rid}/status")
        assert (await sim.client.post("/_sim/reset")).status_code == 200
        stats = await sim.stats()
        assert stats["requests_total"] == 0 and stats["submits_accepted"] == 0
        assert set(stats["faults"].values()) == {0} and stats["cost_charged_usd"] == 0
        assert sum(stats["jobs"].values()) == 0
        assert (await sim.client.get(f"/_sim/requests/{rid}")).status_code == 404


async def test_the_config_endpoint_turns_faults_off_mid_run_and_refuses_nonsense() -> None:
    async with simulator(rate_5xx=1.0) as sim:
        assert (await sim.client.post(f"/v1/models/{I2V}", json=i2v())).status_code >= 500
        changed = await sim.client.post("/_sim/config", json={"rate_5xx": 0, "job_seconds": 7})
        assert changed.json()["rate_5xx"] == 0 and changed.json()["job_seconds"] == 7
        await sim.submit()
        for nonsense in ({"rate_drop": 2}, {"no_such_knob": 1}, {"concurrency": "4"}, [1]):
            answer = await sim.client.post("/_sim/config", json=nonsense)
            assert answer.status_code == 400, nonsense
        assert (await sim.client.get("/_sim/config")).json()["rate_drop"] == 0


async def test_raising_concurrency_at_runtime_starts_queued_jobs_at_once() -> None:
    async with simulator(concurrency=1, job_seconds=10) as sim:
        ids = [await sim.submit(prompt=f"p{i}") for i in range(3)]
        sim.clock.advance(2)
        await sim.client.post("/_sim/config", json={"concurrency": 3})
        assert [(await sim.status(i))["status"] for i in ids] == ["in_progress"] * 3
        assert (await sim.client.get(f"/_sim/requests/{ids[2]}")).json()["started_at"] == 2


async def test_control_endpoints_need_no_token_and_never_see_a_fault() -> None:
    knobs = {f"rate_{f}": 1.0 for f in FAULTS if f != "slow"}
    async with simulator(**knobs) as sim:
        sim.client.headers.pop("Authorization")
        assert (await sim.client.get("/_sim/stats")).status_code == 200
        assert (await sim.client.get("/_sim/config")).status_code == 200
        assert (await sim.stats())["requests_total"] == 0


# --- faults, in-process


async def test_429_comes_with_or_without_retry_after() -> None:
    async with simulator(rate_429=1.0, retry_after_seconds=7) as sim:
        answer = await sim.client.get("/v1/requests/x/status")
        assert answer.status_code == 429 and answer.headers["retry-after"] == "7"
    async with simulator(rate_429_bare=1.0) as sim:
        answer = await sim.client.post(f"/v1/models/{I2V}", json=i2v())
        assert answer.status_code == 429 and "retry-after" not in answer.headers
        stats = await sim.stats()
        assert stats["faults"]["429_bare"] == 1 and stats["submits_accepted"] == 0


async def test_a_5xx_before_anything_creates_no_job() -> None:
    async with simulator(rate_5xx=1.0, seed=3) as sim:
        statuses = {(await sim.client.post(f"/v1/models/{I2V}", json=i2v())).status_code for _ in range(20)}
        assert statuses == {500, 502, 503}  # 502 answers HTML, as a gateway would
        stats = await sim.stats()
        assert stats["submits_accepted"] == 0 and stats["faults"]["5xx"] == 20


async def test_an_accepted_submit_answered_5xx_still_runs_and_is_billed() -> None:
    async with simulator(rate_accepted_5xx=1.0, job_seconds=1) as sim:
        answer = await sim.client.post(f"/v1/models/{I2V}", json=i2v())
        assert answer.status_code >= 500
        sim.clock.advance(1)
        stats = await sim.stats()
        assert stats["submits_accepted"] == 1 and stats["faults"]["accepted_5xx"] == 1
        assert stats["jobs"]["completed"] == 1 and stats["cost_charged_usd"] == pytest.approx(0.56)


async def test_a_dropped_connection_in_process_is_a_transport_error_and_nothing_was_done() -> None:
    async with simulator(rate_drop=1.0) as sim:
        with pytest.raises(httpx.RemoteProtocolError):
            await sim.client.post(f"/v1/models/{I2V}", json=i2v())
        stats = await sim.stats()
        assert stats["submits_accepted"] == 0 and stats["faults"]["drop"] == 1


async def test_an_accepted_but_dropped_submit_in_process_leaves_a_job_behind() -> None:
    async with simulator(rate_accepted_drop=1.0) as sim:
        with pytest.raises(httpx.TransportError):
            await sim.client.post(f"/v1/models/{I2V}", json=i2v())
        stats = await sim.stats()
        assert stats["submits_accepted"] == 1 and stats["faults"] == {**stats["faults"], "accepted_drop": 1}
        assert stats["faults"]["drop"] == 0 and stats["jobs"]["in_progress"] == 1


async def test_an_error_code_inside_an_http_200() -> None:
    async with simulator(rate_error_200=1.0) as sim:
        answer = await sim.client.get("/v1/requests/x/result")
        assert answer.status_code == 200 and answer.json()["error_code"] == 500001


async def test_an_unknown_status_word_is_reported_only_for_live_jobs() -> None:
    async with simulator(rate_unknown_status=1.0, concurrency=1, job_seconds=1) as sim:
        running, queued = await sim.submit(), await sim.submit(prompt="2")
        assert (await sim.status(running))["status"] == "preparing"
        assert (await sim.result(queued)).json()["status"] == "preparing"
        assert "queue_position" not in (await sim.status(queued))
        sim.clock.advance(1)
        assert (await sim.status(running))["status"] == "completed"
        assert (await sim.stats())["faults"]["unknown_status"] == 3


async def test_a_cut_short_download_in_process_is_a_transport_error() -> None:
    async with simulator(rate_truncate=1.0, job_seconds=0) as sim:
        rid = await sim.submit()
        with pytest.raises(httpx.RemoteProtocolError, match="received 32768 bytes, expected 65536"):
            await sim.client.get(f"/files/{rid}/output.mp4")
        assert (await sim.stats())["faults"]["truncate"] == 1


async def test_a_slow_answer_in_process_comes_late_but_right() -> None:
    async with simulator(rate_slow=1.0, slow_seconds=0.2) as sim:
        started = time.monotonic()
        await sim.submit()
        assert time.monotonic() - started >= 0.2
        assert (await sim.stats())["faults"]["slow"] == 1


async def test_fault_endpoints_say_where_each_fault_strikes() -> None:
    async with simulator(rate_5xx=1.0, fault_endpoints={"5xx": ["status"]}) as sim:
        rid = await sim.submit()
        assert (await sim.client.get(f"/v1/requests/{rid}/status")).status_code >= 500
        assert (await sim.result(rid)).status_code == 200


async def test_faults_repeat_for_a_seed_and_strike_at_about_their_rate() -> None:
    async def pattern(seed: int) -> list[int]:
        async with simulator(rate_5xx=0.3, seed=seed) as sim:
            return [(await sim.client.get("/v1/requests/x/status")).status_code for _ in range(200)]

    first, again, other = await pattern(1), await pattern(1), await pattern(2)
    assert first == again and first != other
    assert 30 < sum(code >= 500 for code in first) < 90


# --- over real loopback sockets


def test_on_loopback_a_dropped_connection_is_a_transport_error_with_no_response_at_all() -> None:
    config = SimulatorConfig(rate_drop=1.0, fault_endpoints={"drop": ["status"]}, rate_accepted_drop=1.0)
    with running_server(config) as base, httpx.Client(base_url=base, headers=AUTH) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            client.get("/v1/requests/x/status")
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(f"/v1/models/{I2V}", json=i2v())  # accepted, then dropped
        stats = client.get("/_sim/stats").json()
        assert stats["faults"]["drop"] == 1 and stats["faults"]["accepted_drop"] == 1
        assert stats["submits_accepted"] == 1 and stats["jobs"]["in_progress"] == 1


def test_on_loopback_a_cut_short_download_is_a_transport_error() -> None:
    config = SimulatorConfig(rate_truncate=1.0, job_seconds=0, output_bytes=50_000, truncate_fraction=0.3)
    with running_server(config) as base, httpx.Client(base_url=base, headers=AUTH) as client:
        rid = client.post(f"/v1/models/{I2V}", json=i2v()).json()["request_id"]
        url = client.get(f"/v1/requests/{rid}/result").json()["output"]["video"]
        assert url == f"{base}/files/{rid}/output.mp4"
        with pytest.raises(httpx.RemoteProtocolError, match="received 15000 bytes, expected 50000"):
            client.get(url)
        client.post("/_sim/config", json={"rate_truncate": 0})
        assert client.get(url).content == expected_output_bytes(rid, 0, 50_000)


def test_on_loopback_a_slow_answer_runs_into_the_clients_timeout() -> None:
    config = SimulatorConfig(rate_slow=1.0, slow_seconds=0.5)
    with running_server(config) as base, httpx.Client(base_url=base, headers=AUTH) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"/v1/models/{I2V}", timeout=0.1)
        started = time.monotonic()
        assert client.get(f"/v1/models/{I2V}", timeout=5).status_code == 200
        assert time.monotonic() - started >= 0.5


def test_a_served_app_with_a_manual_clock_is_exact_too() -> None:
    clock = ManualClock()
    app = create_app(SimulatorConfig(job_seconds=5, job_spread=0), clock=clock)
    with running_server(app=app) as base, httpx.Client(base_url=base, headers=AUTH) as client:
        rid = client.post(f"/v1/models/{I2V}", json=i2v()).json()["request_id"]
        clock.advance(5)
        assert client.get(f"/v1/requests/{rid}/status").json()["status"] == "completed"
        assert app.state.sim.stats()["jobs"]["completed"] == 1


def test_the_simulator_runs_as_its_own_process_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    command = [sys.executable, "-m", "runner.simulator", "--port", "0", "--ready-file", str(ready)]
    process = subprocess.Popen(
        [*command, "--concurrency", "2", "--token", "t0k"], cwd=REPO, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.02)
        base = ready.read_text().strip()
        assert base.startswith("http://127.0.0.1:")
        assert httpx.get(f"{base}/_sim/config").json()["concurrency"] == 2
        answer = httpx.get(f"{base}/v1/models/{I2V}", headers={"Authorization": "Bearer t0k"})
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert b"t0k" in err  # it says which token it accepts


def test_the_process_refuses_nonsense_knobs_and_a_port_in_use_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        simulator_main(["--port", "0", "--concurrency", "0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: simulator config: concurrency must be at least 1\n"
    with running_server() as base:
        with pytest.raises(SystemExit) as stopped:
            simulator_main(["--port", base.rsplit(":", 1)[1]])
    assert stopped.value.code == 2 and "cannot listen on 127.0.0.1:" in capsys.readouterr().err


# --- configuration


def test_every_knob_has_a_flag_and_unset_flags_keep_the_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)
    assert config_from_args(parser.parse_args([])) == SimulatorConfig()
    ns = parser.parse_args(
        "--token T --concurrency 8 --job-seconds 3 --job-spread 0.1 --fail-rate 0.1 --rate-429 0.05 "
        "--rate-5xx 0.1 --rate-drop 0.02 --rate-truncate 0.02 --rate-accepted-5xx 0.01 --seed 9 "
        "--balance-usd 5 --no-prices --revoked-token old --fault-endpoints drop=submit,status".split()
    )
    config = config_from_args(ns)
    assert (config.token, config.concurrency, config.rate_429, config.seed) == ("T", 8, 0.05, 9)
    assert config.balance_usd == 5 and not config.serve_prices and config.revoked_tokens == ("old",)
    assert config.endpoints_for("drop") == ("submit", "status")
    assert config.endpoints_for("5xx") == (
        "submit",
        "status",
        "result",
        "cancel",
        "price",
        "catalog",
        "download",
    )


def test_flags_can_carry_a_prefix_for_a_command_with_flags_of_its_own() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int)
    add_simulator_arguments(parser, prefix="sim-")
    ns = parser.parse_args(["--concurrency", "2", "--sim-concurrency", "7"])
    assert config_from_args(ns, prefix="sim-").concurrency == 7


@pytest.mark.parametrize(
    "knobs",
    [{"concurrency": 0}, {"rate_drop": 1.5}, {"job_seconds": -1}, {"fault_endpoints": {"drop": ["nowhere"]}}],
)
def test_nonsense_knobs_are_a_usage_error(knobs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        SimulatorConfig(**knobs)


# --- the account's lazy queue against a step-by-step reference


def _job(n: int, run_seconds: float, now: float = 0.0) -> Job:
    return Job(f"r{n}", I2V, None, 1, run_seconds, False, now)


def test_queue_positions_stay_true_past_a_thousand_queued_jobs() -> None:
    account = Account(concurrency=1, expire_seconds=60)
    jobs = [_job(n, 1.0) for n in range(3000)]
    for job in jobs:
        account.submit(job, 0.0)
    for job in jobs[1:2500:2]:
        account.cancel(job, 0.0)
    account.advance(10.0)  # 10 more jobs started and finished
    live = [j for j in jobs if j.state == "in_queue"]
    assert [account.queue_position(j) for j in live] == list(range(1, len(live) + 1))


class Reference:
    """The same account, the slow and obvious way: scan every job at every step."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.jobs: list[dict[str, Any]] = []

    def advance(self, now: float) -> None:
        while True:
            running = [j for j in self.jobs if j["state"] == "in_progress"]
            due = [j for j in running if j["start"] + j["run"] <= now]
            if not due:
                break
            job = min(due, key=lambda j: j["start"] + j["run"])
            job["state"], job["end"] = "completed", job["start"] + job["run"]
            self.fill(job["end"])

    def fill(self, at: float) -> None:
        for job in self.jobs:
            if sum(j["state"] == "in_progress" for j in self.jobs) >= self.concurrency:
                break
            if job["state"] == "in_queue":
                job["state"], job["start"] = "in_progress", at

    def submit(self, run: float, now: float) -> None:
        self.advance(now)
        self.jobs.append({"state": "in_queue", "run": run, "start": None, "end": None})
        self.fill(now)

    def cancel(self, index: int, now: float) -> None:
        self.advance(now)
        if self.jobs[index]["state"] == "in_queue":
            self.jobs[index]["state"], self.jobs[index]["end"] = "cancelled", now


@settings(max_examples=80, deadline=None)
@given(
    concurrency=st.integers(1, 4),
    steps=st.lists(
        st.tuples(st.sampled_from(["submit", "cancel", "wait"]), st.integers(0, 50), st.integers(0, 30)),
        max_size=60,
    ),
)
def test_the_lazy_account_agrees_with_a_step_by_step_reference(
    concurrency: int, steps: list[tuple[str, int, int]]
) -> None:
    """Jobs start FIFO at the instant a slot frees, no more than the limit run, queue positions are true."""
    account, reference = Account(concurrency=concurrency, expire_seconds=1e9), Reference(concurrency)
    jobs: list[Job] = []
    now = 0.0
    for action, amount, pick in steps:
        if action == "submit":
            jobs.append(_job(len(jobs), amount / 10, now))
            account.submit(jobs[-1], now)
            reference.submit(amount / 10, now)
        elif action == "cancel" and jobs:
            account.cancel(jobs[pick % len(jobs)], now)
            reference.cancel(pick % len(jobs), now)
        else:
            now += amount / 7
        account.advance(now)
        reference.advance(now)
        assert [(j.state, j.started_at, j.finished_at) for j in jobs] == [
            (r["state"], r["start"], r["end"]) for r in reference.jobs
        ]
        waiting = [j for j in jobs if j.state == "in_queue"]
        assert [account.queue_position(j) for j in waiting] == list(range(1, len(waiting) + 1))
        assert account.running == sum(j.state == "in_progress" for j in jobs) <= concurrency
