"""The RunComfy Model API, spoken over one shared :class:`~runner.http.HttpSession`.

This is the edge where failures become the project's own (see ``errors.py``): every transport failure
and every error answer (including a 2xx that carries an ``error_code``) leaves this module as an
:class:`~runner.errors.ApiError` subclass.

Answers are read by :mod:`.answers`, the tolerant reader: timestamps in any form, status words in any
case and spelling, outputs in any shape, numbers as text, error bodies that are HTML or empty. Every
rule it follows, and the grace rules the engine adds (a 404 just after a submit or a finish, a result
whose outputs come late, a word nobody knows), is one line of ``docs/api-answers.md``.

Which calls are safe to repeat is decided here, once:

* result (the poll), cancel and price are reads (or idempotent): retried on transient failures;
* a submit is paid and has no idempotency key. It is retried here only on a 429 (the server said it
  did not take it, and when to come back). One that surely never reached the server (connection
  refused, DNS failure, connect timeout) raises :class:`NeverSent` at once: the caller may send it
  again, and decides when (a run waits for the API to answer first). Anything else after the bytes
  may have left (read timeout, closed connection, 5xx) raises :class:`SubmitUnknown`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import anyio

from .. import defaults
from ..errors import ApiError, NeverSent, RateLimited, ServerError, SubmitUnknown, TransportError
from ..version import __version__
from .answers import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    RemoteState,
    read_body,
    read_outcome,
    read_price,
    read_request_id,
    read_state,
)
from .http import HttpSession, Timeouts
from .retry import OnRetry, RetryPolicy, call_with_retry

USER_AGENT = f"runcomfy-batch/{__version__}"

# RunComfy's status words are named once, in the reader (.answers: every spelling it knows of each);
# the ones the rest of the runner names are had from here, with the client that answers them.
__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "IN_PROGRESS",
    "IN_QUEUE",
    "ApiConfig",
    "RemoteState",
    "RunComfyClient",
]


@dataclass(frozen=True)
class ApiConfig:
    """Where the API is and how patiently to talk to it: ``retry`` for the calls that are safe to
    repeat, ``submit_retry`` for a paid submit answered 429 (``RetryPolicy.for_submit``)."""

    token: str = field(repr=False)
    base_url: str = defaults.BASE_URL
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    read_timeout: float = defaults.READ_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    submit_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy().for_submit())


class RunComfyClient:
    """Typed calls to the Model API over a session that is passed in (tests give it the simulator)."""

    def __init__(self, http: HttpSession, config: ApiConfig, *, on_retry: OnRetry | None = None) -> None:
        self.http = http
        self.config = config
        self.on_retry = on_retry
        self.base_url = config.base_url.rstrip("/")
        self.api_host = urlsplit(self.base_url).hostname
        self._headers = {
            "Authorization": f"Bearer {config.token}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._timeouts = Timeouts(config.connect_timeout, config.read_timeout)

    # -- one raw call ---------------------------------------------------------------------------
    async def _call(
        self, method: str, path: str, *, body: Any = None, query: str = "", submit: bool = False
    ) -> Any:
        content = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        url = self.base_url + path + (f"?{query}" if query else "")
        try:
            response = await self.http.request(
                method, url, headers=self._headers, body=content, timeout=self._timeouts
            )
        except TransportError as exc:
            error = NeverSent if isinstance(exc, NeverSent) else TransportError
            raise error(f"{method} {path}: {exc}") from None
        return read_body(
            response.status, response.body, response.headers, what=f"{method} {path}", submit=submit
        )

    async def _read(self, method: str, path: str, **kwargs: Any) -> Any:
        return await call_with_retry(
            lambda: self._call(method, path, **kwargs), self.config.retry, on_retry=self.on_retry
        )

    # -- the API --------------------------------------------------------------------------------
    async def submit(self, model_id: str, input: Mapping[str, Any]) -> str:
        """POST one paid request; the ``request_id``, or :class:`SubmitUnknown` when unsure."""

        async def once() -> str:
            try:
                # Shielded: a POST that may have left is worth its answer even when the caller is
                # being cancelled (a stop): abandoning it would make a knowable outcome unknown. The
                # backoff between tries stays cancellable; a try is repeated only if it surely did
                # not reach the server.
                with anyio.CancelScope(shield=True):
                    answer = await self._call("POST", f"/v1/models/{model_id}", body=input, submit=True)
            except NeverSent:
                raise
            except TransportError as exc:
                raise SubmitUnknown(
                    f"submit of {model_id}: no answer ({exc}); the request may exist"
                ) from None
            except ServerError as exc:
                raise SubmitUnknown(
                    f"submit of {model_id}: {exc}; the request may exist",
                    http_status=exc.http_status,
                    error_code=exc.error_code,
                ) from None
            request_id = read_request_id(answer)
            if request_id is None:
                raise SubmitUnknown(f"submit of {model_id}: answer has no request_id")
            return request_id

        def safe_to_repeat(error: BaseException) -> bool:
            return isinstance(error, RateLimited)

        return await call_with_retry(
            once, self.config.submit_retry, retryable=safe_to_repeat, on_retry=self.on_retry
        )

    async def result(self, request_id: str, *, include_cost: bool = True) -> RemoteState:
        """The request's result when finished, else its live status (``/result`` answers both)."""
        query = "include_cost=true" if include_cost else ""
        answer = await self._read("GET", f"/v1/requests/{_segment(request_id)}/result", query=query)
        return read_state(request_id, answer)

    async def cancel(self, request_id: str) -> str:
        """Ask to cancel; ``cancelled`` (was queued, never billed) or ``not_cancellable``."""
        answer = await self._read("POST", f"/v1/requests/{_segment(request_id)}/cancel")
        return read_outcome(answer)

    async def catalog_page(self, path: str = "/v1/models", query: str = "include_schema=true") -> Any:
        """One page of the model catalog (``GET /v1/models?include_schema=true``), as the API wrote it;
        :mod:`.catalog` follows the pages."""
        return await self._read("GET", path, query=query)

    async def probe(self, model_id: str) -> None:
        """One safe read, never retried, to learn whether the API answers at all: it returns on any
        answer but a 5xx (a 404 or a 429 says the API is there), and raises the
        :class:`TransportError` or :class:`ServerError` that says it does not."""
        try:
            await self._call("GET", f"/v1/models/{model_id}")
        except TransportError:
            raise
        except ApiError as exc:
            if isinstance(exc, ServerError) and (exc.http_status or 500) >= 500:
                raise

    async def price(self, model_id: str) -> Mapping[str, Any] | None:
        """The model's price from the API (undocumented call), or ``None`` where it does not answer."""
        try:
            answer = await self._call("GET", f"/v1/models/{model_id}")
        except ApiError:
            return None
        return read_price(answer)


def _segment(request_id: str) -> str:
    """A request id as one path segment (a slash in it stays inside the segment)."""
    return quote(request_id, safe="")
