"""The HTTP sessions over real loopback sockets: answers, downloads, and above all which failures say
"this request surely never left" (a paid submit may then be sent again) and which do not.

Both sessions run every test: aiohttp's (real runs) and httpx's (tests in-process, trio). Each failure
is made to really happen: a port with nothing listening, the simulator closing the connection after
it accepted a submit, an answer slower than the read timeout, a download cut short."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import I2V

from runner.api.download import DownloadConfig, download
from runner.api.http import AiohttpSession, HttpSession, HttpxSession, Timeouts
from runner.api.retry import RetryPolicy
from runner.errors import TransportError
from runner.simulator import SimulatorConfig, running_server

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer sim-token", "Content-Type": "application/json"}
INPUT = json.dumps({"image": "https://example.com/a.png", "prompt": "a test", "duration": 5}).encode()
QUICK = Timeouts(connect=2.0, read=5.0)
NO_RETRY = RetryPolicy(attempts=1)


def sessions() -> list[str]:
    return ["aiohttp", "httpx"]


def make_session(kind: str) -> HttpSession:
    return AiohttpSession() if kind == "aiohttp" else HttpxSession(httpx.AsyncClient())


@pytest.fixture(params=sessions())
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve() -> Iterator:
    def start(**config: object):  # type: ignore[no-untyped-def]
        return running_server(SimulatorConfig(**{"concurrency": 4, "job_seconds": 0.01, **config}))

    return start


async def _submit(http: HttpSession, base: str) -> tuple[int, dict]:
    answer = await http.request("POST", f"{base}/v1/models/{I2V}", headers=AUTH, body=INPUT, timeout=QUICK)
    return answer.status, json.loads(answer.body)


async def _stats(base: str) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(base + "/_sim/stats")).json()


async def test_a_request_and_its_whole_answer(kind, serve):
    """A POST carries its body and headers; the answer has its status, lower-case headers and body."""
    with serve() as base:
        http = make_session(kind)
        try:
            status, body = await _submit(http, base)
            assert status == 200 and body["request_id"]
            answer = await http.request(
                "GET",
                f"{base}/v1/requests/{body['request_id']}/status",
                headers=AUTH,
                body=None,
                timeout=QUICK,
            )
            assert answer.status == 200
            assert answer.headers["content-type"].startswith("application/json")
            assert json.loads(answer.body)["request_id"] == body["request_id"]
            denied = await http.request(
                "GET", f"{base}/v1/requests/{body['request_id']}/status", headers={}, body=None, timeout=QUICK
            )
            assert denied.status == 401
        finally:
            await http.aclose()


async def test_a_refused_connection_surely_did_not_send(kind):
    """Nothing listens on the port: the submit never left, so it may be sent again."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free now, and nothing listens on it
    http = make_session(kind)
    try:
        with pytest.raises(TransportError) as caught:
            await _submit(http, f"http://127.0.0.1:{port}")
    finally:
        await http.aclose()
    assert caught.value.surely_not_sent is True
    assert "ConnectError" in str(caught.value)


async def test_a_connection_closed_after_the_submit_was_accepted_is_not_surely_unsent(kind, serve):
    """The simulator takes the submit (the job exists and is billed) and closes the connection without
    answering: the error must not claim the request never left, or the job would be paid twice."""
    with serve(rate_accepted_drop=1.0) as base:
        http = make_session(kind)
        try:
            with pytest.raises(TransportError) as caught:
                await _submit(http, base)
        finally:
            await http.aclose()
        stats = await _stats(base)
    assert caught.value.surely_not_sent is False
    assert "RemoteProtocolError" in str(caught.value)
    assert stats["faults"]["accepted_drop"] == 1
    assert stats["submits_accepted"] == 1  # it was paid for


async def test_a_dropped_poll_and_a_slow_answer_are_not_surely_unsent(kind, serve):
    """A poll whose connection closes, and an answer later than the read timeout, may have been
    received: both say so, in httpx's words."""
    with serve() as base:
        http = make_session(kind)
        try:
            _, body = await _submit(http, base)
            url = f"{base}/v1/requests/{body['request_id']}/result"
            async with httpx.AsyncClient() as control:
                await control.post(base + "/_sim/config", json={"rate_drop": 1.0})
                with pytest.raises(TransportError) as dropped:
                    await http.request("GET", url, headers=AUTH, body=None, timeout=QUICK)
                await control.post(
                    base + "/_sim/config", json={"rate_drop": 0.0, "rate_slow": 1.0, "slow_seconds": 1.0}
                )
                with pytest.raises(TransportError) as slow:
                    await http.request("GET", url, headers=AUTH, body=None, timeout=Timeouts(2.0, 0.2))
        finally:
            await http.aclose()
    assert dropped.value.surely_not_sent is False and "RemoteProtocolError" in str(dropped.value)
    assert slow.value.surely_not_sent is False and "ReadTimeout" in str(slow.value)


async def _finished_output(http: HttpSession, base: str) -> str:
    _, body = await _submit(http, base)
    url = f"{base}/v1/requests/{body['request_id']}/result"
    for _ in range(200):
        result = json.loads((await http.request("GET", url, headers=AUTH, body=None, timeout=QUICK)).body)
        if result["status"] == "completed":
            return str(result["output"]["video"])
        import anyio

        await anyio.sleep(0.01)
    raise AssertionError("the job did not finish")


async def test_downloads_stream_whole_files_and_refuse_cut_ones(kind, serve, tmp_path: Path):
    """A download arrives whole (size and sha256 as served); one cut short by the server raises and
    leaves no file behind, not even a part."""
    import hashlib

    with serve(output_bytes=200_000) as base:
        http = make_session(kind)
        config = DownloadConfig(allowed_hosts=("127.0.0.1",), retry=NO_RETRY, stall_seconds=5)
        try:
            url = await _finished_output(http, base)
            got = await download(http, url, tmp_path / "whole.mp4", config)
            data = (tmp_path / "whole.mp4").read_bytes()
            assert got.size == len(data) == 200_000
            assert got.sha256 == hashlib.sha256(data).hexdigest()
            async with httpx.AsyncClient() as control:
                await control.post(base + "/_sim/config", json={"rate_truncate": 1.0})
            with pytest.raises(TransportError, match="download of"):
                await download(http, url, tmp_path / "cut.mp4", config)
        finally:
            await http.aclose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.mp4"]


def test_aiohttp_failures_while_connecting_are_the_only_surely_unsent_ones():
    """The mapping itself, for the errors loopback cannot stage (a connect timeout, a TLS failure)."""
    import aiohttp

    from runner.api.http import _aiohttp_failure

    key = aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None)
    sure = [
        aiohttp.ConnectionTimeoutError("connect"),
        aiohttp.ClientConnectorError(key, OSError(111, "no")),
        aiohttp.ClientConnectorCertificateError(key, Exception("bad cert")),
    ]
    unsure = [
        aiohttp.SocketTimeoutError("read"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("cut"),
        aiohttp.ClientOSError(104, "reset"),
        TimeoutError(),
    ]
    assert all(_aiohttp_failure(e).surely_not_sent for e in sure)  # type: ignore[union-attr]
    assert not any(_aiohttp_failure(e).surely_not_sent for e in unsure)  # type: ignore[union-attr]
    assert _aiohttp_failure(ValueError("not ours")) is None
