"""Faults on demand: which one strikes a request, and the answers that break a connection.

Each fault is drawn from one seeded RNG with its own probability, only for the endpoints it applies to,
so a run is repeatable for a given seed and order of requests.

Breaking a connection must look the same to an httpx client whichever way the simulator is reached:

* served by :mod:`.server` on loopback, the ASGI wrapper there gives the app an ``abort`` callable in
  ``scope["extensions"]`` that closes the socket; the client sees the peer close (httpx raises
  ``RemoteProtocolError``: "Server disconnected without sending a response", or "peer closed connection
  without sending complete message body" for a cut-short download);
* otherwise the app starts an answer whose Content-Length it never fulfils and raises
  ``httpx.RemoteProtocolError`` with the message httpx would give: in-process, ``httpx.ASGITransport``
  hands that exception to the client as is; any ASGI server closes the connection mid-answer.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .config import FAULTS, SimulatorConfig

ABORT_EXTENSION = "runcomfy_batch.simulator.abort"
# Drawn before a request is handled, in this order; the first that strikes answers the request.
BEFORE = ("drop", "5xx", "429", "429_bare", "error_200")


class FaultDice:
    """Draws faults from one seeded RNG; a fault with rate 0 draws nothing, so turning one on or off
    does not reshuffle the others' draws."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.rng = random.Random(f"faults:{config.seed}")
        self.configure(config)

    def configure(self, config: SimulatorConfig) -> None:
        self._table: dict[str, list[tuple[str, float]]] = {}
        for fault in FAULTS:
            rate = config.rate(fault)
            if rate > 0:
                for endpoint in config.endpoints_for(fault):
                    self._table.setdefault(endpoint, []).append((fault, rate))

    def strikes(self, fault: str, endpoint: str) -> bool:
        """Whether ``fault`` strikes this request to ``endpoint``."""
        for name, rate in self._table.get(endpoint, ()):
            if name == fault:
                return self.rng.random() < rate
        return False

    def first_before(self, endpoint: str) -> str | None:
        """The first of the :data:`BEFORE` faults that strikes this request, if any."""
        for fault in BEFORE:
            if self.strikes(fault, endpoint):
                return fault
        return None

    def choice(self, options: tuple[int, ...]) -> int:
        return self.rng.choice(options)


async def _abort(scope: Scope, receive: Receive, send: Send, started: bool, message: str) -> None:
    abort: Callable[[], None] | None = scope.get("extensions", {}).get(ABORT_EXTENSION)
    if abort is not None:
        abort()
        # Wait for the server to notice the closed socket, so it neither answers 500 nor logs an error.
        with anyio.move_on_after(2):
            while (await receive())["type"] != "http.disconnect":
                pass
        return
    if not started:
        # Promise a body, then fail: a server answers that by closing the connection mid-answer, and
        # httpx.ASGITransport hands the exception below to the client as is.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})
    raise httpx.RemoteProtocolError(message)


class DroppedConnection(Response):
    """No answer at all: the connection closes."""

    def __init__(self) -> None:
        super().__init__(status_code=599)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _abort(scope, receive, send, False, "Server disconnected without sending a response.")


class TruncatedBody(Response):
    """A body whose Content-Length promises more than is sent before the connection closes."""

    def __init__(self, body: bytes, sent: int, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(body, status_code=status_code, headers=headers, media_type="video/mp4")
        self.sent = sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: self.sent], "more_body": True})
        message = (
            "peer closed connection without sending complete message body "
            f"(received {self.sent} bytes, expected {len(self.body)})"
        )
        await _abort(scope, receive, send, True, message)
