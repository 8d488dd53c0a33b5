"""HTTP for the runner: one small interface, two ways to speak it.

Why not httpx everywhere: at thousands of requests a minute the runner's CPU goes mostly to HTTP, and
httpx spends more per request than the work the runner does around it: ~0.7 ms of CPU for a bare GET
on a 2-core machine, of which URL parsing (with an ``ipaddress`` parse of the host), cookie extraction
and the connection pool's scan of every idle socket are most. aiohttp does the same exchange for
~0.15 ms. ``benchmarks/run.py`` measures both. So:

* :class:`AiohttpSession` is what real runs use (asyncio): one ``aiohttp.ClientSession``, URLs as
  plain strings, no cookie jar, environment proxies looked up once per host;
* :class:`HttpxSession` wraps any ``httpx.AsyncClient``: tests hand it an ``httpx.ASGITransport`` to
  reach the simulator in-process, and it serves trio, where aiohttp cannot run.

What the rest of the runner needs from a session is three things: a request with its whole answer, a
streamed download, and a truthful account of failures. The last one is the contract that matters: a
paid submit has no idempotency key, so every failure says whether the request **surely never left**
(refused, DNS, TLS, connect timeout: a :class:`~runner.errors.NeverSent`) or may have been received
(anything after the connection was up: a read timeout, a closed connection, a cut body). The mapping
is written out below for each library and tested against real dropped connections on loopback
(``tests/test_http.py``). (The ``httpx-aiohttp`` package was not used for this reason: it maps every
``aiohttp.ClientConnectionError``, a server that closed the connection after reading the request
included, to ``httpx.ConnectTimeout``, which says the request never left.) Each failure also says
what happened in a few plain words (``TransportError.reason``: "connection refused", "read timed
out"), read off the OS error under it, for the lines a user reads during an outage.

**A POST never goes out on a pooled connection.** A server closes a connection that sat idle for its
keep-alive timeout (uvicorn 5 s, many load balancers a few seconds more, some 1 s), and says so only by
closing it. A request written into a connection whose close is on its way is met by that close, and
from the client the two cases look alike: the server closed before reading it, or read it, acted, and
died. For a GET that is a retry; for a paid submit it is an ``unknown`` job. No idle limit on the
client's side closes that race, since the server's timeout is not known (and a connection idle a moment
less than it is the worst case, not the best). So every POST (the paid submit; cancel too, which is
rare) goes on a connection of its own, opened for it and closed after: a failure before the request
is written is then a connect error, surely not sent. It costs one TCP (and TLS) handshake per submit,
about a round trip and a millisecond of CPU, next to a paid job of minutes; polls and downloads keep
reusing connections.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ..errors import NeverSent, TransportError

if TYPE_CHECKING:
    import httpx

CHUNK = 1 << 16
# Downloads ask for the bytes as stored, so their Content-Length can be checked (a server that encodes
# anyway is decoded, and then the length is not compared).
_IDENTITY = {"Accept-Encoding": "identity"}


@dataclass(frozen=True)
class Timeouts:
    """Seconds to connect (and to wait for a free connection), and the longest silence while reading."""

    connect: float
    read: float


@dataclass(frozen=True)
class Answer:
    """A whole answer. ``headers`` has lower-case names."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Streamed(Protocol):
    """An answer whose body is read as it arrives (a download). ``headers`` has lower-case names."""

    status: int
    headers: dict[str, str]

    def chunks(self) -> AsyncIterator[bytes]: ...


class HttpSession(Protocol):
    """What the runner needs from HTTP. Failures raise :class:`TransportError` only."""

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None, timeout: Timeouts
    ) -> Answer: ...

    def stream(self, url: str, *, timeout: Timeouts) -> AbstractAsyncContextManager[Streamed]:
        """GET ``url`` (following redirects) without the API's headers: output files are public."""
        ...

    async def aclose(self) -> None: ...


def failure(kind: str, detail: object, *, surely_not_sent: bool) -> TransportError:
    """The project's error for a failed exchange. ``kind`` names what happened in httpx's words
    (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``…), whichever library saw it; ``detail``
    is the library's exception (or its words)."""
    text = str(detail)
    error = NeverSent if surely_not_sent else TransportError
    reason = plain_reason(detail, kind) if isinstance(detail, BaseException) else _PLAIN.get(kind, kind)
    return error(f"{kind}: {text}" if text and text != kind else kind, reason=reason)


# What each kind of failure is called in a line a user reads, when no OS error under it says more.
_PLAIN = {
    "ConnectError": "cannot connect",
    "ConnectTimeout": "connect timed out",
    "PoolTimeout": "no free connection in time",
    "UnsupportedProtocol": "not an http(s) URL",
    "ReadTimeout": "no answer in time (read timeout)",
    "WriteTimeout": "sending timed out",
    "RemoteProtocolError": "connection closed without an answer",
    "ReadError": "connection broken",
    "WriteError": "connection broken",
}


def plain_reason(exc: BaseException, kind: str) -> str:
    """A failure in the words a user knows, from the OS error under the library's exception if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            return "TLS handshake failed"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        os_error = getattr(cause, "os_error", None)  # aiohttp's connector errors carry it
        cause = os_error if isinstance(os_error, BaseException) else (cause.__cause__ or cause.__context__)
    return _PLAIN.get(kind, kind)


# -- httpx (tests in-process, trio) ---------------------------------------------------------------
def _from_httpx(exc: httpx.HTTPError) -> TransportError:
    import httpx  # noqa: PLC0415 - loaded only where an httpx client is in use

    before_sending = httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol | httpx.PoolTimeout
    return failure(type(exc).__name__, exc, surely_not_sent=isinstance(exc, before_sending))


class _HttpxStreamed:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = {k.lower(): v for k, v in response.headers.items()}

    async def chunks(self) -> AsyncIterator[bytes]:
        import httpx  # noqa: PLC0415

        try:
            async for chunk in self._response.aiter_bytes(CHUNK):
                yield chunk
        except httpx.HTTPError as exc:
            raise _from_httpx(exc) from None


class HttpxSession:
    """The interface over an ``httpx.AsyncClient`` (its transport decides where requests go), and
    ``fresh``, a client that keeps no connection alive, for POSTs (see the module's docstring; without
    one, POSTs go through ``client``: right for an in-process transport, which has no connections).
    :func:`httpx_session` makes both."""

    def __init__(self, client: httpx.AsyncClient, *, fresh: httpx.AsyncClient | None = None) -> None:
        import httpx  # noqa: PLC0415

        self.client = client
        self.fresh = fresh
        self._httpx = httpx

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None, timeout: Timeouts
    ) -> Answer:
        httpx = self._httpx
        client = self.fresh if method == "POST" and self.fresh is not None else self.client
        try:
            response = await client.request(
                method,
                url,
                headers=headers,
                content=body,
                timeout=httpx.Timeout(timeout.read, connect=timeout.connect, pool=timeout.connect),
            )
        except httpx.HTTPError as exc:
            raise _from_httpx(exc) from None
        headers = {k.lower(): v for k, v in response.headers.items()}
        return Answer(response.status_code, headers, response.content)

    @asynccontextmanager
    async def stream(self, url: str, *, timeout: Timeouts) -> AsyncIterator[Streamed]:
        httpx = self._httpx
        limits = httpx.Timeout(timeout.read, connect=timeout.connect, pool=timeout.connect)
        request = self.client.build_request("GET", url, headers=_IDENTITY, timeout=limits)
        try:
            response = await self.client.send(request, stream=True, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise _from_httpx(exc) from None
        try:
            yield _HttpxStreamed(response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.fresh is not None:
            await self.fresh.aclose()


def httpx_session(
    transport: httpx.AsyncBaseTransport | None = None, *, max_connections: int = 16
) -> HttpxSession:
    """An :class:`HttpxSession` over ``transport`` (default: the network), its POSTs on connections of
    their own."""
    import httpx  # noqa: PLC0415

    pooled = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    single = httpx.Limits(max_connections=max_connections, max_keepalive_connections=0)
    return HttpxSession(
        httpx.AsyncClient(transport=transport, limits=pooled),
        fresh=httpx.AsyncClient(transport=transport, limits=single),
    )


# -- aiohttp (real runs) --------------------------------------------------------------------------
def _aiohttp_failure(exc: BaseException) -> TransportError | None:
    """The mapping that keeps a paid submit from being sent twice. Order matters: subclasses first."""
    import aiohttp  # noqa: PLC0415 - only imported where a real run uses it

    # While connecting: no byte of the request reached the server.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connect, or no free connection, in time
        return failure("ConnectTimeout", exc, surely_not_sent=True)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake
        return failure("ConnectError", exc, surely_not_sent=True)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return failure("UnsupportedProtocol", exc, surely_not_sent=True)
    # After: the request may have been received and acted on.
    if isinstance(exc, TimeoutError):  # aiohttp's SocketTimeoutError and ServerTimeoutError among them
        return failure("ReadTimeout", exc, surely_not_sent=False)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return failure(
            "RemoteProtocolError", "Server disconnected without sending a response", surely_not_sent=False
        )
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return failure("RemoteProtocolError", exc, surely_not_sent=False)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return failure("ReadError", exc, surely_not_sent=False)
    return None


@contextmanager
def _aiohttp_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = _aiohttp_failure(exc)
        if mapped is None:
            raise
        raise mapped from None


def _default_ssl() -> ssl.SSLContext:
    """Verify servers against certifi's CA bundle, as httpx does (certifi comes with httpx)."""
    import certifi  # noqa: PLC0415

    return ssl.create_default_context(cafile=certifi.where())


class _AiohttpStreamed:
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status: int = response.status
        self.headers: dict[str, str] = {k.lower(): v for k, v in response.headers.items()}

    async def chunks(self) -> AsyncIterator[bytes]:
        with _aiohttp_errors():
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk


class AiohttpSession:
    """The interface over one ``aiohttp.ClientSession``, made on first use inside the running loop."""

    def __init__(
        self,
        *,
        max_connections: int = 16,
        keepalive_expiry: float = 5.0,
        verify: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._ssl = verify
        self._trust_env = trust_env
        self._session: Any = None
        self._fresh: Any = None  # for POSTs: a connection opened for each, closed after
        self._timeouts: dict[Timeouts, Any] = {}
        self._proxies: dict[tuple[str, str], tuple[Any, Any]] = {}

    def _open(self, *, pooled: bool = True) -> Any:
        import aiohttp  # noqa: PLC0415

        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            # Idle connections are closed before most servers would close them (httpx's default is the
            # same 5 s); what a server closes sooner costs a GET a retry, never a POST (it has its own).
            keepalive_timeout=self._keepalive_expiry if pooled else None,
            force_close=not pooled,
            ssl=self._context(),
        )
        return aiohttp.ClientSession(
            connector=connector,
            # Proxies from the environment are looked up once per host (_proxy); aiohttp's own
            # trust_env would do it in a worker thread on every request.
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )

    def _context(self) -> ssl.SSLContext:
        """One TLS context for both connection pools (loading the CA bundle costs ~25 ms of CPU)."""
        if self._ssl is None:
            self._ssl = _default_ssl()
        return self._ssl

    def _timeout(self, timeout: Timeouts) -> Any:
        found = self._timeouts.get(timeout)
        if found is None:
            import aiohttp  # noqa: PLC0415

            # ``connect`` covers waiting for a free connection and connecting; ``sock_read`` is the
            # longest silence while reading, like httpx's read timeout.
            found = aiohttp.ClientTimeout(
                total=None, connect=timeout.connect, sock_connect=timeout.connect, sock_read=timeout.read
            )
            self._timeouts[timeout] = found
        return found

    def _proxy(self, url: str) -> tuple[Any, Any]:
        """The proxy for a URL's host from HTTP(S)_PROXY / NO_PROXY, as httpx's ``trust_env`` reads them."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        found = self._proxies.get(key)
        if found is None:
            found = (None, None)
            if self._trust_env:
                from aiohttp.helpers import get_env_proxy_for_url  # noqa: PLC0415
                from yarl import URL  # noqa: PLC0415

                try:
                    found = get_env_proxy_for_url(URL.build(scheme=key[0], host=key[1]))
                except LookupError:
                    pass
            self._proxies[key] = found
        return found

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None, timeout: Timeouts
    ) -> Answer:
        if method == "POST":
            if self._fresh is None:
                self._fresh = self._open(pooled=False)
            session = self._fresh
        else:
            if self._session is None:
                self._session = self._open()
            session = self._session
        proxy, proxy_auth = self._proxy(url)
        with _aiohttp_errors():
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout(timeout),
                proxy=proxy,
                proxy_auth=proxy_auth,
            ) as response:
                content = await response.read()
                return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, content)

    @asynccontextmanager
    async def stream(self, url: str, *, timeout: Timeouts) -> AsyncIterator[Streamed]:
        if self._session is None:
            self._session = self._open()
        proxy, proxy_auth = self._proxy(url)
        with _aiohttp_errors():
            response = await self._session.get(
                url,
                headers=_IDENTITY,
                allow_redirects=True,
                timeout=self._timeout(timeout),
                proxy=proxy,
                proxy_auth=proxy_auth,
            )
        try:
            yield _AiohttpStreamed(response)
        finally:
            response.release()  # back to the pool when read to the end; an unfinished one is closed

    async def aclose(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()
        self._session = self._fresh = None
