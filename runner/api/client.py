"""The RunComfy Model API, spoken over one shared :class:`~runner.http.HttpSession`.

This is the edge where failures become the project's own (see ``errors.py``): every transport failure
and every error answer (including an HTTP 200 that carries an ``error_code``) leaves this module as an
:class:`~runner.errors.ApiError` subclass.

Which calls are safe to repeat is decided here, once:

* result (the poll), cancel and price are reads (or idempotent): retried on transient failures;
* a submit is paid and has no idempotency key. It is retried only when the request surely never
  reached the server (connection refused, DNS failure, connect timeout, 429). Anything else after
  the bytes may have left (read timeout, closed connection, 5xx) raises :class:`SubmitUnknown`.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import anyio

from .. import defaults
from ..errors import (
    AccountError,
    ApiError,
    BalanceError,
    InputRejected,
    NeverSent,
    RateLimited,
    RequestNotFound,
    ServerError,
    SubmitUnknown,
    TransportError,
)
from ..version import __version__
from .http import HttpSession, Timeouts
from .retry import OnRetry, RetryPolicy, call_with_retry

USER_AGENT = f"runcomfy-batch/{__version__}"


# RunComfy's status words, named once: the four it documents, and two its own clients accept too. A
# request may answer any other word (RemoteState.status is any string): the run polls it as live. A
# cancel answers its outcome as CANCELLED (it was queued: never billed) or ``not_cancellable``.
IN_QUEUE, IN_PROGRESS = "in_queue", "in_progress"
COMPLETED, SUCCEEDED, FAILED, CANCELLED = "completed", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({COMPLETED, SUCCEEDED, FAILED, CANCELLED})
SUCCESS = frozenset({COMPLETED, SUCCEEDED})
KNOWN_LIVE = frozenset({IN_QUEUE, IN_PROGRESS})


@dataclass(frozen=True)
class ApiConfig:
    """Where the API is and how patiently to talk to it: ``retry`` for the calls that are safe to
    repeat, ``submit_retry`` for a paid submit that surely never arrived (``RetryPolicy.for_submit``)."""

    token: str = field(repr=False)
    base_url: str = defaults.BASE_URL
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    read_timeout: float = defaults.READ_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    submit_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy().for_submit())


@dataclass(frozen=True)
class RemoteState:
    """What the API says about one request right now."""

    request_id: str
    status: str
    queue_position: int | None = None
    outputs: tuple[str, ...] = ()
    cost_usd: float | None = None
    error: Mapping[str, Any] | None = None
    created_at: str | None = None
    finished_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCESS


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def collect_outputs(output: Any) -> tuple[str, ...]:
    """Every URI in a result's ``output``: ``image``, ``video``, ``images``, ``videos`` and any other."""
    if not isinstance(output, Mapping):
        return ()
    found: list[str] = []
    for key in ("video", "videos", "image", "images", *sorted(output)):
        value = output.get(key)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and item not in found and "://" in item:
                found.append(item)
    return tuple(found)


def error_from_answer(status: int, body: Any, headers: Mapping[str, str] | None = None) -> ApiError:
    """The project's error for an error answer (any HTTP status, or a 200 with ``error_code``)."""
    body = body if isinstance(body, Mapping) else {}
    code = body.get("error_code")
    code = code if isinstance(code, int) else None
    message = str(body.get("error_message") or body.get("message") or f"HTTP {status}")
    detail = body.get("detail")
    retry_after = parse_retry_after((headers or {}).get("retry-after"))
    http_status = status if status != 200 or code is None else int(str(code)[:3])
    kwargs: dict[str, Any] = {
        "http_status": http_status,
        "error_code": code,
        "detail": detail,
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
    async def _call(self, method: str, path: str, *, body: Any = None, query: str = "") -> Any:
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
        try:
            answer = json.loads(response.body) if response.body else None
        except ValueError:
            answer = None
        if response.status >= 400 or (isinstance(answer, Mapping) and "error_code" in answer):
            raise error_from_answer(response.status, answer, response.headers)
        if answer is None:
            raise ServerError(
                f"{method} {path}: answer is not JSON (HTTP {response.status})",
                http_status=response.status,
            )
        return answer

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
                    answer = await self._call("POST", f"/v1/models/{model_id}", body=input)
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
            request_id = answer.get("request_id") if isinstance(answer, Mapping) else None
            if not isinstance(request_id, str) or not request_id:
                raise SubmitUnknown(f"submit of {model_id}: answer has no request_id")
            return request_id

        def safe_to_repeat(error: BaseException) -> bool:
            return isinstance(error, RateLimited | NeverSent)

        return await call_with_retry(
            once, self.config.submit_retry, retryable=safe_to_repeat, on_retry=self.on_retry
        )

    async def result(self, request_id: str, *, include_cost: bool = True) -> RemoteState:
        """The request's result when finished, else its live status (``/result`` answers both)."""
        query = "include_cost=true" if include_cost else ""
        answer = await self._read("GET", f"/v1/requests/{quote(request_id)}/result", query=query)
        return _remote_state(request_id, answer)

    async def cancel(self, request_id: str) -> str:
        """Ask to cancel; :data:`CANCELLED` (was queued, never billed) or ``not_cancellable``."""
        answer = await self._read("POST", f"/v1/requests/{quote(request_id)}/cancel")
        return str(answer.get("outcome") or answer.get("status") or "unknown")

    async def price(self, model_id: str) -> Mapping[str, Any] | None:
        """The model's price from the API (undocumented call), or ``None`` where it does not answer."""
        try:
            answer = await self._call("GET", f"/v1/models/{model_id}")
        except ApiError:
            return None
        return answer if isinstance(answer, Mapping) and "base_price_usd" in answer else None


def _remote_state(request_id: str, answer: Any) -> RemoteState:
    if not isinstance(answer, Mapping):
        raise ServerError(f"request {request_id}: unexpected answer")
    status = str(answer.get("status") or "unknown")
    position = answer.get("queue_position")
    cost = answer.get("cost")
    error = answer.get("error")
    return RemoteState(
        request_id=request_id,
        status=status,
        queue_position=position if isinstance(position, int) else None,
        outputs=collect_outputs(answer.get("output")),
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        error=error if isinstance(error, Mapping) else ({"error_message": str(error)} if error else None),
        created_at=answer.get("created_at"),
        finished_at=answer.get("finished_at"),
    )
