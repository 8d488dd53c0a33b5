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


# -- no POST on a connection the server may be closing ---------------------------------------------
class IdleClosingServer:
    """A loopback HTTP server that closes a kept-alive connection, unanswered, when a request arrives
    after the connection sat idle for ``idle`` seconds: the race a server's keep-alive timeout makes
    real, staged every time. It answers ``{}`` otherwise, and records each connection's requests."""

    def __init__(self, idle: float = 0.2) -> None:
        self.idle = idle
        self.connections: list[list[str]] = []  # per connection, the methods it carried (and answered)
        self.closed_unanswered: list[str] = []

    async def handle(self, reader, writer) -> None:  # type: ignore[no-untyped-def]
        import anyio

        seen: list[str] = []
        self.connections.append(seen)
        last = anyio.current_time()
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                method = lines[0].split(" ")[0]
                length = next(
                    (int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length")),
                    0,
                )
                await reader.readexactly(length)
                if seen and anyio.current_time() - last >= self.idle:
                    self.closed_unanswered.append(method)
                    break
                seen.append(method)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                )
                await writer.drain()
                last = anyio.current_time()
        except Exception:  # noqa: BLE001 - the client went away
            pass
        writer.close()


def fresh_session(kind: str) -> HttpSession:
    """The sessions as a run opens them (``runner.batch.open_session``)."""
    from runner.api.http import httpx_session

    return AiohttpSession() if kind == "aiohttp" else httpx_session()


async def test_a_post_never_goes_out_on_a_pooled_connection(kind):
    """A GET, a pause longer than the server's idle limit, then a POST: the POST goes on a connection of
    its own and is answered, where a pooled one would have met the server's close (and a paid submit
    would have become unknown). GETs close together still share one connection."""
    import asyncio

    import anyio

    server = IdleClosingServer(idle=0.2)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    http = fresh_session(kind)
    try:
        for _ in range(2):
            got = await http.request("GET", f"{base}/status", headers=AUTH, body=None, timeout=QUICK)
            assert got.status == 200
        await anyio.sleep(0.3)
        posted = await http.request("POST", f"{base}/v1/models/m", headers=AUTH, body=INPUT, timeout=QUICK)
        assert posted.status == 200
    finally:
        await http.aclose()
        listening.close()
    assert server.closed_unanswered == []
    assert server.connections[0] == ["GET", "GET"]  # reused for reads
    assert ["POST"] in server.connections  # the POST alone on its own connection


@pytest.mark.parametrize("keepalive", [1.0, 5.0])
async def test_submits_after_idle_spells_past_the_servers_keepalive_are_never_unknown(keepalive, tmp_path):
    """The simulator served on loopback closes connections idle ``keepalive`` seconds; jobs run longer
    than that, so polls and submits come after idle spells past it: every submit has its answer."""
    from dataclasses import replace

    from conftest import FAST_RETRY, simple_manifest

    from runner.batch import BatchOptions, run_batch

    config = SimulatorConfig(
        concurrency=2,
        job_seconds=keepalive + 0.5,
        job_spread=0.0,
        output_bytes=4096,
        keepalive_timeout=keepalive,
    )
    manifest = tmp_path / "m.yaml"
    manifest.write_text(simple_manifest(4 if keepalive < 2 else 3))
    with running_server(config) as base:
        options = BatchOptions(
            token="sim-token",
            base_url=base,
            state_path=tmp_path / "state.sqlite",
            max_in_flight=2,
            **FAST_RETRY,
        )
        result = await run_batch(manifest, replace(options, flush_interval=0.01))
        stats = await _stats(base)
    assert result.exit_code == 0, result.message
    assert "unknown" not in result.counts
    assert stats["duplicate_submissions"] == 0 and stats["requests"]["submit"] == stats["submits_accepted"]
